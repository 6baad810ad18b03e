// PROXY protocol v1 and v2: every header kind, split at every byte; garbage,
// truncated and missing headers; the builders round-trip.
#include <anyloop/tcp/proxy_protocol.hpp>

#include "address_support.hpp"

#include <anyloop/tcp/access.hpp>

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace anyloop::tcp::test {
namespace {

using Status = ProxyParseResult::Status;

std::string text_of(const sockaddr_storage& address, socklen_t length) {
    return address_text(reinterpret_cast<const sockaddr*>(&address), length) + " port " +
           std::to_string(address_port(reinterpret_cast<const sockaddr*>(&address), length));
}

/// The parsed header's source and destination as "ADDRESS port N".
std::string source_of(const ProxyParseResult& result) {
    return text_of(result.header.source, result.header.source_length);
}
std::string destination_of(const ProxyParseResult& result) {
    return text_of(result.header.destination, result.header.destination_length);
}

// Every proper prefix of `header` needs more; the whole header followed by
// the client's first bytes is done and consumes exactly the header.
ProxyParseResult parse_at_every_split(const std::string& header) {
    for (std::size_t size = 0; size < header.size(); ++size) {
        const ProxyParseResult partial = parse_proxy_header(std::string_view(header).substr(0, size));
        EXPECT_EQ(partial.status, Status::need_more) << size << " bytes: " << partial.message;
    }
    const ProxyParseResult result = parse_proxy_header(header + "GET / HTTP/1.0\r\n");
    EXPECT_EQ(result.status, Status::done) << result.message;
    EXPECT_EQ(result.consumed, header.size());
    return result;
}

// make_proxy_v2(source, destination): 16 bytes and an address block of
// `block_size`, announced by bytes 13 to 16 (`family_and_length`); parsed
// back at every split.
ProxyParseResult round_trip_v2(const Address& source, const Address& destination, std::size_t block_size,
                               std::string_view family_and_length) {
    const std::string header = make_proxy_v2(source.get(), destination.get());
    EXPECT_EQ(header.size(), 16U + block_size);
    EXPECT_EQ(header.substr(12, 4), family_and_length);
    return parse_at_every_split(header);
}

ProxyParseResult parse(std::string_view input) {
    return parse_proxy_header(input);
}

// ---- v1 -------------------------------------------------------------------------

TEST(ProxyV1, Tcp4) {
    const ProxyParseResult result = parse_at_every_split("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n");
    EXPECT_FALSE(result.header.local);
    EXPECT_EQ(result.header.source.ss_family, AF_INET);
    EXPECT_EQ(source_of(result), "192.0.2.1 port 56324");
    EXPECT_EQ(destination_of(result), "198.51.100.2 port 443");
}

TEST(ProxyV1, Tcp6) {
    const ProxyParseResult result = parse_at_every_split("PROXY TCP6 2001:db8::1 ::1 65535 0\r\n");
    EXPECT_FALSE(result.header.local);
    EXPECT_EQ(result.header.source.ss_family, AF_INET6);
    EXPECT_EQ(result.header.source_length, sizeof(sockaddr_in6));
    EXPECT_EQ(source_of(result), "2001:db8::1 port 65535");
    EXPECT_EQ(destination_of(result), "::1 port 0");
}

TEST(ProxyV1, Unknown) {
    EXPECT_TRUE(parse_at_every_split("PROXY UNKNOWN\r\n").header.local);
    const ProxyParseResult result =
        parse_at_every_split("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n");
    EXPECT_TRUE(result.header.local);
    EXPECT_EQ(result.header.source_length, 0U);
}

TEST(ProxyV1, LongestHeaderFits) {
    const std::string address = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const std::string header = "PROXY TCP6 " + address + " " + address + " 65535 65535\r\n";
    ASSERT_EQ(header.size(), 104U);
    parse_at_every_split(header);
    const std::string unknown = "PROXY UNKNOWN " + std::string(107 - 16, 'x') + "\r\n";
    ASSERT_EQ(unknown.size(), 107U);
    EXPECT_TRUE(parse_at_every_split(unknown).header.local);
}

TEST(ProxyV1, BuilderRoundTrips) {
    const Address source = ip("203.0.113.9", 1234);
    const Address destination = ip("10.0.0.1", 80);
    const std::string v4 = make_proxy_v1(source.get(), destination.get());
    EXPECT_EQ(v4, "PROXY TCP4 203.0.113.9 10.0.0.1 1234 80\r\n");
    EXPECT_EQ(source_of(parse(v4)), "203.0.113.9 port 1234");

    const Address source6 = ip("2001:db8::7", 4321);
    const std::string mixed = make_proxy_v1(source6.get(), destination.get());
    EXPECT_EQ(mixed, "PROXY TCP6 2001:db8::7 ::ffff:10.0.0.1 4321 80\r\n");
    const ProxyParseResult result = parse(mixed);
    ASSERT_EQ(result.status, Status::done) << result.message;
    EXPECT_EQ(destination_of(result), "10.0.0.1 port 80") << "IPv4-mapped shows as IPv4";

    const Address path = unix_socket("/tmp/x");
    EXPECT_EQ(make_proxy_v1(path.get(), destination.get()), "PROXY UNKNOWN\r\n");
    EXPECT_EQ(make_proxy_v1(nullptr, nullptr), "PROXY UNKNOWN\r\n");
}

TEST(ProxyV1, GarbageIsAnErrorAsSoonAsItShows) {
    for (const char* input : {
             "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
             "PROXY TCP5",  // incomplete but already impossible
             "PROXY  TCP4",
             "PROXY UNKNOWNX\r\n",
             "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
             "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
             "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
             "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
             "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
             "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
             "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
             "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
             "PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n",
             "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
             "PROXY TCP4 1.2.3.4\t",
             "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
         }) {
        const ProxyParseResult result = parse(input);
        EXPECT_EQ(result.status, Status::error) << input;
        EXPECT_EQ(result.message.rfind("PROXY v1: ", 0), 0U) << result.message;
    }
    EXPECT_EQ(parse("PROXY TCP5").message, "PROXY v1: unknown protocol in \"PROXY TCP5\"");
    EXPECT_EQ(parse("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n").message,
              "PROXY v1: bad port in \"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\"");
    EXPECT_EQ(parse(std::string("PROXY TCP4 1.2\0", 15)).message,
              "PROXY v1: invalid byte 0x00 in header \"PROXY TCP4 1.2\\x00\"");
}

TEST(ProxyV1, NoCrlfWithin107BytesIsAnError) {
    const std::string input = "PROXY UNKNOWN " + std::string(93, 'x');
    ASSERT_EQ(input.size(), 107U);
    EXPECT_EQ(parse(input.substr(0, 106)).status, Status::need_more);
    const ProxyParseResult result = parse(input);
    EXPECT_EQ(result.status, Status::error);
    EXPECT_EQ(result.message, "PROXY v1: no CRLF within 107 bytes");
    EXPECT_EQ(parse(input + "\r\n").status, Status::error) << "a CRLF after the 107th byte is too late";
}

// ---- v2 -------------------------------------------------------------------------

TEST(ProxyV2, Ipv4) {
    const Address source = ip("192.0.2.1", 56324);
    const Address destination = ip("198.51.100.2", 443);
    const ProxyParseResult result = round_trip_v2(source, destination, 12, std::string_view("\x21\x11\x00\x0c", 4));
    EXPECT_FALSE(result.header.local);
    EXPECT_EQ(source_of(result), "192.0.2.1 port 56324");
    EXPECT_EQ(destination_of(result), "198.51.100.2 port 443");
}

TEST(ProxyV2, Ipv6) {
    const Address source = ip("2001:db8::1", 1);
    const Address destination = ip("2001:db8::2", 65535);
    const ProxyParseResult result = round_trip_v2(source, destination, 36, std::string_view("\x21\x21\x00\x24", 4));
    EXPECT_EQ(source_of(result), "2001:db8::1 port 1");
    EXPECT_EQ(destination_of(result), "2001:db8::2 port 65535");
}

TEST(ProxyV2, MixedFamiliesAreSentAsIpv6Mapped) {
    const Address source = ip("192.0.2.1", 5);
    const Address destination = ip("::1", 6);
    const ProxyParseResult result = parse_at_every_split(make_proxy_v2(source.get(), destination.get()));
    EXPECT_EQ(result.header.source.ss_family, AF_INET6);
    EXPECT_EQ(source_of(result), "192.0.2.1 port 5");
}

TEST(ProxyV2, Local) {
    const Address source = ip("192.0.2.1", 1);
    const std::string header = make_proxy_v2(source.get(), source.get(), true);
    ASSERT_EQ(header.size(), 16U);
    EXPECT_EQ(header.substr(12, 4), std::string("\x20\x00\x00\x00", 4));
    const ProxyParseResult result = parse_at_every_split(header);
    EXPECT_TRUE(result.header.local);
    EXPECT_EQ(result.header.source_length, 0U);
    // LOCAL with an address block: the block (and its family) is ignored.
    std::string with_block = make_proxy_v2(source.get(), source.get());
    with_block[12] = '\x20';
    EXPECT_TRUE(parse_at_every_split(with_block).header.local);
}

TEST(ProxyV2, TlvsAreSkipped) {
    const Address source = ip("192.0.2.1", 56324);
    const Address destination = ip("198.51.100.2", 443);
    std::string header = make_proxy_v2(source.get(), destination.get());
    // PP2_TYPE_AUTHORITY "example.com", then a PP2_TYPE_NOOP of 3 bytes.
    const std::string tlvs = std::string("\x02\x00\x0b", 3) + "example.com" + std::string("\x04\x00\x03xyz", 6);
    header += tlvs;
    const std::size_t length = 12 + tlvs.size();
    header[14] = static_cast<char>(length >> 8);
    header[15] = static_cast<char>(length & 0xFF);
    const ProxyParseResult result = parse_at_every_split(header);
    EXPECT_EQ(result.consumed, 16 + length);
    EXPECT_EQ(source_of(result), "192.0.2.1 port 56324");
}

TEST(ProxyV2, UnspecAndUnixAreLocal) {
    EXPECT_TRUE(parse_at_every_split(make_proxy_v2(nullptr, nullptr)).header.local);
    const Address a = unix_socket("/run/a.sock");
    const Address b = unix_socket("/run/b.sock");
    const std::string header = make_proxy_v2(a.get(), b.get());
    ASSERT_EQ(header.size(), 16U + 216U);
    EXPECT_EQ(static_cast<unsigned char>(header[13]), 0x31);
    EXPECT_EQ(header.substr(16, 12), std::string("/run/a.sock\0", 12));
    EXPECT_TRUE(parse_at_every_split(header).header.local);
}

TEST(ProxyV2, GarbageIsAnErrorAsSoonAsItShows) {
    const Address source = ip("192.0.2.1", 1);
    const std::string good = make_proxy_v2(source.get(), source.get());
    const auto patched = [&](std::size_t at, char byte) {
        std::string header = good;
        header[at] = byte;
        return header;
    };
    EXPECT_EQ(parse(patched(12, '\x11').substr(0, 13)).message, "PROXY v2: unsupported version 1");
    EXPECT_EQ(parse(patched(12, '\x22').substr(0, 13)).message, "PROXY v2: unknown command 0x02");
    EXPECT_EQ(parse(patched(13, '\x41')).message, "PROXY v2: unsupported address family 0x41");
    EXPECT_EQ(parse(patched(13, '\x13')).status, Status::error) << "transport 3";
    EXPECT_EQ(parse(patched(13, '\x10')).status, Status::error) << "INET without a transport";
    EXPECT_EQ(parse(patched(13, '\x01')).status, Status::error) << "UNSPEC with a transport";
    // The length cannot hold two IPv4 addresses and ports: an error at once,
    // not a wait for bytes that would be misread.
    const ProxyParseResult short_block = parse(patched(15, '\x0b').substr(0, 16));
    EXPECT_EQ(short_block.status, Status::error);
    EXPECT_EQ(short_block.message, "PROXY v2: 11 bytes cannot hold the addresses of family 0x11");
    // A signature that goes wrong partway.
    EXPECT_EQ(parse(std::string("\r\n\r\n\0\r\nQUIX", 12)).status, Status::error);
}

TEST(ProxyV2, TruncatedHeaderWaits) {
    const Address source = ip("2001:db8::1", 1);
    const std::string header = make_proxy_v2(source.get(), source.get());
    EXPECT_EQ(parse(header.substr(0, header.size() - 1)).status, Status::need_more);
    std::string announces_more = header;
    announces_more[15] = static_cast<char>(36 + 10);  // 10 TLV bytes that never came
    EXPECT_EQ(parse(announces_more).status, Status::need_more);
    EXPECT_EQ(parse(announces_more + std::string(10, '\0')).consumed, header.size() + 10);
}

// ---- neither --------------------------------------------------------------------

TEST(ProxyHeader, MissingHeaderIsAnError) {
    const ProxyParseResult result = parse("GET / HTTP/1.0\r\n\r\n");
    EXPECT_EQ(result.status, Status::error);
    EXPECT_EQ(result.message, "PROXY protocol: missing header (got \"GET / HT\")");
    EXPECT_EQ(parse("G").message, "PROXY protocol: missing header (got \"G\")") << "one byte is enough to tell";
    EXPECT_EQ(parse(std::string("\x16\x03\x01\x02\x00", 5)).message,
              "PROXY protocol: missing header (got \"\\x16\\x03\\x01\\x02\\x00\")");
    EXPECT_EQ(parse("PROXX").status, Status::error);
    EXPECT_EQ(parse("\r\n\r\n\r").status, Status::error);
}

TEST(ProxyHeader, StartsOfEitherVersionWait) {
    EXPECT_EQ(parse("").status, Status::need_more);
    EXPECT_EQ(parse("P").status, Status::need_more);
    EXPECT_EQ(parse("PROXY").status, Status::need_more);
    EXPECT_EQ(parse("\r").status, Status::need_more);
    EXPECT_EQ(parse(std::string("\r\n\r\n\0\r", 6)).status, Status::need_more);
}

}  // namespace
}  // namespace anyloop::tcp::test
