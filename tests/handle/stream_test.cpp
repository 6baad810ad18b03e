// The Handle as a byte stream: bulk round trips, backpressure, half-close,
// resets, urgent data, linger, memory and fairness.
#include <anyloop/handle/handle.hpp>

#include "handle/handle_test_support.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using namespace handle_support;
using StreamTest = LoopTest;

void echo(Handle& handle) {
    handle.push_write(handle.read_buffer().view());
    handle.read_buffer().clear();
}

TEST_P(StreamTest, RoundTrip16MiBInRandomChunks) {
    TcpPair pair;
    Handle server(*loop, pair.take_b());
    server.on_read(echo);
    Handle client(*loop, pair.take_a());
    const std::string data = random_bytes(16 << 20, 42);

    // Sending: random sizes, alternately copied and moved, topped up from
    // on_drain while less than 512 KiB is queued.
    std::mt19937 sizes(7);
    std::size_t sent = 0;
    int moved = 0;
    auto send_more = [&](Handle& h) {
        while (sent < data.size() && h.write_queue_size() < 512 * 1024) {
            const std::size_t n = std::min<std::size_t>(sizes() % 70000 + 1, data.size() - sent);
            const std::size_t at = sent;
            sent += n;  // first: push_write may run on_drain (and so this) at once
            if (n % 2 == 0) {
                ++moved;
                h.push_write(data.substr(at, n));
            } else {
                h.push_write(std::string_view(data).substr(at, n));
            }
        }
    };
    client.set_low_water_mark(256 * 1024);
    client.on_drain(send_more);

    // Receiving: chunk readers of random sizes.
    std::mt19937 chunk_sizes(11);
    std::string received;
    received.reserve(data.size());
    std::function<void()> read_next = [&] {
        const std::size_t n = std::min<std::size_t>(chunk_sizes() % 100000 + 1, data.size() - received.size());
        if (n == 0) return;
        client.push_read(Reader::chunk(n, [&](Handle&, std::string_view chunk) {
            received.append(chunk);
            read_next();
        }));
    };
    read_next();
    send_more(client);
    ASSERT_TRUE(run_until(*loop, [&] { return received.size() == data.size(); }, 20s))
        << received.size() << " of " << data.size();
    EXPECT_TRUE(received == data) << "the echoed bytes differ";
    EXPECT_GT(moved, 0);
    EXPECT_EQ(client.write_queue_size(), 0U);
}

TEST_P(StreamTest, HighWaterMarkPausesReadingUntilTheQueueDrains) {
    TcpPair pair;
    const std::size_t high = 256 * 1024;
    Handle server(*loop, pair.take_b(), {.high_water_mark = high});
    std::size_t max_queue = 0;
    server.on_read([&](Handle& h) {
        echo(h);
        max_queue = std::max(max_queue, h.write_queue_size());
    });
    // A client that sends 8 MiB and reads nothing yet.
    // 32 MiB: more than the kernel's buffers on both sides can hold.
    Handle client(*loop, pair.take_a());
    std::string data(32 << 20, '\0');
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 % 251);
    client.push_write(data);
    ASSERT_TRUE(run_until(*loop, [&] { return !server.reading(); }, 5s));
    EXPECT_GE(server.write_queue_size(), high);

    // Paused: the server takes no more input, so the client's output stalls.
    // Loopback TCP buffers may still grow a little meanwhile (autotuning), so
    // the check is that most of the 32 MiB cannot get through, not that not
    // one more byte moves.
    const auto start = std::chrono::steady_clock::now();
    while (ms_since(start) < 30) loop->run_once(false);
    EXPECT_FALSE(server.reading());
    EXPECT_GE(server.write_queue_size(), high / 2);
    EXPECT_GT(client.write_queue_size(), data.size() / 4);

    // The client reads: the server drains, resumes, and nothing is lost.
    std::string received;
    client.on_read([&](Handle& h) {
        received.append(h.read_buffer().view());
        h.read_buffer().clear();
    });
    ASSERT_TRUE(run_until(*loop, [&] { return received.size() == data.size(); }, 10s));
    EXPECT_TRUE(received == data);
    EXPECT_TRUE(server.reading());
    // One readiness event reads a bounded amount, so the queue overshoots
    // the mark by at most that.
    EXPECT_LT(max_queue, high + 1024 * 1024);
}

TEST_P(StreamTest, PeerHalfCloseDeliversEverythingAndWritingGoesOn) {
    TcpPair pair;
    Handle handle(*loop, pair.take_a());
    RawPeer peer(*loop, pair.b);
    std::vector<std::string> lines;
    int eofs = 0;
    // Reading runs while a reader waits: keep one queued.
    std::function<void()> read_next = [&] {
        handle.push_read(Reader::line([&](Handle&, std::string_view line) {
            lines.emplace_back(line);
            read_next();
        }));
    };
    read_next();
    handle.on_eof([&](Handle& h) {
        ++eofs;
        h.push_write("bye\n");
    });
    write_all(pair.b, "hello\n", 6);
    ASSERT_EQ(::shutdown(pair.b, SHUT_WR), 0);
    ASSERT_TRUE(run_until(*loop, [&] { return peer.received == "bye\n"; }));
    EXPECT_EQ(lines, std::vector<std::string>{"hello"});
    EXPECT_EQ(eofs, 1);
    EXPECT_FALSE(handle.closed());
}

TEST_P(StreamTest, PushShutdownAfterQueuedDataThenReadingGoesOn) {
    TcpPair pair;
    Handle handle(*loop, pair.take_a());
    const std::string data = random_bytes(1 << 20, 5);
    handle.push_write(data);
    handle.push_shutdown();
    EXPECT_THROW(handle.push_write("too late"), std::logic_error);
    RawPeer peer(*loop, pair.b);
    ASSERT_TRUE(run_until(*loop, [&] { return peer.eof; }));
    EXPECT_TRUE(peer.received == data);
    // Our write side is closed; the peer's is not.
    std::string line;
    handle.push_read(Reader::line([&](Handle&, std::string_view got) { line = got; }));
    write_all(pair.b, "after\n", 6);
    ASSERT_TRUE(run_until(*loop, [&] { return !line.empty(); }));
    EXPECT_EQ(line, "after");
}

TEST_P(StreamTest, PeerResetMidWriteIsAnError) {
    TcpPair pair;
    Handle handle(*loop, pair.take_a());
    std::error_code error;
    bool was_fatal = false;
    handle.on_error([&](Handle&, std::error_code code, const std::string&, bool fatal) {
        error = code;
        was_fatal = fatal;
    });
    handle.push_write(std::string(8 << 20, 'x'));
    ASSERT_GT(handle.write_queue_size(), 0U);
    const linger abort_on_close{1, 0};  // close() sends RST
    ::setsockopt(pair.b, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
    ::close(std::exchange(pair.b, -1));
    ASSERT_TRUE(run_until(*loop, [&] { return static_cast<bool>(error); }));
    EXPECT_TRUE(error == std::errc::connection_reset || error == std::errc::broken_pipe) << error.message();
    EXPECT_TRUE(was_fatal);
    EXPECT_TRUE(handle.closed());
}

// An on_read echo takes the Handle's quick path; each turn here leaves it
// for the general one and must come back: on_read handing the rest to a
// line reader, a read that fills the stack buffer, end of file.
TEST_P(StreamTest, EchoPathHandsOverAndComesBack) {
    TcpPair pair;
    Handle server(*loop, pair.take_b());
    int eofs = 0;
    server.on_eof([&](Handle&) { ++eofs; });
    server.on_read([&](Handle& h) {
        ReadBuffer& input = h.read_buffer();
        if (input.view().starts_with("L")) {
            input.consume(1);
            h.push_read(Reader::line(
                [](Handle& h2, std::string_view line) { h2.push_write("<" + std::string(line) + ">"); }));
            return;
        }
        echo(h);
    });
    RawPeer client(*loop, pair.a);
    auto exchange = [&](const std::string& sent, const std::string& expected) {
        client.received.clear();
        write_all(pair.a, sent.data(), sent.size());
        EXPECT_TRUE(run_until(*loop, [&] { return client.received.size() >= expected.size(); })) << sent.substr(0, 20);
        EXPECT_EQ(client.received, expected);
    };
    exchange("hello", "hello");
    exchange("Lone\ntwo", "<one>two");
    exchange("again", "again");
    const std::string bulk = random_bytes(300 * 1024, 5);  // more than one read takes
    exchange(bulk, bulk);
    exchange("last", "last");
    ::shutdown(pair.a, SHUT_WR);
    ASSERT_TRUE(run_until(*loop, [&] { return eofs == 1; }));
    EXPECT_FALSE(server.closed());
}

TEST_P(StreamTest, EchoPathReportsAReset) {
    TcpPair pair;
    Handle server(*loop, pair.take_b());
    std::error_code error;
    server.on_error([&](Handle&, std::error_code code, const std::string&, bool) { error = code; });
    server.on_read(echo);
    write_all(pair.a, "ping", 4);
    ASSERT_TRUE(run_until(*loop, [&] { return readable_bytes(pair.a) == 4; }));
    const linger abort_on_close{1, 0};  // close() sends RST
    ::setsockopt(pair.a, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
    ::close(std::exchange(pair.a, -1));
    ASSERT_TRUE(run_until(*loop, [&] { return static_cast<bool>(error); }));
    EXPECT_EQ(error, std::errc::connection_reset) << error.message();
    EXPECT_TRUE(server.closed());
}

TEST_P(StreamTest, WritingToAClosedPipeIsEpipeNotSigpipe) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    Handle handle(*loop, fds[1]);
    ::close(fds[0]);
    std::error_code error;
    handle.on_error([&](Handle&, std::error_code code, const std::string&, bool) { error = code; });
    handle.push_write("nobody reads this");  // would kill the process with SIGPIPE
    EXPECT_EQ(error, std::errc::broken_pipe);
    EXPECT_TRUE(handle.closed());
}

TEST_P(StreamTest, UrgentDataArrivesInTheStreamInOrder) {
    for (bool inline_oob : {true, false}) {
        TcpPair pair;
        Handle handle(*loop, pair.take_a(), {.oob_inline = inline_oob});
        std::string received;
        handle.on_read([&](Handle& h) {
            received.append(h.read_buffer().view());
            h.read_buffer().clear();
        });
        ASSERT_EQ(::send(pair.b, "ab", 2, 0), 2);
        ASSERT_EQ(::send(pair.b, "c", 1, MSG_OOB), 1);
        ASSERT_EQ(::send(pair.b, "de", 2, 0), 2);
        // Without SO_OOBINLINE the urgent byte leaves the stream.
        const std::string expected = inline_oob ? "abcde" : "abde";
        ASSERT_TRUE(run_until(*loop, [&] { return received.size() >= expected.size(); }, 5s)) << received;
        EXPECT_EQ(received, expected);
    }
}

TEST_P(StreamTest, LingerDeliversQueuedDataAfterTheHandleIsGone) {
    TcpPair pair;
    RawPeer peer(*loop, pair.b, /*reading=*/false);
    auto handle = std::make_unique<Handle>(*loop, pair.take_a());
    const std::string data = random_bytes(4 << 20, 9);
    handle->push_write(data);
    ASSERT_GT(handle->write_queue_size(), 0U);
    handle.reset();
    EXPECT_GT(loop->active_watchers(), 0U) << "the lingering writer";
    peer.start_reading();
    ASSERT_TRUE(run_until(*loop, [&] { return peer.done(); }));
    EXPECT_TRUE(peer.eof);
    EXPECT_TRUE(peer.received == data);
    EXPECT_EQ(loop->active_watchers(), 0U);
}

TEST_P(StreamTest, LingerZeroDropsQueuedData) {
    TcpPair pair;
    RawPeer peer(*loop, pair.b, /*reading=*/false);
    auto handle = std::make_unique<Handle>(*loop, pair.take_a(), HandleOptions{.linger = Duration::zero()});
    const std::string data = random_bytes(4 << 20, 9);
    handle->push_write(data);
    ASSERT_GT(handle->write_queue_size(), 0U);
    handle.reset();
    EXPECT_EQ(loop->active_watchers(), 0U);
    peer.start_reading();
    ASSERT_TRUE(run_until(*loop, [&] { return peer.done(); }));
    EXPECT_LT(peer.received.size(), data.size());
    EXPECT_TRUE(std::string_view(data).starts_with(peer.received));
}

TEST_P(StreamTest, LingerGivesUpAfterItsTime) {
    TcpPair pair;
    auto handle = std::make_unique<Handle>(*loop, pair.take_a(), HandleOptions{.linger = 50ms});
    handle->push_write(std::string(8 << 20, 'l'));
    loop->update_now();  // the linger time counts from the loop's cached now()
    handle.reset();
    const auto start = std::chrono::steady_clock::now();
    // run_until's own guard timer is the one active watcher left.
    ASSERT_TRUE(run_until(*loop, [&] { return loop->active_watchers() == 1; }, 5s));
    EXPECT_EQ(loop->active_watchers(), 0U);
    EXPECT_GE(ms_since(start), 40.0);
}

TEST_P(StreamTest, OutputQueuedInACallbackSurvivesDestroyingTheHandleThere) {
    TcpPair pair;
    RawPeer peer(*loop, pair.b);
    auto handle = std::make_unique<Handle>(*loop, pair.take_a());
    handle->push_read(Reader::line([&](Handle& h, std::string_view) {
        h.push_write("pong\n");
        handle.reset();
    }));
    write_all(pair.b, "ping\n", 5);
    ASSERT_TRUE(run_until(*loop, [&] { return peer.done(); }));
    EXPECT_EQ(peer.received, "pong\n");
    EXPECT_TRUE(peer.eof);
}

TEST_P(StreamTest, AnIdleHandleHoldsAtMostOneKibibyte) {
    TcpPair pair;
    Handle handle(*loop, pair.take_a());
    std::function<void()> read_next = [&] {
        handle.push_read(Reader::line([&](Handle& h, std::string_view line) {
            h.push_write(std::string(line) + "\n");
            read_next();
        }));
    };
    read_next();
    // Lines of random lengths (some of 300 KB, to grow the buffers) sent in
    // random pieces, so records straddle reads.
    std::mt19937 random(1);
    std::string input;
    while (input.size() < (2 << 20)) {
        const std::size_t length = random() % 10 == 0 ? 300'000 : random() % 2000;
        input.append(length, static_cast<char>('a' + random() % 26));
        input.push_back('\n');
    }
    RawPeer peer(*loop, pair.b);
    std::size_t sent = 0;
    while (sent < input.size()) {
        const std::size_t n = std::min<std::size_t>(random() % 50'000 + 1, input.size() - sent);
        write_all(pair.b, input.data() + sent, n);
        sent += n;
        loop->run_once(false);
    }
    ASSERT_TRUE(run_until(*loop, [&] { return peer.received.size() == input.size(); }, 10s));
    EXPECT_TRUE(peer.received == input);
    EXPECT_EQ(handle.write_queue_size(), 0U);
    EXPECT_LE(handle.buffer_capacity(), 1024U);
    peer.stop_reading();
}

TEST_P(StreamTest, OneFastPeerCannotStarveAnother) {
    SocketPair busy;
    SocketPair quiet;
    Handle flooded(*loop, std::exchange(busy.a, -1), {.reads_per_event = 1});
    std::size_t flooded_bytes = 0;
    flooded.on_read([&](Handle& h) {
        flooded_bytes += h.read_buffer().size();
        h.read_buffer().clear();
    });
    Handle calm(*loop, std::exchange(quiet.a, -1));
    std::string line;
    calm.push_read(Reader::line([&](Handle&, std::string_view got) { line = got; }));
    // Fill the busy socket, then send one line on the quiet one.
    const std::string block(64 * 1024, 'f');
    while (::send(busy.b, block.data(), block.size(), MSG_NOSIGNAL) > 0) {
    }
    write_all(quiet.b, "hi\n", 3);
    loop->run_once(true);
    EXPECT_EQ(line, "hi");
    EXPECT_GT(flooded_bytes, 0U);
    EXPECT_GT(readable_bytes(flooded.fd()), 0U) << "one event must not drain a flooded socket";
}

TEST_P(StreamTest, AWriteThatCompletesAtOnceStartsNoWatcher) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    int drains = 0;
    handle.on_drain([&](Handle&) { ++drains; });
    const std::size_t watchers = loop->active_watchers();
    handle.push_write("hello");
    EXPECT_EQ(handle.write_queue_size(), 0U);
    EXPECT_EQ(drains, 1);  // ran inside push_write
    EXPECT_EQ(loop->active_watchers(), watchers);
    EXPECT_EQ(readable_bytes(pair.b), 5U);
}

TEST_P(StreamTest, WritesInsideACallbackGoOutWhenItReturns) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    int drains = 0;
    handle.on_drain([&](Handle&) { ++drains; });
    handle.push_read(Reader::line([&](Handle& h, std::string_view) {
        h.push_write("a");
        h.push_write(std::string("b"));
        h.push_write("c\n");
        EXPECT_EQ(drains, 0);  // gathered, not yet written
    }));
    write_all(pair.b, "go\n", 3);
    ASSERT_TRUE(run_until(*loop, [&] { return drains > 0; }));
    // Written before the loop got control back: no extra iteration needed.
    EXPECT_EQ(drains, 1);
    EXPECT_EQ(read_now(pair.b), "abc\n");
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// Small writes gathered inside a callback while the socket is full (the
// Handle does not know yet): they wait, in order, behind the full socket,
// alone or mixed with a moved buffer, and on_drain runs once they are out.
TEST_P(StreamTest, WritesGatheredWhileTheSocketIsFullKeepTheirOrder) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    int drains = 0;
    handle.on_drain([&](Handle&) { ++drains; });
    std::size_t step = 0;
    std::function<void()> read_next = [&] {
        handle.push_read(Reader::line([&](Handle& h, std::string_view) {
            if (step++ == 0) {
                h.push_write("a");
                h.push_write("b\n");
            } else {
                h.push_write("x");
                h.push_write(std::string(100, 'm'));
                h.push_write("y\n");
            }
            read_next();
        }));
    };
    read_next();
    const std::string expected[] = {"ab\n", "x" + std::string(100, 'm') + "y\n"};
    for (const std::string& tail : expected) {
        // Fill the Handle's socket behind its back.
        const std::string block(64 * 1024, 'f');
        std::size_t filler = 0;
        for (ssize_t n; (n = ::send(handle.fd(), block.data(), block.size(), MSG_NOSIGNAL)) > 0;)
            filler += static_cast<std::size_t>(n);
        drains = 0;
        write_all(pair.b, "go\n", 3);
        ASSERT_TRUE(run_until(*loop, [&] { return handle.write_queue_size() > 0; }));
        EXPECT_EQ(handle.write_queue_size(), tail.size());
        EXPECT_EQ(drains, 0);
        std::string received;
        ASSERT_TRUE(run_until(*loop, [&] {
            received += read_now(pair.b);
            return received.size() >= filler + tail.size();
        }));
        ASSERT_EQ(received.size(), filler + tail.size());
        EXPECT_EQ(received.substr(filler), tail);
        EXPECT_EQ(received.find_first_not_of('f'), filler);
        ASSERT_TRUE(run_until(*loop, [&] { return drains > 0; }));
        EXPECT_EQ(drains, 1);
        EXPECT_EQ(handle.write_queue_size(), 0U);
    }
}

ANYLOOP_INSTANTIATE_BACKENDS(StreamTest);

}  // namespace
}  // namespace anyloop::test
