// TlsSession over an attached StreamTransport, in memory: a transport that
// refuses writes at random points (partway through records), reads that
// deliver a byte at a time, exact reads for stoptls, fed input before the
// transport, and truncation.
#include <anyloop/handle/stream_layer.hpp>
#include <anyloop/tls/tls_session.hpp>

#include "tls/tls_test_support.hpp"
#include "tls_session_pair.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>

namespace anyloop::test {
namespace {

using tls::TlsSession;

/// One end's transport: send() appends to `out` (or refuses, or takes only
/// a part, at random), receive() takes from `in` at most `max_read` bytes
/// a call, only while `readable`.
struct MemoryTransport final : StreamTransport {
    MemoryTransport(Wire& out_wire, Wire& in_wire, std::uint32_t seed) : out(out_wire), in(in_wire), random(seed) {}

    std::size_t receive(std::span<std::byte> buffer) override {
        if (!readable || in.unsent().empty()) return 0;
        const std::size_t n = std::min({buffer.size(), in.unsent().size(), max_read});
        std::memcpy(buffer.data(), in.unsent().data(), n);
        in.drop(n);
        ++receives;
        return n;
    }
    std::size_t send(std::span<const std::byte> bytes) override {
        ++sends;
        std::size_t n = bytes.size();
        if (stingy) {
            // One in four refused, one in four taken partway through the record.
            const unsigned dice = random() % 4;
            if (dice == 0) n = 0;
            if (dice == 1) n = random() % bytes.size();
        }
        out.append(bytes.first(n));
        refused += bytes.size() - n;
        return n;
    }

    Wire& out;
    Wire& in;
    std::mt19937 random;
    std::size_t max_read = 1 << 20;
    bool readable = true;
    bool stingy = false;
    int receives = 0;
    int sends = 0;
    std::size_t refused = 0;
};

/// Two sessions, each with a transport onto the wires between them.
struct TransportPair {
    TransportPair()
        : client(client_context(), {.peer_name = "localhost"}),
          server(server_context()),
          client_transport(to_server, to_client, 1),
          server_transport(to_client, to_server, 2) {
        // The ClientHello was made before the transport: it waits in the session.
        client.attach_transport(&client_transport);
        server.attach_transport(&server_transport);
    }

    /// What the transport refused is sent later, in order, by the owner.
    static void flush(TlsSession& session, Wire& wire) {
        wire.append(session.pending_ciphertext());
        session.consume_ciphertext(session.pending_ciphertext().size());
    }
    static bool read(TlsSession& session, Bytes& received, bool exact) {
        session.transport_readable(exact);
        Bytes buffer(7000);
        bool got_any = false;
        for (;;) {
            const std::size_t got = session.read_plaintext(buffer);
            received.insert(received.end(), buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(got));
            got_any = got_any || got > 0;
            if (got < buffer.size()) return got_any;
        }
    }
    /// Moves everything until nothing moves. Refused output is flushed only
    /// every other round, so more output meets a session still holding some.
    void pump(bool exact = false) {
        for (int round = 0; round < 1000000; ++round) {
            const std::size_t before = to_server.bytes.size() + to_client.bytes.size() + to_server.begin +
                                       to_client.begin + client_received.size() + server_received.size();
            if (round % 2 == 1) {
                flush(client, to_server);
                flush(server, to_client);
            }
            read(server, server_received, exact);
            read(client, client_received, exact);
            const std::size_t after = to_server.bytes.size() + to_client.bytes.size() + to_server.begin +
                                      to_client.begin + client_received.size() + server_received.size();
            if (before == after && round % 2 == 1 && client.pending_ciphertext().empty() &&
                server.pending_ciphertext().empty())
                return;
        }
        FAIL() << "the pair does not settle";
    }

    Wire to_server;
    Wire to_client;
    TlsSession client;
    TlsSession server;
    MemoryTransport client_transport;
    MemoryTransport server_transport;
    Bytes client_received;
    Bytes server_received;
};

Bytes random_bytes(std::size_t size, std::uint32_t seed) {
    std::mt19937 random(seed);
    Bytes bytes(size);
    for (std::byte& b : bytes) b = static_cast<std::byte>(random());
    return bytes;
}

TEST(TlsTransport, RefusedWritesAndByteAtATimeReadsKeepTheStreamByteExact) {
    TransportPair pair;
    pair.client_transport.stingy = pair.server_transport.stingy = true;
    // The handshake and the first records arrive one byte per receive.
    pair.client_transport.max_read = pair.server_transport.max_read = 1;
    pair.pump();
    ASSERT_TRUE(pair.client.handshake_done() && pair.server.handshake_done())
        << pair.client.error_message() << pair.server.error_message();
    ASSERT_FALSE(pair.client.failed() || pair.server.failed());

    const Bytes up = random_bytes(1U << 20, 7);
    const Bytes down = random_bytes(600 * 1024, 8);
    std::mt19937 random(9);
    std::size_t up_sent = 0;
    std::size_t down_sent = 0;
    for (int round = 0; up_sent < up.size() || down_sent < down.size(); ++round) {
        ASSERT_LT(round, 100000);
        if (round == 20) pair.client_transport.max_read = pair.server_transport.max_read = 3000;
        if (round == 40) {
            ASSERT_TRUE(pair.client.key_update());
        }
        const std::size_t up_chunk = std::min<std::size_t>(random() % 40000, up.size() - up_sent);
        up_sent += pair.client.write_plaintext(std::span(up).subspan(up_sent, up_chunk));
        const std::size_t down_chunk = std::min<std::size_t>(random() % 40000, down.size() - down_sent);
        down_sent += pair.server.write_plaintext(std::span(down).subspan(down_sent, down_chunk));
        pair.pump();
    }
    EXPECT_EQ(pair.server_received, up);
    EXPECT_EQ(pair.client_received, down);
    EXPECT_GT(pair.client_transport.refused, 0U);
    EXPECT_GT(pair.server_transport.refused, 0U);
    EXPECT_FALSE(pair.client.failed()) << pair.client.error_message();
    EXPECT_FALSE(pair.server.failed()) << pair.server.error_message();
}

TEST(TlsTransport, ARecordIsReadStraightFromTheTransportInOneReceive) {
    TransportPair pair;
    pair.pump();
    ASSERT_TRUE(pair.server.handshake_done());
    const Bytes record = random_bytes(16384, 3);
    const int sends = pair.client_transport.sends;
    ASSERT_EQ(pair.client.write_plaintext(record), record.size());
    EXPECT_EQ(pair.client_transport.sends, sends + 1) << "one record, one send";
    EXPECT_TRUE(pair.client.pending_ciphertext().empty());
    const int receives = pair.server_transport.receives;
    TransportPair::read(pair.server, pair.server_received, false);
    EXPECT_EQ(pair.server_received, record);
    EXPECT_EQ(pair.server_transport.receives, receives + 1) << "read-ahead: the whole record in one receive";
}

// stoptls: with exact reads the session takes no byte after the peer's
// close_notify from the transport; those are the stream's plaintext.
TEST(TlsTransport, ExactReadsLeaveWhatFollowsCloseNotifyInTheTransport) {
    for (const std::size_t max_read : {std::size_t{1}, std::size_t{1} << 20}) {
        SCOPED_TRACE("receives of at most " + std::to_string(max_read) + " bytes");
        TransportPair pair;
        pair.server_transport.max_read = max_read;
        pair.pump(true);
        ASSERT_TRUE(pair.server.handshake_done());
        ASSERT_EQ(pair.client.write_plaintext(to_bytes("encrypted")), 9U);
        pair.client.shutdown();
        pair.to_server.append(to_bytes("PLAIN after close"));
        pair.server_transport.readable = true;
        for (int i = 0; i < 1000 && !pair.server.peer_closed(); ++i)
            TransportPair::read(pair.server, pair.server_received, true);
        ASSERT_TRUE(pair.server.peer_closed()) << pair.server.error_message();
        EXPECT_EQ(to_string(pair.server_received), "encrypted");
        EXPECT_EQ(to_string(pair.to_server.unsent()), "PLAIN after close");
        EXPECT_TRUE(pair.server.take_bytes_after_close().empty());
    }
}

// Bytes fed before the transport (starttls: read with the command) come
// first, then the transport's.
TEST(TlsTransport, FedInputIsReadBeforeTheTransport) {
    TransportPair pair;
    pair.pump();
    ASSERT_TRUE(pair.server.handshake_done());
    pair.client_transport.stingy = false;
    const Bytes first = random_bytes(5000, 4);
    ASSERT_EQ(pair.client.write_plaintext(first), first.size());
    const Bytes second = to_bytes("second record");
    ASSERT_EQ(pair.client.write_plaintext(second), second.size());
    // The first record and half of the second are fed; the rest waits in the transport.
    const std::size_t fed = pair.to_server.unsent().size() - 15;
    ASSERT_EQ(pair.server.feed_ciphertext(pair.to_server.unsent().first(fed)), fed);
    pair.to_server.drop(fed);
    TransportPair::read(pair.server, pair.server_received, false);
    Bytes expected = first;
    expected.insert(expected.end(), second.begin(), second.end());
    EXPECT_EQ(pair.server_received, expected);
    EXPECT_TRUE(pair.to_server.unsent().empty());
}

TEST(TlsTransport, EndOfInputWithoutCloseNotifyIsTruncation) {
    TransportPair pair;
    pair.pump();
    ASSERT_EQ(pair.server.write_plaintext(to_bytes("partial")), 7U);
    TransportPair::read(pair.client, pair.client_received, false);
    EXPECT_EQ(to_string(pair.client_received), "partial");
    pair.client.feed_eof();
    EXPECT_TRUE(pair.client.has_pending_plaintext()) << "the reader must look, to learn of the end";
    Bytes buffer(64);
    EXPECT_EQ(pair.client.read_plaintext(buffer), 0U);
    EXPECT_TRUE(pair.client.failed());
    EXPECT_EQ(pair.client.error_message(), "unexpected eof while reading");
}

}  // namespace
}  // namespace anyloop::test
