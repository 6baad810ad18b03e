// tls_example.hpp — what the TLS examples (tls_echo_server, tls_client)
// share beyond the command line: their TLS configuration from --cert, --key
// and --ca, and its errors reported on their own, so that an unusable file
// is not mistaken for a usage error.
#pragma once

#include <anyloop/tls/tls_context.hpp>

#include <iostream>
#include <memory>
#include <string>

namespace examples {

/// Options for a context of `role` that presents `certificate` (with `key`;
/// empty: the key is in the certificate file) and trusts the CAs in
/// `ca_file`; empty strings leave each at its default.
[[nodiscard]] inline anyloop::tls::TlsContextOptions context_options(anyloop::tls::TlsRole role,
                                                                     const std::string& certificate,
                                                                     const std::string& key,
                                                                     const std::string& ca_file) {
    anyloop::tls::TlsContextOptions options;
    options.role = role;
    options.certificate_file = certificate;
    options.private_key_file = key;
    options.ca_file = ca_file;
    return options;
}

/// TlsContext::create(options), or nullptr after printing "PROGRAM: REASON"
/// (naming the certificate, key or CA file that is missing, unreadable or
/// does not match) to stderr; the program then exits with status 2.
[[nodiscard]] inline std::shared_ptr<anyloop::tls::TlsContext> create_tls_context(
    const std::string& program, const anyloop::tls::TlsContextOptions& options) {
    try {
        return anyloop::tls::TlsContext::create(options);
    } catch (const anyloop::tls::TlsConfigError& error) {
        std::cerr << program << ": " << error.what() << "\n";
        return nullptr;
    }
}

}  // namespace examples
