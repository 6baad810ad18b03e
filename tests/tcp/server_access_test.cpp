// Who may connect, on every backend: access rules (regex and CIDR, IPv4 and
// IPv6, on a dual-stack IPv6 listener) and the PROXY protocol (hand-made v1
// and v2 headers, bad or missing headers, and a real HAProxy in front).
#include <anyloop/tcp/proxy_protocol.hpp>
#include <anyloop/tcp/server.hpp>

#include "tcp/server_test_support.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cctype>
#include <csignal>
#include <fstream>
#include <thread>

extern char** environ;

namespace anyloop::tcp::test {
namespace {

using ServerAccessTest = LoopTest;

// A server answering each line with "ADDRESS PORT" of the connection as
// the server sees it.
struct WhoServer {
    WhoServer(EventLoop& loop, ServerOptions options) : server(loop, std::move(options)) {
        count_callbacks(server, counts, false);
        server.on_input([this](Connection& connection, std::string_view) {
            ++counts.input;
            connection.send(connection.remote_address() + " " + std::to_string(connection.remote_port()));
        });
        server.start();
    }
    Counts counts;
    TcpServer server;
};

// Connects from `source` to the server's port on `host`; returns what the
// server answered to one line ("" when it closed the connection at once).
std::string ask(EventLoop& loop, WhoServer& who, const std::string& host, const std::string& source) {
    Peer peer(loop, connect_tcp(host, who.server.port(), source));
    peer.send("who\n");
    EXPECT_TRUE(run_until(loop, [&] { return peer.closed_by_server() || !peer.received.empty(); }, 5s));
    const bool refused = peer.closed_by_server();
    return refused ? std::string() : peer.received;
}

TEST_P(ServerAccessTest, RegexAndCidrRulesOnADualStackIpv6Listener) {
    if (!have_ipv6_loopback()) GTEST_SKIP() << "IPv6 loopback (::1) cannot be bound on this host";
    LogLines log;
    ServerOptions options = loopback_options(log);
    options.listeners = {{.address = "[::]:0"}};
    options.access.cidr_allow("127.0.0.0/8");
    options.access.cidr_allow("::1/128");
    options.access.deny(R"(^127\.0\.0\.3$)");
    WhoServer allowing(*loop, options);
    EXPECT_EQ(allowing.server.addresses()[0], "[::]:" + std::to_string(allowing.server.port()));

    const std::string v4 = ask(*loop, allowing, "127.0.0.1", "127.0.0.1");
    EXPECT_EQ(v4.substr(0, 10), "127.0.0.1 ") << "IPv4 clients appear as IPv4, not ::ffff:127.0.0.1";
    EXPECT_EQ(ask(*loop, allowing, "127.0.0.1", "127.0.0.3"), "") << "denied by the regex";
    EXPECT_EQ(ask(*loop, allowing, "::1", "::1").substr(0, 4), "::1 ");
    EXPECT_EQ(allowing.server.stats().denied, 1U);
    EXPECT_EQ(allowing.counts.connected, 2) << "a denied client never reaches the callbacks";
    EXPECT_TRUE(log.contains("denied 127.0.0.3:")) << log.all();

    options.access = {};
    options.access.cidr_deny("::1/128");
    options.access.allow(R"(^127\.0\.0\.[12]$)");
    WhoServer denying(*loop, options);
    EXPECT_EQ(ask(*loop, denying, "::1", "::1"), "") << "denied by the IPv6 CIDR rule";
    EXPECT_EQ(ask(*loop, denying, "127.0.0.1", "127.0.0.2").substr(0, 10), "127.0.0.2 ");
    EXPECT_EQ(ask(*loop, denying, "127.0.0.1", "127.0.0.4"), "") << "no allow rule matches";
    EXPECT_EQ(denying.server.stats().denied, 2U);

    ASSERT_TRUE(shut_down(*loop, allowing.server));
    ASSERT_TRUE(shut_down(*loop, denying.server));
    expect_loop_empty();
}

// The name getnameinfo() gives 127.0.0.1 here ("localhost" from /etc/hosts
// on Debian), or "" when it has none.
std::string loopback_name() {
    socklen_t length = 0;
    const sockaddr_storage address = make_address("127.0.0.1", 0, length);
    char host[NI_MAXHOST];
    if (::getnameinfo(reinterpret_cast<const sockaddr*>(&address), length, host, sizeof host, nullptr, 0,
                      NI_NAMEREQD) != 0)
        return {};
    return host;
}

TEST_P(ServerAccessTest, ReverseLookupsLetRegexesMatchTheHostName) {
    const std::string name = loopback_name();
    if (name.empty()) GTEST_SKIP() << "127.0.0.1 has no host name here (/etc/hosts)";
    std::string quoted;
    for (const char c : name) {
        if (std::isalnum(static_cast<unsigned char>(c)) == 0) quoted += '\\';  // "." and "-" literally
        quoted += c;
    }

    LogLines log;
    ServerOptions options = loopback_options(log);
    options.reverse_lookups = true;
    options.access.allow("^" + quoted + "$");  // the name, not the address
    TcpServer allowing(*loop, options);
    std::string seen;
    allowing.on_input([&](Connection& connection, std::string_view) {
        seen = connection.remote_host();
        connection.send(connection.remote_host());
    });
    allowing.start();
    Peer peer(*loop, connect_tcp("127.0.0.1", allowing.port()));
    peer.send("who\n");
    ASSERT_TRUE(run_until(*loop, [&] { return !peer.received.empty() || peer.closed_by_server(); }, 5s));
    EXPECT_EQ(peer.received, name + "\n");
    EXPECT_EQ(seen, name);

    options.access = {};
    options.access.deny("^" + quoted + "$");
    WhoServer denying(*loop, options);
    EXPECT_EQ(ask(*loop, denying, "127.0.0.1", "127.0.0.1"), "") << "denied by its name";
    EXPECT_EQ(denying.server.stats().denied, 1U);
    EXPECT_TRUE(log.contains("denied 127.0.0.1:")) << log.all();

    options.reverse_lookups = false;
    WhoServer without(*loop, options);
    EXPECT_EQ(ask(*loop, without, "127.0.0.1", "127.0.0.1").substr(0, 10), "127.0.0.1 ")
        << "without lookups a name rule matches nothing";

    peer.close();
    ASSERT_TRUE(shut_down(*loop, allowing));
    ASSERT_TRUE(shut_down(*loop, denying.server));
    ASSERT_TRUE(shut_down(*loop, without.server));
    expect_loop_empty();
}

sockaddr_storage address_of(const std::string& host, std::uint16_t port) {
    socklen_t length = 0;
    return make_address(host, port, length);
}

TEST_P(ServerAccessTest, ProxyHeadersV1AndV2ReplaceTheBalancersAddress) {
    LogLines log;
    ServerOptions options = loopback_options(log);
    options.listeners[0].proxy_protocol = true;
    options.access.cidr_deny("198.51.100.0/24");
    WhoServer who(*loop, std::move(options));
    const sockaddr_storage server = address_of("127.0.0.1", who.server.port());
    const auto* destination = reinterpret_cast<const sockaddr*>(&server);
    const auto header = [&](int version, const std::string& host, std::uint16_t port, bool local = false) {
        const sockaddr_storage source = address_of(host, port);
        const auto* from = reinterpret_cast<const sockaddr*>(&source);
        return version == 1 ? make_proxy_v1(from, destination) : make_proxy_v2(from, destination, local);
    };

    Peer v1(*loop, connect_tcp("127.0.0.1", who.server.port()));
    v1.send(header(1, "203.0.113.7", 4242) + "who\n");
    // v2 in two pieces: the header is read across reads.
    Peer v2(*loop, connect_tcp("127.0.0.1", who.server.port()));
    const std::string v2_header = header(2, "2001:db8::5", 5555);
    v2.send(v2_header.substr(0, 7));
    run_for(*loop, 50ms);
    v2.send(v2_header.substr(7) + "who\n");
    // LOCAL: a balancer's own health check keeps the socket's address.
    Peer local(*loop, connect_tcp("127.0.0.1", who.server.port()));
    local.send(header(2, "203.0.113.8", 1, true) + "who\n");
    // The real client's address meets the access rules.
    Peer denied(*loop, connect_tcp("127.0.0.1", who.server.port()));
    denied.send(header(1, "198.51.100.9", 80) + "who\n");

    ASSERT_TRUE(run_until(*loop, [&] {
        return !v1.received.empty() && !v2.received.empty() && !local.received.empty() && denied.closed_by_server();
    }, 5s));
    EXPECT_EQ(v1.received, "203.0.113.7 4242\n");
    EXPECT_EQ(v2.received, "2001:db8::5 5555\n");
    EXPECT_EQ(local.received, "127.0.0.1 " + std::to_string(local_port(local.fd())) + "\n");
    EXPECT_EQ(denied.received, "");
    EXPECT_EQ(who.server.stats().denied, 1U);
    EXPECT_EQ(who.counts.connected, 3);
    EXPECT_TRUE(log.contains("denied 198.51.100.9:80")) << log.all();

    v1.close();
    v2.close();
    local.close();
    denied.close();
    ASSERT_TRUE(shut_down(*loop, who.server));
    expect_loop_empty();
}

TEST_P(ServerAccessTest, ABadOrMissingProxyHeaderClosesThatConnection) {
    LogLines log;
    ServerOptions options = loopback_options(log);
    options.listeners[0].proxy_protocol = true;
    options.proxy_header_timeout = 200ms;
    WhoServer who(*loop, std::move(options));

    Peer garbage(*loop, connect_tcp("127.0.0.1", who.server.port()));
    garbage.send("GET / HTTP/1.0\r\n\r\n");
    Peer silent(*loop, connect_tcp("127.0.0.1", who.server.port()));
    Peer quitter(*loop, connect_tcp("127.0.0.1", who.server.port()));
    quitter.send("PROXY TCP4 1.2.3.4");
    ::shutdown(quitter.fd(), SHUT_WR);
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(run_until(*loop, [&] { return garbage.closed_by_server() && quitter.closed_by_server(); }, 5s));
    ASSERT_TRUE(run_until(*loop, [&] { return silent.closed_by_server(); }, 5s));
    EXPECT_GE(elapsed_ms(start), 150.0) << "the silent client had its header timeout";
    EXPECT_EQ(who.counts.connected, 0);
    EXPECT_EQ(who.counts.disconnected, 0);
    EXPECT_EQ(who.server.stats().dropped, 3U);
    EXPECT_EQ(who.server.connection_count(), 0U);
    EXPECT_TRUE(log.contains("bad PROXY header")) << log.all();
    EXPECT_TRUE(log.contains("before its PROXY header")) << log.all();
    garbage.close();
    silent.close();
    quitter.close();
    ASSERT_TRUE(shut_down(*loop, who.server));
    expect_loop_empty();
}

// ---- a real HAProxy in front ----------------------------------------------------

std::string find_haproxy() {
    for (const char* candidate : {"/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"})
        if (::access(candidate, X_OK) == 0) return candidate;
    return {};
}

std::uint16_t free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t length = 0;
    const sockaddr_storage address = make_address("127.0.0.1", 0, length);
    ::bind(fd, reinterpret_cast<const sockaddr*>(&address), length);
    const std::uint16_t port = local_port(fd);
    ::close(fd);
    return port;
}

TEST_P(ServerAccessTest, BehindARealHaproxyTheServerSeesTheClient) {
    const std::string haproxy = find_haproxy();
    if (haproxy.empty()) GTEST_SKIP() << "haproxy is not installed (Debian package haproxy); skipping the real-balancer case";
    LogLines log;
    ServerOptions options = loopback_options(log);
    options.listeners[0].proxy_protocol = true;
    WhoServer who(*loop, std::move(options));

    const std::uint16_t front = free_port();
    const std::string config = ::testing::TempDir() + "anyloop-haproxy-" + std::to_string(::getpid()) + "-" +
                               GetParam() + ".cfg";
    std::ofstream(config) << "global\n"
                             "    maxconn 64\n"
                             "defaults\n"
                             "    mode tcp\n"
                             "    timeout connect 2s\n"
                             "    timeout client 10s\n"
                             "    timeout server 10s\n"
                             "frontend front\n"
                             "    bind 127.0.0.1:" << front << "\n"
                             "    default_backend back\n"
                             "backend back\n"
                             "    server s1 127.0.0.1:" << who.server.port() << " send-proxy-v2\n";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    std::vector<std::string> arguments = {haproxy, "-f", config, "-db"};
    std::vector<char*> argv;
    for (std::string& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    ASSERT_EQ(::posix_spawn(&pid, haproxy.c_str(), &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    struct Reaper {
        pid_t pid;
        std::string config;
        ~Reaper() {
            ::kill(pid, SIGTERM);
            ::waitpid(pid, nullptr, 0);
            ::unlink(config.c_str());
        }
    } reaper{pid, config};

    // Wait for haproxy to listen (each probe is a connection it forwards).
    int client = -1;
    for (int i = 0; i < 100 && client < 0; ++i) {
        try {
            client = connect_tcp("127.0.0.1", front);
        } catch (const std::system_error&) {
            std::this_thread::sleep_for(50ms);
        }
    }
    ASSERT_GE(client, 0) << "haproxy did not start listening on 127.0.0.1:" << front;
    Peer peer(*loop, client);
    peer.send("who\n");
    ASSERT_TRUE(run_until(*loop, [&] { return !peer.received.empty(); }, 5s)) << log.all();
    EXPECT_EQ(peer.received, "127.0.0.1 " + std::to_string(local_port(peer.fd())) + "\n")
        << "the callback saw haproxy's own address instead of the client's";
    peer.close();
    ASSERT_TRUE(shut_down(*loop, who.server));
    expect_loop_empty();
}

ANYLOOP_INSTANTIATE_BACKENDS(ServerAccessTest);

}  // namespace
}  // namespace anyloop::tcp::test
