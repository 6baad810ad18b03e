// TcpClient against plain loopback servers written with the Handle: records
// both ways, connect failures, reconnecting with backoff, shutdown, and
// destroying the client in its own callback. Every case on every backend.
#include <anyloop/tcp/client.hpp>

#include "handle/handle_test_support.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace anyloop::tcp::test {
namespace {

using namespace std::chrono_literals;
using namespace anyloop::test;
using namespace anyloop::test::handle_support;

// A line server on 127.0.0.1 written with the Handle (and a LineFilter per
// connection): `on_line` gets each line, `on_accept` each new connection.
class LineServer {
public:
    using LineCallback = std::function<void(Handle& connection, std::string_view line)>;
    using AcceptCallback = std::function<void(Handle& connection)>;

    LineServer(EventLoop& loop, LineCallback on_line, AcceptCallback on_accept = nullptr)
        : loop_(loop), on_line_(std::move(on_line)), on_accept_(std::move(on_accept)) {
        set_nonblocking(listener_.fd);
        watcher_ = loop.io(listener_.fd, Io::read, [this](Io) { accept_all(); });
    }

    [[nodiscard]] std::uint16_t port() const { return listener_.port; }
    std::size_t accepted = 0;
    std::vector<std::string> lines;

private:
    void accept_all() {
        for (;;) {
            const int fd = ::accept4(listener_.fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) return;
            ++accepted;
            auto connection = std::make_unique<Handle>(loop_, fd);
            connection->on_read([this, filter = std::make_shared<LineFilter>()](Handle& h) {
                for (;;) {
                    const FilterResult result = filter->next(h.read_buffer().view());
                    if (result.status != FilterResult::Status::record) return;
                    lines.emplace_back(result.record);
                    if (on_line_) on_line_(h, result.record);
                    h.read_buffer().consume(result.consumed);
                }
            });
            connection->on_eof([](Handle& h) { h.close(); });
            if (on_accept_) on_accept_(*connection);
            connections_.push_back(std::move(connection));
        }
    }

    EventLoop& loop_;
    LineCallback on_line_;
    AcceptCallback on_accept_;
    Listener listener_;
    IoWatcher watcher_;
    std::vector<std::unique_ptr<Handle>> connections_;
};

// A port on 127.0.0.1 that refuses connections: bound, not listening.
class RefusingPort {
public:
    RefusingPort() {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
        socklen_t length = sizeof address;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
        port = ntohs(address.sin_port);
    }
    ~RefusingPort() { ::close(fd_); }
    RefusingPort(const RefusingPort&) = delete;
    RefusingPort& operator=(const RefusingPort&) = delete;
    std::uint16_t port = 0;

private:
    int fd_ = -1;
};

// Counts every callback of a client and keeps what they were given.
struct Events {
    explicit Events(TcpClient& client) {
        client.on_connected([this](TcpClient&) {
            ++connected;
            connect_times.push_back(std::chrono::steady_clock::now());
        });
        client.on_input([this](TcpClient&, std::string_view record) { inputs.emplace_back(record); });
        client.on_disconnected([this](TcpClient&) { ++disconnected; });
        client.on_error([this](TcpClient&, std::error_code error, const std::string& message) {
            errors.push_back(error);
            messages.push_back(message);
        });
        client.on_flushed([this](TcpClient&) { ++flushed; });
    }
    int connected = 0;
    int disconnected = 0;
    int flushed = 0;
    std::vector<std::string> inputs;
    std::vector<std::error_code> errors;
    std::vector<std::string> messages;
    std::vector<std::chrono::steady_clock::time_point> connect_times;
};

std::string upper(std::string_view text) {
    std::string result(text);
    std::transform(result.begin(), result.end(), result.begin(), [](unsigned char c) { return std::toupper(c); });
    return result;
}

LineServer::LineCallback shout_back() {
    return [](Handle& h, std::string_view line) { h.push_write(upper(line) + "\n"); };
}

using TcpClientTest = LoopTest;

TEST_P(TcpClientTest, LinesBothWaysThenShutdown) {
    auto server = std::make_unique<LineServer>(*loop, shout_back());
    TcpClient client(*loop);
    Events events(client);
    client.on_connected([&](TcpClient& c) {
        ++events.connected;
        EXPECT_TRUE(c.connected());
        ASSERT_NE(c.handle(), nullptr);
        EXPECT_TRUE(c.send("hello"));
        EXPECT_TRUE(c.send("world"));
    });
    client.on_input([&](TcpClient& c, std::string_view line) {
        events.inputs.emplace_back(line);
        if (events.inputs.size() == 2) c.shutdown();
    });
    client.connect("127.0.0.1", server->port());
    EXPECT_EQ(client.state(), TcpClient::State::connecting);
    EXPECT_EQ(events.connected, 0) << "never inside connect()";
    ASSERT_TRUE(run_until(*loop, [&] { return events.disconnected == 1; }));
    EXPECT_EQ(events.connected, 1);
    EXPECT_EQ(events.inputs, (std::vector<std::string>{"HELLO", "WORLD"}));
    EXPECT_TRUE(events.errors.empty()) << events.messages.front();
    EXPECT_EQ(client.state(), TcpClient::State::idle);
    EXPECT_EQ(client.handle(), nullptr);
    EXPECT_FALSE(client.send("late")) << "nothing to send to";
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, ConnectsByName) {
    // "localhost" may resolve to ::1 first, where nothing listens: the next
    // address is tried.
    auto server = std::make_unique<LineServer>(*loop, shout_back());
    TcpClient client(*loop);
    Events events(client);
    client.on_connected([](TcpClient& c) { c.send("ping"); });
    client.connect("localhost", server->port());
    ASSERT_TRUE(run_until(*loop, [&] { return !events.inputs.empty(); }));
    EXPECT_EQ(events.inputs.front(), "PING");
    EXPECT_EQ(client.host(), "localhost");
    client.close();
    EXPECT_EQ(events.disconnected, 0) << "close() calls nothing";
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, RecordsSentBeforeTheConnectionWaitForIt) {
    auto server = std::make_unique<LineServer>(*loop, shout_back());
    TcpClient client(*loop);
    Events events(client);
    client.on_connected([](TcpClient& c) { EXPECT_TRUE(c.send("third")); });
    EXPECT_FALSE(client.send("idle")) << "dropped: no connection coming";
    client.connect("127.0.0.1", server->port());
    EXPECT_TRUE(client.send("early"));
    EXPECT_TRUE(client.send("bird"));
    ASSERT_TRUE(run_until(*loop, [&] { return events.inputs.size() == 3; }));
    EXPECT_EQ(server->lines, (std::vector<std::string>{"early", "bird", "third"})) << "in the order sent";
    EXPECT_EQ(events.inputs, (std::vector<std::string>{"EARLY", "BIRD", "THIRD"}));
    client.close();
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, ShutdownInsideConnectedStillSendsWhatWaited) {
    auto server = std::make_unique<LineServer>(*loop, nullptr);
    TcpClient client(*loop);
    Events events(client);
    client.on_connected([](TcpClient& c) {
        c.send("from on_connected");
        c.shutdown();
    });
    client.connect("127.0.0.1", server->port());
    client.send("queued");
    ASSERT_TRUE(run_until(*loop, [&] { return events.disconnected == 1 && server->lines.size() == 2; }));
    EXPECT_EQ(server->lines, (std::vector<std::string>{"queued", "from on_connected"}));
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, SeparateInputAndOutputFilters) {
    // Lines out, 2-byte length-prefixed records in.
    auto server = std::make_unique<LineServer>(
        *loop, [](Handle& h, std::string_view line) { h.push_write_prefixed(2, std::string(line) + "\n!"); });
    TcpClient client(*loop);
    client.set_filter(std::make_unique<LengthPrefixedFilter>(2), std::make_unique<LineFilter>("\r\n"));
    Events events(client);
    client.on_connected([](TcpClient& c) {
        c.send("one");
        c.send("");
    });
    client.connect("127.0.0.1", server->port());
    ASSERT_TRUE(run_until(*loop, [&] { return events.inputs.size() == 2; }));
    EXPECT_EQ(events.inputs, (std::vector<std::string>{"one\n!", "\n!"}));
    EXPECT_EQ(server->lines, (std::vector<std::string>{"one", ""})) << "CRLF-terminated lines arrived";
    client.close();
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, ConnectFailureNamesHostPortAndReason) {
    RefusingPort refusing;
    TcpClient client(*loop);
    Events events(client);
    client.connect("127.0.0.1", refusing.port);
    ASSERT_TRUE(run_until(*loop, [&] { return !events.errors.empty(); }));
    EXPECT_EQ(events.errors.front(), std::errc::connection_refused);
    EXPECT_EQ(events.messages.front(),
              "cannot connect to 127.0.0.1:" + std::to_string(refusing.port) + ": Connection refused");
    EXPECT_EQ(client.state(), TcpClient::State::idle);
    EXPECT_EQ(client.failed_attempts(), 1U);
    EXPECT_EQ(events.connected, 0);
    EXPECT_EQ(events.disconnected, 0) << "never connected, so never disconnected";
    expect_loop_empty();
}

TEST_P(TcpClientTest, RetriesWithDoublingDelayThenGivesUp) {
    RefusingPort refusing;
    TcpClient client(*loop,
                     {.reconnect = {.enabled = true, .initial_delay = 20ms, .max_delay = 50ms, .max_attempts = 4}});
    Events events(client);
    const auto start = std::chrono::steady_clock::now();
    client.connect("127.0.0.1", refusing.port);
    EXPECT_TRUE(client.send("queued while retrying"));
    ASSERT_TRUE(run_until(*loop, [&] { return events.errors.size() == 4; }));
    const double elapsed = elapsed_ms(start);
    const std::string refused = "cannot connect to 127.0.0.1:" + std::to_string(refusing.port) + ": Connection refused";
    EXPECT_EQ(events.messages, (std::vector<std::string>{
                                   refused + "; retrying in 20 ms", refused + "; retrying in 40 ms",
                                   refused + "; retrying in 50 ms", refused + "; giving up after 4 failed attempts"}));
    EXPECT_GE(elapsed, 100.0) << "20 + 40 + 50 ms of delays";
    EXPECT_EQ(client.state(), TcpClient::State::idle);
    EXPECT_EQ(client.failed_attempts(), 4U);
    EXPECT_FALSE(client.send("after giving up"));
    run_for(*loop, 80ms);
    EXPECT_EQ(events.errors.size(), 4U) << "no attempt after giving up";
    expect_loop_empty();
}

TEST_P(TcpClientTest, ReconnectsAfterTheServerCloses) {
    // The server says "bye" and closes each connection it accepts.
    auto server = std::make_unique<LineServer>(*loop, nullptr, [](Handle& connection) {
        connection.push_write("bye\n");
        connection.push_shutdown();
    });
    TcpClient client(*loop, {.reconnect = {.enabled = true, .initial_delay = 30ms, .max_delay = 1s}});
    Events events(client);
    client.on_connected([&](TcpClient& c) {
        ++events.connected;
        events.connect_times.push_back(std::chrono::steady_clock::now());
        if (events.connected == 3) c.close();
    });
    client.connect("127.0.0.1", server->port());
    ASSERT_TRUE(run_until(*loop, [&] { return events.connected == 3; }));
    EXPECT_EQ(events.disconnected, 2);
    EXPECT_TRUE(events.errors.empty()) << "a clean close by the peer is not an error: " << events.messages.front();
    EXPECT_EQ(server->accepted, 3U);
    EXPECT_GE(events.inputs.size(), 2U);
    for (std::size_t i = 1; i < events.connect_times.size(); ++i) {
        const double gap =
            std::chrono::duration<double, std::milli>(events.connect_times[i] - events.connect_times[i - 1]).count();
        EXPECT_GE(gap, 25.0) << "reconnect " << i << " waited initial_delay";
    }
    EXPECT_EQ(client.state(), TcpClient::State::idle);
    server.reset();
    run_for(*loop, 50ms);
    EXPECT_EQ(events.connected, 3);
    expect_loop_empty();
}

TEST_P(TcpClientTest, ServerClosingWithoutReconnectLeavesTheClientIdle) {
    auto server = std::make_unique<LineServer>(*loop, nullptr, [](Handle& connection) {
        connection.push_write("bye\n");
        connection.push_shutdown();
    });
    TcpClient client(*loop);
    Events events(client);
    client.connect("127.0.0.1", server->port());
    ASSERT_TRUE(run_until(*loop, [&] { return events.disconnected == 1; }));
    EXPECT_EQ(events.inputs, (std::vector<std::string>{"bye"}));
    EXPECT_EQ(client.state(), TcpClient::State::idle);
    run_for(*loop, 30ms);
    EXPECT_EQ(server->accepted, 1U);
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, OverlongInputRecordIsAnErrorAndDropsTheConnection) {
    auto server = std::make_unique<LineServer>(
        *loop, nullptr, [](Handle& connection) { connection.push_write("short\n" + std::string(20, 'x') + "\n"); });
    TcpClient client(*loop);
    client.set_filter(std::make_unique<LineFilter>("", 8));
    Events events(client);
    client.connect("127.0.0.1", server->port());
    ASSERT_TRUE(run_until(*loop, [&] { return events.disconnected == 1; }));
    EXPECT_EQ(events.inputs, (std::vector<std::string>{"short"}));
    ASSERT_EQ(events.errors.size(), 1U);
    EXPECT_EQ(events.errors.front().value(), EMSGSIZE);
    EXPECT_EQ(events.messages.front(),
              "input from 127.0.0.1:" + std::to_string(server->port()) + ": line longer than 8 bytes");
    EXPECT_EQ(client.state(), TcpClient::State::idle);
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, ShutdownFlushesEverythingFirst) {
    auto server = std::make_unique<LineServer>(*loop, nullptr);
    TcpClient client(*loop);
    Events events(client);
    const std::string big(1 << 20, 'b');
    client.on_connected([&](TcpClient& c) {
        c.send(big);
        c.send("last");
        c.shutdown();
        EXPECT_EQ(c.state(), TcpClient::State::shutting_down);
        EXPECT_FALSE(c.send("too late"));
    });
    client.connect("127.0.0.1", server->port());
    ASSERT_TRUE(run_until(*loop, [&] { return events.disconnected == 1 && server->lines.size() == 2; }));
    EXPECT_EQ(server->lines.front().size(), big.size());
    EXPECT_EQ(server->lines.back(), "last");
    EXPECT_EQ(events.connected, 0) << "replaced by the test's own on_connected";
    EXPECT_EQ(client.state(), TcpClient::State::idle);
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, FlushedAfterALargeWrite) {
    auto server = std::make_unique<LineServer>(*loop, nullptr);
    TcpClient client(*loop);
    Events events(client);
    client.connect("127.0.0.1", server->port());
    ASSERT_TRUE(run_until(*loop, [&] { return events.connected == 1; }));
    client.send(std::string(4 << 20, 'f'));
    ASSERT_TRUE(run_until(*loop, [&] { return events.flushed >= 1; }));
    EXPECT_EQ(client.handle()->write_queue_size(), 0U);
    ASSERT_TRUE(run_until(*loop, [&] { return server->lines.size() == 1; }));
    client.close();
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, DestroyingTheClientInsideItsInputCallback) {
    auto server =
        std::make_unique<LineServer>(*loop, nullptr, [](Handle& connection) { connection.push_write("a\nb\nc\n"); });
    auto client = std::make_unique<TcpClient>(*loop);
    int inputs = 0;
    client->on_input([&](TcpClient&, std::string_view) {
        ++inputs;
        client.reset();
    });
    client->connect("127.0.0.1", server->port());
    ASSERT_TRUE(run_until(*loop, [&] { return client == nullptr; }));
    run_for(*loop, 20ms);
    EXPECT_EQ(inputs, 1) << "nothing after the client is gone";
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, ConnectAgainInsideDisconnected) {
    auto server = std::make_unique<LineServer>(*loop, nullptr, [](Handle& connection) { connection.push_shutdown(); });
    TcpClient client(*loop);
    Events events(client);
    client.on_disconnected([&](TcpClient& c) {
        if (++events.disconnected < 2) c.connect("127.0.0.1", server->port());
    });
    client.connect("127.0.0.1", server->port());
    ASSERT_TRUE(run_until(*loop, [&] { return events.disconnected == 2; }));
    EXPECT_EQ(events.connected, 2);
    EXPECT_EQ(client.state(), TcpClient::State::idle);
    server.reset();
    expect_loop_empty();
}

TEST_P(TcpClientTest, ShutdownWhileRetryingStopsQuietly) {
    RefusingPort refusing;
    TcpClient client(*loop, {.reconnect = {.enabled = true, .initial_delay = 10ms}});
    Events events(client);
    client.on_error([&](TcpClient& c, std::error_code, const std::string&) {
        events.errors.emplace_back();
        c.shutdown();
    });
    client.connect("127.0.0.1", refusing.port);
    ASSERT_TRUE(run_until(*loop, [&] { return !events.errors.empty(); }));
    run_for(*loop, 40ms);
    EXPECT_EQ(events.errors.size(), 1U);
    EXPECT_EQ(client.state(), TcpClient::State::idle);
    expect_loop_empty();
}

ANYLOOP_INSTANTIATE_BACKENDS(TcpClientTest);

}  // namespace
}  // namespace anyloop::tcp::test
