// anyloop/backends/libevent.hpp — the libevent 2.1 backend, and adoption of
// an event_base that a host program owns and runs.
#pragma once

#include <anyloop/core/event_loop.hpp>

#include <memory>

struct event_base;

namespace anyloop {

/// A loop over a new event_base of its own (event_base_new()), freed with
/// the loop.
std::unique_ptr<EventLoop> make_libevent_loop();

/// A loop that adopts `host`, an event_base the host program owns and keeps
/// running with its own event_base_dispatch() / event_base_loop(). anyloop
/// watchers fire inside the host's loop. The base is never run on anyloop's
/// initiative and never freed by it; destroying the returned loop removes
/// every event anyloop added and leaves the base working. Throws
/// std::invalid_argument when `host` is null.
///
/// How the host's loop sees anyloop:
///  * Keep-alive: the host's event_base_dispatch() keeps running while
///    anyloop's alive() is true because of keep-alive watchers or ref(), and
///    returns once only unref'd watchers and anyloop's internal events are
///    left (event_base_get_num_events(EVENT_BASE_COUNT_ADDED) counts one
///    event for "anyloop is alive", none otherwise). Work queued by post()
///    alone does not keep the host's loop running: it runs in the host's
///    next iteration that polls (libevent returns from an empty base without
///    polling), or in anyloop's own run() / run_once().
///  * EVLOOP_ONCE: an iteration in which anyloop ran a callback counts as an
///    iteration with an event, so event_base_loop(EVLOOP_ONCE) returns after
///    it like after one of the host's own events.
///  * Failures: an exception thrown by an anyloop callback breaks the host's
///    loop (event_base_loopbreak) and stays stored; the next run() or
///    run_once() on the returned loop rethrows it. stop() only ends
///    anyloop's own run(); it never breaks the host's loop.
///  * Time: anyloop refreshes now() whenever one of its callbacks runs;
///    code that starts timers from the host's own callbacks after a long
///    quiet spell should call update_now() first.
///  * Signals: libevent delivers signals to one event_base per process at a
///    time, so signal watchers on two libevent loops over different bases
///    throw std::logic_error (and a host that watches signals on another base
///    of its own shares that limit).
///  * Priorities: call event_base_priority_init() before adopting; anyloop's
///    events take the base's default (middle) priority.
///
/// Calling run() or run_once() while the host's event_base_loop is running
/// on the same base (from a host callback) throws: libevent does not allow
/// reentrant loops.
std::unique_ptr<EventLoop> make_libevent_loop(struct event_base* host);

}  // namespace anyloop
