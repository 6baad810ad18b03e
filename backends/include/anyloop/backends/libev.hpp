// anyloop/backends/libev.hpp — the libev backend, and adoption of a host's libev loop.
//
// Including this header does not pull in <ev.h>: libev's loop type is only
// declared here. A program that hands in its own loop includes <ev.h> itself.
//
// On either kind of loop, an IoWatcher whose fd is closed before libev has
// registered it (libev does so at the start of the next iteration, and
// Debian's libev aborts on a closed fd there) is reported once as ready for
// every watched direction, and again only after set_events() or a restart;
// the read() or write() that follows fails with EBADF. Stop watchers before
// closing their fds, as with every backend.
#pragma once

#include <anyloop/core/event_loop.hpp>

#include <memory>

// ev.h declares its loop type at global scope (and, for libev 3 compatibility,
// a function of the same name, which is why it is always spelled
// `struct ev_loop`). This declaration names that same type.
struct ev_loop;

namespace anyloop {

/// A loop over a libev loop of its own, created with ev_loop_new(EVFLAG_AUTO)
/// (epoll on Linux, kqueue on the BSDs) and destroyed with the returned object.
/// Throws std::runtime_error when libev cannot create a loop.
std::unique_ptr<EventLoop> make_libev_loop();

/// Adopts `host`, a libev loop the caller owns and keeps running.
///
/// anyloop watchers started on the returned loop fire inside the host's own
/// ev_run(host, ...), in whichever mode the host uses (0, EVRUN_ONCE,
/// EVRUN_NOWAIT). The wrapper never runs the host loop by itself: only an
/// explicit run() or run_once() on it calls ev_run(host, ...), and that also
/// dispatches the host's own watchers. Throws std::invalid_argument when
/// `host` is null. Call it, and use the wrapper, on the thread that runs
/// `host` (post() is, as always, the only door in from other threads).
///
/// What the host can rely on:
///  * Keep-alive: the host's ev_run stays alive exactly while something keeps
///    the anyloop side alive (a keep-alive watcher, or ref()), as if that were
///    one watcher of its own. anyloop's internal watchers (the post() wake-up,
///    the timer, the per-iteration clock refresh) never keep it alive, nor do
///    watchers marked set_keepalive(false).
///  * ev_userdata(host) stays the host's; anyloop never reads or writes it,
///    nor any other loop-wide setting (invoke-pending or release callbacks,
///    collect intervals).
///  * Destroying the wrapper stops every anyloop watcher and leaves the host
///    loop exactly as usable as before, its activity count included. Destroy
///    the wrapper before the host destroys its loop.
///
/// What differs from a loop anyloop runs itself:
///  * Failures: an exception thrown by an anyloop callback ends the host's
///    current ev_run (ev_break(host, EVBREAK_ONE)) so the error surfaces at
///    once. It is stored, not lost: the next run() or run_once() on the
///    wrapper rethrows it, so after the host's ev_run returns, call
///    run_once(false) to learn whether anyloop failed.
///  * stop() ends anyloop's own run() / run_once() but does not break a
///    host-driven ev_run: the host decides when its loop ends (ev_break).
///  * post()ed work runs in the host's next loop iteration, also in its
///    EVRUN_ONCE and EVRUN_NOWAIT modes, but pending posts do not keep the
///    host's ev_run alive by themselves; if the host's ev_run returns first,
///    the work runs when the host (or anyloop's run()) iterates again.
///  * Signals: libev attaches a signal number to one libev loop in the
///    process, and asserts on a second; do not watch, through anyloop, a
///    signal the host watches with ev_signal on a different libev loop.
std::unique_ptr<EventLoop> make_libev_loop(struct ev_loop* host);

}  // namespace anyloop
