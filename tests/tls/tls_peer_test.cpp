// TLS on a Handle against real peers, every backend: anyloop's server
// against `openssl s_client`, anyloop's client (tcp_connect) against
// `openssl s_server`, host-name verification, client certificates. The
// openssl command runs as a child process whose pipes the loop watches.
#include <anyloop/handle/connect.hpp>
#include <anyloop/handle/handle.hpp>
#include <anyloop/tls/tls_layer.hpp>

#include "tls/tls_handle_test_support.hpp"

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using namespace tls_handle;
using TlsPeerTest = LoopTest;

/// `openssl s_client` connecting to 127.0.0.1:port, verifying against ca.pem
/// only (so the server must send its intermediate), quiet: stdin goes to the
/// server, the server's data to stdout.
std::vector<std::string> s_client(std::uint16_t port, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> arguments = {"openssl",
                                          "s_client",
                                          "-connect",
                                          "127.0.0.1:" + std::to_string(port),
                                          "-CAfile",
                                          test_certificates().ca(),
                                          "-verify_return_error",
                                          "-quiet"};
    arguments.insert(arguments.end(), extra.begin(), extra.end());
    return arguments;
}

/// `openssl s_server` on a port of the kernel's choice, for one connection,
/// serving the usual localhost certificate. Not quiet: it prints
/// "ACCEPT [::]:PORT" first. Its stdin must stay open (EOF stops it), and a
/// line starting with a letter may be a command: send digits first.
std::vector<std::string> s_server(const std::vector<std::string>& extra = {}) {
    const TestCertificates& certs = test_certificates();
    std::vector<std::string> arguments = {"openssl", "s_server", "-accept",           "0",    "-naccept",
                                          "1",       "-cert",    certs.server_cert(), "-key", certs.server_key()};
    arguments.insert(arguments.end(), extra.begin(), extra.end());
    return arguments;
}

/// The port from s_server's "ACCEPT ...:PORT" line, once it was printed.
bool accept_port(const ChildProcess& child, std::uint16_t* port) {
    const std::size_t line = child.out().find("ACCEPT ");
    if (line == std::string::npos) return false;
    const std::size_t end = child.out().find('\n', line);
    if (end == std::string::npos) return false;
    const std::size_t colon = child.out().rfind(':', end);
    *port = static_cast<std::uint16_t>(std::stoi(child.out().substr(colon + 1, end - colon - 1)));
    return true;
}

/// Waits up to 3 s for s_server to print its port; a fatal failure, showing
/// what s_server printed, when it exits first.
void wait_for_accept_port(EventLoop& loop, ChildProcess& server, std::uint16_t& port) {
    ASSERT_TRUE(run_until(
        loop, [&] { return accept_port(server, &port) || server.exited(); }, 3s))
        << server.err();
    ASSERT_TRUE(accept_port(server, &port)) << server.out() << server.err();
}

#define SKIP_WITHOUT_OPENSSL(child) \
    if (!(child).started()) GTEST_SKIP() << "cannot run openssl: " << std::strerror((child).spawn_error)

TEST_P(TlsPeerTest, ServerServesItsChainToOpensslClientAndDataRoundTrips) {
    const TestCertificates& certs = test_certificates();
    TlsEchoServer server(*loop, server_context(certs.chained_full(), ""));  // key + leaf + intermediate
    ChildProcess client(*loop, s_client(server.port()));
    SKIP_WITHOUT_OPENSSL(client);
    client.write_stdin("hello from s_client\nsecond line\n");
    ASSERT_TRUE(run_until(
        *loop, [&] { return client.out().find("echo: second line\n") != std::string::npos || client.exited(); }, 3s))
        << client.err();
    EXPECT_EQ(client.out(), "echo: hello from s_client\necho: second line\n");
    ASSERT_EQ(server.connections.size(), 1U);
    TlsEchoServer::Connection& connection = server.last();
    EXPECT_EQ(connection.events.starttls_ok, 1);
    EXPECT_EQ(connection.lines, (std::vector<std::string>{"hello from s_client", "second line"}));

    // The server ends the conversation: close_notify, half-close; s_client
    // answers with its own close_notify and exits.
    connection.handle->push_shutdown();
    ASSERT_TRUE(run_until(
        *loop, [&] { return client.finished(); }, 3s))
        << client.err();
    EXPECT_EQ(client.exit_status(), 0) << client.err();
    EXPECT_EQ(client.err().find("verify error"), std::string::npos) << client.err();
    EXPECT_TRUE(run_until(
        *loop, [&] { return connection.events.eofs > 0 || connection.events.failed(); }, 2s));
    EXPECT_EQ(connection.events.message, "");
}

// The control for the case above: without the intermediate, s_client (which
// trusts the root only) cannot build the chain.
TEST_P(TlsPeerTest, ServerWithoutItsIntermediateFailsOpensslClientVerification) {
    const TestCertificates& certs = test_certificates();
    TlsEchoServer server(*loop, server_context(certs.chained_cert(), certs.chained_key()));  // leaf only
    ChildProcess client(*loop, s_client(server.port()));
    SKIP_WITHOUT_OPENSSL(client);
    ASSERT_TRUE(run_until(
        *loop, [&] { return client.finished(); }, 3s))
        << client.err();
    EXPECT_NE(client.exit_status(), 0);
    EXPECT_NE(client.err().find("unable to get local issuer certificate"), std::string::npos) << client.err();
    ASSERT_TRUE(run_until(
        *loop, [&] { return !server.connections.empty() && server.last().events.failed(); }, 2s));
    EXPECT_EQ(server.last().events.error, std::errc::protocol_error);
    EXPECT_NE(server.last().events.message.find("alert unknown ca"), std::string::npos) << server.last().events.message;
    EXPECT_EQ(server.last().events.starttls_failed, 1);
}

/// tcp_connect with TLS to `host`:`port`; the Handle (or the failure) lands in
/// the returned state.
struct Connected {
    std::unique_ptr<Handle> handle;
    Events events;
    std::string connect_error;
    bool done = false;
    std::vector<std::string> lines;
};

ConnectRequest connect_tls(EventLoop& loop, const std::string& host, std::uint16_t port,
                           std::shared_ptr<tls::TlsContext> context, const std::string& peername, Connected& out) {
    ConnectOptions options;
    options.timeout = 2s;
    options.handle = tls_options(TlsMode::connect, std::move(context), peername);
    return tcp_connect(loop, host, port, options,
                       [&out](std::unique_ptr<Handle> handle, std::error_code, const std::string& message) {
                           out.done = true;
                           out.handle = std::move(handle);
                           if (!out.handle) {
                               out.connect_error = message;
                               return;
                           }
                           out.events.watch(*out.handle);
                           collect_lines(*out.handle, out.lines);
                       });
}

TEST_P(TlsPeerTest, ClientVerifiesOpensslServerForLocalhostAndDataRoundTrips) {
    ChildProcess server(*loop, s_server());
    SKIP_WITHOUT_OPENSSL(server);
    std::uint16_t port = 0;
    ASSERT_NO_FATAL_FAILURE(wait_for_accept_port(*loop, server, port));

    Connected client;
    // No peername: tcp_connect verifies the host it was given.
    ConnectRequest request = connect_tls(*loop, "localhost", port, client_context(), "", client);
    ASSERT_TRUE(run_until(
        *loop, [&] { return client.events.starttls_ok + client.events.errors > 0 || (client.done && !client.handle); },
        3s));
    ASSERT_NE(client.handle, nullptr) << client.connect_error;
    ASSERT_EQ(client.events.starttls_ok, 1) << client.events.message;
    EXPECT_EQ(client.handle->options().peername, "localhost");
    const tls::TlsSession* session = tls::tls_session(*client.handle);
    ASSERT_NE(session, nullptr);
    EXPECT_TRUE(session->peer_certificate_verified());

    client.handle->push_write("42 hello from anyloop\n");
    server.write_stdin("42 hello from s_server\n");
    ASSERT_TRUE(run_until(
        *loop,
        [&] {
            return (!client.lines.empty() && server.out().find("42 hello from anyloop\n") != std::string::npos) ||
                   client.events.failed();
        },
        3s))
        << client.events.message << server.out();
    EXPECT_EQ(client.lines, std::vector<std::string>{"42 hello from s_server"});
    EXPECT_EQ(client.events.message, "");
}

TEST_P(TlsPeerTest, ClientRefusesOpensslServerForAWrongHostName) {
    ChildProcess server(*loop, s_server());
    SKIP_WITHOUT_OPENSSL(server);
    std::uint16_t port = 0;
    ASSERT_NO_FATAL_FAILURE(wait_for_accept_port(*loop, server, port));

    Connected client;
    ConnectRequest request = connect_tls(*loop, "127.0.0.1", port, client_context(), "wrong.example", client);
    ASSERT_TRUE(run_until(
        *loop, [&] { return client.events.errors > 0 || (client.done && !client.handle); }, 3s));
    ASSERT_NE(client.handle, nullptr) << client.connect_error;
    EXPECT_EQ(client.events.error, std::errc::protocol_error);
    EXPECT_EQ(client.events.fatal_errors, 1);
    EXPECT_NE(client.events.message.find("certificate verify failed: hostname mismatch (peer name 'wrong.example')"),
              std::string::npos)
        << client.events.message;
    EXPECT_EQ(client.events.starttls_failed, 1);
    EXPECT_EQ(client.events.starttls_ok, 0);
    EXPECT_NE(client.events.starttls_message.find("hostname mismatch"), std::string::npos);
    EXPECT_TRUE(client.handle->closed());
    // s_server hears why (our alert) and, with -naccept 1, exits.
    ASSERT_TRUE(run_until(
        *loop, [&] { return server.finished(); }, 3s));
    EXPECT_NE((server.out() + server.err()).find("alert bad certificate"), std::string::npos)
        << server.out() << server.err();
}

// anyloop's server requires a client certificate; s_client has none.
TEST_P(TlsPeerTest, ServerRequiresAClientCertificateThatOpensslClientLacks) {
    const TestCertificates& certs = test_certificates();
    TlsEchoServer server(*loop, server_context(certs.chained_full(), "", [&](tls::TlsContextOptions& options) {
        options.ca_file = certs.ca();
        options.client_certificates = tls::ClientCertificates::require;
    }));
    ChildProcess client(*loop, s_client(server.port()));
    SKIP_WITHOUT_OPENSSL(client);
    client.write_stdin("hello\n");
    ASSERT_TRUE(run_until(
        *loop, [&] { return client.finished(); }, 3s))
        << client.err();
    EXPECT_NE(client.exit_status(), 0);
    EXPECT_NE(client.err().find("alert certificate required"), std::string::npos) << client.err();
    EXPECT_EQ(client.out(), "");
    ASSERT_EQ(server.connections.size(), 1U);
    const Events& events = server.last().events;
    EXPECT_EQ(events.error, std::errc::protocol_error);
    EXPECT_NE(events.message.find("peer did not return a certificate"), std::string::npos) << events.message;
    EXPECT_EQ(events.starttls_failed, 1);
    EXPECT_TRUE(server.last().lines.empty());

    // With its certificate, the same s_client is served.
    ChildProcess good(*loop, s_client(server.port(), {"-cert", certs.client_cert(), "-key", certs.client_key()}));
    good.write_stdin("hello\n");
    ASSERT_TRUE(run_until(
        *loop, [&] { return good.out() == "echo: hello\n" || good.exited(); }, 3s))
        << good.err();
    EXPECT_EQ(good.out(), "echo: hello\n");
}

// s_server requires a client certificate; anyloop's client has none, then one.
TEST_P(TlsPeerTest, OpensslServerRequiresAClientCertificate) {
    const TestCertificates& certs = test_certificates();
    for (const bool with_certificate : {false, true}) {
        SCOPED_TRACE(with_certificate ? "with a client certificate" : "without one");
        ChildProcess server(*loop, s_server({"-Verify", "1", "-CAfile", certs.ca(), "-verify_return_error"}));
        SKIP_WITHOUT_OPENSSL(server);
        std::uint16_t port = 0;
        ASSERT_NO_FATAL_FAILURE(wait_for_accept_port(*loop, server, port));

        Connected client;
        ConnectRequest request = connect_tls(*loop, "127.0.0.1", port,
                                             client_context({},
                                                            [&](tls::TlsContextOptions& options) {
                                                                if (!with_certificate) return;
                                                                options.certificate_file = certs.client_cert();
                                                                options.private_key_file = certs.client_key();
                                                            }),
                                             "localhost", client);
        ASSERT_TRUE(run_until(
            *loop, [&] { return client.handle && client.events.starttls_ok + client.events.errors > 0; }, 3s));
        ASSERT_NE(client.handle, nullptr) << client.connect_error;
        // TLS 1.3: the client finishes its handshake before the server
        // judges its certificate; the refusal is an alert on the next read.
        client.handle->push_write("42 hello\n");
        if (!with_certificate) {
            ASSERT_TRUE(run_until(
                *loop, [&] { return client.events.failed(); }, 3s));
            EXPECT_EQ(client.events.error, std::errc::protocol_error);
            EXPECT_NE(client.events.message.find("alert certificate required"), std::string::npos)
                << client.events.message;
            ASSERT_TRUE(run_until(
                *loop, [&] { return server.finished(); }, 3s));
            EXPECT_NE((server.out() + server.err()).find("peer did not return a certificate"), std::string::npos)
                << server.out() << server.err();
        } else {
            ASSERT_TRUE(run_until(
                *loop, [&] { return server.out().find("42 hello\n") != std::string::npos || client.events.failed(); },
                3s))
                << client.events.message << server.err();
            EXPECT_EQ(client.events.message, "");
        }
    }
}

// Both ends anyloop: a client without a certificate against a server that
// requires one. Both report it.
TEST_P(TlsPeerTest, ClientCertificateRequiredAndMissingBetweenHandles) {
    const TestCertificates& certs = test_certificates();
    TcpPair sockets;
    Handle server(
        *loop, sockets.take_b(),
        tls_options(TlsMode::accept,
                    server_context(certs.server_cert(), certs.server_key(), [&](tls::TlsContextOptions& options) {
                        options.ca_file = certs.ca();
                        options.client_certificates = tls::ClientCertificates::require;
                    })));
    Handle client(*loop, sockets.take_a(), tls_options(TlsMode::connect, client_context(), "localhost"));
    Events server_events;
    Events client_events;
    server_events.watch(server);
    client_events.watch(client);
    client.push_write("hello\n");
    client.push_read(Reader::line([](Handle&, std::string_view) {}));
    ASSERT_TRUE(run_until(
        *loop, [&] { return server_events.failed() && client_events.failed(); }, 2s))
        << server_events.message << client_events.message;
    EXPECT_EQ(server_events.error, std::errc::protocol_error);
    EXPECT_NE(server_events.message.find("peer did not return a certificate"), std::string::npos)
        << server_events.message;
    EXPECT_EQ(server_events.starttls_failed, 1);
    EXPECT_EQ(client_events.error, std::errc::protocol_error);
    EXPECT_NE(client_events.message.find("alert certificate required"), std::string::npos) << client_events.message;
}

ANYLOOP_INSTANTIATE_BACKENDS(TlsPeerTest);

}  // namespace
}  // namespace anyloop::test
