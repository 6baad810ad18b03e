// TlsSession: two sessions paired in memory — handshake, bulk transfer,
// KeyUpdate, close_notify, stoptls, resumption, ALPN, versions, bad input.
#include <anyloop/tls/tls_session.hpp>

#include "tls/tls_test_support.hpp"
#include "tls_session_pair.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <functional>
#include <random>
#include <string>

namespace anyloop::test {
namespace {

using tls::TlsContext;
using tls::TlsContextOptions;
using tls::TlsRole;
using tls::TlsSession;
using tls::TlsVersion;

std::string describe(const TlsSessionPair& pair) {
    return "client: '" + pair.client.error_message() + "', server: '" + pair.server.error_message() + "'";
}

Bytes random_bytes(std::size_t size, std::mt19937_64& random) {
    Bytes bytes(size);
    for (std::size_t i = 0; i < size; i += 8) {
        const std::uint64_t word = random();
        for (std::size_t j = 0; j < 8 && i + j < size; ++j) bytes[i + j] = static_cast<std::byte>(word >> (8 * j));
    }
    return bytes;
}

/// Where two buffers first differ, for a readable failure instead of a dump.
std::string first_difference(const Bytes& expected, const Bytes& actual) {
    if (expected == actual) return "equal";
    const auto [a, b] = std::mismatch(expected.begin(), expected.end(), actual.begin(), actual.end());
    return "sizes " + std::to_string(expected.size()) + " vs " + std::to_string(actual.size()) +
           ", first difference at " + std::to_string(a - expected.begin());
}

TEST(TlsSessionPair, Handshake) {
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    EXPECT_FALSE(pair.client.pending_ciphertext().empty()) << "a client sends its ClientHello at once";
    EXPECT_TRUE(pair.server.pending_ciphertext().empty());
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    EXPECT_EQ(pair.client.role(), TlsRole::client);
    EXPECT_EQ(pair.server.role(), TlsRole::server);
    EXPECT_EQ(pair.client.protocol_version(), "TLSv1.3");
    EXPECT_EQ(pair.server.protocol_version(), "TLSv1.3");
    EXPECT_EQ(pair.client.cipher(), pair.server.cipher());
    EXPECT_FALSE(pair.client.cipher().empty());
    EXPECT_EQ(pair.client.peer_certificate_subject(), "CN=localhost");
    EXPECT_EQ(pair.client.peer_certificate_issuer(), "CN=anyloop test CA");
    EXPECT_TRUE(pair.client.peer_certificate_verified());
    EXPECT_EQ(pair.server.server_name(), "localhost");
    EXPECT_EQ(pair.server.peer_certificate_subject(), "") << "no client certificate was asked for";
    EXPECT_FALSE(pair.client.session_reused());

    // A few bytes each way.
    EXPECT_EQ(pair.client.write_plaintext(to_bytes("ping")), 4U);
    EXPECT_EQ(pair.server.write_plaintext(to_bytes("pong!")), 5U);
    pair.pump();
    EXPECT_EQ(to_string(pair.server_received), "ping");
    EXPECT_EQ(to_string(pair.client_received), "pong!");
    EXPECT_FALSE(pair.client.failed());
    EXPECT_FALSE(pair.server.failed());
    EXPECT_EQ(pair.client.error(), std::error_code());
}

TEST(TlsSessionPair, WriteBeforeHandshakeAcceptsNothing) {
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    EXPECT_EQ(pair.client.write_plaintext(to_bytes("early")), 0U);
    EXPECT_EQ(pair.server.write_plaintext(to_bytes("early")), 0U);
    Bytes buffer(16);
    EXPECT_EQ(pair.server.read_plaintext(buffer), 0U);
    EXPECT_FALSE(pair.server.failed());
}

/// Sends `to_server` and `to_client` at the same time, in random chunks,
/// reading with random buffer sizes; `during` runs once per round.
void transfer(TlsSessionPair& pair, const Bytes& to_server, const Bytes& to_client, std::mt19937_64& random,
              const std::function<void(std::size_t)>& during = {}) {
    std::uniform_int_distribution<std::size_t> chunk(1, 64 * 1024);
    std::uniform_int_distribution<std::size_t> read_size(1, 80 * 1024);
    std::size_t client_sent = 0;
    std::size_t server_sent = 0;
    std::size_t round = 0;
    while ((client_sent < to_server.size() || server_sent < to_client.size() ||
            pair.server_received.size() < to_server.size() || pair.client_received.size() < to_client.size()) &&
           !pair.client.failed() && !pair.server.failed()) {
        ASSERT_LT(round, 100000U) << "transfer does not progress";
        if (during) during(round);
        ++round;
        if (client_sent < to_server.size()) {
            const std::size_t size = std::min(chunk(random), to_server.size() - client_sent);
            client_sent += pair.client.write_plaintext(std::span(to_server).subspan(client_sent, size));
        }
        if (server_sent < to_client.size()) {
            const std::size_t size = std::min(chunk(random), to_client.size() - server_sent);
            server_sent += pair.server.write_plaintext(std::span(to_client).subspan(server_sent, size));
        }
        pair.step(read_size(random));
    }
    pair.pump();
}

TEST(TlsSessionPair, SixteenMebibytesRandomChunksBothWays) {
    const auto seed = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 random(seed);
    const Bytes to_server = random_bytes(16 << 20, random);
    const Bytes to_client = random_bytes(16 << 20, random);

    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    transfer(pair, to_server, to_client, random);
    ASSERT_FALSE(pair.client.failed()) << describe(pair);
    ASSERT_FALSE(pair.server.failed()) << describe(pair);
    EXPECT_TRUE(pair.server_received == to_server) << first_difference(to_server, pair.server_received);
    EXPECT_TRUE(pair.client_received == to_client) << first_difference(to_client, pair.client_received);
    EXPECT_FALSE(pair.client.has_pending_plaintext());
    EXPECT_FALSE(pair.server.has_pending_plaintext());
    EXPECT_EQ(ERR_peek_error(), 0UL) << "nothing left in the thread's error queue";
}

/// Counts KeyUpdate handshake messages an SSL sends and receives.
struct KeyUpdateCounter {
    int sent = 0;
    int received = 0;
    static void callback(int write_p, int /*version*/, int content_type, const void* buffer, std::size_t length,
                         SSL* /*ssl*/, void* arg) {
        if (content_type != SSL3_RT_HANDSHAKE || length == 0) return;
        if (static_cast<const unsigned char*>(buffer)[0] != SSL3_MT_KEY_UPDATE) return;
        auto* counter = static_cast<KeyUpdateCounter*>(arg);
        (write_p ? counter->sent : counter->received)++;
    }
    void attach(TlsSession& session) {
        SSL_set_msg_callback(session.native_handle(), callback);
        SSL_set_msg_callback_arg(session.native_handle(), this);
    }
};

TEST(TlsSessionPair, KeyUpdateMidStream) {
    std::mt19937_64 random(42);
    const Bytes to_server = random_bytes(2 << 20, random);
    const Bytes to_client = random_bytes(2 << 20, random);
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    KeyUpdateCounter client_updates;
    KeyUpdateCounter server_updates;
    client_updates.attach(pair.client);
    server_updates.attach(pair.server);

    bool client_updated = false;
    bool server_updated = false;
    transfer(pair, to_server, to_client, random, [&](std::size_t round) {
        if (round == 5) client_updated = pair.client.key_update();
        if (round == 20) server_updated = pair.server.key_update();
    });
    EXPECT_TRUE(client_updated);
    EXPECT_TRUE(server_updated);
    ASSERT_FALSE(pair.client.failed()) << describe(pair);
    ASSERT_FALSE(pair.server.failed()) << describe(pair);
    EXPECT_TRUE(pair.server_received == to_server) << first_difference(to_server, pair.server_received);
    EXPECT_TRUE(pair.client_received == to_client) << first_difference(to_client, pair.client_received);
    // Each update was requested, so each side also answered the other's.
    EXPECT_EQ(client_updates.sent, 2);
    EXPECT_EQ(client_updates.received, 2);
    EXPECT_EQ(server_updates.sent, 2);
    EXPECT_EQ(server_updates.received, 2);
}

TEST(TlsSessionPair, KeyUpdateNeedsTls13) {
    TlsSessionPair pair(client_context({.max_version = TlsVersion::tls1_2}), server_context(),
                        {.peer_name = "localhost"});
    EXPECT_FALSE(pair.client.key_update()) << "not before the handshake";
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    EXPECT_EQ(pair.client.protocol_version(), "TLSv1.2");
    EXPECT_FALSE(pair.client.key_update());
    EXPECT_FALSE(pair.client.failed());
}

TEST(TlsSessionPair, CloseNotifyBothWays) {
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    ASSERT_EQ(pair.client.write_plaintext(to_bytes("last words")), 10U);
    pair.client.shutdown();
    EXPECT_TRUE(pair.client.shutdown_sent());
    EXPECT_THROW(pair.client.write_plaintext(to_bytes("more")), std::logic_error);
    const std::size_t close_notify_size = pair.client.pending_ciphertext().size();
    pair.client.shutdown();  // sent once only
    EXPECT_EQ(pair.client.pending_ciphertext().size(), close_notify_size);
    pair.pump();

    EXPECT_EQ(to_string(pair.server_received), "last words");
    EXPECT_TRUE(pair.server.peer_closed());
    EXPECT_FALSE(pair.server.failed()) << describe(pair);
    EXPECT_FALSE(pair.server.close_complete());
    Bytes buffer(64);
    EXPECT_EQ(pair.server.read_plaintext(buffer), 0U);

    // Half-closed: the server may still talk before closing its side.
    ASSERT_EQ(pair.server.write_plaintext(to_bytes("goodbye")), 7U);
    pair.server.shutdown();
    pair.pump();
    EXPECT_EQ(to_string(pair.client_received), "goodbye");
    EXPECT_TRUE(pair.client.peer_closed());
    EXPECT_TRUE(pair.client.close_complete());
    EXPECT_TRUE(pair.server.close_complete());
    EXPECT_FALSE(pair.client.failed()) << describe(pair);

    // End of file after close_notify is a clean end, not a truncation.
    pair.client.feed_eof();
    EXPECT_EQ(pair.client.read_plaintext(buffer), 0U);
    EXPECT_FALSE(pair.client.failed());
}

TEST(TlsSessionPair, EofWithoutCloseNotifyIsTruncation) {
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    ASSERT_EQ(pair.server.write_plaintext(to_bytes("partial")), 7U);
    pair.pump();
    pair.client.feed_eof();
    EXPECT_TRUE(pair.client.has_pending_plaintext()) << "the reader must look, to learn of the end";
    Bytes buffer(64);
    EXPECT_EQ(pair.client.read_plaintext(buffer), 0U);
    EXPECT_TRUE(pair.client.failed());
    EXPECT_EQ(pair.client.error(), std::make_error_code(std::errc::protocol_error));
    EXPECT_EQ(pair.client.error_message(), "unexpected eof while reading");
    EXPECT_EQ(to_string(pair.client_received), "partial");
}

TEST(TlsSessionPair, StopTlsThenPlaintextContinues) {
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    ASSERT_EQ(pair.client.write_plaintext(to_bytes("encrypted")), 9U);
    pair.client.shutdown();
    // The client's close_notify, then plaintext in the same stream.
    pair.to_server.append(pair.client.take_ciphertext());
    pair.to_server.append(to_bytes("PLAIN from client"));
    EXPECT_TRUE(pair.client.pending_ciphertext().empty());
    pair.pump();
    EXPECT_EQ(to_string(pair.server_received), "encrypted");
    ASSERT_TRUE(pair.server.peer_closed());
    EXPECT_EQ(to_string(pair.server.take_bytes_after_close()), "PLAIN from client");
    EXPECT_TRUE(pair.server.take_bytes_after_close().empty());
    EXPECT_EQ(pair.server.feed_ciphertext(to_bytes("more plain")), 0U) << "no TLS input after close_notify";
    EXPECT_TRUE(pair.server.ciphertext_input_space().empty());

    pair.server.shutdown();
    pair.to_client.append(pair.server.take_ciphertext());
    pair.to_client.append(to_bytes("PLAIN from server"));
    pair.pump();
    ASSERT_TRUE(pair.client.peer_closed());
    EXPECT_TRUE(pair.client.close_complete());
    EXPECT_TRUE(pair.server.close_complete());
    EXPECT_EQ(to_string(pair.client.take_bytes_after_close()), "PLAIN from server");
    EXPECT_FALSE(pair.client.failed()) << describe(pair);
    EXPECT_FALSE(pair.server.failed()) << describe(pair);
}

TEST(TlsSessionPair, GarbageToServerIsEprotoWithReason) {
    auto server = server_context();
    TlsSession session(server);
    const Bytes garbage = to_bytes("hello, this is not TLS at all\r\n\r\n");
    session.feed_ciphertext(garbage);
    EXPECT_TRUE(session.failed());
    EXPECT_EQ(session.error().value(), EPROTO);
    EXPECT_EQ(&session.error().category(), &std::generic_category());
    EXPECT_EQ(session.error_message(), "wrong version number");
    EXPECT_EQ(ERR_peek_error(), 0UL) << "the thread's error queue is left clean";
    // Failed sessions take and give nothing more, and do not crash.
    EXPECT_EQ(session.feed_ciphertext(garbage), 0U);
    Bytes buffer(64);
    EXPECT_EQ(session.read_plaintext(buffer), 0U);
    EXPECT_EQ(session.write_plaintext(garbage), 0U);
    EXPECT_FALSE(session.has_pending_plaintext());

    // An HTTP request gets OpenSSL's own diagnosis.
    TlsSession http(server);
    http.feed_ciphertext(to_bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_TRUE(http.failed());
    EXPECT_EQ(http.error_message(), "http request");

    // Random bytes after a valid ClientHello fail too, with a reason.
    TlsSessionPair pair(client_context(), server, {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    std::mt19937_64 random(7);
    pair.server.feed_ciphertext(random_bytes(4096, random));
    pair.server.read_plaintext(buffer);
    EXPECT_TRUE(pair.server.failed());
    EXPECT_FALSE(pair.server.error_message().empty());
    EXPECT_EQ(ERR_peek_error(), 0UL);
}

TEST(TlsSessionPair, TruncatedHandshake) {
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    pair.to_server.append(pair.client.take_ciphertext());
    pair.server.feed_ciphertext(pair.to_server.unsent());
    const Bytes flight = pair.server.take_ciphertext();
    ASSERT_GT(flight.size(), 100U);
    // Half of the server's flight: the client waits for the rest...
    EXPECT_EQ(pair.client.feed_ciphertext(std::span(flight).first(flight.size() / 2)), flight.size() / 2);
    EXPECT_FALSE(pair.client.handshake_done());
    EXPECT_FALSE(pair.client.failed());
    // ...which never comes.
    pair.client.feed_eof();
    EXPECT_TRUE(pair.client.failed());
    EXPECT_EQ(pair.client.error(), std::make_error_code(std::errc::protocol_error));
    EXPECT_EQ(pair.client.error_message(), "unexpected eof while reading");
    EXPECT_EQ(ERR_peek_error(), 0UL);
}

TEST(TlsSessionPair, AlpnAgreement) {
    auto server = server_context({.alpn_protocols = {"h2", "http/1.1"}});
    {
        TlsSessionPair pair(client_context({.alpn_protocols = {"http/1.1", "h2"}}), server, {.peer_name = "localhost"});
        ASSERT_TRUE(pair.handshake()) << describe(pair);
        EXPECT_EQ(pair.client.alpn_protocol(), "h2") << "the server's preference wins";
        EXPECT_EQ(pair.server.alpn_protocol(), "h2");
    }
    {
        TlsSessionPair pair(client_context({.alpn_protocols = {"http/1.1"}}), server, {.peer_name = "localhost"});
        ASSERT_TRUE(pair.handshake()) << describe(pair);
        EXPECT_EQ(pair.client.alpn_protocol(), "http/1.1");
    }
    {
        TlsSessionPair pair(client_context({.alpn_protocols = {"imap"}}), server, {.peer_name = "localhost"});
        ASSERT_TRUE(pair.handshake()) << describe(pair);
        EXPECT_EQ(pair.client.alpn_protocol(), "") << "nothing in common: no ALPN, no failure";
        EXPECT_EQ(pair.server.alpn_protocol(), "");
    }
}

/// One connection that also reads the tickets the server sends after the handshake.
bool connect_once(const std::shared_ptr<TlsContext>& client, const std::shared_ptr<TlsContext>& server,
                  const std::string& peer_name, bool* reused) {
    TlsSessionPair pair(client, server, {.peer_name = peer_name});
    if (!pair.handshake()) return false;
    pair.client.write_plaintext(to_bytes("hi"));
    pair.pump();
    *reused = pair.client.session_reused();
    return pair.server.session_reused() == *reused && to_string(pair.server_received) == "hi";
}

TEST(TlsSessionPair, SessionResumptionTls13) {
    auto client = client_context();
    auto server = server_context();
    bool reused = true;
    ASSERT_TRUE(connect_once(client, server, "localhost", &reused));
    EXPECT_FALSE(reused);
    EXPECT_EQ(client->cached_sessions(), 1U);
    ASSERT_TRUE(connect_once(client, server, "localhost", &reused));
    EXPECT_TRUE(reused) << "second handshake resumes";
    EXPECT_EQ(client->cached_sessions(), 1U) << "the resumed connection brought a fresh ticket";
    ASSERT_TRUE(connect_once(client, server, "127.0.0.1", &reused));
    EXPECT_FALSE(reused) << "sessions are cached per peer name";
    EXPECT_EQ(client->cached_sessions(), 2U);
    client->clear_session_cache();
    EXPECT_EQ(client->cached_sessions(), 0U);
    ASSERT_TRUE(connect_once(client, server, "localhost", &reused));
    EXPECT_FALSE(reused);
}

TEST(TlsSessionPair, SessionResumptionTls12) {
    auto client = client_context({.max_version = TlsVersion::tls1_2});
    auto server = server_context();
    bool reused = true;
    ASSERT_TRUE(connect_once(client, server, "localhost", &reused));
    EXPECT_FALSE(reused);
    ASSERT_TRUE(connect_once(client, server, "localhost", &reused));
    EXPECT_TRUE(reused);
}

TEST(TlsSessionPair, SessionResumptionOff) {
    bool reused = true;
    auto server = server_context({.session_resumption = false});
    auto client = client_context();
    ASSERT_TRUE(connect_once(client, server, "localhost", &reused));
    ASSERT_TRUE(connect_once(client, server, "localhost", &reused));
    EXPECT_FALSE(reused) << "the server issues no tickets";

    auto quiet_client = client_context({.session_resumption = false});
    ASSERT_TRUE(connect_once(quiet_client, server_context(), "localhost", &reused));
    EXPECT_EQ(quiet_client->cached_sessions(), 0U);
}

TEST(TlsSessionPair, MinimumVersionTls12IsHonoured) {
    // A client that can speak only TLS 1.0/1.1 (security level 0, or OpenSSL
    // 3 would not even offer them) against the default server minimum, 1.2.
    TlsSessionPair pair(client_context({.min_version = TlsVersion::tls1_0,
                                        .max_version = TlsVersion::tls1_1,
                                        .cipher_list = "DEFAULT:@SECLEVEL=0"}),
                        server_context(), {.peer_name = "localhost"});
    EXPECT_FALSE(pair.handshake());
    EXPECT_TRUE(pair.server.failed());
    EXPECT_EQ(pair.server.error_message(), "unsupported protocol");
    EXPECT_TRUE(pair.client.failed());
    EXPECT_NE(pair.client.error_message().find("alert protocol version"), std::string::npos) << describe(pair);

    // And a minimum of 1.3 refuses a 1.2 client.
    TlsSessionPair strict(client_context({.max_version = TlsVersion::tls1_2}),
                          server_context({.min_version = TlsVersion::tls1_3}), {.peer_name = "localhost"});
    EXPECT_FALSE(strict.handshake());
    EXPECT_EQ(strict.server.error_message(), "unsupported protocol");
}

TEST(TlsSessionPair, CipherSettingsApply) {
    TlsSessionPair tls12(
        client_context({.max_version = TlsVersion::tls1_2, .cipher_list = "ECDHE-ECDSA-CHACHA20-POLY1305"}),
        server_context(), {.peer_name = "localhost"});
    ASSERT_TRUE(tls12.handshake()) << describe(tls12);
    EXPECT_EQ(tls12.client.cipher(), "ECDHE-ECDSA-CHACHA20-POLY1305");

    TlsSessionPair tls13(client_context({.ciphersuites = "TLS_CHACHA20_POLY1305_SHA256"}), server_context(),
                         {.peer_name = "localhost"});
    ASSERT_TRUE(tls13.handshake()) << describe(tls13);
    EXPECT_EQ(tls13.client.cipher(), "TLS_CHACHA20_POLY1305_SHA256");
}

TEST(TlsSessionPair, NoDecryptedByteLeftInside) {
    std::mt19937_64 random(3);
    const Bytes message = random_bytes(18000, random);
    // Three records (one per write), all of them fed before any read.
    auto send_records = [&](TlsSessionPair& pair) {
        for (std::size_t at = 0; at < message.size(); at += 6000)
            EXPECT_EQ(pair.server.write_plaintext(std::span(message).subspan(at, 6000)), 6000U);
        const Bytes wire = pair.server.take_ciphertext();
        EXPECT_EQ(pair.client.feed_ciphertext(wire), wire.size());
    };

    // One call with a big buffer takes all records at once...
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    send_records(pair);
    EXPECT_TRUE(pair.client.has_pending_plaintext());
    Bytes big(100000);
    EXPECT_EQ(pair.client.read_plaintext(big), message.size());
    EXPECT_TRUE(std::equal(message.begin(), message.end(), big.begin()));
    EXPECT_FALSE(pair.client.has_pending_plaintext());

    // ...and a small buffer leaves the rest ready, with no new input needed.
    send_records(pair);
    Bytes received;
    Bytes small(100);
    while (pair.client.has_pending_plaintext()) {
        const std::size_t got = pair.client.read_plaintext(small);
        ASSERT_GT(got, 0U) << "has_pending_plaintext() promised bytes";
        received.insert(received.end(), small.begin(), small.begin() + static_cast<std::ptrdiff_t>(got));
    }
    EXPECT_TRUE(received == message) << first_difference(message, received);
    EXPECT_EQ(pair.client.read_plaintext(small), 0U);
}

TEST(TlsSessionPair, FullInputRingAcceptsMoreAfterReading) {
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    std::mt19937_64 random(4);
    const Bytes message = random_bytes(200000, random);
    std::size_t written = 0;
    while (written < message.size()) {
        const std::size_t more = pair.server.write_plaintext(std::span(message).subspan(written));
        ASSERT_GT(more, 0U);
        written += more;
        pair.to_client.append(pair.server.take_ciphertext());
    }
    // The session takes what its ring holds, and more only after a read.
    const std::size_t first = pair.client.feed_ciphertext(pair.to_client.unsent());
    EXPECT_GT(first, 0U);
    EXPECT_LT(first, pair.to_client.unsent().size());
    pair.to_client.drop(first);
    EXPECT_EQ(pair.client.feed_ciphertext(pair.to_client.unsent()), 0U);
    EXPECT_TRUE(pair.client.ciphertext_input_space().empty());
    pair.pump();
    EXPECT_TRUE(pair.client_received == message) << first_difference(message, pair.client_received);
}

TEST(TlsSessionPair, PartialWritesHonourPendingLimit) {
    TlsSessionPair pair(client_context(), server_context(),
                        {.peer_name = "localhost", .max_pending_ciphertext = 32 * 1024});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    std::mt19937_64 random(5);
    const Bytes message = random_bytes(1 << 20, random);
    std::size_t sent = pair.client.write_plaintext(message);
    EXPECT_GT(sent, 0U);
    EXPECT_LT(sent, 64U * 1024) << "writing stops near the limit";
    EXPECT_GE(pair.client.pending_ciphertext().size(), 32U * 1024);
    EXPECT_EQ(pair.client.write_plaintext(std::span(message).subspan(sent)), 0U) << "nothing while over the limit";
    while (sent < message.size()) {
        pair.step();
        const std::size_t more = pair.client.write_plaintext(std::span(message).subspan(sent));
        ASSERT_GT(more, 0U);
        sent += more;
    }
    pair.pump();
    EXPECT_TRUE(pair.server_received == message) << first_difference(message, pair.server_received);
}

TEST(TlsSessionPair, ZeroCopyInputAndTakenOutput) {
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    // Drive the handshake by receiving straight into each session's ring.
    auto deliver = [](TlsSession& from, TlsSession& to) {
        Bytes wire = from.take_ciphertext();
        std::size_t at = 0;
        while (at < wire.size()) {
            const auto space = to.ciphertext_input_space();
            if (space.empty()) break;
            const std::size_t size = std::min(space.size(), wire.size() - at);
            std::copy_n(wire.begin() + static_cast<std::ptrdiff_t>(at), size, space.begin());
            to.commit_ciphertext_input(size);
            at += size;
        }
        return at == wire.size();
    };
    for (int i = 0; i < 10 && !(pair.client.handshake_done() && pair.server.handshake_done()); ++i) {
        ASSERT_TRUE(deliver(pair.client, pair.server));
        ASSERT_TRUE(deliver(pair.server, pair.client));
    }
    ASSERT_TRUE(pair.client.handshake_done() && pair.server.handshake_done()) << describe(pair);
    ASSERT_EQ(pair.client.write_plaintext(to_bytes("zero copy")), 9U);
    ASSERT_TRUE(deliver(pair.client, pair.server));
    Bytes buffer(64);
    EXPECT_EQ(to_string(std::span(buffer).first(pair.server.read_plaintext(buffer))), "zero copy");
    EXPECT_THROW(pair.server.commit_ciphertext_input(1U << 30), std::logic_error);
}

TEST(TlsSessionPair, ExportedKeyingMaterialMatches) {
    TlsSessionPair pair(client_context(), server_context(), {.peer_name = "localhost"});
    EXPECT_THROW(pair.client.export_keying_material("EXPORTER-test", {}, 32), std::logic_error);
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    const Bytes context = to_bytes("context");
    const Bytes client_key = pair.client.export_keying_material("EXPORTER-anyloop-test", context, 32);
    const Bytes server_key = pair.server.export_keying_material("EXPORTER-anyloop-test", context, 32);
    EXPECT_EQ(client_key.size(), 32U);
    EXPECT_TRUE(client_key == server_key);
    EXPECT_FALSE(client_key == pair.client.export_keying_material("EXPORTER-other", context, 32));
}

TEST(TlsSessionPair, MovedSessionKeepsWorking) {
    auto client = client_context();
    TlsSession moved(client, {.peer_name = "localhost"});
    TlsSession session(std::move(moved));
    TlsSession server(server_context());
    for (int i = 0; i < 5; ++i) {
        server.feed_ciphertext(session.take_ciphertext());
        session.feed_ciphertext(server.take_ciphertext());
    }
    EXPECT_TRUE(session.handshake_done());
    EXPECT_TRUE(server.handshake_done());
    EXPECT_EQ(session.peer_name(), "localhost");
}

}  // namespace
}  // namespace anyloop::test
