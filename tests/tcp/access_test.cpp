// AccessRules: regex and CIDR rules, IPv4 and IPv6, IPv4-mapped addresses,
// and the address text the regexes see.
#include <anyloop/tcp/access.hpp>

#include "address_support.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

// Counts the allocations of this test program, to prove that check()
// allocates nothing on the accept path with CIDR rules only.
namespace {
std::atomic<std::size_t> allocations{0};
}  // namespace

// Out of line, so that the compiler does not pair an inlined free() with
// an allocation it knows as operator new (-Wmismatched-new-delete).
[[gnu::noinline]] void* operator new(std::size_t size) {
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* memory = std::malloc(size == 0 ? 1 : size)) return memory;
    throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* memory) noexcept {
    std::free(memory);
}
[[gnu::noinline]] void operator delete(void* memory, std::size_t) noexcept {
    std::free(memory);
}

namespace anyloop::tcp::test {
namespace {

bool allowed(const AccessRules& rules, const Address& address, std::string_view host = {}) {
    return rules.check(address.get(), address.length, host).allowed;
}

TEST(AddressText, FormatsEveryFamily) {
    const Address v4 = ip("127.0.0.1", 80);
    EXPECT_EQ(address_text(v4.get(), v4.length), "127.0.0.1");
    EXPECT_EQ(address_port(v4.get(), v4.length), 80);
    const Address v6 = ip("::1", 443);
    EXPECT_EQ(address_text(v6.get(), v6.length), "::1");
    EXPECT_EQ(address_port(v6.get(), v6.length), 443);
    const Address mapped = ip("::ffff:10.1.2.3", 7);
    EXPECT_EQ(address_text(mapped.get(), mapped.length), "10.1.2.3");
    EXPECT_EQ(address_port(mapped.get(), mapped.length), 7);
    const Address path = unix_socket("/run/app.sock");
    EXPECT_EQ(address_text(path.get(), path.length), "unix:/run/app.sock");
    EXPECT_EQ(address_port(path.get(), path.length), 0);
    Address unnamed = unix_socket("");
    unnamed.length = sizeof(sa_family_t);
    EXPECT_EQ(address_text(unnamed.get(), unnamed.length), "unix");
    Address abstract = unix_socket(std::string_view("\0name", 5));
    abstract.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 5);
    EXPECT_EQ(address_text(abstract.get(), abstract.length), "unix:@name");
    EXPECT_EQ(address_text(nullptr, 0), "unknown");
}

TEST(AccessRules, EmptyAllowsEveryone) {
    const AccessRules rules;
    EXPECT_TRUE(rules.empty());
    const AccessDecision decision = rules.check(ip("8.8.8.8").get(), sizeof(sockaddr_in));
    EXPECT_TRUE(decision.allowed);
    EXPECT_TRUE(decision.reason.empty());
}

TEST(AccessRules, RegexAllowAndDeny) {
    AccessRules rules;
    rules.allow("^127\\.");
    rules.allow("^::1$");
    EXPECT_FALSE(rules.empty());
    EXPECT_TRUE(allowed(rules, ip("127.0.0.1")));
    EXPECT_TRUE(allowed(rules, ip("::1")));
    EXPECT_TRUE(allowed(rules, ip("::ffff:127.0.0.5"))) << "IPv4-mapped is matched as IPv4";
    const AccessDecision refused = rules.check(ip("10.0.0.1").get(), sizeof(sockaddr_in));
    EXPECT_FALSE(refused.allowed);
    EXPECT_EQ(refused.reason, "no allow rule matches");

    rules.deny("^127\\.0\\.0\\.2$");
    const AccessDecision denied = rules.check(ip("127.0.0.2").get(), sizeof(sockaddr_in));
    EXPECT_FALSE(denied.allowed) << "deny wins over allow";
    EXPECT_EQ(denied.reason, "denied by deny rule '^127\\.0\\.0\\.2$'");
    EXPECT_TRUE(allowed(rules, ip("127.0.0.3")));
}

TEST(AccessRules, RegexesAlsoSeeTheHostName) {
    AccessRules rules;
    rules.allow("\\.example\\.com$");
    rules.deny("^bad\\.");
    EXPECT_TRUE(allowed(rules, ip("192.0.2.1"), "good.example.com"));
    EXPECT_FALSE(allowed(rules, ip("192.0.2.1"), "bad.example.com"));
    EXPECT_FALSE(allowed(rules, ip("192.0.2.1")));
    EXPECT_FALSE(allowed(rules, ip("192.0.2.1"), "example.org"));
}

TEST(AccessRules, DenyOnlyAllowsTheRest) {
    AccessRules rules;
    rules.deny("^10\\.");
    EXPECT_TRUE(allowed(rules, ip("11.0.0.1")));
    const AccessDecision denied = rules.check(ip("10.9.9.9").get(), sizeof(sockaddr_in));
    EXPECT_FALSE(denied.allowed);
    EXPECT_EQ(denied.reason, "denied by deny rule '^10\\.'");
}

TEST(AccessRules, CidrIpv4) {
    AccessRules rules;
    rules.cidr_allow("10.0.0.0/8");
    rules.cidr_allow("192.168.1.7");  // one host
    rules.cidr_deny("10.1.0.0/16");
    rules.cidr_allow("172.16.0.0/12");
    EXPECT_TRUE(allowed(rules, ip("10.0.0.1")));
    EXPECT_TRUE(allowed(rules, ip("10.255.255.255")));
    EXPECT_FALSE(allowed(rules, ip("11.0.0.0")));
    EXPECT_TRUE(allowed(rules, ip("192.168.1.7")));
    EXPECT_FALSE(allowed(rules, ip("192.168.1.8")));
    EXPECT_TRUE(allowed(rules, ip("172.31.255.255"))) << "a prefix that is not a whole number of bytes";
    EXPECT_FALSE(allowed(rules, ip("172.32.0.0")));
    EXPECT_FALSE(allowed(rules, ip("172.15.255.255")));
    const AccessDecision denied = rules.check(ip("10.1.2.3").get(), sizeof(sockaddr_in));
    EXPECT_FALSE(denied.allowed);
    EXPECT_EQ(denied.reason, "denied by cidr_deny rule 10.1.0.0/16");
    EXPECT_FALSE(allowed(rules, ip("::ffff:10.1.2.3"))) << "IPv4-mapped meets IPv4 rules";
    EXPECT_TRUE(allowed(rules, ip("::ffff:10.2.2.3")));
    EXPECT_FALSE(allowed(rules, ip("::a00:1"))) << "an IPv6 address is not IPv4 ::10.0.0.1";
}

TEST(AccessRules, CidrIpv6) {
    AccessRules rules;
    rules.cidr_allow("2001:db8::/32");
    rules.cidr_allow("::1");
    rules.cidr_deny("2001:db8:dead::/48");
    rules.cidr_allow("fe80::/10");
    EXPECT_TRUE(allowed(rules, ip("2001:db8::1")));
    EXPECT_TRUE(allowed(rules, ip("2001:db8:ffff:ffff::1")));
    EXPECT_FALSE(allowed(rules, ip("2001:db9::1")));
    EXPECT_FALSE(allowed(rules, ip("2001:db8:dead:1::1")));
    EXPECT_TRUE(allowed(rules, ip("::1")));
    EXPECT_FALSE(allowed(rules, ip("::2")));
    EXPECT_TRUE(allowed(rules, ip("febf::1")));
    EXPECT_FALSE(allowed(rules, ip("fec0::1")));
    EXPECT_FALSE(allowed(rules, ip("127.0.0.1"))) << "IPv4 peers do not meet IPv6 rules";
}

TEST(AccessRules, MappedCidrIsTheIpv4Network) {
    AccessRules rules;
    rules.cidr_allow("::ffff:192.168.0.0/112");
    EXPECT_TRUE(allowed(rules, ip("192.168.3.4")));
    EXPECT_TRUE(allowed(rules, ip("::ffff:192.168.3.4")));
    EXPECT_FALSE(allowed(rules, ip("192.169.0.1")));
}

TEST(AccessRules, CidrIgnoresHostBitsAndAcceptsZeroPrefix) {
    AccessRules rules;
    rules.cidr_allow("10.1.2.3/8");
    EXPECT_TRUE(allowed(rules, ip("10.200.0.1")));
    AccessRules everyone;
    everyone.cidr_allow("0.0.0.0/0");
    EXPECT_TRUE(allowed(everyone, ip("1.2.3.4")));
    EXPECT_FALSE(allowed(everyone, ip("::2"))) << "/0 of IPv4 is all of IPv4 only";
}

TEST(AccessRules, UnixPeersMeetRegexesOnly) {
    AccessRules rules;
    rules.cidr_allow("0.0.0.0/0");
    EXPECT_FALSE(allowed(rules, unix_socket("/tmp/s")));
    rules.allow("^unix:/tmp/");
    EXPECT_TRUE(allowed(rules, unix_socket("/tmp/s")));
    EXPECT_FALSE(allowed(rules, unix_socket("/var/s")));
}

TEST(AccessRules, RegexAndCidrTogether) {
    AccessRules rules;
    rules.cidr_allow("10.0.0.0/8");
    rules.allow("^192\\.0\\.2\\.");
    rules.deny("^10\\.0\\.0\\.13$");
    EXPECT_TRUE(allowed(rules, ip("10.0.0.12")));
    EXPECT_FALSE(allowed(rules, ip("10.0.0.13")));
    EXPECT_TRUE(allowed(rules, ip("192.0.2.99")));
    EXPECT_FALSE(allowed(rules, ip("198.51.100.1")));
}

TEST(AccessRules, CidrOnlyCheckAllocatesNothingWhenAllowed) {
    AccessRules rules;
    rules.cidr_allow("10.0.0.0/8");
    rules.cidr_allow("2001:db8::/32");
    rules.cidr_deny("10.1.0.0/16");
    const Address v4 = ip("10.2.3.4");
    const Address v6 = ip("2001:db8::5");
    const Address mapped = ip("::ffff:10.9.9.9");
    const std::size_t before = allocations.load();
    const bool all_allowed = allowed(rules, v4) && allowed(rules, v6) && allowed(rules, mapped);
    const std::size_t during = allocations.load() - before;
    EXPECT_TRUE(all_allowed);
    EXPECT_EQ(during, 0U);
    // The counter works: a refusal allocates its reason.
    const Address refused = ip("10.1.0.1");
    const std::size_t before_refusal = allocations.load();
    const AccessDecision decision = rules.check(refused.get(), refused.length);
    EXPECT_GT(allocations.load(), before_refusal);
    EXPECT_EQ(decision.reason, "denied by cidr_deny rule 10.1.0.0/16");
}

TEST(AccessRules, BadRulesThrowWithTheText) {
    AccessRules rules;
    const auto message_of = [&](auto add) -> std::string {
        try {
            add();
        } catch (const std::invalid_argument& error) {
            return error.what();
        }
        return "no exception";
    };
    EXPECT_EQ(message_of([&] { rules.cidr_allow("10.0.0.0/33"); }),
              "access rule: bad CIDR '10.0.0.0/33': the prefix length must be 0 to 32");
    EXPECT_EQ(message_of([&] { rules.cidr_deny("2001:db8::/129"); }),
              "access rule: bad CIDR '2001:db8::/129': the prefix length must be 0 to 128");
    EXPECT_EQ(message_of([&] { rules.cidr_allow("10.0.0/8"); }),
              "access rule: bad CIDR '10.0.0/8': not an IPv4 or IPv6 address");
    EXPECT_EQ(message_of([&] { rules.cidr_allow("host.example"); }),
              "access rule: bad CIDR 'host.example': not an IPv4 or IPv6 address");
    EXPECT_NE(message_of([&] { rules.cidr_allow("10.0.0.0/"); }), "no exception");
    EXPECT_NE(message_of([&] { rules.cidr_allow("10.0.0.0/8x"); }), "no exception");
    EXPECT_NE(message_of([&] { rules.cidr_allow(""); }), "no exception");
    EXPECT_EQ(message_of([&] { rules.allow("(unclosed"); }).rfind("access rule: bad regex '(unclosed': ", 0), 0U);
    EXPECT_TRUE(rules.empty()) << "a rejected rule is not added";
}

}  // namespace
}  // namespace anyloop::tcp::test
