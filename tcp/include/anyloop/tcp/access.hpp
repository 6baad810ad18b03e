// anyloop/tcp/access.hpp — which clients may connect: Net::Server's allow,
// deny, cidr_allow and cidr_deny rules, plus the address formatting the
// rules (and log lines) use.
//
//     AccessRules rules;
//     rules.cidr_allow("10.0.0.0/8");
//     rules.cidr_allow("2001:db8::/32");
//     rules.deny("^10\\.0\\.0\\.13$");             // one bad host inside 10/8
//     AccessDecision decision = rules.check(peer, peer_length);
//     if (!decision.allowed) log(address_text(peer, peer_length) + ": " + decision.reason);
//
// A client is allowed when it matches no deny rule (regex or CIDR) and, if
// any allow rule exists (regex or CIDR), matches one. An IPv4-mapped IPv6
// address (::ffff:10.1.2.3, what a dual-stack socket reports for IPv4
// clients) is treated as the IPv4 address everywhere: in the text regexes
// see and in CIDR matching.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace anyloop::tcp {

/// The outcome of AccessRules::check.
struct AccessDecision {
    bool allowed = true;
    /// Why a client was refused: "denied by deny rule '^10\\.'",
    /// "denied by cidr_deny rule 10.0.0.0/8", "no allow rule matches".
    /// Empty when allowed.
    std::string reason;
};

/// Allow and deny rules, checked on accept before anything is allocated for
/// the connection. Add rules before the server runs; check() is const and
/// may run on several threads at once.
class AccessRules {
public:
    AccessRules();
    ~AccessRules();
    AccessRules(const AccessRules& other);
    AccessRules& operator=(const AccessRules& other);
    AccessRules(AccessRules&& other) noexcept;
    AccessRules& operator=(AccessRules&& other) noexcept;

    /// A regex (std::regex, ECMAScript), matched with regex_search against
    /// the address text ("127.0.0.1", "::1", "unix:/path") and, when one is
    /// given, against the host name. Throws std::invalid_argument naming the
    /// pattern for a bad regex.
    void allow(const std::string& regex);
    void deny(const std::string& regex);
    /// A network: "10.0.0.0/8", "2001:db8::/32", or one address
    /// ("127.0.0.1" = /32, "::1" = /128). Bits after the prefix are ignored.
    /// An IPv4-mapped network (::ffff:10.0.0.0/104) is the IPv4 network.
    /// Throws std::invalid_argument naming the text for a bad CIDR.
    void cidr_allow(std::string_view cidr);
    void cidr_deny(std::string_view cidr);

    /// Whether there is no rule at all (everyone is allowed).
    [[nodiscard]] bool empty() const noexcept;

    /// Checks a client. CIDR rules match IPv4 and IPv6 peers only; unix
    /// socket peers are matched by regex ("unix:/path", "unix"). With CIDR
    /// rules only, nothing is allocated unless the client is refused.
    [[nodiscard]] AccessDecision check(const sockaddr* address, socklen_t length,
                                       std::string_view host_name = {}) const;

private:
    // A pattern and its compiled std::regex; defined in the .cpp so that
    // <regex> stays out of this header.
    struct RegexRule;
    struct CidrRule {
        std::string text;
        int family;  // AF_INET or AF_INET6
        std::uint8_t bytes[16];
        unsigned prefix;
    };
    static RegexRule make_regex_rule(const std::string& pattern);
    static CidrRule make_cidr_rule(std::string_view cidr);

    std::vector<RegexRule> allow_regexes_;
    std::vector<RegexRule> deny_regexes_;
    std::vector<CidrRule> allow_cidrs_;
    std::vector<CidrRule> deny_cidrs_;
};

/// The address as text: "127.0.0.1", "::1", "unix:/path" ("unix:@name" for
/// an abstract socket, "unix" for an unnamed one); an IPv4-mapped IPv6
/// address is shown as IPv4; "unknown" for anything else.
std::string address_text(const sockaddr* address, socklen_t length);
/// The port of an IPv4 or IPv6 address (host byte order); 0 otherwise.
std::uint16_t address_port(const sockaddr* address, socklen_t length);

}  // namespace anyloop::tcp
