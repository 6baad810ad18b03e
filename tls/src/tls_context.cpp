// TlsContext: builds and validates an SSL_CTX from TlsContextOptions.
#include <anyloop/tls/tls_context.hpp>

#include "detail/context_state.hpp"
#include "detail/openssl_errors.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <utility>

namespace anyloop::tls {
namespace {

// RAII for the OpenSSL objects this file handles.
struct BioFree {
    void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
    void operator()(X509* cert) const { X509_free(cert); }
};
struct PkeyFree {
    void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

[[noreturn]] void fail(const std::string& what, const std::string& reason) {
    ERR_clear_error();
    throw TlsConfigError("TlsContext: " + what + ": " + reason);
}

[[noreturn]] void fail_openssl(const std::string& what, const char* fallback) {
    fail(what, detail::take_openssl_reason(fallback));
}

/// PEM text and where it came from, for messages ("certificate_file '/x.pem'").
struct PemText {
    std::string text;
    std::string origin;
};

std::string describe_file(const char* option, const std::string& path) {
    return std::string(option) + " '" + path + "'";
}

PemText read_file(const char* option, const std::string& path) {
    PemText pem{{}, describe_file(option, path)};
    // Opened here rather than by OpenSSL so that a missing or unreadable file
    // is reported with the system's own words.
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) fail(pem.origin, std::strerror(errno));
    char buffer[4096];
    std::size_t got = 0;
    while ((got = std::fread(buffer, 1, sizeof buffer, file)) > 0) pem.text.append(buffer, got);
    const bool error = std::ferror(file) != 0;
    const int saved_errno = errno;
    std::fclose(file);
    if (error) fail(pem.origin, std::strerror(saved_errno));
    return pem;
}

void check_readable(const char* option, const std::string& path) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) fail(describe_file(option, path), std::strerror(errno));
    std::fclose(file);
}

BioPtr memory_bio(const std::string& text) {
    if (text.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) return nullptr;
    return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

/// OpenSSL's PEM readers call this for an encrypted key. It must never fall
/// back to OpenSSL's default, which prompts on the terminal.
int password_callback(char* buffer, int size, int /*writing*/, void* user_data) {
    const auto* password = static_cast<const std::string*>(user_data);
    if (!password || password->empty() || password->size() > static_cast<std::size_t>(size)) return -1;
    std::memcpy(buffer, password->data(), password->size());
    return static_cast<int>(password->size());
}

/// True when the last error says "no more PEM blocks", the normal end of a chain.
bool end_of_pem(unsigned long code) {
    return ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE;
}

void load_identity(SSL_CTX* ctx, const TlsContextOptions& options) {
    const bool from_files = !options.certificate_file.empty();
    const bool from_memory = !options.certificate_pem.empty();
    if (from_files && from_memory) fail("certificate", "give certificate_file or certificate_pem, not both");
    if (!options.private_key_file.empty() && !options.private_key_pem.empty())
        fail("private key", "give private_key_file or private_key_pem, not both");
    if (!from_files && !from_memory) {
        if (!options.private_key_file.empty() || !options.private_key_pem.empty())
            fail("private key", "a private key was given without a certificate");
        if (options.role == TlsRole::server)
            fail("certificate", "a server needs a certificate and key (certificate_file or certificate_pem)");
        return;
    }

    const PemText certificate = from_files ? read_file("certificate_file", options.certificate_file)
                                           : PemText{options.certificate_pem, "certificate_pem"};
    PemText key;
    if (!options.private_key_file.empty()) {
        key = read_file("private_key_file", options.private_key_file);
    } else if (!options.private_key_pem.empty()) {
        key = PemText{options.private_key_pem, "private_key_pem"};
    } else {
        key = certificate;  // key and certificate in one text
    }

    ERR_clear_error();
    BioPtr bio = memory_bio(certificate.text);
    if (!bio) fail_openssl(certificate.origin, "cannot read");
    X509Ptr leaf(PEM_read_bio_X509_AUX(bio.get(), nullptr, nullptr, nullptr));
    if (!leaf) fail_openssl(certificate.origin, "no certificate found");
    if (SSL_CTX_use_certificate(ctx, leaf.get()) != 1) fail_openssl(certificate.origin, "certificate rejected");

    // Every further certificate in the text is chain, sent after the leaf.
    SSL_CTX_clear_chain_certs(ctx);
    while (X509* chain = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
        if (SSL_CTX_add0_chain_cert(ctx, chain) != 1) {
            X509_free(chain);
            fail_openssl(certificate.origin, "chain certificate rejected");
        }
    }
    const unsigned long last = ERR_peek_last_error();
    if (last != 0 && !end_of_pem(last)) fail_openssl(certificate.origin + " (chain)", "bad certificate");
    ERR_clear_error();

    BioPtr key_bio = memory_bio(key.text);
    if (!key_bio) fail_openssl(key.origin, "cannot read");
    std::string password = options.private_key_password;
    PkeyPtr private_key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, password_callback, &password));
    OPENSSL_cleanse(password.data(), password.size());
    if (!private_key) {
        const detail::OpenSslErrors errors = detail::take_openssl_errors();
        if (errors.has(ERR_LIB_PEM, PEM_R_BAD_PASSWORD_READ) && options.private_key_password.empty())
            fail("private key in " + key.origin, "the key is encrypted and no private_key_password was given");
        fail("private key in " + key.origin, errors.empty() ? "no private key found" : errors.reasons);
    }
    if (SSL_CTX_use_PrivateKey(ctx, private_key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1)
        fail_openssl("private key in " + key.origin + " does not match the certificate in " + certificate.origin,
                     "key values mismatch");
}

void load_trust(SSL_CTX* ctx, const TlsContextOptions& options, bool verifying) {
    bool have_ca = false;
    if (!options.ca_file.empty()) {
        check_readable("ca_file", options.ca_file);
        ERR_clear_error();
        if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1)
            fail_openssl(describe_file("ca_file", options.ca_file), "no CA certificate loaded");
        have_ca = true;
        if (options.role == TlsRole::server) {
            // Tell clients which CAs we accept, so one with several
            // certificates can pick the right one.
            if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options.ca_file.c_str()))
                SSL_CTX_set_client_CA_list(ctx, names);
            ERR_clear_error();
        }
    }
    if (!options.ca_directory.empty()) {
        std::error_code ec;
        if (!std::filesystem::is_directory(options.ca_directory, ec))
            fail(describe_file("ca_directory", options.ca_directory),
                 std::filesystem::exists(options.ca_directory, ec) ? "not a directory" : std::strerror(ENOENT));
        ERR_clear_error();
        if (SSL_CTX_load_verify_locations(ctx, nullptr, options.ca_directory.c_str()) != 1)
            fail_openssl(describe_file("ca_directory", options.ca_directory), "cannot use directory");
        have_ca = true;
    }
    if (!options.ca_pem.empty()) {
        ERR_clear_error();
        BioPtr bio = memory_bio(options.ca_pem);
        if (!bio) fail_openssl("ca_pem", "cannot read");
        X509_STORE* store = SSL_CTX_get_cert_store(ctx);
        int added = 0;
        while (X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
            if (X509_STORE_add_cert(store, cert.get()) != 1) fail_openssl("ca_pem", "certificate rejected");
            ++added;
        }
        const unsigned long last = ERR_peek_last_error();
        if (added == 0 || (last != 0 && !end_of_pem(last))) fail_openssl("ca_pem", "no certificate found");
        ERR_clear_error();
        have_ca = true;
    }
    if (options.use_system_ca || (verifying && !have_ca)) {
        ERR_clear_error();
        if (SSL_CTX_set_default_verify_paths(ctx) != 1) fail_openssl("system CA store", "cannot load");
    }
}

int protocol_number(TlsVersion version) {
    switch (version) {
        case TlsVersion::tls1_0:
            return TLS1_VERSION;
        case TlsVersion::tls1_1:
            return TLS1_1_VERSION;
        case TlsVersion::tls1_2:
            return TLS1_2_VERSION;
        case TlsVersion::tls1_3:
            return TLS1_3_VERSION;
    }
    return 0;
}

const char* protocol_name(TlsVersion version) {
    switch (version) {
        case TlsVersion::tls1_0:
            return "TLSv1";
        case TlsVersion::tls1_1:
            return "TLSv1.1";
        case TlsVersion::tls1_2:
            return "TLSv1.2";
        case TlsVersion::tls1_3:
            return "TLSv1.3";
    }
    return "?";
}

/// Server side of ALPN: our most preferred protocol that the client offers.
/// None in common: continue without ALPN rather than abort the handshake,
/// so that a client that only offers names we do not know still connects.
int select_alpn(SSL* /*ssl*/, const unsigned char** out, unsigned char* out_length, const unsigned char* offered,
                unsigned int offered_length, void* arg) {
    const auto* impl = static_cast<const detail::ContextState*>(arg);
    for (const std::string& ours : impl->alpn_protocols) {
        for (unsigned int at = 0; at < offered_length;) {
            const unsigned int length = offered[at];
            if (at + 1 + length > offered_length) break;  // malformed list
            if (length == ours.size() && std::memcmp(offered + at + 1, ours.data(), length) == 0) {
                *out = offered + at + 1;
                *out_length = static_cast<unsigned char>(length);
                return SSL_TLSEXT_ERR_OK;
            }
            at += 1 + length;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/// Client side of resumption: OpenSSL hands us each new resumable session
/// (in TLS 1.3 when a ticket arrives after the handshake). Returning 1 keeps
/// the reference. Runs inside OpenSSL's frames, so nothing may escape.
int on_new_session(SSL* ssl, SSL_SESSION* session) {
    auto* impl = static_cast<detail::ContextState*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
    const std::string* peer_name = detail::peer_name_of(ssl);
    if (!impl || !peer_name || peer_name->empty() || SSL_SESSION_is_resumable(session) != 1) return 0;
    try {
        impl->session_cache.store(*peer_name, session);
        return 1;
    } catch (...) {
        return 0;
    }
}

void configure_alpn(detail::ContextState& impl, const TlsContextOptions& options) {
    for (const std::string& protocol : options.alpn_protocols) {
        if (protocol.empty() || protocol.size() > 255)
            fail("alpn_protocols entry '" + protocol + "'", "a protocol name is 1 to 255 bytes long");
        impl.alpn_wire.push_back(static_cast<unsigned char>(protocol.size()));
        impl.alpn_wire.insert(impl.alpn_wire.end(), protocol.begin(), protocol.end());
    }
    impl.alpn_protocols = options.alpn_protocols;
    if (impl.alpn_wire.empty()) return;
    if (options.role == TlsRole::client) {
        // The one OpenSSL setter that returns 0 on success.
        if (SSL_CTX_set_alpn_protos(impl.ctx, impl.alpn_wire.data(), static_cast<unsigned>(impl.alpn_wire.size())) != 0)
            fail_openssl("alpn_protocols", "rejected");
    } else {
        SSL_CTX_set_alpn_select_cb(impl.ctx, select_alpn, &impl);
    }
}

void configure_resumption(detail::ContextState& impl, const TlsContextOptions& options) {
    SSL_CTX* ctx = impl.ctx;
    impl.session_resumption = options.session_resumption && options.session_cache_size > 0;
    if (options.role == TlsRole::server) {
        // Needed for resumption whenever client certificates are verified;
        // OpenSSL refuses to resume without it.
        static const unsigned char kSessionIdContext[] = "anyloop";
        SSL_CTX_set_session_id_context(ctx, kSessionIdContext, sizeof kSessionIdContext - 1);
        if (!options.session_resumption) {
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
            SSL_CTX_set_num_tickets(ctx, 0);
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        }
        return;
    }
    if (impl.session_resumption) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
}

}  // namespace

TlsContext::TlsContext(const TlsContextOptions& options)
    : impl_(std::make_unique<detail::ContextState>(options.role, options.session_cache_size)) {
    ERR_clear_error();
    impl_->ctx = SSL_CTX_new(options.role == TlsRole::server ? TLS_server_method() : TLS_client_method());
    if (!impl_->ctx) fail_openssl("SSL_CTX_new", "cannot create");
    SSL_CTX* ctx = impl_->ctx;
    SSL_CTX_set_app_data(ctx, impl_.get());

    // Renegotiation is refused: it is gone from TLS 1.3, and in TLS 1.2 it
    // is a source of attacks and of reads that suddenly need to write.
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 (options.role == TlsRole::server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
    // Partial writes let write_plaintext() accept a prefix of a large buffer;
    // a moving write buffer lets a retry after WANT_WRITE pass the same bytes
    // from another address; released buffers keep an idle session small.
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              (options.release_idle_buffers ? SSL_MODE_RELEASE_BUFFERS : 0));

    if (options.max_version && *options.max_version < options.min_version)
        fail("max_version " + std::string(protocol_name(*options.max_version)),
             "below min_version " + std::string(protocol_name(options.min_version)));
    if (SSL_CTX_set_min_proto_version(ctx, protocol_number(options.min_version)) != 1)
        fail_openssl("min_version " + std::string(protocol_name(options.min_version)), "not supported");
    if (options.max_version && SSL_CTX_set_max_proto_version(ctx, protocol_number(*options.max_version)) != 1)
        fail_openssl("max_version " + std::string(protocol_name(*options.max_version)), "not supported");

    if (!options.cipher_list.empty() && SSL_CTX_set_cipher_list(ctx, options.cipher_list.c_str()) != 1)
        fail_openssl("cipher_list '" + options.cipher_list + "'", "no cipher match");
    if (!options.ciphersuites.empty() && SSL_CTX_set_ciphersuites(ctx, options.ciphersuites.c_str()) != 1)
        fail_openssl("ciphersuites '" + options.ciphersuites + "'", "no cipher match");

    load_identity(ctx, options);

    const bool verifying =
        options.role == TlsRole::client ? options.verify_peer : options.client_certificates != ClientCertificates::none;
    load_trust(ctx, options, verifying);
    int mode = SSL_VERIFY_NONE;
    if (verifying) mode = SSL_VERIFY_PEER;
    if (options.role == TlsRole::server && options.client_certificates == ClientCertificates::require)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, nullptr);

    configure_alpn(*impl_, options);
    configure_resumption(*impl_, options);
    ERR_clear_error();
}

std::shared_ptr<TlsContext> TlsContext::create(const TlsContextOptions& options) {
    return std::make_shared<TlsContext>(options);
}

TlsContext::~TlsContext() = default;

TlsRole TlsContext::role() const noexcept {
    return impl_->role;
}

const std::vector<std::string>& TlsContext::alpn_protocols() const noexcept {
    return impl_->alpn_protocols;
}

std::size_t TlsContext::cached_sessions() const {
    return impl_->session_cache.size();
}

void TlsContext::clear_session_cache() {
    impl_->session_cache.clear();
}

ssl_ctx_st* TlsContext::native_handle() const noexcept {
    return impl_->ctx;
}

// --- ClientSessionCache ---

namespace detail {

ClientSessionCache::~ClientSessionCache() {
    clear();
}

void ClientSessionCache::store(const std::string& peer_name, SSL_SESSION* session) {
    SSL_SESSION* replaced = nullptr;
    SSL_SESSION* evicted = nullptr;
    {
        std::lock_guard lock(mutex_);
        if (auto found = index_.find(peer_name); found != index_.end()) {
            replaced = found->second->second;
            entries_.erase(found->second);
            index_.erase(found);
        }
        entries_.emplace_front(peer_name, session);
        index_.emplace(peer_name, entries_.begin());
        if (entries_.size() > capacity_) {
            evicted = entries_.back().second;
            index_.erase(entries_.back().first);
            entries_.pop_back();
        }
    }
    // Freed outside the lock: SSL_SESSION_free may run OpenSSL callbacks.
    SSL_SESSION_free(replaced);
    SSL_SESSION_free(evicted);
}

SSL_SESSION* ClientSessionCache::take(const std::string& peer_name) {
    std::lock_guard lock(mutex_);
    auto found = index_.find(peer_name);
    if (found == index_.end()) return nullptr;
    SSL_SESSION* session = found->second->second;
    if (SSL_SESSION_get_protocol_version(session) >= TLS1_3_VERSION) {
        entries_.erase(found->second);  // single use: the reference moves to the caller
        index_.erase(found);
        return session;
    }
    SSL_SESSION_up_ref(session);
    return session;
}

std::size_t ClientSessionCache::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

void ClientSessionCache::clear() {
    std::list<Entry> old;
    {
        std::lock_guard lock(mutex_);
        old.swap(entries_);
        index_.clear();
    }
    for (Entry& entry : old) SSL_SESSION_free(entry.second);
}

}  // namespace detail
}  // namespace anyloop::tls
