// AccessRules and the address helpers.

// GCC 12 at -O2 with sanitizers reports a false -Wmaybe-uninitialized
// inside libstdc++'s regex compiler (std::function members of its NFA
// states); the pragma comes first so that it covers those headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <anyloop/tcp/access.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <charconv>
#include <cstddef>
#include <cstring>
#include <regex>
#include <span>
#include <stdexcept>

namespace anyloop::tcp {

namespace {

// Room for "unix:" and a full sun_path, which is more than INET6_ADDRSTRLEN.
constexpr std::size_t address_text_room = 8 + sizeof(sockaddr_un::sun_path);

// An IP address reduced to what CIDR matching compares: IPv4-mapped IPv6
// addresses become IPv4.
struct IpAddress {
    int family = AF_UNSPEC;
    std::uint8_t bytes[16]{};
};

bool ip_address_of(const sockaddr* address, socklen_t length, IpAddress& ip) {
    if (address == nullptr) return false;
    if (address->sa_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
        ip.family = AF_INET;
        std::memcpy(ip.bytes, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, 4);
        return true;
    }
    if (address->sa_family == AF_INET6 && length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
        const in6_addr& in6 = reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&in6)) {
            ip.family = AF_INET;
            std::memcpy(ip.bytes, in6.s6_addr + 12, 4);
        } else {
            ip.family = AF_INET6;
            std::memcpy(ip.bytes, in6.s6_addr, 16);
        }
        return true;
    }
    return false;
}

// Writes the text of address_text() into `room` and returns a view of it.
std::string_view format_address(const sockaddr* address, socklen_t length, std::span<char, address_text_room> room) {
    IpAddress ip;
    if (ip_address_of(address, length, ip)) {
        ::inet_ntop(ip.family, ip.bytes, room.data(), static_cast<socklen_t>(room.size()));
        return room.data();
    }
    if (address == nullptr || length < static_cast<socklen_t>(sizeof(sa_family_t)) || address->sa_family != AF_UNIX)
        return "unknown";
    constexpr std::size_t path_offset = offsetof(sockaddr_un, sun_path);
    const auto* un = reinterpret_cast<const sockaddr_un*>(address);
    const std::size_t path_room =
        std::min(static_cast<std::size_t>(length) - std::min<std::size_t>(length, path_offset), sizeof un->sun_path);
    if (path_room == 0 || (un->sun_path[0] == '\0' && path_room == 1)) return "unix";
    std::memcpy(room.data(), "unix:", 5);
    std::size_t size = 5;
    if (un->sun_path[0] == '\0') {  // abstract: the name is every byte after the NUL
        room[size++] = '@';
        std::memcpy(room.data() + size, un->sun_path + 1, path_room - 1);
        size += path_room - 1;
    } else {
        const std::size_t path_length = ::strnlen(un->sun_path, path_room);
        std::memcpy(room.data() + size, un->sun_path, path_length);
        size += path_length;
    }
    return {room.data(), size};
}

bool cidr_matches(const IpAddress& ip, int family, const std::uint8_t* network, unsigned prefix) {
    if (ip.family != family) return false;
    const unsigned whole = prefix / 8;
    if (std::memcmp(ip.bytes, network, whole) != 0) return false;
    const unsigned rest = prefix % 8;
    if (rest == 0) return true;
    const auto mask = static_cast<std::uint8_t>(0xFF << (8 - rest));
    return (ip.bytes[whole] & mask) == network[whole];
}

}  // namespace

struct AccessRules::RegexRule {
    std::string pattern;
    std::regex regex;
};

AccessRules::AccessRules() = default;
AccessRules::~AccessRules() = default;
AccessRules::AccessRules(const AccessRules& other) = default;
AccessRules& AccessRules::operator=(const AccessRules& other) = default;
AccessRules::AccessRules(AccessRules&& other) noexcept = default;
AccessRules& AccessRules::operator=(AccessRules&& other) noexcept = default;

AccessRules::RegexRule AccessRules::make_regex_rule(const std::string& pattern) {
    try {
        return RegexRule{pattern, std::regex(pattern, std::regex::ECMAScript | std::regex::optimize)};
    } catch (const std::regex_error& error) {
        throw std::invalid_argument("access rule: bad regex '" + pattern + "': " + error.what());
    }
}

AccessRules::CidrRule AccessRules::make_cidr_rule(std::string_view cidr) {
    const auto bad = [cidr](const char* why) {
        return std::invalid_argument("access rule: bad CIDR '" + std::string(cidr) + "': " + why);
    };
    const std::size_t slash = cidr.find('/');
    const std::string_view address = cidr.substr(0, slash);
    CidrRule rule{std::string(cidr), AF_UNSPEC, {}, 0};
    char text[INET6_ADDRSTRLEN + 1];
    if (address.empty() || address.size() >= sizeof text) throw bad("not an IPv4 or IPv6 address");
    std::memcpy(text, address.data(), address.size());
    text[address.size()] = '\0';
    rule.family = address.find(':') != std::string_view::npos ? AF_INET6 : AF_INET;
    if (::inet_pton(rule.family, text, rule.bytes) != 1) throw bad("not an IPv4 or IPv6 address");
    const unsigned bits = rule.family == AF_INET ? 32 : 128;
    rule.prefix = bits;
    if (slash != std::string_view::npos) {
        const std::string_view digits = cidr.substr(slash + 1);
        const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), rule.prefix);
        if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() || rule.prefix > bits)
            throw bad(rule.family == AF_INET ? "the prefix length must be 0 to 32"
                                             : "the prefix length must be 0 to 128");
    }
    // ::ffff:a.b.c.d/n with n >= 96 is an IPv4 network, which is how peers
    // with IPv4-mapped addresses are matched.
    if (rule.family == AF_INET6 && rule.prefix >= 96 && IN6_IS_ADDR_V4MAPPED(reinterpret_cast<in6_addr*>(rule.bytes))) {
        std::memmove(rule.bytes, rule.bytes + 12, 4);
        std::memset(rule.bytes + 4, 0, 12);
        rule.family = AF_INET;
        rule.prefix -= 96;
    }
    // Clear the host bits so that matching compares the prefix alone.
    for (unsigned bit = rule.prefix; bit < 128; ++bit)
        rule.bytes[bit / 8] &= static_cast<std::uint8_t>(~(0x80U >> (bit % 8)));
    return rule;
}

void AccessRules::allow(const std::string& regex) {
    allow_regexes_.push_back(make_regex_rule(regex));
}
void AccessRules::deny(const std::string& regex) {
    deny_regexes_.push_back(make_regex_rule(regex));
}
void AccessRules::cidr_allow(std::string_view cidr) {
    allow_cidrs_.push_back(make_cidr_rule(cidr));
}
void AccessRules::cidr_deny(std::string_view cidr) {
    deny_cidrs_.push_back(make_cidr_rule(cidr));
}

bool AccessRules::empty() const noexcept {
    return allow_regexes_.empty() && deny_regexes_.empty() && allow_cidrs_.empty() && deny_cidrs_.empty();
}

AccessDecision AccessRules::check(const sockaddr* address, socklen_t length, std::string_view host_name) const {
    IpAddress ip;
    const bool is_ip = ip_address_of(address, length, ip);
    const auto in_cidrs = [&](const std::vector<CidrRule>& rules) -> const CidrRule* {
        if (!is_ip) return nullptr;
        for (const CidrRule& rule : rules)
            if (cidr_matches(ip, rule.family, rule.bytes, rule.prefix)) return &rule;
        return nullptr;
    };
    // The text is formatted once, and only when a regex needs it.
    char room[address_text_room];
    std::string_view text;
    const auto in_regexes = [&](const std::vector<RegexRule>& rules) -> const RegexRule* {
        if (rules.empty()) return nullptr;
        if (text.empty()) text = format_address(address, length, room);
        for (const RegexRule& rule : rules) {
            if (std::regex_search(text.begin(), text.end(), rule.regex)) return &rule;
            if (!host_name.empty() && std::regex_search(host_name.begin(), host_name.end(), rule.regex)) return &rule;
        }
        return nullptr;
    };

    if (const CidrRule* rule = in_cidrs(deny_cidrs_)) return {false, "denied by cidr_deny rule " + rule->text};
    if (const RegexRule* rule = in_regexes(deny_regexes_))
        return {false, "denied by deny rule '" + rule->pattern + "'"};
    if (allow_cidrs_.empty() && allow_regexes_.empty()) return {};
    if (in_cidrs(allow_cidrs_) != nullptr || in_regexes(allow_regexes_) != nullptr) return {};
    return {false, "no allow rule matches"};
}

std::string address_text(const sockaddr* address, socklen_t length) {
    char room[address_text_room];
    return std::string(format_address(address, length, room));
}

std::uint16_t address_port(const sockaddr* address, socklen_t length) {
    if (address == nullptr) return 0;
    if (address->sa_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in)))
        return ntohs(reinterpret_cast<const sockaddr_in*>(address)->sin_port);
    if (address->sa_family == AF_INET6 && length >= static_cast<socklen_t>(sizeof(sockaddr_in6)))
        return ntohs(reinterpret_cast<const sockaddr_in6*>(address)->sin6_port);
    return 0;
}

}  // namespace anyloop::tcp
