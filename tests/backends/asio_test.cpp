// The Asio backend: adoption of a host's io_context, and what is particular
// to Asio (level-triggered readiness on an edge-triggered reactor, bounded
// iterations, fds that stay the user's).
//
// In every Adopt_asio case the host owns an asio::io_context and drives it
// the way an Asio program would, with its own run(), run_one(), poll() or
// poll_one(); the test checks what the host sees. AsioLoop_asio cases use the
// loop's own io_context.

#include <anyloop/backends/asio.hpp>

#include "support/test_support.hpp"

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;

/// Ends the host's run() from another thread (io_context::stop() is
/// thread-safe) if it has not returned within `limit`, so a broken backend
/// fails a test instead of hanging it.
class HostWatchdog {
public:
    HostWatchdog(asio::io_context& host, std::chrono::milliseconds limit)
        : thread_([this, &host, limit](std::stop_token stop) {
              std::mutex mutex;
              std::condition_variable_any wakeup;
              std::unique_lock lock(mutex);
              if (!wakeup.wait_for(lock, stop, limit, [&] { return stop.stop_requested(); })) {
                  expired_ = true;
                  host.stop();
              }
          }) {}
    HostWatchdog(const HostWatchdog&) = delete;
    HostWatchdog& operator=(const HostWatchdog&) = delete;
    [[nodiscard]] bool expired() const { return expired_.load(); }

private:
    std::atomic<bool> expired_{false};
    std::jthread thread_;  // last: started after expired_ exists, joined first
};

/// The host's plain blocking run(). Returns whether it returned by itself
/// (nothing left to do) within `limit`.
bool host_run(asio::io_context& host, std::chrono::milliseconds limit = 10s) {
    if (host.stopped()) host.restart();
    HostWatchdog watchdog(host, limit);
    host.run();
    return !watchdog.expired();
}

bool fd_is_open(int fd) {
    return ::fcntl(fd, F_GETFD) != -1;
}

// ---- adoption: anyloop watchers inside the host's run() ---------------------

TEST(Adopt_asio, HostRunFiresAnyloopTimerAndIoEcho) {
    const auto start = std::chrono::steady_clock::now();  // before the loop caches its now()
    asio::io_context host;
    auto loop = make_asio_loop(host);
    EXPECT_EQ(loop->backend(), "asio");
    SocketPair pair;
    bool in_host_run = false;
    int timer_calls = 0;
    int server_calls = 0;
    std::string echoed;
    IoWatcher server;
    IoWatcher client;
    // The server end echoes what it reads; the client end collects the echo
    // and, once it is complete, stops everything.
    server = loop->io(pair.a, Io::read, [&](Io revents) {
        EXPECT_TRUE(in_host_run);
        EXPECT_EQ(revents, Io::read);
        ++server_calls;
        const std::string request = read_available(pair.a);
        write_all(pair.a, request.data(), request.size());
    });
    client = loop->io(pair.b, Io::read, [&](Io) {
        EXPECT_TRUE(in_host_run);
        echoed += read_available(pair.b);
        if (echoed == "ping") {
            client.stop();
            server.stop();
        }
    });
    TimerWatcher timer = loop->timer(5ms, [&] {
        EXPECT_TRUE(in_host_run);
        ++timer_calls;
        write_all(pair.b, "ping", 4);
    });
    in_host_run = true;
    EXPECT_TRUE(host_run(host)) << "the host's run() did not return once anyloop's watchers stopped";
    in_host_run = false;
    EXPECT_GE(elapsed_ms(start), 5.0) << "run() returned before the timer was due";
    EXPECT_EQ(timer_calls, 1);
    EXPECT_GE(server_calls, 1);
    EXPECT_EQ(echoed, "ping");
    EXPECT_EQ(loop->active_watchers(), 0U);
    EXPECT_FALSE(loop->alive());
    EXPECT_TRUE(fd_is_open(pair.a) && fd_is_open(pair.b)) << "Asio closed a user fd";
}

TEST(Adopt_asio, UnusedWrapperAndPostDoNotKeepHostRunAlive) {
    asio::io_context host;
    auto loop = make_asio_loop(host);
    EXPECT_TRUE(host_run(host, 2s)) << "an idle wrapper kept the host's run() alive";

    // A post() is one transient handler: it runs, then run() returns.
    int posted = 0;
    loop->post([&] { ++posted; });
    EXPECT_TRUE(host_run(host, 2s));
    EXPECT_EQ(posted, 1);
    EXPECT_FALSE(loop->alive());
}

// Host's run_one() and poll(): posts from other threads are never dropped.
void post_from_threads_while_host_drives(const std::function<void(asio::io_context&)>& drive_once) {
    constexpr std::size_t threads = 2;
    constexpr int per_thread = 5'000;
    asio::io_context host;
    auto loop = make_asio_loop(host);
    EventLoop& target = *loop;
    const auto host_thread = std::this_thread::get_id();
    std::vector<std::vector<int>> received(threads);  // host thread only
    std::size_t total = 0;
    int off_thread = 0;
    {
        std::vector<std::jthread> posters;
        for (std::size_t t = 0; t < threads; ++t) {
            posters.emplace_back([&, t] {
                for (int i = 0; i < per_thread; ++i) {
                    target.post([&, t, i] {
                        if (std::this_thread::get_id() != host_thread) ++off_thread;
                        received[t].push_back(i);
                        ++total;
                    });
                    if (i % 1000 == 0) std::this_thread::sleep_for(1ms);  // let the host go idle now and then
                }
            });
        }
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (total < threads * per_thread && std::chrono::steady_clock::now() < deadline) drive_once(host);
    }  // joins the posters
    EXPECT_EQ(total, threads * per_thread) << "posts were dropped";
    EXPECT_EQ(off_thread, 0);
    for (std::size_t t = 0; t < threads; ++t) {
        ASSERT_EQ(received[t].size(), static_cast<std::size_t>(per_thread)) << "thread " << t;
        for (int i = 0; i < per_thread; ++i)
            ASSERT_EQ(received[t][static_cast<std::size_t>(i)], i) << "thread " << t << " out of order at " << i;
    }
    EXPECT_FALSE(loop->alive());
}

TEST(Adopt_asio, HostRunOneDoesNotDropPostsFromOtherThreads) {
    post_from_threads_while_host_drives([](asio::io_context& host) {
        // A typical server keeps its io_context busy with work of its own;
        // run_one() then blocks until a post() wakes it.
        auto work = asio::make_work_guard(host);
        asio::steady_timer tick(host, 50ms);  // bounds the wait when a test fails
        tick.async_wait([](const asio::error_code&) {});
        host.run_one();
        tick.cancel();
        work.reset();
        host.poll();  // the cancelled tick, and anything else ready
        host.restart();
    });
}

TEST(Adopt_asio, HostPollDoesNotDropPostsFromOtherThreads) {
    int rounds = 0;
    post_from_threads_while_host_drives([&](asio::io_context& host) {
        // A game-style loop: non-blocking poll() (or poll_one()) per frame.
        if (host.stopped()) host.restart();
        if (++rounds % 2 == 0)
            host.poll();
        else
            host.poll_one();
        std::this_thread::sleep_for(100us);
    });
}

TEST(Adopt_asio, HostRunOneBlocksUntilAPostArrives) {
    asio::io_context host;
    auto work = asio::make_work_guard(host);
    auto loop = make_asio_loop(host);
    EventLoop& target = *loop;
    std::atomic<int> posted{0};
    HostWatchdog watchdog(host, 5s);
    std::jthread poster([&] {
        std::this_thread::sleep_for(30ms);  // let run_one() block first
        target.post([&] { posted.fetch_add(1); });
    });
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(host.run_one(), 1U);
    EXPECT_EQ(posted.load(), 1);
    EXPECT_GE(elapsed_ms(start), 25.0);
    EXPECT_FALSE(watchdog.expired());
}

// ---- adoption: the host's own work, and destroying the wrapper -----------------

TEST(Adopt_asio, HostWorkRunsAlongside) {
    asio::io_context host;
    auto loop = make_asio_loop(host);
    std::vector<std::string> events;

    // The host's own Asio work: a repeating timer, a post, and an async_wait
    // on a descriptor of its own.
    asio::steady_timer host_timer(host);
    int host_ticks = 0;
    std::function<void()> tick = [&] {
        host_timer.expires_after(3ms);
        host_timer.async_wait([&](const asio::error_code& error) {
            if (error) return;
            events.push_back("host timer");
            if (++host_ticks < 3) tick();
        });
    };
    tick();
    asio::post(host, [&] { events.push_back("host post"); });
    SocketPair host_pair;
    asio::posix::stream_descriptor host_socket(host, ::dup(host_pair.a));  // the host's own fd, closed by Asio
    host_socket.async_wait(asio::posix::stream_descriptor::wait_read, [&](const asio::error_code& error) {
        if (!error) events.push_back("host socket");
    });

    // anyloop's watchers on the same io_context.
    SocketPair pair;
    IoWatcher watcher;
    watcher = loop->io(pair.a, Io::read, [&](Io) {
        events.push_back("anyloop io " + read_available(pair.a));
        watcher.stop();
        write_all(host_pair.b, "h", 1);  // now the host's socket becomes readable
    });
    TimerWatcher timer = loop->timer(5ms, [&] {
        events.push_back("anyloop timer");
        write_all(pair.b, "x", 1);
    });
    loop->post([&] { events.push_back("anyloop post"); });

    EXPECT_TRUE(host_run(host));
    EXPECT_EQ(host_ticks, 3);
    const auto position = [&](const std::string& what) {
        return std::find(events.begin(), events.end(), what) - events.begin();
    };
    for (const char* what : {"host post", "host socket", "anyloop io x", "anyloop timer", "anyloop post"})
        EXPECT_EQ(std::count(events.begin(), events.end(), what), 1) << what;
    EXPECT_LT(position("anyloop timer"), position("anyloop io x"));
    EXPECT_LT(position("anyloop io x"), position("host socket"));
    EXPECT_EQ(loop->active_watchers(), 0U);
}

TEST(Adopt_asio, DestroyingTheWrapperLeavesTheHostContextWorking) {
    asio::io_context host;
    SocketPair pair;
    write_all(pair.b, "x", 1);  // pair.a: readable and writable
    int anyloop_calls = 0;
    auto token = std::make_shared<int>(1);
    IoWatcher io;
    TimerWatcher timer;
    SignalWatcher signal;
    {
        auto loop = make_asio_loop(host);
        io = loop->io(pair.a, Io::read_write, [&](Io) { ++anyloop_calls; });
        timer = loop->timer(1ms, [&] { ++anyloop_calls; });
        signal = loop->signal(SIGUSR2, [&](int) { ++anyloop_calls; });
        // One handler runs; the other completions stay queued in the host's
        // io_context, and will run after the wrapper is gone.
        EXPECT_EQ(host.run_one(), 1U);
        const int before = anyloop_calls;
        loop->post([&, token] { ++anyloop_calls; });  // queued, never run
        ::raise(SIGUSR2);                             // delivered to a set that goes away
        loop.reset();
        EXPECT_EQ(anyloop_calls, before);
        anyloop_calls = 0;
    }
    EXPECT_FALSE(io.active());
    EXPECT_FALSE(timer.active());
    EXPECT_FALSE(signal.active());
    EXPECT_EQ(token.use_count(), 1) << "the unrun post()ed function was not released";

    // The host's io_context goes on: its own timer fires and run() returns.
    bool host_timer_fired = false;
    asio::steady_timer host_timer(host, 5ms);
    host_timer.async_wait([&](const asio::error_code& error) { host_timer_fired = !error; });
    EXPECT_TRUE(host_run(host));
    EXPECT_TRUE(host_timer_fired);
    EXPECT_EQ(anyloop_calls, 0) << "a callback ran after its loop was destroyed";
    EXPECT_TRUE(fd_is_open(pair.a)) << "Asio closed the user's fd";
    io.reset();
    timer.reset();
    signal.reset();
}

TEST(Adopt_asio, WatchersDestroyedBeforeTheWrapperWithCompletionsQueued) {
    asio::io_context host;
    SocketPair first;
    SocketPair second;
    write_all(first.b, "1", 1);
    write_all(second.b, "2", 1);
    auto loop = make_asio_loop(host);
    int calls = 0;
    auto a = std::make_unique<IoWatcher>(loop->io(first.a, Io::read, [&](Io) { ++calls; }));
    auto b = std::make_unique<IoWatcher>(loop->io(second.a, Io::read, [&](Io) { ++calls; }));
    // One host handler is the wait on anyloop's epoll set: its batch holds
    // both ready watchers. Neither reads, so the wait it re-armed completes
    // again; destroying the watchers cancels it, and its completion stays
    // queued in the host's io_context until after the wrapper is gone.
    EXPECT_EQ(host.run_one(), 1U);
    EXPECT_EQ(calls, 2);
    a.reset();
    b.reset();
    loop.reset();
    EXPECT_TRUE(host_run(host));
    EXPECT_EQ(calls, 2);
    EXPECT_TRUE(fd_is_open(first.a) && fd_is_open(second.a));
}

TEST(Adopt_asio, HostAndAnyloopWatchTheSameFd) {
    // anyloop's watchers live in an epoll set of their own, so an fd the
    // host's Asio objects also wait on is no second registration in Asio's.
    asio::io_context host;
    auto loop = make_asio_loop(host);
    SocketPair pair;
    asio::posix::stream_descriptor host_view(host, ::dup(pair.a));  // the host's own descriptor of the socket
    bool host_saw = false;
    host_view.async_wait(asio::posix::stream_descriptor::wait_read,
                         [&](const asio::error_code& error) { host_saw = !error; });
    std::string received;
    IoWatcher watcher;
    watcher = loop->io(pair.a, Io::read, [&](Io) {
        received += read_available(pair.a);
        watcher.stop();
    });
    write_all(pair.b, "x", 1);
    EXPECT_TRUE(host_run(host));
    EXPECT_TRUE(host_saw);
    EXPECT_EQ(received, "x");
    EXPECT_FALSE(loop->alive());
}

// ---- adoption: keep-alive, failures, stop -------------------------------------

TEST(Adopt_asio, KeepAliveMirrorsAnyloopsOwn) {
    asio::io_context host;
    auto loop = make_asio_loop(host);
    SocketPair pair;
    // A paused watcher has no wait outstanding, yet it keeps anyloop (and so
    // the host's run()) alive until it stops, like ev_ref on libev.
    IoWatcher paused = loop->io(pair.a, Io::none, [](Io) {});
    loop->ref();
    asio::steady_timer host_timer(host, 10ms);
    int stage = 0;
    host_timer.async_wait([&](const asio::error_code&) {
        stage = 1;
        loop->unref();
        asio::post(host, [&] {
            stage = 2;
            paused.stop();
        });
    });
    const auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(host_run(host, 5s));
    EXPECT_EQ(stage, 2);
    EXPECT_GE(elapsed_ms(start), 9.0);
    EXPECT_FALSE(loop->alive());
}

TEST(Adopt_asio, CallbackExceptionDoesNotStopTheHostAndComesOutOfTheNextRunOnce) {
    asio::io_context host;
    auto loop = make_asio_loop(host);
    TimerWatcher failing = loop->timer(1ms, [] { throw std::runtime_error("anyloop callback failed"); });
    int stops = 0;
    TimerWatcher stopping = loop->timer(2ms, [&] {
        ++stops;
        loop->stop();  // anyloop's stop() does not stop the host either
    });
    bool host_timer_fired = false;
    asio::steady_timer host_timer(host, 20ms);
    host_timer.async_wait([&](const asio::error_code& error) { host_timer_fired = !error; });
    EXPECT_NO_THROW(EXPECT_TRUE(host_run(host)));
    EXPECT_TRUE(host_timer_fired) << "the host's run() ended early";
    EXPECT_EQ(stops, 1);
    try {
        loop->run_once(false);
        ADD_FAILURE() << "the stored exception was not rethrown";
    } catch (const std::runtime_error& error) {
        EXPECT_STREQ(error.what(), "anyloop callback failed");
    }
    EXPECT_NO_THROW(loop->run_once(false));  // rethrown once
}

TEST(Adopt_asio, WrapperRunDrivesTheHostContext) {
    // run() on the wrapper runs the host's io_context, host handlers included,
    // until anyloop has nothing left.
    asio::io_context host;
    auto loop = make_asio_loop(host);
    bool host_posted = false;
    asio::post(host, [&] { host_posted = true; });
    int calls = 0;
    TimerWatcher timer = loop->timer(5ms, [&] { ++calls; });
    loop->run();
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(host_posted);
}

TEST(Adopt_asio, HostSignalSetAndAnyloopWatcherShareASignal) {
    asio::io_context host;
    auto loop = make_asio_loop(host);
    asio::signal_set host_signals(host, SIGUSR1);
    int host_calls = 0;
    std::function<void()> host_wait = [&] {
        host_signals.async_wait([&](const asio::error_code& error, int) {
            if (error) return;
            if (++host_calls < 2) host_wait();
        });
    };
    host_wait();
    int anyloop_calls = 0;
    SignalWatcher watcher = loop->signal(SIGUSR1, [&](int) {
        ++anyloop_calls;
        watcher.stop();
        // Asio still handles the signal for the host's set: our stop must not
        // restore the disposition from before.
        ::raise(SIGUSR1);
    });
    ::raise(SIGUSR1);
    EXPECT_TRUE(host_run(host));
    EXPECT_EQ(anyloop_calls, 1);
    EXPECT_EQ(host_calls, 2);
}

// ---- level-triggered readiness on Asio's edge-triggered reactor --------------

TEST(Adopt_asio, UndrainedFdFiresAgainOnEveryHostRunOne) {
    asio::io_context host;
    auto loop = make_asio_loop(host);
    SocketPair pair;
    write_all(pair.b, "abc", 3);
    int calls = 0;
    IoWatcher watcher = loop->io(pair.a, Io::read, [&](Io revents) {
        EXPECT_EQ(revents, Io::read);
        ++calls;  // reads nothing: the fd stays readable
    });
    HostWatchdog watchdog(host, 5s);
    for (int i = 1; i <= 5; ++i) {
        EXPECT_EQ(host.run_one(), 1U);
        EXPECT_EQ(calls, i) << "the still-readable fd was not reported again";
    }
    EXPECT_EQ(read_available(pair.a), "abc");
    watcher.stop();
    EXPECT_FALSE(watchdog.expired());
}

TEST(AsioLoop_asio, UndrainedFdFiresOncePerIteration) {
    auto loop = make_asio_loop();
    SocketPair pair;
    write_all(pair.b, "abc", 3);
    int reads = 0;
    IoWatcher reader = loop->io(pair.a, Io::read, [&](Io) { ++reads; });
    int writes = 0;
    IoWatcher writer = loop->io(pair.b, Io::write, [&](Io) { ++writes; });
    for (int i = 1; i <= 5; ++i) {
        // Non-blocking: each iteration must end although the fds stay ready.
        EXPECT_TRUE(loop->run_once(false));
        EXPECT_EQ(reads, i);
        EXPECT_EQ(writes, i);
    }
    EXPECT_EQ(read_available(pair.a), "abc");
    // Drained, it stops firing.
    loop->run_once(false);
    const int after_drain = reads;
    loop->run_once(false);
    loop->run_once(false);
    EXPECT_EQ(reads, after_drain);
    reader.stop();
    writer.stop();
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// ---- bounded iterations -------------------------------------------------------

TEST(AsioLoop_asio, PostFromAPostedFunctionRunsInTheNextIteration) {
    auto loop = make_asio_loop();
    int calls = 0;
    bool again = true;
    std::function<void()> repost = [&] {
        ++calls;
        if (again) loop->post(repost);
    };
    loop->post(repost);
    for (int i = 1; i <= 4; ++i) {
        EXPECT_TRUE(loop->run_once(false)) << "the re-posted function keeps the loop alive";
        EXPECT_EQ(calls, i);
    }
    again = false;
    loop->run();
    EXPECT_EQ(calls, 5);
    EXPECT_FALSE(loop->alive());
}

TEST(AsioLoop_asio, BlockingRunOnceSkipsCancelledWaits) {
    // Stopping watchers leaves cancelled waits whose handlers still run; a
    // blocking iteration must not take one of them for the event it waits for.
    auto loop = make_asio_loop();
    SocketPair pair;
    IoWatcher io = loop->io(pair.a, Io::read_write, [](Io) {});
    io.stop();
    TimerWatcher stopped = loop->timer(1h, [] {});
    stopped.stop();
    SignalWatcher signal = loop->signal(SIGUSR2, [](int) {});
    signal.stop();
    int calls = 0;
    TimerWatcher timer = loop->timer(20ms, [&] { ++calls; });
    const auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(loop->run_once(true));
    EXPECT_EQ(calls, 1);
    EXPECT_GE(elapsed_ms(start), 19.0);
}

// ---- fds: never closed, closed under a watcher, not pollable ---------------------

TEST(AsioLoop_asio, NeverClosesTheUserFd) {
    SocketPair pair;
    auto loop = make_asio_loop();
    IoWatcher watcher = loop->io(pair.a, Io::read, [](Io) {});
    loop->run_once(false);
    watcher.set_events(Io::write);
    watcher.stop();
    EXPECT_TRUE(fd_is_open(pair.a));
    watcher.start();
    watcher.reset();
    EXPECT_TRUE(fd_is_open(pair.a));

    // Destroying the loop (and its io_context) with a watcher still active.
    IoWatcher left = loop->io(pair.a, Io::read_write, [](Io) {});
    loop->run_once(false);
    loop.reset();
    EXPECT_TRUE(fd_is_open(pair.a));
    left.reset();
    EXPECT_TRUE(fd_is_open(pair.a));
    write_all(pair.a, "ok", 2);
    EXPECT_EQ(read_available(pair.b), "ok");
}

TEST(AsioLoop_asio, FdClosedAndReusedBeforeTheOldWatcherStops) {
    auto loop = make_asio_loop();
    auto old_pair = std::make_unique<SocketPair>();
    const int number = old_pair->a;
    int old_calls = 0;
    IoWatcher old_watcher = loop->io(number, Io::read, [&](Io) { ++old_calls; });
    loop->run_once(false);
    old_pair.reset();  // closes both ends while the watcher is active

    // The number is taken again before the old watcher stops: stopping it
    // must not disturb the new file that now has that number.
    SocketPair new_pair;
    ASSERT_EQ(new_pair.a, number) << "the kernel did not reuse the lowest free fd number";
    old_watcher.stop();
    EXPECT_TRUE(fd_is_open(number));
    std::string received;
    IoWatcher new_watcher = loop->io(new_pair.a, Io::read, [&](Io) { received += read_available(new_pair.a); });
    write_all(new_pair.b, "new", 3);
    ASSERT_TRUE(run_until(*loop, [&] { return received == "new"; }));
    EXPECT_EQ(old_calls, 0);
    new_watcher.stop();
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// What the loop's epoll set does with fds closed, reused or outliving their
// watcher, with regular files and hung-up peers, is tested on epoll and Asio
// alike in epoll_test.cpp (EpollSet).

TEST(AsioLoop_asio, ReadAndWriteReadyArriveInOneCallback) {
    auto loop = make_asio_loop();
    SocketPair pair;
    write_all(pair.b, "x", 1);  // pair.a: readable and writable
    std::vector<Io> seen;
    IoWatcher watcher = loop->io(pair.a, Io::read_write, [&](Io revents) { seen.push_back(revents); });
    loop->run_once(false);
    ASSERT_EQ(seen.size(), 1U);
    EXPECT_EQ(seen[0], Io::read_write);
    watcher.stop();
}

TEST(AsioLoop_asio, RegularFileIsAlwaysReadyLikePoll) {
    auto loop = make_asio_loop();
    std::FILE* file = std::tmpfile();
    ASSERT_NE(file, nullptr);
    const int fd = ::fileno(file);
    std::vector<Io> seen;
    IoWatcher watcher = loop->io(fd, Io::read_write, [&](Io revents) { seen.push_back(revents); });
    loop->run_once(false);
    loop->run_once(false);
    ASSERT_EQ(seen.size(), 2U) << "epoll cannot watch a regular file; it must still be reported ready";
    for (const Io revents : seen) EXPECT_EQ(revents, Io::read_write);
    watcher.stop();
    EXPECT_TRUE(fd_is_open(fd));
    std::fclose(file);
}

TEST(AsioLoop_asio, WatchingAClosedFdThrows) {
    auto loop = make_asio_loop();
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    ::close(fds[0]);
    ::close(fds[1]);
    EXPECT_THROW((void)loop->io(fds[0], Io::read, [](Io) {}), std::system_error);
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// ---- signals ------------------------------------------------------------------------

extern "C" void count_usr2(int) {}

TEST(AsioLoop_asio, StoppingTheLastSignalWatcherRestoresThePreviousDisposition) {
    struct sigaction original {};
    ASSERT_EQ(::sigaction(SIGUSR2, nullptr, &original), 0);
    struct sigaction custom {};
    custom.sa_handler = count_usr2;
    sigemptyset(&custom.sa_mask);
    ASSERT_EQ(::sigaction(SIGUSR2, &custom, nullptr), 0);

    auto loop = make_asio_loop();
    int calls = 0;
    SignalWatcher watcher = loop->signal(SIGUSR2, [&](int) { ++calls; });
    ::raise(SIGUSR2);
    ASSERT_TRUE(run_until(*loop, [&] { return calls == 1; }));
    watcher.stop();
    struct sigaction now {};
    ASSERT_EQ(::sigaction(SIGUSR2, nullptr, &now), 0);
    EXPECT_EQ(now.sa_handler, &count_usr2) << "Asio's SIG_DFL was left in place of the old handler";
    ::sigaction(SIGUSR2, &original, nullptr);
}

}  // namespace
}  // namespace anyloop::test
