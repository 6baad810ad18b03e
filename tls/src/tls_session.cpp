// TlsSession: an SSL object over a BIO pair, driven entirely from memory.
//
// Why a BIO pair rather than two memory BIOs: the pair is a pair of fixed
// ring buffers. On the way in that gives (1) a bound: a peer cannot make the
// session buffer more than one ring of ciphertext, the caller is told how much
// was accepted and the rest stays in the socket (TCP backpressure instead of
// growth), and (2) zero copy: BIO_nwrite0() exposes the ring, so the Handle
// can recv() straight into it (ciphertext_input_space()). A memory BIO grows
// without bound and can only be filled by copying. On the way out every SSL
// call is followed by flush_output(), which moves what OpenSSL wrote into
// `outgoing`, a plain vector the caller can send from or take by move; so
// OpenSSL never sees a full transport, and WANT_WRITE only means "flush and
// call again", which this file does itself.
#include <anyloop/tls/tls_session.hpp>

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

// Ring sizes of the BIO pair. The input ring holds one TLS record of any
// version (16 KiB of payload plus at most 2 KiB of TLS 1.2 expansion) so a
// whole record can be fed at once. The output ring is drained after every
// SSL call; one record fits, and a larger burst just takes another round.
// The rings are allocated with the session, so they are most of an idle
// session's memory (OpenSSL's own buffers are released when idle).
constexpr std::size_t kInputRingSize = 20 * 1024;
constexpr std::size_t kOutputRingSize = 20 * 1024;

// A WANT_WRITE that persists after draining the output ring would mean
// OpenSSL and the ring disagree; bounded so a bug cannot spin forever.
constexpr int kMaxWriteRetries = 64;

int clamp_int(std::size_t size) {
    return static_cast<int>(std::min<std::size_t>(size, INT_MAX));
}

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
        SSL_free(ssl);  // frees the SSL's end of the pair
        BIO_free(network);
    }
    SessionState(const SessionState&) = delete;
    SessionState& operator=(const SessionState&) = delete;

    std::shared_ptr<TlsContext> context;
    std::string peer_name;  // the SSL's app data points here (see peer_name_of)
    std::size_t max_pending_ciphertext;
    SSL* ssl = nullptr;
    BIO* network = nullptr;  // our end of the pair: ciphertext in, ciphertext out

    std::vector<std::byte> outgoing;  // ciphertext to send, from outgoing_begin on
    std::size_t outgoing_begin = 0;

    bool handshake_done = false;
    bool shutdown_sent = false;
    bool peer_closed = false;
    bool eof_fed = false;
    bool failed = false;
    // The last SSL_read() ran out of input; cleared by new ciphertext. Lets
    // has_pending_plaintext() ignore a partial record waiting in the ring.
    bool read_starved = false;
    std::error_code error;
    std::string message;

    std::size_t pending_size() const noexcept { return outgoing.size() - outgoing_begin; }

    /// Moves everything OpenSSL wrote into the pair to `outgoing`. Called
    /// after every SSL call, so the output ring is empty before the next one.
    void flush_output() {
        for (;;) {
            const std::size_t available = BIO_ctrl_pending(network);
            if (available == 0) break;
            char* data = nullptr;
            const int got = BIO_nread(network, &data, clamp_int(available));
            if (got <= 0) break;
            if (outgoing_begin == outgoing.size()) {
                outgoing.clear();
                outgoing_begin = 0;
            }
            const auto* bytes = reinterpret_cast<const std::byte*>(data);
            outgoing.insert(outgoing.end(), bytes, bytes + got);
        }
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
        for (int retries = 0; !handshake_done && !failed;) {
            detail::clear_openssl_errors();
            const int result = SSL_do_handshake(ssl);
            const int ssl_error = result == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, result);
            flush_output();
            if (result == 1) {
                handshake_done = true;
            } else if (ssl_error == SSL_ERROR_WANT_READ) {
                break;
            } else if (ssl_error != SSL_ERROR_WANT_WRITE || ++retries > kMaxWriteRetries) {
                fail(ssl_error);
            }
        }
    }

    bool accepts_input() const noexcept { return !failed && !peer_closed && !eof_fed; }
};

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
    BIO* internal = nullptr;
    if (BIO_new_bio_pair(&internal, kOutputRingSize, &s.network, kInputRingSize) != 1)
        throw std::runtime_error("TlsSession: BIO_new_bio_pair: " + detail::take_openssl_reason("out of memory"));
    SSL_set_bio(s.ssl, internal, internal);  // one reference, used for both directions
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

// --- ciphertext in ---

std::size_t TlsSession::feed_ciphertext(std::span<const std::byte> ciphertext) {
    detail::SessionState& s = *impl_;
    std::size_t accepted = 0;
    bool refused = false;
    while (accepted < ciphertext.size() && s.accepts_input()) {
        const int wrote = BIO_write(s.network, ciphertext.data() + accepted, clamp_int(ciphertext.size() - accepted));
        if (wrote > 0) {
            accepted += static_cast<std::size_t>(wrote);
            s.read_starved = false;
        } else {
            refused = true;
        }
        if (s.handshake_done) {
            // Application data waits in the ring for read_plaintext(); when the
            // ring is full, the caller keeps the rest.
            if (wrote <= 0) break;
        } else {
            s.drive_handshake();
            if (wrote <= 0 && BIO_ctrl_get_write_guarantee(s.network) == 0) break;
        }
    }
    if (refused) detail::clear_openssl_errors();  // a refused BIO_write leaves an entry we do not need
    return accepted;
}

std::span<std::byte> TlsSession::ciphertext_input_space() {
    detail::SessionState& s = *impl_;
    if (!s.accepts_input()) return {};
    char* space = nullptr;
    const auto size = BIO_nwrite0(s.network, &space);
    if (size <= 0 || !space) {
        detail::clear_openssl_errors();  // a full ring queues an entry
        return {};
    }
    return {reinterpret_cast<std::byte*>(space), static_cast<std::size_t>(size)};
}

void TlsSession::commit_ciphertext_input(std::size_t bytes) {
    detail::SessionState& s = *impl_;
    if (bytes == 0) return;
    if (!s.accepts_input()) throw std::logic_error("TlsSession::commit_ciphertext_input: the session takes no input");
    char* space = nullptr;
    const int committed = BIO_nwrite(s.network, &space, clamp_int(bytes));
    if (committed < 0 || static_cast<std::size_t>(committed) != bytes) {
        detail::clear_openssl_errors();
        throw std::logic_error("TlsSession::commit_ciphertext_input: more bytes than ciphertext_input_space() offered");
    }
    s.read_starved = false;
    if (!s.handshake_done) s.drive_handshake();
}

void TlsSession::feed_eof() {
    detail::SessionState& s = *impl_;
    if (s.eof_fed) return;
    s.eof_fed = true;
    s.read_starved = false;  // the next read sees the end
    BIO_shutdown_wr(s.network);
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
    int retries = 0;
    // The pending limit is checked only between whole SSL_write calls: after
    // WANT_WRITE OpenSSL holds an encrypted record and must get the same
    // bytes again at once, so that retry is never postponed.
    while (accepted < plaintext.size() && s.pending_size() < s.max_pending_ciphertext) {
        for (;;) {
            detail::clear_openssl_errors();
            std::size_t written = 0;
            const int result = SSL_write_ex(s.ssl, plaintext.data() + accepted, plaintext.size() - accepted, &written);
            const int ssl_error = result == 1 ? SSL_ERROR_NONE : SSL_get_error(s.ssl, result);
            s.flush_output();
            if (result == 1) {
                accepted += written;
                break;
            }
            if (ssl_error == SSL_ERROR_WANT_WRITE && ++retries <= kMaxWriteRetries) continue;
            if (ssl_error == SSL_ERROR_WANT_READ) {
                detail::clear_openssl_errors();
                return accepted;  // cannot happen without renegotiation; wait for input
            }
            s.fail(ssl_error);
            return accepted;
        }
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
    int retries = 0;
    // SSL_read returns at most one record per call; going on until OpenSSL
    // wants more input is what leaves no decrypted byte behind in it.
    while (total < buffer.size()) {
        detail::clear_openssl_errors();
        std::size_t got = 0;
        const int result = SSL_read_ex(s.ssl, buffer.data() + total, buffer.size() - total, &got);
        const int ssl_error = result == 1 ? SSL_ERROR_NONE : SSL_get_error(s.ssl, result);
        // A read can write: a KeyUpdate reply, TLS 1.3 tickets, an alert.
        s.flush_output();
        if (result == 1) {
            total += got;
            // Another SSL_read would only say WANT_READ: nothing decrypted,
            // no record and no byte of one left inside OpenSSL.
            if (SSL_pending(s.ssl) == 0 && SSL_has_pending(s.ssl) == 0 &&
                BIO_ctrl_pending(SSL_get_rbio(s.ssl)) == 0 && !s.eof_fed) {
                s.read_starved = true;
                return total;
            }
            continue;
        }
        switch (ssl_error) {
            case SSL_ERROR_WANT_READ:
                s.read_starved = true;
                return total;
            case SSL_ERROR_WANT_WRITE:
                if (++retries <= kMaxWriteRetries) continue;
                s.fail(ssl_error);
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
    if (s.failed || s.peer_closed || !s.handshake_done) return false;
    if (SSL_pending(s.ssl) > 0) return true;
    if (s.read_starved) return false;
    return SSL_has_pending(s.ssl) == 1 || BIO_ctrl_pending(SSL_get_rbio(s.ssl)) > 0 || s.eof_fed;
}

// --- shutdown and stoptls ---

void TlsSession::shutdown() {
    detail::SessionState& s = *impl_;
    if (s.shutdown_sent) return;
    s.shutdown_sent = true;
    if (s.failed || !s.handshake_done) return;
    for (int retries = 0;; ++retries) {
        detail::clear_openssl_errors();
        const int result = SSL_shutdown(s.ssl);
        const int ssl_error = result >= 0 ? SSL_ERROR_NONE : SSL_get_error(s.ssl, result);
        s.flush_output();
        // 0: our close_notify is out, the peer's has not come; 1: both done.
        if (ssl_error != SSL_ERROR_WANT_WRITE || retries >= kMaxWriteRetries) break;
    }
    // A failed close_notify is not worth failing the session for: the
    // connection is ending either way.
    detail::clear_openssl_errors();
}

bool TlsSession::key_update() {
    detail::SessionState& s = *impl_;
    if (!s.handshake_done || s.failed || s.shutdown_sent || SSL_version(s.ssl) != TLS1_3_VERSION) return false;
    detail::clear_openssl_errors();
    if (SSL_key_update(s.ssl, SSL_KEY_UPDATE_REQUESTED) != 1) {
        detail::clear_openssl_errors();
        return false;
    }
    // OpenSSL sends the KeyUpdate with the next write or handshake call; send
    // it now so the update does not wait for application data.
    for (int retries = 0;; ++retries) {
        detail::clear_openssl_errors();
        const int result = SSL_do_handshake(s.ssl);
        const int ssl_error = result == 1 ? SSL_ERROR_NONE : SSL_get_error(s.ssl, result);
        s.flush_output();
        if (result == 1) break;
        if (ssl_error == SSL_ERROR_WANT_WRITE && retries < kMaxWriteRetries) continue;
        s.fail(ssl_error);
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
    // With read-ahead off (OpenSSL's default) the record layer reads exactly
    // one record at a time, so everything after the close_notify record is
    // still in the input ring.
    BIO* input = SSL_get_rbio(s.ssl);
    bytes.resize(BIO_ctrl_pending(input));
    std::size_t got = 0;
    while (got < bytes.size()) {
        const int read = BIO_read(input, bytes.data() + got, clamp_int(bytes.size() - got));
        if (read <= 0) break;
        got += static_cast<std::size_t>(read);
    }
    bytes.resize(got);
    detail::clear_openssl_errors();
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
