// raw_echo_asio — a hand-written standalone-Asio echo server in the shape
// Asio users write: a session object kept alive by the shared_ptr its
// handlers capture, async_read_some into the session's buffer, async_write
// of what arrived, then read again. The io_context gets concurrency hint 1
// (one thread runs it). SIGTERM/SIGINT stop it through a signal_set.
//
// Usage: raw_echo_asio [--host ADDR] [--port N]
#include "server_common.hpp"

#include <asio.hpp>

#include <array>
#include <csignal>
#include <memory>

namespace {

using asio::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
public:
    explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

    void read() {
        socket_.async_read_some(asio::buffer(buffer_),
                                [self = shared_from_this()](const asio::error_code& error, std::size_t size) {
                                    if (!error) self->write(size);
                                });
    }

private:
    void write(std::size_t size) {
        asio::async_write(socket_, asio::buffer(buffer_.data(), size),
                          [self = shared_from_this()](const asio::error_code& error, std::size_t /*written*/) {
                              if (!error) self->read();
                          });
    }

    tcp::socket socket_;
    std::array<char, 64 * 1024> buffer_;
};

void accept(tcp::acceptor& acceptor) {
    acceptor.async_accept([&acceptor](const asio::error_code& error, tcp::socket socket) {
        if (!error) {
            socket.set_option(tcp::no_delay(true));
            std::make_shared<Session>(std::move(socket))->read();
        }
        accept(acceptor);
    });
}

}  // namespace

int main(int argc, char** argv) {
    const bench::ServerOptions options = bench::parse_server_options(argc, argv);
    const int listen_fd = bench::listen_tcp(options);
    std::signal(SIGPIPE, SIG_IGN);

    asio::io_context context(1);
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&address), &length);
    tcp::acceptor acceptor(context);
    acceptor.assign(address.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), listen_fd);
    accept(acceptor);

    asio::signal_set stop_signals(context, SIGTERM, SIGINT);
    stop_signals.async_wait([&context](const asio::error_code&, int) { context.stop(); });

    bench::announce_listening(listen_fd);
    context.run();
    return 0;
}
