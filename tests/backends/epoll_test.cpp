// The epoll set where it differs from the other backends, on both backends
// that keep one (epoll, and Asio, which waits on the set's descriptor): fd
// numbers reused, a registration that outlives its fd, interest changes,
// hang-up on a paused watcher, regular files, and the batch of events per
// epoll_wait.
#include <anyloop/backends/epoll.hpp>
#include <anyloop/backends/registry.hpp>

#include "support/test_support.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <system_error>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;

class EpollSet : public ::testing::TestWithParam<std::string> {
protected:
    void TearDown() override { EXPECT_EQ(loop->active_watchers(), 0U); }

    // Blocking iterations until a `after` timer fires; a loop that a stale or
    // unwanted event keeps waking would need many more than a few.
    int iterations_until_timer(Duration after) {
        bool fired = false;
        TimerWatcher timer = loop->timer(after, [&] { fired = true; });
        int iterations = 0;
        while (!fired && iterations < 100) {
            loop->run_once(true);
            ++iterations;
        }
        EXPECT_TRUE(fired);
        return iterations;
    }

    std::unique_ptr<EventLoop> loop = make_loop(GetParam());
};

std::vector<std::string> backends_with_an_epoll_set() {
    std::vector<std::string> names;
    for (const std::string& name : available_backends())
        if (name == "epoll" || name == "asio") names.push_back(name);
    return names;
}

INSTANTIATE_TEST_SUITE_P(Backends, EpollSet, ::testing::ValuesIn(backends_with_an_epoll_set()), BackendName{});

// Closes an fd the test made outside SocketPair.
struct FdCloser {
    ~FdCloser() {
        if (fd >= 0) ::close(fd);
    }
    int fd = -1;
};

TEST(Native_epoll, NamesItself) {
    EXPECT_EQ(make_epoll_loop()->backend(), "epoll");
    EXPECT_EQ(make_loop("epoll")->backend(), "epoll");
}

TEST_P(EpollSet, ClosedFdNumberReusedByANewWatcher) {
    SocketPair first;
    SocketPair second;
    const int number = first.a;
    int old_calls = 0;
    IoWatcher old_watcher = loop->io(number, Io::read, [&](Io) { ++old_calls; });
    write_all(first.b, "x", 1);
    first.close_a();                                          // the kernel drops the registration with the file
    EXPECT_NO_THROW(old_watcher.set_events(Io::read_write));  // nor does changing its interest fail
    loop->run_once(false);
    EXPECT_EQ(old_calls, 0);  // unlike poll's POLLNVAL, a closed fd goes quiet

    FdCloser reused;
    reused.fd = ::dup3(second.a, number, O_CLOEXEC);  // the same number, another file
    ASSERT_EQ(reused.fd, number);
    old_watcher.stop();  // EPOLL_CTL_DEL finds nothing: tolerated
    EXPECT_FALSE(old_watcher.active());

    int new_calls = 0;
    char byte = 0;
    IoWatcher new_watcher = loop->io(number, Io::read, [&](Io revents) {
        EXPECT_EQ(revents, Io::read);
        ASSERT_EQ(::read(number, &byte, 1), 1);
        ++new_calls;
    });
    write_all(second.b, "y", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return new_calls == 1; }));
    EXPECT_EQ(byte, 'y');
    loop->run_once(false);
    EXPECT_EQ(new_calls, 1);
    EXPECT_EQ(old_calls, 0);
    new_watcher.stop();
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// Unlike poll, which would report POLLNVAL later, a bad fd is refused up front.
TEST_P(EpollSet, WatchingAClosedFdThrows) {
    int closed = -1;
    {
        SocketPair pair;
        closed = pair.a;
    }
    try {
        IoWatcher watcher = loop->io(closed, Io::read, [](Io) {});
        ADD_FAILURE() << "watching closed fd " << closed << " did not throw";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EBADF);
        EXPECT_NE(std::string(error.what()).find("fd " + std::to_string(closed)), std::string::npos) << error.what();
    }
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// A dup of the watched fd keeps the file, and so its epoll registration,
// alive after the fd is closed; EPOLL_CTL_DEL can no longer reach it. Its
// events must not reach the freed watcher (ASan would see it) nor the new
// watcher of the reused number, and must not keep waking the loop.
TEST_P(EpollSet, RegistrationOutlivingItsFdIsIgnored) {
    SocketPair first;
    SocketPair second;
    const int number = first.a;
    FdCloser duplicate;
    duplicate.fd = ::fcntl(first.a, F_DUPFD_CLOEXEC, 0);
    ASSERT_GE(duplicate.fd, 0);
    int old_calls = 0;
    IoWatcher old_watcher = loop->io(number, Io::read, [&](Io) { ++old_calls; });
    first.close_a();
    old_watcher.reset();  // stopped and freed; the registration lives on

    FdCloser reused;
    reused.fd = ::dup3(second.a, number, O_CLOEXEC);
    ASSERT_EQ(reused.fd, number);
    int new_calls = 0;
    IoWatcher new_watcher = loop->io(number, Io::read, [&](Io) {
        char byte = 0;
        ASSERT_EQ(::read(number, &byte, 1), 1);
        EXPECT_EQ(byte, 'y');
        ++new_calls;
    });

    write_all(first.b, "x", 1);  // only the orphaned registration is ready
    for (int i = 0; i < 3; ++i) loop->run_once(false);
    EXPECT_EQ(new_calls, 0);
    EXPECT_EQ(old_calls, 0);
    EXPECT_LE(iterations_until_timer(30ms), 3);

    write_all(second.b, "y", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return new_calls == 1; }));
    EXPECT_EQ(old_calls, 0);
    new_watcher.stop();
    EXPECT_EQ(loop->active_watchers(), 0U);
}

TEST_P(EpollSet, InterestChangedManyTimesEndsAtTheLastOne) {
    SocketPair pair;  // pair.a is writable at once and readable only after a write
    std::vector<Io> seen;
    IoWatcher watcher = loop->io(pair.a, Io::read, [&](Io revents) { seen.push_back(revents); });
    const Io cycle[] = {Io::write, Io::none, Io::read_write, Io::read, Io::none, Io::write, Io::read_write};
    const auto churn = [&] {
        for (int i = 0; i < 1000; ++i) watcher.set_events(cycle[i % 7]);
    };

    churn();
    watcher.set_events(Io::read);
    loop->run_once(false);
    loop->run_once(false);
    EXPECT_TRUE(seen.empty());

    churn();
    watcher.set_events(Io::write);
    loop->run_once(false);
    ASSERT_EQ(seen.size(), 1U);
    EXPECT_EQ(seen.back(), Io::write);

    write_all(pair.b, "z", 1);
    churn();
    watcher.set_events(Io::read_write);
    loop->run_once(false);
    ASSERT_EQ(seen.size(), 2U);
    EXPECT_EQ(seen.back(), Io::read_write);

    churn();
    watcher.set_events(Io::none);
    loop->run_once(false);
    EXPECT_EQ(seen.size(), 2U);

    // The same churn from inside the callback, ending on read with the byte
    // already consumed: nothing is ready any more.
    watcher.set_callback([&](Io revents) {
        seen.push_back(revents);
        char byte = 0;
        ASSERT_EQ(::read(pair.a, &byte, 1), 1);
        churn();
        watcher.set_events(Io::read);
    });
    watcher.set_events(Io::read);
    loop->run_once(false);
    loop->run_once(false);
    loop->run_once(false);
    ASSERT_EQ(seen.size(), 3U);
    EXPECT_EQ(seen.back(), Io::read);
    watcher.stop();
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// epoll reports EPOLLHUP even for an empty mask: a paused watcher must leave
// the set, or the loop would spin on a peer that hung up.
TEST_P(EpollSet, PausedWatcherOnAHungUpSocketDoesNotSpin) {
    SocketPair pair;
    int calls = 0;
    Io seen = Io::none;
    IoWatcher watcher = loop->io(pair.a, Io::read, [&](Io revents) {
        seen = revents;
        ++calls;
    });
    watcher.set_events(Io::none);
    pair.close_b();
    EXPECT_LE(iterations_until_timer(20ms), 3);
    EXPECT_EQ(calls, 0);

    watcher.set_events(Io::write);  // hang-up wakes what is watched, nothing more
    loop->run_once(false);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(seen, Io::write);
    watcher.set_events(Io::read);
    loop->run_once(false);
    EXPECT_EQ(calls, 2);
    EXPECT_EQ(seen, Io::read);
    char byte = 0;
    EXPECT_EQ(::read(pair.a, &byte, 1), 0);  // end of file
    watcher.stop();
    EXPECT_EQ(loop->active_watchers(), 0U);
}

TEST_P(EpollSet, PeerShutdownIsReadReadiness) {
    SocketPair pair;
    int calls = 0;
    IoWatcher watcher = loop->io(pair.a, Io::read, [&](Io revents) {
        EXPECT_EQ(revents, Io::read);
        char byte = 0;
        EXPECT_EQ(::read(pair.a, &byte, 1), 0);
        ++calls;
        watcher.stop();
    });
    ASSERT_EQ(::shutdown(pair.b, SHUT_WR), 0);
    ASSERT_TRUE(run_until(*loop, [&] { return calls == 1; }));
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// epoll refuses regular files (EPERM); poll and select call them always
// ready, and so does this backend, without spinning while paused.
TEST_P(EpollSet, RegularFileIsAlwaysReady) {
    std::FILE* file = std::tmpfile();
    ASSERT_NE(file, nullptr);
    const int fd = ::fileno(file);
    write_all(fd, "abc", 3);
    ASSERT_EQ(::lseek(fd, 0, SEEK_SET), 0);
    std::vector<Io> seen;
    IoWatcher watcher = loop->io(fd, Io::read, [&](Io revents) { seen.push_back(revents); });
    loop->run_once(true);  // must not block
    ASSERT_EQ(seen.size(), 1U);
    EXPECT_EQ(seen.back(), Io::read);
    watcher.set_events(Io::none);
    EXPECT_LE(iterations_until_timer(20ms), 3);
    EXPECT_EQ(seen.size(), 1U);
    watcher.set_events(Io::read_write);
    loop->run_once(false);
    ASSERT_EQ(seen.size(), 2U);
    EXPECT_EQ(seen.back(), Io::read_write);
    watcher.stop();
    std::fclose(file);
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// 150 ready fds: the first epoll_wait fills the initial 64 slots, the array
// grows, and the second takes the remaining 86 in one go.
TEST_P(EpollSet, ManyReadyFdsAreTakenInGrowingBatches) {
    constexpr int count = 150;
    ASSERT_GE(raise_fd_limit(2 * count + 64), 2 * count + 64);
    std::vector<std::unique_ptr<SocketPair>> pairs;
    std::vector<IoWatcher> watchers(count);
    std::vector<int> calls(count, 0);
    for (int i = 0; i < count; ++i) {
        pairs.push_back(std::make_unique<SocketPair>());
        write_all(pairs.back()->b, "x", 1);
        const auto at = static_cast<std::size_t>(i);
        watchers[at] = loop->io(pairs.back()->a, Io::read, [&, at](Io) {
            ++calls[at];
            watchers[at].stop();
        });
    }
    loop->run_once(false);
    loop->run_once(false);
    for (int i = 0; i < count; ++i) EXPECT_EQ(calls[static_cast<std::size_t>(i)], 1) << "watcher " << i;
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// (A watcher destroyed by another callback of the same batch is covered for
// every backend by IoContract.DestroyingAnotherPendingWatcherPreventsItsCallback.)

}  // namespace
}  // namespace anyloop::test
