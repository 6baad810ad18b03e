// raw_echo_libev — a hand-written libev echo server: one ev_io per
// connection, the way libev's manual suggests writing one.
//
// The ev_io's data pointer leads back to its connection. Reading goes into
// one buffer shared by all connections and is written straight back; after a
// partial write the rest is kept per connection and the watcher switches
// from EV_READ to EV_WRITE until it is out. SIGTERM/SIGINT break the loop
// through ev_signal watchers.
//
// Usage: raw_echo_libev [--host ADDR] [--port N]
#include "server_common.hpp"

#include <ev.h>

#include <csignal>
#include <vector>

namespace {

struct Connection {
    ev_io io;  // io.data points back here
    std::vector<char> pending;
    std::size_t pending_offset = 0;
};

char read_buffer[64 * 1024];

void close_connection(struct ev_loop* loop, Connection* connection) {
    ev_io_stop(loop, &connection->io);
    ::close(connection->io.fd);
    delete connection;
}

void switch_events(struct ev_loop* loop, Connection* connection, int events) {
    ev_io_stop(loop, &connection->io);
    ev_io_set(&connection->io, connection->io.fd, events);
    ev_io_start(loop, &connection->io);
}

void on_connection(struct ev_loop* loop, ev_io* watcher, int /*revents*/) {
    auto* connection = static_cast<Connection*>(watcher->data);
    const int fd = watcher->fd;
    if (connection->pending.empty()) {
        const ssize_t n = ::read(fd, read_buffer, sizeof read_buffer);
        if (n <= 0) {
            if (n == 0 || (errno != EAGAIN && errno != EINTR)) close_connection(loop, connection);
            return;
        }
        const ssize_t written = ::send(fd, read_buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL);
        if (written == n) return;
        if (written < 0 && errno != EAGAIN && errno != EINTR) {
            close_connection(loop, connection);
            return;
        }
        const ssize_t taken = written < 0 ? 0 : written;
        connection->pending.assign(read_buffer + taken, read_buffer + n);
        connection->pending_offset = 0;
        switch_events(loop, connection, EV_WRITE);
        return;
    }
    const std::size_t left = connection->pending.size() - connection->pending_offset;
    const ssize_t written = ::send(fd, connection->pending.data() + connection->pending_offset, left, MSG_NOSIGNAL);
    if (written < 0) {
        if (errno != EAGAIN && errno != EINTR) close_connection(loop, connection);
        return;
    }
    connection->pending_offset += static_cast<std::size_t>(written);
    if (connection->pending_offset == connection->pending.size()) {
        connection->pending.clear();
        switch_events(loop, connection, EV_READ);
    }
}

void on_accept(struct ev_loop* loop, ev_io* watcher, int /*revents*/) {
    for (int fd; (fd = bench::accept_next(watcher->fd)) >= 0;) {
        auto* connection = new Connection{};
        ev_io_init(&connection->io, on_connection, fd, EV_READ);
        connection->io.data = connection;
        ev_io_start(loop, &connection->io);
    }
}

void on_stop_signal(struct ev_loop* loop, ev_signal* /*watcher*/, int /*revents*/) { ev_break(loop, EVBREAK_ALL); }

}  // namespace

int main(int argc, char** argv) {
    const bench::ServerOptions options = bench::parse_server_options(argc, argv);
    const int listen_fd = bench::listen_tcp(options);

    struct ev_loop* loop = ev_default_loop(0);
    ev_io acceptor;
    ev_io_init(&acceptor, on_accept, listen_fd, EV_READ);
    ev_io_start(loop, &acceptor);
    ev_signal term;
    ev_signal interrupt;
    ev_signal_init(&term, on_stop_signal, SIGTERM);
    ev_signal_init(&interrupt, on_stop_signal, SIGINT);
    ev_signal_start(loop, &term);
    ev_signal_start(loop, &interrupt);

    bench::announce_listening(listen_fd);
    ev_run(loop, 0);
    return 0;
}
