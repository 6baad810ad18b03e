// The EventLoop contract, timers and the cached clock: every case runs on
// every backend.
#include <anyloop/core/event_loop.hpp>

#include "support/test_support.hpp"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using TimerContract = LoopTest;

TEST_P(TimerContract, EqualDeadlinesFireInStartOrder) {
    std::vector<int> order;
    std::vector<TimerWatcher> timers;
    for (int i = 0; i < 20; ++i) timers.push_back(loop->timer(5ms, [&order, i] { order.push_back(i); }));
    loop->run();
    ASSERT_EQ(order.size(), 20U);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(order[static_cast<std::size_t>(i)], i);
    for (const TimerWatcher& timer : timers) EXPECT_FALSE(timer.active());
    expect_loop_empty();
}

TEST_P(TimerContract, TimersFireInDeadlineOrder) {
    // Random deadlines with many ties, some cancelled: the heap must hand
    // them out by (deadline, start order), each no earlier than its deadline.
    constexpr std::size_t count = 1000;
    std::mt19937 random(20240601);
    std::vector<int> delay_ms(count);
    for (int& delay : delay_ms) delay = static_cast<int>(random() % 30);
    const TimePoint start = loop->now();
    std::vector<std::size_t> order;
    std::vector<TimerWatcher> timers;
    std::vector<TimePoint> deadline(count);
    timers.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        timers.push_back(loop->timer(std::chrono::milliseconds(delay_ms[i]), [&, i] {
            EXPECT_GE(loop->now(), start + std::chrono::milliseconds(delay_ms[i])) << "timer " << i << " fired early";
            order.push_back(i);
        }));
        // Timers started outside a callback refresh now(): on a slow machine
        // (TSan) a later 0 ms timer may be due after an earlier 1 ms one.
        deadline[i] = loop->now() + timers.back().remaining();
    }
    std::vector<bool> cancelled(count, false);
    for (std::size_t i = 0; i < count; i += 7) {
        cancelled[i] = true;
        if (i % 2 == 0) timers[i].stop();
        else timers[i].reset();
    }
    std::vector<std::size_t> expected;
    for (std::size_t i = 0; i < count; ++i)
        if (!cancelled[i]) expected.push_back(i);
    std::stable_sort(expected.begin(), expected.end(),
                     [&](std::size_t a, std::size_t b) { return deadline[a] < deadline[b]; });

    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    guard.set_keepalive(false);
    loop->run();
    EXPECT_EQ(order, expected);
    guard.stop();
    expect_loop_empty();
}

TEST_P(TimerContract, RepeatingTimer) {
    constexpr auto period = 5ms;
    std::vector<TimePoint> fired_at;
    const TimePoint start = loop->now();
    TimerWatcher timer;
    timer = loop->timer(period, period, [&] {
        fired_at.push_back(loop->now());
        if (fired_at.size() == 5) timer.stop();
    });
    EXPECT_EQ(timer.repeat(), period);
    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    guard.set_keepalive(false);
    loop->run();
    ASSERT_EQ(fired_at.size(), 5U);
    // The k-th expiry is due at start + k * period (rescheduled from the
    // previous deadline, not from when the callback ran), never earlier.
    // So the average spacing is at least the period. (A loop that fell
    // behind fires once and goes on from now, like libev: single gaps may
    // then be shorter, but never a burst ahead of schedule.)
    for (std::size_t k = 0; k < fired_at.size(); ++k)
        EXPECT_GE(fired_at[k], start + period * static_cast<int>(k + 1)) << "expiry " << k;
    for (std::size_t k = 1; k < fired_at.size(); ++k) EXPECT_GT(fired_at[k], fired_at[k - 1]);
    EXPECT_LT(fired_at.back() - start, period * 5 + 2s) << "the timer lagged far behind its period";
    EXPECT_FALSE(timer.active());
    guard.stop();
    expect_loop_empty();
}

TEST_P(TimerContract, OneShotTimerRestartedFromOwnCallback) {
    constexpr std::size_t restarts = 5;
    std::vector<TimePoint> fired_at;
    TimerWatcher timer;
    timer = loop->timer(1ms, [&] {
        EXPECT_FALSE(timer.active()) << "a one-shot timer is inactive while its callback runs";
        fired_at.push_back(loop->now());
        if (fired_at.size() <= restarts) timer.start(2ms);
    });
    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    guard.set_keepalive(false);
    loop->run();  // returns when the timer is no longer restarted
    ASSERT_EQ(fired_at.size(), restarts + 1);
    for (std::size_t k = 1; k < fired_at.size(); ++k) EXPECT_GE(fired_at[k] - fired_at[k - 1], 2ms);
    EXPECT_FALSE(timer.active());
    guard.stop();
    expect_loop_empty();
}

TEST_P(TimerContract, ZeroDelayRestartFromOwnCallbackDoesNotSpin) {
    // A timer that restarts itself with a zero delay fires on the next
    // iteration, not again in the same one.
    int calls = 0;
    TimerWatcher timer;
    timer = loop->timer(0ms, [&] {
        ++calls;
        timer.start(0ms);
    });
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 1; }));
    const int before = calls;
    loop->run_once(false);
    loop->run_once(false);
    loop->run_once(false);
    EXPECT_GE(calls - before, 1);
    EXPECT_LE(calls - before, 3) << "the timer fired more than once per iteration";
    timer.stop();
    expect_loop_empty();
}

TEST_P(TimerContract, CancelledTimersNeverFire) {
    int stopped_calls = 0;
    int destroyed_calls = 0;
    int restarted_then_stopped_calls = 0;
    int kept_calls = 0;
    TimerWatcher stopped = loop->timer(5ms, [&] { ++stopped_calls; });
    auto destroyed = std::make_unique<TimerWatcher>(loop->timer(5ms, [&] { ++destroyed_calls; }));
    TimerWatcher restarted = loop->timer(5ms, [&] { ++restarted_then_stopped_calls; });
    TimerWatcher kept = loop->timer(20ms, [&] { ++kept_calls; });
    EXPECT_EQ(loop->active_watchers(), 4U);
    stopped.stop();
    stopped.stop();  // idempotent
    destroyed.reset();
    restarted.start(1ms);
    restarted.stop();
    EXPECT_FALSE(stopped.active());
    EXPECT_EQ(stopped.remaining(), Duration::zero());
    EXPECT_EQ(loop->active_watchers(), 1U);
    loop->run();  // until `kept` fired, well after the others' deadlines
    EXPECT_EQ(kept_calls, 1);
    EXPECT_EQ(stopped_calls, 0);
    EXPECT_EQ(destroyed_calls, 0);
    EXPECT_EQ(restarted_then_stopped_calls, 0);
    expect_loop_empty();
}

TEST_P(TimerContract, TimerStoppedByAnotherTimersCallbackDoesNotFire) {
    // Equal deadlines: `first` runs before `second` (start order) and stops
    // it while it is already due in the same iteration.
    int second_calls = 0;
    int third_calls = 0;
    TimerWatcher second;
    std::unique_ptr<TimerWatcher> third;
    TimerWatcher first = loop->timer(2ms, [&] {
        second.stop();
        third.reset();
    });
    second = loop->timer(2ms, [&] { ++second_calls; });
    third = std::make_unique<TimerWatcher>(loop->timer(2ms, [&] { ++third_calls; }));
    loop->run();
    EXPECT_EQ(second_calls, 0);
    EXPECT_EQ(third_calls, 0);

    // Different deadlines that both passed before the iteration looked.
    int later_calls = 0;
    TimerWatcher later;
    TimerWatcher earlier = loop->timer(1ms, [&] { later.stop(); });
    later = loop->timer(3ms, [&] { ++later_calls; });
    std::this_thread::sleep_for(10ms);
    loop->run();
    EXPECT_EQ(later_calls, 0);
    EXPECT_FALSE(later.active());
    expect_loop_empty();
}

TEST_P(TimerContract, DestroyInsideOwnCallback) {
    int one_shot_calls = 0;
    int repeating_calls = 0;
    auto token = std::make_shared<int>(3);
    auto one_shot = std::make_unique<TimerWatcher>();
    auto repeating = std::make_unique<TimerWatcher>();
    *one_shot = loop->timer(1ms, [&, guard = token] {
        ++one_shot_calls;
        one_shot.reset();
        EXPECT_EQ(*guard, 3);  // the running closure stays alive until it returns
    });
    *repeating = loop->timer(1ms, 1ms, [&, guard = token] {
        ++repeating_calls;
        repeating.reset();  // an active repeating timer destroyed mid-callback
        EXPECT_EQ(*guard, 3);
    });
    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    guard.set_keepalive(false);
    loop->run();
    EXPECT_EQ(one_shot_calls, 1);
    EXPECT_EQ(repeating_calls, 1);
    EXPECT_EQ(token.use_count(), 1) << "a destroyed timer's closure was not released";
    guard.stop();
    expect_loop_empty();
}

TEST_P(TimerContract, CallbackReplacedInsideItself) {
    // As IoContract.CallbackReplacedInsideItself: the running closure (small
    // enough to live inside the std::function) keeps its captures, and the
    // replacement runs from the next expiry.
    int first_calls = 0;
    int second_calls = 0;
    TimerWatcher ticker;
    ticker = loop->timer(1ms, 1ms, [&first_calls, &ticker, &second_calls] {
        ticker.set_callback([&second_calls, &ticker] {
            ++second_calls;
            ticker.stop();
        });
        ++first_calls;
    });
    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    guard.set_keepalive(false);
    loop->run();
    EXPECT_EQ(first_calls, 1);
    EXPECT_EQ(second_calls, 1);
    guard.stop();
    expect_loop_empty();
}

TEST_P(TimerContract, NowIsCachedAndMonotonic) {
    TimePoint first{};
    TimePoint second{};
    TimePoint refreshed{};
    TimerWatcher timer = loop->timer(1ms, [&] {
        first = loop->now();
        std::this_thread::sleep_for(2ms);
        second = loop->now();
        loop->update_now();
        refreshed = loop->now();
    });
    loop->run();
    EXPECT_EQ(first, second) << "now() changed inside one callback";
    EXPECT_GE(refreshed - first, 2ms) << "update_now() did not refresh the cache";
    EXPECT_LE(refreshed, Clock::now());

    // Across iterations: never decreases, and follows the real clock.
    std::vector<TimePoint> seen;
    const TimePoint ticker_start = loop->now();
    TimerWatcher ticker;
    ticker = loop->timer(0ms, 1ms, [&] {
        seen.push_back(loop->now());
        EXPECT_LE(loop->now(), Clock::now());
        if (seen.size() == 20) ticker.stop();
    });
    const auto start = std::chrono::steady_clock::now();
    loop->run();
    ASSERT_EQ(seen.size(), 20U);
    for (std::size_t k = 1; k < seen.size(); ++k) EXPECT_GE(seen[k], seen[k - 1]) << "now() went back at " << k;
    EXPECT_GE(seen.back() - ticker_start, 19ms);
    EXPECT_LT(Clock::now() - loop->now(), 1s);
    EXPECT_LT(elapsed_ms(start), 2000.0);
    expect_loop_empty();
}

TEST_P(TimerContract, NowIsTheTimeAfterTheWait) {
    // The clock is read lazily (the first now() after the wait), but never
    // earlier than the end of the wait that led to the callback, and every
    // callback of the iteration sees the same value.
    SocketPair pair;
    TimePoint first{};
    TimePoint second{};
    IoWatcher io = loop->io(pair.a, Io::read, [&](Io) {
        first = loop->now();
        std::this_thread::sleep_for(2ms);
        second = loop->now();
        char byte = 0;
        ASSERT_EQ(::read(pair.a, &byte, 1), 1);
    });
    const TimePoint before = Clock::now();
    std::thread writer([&pair] {
        std::this_thread::sleep_for(30ms);
        ASSERT_EQ(::write(pair.b, "x", 1), 1);
    });
    ASSERT_TRUE(run_until(*loop, [&] { return first != TimePoint{}; }));
    writer.join();
    EXPECT_GE(first - before, 25ms) << "now() was not renewed after the wait";
    EXPECT_EQ(first, second) << "now() changed inside one callback";
    EXPECT_LE(first, Clock::now());
    io.stop();
    expect_loop_empty();
}

TEST_P(TimerContract, HundredThousandTimersStartedAndCancelled) {
    constexpr std::size_t count = 100'000;
    std::mt19937 random(7);
    int fired = 0;
    std::vector<TimerWatcher> timers;
    timers.reserve(count);
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < count; ++i)
        timers.push_back(loop->timer(std::chrono::milliseconds(10'000 + random() % 10'000), [&] { ++fired; }));
    const double start_ms = elapsed_ms(start);
    EXPECT_EQ(loop->active_watchers(), count);

    // Restart a third of them (an erase and a push inside the heap), then
    // cancel all in random order: half stopped, half destroyed.
    const auto cancel = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < count; i += 3) timers[i].start(std::chrono::milliseconds(5'000 + random() % 20'000));
    std::vector<std::size_t> order(count);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::shuffle(order.begin(), order.end(), random);
    for (std::size_t k = 0; k < count; ++k) {
        if (k % 2 == 0) timers[order[k]].stop();
        else timers[order[k]].reset();
    }
    EXPECT_EQ(loop->active_watchers(), 0U);
    timers.clear();
    const double cancel_ms = elapsed_ms(cancel);
    // Bounded relative to starting them, which costs O(log n) each, so the
    // check holds in sanitizer builds and on a busy machine alike: a cancel
    // that scans the heap (O(n) each) takes thousands of times longer.
    EXPECT_LT(cancel_ms, 10 * start_ms + 1000.0)
        << "starting " << count << " timers took " << start_ms << " ms, restarting and cancelling them " << cancel_ms
        << " ms";
    EXPECT_LT(start_ms + cancel_ms, 30'000.0);

    int final_calls = 0;
    TimerWatcher final_timer = loop->timer(1ms, [&] { ++final_calls; });
    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    guard.set_keepalive(false);
    loop->run();
    EXPECT_EQ(final_calls, 1);
    EXPECT_EQ(fired, 0);
    guard.stop();
    expect_loop_empty();
}

TEST_P(TimerContract, AgainAndRemainingFollowLibev) {
    constexpr auto period = 40ms;
    int fired = 0;
    TimePoint last_again{};  // loop->now() when again() last restarted the countdown
    TimerWatcher timeout;
    timeout = loop->timer(1h, [&] {
        ++fired;
        // Load-proof form of "again() postpones the expiry": it never fires
        // sooner than one period after the latest again().
        EXPECT_GE(loop->now() - last_again, period) << "fired early after again()";
        EXPECT_TRUE(timeout.active()) << "a repeating timer is already rescheduled inside its callback";
        timeout.stop();
    });
    EXPECT_EQ(timeout.remaining(), Duration(1h));  // deadline - now(), both from the cached clock

    // Not repeating: again() stops an active timer and leaves a stopped one stopped.
    EXPECT_EQ(timeout.repeat(), Duration::zero());
    timeout.again();
    EXPECT_FALSE(timeout.active());
    EXPECT_EQ(timeout.remaining(), Duration::zero());
    timeout.again();
    EXPECT_FALSE(timeout.active());

    // Repeating and stopped: again() starts it with the repeat as the delay.
    timeout.set_repeat(period);
    EXPECT_EQ(timeout.repeat(), Duration(period));
    timeout.again();
    last_again = loop->now();
    EXPECT_TRUE(timeout.active());
    EXPECT_EQ(timeout.remaining(), Duration(period));

    // remaining() shrinks as the loop's time advances; again() restores it.
    run_for(*loop, 10ms);
    if (fired == 0) {  // (a machine stalled for a whole period may have fired it)
        EXPECT_LT(timeout.remaining(), Duration(period));
        EXPECT_GT(timeout.remaining(), Duration::zero());
    }
    timeout.again();
    last_again = loop->now();
    EXPECT_EQ(timeout.remaining(), Duration(period));

    // The activity-timeout pattern: while activity keeps calling again()
    // every 5 ms, the timeout does not fire; it fires one period after the
    // last again().
    fired = 0;
    int activity = 0;
    TimerWatcher busy;
    busy = loop->timer(5ms, 5ms, [&] {
        if (++activity <= 4) {
            timeout.again();
            last_again = loop->now();
        } else {
            busy.stop();
        }
    });
    ASSERT_TRUE(run_until(*loop, [&] { return !busy.active() && !timeout.active(); }, 2s));
    EXPECT_EQ(activity, 5);
    EXPECT_GE(fired, 1);

    // Repeat set to zero: again() on an active timer stops it.
    timeout.again();
    EXPECT_TRUE(timeout.active());
    timeout.set_repeat(Duration::zero());
    timeout.again();
    EXPECT_FALSE(timeout.active());
    expect_loop_empty();
}

TEST_P(TimerContract, UnrefdTimerDoesNotKeepRunAlive) {
    int calls = 0;
    TimerWatcher timer = loop->timer(1ms, 1ms, [&] { ++calls; });
    timer.set_keepalive(false);
    EXPECT_EQ(loop->active_watchers(), 1U);
    EXPECT_FALSE(loop->alive());
    const auto start = std::chrono::steady_clock::now();
    loop->run();
    EXPECT_LT(elapsed_ms(start), 1000.0);  // (run() would never return if the timer kept it alive)
    EXPECT_EQ(calls, 0);
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 2; }));  // still fires while something runs the loop
    timer.stop();
    expect_loop_empty();
}

ANYLOOP_INSTANTIATE_BACKENDS(TimerContract);

}  // namespace
}  // namespace anyloop::test
