#include "support/test_support.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>
#include <vector>

namespace anyloop::test {

SocketPair::SocketPair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
        throw std::system_error(errno, std::generic_category(), "socketpair");
    a = fds[0];
    b = fds[1];
}

SocketPair::~SocketPair() {
    close_a();
    close_b();
}

void SocketPair::close_a() {
    if (a >= 0) ::close(a);
    a = -1;
}

void SocketPair::close_b() {
    if (b >= 0) ::close(b);
    b = -1;
}

bool run_until(EventLoop& loop, const std::function<bool()>& done, std::chrono::milliseconds limit) {
    bool expired = false;
    TimerWatcher guard = loop.timer(limit, [&] { expired = true; });
    guard.set_keepalive(false);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && !expired && std::chrono::steady_clock::now() < deadline) {
        // Keep the loop alive while waiting even if the test's own watchers
        // are all unref'd.
        loop.ref();
        try {
            loop.run_once(true);
        } catch (...) {
            loop.unref();
            throw;
        }
        loop.unref();
    }
    return done();
}

int run_for(EventLoop& loop, std::chrono::milliseconds how_long) {
    int iterations = -2;  // run_until asks done() before each run_once(), when it stops, and for its result
    run_until(
        loop,
        [&] {
            ++iterations;
            return false;
        },
        how_long);
    return iterations;
}

long raise_fd_limit(long wanted) {
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    if (static_cast<long>(limit.rlim_cur) < wanted) {
        limit.rlim_cur = std::min<rlim_t>(static_cast<rlim_t>(wanted), limit.rlim_max);
        ::setrlimit(RLIMIT_NOFILE, &limit);
    }
    ::getrlimit(RLIMIT_NOFILE, &limit);
    return static_cast<long>(limit.rlim_cur);
}

void write_all(int fd, const void* data, std::size_t size) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd, p, size);
        if (n > 0) {
            p += n;
            size -= static_cast<std::size_t>(n);
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            pollfd pfd{fd, POLLOUT, 0};
            ::poll(&pfd, 1, 1000);
        } else {
            throw std::system_error(errno, std::generic_category(), "write");
        }
    }
}

int move_fd_above(int fd, int minimum) {
    const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, minimum);
    if (moved < 0)
        throw std::system_error(errno, std::generic_category(),
                                "fcntl(F_DUPFD_CLOEXEC, " + std::to_string(minimum) + ") of fd " + std::to_string(fd));
    ::close(fd);
    return moved;
}

std::size_t fill_until_blocked(int fd) {
    const std::vector<char> chunk(64 * 1024, 'f');
    std::size_t total = 0;
    for (;;) {
        const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (n > 0) {
            total += static_cast<std::size_t>(n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return total;
        } else {
            throw std::system_error(errno, std::generic_category(), "send while filling fd " + std::to_string(fd));
        }
    }
}

std::string read_available(int fd) {
    std::string data;
    char buffer[64 * 1024];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n > 0) {
            data.append(buffer, static_cast<std::size_t>(n));
        } else if (n == 0 || errno == EAGAIN) {
            return data;
        } else if (errno != EINTR) {
            throw std::system_error(errno, std::generic_category(), "read of fd " + std::to_string(fd));
        }
    }
}

double elapsed_ms(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace anyloop::test
