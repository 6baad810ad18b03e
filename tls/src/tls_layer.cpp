// TlsLayer: the StreamLayer calls map one to one onto TlsSession's.
#include <anyloop/tls/tls_layer.hpp>

#include <stdexcept>
#include <utility>

namespace anyloop::tls {

TlsLayer::TlsLayer(std::shared_ptr<TlsContext> context, TlsSessionOptions options)
    : session_(std::move(context), std::move(options)) {}

std::size_t TlsLayer::feed_input(std::span<const std::byte> bytes) { return session_.feed_ciphertext(bytes); }
void TlsLayer::feed_eof() { session_.feed_eof(); }
std::size_t TlsLayer::read_plaintext(std::span<std::byte> buffer) { return session_.read_plaintext(buffer); }
std::size_t TlsLayer::write_plaintext(std::span<const std::byte> bytes) { return session_.write_plaintext(bytes); }
void TlsLayer::shutdown() { session_.shutdown(); }
std::span<const std::byte> TlsLayer::pending_output() const noexcept { return session_.pending_ciphertext(); }
void TlsLayer::consume_output(std::size_t bytes) { session_.consume_ciphertext(bytes); }
bool TlsLayer::wants_input() const noexcept { return !session_.handshake_done() && !session_.failed(); }
bool TlsLayer::established() const noexcept { return session_.handshake_done(); }
bool TlsLayer::has_buffered_input() const noexcept { return session_.has_pending_plaintext(); }
bool TlsLayer::input_closed() const noexcept { return session_.peer_closed(); }

std::string TlsLayer::take_trailing_input() {
    const std::vector<std::byte> bytes = session_.take_bytes_after_close();
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::error_code TlsLayer::error() const noexcept { return session_.error(); }
std::string TlsLayer::error_message() const { return "TLS: " + session_.error_message(); }

TlsSession* tls_session(const Handle& handle) noexcept {
    auto* layer = dynamic_cast<TlsLayer*>(handle.layer());
    return layer != nullptr ? &layer->session() : nullptr;
}

std::unique_ptr<StreamLayer> TlsContext::make_tls_layer(TlsMode mode, const std::string& peername) {
    const TlsRole wanted = mode == TlsMode::accept ? TlsRole::server : TlsRole::client;
    if (mode == TlsMode::none || wanted != role())
        throw std::invalid_argument(mode == TlsMode::accept
                                        ? "TLS accept needs a server TlsContext (role = server); this one is a client's"
                                        : "TLS connect needs a client TlsContext (role = client); this one is a server's");
    std::shared_ptr<TlsContext> self = weak_from_this().lock();
    if (!self) throw std::invalid_argument("TlsContext: a Handle needs a context owned by a std::shared_ptr (TlsContext::create)");
    TlsSessionOptions options;
    options.peer_name = peername;
    return std::make_unique<TlsLayer>(std::move(self), std::move(options));
}

}  // namespace anyloop::tls
