// tls_echo_server — echo_server over TLS.
//
//   tls_echo_server [--backend NAME] [--host ADDR] [--port N] --cert PEM [--key PEM]
//                   [--ca FILE [--verify-client]]
//
// Listens on ADDR:N (default 127.0.0.1, port 0 = any free port), prints
// "listening on HOST:PORT" as its first line, and sends every byte back over
// TLS as it arrives. --cert is the certificate chain (leaf first) and --key
// its private key (omit it when the key is in the --cert file). With --ca,
// clients are asked for a certificate signed by one of those CAs;
// --verify-client makes it required. On SIGTERM or SIGINT it stops
// accepting, lets each connection flush what it still has queued, and
// exits 0. A certificate or key it cannot use is reported on stderr with
// exit status 2, before anything listens.
//
// Try it with the test certificates (tests/tls/make_certs.sh DIR):
//
//   tls_echo_server --cert DIR/server.pem --key DIR/server.key --port 7000
//   openssl s_client -quiet -CAfile DIR/ca.pem -connect localhost:7000
#include "example_arguments.hpp"
#include "tls_example.hpp"

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
    examples::ServerArguments server;  // --backend, --host, --port
    std::string certificate;
    std::string key;  // empty: in the certificate file
    std::string ca;
    bool verify_client = false;
};

Arguments parse_arguments(int argc, char** argv) {
    Arguments arguments;
    arguments.server = examples::parse_server_arguments(argc, argv, [&](const std::string& option, const auto& value) {
        if (option == "--cert") arguments.certificate = value();
        else if (option == "--key") arguments.key = value();
        else if (option == "--ca") arguments.ca = value();
        else if (option == "--verify-client") arguments.verify_client = true;
        else return false;
        return true;
    });
    if (arguments.certificate.empty()) throw std::invalid_argument("--cert is required");
    if (arguments.verify_client && arguments.ca.empty())
        throw std::invalid_argument("--verify-client needs --ca (the CAs client certificates must come from)");
    return arguments;
}

// The server's TLS configuration, or nullptr once the file that is missing,
// unreadable or does not match has been reported.
std::shared_ptr<tls::TlsContext> make_context(const Arguments& arguments) {
    tls::TlsContextOptions options =
        examples::context_options(tls::TlsRole::server, arguments.certificate, arguments.key, arguments.ca);
    if (!arguments.ca.empty())
        options.client_certificates =
            arguments.verify_client ? tls::ClientCertificates::require : tls::ClientCertificates::request;
    return examples::create_tls_context("tls_echo_server", options);
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
    // First the configuration, so that a bad certificate is reported before
    // anyone could connect.
    const std::shared_ptr<tls::TlsContext> context = make_context(arguments);
    if (!context) return 2;
    std::unique_ptr<EventLoop> loop = arguments.server.make_loop();
    std::uint16_t port = 0;
    int listener = listen_on(arguments.server.host, arguments.server.port, port);
    std::cout << "listening on " << arguments.server.address(std::to_string(port))
              << std::endl;  // endl flushes: scripts wait for this line
    std::cerr << "tls_echo_server: backend " << loop->backend() << "\n";

    // Every connection is a Handle with TLS from the start: readers and
    // writers below see plaintext only. A client that stalls in the
    // handshake is dropped after 10 s (ETIMEDOUT).
    HandleOptions options;
    options.high_water_mark = 1 << 20;  // stop reading while 1 MiB of echo waits for a slow reader
    options.tls = TlsMode::accept;
    options.tls_ctx = context;
    options.tls_timeout = 10s;

    std::map<Handle*, std::unique_ptr<Handle>> connections;

    auto accept_some = [&] {
        // A bounded batch per readiness event, so that accepting cannot
        // starve the connections already open.
        for (int i = 0; i < 64; ++i) {
            const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;  // EAGAIN: no more for now
            auto handle = std::make_unique<Handle>(*loop, fd, options);
            handle->on_read([](Handle& h) {
                h.push_write(h.read_buffer().view());  // encrypted and sent when on_read returns
                h.read_buffer().clear();
            });
            // The client's close_notify (or a bare end of stream after it):
            // answer with ours once the echo is out, then forget the
            // connection; it lingers until its last record is written.
            handle->on_eof([&](Handle& h) {
                h.push_shutdown();
                connections.erase(&h);
            });
            // Handshake failures (a client that does not trust us, plaintext
            // sent to a TLS port, a missing client certificate) arrive here
            // as EPROTO with OpenSSL's reason; the server keeps serving others.
            handle->on_error([&](Handle& h, std::error_code, const std::string& message, bool fatal) {
                std::cerr << "tls_echo_server: " << message << "\n";
                if (fatal) connections.erase(&h);
            });
            connections.emplace(handle.get(), std::move(handle));
        }
    };
    IoWatcher acceptor = loop->io(listener, Io::read, [&](Io) { accept_some(); });

    // Graceful stop, as in echo_server: no new connections; each open one
    // sends close_notify after its queued records (so its client sees a
    // clean end, not a truncation), is destroyed, and lingers for up to
    // 10 s until that is written. run() returns when nothing is left.
    SignalWatcher on_term;
    SignalWatcher on_int;
    auto stop = [&](int signo) {
        std::cerr << "tls_echo_server: signal " << signo << ", closing " << connections.size() << " connections\n";
        acceptor.reset();
        ::close(std::exchange(listener, -1));
        // Moved out first: push_shutdown() may fail a connection at once,
        // and its on_error must not erase from the map being walked.
        auto closing = std::exchange(connections, {});
        for (auto& [pointer, handle] : closing) {
            handle->set_linger(10s);
            handle->push_shutdown();
        }
        closing.clear();
        on_term.reset();
        on_int.reset();
    };
    on_term = loop->signal(SIGTERM, stop);
    on_int = loop->signal(SIGINT, stop);

    loop->run();
    return 0;
} catch (const std::exception& error) {
    return examples::fail("tls_echo_server", error,
                          "[--backend NAME] [--host ADDR] [--port N] --cert PEM [--key PEM]"
                          " [--ca FILE [--verify-client]]");
}
