// Workers on every backend: N threads, each with its own loop, sharing the
// port with SO_REUSEPORT; counts, the concurrency limit and shutdown work
// across them. The clients here block: the workers serve on their threads.
#include <anyloop/tcp/server.hpp>

#include "tcp/server_test_support.hpp"

#include <atomic>
#include <set>
#include <thread>

namespace anyloop::tcp::test {
namespace {

using ServerWorkersTest = LoopTest;

// Echo on two workers, counting connections and the threads that served.
struct WorkerServer {
    WorkerServer(EventLoop& loop, const std::string& backend, LogLines& log) {
        ServerOptions options = loopback_options(log, LogLevel::notice);
        options.workers = 2;
        options.worker_loop = [backend] { return make_loop(backend); };
        server = std::make_unique<TcpServer>(loop, std::move(options));
        server->on_connected([this](Connection&) {
            ++connected;
            const std::lock_guard lock(mutex);
            threads.insert(std::this_thread::get_id());
        });
        server->on_input([](Connection& connection, std::string_view line) { connection.send(line); });
        server->on_disconnected([this](Connection&) { ++disconnected; });
        server->on_finished([this] { ++finished; });
        server->start();
    }
    std::size_t thread_count() {
        const std::lock_guard lock(mutex);
        return threads.size();
    }
    std::unique_ptr<TcpServer> server;
    std::atomic<int> connected{0};
    std::atomic<int> disconnected{0};
    int finished = 0;
    std::mutex mutex;
    std::set<std::thread::id> threads;
};

bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(2ms);
    return done();
}

TEST_P(ServerWorkersTest, TwoWorkersServeTwoHundredClientsAndCountThemAll) {
    LogLines log;
    WorkerServer workers(*loop, GetParam(), log);
    TcpServer& server = *workers.server;
    constexpr int clients = 200;
    std::vector<int> fds;
    for (int i = 0; i < clients; ++i) {
        const int fd = connect_tcp("127.0.0.1", server.port());
        fds.push_back(fd);
        const std::string line = "client " + std::to_string(i) + "\n";
        write_all(fd, line.data(), line.size());
        ASSERT_EQ(read_reply(fd, line.size()), line) << "client " << i << " was not served";
    }
    EXPECT_EQ(server.connection_count(), static_cast<std::size_t>(clients));
    EXPECT_EQ(server.stats().accepted, static_cast<std::uint64_t>(clients));
    EXPECT_EQ(workers.connected.load(), clients);
    EXPECT_EQ(workers.thread_count(), 2U) << "both workers took connections";
    const std::vector<ConnectionInfo> open = server.connections();
    ASSERT_EQ(open.size(), static_cast<std::size_t>(clients));
    std::set<std::uint64_t> serials;
    for (const ConnectionInfo& info : open) serials.insert(info.serial);
    EXPECT_EQ(serials.size(), static_cast<std::size_t>(clients)) << "serials are unique across workers";

    for (const int fd : fds) ::close(fd);
    ASSERT_TRUE(wait_for([&] { return server.connection_count() == 0; }));
    ASSERT_TRUE(wait_for([&] { return workers.disconnected.load() == clients; }));
    ASSERT_TRUE(shut_down(*loop, server));
    EXPECT_EQ(workers.finished, 1);
    expect_loop_empty();
}

TEST_P(ServerWorkersTest, TheConcurrencyLimitAndShutdownSpanTheWorkers) {
    LogLines log;
    WorkerServer workers(*loop, GetParam(), log);
    TcpServer& server = *workers.server;
    server.set_concurrency(2);
    std::vector<int> fds;
    for (int i = 0; i < 3; ++i) {
        fds.push_back(connect_tcp("127.0.0.1", server.port()));
        write_all(fds.back(), "hi\n", 3);
    }
    // Two are served, wherever they landed; the third waits.
    int served = 0;
    int waiting = -1;
    for (int i = 0; i < 3; ++i) {
        if (read_reply(fds[i], 3, i == 2 ? 300 : 2000) == "hi\n") ++served;
        else waiting = i;
    }
    if (waiting < 0) {
        FAIL() << "three clients served with a limit of 2";
    }
    EXPECT_EQ(served, 2);
    EXPECT_EQ(server.connection_count(), 2U);
    // One leaves (on whichever worker): the waiting one is taken.
    ::close(fds[waiting == 0 ? 1 : 0]);
    fds[waiting == 0 ? 1 : 0] = -1;
    EXPECT_EQ(read_reply(fds[waiting], 3), "hi\n") << "the waiting client was not taken after one left";

    // Shutdown reaches every worker; the clients see the end.
    server.shutdown();
    ASSERT_TRUE(run_until(*loop, [&] { return workers.finished == 1; }, 5s));
    for (const int fd : fds) {
        if (fd < 0) continue;
        EXPECT_EQ(read_reply(fd, 1, 2000), "") << "end of file after shutdown";
        ::close(fd);
    }
    EXPECT_EQ(workers.disconnected.load(), 3);
    expect_loop_empty();
}

ANYLOOP_INSTANTIATE_BACKENDS(ServerWorkersTest);

}  // namespace
}  // namespace anyloop::tcp::test
