// TlsContext: the shared, immutable-after-construction TLS configuration
// (an OpenSSL SSL_CTX) from which TlsSessions are made.
//
// This header does not include OpenSSL: the OpenSSL types appear only as
// forward declarations for the native_handle() escape hatch.
#pragma once

#include <anyloop/handle/stream_layer.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace anyloop::tls {

class TlsSession;
namespace detail {
struct ContextState;  // defined in the implementation
}

/// Which end of the handshake a context serves: a client connects, a
/// server accepts.
enum class TlsRole : std::uint8_t { client, server };

/// Protocol versions, for TlsContextOptions::min_version / max_version.
enum class TlsVersion : std::uint8_t { tls1_0, tls1_1, tls1_2, tls1_3 };

/// What a server asks of its clients' certificates.
enum class ClientCertificates : std::uint8_t {
    none,     ///< do not ask for one
    request,  ///< ask; a client without one is accepted, a client with a bad one is refused
    require,  ///< ask; a client without a valid one is refused
};

/// Everything a TlsContext is built from. An aggregate, meant for designated
/// initializers (members in declaration order):
///
///     auto context = anyloop::tls::TlsContext::create({
///         .role = anyloop::tls::TlsRole::server,
///         .certificate_file = "server.pem",
///         .private_key_file = "server.key",
///     });
///
/// Identity (our certificate and key) comes from files or from memory, never
/// both. A PEM identity holds the leaf certificate first, then any chain
/// certificates to send with it; the private key may sit in the same text.
struct TlsContextOptions {
    TlsRole role = TlsRole::client;

    // --- our identity (required for a server, optional for a client) ---

    /// PEM file: leaf certificate, then the chain; may also hold the key.
    std::string certificate_file{};
    /// PEM file with the private key; empty means "the key is in certificate_file".
    std::string private_key_file{};
    /// In-memory alternative to certificate_file (same layout).
    std::string certificate_pem{};
    /// In-memory alternative to private_key_file; empty means "in certificate_pem".
    std::string private_key_pem{};
    /// Password of an encrypted private key. Without one, an encrypted key is a
    /// configuration error (OpenSSL is never allowed to prompt on a terminal).
    std::string private_key_password{};

    // --- whom we trust ---

    /// PEM file of trusted CA certificates.
    std::string ca_file{};
    /// Directory of trusted CA certificates in OpenSSL's hashed layout (`openssl rehash`).
    std::string ca_directory{};
    /// In-memory PEM of trusted CA certificates.
    std::string ca_pem{};
    /// Also trust the system store. When verification is on and none of
    /// ca_file, ca_directory and ca_pem is given, the system store is used anyway.
    bool use_system_ca = false;

    /// Client: verify the server's certificate chain (and, when the session
    /// has a peer name, that the certificate is for that name). A server
    /// verifies clients according to client_certificates instead.
    bool verify_peer = true;
    /// Server: whether to ask clients for a certificate.
    ClientCertificates client_certificates = ClientCertificates::none;

    // --- protocol ---

    /// Lowest protocol version accepted.
    TlsVersion min_version = TlsVersion::tls1_2;
    /// Highest protocol version offered; none means the newest the library knows.
    std::optional<TlsVersion> max_version{};
    /// OpenSSL cipher list for TLS 1.2 and older (e.g. "ECDHE+AESGCM"); empty keeps the default.
    std::string cipher_list{};
    /// TLS 1.3 ciphersuites (e.g. "TLS_AES_256_GCM_SHA384"); empty keeps the default.
    std::string ciphersuites{};
    /// ALPN protocol names in order of preference. A client offers them; a
    /// server selects its most preferred one that the client also offers, and
    /// continues without ALPN when there is none in common.
    std::vector<std::string> alpn_protocols{};

    // --- session resumption ---

    /// Client: remember sessions by peer name and offer them on the next
    /// session to the same peer name. Server: issue session tickets.
    bool session_resumption = true;
    /// Client: how many peer names the session cache remembers (least recently used goes first).
    std::size_t session_cache_size = 256;
    /// Give OpenSSL's 16 KiB read and write buffers back whenever a session
    /// is idle (SSL_MODE_RELEASE_BUFFERS): about 34 KiB less per idle
    /// connection, paid with an allocation and a free per record each way
    /// (a busy echo costs ~5% more instructions). For many mostly idle connections.
    bool release_idle_buffers = false;
};

/// Thrown by TlsContext's constructor for a configuration it cannot use. The
/// message names the option or file that failed and OpenSSL's reason, e.g.
/// `TlsContext: private_key_file '/etc/x/key.pem' does not match certificate_file '/etc/x/cert.pem': key values
/// mismatch`.
class TlsConfigError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A TLS configuration shared by any number of TlsSessions, on any number of
/// threads: OpenSSL's SSL_CTX is thread-safe once built, and the client
/// session cache is guarded by a mutex. Sessions hold a shared_ptr to their
/// context, so a context lives as long as its last session.
///
/// A context is also what a Handle's tls_ctx option and starttls() take:
/// it makes each Handle's TLS layer (anyloop/tls/tls_layer.hpp).
class TlsContext : public TlsLayerFactory, public std::enable_shared_from_this<TlsContext> {
public:
    /// Builds the context; throws TlsConfigError for a bad configuration.
    explicit TlsContext(const TlsContextOptions& options);
    /// Convenience: std::make_shared<TlsContext>(options).
    static std::shared_ptr<TlsContext> create(const TlsContextOptions& options);
    ~TlsContext() override;

    TlsContext(const TlsContext&) = delete;
    TlsContext& operator=(const TlsContext&) = delete;

    /// Client or server, as configured.
    TlsRole role() const noexcept;
    /// The ALPN list as configured (empty: no ALPN).
    const std::vector<std::string>& alpn_protocols() const noexcept;

    /// Number of peer names with a resumable session in the client cache.
    std::size_t cached_sessions() const;
    /// Forgets every cached client session.
    void clear_session_cache();

    /// The underlying SSL_CTX, for settings this class does not wrap. It
    /// stays owned by the context; change it only before the first session.
    ssl_ctx_st* native_handle() const noexcept;

    /// TlsLayerFactory: a TlsLayer over a new session of this context.
    /// Throws std::invalid_argument when `mode` does not match role()
    /// (accept needs a server context, connect a client one) or the
    /// context is not owned by a std::shared_ptr.
    [[nodiscard]] std::unique_ptr<StreamLayer> make_tls_layer(TlsMode mode, const std::string& peername) override;

private:
    friend class TlsSession;
    std::unique_ptr<detail::ContextState> impl_;
};

}  // namespace anyloop::tls
