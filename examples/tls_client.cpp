// tls_client — a TLS client for the terminal and for scripts, like
// `openssl s_client -quiet`.
//
//   tls_client HOST PORT [--backend NAME] [--ca FILE] [--peername NAME]
//              [--cert PEM [--key PEM]] [--insecure]
//
// Connects to HOST:PORT, verifies the server's certificate (against the CAs
// in --ca, otherwise the system store) and that it was issued for --peername
// (default: HOST, a name or an IP address), then sends standard input to the
// server and prints what comes back, byte for byte. --cert and --key present
// a client certificate; --insecure skips verification altogether.
//
// Exits 0 when the server closes the connection, or when standard input
// ended, the server then answered our close_notify with its own end of
// stream (which it does once its replies are out), or 10 s passed without it.
// A TLS failure — the certificate does not verify, the name does not match,
// the server refuses us — prints OpenSSL's reason to stderr and exits 1;
// bad arguments or an unusable --cert/--key/--ca exit 2.
#include "example_arguments.hpp"
#include "tls_example.hpp"

#include <anyloop/handle/connect.hpp>
#include <anyloop/handle/handle.hpp>
#include <anyloop/tls/tls_layer.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

using namespace anyloop;
using namespace std::chrono_literals;

namespace {

struct Arguments {
    std::string host;
    std::uint16_t port = 0;
    std::string backend;  // empty: the default backend
    std::string ca;       // empty: the system store
    std::string peername;  // empty: the host
    std::string certificate;
    std::string key;  // empty: in the certificate file
    bool insecure = false;
};

Arguments parse_arguments(int argc, char** argv) {
    Arguments arguments;
    int positional = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string option = argv[i];
        if (option == "--insecure") {
            arguments.insecure = true;
        } else if (option.starts_with("--")) {
            if (i + 1 >= argc) throw std::invalid_argument("missing value after " + option);
            const std::string value = argv[++i];
            if (option == "--backend") arguments.backend = value;
            else if (option == "--ca") arguments.ca = value;
            else if (option == "--peername") arguments.peername = value;
            else if (option == "--cert") arguments.certificate = value;
            else if (option == "--key") arguments.key = value;
            else throw std::invalid_argument("unknown option " + option);
        } else if (positional == 0) {
            arguments.host = option;
            ++positional;
        } else if (positional == 1) {
            const unsigned long port = std::stoul(option);
            if (port == 0 || port > 65535) throw std::invalid_argument("bad port " + option);
            arguments.port = static_cast<std::uint16_t>(port);
            ++positional;
        } else {
            throw std::invalid_argument("unexpected argument " + option);
        }
    }
    if (positional != 2) throw std::invalid_argument("expected HOST and PORT");
    if (!arguments.key.empty() && arguments.certificate.empty()) throw std::invalid_argument("--key needs --cert");
    return arguments;
}

// The client's TLS configuration, or nullptr once the file that is missing,
// unreadable or does not match has been reported.
std::shared_ptr<tls::TlsContext> make_context(const Arguments& arguments) {
    tls::TlsContextOptions options =
        examples::context_options(tls::TlsRole::client, arguments.certificate, arguments.key, arguments.ca);
    options.use_system_ca = arguments.ca.empty();
    options.verify_peer = !arguments.insecure;
    return examples::create_tls_context("tls_client", options);
}

}  // namespace

int main(int argc, char** argv) try {
    const Arguments arguments = parse_arguments(argc, argv);
    const std::shared_ptr<tls::TlsContext> context = make_context(arguments);
    if (!context) return 2;
    std::unique_ptr<EventLoop> loop = examples::make_loop(arguments.backend);

    std::unique_ptr<Handle> server;  // the TLS connection
    std::unique_ptr<Handle> input;   // standard input
    TimerWatcher give_up;            // bounds the wait for the server's end after ours
    int status = 0;

    // Destroying the Handles and the timer ends the program: nothing keeps
    // the loop alive any more.
    auto finish = [&] {
        give_up.reset();
        input.reset();
        server.reset();
    };
    bool input_done = false;

    // After the end of standard input: close_notify once what we sent is
    // out (after the handshake, if it is still running), then wait
    // (boundedly) for the server to end its side.
    auto shut_down_if_done = [&] {
        if (!input_done || !server || give_up) return;
        server->push_shutdown();
        give_up = loop->timer(10s, [&] {
            std::cerr << "tls_client: the server did not close within 10 s after the end of input\n";
            finish();
        });
    };
    auto input_ended = [&] {
        input.reset();
        input_done = true;
        shut_down_if_done();
    };

    auto on_connected = [&](std::unique_ptr<Handle> connection, std::error_code, const std::string& message) {
        if (!connection) {
            std::cerr << "tls_client: " << message << "\n";
            status = 1;
            return;
        }
        server = std::move(connection);
        // TLS failures come here as EPROTO with OpenSSL's reason, e.g.
        // "TLS: certificate verify failed: hostname mismatch (peer name 'x')".
        server->on_error([&](Handle&, std::error_code, const std::string& text, bool fatal) {
            std::cerr << "tls_client: " << text << "\n";
            if (fatal) {
                status = 1;
                finish();
            }
        });
        server->on_starttls([&](Handle& h, bool success, const std::string&) {
            if (!success) return;  // on_error follows with the reason
            if (const tls::TlsSession* session = tls::tls_session(h))
                std::cerr << "tls_client: " << session->protocol_version() << " " << session->cipher()
                          << (session->peer_certificate_verified()
                                  ? ", server certificate " + session->peer_certificate_subject() + " verified"
                                  : std::string(", server certificate NOT verified"))
                          << "\n";
        });
        server->on_read([](Handle& h) {
            const std::string_view bytes = h.read_buffer().view();
            std::fwrite(bytes.data(), 1, bytes.size(), stdout);
            std::fflush(stdout);
            h.read_buffer().clear();
        });
        // The server's close_notify or end of stream: nothing more will come.
        server->on_eof([&](Handle&) { finish(); });

        // Standard input, sent as it arrives (queued until the handshake is
        // done). A regular file or /dev/null cannot be watched by every
        // backend (epoll refuses them) and never blocks: read it at once. A
        // pipe or terminal gets a Handle of its own.
        struct stat info {};
        const bool watchable = ::fstat(STDIN_FILENO, &info) == 0 &&
                               (S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode) || ::isatty(STDIN_FILENO));
        if (!watchable) {
            char buffer[64 * 1024];
            for (ssize_t n; (n = ::read(STDIN_FILENO, buffer, sizeof buffer)) != 0;) {
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) break;
                server->push_write(std::string_view(buffer, static_cast<std::size_t>(n)));
            }
            input_ended();
            return;
        }
        // A duplicate, so that closing the Handle leaves fd 0 alone.
        input = std::make_unique<Handle>(*loop, ::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3));
        input->on_read([&](Handle& h) {
            server->push_write(h.read_buffer().view());
            h.read_buffer().clear();
        });
        input->on_eof([&](Handle&) { input_ended(); });
        input->on_error([&](Handle&, std::error_code, const std::string& text, bool fatal) {
            std::cerr << "tls_client: standard input: " << text << "\n";
            if (fatal) input_ended();
        });
    };

    ConnectOptions options;
    options.handle.tls = TlsMode::connect;
    options.handle.tls_ctx = context;
    options.handle.peername = arguments.peername;  // empty: tcp_connect uses the host
    options.handle.tls_timeout = 30s;

    const int stdin_flags = ::fcntl(STDIN_FILENO, F_GETFL);
    ConnectRequest request = tcp_connect(*loop, arguments.host, arguments.port, options, on_connected);
    loop->run();
    // The Handle made the shared file description non-blocking; the shell
    // that started us shares it too.
    if (stdin_flags >= 0) ::fcntl(STDIN_FILENO, F_SETFL, stdin_flags);
    return status;
} catch (const std::exception& error) {
    return examples::fail(
        "tls_client", error,
        "HOST PORT [--backend NAME] [--ca FILE] [--peername NAME] [--cert PEM [--key PEM]] [--insecure]");
}
