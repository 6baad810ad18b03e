// The libevent backend: adopting a host's event_base (the host runs it with
// plain event_base_dispatch / event_base_loop), and the places where libevent
// needs bridging to meet the contract.
#include <anyloop/backends/libevent.hpp>

#include "support/test_support.hpp"

#include <event2/event.h>
#include <event2/event_struct.h>

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;

timeval to_timeval(std::chrono::microseconds delay) {
    timeval tv{};
    tv.tv_sec = static_cast<decltype(tv.tv_sec)>(delay.count() / 1'000'000);
    tv.tv_usec = static_cast<decltype(tv.tv_usec)>(delay.count() % 1'000'000);
    return tv;
}

/// The host program's event_base.
struct HostBase {
    HostBase() : base(event_base_new()) {
        if (base == nullptr) throw std::runtime_error("event_base_new failed");
    }
    ~HostBase() { event_base_free(base); }
    HostBase(const HostBase&) = delete;
    HostBase& operator=(const HostBase&) = delete;
    /// What libevent counts as keeping event_base_dispatch running.
    [[nodiscard]] int counted() const { return event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED); }
    struct event_base* base;
};

/// One of the host's own events, written against libevent's C API.
class HostEvent {
public:
    HostEvent(struct event_base* base, int fd, short what, std::function<void(HostEvent&)> fn = {})
        : fn_(std::move(fn)) {
        event_assign(&ev_, base, fd, what, &HostEvent::fire, this);
    }
    ~HostEvent() { event_del(&ev_); }
    HostEvent(const HostEvent&) = delete;
    HostEvent& operator=(const HostEvent&) = delete;

    void add() { ASSERT_EQ(event_add(&ev_, nullptr), 0); }
    void add(std::chrono::microseconds after) {
        const timeval tv = to_timeval(after);
        ASSERT_EQ(event_add(&ev_, &tv), 0);
    }
    void remove() { event_del(&ev_); }
    int calls = 0;

private:
    static void fire(evutil_socket_t, short, void* arg) {
        auto* self = static_cast<HostEvent*>(arg);
        ++self->calls;
        if (self->fn_) self->fn_(*self);
    }
    struct event ev_ {};
    std::function<void(HostEvent&)> fn_;
};

/// Bounds a host's loop without keeping it alive: flagged EVLIST_INTERNAL,
/// like anyloop's own events, so libevent does not count it.
class Watchdog {
public:
    Watchdog(struct event_base* base, std::chrono::milliseconds limit) : base_(base) {
        evtimer_assign(&ev_, base, &Watchdog::fire, this);
        ev_.ev_evcallback.evcb_flags |= EVLIST_INTERNAL;
        const timeval tv = to_timeval(limit);
        evtimer_add(&ev_, &tv);
    }
    ~Watchdog() { event_del(&ev_); }
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;
    [[nodiscard]] bool fired() const { return fired_; }

private:
    static void fire(evutil_socket_t, short, void* arg) {
        auto* self = static_cast<Watchdog*>(arg);
        self->fired_ = true;
        event_base_loopbreak(self->base_);
    }
    struct event_base* base_;
    struct event ev_ {};
    bool fired_ = false;
};

std::string read_some(int fd) {
    char buffer[256];
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
}

// ---- adoption: the host runs its own loop -----------------------------------

TEST(Adopt_libevent, HostDispatchRunsTimerAndEchoThenReturnsByItself) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    SocketPair pair;
    int timer_calls = 0;
    int echo_calls = 0;
    std::string received;
    IoWatcher echo;
    IoWatcher reader;
    echo = loop->io(pair.a, Io::read, [&](Io) {
        const std::string data = read_some(pair.a);
        write_all(pair.a, data.data(), data.size());
        ++echo_calls;
    });
    reader = loop->io(pair.b, Io::read, [&](Io) {
        received += read_some(pair.b);
        if (received == "ping") {
            echo.reset();
            reader.reset();  // inside its own callback
        }
    });
    TimerWatcher timer = loop->timer(10ms, [&] {
        ++timer_calls;
        write_all(pair.b, "ping", 4);
    });
    EXPECT_EQ(host.counted(), 1) << "anyloop alive: exactly one counted event";

    Watchdog watchdog(host.base, 10s);
    EXPECT_EQ(event_base_dispatch(host.base), 1) << "dispatch should return because nothing is left";
    EXPECT_FALSE(watchdog.fired());
    EXPECT_EQ(timer_calls, 1);
    EXPECT_EQ(echo_calls, 1);
    EXPECT_EQ(received, "ping");
    EXPECT_EQ(loop->active_watchers(), 0U);
    EXPECT_EQ(host.counted(), 0);
}

TEST(Adopt_libevent, HostOnceModeReturnsAfterPostedWorkFromAnotherThread) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    // The host's own idle event (a listener, say) keeps its base non-empty;
    // anyloop itself has nothing alive, so only its internal wake-up fires.
    SocketPair idle;
    HostEvent listener(host.base, idle.a, EV_READ | EV_PERSIST);
    listener.add();

    constexpr int posts = 50;
    std::vector<int> seen;
    Watchdog watchdog(host.base, 10s);
    std::thread worker([&] {
        for (int i = 0; i < posts; ++i) {
            loop->post([&seen, i] { seen.push_back(i); });
            if (i % 10 == 0) std::this_thread::sleep_for(1ms);
        }
    });
    int iterations = 0;
    while (seen.size() < static_cast<std::size_t>(posts) && !watchdog.fired()) {
        // Blocks until something ran: without anyloop's bridging, an
        // iteration that ran only internal events would keep waiting here.
        EXPECT_EQ(event_base_loop(host.base, EVLOOP_ONCE), 0);
        ++iterations;
    }
    worker.join();
    EXPECT_FALSE(watchdog.fired());
    ASSERT_EQ(seen.size(), static_cast<std::size_t>(posts));
    for (int i = 0; i < posts; ++i) EXPECT_EQ(seen[static_cast<std::size_t>(i)], i);
    EXPECT_LE(iterations, posts);
    EXPECT_EQ(listener.calls, 0);
}

TEST(Adopt_libevent, HostOnceModeReturnsAfterAnyloopTimer) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    int calls = 0;
    TimerWatcher soon = loop->timer(10ms, [&] { ++calls; });
    TimerWatcher later = loop->timer(1h, [] { ADD_FAILURE() << "not due"; });  // keeps the base non-empty
    Watchdog watchdog(host.base, 10s);
    EXPECT_EQ(event_base_loop(host.base, EVLOOP_ONCE), 0);
    EXPECT_FALSE(watchdog.fired());
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(later.active());
    later.stop();
    EXPECT_EQ(host.counted(), 0);
}

TEST(Adopt_libevent, HostNonBlockingPollsRunAllPostedWorkInOrder) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    loop->ref();  // anyloop keeps the host's base non-empty while workers post

    constexpr int per_thread = 2000;
    std::vector<int> seen[2];
    std::vector<std::thread> workers;
    for (int t = 0; t < 2; ++t) {
        workers.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) loop->post([&seen, t, i] { seen[t].push_back(i); });
        });
    }
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (seen[0].size() + seen[1].size() < 2U * per_thread && std::chrono::steady_clock::now() < deadline) {
        EXPECT_EQ(event_base_loop(host.base, EVLOOP_NONBLOCK), 0);
        std::this_thread::sleep_for(100us);
    }
    for (auto& worker : workers) worker.join();
    for (const auto& list : seen) {
        ASSERT_EQ(list.size(), static_cast<std::size_t>(per_thread));
        for (int i = 0; i < per_thread; ++i) EXPECT_EQ(list[static_cast<std::size_t>(i)], i) << "FIFO per thread";
    }
    loop->unref();
    EXPECT_EQ(host.counted(), 0);
}

TEST(Adopt_libevent, PostedWorkAloneDoesNotKeepHostLoopRunning) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    int calls = 0;
    loop->post([&] { ++calls; });
    // libevent returns from a base with nothing counted without polling.
    EXPECT_EQ(event_base_loop(host.base, EVLOOP_ONCE), 1);
    EXPECT_EQ(calls, 0);
    // The work is still queued, not dropped: anyloop's own iteration runs it.
    EXPECT_FALSE(loop->run_once(false));
    EXPECT_EQ(calls, 1);
}

TEST(Adopt_libevent, DestroyingWrapperLeavesHostBaseWorking) {
    HostBase host;
    SocketPair anyloop_pair;
    SocketPair host_pair;
    // Watchers outlive their loop: destroying the wrapper must unhook them.
    IoWatcher io;
    TimerWatcher timer;
    SignalWatcher signal;
    {
        auto loop = make_libevent_loop(host.base);
        io = loop->io(anyloop_pair.a, Io::read_write, [](Io) { ADD_FAILURE() << "after the wrapper died"; });
        timer = loop->timer(1ms, [] { ADD_FAILURE() << "after the wrapper died"; });
        signal = loop->signal(SIGUSR2, [](int) { ADD_FAILURE() << "after the wrapper died"; });
        loop->ref();
        loop->post([] { ADD_FAILURE() << "after the wrapper died"; });
        EXPECT_EQ(host.counted(), 1);
    }
    EXPECT_EQ(host.counted(), 0);
    EXPECT_FALSE(io.active());
    EXPECT_FALSE(timer.active());
    EXPECT_FALSE(signal.active());
    write_all(anyloop_pair.b, "x", 1);  // would wake a leftover registration
    std::this_thread::sleep_for(5ms);   // the timer would be due

    std::string host_received;
    HostEvent host_reader(host.base, host_pair.a, EV_READ, [&](HostEvent&) { host_received = read_some(host_pair.a); });
    host_reader.add();
    write_all(host_pair.b, "host", 4);
    Watchdog watchdog(host.base, 10s);
    EXPECT_EQ(event_base_dispatch(host.base), 1);
    EXPECT_FALSE(watchdog.fired());
    EXPECT_EQ(host_reader.calls, 1);
    EXPECT_EQ(host_received, "host");
    // A second wrapper on the same base works as well.
    auto again = make_libevent_loop(host.base);
    int calls = 0;
    TimerWatcher fresh = again->timer(1ms, [&] { ++calls; });
    EXPECT_EQ(event_base_dispatch(host.base), 1);
    EXPECT_EQ(calls, 1);
}

TEST(Adopt_libevent, UnrefdWatchersDoNotKeepHostLoopAlive) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    SocketPair pair;
    int io_calls = 0;
    IoWatcher io = loop->io(pair.a, Io::read, [&](Io) {
        read_some(pair.a);
        ++io_calls;
    });
    io.set_keepalive(false);
    TimerWatcher timer = loop->timer(1h, [] { ADD_FAILURE() << "not due"; });
    timer.set_keepalive(false);
    EXPECT_EQ(loop->active_watchers(), 2U);
    EXPECT_EQ(host.counted(), 0);
    EXPECT_EQ(event_base_dispatch(host.base), 1) << "nothing counted: returns at once";

    // While the host's loop runs for its own reasons, unref'd watchers fire.
    write_all(pair.b, "x", 1);
    HostEvent host_timer(host.base, -1, 0);
    host_timer.add(30ms);
    Watchdog watchdog(host.base, 10s);
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(event_base_dispatch(host.base), 1);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 25ms);
    EXPECT_FALSE(watchdog.fired());
    EXPECT_EQ(host_timer.calls, 1);
    EXPECT_EQ(io_calls, 1);

    // The count mirrors alive(): per watcher and loop-level.
    io.set_keepalive(true);
    EXPECT_EQ(host.counted(), 1);
    timer.set_keepalive(true);
    EXPECT_EQ(host.counted(), 1);
    io.set_keepalive(false);
    timer.set_keepalive(false);
    EXPECT_EQ(host.counted(), 0);
    loop->ref();
    EXPECT_EQ(host.counted(), 1);
    loop->unref();
    EXPECT_EQ(host.counted(), 0);
    io.stop();
    timer.stop();
}

TEST(Adopt_libevent, KeepAliveTimerHoldsHostDispatchUntilItFires) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    int calls = 0;
    TimerWatcher timer = loop->timer(30ms, [&] { ++calls; });
    Watchdog watchdog(host.base, 10s);
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(event_base_dispatch(host.base), 1);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
    EXPECT_FALSE(watchdog.fired());
    EXPECT_EQ(calls, 1);
}

TEST(Adopt_libevent, HostEventsWorkAlongside) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    SocketPair host_pair;
    SocketPair anyloop_pair;
    std::string host_received;
    std::string anyloop_received;

    // The host: a persistent reader and a timer that writes to it.
    HostEvent host_reader(host.base, host_pair.a, EV_READ | EV_PERSIST, [&](HostEvent& self) {
        host_received += read_some(host_pair.a);
        if (host_received == "hello") self.remove();
    });
    host_reader.add();
    HostEvent host_timer(host.base, -1, 0, [&](HostEvent&) { write_all(host_pair.b, "hello", 5); });
    host_timer.add(20ms);

    // anyloop: a repeating timer writing three times, a reader.
    int ticks = 0;
    TimerWatcher ticker;
    ticker = loop->timer(5ms, 5ms, [&] {
        write_all(anyloop_pair.b, "t", 1);
        if (++ticks == 3) ticker.stop();
    });
    IoWatcher reader;
    reader = loop->io(anyloop_pair.a, Io::read, [&](Io) {
        anyloop_received += read_some(anyloop_pair.a);
        if (anyloop_received == "ttt") reader.stop();
    });

    Watchdog watchdog(host.base, 10s);
    EXPECT_EQ(event_base_dispatch(host.base), 1);
    EXPECT_FALSE(watchdog.fired());
    EXPECT_EQ(host_received, "hello");
    EXPECT_EQ(host_timer.calls, 1);
    EXPECT_EQ(ticks, 3);
    EXPECT_EQ(anyloop_received, "ttt");
    EXPECT_EQ(loop->active_watchers(), 0U);

    // The host's own loop control still works with anyloop alive.
    int repeats = 0;
    TimerWatcher forever = loop->timer(2ms, 2ms, [&] { ++repeats; });
    const timeval after = to_timeval(50ms);
    ASSERT_EQ(event_base_loopexit(host.base, &after), 0);
    EXPECT_EQ(event_base_dispatch(host.base), 0);
    EXPECT_TRUE(event_base_got_exit(host.base));
    EXPECT_GE(repeats, 3);
    forever.stop();
}

TEST(Adopt_libevent, FailureBreaksHostLoopAndNextRunOnceRethrows) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    int later_calls = 0;
    TimerWatcher failing = loop->timer(1ms, [] { throw std::runtime_error("boom"); });
    TimerWatcher later = loop->timer(1h, [&] { ++later_calls; });  // keeps the host's loop alive
    Watchdog watchdog(host.base, 10s);
    EXPECT_EQ(event_base_dispatch(host.base), 0);
    EXPECT_TRUE(event_base_got_break(host.base));
    EXPECT_FALSE(watchdog.fired());
    EXPECT_THROW(loop->run_once(false), std::runtime_error);
    EXPECT_NO_THROW(loop->run_once(false));  // rethrown once; the loop stays usable
    later.stop();
    EXPECT_EQ(later_calls, 0);
}

TEST(Adopt_libevent, StopDoesNotBreakHostLoop) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    int calls = 0;
    TimerWatcher stopper = loop->timer(1ms, [&] {
        ++calls;
        loop->stop();
    });
    HostEvent host_timer(host.base, -1, 0);
    host_timer.add(30ms);
    Watchdog watchdog(host.base, 10s);
    EXPECT_EQ(event_base_dispatch(host.base), 1);
    EXPECT_FALSE(event_base_got_break(host.base));
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(host_timer.calls, 1);
}

TEST(Adopt_libevent, RunOnceInsideHostLoopThrows) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    bool threw = false;
    HostEvent host_timer(host.base, -1, 0, [&](HostEvent&) {
        try {
            loop->run_once(false);
        } catch (const std::logic_error&) {
            threw = true;
        }
    });
    host_timer.add(1ms);
    EXPECT_EQ(event_base_dispatch(host.base), 1);
    EXPECT_TRUE(threw);
}

TEST(Adopt_libevent, SignalInHostLoop) {
    HostBase host;
    auto loop = make_libevent_loop(host.base);
    int calls = 0;
    SignalWatcher signal;
    signal = loop->signal(SIGUSR1, [&](int signo) {
        EXPECT_EQ(signo, SIGUSR1);
        ++calls;
        signal.reset();
    });
    TimerWatcher trigger = loop->timer(1ms, [] { ::raise(SIGUSR1); });
    Watchdog watchdog(host.base, 10s);
    EXPECT_EQ(event_base_dispatch(host.base), 1);
    EXPECT_FALSE(watchdog.fired());
    EXPECT_EQ(calls, 1);
}

TEST(Adopt_libevent, NullHostIsRejected) {
    EXPECT_THROW(make_libevent_loop(nullptr), std::invalid_argument);
}

// ---- a loop over its own base ----------------------------------------------

TEST(Owned_libevent, NonBlockingRunOnceReturnsWithAlwaysReadyWatcher) {
    auto loop = make_libevent_loop();
    SocketPair pair;
    int calls = 0;
    IoWatcher writable = loop->io(pair.a, Io::write, [&](Io revents) {
        EXPECT_TRUE(has(revents, Io::write));
        ++calls;
    });
    // libevent's EVLOOP_NONBLOCK alone would repeat while anything is ready.
    EXPECT_TRUE(loop->run_once(false));
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(loop->run_once(true));
    EXPECT_EQ(calls, 2);
    writable.stop();
    EXPECT_FALSE(loop->run_once(false));
    EXPECT_EQ(calls, 2);
}

TEST(Owned_libevent, EventsChangeWhileActive) {
    auto loop = make_libevent_loop();
    SocketPair pair;
    Io last = Io::none;
    int calls = 0;
    IoWatcher watcher = loop->io(pair.a, Io::read, [&](Io revents) {
        last = revents;
        ++calls;
    });
    loop->run_once(false);
    EXPECT_EQ(calls, 0);
    watcher.set_events(Io::write);
    loop->run_once(false);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(last, Io::write);
    watcher.set_events(Io::none);  // paused, still active
    loop->run_once(false);
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(watcher.active());
    write_all(pair.b, "x", 1);
    watcher.set_events(Io::read_write);
    loop->run_once(false);
    EXPECT_EQ(calls, 2);
    EXPECT_EQ(last, Io::read_write);
    watcher.stop();
}

TEST(Owned_libevent, TimerNeverFiresEarly) {
    // libevent's default clock is CLOCK_MONOTONIC_COARSE; anyloop's deadlines
    // are on steady_clock and must hold exactly.
    auto loop = make_libevent_loop();
    for (const auto delay : {1ms, 7ms, 23ms}) {
        TimePoint fired{};
        const TimePoint start = Clock::now();
        loop->update_now();
        TimerWatcher timer = loop->timer(delay, [&] { fired = Clock::now(); });
        loop->run();
        EXPECT_GE(fired - start, delay);
    }
}

TEST(Owned_libevent, ByNameFromTheRegistry) {
    auto loop = make_loop("libevent");
    EXPECT_EQ(loop->backend(), "libevent");
    int calls = 0;
    loop->post([&] { ++calls; });
    loop->run();
    EXPECT_EQ(calls, 1);
}

TEST(Signals_libevent, SecondBaseWithSignalsThrows) {
    auto first = make_libevent_loop();
    auto second = make_libevent_loop();
    SignalWatcher watcher = first->signal(SIGUSR1, [](int) {});
    EXPECT_THROW((void)second->signal(SIGUSR2, [](int) {}), std::logic_error);
    SignalWatcher other = first->signal(SIGUSR2, [](int) {});  // the same base may watch more
    watcher.stop();
    other.stop();
    int calls = 0;
    SignalWatcher now_allowed = second->signal(SIGUSR2, [&](int) { ++calls; });
    ::raise(SIGUSR2);
    EXPECT_TRUE(run_until(*second, [&] { return calls == 1; }));
    now_allowed.stop();
}

}  // namespace
}  // namespace anyloop::test
