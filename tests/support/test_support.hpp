// Shared helpers for the test suites: backend parameterization, socket
// pairs, and a bounded run helper so no test can hang the suite.
#pragma once

#include <anyloop/backends/registry.hpp>
#include <anyloop/core/event_loop.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>

namespace anyloop::test {

/// Test-name suffix: the backend name, so ctest -L <backend> can select it.
struct BackendName {
    std::string operator()(const ::testing::TestParamInfo<std::string>& info) const { return info.param; }
};

/// Base fixture for suites parameterized over available_backends(): makes
/// the loop, and at teardown checks that the test left no active watcher.
class LoopTest : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override { loop = make_loop(GetParam()); }
    void TearDown() override {
        if (loop) {
            EXPECT_EQ(loop->active_watchers(), 0U) << "the test left active watchers on " << GetParam();
        }
        loop.reset();
    }
    std::unique_ptr<EventLoop> loop;
};

/// An AF_UNIX stream socket pair, both ends non-blocking and close-on-exec;
/// closes what it still owns.
struct SocketPair {
    SocketPair();
    ~SocketPair();
    SocketPair(const SocketPair&) = delete;
    SocketPair& operator=(const SocketPair&) = delete;
    void close_a();
    void close_b();
    int a = -1;
    int b = -1;
};

/// Runs run_once(true) until `done()` or `limit` passes (a timer guards
/// the wait). Returns done().
bool run_until(EventLoop& loop, const std::function<bool()>& done,
               std::chrono::milliseconds limit = std::chrono::seconds(10));

/// Raises the soft RLIMIT_NOFILE to at least `wanted` (within the hard
/// limit); returns the resulting soft limit.
long raise_fd_limit(long wanted);

/// Writes all of `data` to a blocking-or-not fd, retrying on EAGAIN/EINTR.
void write_all(int fd, const void* data, std::size_t size);

}  // namespace anyloop::test

#define ANYLOOP_INSTANTIATE_BACKENDS(Suite)                                                           \
    INSTANTIATE_TEST_SUITE_P(Backends, Suite, ::testing::ValuesIn(::anyloop::available_backends()), \
                             ::anyloop::test::BackendName{})
