// TLS on a Handle, bad input, every backend: plaintext or garbage to a TLS
// server, a truncated handshake, expired / self-signed / untrusted server
// certificates, wrong host names, a client certificate from another CA.
// Each time: EPROTO with a reason, no crash, and the server (an accept loop
// on the loop's io watcher) still serves the next, good client.
#include <anyloop/handle/handle.hpp>
#include <anyloop/tls/tls_layer.hpp>

#include "tls/tls_handle_test_support.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using namespace tls_handle;
using TlsBadInputTest = LoopTest;

/// Sends `bytes` raw to the server, optionally closes, and waits for the
/// server's connection to fail. Returns that connection's events.
const Events& raw_client_fails(EventLoop& loop, TlsEchoServer& server, const std::string& bytes, bool close_after) {
    const std::size_t index = server.connections.size();
    int fd = connect_loopback(server.port());
    write_all(fd, bytes.data(), bytes.size());
    if (close_after) {
        ::close(fd);
        fd = -1;
    }
    std::optional<handle_support::RawPeer> peer;
    if (fd >= 0) peer.emplace(loop, fd);
    EXPECT_TRUE(run_until(
        loop,
        [&] {
            return server.connections.size() > index && server.connections[index]->events.failed() &&
                   (!peer || peer->done());
        },
        2s));
    peer.reset();
    if (fd >= 0) ::close(fd);
    static const Events none;
    return server.connections.size() > index ? server.connections[index]->events : none;
}

TEST_P(TlsBadInputTest, PlaintextHttpToATlsServer) {
    TlsEchoServer server(*loop, server_context());
    const Events& events = raw_client_fails(*loop, server, "GET / HTTP/1.0\r\n\r\n", false);
    EXPECT_EQ(events.error, std::errc::protocol_error);
    EXPECT_EQ(events.fatal_errors, 1);
    EXPECT_NE(events.message.find("TLS: "), std::string::npos) << events.message;
    EXPECT_NE(events.message.find("http request"), std::string::npos) << events.message;
    EXPECT_EQ(events.starttls_failed, 1);
    EXPECT_TRUE(server.last().handle->closed());
    std::string why;
    EXPECT_TRUE(echo_round_trip(*loop, server.port(), client_context(), "localhost", &why)) << why;
}

TEST_P(TlsBadInputTest, RandomGarbageToATlsServer) {
    TlsEchoServer server(*loop, server_context());
    for (std::uint32_t seed = 1; seed <= 3; ++seed) {
        const Events& events = raw_client_fails(*loop, server, handle_support::random_bytes(4096, seed), false);
        EXPECT_EQ(events.error, std::errc::protocol_error);
        EXPECT_GT(events.message.size(), std::string("TLS: \n").size()) << events.message;
        EXPECT_EQ(events.starttls_failed, 1);
    }
    std::string why;
    EXPECT_TRUE(echo_round_trip(*loop, server.port(), client_context(), "localhost", &why)) << why;
}

TEST_P(TlsBadInputTest, TruncatedHandshake) {
    TlsEchoServer server(*loop, server_context());
    tls::TlsSession hello(client_context(), {.peer_name = "localhost"});
    const std::span<const std::byte> client_hello = hello.pending_ciphertext();
    ASSERT_GT(client_hello.size(), 100U);
    const std::string half(reinterpret_cast<const char*>(client_hello.data()), client_hello.size() / 2);
    const Events& events = raw_client_fails(*loop, server, half, true);
    EXPECT_EQ(events.error, std::errc::protocol_error);
    EXPECT_NE(events.message.find("unexpected eof while reading"), std::string::npos) << events.message;
    EXPECT_EQ(events.starttls_failed, 1);
    std::string why;
    EXPECT_TRUE(echo_round_trip(*loop, server.port(), client_context(), "localhost", &why)) << why;
}

/// A TLS client Handle to the server that must fail; returns its events and
/// checks that the server's side failed too.
Events client_fails(EventLoop& loop, TlsEchoServer& server, std::shared_ptr<tls::TlsContext> context,
                    const std::string& peername) {
    const std::size_t index = server.connections.size();
    Handle client(loop, connect_loopback(server.port()), tls_options(TlsMode::connect, std::move(context), peername));
    Events events;
    events.watch(client);
    client.push_write("ping\n");
    client.push_read(Reader::line([](Handle&, std::string_view) {}));
    EXPECT_TRUE(run_until(
        loop,
        [&] {
            return events.failed() && server.connections.size() > index && server.connections[index]->events.failed();
        },
        2s))
        << events.message;
    EXPECT_EQ(events.error, std::errc::protocol_error);
    EXPECT_EQ(events.fatal_errors, 1);
    EXPECT_TRUE(client.closed());
    if (server.connections.size() > index) {
        const Events& served = server.connections[index]->events;
        EXPECT_EQ(served.error, std::errc::protocol_error);
        EXPECT_EQ(served.starttls_failed, 1);
        EXPECT_TRUE(server.connections[index]->lines.empty());
    }
    return events;
}

struct CertificateCase {
    const char* name;
    const char* certificate;  // file in the test set; the key is the .key beside it
    const char* client_ca;    // what the bad client trusts
    const char* peername;
    const char* reason;        // in the client's error message
    const char* server_hears;  // in the server's error message (the client's alert)
};

TEST_P(TlsBadInputTest, BadServerCertificatesNameTheReason) {
    const TestCertificates& certs = test_certificates();
    const CertificateCase cases[] = {
        {"expired", "expired", "ca.pem", "localhost", "certificate verify failed: certificate has expired",
         "alert certificate expired"},
        {"self-signed", "self-signed", "ca.pem", "localhost", "certificate verify failed: self-signed certificate",
         "alert unknown ca"},
        {"untrusted", "server", "other-ca.pem", "localhost",
         "certificate verify failed: unable to get local issuer certificate", "alert unknown ca"},
        {"wrong host name", "server", "ca.pem", "wrong.example",
         "certificate verify failed: hostname mismatch (peer name 'wrong.example')", "alert bad certificate"},
        {"wrong address", "server", "ca.pem", "10.1.2.3",
         "certificate verify failed: IP address mismatch (peer name '10.1.2.3')", "alert bad certificate"},
    };
    for (const CertificateCase& c : cases) {
        SCOPED_TRACE(c.name);
        const std::string base = certs.file(c.certificate);
        TlsEchoServer server(*loop, server_context(base.substr(0, base.size()) + ".pem", base + ".key"));
        const Events events = client_fails(*loop, server, client_context(certs.file(c.client_ca)), c.peername);
        EXPECT_NE(events.message.find(c.reason), std::string::npos) << events.message;
        EXPECT_EQ(events.starttls_failed, 1);
        EXPECT_NE(events.starttls_message.find(c.reason), std::string::npos) << events.starttls_message;
        if (!server.connections.empty()) {
            EXPECT_NE(server.last().events.message.find(c.server_hears), std::string::npos)
                << server.last().events.message;
        }

        // The server keeps serving: a client that accepts its certificate.
        std::shared_ptr<tls::TlsContext> good =
            std::string(c.certificate) == "server"
                ? client_context()
                : client_context({}, [](tls::TlsContextOptions& options) { options.verify_peer = false; });
        std::string why;
        EXPECT_TRUE(echo_round_trip(*loop, server.port(), good, "localhost", &why)) << why;
    }
}

TEST_P(TlsBadInputTest, ClientCertificateFromAnotherCa) {
    const TestCertificates& certs = test_certificates();
    TlsEchoServer server(*loop,
                         server_context(certs.server_cert(), certs.server_key(), [&](tls::TlsContextOptions& options) {
                             options.ca_file = certs.ca();
                             options.client_certificates = tls::ClientCertificates::require;
                         }));
    const Events events = client_fails(*loop, server,
                                       client_context({},
                                                      [&](tls::TlsContextOptions& options) {
                                                          options.certificate_file = certs.other_client_cert();
                                                          options.private_key_file = certs.other_client_key();
                                                      }),
                                       "localhost");
    EXPECT_NE(events.message.find("alert unknown ca"), std::string::npos) << events.message;
    EXPECT_NE(server.last().events.message.find("certificate verify failed"), std::string::npos)
        << server.last().events.message;

    std::string why;
    EXPECT_TRUE(echo_round_trip(*loop, server.port(),
                                client_context({},
                                               [&](tls::TlsContextOptions& options) {
                                                   options.certificate_file = certs.client_cert();
                                                   options.private_key_file = certs.client_key();
                                               }),
                                "localhost", &why))
        << why;
}

// A stream cut without close_notify is a truncation, not end of file: the
// complete records before it are delivered, then EPROTO.
TEST_P(TlsBadInputTest, StreamCutWithoutCloseNotify) {
    ClientAndSessionServer pair(*loop);
    auto& [sockets, client, events, lines, server] = pair;
    ASSERT_TRUE(pair.handshake(*loop)) << events.message;
    server.write("complete line\n");
    server.send_all();
    ::shutdown(sockets.b, SHUT_WR);
    ASSERT_TRUE(run_until(
        *loop, [&] { return events.failed() || events.eofs > 0; }, 2s));
    EXPECT_EQ(lines, std::vector<std::string>{"complete line"});
    EXPECT_EQ(events.eofs, 0);
    EXPECT_EQ(events.error, std::errc::protocol_error);
    EXPECT_NE(events.message.find("unexpected eof while reading"), std::string::npos) << events.message;
}

ANYLOOP_INSTANTIATE_BACKENDS(TlsBadInputTest);

}  // namespace
}  // namespace anyloop::test
