// TLS test helpers shared by the tls/ tests and, later, the Handle's TLS
// tests: the test certificates made by make_certs.sh with the openssl command.
#pragma once

#include <filesystem>
#include <string>

namespace anyloop::test {

/// Paths of the test certificates (PEM; keys are EC P-256). See
/// tests/tls/make_certs.sh for how each one is made.
struct TestCertificates {
    std::filesystem::path dir;

    std::string file(const char* name) const { return (dir / name).string(); }

    std::string ca() const { return file("ca.pem"); }               ///< root CA "anyloop test CA"
    std::string ca_directory() const { return file("ca-dir"); }     ///< ca.pem, hashed
    std::string server_cert() const { return file("server.pem"); }  ///< localhost, 127.0.0.1, ::1; by ca
    std::string server_key() const { return file("server.key"); }
    std::string server_key_encrypted() const { return file("encrypted.key"); }  ///< password "secret"
    std::string chained_full() const { return file("chained-full.pem"); }       ///< key + leaf + intermediate
    std::string chained_cert() const { return file("chained.pem"); }            ///< leaf by the intermediate
    std::string chained_key() const { return file("chained.key"); }
    std::string client_cert() const { return file("client.pem"); }  ///< "anyloop test client"; by ca
    std::string client_key() const { return file("client.key"); }
    std::string other_ca() const { return file("other-ca.pem"); }               ///< an unrelated CA
    std::string other_client_cert() const { return file("other-client.pem"); }  ///< by other-ca
    std::string other_client_key() const { return file("other-client.key"); }
    std::string expired_cert() const { return file("expired.pem"); }  ///< localhost; by ca; expired 2020
    std::string expired_key() const { return file("expired.key"); }
    std::string self_signed_cert() const { return file("self-signed.pem"); }  ///< localhost, self-signed
    std::string self_signed_key() const { return file("self-signed.key"); }
    std::string garbage() const { return file("garbage.pem"); }  ///< not PEM
};

/// The test certificates, made on first use. A set is kept in the build tree
/// and shared by the test processes (each ctest case is its own process);
/// it is remade when make_certs.sh changes or the set is a month old.
/// Throws std::runtime_error with the script's output if generation fails.
const TestCertificates& test_certificates();

/// The whole content of a file (for the in-memory PEM options).
std::string read_text_file(const std::string& path);

}  // namespace anyloop::test
