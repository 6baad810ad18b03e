// Shared helpers for the test suites: backend parameterization, socket
// pairs, and a bounded run helper so no test can hang the suite.
#pragma once

#include <anyloop/backends/registry.hpp>
#include <anyloop/core/event_loop.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
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
    /// The end-of-test check, callable inside the test body: watchers that
    /// are locals of the body die (and stop) before TearDown() runs, so a
    /// test proves it stopped what it started by calling this while they
    /// still exist. Also catches a leaked ref() or an unrun post().
    void expect_loop_empty() const {
        ASSERT_TRUE(loop);
        EXPECT_EQ(loop->active_watchers(), 0U) << "the test left active watchers on " << GetParam();
        EXPECT_FALSE(loop->alive()) << "the loop is still alive (a ref() or a post()) on " << GetParam();
    }
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

/// Runs blocking iterations for `how_long` (a guard timer ends the wait),
/// for a test that expects nothing to happen meanwhile: a backend that
/// reports late still gets its chance to (wrongly) report. Returns the number
/// of iterations, which stays small unless the loop spins.
int run_for(EventLoop& loop, std::chrono::milliseconds how_long);

/// Raises the soft RLIMIT_NOFILE to at least `wanted` (within the hard
/// limit); returns the resulting soft limit.
long raise_fd_limit(long wanted);

/// Writes all of `data` to a blocking-or-not fd, retrying on EAGAIN/EINTR.
void write_all(int fd, const void* data, std::size_t size);

/// Moves `fd` to the lowest free number >= `minimum` (close-on-exec; the
/// open file, with its O_NONBLOCK, is shared) and closes the original.
/// Returns the new number. Keeps a test's peer ends out of the range a
/// select() backend can watch.
int move_fd_above(int fd, int minimum);

/// Writes into non-blocking `fd` until the kernel takes no more; returns the
/// number of bytes written. Afterwards `fd` is not writable until its peer
/// reads.
std::size_t fill_until_blocked(int fd);

/// Reads whatever non-blocking `fd` has right now (until EAGAIN or EOF).
std::string read_available(int fd);

/// Milliseconds since `start` on the steady clock.
double elapsed_ms(std::chrono::steady_clock::time_point start);

}  // namespace anyloop::test

#define ANYLOOP_INSTANTIATE_BACKENDS(Suite)                                                           \
    INSTANTIATE_TEST_SUITE_P(Backends, Suite, ::testing::ValuesIn(::anyloop::available_backends()), \
                             ::anyloop::test::BackendName{})
