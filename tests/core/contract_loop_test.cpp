// The EventLoop contract, running, post(), signals and failures: every case
// runs on every backend.
#include <anyloop/core/event_loop.hpp>

#include "support/test_support.hpp"

#include <csignal>
#include <stdexcept>
#include <thread>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using LoopContract = LoopTest;

TEST_P(LoopContract, RunReturnsWhenNothingIsActive) {
    loop->run();
    EXPECT_FALSE(loop->alive());
}

TEST_P(LoopContract, ExceptionFromCallbackComesOutOfRun) {
    TimerWatcher timer = loop->timer(1ms, [] { throw std::runtime_error("boom"); });
    EXPECT_THROW(loop->run(), std::runtime_error);
    // Still usable afterwards.
    int calls = 0;
    TimerWatcher again = loop->timer(1ms, [&] { ++calls; });
    loop->run();
    EXPECT_EQ(calls, 1);
}

TEST_P(LoopContract, SignalDeliveredInLoopContext) {
    const auto loop_thread = std::this_thread::get_id();
    int calls = 0;
    SignalWatcher watcher = loop->signal(SIGUSR1, [&](int signo) {
        EXPECT_EQ(signo, SIGUSR1);
        EXPECT_EQ(std::this_thread::get_id(), loop_thread);
        ++calls;
        loop->stop();
    });
    TimerWatcher trigger = loop->timer(1ms, [] { ::raise(SIGUSR1); });
    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    loop->run();
    EXPECT_EQ(calls, 1);
    watcher.stop();
    guard.stop();
}

ANYLOOP_INSTANTIATE_BACKENDS(LoopContract);

}  // namespace
}  // namespace anyloop::test
