#include "support/test_support.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

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

}  // namespace anyloop::test
