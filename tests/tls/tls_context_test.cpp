// TlsContext: configuration from files and memory, and the errors a bad
// configuration raises.
#include <anyloop/tls/tls_context.hpp>
#include <anyloop/tls/tls_session.hpp>

// The public headers must not drag OpenSSL into a user's program.
#if defined(OPENSSL_SSL_H) || defined(HEADER_SSL_H) || defined(OPENSSL_OPENSSLV_H)
#error "anyloop/tls public headers include OpenSSL"
#endif

#include "tls/tls_test_support.hpp"
#include "tls_session_pair.hpp"

#include <openssl/err.h>

#include <gtest/gtest.h>

#include <string>

namespace anyloop::test {
namespace {

using tls::ClientCertificates;
using tls::TlsConfigError;
using tls::TlsContext;
using tls::TlsContextOptions;
using tls::TlsRole;
using tls::TlsVersion;

/// Builds a context and returns the TlsConfigError message ("" if it built).
std::string config_error(const TlsContextOptions& options) {
    try {
        TlsContext context(options);
    } catch (const TlsConfigError& error) {
        EXPECT_EQ(ERR_peek_error(), 0UL) << "the error queue was left dirty";
        return error.what();
    }
    return {};
}

TlsContextOptions server_options() {
    const auto& certs = test_certificates();
    return {.role = TlsRole::server, .certificate_file = certs.server_cert(), .private_key_file = certs.server_key()};
}

TlsContextOptions client_options() {
    return {.role = TlsRole::client, .ca_file = test_certificates().ca()};
}

TEST(TlsContextConfig, ServerFromFiles) {
    auto context = TlsContext::create(server_options());
    EXPECT_EQ(context->role(), TlsRole::server);
    EXPECT_NE(context->native_handle(), nullptr);
    EXPECT_EQ(config_error(client_options()), "");
}

TEST(TlsContextConfig, MissingCertificateFileNamesTheFile) {
    auto options = server_options();
    options.certificate_file = test_certificates().file("no-such-cert.pem");
    const std::string message = config_error(options);
    EXPECT_NE(message.find("certificate_file '" + options.certificate_file + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
}

TEST(TlsContextConfig, MissingKeyFileNamesTheFile) {
    auto options = server_options();
    options.private_key_file = test_certificates().file("no-such-key.pem");
    const std::string message = config_error(options);
    EXPECT_NE(message.find("private_key_file '" + options.private_key_file + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
}

TEST(TlsContextConfig, KeyNotMatchingCertificateNamesBothFiles) {
    auto options = server_options();
    options.private_key_file = test_certificates().client_key();
    const std::string message = config_error(options);
    EXPECT_NE(message.find("does not match"), std::string::npos) << message;
    EXPECT_NE(message.find(options.private_key_file), std::string::npos) << message;
    EXPECT_NE(message.find(options.certificate_file), std::string::npos) << message;
    EXPECT_NE(message.find("key values mismatch"), std::string::npos) << message;
}

TEST(TlsContextConfig, BadPemNamesTheFileAndOpenSslReason) {
    auto options = server_options();
    options.certificate_file = test_certificates().garbage();
    const std::string message = config_error(options);
    EXPECT_NE(message.find("certificate_file '" + options.certificate_file + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("no start line"), std::string::npos) << message;
}

TEST(TlsContextConfig, KeyAndChainInOneFile) {
    auto context =
        TlsContext::create({.role = TlsRole::server, .certificate_file = test_certificates().chained_full()});
    // The chain is served: a client that trusts only the root verifies it.
    TlsSessionPair pair(TlsContext::create(client_options()), context, {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << pair.client.error_message() << " / " << pair.server.error_message();
    EXPECT_TRUE(pair.client.peer_certificate_verified());
    EXPECT_EQ(pair.client.peer_certificate_issuer(), "CN=anyloop test intermediate");
}

TEST(TlsContextConfig, LeafWithoutChainIsNotEnoughForTheClient) {
    const auto& certs = test_certificates();
    auto context = TlsContext::create(
        {.role = TlsRole::server, .certificate_file = certs.chained_cert(), .private_key_file = certs.chained_key()});
    TlsSessionPair pair(TlsContext::create(client_options()), context, {.peer_name = "localhost"});
    EXPECT_FALSE(pair.handshake());
    EXPECT_EQ(pair.client.error_message().rfind("certificate verify failed: unable to get local issuer certificate", 0),
              0U)
        << pair.client.error_message();
}

TEST(TlsContextConfig, IdentityAndTrustFromMemory) {
    const auto& certs = test_certificates();
    auto server = TlsContext::create({.role = TlsRole::server,
                                      .certificate_pem = read_text_file(certs.server_cert()),
                                      .private_key_pem = read_text_file(certs.server_key())});
    auto client = TlsContext::create({.role = TlsRole::client, .ca_pem = read_text_file(certs.ca())});
    TlsSessionPair pair(client, server, {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << pair.client.error_message() << " / " << pair.server.error_message();
    EXPECT_TRUE(pair.client.peer_certificate_verified());
}

TEST(TlsContextConfig, KeyAndCertificateInOnePemString) {
    const auto& certs = test_certificates();
    EXPECT_EQ(
        config_error({.role = TlsRole::server,
                      .certificate_pem = read_text_file(certs.server_key()) + read_text_file(certs.server_cert())}),
        "");
    const std::string message = config_error({.role = TlsRole::server, .certificate_pem = "not pem"});
    EXPECT_NE(message.find("certificate_pem"), std::string::npos) << message;
}

TEST(TlsContextConfig, EncryptedKeyNeedsItsPassword) {
    auto options = server_options();
    options.private_key_file = test_certificates().server_key_encrypted();
    std::string message = config_error(options);
    EXPECT_NE(message.find(options.private_key_file), std::string::npos) << message;
    EXPECT_NE(message.find("no private_key_password"), std::string::npos) << message;

    options.private_key_password = "wrong";
    message = config_error(options);
    EXPECT_NE(message.find(options.private_key_file), std::string::npos) << message;

    options.private_key_password = "secret";
    EXPECT_EQ(config_error(options), "");
}

TEST(TlsContextConfig, ServerWithoutCertificateIsRefused) {
    const std::string message = config_error({.role = TlsRole::server});
    EXPECT_NE(message.find("a server needs a certificate"), std::string::npos) << message;
}

TEST(TlsContextConfig, MissingCaFileAndDirectoryNameThePath) {
    auto options = client_options();
    options.ca_file = test_certificates().file("no-such-ca.pem");
    std::string message = config_error(options);
    EXPECT_NE(message.find("ca_file '" + options.ca_file + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;

    options.ca_file = test_certificates().garbage();
    message = config_error(options);
    EXPECT_NE(message.find("ca_file '" + options.ca_file + "'"), std::string::npos) << message;

    options.ca_file.clear();
    options.ca_directory = test_certificates().file("no-such-dir");
    message = config_error(options);
    EXPECT_NE(message.find("ca_directory '" + options.ca_directory + "'"), std::string::npos) << message;
}

TEST(TlsContextConfig, BadCipherSettingsAreRefused) {
    auto options = client_options();
    options.cipher_list = "NO-SUCH-CIPHER";
    std::string message = config_error(options);
    EXPECT_NE(message.find("cipher_list 'NO-SUCH-CIPHER'"), std::string::npos) << message;
    EXPECT_NE(message.find("no cipher match"), std::string::npos) << message;

    options = client_options();
    options.ciphersuites = "TLS_NO_SUCH_SUITE";
    message = config_error(options);
    EXPECT_NE(message.find("ciphersuites 'TLS_NO_SUCH_SUITE'"), std::string::npos) << message;
}

TEST(TlsContextConfig, BadAlpnAndVersionRangeAreRefused) {
    auto options = client_options();
    options.alpn_protocols = {"h2", ""};
    EXPECT_NE(config_error(options).find("alpn_protocols"), std::string::npos);

    options = client_options();
    options.min_version = TlsVersion::tls1_3;
    options.max_version = TlsVersion::tls1_2;
    const std::string message = config_error(options);
    EXPECT_NE(message.find("max_version TLSv1.2"), std::string::npos) << message;
    EXPECT_NE(message.find("below min_version TLSv1.3"), std::string::npos) << message;
}

TEST(TlsContextConfig, CaDirectory) {
    auto client = TlsContext::create({.role = TlsRole::client, .ca_directory = test_certificates().ca_directory()});
    TlsSessionPair pair(client, TlsContext::create(server_options()), {.peer_name = "localhost"});
    ASSERT_TRUE(pair.handshake()) << pair.client.error_message();
    EXPECT_TRUE(pair.client.peer_certificate_verified());
}

TEST(TlsContextConfig, SystemStoreDoesNotTrustTheTestCa) {
    // verify on and no CA given: the system store, which knows nothing of ours.
    auto client = TlsContext::create({.role = TlsRole::client});
    TlsSessionPair pair(client, TlsContext::create(server_options()), {.peer_name = "localhost"});
    EXPECT_FALSE(pair.handshake());
    EXPECT_EQ(pair.client.error_message().rfind("certificate verify failed: unable to get local issuer certificate", 0),
              0U)
        << pair.client.error_message();
}

TEST(TlsContextConfig, BadPeerNameIsRefused) {
    auto client = TlsContext::create(client_options());
    EXPECT_THROW(tls::TlsSession(client, {.peer_name = std::string("bad\0name", 8)}), std::invalid_argument);
}

}  // namespace
}  // namespace anyloop::test
