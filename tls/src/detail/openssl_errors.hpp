// Reading OpenSSL's per-thread error queue into our messages. Private to tls/.
#pragma once

#include <openssl/err.h>

#include <string>
#include <vector>

namespace anyloop::tls::detail {

/// What was in the thread's OpenSSL error queue.
struct OpenSslErrors {
    std::vector<unsigned long> codes;  ///< oldest first
    std::string reasons;               ///< their reason strings, oldest first, repeats dropped, joined by ": "

    bool empty() const noexcept { return codes.empty(); }
    /// True when some entry has this library and reason (ERR_LIB_*, *_R_*).
    bool has(int library, int reason) const noexcept;
};

/// Pops every entry of the calling thread's error queue, leaving it empty:
/// a stale entry would otherwise be blamed on the next, unrelated call on this
/// thread (SSL_get_error() reads the same queue).
OpenSslErrors take_openssl_errors();

/// Empties the calling thread's error queue, as SSL_get_error() needs
/// before each SSL call. ERR_clear_error() walks every slot of the queue
/// (hundreds of instructions in OpenSSL 3); peeking first makes the usual
/// case, an empty queue, cheap.
inline void clear_openssl_errors() noexcept {
    if (ERR_peek_error() != 0) ERR_clear_error();
}

/// `reasons` of take_openssl_errors(), or `fallback` when the queue was empty.
std::string take_openssl_reason(const char* fallback);

}  // namespace anyloop::tls::detail
