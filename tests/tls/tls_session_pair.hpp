// Two TlsSessions joined back to back in memory, as a socket pair would join
// them: what one sends is fed to the other.
#pragma once

#include <anyloop/tls/tls_context.hpp>
#include <anyloop/tls/tls_session.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace anyloop::test {

using Bytes = std::vector<std::byte>;

/// The session tests' contexts: the server of server.pem, a client
/// trusting ca.pem; `options` adds to them (the role and files are set here).
std::shared_ptr<tls::TlsContext> server_context(tls::TlsContextOptions options = {});
std::shared_ptr<tls::TlsContext> client_context(tls::TlsContextOptions options = {});

Bytes to_bytes(std::string_view text);
std::string to_string(std::span<const std::byte> bytes);

/// Ciphertext on its way from one session to the other: taken from the
/// sender, fed to the receiver as far as it accepts.
struct Wire {
    Bytes bytes;
    std::size_t begin = 0;
    std::span<const std::byte> unsent() const { return std::span(bytes).subspan(begin); }
    void append(std::span<const std::byte> more) { bytes.insert(bytes.end(), more.begin(), more.end()); }
    void drop(std::size_t count);
};

class TlsSessionPair {
public:
    TlsSessionPair(std::shared_ptr<tls::TlsContext> client_context, std::shared_ptr<tls::TlsContext> server_context,
                   tls::TlsSessionOptions client_options = {});

    tls::TlsSession client;
    tls::TlsSession server;
    Bytes client_received;  ///< plaintext the client has read
    Bytes server_received;  ///< plaintext the server has read
    Wire to_client;         ///< ciphertext sent by the server, not yet accepted by the client
    Wire to_server;         ///< ciphertext sent by the client, not yet accepted by the server

    /// Moves ciphertext both ways and reads plaintext on both sides (into
    /// buffers of `read_buffer` bytes) once. Returns true if anything moved.
    bool step(std::size_t read_buffer = 64 * 1024);
    /// step() until nothing moves (bounded). Returns the number of steps.
    int pump(std::size_t read_buffer = 64 * 1024);
    /// pump(); true when both handshakes completed and neither side failed.
    bool handshake();

private:
    static bool move(tls::TlsSession& from, Wire& wire, tls::TlsSession& to, Bytes& received, Bytes& scratch);
    Bytes scratch_;
};

}  // namespace anyloop::test
