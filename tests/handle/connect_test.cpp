// tcp_connect: success by name, a clear error for a closed port and for a
// timeout, cancellation, and destroying the request in its callback.
#include <anyloop/handle/connect.hpp>

#include "handle/handle_test_support.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using namespace handle_support;
using ConnectTest = LoopTest;

struct Outcome {
    bool called = false;
    std::unique_ptr<Handle> handle;
    std::error_code error;
    std::string message;
};

ConnectCallback record(Outcome& outcome) {
    return [&outcome](std::unique_ptr<Handle> handle, std::error_code error, const std::string& message) {
        EXPECT_FALSE(outcome.called) << "the callback runs once";
        outcome.called = true;
        outcome.handle = std::move(handle);
        outcome.error = error;
        outcome.message = message;
    };
}

TEST_P(ConnectTest, ConnectsByNameAndTalks) {
    Listener listener;
    Outcome outcome;
    ConnectRequest request = tcp_connect(*loop, "localhost", listener.port, {}, record(outcome));
    EXPECT_FALSE(outcome.called) << "never inside tcp_connect";
    EXPECT_TRUE(request.pending());
    ASSERT_TRUE(run_until(*loop, [&] { return outcome.called; }));
    ASSERT_TRUE(outcome.handle) << outcome.message;
    EXPECT_FALSE(outcome.error);
    EXPECT_FALSE(request.pending());

    // The Handle works: a line there and back.
    const int server_fd = listener.accept();
    Handle server(*loop, server_fd);
    server.push_read(Reader::line([](Handle& h, std::string_view line) { h.push_write(std::string(line) + "!\n"); }));
    std::string reply;
    outcome.handle->push_read(Reader::line([&](Handle&, std::string_view line) { reply = line; }));
    outcome.handle->push_write("hello\n");
    ASSERT_TRUE(run_until(*loop, [&] { return !reply.empty(); }));
    EXPECT_EQ(reply, "hello!");
}

TEST_P(ConnectTest, AClosedPortGivesAClearError) {
    // A bound socket that does not listen: the port is ours and refuses.
    const int bound = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(bound, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    socklen_t length = sizeof address;
    ::getsockname(bound, reinterpret_cast<sockaddr*>(&address), &length);
    const std::uint16_t port = ntohs(address.sin_port);

    Outcome outcome;
    ConnectRequest request = tcp_connect(*loop, "127.0.0.1", port, {}, record(outcome));
    ASSERT_TRUE(run_until(*loop, [&] { return outcome.called; }));
    ::close(bound);
    EXPECT_FALSE(outcome.handle);
    EXPECT_EQ(outcome.error, std::errc::connection_refused);
    EXPECT_NE(outcome.message.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << outcome.message;
    EXPECT_NE(outcome.message.find("refused"), std::string::npos) << outcome.message;
}

TEST_P(ConnectTest, AConnectThatHangsTimesOut) {
    // A listener whose accept queue is full drops new SYNs, so a connect
    // neither succeeds nor fails until the timeout.
    Listener listener(0);
    std::vector<int> fillers;
    for (int i = 0; i < 4; ++i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = htons(listener.port);
        ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
        fillers.push_back(fd);
    }
    Outcome outcome;
    ConnectRequest request = tcp_connect(*loop, "127.0.0.1", listener.port, {.timeout = 150ms}, record(outcome));
    ASSERT_TRUE(run_until(*loop, [&] { return outcome.called; }, 5s));
    for (int fd : fillers) ::close(fd);
    if (outcome.handle) GTEST_SKIP() << "this kernel accepted the connection; no hanging connect to time out";
    EXPECT_EQ(outcome.error, std::errc::timed_out) << outcome.message;
    EXPECT_NE(outcome.message.find("timed out"), std::string::npos) << outcome.message;
}

TEST_P(ConnectTest, CancelledRequestNeverCalls) {
    Listener listener;
    Outcome outcome;
    {
        ConnectRequest request = tcp_connect(*loop, "127.0.0.1", listener.port, {}, record(outcome));
    }
    for (int i = 0; i < 5; ++i) loop->run_once(false);
    EXPECT_FALSE(outcome.called);
    EXPECT_EQ(loop->active_watchers(), 0U);
}

// A name is resolved on a thread of its own ("localhost" takes that path;
// an address does not). Cancelling the request or destroying the loop
// meanwhile leaves the thread nothing to touch but its own job.
TEST_P(ConnectTest, ResolverThreadOutlivesACancelledRequest) {
    Listener listener;
    Outcome outcome;
    for (int i = 0; i < 20; ++i) {
        ConnectRequest request = tcp_connect(*loop, "localhost", listener.port, {}, record(outcome));
        loop->run_once(false);  // starts the resolver thread
    }
    // Long enough for the threads to finish; their answers go nowhere.
    const auto until = std::chrono::steady_clock::now() + 200ms;
    while (std::chrono::steady_clock::now() < until) {
        loop->run_once(false);
        std::this_thread::sleep_for(1ms);
    }
    EXPECT_FALSE(outcome.called);
    EXPECT_EQ(loop->active_watchers(), 0U);
}

TEST_P(ConnectTest, ResolverThreadOutlivesItsLoop) {
    Listener listener;
    Outcome outcome;
    auto own_loop = make_loop(GetParam());
    ConnectRequest request = tcp_connect(*own_loop, "localhost", listener.port, {}, record(outcome));
    own_loop->run_once(false);
    own_loop.reset();
    std::this_thread::sleep_for(100ms);
    request.cancel();
    EXPECT_FALSE(outcome.called);
}

TEST_P(ConnectTest, ManyNamesResolvedAtOnceAllConnect) {
    Listener listener;
    std::vector<std::unique_ptr<Outcome>> outcomes;
    std::vector<ConnectRequest> requests;
    for (int i = 0; i < 8; ++i) {
        outcomes.push_back(std::make_unique<Outcome>());
        requests.push_back(tcp_connect(*loop, "localhost", listener.port, {}, record(*outcomes.back())));
    }
    ASSERT_TRUE(run_until(*loop, [&] {
        for (const auto& outcome : outcomes)
            if (!outcome->called) return false;
        return true;
    }));
    for (const auto& outcome : outcomes) EXPECT_TRUE(outcome->handle) << outcome->message;
}

TEST_P(ConnectTest, DestroyingTheRequestInsideItsCallback) {
    Listener listener;
    auto request = std::make_unique<ConnectRequest>();
    std::unique_ptr<Handle> handle;
    auto guard = std::make_shared<int>(7);
    *request = tcp_connect(*loop, "127.0.0.1", listener.port, {},
                           [&, guard](std::unique_ptr<Handle> connected, std::error_code, const std::string&) {
                               request.reset();
                               EXPECT_EQ(*guard, 7);
                               handle = std::move(connected);
                           });
    ASSERT_TRUE(run_until(*loop, [&] { return handle != nullptr; }));
    EXPECT_EQ(request, nullptr);
}

ANYLOOP_INSTANTIATE_BACKENDS(ConnectTest);

}  // namespace
}  // namespace anyloop::test
