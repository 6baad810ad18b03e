// echo_server — an echo server built on Handles.
//
//   echo_server [--backend NAME] [--host ADDR] [--port N]
//
// Listens on ADDR:N (default 127.0.0.1, port 0 = any free port), prints
// "listening on HOST:PORT" as its first line, and sends every byte back as
// it arrives, so line clients and raw clients alike are served. On SIGTERM
// or SIGINT it stops accepting, lets each connection flush what it still has
// queued, and exits 0.
#include <anyloop/backends/registry.hpp>
#include <anyloop/handle/handle.hpp>

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

using namespace anyloop;
using namespace std::chrono_literals;

namespace {

struct Arguments {
    std::string backend;  // empty: the default backend
    std::string host = "127.0.0.1";
    std::string port = "0";
};

Arguments parse_arguments(int argc, char** argv) {
    Arguments arguments;
    for (int i = 1; i < argc; ++i) {
        const std::string option = argv[i];
        if (i + 1 >= argc) throw std::invalid_argument("missing value after " + option);
        const std::string value = argv[++i];
        if (option == "--backend") arguments.backend = value;
        else if (option == "--host") arguments.host = value;
        else if (option == "--port") arguments.port = value;
        else throw std::invalid_argument("unknown option " + option);
    }
    return arguments;
}

// A non-blocking listening socket on host:port; returns it and the port
// the kernel chose.
int listen_on(const std::string& host, const std::string& port, std::uint16_t& bound_port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    addrinfo* address = nullptr;
    if (const int status = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &address); status != 0)
        throw std::runtime_error("bad address " + host + " port " + port + ": " + ::gai_strerror(status));
    const int fd = ::socket(address->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int on = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (fd < 0 || ::bind(fd, address->ai_addr, address->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
        const std::string reason = std::strerror(errno);
        ::freeaddrinfo(address);
        throw std::runtime_error("cannot listen on " + host + " port " + port + ": " + reason);
    }
    ::freeaddrinfo(address);
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
    bound_port = ntohs(local.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(local).sin6_port
                                                   : reinterpret_cast<sockaddr_in&>(local).sin_port);
    return fd;
}

}  // namespace

int main(int argc, char** argv) try {
    const Arguments arguments = parse_arguments(argc, argv);
    std::unique_ptr<EventLoop> loop = arguments.backend.empty() ? make_loop() : make_loop(arguments.backend);
    std::uint16_t port = 0;
    int listener = listen_on(arguments.host, arguments.port, port);
    const bool ipv6 = arguments.host.find(':') != std::string::npos;
    std::cout << "listening on " << (ipv6 ? "[" + arguments.host + "]" : arguments.host) << ":" << port
              << std::endl;  // endl flushes: scripts wait for this line
    std::cerr << "echo_server: backend " << loop->backend() << "\n";

    // The connections, by address. A Handle may be erased inside its own
    // callbacks: that is safe, and output it still had queued is written
    // out afterwards (linger).
    std::map<Handle*, std::unique_ptr<Handle>> connections;

    auto accept_some = [&] {
        // A bounded batch per readiness event, so that accepting cannot
        // starve the connections already open.
        for (int i = 0; i < 64; ++i) {
            const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;  // EAGAIN: no more for now (a TcpServer also handles EMFILE)
            // Backpressure: a client that sends but does not read makes us
            // stop reading from it once 1 MiB of echo waits for it.
            auto handle = std::make_unique<Handle>(*loop, fd, HandleOptions{.high_water_mark = 1 << 20});
            handle->on_read([](Handle& h) {
                h.push_write(h.read_buffer().view());  // queued, then flushed with one send
                h.read_buffer().clear();
            });
            handle->on_eof([&](Handle& h) {
                h.push_shutdown();  // half-close once the echo is out
                connections.erase(&h);
            });
            handle->on_error([&](Handle& h, std::error_code, const std::string& message, bool fatal) {
                std::cerr << "echo_server: " << message << "\n";
                if (fatal) connections.erase(&h);
            });
            connections.emplace(handle.get(), std::move(handle));
        }
    };
    IoWatcher acceptor = loop->io(listener, Io::read, [&](Io) { accept_some(); });

    // Graceful stop: no new connections; each open one is destroyed and so
    // lingers (for up to 10 s) until its queued output is written. run()
    // returns when nothing is left.
    SignalWatcher on_term;
    SignalWatcher on_int;
    auto stop = [&](int signo) {
        std::cerr << "echo_server: signal " << signo << ", closing " << connections.size() << " connections\n";
        acceptor.reset();
        ::close(std::exchange(listener, -1));
        for (auto& [pointer, handle] : connections) handle->set_linger(10s);
        connections.clear();
        on_term.reset();
        on_int.reset();
    };
    on_term = loop->signal(SIGTERM, stop);
    on_int = loop->signal(SIGINT, stop);

    loop->run();
    return 0;
} catch (const std::exception& error) {
    std::cerr << "echo_server: " << error.what() << "\n"
              << "usage: echo_server [--backend NAME] [--host ADDR] [--port N]\n";
    return 2;
}
