// TcpServer under pressure, on every backend: the concurrency limit (also
// changed at run time), a flood of 1,500 connects, and running out of file
// descriptors (EMFILE) in a child process.
#include <anyloop/tcp/server.hpp>

#include "tcp/server_test_support.hpp"

#include <dirent.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace anyloop::tcp::test {
namespace {

using ServerLimitsTest = LoopTest;

ServerOptions echo_options(LogLines& log) {
    ServerOptions options = loopback_options(log, LogLevel::warning);
    options.input_filter = std::make_shared<StreamFilter>();
    return options;
}

TEST_P(ServerLimitsTest, AtTheLimitTheFourthClientWaitsUntilOneLeaves) {
    Served served(*loop, [](ServerOptions& options) { options.concurrency = 3; });
    auto& [log, counts, server] = served;
    server.start();
    std::vector<std::unique_ptr<Peer>> peers;
    for (int i = 0; i < 4; ++i) {
        peers.push_back(std::make_unique<Peer>(*loop, connect_tcp("127.0.0.1", server.port())));
        peers.back()->send("hi " + std::to_string(i) + "\n");
    }
    ASSERT_TRUE(run_until(*loop, [&] { return counts.input == 3; }, 5s));
    run_for(*loop, 200ms);
    EXPECT_EQ(counts.connected, 3);
    EXPECT_EQ(server.connection_count(), 3U);
    EXPECT_EQ(peers[3]->received, "") << "the fourth client was served above the limit";
    for (int i = 0; i < 3; ++i) EXPECT_EQ(peers[i]->received, "hi " + std::to_string(i) + "\n");

    peers[1]->close();
    ASSERT_TRUE(run_until(*loop, [&] { return peers[3]->received == "hi 3\n"; }, 5s));
    EXPECT_EQ(counts.connected, 4);
    EXPECT_EQ(server.connection_count(), 3U);
    peers.clear();
    ASSERT_TRUE(shut_down(*loop, server));
    expect_loop_empty();
}

TEST_P(ServerLimitsTest, SetConcurrencyAtRunTimePausesAndResumesAccepting) {
    Served served(*loop, [](ServerOptions& options) { options.concurrency = 0; });
    auto& [log, counts, server] = served;
    server.start();
    Peer first(*loop, connect_tcp("127.0.0.1", server.port()));
    first.send("one\n");
    run_for(*loop, 150ms);
    EXPECT_EQ(counts.connected, 0) << "concurrency 0 accepts nobody";

    server.set_concurrency(1);
    ASSERT_TRUE(run_until(*loop, [&] { return first.received == "one\n"; }, 5s));
    Peer second(*loop, connect_tcp("127.0.0.1", server.port()));
    second.send("two\n");
    run_for(*loop, 150ms);
    EXPECT_EQ(second.received, "");

    server.set_concurrency(-1);
    EXPECT_EQ(server.concurrency(), -1);
    ASSERT_TRUE(run_until(*loop, [&] { return second.received == "two\n"; }, 5s));
    EXPECT_EQ(server.connection_count(), 2U);
    first.close();
    second.close();
    ASSERT_TRUE(shut_down(*loop, server));
    expect_loop_empty();
}

// 1,500 clients connect at once; every one is accepted or, on the select
// backend past FD_SETSIZE, closed with a log line; a fresh client is
// served once a few leave.
TEST_P(ServerLimitsTest, AbsorbsFifteenHundredSimultaneousConnects) {
    constexpr int flood = 1500;
    // The clients' own descriptors sit above 2048, out of the server's way.
    if (raise_fd_limit(5000) < 4000) GTEST_SKIP() << "RLIMIT_NOFILE cannot be raised to 4000";
    LogLines log;
    ServerOptions options = echo_options(log);
    options.listeners[0].backlog = 2048;
    TcpServer server(*loop, std::move(options));
    server.on_input([](Connection& connection, std::string_view bytes) { connection.send(bytes); });
    server.start();

    socklen_t length = 0;
    const sockaddr_storage address = make_address("127.0.0.1", server.port(), length);
    std::vector<int> clients;
    for (int i = 0; i < flood; ++i) {
        const int fd = move_fd_above(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), 2048);
        const int status = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), length);
        ASSERT_TRUE(status == 0 || errno == EINPROGRESS) << "connect " << i << ": " << std::strerror(errno);
        clients.push_back(fd);
    }
    const auto absorbed = [&] { return server.stats().accepted + server.stats().dropped == flood; };
    ASSERT_TRUE(run_until(*loop, absorbed, 20s))
        << server.stats().accepted << " accepted, " << server.stats().dropped << " dropped";
    if (GetParam() == "select") {
        EXPECT_GT(server.stats().dropped, 0U);
        EXPECT_TRUE(log.contains("FD_SETSIZE")) << "the refusal is logged with its reason";
    } else {
        EXPECT_EQ(server.stats().dropped, 0U) << log.all();
    }
    EXPECT_EQ(server.connection_count(), server.stats().accepted);

    // Close the clients the server dropped, and a hundred it serves.
    int leaving = 100;
    std::vector<int> staying;
    for (const int fd : clients) {
        char byte = 0;
        const bool dropped = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
        if (dropped || leaving-- > 0) ::close(fd);
        else staying.push_back(fd);
    }
    ASSERT_TRUE(run_until(*loop, [&] { return server.connection_count() == staying.size(); }, 10s))
        << server.connection_count() << " open, " << staying.size() << " expected";

    Peer fresh(*loop, connect_tcp("127.0.0.1", server.port()));
    fresh.send("still serving");
    ASSERT_TRUE(run_until(*loop, [&] { return fresh.received == "still serving"; }, 5s));
    fresh.close();
    for (const int fd : staying) ::close(fd);
    ASSERT_TRUE(shut_down(*loop, server));
    expect_loop_empty();
}

// ---- EMFILE in a child process ------------------------------------------------

// The highest descriptor number open in this process.
int highest_open_fd() {
    int highest = 0;
    DIR* directory = ::opendir("/proc/self/fd");
    if (directory == nullptr) return 1024;
    while (const dirent* entry = ::readdir(directory)) {
        if (entry->d_name[0] != '.') highest = std::max(highest, std::atoi(entry->d_name));
    }
    ::closedir(directory);
    return highest;
}

// The child: an echo server whose process may open only a few more
// descriptors. Reports its port on `report`; exits 0 after SIGTERM.
[[noreturn]] void run_child_server(const std::string& backend, int report) {
    int status = 0;
    try {
        auto loop = make_loop(backend);
        ServerOptions options;
        options.listeners = {{.address = "127.0.0.1:0"}};
        options.input_filter = std::make_shared<StreamFilter>();
        options.accept_pause = 50ms;
        options.log_level = LogLevel::warning;
        TcpServer server(*loop, std::move(options));
        server.on_input([](Connection& connection, std::string_view bytes) { connection.send(bytes); });
        server.start();
        server.handle_signals();
        // UBSan's vptr check reads an object's type through a pipe the first
        // time it meets that type; with no descriptor left it cannot, and it
        // reports a false "invalid vptr". Let it meet an I/O watcher's and a
        // timer's node now, while descriptors are free.
        loop->io(report, Io::write, [](Io) {}).reset();
        loop->timer(1h, [] {}).reset();
        {
            // And a Handle's state, whose TLS transport is polymorphic too.
            int pair[2];
            if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) status = 6;
            Handle warm_up(*loop, pair[0]);
            ::close(pair[1]);
        }
        rlimit limit{};
        ::getrlimit(RLIMIT_NOFILE, &limit);
        limit.rlim_cur = static_cast<rlim_t>(highest_open_fd() + 1 + 6);
        if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) status = 4;
        // Fill the holes below the limit, then free six descriptors.
        std::vector<int> filler;
        for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) filler.push_back(fd);
        for (int i = 0; i < 6 && !filler.empty(); ++i) {
            ::close(filler.back());
            filler.pop_back();
        }
        const std::uint16_t port = server.port();
        if (::write(report, &port, sizeof port) != sizeof port) status = 5;
        ::close(report);
        loop->run();
    } catch (const std::exception& error) {
        std::fprintf(stderr, "child server: %s\n", error.what());
        status = 3;
    }
    std::_Exit(status);
}

// Connects, sends "ping" and waits for the echo: true when served, false
// when the server closed the connection instead.
bool ping(std::uint16_t port, int& fd) {
    fd = connect_tcp("127.0.0.1", port);
    write_all(fd, "ping", 4);
    return read_reply(fd, 4) == "ping";
}

TEST_P(ServerLimitsTest, KeepsServingAfterRunningOutOfDescriptors) {
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::close(pipe_fds[0]);
        run_child_server(GetParam(), pipe_fds[1]);
    }
    ::close(pipe_fds[1]);
    std::uint16_t port = 0;
    pollfd waiting{pipe_fds[0], POLLIN, 0};
    ASSERT_EQ(::poll(&waiting, 1, 5000), 1);
    ASSERT_EQ(::read(pipe_fds[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
    ::close(pipe_fds[0]);

    // Open clients until the server has no descriptor left for one.
    std::vector<int> served;
    bool refused = false;
    for (int i = 0; i < 40 && !refused; ++i) {
        int fd = -1;
        refused = !ping(port, fd);
        if (refused) ::close(fd);
        else served.push_back(fd);
    }
    EXPECT_TRUE(refused) << "the server never ran out of descriptors";
    EXPECT_GE(served.size(), 1U);

    // A few leave; the server accepts again.
    for (int i = 0; i < 3 && !served.empty(); ++i) {
        ::close(served.back());
        served.pop_back();
    }
    bool again = false;
    for (int attempt = 0; attempt < 5 && !again; ++attempt) {
        std::this_thread::sleep_for(100ms);
        int fd = -1;
        again = ping(port, fd);
        ::close(fd);
    }
    EXPECT_TRUE(again) << "no client served after descriptors came free";
    for (const int fd : served) ::close(fd);

    ::kill(child, SIGTERM);
    int status = 0;
    rusage usage{};
    pid_t waited = 0;
    for (int i = 0; i < 100 && waited == 0; ++i) {
        waited = ::wait4(child, &status, WNOHANG, &usage);
        if (waited == 0) std::this_thread::sleep_for(50ms);
    }
    if (waited == 0) {
        ::kill(child, SIGKILL);
        ::wait4(child, &status, 0, &usage);
        FAIL() << "the child server did not exit after SIGTERM";
    }
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    // Paused rather than spinning on a listener that stays readable.
    const double cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                               static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    EXPECT_LT(cpu_seconds, 1.0);
}

ANYLOOP_INSTANTIATE_BACKENDS(ServerLimitsTest);

}  // namespace
}  // namespace anyloop::tcp::test
