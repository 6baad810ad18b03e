// The EventLoop contract, I/O watchers: every case runs on every backend.
//
// Each case counts callbacks, checks what they saw, and ends by proving the
// loop holds no active watcher (expect_loop_empty()).
#include <anyloop/core/event_loop.hpp>

#include "support/test_support.hpp"

#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using IoContract = LoopTest;

// How long a case waits to see that nothing happens, and how many
// iterations that may take at most: a loop that wakes up for nothing (an
// event it does not report, say) spins through thousands.
constexpr auto quiet_period = 30ms;
constexpr int max_quiet_iterations = 10;

TEST_P(IoContract, ReadReadiness) {
    SocketPair pair;
    int calls = 0;
    IoWatcher watcher = loop->io(pair.a, Io::read, [&](Io revents) {
        EXPECT_EQ(revents, Io::read);
        char byte = 0;
        ASSERT_EQ(::read(pair.a, &byte, 1), 1);
        EXPECT_EQ(byte, 'x');
        ++calls;
    });
    EXPECT_TRUE(watcher.active());
    EXPECT_EQ(watcher.fd(), pair.a);
    EXPECT_EQ(watcher.events(), Io::read);
    EXPECT_EQ(loop->active_watchers(), 1U);
    EXPECT_LT(run_for(*loop, quiet_period), max_quiet_iterations);  // nothing readable yet
    EXPECT_EQ(calls, 0);
    write_all(pair.b, "x", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return calls == 1; }));
    run_for(*loop, quiet_period);  // the byte was consumed: level-triggered, but not ready any more
    EXPECT_EQ(calls, 1);
    watcher.stop();
    expect_loop_empty();
}

TEST_P(IoContract, WriteReadiness) {
    SocketPair pair;
    int calls = 0;
    IoWatcher watcher = loop->io(pair.a, Io::write, [&](Io revents) {
        EXPECT_EQ(revents, Io::write);
        ++calls;
    });
    // A fresh socket has room: writable at once, and again on every
    // iteration while it stays writable (level-triggered).
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 3; }));
    watcher.stop();

    // Full: not writable until the peer reads. Readable meanwhile, which a
    // write watcher neither reports nor wakes up for.
    ASSERT_GT(fill_until_blocked(pair.a), 0U);
    write_all(pair.b, "r", 1);
    calls = 0;
    watcher.start();
    EXPECT_LT(run_for(*loop, quiet_period), max_quiet_iterations) << "the loop spun instead of sleeping";
    EXPECT_EQ(calls, 0) << "a full socket was reported writable";
    EXPECT_GT(read_available(pair.b).size(), 0U);
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 1; }));
    const char byte = 'w';
    EXPECT_EQ(::write(pair.a, &byte, 1), 1);
    watcher.stop();
    expect_loop_empty();
}

TEST_P(IoContract, ReadAndWriteReadinessTogether) {
    SocketPair pair;
    write_all(pair.b, "x", 1);  // a is readable, and writable anyway
    std::vector<Io> seen;
    IoWatcher watcher = loop->io(pair.a, Io::read_write, [&](Io revents) { seen.push_back(revents); });
    ASSERT_TRUE(run_until(*loop, [&] { return !seen.empty(); }));
    // Both ready at once: one callback carries both, not two callbacks.
    EXPECT_EQ(seen.front(), Io::read_write);
    watcher.stop();

    // Only writable once the byte is read.
    EXPECT_EQ(read_available(pair.a), "x");
    seen.clear();
    watcher.start();
    ASSERT_TRUE(run_until(*loop, [&] { return !seen.empty(); }));
    EXPECT_EQ(seen.front(), Io::write);
    watcher.stop();
    expect_loop_empty();
}

TEST_P(IoContract, EventsChangedWhileActive) {
    SocketPair pair;
    write_all(pair.b, "x", 1);  // a stays readable (never read) and writable
    std::vector<Io> seen;
    IoWatcher watcher = loop->io(pair.a, Io::read, [&](Io revents) { seen.push_back(revents); });

    // Each phase: only the watched events are reported, on every callback.
    auto expect_phase = [&](Io events) {
        watcher.set_events(events);
        EXPECT_EQ(watcher.events(), events);
        EXPECT_TRUE(watcher.active());
        seen.clear();  // set_events() applies from the next iteration on
        ASSERT_TRUE(run_until(*loop, [&] { return seen.size() >= 2; })) << "events " << static_cast<int>(events);
        for (const Io revents : seen) EXPECT_EQ(revents, events) << "watching " << static_cast<int>(events);
    };
    expect_phase(Io::read);
    expect_phase(Io::write);
    expect_phase(Io::read_write);

    // Io::none pauses: still active, but no callback.
    watcher.set_events(Io::none);
    EXPECT_TRUE(watcher.active());
    seen.clear();
    EXPECT_LT(run_for(*loop, quiet_period), max_quiet_iterations) << "the loop spun instead of sleeping";
    EXPECT_TRUE(seen.empty()) << "a watcher of Io::none was called";

    expect_phase(Io::read);
    watcher.stop();
    expect_loop_empty();
}

TEST_P(IoContract, PausedWatcherOnAHungUpSocketLetsTheLoopSleep) {
    // poll() and epoll report hang-up and errors even for an empty interest
    // set; a paused (Io::none) watcher must neither be called for them nor
    // turn every blocking iteration into an instant return (a busy loop).
    SocketPair pair;
    pair.close_b();
    int calls = 0;
    IoWatcher watcher = loop->io(pair.a, Io::none, [&](Io) { ++calls; });
    EXPECT_LT(run_for(*loop, quiet_period), max_quiet_iterations) << "the loop spun instead of sleeping";
    EXPECT_EQ(calls, 0);

    // Resumed, the hang-up is reported as readiness.
    watcher.set_events(Io::read);
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 1; }));
    watcher.stop();
    expect_loop_empty();
}

TEST_P(IoContract, EventsChangedInsideOwnCallback) {
    // A request/response exchange driven by one watcher that flips between
    // read and write from inside its own callback.
    SocketPair pair;
    int reads = 0;
    int writes = 0;
    std::string echoed;
    IoWatcher watcher;
    watcher = loop->io(pair.a, Io::read, [&](Io revents) {
        if (has(revents, Io::read)) {
            EXPECT_EQ(revents, Io::read);
            ++reads;
            EXPECT_EQ(read_available(pair.a).size(), 1U);
            watcher.set_events(Io::write);
        } else {
            EXPECT_EQ(revents, Io::write);
            ++writes;
            write_all(pair.a, "r", 1);
            watcher.set_events(Io::read);
        }
    });
    for (int round = 1; round <= 5; ++round) {
        write_all(pair.b, "q", 1);
        ASSERT_TRUE(run_until(*loop, [&] { return writes == round; }));
        echoed += read_available(pair.b);
    }
    EXPECT_EQ(reads, 5);
    EXPECT_EQ(writes, 5);
    EXPECT_EQ(echoed, "rrrrr");
    watcher.stop();
    expect_loop_empty();
}

TEST_P(IoContract, StopInsideOwnCallback) {
    SocketPair pair;
    write_all(pair.b, "abc", 3);
    int calls = 0;
    IoWatcher watcher;
    watcher = loop->io(pair.a, Io::read, [&](Io) {
        ++calls;
        watcher.stop();  // data stays unread: a level-triggered loop would call again
        watcher.stop();  // idempotent
    });
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 1; }));
    run_for(*loop, quiet_period);
    EXPECT_EQ(calls, 1);
    EXPECT_FALSE(watcher.active());
    EXPECT_EQ(loop->active_watchers(), 0U);

    // Restarted later, it sees the data that is still there.
    watcher.start();
    ASSERT_TRUE(run_until(*loop, [&] { return calls == 2; }));
    EXPECT_FALSE(watcher.active());
    expect_loop_empty();
}

TEST_P(IoContract, RestartInsideOwnCallback) {
    // stop() + start() from inside the callback (a DEL and an ADD for a
    // kernel-side interest set while its ready list is being walked): the
    // watcher stays level-triggered, at most one call per iteration.
    SocketPair pair;
    write_all(pair.b, "abc", 3);  // never read: ready on every iteration
    int calls = 0;
    IoWatcher watcher;
    watcher = loop->io(pair.a, Io::read, [&](Io revents) {
        EXPECT_EQ(revents, Io::read);
        ++calls;
        watcher.stop();
        watcher.start();
        EXPECT_TRUE(watcher.active());
    });
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 1; }));
    for (int i = 0; i < 5; ++i) {
        const int before = calls;
        loop->run_once(false);
        EXPECT_LE(calls - before, 1) << "called twice in one iteration";
    }
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 4; }));
    watcher.stop();
    expect_loop_empty();
}

// Two watchers are both ready in the same iteration; whichever callback runs
// first stops (or destroys) the other, whose event is then already pending.
// It must not run.
TEST_P(IoContract, StoppingAnotherPendingWatcherPreventsItsCallback) {
    SocketPair first_pair;
    SocketPair second_pair;
    write_all(first_pair.b, "1", 1);
    write_all(second_pair.b, "2", 1);
    int first_calls = 0;
    int second_calls = 0;
    IoWatcher first;
    IoWatcher second;
    first = loop->io(first_pair.a, Io::read, [&](Io) {
        ++first_calls;
        read_available(first_pair.a);
        second.stop();
    });
    second = loop->io(second_pair.a, Io::read, [&](Io) {
        ++second_calls;
        read_available(second_pair.a);
        first.stop();
    });
    ASSERT_TRUE(run_until(*loop, [&] { return first_calls + second_calls >= 1; }));
    run_for(*loop, quiet_period);
    EXPECT_EQ(first_calls + second_calls, 1) << "first " << first_calls << ", second " << second_calls;
    EXPECT_NE(first.active(), second.active()) << "exactly the one that ran first is left active";
    first.stop();
    second.stop();
    expect_loop_empty();
}

TEST_P(IoContract, DestroyingAnotherPendingWatcherPreventsItsCallback) {
    SocketPair first_pair;
    SocketPair second_pair;
    write_all(first_pair.b, "1", 1);
    write_all(second_pair.b, "2", 1);
    int first_calls = 0;
    int second_calls = 0;
    // Each closure keeps a token alive; a destroyed watcher must release its
    // closure by the end of the iteration.
    auto first_token = std::make_shared<int>(1);
    auto second_token = std::make_shared<int>(2);
    auto first = std::make_unique<IoWatcher>();
    auto second = std::make_unique<IoWatcher>();
    *first = loop->io(first_pair.a, Io::read, [&, token = first_token](Io) {
        ++first_calls;
        read_available(first_pair.a);
        second.reset();
    });
    *second = loop->io(second_pair.a, Io::read, [&, token = second_token](Io) {
        ++second_calls;
        read_available(second_pair.a);
        first.reset();
    });
    ASSERT_TRUE(run_until(*loop, [&] { return first_calls + second_calls >= 1; }));
    run_for(*loop, quiet_period);
    EXPECT_EQ(first_calls + second_calls, 1) << "first " << first_calls << ", second " << second_calls;
    ASSERT_NE(first == nullptr, second == nullptr);
    // Only the survivor's closure still holds its token.
    EXPECT_EQ(first_token.use_count(), first ? 2 : 1);
    EXPECT_EQ(second_token.use_count(), second ? 2 : 1);
    EXPECT_EQ(loop->active_watchers(), 1U);
    first.reset();
    second.reset();
    expect_loop_empty();
}

TEST_P(IoContract, FirstCallbackStopsManyPendingWatchers) {
    // Eight ready watchers; the first callback to run stops half of the
    // others and destroys the rest, reshuffling whatever table the backend
    // keeps while its ready list is being walked.
    constexpr std::size_t count = 8;
    std::vector<std::unique_ptr<SocketPair>> pairs;
    std::vector<std::unique_ptr<IoWatcher>> watchers(count);
    std::vector<int> calls(count, 0);
    for (std::size_t i = 0; i < count; ++i) {
        pairs.push_back(std::make_unique<SocketPair>());
        write_all(pairs.back()->b, "x", 1);
    }
    for (std::size_t self = 0; self < count; ++self) {
        watchers[self] = std::make_unique<IoWatcher>(loop->io(pairs[self]->a, Io::read, [&, self](Io) {
            ++calls[self];
            read_available(pairs[self]->a);
            for (std::size_t other = 0; other < count; ++other) {
                if (other == self || !watchers[other]) continue;
                if (other % 2 == 0) watchers[other]->stop();
                else watchers[other].reset();
            }
        }));
    }
    ASSERT_TRUE(run_until(*loop, [&] {
        int total = 0;
        for (const int c : calls) total += c;
        return total >= 1;
    }));
    run_for(*loop, quiet_period);
    int ran = 0;
    for (std::size_t i = 0; i < count; ++i) {
        EXPECT_LE(calls[i], 1) << "watcher " << i;
        ran += calls[i];
    }
    EXPECT_EQ(ran, 1);
    EXPECT_EQ(loop->active_watchers(), 1U);
    watchers.clear();
    expect_loop_empty();
}

TEST_P(IoContract, DestroyInsideOwnCallback) {
    SocketPair pair;
    write_all(pair.b, "abc", 3);
    int calls = 0;
    int successor_calls = 0;
    auto token = std::make_shared<int>(7);
    IoWatcher successor;
    auto watcher = std::make_unique<IoWatcher>();
    *watcher = loop->io(pair.a, Io::read, [&, guard = token](Io) {
        ++calls;
        watcher.reset();       // destroys the watcher and this closure's owner
        EXPECT_EQ(*guard, 7);  // the running closure stays alive until it returns
        // The fd is free again at once: a new watcher can take it over.
        successor = loop->io(pair.a, Io::read, [&](Io) {
            ++successor_calls;
            EXPECT_EQ(read_available(pair.a), "abc");
            successor.stop();
        });
    });
    ASSERT_TRUE(run_until(*loop, [&] { return successor_calls >= 1; }));
    run_for(*loop, quiet_period);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(successor_calls, 1);
    EXPECT_EQ(token.use_count(), 1) << "the destroyed watcher's closure was not released";
    successor.reset();
    expect_loop_empty();
}

TEST_P(IoContract, CallbackReplacedInsideItself) {
    // The running closure keeps its captures after set_callback() replaced
    // it. Two shapes: a closure small enough to live inside the
    // std::function (overwriting the slot would change its captures under
    // it), and one on the heap (destroying it would free them; ASan sees).
    SocketPair pair;
    write_all(pair.b, "abc", 3);  // never read: ready on every iteration
    int small_calls = 0;
    int heap_calls = 0;
    int replacement_calls = 0;
    IoWatcher watcher;
    IoCallback replacement = [&replacement_calls, &watcher](Io) {
        ++replacement_calls;
        watcher.stop();
    };
    auto token = std::make_shared<int>(7);
    IoCallback heap = [&heap_calls, &watcher, &replacement, guard = token](Io) {
        watcher.set_callback(replacement);
        ++heap_calls;
        EXPECT_EQ(*guard, 7);
    };
    watcher = loop->io(pair.a, Io::read, [&small_calls, &watcher, &heap](Io) {
        watcher.set_callback([](Io) { ADD_FAILURE() << "a callback replaced again in the same call ran"; });
        watcher.set_callback(heap);  // the last replacement wins
        ++small_calls;               // reads this closure's own captures
    });
    ASSERT_TRUE(run_until(*loop, [&] { return replacement_calls == 1; }));
    EXPECT_EQ(small_calls, 1);
    EXPECT_EQ(heap_calls, 1);
    EXPECT_EQ(replacement_calls, 1);
    heap = nullptr;
    EXPECT_EQ(token.use_count(), 1) << "the replaced closure was not released";

    // An empty callback set from inside: the watcher stays active and quiet.
    int calls = 0;
    watcher.set_callback([&](Io) {
        ++calls;
        watcher.set_callback(nullptr);
    });
    watcher.start();
    run_for(*loop, quiet_period);
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(watcher.active());
    watcher.stop();
    expect_loop_empty();
}

TEST_P(IoContract, FdClosedAndNumberReusedByANewFd) {
    auto old_pair = std::make_unique<SocketPair>();
    const int number = old_pair->a;
    int old_calls = 0;
    IoWatcher old_watcher = loop->io(number, Io::read, [&](Io) { ++old_calls; });
    run_for(*loop, 10ms);  // let the backend register the fd with the kernel
    EXPECT_EQ(old_calls, 0);

    // Close first, then stop: io_stop must cope with an fd that is gone.
    old_pair->close_a();
    old_pair->close_b();
    old_watcher.stop();

    SocketPair new_pair;
    ASSERT_EQ(new_pair.a, number) << "the kernel did not reuse the lowest free fd number";
    std::string received;
    int new_calls = 0;
    IoWatcher new_watcher = loop->io(new_pair.a, Io::read, [&](Io revents) {
        EXPECT_EQ(revents, Io::read);
        ++new_calls;
        received += read_available(new_pair.a);
    });
    write_all(new_pair.b, "new", 3);
    ASSERT_TRUE(run_until(*loop, [&] { return received == "new"; }));
    run_for(*loop, quiet_period);
    EXPECT_EQ(old_calls, 0) << "the stopped watcher of the closed fd fired";
    EXPECT_EQ(new_calls, 1);

    // The old handle can even be restarted on the same number afterwards.
    new_watcher.stop();
    old_watcher.start();
    write_all(new_pair.b, "x", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return old_calls >= 1; }));
    old_watcher.stop();
    expect_loop_empty();
}

TEST_P(IoContract, EofIsReportedAsReadReadiness) {
    SocketPair pair;
    write_all(pair.b, "last", 4);
    pair.close_b();
    std::string received;
    int calls = 0;
    bool eof = false;
    IoWatcher watcher;
    watcher = loop->io(pair.a, Io::read, [&](Io revents) {
        EXPECT_TRUE(has(revents, Io::read));
        EXPECT_FALSE(has(revents, Io::write)) << "write was not watched";
        ++calls;
        char buffer[16];
        const ssize_t n = ::read(pair.a, buffer, sizeof buffer);
        ASSERT_GE(n, 0);
        if (n == 0) {
            eof = true;
            watcher.stop();
        } else {
            received.append(buffer, static_cast<std::size_t>(n));
        }
    });
    ASSERT_TRUE(run_until(*loop, [&] { return eof; }));
    EXPECT_EQ(received, "last");
    EXPECT_GE(calls, 1);
    EXPECT_LE(calls, 2);  // data then EOF, or both seen in one read loop's worth
    expect_loop_empty();
}

TEST_P(IoContract, HangUpWakesAWriteWatcher) {
    SocketPair pair;
    ASSERT_GT(fill_until_blocked(pair.a), 0U);
    int calls = 0;
    int write_error = 0;
    IoWatcher watcher;
    watcher = loop->io(pair.a, Io::write, [&](Io revents) {
        EXPECT_TRUE(has(revents, Io::write));
        EXPECT_FALSE(has(revents, Io::read)) << "read was not watched";
        ++calls;
        const char byte = 'x';
        const ssize_t n = ::send(pair.a, &byte, 1, MSG_NOSIGNAL);
        write_error = n < 0 ? errno : 0;
        watcher.stop();
    });
    run_for(*loop, quiet_period);
    EXPECT_EQ(calls, 0) << "a full socket was reported writable";
    pair.close_b();  // the peer goes away while we wait to write
    ASSERT_TRUE(run_until(*loop, [&] { return calls == 1; }));
    EXPECT_TRUE(write_error == EPIPE || write_error == ECONNRESET) << "write after hang-up: errno " << write_error;
    expect_loop_empty();
}

TEST_P(IoContract, HalfCloseDeliversEofAndKeepsTheOtherDirection) {
    SocketPair pair;
    ASSERT_EQ(::shutdown(pair.b, SHUT_WR), 0);
    bool eof = false;
    IoWatcher watcher;
    watcher = loop->io(pair.a, Io::read, [&](Io revents) {
        EXPECT_EQ(revents, Io::read);
        char byte = 0;
        EXPECT_EQ(::read(pair.a, &byte, 1), 0);
        eof = true;
        watcher.stop();
    });
    ASSERT_TRUE(run_until(*loop, [&] { return eof; }));

    // Our direction still works: watch for write, send, and the peer reads it.
    bool sent = false;
    watcher = loop->io(pair.a, Io::write, [&](Io revents) {
        EXPECT_EQ(revents, Io::write);
        write_all(pair.a, "reply", 5);
        sent = true;
        watcher.stop();
    });
    ASSERT_TRUE(run_until(*loop, [&] { return sent; }));
    EXPECT_EQ(read_available(pair.b), "reply");
    expect_loop_empty();
}

TEST_P(IoContract, ThousandSimultaneousWatchers) {
    constexpr std::size_t count = 1000;
    // Two fds per pair plus what the process already holds.
    if (raise_fd_limit(4096) < 2300) GTEST_SKIP() << "RLIMIT_NOFILE cannot be raised far enough";
    std::vector<std::unique_ptr<SocketPair>> pairs;
    pairs.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        pairs.push_back(std::make_unique<SocketPair>());
        // Peer ends go above 1100, so the 1,000 watched ends keep the low
        // numbers and stay below select()'s FD_SETSIZE.
        pairs.back()->b = move_fd_above(pairs.back()->b, 1100);
        ASSERT_LT(pairs.back()->a, FD_SETSIZE);
    }
    std::vector<int> calls(count, 0);
    std::vector<IoWatcher> watchers;
    watchers.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        watchers.push_back(loop->io(pairs[i]->a, Io::read, [&, i](Io revents) {
            EXPECT_EQ(revents, Io::read);
            ++calls[i];
            char byte = 0;
            EXPECT_EQ(::read(pairs[i]->a, &byte, 1), 1);
            EXPECT_EQ(byte, static_cast<char>('a' + i % 26));
        }));
    }
    EXPECT_EQ(loop->active_watchers(), count);
    run_for(*loop, 10ms);
    for (std::size_t i = 0; i < count; ++i) ASSERT_EQ(calls[i], 0) << "watcher " << i << " fired before any data";

    for (std::size_t i = 0; i < count; ++i) {
        const char byte = static_cast<char>('a' + i % 26);
        write_all(pairs[i]->b, &byte, 1);
    }
    std::size_t fired = 0;
    ASSERT_TRUE(run_until(*loop, [&] {
        fired = 0;
        for (const int c : calls) fired += c > 0 ? 1 : 0;
        return fired == count;
    })) << fired << " of " << count << " watchers fired";
    run_for(*loop, quiet_period);
    for (std::size_t i = 0; i < count; ++i) EXPECT_EQ(calls[i], 1) << "watcher " << i;
    for (IoWatcher& watcher : watchers) watcher.stop();
    expect_loop_empty();
}

// A callback early in a batch that starts watchers for many new fds makes
// the loop's fd table grow (and move) while the rest of the batch waits:
// those events must still reach their watchers. (The epoll backend once
// looked them up through a pointer into the table taken before the batch.)
TEST_P(IoContract, WatchersAddedByACallbackDoNotDisturbTheRestOfTheBatch) {
    constexpr int waiting = 20;
    constexpr int added = 200;
    SocketPair trigger;
    std::vector<std::unique_ptr<SocketPair>> existing;
    std::vector<IoWatcher> existing_watchers;
    int existing_calls = 0;
    for (int i = 0; i < waiting; ++i) {
        existing.push_back(std::make_unique<SocketPair>());
        const int fd = existing.back()->a;
        existing_watchers.push_back(loop->io(fd, Io::read, [&, fd](Io) {
            char byte = 0;
            EXPECT_EQ(::read(fd, &byte, 1), 1);
            EXPECT_EQ(byte, 'e');
            ++existing_calls;
        }));
    }
    std::vector<std::unique_ptr<SocketPair>> fresh;
    std::vector<IoWatcher> fresh_watchers;
    IoWatcher trigger_watcher = loop->io(trigger.a, Io::read, [&](Io) {
        char byte = 0;
        EXPECT_EQ(::read(trigger.a, &byte, 1), 1);
        for (int i = 0; i < added; ++i) {
            fresh.push_back(std::make_unique<SocketPair>());
            fresh_watchers.push_back(
                loop->io(fresh.back()->a, Io::read, [](Io) { ADD_FAILURE() << "nothing was sent"; }));
        }
    });
    // Ready in this order, so one wait reports the trigger first.
    write_all(trigger.b, "t", 1);
    for (const auto& pair : existing) write_all(pair->b, "e", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return existing_calls == waiting; }));
    EXPECT_EQ(fresh_watchers.size(), static_cast<std::size_t>(added));
    trigger_watcher.stop();
    for (IoWatcher& watcher : existing_watchers) watcher.stop();
    for (IoWatcher& watcher : fresh_watchers) watcher.stop();
    expect_loop_empty();
}

// set_hot_state() is a hint for prefetching a batch, never dereferenced:
// the first callback of a batch frees every watcher's hot state and stops
// every other odd watcher, and the batch goes on as if no hint were there
// (under ASan, a read of the freed memory would be reported).
TEST_P(IoContract, HotStateIsOnlyAHint) {
    constexpr int count = 20;
    std::vector<std::unique_ptr<SocketPair>> pairs;
    std::vector<IoWatcher> watchers;
    std::vector<std::unique_ptr<char[]>> hot;
    std::vector<int> calls(count, 0);
    int first = -1;
    for (int i = 0; i < count; ++i) {
        pairs.push_back(std::make_unique<SocketPair>());
        hot.push_back(std::make_unique<char[]>(1024));
        const int fd = pairs.back()->a;
        watchers.push_back(loop->io(fd, Io::read, [&, i, fd](Io) {
            char byte = 0;
            EXPECT_EQ(::read(fd, &byte, 1), 1);
            ++calls[static_cast<std::size_t>(i)];
            if (first >= 0) return;
            first = i;
            hot.clear();
            for (int j = 1; j < count; j += 2)
                if (j != i) watchers[static_cast<std::size_t>(j)].stop();
        }));
        // Lengths past the cap, none at all, and the usual few lines.
        const std::size_t bytes = i % 3 == 0 ? 1 << 20 : i % 3 == 1 ? 0 : 200;
        watchers.back().set_hot_state(i == 5 ? nullptr : hot.back().get(), bytes);
    }
    for (const auto& pair : pairs) write_all(pair->b, "h", 1);
    ASSERT_TRUE(run_until(*loop, [&] {
        int sum = 0;
        for (int c : calls) sum += c;
        return sum == count / 2 + (first % 2);
    }));
    for (int i = 0; i < count; ++i) {
        const bool stopped = i % 2 == 1 && i != first;
        EXPECT_EQ(calls[static_cast<std::size_t>(i)], stopped ? 0 : 1) << "watcher " << i;
    }
    for (IoWatcher& watcher : watchers) watcher.stop();
    expect_loop_empty();
}

TEST_P(IoContract, SecondWatcherOnTheSameFdThrows) {
    SocketPair pair;
    int first_calls = 0;
    IoWatcher first = loop->io(pair.a, Io::read, [&](Io) {
        ++first_calls;
        read_available(pair.a);
    });
    EXPECT_THROW((void)loop->io(pair.a, Io::write, [](Io) {}), std::logic_error);
    EXPECT_EQ(loop->active_watchers(), 1U);

    // A stopped watcher does not hold the fd; starting it while another
    // watcher does throws, and leaves both as they were.
    first.stop();
    int second_calls = 0;
    IoWatcher second = loop->io(pair.a, Io::write, [&](Io) { ++second_calls; });
    EXPECT_THROW(first.start(), std::logic_error);
    EXPECT_FALSE(first.active());
    EXPECT_TRUE(second.active());
    ASSERT_TRUE(run_until(*loop, [&] { return second_calls >= 1; }));
    second.reset();

    // The failed attempts did not disturb the first watcher.
    first.start();
    write_all(pair.b, "x", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return first_calls == 1; }));
    first.stop();
    expect_loop_empty();
}

TEST_P(IoContract, UnrefdWatcherDoesNotKeepRunAlive) {
    SocketPair pair;
    int calls = 0;
    IoWatcher watcher = loop->io(pair.a, Io::read, [&](Io) { ++calls; });
    watcher.set_keepalive(false);
    EXPECT_FALSE(loop->alive());
    EXPECT_EQ(loop->active_watchers(), 1U);
    loop->run();  // returns at once: nothing keeps the loop alive
    EXPECT_EQ(calls, 0);
    // It still fires while something else runs the loop.
    write_all(pair.b, "x", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 1; }));
    watcher.set_keepalive(true);
    EXPECT_TRUE(loop->alive());
    watcher.stop();
    expect_loop_empty();
}

TEST_P(IoContract, ExceptionFromIoCallbackComesOutOfRun) {
    SocketPair pair;
    write_all(pair.b, "x", 1);
    int calls = 0;
    IoWatcher watcher = loop->io(pair.a, Io::read, [&](Io) {
        ++calls;
        throw std::runtime_error("io callback failed");
    });
    TimerWatcher guard = loop->timer(5s, [&] { loop->stop(); });
    guard.set_keepalive(false);
    try {
        loop->run();
        ADD_FAILURE() << "run() returned normally";
    } catch (const std::runtime_error& error) {
        EXPECT_STREQ(error.what(), "io callback failed");
    }
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(watcher.active());

    // The loop and the watcher stay usable.
    watcher.set_callback([&](Io) {
        ++calls;
        EXPECT_EQ(read_available(pair.a), "x");
        watcher.stop();
    });
    loop->run();
    EXPECT_EQ(calls, 2);
    guard.stop();
    expect_loop_empty();
}

ANYLOOP_INSTANTIATE_BACKENDS(IoContract);

}  // namespace
}  // namespace anyloop::test
