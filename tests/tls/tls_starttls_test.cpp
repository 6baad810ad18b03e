// starttls and stoptls on a Handle over loopback, every backend: an
// SMTP-style STARTTLS after a plaintext greeting (through a relay that
// records the wire), stoptls back to plaintext from either side, plaintext
// right behind the peer's close_notify, and a ClientHello already buffered
// behind the command.
#include <anyloop/handle/handle.hpp>
#include <anyloop/tls/tls_layer.hpp>

#include "tls/tls_handle_test_support.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using namespace tls_handle;
using TlsStarttlsTest = LoopTest;

// SMTP-style STARTTLS through a relay that records the wire, then stoptls.
class StarttlsScenario {
public:
    explicit StarttlsScenario(EventLoop& loop)
        : relay(loop, to_relay.take_b(), from_relay.take_a()),
          server(loop, from_relay.take_b(), plain_options(server_context())),
          client(loop, to_relay.take_a(), plain_options(client_context(), "localhost")) {
        server_events.watch(server);
        client_events.watch(client);
        server.on_stoptls([this](Handle&) { ++server_stopped; });
        client.on_stoptls([this](Handle&) { ++client_stopped; });

        // Server: greeting; on STARTTLS a go-ahead, then TLS; then echo lines.
        server.push_write("220 ready\r\n");
        server.push_read(Reader::line([this](Handle& h, std::string_view line) {
            commands.emplace_back(line);
            h.push_write("220 go ahead\r\n");
            h.starttls(TlsMode::accept);
            h.push_read(Reader::line(server_echo));
        }));
        server_echo = [this](Handle& h, std::string_view line) {
            commands.emplace_back(line);
            if (line == "STOP") {
                // Server-initiated stoptls: this reply follows the close_notify, plain.
                h.stoptls();
                h.push_write("PLAIN-AFTER-SERVER-STOP\r\n");
            } else {
                h.push_write("echo: " + std::string(line) + "\r\n");
            }
            h.push_read(Reader::line(server_echo));
        };

        // Client: wait for the greeting, ask for TLS, upgrade after the go-ahead.
        client.push_read(Reader::line([this](Handle& h, std::string_view line) {
            replies.emplace_back(line);
            h.push_write("STARTTLS\r\n");
            h.push_read(Reader::line([this](Handle& h2, std::string_view reply) {
                replies.emplace_back(reply);
                h2.starttls(TlsMode::connect);
                h2.push_write("SECRET-PAYLOAD-1\r\n");
                h2.push_read(Reader::line(client_collect));
            }));
        }));
        client_collect = [this](Handle& h, std::string_view line) {
            replies.emplace_back(line);
            h.push_read(Reader::line(client_collect));
        };
    }

    static HandleOptions plain_options(std::shared_ptr<tls::TlsContext> context, std::string peername = {}) {
        HandleOptions options = tls_options(TlsMode::none, std::move(context), std::move(peername));
        return options;
    }
    [[nodiscard]] bool failed() const { return server_events.failed() || client_events.failed(); }
    [[nodiscard]] std::string errors() const { return server_events.message + client_events.message; }
    bool wait_for_replies(EventLoop& loop, std::size_t count) {
        return run_until(
            loop, [&] { return replies.size() >= count || failed(); }, 2s);
    }

    /// Through STARTTLS and one encrypted round trip.
    void upgrade(EventLoop& loop) {
        ASSERT_TRUE(wait_for_replies(loop, 3)) << errors();
        EXPECT_EQ(replies, (std::vector<std::string>{"220 ready", "220 go ahead", "echo: SECRET-PAYLOAD-1"}));
        EXPECT_EQ(commands, (std::vector<std::string>{"STARTTLS", "SECRET-PAYLOAD-1"}));
        EXPECT_TRUE(client.tls_established());
        EXPECT_TRUE(server.tls_established());
        ASSERT_NE(tls::tls_session(client), nullptr);
        EXPECT_TRUE(tls::tls_session(client)->handshake_done());
        EXPECT_TRUE(tls::tls_session(client)->peer_certificate_verified());
        EXPECT_EQ(client_events.starttls_ok, 1);
        EXPECT_EQ(server_events.starttls_ok, 1);
        // The greeting and the command went plain; the payload did not.
        EXPECT_NE(relay.right_to_left().find("220 ready\r\n220 go ahead\r\n"), std::string::npos);
        EXPECT_NE(relay.left_to_right().find("STARTTLS\r\n"), std::string::npos);
        EXPECT_EQ(relay.left_to_right().find("SECRET-PAYLOAD"), std::string::npos);
        EXPECT_EQ(relay.right_to_left().find("SECRET-PAYLOAD"), std::string::npos);
    }

    /// After stoptls: plaintext both ways, visible on the wire.
    void check_plain_both_ways(EventLoop& loop, std::size_t replies_before) {
        EXPECT_EQ(client.layer(), nullptr);
        EXPECT_EQ(server.layer(), nullptr);
        EXPECT_EQ(client_stopped, 1);
        EXPECT_EQ(server_stopped, 1);
        client.push_write("PLAIN-FROM-CLIENT\r\n");
        ASSERT_TRUE(wait_for_replies(loop, replies_before + 1)) << errors();
        EXPECT_EQ(replies.back(), "echo: PLAIN-FROM-CLIENT");
        server.push_write("PLAIN-FROM-SERVER\r\n");
        ASSERT_TRUE(wait_for_replies(loop, replies_before + 2)) << errors();
        EXPECT_EQ(replies.back(), "PLAIN-FROM-SERVER");
        EXPECT_NE(relay.left_to_right().find("PLAIN-FROM-CLIENT\r\n"), std::string::npos);
        EXPECT_NE(relay.right_to_left().find("echo: PLAIN-FROM-CLIENT\r\nPLAIN-FROM-SERVER\r\n"), std::string::npos);
        EXPECT_EQ(errors(), "");
    }

    Events server_events;
    Events client_events;
    int server_stopped = 0;
    int client_stopped = 0;
    std::vector<std::string> commands;  // lines the server read
    std::vector<std::string> replies;   // lines the client read
    std::function<void(Handle&, std::string_view)> server_echo;
    std::function<void(Handle&, std::string_view)> client_collect;
    TcpPair to_relay;
    TcpPair from_relay;
    RecordingRelay relay;
    Handle server;
    Handle client;
};

TEST_P(TlsStarttlsTest, StarttlsAfterPlaintextGreetingThenClientStoptls) {
    StarttlsScenario s(*loop);
    s.upgrade(*loop);
    if (HasFatalFailure()) return;
    s.client.stoptls();
    s.client.push_write("PLAIN-AFTER-CLIENT-STOP\r\n");  // after the close_notify, plain
    ASSERT_TRUE(s.wait_for_replies(*loop, 4)) << s.errors();
    EXPECT_EQ(s.replies.back(), "echo: PLAIN-AFTER-CLIENT-STOP");
    EXPECT_NE(s.relay.left_to_right().find("PLAIN-AFTER-CLIENT-STOP\r\n"), std::string::npos);
    s.check_plain_both_ways(*loop, 4);
}

TEST_P(TlsStarttlsTest, StarttlsAfterPlaintextGreetingThenServerStoptls) {
    StarttlsScenario s(*loop);
    s.upgrade(*loop);
    if (HasFatalFailure()) return;
    s.client.push_write("STOP\r\n");  // encrypted; the server answers with stoptls
    ASSERT_TRUE(s.wait_for_replies(*loop, 4)) << s.errors() << "layers left: client " << (s.client.layer() != nullptr)
                                              << ", server " << (s.server.layer() != nullptr);
    EXPECT_EQ(s.replies.back(), "PLAIN-AFTER-SERVER-STOP");
    EXPECT_EQ(s.relay.left_to_right().find("STOP\r\n"), std::string::npos);
    EXPECT_NE(s.relay.right_to_left().find("PLAIN-AFTER-SERVER-STOP\r\n"), std::string::npos);
    s.check_plain_both_ways(*loop, 4);
}

// The peer's stoptls with plaintext right behind its close_notify, in one
// write: those bytes are the first plain input, not TLS.
TEST_P(TlsStarttlsTest, PlaintextRightBehindThePeersCloseNotifyIsPlainInput) {
    ClientAndSessionServer pair(*loop);
    auto& [sockets, client, events, lines, server] = pair;
    int stopped = 0;
    client.on_stoptls([&](Handle&) { ++stopped; });
    ASSERT_TRUE(pair.handshake(*loop)) << events.message;
    server.write("over tls\n");
    server.session.shutdown();
    std::vector<std::byte> wire = server.session.take_ciphertext();
    const std::string plain = "plain right behind\n";
    const auto* plain_bytes = reinterpret_cast<const std::byte*>(plain.data());
    wire.insert(wire.end(), plain_bytes, plain_bytes + plain.size());
    write_all(sockets.b, wire.data(), wire.size());

    ASSERT_TRUE(run_until(
        *loop, [&] { return lines.size() >= 2 || events.failed(); }, 2s))
        << events.message;
    EXPECT_EQ(lines, (std::vector<std::string>{"over tls", "plain right behind"}));
    EXPECT_EQ(stopped, 1);
    EXPECT_EQ(client.layer(), nullptr);
    // Our close_notify answered the peer's; what we write now follows it, plain.
    client.push_write("plain reply\n");
    ASSERT_TRUE(run_until(
        *loop, [&] { return server.after_close.size() >= 12 || server.session.failed(); }, 2s));
    EXPECT_TRUE(server.session.close_complete());
    EXPECT_EQ(server.after_close, "plain reply\n");
    EXPECT_EQ(events.message, "");
}

// starttls with the peer's first TLS bytes already read: the client sends
// its command and its ClientHello back to back, so the server's read holds
// both and the rest of the input after the command is the layer's.
TEST_P(TlsStarttlsTest, StarttlsWithTheClientHelloBufferedBehindTheCommand) {
    TcpPair sockets;
    Handle server(*loop, sockets.take_b(), tls_options(TlsMode::none, server_context()));
    Handle client(*loop, sockets.take_a(), tls_options(TlsMode::none, client_context(), "localhost"));
    Events server_events;
    Events client_events;
    server_events.watch(server);
    client_events.watch(client);
    std::vector<std::string> commands;
    std::function<void(Handle&, std::string_view)> echo = [&](Handle& h, std::string_view line) {
        commands.emplace_back(line);
        h.push_write("echo: " + std::string(line) + "\n");
        h.push_read(Reader::line(echo));
    };
    server.push_read(Reader::line([&](Handle& h, std::string_view line) {
        commands.emplace_back(line);
        h.starttls(TlsMode::accept);
        h.push_read(Reader::line(echo));
    }));
    client.push_write("STARTTLS\r\n");
    client.starttls(TlsMode::connect);
    client.push_write("hello\n");
    std::string reply;
    client.push_read(Reader::line([&](Handle&, std::string_view line) { reply = line; }));
    ASSERT_TRUE(run_until(
        *loop, [&] { return !reply.empty() || server_events.failed() || client_events.failed(); }, 2s))
        << server_events.message << client_events.message;
    EXPECT_EQ(reply, "echo: hello");
    EXPECT_EQ(commands, (std::vector<std::string>{"STARTTLS", "hello"}));
    EXPECT_TRUE(server.tls_established());
    EXPECT_TRUE(client.tls_established());
}

ANYLOOP_INSTANTIATE_BACKENDS(TlsStarttlsTest);

}  // namespace
}  // namespace anyloop::test
