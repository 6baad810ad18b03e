// The EventLoop contract across threads: post() is the one door in from
// other threads, and loops on different threads share nothing. Every case
// runs on every backend; this file is its own executable so that a
// ThreadSanitizer build can run exactly these cases.
#include <anyloop/core/event_loop.hpp>

#include "support/test_support.hpp"

#include <unistd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using ThreadContract = LoopTest;

TEST_P(ThreadContract, PostFromFourThreadsArrivesCompleteAndInOrder) {
    constexpr std::size_t threads = 4;
    constexpr int per_thread = 10'000;
    EventLoop& target = *loop;
    const auto loop_thread = std::this_thread::get_id();
    std::vector<std::vector<int>> received(threads);  // touched on the loop thread only
    std::size_t total = 0;
    int off_thread = 0;
    std::atomic<bool> go{false};
    {
        std::vector<std::jthread> posters;
        for (std::size_t t = 0; t < threads; ++t) {
            posters.emplace_back([&, t] {
                while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
                for (int i = 0; i < per_thread; ++i) {
                    target.post([&, t, i] {
                        if (std::this_thread::get_id() != loop_thread) ++off_thread;
                        received[t].push_back(i);
                        ++total;
                    });
                }
            });
        }
        go.store(true, std::memory_order_release);
        EXPECT_TRUE(run_until(*loop, [&] { return total == threads * per_thread; }, 20s))
            << total << " of " << threads * per_thread << " posts arrived";
    }  // joins the posters
    loop->run();  // whatever is still queued (only after a failure above)
    EXPECT_EQ(off_thread, 0) << "posted functions ran on another thread";
    for (std::size_t t = 0; t < threads; ++t) {
        ASSERT_EQ(received[t].size(), static_cast<std::size_t>(per_thread)) << "thread " << t;
        for (int i = 0; i < per_thread; ++i)
            ASSERT_EQ(received[t][static_cast<std::size_t>(i)], i) << "thread " << t << " out of order at " << i;
    }
    expect_loop_empty();
}

TEST_P(ThreadContract, PostWakesABlockedRun) {
    bool timer_fired = false;
    int posted_calls = 0;
    TimerWatcher keep_alive = loop->timer(10s, [&] {
        timer_fired = true;
        loop->stop();
    });
    EventLoop& target = *loop;
    const auto start = std::chrono::steady_clock::now();
    std::jthread poster([&] {
        std::this_thread::sleep_for(30ms);  // let run() block first
        target.post([&] {
            ++posted_calls;
            target.stop();
        });
    });
    loop->run();
    const double waited = elapsed_ms(start);
    poster.join();
    EXPECT_EQ(posted_calls, 1);
    EXPECT_FALSE(timer_fired);
    EXPECT_GE(waited, 25.0);
    EXPECT_LT(waited, 3000.0) << "run() slept on although a post() arrived";
    keep_alive.stop();
    expect_loop_empty();
}

TEST_P(ThreadContract, PostWakesABlockedRunOnce) {
    TimerWatcher keep_alive = loop->timer(10s, [] {});
    EventLoop& target = *loop;
    std::atomic<int> posted_calls{0};
    const auto start = std::chrono::steady_clock::now();
    std::jthread poster([&] {
        std::this_thread::sleep_for(30ms);
        target.post([&] { posted_calls.fetch_add(1); });
    });
    // One blocking iteration may end without the post only by a spurious
    // wake-up; a handful must see it, long before the 10 s timer.
    for (int i = 0; i < 10 && posted_calls.load() == 0; ++i) EXPECT_TRUE(loop->run_once(true));
    EXPECT_EQ(posted_calls.load(), 1);
    EXPECT_LT(elapsed_ms(start), 3000.0);
    poster.join();
    keep_alive.stop();
    expect_loop_empty();
}

TEST_P(ThreadContract, PostToAStoppedLoopRunsOnTheNextRun) {
    // Posted while nobody runs the loop: queued, it keeps the loop alive and
    // runs on the next run(), on the thread that runs it.
    EventLoop& target = *loop;
    std::vector<int> order;
    std::thread::id ran_on;
    std::jthread poster([&] {
        for (int i = 0; i < 3; ++i) target.post([&, i] {
                order.push_back(i);
                ran_on = std::this_thread::get_id();
            });
    });
    poster.join();
    EXPECT_TRUE(loop->alive());
    loop->run();
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
    EXPECT_EQ(ran_on, std::this_thread::get_id());
    expect_loop_empty();
}

TEST_P(ThreadContract, LoopsOnSeparateThreadsShareNothing) {
    // Four loops on four threads at once, each with its own timers, I/O
    // ping-pong and posts: any state a backend shares between loops shows up
    // here as a wrong count (or, under TSan, as a race).
    constexpr int loops = 4;
    constexpr int rounds = 200;
    std::vector<int> results(loops, 0);
    std::vector<int> timer_ticks(loops, 0);
    std::vector<std::string> failures(loops);
    const std::string backend = GetParam();
    {
        std::vector<std::jthread> workers;
        for (int w = 0; w < loops; ++w) {
            workers.emplace_back([&, w] {
                const auto index = static_cast<std::size_t>(w);
                try {
                    auto own = make_loop(backend);
                    SocketPair pair;
                    int round = 0;
                    IoWatcher ping;
                    IoWatcher pong;
                    ping = own->io(pair.a, Io::read, [&](Io) {
                        if (read_available(pair.a).empty()) return;
                        if (++round == rounds) {
                            ping.stop();
                            pong.stop();
                            return;
                        }
                        write_all(pair.a, "p", 1);
                    });
                    pong = own->io(pair.b, Io::read, [&](Io) {
                        if (!read_available(pair.b).empty()) write_all(pair.b, "q", 1);
                    });
                    TimerWatcher ticker;
                    ticker = own->timer(1ms, 1ms, [&] {
                        if (++timer_ticks[index] == 5) ticker.stop();
                    });
                    own->post([&] { write_all(pair.a, "p", 1); });  // the first serve
                    TimerWatcher guard = own->timer(15s, [&] { own->stop(); });
                    guard.set_keepalive(false);
                    own->run();
                    results[index] = round;
                    guard.stop();
                    if (own->active_watchers() != 0) failures[index] = "active watchers left";
                } catch (const std::exception& error) {
                    failures[index] = error.what();
                }
            });
        }
    }  // joins the workers
    for (std::size_t w = 0; w < static_cast<std::size_t>(loops); ++w) {
        EXPECT_EQ(failures[w], "") << "loop " << w;
        EXPECT_EQ(results[w], rounds) << "loop " << w;
        EXPECT_EQ(timer_ticks[w], 5) << "loop " << w;
    }
    expect_loop_empty();
}

TEST_P(ThreadContract, LoopsOnTwoThreadsPostToEachOther) {
    // A ball posted back and forth between two running loops.
    constexpr int volleys = 1000;
    auto other = make_loop(GetParam());
    EventLoop& mine = *loop;
    EventLoop& theirs = *other;
    int mine_hits = 0;    // loop thread of `mine` only
    int theirs_hits = 0;  // loop thread of `theirs` only
    std::function<void(int)> to_theirs;
    std::function<void(int)> to_mine = [&](int n) {
        ++mine_hits;
        if (n >= volleys) {
            theirs.post([&] { theirs.stop(); });
            mine.stop();
            return;
        }
        theirs.post([&, n] { to_theirs(n + 1); });
    };
    to_theirs = [&](int n) {
        ++theirs_hits;
        mine.post([&, n] { to_mine(n + 1); });
    };
    std::atomic<bool> theirs_done{false};
    std::jthread runner([&] {
        theirs.ref();  // run until told to stop
        theirs.run();
        theirs.unref();
        theirs_done = true;
    });
    TimerWatcher guard = loop->timer(15s, [&] {
        theirs.post([&] { theirs.stop(); });
        loop->stop();
    });
    mine.ref();
    mine.post([&] { to_mine(0); });
    loop->run();
    mine.unref();
    runner.join();
    EXPECT_TRUE(theirs_done.load());
    EXPECT_EQ(mine_hits + theirs_hits, volleys + 1);
    EXPECT_EQ(mine_hits, volleys / 2 + 1);
    guard.stop();
    EXPECT_EQ(other->active_watchers(), 0U);
    expect_loop_empty();
}

ANYLOOP_INSTANTIATE_BACKENDS(ThreadContract);

}  // namespace
}  // namespace anyloop::test
