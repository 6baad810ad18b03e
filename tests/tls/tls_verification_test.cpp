// Certificate verification between paired TlsSessions: peer names, client
// certificates, and the clear errors for bad certificates.
#include <anyloop/tls/tls_session.hpp>

#include "tls/tls_test_support.hpp"
#include "tls_session_pair.hpp"

#include <openssl/err.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <string>

namespace anyloop::test {
namespace {

using tls::ClientCertificates;
using tls::TlsContext;
using tls::TlsContextOptions;
using tls::TlsRole;

std::shared_ptr<TlsContext> server_with(const std::string& cert, const std::string& key,
                                        ClientCertificates client_certificates = ClientCertificates::none) {
    return TlsContext::create({.role = TlsRole::server,
                               .certificate_file = cert,
                               .private_key_file = key,
                               .ca_file = test_certificates().ca(),
                               .client_certificates = client_certificates});
}

std::shared_ptr<TlsContext> default_server() {
    return server_with(test_certificates().server_cert(), test_certificates().server_key());
}

std::shared_ptr<TlsContext> client_trusting(const std::string& ca, TlsContextOptions options = {}) {
    options.role = TlsRole::client;
    options.ca_file = ca;
    return TlsContext::create(options);
}

std::shared_ptr<TlsContext> default_client() {
    return client_trusting(test_certificates().ca());
}

std::string describe(const TlsSessionPair& pair) {
    return "client: '" + pair.client.error_message() + "', server: '" + pair.server.error_message() + "'";
}

bool starts_with(const std::string& text, const std::string& prefix) {
    return text.rfind(prefix, 0) == 0;
}

/// A failed handshake: EPROTO on the failing side, the given message, and a
/// clean error queue afterwards.
void expect_client_refuses(TlsSessionPair& pair, const std::string& message) {
    EXPECT_FALSE(pair.handshake());
    EXPECT_TRUE(pair.client.failed());
    EXPECT_EQ(pair.client.error(), std::make_error_code(std::errc::protocol_error));
    EXPECT_EQ(pair.client.error().value(), EPROTO);
    EXPECT_TRUE(starts_with(pair.client.error_message(), message)) << describe(pair);
    // The client told the server why, with an alert.
    EXPECT_TRUE(pair.server.failed());
    EXPECT_NE(pair.server.error_message().find("alert"), std::string::npos) << describe(pair);
    EXPECT_EQ(ERR_peek_error(), 0UL);
}

TEST(TlsVerification, HostNamePasses) {
    TlsSessionPair pair(default_client(), default_server(), {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    EXPECT_TRUE(pair.client.peer_certificate_verified());
    EXPECT_EQ(pair.client.peer_name(), "localhost");
    EXPECT_EQ(pair.server.server_name(), "localhost") << "the peer name went out as SNI";
}

TEST(TlsVerification, HostNameMismatchFailsClearly) {
    TlsSessionPair pair(default_client(), default_server(), {.peer_name = "wrong.example"});
    expect_client_refuses(pair, "certificate verify failed: hostname mismatch");
    EXPECT_NE(pair.client.error_message().find("'wrong.example'"), std::string::npos) << describe(pair);
    EXPECT_FALSE(pair.client.handshake_done());
}

TEST(TlsVerification, IpAddressPeerName) {
    for (const char* address : {"127.0.0.1", "::1", "[::1]"}) {
        SCOPED_TRACE(address);
        TlsSessionPair pair(default_client(), default_server(), {.peer_name = address});
        ASSERT_TRUE(pair.handshake()) << describe(pair);
        EXPECT_TRUE(pair.client.peer_certificate_verified());
        EXPECT_EQ(pair.server.server_name(), "") << "no SNI for an address";
    }
    TlsSessionPair pair(default_client(), default_server(), {.peer_name = "10.1.2.3"});
    expect_client_refuses(pair, "certificate verify failed: IP address mismatch");
    EXPECT_NE(pair.client.error_message().find("'10.1.2.3'"), std::string::npos) << describe(pair);
}

TEST(TlsVerification, NoPeerNameChecksTheChainOnly) {
    TlsSessionPair pair(default_client(), default_server());
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    EXPECT_TRUE(pair.client.peer_certificate_verified());
    EXPECT_EQ(pair.server.server_name(), "");
}

TEST(TlsVerification, ExpiredCertificate) {
    TlsSessionPair pair(default_client(),
                        server_with(test_certificates().expired_cert(), test_certificates().expired_key()),
                        {.peer_name = "localhost"});
    expect_client_refuses(pair, "certificate verify failed: certificate has expired");
}

TEST(TlsVerification, SelfSignedCertificate) {
    TlsSessionPair pair(default_client(),
                        server_with(test_certificates().self_signed_cert(), test_certificates().self_signed_key()),
                        {.peer_name = "localhost"});
    expect_client_refuses(pair, "certificate verify failed: self-signed certificate");
}

TEST(TlsVerification, UntrustedCertificate) {
    // The server sends its chain up to the root it knows (its ca_file), a
    // root the client does not trust.
    TlsSessionPair pair(client_trusting(test_certificates().other_ca()), default_server(), {.peer_name = "localhost"});
    expect_client_refuses(pair, "certificate verify failed: self-signed certificate in certificate chain");
}

TEST(TlsVerification, VerifyOffAcceptsAnyCertificate) {
    TlsSessionPair pair(client_trusting(test_certificates().other_ca(), {.verify_peer = false}),
                        server_with(test_certificates().self_signed_cert(), test_certificates().self_signed_key()),
                        {.peer_name = "wrong.example"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    EXPECT_FALSE(pair.client.peer_certificate_verified()) << "accepted, but not verified";
    EXPECT_EQ(pair.client.peer_certificate_subject(), "CN=localhost");
}

std::shared_ptr<TlsContext> client_with_certificate(const std::string& cert, const std::string& key) {
    return TlsContext::create({.role = TlsRole::client,
                               .certificate_file = cert,
                               .private_key_file = key,
                               .ca_file = test_certificates().ca()});
}

TEST(TlsVerification, ClientCertificateRequiredAndPresent) {
    const auto& certs = test_certificates();
    TlsSessionPair pair(client_with_certificate(certs.client_cert(), certs.client_key()),
                        server_with(certs.server_cert(), certs.server_key(), ClientCertificates::require),
                        {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << describe(pair);
    EXPECT_EQ(pair.server.peer_certificate_subject(), "CN=anyloop test client");
    EXPECT_TRUE(pair.server.peer_certificate_verified());
    pair.client.write_plaintext(to_bytes("authenticated"));
    pair.pump();
    EXPECT_EQ(to_string(pair.server_received), "authenticated");
}

TEST(TlsVerification, ClientCertificateRequiredAndMissing) {
    const auto& certs = test_certificates();
    TlsSessionPair pair(default_client(),
                        server_with(certs.server_cert(), certs.server_key(), ClientCertificates::require),
                        {.peer_name = "localhost"});
    pair.pump();
    EXPECT_TRUE(pair.server.failed());
    EXPECT_EQ(pair.server.error(), std::make_error_code(std::errc::protocol_error));
    EXPECT_EQ(pair.server.error_message(), "peer did not return a certificate");
    // A TLS 1.3 client finishes its side first and learns of the refusal
    // from the server's alert.
    EXPECT_TRUE(pair.client.failed());
    EXPECT_EQ(pair.client.error_message(), "tlsv13 alert certificate required");
    EXPECT_EQ(ERR_peek_error(), 0UL);
}

TEST(TlsVerification, ClientCertificateFromUnrelatedCaIsRefused) {
    const auto& certs = test_certificates();
    TlsSessionPair pair(client_with_certificate(certs.other_client_cert(), certs.other_client_key()),
                        server_with(certs.server_cert(), certs.server_key(), ClientCertificates::request),
                        {.peer_name = "localhost"});
    pair.pump();
    EXPECT_TRUE(pair.server.failed());
    EXPECT_TRUE(starts_with(pair.server.error_message(), "certificate verify failed: unable to get local issuer"))
        << describe(pair);
    EXPECT_TRUE(pair.client.failed());
    EXPECT_NE(pair.client.error_message().find("alert"), std::string::npos) << describe(pair);
}

TEST(TlsVerification, ClientCertificateRequestedIsOptional) {
    const auto& certs = test_certificates();
    auto server = server_with(certs.server_cert(), certs.server_key(), ClientCertificates::request);
    {
        TlsSessionPair pair(default_client(), server, {.peer_name = "localhost"});
        ASSERT_TRUE(pair.handshake()) << describe(pair);
        EXPECT_EQ(pair.server.peer_certificate_subject(), "");
        EXPECT_FALSE(pair.server.peer_certificate_verified());
    }
    {
        TlsSessionPair pair(client_with_certificate(certs.client_cert(), certs.client_key()), server,
                            {.peer_name = "localhost"});
        ASSERT_TRUE(pair.handshake()) << describe(pair);
        EXPECT_EQ(pair.server.peer_certificate_subject(), "CN=anyloop test client");
        EXPECT_TRUE(pair.server.peer_certificate_verified());
    }
}

TEST(TlsVerification, ResumedSessionKeepsPeerIdentity) {
    auto client = default_client();
    auto server = default_server();
    for (int i = 0; i < 2; ++i) {
        TlsSessionPair pair(client, server, {.peer_name = "localhost"});
        ASSERT_TRUE(pair.handshake()) << describe(pair);
        pair.pump();
        EXPECT_EQ(pair.client.session_reused(), i == 1);
        EXPECT_TRUE(pair.client.peer_certificate_verified());
        EXPECT_EQ(pair.client.peer_certificate_subject(), "CN=localhost");
    }
}

}  // namespace
}  // namespace anyloop::test
