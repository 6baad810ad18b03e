// TlsSession: one TLS connection as a state machine over memory.
//
// The session never touches a socket by itself. Its owner moves bytes (or
// lends it a StreamTransport that does, see attach_transport()):
//
//        socket ──ciphertext──▶ feed_ciphertext() / ciphertext_input_space()
//                                      │
//                               ┌──────▼───────┐
//   write_plaintext() ─────────▶│  TlsSession  │────────▶ read_plaintext()
//                               └──────┬───────┘
//                                      │
//        socket ◀──ciphertext── pending_ciphertext() / take_ciphertext()
//
// After every call, send whatever pending_ciphertext() holds (handshake
// messages, alerts, tickets and key updates are produced by reads too), and
// call read_plaintext() until it returns less than the buffer it was given:
// decrypted bytes can wait inside the session even when the socket has
// nothing new (has_pending_plaintext() says so).
//
// This header does not include OpenSSL.
#pragma once

#include <anyloop/tls/tls_context.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

struct ssl_st;  // OpenSSL's SSL

namespace anyloop {
class StreamTransport;  // <anyloop/handle/stream_layer.hpp>
}

namespace anyloop::tls {
namespace detail {
struct SessionState;  // defined in the implementation
}

/// Per-session settings.
struct TlsSessionOptions {
    /// Client: the name the server's certificate must carry: a host name
    /// (also sent as SNI) or an IP address (IPv6 with or without brackets;
    /// no SNI). Also the key of the client session cache. Empty: the chain is
    /// verified but no name is checked, and sessions are not cached.
    /// Server: ignored.
    std::string peer_name{};
    /// write_plaintext() stops accepting plaintext while this many ciphertext
    /// bytes wait to be taken: the backpressure between the TLS layer and the
    /// socket. Handshake, alert and key-update output is never held back.
    std::size_t max_pending_ciphertext = 64 * 1024;
};

/// A TLS client or server session (the role comes from the context) over an
/// OpenSSL SSL object whose transport is a BIO of the session's own: fed
/// ciphertext in, produced ciphertext out, both in memory, or a socket the
/// owner attaches (attach_transport()).
///
/// Errors are sticky: once failed() is true the session accepts no input,
/// produces no plaintext, and error() / error_message() say why. Output that
/// was produced before or by the failure (a fatal alert for the peer) still
/// waits in pending_ciphertext() and should be sent before closing.
///
/// A session belongs to one thread. Movable, not copyable.
class TlsSession {
public:
    /// Creates the session. A client produces its first handshake message at
    /// once (see pending_ciphertext()); a server waits for the client's.
    /// Throws std::invalid_argument for a null context or a peer name that is
    /// neither a host name nor an address, std::runtime_error if OpenSSL
    /// cannot allocate the session. A moved-from session may only be
    /// destroyed or assigned to.
    explicit TlsSession(std::shared_ptr<TlsContext> context, TlsSessionOptions options = {});
    ~TlsSession();
    TlsSession(TlsSession&&) noexcept;
    TlsSession& operator=(TlsSession&&) noexcept;
    TlsSession(const TlsSession&) = delete;
    TlsSession& operator=(const TlsSession&) = delete;

    // --- ciphertext in (from the socket) ---

    /// Copies ciphertext received from the peer into the session and
    /// advances the handshake. Returns how many bytes were accepted: fewer
    /// than given when the session's input buffer is full, until
    /// read_plaintext() drains it. Accepts nothing after failed() or
    /// peer_closed(): bytes after the peer's close_notify are not TLS.
    std::size_t feed_ciphertext(std::span<const std::byte> ciphertext);

    /// Zero-copy alternative to feed_ciphertext(): the free part of the
    /// session's input buffer, to receive into directly (e.g. recv()). Empty
    /// when the buffer is full or the session takes no more input. Valid
    /// until the next call on the session.
    std::span<std::byte> ciphertext_input_space();
    /// Declares that `bytes` of ciphertext_input_space() were filled, then
    /// advances the handshake like feed_ciphertext().
    void commit_ciphertext_input(std::size_t bytes);

    /// The transport reached end of file: no more ciphertext will come. A
    /// peer that vanishes without close_notify (mid-handshake or mid-stream)
    /// then fails the session with "unexpected eof while reading", which is
    /// how truncation is told apart from a clean close.
    void feed_eof();

    // --- a transport (the Handle's socket) ---

    /// Lets the session use `transport` (nullptr: detaches) instead of the
    /// caller moving every ciphertext byte: output goes to
    /// transport->send() as OpenSSL produces it, and only what the
    /// transport does not take waits in pending_ciphertext(); once the fed
    /// input is used up, reads receive from it straight into OpenSSL's
    /// buffer, with OpenSSL's read-ahead on (one receive takes a whole
    /// record or more). The transport must outlive the attachment; the
    /// session calls it only from its own calls. A Handle attaches its
    /// socket this way (TlsLayer); the session still never sees the fd.
    void attach_transport(StreamTransport* transport);
    /// With a transport: it has new input, so read_plaintext() reads on
    /// even if it had run dry. `exact` turns read-ahead off, so that no
    /// byte after the peer's close_notify is taken from the transport (a
    /// stoptls: those bytes are plaintext); it costs a receive more per
    /// record.
    void transport_readable(bool exact);

    // --- ciphertext out (to the socket) ---

    /// Ciphertext waiting to be sent. Valid until the next non-const call.
    std::span<const std::byte> pending_ciphertext() const noexcept;
    /// Drops the first `bytes` of pending_ciphertext() (they were sent).
    void consume_ciphertext(std::size_t bytes);
    /// Moves all pending ciphertext out, e.g. into a write queue without a copy.
    std::vector<std::byte> take_ciphertext();

    // --- plaintext ---

    /// Encrypts up to plaintext.size() bytes; returns how many were accepted.
    /// Accepts nothing before handshake_done(), after failed(), or while
    /// max_pending_ciphertext bytes wait; the caller keeps the rest and
    /// offers it again after sending. Throws std::logic_error after shutdown().
    std::size_t write_plaintext(std::span<const std::byte> plaintext);

    /// Decrypts into `buffer`; returns the number of bytes written there. Keeps
    /// reading while OpenSSL holds decrypted bytes, so a return value smaller
    /// than buffer.size() means nothing more can be decrypted without new
    /// ciphertext. A full buffer means: call again. Also processes
    /// post-handshake messages (session tickets, KeyUpdate) and the peer's
    /// close_notify (see peer_closed()).
    std::size_t read_plaintext(std::span<std::byte> buffer);

    /// True when read_plaintext() could return bytes without new ciphertext:
    /// decrypted bytes or unread records wait inside the session. The reader
    /// must keep calling read_plaintext() while this is true, even when the
    /// socket has nothing new (for instance after resuming paused reading).
    bool has_pending_plaintext() const noexcept;

    // --- shutdown and stoptls ---

    /// Sends close_notify (once; later calls do nothing). Reading goes on
    /// until the peer's close_notify arrives. Before the handshake is done,
    /// nothing is sent and the session just stops writing.
    void shutdown();
    /// Requests a TLS 1.3 KeyUpdate: our sending keys change now and the peer
    /// is asked to change its own. Returns false (and does nothing) unless the
    /// handshake is done, the protocol is TLS 1.3 and the session is still open.
    bool key_update();

    /// True once the handshake has completed. A TLS 1.3 client completes
    /// before the server has checked the client's certificate, so a refusal
    /// can still arrive as an alert on the first read.
    bool handshake_done() const noexcept;
    /// True once shutdown() sent close_notify.
    bool shutdown_sent() const noexcept;
    /// True once the peer's close_notify arrived; read_plaintext() returns 0 from then on.
    bool peer_closed() const noexcept;
    /// True once close_notify went both ways: the TLS layer is finished and,
    /// for stoptls, the stream continues as plaintext.
    bool close_complete() const noexcept { return shutdown_sent() && peer_closed(); }
    /// After peer_closed(): the bytes that were fed after the peer's
    /// close_notify. They are not TLS; with stoptls they are the first
    /// plaintext of the stream. Moves them out (a second call returns only
    /// what arrived since, which is nothing: no more input is accepted).
    std::vector<std::byte> take_bytes_after_close();

    // --- errors ---

    /// True once the session failed (see error_message()).
    bool failed() const noexcept;
    /// EPROTO (std::errc::protocol_error, generic category) once failed; empty before.
    std::error_code error() const noexcept;
    /// OpenSSL's reason, e.g. "certificate verify failed: hostname mismatch
    /// (peer name 'example.org')", "tlsv13 alert certificate required",
    /// "wrong version number", "unexpected eof while reading". Empty before failure.
    const std::string& error_message() const noexcept;

    // --- what was negotiated (meaningful once handshake_done()) ---

    TlsRole role() const noexcept;
    /// The peer name from the options.
    const std::string& peer_name() const noexcept;
    /// "TLSv1.3", "TLSv1.2", ...
    std::string protocol_version() const;
    /// The cipher's OpenSSL name, e.g. "TLS_AES_256_GCM_SHA384".
    std::string cipher() const;
    /// The ALPN protocol agreed on; empty when none was.
    std::string alpn_protocol() const;
    /// True when this handshake resumed an earlier session.
    bool session_reused() const noexcept;
    /// Server: the SNI host name the client asked for; empty when none.
    std::string server_name() const;
    /// The peer certificate's subject as a one-line RFC 2253 string
    /// ("CN=localhost"); empty when the peer sent none.
    std::string peer_certificate_subject() const;
    /// The peer certificate's issuer, same format.
    std::string peer_certificate_issuer() const;
    /// True when the peer presented a certificate and it passed verification.
    bool peer_certificate_verified() const noexcept;

    /// RFC 5705 / RFC 8446 keying material exporter: `length` bytes bound to
    /// this session, equal on both ends for the same label and context (used
    /// to bind an authentication exchange to the TLS channel). Throws
    /// std::logic_error before the handshake is done or after failure.
    std::vector<std::byte> export_keying_material(std::string_view label, std::span<const std::byte> context,
                                                  std::size_t length) const;

    /// The underlying SSL, for settings and queries this class does not wrap.
    /// Do not read, write, shut down or change its BIOs through it.
    ssl_st* native_handle() const noexcept;

private:
    std::unique_ptr<detail::SessionState> impl_;
};

}  // namespace anyloop::tls
