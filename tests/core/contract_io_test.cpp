// The EventLoop contract, I/O watchers: every case runs on every backend.
#include <anyloop/core/event_loop.hpp>

#include "support/test_support.hpp"

#include <unistd.h>

namespace anyloop::test {
namespace {

using IoContract = LoopTest;

TEST_P(IoContract, ReadReadiness) {
    SocketPair pair;
    int calls = 0;
    IoWatcher watcher = loop->io(pair.a, Io::read, [&](Io revents) {
        EXPECT_TRUE(has(revents, Io::read));
        EXPECT_FALSE(has(revents, Io::write));
        char byte = 0;
        ASSERT_EQ(::read(pair.a, &byte, 1), 1);
        EXPECT_EQ(byte, 'x');
        ++calls;
    });
    EXPECT_FALSE(loop->run_once(false) && calls > 0);  // nothing readable yet
    EXPECT_EQ(calls, 0);
    write_all(pair.b, "x", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return calls == 1; }));
    watcher.stop();
}

TEST_P(IoContract, StopInsideOwnCallback) {
    SocketPair pair;
    write_all(pair.b, "abc", 3);
    int calls = 0;
    IoWatcher watcher;
    watcher = loop->io(pair.a, Io::read, [&](Io) {
        ++calls;
        watcher.stop();  // data stays unread: a level-triggered loop would call again
    });
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 1; }));
    loop->run_once(false);
    loop->run_once(false);
    EXPECT_EQ(calls, 1);
    EXPECT_FALSE(watcher.active());
}

TEST_P(IoContract, DestroyInsideOwnCallback) {
    SocketPair pair;
    write_all(pair.b, "abc", 3);
    int calls = 0;
    auto watcher = std::make_unique<IoWatcher>();
    *watcher = loop->io(pair.a, Io::read, [&, guard = std::make_shared<int>(7)](Io) {
        ++calls;
        watcher.reset();           // destroys the watcher and this closure's owner
        EXPECT_EQ(*guard, 7);      // the running closure stays alive until it returns
    });
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 1; }));
    loop->run_once(false);
    EXPECT_EQ(calls, 1);
}

ANYLOOP_INSTANTIATE_BACKENDS(IoContract);

}  // namespace
}  // namespace anyloop::test
