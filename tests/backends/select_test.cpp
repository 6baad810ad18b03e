// The select backend where it differs from the others: the FD_SETSIZE
// ceiling, a watched fd closed under select(), and the highest-fd bookkeeping.
#include <anyloop/backends/select.hpp>

#include "support/test_support.hpp"

#include <fcntl.h>
#include <sys/select.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <vector>

namespace anyloop::test {
namespace {

class Native_select : public ::testing::Test {
protected:
    void TearDown() override { EXPECT_EQ(loop->active_watchers(), 0U); }
    std::unique_ptr<EventLoop> loop = make_select_loop();
};

// Watches pair.a for read until one byte arrives; returns whether it did.
bool serves(EventLoop& loop, SocketPair& pair) {
    int calls = 0;
    IoWatcher watcher = loop.io(pair.a, Io::read, [&](Io revents) {
        EXPECT_EQ(revents, Io::read);
        char byte = 0;
        EXPECT_EQ(::read(pair.a, &byte, 1), 1);
        ++calls;
    });
    write_all(pair.b, "x", 1);
    const bool done = run_until(loop, [&] { return calls == 1; });
    watcher.stop();
    return done && calls == 1;
}

TEST_F(Native_select, NamesItself) {
    EXPECT_EQ(loop->backend(), "select");
    EXPECT_EQ(make_loop("select")->backend(), "select");
}

TEST_F(Native_select, RefusesFdAtOrAboveFdSetsize) {
    constexpr long wanted = FD_SETSIZE + 64;
    if (raise_fd_limit(wanted) < wanted)
        GTEST_SKIP() << "needs RLIMIT_NOFILE of at least " << wanted << " to open an fd >= FD_SETSIZE (" << FD_SETSIZE
                     << "); the hard limit does not allow it";
    SocketPair pair;
    // Open fds until one is >= FD_SETSIZE; the loop's own wake-up fd is low.
    std::vector<int> opened;
    int high = -1;
    while (high < FD_SETSIZE && opened.size() < static_cast<std::size_t>(wanted)) {
        high = ::fcntl(pair.a, F_DUPFD_CLOEXEC, 0);
        ASSERT_GE(high, 0) << "dup failed: errno " << errno;
        opened.push_back(high);
    }
    ASSERT_EQ(high, FD_SETSIZE);  // the lowest free fd: the exact boundary

    int calls = 0;
    try {
        IoWatcher watcher = loop->io(high, Io::read, [&](Io) { ++calls; });
        ADD_FAILURE() << "watching fd " << high << " did not throw";
    } catch (const std::invalid_argument& error) {
        const std::string message = error.what();
        EXPECT_NE(message.find("fd " + std::to_string(high)), std::string::npos) << message;
        EXPECT_NE(message.find("FD_SETSIZE (" + std::to_string(FD_SETSIZE) + ")"), std::string::npos) << message;
        EXPECT_NE(message.find("poll or epoll"), std::string::npos) << message;
    }
    EXPECT_EQ(loop->active_watchers(), 0U);

    // A new loop would get a wake-up fd above the ceiling: refused up front.
    EXPECT_THROW(make_select_loop(), std::runtime_error);

    // Far above the ceiling too, while every low fd is taken.
    const int higher = ::fcntl(pair.a, F_DUPFD_CLOEXEC, FD_SETSIZE + 40);
    ASSERT_GE(higher, FD_SETSIZE + 40);
    opened.push_back(higher);
    EXPECT_THROW(IoWatcher watcher = loop->io(higher, Io::write, [&](Io) { ++calls; }), std::invalid_argument);

    for (const int fd : opened) ::close(fd);
    SocketPair low;
    ASSERT_LT(low.a, FD_SETSIZE);
    EXPECT_TRUE(serves(*loop, low));
    EXPECT_EQ(calls, 0);
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// select() fails as a whole with EBADF when a watched fd was closed; the
// backend reports that fd ready so the owner's read() sees EBADF, and keeps
// serving the other watchers.
TEST_F(Native_select, ClosedFdIsReportedSoReadSeesEbadf) {
    SocketPair closing;
    SocketPair healthy;
    const int fd = closing.a;
    int calls = 0;
    int read_errno = 0;
    Io seen = Io::none;
    IoWatcher watcher;
    watcher = loop->io(fd, Io::read, [&](Io revents) {
        ++calls;
        seen = revents;
        char byte = 0;
        if (::read(fd, &byte, 1) < 0) read_errno = errno;
        watcher.stop();
    });
    closing.close_a();
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 1; }));
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(seen, Io::read);
    EXPECT_EQ(read_errno, EBADF);
    loop->run_once(false);
    EXPECT_EQ(calls, 1);

    // Write-only interest on a closed fd, next to a healthy watcher.
    SocketPair closing_too;
    const int fd_too = closing_too.a;
    int write_calls = 0;
    int write_errno = 0;
    IoWatcher writer;
    writer = loop->io(fd_too, Io::write, [&](Io revents) {
        EXPECT_EQ(revents, Io::write);
        ++write_calls;
        if (::write(fd_too, "x", 1) < 0) write_errno = errno;
        writer.stop();
    });
    closing_too.close_a();
    EXPECT_TRUE(serves(*loop, healthy));
    ASSERT_TRUE(run_until(*loop, [&] { return write_calls >= 1; }));
    EXPECT_EQ(write_calls, 1);
    EXPECT_EQ(write_errno, EBADF);
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// The nfds argument follows the highest watched fd down and up again.
TEST_F(Native_select, HighestFdStoppedAndRestarted) {
    SocketPair low;
    SocketPair middle;
    SocketPair high;
    int high_calls = 0;
    IoWatcher high_watcher = loop->io(high.a, Io::read, [&](Io) {
        char byte = 0;
        EXPECT_EQ(::read(high.a, &byte, 1), 1);
        ++high_calls;
    });
    IoWatcher middle_watcher = loop->io(middle.a, Io::none, [](Io) {});
    high_watcher.stop();
    middle_watcher.stop();
    EXPECT_TRUE(serves(*loop, low));

    high_watcher.start();
    write_all(high.b, "h", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return high_calls == 1; }));
    high_watcher.set_events(Io::none);  // paused: still watched, never reported
    write_all(high.b, "h", 1);
    EXPECT_TRUE(serves(*loop, low));
    EXPECT_EQ(high_calls, 1);
    high_watcher.set_events(Io::read);
    ASSERT_TRUE(run_until(*loop, [&] { return high_calls == 2; }));
    high_watcher.stop();
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// (A watcher destroyed by another callback of the same batch is covered for
// every backend by IoContract.DestroyingAnotherPendingWatcherPreventsItsCallback.)

}  // namespace
}  // namespace anyloop::test
