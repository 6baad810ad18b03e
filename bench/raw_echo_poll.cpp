// raw_echo_poll — a hand-written poll(2) echo server, the raw counterpart of
// anyloop's poll backend.
//
// A dense pollfd array (the listening socket, a signalfd for SIGTERM/SIGINT,
// then one entry per connection) and a parallel array of connections. One
// read per readiness into a shared buffer, written straight back; after a
// partial write the rest is kept per connection, which then waits for POLLOUT
// instead of POLLIN until it is out. A closed connection is swap-removed;
// the array is walked backwards so that the entry moved in was already seen.
//
// Usage: raw_echo_poll [--host ADDR] [--port N]
#include "server_common.hpp"

#include <poll.h>
#include <sys/signalfd.h>

#include <csignal>
#include <vector>

namespace {

struct Connection {
    std::vector<char> pending;  // unwritten echo after a partial write
    std::size_t pending_offset = 0;
};

char read_buffer[64 * 1024];

std::vector<pollfd> pollfds;
std::vector<Connection> connections;  // parallel to pollfds; slots 0 and 1 unused

void remove(std::size_t slot) {
    ::close(pollfds[slot].fd);
    pollfds[slot] = pollfds.back();
    connections[slot] = std::move(connections.back());
    pollfds.pop_back();
    connections.pop_back();
}

// False: the connection is gone.
bool on_ready(std::size_t slot, short revents) {
    pollfd& entry = pollfds[slot];
    Connection& connection = connections[slot];
    if (connection.pending.empty()) {
        if ((revents & (POLLIN | POLLHUP | POLLERR)) == 0) return true;
        const ssize_t n = ::read(entry.fd, read_buffer, sizeof read_buffer);
        if (n <= 0) return n < 0 && (errno == EAGAIN || errno == EINTR);
        const ssize_t written = ::send(entry.fd, read_buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL);
        if (written == n) return true;
        if (written < 0 && errno != EAGAIN && errno != EINTR) return false;
        const ssize_t taken = written < 0 ? 0 : written;
        connection.pending.assign(read_buffer + taken, read_buffer + n);
        connection.pending_offset = 0;
        entry.events = POLLOUT;
        return true;
    }
    const std::size_t left = connection.pending.size() - connection.pending_offset;
    const ssize_t written = ::send(entry.fd, connection.pending.data() + connection.pending_offset, left, MSG_NOSIGNAL);
    if (written < 0) return errno == EAGAIN || errno == EINTR;
    connection.pending_offset += static_cast<std::size_t>(written);
    if (connection.pending_offset == connection.pending.size()) {
        connection.pending.clear();
        entry.events = POLLIN;
    }
    return true;
}

void accept_all(int listen_fd) {
    for (int fd; (fd = bench::accept_next(listen_fd)) >= 0;) {
        pollfds.push_back({fd, POLLIN, 0});
        connections.emplace_back();
    }
}

}  // namespace

int main(int argc, char** argv) {
    const bench::ServerOptions options = bench::parse_server_options(argc, argv);
    const int listen_fd = bench::listen_tcp(options);

    const int signal_fd = bench::stop_signal_fd();

    pollfds.push_back({listen_fd, POLLIN, 0});
    pollfds.push_back({signal_fd, POLLIN, 0});
    connections.resize(2);

    bench::announce_listening(listen_fd);

    for (;;) {
        const int n = ::poll(pollfds.data(), pollfds.size(), -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            bench::die("poll", errno);
        }
        if (pollfds[1].revents != 0) break;
        const bool accept_ready = pollfds[0].revents != 0;
        for (std::size_t slot = pollfds.size() - 1; slot >= 2; --slot) {
            const short revents = pollfds[slot].revents;
            if (revents != 0 && !on_ready(slot, revents)) remove(slot);
        }
        if (accept_ready) accept_all(listen_fd);
    }
    return 0;
}
