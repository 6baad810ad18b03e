// Helpers shared by the Handle tests: real sockets (TCP on 127.0.0.1,
// socket pairs) and a raw peer driven by the same loop.
#pragma once

#include <anyloop/core/event_loop.hpp>

#include "support/test_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace anyloop::test::handle_support {

inline void set_nonblocking(int fd) {
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/// A listening TCP socket on 127.0.0.1, port chosen by the kernel.
struct Listener {
    explicit Listener(int backlog = 16) {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(fd, backlog) != 0)
            throw std::system_error(errno, std::generic_category(), "bind/listen on 127.0.0.1");
        socklen_t length = sizeof address;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
        port = ntohs(address.sin_port);
    }
    ~Listener() {
        if (fd >= 0) ::close(fd);
    }
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;
    /// Blocking accept; the result is non-blocking.
    int accept() const {
        const int client = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (client < 0) throw std::system_error(errno, std::generic_category(), "accept");
        return client;
    }
    int fd = -1;
    std::uint16_t port = 0;
};

/// A blocking connect to 127.0.0.1:port; the result is non-blocking.
inline int connect_loopback(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
        throw std::system_error(errno, std::generic_category(), "connect to 127.0.0.1:" + std::to_string(port));
    set_nonblocking(fd);
    return fd;
}

/// A connected TCP pair on 127.0.0.1. Whoever takes an end (a Handle)
/// sets it to -1 here; the rest is closed by the destructor.
struct TcpPair {
    TcpPair() {
        Listener listener;
        a = connect_loopback(listener.port);
        b = listener.accept();
    }
    ~TcpPair() {
        if (a >= 0) ::close(a);
        if (b >= 0) ::close(b);
    }
    TcpPair(const TcpPair&) = delete;
    TcpPair& operator=(const TcpPair&) = delete;
    int take_a() { return std::exchange(a, -1); }
    int take_b() { return std::exchange(b, -1); }
    int a = -1;
    int b = -1;
};

/// Bytes waiting to be read on `fd`.
inline std::size_t readable_bytes(int fd) {
    int count = 0;
    ::ioctl(fd, FIONREAD, &count);
    return static_cast<std::size_t>(count);
}

/// Runs non-blocking iterations until `fd` has nothing left to read (the
/// Handle on it took everything), at most `limit` iterations.
inline void run_until_drained(EventLoop& loop, int fd, int limit = 100) {
    for (int i = 0; i < limit && readable_bytes(fd) > 0; ++i) loop.run_once(false);
    loop.run_once(false);
}

/// The other end of a Handle, read by a watcher on the same loop: collects
/// what arrives and notes end of file or an error.
class RawPeer {
public:
    RawPeer(EventLoop& loop, int fd, bool reading = true) : loop_(loop), fd_(fd) {
        if (reading) start_reading();
    }
    void start_reading() {
        if (!watcher_) watcher_ = loop_.io(fd_, Io::read, [this](Io) { on_readable(); });
        else watcher_.start();
    }
    void stop_reading() { watcher_.stop(); }
    [[nodiscard]] bool done() const { return eof || error != 0; }

    std::string received;
    bool eof = false;
    int error = 0;

private:
    void on_readable() {
        char buffer[64 * 1024];
        for (;;) {
            const ssize_t n = ::read(fd_, buffer, sizeof buffer);
            if (n > 0) {
                received.append(buffer, static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) return;
            if (n == 0) eof = true;
            else error = errno;
            watcher_.stop();
            return;
        }
    }

    EventLoop& loop_;
    int fd_;
    IoWatcher watcher_;
};

/// Reads whatever non-blocking `fd` holds right now.
inline std::string read_now(int fd) {
    std::string data;
    char buffer[64 * 1024];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n > 0) data.append(buffer, static_cast<std::size_t>(n));
        else if (n < 0 && errno == EINTR) continue;
        else return data;
    }
}

/// Milliseconds since `start`.
inline double ms_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

/// `size` pseudo-random bytes (all 256 values), reproducible per seed.
inline std::string random_bytes(std::size_t size, std::uint32_t seed) {
    std::mt19937 generator(seed);
    std::string bytes(size, '\0');
    for (char& c : bytes) c = static_cast<char>(generator() & 0xFF);
    return bytes;
}

/// `payload` preceded by its big-endian length in `width` bytes.
inline std::string prefixed(std::size_t width, std::string_view payload) {
    std::string record;
    for (std::size_t i = 0; i < width; ++i)
        record.push_back(static_cast<char>(static_cast<std::uint64_t>(payload.size()) >> (8 * (width - 1 - i))));
    record.append(payload);
    return record;
}

}  // namespace anyloop::test::handle_support
