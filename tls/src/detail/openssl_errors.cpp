#include "detail/openssl_errors.hpp"

#include <openssl/err.h>

#include <algorithm>
#include <array>

namespace anyloop::tls::detail {

bool OpenSslErrors::has(int library, int reason) const noexcept {
    return std::any_of(codes.begin(), codes.end(), [&](unsigned long code) {
        return ERR_GET_LIB(code) == library && ERR_GET_REASON(code) == reason;
    });
}

OpenSslErrors take_openssl_errors() {
    OpenSslErrors result;
    std::vector<std::string> seen;
    while (unsigned long code = ERR_get_error()) {
        result.codes.push_back(code);
        std::string reason;
        if (const char* text = ERR_reason_error_string(code)) {
            reason = text;
        } else {
            // Unknown to the string tables (a provider's code): the generic form
            // "error:0A000086:lib::reason" still identifies it.
            std::array<char, 256> buffer{};
            ERR_error_string_n(code, buffer.data(), buffer.size());
            reason = buffer.data();
        }
        if (std::find(seen.begin(), seen.end(), reason) != seen.end()) continue;
        if (!result.reasons.empty()) result.reasons += ": ";
        result.reasons += reason;
        seen.push_back(std::move(reason));
    }
    return result;
}

std::string take_openssl_reason(const char* fallback) {
    OpenSslErrors errors = take_openssl_errors();
    return errors.empty() ? std::string(fallback) : std::move(errors.reasons);
}

}  // namespace anyloop::tls::detail
