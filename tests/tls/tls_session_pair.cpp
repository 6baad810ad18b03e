#include "tls_session_pair.hpp"

#include "tls/tls_test_support.hpp"

#include <stdexcept>

namespace anyloop::test {

std::shared_ptr<tls::TlsContext> server_context(tls::TlsContextOptions options) {
    const auto& certs = test_certificates();
    options.role = tls::TlsRole::server;
    options.certificate_file = certs.server_cert();
    options.private_key_file = certs.server_key();
    return tls::TlsContext::create(options);
}

std::shared_ptr<tls::TlsContext> client_context(tls::TlsContextOptions options) {
    options.role = tls::TlsRole::client;
    options.ca_file = test_certificates().ca();
    return tls::TlsContext::create(options);
}

Bytes to_bytes(std::string_view text) {
    const auto* data = reinterpret_cast<const std::byte*>(text.data());
    return Bytes(data, data + text.size());
}

std::string to_string(std::span<const std::byte> bytes) {
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void Wire::drop(std::size_t count) {
    begin += count;
    if (begin == bytes.size()) {
        bytes.clear();
        begin = 0;
    } else if (begin > bytes.size() / 2) {
        bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(begin));
        begin = 0;
    }
}

TlsSessionPair::TlsSessionPair(std::shared_ptr<tls::TlsContext> client_context,
                               std::shared_ptr<tls::TlsContext> server_context, tls::TlsSessionOptions client_options)
    : client(std::move(client_context), std::move(client_options)), server(std::move(server_context)) {}

bool TlsSessionPair::move(tls::TlsSession& from, Wire& wire, tls::TlsSession& to, Bytes& received, Bytes& scratch) {
    bool moved = false;
    if (const auto out = from.pending_ciphertext(); !out.empty()) {
        wire.append(out);
        from.consume_ciphertext(out.size());
        moved = true;
    }
    if (!wire.unsent().empty()) {
        const std::size_t accepted = to.feed_ciphertext(wire.unsent());
        wire.drop(accepted);
        moved = moved || accepted > 0;
    }
    for (;;) {
        const std::size_t got = to.read_plaintext(scratch);
        received.insert(received.end(), scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(got));
        moved = moved || got > 0;
        if (got < scratch.size()) break;
    }
    return moved;
}

bool TlsSessionPair::step(std::size_t read_buffer) {
    scratch_.resize(read_buffer);
    const bool a = move(client, to_server, server, server_received, scratch_);
    const bool b = move(server, to_client, client, client_received, scratch_);
    return a || b;
}

int TlsSessionPair::pump(std::size_t read_buffer) {
    int steps = 0;
    while (step(read_buffer)) {
        if (++steps > 100000) throw std::runtime_error("TlsSessionPair::pump does not settle");
    }
    return steps;
}

bool TlsSessionPair::handshake() {
    pump();
    return client.handshake_done() && server.handshake_done() && !client.failed() && !server.failed();
}

}  // namespace anyloop::test
