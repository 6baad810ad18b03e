// Destroying a Handle inside each of its callbacks, after its loop, and
// with an exception on the way out. Run under ASan these prove that no
// code touches a destroyed Handle or a destroyed closure.
#include <anyloop/handle/handle.hpp>

#include "handle/handle_test_support.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <stdexcept>
#include <string>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using namespace handle_support;

class LifetimeTest : public LoopTest {
protected:
    void SetUp() override {
        LoopTest::SetUp();
        handle = std::make_unique<Handle>(*loop, pair.take_a());
        peer = std::make_unique<RawPeer>(*loop, pair.b);
    }
    void TearDown() override {
        peer.reset();
        LoopTest::TearDown();
    }

    // What every callback under test does: destroy the Handle, then prove
    // that the running closure (which owns `guard`) is still alive.
    void destroy_from_callback(Handle& from, const std::shared_ptr<int>& guard) {
        EXPECT_EQ(&from, handle.get());
        handle.reset();
        ++destroyed;
        EXPECT_EQ(*guard, 7);
    }

    // The Handle is gone, its fd closed (the peer sees the end), and the
    // loop holds nothing of it.
    void expect_gone() {
        ASSERT_TRUE(run_until(*loop, [&] { return destroyed == 1 && peer->done(); }, 5s));
        EXPECT_EQ(destroyed, 1);
        for (int i = 0; i < 3; ++i) loop->run_once(false);
        EXPECT_EQ(loop->active_watchers(), 0U);  // the peer stopped at its end
    }

    void send(std::string_view bytes) { write_all(pair.b, bytes.data(), bytes.size()); }

    // After a case destroyed the Handle: a new connection, Handle and peer.
    void renew(bool peer_reads = true) {
        if (handle) return;
        TcpPair fresh;
        peer.reset();
        std::swap(pair.a, fresh.a);
        std::swap(pair.b, fresh.b);
        handle = std::make_unique<Handle>(*loop, pair.take_a());
        peer = std::make_unique<RawPeer>(*loop, pair.b, peer_reads);
        destroyed = 0;
    }

    TcpPair pair;
    std::unique_ptr<Handle> handle;
    std::unique_ptr<RawPeer> peer;
    std::shared_ptr<int> token = std::make_shared<int>(7);
    int destroyed = 0;
};

TEST_P(LifetimeTest, InsideOnRead) {
    handle->on_read([this, guard = token](Handle& h) { destroy_from_callback(h, guard); });
    send("data");
    expect_gone();
}

TEST_P(LifetimeTest, InsideEachReader) {
    const std::string record = "line\n";
    using Make = std::function<Reader(Reader::Callback)>;
    const std::vector<std::pair<Make, std::string>> cases = {
        {[](Reader::Callback cb) { return Reader::line(std::move(cb)); }, "line\nmore\n"},
        {[](Reader::Callback cb) { return Reader::chunk(2, std::move(cb)); }, "abcd"},
        {[](Reader::Callback cb) { return Reader::length_prefixed(1, std::move(cb)); }, prefixed(1, "xy") + "zz"},
        {[](Reader::Callback cb) { return Reader::available(std::move(cb)); }, "anything"},
        {[](Reader::Callback cb) {
             return Reader::custom([cb = std::move(cb)](Handle& h, ReadBuffer& input) {
                 input.consume(1);
                 cb(h, "c");
                 return true;
             });
         },
         "custom"},
    };
    for (const auto& [make, input] : cases) {
        renew();
        handle->push_read(make([this, guard = token](Handle& h, std::string_view) { destroy_from_callback(h, guard); }));
        // A second reader that must never run.
        handle->push_read(Reader::available([](Handle&, std::string_view) { ADD_FAILURE() << "ran after destroy"; }));
        send(input);
        expect_gone();
        if (HasFailure()) return;
    }
}

TEST_P(LifetimeTest, InsideOnEof) {
    handle->on_read([](Handle& h) { h.read_buffer().clear(); });
    handle->on_eof([this, guard = token](Handle& h) { destroy_from_callback(h, guard); });
    ::shutdown(pair.b, SHUT_WR);
    expect_gone();
}

TEST_P(LifetimeTest, InsideOnErrorFatal) {
    // End of file without on_eof is a fatal error.
    handle->on_read([](Handle& h) { h.read_buffer().clear(); });
    handle->on_error([this, guard = token](Handle& h, std::error_code, const std::string&, bool fatal) {
        EXPECT_TRUE(fatal);
        destroy_from_callback(h, guard);
    });
    ::shutdown(pair.b, SHUT_WR);
    expect_gone();
}

TEST_P(LifetimeTest, InsideOnErrorNotFatal) {
    handle->push_read(Reader::line([](Handle&, std::string_view) {}));
    handle->on_error([this, guard = token](Handle& h, std::error_code error, const std::string&, bool fatal) {
        EXPECT_EQ(error, std::errc::timed_out);
        EXPECT_FALSE(fatal);
        destroy_from_callback(h, guard);
    });
    handle->set_rtimeout(10ms);
    expect_gone();
}

TEST_P(LifetimeTest, InsideOnDrainAfterAWriteInsideACallback) {
    handle->on_drain([this, guard = token](Handle& h) { destroy_from_callback(h, guard); });
    handle->push_read(Reader::line([](Handle& h, std::string_view line) { h.push_write(std::string(line) + "!\n"); }));
    send("hi\n");
    expect_gone();
    EXPECT_EQ(peer->received, "hi!\n");
}

TEST_P(LifetimeTest, InsideOnDrainInsidePushWrite) {
    // Outside callbacks a write that completes at once runs on_drain before
    // push_write returns; destroying the Handle there is safe too.
    handle->on_drain([this, guard = token](Handle& h) { destroy_from_callback(h, guard); });
    handle->push_write("at once");
    EXPECT_EQ(destroyed, 1);
    EXPECT_EQ(handle, nullptr);
    expect_gone();
}

TEST_P(LifetimeTest, InsideOnDrainFromTheWriteWatcher) {
    const std::string big(8 << 20, 'd');
    handle->on_drain([this, guard = token](Handle& h) {
        if (h.write_queue_size() == 0) destroy_from_callback(h, guard);
    });
    handle->push_write(big);
    ASSERT_GT(handle->write_queue_size(), 0U);
    ASSERT_TRUE(run_until(*loop, [&] { return destroyed == 1; }, 5s));
    ASSERT_TRUE(run_until(*loop, [&] { return peer->done(); }, 5s));
    EXPECT_EQ(peer->received.size(), big.size());
    peer.reset();
    EXPECT_EQ(loop->active_watchers(), 0U);
}

TEST_P(LifetimeTest, InsideEachTimeout) {
    for (int which = 0; which < 3; ++which) {
        renew(/*peer_reads=*/which != 2);
        auto destroy = [this, guard = token](Handle& h) { destroy_from_callback(h, guard); };
        if (which == 0) {
            handle->on_timeout(destroy);
            handle->set_timeout(10ms);
        } else if (which == 1) {
            handle->on_rtimeout(destroy);
            handle->push_read(Reader::line([](Handle&, std::string_view) {}));
            handle->set_rtimeout(10ms);
        } else {
            handle->on_wtimeout(destroy);
            handle->set_linger(Duration::zero());
            handle->push_write(std::string(8 << 20, 't'));  // the peer is not reading
            handle->set_wtimeout(10ms);
            ASSERT_TRUE(run_until(*loop, [&] { return destroyed == 1; }, 5s));
            peer->start_reading();
        }
        expect_gone();
        if (HasFailure()) return;
    }
}

TEST_P(LifetimeTest, AfterTheLoopIsGone) {
    handle->push_read(Reader::line([](Handle&, std::string_view) {}));
    handle->set_timeout(1s);
    handle->push_write(std::string(8 << 20, 'q'));  // queued: it would linger
    peer.reset();
    loop.reset();
    handle.reset();  // must not touch the destroyed loop
}

TEST_P(LifetimeTest, LoopDestroyedWhileLingeringClosesTheFd) {
    // The peer does not read, so 8 MiB cannot leave: the Handle lingers.
    handle->push_write(std::string(8 << 20, 'q'));
    handle.reset();
    loop->run_once(false);
    EXPECT_GT(loop->active_watchers(), 0U);  // the lingering write watcher
    peer.reset();
    loop.reset();  // takes the lingering Handle with it (ASan proves no leak)
    // Its fd is closed: the peer sees the end of the stream after the data
    // that did get through.
    char buffer[65536];
    ssize_t n = 0;
    int reads = 0;
    while ((n = ::recv(pair.b, buffer, sizeof buffer, MSG_DONTWAIT)) > 0 && reads < 100000) ++reads;
    if (n < 0 && errno == EAGAIN) {
        pollfd pfd{pair.b, POLLIN, 0};
        ASSERT_EQ(::poll(&pfd, 1, 2000), 1);
        while ((n = ::recv(pair.b, buffer, sizeof buffer, MSG_DONTWAIT)) > 0) {}
    }
    EXPECT_EQ(n, 0) << "the lingering fd was not closed when its loop was destroyed";
}

TEST_P(LifetimeTest, AnExceptionFromACallbackLeavesTheHandleUsable) {
    int lines = 0;
    std::function<void()> read_next = [&] {
        handle->push_read(Reader::line([&](Handle& h, std::string_view line) {
            ++lines;
            read_next();
            h.push_write("ok\n");
            if (line == "throw") throw std::runtime_error("from a reader");
        }));
    };
    read_next();
    send("throw\n");
    EXPECT_THROW(run_until(*loop, [&] { return lines == 1; }), std::runtime_error);
    send("again\n");
    ASSERT_TRUE(run_until(*loop, [&] { return lines == 2 && peer->received == "ok\nok\n"; }));
    handle.reset();
    EXPECT_TRUE(run_until(*loop, [&] { return peer->done(); }));
}

ANYLOOP_INSTANTIATE_BACKENDS(LifetimeTest);

}  // namespace
}  // namespace anyloop::test
