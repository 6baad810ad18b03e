// PROXY protocol v1 and v2: parsing a header at the start of a connection's
// input, and building one.
#include <anyloop/tcp/proxy_protocol.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace anyloop::tcp {

namespace {

constexpr std::string_view v2_signature("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr std::string_view v1_start = "PROXY ";
constexpr std::size_t v1_max_length = 107;  // including the CRLF
constexpr std::size_t v2_fixed_length = 16;

// The v2 address families (high nibble) and transports (low nibble).
constexpr unsigned v2_unspec = 0x0, v2_inet = 0x1, v2_inet6 = 0x2, v2_unix = 0x3;
constexpr unsigned v2_command_local = 0x0, v2_command_proxy = 0x1;
constexpr std::size_t v2_unix_path_length = 108;

// The size of the address block of each v2 family.
constexpr std::size_t v2_address_length(unsigned family) {
    return family == v2_inet ? 12 : family == v2_inet6 ? 36 : family == v2_unix ? 2 * v2_unix_path_length : 0;
}

ProxyParseResult failure(std::string message) {
    ProxyParseResult result;
    result.status = ProxyParseResult::Status::error;
    result.message = std::move(message);
    return result;
}

ProxyParseResult success(std::size_t consumed, const ProxyHeader& header) {
    ProxyParseResult result;
    result.status = ProxyParseResult::Status::done;
    result.consumed = consumed;
    result.header = header;
    return result;
}

std::string hex_byte(unsigned value) {
    char text[8];
    std::snprintf(text, sizeof text, "0x%02x", value & 0xFFU);
    return text;
}

// `bytes` quoted for a message, non-printable bytes as \xNN.
std::string quoted(std::string_view bytes) {
    std::string text = "\"";
    for (const char c : bytes) {
        const auto byte = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\')
            text += {'\\', c};
        else if (byte >= 0x20 && byte < 0x7F)
            text += c;
        else
            text += "\\x" + hex_byte(byte).substr(2);
    }
    return text + "\"";
}

// Whether the shorter of the two is a prefix of the longer.
bool prefix_compatible(std::string_view input, std::string_view expected) {
    const std::size_t n = std::min(input.size(), expected.size());
    return input.substr(0, n) == expected.substr(0, n);
}

std::uint16_t big_endian_16(const unsigned char* bytes) {
    return static_cast<std::uint16_t>(bytes[0] << 8 | bytes[1]);
}

// ---- v1 ---------------------------------------------------------------------

bool parse_v1_port(std::string_view text, std::uint16_t& port) {
    unsigned value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || text.size() > 5 || error != std::errc() || end != text.data() + text.size() || value > 65535)
        return false;
    port = static_cast<std::uint16_t>(value);
    return true;
}

// Makes `storage` the IPv4 or IPv6 address `bytes` (4 or 16 bytes, network
// order) with `port`.
void set_ip_address(int family, const void* bytes, std::uint16_t port, sockaddr_storage& storage, socklen_t& length) {
    storage = {};
    if (family == AF_INET) {
        auto& in = reinterpret_cast<sockaddr_in&>(storage);
        in.sin_family = AF_INET;
        in.sin_port = htons(port);
        std::memcpy(&in.sin_addr, bytes, sizeof in.sin_addr);
        length = sizeof in;
        return;
    }
    auto& in6 = reinterpret_cast<sockaddr_in6&>(storage);
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(port);
    std::memcpy(&in6.sin6_addr, bytes, sizeof in6.sin6_addr);
    length = sizeof in6;
}

// Fills `storage` with the address `text` of `family` and `port`.
bool parse_v1_address(int family, std::string_view text, std::uint16_t port, sockaddr_storage& storage,
                      socklen_t& length) {
    char terminated[INET6_ADDRSTRLEN + 1];
    if (text.empty() || text.size() >= sizeof terminated) return false;
    std::memcpy(terminated, text.data(), text.size());
    terminated[text.size()] = '\0';
    unsigned char bytes[16];
    if (::inet_pton(family, terminated, bytes) != 1) return false;
    set_ip_address(family, bytes, port, storage, length);
    return true;
}

ProxyParseResult parse_v1(std::string_view input) {
    const std::string_view window = input.substr(0, v1_max_length);
    const std::size_t end = window.find("\r\n");
    const std::string_view line = window.substr(0, end);  // all of window without a CRLF
    for (std::size_t i = 0; i < line.size(); ++i) {
        const auto byte = static_cast<unsigned char>(line[i]);
        const bool last_cr = byte == '\r' && end == std::string_view::npos && i + 1 == line.size();
        if ((byte < 0x20 || byte >= 0x7F) && !last_cr)
            return failure("PROXY v1: invalid byte " + hex_byte(byte) + " in header " + quoted(line.substr(0, i + 1)));
    }
    const std::string_view rest = line.substr(std::min(line.size(), v1_start.size()));
    if (!prefix_compatible(rest, "TCP4 ") && !prefix_compatible(rest, "TCP6 ") && !prefix_compatible(rest, "UNKNOWN"))
        return failure("PROXY v1: unknown protocol in " + quoted(line));
    if (end == std::string_view::npos) {
        if (input.size() >= v1_max_length)
            return failure("PROXY v1: no CRLF within " + std::to_string(v1_max_length) + " bytes");
        return {};
    }
    const std::size_t consumed = end + 2;
    ProxyHeader header;
    if (rest.starts_with("UNKNOWN") && (rest.size() == 7 || rest[7] == ' ')) {
        header.local = true;  // whatever follows UNKNOWN is ignored
        return success(consumed, header);
    }
    // "TCP4 <source> <destination> <source port> <destination port>"
    std::string_view fields[5];
    std::size_t count = 0;
    for (std::string_view remaining = rest;;) {
        const std::size_t space = remaining.find(' ');
        if (count == 5) return failure("PROXY v1: too many fields in " + quoted(line));
        fields[count++] = remaining.substr(0, space);
        if (space == std::string_view::npos) break;
        remaining.remove_prefix(space + 1);
    }
    if (count != 5) return failure("PROXY v1: expected 5 fields after PROXY in " + quoted(line));
    const int family = fields[0] == "TCP4" ? AF_INET : AF_INET6;
    std::uint16_t source_port = 0;
    std::uint16_t destination_port = 0;
    if (!parse_v1_port(fields[3], source_port) || !parse_v1_port(fields[4], destination_port))
        return failure("PROXY v1: bad port in " + quoted(line));
    if (!parse_v1_address(family, fields[1], source_port, header.source, header.source_length) ||
        !parse_v1_address(family, fields[2], destination_port, header.destination, header.destination_length))
        return failure("PROXY v1: bad " + std::string(fields[0]) + " address in " + quoted(line));
    return success(consumed, header);
}

// ---- v2 ---------------------------------------------------------------------

ProxyParseResult parse_v2(std::string_view input) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(input.data());
    if (input.size() > 12) {
        const unsigned version = bytes[12] >> 4;
        const unsigned command = bytes[12] & 0xFU;
        if (version != 2) return failure("PROXY v2: unsupported version " + std::to_string(version));
        if (command != v2_command_local && command != v2_command_proxy)
            return failure("PROXY v2: unknown command " + hex_byte(command));
    }
    if (input.size() < v2_fixed_length) return {};
    const bool local = (bytes[12] & 0xFU) == v2_command_local;
    const unsigned family = bytes[13] >> 4;
    const unsigned transport = bytes[13] & 0xFU;
    const std::size_t length = big_endian_16(bytes + 14);
    // A LOCAL header's family is to be ignored along with its addresses.
    if (!local) {
        if (family > v2_unix || transport > 2 || (family == v2_unspec) != (transport == 0))
            return failure("PROXY v2: unsupported address family " + hex_byte(bytes[13]));
        if (length < v2_address_length(family))
            return failure("PROXY v2: " + std::to_string(length) + " bytes cannot hold the addresses of family " +
                           hex_byte(bytes[13]));
    }
    if (input.size() < v2_fixed_length + length) return {};
    ProxyHeader header;
    const unsigned char* addresses = bytes + v2_fixed_length;
    if (local || family == v2_unspec || family == v2_unix) {
        header.local = true;
    } else {
        // Source address, destination address, source port, destination port.
        const int ip_family = family == v2_inet ? AF_INET : AF_INET6;
        const std::size_t size = family == v2_inet ? 4 : 16;
        set_ip_address(ip_family, addresses, big_endian_16(addresses + 2 * size), header.source, header.source_length);
        set_ip_address(ip_family, addresses + size, big_endian_16(addresses + 2 * size + 2), header.destination,
                       header.destination_length);
    }
    return success(v2_fixed_length + length, header);  // TLVs after the addresses are skipped
}

// ---- building ---------------------------------------------------------------

bool is_ip(const sockaddr* address) {
    return address != nullptr && (address->sa_family == AF_INET || address->sa_family == AF_INET6);
}

// An IP address as IPv6, IPv4 ones IPv4-mapped.
sockaddr_in6 as_ipv6(const sockaddr* address) {
    if (address->sa_family == AF_INET6) return *reinterpret_cast<const sockaddr_in6*>(address);
    const auto* in = reinterpret_cast<const sockaddr_in*>(address);
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_port = in->sin_port;
    in6.sin6_addr.s6_addr[10] = in6.sin6_addr.s6_addr[11] = 0xFF;
    std::memcpy(in6.sin6_addr.s6_addr + 12, &in->sin_addr, 4);
    return in6;
}

// Two IP endpoints as a header carries them: both IPv4, or both IPv6 with an
// IPv4 one IPv4-mapped. Addresses in network order, ports in host order.
struct Endpoints {
    int family = AF_INET;
    std::size_t size = 4;  // of each address
    unsigned char source[16]{};
    unsigned char destination[16]{};
    std::uint16_t source_port = 0;
    std::uint16_t destination_port = 0;
};

Endpoints endpoints_of(const sockaddr* source, const sockaddr* destination) {
    Endpoints endpoints;
    if (source->sa_family == AF_INET && destination->sa_family == AF_INET) {
        const auto* src = reinterpret_cast<const sockaddr_in*>(source);
        const auto* dst = reinterpret_cast<const sockaddr_in*>(destination);
        std::memcpy(endpoints.source, &src->sin_addr, 4);
        std::memcpy(endpoints.destination, &dst->sin_addr, 4);
        endpoints.source_port = ntohs(src->sin_port);
        endpoints.destination_port = ntohs(dst->sin_port);
        return endpoints;
    }
    const sockaddr_in6 src = as_ipv6(source);
    const sockaddr_in6 dst = as_ipv6(destination);
    endpoints.family = AF_INET6;
    endpoints.size = 16;
    std::memcpy(endpoints.source, &src.sin6_addr, 16);
    std::memcpy(endpoints.destination, &dst.sin6_addr, 16);
    endpoints.source_port = ntohs(src.sin6_port);
    endpoints.destination_port = ntohs(dst.sin6_port);
    return endpoints;
}

void append_big_endian_16(std::string& out, std::uint16_t value) {
    out.push_back(static_cast<char>(value >> 8));
    out.push_back(static_cast<char>(value & 0xFF));
}

}  // namespace

ProxyParseResult parse_proxy_header(std::string_view input) {
    if (input.empty()) return {};
    if (prefix_compatible(input, v2_signature)) return parse_v2(input);
    if (prefix_compatible(input, v1_start)) return parse_v1(input);
    return failure("PROXY protocol: missing header (got " + quoted(input.substr(0, 8)) + ")");
}

std::string make_proxy_v1(const sockaddr* source, const sockaddr* destination) {
    if (!is_ip(source) || !is_ip(destination)) return "PROXY UNKNOWN\r\n";
    const Endpoints endpoints = endpoints_of(source, destination);
    char source_text[INET6_ADDRSTRLEN];
    char destination_text[INET6_ADDRSTRLEN];
    ::inet_ntop(endpoints.family, endpoints.source, source_text, sizeof source_text);
    ::inet_ntop(endpoints.family, endpoints.destination, destination_text, sizeof destination_text);
    return std::string("PROXY ") + (endpoints.family == AF_INET ? "TCP4 " : "TCP6 ") + source_text + " " +
           destination_text + " " + std::to_string(endpoints.source_port) + " " +
           std::to_string(endpoints.destination_port) + "\r\n";
}

std::string make_proxy_v2(const sockaddr* source, const sockaddr* destination, bool local) {
    std::string out(v2_signature);
    const bool ip = is_ip(source) && is_ip(destination);
    const bool unix_stream = source != nullptr && destination != nullptr && source->sa_family == AF_UNIX &&
                             destination->sa_family == AF_UNIX;
    if (local || (!ip && !unix_stream)) {
        out.push_back(static_cast<char>(0x20 | (local ? v2_command_local : v2_command_proxy)));
        out.push_back('\0');  // UNSPEC
        append_big_endian_16(out, 0);
        return out;
    }
    out.push_back(static_cast<char>(0x20 | v2_command_proxy));
    if (unix_stream) {
        out.push_back(static_cast<char>(v2_unix << 4 | 1));
        append_big_endian_16(out, static_cast<std::uint16_t>(v2_address_length(v2_unix)));
        for (const sockaddr* address : {source, destination}) {
            const auto& path = reinterpret_cast<const sockaddr_un*>(address)->sun_path;
            static_assert(sizeof path == v2_unix_path_length);
            out.append(path, sizeof path);
        }
        return out;
    }
    const Endpoints endpoints = endpoints_of(source, destination);
    const unsigned family = endpoints.family == AF_INET ? v2_inet : v2_inet6;
    out.push_back(static_cast<char>(family << 4 | 1));  // over TCP
    append_big_endian_16(out, static_cast<std::uint16_t>(v2_address_length(family)));
    out.append(reinterpret_cast<const char*>(endpoints.source), endpoints.size);
    out.append(reinterpret_cast<const char*>(endpoints.destination), endpoints.size);
    append_big_endian_16(out, endpoints.source_port);
    append_big_endian_16(out, endpoints.destination_port);
    return out;
}

}  // namespace anyloop::tcp
