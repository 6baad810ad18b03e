// The EventLoop contract, timers: every case runs on every backend.
#include <anyloop/core/event_loop.hpp>

#include "support/test_support.hpp"

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
}

TEST_P(TimerContract, RepeatingTimer) {
    int calls = 0;
    TimerWatcher timer;
    timer = loop->timer(1ms, 1ms, [&] {
        if (++calls == 5) timer.stop();
    });
    loop->run();
    EXPECT_EQ(calls, 5);
}

ANYLOOP_INSTANTIATE_BACKENDS(TimerContract);

}  // namespace
}  // namespace anyloop::test
