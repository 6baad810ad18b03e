// loop_echo — the raw echo server's logic written on anyloop's EventLoop
// (IoWatcher only, no Handle). It sits between raw_echo_<X> and
// examples/echo_server in the comparison: loop_echo minus raw_echo_<X> is
// what core + backend X add per round trip; echo_server minus loop_echo is
// what the Handle adds.
//
// Same logic as raw_echo_epoll: one read per readiness into a shared buffer,
// written straight back; after a partial write the rest is kept per
// connection and the watcher waits for Io::write until it is out.
//
// Usage: loop_echo [--backend NAME] [--host ADDR] [--port N]
#include "server_common.hpp"

#include <anyloop/backends/registry.hpp>

#include <csignal>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

char read_buffer[64 * 1024];

class Server {
public:
    Server(anyloop::EventLoop& loop, int listen_fd) : loop_(loop), listen_fd_(listen_fd) {
        acceptor_ = loop_.io(listen_fd_, anyloop::Io::read, [this](anyloop::Io) { accept_all(); });
    }

private:
    struct Connection {
        int fd;
        anyloop::IoWatcher watcher;
        std::vector<char> pending;
        std::size_t pending_offset = 0;
    };

    void accept_all() {
        for (int fd; (fd = bench::accept_next(listen_fd_)) >= 0;) {
            auto connection = std::make_unique<Connection>();
            connection->fd = fd;
            Connection* raw = connection.get();
            connection->watcher = loop_.io(fd, anyloop::Io::read, [this, raw](anyloop::Io) { on_ready(*raw); });
            connections_.emplace(fd, std::move(connection));
        }
    }

    void close_connection(Connection& connection) {
        const int fd = connection.fd;
        connections_.erase(fd);  // stops the watcher: safe inside its callback
        ::close(fd);
    }

    void on_ready(Connection& connection) {
        if (connection.pending.empty()) {
            const ssize_t n = ::read(connection.fd, read_buffer, sizeof read_buffer);
            if (n <= 0) {
                if (n == 0 || (errno != EAGAIN && errno != EINTR)) close_connection(connection);
                return;
            }
            const ssize_t written = ::send(connection.fd, read_buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL);
            if (written == n) return;
            if (written < 0 && errno != EAGAIN && errno != EINTR) {
                close_connection(connection);
                return;
            }
            const ssize_t taken = written < 0 ? 0 : written;
            connection.pending.assign(read_buffer + taken, read_buffer + n);
            connection.pending_offset = 0;
            connection.watcher.set_events(anyloop::Io::write);
            return;
        }
        const std::size_t left = connection.pending.size() - connection.pending_offset;
        const ssize_t written =
            ::send(connection.fd, connection.pending.data() + connection.pending_offset, left, MSG_NOSIGNAL);
        if (written < 0) {
            if (errno != EAGAIN && errno != EINTR) close_connection(connection);
            return;
        }
        connection.pending_offset += static_cast<std::size_t>(written);
        if (connection.pending_offset == connection.pending.size()) {
            connection.pending.clear();
            connection.watcher.set_events(anyloop::Io::read);
        }
    }

    anyloop::EventLoop& loop_;
    int listen_fd_;
    anyloop::IoWatcher acceptor_;
    std::unordered_map<int, std::unique_ptr<Connection>> connections_;
};

}  // namespace

int main(int argc, char** argv) {
    // --backend NAME is ours; the rest is the raw servers' command line.
    std::string backend;
    std::vector<char*> rest{argv[0]};
    for (int i = 1; i < argc; ++i) {
        if (std::string_view(argv[i]) == "--backend" && i + 1 < argc) backend = argv[++i];
        else rest.push_back(argv[i]);
    }
    const bench::ServerOptions options = bench::parse_server_options(static_cast<int>(rest.size()), rest.data());
    const int listen_fd = bench::listen_tcp(options);

    std::unique_ptr<anyloop::EventLoop> loop = backend.empty() ? anyloop::make_loop() : anyloop::make_loop(backend);
    Server server(*loop, listen_fd);
    anyloop::SignalWatcher term = loop->signal(SIGTERM, [&loop](int) { loop->stop(); });
    anyloop::SignalWatcher interrupt = loop->signal(SIGINT, [&loop](int) { loop->stop(); });

    bench::announce_listening(listen_fd);
    loop->run();
    return 0;
}
