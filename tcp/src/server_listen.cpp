// Listener addresses: parsing "host:port", "[v6]:port", "port" and
// "unix:/path", and binding them.
#include "server_core.hpp"

#include <anyloop/handle/connect.hpp>

#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace anyloop::tcp::detail {
namespace {

constexpr std::string_view unix_prefix = "unix:";

struct HostPort {
    std::string host;
    std::string port;
};

[[noreturn]] void bad_address(const std::string& address, const std::string& why) {
    throw std::invalid_argument("TcpServer: bad listener address \"" + address + "\": " + why);
}

HostPort split_address(const std::string& address) {
    HostPort parts;
    if (address.starts_with('[')) {
        const auto close = address.find("]:");
        if (close == std::string::npos) bad_address(address, "expected [IPv6 address]:port");
        parts.host = address.substr(1, close - 1);
        parts.port = address.substr(close + 2);
    } else if (const auto colon = address.rfind(':'); colon != std::string::npos) {
        parts.host = address.substr(0, colon);
        parts.port = address.substr(colon + 1);
        if (parts.host.find(':') != std::string::npos)
            bad_address(address, "an IPv6 address needs brackets, as in [::1]:7000");
    } else {
        parts.host = "0.0.0.0";
        parts.port = address;
    }
    if (parts.host.empty()) bad_address(address, "no host");
    if (parts.port.empty() || parts.port.size() > 5 ||
        parts.port.find_first_not_of("0123456789") != std::string::npos || std::stoul(parts.port) > 65535)
        bad_address(address, "the port must be a number from 0 to 65535");
    return parts;
}

[[noreturn]] void throw_errno(int error, const std::string& what) {
    throw std::system_error(error, std::generic_category(), what);
}

// Closes the fd when an exception leaves the scope before release().
struct FdGuard {
    int fd;
    ~FdGuard() {
        if (fd >= 0) ::close(fd);
    }
    int release() { return std::exchange(fd, -1); }
};

std::string bracketed(const sockaddr* address, socklen_t length) {
    const std::string text = address_text(address, length);
    const std::string host = address->sa_family == AF_INET6 ? "[" + text + "]" : text;
    return host + ":" + std::to_string(address_port(address, length));
}

ListenSocket bind_unix(const ListenerOptions& options) {
    const std::string path = options.address.substr(unix_prefix.size());
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof address.sun_path)
        bad_address(options.address, "the socket path is empty or too long");
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    const auto* generic = reinterpret_cast<const sockaddr*>(&address);

    FdGuard fd{::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
    if (fd.fd < 0) throw_errno(errno, "TcpServer: socket() for " + options.address);
    // A socket file nobody listens on is a leftover of an earlier run.
    struct stat status{};
    if (::lstat(path.c_str(), &status) == 0 && S_ISSOCK(status.st_mode)) {
        FdGuard probe{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
        if (::connect(probe.fd, generic, sizeof address) != 0 && errno == ECONNREFUSED) ::unlink(path.c_str());
    }
    if (::bind(fd.fd, generic, sizeof address) != 0) throw_errno(errno, "TcpServer: cannot bind " + options.address);
    if (::listen(fd.fd, options.backlog) != 0) throw_errno(errno, "TcpServer: cannot listen on " + options.address);
    return ListenSocket{fd.release(), options.address, path, 0, options.proxy_protocol, options.tls_ctx};
}

}  // namespace

void check_listener_address(const std::string& address) {
    if (address.starts_with(unix_prefix)) {
        if (address.size() == unix_prefix.size()) bad_address(address, "no socket path");
        return;
    }
    split_address(address);
}

std::vector<ListenSocket> bind_listener(const ListenerOptions& options, bool reuse_port,
                                        const std::vector<std::uint16_t>& port_overrides) {
    if (options.address.starts_with(unix_prefix)) return {bind_unix(options)};

    const HostPort parts = split_address(options.address);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (const int status = ::getaddrinfo(parts.host.c_str(), parts.port.c_str(), &hints, &found); status != 0)
        throw std::system_error(status, resolver_category(), "TcpServer: cannot resolve " + options.address);
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> results(found, ::freeaddrinfo);

    std::vector<ListenSocket> sockets;
    try {
        std::size_t index = 0;
        for (const addrinfo* entry = found; entry != nullptr; entry = entry->ai_next, ++index) {
            sockaddr_storage address{};
            std::memcpy(&address, entry->ai_addr, entry->ai_addrlen);
            auto* generic = reinterpret_cast<sockaddr*>(&address);
            if (index < port_overrides.size() && port_overrides[index] != 0) {
                const std::uint16_t port = htons(port_overrides[index]);
                if (address.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(generic)->sin6_port = port;
                else reinterpret_cast<sockaddr_in*>(generic)->sin_port = port;
            }
            const std::string shown = bracketed(generic, entry->ai_addrlen);

            FdGuard fd{::socket(entry->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
            if (fd.fd < 0) throw_errno(errno, "TcpServer: socket() for " + shown);
            const int on = 1;
            ::setsockopt(fd.fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
            if (reuse_port && ::setsockopt(fd.fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
                throw_errno(errno, "TcpServer: SO_REUSEPORT on " + shown);
            if (entry->ai_family == AF_INET6) {
                // "::" serves IPv4 too; any other IPv6 address only itself.
                const auto& in6 = reinterpret_cast<const sockaddr_in6*>(generic)->sin6_addr;
                const int v6_only = IN6_IS_ADDR_UNSPECIFIED(&in6) ? 0 : 1;
                ::setsockopt(fd.fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6_only, sizeof v6_only);
            }
            if (::bind(fd.fd, generic, entry->ai_addrlen) != 0)
                throw_errno(errno, "TcpServer: cannot bind " + shown + " (from \"" + options.address + "\")");
            if (::listen(fd.fd, options.backlog) != 0) throw_errno(errno, "TcpServer: cannot listen on " + shown);

            sockaddr_storage local{};
            socklen_t local_length = sizeof local;
            ::getsockname(fd.fd, reinterpret_cast<sockaddr*>(&local), &local_length);
            const auto* bound = reinterpret_cast<const sockaddr*>(&local);
            sockets.push_back(ListenSocket{fd.release(), bracketed(bound, local_length), {},
                                           address_port(bound, local_length), options.proxy_protocol,
                                           options.tls_ctx});
        }
    } catch (...) {
        for (const ListenSocket& socket : sockets) ::close(socket.fd);
        throw;
    }
    return sockets;
}

void unmap_ipv4(sockaddr_storage& address, socklen_t& length) noexcept {
    if (address.ss_family != AF_INET6) return;
    const auto in6 = *reinterpret_cast<const sockaddr_in6*>(&address);
    if (!IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) return;
    sockaddr_in in4{};
    in4.sin_family = AF_INET;
    in4.sin_port = in6.sin6_port;
    std::memcpy(&in4.sin_addr, &in6.sin6_addr.s6_addr[12], 4);
    address = {};
    std::memcpy(&address, &in4, sizeof in4);
    length = sizeof in4;
}

}  // namespace anyloop::tcp::detail
