// anyloop/tls/tls_layer.hpp — TLS on a Handle: a TlsSession as the
// Handle's stream layer. Handles make it through their tls_ctx (a
// TlsContext); use this header to look at the session of a Handle:
//
//     if (const tls::TlsSession* session = tls::tls_session(handle))
//         std::cout << session->protocol_version() << " " << session->cipher() << "\n";
#pragma once

#include <anyloop/handle/handle.hpp>
#include <anyloop/handle/stream_layer.hpp>
#include <anyloop/tls/tls_context.hpp>
#include <anyloop/tls/tls_session.hpp>

#include <memory>
#include <string>

namespace anyloop::tls {

/// A TlsSession as an anyloop::StreamLayer: ciphertext from the socket in,
/// plaintext to the readers out, and the other way round.
class TlsLayer final : public StreamLayer {
public:
    explicit TlsLayer(std::shared_ptr<TlsContext> context, TlsSessionOptions options = {});

    [[nodiscard]] TlsSession& session() noexcept { return session_; }
    [[nodiscard]] const TlsSession& session() const noexcept { return session_; }

    std::size_t feed_input(std::span<const std::byte> bytes) override;
    [[nodiscard]] std::span<std::byte> input_space() override { return session_.ciphertext_input_space(); }
    void commit_input(std::size_t bytes) override { session_.commit_ciphertext_input(bytes); }
    bool attach_transport(StreamTransport* transport) override {
        session_.attach_transport(transport);
        return true;
    }
    void transport_readable(bool exact) override { session_.transport_readable(exact); }
    void feed_eof() override;
    std::size_t read_plaintext(std::span<std::byte> buffer) override;
    std::size_t write_plaintext(std::span<const std::byte> bytes) override;
    void shutdown() override;
    [[nodiscard]] std::span<const std::byte> pending_output() const noexcept override;
    void consume_output(std::size_t bytes) override;
    [[nodiscard]] bool wants_input() const noexcept override;
    [[nodiscard]] bool established() const noexcept override;
    [[nodiscard]] bool has_buffered_input() const noexcept override;
    [[nodiscard]] bool input_closed() const noexcept override;
    std::string take_trailing_input() override;
    [[nodiscard]] std::error_code error() const noexcept override;
    [[nodiscard]] std::string error_message() const override;

private:
    TlsSession session_;
};

/// The TLS session carrying `handle`, or nullptr when TLS is not on it.
[[nodiscard]] TlsSession* tls_session(const Handle& handle) noexcept;

}  // namespace anyloop::tls
