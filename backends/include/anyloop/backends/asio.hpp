// anyloop/backends/asio.hpp — the Asio backend (standalone Asio 1.22 or later).
//
// This header does not include Asio: a program that only calls the factories
// compiles without it. A host that adopts its own io_context includes
// <asio/io_context.hpp> itself.
//
// How the contract maps onto Asio, and where Asio sets limits:
//
//  * I/O: watchers live in a level-triggered epoll set of the loop's own (the
//    epoll backend's code); Asio sees only the set's descriptor, with one
//    async_wait(wait_read) outstanding on it while any watcher is in the set.
//    When it completes, one epoll_wait collects the ready watchers and
//    dispatches them, and the one wait is started again: Asio's reactor is
//    edge-triggered and re-arms with an EPOLL_CTL_MOD per wait, which is then
//    paid once per batch, not once per ready fd. Fds are never handed to
//    Asio, so an fd may be watched by anyloop and by an Asio object of the
//    host at once. A regular file, which epoll refuses, is reported ready at
//    every iteration, like poll(2) does; an fd that is already closed makes
//    IoWatcher::start() throw std::system_error.
//  * An fd closed while watched goes quiet (the kernel forgets it), as on
//    the epoll backend. Stop the watcher before closing; the number may then
//    be watched again, also when it is reused by a new file.
//  * Timers are anyloop's own heap behind one Asio timer; signals use one
//    Asio signal set per signal number, and the disposition a signal had
//    before is restored when its last watcher stops.
//  * post() uses asio::post(), which is thread-safe.
#pragma once

#include <anyloop/core/event_loop.hpp>

#include <memory>

namespace asio {
class io_context;
}  // namespace asio

namespace anyloop {

/// A loop over an io_context of its own, which only the loop's thread runs
/// (created with ASIO_CONCURRENCY_HINT_UNSAFE_IO: the reactor's
/// per-descriptor locks are left out, the scheduler's lock for post() kept).
/// run() and run_once() drive it; each iteration runs what is ready now and
/// no more, so a watcher that never drains its fd, a timer
/// restarted with zero delay or a post() that posts again cannot keep one
/// run_once() from returning.
std::unique_ptr<EventLoop> make_asio_loop();

/// Wraps an io_context the host owns. The host keeps running it with its own
/// run(), run_one(), poll() or poll_one(), and anyloop's watchers fire inside
/// those calls; anyloop never runs it on its own initiative (only when the
/// wrapper's run() or run_once() is called) and never stops or destroys it.
///
/// `host` must outlive the returned loop. Destroying the loop releases every
/// fd, cancels anyloop's waits and leaves the io_context usable; the
/// cancelled handlers it still holds run harmlessly (or are destroyed with it).
///
/// Keep-alive, in Asio's terms: while anything keeps the anyloop loop alive
/// (a started watcher that was not unref'd, or ref()), the wrapper holds work
/// on the io_context, so the host's run() does not return; once nothing does,
/// run() returns as soon as Asio has no other work. post() adds no lasting
/// work: its wake-up is one transient handler. Asio has no ev_unref, though:
/// an outstanding wait of an unref'd watcher (an I/O watcher, the next timer
/// deadline, a signal) still counts as work and keeps the host's run() from
/// returning until it completes or the watcher stops.
///
/// Iterations, in Asio's terms: the host's run_one() runs one handler, which
/// is one dispatch of one anyloop watcher, one batch of posted functions, or
/// the leftover of a wait anyloop cancelled (which does nothing).
/// The host's poll() runs handlers until none is ready; since a watcher whose
/// fd stays ready is re-armed after each callback, poll() keeps calling it
/// until the fd is drained or the watcher stops, as it would for any Asio
/// handler that re-arms itself.
///
/// Errors: an exception thrown by a callback inside the host's run() is
/// caught; it does not stop the host's io_context. It stays stored, and the
/// next run() or run_once() of this loop rethrows it.
std::unique_ptr<EventLoop> make_asio_loop(asio::io_context& host);

}  // namespace anyloop
