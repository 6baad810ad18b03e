// raw_echo_epoll — the baseline: a hand-written level-triggered epoll echo
// server, as small and direct as such a server gets.
//
// One read per readiness into a buffer shared by every connection, written
// straight back. Only when the kernel takes part of a write does the rest go
// into that connection's own buffer; the connection then waits for EPOLLOUT
// and stops reading until the rest is out (backpressure). SIGTERM/SIGINT
// arrive through a signalfd in the same epoll set.
//
// Usage: raw_echo_epoll [--host ADDR] [--port N]
#include "server_common.hpp"

#include <sys/epoll.h>

#include <vector>

namespace {

struct Connection {
    int fd;
    std::vector<char> pending;  // unwritten echo after a partial write
    std::size_t pending_offset = 0;
};

char read_buffer[64 * 1024];

void close_connection(Connection* connection) {
    ::close(connection->fd);  // also removes it from the epoll set
    delete connection;
}

void watch(int epoll_fd, int op, Connection* connection, std::uint32_t events) {
    epoll_event event{};
    event.events = events;
    event.data.ptr = connection;
    ::epoll_ctl(epoll_fd, op, connection->fd, &event);
}

// Writes `data`; keeps what the kernel did not take. False: the peer is gone.
bool echo(int epoll_fd, Connection* connection, const char* data, std::size_t size) {
    const ssize_t written = ::send(connection->fd, data, size, MSG_NOSIGNAL);
    if (written == static_cast<ssize_t>(size)) return true;
    if (written < 0 && errno != EAGAIN && errno != EINTR) return false;
    const std::size_t taken = written < 0 ? 0 : static_cast<std::size_t>(written);
    connection->pending.assign(data + taken, data + size);
    connection->pending_offset = 0;
    watch(epoll_fd, EPOLL_CTL_MOD, connection, EPOLLOUT);
    return true;
}

void on_readable(int epoll_fd, Connection* connection) {
    const ssize_t n = ::read(connection->fd, read_buffer, sizeof read_buffer);
    if (n > 0) {
        if (!echo(epoll_fd, connection, read_buffer, static_cast<std::size_t>(n))) close_connection(connection);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        close_connection(connection);
    }
}

void on_writable(int epoll_fd, Connection* connection) {
    const char* data = connection->pending.data() + connection->pending_offset;
    const std::size_t left = connection->pending.size() - connection->pending_offset;
    const ssize_t written = ::send(connection->fd, data, left, MSG_NOSIGNAL);
    if (written < 0) {
        if (errno != EAGAIN && errno != EINTR) close_connection(connection);
        return;
    }
    connection->pending_offset += static_cast<std::size_t>(written);
    if (connection->pending_offset == connection->pending.size()) {
        connection->pending.clear();
        watch(epoll_fd, EPOLL_CTL_MOD, connection, EPOLLIN);
    }
}

void accept_all(int epoll_fd, int listen_fd) {
    for (int fd; (fd = bench::accept_next(listen_fd)) >= 0;) {
        watch(epoll_fd, EPOLL_CTL_ADD, new Connection{fd, {}}, EPOLLIN);
    }
}

}  // namespace

int main(int argc, char** argv) {
    const bench::ServerOptions options = bench::parse_server_options(argc, argv);
    const int listen_fd = bench::listen_tcp(options);

    bench::run_epoll_server(
        listen_fd, [&](int epoll_fd) { accept_all(epoll_fd, listen_fd); },
        [](int epoll_fd, void* tag) {
            // A connection is closed only on its own event, and an fd
            // appears once per batch, so no later entry points at it.
            auto* connection = static_cast<Connection*>(tag);
            if (connection->pending.empty()) on_readable(epoll_fd, connection);
            else on_writable(epoll_fd, connection);
        });
    return 0;
}
