// TcpServer basics on every backend: callbacks, filters (records split at
// every byte, different input and output filters), several listeners,
// introspection, over-long lines and the idle timeout.
#include <anyloop/tcp/server.hpp>

#include "tcp/server_test_support.hpp"

#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <any>
#include <cctype>
#include <filesystem>

namespace anyloop::tcp::test {
namespace {

using ServerTest = LoopTest;

TEST_P(ServerTest, EchoesLinesAndCountsEveryCallback) {
    Served served(*loop);
    auto& [log, counts, server] = served;
    server.start();
    ASSERT_EQ(server.addresses().size(), 1U);
    EXPECT_EQ(server.addresses()[0], "127.0.0.1:" + std::to_string(server.port()));

    Peer peer(*loop, connect_tcp("127.0.0.1", server.port()));
    peer.send("hello\r\nworld\n");
    ASSERT_TRUE(run_until(*loop, [&] { return peer.received == "hello\nworld\n"; }, 5s)) << peer.received;
    EXPECT_EQ(counts.connected, 1);
    EXPECT_EQ(counts.input, 2);
    EXPECT_GE(counts.flushed, 1) << "the answers were written: on_flushed";
    EXPECT_EQ(server.connection_count(), 1U);

    peer.close();
    ASSERT_TRUE(run_until(*loop, [&] { return counts.disconnected == 1; }, 5s));
    EXPECT_EQ(server.connection_count(), 0U);
    ASSERT_TRUE(shut_down(*loop, server));
    EXPECT_EQ(counts.finished, 1);
    EXPECT_EQ(counts.error, 0);
    EXPECT_EQ(server.stats().accepted, 1U);
    expect_loop_empty();
}

// Sends `bytes` one at a time, letting the server read each byte on its own.
void trickle(EventLoop& loop, Peer& peer, int& server_fd, std::string_view bytes) {
    ASSERT_TRUE(run_until(loop, [&] { return server_fd >= 0; }, 5s));
    for (const char byte : bytes) {
        peer.send(std::string_view(&byte, 1));
        for (int i = 0; i < 100; ++i) {
            int pending = 0;
            ::ioctl(server_fd, FIONREAD, &pending);
            if (pending == 0) break;
            loop.run_once(false);
        }
    }
}

struct SplitCase {
    std::string name;
    std::shared_ptr<const Filter> filter;
    std::string wire;                  // three records, encoded
    std::vector<std::string> records;  // what the server must see
};

TEST_P(ServerTest, RecordsSplitAtEveryByteReachTheServerWhole) {
    std::string prefixed;
    for (const std::string record : {"one", "", "three\n3"}) {
        prefixed.push_back('\0');
        prefixed.push_back(static_cast<char>(record.size()));
        prefixed += record;
    }
    const std::vector<SplitCase> cases = {
        {"line CRLF", std::make_shared<LineFilter>("\r\n"), "one\r\ntwo\n\r\n\r\r\n", {"one", "two\n", "\r"}},
        {"line default", std::make_shared<LineFilter>(), "a\r\nbb\n\nccc\n", {"a", "bb", "", "ccc"}},
        {"length-prefixed", std::make_shared<LengthPrefixedFilter>(2), prefixed, {"one", "", "three\n3"}},
    };
    for (const SplitCase& split : cases) {
        SCOPED_TRACE(split.name);
        LogLines log;
        ServerOptions options = loopback_options(log);
        options.input_filter = split.filter;
        TcpServer server(*loop, std::move(options));
        std::vector<std::string> records;
        int server_fd = -1;
        server.on_connected([&](Connection& connection) { server_fd = connection.handle().fd(); });
        server.on_input([&](Connection& connection, std::string_view record) {
            records.emplace_back(record);
            connection.send(record);
        });
        server.start();
        Peer peer(*loop, connect_tcp("127.0.0.1", server.port()));
        trickle(*loop, peer, server_fd, split.wire);
        ASSERT_TRUE(run_until(*loop, [&] { return records.size() == split.records.size(); }, 5s));
        EXPECT_EQ(records, split.records);
        // The same filter encodes the answers, so they come back as sent
        // (the default line filter answers with "\n").
        std::string expected;
        for (const std::string& record : split.records) split.filter->clone()->put(record, expected);
        ASSERT_TRUE(run_until(*loop, [&] { return peer.received.size() >= expected.size(); }, 5s));
        EXPECT_EQ(peer.received, expected);
        ASSERT_TRUE(shut_down(*loop, server));
    }
    expect_loop_empty();
}

TEST_P(ServerTest, DifferentInputAndOutputFilters) {
    LogLines log;
    ServerOptions options = loopback_options(log);
    options.input_filter = std::make_shared<LineFilter>();
    options.output_filter = std::make_shared<LengthPrefixedFilter>(2);
    TcpServer server(*loop, std::move(options));
    server.on_input([](Connection& connection, std::string_view line) {
        std::string upper(line);
        for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        connection.send(upper);
    });
    server.start();
    Peer peer(*loop, connect_tcp("127.0.0.1", server.port()));
    peer.send("abc\nxy\n");
    const std::string expected = std::string("\0\3ABC\0\2XY", 9);
    ASSERT_TRUE(run_until(*loop, [&] { return peer.received.size() >= expected.size(); }, 5s));
    EXPECT_EQ(peer.received, expected);
    peer.close();
    ASSERT_TRUE(shut_down(*loop, server));
    expect_loop_empty();
}

TEST_P(ServerTest, ListensOnSeveralAddressesAndRemovesTheUnixSocket) {
    const std::string path = "/tmp/anyloop-server-test-" + std::to_string(::getpid()) + "-" + GetParam() + ".sock";
    LogLines log;
    ServerOptions options = loopback_options(log);
    options.listeners.push_back({.address = "unix:" + path});
    options.listeners.push_back({.address = "127.0.0.1:0", .backlog = 8});
    const bool ipv6 = have_ipv6_loopback();
    if (ipv6) options.listeners.push_back({.address = "[::1]:0"});
    TcpServer server(*loop, std::move(options));
    std::vector<std::string> listeners;
    server.on_connected([&](Connection& connection) { listeners.push_back(connection.listener_address()); });
    server.on_input([](Connection& connection, std::string_view line) { connection.send(line); });
    server.start();

    const auto& addresses = server.addresses();
    ASSERT_EQ(addresses.size(), ipv6 ? 4U : 3U);
    EXPECT_EQ(addresses[1], "unix:" + path);
    EXPECT_NE(addresses[0], addresses[2]) << "two free ports, each reported";
    struct stat status{};
    ASSERT_EQ(::stat(path.c_str(), &status), 0);
    EXPECT_TRUE(S_ISSOCK(status.st_mode));

    std::vector<std::unique_ptr<Peer>> peers;
    peers.push_back(std::make_unique<Peer>(*loop, connect_unix(path)));
    const auto port_of = [](const std::string& address) {
        return static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
    };
    peers.push_back(std::make_unique<Peer>(*loop, connect_tcp("127.0.0.1", port_of(addresses[2]))));
    if (ipv6) peers.push_back(std::make_unique<Peer>(*loop, connect_tcp("::1", port_of(addresses[3]))));
    for (auto& peer : peers) peer->send("ping\n");
    ASSERT_TRUE(run_until(*loop, [&] {
        for (auto& peer : peers)
            if (peer->received != "ping\n") return false;
        return true;
    }, 5s));
    EXPECT_EQ(listeners.size(), peers.size());
    EXPECT_NE(std::find(listeners.begin(), listeners.end(), "unix:" + path), listeners.end());

    ASSERT_TRUE(shut_down(*loop, server));
    for (auto& peer : peers) EXPECT_TRUE(run_until(*loop, [&] { return peer->closed_by_server(); }, 5s));
    EXPECT_FALSE(std::filesystem::exists(path)) << "the unix socket file is removed on shutdown";
    peers.clear();
    expect_loop_empty();
}

TEST_P(ServerTest, ReportsEachConnectionsAddressPortAndSerial) {
    LogLines log;
    TcpServer server(*loop, loopback_options(log));
    std::vector<std::uint64_t> serials;
    server.on_connected([&](Connection& connection) {
        serials.push_back(connection.serial());
        connection.user_data() = std::string("client ") + std::to_string(connection.remote_port());
    });
    std::string tag;
    server.on_input([&](Connection& connection, std::string_view) {
        tag = std::any_cast<std::string>(connection.user_data());
    });
    server.start();
    Peer first(*loop, connect_tcp("127.0.0.1", server.port()));
    Peer second(*loop, connect_tcp("127.0.0.1", server.port()));
    ASSERT_TRUE(run_until(*loop, [&] { return serials.size() == 2; }, 5s));
    EXPECT_LT(serials[0], serials[1]);

    const std::vector<ConnectionInfo> open = server.connections();
    ASSERT_EQ(open.size(), 2U);
    std::vector<std::uint16_t> ports;
    for (const ConnectionInfo& info : open) {
        EXPECT_EQ(info.address, "127.0.0.1");
        ports.push_back(info.port);
    }
    std::sort(ports.begin(), ports.end());
    std::vector<std::uint16_t> expected = {local_port(first.fd()), local_port(second.fd())};
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(ports, expected);

    second.send("x\n");
    ASSERT_TRUE(run_until(*loop, [&] { return !tag.empty(); }, 5s));
    EXPECT_EQ(tag, "client " + std::to_string(local_port(second.fd())));
    first.close();
    second.close();
    ASSERT_TRUE(shut_down(*loop, server));
    expect_loop_empty();
}

TEST_P(ServerTest, AnOverLongLineClosesOnlyThatConnection) {
    LogLines log;
    ServerOptions options = loopback_options(log);
    options.input_filter = std::make_shared<LineFilter>("", 16);
    TcpServer server(*loop, std::move(options));
    Counts counts;
    std::error_code error;
    count_callbacks(server, counts);
    server.on_error([&](Connection&, std::error_code code, const std::string&) {
        ++counts.error;
        error = code;
    });
    server.start();
    Peer polite(*loop, connect_tcp("127.0.0.1", server.port()));
    Peer rude(*loop, connect_tcp("127.0.0.1", server.port()));
    rude.send("short\n" + std::string(100, 'x'));
    ASSERT_TRUE(run_until(*loop, [&] { return rude.closed_by_server(); }, 5s));
    EXPECT_EQ(rude.received, "short\n");
    EXPECT_EQ(counts.error, 1);
    EXPECT_EQ(error, std::errc::message_size);
    EXPECT_EQ(counts.disconnected, 1);

    polite.send("still here\n");
    ASSERT_TRUE(run_until(*loop, [&] { return polite.received == "still here\n"; }, 5s));
    EXPECT_EQ(server.connection_count(), 1U);
    polite.close();
    rude.close();
    ASSERT_TRUE(shut_down(*loop, server));
    expect_loop_empty();
}

TEST_P(ServerTest, IdleTimeoutCutsATricklingClient) {
    Served served(*loop, [](ServerOptions& options) { options.idle_timeout = 300ms; });
    auto& [log, counts, server] = served;
    server.start();
    Peer trickler(*loop, connect_tcp("127.0.0.1", server.port()));
    Peer talker(*loop, connect_tcp("127.0.0.1", server.port()));
    // One byte every 50 ms never completes a line; a line every 100 ms does.
    const auto start = std::chrono::steady_clock::now();
    int ticks = 0;
    TimerWatcher drip = loop->timer(50ms, 50ms, [&] {
        ++ticks;
        if (!trickler.closed_by_server()) trickler.send("x");
        if (ticks % 2 == 0) talker.send("tick\n");
    });
    ASSERT_TRUE(run_until(*loop, [&] { return trickler.closed_by_server(); }, 3s));
    const double cut_after = elapsed_ms(start);
    EXPECT_GE(cut_after, 250.0);
    EXPECT_LT(cut_after, 1500.0);
    EXPECT_EQ(counts.error, 1);
    EXPECT_TRUE(log.contains("idle")) << log.all();
    // The one that completes records stays.
    run_for(*loop, 400ms);
    drip.reset();
    EXPECT_FALSE(talker.closed_by_server());
    EXPECT_EQ(server.connection_count(), 1U);
    trickler.close();
    talker.close();
    ASSERT_TRUE(shut_down(*loop, server));
    expect_loop_empty();
}

TEST_P(ServerTest, RejectsBadAddressesAndReportsBindFailures) {
    ServerOptions bad;
    bad.listeners = {{.address = "::1:80"}};
    EXPECT_THROW(TcpServer(*loop, bad), std::invalid_argument);
    bad.listeners = {{.address = "127.0.0.1:65536"}};
    EXPECT_THROW(TcpServer(*loop, bad), std::invalid_argument);
    bad.listeners = {};
    EXPECT_THROW(TcpServer(*loop, bad), std::invalid_argument);

    LogLines log;
    TcpServer first(*loop, loopback_options(log));
    first.start();
    ServerOptions taken = loopback_options(log);
    taken.listeners = {{.address = "127.0.0.1:" + std::to_string(first.port())}};
    TcpServer second(*loop, taken);
    try {
        second.start();
        ADD_FAILURE() << "binding a port in use succeeded";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code(), std::errc::address_in_use);
        EXPECT_NE(std::string(error.what()).find(std::to_string(first.port())), std::string::npos) << error.what();
    }
    EXPECT_FALSE(second.running());
    ASSERT_TRUE(shut_down(*loop, first));
    expect_loop_empty();
}

ANYLOOP_INSTANTIATE_BACKENDS(ServerTest);

}  // namespace
}  // namespace anyloop::tcp::test
