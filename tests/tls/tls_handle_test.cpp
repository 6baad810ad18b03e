// TLS on a Handle over loopback, every backend: echo (bulk, pipelined,
// split at every byte), stoptls, push_shutdown, the handshake timeout, a
// KeyUpdate, destruction inside the TLS callbacks, reading paused while
// records arrive, writes refused mid-record, exact reads up to a
// close_notify, and socket errors. starttls after a greeting: tls_starttls_test.cpp.
#include <anyloop/handle/handle.hpp>
#include <anyloop/tls/tls_layer.hpp>

#include "tls/tls_handle_test_support.hpp"

#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using namespace tls_handle;
using handle_support::random_bytes;
using TlsHandleTest = LoopTest;

/// A client and a server Handle with TLS from the start on a loopback pair.
struct TlsPair {
    explicit TlsPair(EventLoop& loop)
        : server(loop, sockets.take_b(), tls_options(TlsMode::accept, server_context())),
          client(loop, sockets.take_a(), tls_options(TlsMode::connect, client_context(), "localhost")) {
        server_events.watch(server);
        client_events.watch(client);
    }
    [[nodiscard]] bool failed() const { return server_events.failed() || client_events.failed(); }
    [[nodiscard]] std::string errors() const { return server_events.message + client_events.message; }
    /// After a stoptls both ways: each side's on_stoptls ran once (the
    /// counts), neither keeps a TLS layer, and nothing failed.
    void expect_stopped_cleanly(int server_stopped, int client_stopped) const {
        EXPECT_EQ(server_stopped, 1);
        EXPECT_EQ(client_stopped, 1);
        EXPECT_EQ(client.layer(), nullptr);
        EXPECT_EQ(server.layer(), nullptr);
        EXPECT_EQ(errors(), "");
    }

    Events server_events;
    Events client_events;
    TcpPair sockets;
    Handle server;
    Handle client;
};

/// The index of the first difference, for a readable failure on large data.
std::size_t first_difference(const std::string& a, const std::string& b) {
    const std::size_t n = std::min(a.size(), b.size());
    for (std::size_t i = 0; i < n; ++i)
        if (a[i] != b[i]) return i;
    return n;
}

TEST_P(TlsHandleTest, EchoThenStoptls) {
    TlsPair p(*loop);
    // Server: echo lines. The server answers the client's stoptls (on_stoptls is set).
    int server_stopped = 0;
    p.server.on_stoptls([&](Handle&) { ++server_stopped; });
    echo_lines(p.server, "");

    p.client.push_write("hello\n");
    std::string got;
    p.client.push_read(Reader::line([&](Handle&, std::string_view line) { got = line; }));
    ASSERT_TRUE(run_until(
        *loop, [&] { return !got.empty() || p.failed(); }, 2s))
        << p.errors();
    EXPECT_EQ(got, "hello");
    EXPECT_EQ(p.client_events.starttls_ok, 1);
    EXPECT_EQ(p.server_events.starttls_ok, 1);
    EXPECT_TRUE(p.client.tls_established());
    EXPECT_TRUE(p.server.tls_established());
    ASSERT_NE(tls::tls_session(p.client), nullptr);
    EXPECT_TRUE(tls::tls_session(p.client)->peer_certificate_verified());
    EXPECT_EQ(tls::tls_session(p.client)->peer_certificate_subject(), "CN=localhost");

    int client_stopped = 0;
    p.client.on_stoptls([&](Handle&) { ++client_stopped; });
    p.client.stoptls();
    EXPECT_FALSE(p.client.tls_established());
    p.client.push_write("plain\n");
    got.clear();
    p.client.push_read(Reader::line([&](Handle&, std::string_view line) { got = line; }));
    ASSERT_TRUE(run_until(
        *loop, [&] { return !got.empty() || p.failed(); }, 2s))
        << p.errors();
    EXPECT_EQ(got, "plain");
    p.expect_stopped_cleanly(server_stopped, client_stopped);
}

TEST_P(TlsHandleTest, OneMebibyteRoundTripsByteExact) {
    TlsPair p(*loop);
    echo_bytes(p.server);
    std::string received;
    collect_bytes(p.client, received);
    const std::string data = random_bytes(1U << 20, 20261122);
    p.client.push_write(data);  // queued before the handshake is done
    ASSERT_TRUE(run_until(
        *loop, [&] { return received.size() >= data.size() || p.failed(); }, 5s))
        << received.size() << " of " << data.size() << " bytes; " << p.errors();
    EXPECT_EQ(received.size(), data.size());
    EXPECT_TRUE(received == data) << "first difference at byte " << first_difference(received, data);
    EXPECT_EQ(p.errors(), "");
}

TEST_P(TlsHandleTest, ManySmallRecordsPipelinedComeBackInOrder) {
    TlsPair p(*loop);
    std::function<void(Handle&, std::string_view)> echo = [&](Handle& h, std::string_view record) {
        h.push_write_prefixed(4, record);
        h.push_read(Reader::length_prefixed(4, echo));
    };
    p.server.push_read(Reader::length_prefixed(4, echo));

    constexpr int kRecords = 2000;
    std::vector<std::string> sent;
    for (int i = 0; i < kRecords; ++i)
        sent.push_back(random_bytes(static_cast<std::size_t>(i % 301), static_cast<std::uint32_t>(i)));
    std::vector<std::string> received;
    std::function<void(Handle&, std::string_view)> collect = [&](Handle& h, std::string_view record) {
        received.emplace_back(record);
        if (received.size() < sent.size()) h.push_read(Reader::length_prefixed(4, collect));
    };
    p.client.push_read(Reader::length_prefixed(4, collect));
    // Back to back, outside any callback: each becomes its own TLS record
    // (before the handshake they wait in the plaintext queue).
    for (const std::string& record : sent) p.client.push_write_prefixed(4, record);

    ASSERT_TRUE(run_until(
        *loop, [&] { return received.size() == sent.size() || p.failed(); }, 5s))
        << received.size() << " records; " << p.errors();
    for (std::size_t i = 0; i < sent.size(); ++i) ASSERT_EQ(received[i], sent[i]) << "record " << i;
    EXPECT_EQ(p.errors(), "");
}

// The client is a bare TlsSession whose every ciphertext byte reaches the
// server Handle in a read of its own: handshake, records and all.
TEST_P(TlsHandleTest, ServerReassemblesInputSplitAtEveryByte) {
    ServerAndSessionClient pair(*loop);
    auto& [sockets, server, events, client] = pair;
    client.watch(*loop);
    client.send_bytewise(*loop, server.fd());  // ClientHello
    ASSERT_TRUE(run_until(
        *loop, [&] { return client.session.handshake_done() || client.session.failed(); }, 2s));
    ASSERT_FALSE(client.session.failed()) << client.session.error_message();
    client.send_bytewise(*loop, server.fd());  // Finished
    ASSERT_TRUE(run_until(
        *loop, [&] { return events.starttls_ok == 1 || events.failed(); }, 2s))
        << events.message;

    client.write("one\ntwo\n");
    client.write(std::string(1500, 'x') + "\n");  // a record bigger than a read of the rest
    client.write("three\n");
    client.send_bytewise(*loop, server.fd());
    const std::string expected = "echo: one\necho: two\necho: " + std::string(1500, 'x') + "\necho: three\n";
    ASSERT_TRUE(run_until(
        *loop, [&] { return client.plaintext.size() >= expected.size() || events.failed(); }, 2s))
        << events.message;
    EXPECT_EQ(client.plaintext, expected);
    EXPECT_GT(client.bytes_sent, 1500U);
    EXPECT_EQ(events.message, "");
}

// The other way round: the server is a bare TlsSession that sends its whole
// flight, the session tickets and the data one byte at a time.
TEST_P(TlsHandleTest, ClientReassemblesInputSplitAtEveryByte) {
    ClientAndSessionServer pair(*loop);
    auto& [sockets, client, events, lines, server] = pair;
    client.push_write("hello\n");
    server.watch(*loop);
    ASSERT_TRUE(run_until(
        *loop, [&] { return !server.session.pending_ciphertext().empty(); }, 2s));
    server.send_bytewise(*loop, client.fd());  // ServerHello ... Finished
    ASSERT_TRUE(run_until(
        *loop, [&] { return server.plaintext == "hello\n" || server.session.failed(); }, 2s))
        << server.session.error_message() << events.message;
    EXPECT_EQ(events.starttls_ok, 1);
    server.write("first\nsecond\n");
    server.write(std::string(1500, 'y') + "\nthird\n");
    server.send_bytewise(*loop, client.fd());  // tickets and data
    ASSERT_TRUE(run_until(
        *loop, [&] { return lines.size() >= 4 || events.failed(); }, 2s))
        << events.message;
    EXPECT_EQ(lines, (std::vector<std::string>{"first", "second", std::string(1500, 'y'), "third"}));
    EXPECT_EQ(events.message, "");
}

// push_shutdown with plaintext queued before the handshake even finished:
// the data, then one close_notify, then the half-close; the Handle does not
// wait for the peer's close_notify, and still reads what the peer sends.
TEST_P(TlsHandleTest, PushShutdownSendsCloseNotifyOnceAfterTheQueueThenHalfCloses) {
    // With the kernel's loopback buffers most of the data fits in the socket
    // at once; with small ones the Handle's writes block and the plaintext
    // waits in its queue until the peer reads.
    for (const bool small_buffers : {false, true}) {
        SCOPED_TRACE(small_buffers ? "small socket buffers" : "default socket buffers");
        TcpPair sockets;
        if (small_buffers) {
            const int size = 32 * 1024;
            ::setsockopt(sockets.a, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
            ::setsockopt(sockets.b, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        }
        Handle client(*loop, sockets.take_a(), tls_options(TlsMode::connect, client_context(), "localhost"));
        Events events;
        events.watch(client);
        std::string received;
        collect_bytes(client, received);
        // 4 MiB against the default buffers once stalled the Handle: a flush
        // stopped after 8 rounds with plaintext left, queue_ empty and no
        // write interest, while the socket kept up.
        const std::string data = random_bytes(small_buffers ? 1U << 20 : 4U << 20, 5);
        client.push_write(data);
        client.push_shutdown();

        // The peer answers the ClientHello, then reads nothing for a while.
        SessionPeer server(server_context(), sockets.b);
        server.auto_send = true;
        ASSERT_TRUE(run_until(
            *loop,
            [&] {
                server.receive();
                server.send_all();
                return server.session.handshake_done() || server.session.failed();
            },
            2s));
        run_for(*loop, 20ms);
        if (small_buffers) {
            EXPECT_GT(client.write_queue_size(), 0U);
        }
        server.watch(*loop);
        ASSERT_TRUE(run_until(
            *loop, [&] { return server.socket_eof || server.session.failed(); }, 5s))
            << server.session.error_message() << events.message << " received " << server.plaintext.size() << " queued "
            << client.write_queue_size() << " peer closed " << server.session.peer_closed();
        EXPECT_EQ(server.plaintext.size(), data.size());
        EXPECT_TRUE(server.plaintext == data);
        EXPECT_TRUE(server.session.peer_closed());
        EXPECT_EQ(server.after_close, "") << "bytes after the close_notify (a second one?)";
        EXPECT_EQ(events.starttls_ok, 1);
        EXPECT_EQ(events.eofs, 0);

        // TLS 1.3 half-close: the server still writes, then closes properly.
        server.write("still here\n");
        server.session.shutdown();
        server.send_all();
        ::shutdown(sockets.b, SHUT_WR);
        ASSERT_TRUE(run_until(
            *loop, [&] { return events.eofs > 0 || events.failed(); }, 2s))
            << events.message;
        EXPECT_EQ(received, "still here\n");
        EXPECT_EQ(events.eofs, 1);
        EXPECT_EQ(events.message, "");
    }
}

TEST_P(TlsHandleTest, PushShutdownBothWaysEachSideSeesEofAfterEverything) {
    TlsPair p(*loop);
    const std::string data = random_bytes(300 * 1024, 11);
    std::string server_got;
    std::size_t server_had_at_eof = 0;
    collect_bytes(p.server, server_got);
    p.server.on_eof([&](Handle& h) {
        ++p.server_events.eofs;
        server_had_at_eof = server_got.size();
        h.push_write("got " + std::to_string(server_got.size()) + "\n");
        h.push_shutdown();
    });
    std::string client_got;
    collect_bytes(p.client, client_got);
    p.client.push_write(data);
    p.client.push_shutdown();
    ASSERT_TRUE(run_until(
        *loop, [&] { return p.client_events.eofs > 0 || p.failed(); }, 3s))
        << p.errors();
    EXPECT_EQ(server_had_at_eof, data.size());
    EXPECT_TRUE(server_got == data);
    EXPECT_EQ(client_got, "got " + std::to_string(data.size()) + "\n");
    EXPECT_EQ(p.server_events.eofs, 1);
    EXPECT_EQ(p.client_events.eofs, 1);
    EXPECT_EQ(p.errors(), "");
}

TEST_P(TlsHandleTest, HandshakeTimeoutWhenThePeerSaysNothing) {
    for (const TlsMode mode : {TlsMode::accept, TlsMode::connect}) {
        SCOPED_TRACE(mode == TlsMode::accept ? "accept" : "connect");
        TcpPair sockets;
        HandleOptions options = mode == TlsMode::accept ? tls_options(mode, server_context())
                                                        : tls_options(mode, client_context(), "localhost");
        options.tls_timeout = 100ms;
        Handle handle(*loop, sockets.take_b(), options);
        Events events;
        events.watch(handle);
        const auto start = std::chrono::steady_clock::now();
        ASSERT_TRUE(run_until(
            *loop, [&] { return events.failed(); }, 2s));
        EXPECT_GE(handle_support::ms_since(start), 50.0);  // not at once (the loop's clock is cached)
        EXPECT_EQ(events.error, std::errc::timed_out);
        EXPECT_EQ(events.fatal_errors, 1);
        EXPECT_NE(events.message.find("TLS handshake not finished within 0.1 s"), std::string::npos) << events.message;
        EXPECT_EQ(events.starttls_failed, 1);
        EXPECT_EQ(events.starttls_ok, 0);
        EXPECT_FALSE(events.starttls_message.empty());
        EXPECT_TRUE(handle.closed());
        // The peer sees the connection end (after a ClientHello, for connect).
        ASSERT_TRUE(run_until(
            *loop,
            [&] {
                read_now(sockets.a);
                char probe;
                return ::recv(sockets.a, &probe, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
            },
            1s));
    }
}

// A TLS 1.3 KeyUpdate from the peer mid-stream: the Handle answers it (the
// answer is output produced by a read) and both directions keep working.
TEST_P(TlsHandleTest, KeyUpdateFromThePeerMidStream) {
    ServerAndSessionClient pair(*loop);
    auto& [sockets, server, events, client] = pair;
    client.auto_send = true;
    client.send_all();
    client.watch(*loop);
    ASSERT_TRUE(run_until(
        *loop, [&] { return (events.starttls_ok == 1 && client.session.handshake_done()) || events.failed(); }, 2s))
        << events.message;
    std::string expected;
    for (int round = 0; round < 3; ++round) {
        const std::string line = "round " + std::to_string(round);
        client.write(line + "\n");
        client.send_all();
        expected += "echo: " + line + "\n";
        ASSERT_TRUE(run_until(
            *loop, [&] { return client.plaintext == expected || client.session.failed() || events.failed(); }, 2s))
            << client.plaintext << client.session.error_message() << events.message;
        if (round < 2) {
            ASSERT_TRUE(client.session.key_update());
            client.send_all();
        }
    }
    EXPECT_EQ(events.message, "");
}

// Destroying the Handle inside each TLS callback: nothing runs afterwards
// and nothing leaks (the sanitizer build checks).
TEST_P(TlsHandleTest, HandleDestroyedInsideItsTlsCallbacks) {
    enum class Where { starttls_ok, starttls_failed, error, stoptls };
    for (const Where where : {Where::starttls_ok, Where::starttls_failed, Where::error, Where::stoptls}) {
        SCOPED_TRACE(static_cast<int>(where));
        TcpPair sockets;
        const bool bad_name = where == Where::starttls_failed || where == Where::error;
        auto server = std::make_unique<Handle>(*loop, sockets.take_b(), tls_options(TlsMode::accept, server_context()));
        auto client = std::make_unique<Handle>(
            *loop, sockets.take_a(),
            tls_options(TlsMode::connect, client_context(), bad_name ? "wrong.example" : "localhost"));
        server->on_error([](Handle&, std::error_code, const std::string&, bool) {});
        server->on_eof([](Handle&) {});
        server->on_stoptls([](Handle&) {});
        server->push_read(Reader::line([](Handle&, std::string_view) {}));
        int calls_after = 0;
        client->on_error([&](Handle&, std::error_code, const std::string&, bool) {
            if (!client) ++calls_after;
            if (where == Where::error) client.reset();
        });
        client->on_starttls([&](Handle& h, bool ok, const std::string&) {
            if (!client) ++calls_after;
            if (where == Where::starttls_ok || where == Where::starttls_failed)
                client.reset();
            else if (where == Where::stoptls && ok)
                h.stoptls();
        });
        client->on_stoptls([&](Handle&) {
            if (!client) ++calls_after;
            client.reset();
        });
        ASSERT_TRUE(run_until(
            *loop, [&] { return !client; }, 2s));
        run_for(*loop, 5ms);
        EXPECT_EQ(calls_after, 0);
    }
}

TEST_P(TlsHandleTest, HandshakeTimeoutIsOffOnceEstablished) {
    TcpPair sockets;
    HandleOptions server_options = tls_options(TlsMode::accept, server_context());
    server_options.tls_timeout = 50ms;
    HandleOptions client_options = tls_options(TlsMode::connect, client_context(), "localhost");
    client_options.tls_timeout = 50ms;
    Handle server(*loop, sockets.take_b(), server_options);
    Handle client(*loop, sockets.take_a(), client_options);
    Events server_events;
    Events client_events;
    server_events.watch(server);
    client_events.watch(client);
    ASSERT_TRUE(run_until(
        *loop, [&] { return server_events.starttls_ok + client_events.starttls_ok == 2; }, 2s));
    run_for(*loop, 120ms);
    EXPECT_EQ(server_events.message + client_events.message, "");
    EXPECT_TRUE(server.tls_established());
    EXPECT_TRUE(client.tls_established());
}

// Backpressure through TLS: the echoing server stops reading while its
// output is over the high-water mark and resumes below the low one.
TEST_P(TlsHandleTest, EchoUnderBackpressureStaysByteExact) {
    TlsPair p(*loop);
    p.server.set_high_water_mark(64 * 1024);
    p.server.set_low_water_mark(16 * 1024);
    echo_bytes(p.server);
    std::string received;
    collect_bytes(p.client, received);
    const std::string data = random_bytes(2U << 20, 3);
    p.client.push_write(data);
    ASSERT_TRUE(run_until(
        *loop, [&] { return received.size() >= data.size() || p.failed(); }, 5s))
        << received.size() << " of " << data.size() << " bytes; " << p.errors();
    EXPECT_TRUE(received == data) << "first difference at byte " << first_difference(received, data);
    EXPECT_EQ(p.errors(), "");
}

// stoptls() behind a large write: every queued byte goes out encrypted
// first, then the close_notify, then what was queued after stoptls(), plain.
TEST_P(TlsHandleTest, StoptlsBehindALargeWriteKeepsTheOrder) {
    TlsPair p(*loop);
    int server_stopped = 0;
    std::size_t received_over_tls = 0;
    std::string received;
    p.server.on_stoptls([&](Handle&) {
        ++server_stopped;
        received_over_tls = received.size();
    });
    collect_bytes(p.server, received);
    int client_stopped = 0;
    p.client.on_stoptls([&](Handle&) { ++client_stopped; });
    const std::string data = random_bytes(1U << 20, 4);
    p.client.push_write(data);
    p.client.stoptls();
    p.client.push_write("plain tail\n");
    ASSERT_TRUE(run_until(
        *loop, [&] { return received.size() >= data.size() + 11 || p.failed(); }, 5s))
        << received.size() << " bytes; " << p.errors();
    EXPECT_EQ(received_over_tls, data.size());
    EXPECT_TRUE(received == data + "plain tail\n")
        << "first difference at byte " << first_difference(received, data + "plain tail\n");
    p.expect_stopped_cleanly(server_stopped, client_stopped);
}

// Reading paused while many small records arrive: nothing may stay inside
// OpenSSL when it resumes, though the socket then has nothing new to say.
TEST_P(TlsHandleTest, PausedReadingDeliversEverySmallRecordOnResume) {
    TlsPair p(*loop);
    std::vector<std::string> lines;
    std::function<void(Handle&, std::string_view)> collect = [&](Handle& h, std::string_view line) {
        lines.emplace_back(line);
        h.push_read(Reader::line(collect));
    };
    p.server.push_read(Reader::line(collect));
    ASSERT_TRUE(run_until(
        *loop, [&] { return p.server_events.starttls_ok == 1 || p.failed(); }, 2s))
        << p.errors();

    constexpr int kRecords = 2000;
    for (int phase = 0; phase < 2; ++phase) {
        SCOPED_TRACE(phase == 0 ? "paused before the records" : "paused by the reader mid-stream");
        lines.clear();
        if (phase == 0) {
            p.server.stop_read();
        } else {
            // The reader pauses once it has seen ten lines.
            collect = [&](Handle& h, std::string_view line) {
                lines.emplace_back(line);
                if (lines.size() == 10) h.stop_read();
                h.push_read(Reader::line(collect));
            };
        }
        for (int i = 0; i < kRecords; ++i) p.client.push_write("record " + std::to_string(i) + "\n");
        ASSERT_TRUE(run_until(
            *loop, [&] { return p.client.write_queue_size() == 0 || p.failed(); }, 2s));
        run_for(*loop, 30ms);
        if (phase == 0) {
            EXPECT_EQ(lines.size(), 0U);
        }
        EXPECT_FALSE(p.server.reading());
        p.server.start_read();
        ASSERT_TRUE(run_until(
            *loop, [&] { return lines.size() == kRecords || p.failed(); }, 2s))
            << lines.size() << " lines; " << p.errors();
        for (int i = 0; i < kRecords; ++i) ASSERT_EQ(lines[static_cast<std::size_t>(i)], "record " + std::to_string(i));
    }
    EXPECT_EQ(p.errors(), "");
}

// The socket refuses the server's output partway through a TLS record (the
// Handle's layer writes straight to the socket): the rest waits in the
// Handle's queue, later records wait behind it, and the peer gets every
// byte in order once it reads again.
TEST_P(TlsHandleTest, WriteRefusedPartwayThroughARecordArrivesInOrder) {
    TcpPair sockets;
    // (A receive buffer shrunk after the connect can stall loopback TCP in
    // zero-window probes for seconds: only the sender's is made small.)
    const int size = 16 * 1024;
    ::setsockopt(sockets.b, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    Handle server(*loop, sockets.take_b(), tls_options(TlsMode::accept, server_context()));
    Handle client(*loop, sockets.take_a(), tls_options(TlsMode::connect, client_context(), "localhost"));
    Events server_events;
    Events client_events;
    server_events.watch(server);
    client_events.watch(client);
    std::string received;
    collect_bytes(client, received);
    ASSERT_TRUE(run_until(
        *loop, [&] { return (server.tls_established() && client.tls_established()) || server_events.failed(); }, 2s))
        << server_events.message << client_events.message;
    client.stop_read();
    const std::string data = random_bytes(1U << 20, 12);
    server.push_write(data);  // large: encrypted and sent at once, as far as the socket takes it
    EXPECT_GT(server.write_queue_size(), 0U) << "the socket took all of 1 MiB";
    run_for(*loop, 20ms);
    client.start_read();
    ASSERT_TRUE(run_until(
        *loop, [&] { return received.size() >= data.size() || server_events.failed() || client_events.failed(); }, 5s))
        << received.size() << " of " << data.size() << "; server queue " << server.write_queue_size()
        << ", client reading " << client.reading() << " readable " << handle_support::readable_bytes(client.fd())
        << " pending " << tls::tls_session(client)->has_pending_plaintext() << " server pending "
        << tls::tls_session(server)->pending_ciphertext().size() << "; " << server_events.message
        << client_events.message;
    EXPECT_TRUE(received == data) << "first difference at byte " << first_difference(received, data);
    EXPECT_EQ(server.write_queue_size(), 0U);
    EXPECT_EQ(server_events.message + client_events.message, "");
}

// With on_stoptls set the Handle reads no byte past the peer's close_notify
// (no read-ahead): plaintext right behind it, whether it arrives with it or
// one byte at a time, is the first plain input.
TEST_P(TlsHandleTest, ServerReadsExactlyUpToThePeersCloseNotify) {
    for (const bool bytewise : {false, true}) {
        SCOPED_TRACE(bytewise ? "one byte per read" : "all in one write");
        ServerAndSessionClient pair(*loop);
        auto& [sockets, server, events, client] = pair;
        int stopped = 0;
        server.on_stoptls([&](Handle&) { ++stopped; });
        client.auto_send = true;
        client.watch(*loop);
        client.send_all();  // ClientHello
        ASSERT_TRUE(run_until(
            *loop, [&] { return (events.starttls_ok == 1 && client.session.handshake_done()) || events.failed(); }, 2s))
            << events.message;
        client.write("one\n");
        client.session.shutdown();
        std::vector<std::byte> wire = client.session.take_ciphertext();
        const std::string plain = "two plain\n";
        const auto* plain_bytes = reinterpret_cast<const std::byte*>(plain.data());
        wire.insert(wire.end(), plain_bytes, plain_bytes + plain.size());
        if (bytewise) {
            for (const std::byte byte : wire) {
                write_all(sockets.a, &byte, 1);
                handle_support::run_until_drained(*loop, server.fd());
            }
        } else {
            write_all(sockets.a, wire.data(), wire.size());
        }
        ASSERT_TRUE(run_until(
            *loop, [&] { return client.after_close.size() >= 16 || events.failed() || client.session.failed(); }, 2s))
            << events.message << client.session.error_message();
        EXPECT_EQ(client.plaintext, "echo: one\n");
        EXPECT_EQ(client.after_close, "echo: two plain\n");
        EXPECT_EQ(stopped, 1);
        EXPECT_EQ(server.layer(), nullptr);
        EXPECT_EQ(events.message, "");
    }
}

// A socket error under TLS keeps its own code (not EPROTO), whether the
// layer met it reading or writing.
TEST_P(TlsHandleTest, ASocketErrorUnderTlsKeepsItsErrno) {
    for (const bool reading : {true, false}) {
        SCOPED_TRACE(reading ? "reading" : "writing");
        TcpPair sockets;
        Handle server(*loop, sockets.take_b(), tls_options(TlsMode::accept, server_context()));
        Events events;
        events.watch(server);
        if (reading) echo_lines(server);
        SessionPeer client(client_context(), sockets.a, "localhost");
        client.send_all();  // ClientHello
        ASSERT_TRUE(run_until(
            *loop,
            [&] {
                client.receive();
                client.send_all();
                return (events.starttls_ok == 1 && client.session.handshake_done()) || events.failed();
            },
            2s))
            << events.message;
        run_for(*loop, 10ms);  // the server's tickets
        // Close with a reset.
        const linger reset{1, 0};
        ::setsockopt(sockets.a, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        ::close(sockets.take_a());
        if (!reading) {
            run_for(*loop, 10ms);
            server.push_write(std::string(100, 'x'));
        }
        ASSERT_TRUE(run_until(
            *loop, [&] { return events.failed(); }, 2s));
        EXPECT_TRUE(events.error == std::errc::connection_reset || events.error == std::errc::broken_pipe)
            << events.error.message() << ": " << events.message;
        EXPECT_NE(events.message.find(reading ? "read failed" : "write failed"), std::string::npos) << events.message;
        EXPECT_EQ(events.fatal_errors, 1);
    }
}

ANYLOOP_INSTANTIATE_BACKENDS(TlsHandleTest);

}  // namespace
}  // namespace anyloop::test
