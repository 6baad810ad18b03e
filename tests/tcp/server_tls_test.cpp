// TLS per listener on every backend: the callbacks see plaintext, a TLS
// listener sits beside a plain one, the PROXY header comes before the
// handshake, and a client that does not speak TLS costs only its own
// connection.
#include <anyloop/tcp/proxy_protocol.hpp>
#include <anyloop/tcp/server.hpp>
#include <anyloop/tls/tls_layer.hpp>

#include "tcp/server_test_support.hpp"
#include "tls/tls_handle_test_support.hpp"

#include <string>

namespace anyloop::tcp::test {
namespace {

using ServerTlsTest = LoopTest;

std::uint16_t port_of(const std::string& address) {
    return static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
}

/// A TLS client Handle on 127.0.0.1:port that sends `line` and keeps the first line back.
struct TlsLineClient {
    TlsLineClient(EventLoop& loop, int fd, const std::string& line)
        : handle(loop, fd, anyloop::test::tls_handle::tls_options(TlsMode::connect, anyloop::test::tls_handle::client_context(), "localhost")) {
        handle.on_error([this](Handle&, std::error_code, const std::string& message, bool) { error = message; });
        handle.push_write(line);
        handle.push_read(Reader::line([this](Handle&, std::string_view reply) { this->reply = reply; }));
    }
    [[nodiscard]] bool done() const { return !reply.empty() || !error.empty(); }
    Handle handle;
    std::string reply;
    std::string error;
};

TEST_P(ServerTlsTest, ATlsListenerBesideAPlainOneBothEcho) {
    Served served(*loop, [](ServerOptions& options) {
        options.listeners = {ListenerOptions{.address = "127.0.0.1:0", .tls_ctx = anyloop::test::tls_handle::server_context()},
                             ListenerOptions{.address = "127.0.0.1:0"}};
    });
    auto& [log, counts, server] = served;
    std::string seen;
    server.on_input([&](Connection& connection, std::string_view record) {
        seen += std::string(record) + ";";
        connection.send(record);
    });
    server.start();
    ASSERT_EQ(server.addresses().size(), 2U);

    TlsLineClient secure(*loop, connect_tcp("127.0.0.1", port_of(server.addresses()[0])), "over tls\n");
    Peer plain(*loop, connect_tcp("127.0.0.1", port_of(server.addresses()[1])));
    plain.send("in the clear\n");
    ASSERT_TRUE(run_until(*loop, [&] { return secure.done() && plain.received == "in the clear\n"; }, 5s))
        << secure.error << " / " << plain.received << " / " << log.all();
    EXPECT_EQ(secure.error, "");
    EXPECT_EQ(secure.reply, "over tls");
    ASSERT_NE(tls::tls_session(secure.handle), nullptr);
    EXPECT_TRUE(tls::tls_session(secure.handle)->peer_certificate_verified());
    EXPECT_NE(seen.find("over tls;"), std::string::npos) << seen;
    EXPECT_NE(seen.find("in the clear;"), std::string::npos) << seen;
    EXPECT_EQ(counts.connected, 2);

    secure.handle.close();
    plain.close();
    ASSERT_TRUE(shut_down(*loop, server));
    EXPECT_EQ(counts.disconnected, 2);
    expect_loop_empty();
}

TEST_P(ServerTlsTest, TheProxyHeaderComesBeforeTheHandshake) {
    Served served(*loop, [](ServerOptions& options) {
        options.listeners[0].proxy_protocol = true;
        options.listeners[0].tls_ctx = anyloop::test::tls_handle::server_context();
    });
    auto& [log, counts, server] = served;
    server.on_input([](Connection& connection, std::string_view) {
        connection.send(connection.remote_address() + " " + std::to_string(connection.remote_port()));
    });
    server.start();

    socklen_t length = 0;
    const sockaddr_storage source = make_address("203.0.113.9", 4321, length);
    const sockaddr_storage destination = make_address("127.0.0.1", server.port(), length);
    const int fd = connect_tcp("127.0.0.1", server.port());
    const std::string header = make_proxy_v2(reinterpret_cast<const sockaddr*>(&source),
                                             reinterpret_cast<const sockaddr*>(&destination));
    anyloop::test::write_all(fd, header.data(), header.size());
    TlsLineClient client(*loop, fd, "who\n");
    ASSERT_TRUE(run_until(*loop, [&] { return client.done(); }, 5s)) << log.all();
    EXPECT_EQ(client.error, "");
    EXPECT_EQ(client.reply, "203.0.113.9 4321");

    client.handle.close();
    ASSERT_TRUE(shut_down(*loop, server));
    expect_loop_empty();
}

TEST_P(ServerTlsTest, APlaintextClientOnATlsListenerLosesOnlyItsConnection) {
    Served served(*loop, [](ServerOptions& options) {
        options.listeners[0].tls_ctx = anyloop::test::tls_handle::server_context();
    });
    auto& [log, counts, server] = served;
    std::string errors;
    server.on_error([&](Connection&, std::error_code error, const std::string& message) {
        if (error == std::errc::protocol_error) errors += message + "\n";
    });
    server.start();

    Peer garbage(*loop, connect_tcp("127.0.0.1", server.port()));
    garbage.send("GET / HTTP/1.0\r\n\r\n");
    ASSERT_TRUE(run_until(*loop, [&] { return !errors.empty() && garbage.closed_by_server(); }, 5s)) << log.all();
    EXPECT_NE(errors.find("TLS"), std::string::npos) << errors;

    TlsLineClient good(*loop, connect_tcp("127.0.0.1", server.port()), "still there\n");
    ASSERT_TRUE(run_until(*loop, [&] { return good.done(); }, 5s)) << log.all();
    EXPECT_EQ(good.error, "");
    EXPECT_EQ(good.reply, "still there");

    good.handle.close();
    garbage.close();
    ASSERT_TRUE(shut_down(*loop, server));
    expect_loop_empty();
}

TEST_P(ServerTlsTest, AClientContextOnAListenerIsRefusedAtOnce) {
    ServerOptions options;
    options.listeners = {ListenerOptions{.address = "127.0.0.1:0", .tls_ctx = anyloop::test::tls_handle::client_context()}};
    EXPECT_THROW(TcpServer(*loop, std::move(options)), std::invalid_argument);
}

ANYLOOP_INSTANTIATE_BACKENDS(ServerTlsTest);

}  // namespace
}  // namespace anyloop::tcp::test
