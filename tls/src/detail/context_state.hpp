// TlsContext's private state, shared with tls_session.cpp. Private to tls/.
#pragma once

#include <anyloop/tls/tls_context.hpp>

#include <openssl/ssl.h>

#include <cstddef>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace anyloop::tls::detail {

/// Client-side session cache: the latest resumable SSL_SESSION per peer name,
/// least recently stored evicted first. Thread-safe (one context may serve
/// sessions on many loops). OpenSSL's own client cache is not used because it
/// is looked up by session id, which a client does not know in advance.
class ClientSessionCache {
public:
    explicit ClientSessionCache(std::size_t capacity) : capacity_(capacity) {}
    ~ClientSessionCache();
    ClientSessionCache(const ClientSessionCache&) = delete;
    ClientSessionCache& operator=(const ClientSessionCache&) = delete;

    /// Stores `session` for `peer_name`, taking over the caller's reference.
    void store(const std::string& peer_name, SSL_SESSION* session);
    /// The session to offer to `peer_name`, with a reference for the caller,
    /// or nullptr. A TLS 1.3 session is removed as it is handed out: RFC 8446
    /// (appendix C.4) asks clients not to reuse a ticket, and the server
    /// sends fresh ones on every connection.
    SSL_SESSION* take(const std::string& peer_name);
    std::size_t size() const;
    void clear();

private:
    using Entry = std::pair<std::string, SSL_SESSION*>;
    mutable std::mutex mutex_;
    std::size_t capacity_;
    std::list<Entry> entries_;  // most recently stored first
    std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

/// TlsContext's state.
struct ContextState {
    ContextState(TlsRole role, std::size_t cache_capacity) : role(role), session_cache(cache_capacity) {}
    ~ContextState() {
        session_cache.clear();
        SSL_CTX_free(ctx);
    }
    ContextState(const ContextState&) = delete;
    ContextState& operator=(const ContextState&) = delete;

    SSL_CTX* ctx = nullptr;
    TlsRole role;
    bool session_resumption = false;
    std::vector<std::string> alpn_protocols;
    std::vector<unsigned char> alpn_wire;  // length-prefixed, as ALPN puts it on the wire
    ClientSessionCache session_cache;
};

/// Each client SSL's app data points to the session's peer name (a
/// std::string owned by the session), which is how the new-session callback
/// knows under which name to cache a session.
inline const std::string* peer_name_of(const SSL* ssl) {
    return static_cast<const std::string*>(SSL_get_app_data(ssl));
}

}  // namespace anyloop::tls::detail
