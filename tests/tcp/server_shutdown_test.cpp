// How a TcpServer and its connections end, on every backend: graceful
// shutdown delivers queued output, the signal helpers, a connection's own
// shutdown, the flush time limit, and destroying a running server.
#include <anyloop/tcp/server.hpp>

#include "tcp/server_test_support.hpp"

#include <csignal>

namespace anyloop::tcp::test {
namespace {

using ServerShutdownTest = LoopTest;

const std::string big(4 << 20, 'z');

// On "big", queues 4 MiB for the client; anything else is echoed.
void serve_big(TcpServer& server, Counts& counts) {
    server.on_input([&counts](Connection& connection, std::string_view line) {
        ++counts.input;
        connection.send(line == "big" ? std::string_view(big) : line);
    });
}

bool refused(std::uint16_t port) {
    try {
        ::close(connect_tcp("127.0.0.1", port));
        return false;
    } catch (const std::system_error& error) {
        return error.code() == std::errc::connection_refused;
    }
}

TEST_P(ServerShutdownTest, GracefulShutdownDeliversAllQueuedOutputBeforeClosing) {
    Served served(*loop);
    auto& [log, counts, server] = served;
    serve_big(server, counts);
    server.start();
    const std::uint16_t port = server.port();
    Peer reader(*loop, connect_tcp("127.0.0.1", port));
    Peer idle(*loop, connect_tcp("127.0.0.1", port));
    reader.pause();  // the 4 MiB stays queued in the server
    reader.send("big\n");
    ASSERT_TRUE(run_until(*loop, [&] { return counts.input == 1 && counts.connected == 2; }, 5s));
    run_for(*loop, 50ms);

    server.shutdown();
    EXPECT_TRUE(refused(port)) << "the listener closes at once";
    ASSERT_TRUE(run_until(*loop, [&] { return idle.closed_by_server(); }, 5s)) << "nothing queued: closes at once";
    EXPECT_TRUE(server.running()) << "a connection is still flushing";
    reader.resume();
    ASSERT_TRUE(run_until(*loop, [&] { return reader.closed_by_server(); }, 10s));
    EXPECT_EQ(reader.received.size(), big.size() + 1);
    EXPECT_TRUE(reader.received == big + "\n") << "the queued output arrived whole";
    EXPECT_EQ(reader.error, 0);
    ASSERT_TRUE(run_until(*loop, [&] { return counts.finished == 1; }, 5s));
    EXPECT_EQ(counts.disconnected, 2);
    EXPECT_FALSE(server.running());
    reader.close();
    idle.close();
    expect_loop_empty();
}

TEST_P(ServerShutdownTest, SigtermThroughTheHelperShutsDownGracefully) {
    Served served(*loop);
    auto& [log, counts, server] = served;
    serve_big(server, counts);
    int hangups = 0;
    server.handle_signals([&] { ++hangups; });
    server.start();
    Peer peer(*loop, connect_tcp("127.0.0.1", server.port()));
    peer.pause();
    peer.send("big\n");
    ASSERT_TRUE(run_until(*loop, [&] { return counts.input == 1; }, 5s));

    ::raise(SIGHUP);
    ASSERT_TRUE(run_until(*loop, [&] { return hangups == 1; }, 5s));
    EXPECT_TRUE(server.running()) << "SIGHUP is the user's hook, not a shutdown";
    ::raise(SIGTERM);
    ASSERT_TRUE(run_until(*loop, [&] { return log.contains("signal"); }, 5s));
    peer.resume();
    ASSERT_TRUE(run_until(*loop, [&] { return counts.finished == 1; }, 10s));
    ASSERT_TRUE(run_until(*loop, [&] { return peer.closed_by_server(); }, 5s));
    EXPECT_EQ(peer.received.size(), big.size() + 1);
    EXPECT_EQ(counts.disconnected, 1);
    peer.close();
    expect_loop_empty();  // the signal watchers went with the server
}

TEST_P(ServerShutdownTest, AConnectionsShutdownFlushesThenCloses) {
    Served served(*loop);
    auto& [log, counts, server] = served;
    server.on_input([&](Connection& connection, std::string_view line) {
        ++counts.input;
        if (line != "quit") {
            connection.send(line);
            return;
        }
        connection.send("bye");
        connection.shutdown();
        connection.shutdown();  // idempotent
        connection.send("late");  // still queued while flushing
    });
    server.start();
    Peer peer(*loop, connect_tcp("127.0.0.1", server.port()));
    peer.send("a\nquit\nignored\n");
    ASSERT_TRUE(run_until(*loop, [&] { return peer.closed_by_server(); }, 5s));
    EXPECT_EQ(peer.received, "a\nbye\nlate\n");
    EXPECT_EQ(counts.input, 2) << "no input after shutdown()";
    EXPECT_EQ(counts.disconnected, 1);
    EXPECT_TRUE(server.running());
    peer.close();
    ASSERT_TRUE(shut_down(*loop, server));
    expect_loop_empty();
}

TEST_P(ServerShutdownTest, AClientThatNeverReadsIsClosedAfterTheShutdownTimeout) {
    Served served(*loop, [](ServerOptions& options) { options.shutdown_timeout = 200ms; });
    auto& [log, counts, server] = served;
    serve_big(server, counts);
    server.start();
    Peer peer(*loop, connect_tcp("127.0.0.1", server.port()));
    peer.pause();
    peer.send("big\n");
    ASSERT_TRUE(run_until(*loop, [&] { return counts.input == 1; }, 5s));
    const auto start = std::chrono::steady_clock::now();
    server.shutdown();
    ASSERT_TRUE(run_until(*loop, [&] { return counts.finished == 1; }, 5s));
    EXPECT_GE(elapsed_ms(start), 150.0);
    EXPECT_LT(elapsed_ms(start), 2000.0);
    EXPECT_EQ(counts.disconnected, 1);
    EXPECT_TRUE(log.contains("not flushed")) << log.all();
    peer.close();
    expect_loop_empty();
}

TEST_P(ServerShutdownTest, DestroyingARunningServerClosesEverythingWithoutCallbacks) {
    LogLines log;
    auto server = std::make_unique<TcpServer>(*loop, loopback_options(log));
    Counts counts;
    count_callbacks(*server, counts);
    server->start();
    Peer peer(*loop, connect_tcp("127.0.0.1", server->port()));
    peer.send("x\n");
    ASSERT_TRUE(run_until(*loop, [&] { return peer.received == "x\n"; }, 5s));
    server.reset();
    ASSERT_TRUE(run_until(*loop, [&] { return peer.closed_by_server(); }, 5s));
    EXPECT_EQ(counts.disconnected, 0);
    EXPECT_EQ(counts.finished, 0);
    peer.close();
    expect_loop_empty();
}

ANYLOOP_INSTANTIATE_BACKENDS(ServerShutdownTest);

}  // namespace
}  // namespace anyloop::tcp::test
