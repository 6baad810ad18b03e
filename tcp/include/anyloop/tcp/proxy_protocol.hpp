// anyloop/tcp/proxy_protocol.hpp — the PROXY protocol (HAProxy's
// proxy-protocol.txt), versions 1 (text) and 2 (binary): a load balancer
// sends one header before the client's bytes, naming the real client
// (source) and the address it connected to (destination).
//
//     ProxyParseResult result = parse_proxy_header(handle.read_buffer().view());
//     switch (result.status) {
//         case ProxyParseResult::Status::need_more: return;           // wait for more input
//         case ProxyParseResult::Status::error: log(result.message); close(); return;
//         case ProxyParseResult::Status::done:
//             handle.read_buffer().consume(result.consumed);
//             if (!result.header.local) peer = result.header.source;  // the real client
//     }
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace anyloop::tcp {

/// The addresses a PROXY header carries.
struct ProxyHeader {
    /// A v2 LOCAL command (a health check from the balancer itself), v1
    /// "UNKNOWN", a v2 UNSPEC or unix-socket family: no client address was
    /// given, keep the real peer address. source and destination are then empty.
    bool local = false;
    /// The client (AF_INET or AF_INET6, with its port).
    sockaddr_storage source{};
    socklen_t source_length = 0;
    /// The address the client connected to.
    sockaddr_storage destination{};
    socklen_t destination_length = 0;
};

/// The outcome of parse_proxy_header.
struct ProxyParseResult {
    enum class Status : std::uint8_t { done, need_more, error };
    Status status = Status::need_more;
    /// The length of the header (including v2 TLVs) when done.
    std::size_t consumed = 0;
    ProxyHeader header{};
    /// With Status::error: what is wrong, e.g.
    /// "PROXY protocol: missing header (got \"GET / HT\")",
    /// "PROXY v2: unsupported address family 0x41".
    std::string message{};
};

/// Parses a v1 or v2 header at the start of `input`. need_more while the
/// bytes may still become a header (a v1 header is at most 107 bytes, a v2
/// header 16 + its length); error as soon as they cannot. v2 TLVs are
/// skipped (counted in `consumed`). TCP and UDP addresses are accepted;
/// unix-socket addresses count as local.
ProxyParseResult parse_proxy_header(std::string_view input);

/// A v1 header "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (TCP6 when
/// either address is IPv6: an IPv4 one is then written IPv4-mapped), or
/// "PROXY UNKNOWN\r\n" when either address is missing or not IP.
std::string make_proxy_v1(const sockaddr* source, const sockaddr* destination);
/// A v2 header: the LOCAL command with no address when `local`; otherwise
/// PROXY with TCP over IPv4 or IPv6 (an IPv4 address beside an IPv6 one
/// written IPv4-mapped), unix stream addresses for two AF_UNIX addresses,
/// or UNSPEC when either address is missing or of another family.
std::string make_proxy_v2(const sockaddr* source, const sockaddr* destination, bool local = false);

}  // namespace anyloop::tcp
