// Activity timeouts: they fire, activity resets them, and each counts only
// while it has something to wait for.
#include <anyloop/handle/handle.hpp>

#include "handle/handle_test_support.hpp"

#include <memory>
#include <string>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using namespace handle_support;
using TimeoutTest = LoopTest;

// Runs the loop for `duration` (bounded iterations with a guard timer).
void run_for(EventLoop& loop, Duration duration) {
    const auto start = Clock::now();
    run_until(loop, [&] { return Clock::now() - start >= duration; },
              std::chrono::duration_cast<std::chrono::milliseconds>(duration) + 10ms);
}

TEST_P(TimeoutTest, ReadTimeoutFiresWhileAReaderWaits) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1), {.rtimeout = 40ms});
    int fired = 0;
    handle.on_rtimeout([&](Handle&) { ++fired; });
    run_for(*loop, 80ms);
    EXPECT_EQ(fired, 0) << "no reader, nothing to wait for";

    handle.push_read(Reader::line([](Handle&, std::string_view) {}));
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(run_until(*loop, [&] { return fired == 1; }, 2s));
    EXPECT_GE(ms_since(start), 35.0);
    EXPECT_FALSE(handle.closed());
    // It restarts after firing.
    ASSERT_TRUE(run_until(*loop, [&] { return fired == 2; }, 2s));
}

// Without a timeout the Handle does not time-stamp its traffic; a timeout
// set later counts from the moment it is set, not from the Handle's birth
// or its last stamp.
TEST_P(TimeoutTest, ATimeoutSetLaterCountsFromThen) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    handle.on_read([](Handle& h) { h.read_buffer().clear(); });
    write_all(pair.b, "traffic", 7);
    run_for(*loop, 120ms);
    int fired = 0;
    handle.on_timeout([&](Handle&) { ++fired; });
    const auto start = std::chrono::steady_clock::now();
    handle.set_timeout(60ms);
    loop->run_once(false);
    EXPECT_EQ(fired, 0) << "not due at once";
    ASSERT_TRUE(run_until(*loop, [&] { return fired == 1; }, 2s));
    EXPECT_GE(ms_since(start), 55.0);
    // Traffic while it is set moves it on, as for a Handle made with it.
    handle.set_timeout(Duration::zero());
    handle.set_timeout(200ms);
    const auto second = std::chrono::steady_clock::now();
    TimerWatcher drip = loop->timer(50ms, 50ms, [&] { write_all(pair.b, "x", 1); });
    run_for(*loop, 300ms);
    EXPECT_EQ(fired, 1) << "traffic every 50 ms keeps a 200 ms timeout away";
    drip.stop();
    ASSERT_TRUE(run_until(*loop, [&] { return fired == 2; }, 2s));
    EXPECT_GE(ms_since(second), 300.0);
}

TEST_P(TimeoutTest, ActivityResetsTheReadTimeout) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1), {.rtimeout = 100ms});
    int fired = 0;
    std::size_t bytes = 0;
    handle.on_rtimeout([&](Handle&) { ++fired; });
    handle.on_read([&](Handle& h) {
        bytes += h.read_buffer().size();
        h.read_buffer().clear();
    });
    // A byte every 20 ms for 300 ms: three times the timeout, never idle long enough.
    int ticks = 0;
    TimerWatcher drip = loop->timer(20ms, 20ms, [&] {
        write_all(pair.b, "x", 1);
        if (++ticks == 15) drip.stop();
    });
    ASSERT_TRUE(run_until(*loop, [&] { return ticks == 15; }, 5s));
    EXPECT_EQ(fired, 0);
    EXPECT_GE(bytes, 14U);
    // Silence: now it fires.
    ASSERT_TRUE(run_until(*loop, [&] { return fired == 1; }, 2s));
}

TEST_P(TimeoutTest, WriteTimeoutFiresOnlyWhileOutputIsStuck) {
    TcpPair pair;
    Handle handle(*loop, pair.take_a(), {.wtimeout = 40ms});
    int fired = 0;
    handle.on_wtimeout([&](Handle&) { ++fired; });
    handle.push_write("small");  // written at once: nothing waits
    run_for(*loop, 80ms);
    EXPECT_EQ(fired, 0);
    handle.push_write(std::string(16 << 20, 'w'));  // the peer reads nothing
    ASSERT_GT(handle.write_queue_size(), 0U);
    ASSERT_TRUE(run_until(*loop, [&] { return fired >= 1; }, 2s));
    handle.set_linger(Duration::zero());  // drop the rest at the end
}

TEST_P(TimeoutTest, IdleTimeoutFiresAndRestarts) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1), {.timeout = 20ms});
    int fired = 0;
    handle.on_timeout([&](Handle&) { ++fired; });
    ASSERT_TRUE(run_until(*loop, [&] { return fired >= 3; }, 2s));
    handle.set_timeout(Duration::zero());
    EXPECT_EQ(loop->active_watchers(), 0U);
}

TEST_P(TimeoutTest, ATimeoutWithoutItsCallbackIsANonFatalError) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    std::error_code error;
    std::string message;
    bool was_fatal = true;
    handle.on_error([&](Handle&, std::error_code code, const std::string& text, bool fatal) {
        error = code;
        message = text;
        was_fatal = fatal;
    });
    handle.push_read(Reader::line([](Handle&, std::string_view) {}));
    handle.set_rtimeout(30ms);
    ASSERT_TRUE(run_until(*loop, [&] { return static_cast<bool>(error); }, 2s));
    EXPECT_EQ(error, std::errc::timed_out);
    EXPECT_FALSE(was_fatal);
    EXPECT_NE(message.find("0.03 s"), std::string::npos) << message;
    EXPECT_FALSE(handle.closed());
    handle.set_rtimeout(Duration::zero());
}

// on_error replaced inside itself, then a fatal error raised there: the
// replacement hears it at once, the first callback is not called again.
TEST_P(TimeoutTest, AnErrorInsideOnErrorReachesItsReplacement) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    int first_calls = 0;
    std::vector<std::error_code> second_heard;
    bool second_fatal = false;
    handle.on_error([&](Handle& h, std::error_code code, const std::string&, bool fatal) {
        ++first_calls;
        EXPECT_EQ(code, std::errc::timed_out);
        EXPECT_FALSE(fatal);
        h.on_error([&](Handle&, std::error_code inner, const std::string&, bool inner_fatal) {
            second_heard.push_back(inner);
            second_fatal = inner_fatal;
        });
        h.set_wbuf_max(1);
        h.push_write("too much");  // gathered; more than wbuf_max: fatal ENOSPC
    });
    handle.push_read(Reader::line([](Handle&, std::string_view) {}));
    handle.set_rtimeout(20ms);
    ASSERT_TRUE(run_until(*loop, [&] { return !second_heard.empty(); }, 2s));
    EXPECT_EQ(first_calls, 1);
    ASSERT_EQ(second_heard.size(), 1U);
    EXPECT_EQ(second_heard[0], std::errc::no_space_on_device);
    EXPECT_TRUE(second_fatal);
    EXPECT_TRUE(handle.closed());
}

TEST_P(TimeoutTest, ATimeoutNobodyHearsClosesTheHandle) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1), {.timeout = 20ms});
    ASSERT_TRUE(run_until(*loop, [&] { return handle.closed(); }, 2s));
    EXPECT_EQ(loop->active_watchers(), 0U);
}

ANYLOOP_INSTANTIATE_BACKENDS(TimeoutTest);

}  // namespace
}  // namespace anyloop::test
