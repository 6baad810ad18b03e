// raw_echo_select — a hand-written select(2) echo server, the raw
// counterpart of anyloop's select backend.
//
// Two master fd_sets (read and write interest) copied into select() each
// iteration, connections found by descriptor number. One read per readiness
// into a shared buffer, written straight back; after a partial write the
// rest is kept per connection, which then waits for writability instead of
// readability until it is out. SIGTERM/SIGINT arrive through a signalfd.
// Descriptors must stay below FD_SETSIZE (1024); a connection that would not
// is refused.
//
// Usage: raw_echo_select [--host ADDR] [--port N]
#include "server_common.hpp"

#include <sys/select.h>
#include <sys/signalfd.h>

#include <csignal>
#include <memory>
#include <vector>

namespace {

struct Connection {
    std::vector<char> pending;  // unwritten echo after a partial write
    std::size_t pending_offset = 0;
};

char read_buffer[64 * 1024];

fd_set want_read;
fd_set want_write;
int max_fd = -1;
std::unique_ptr<Connection> connections[FD_SETSIZE];

void close_connection(int fd) {
    FD_CLR(fd, &want_read);
    FD_CLR(fd, &want_write);
    connections[fd].reset();
    ::close(fd);
}

void on_readable(int fd, Connection& connection) {
    const ssize_t n = ::read(fd, read_buffer, sizeof read_buffer);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) close_connection(fd);
        return;
    }
    const ssize_t written = ::send(fd, read_buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL);
    if (written == n) return;
    if (written < 0 && errno != EAGAIN && errno != EINTR) {
        close_connection(fd);
        return;
    }
    const ssize_t taken = written < 0 ? 0 : written;
    connection.pending.assign(read_buffer + taken, read_buffer + n);
    connection.pending_offset = 0;
    FD_CLR(fd, &want_read);
    FD_SET(fd, &want_write);
}

void on_writable(int fd, Connection& connection) {
    const std::size_t left = connection.pending.size() - connection.pending_offset;
    const ssize_t written = ::send(fd, connection.pending.data() + connection.pending_offset, left, MSG_NOSIGNAL);
    if (written < 0) {
        if (errno != EAGAIN && errno != EINTR) close_connection(fd);
        return;
    }
    connection.pending_offset += static_cast<std::size_t>(written);
    if (connection.pending_offset == connection.pending.size()) {
        connection.pending.clear();
        FD_CLR(fd, &want_write);
        FD_SET(fd, &want_read);
    }
}

void accept_all(int listen_fd) {
    for (int fd; (fd = bench::accept_next(listen_fd)) >= 0;) {
        if (fd >= FD_SETSIZE) {
            std::fprintf(stderr, "descriptor %d is beyond select()'s FD_SETSIZE (%d); connection refused\n", fd,
                         FD_SETSIZE);
            ::close(fd);
            continue;
        }
        connections[fd] = std::make_unique<Connection>();
        FD_SET(fd, &want_read);
        if (fd > max_fd) max_fd = fd;
    }
}

}  // namespace

int main(int argc, char** argv) {
    const bench::ServerOptions options = bench::parse_server_options(argc, argv);
    const int listen_fd = bench::listen_tcp(options);

    const int signal_fd = bench::stop_signal_fd();

    FD_ZERO(&want_read);
    FD_ZERO(&want_write);
    FD_SET(listen_fd, &want_read);
    FD_SET(signal_fd, &want_read);
    max_fd = listen_fd > signal_fd ? listen_fd : signal_fd;

    bench::announce_listening(listen_fd);

    for (;;) {
        fd_set readable = want_read;
        fd_set writable = want_write;
        const int n = ::select(max_fd + 1, &readable, &writable, nullptr, nullptr);
        if (n < 0) {
            if (errno == EINTR) continue;
            bench::die("select", errno);
        }
        if (FD_ISSET(signal_fd, &readable)) break;
        for (int fd = 0, seen = 0; fd <= max_fd && seen < n; ++fd) {
            const bool can_read = FD_ISSET(fd, &readable);
            const bool can_write = FD_ISSET(fd, &writable);
            if (!can_read && !can_write) continue;
            ++seen;
            if (fd == listen_fd) continue;
            Connection& connection = *connections[fd];
            if (connection.pending.empty()) on_readable(fd, connection);
            else on_writable(fd, connection);
        }
        if (FD_ISSET(listen_fd, &readable)) accept_all(listen_fd);
    }
    return 0;
}
