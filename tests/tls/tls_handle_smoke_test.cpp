// TLS on a Handle over loopback, the first round: handshake, echo, stoptls.
#include <anyloop/handle/handle.hpp>
#include <anyloop/tls/tls_layer.hpp>

#include "handle/handle_test_support.hpp"
#include "tls/tls_test_support.hpp"

#include <memory>
#include <string>

namespace anyloop::test {
namespace {

using namespace handle_support;
using TlsHandleSmokeTest = LoopTest;

std::shared_ptr<tls::TlsContext> server_context() {
    const TestCertificates& certs = test_certificates();
    tls::TlsContextOptions options;
    options.role = tls::TlsRole::server;
    options.certificate_file = certs.server_cert();
    options.private_key_file = certs.server_key();
    return tls::TlsContext::create(options);
}

std::shared_ptr<tls::TlsContext> client_context() {
    tls::TlsContextOptions options;
    options.role = tls::TlsRole::client;
    options.ca_file = test_certificates().ca();
    return tls::TlsContext::create(options);
}

TEST_P(TlsHandleSmokeTest, EchoThenStoptls) {
    TcpPair pair;
    HandleOptions server_options;
    server_options.tls = TlsMode::accept;
    server_options.tls_ctx = server_context();
    Handle server(*loop, std::exchange(pair.b, -1), server_options);
    HandleOptions client_options;
    client_options.tls = TlsMode::connect;
    client_options.tls_ctx = client_context();
    client_options.peername = "localhost";
    Handle client(*loop, std::exchange(pair.a, -1), client_options);

    std::string errors;
    auto on_error = [&](Handle&, std::error_code, const std::string& message, bool) { errors += message + "\n"; };
    server.on_error(on_error);
    client.on_error(on_error);
    int started = 0;
    client.on_starttls([&](Handle&, bool ok, const std::string&) { started += ok ? 1 : 100; });
    server.on_starttls([&](Handle&, bool ok, const std::string&) { started += ok ? 1 : 100; });

    // Server: echo lines; "STOP" ends TLS (the client stops it too).
    server.on_stoptls([](Handle&) {});
    std::function<void(Handle&, std::string_view)> echo = [&](Handle& h, std::string_view line) {
        h.push_write(std::string(line) + "\n");
        h.push_read(Reader::line(echo));
    };
    server.push_read(Reader::line(echo));

    client.push_write("hello\n");
    std::string got;
    client.push_read(Reader::line([&](Handle&, std::string_view line) { got = line; }));
    ASSERT_TRUE(run_until(*loop, [&] { return !got.empty() || !errors.empty(); })) << errors;
    EXPECT_EQ(got, "hello");
    EXPECT_EQ(started, 2);
    EXPECT_TRUE(client.tls_established());
    ASSERT_NE(tls::tls_session(client), nullptr);
    EXPECT_TRUE(tls::tls_session(client)->peer_certificate_verified());

    bool stopped = false;
    client.on_stoptls([&](Handle&) { stopped = true; });
    client.stoptls();
    client.push_write("plain\n");
    got.clear();
    client.push_read(Reader::line([&](Handle&, std::string_view line) { got = line; }));
    ASSERT_TRUE(run_until(*loop, [&] { return !got.empty() || !errors.empty(); })) << errors;
    EXPECT_TRUE(stopped);
    EXPECT_EQ(got, "plain");
    EXPECT_EQ(client.layer(), nullptr);
    EXPECT_EQ(server.layer(), nullptr);
    EXPECT_EQ(errors, "");
}

ANYLOOP_INSTANTIATE_BACKENDS(TlsHandleSmokeTest);

}  // namespace
}  // namespace anyloop::test
