// The libev backend: adoption of a host's loop. In every Adopt_libev case the
// host creates its own loop with ev_loop_new, wraps it, and drives it with
// plain ev_run the way a libev program would; the test then checks what the
// host sees. ev_run's return value is libev's "anything still active?", which
// lets a test read the host's activity count directly.
#include <anyloop/backends/libev.hpp>

#include "support/test_support.hpp"

#include <ev.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;

/// A loop of the host's own, as a libev program would create it.
struct HostLoop {
    HostLoop() : loop(ev_loop_new(EVFLAG_AUTO)) {
        if (loop == nullptr) throw std::runtime_error("ev_loop_new failed");
    }
    ~HostLoop() { ev_loop_destroy(loop); }
    HostLoop(const HostLoop&) = delete;
    HostLoop& operator=(const HostLoop&) = delete;
    struct ev_loop* loop;
};

/// Whether anything keeps the host's loop alive, as libev itself counts it
/// (ev_run's result). Runs one non-blocking iteration to find out.
bool host_alive(struct ev_loop* loop) {
    return ev_run(loop, EVRUN_NOWAIT) != 0;
}

/// A host-side watchdog: ends the host's ev_run after `seconds` so a broken
/// backend fails the test instead of hanging it. It is ev_unref'd, as libev's
/// manual shows, so it never keeps the loop alive by itself.
class HostWatchdog {
public:
    HostWatchdog(struct ev_loop* loop, double seconds) : loop_(loop) {
        ev_timer_init(&timer_, on_expire, seconds, 0.);
        timer_.data = this;
        ev_timer_start(loop_, &timer_);
        ev_unref(loop_);
    }
    ~HostWatchdog() {
        if (ev_is_active(&timer_)) {
            ev_ref(loop_);
            ev_timer_stop(loop_, &timer_);
        }
    }
    HostWatchdog(const HostWatchdog&) = delete;
    HostWatchdog& operator=(const HostWatchdog&) = delete;
    bool expired = false;

private:
    static void on_expire(struct ev_loop* loop, ev_timer* timer, int) {
        ev_ref(loop);  // libev stopped the one-shot timer: undo our ev_unref
        static_cast<HostWatchdog*>(timer->data)->expired = true;
        ev_break(loop, EVBREAK_ALL);
    }
    struct ev_loop* loop_;
    ev_timer timer_{};
};

/// The host's own timer: counts expiries; one-shot unless `repeat` > 0.
struct HostTimer {
    HostTimer(struct ev_loop* l, double after, double repeat = 0.) : loop(l) {
        ev_timer_init(&timer, on_timer, after, repeat);
        timer.data = this;
        ev_timer_start(loop, &timer);
    }
    ~HostTimer() { ev_timer_stop(loop, &timer); }
    HostTimer(const HostTimer&) = delete;
    HostTimer& operator=(const HostTimer&) = delete;
    static void on_timer(struct ev_loop*, ev_timer* timer, int) { ++static_cast<HostTimer*>(timer->data)->fired; }
    struct ev_loop* loop;
    ev_timer timer{};
    int fired = 0;
};

// ---- (1) anyloop watchers inside the host's ev_run -------------------------

TEST(Adopt_libev, HostEvRunFiresAnyloopTimerAndEcho) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    SocketPair pair;
    int timer_calls = 0;
    std::string echoed;

    TimerWatcher timer = loop->timer(10ms, [&] { ++timer_calls; });
    IoWatcher server;
    IoWatcher client;
    server = loop->io(pair.a, Io::read, [&](Io) {
        char buffer[64];
        const ssize_t n = ::read(pair.a, buffer, sizeof buffer);
        if (n > 0) write_all(pair.a, buffer, static_cast<std::size_t>(n));
    });
    client = loop->io(pair.b, Io::read, [&](Io) {
        char buffer[64];
        const ssize_t n = ::read(pair.b, buffer, sizeof buffer);
        if (n > 0) echoed.append(buffer, static_cast<std::size_t>(n));
        if (echoed.size() >= 4) {
            client.reset();
            server.reset();
        }
    });
    write_all(pair.b, "ping", 4);

    HostWatchdog watchdog(host.loop, 10.0);
    ev_run(host.loop, 0);  // returns by itself once the anyloop watchers are done

    EXPECT_FALSE(watchdog.expired) << "the host's ev_run did not return by itself";
    EXPECT_EQ(timer_calls, 1);
    EXPECT_EQ(echoed, "ping");
    EXPECT_EQ(loop->active_watchers(), 0U);
    EXPECT_FALSE(host_alive(host.loop)) << "anyloop's internal watchers count in the host's loop";
}

// ---- (2) post() in the host's EVRUN_ONCE and EVRUN_NOWAIT modes ------------

TEST(Adopt_libev, PostFromThreadWakesHostRunOnce) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    HostTimer keep_blocking(host.loop, 3600.);  // the host's own reason to block in EVRUN_ONCE
    HostWatchdog watchdog(host.loop, 10.0);

    constexpr int total = 200;
    std::vector<int> order;
    std::thread poster([&] {
        std::this_thread::sleep_for(20ms);  // let the host block first
        for (int i = 0; i < total; ++i) loop->post([&order, i] { order.push_back(i); });
    });
    const auto start = std::chrono::steady_clock::now();
    while (order.size() < static_cast<std::size_t>(total) && !watchdog.expired) ev_run(host.loop, EVRUN_ONCE);
    poster.join();

    EXPECT_FALSE(watchdog.expired) << "post() did not wake the host's blocked ev_run";
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
    ASSERT_EQ(order.size(), static_cast<std::size_t>(total));
    for (int i = 0; i < total; ++i) EXPECT_EQ(order[static_cast<std::size_t>(i)], i);
    EXPECT_EQ(keep_blocking.fired, 0);
}

TEST(Adopt_libev, PostIsNotDroppedInHostRunNowait) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);

    constexpr int total = 2000;
    std::atomic<int> ran{0};
    int reposted_ran = 0;
    std::thread poster([&] {
        for (int i = 0; i < total; ++i) {
            loop->post([&, i] {
                ++ran;
                // Work posted from the loop thread itself, inside the host's
                // iteration, must come out of a later EVRUN_NOWAIT too.
                if (i % 100 == 0) loop->post([&] { ++reposted_ran; });
            });
        }
    });
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while ((ran.load() < total || reposted_ran < total / 100) && std::chrono::steady_clock::now() < deadline)
        ev_run(host.loop, EVRUN_NOWAIT);
    poster.join();

    EXPECT_EQ(ran.load(), total);
    EXPECT_EQ(reposted_ran, total / 100);
    EXPECT_FALSE(loop->alive());
}

TEST(Adopt_libev, PostBeforeHostRunsIsKeptForItsFirstIteration) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    int ran = 0;
    loop->post([&] { ++ran; });
    loop->post([&] { ++ran; });
    ev_run(host.loop, EVRUN_NOWAIT);
    EXPECT_EQ(ran, 2);
}

// ---- (3) ev_userdata stays the host's ---------------------------------------

TEST(Adopt_libev, UserdataIsLeftAlone) {
    HostLoop host;
    int marker = 42;
    ev_set_userdata(host.loop, &marker);
    {
        auto loop = make_libev_loop(host.loop);
        EXPECT_EQ(ev_userdata(host.loop), &marker);
        int calls = 0;
        TimerWatcher timer = loop->timer(1ms, [&] { ++calls; });
        loop->post([&] { ++calls; });
        HostWatchdog watchdog(host.loop, 10.0);
        ev_run(host.loop, 0);
        EXPECT_EQ(calls, 2);
        EXPECT_EQ(ev_userdata(host.loop), &marker);
    }
    EXPECT_EQ(ev_userdata(host.loop), &marker);
    EXPECT_EQ(marker, 42);
}

// ---- (4) destroying the wrapper leaves the host loop working ----------------

TEST(Adopt_libev, DestroyingWrapperLeavesHostLoopWorking) {
    HostLoop host;
    SocketPair pair;
    IoWatcher io;
    TimerWatcher timer;
    {
        auto loop = make_libev_loop(host.loop);
        io = loop->io(pair.a, Io::read, [](Io) {});
        timer = loop->timer(1h, [] {});
        loop->ref();        // never matched by unref()
        loop->post([] {});  // never run
        EXPECT_TRUE(host_alive(host.loop));
    }
    // The orphaned handles are inert, and the host's count is back to zero.
    EXPECT_FALSE(io.active());
    EXPECT_FALSE(timer.active());
    io.reset();
    timer.reset();
    EXPECT_FALSE(host_alive(host.loop)) << "the wrapper left something active in the host's loop";

    HostTimer host_timer(host.loop, 0.005);
    HostWatchdog watchdog(host.loop, 10.0);
    ev_run(host.loop, 0);
    EXPECT_FALSE(watchdog.expired);
    EXPECT_EQ(host_timer.fired, 1);

    // And the host can adopt it again.
    auto again = make_libev_loop(host.loop);
    int calls = 0;
    TimerWatcher second = again->timer(1ms, [&] { ++calls; });
    ev_run(host.loop, 0);
    EXPECT_EQ(calls, 1);
}

// ---- (5) unref'd anyloop watchers and the host's keep-alive -----------------

TEST(Adopt_libev, UnrefdWatcherDoesNotKeepHostAlive) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    SocketPair pair;
    int calls = 0;
    IoWatcher io = loop->io(pair.a, Io::read, [&](Io) { ++calls; });  // never readable
    TimerWatcher timer = loop->timer(1h, 1h, [&] { ++calls; });
    io.set_keepalive(false);
    timer.set_keepalive(false);
    EXPECT_FALSE(host_alive(host.loop));

    HostWatchdog watchdog(host.loop, 10.0);
    const auto start = std::chrono::steady_clock::now();
    ev_run(host.loop, 0);
    EXPECT_FALSE(watchdog.expired);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
    EXPECT_EQ(calls, 0);

    // The keep-alive mirror follows anyloop's own accounting exactly.
    loop->ref();
    EXPECT_TRUE(host_alive(host.loop));
    loop->unref();
    EXPECT_FALSE(host_alive(host.loop));
    timer.set_keepalive(true);
    EXPECT_TRUE(host_alive(host.loop));
    io.set_keepalive(true);
    timer.stop();
    EXPECT_TRUE(host_alive(host.loop));
    io.stop();
    EXPECT_FALSE(host_alive(host.loop));
}

// ---- (6) the host's own watchers alongside ---------------------------------

struct HostReader {
    HostReader(struct ev_loop* l, int fd) : loop(l) {
        ev_io_init(&io, on_read, fd, EV_READ);
        io.data = this;
        ev_io_start(loop, &io);
    }
    ~HostReader() { ev_io_stop(loop, &io); }
    HostReader(const HostReader&) = delete;
    HostReader& operator=(const HostReader&) = delete;
    static void on_read(struct ev_loop* loop, ev_io* io, int) {
        auto* self = static_cast<HostReader*>(io->data);
        char buffer[64];
        const ssize_t n = ::read(io->fd, buffer, sizeof buffer);
        if (n > 0) self->data.append(buffer, static_cast<std::size_t>(n));
        ev_io_stop(loop, io);
    }
    struct ev_loop* loop;
    ev_io io{};
    std::string data;
};

TEST(Adopt_libev, HostWatchersKeepWorkingAlongside) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    SocketPair host_pair;
    SocketPair anyloop_pair;

    HostReader host_reader(host.loop, host_pair.a);
    HostTimer host_timer(host.loop, 0.005);
    std::string anyloop_data;
    int anyloop_timer_calls = 0;
    IoWatcher reader;
    reader = loop->io(anyloop_pair.a, Io::read, [&](Io) {
        char buffer[64];
        const ssize_t n = ::read(anyloop_pair.a, buffer, sizeof buffer);
        if (n > 0) anyloop_data.append(buffer, static_cast<std::size_t>(n));
        reader.stop();
    });
    TimerWatcher timer = loop->timer(5ms, [&] { ++anyloop_timer_calls; });
    write_all(host_pair.b, "host", 4);
    write_all(anyloop_pair.b, "anyloop", 7);

    HostWatchdog watchdog(host.loop, 10.0);
    ev_run(host.loop, 0);
    EXPECT_FALSE(watchdog.expired);
    EXPECT_EQ(host_reader.data, "host");
    EXPECT_EQ(host_timer.fired, 1);
    EXPECT_EQ(anyloop_data, "anyloop");
    EXPECT_EQ(anyloop_timer_calls, 1);
}

// ---- failures, stop() and run() on an adopted loop --------------------------

TEST(Adopt_libev, CallbackExceptionBreaksHostRunAndIsRethrownLater) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    HostTimer host_ticks(host.loop, 0.01, 0.01);  // would keep the host's ev_run going forever
    HostWatchdog watchdog(host.loop, 10.0);
    int after_throw = 0;
    TimerWatcher thrower = loop->timer(5ms, [] { throw std::runtime_error("boom"); });
    // Due in the same iteration: the rest of that iteration still runs.
    TimerWatcher sibling = loop->timer(5ms, [&] { ++after_throw; });

    ev_run(host.loop, 0);
    EXPECT_FALSE(watchdog.expired) << "the failure did not end the host's ev_run";
    EXPECT_EQ(after_throw, 1);
    EXPECT_THROW(loop->run_once(false), std::runtime_error);
    EXPECT_NO_THROW(loop->run_once(false));  // rethrown once, then the loop is usable

    ev_timer_stop(host.loop, &host_ticks.timer);
    int calls = 0;
    TimerWatcher again = loop->timer(1ms, [&] { ++calls; });
    ev_run(host.loop, 0);
    EXPECT_EQ(calls, 1);
}

TEST(Adopt_libev, StopDoesNotBreakHostRun) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    HostTimer host_timer(host.loop, 0.05);
    HostWatchdog watchdog(host.loop, 10.0);
    int calls = 0;
    TimerWatcher timer = loop->timer(1ms, [&] {
        ++calls;
        loop->stop();
    });
    ev_run(host.loop, 0);
    EXPECT_FALSE(watchdog.expired);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(host_timer.fired, 1) << "stop() ended the host's ev_run before the host's own timer";
}

TEST(Adopt_libev, AnyloopRunReturnsWhenAnyloopIsDoneEvenIfHostIsNot) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    HostTimer host_timer(host.loop, 3600.);
    SocketPair pair;
    int host_reads = 0;
    struct Counter {
        static void on_read(struct ev_loop* l, ev_io* io, int) {
            char byte;
            if (::read(io->fd, &byte, 1) == 1) ++*static_cast<int*>(io->data);
            ev_io_stop(l, io);
        }
    };
    ev_io host_io;
    ev_io_init(&host_io, Counter::on_read, pair.a, EV_READ);
    host_io.data = &host_reads;
    ev_io_start(host.loop, &host_io);
    write_all(pair.b, "x", 1);

    int calls = 0;
    TimerWatcher timer = loop->timer(5ms, [&] { ++calls; });
    loop->run();  // drives the host loop too, until anyloop has nothing left
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(host_reads, 1);
    EXPECT_EQ(host_timer.fired, 0);
    ev_io_stop(host.loop, &host_io);
}

// ---- timers, I/O errors and signals -----------------------------------------

TEST(Adopt_libev, TimerIsNotEarlyWhenTheHostClockIsStale) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    std::this_thread::sleep_for(100ms);  // libev's cached time falls behind
    loop->update_now();
    const auto start = std::chrono::steady_clock::now();
    std::chrono::steady_clock::duration fired_after{};
    int calls = 0;
    TimerWatcher timer = loop->timer(50ms, [&] {
        ++calls;
        fired_after = std::chrono::steady_clock::now() - start;
    });
    HostWatchdog watchdog(host.loop, 10.0);
    ev_run(host.loop, 0);
    EXPECT_EQ(calls, 1);
    EXPECT_GE(fired_after, 50ms);
    EXPECT_LT(fired_after, 2s);
}

// libev registers an fd with the kernel at the start of the next iteration,
// and Debian's build asserts (aborts) if it is closed by then.
TEST(Adopt_libev, FdClosedBeforeTheLoopRegistersItIsReportedNotFatal) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    SocketPair pair;
    const int doomed = ::dup(pair.a);
    ASSERT_GE(doomed, 0);

    int calls = 0;
    Io seen = Io::none;
    IoWatcher watcher = loop->io(doomed, Io::read, [&](Io revents) {
        seen = revents;
        ++calls;
    });
    ::close(doomed);
    for (int i = 0; i < 3; ++i) ev_run(host.loop, EVRUN_NOWAIT);
    EXPECT_EQ(calls, 1) << "a closed fd is reported once per start or change";
    EXPECT_EQ(seen, Io::read);  // every watched direction
    EXPECT_TRUE(watcher.active());
    EXPECT_TRUE(host_alive(host.loop)) << "the keep-alive accounting lost the watcher";

    watcher.set_events(Io::read_write);  // a change is checked again
    for (int i = 0; i < 3; ++i) ev_run(host.loop, EVRUN_NOWAIT);
    EXPECT_EQ(calls, 2);
    EXPECT_EQ(seen, Io::read_write);

    watcher.stop();
    EXPECT_FALSE(host_alive(host.loop));
    EXPECT_EQ(loop->active_watchers(), 0U);
}

TEST(Adopt_libev, FdClosedWhileRegisteredThenStoppedIsHarmless) {
    HostLoop host;
    auto loop = make_libev_loop(host.loop);
    SocketPair pair;
    const int doomed = ::dup(pair.a);
    ASSERT_GE(doomed, 0);
    int calls = 0;
    IoWatcher watcher = loop->io(doomed, Io::read, [&](Io) { ++calls; });
    ev_run(host.loop, EVRUN_NOWAIT);  // registered with the kernel now
    ::close(doomed);
    watcher.stop();
    ev_run(host.loop, EVRUN_NOWAIT);
    EXPECT_EQ(calls, 0);
    EXPECT_FALSE(host_alive(host.loop));
}

TEST(Adopt_libev, SignalInsideHostRunAndDispositionRestored) {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    struct sigaction saved {};
    ASSERT_EQ(::sigaction(SIGUSR2, &ignore, &saved), 0);

    HostLoop host;
    {
        auto loop = make_libev_loop(host.loop);
        int calls = 0;
        SignalWatcher watcher;
        watcher = loop->signal(SIGUSR2, [&](int signo) {
            EXPECT_EQ(signo, SIGUSR2);
            ++calls;
            watcher.stop();
        });
        TimerWatcher trigger = loop->timer(1ms, [] { ::raise(SIGUSR2); });
        HostWatchdog watchdog(host.loop, 10.0);
        ev_run(host.loop, 0);
        EXPECT_FALSE(watchdog.expired);
        EXPECT_EQ(calls, 1);
    }
    struct sigaction now {};
    ::sigaction(SIGUSR2, nullptr, &now);
    EXPECT_EQ(now.sa_handler, SIG_IGN) << "the disposition from before the watcher was not restored";
    ::sigaction(SIGUSR2, &saved, nullptr);
}

// ---- the owned loop ---------------------------------------------------------

TEST(Owned_libev, FactoryAndRegistry) {
    auto owned = make_libev_loop();
    EXPECT_EQ(owned->backend(), "libev");
    int calls = 0;
    TimerWatcher timer = owned->timer(1ms, [&] { ++calls; });
    owned->run();
    EXPECT_EQ(calls, 1);

    EXPECT_EQ(make_loop("libev")->backend(), "libev");
    EXPECT_THROW(make_libev_loop(nullptr), std::invalid_argument);
}

TEST(Owned_libev, PostFromThreadWakesBlockedRun) {
    auto loop = make_libev_loop();
    loop->ref();  // block in run() until the posted function ends it
    int ran = 0;
    std::thread poster([&] {
        std::this_thread::sleep_for(20ms);
        loop->post([&] {
            ++ran;
            loop->unref();
        });
    });
    TimerWatcher guard = loop->timer(10s, [&] { loop->stop(); });
    guard.set_keepalive(false);
    loop->run();
    poster.join();
    EXPECT_EQ(ran, 1);
}

}  // namespace
}  // namespace anyloop::test
