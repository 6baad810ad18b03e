// TlsSession: an SSL object over a BIO of our own, driven from memory or,
// when its owner attaches one, straight from the owner's socket.
//
// The BIO (one BIO_METHOD per process, its data the session's state) reads
// and writes the session's own buffers:
//
//   input   fed ciphertext (feed_ciphertext(), or recv() straight into it
//           through ciphertext_input_space()). Bounded: it holds one record
//           of any version, the caller is told how much was accepted and
//           the rest stays in the socket (TCP backpressure, not growth).
//   output  what OpenSSL wrote, for the caller to send or take by move. The
//           BIO takes everything, so OpenSSL never meets a full transport
//           and never says WANT_WRITE; write_plaintext() stops at
//           max_pending_ciphertext instead.
//
// With a transport attached (a Handle's socket, see attach_transport()) the
// BIO sends OpenSSL's records to it directly and keeps only what it refuses,
// and once the input buffer is empty it receives from it straight into
// OpenSSL's buffer (read-ahead on, so one recv() takes a whole record): the
// ciphertext is copied by the kernel only, as with SSL_set_fd(). The owner
// still decides when the transport may be used; OpenSSL sees only this BIO.
//
// The thread's OpenSSL error queue is kept empty as an invariant: every
// failure takes what it queued (fail()), the rare calls that may queue
// something harmless clear it after themselves, and so the hot path neither
// peeks nor clears. A WANT_READ is recognised from our own BIO's retry flag,
// without SSL_get_error() looking at the queue.
#include <anyloop/tls/tls_session.hpp>

#include <anyloop/handle/stream_layer.hpp>

#include "detail/context_state.hpp"
#include "detail/openssl_errors.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace anyloop::tls {
namespace {

// The input buffer holds one TLS record of any version (16 KiB of payload
// plus at most 2 KiB of TLS 1.2 expansion), so a whole record can be fed at
// once. It is allocated on first use: a session on a Handle's socket reads
// through the transport and needs it only for bytes that came before TLS.
constexpr std::size_t kInputSize = 20 * 1024;

bool is_ip_address(const std::string& name) {
    unsigned char address[16];
    return inet_pton(AF_INET, name.c_str(), address) == 1 || inet_pton(AF_INET6, name.c_str(), address) == 1;
}

std::string name_to_string(const X509_NAME* name) {
    if (!name) return {};
    BIO* bio = BIO_new(BIO_s_mem());
    if (!bio) return {};
    std::string text;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        char* data = nullptr;
        const long length = BIO_get_mem_data(bio, &data);
        if (length > 0) text.assign(data, static_cast<std::size_t>(length));
    }
    BIO_free(bio);
    detail::clear_openssl_errors();
    return text;
}

}  // namespace

namespace detail {

BIO_METHOD* session_bio_method();

struct SessionState {
    SessionState(std::shared_ptr<TlsContext> context_in, TlsSessionOptions options)
        : context(std::move(context_in)),
          peer_name(std::move(options.peer_name)),
          max_pending_ciphertext(options.max_pending_ciphertext) {}
    ~SessionState() {
        // OpenSSL marks the session of a connection freed without
        // close_notify as not resumable, a TLS 1.0 rule that TLS 1.1 dropped
        // (RFC 4346): a connection closed for a timeout or by a peer that
        // just hangs up is not a security problem. A failed session stays
        // unresumable; OpenSSL removed it from the caches when it failed.
        if (ssl && !failed) SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_SENT_SHUTDOWN);
        SSL_free(ssl);  // frees the BIO too
    }
    SessionState(const SessionState&) = delete;
    SessionState& operator=(const SessionState&) = delete;

    std::shared_ptr<TlsContext> context;
    std::string peer_name;  // the SSL's app data points here (see peer_name_of)
    std::size_t max_pending_ciphertext;
    SSL* ssl = nullptr;
    BIO* bio = nullptr;  // owned by `ssl`; its data is this state
    StreamTransport* transport = nullptr;
    bool read_ahead = false;

    std::unique_ptr<std::byte[]> input;  // kInputSize bytes once used
    std::size_t input_begin = 0;         // unread fed ciphertext: [input_begin, input_end)
    std::size_t input_end = 0;

    std::vector<std::byte> outgoing;  // ciphertext to send, from outgoing_begin on
    std::size_t outgoing_begin = 0;

    bool handshake_done = false;
    bool shutdown_sent = false;
    bool peer_closed = false;
    bool eof_fed = false;
    bool failed = false;
    // The last SSL_read() ran out of input; cleared by new ciphertext (or a
    // readable transport). Lets has_pending_plaintext() ignore a partial
    // record waiting in the buffers.
    bool read_starved = false;
    std::error_code error;
    std::string message;

    std::size_t pending_size() const noexcept { return outgoing.size() - outgoing_begin; }
    std::size_t input_size() const noexcept { return input_end - input_begin; }

    /// The free tail of the input buffer, after moving what is unread to
    /// its front.
    std::span<std::byte> input_space() {
        if (!input) input = std::make_unique_for_overwrite<std::byte[]>(kInputSize);
        if (input_begin > 0) {
            std::memmove(input.get(), input.get() + input_begin, input_size());
            input_end -= input_begin;
            input_begin = 0;
        }
        return {input.get() + input_end, kInputSize - input_end};
    }

    // ---- the BIO's side ------------------------------------------------------

    /// OpenSSL wants `buffer.size()` bytes at most: fed input first, then
    /// the transport. Returns 0 for "nothing now" (the BIO says retry).
    std::size_t bio_read(std::span<std::byte> buffer) {
        if (const std::size_t available = input_size(); available > 0) {
            const std::size_t n = std::min(available, buffer.size());
            std::memcpy(buffer.data(), input.get() + input_begin, n);
            input_begin += n;
            if (input_begin == input_end) input_begin = input_end = 0;
            return n;
        }
        if (transport != nullptr && !eof_fed) return transport->receive(buffer);
        return 0;
    }

    /// OpenSSL wrote `bytes`: to the transport if nothing waits before
    /// them, else (and whatever it refuses) into `outgoing`.
    void bio_write(std::span<const std::byte> bytes) {
        std::size_t sent = 0;
        if (transport != nullptr && pending_size() == 0) sent = transport->send(bytes);
        if (sent == bytes.size()) return;
        if (outgoing_begin == outgoing.size()) {
            outgoing.clear();
            outgoing_begin = 0;
        }
        outgoing.insert(outgoing.end(), bytes.begin() + static_cast<std::ptrdiff_t>(sent), bytes.end());
    }

    // ---- driving OpenSSL -----------------------------------------------------

    /// SSL_get_error() for a call that returned `result` <= 0, except that
    /// a WANT_READ is recognised from our BIO's retry flag first: that
    /// case is the usual one and needs no look at the error queue.
    int ssl_error(int result) const {
        if (SSL_want_read(ssl) && BIO_should_read(bio)) return SSL_ERROR_WANT_READ;
        return SSL_get_error(ssl, result);
    }

    /// Records the failure described by SSL_get_error() == `ssl_error` and
    /// the thread's error queue, which it leaves empty.
    void fail(int ssl_error) {
        OpenSslErrors errors = take_openssl_errors();
        std::string text;
        if (!errors.empty()) {
            text = std::move(errors.reasons);
        } else if (ssl_error == SSL_ERROR_SYSCALL || eof_fed) {
            text = "unexpected eof while reading";
        } else {
            text = "TLS error " + std::to_string(ssl_error);
        }
        if (errors.has(ERR_LIB_SSL, SSL_R_CERTIFICATE_VERIFY_FAILED)) {
            const long result = SSL_get_verify_result(ssl);
            if (result != X509_V_OK) {
                text += ": ";
                text += X509_verify_cert_error_string(result);
                if (result == X509_V_ERR_HOSTNAME_MISMATCH || result == X509_V_ERR_IP_ADDRESS_MISMATCH)
                    text += " (peer name '" + peer_name + "')";
            }
        }
        failed = true;
        error = std::make_error_code(std::errc::protocol_error);
        message = std::move(text);
    }

    /// Runs SSL_do_handshake() as far as the input allows.
    void drive_handshake() {
        if (handshake_done || failed) return;
        const int result = SSL_do_handshake(ssl);
        if (result == 1) {
            handshake_done = true;
            return;
        }
        const int error_kind = ssl_error(result);
        if (error_kind != SSL_ERROR_WANT_READ) fail(error_kind);
    }

    bool accepts_input() const noexcept { return !failed && !peer_closed && !eof_fed; }
};

namespace {

int bio_write_ex(BIO* bio, const char* data, std::size_t length, std::size_t* written) {
    auto* state = static_cast<SessionState*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    state->bio_write({reinterpret_cast<const std::byte*>(data), length});
    *written = length;
    return 1;
}

int bio_read_ex(BIO* bio, char* data, std::size_t length, std::size_t* read) {
    auto* state = static_cast<SessionState*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    *read = state->bio_read({reinterpret_cast<std::byte*>(data), length});
    if (*read > 0) return 1;
    // Nothing: retry later, unless the input ended (OpenSSL then asks
    // BIO_eof() and calls it a truncation unless close_notify came first).
    if (!(state->eof_fed && state->input_size() == 0)) BIO_set_retry_read(bio);
    return 0;
}

long bio_ctrl(BIO* bio, int command, long, void*) {
    const auto* state = static_cast<const SessionState*>(BIO_get_data(bio));
    switch (command) {
        case BIO_CTRL_FLUSH:
            return 1;
        case BIO_CTRL_EOF:
            return state->eof_fed && state->input_size() == 0 ? 1 : 0;
        case BIO_CTRL_PENDING:
            return static_cast<long>(state->input_size());
        case BIO_CTRL_WPENDING:
            return static_cast<long>(state->pending_size());
        default:
            return 0;
    }
}

}  // namespace

// Made once per process and never freed, like OpenSSL's own methods.
BIO_METHOD* session_bio_method() {
    static BIO_METHOD* const method = [] {
        BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "anyloop TLS session");
        if (m == nullptr || BIO_meth_set_write_ex(m, bio_write_ex) != 1 || BIO_meth_set_read_ex(m, bio_read_ex) != 1 ||
            BIO_meth_set_ctrl(m, bio_ctrl) != 1)
            throw std::runtime_error("TlsSession: BIO_meth_new: " + take_openssl_reason("out of memory"));
        return m;
    }();
    return method;
}

}  // namespace detail

TlsSession::TlsSession(std::shared_ptr<TlsContext> context, TlsSessionOptions options) {
    if (!context) throw std::invalid_argument("TlsSession: no context");
    impl_ = std::make_unique<detail::SessionState>(std::move(context), std::move(options));
    detail::SessionState& s = *impl_;
    detail::ContextState& context_state = *s.context->impl_;

    // "[::1]" is how a URL writes an IPv6 address; the certificate does not.
    if (s.peer_name.size() > 2 && s.peer_name.front() == '[' && s.peer_name.back() == ']')
        s.peer_name = s.peer_name.substr(1, s.peer_name.size() - 2);

    detail::clear_openssl_errors();
    s.ssl = SSL_new(context_state.ctx);
    if (!s.ssl) throw std::runtime_error("TlsSession: SSL_new: " + detail::take_openssl_reason("out of memory"));
    BIO* bio = BIO_new(detail::session_bio_method());
    if (!bio) throw std::runtime_error("TlsSession: BIO_new: " + detail::take_openssl_reason("out of memory"));
    BIO_set_data(bio, &s);
    BIO_set_init(bio, 1);
    SSL_set_bio(s.ssl, bio, bio);  // one reference, used for both directions
    s.bio = bio;
    SSL_set_app_data(s.ssl, &s.peer_name);

    if (context_state.role == TlsRole::server) {
        SSL_set_accept_state(s.ssl);
        return;
    }
    SSL_set_connect_state(s.ssl);
    if (!s.peer_name.empty()) {
        if (s.peer_name.find('\0') != std::string::npos)
            throw std::invalid_argument("TlsSession: peer name contains a NUL byte");
        bool named = false;
        if (is_ip_address(s.peer_name)) {
            // RFC 6066: SNI carries host names only, never addresses.
            named = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s.ssl), s.peer_name.c_str()) == 1;
        } else {
            SSL_set_hostflags(s.ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            named = SSL_set1_host(s.ssl, s.peer_name.c_str()) == 1 &&
                    SSL_set_tlsext_host_name(s.ssl, s.peer_name.c_str()) == 1;
        }
        if (!named)
            throw std::invalid_argument("TlsSession: peer name '" + s.peer_name +
                                        "': " + detail::take_openssl_reason("not a valid host name or address"));
        if (context_state.session_resumption) {
            if (SSL_SESSION* cached = context_state.session_cache.take(s.peer_name)) {
                SSL_set_session(s.ssl, cached);  // takes its own reference
                SSL_SESSION_free(cached);
            }
        }
    }
    detail::clear_openssl_errors();
    s.drive_handshake();  // the ClientHello
}

TlsSession::~TlsSession() = default;
TlsSession::TlsSession(TlsSession&&) noexcept = default;
TlsSession& TlsSession::operator=(TlsSession&&) noexcept = default;

// --- the transport ---

void TlsSession::attach_transport(StreamTransport* transport) {
    detail::SessionState& s = *impl_;
    s.transport = transport;
    // With a transport OpenSSL reads as much as the socket holds into its
    // own buffer; without one, exactly one record at a time, so what
    // follows the peer's close_notify stays in the input buffer.
    s.read_ahead = transport != nullptr;
    SSL_set_read_ahead(s.ssl, s.read_ahead ? 1 : 0);
}

void TlsSession::transport_readable(bool exact) {
    detail::SessionState& s = *impl_;
    s.read_starved = false;
    if (s.read_ahead == exact) {
        s.read_ahead = !exact;
        SSL_set_read_ahead(s.ssl, s.read_ahead ? 1 : 0);
    }
}

// --- ciphertext in ---

std::size_t TlsSession::feed_ciphertext(std::span<const std::byte> ciphertext) {
    detail::SessionState& s = *impl_;
    std::size_t accepted = 0;
    while (accepted < ciphertext.size() && s.accepts_input()) {
        const std::span<std::byte> space = s.input_space();
        const std::size_t n = std::min(space.size(), ciphertext.size() - accepted);
        if (n == 0) break;  // full: read_plaintext() makes room
        std::memcpy(space.data(), ciphertext.data() + accepted, n);
        s.input_end += n;
        accepted += n;
        s.read_starved = false;
        // The handshake consumes its input at once; application data waits
        // for read_plaintext().
        if (s.handshake_done) break;
        s.drive_handshake();
    }
    return accepted;
}

std::span<std::byte> TlsSession::ciphertext_input_space() {
    detail::SessionState& s = *impl_;
    if (!s.accepts_input()) return {};
    return s.input_space();
}

void TlsSession::commit_ciphertext_input(std::size_t bytes) {
    detail::SessionState& s = *impl_;
    if (bytes == 0) return;
    if (!s.accepts_input()) throw std::logic_error("TlsSession::commit_ciphertext_input: the session takes no input");
    if (!s.input || bytes > kInputSize - s.input_end)
        throw std::logic_error("TlsSession::commit_ciphertext_input: more bytes than ciphertext_input_space() offered");
    s.input_end += bytes;
    s.read_starved = false;
    if (!s.handshake_done) s.drive_handshake();
}

void TlsSession::feed_eof() {
    detail::SessionState& s = *impl_;
    if (s.eof_fed) return;
    s.eof_fed = true;
    s.read_starved = false;  // the next read sees the end
    if (!s.handshake_done && !s.failed) s.drive_handshake();
}

// --- ciphertext out ---

std::span<const std::byte> TlsSession::pending_ciphertext() const noexcept {
    const detail::SessionState& s = *impl_;
    return {s.outgoing.data() + s.outgoing_begin, s.pending_size()};
}

void TlsSession::consume_ciphertext(std::size_t bytes) {
    detail::SessionState& s = *impl_;
    if (bytes > s.pending_size()) throw std::out_of_range("TlsSession::consume_ciphertext: more than is pending");
    s.outgoing_begin += bytes;
    if (s.outgoing_begin == s.outgoing.size()) {
        s.outgoing.clear();
        s.outgoing_begin = 0;
    } else if (s.outgoing_begin > s.outgoing.size() / 2) {
        // Compact now and then so a slow socket does not make the vector creep.
        s.outgoing.erase(s.outgoing.begin(), s.outgoing.begin() + static_cast<std::ptrdiff_t>(s.outgoing_begin));
        s.outgoing_begin = 0;
    }
}

std::vector<std::byte> TlsSession::take_ciphertext() {
    detail::SessionState& s = *impl_;
    if (s.outgoing_begin > 0)
        s.outgoing.erase(s.outgoing.begin(), s.outgoing.begin() + static_cast<std::ptrdiff_t>(s.outgoing_begin));
    s.outgoing_begin = 0;
    return std::exchange(s.outgoing, {});
}

// --- plaintext ---

std::size_t TlsSession::write_plaintext(std::span<const std::byte> plaintext) {
    detail::SessionState& s = *impl_;
    if (s.shutdown_sent) throw std::logic_error("TlsSession::write_plaintext after shutdown()");
    if (s.failed || !s.handshake_done) return 0;
    std::size_t accepted = 0;
    // The BIO takes every record, so one SSL_write writes all it is given;
    // the pending limit applies between calls.
    while (accepted < plaintext.size() && s.pending_size() < s.max_pending_ciphertext) {
        std::size_t written = 0;
        const int result = SSL_write_ex(s.ssl, plaintext.data() + accepted, plaintext.size() - accepted, &written);
        if (result == 1) {
            accepted += written;
            continue;
        }
        const int ssl_error = s.ssl_error(result);
        if (ssl_error == SSL_ERROR_WANT_READ) return accepted;  // cannot happen without renegotiation
        s.fail(ssl_error);
        return accepted;
    }
    return accepted;
}

std::size_t TlsSession::read_plaintext(std::span<std::byte> buffer) {
    detail::SessionState& s = *impl_;
    if (s.failed || s.peer_closed) return 0;
    if (!s.handshake_done) {
        s.drive_handshake();
        if (!s.handshake_done) return 0;
    }
    if (s.read_starved) return 0;  // nothing new since OpenSSL last wanted input
    std::size_t total = 0;
    // SSL_read returns at most one record per call; going on until OpenSSL
    // wants more input is what leaves no decrypted byte behind in it. A
    // read can also write (a KeyUpdate reply, TLS 1.3 tickets, an alert):
    // the BIO sends or keeps that.
    while (total < buffer.size()) {
        std::size_t got = 0;
        const int result = SSL_read_ex(s.ssl, buffer.data() + total, buffer.size() - total, &got);
        if (result == 1) {
            total += got;
            // Another SSL_read would only say WANT_READ: nothing decrypted,
            // no record and no byte of one left inside OpenSSL or the input
            // buffer. (A transport may have more; the owner says so with
            // transport_readable().)
            if (SSL_has_pending(s.ssl) == 0 && s.input_size() == 0 && !s.eof_fed) {
                s.read_starved = true;
                return total;
            }
            continue;
        }
        const int ssl_error = s.ssl_error(result);
        switch (ssl_error) {
            case SSL_ERROR_WANT_READ:
                s.read_starved = true;
                return total;
            case SSL_ERROR_ZERO_RETURN:
                s.peer_closed = true;
                detail::clear_openssl_errors();
                return total;
            default:
                s.fail(ssl_error);
                return total;
        }
    }
    return total;
}

bool TlsSession::has_pending_plaintext() const noexcept {
    const detail::SessionState& s = *impl_;
    // Starved: OpenSSL wanted input and holds no decrypted byte.
    if (s.read_starved || s.failed || s.peer_closed || !s.handshake_done) return false;
    return SSL_has_pending(s.ssl) == 1 || s.input_size() > 0 || s.eof_fed;
}

// --- shutdown and stoptls ---

void TlsSession::shutdown() {
    detail::SessionState& s = *impl_;
    if (s.shutdown_sent) return;
    s.shutdown_sent = true;
    if (s.failed || !s.handshake_done) return;
    // 0: our close_notify is out, the peer's has not come; 1: both done. A
    // failed close_notify is not worth failing the session for: the
    // connection is ending either way.
    if (SSL_shutdown(s.ssl) < 0) detail::clear_openssl_errors();
}

bool TlsSession::key_update() {
    detail::SessionState& s = *impl_;
    if (!s.handshake_done || s.failed || s.shutdown_sent || SSL_version(s.ssl) != TLS1_3_VERSION) return false;
    if (SSL_key_update(s.ssl, SSL_KEY_UPDATE_REQUESTED) != 1) {
        detail::clear_openssl_errors();
        return false;
    }
    // OpenSSL sends the KeyUpdate with the next write or handshake call; send
    // it now so the update does not wait for application data.
    const int result = SSL_do_handshake(s.ssl);
    if (result != 1) {
        s.fail(s.ssl_error(result));
        return false;
    }
    return true;
}

bool TlsSession::handshake_done() const noexcept {
    return impl_->handshake_done;
}
bool TlsSession::shutdown_sent() const noexcept {
    return impl_->shutdown_sent;
}
bool TlsSession::peer_closed() const noexcept {
    return impl_->peer_closed;
}

std::vector<std::byte> TlsSession::take_bytes_after_close() {
    detail::SessionState& s = *impl_;
    std::vector<std::byte> bytes;
    if (!s.peer_closed) return bytes;
    // Without read-ahead the record layer reads exactly one record at a
    // time, so everything after the close_notify record is still in the
    // input buffer (or, with a transport, in the socket).
    const std::byte* begin = s.input ? s.input.get() + s.input_begin : nullptr;
    bytes.assign(begin, begin + s.input_size());
    s.input_begin = s.input_end = 0;
    return bytes;
}

// --- errors ---

bool TlsSession::failed() const noexcept {
    return impl_->failed;
}
std::error_code TlsSession::error() const noexcept {
    return impl_->error;
}
const std::string& TlsSession::error_message() const noexcept {
    return impl_->message;
}

// --- what was negotiated ---

TlsRole TlsSession::role() const noexcept {
    return impl_->context->role();
}
const std::string& TlsSession::peer_name() const noexcept {
    return impl_->peer_name;
}

std::string TlsSession::protocol_version() const {
    return impl_->handshake_done ? SSL_get_version(impl_->ssl) : std::string();
}

std::string TlsSession::cipher() const {
    const char* name = SSL_get_cipher_name(impl_->ssl);
    return impl_->handshake_done && name ? name : std::string();
}

std::string TlsSession::alpn_protocol() const {
    const unsigned char* data = nullptr;
    unsigned int length = 0;
    SSL_get0_alpn_selected(impl_->ssl, &data, &length);
    return data ? std::string(reinterpret_cast<const char*>(data), length) : std::string();
}

bool TlsSession::session_reused() const noexcept {
    return SSL_session_reused(impl_->ssl) == 1;
}

std::string TlsSession::server_name() const {
    const char* name = SSL_get_servername(impl_->ssl, TLSEXT_NAMETYPE_host_name);
    return name ? name : std::string();
}

std::string TlsSession::peer_certificate_subject() const {
    const X509* cert = SSL_get0_peer_certificate(impl_->ssl);
    return cert ? name_to_string(X509_get_subject_name(cert)) : std::string();
}

std::string TlsSession::peer_certificate_issuer() const {
    const X509* cert = SSL_get0_peer_certificate(impl_->ssl);
    return cert ? name_to_string(X509_get_issuer_name(cert)) : std::string();
}

bool TlsSession::peer_certificate_verified() const noexcept {
    return SSL_get0_peer_certificate(impl_->ssl) != nullptr && SSL_get_verify_result(impl_->ssl) == X509_V_OK;
}

std::vector<std::byte> TlsSession::export_keying_material(std::string_view label, std::span<const std::byte> context,
                                                          std::size_t length) const {
    const detail::SessionState& s = *impl_;
    if (!s.handshake_done || s.failed)
        throw std::logic_error("TlsSession::export_keying_material: no established session");
    std::vector<std::byte> material(length);
    detail::clear_openssl_errors();
    if (SSL_export_keying_material(s.ssl, reinterpret_cast<unsigned char*>(material.data()), material.size(),
                                   label.data(), label.size(), reinterpret_cast<const unsigned char*>(context.data()),
                                   context.size(), 1) != 1)
        throw std::runtime_error("TlsSession::export_keying_material: label '" + std::string(label) +
                                 "': " + detail::take_openssl_reason("export failed"));
    return material;
}

ssl_st* TlsSession::native_handle() const noexcept {
    return impl_->ssl;
}

}  // namespace anyloop::tls
