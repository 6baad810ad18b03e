// Socket addresses built from text for the tcp tests, as accept() or
// getpeername() would report them.
#pragma once

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace anyloop::tcp::test {

struct Address {
    sockaddr_storage storage{};
    socklen_t length = 0;
    [[nodiscard]] const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

/// An IPv4 address ("10.0.0.1") or, when the text has a colon, an IPv6 one.
inline Address ip(const std::string& text, std::uint16_t port = 0) {
    Address address;
    if (text.find(':') == std::string::npos) {
        auto& in = reinterpret_cast<sockaddr_in&>(address.storage);
        in.sin_family = AF_INET;
        in.sin_port = htons(port);
        EXPECT_EQ(::inet_pton(AF_INET, text.c_str(), &in.sin_addr), 1) << text;
        address.length = sizeof in;
    } else {
        auto& in6 = reinterpret_cast<sockaddr_in6&>(address.storage);
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons(port);
        EXPECT_EQ(::inet_pton(AF_INET6, text.c_str(), &in6.sin6_addr), 1) << text;
        address.length = sizeof in6;
    }
    return address;
}

/// A unix socket address for `path` (which may start with a NUL: abstract).
inline Address unix_socket(std::string_view path) {
    Address address;
    auto& un = reinterpret_cast<sockaddr_un&>(address.storage);
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, path.data(), path.size());
    address.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    return address;
}

}  // namespace anyloop::tcp::test
