// bench/server_common.hpp — what every raw echo server shares with
// examples/echo_server: the command line (--host ADDR, --port N), the
// listening socket, and the "listening on HOST:PORT" line.
//
// Sharing the socket set-up keeps the comparison about the event loop: every
// server listens the same way (SO_REUSEADDR, backlog SOMAXCONN, non-blocking)
// and sets TCP_NODELAY on accepted sockets, as anyloop's Handle does by
// default. Each library then accepts in its own idiomatic way.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace bench {

struct ServerOptions {
    std::string host = "127.0.0.1";
    std::string port = "0";  // 0 picks a free port
};

[[noreturn]] inline void die(const char* what, int error) {
    std::fprintf(stderr, "%s: %s\n", what, std::strerror(error));
    std::exit(1);
}

/// Parses `[--host ADDR] [--port N]`; prints usage and exits 2 on anything else.
inline ServerOptions parse_server_options(int argc, char** argv) {
    ServerOptions options;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if ((arg == "--host" || arg == "--port") && i + 1 < argc) {
            (arg == "--host" ? options.host : options.port) = argv[++i];
        } else {
            std::fprintf(stderr, "usage: %s [--host ADDR] [--port N]\n", argv[0]);
            std::exit(2);
        }
    }
    return options;
}

/// Enables TCP_NODELAY: a small echo goes out at once, as with anyloop's Handle.
inline void set_nodelay(int fd) noexcept {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/// A non-blocking listening TCP socket on a numeric address; exits 1 with a
/// message naming the address on failure.
inline int listen_tcp(const ServerOptions& options) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (const int rc = ::getaddrinfo(options.host.c_str(), options.port.c_str(), &hints, &found); rc != 0) {
        std::fprintf(stderr, "listen on %s:%s: %s\n", options.host.c_str(), options.port.c_str(), gai_strerror(rc));
        std::exit(1);
    }
    const int fd = ::socket(found->ai_family, found->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket", errno);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, found->ai_addr, found->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
        const int error = errno;
        std::fprintf(stderr, "listen on %s:%s: %s\n", options.host.c_str(), options.port.c_str(), std::strerror(error));
        std::exit(1);
    }
    ::freeaddrinfo(found);
    return fd;
}

/// Prints exactly "listening on HOST:PORT" (the bound address) and flushes.
inline void announce_listening(int listen_fd) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&address), &length);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (address.ss_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&address);
        ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    } else {
        const auto* in4 = reinterpret_cast<const sockaddr_in*>(&address);
        ::inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
        port = ntohs(in4->sin_port);
    }
    std::printf("listening on %s:%u\n", host, port);
    std::fflush(stdout);
}

/// The next pending connection, non-blocking and with TCP_NODELAY, or -1
/// when the backlog is empty (other accept errors are printed, then -1).
inline int accept_next(int listen_fd) {
    for (;;) {
        const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            set_nodelay(fd);
            return fd;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN) std::perror("accept4");
        return -1;
    }
}

/// Blocks SIGTERM and SIGINT and returns a non-blocking signalfd that
/// reports them, for the servers that multiplex it beside their sockets.
inline int stop_signal_fd() {
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    ::sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
    const int fd = ::signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) die("signalfd", errno);
    return fd;
}

/// The main loop of the hand-written epoll servers (raw_echo_epoll,
/// raw_echo_tls_epoll): watches `listen_fd` and a stop_signal_fd() in a new
/// epoll set, prints "listening on HOST:PORT", then dispatches until SIGTERM
/// or SIGINT. `on_listener(epoll_fd)` runs when connections wait to be
/// accepted; `on_connection(epoll_fd, tag)` runs for every other ready entry,
/// `tag` being the data.ptr the server registered it with.
template <typename OnListener, typename OnConnection>
void run_epoll_server(int listen_fd, OnListener on_listener, OnConnection on_connection) {
    const int signal_fd = stop_signal_fd();
    const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) die("epoll_create1", errno);

    // Tags for the two non-connection entries in the epoll set.
    char listener_tag = 0;
    char signal_tag = 0;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.ptr = &listener_tag;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &event);
    event.data.ptr = &signal_tag;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, signal_fd, &event);

    announce_listening(listen_fd);

    epoll_event ready[256];
    for (bool running = true; running;) {
        const int n = ::epoll_wait(epoll_fd, ready, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait", errno);
        }
        for (int i = 0; i < n; ++i) {
            void* tag = ready[i].data.ptr;
            if (tag == &listener_tag) {
                on_listener(epoll_fd);
            } else if (tag == &signal_tag) {
                running = false;
            } else {
                on_connection(epoll_fd, tag);
            }
        }
    }
}

}  // namespace bench
