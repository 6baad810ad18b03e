// The EventLoop contract, running, keep-alive, post() on the loop thread,
// signals, failures and the backend registry: every case runs on every
// backend. The cross-thread cases are in contract_thread_test.cpp.
#include <anyloop/core/event_loop.hpp>

#include "support/test_support.hpp"

#include <algorithm>
#include <csignal>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using LoopContract = LoopTest;

// ---- running -------------------------------------------------------------

TEST_P(LoopContract, RunReturnsWhenNothingIsActive) {
    loop->run();  // nothing to wait for: returns at once (a hang here is the failure)
    EXPECT_FALSE(loop->alive());
    EXPECT_FALSE(loop->run_once(true));

    // ... and when the last watcher stops.
    int calls = 0;
    TimerWatcher timer = loop->timer(2ms, [&] { ++calls; });
    EXPECT_TRUE(loop->alive());
    loop->run();
    EXPECT_EQ(calls, 1);
    expect_loop_empty();
}

TEST_P(LoopContract, UnrefdWatcherAndLoopRefCount) {
    int ticks = 0;
    TimerWatcher ticker = loop->timer(1ms, 1ms, [&] {
        if (++ticks == 3) loop->unref();
    });
    ticker.set_keepalive(false);
    EXPECT_EQ(loop->active_watchers(), 1U);
    EXPECT_FALSE(loop->alive());
    loop->run();  // an unref'd watcher alone does not keep run() going
    EXPECT_EQ(ticks, 0);

    // A loop-level ref() does, until the callback drops it.
    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    guard.set_keepalive(false);
    loop->ref();
    EXPECT_TRUE(loop->alive());
    loop->run();
    EXPECT_EQ(ticks, 3);
    EXPECT_FALSE(loop->alive());

    // Back to keeping the loop alive, then gone with stop().
    ticker.set_keepalive(true);
    EXPECT_TRUE(loop->alive());
    ticker.stop();
    guard.stop();
    expect_loop_empty();
}

TEST_P(LoopContract, NonBlockingRunOnceReturnsAtOnce) {
    int calls = 0;
    TimerWatcher far = loop->timer(10s, [&] { ++calls; });
    auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(loop->run_once(false));  // still alive: the timer is pending
    EXPECT_LT(elapsed_ms(start), 50.0);

    // Unref'd, the timer does not make a blocking run_once() wait either.
    far.set_keepalive(false);
    start = std::chrono::steady_clock::now();
    EXPECT_FALSE(loop->run_once(true));
    EXPECT_LT(elapsed_ms(start), 1000.0);  // not the 10 s of the timer
    EXPECT_EQ(calls, 0);
    far.stop();
    expect_loop_empty();
}

TEST_P(LoopContract, BlockingRunOnceWaitsForAnEvent) {
    int calls = 0;
    TimerWatcher timer = loop->timer(20ms, [&] { ++calls; });
    TimerWatcher guard = loop->timer(5s, [] {});
    guard.set_keepalive(false);
    // Iterations without a due timer may end early (a backend may wake
    // spuriously), but the timer must have fired within a few of them.
    for (int i = 0; i < 20 && calls == 0; ++i) loop->run_once(true);
    EXPECT_EQ(calls, 1);
    EXPECT_FALSE(loop->alive());
    guard.stop();
    expect_loop_empty();
}

TEST_P(LoopContract, StopFromCallback) {
    int ticks = 0;
    TimerWatcher ticker = loop->timer(1ms, 1ms, [&] {
        if (++ticks % 3 == 0) loop->stop();
    });
    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    guard.set_keepalive(false);
    loop->run();  // would go on forever: the repeating timer keeps it alive
    EXPECT_EQ(ticks, 3);
    EXPECT_TRUE(ticker.active());
    loop->run();  // stop() ended only that run()
    EXPECT_EQ(ticks, 6);
    ticker.stop();
    guard.stop();
    expect_loop_empty();
}

TEST_P(LoopContract, RunInsideCallbackThrows) {
    SocketPair pair;
    std::vector<std::string> threw;
    auto try_nested = [&](const std::string& where) {
        try {
            loop->run();
        } catch (const std::logic_error&) {
            threw.push_back(where + " run");
        }
        try {
            loop->run_once(false);
        } catch (const std::logic_error&) {
            threw.push_back(where + " run_once");
        }
    };
    TimerWatcher timer = loop->timer(1ms, [&] { try_nested("timer"); });
    IoWatcher io;
    io = loop->io(pair.a, Io::write, [&](Io) {
        io.stop();
        try_nested("io");
    });
    loop->post([&] { try_nested("posted"); });
    loop->run();
    std::sort(threw.begin(), threw.end());
    const std::vector<std::string> expected{"io run",     "io run_once",    "posted run",
                                            "posted run_once", "timer run", "timer run_once"};
    EXPECT_EQ(threw, expected);
    expect_loop_empty();
}

// ---- post() on the loop thread ---------------------------------------------

TEST_P(LoopContract, PostedFunctionsRunInFifoOrder) {
    std::vector<int> order;
    for (int i = 0; i < 5; ++i) {
        loop->post([&, i] {
            order.push_back(i);
            // Posted from inside a posted function: after everything queued so far.
            if (i == 0) loop->post([&] { order.push_back(100); });
        });
    }
    EXPECT_TRUE(loop->alive()) << "queued posts keep the loop alive";
    loop->run();
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 100}));
    expect_loop_empty();
}

// ---- failures --------------------------------------------------------------

TEST_P(LoopContract, ExceptionFromCallbackComesOutOfRun) {
    TimerWatcher timer = loop->timer(1ms, [] { throw std::runtime_error("boom"); });
    EXPECT_THROW(loop->run(), std::runtime_error);
    // Still usable afterwards.
    int calls = 0;
    TimerWatcher again = loop->timer(1ms, [&] { ++calls; });
    loop->run();
    EXPECT_EQ(calls, 1);

    // run_once() rethrows too.
    TimerWatcher once = loop->timer(1ms, [] { throw std::out_of_range("once"); });
    TimerWatcher guard = loop->timer(5s, [] {});
    guard.set_keepalive(false);
    bool caught = false;
    for (int i = 0; i < 50 && !caught; ++i) {
        try {
            loop->run_once(true);
        } catch (const std::out_of_range& error) {
            EXPECT_STREQ(error.what(), "once");
            caught = true;
        }
    }
    EXPECT_TRUE(caught);
    guard.stop();
    expect_loop_empty();
}

TEST_P(LoopContract, ExceptionFromPostedFunctionComesOutOfRun) {
    std::vector<int> ran;
    loop->post([&] { ran.push_back(1); });
    loop->post([] { throw std::runtime_error("posted function failed"); });
    loop->post([&] { ran.push_back(3); });
    try {
        loop->run();
        ADD_FAILURE() << "run() returned normally";
    } catch (const std::runtime_error& error) {
        EXPECT_STREQ(error.what(), "posted function failed");
    }
    // Nothing queued is dropped: what did not run yet runs on the next run().
    loop->post([&] { ran.push_back(4); });
    loop->run();
    EXPECT_EQ(ran, (std::vector<int>{1, 3, 4}));
    expect_loop_empty();
}

// ---- the registry ------------------------------------------------------------

TEST_P(LoopContract, MakeLoopByNameAndUnknownName) {
    EXPECT_EQ(loop->backend(), GetParam());
    EXPECT_EQ(make_loop(GetParam())->backend(), GetParam());
    try {
        (void)make_loop("nope");
        ADD_FAILURE() << "make_loop(\"nope\") did not throw";
    } catch (const std::invalid_argument& error) {
        const std::string message = error.what();
        EXPECT_NE(message.find("nope"), std::string::npos) << message;
        for (const std::string& name : available_backends())
            EXPECT_NE(message.find(name), std::string::npos) << "\"" << name << "\" is missing from: " << message;
    }
    expect_loop_empty();
}

TEST_P(LoopContract, AvailableBackendsStartWithTheDefault) {
    const std::vector<std::string> names = available_backends();
    ASSERT_FALSE(names.empty());
    EXPECT_EQ(names.front(), default_backend());
    EXPECT_EQ(std::count(names.begin(), names.end(), GetParam()), 1);
    EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size()) << "duplicates";
    EXPECT_EQ(make_loop()->backend(), default_backend());
    expect_loop_empty();
}

// ---- ownership -----------------------------------------------------------------

TEST_P(LoopContract, DestroyingTheLoopLeavesWatcherHandlesInert) {
    SocketPair pair;
    int calls = 0;
    IoWatcher io = loop->io(pair.a, Io::read, [&](Io) { ++calls; });
    TimerWatcher timer = loop->timer(1h, [&] { ++calls; });
    SignalWatcher signal = loop->signal(SIGUSR2, [&](int) { ++calls; });
    TimerWatcher left_to_its_destructor = loop->timer(1h, [&] { ++calls; });
    run_for(*loop, 5ms);
    loop.reset();

    EXPECT_FALSE(io.active());
    EXPECT_FALSE(timer.active());
    EXPECT_FALSE(signal.active());
    EXPECT_EQ(timer.remaining(), Duration::zero());
    io.stop();  // all safe on an orphaned handle
    timer.stop();
    signal.stop();
    io.set_events(Io::write);
    io.set_keepalive(false);
    EXPECT_THROW(io.start(), std::logic_error);
    EXPECT_THROW(timer.start(1ms), std::logic_error);
    EXPECT_THROW(timer.again(), std::logic_error);
    EXPECT_THROW(signal.start(), std::logic_error);
    io.reset();
    timer.reset();
    io.reset();  // twice
    EXPECT_FALSE(io);
    EXPECT_EQ(calls, 0);

    // The dead loop released what it held: a new loop can take the signal
    // (still alive in its orphaned handle) and the fd.
    loop = make_loop(GetParam());
    int new_calls = 0;
    SignalWatcher usr2 = loop->signal(SIGUSR2, [&](int) { ++new_calls; });
    IoWatcher new_io = loop->io(pair.a, Io::read, [&](Io) { ++new_calls; });
    ::raise(SIGUSR2);
    write_all(pair.b, "x", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return new_calls >= 2; }));
    usr2.stop();
    new_io.stop();
    signal.reset();
    expect_loop_empty();
}

// ---- signals -------------------------------------------------------------------

TEST_P(LoopContract, SignalDeliveredInLoopContext) {
    const auto loop_thread = std::this_thread::get_id();
    int calls = 0;
    SignalWatcher watcher = loop->signal(SIGUSR1, [&](int signo) {
        EXPECT_EQ(signo, SIGUSR1);
        EXPECT_EQ(std::this_thread::get_id(), loop_thread);
        ++calls;
        loop->stop();
    });
    EXPECT_EQ(watcher.signo(), SIGUSR1);
    TimerWatcher trigger = loop->timer(1ms, [] { ::raise(SIGUSR1); });
    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    loop->run();
    EXPECT_EQ(calls, 1);
    watcher.stop();
    guard.stop();
    expect_loop_empty();
}

TEST_P(LoopContract, SignalWatchersShareASignalAndMayDestroyThemselves) {
    int first_calls = 0;
    int second_calls = 0;
    auto first = std::make_unique<SignalWatcher>();
    *first = loop->signal(SIGUSR1, [&](int) {
        ++first_calls;
        first.reset();  // destroyed inside its own callback
    });
    SignalWatcher second = loop->signal(SIGUSR1, [&](int) { ++second_calls; });
    ::raise(SIGUSR1);
    ASSERT_TRUE(run_until(*loop, [&] { return first_calls + second_calls == 2; }));
    EXPECT_EQ(first, nullptr);

    // The remaining watcher still holds the handler.
    ::raise(SIGUSR1);
    ASSERT_TRUE(run_until(*loop, [&] { return second_calls == 2; }));
    EXPECT_EQ(first_calls, 1);
    second.stop();
    expect_loop_empty();
}

TEST_P(LoopContract, SignalBelongsToOneLoopAtATime) {
    auto other = make_loop(GetParam());
    int calls = 0;
    SignalWatcher mine = loop->signal(SIGUSR2, [&](int) { ++calls; });
    EXPECT_THROW((void)other->signal(SIGUSR2, [](int) {}), std::logic_error);
    EXPECT_EQ(other->active_watchers(), 0U);
    ::raise(SIGUSR2);
    ASSERT_TRUE(run_until(*loop, [&] { return calls == 1; }));

    // Released by the last watcher, the signal can move to the other loop.
    mine.stop();
    int other_calls = 0;
    SignalWatcher theirs = other->signal(SIGUSR2, [&](int) { ++other_calls; });
    ::raise(SIGUSR2);
    ASSERT_TRUE(run_until(*other, [&] { return other_calls == 1; }));
    EXPECT_EQ(calls, 1);
    theirs.stop();
    EXPECT_EQ(other->active_watchers(), 0U);
    expect_loop_empty();
}

ANYLOOP_INSTANTIATE_BACKENDS(LoopContract);

}  // namespace
}  // namespace anyloop::test
