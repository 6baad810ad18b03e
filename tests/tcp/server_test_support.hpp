// Helpers shared by the TcpServer suites: clients on real loopback sockets,
// read by a watcher on the test's loop, and a log sink that keeps lines.
#pragma once

#include <anyloop/tcp/server.hpp>

#include "handle/handle_test_support.hpp"
#include "support/test_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace anyloop::tcp::test {

using namespace anyloop::test;
using namespace std::chrono_literals;

/// A socket address from text ("127.0.0.1", "::1") and a port.
inline sockaddr_storage make_address(const std::string& host, std::uint16_t port, socklen_t& length) {
    sockaddr_storage storage{};
    if (host.find(':') != std::string::npos) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        if (::inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) != 1) throw std::invalid_argument(host);
        length = sizeof(sockaddr_in6);
    } else {
        auto* in4 = reinterpret_cast<sockaddr_in*>(&storage);
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        if (::inet_pton(AF_INET, host.c_str(), &in4->sin_addr) != 1) throw std::invalid_argument(host);
        length = sizeof(sockaddr_in);
    }
    return storage;
}

/// A blocking connect to host:port, optionally from `source` (an address
/// to bind first); the result is non-blocking. Throws on failure.
inline int connect_tcp(const std::string& host, std::uint16_t port, const std::string& source = {}) {
    socklen_t length = 0;
    const sockaddr_storage address = make_address(host, port, length);
    const int fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
    if (!source.empty()) {
        socklen_t source_length = 0;
        const sockaddr_storage from = make_address(source, 0, source_length);
        if (::bind(fd, reinterpret_cast<const sockaddr*>(&from), source_length) != 0) {
            const int error = errno;
            ::close(fd);
            throw std::system_error(error, std::generic_category(), "bind client to " + source);
        }
    }
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0) {
        const int error = errno;
        ::close(fd);
        throw std::system_error(error, std::generic_category(), "connect to " + host + ":" + std::to_string(port));
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

inline int connect_unix(const std::string& path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        const int error = errno;
        ::close(fd);
        throw std::system_error(error, std::generic_category(), "connect to " + path);
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/// The local port of a socket.
inline std::uint16_t local_port(int fd) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    return address_port(reinterpret_cast<const sockaddr*>(&address), length);
}

/// Whether this host can bind ::1 (IPv6 may be off in a container).
inline bool have_ipv6_loopback() {
    const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    socklen_t length = 0;
    const sockaddr_storage address = make_address("::1", 0, length);
    const bool ok = ::bind(fd, reinterpret_cast<const sockaddr*>(&address), length) == 0;
    ::close(fd);
    return ok;
}

/// Blocking side of a test client: waits (poll) up to `timeout_ms` for
/// `size` bytes on `fd`. Returns what arrived: fewer bytes when the server
/// closed the connection or the time ran out.
inline std::string read_reply(int fd, std::size_t size, int timeout_ms = 3000) {
    std::string reply;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (reply.size() < size) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd waiting{fd, POLLIN, 0};
        if (left.count() <= 0 || ::poll(&waiting, 1, static_cast<int>(left.count())) != 1) break;
        char buffer[4096];
        const ssize_t n = ::read(fd, buffer, std::min(sizeof buffer, size - reply.size()));
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (n <= 0) break;
        reply.append(buffer, static_cast<std::size_t>(n));
    }
    return reply;
}

/// A client socket whose input a watcher on the test's loop collects
/// (received, eof, error); owns the fd.
class Peer : public handle_support::RawPeer {
public:
    Peer(EventLoop& loop, int fd) : RawPeer(loop, fd), fd_(fd) {}
    ~Peer() { close(); }
    Peer(const Peer&) = delete;
    Peer& operator=(const Peer&) = delete;

    void send(std::string_view bytes) const { write_all(fd_, bytes.data(), bytes.size()); }
    void close() {
        stop_reading();
        if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    }
    /// Stops or resumes collecting (the kernel buffers meanwhile).
    void pause() { stop_reading(); }
    void resume() { start_reading(); }
    [[nodiscard]] int fd() const noexcept { return fd_; }
    /// End of file or a reset from the server.
    [[nodiscard]] bool closed_by_server() const noexcept { return done(); }

private:
    int fd_;
};

/// A log sink that keeps every line (thread-safe: workers log too).
class LogLines {
public:
    [[nodiscard]] LogSink sink() {
        return [this](LogLevel, std::string_view message) {
            const std::lock_guard lock(mutex_);
            lines_.emplace_back(message);
        };
    }
    /// Whether some line contains `text`.
    [[nodiscard]] bool contains(std::string_view text) const {
        const std::lock_guard lock(mutex_);
        for (const std::string& line : lines_)
            if (line.find(text) != std::string::npos) return true;
        return false;
    }
    [[nodiscard]] std::string all() const {
        const std::lock_guard lock(mutex_);
        std::string text;
        for (const std::string& line : lines_) text += line + "\n";
        return text;
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::string> lines_;
};

/// Options for a server on 127.0.0.1 (free port) logging into `log`.
inline ServerOptions loopback_options(LogLines& log, LogLevel level = LogLevel::info) {
    ServerOptions options;
    options.listeners = {ListenerOptions{.address = "127.0.0.1:0"}};
    options.log_sink = log.sink();
    options.log_level = level;
    return options;
}

/// Callback counts, libuv style.
struct Counts {
    int connected = 0;
    int input = 0;
    int disconnected = 0;
    int error = 0;
    int flushed = 0;
    int finished = 0;
};

/// Counts every callback of `server`; on_input echoes each record unless
/// `echo` is false.
inline void count_callbacks(TcpServer& server, Counts& counts, bool echo = true) {
    server.on_connected([&counts](Connection&) { ++counts.connected; });
    server.on_input([&counts, echo](Connection& connection, std::string_view record) {
        ++counts.input;
        if (echo) connection.send(record);
    });
    server.on_disconnected([&counts](Connection&) { ++counts.disconnected; });
    server.on_error([&counts](Connection&, std::error_code, const std::string&) { ++counts.error; });
    server.on_flushed([&counts](Connection&) { ++counts.flushed; });
    server.on_finished([&counts] { ++counts.finished; });
}

/// A server on 127.0.0.1 (free port) whose callbacks are counted and echo
/// each record, with its log. Not started: tests may replace callbacks.
///     Served served(*loop, [](ServerOptions& options) { options.concurrency = 3; });
///     auto& [log, counts, server] = served;
struct Served {
    explicit Served(EventLoop& loop, const std::function<void(ServerOptions&)>& configure = {})
        : server(loop, options(configure)) {
        count_callbacks(server, counts);
    }
    LogLines log;
    Counts counts;
    TcpServer server;

private:
    ServerOptions options(const std::function<void(ServerOptions&)>& configure) {
        ServerOptions settings = loopback_options(log);
        if (configure) configure(settings);
        return settings;
    }
};

/// Shuts `server` down and runs the loop until it finished.
inline bool shut_down(EventLoop& loop, TcpServer& server) {
    server.shutdown();
    return run_until(loop, [&] { return !server.running(); }, 5s);
}

}  // namespace anyloop::tcp::test
