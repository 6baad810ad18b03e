// raw_echo_tls_epoll — the TLS baseline: raw_echo_epoll with OpenSSL on the
// socket itself (SSL_set_fd), the way a hand-written non-blocking TLS server
// is usually built.
//
// Level-triggered epoll; each connection's SSL object reads and writes its
// non-blocking socket directly. SSL_accept, SSL_read and SSL_write report
// SSL_ERROR_WANT_READ / WANT_WRITE when the socket has nothing to give or no
// room, and the connection then waits for EPOLLIN / EPOLLOUT and calls the
// same function again. Read-ahead is on, so one read() takes every record
// the socket holds; records OpenSSL buffered beyond the first are decrypted
// at once (SSL_has_pending), not left waiting for a readiness event that
// would never come. The decrypted bytes are encrypted straight back; only
// when the socket takes part of a write does the rest go into the
// connection's own buffer (and reading stops until it is out).
//
// Usage: raw_echo_tls_epoll [--host ADDR] [--port N] --cert PEM [--key PEM]
#include "server_common.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>

#include <vector>

namespace {

struct Connection {
    int fd;
    SSL* ssl;
    bool handshaking = true;
    std::uint32_t events = EPOLLIN;  // what the epoll set watches for it
    std::vector<char> pending;       // plaintext SSL_write has not taken yet
};

char read_buffer[64 * 1024];

void close_connection(Connection* connection) {
    if (!connection->handshaking) SSL_shutdown(connection->ssl);  // close_notify, best effort
    SSL_free(connection->ssl);
    ::close(connection->fd);  // also removes it from the epoll set
    delete connection;
}

void watch(int epoll_fd, int op, Connection* connection, std::uint32_t events) {
    if (op == EPOLL_CTL_MOD && connection->events == events) return;  // a WANT_READ while reading, say
    connection->events = events;
    epoll_event event{};
    event.events = events;
    event.data.ptr = connection;
    ::epoll_ctl(epoll_fd, op, connection->fd, &event);
}

// After an SSL call returned `result` <= 0: waits for what it wants and
// returns true, or returns false when the connection is over.
bool wait_for(int epoll_fd, Connection* connection, int result) {
    switch (SSL_get_error(connection->ssl, result)) {
        case SSL_ERROR_WANT_READ: watch(epoll_fd, EPOLL_CTL_MOD, connection, EPOLLIN); return true;
        case SSL_ERROR_WANT_WRITE: watch(epoll_fd, EPOLL_CTL_MOD, connection, EPOLLOUT); return true;
        default: ERR_clear_error(); return false;  // close_notify, EOF, reset or a TLS error
    }
}

// Encrypts and writes `data` (partial writes are on: SSL_write may take a
// prefix); keeps what it did not take. False: the connection is over.
bool echo(int epoll_fd, Connection* connection, const char* data, std::size_t size) {
    while (size > 0) {
        const int written = SSL_write(connection->ssl, data, static_cast<int>(size));
        if (written <= 0) {
            // The same bytes must be offered again; SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
            // allows them to come from the connection's buffer.
            connection->pending.assign(data, data + size);
            return wait_for(epoll_fd, connection, written);
        }
        data += written;
        size -= static_cast<std::size_t>(written);
    }
    return true;
}

// Decrypts what arrived and echoes it, record by record, while OpenSSL
// holds more; the socket's level-triggered readiness brings us back for
// anything still in the kernel.
bool on_readable(int epoll_fd, Connection* connection) {
    do {
        const int n = SSL_read(connection->ssl, read_buffer, sizeof read_buffer);
        if (n <= 0) return wait_for(epoll_fd, connection, n);
        if (!echo(epoll_fd, connection, read_buffer, static_cast<std::size_t>(n))) return false;
        if (!connection->pending.empty()) return true;  // blocked: read again once it is out
    } while (SSL_has_pending(connection->ssl));
    return true;
}

bool on_ready(int epoll_fd, Connection* connection) {
    if (connection->handshaking) {
        const int result = SSL_accept(connection->ssl);
        if (result <= 0) return wait_for(epoll_fd, connection, result);
        connection->handshaking = false;
        watch(epoll_fd, EPOLL_CTL_MOD, connection, EPOLLIN);
        // The client's first record may have come with its Finished message.
        return on_readable(epoll_fd, connection);
    }
    if (!connection->pending.empty()) {
        std::vector<char> rest = std::move(connection->pending);
        connection->pending.clear();
        if (!echo(epoll_fd, connection, rest.data(), rest.size())) return false;
        if (!connection->pending.empty()) return true;
        watch(epoll_fd, EPOLL_CTL_MOD, connection, EPOLLIN);
    }
    return on_readable(epoll_fd, connection);
}

void accept_all(int epoll_fd, int listen_fd, SSL_CTX* context) {
    for (int fd; (fd = bench::accept_next(listen_fd)) >= 0;) {
        SSL* ssl = SSL_new(context);
        if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
            SSL_free(ssl);
            ::close(fd);
            continue;
        }
        SSL_set_accept_state(ssl);
        watch(epoll_fd, EPOLL_CTL_ADD, new Connection{fd, ssl, true, EPOLLIN, {}}, EPOLLIN);
    }
}

SSL_CTX* make_context(const char* certificate, const char* key) {
    SSL_CTX* context = SSL_CTX_new(TLS_server_method());
    if (context == nullptr) bench::die("SSL_CTX_new", ENOMEM);
    SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
    SSL_CTX_set_mode(context, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(context, 1);
    if (SSL_CTX_use_certificate_chain_file(context, certificate) != 1 ||
        SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(context) != 1) {
        char reason[256];
        ERR_error_string_n(ERR_get_error(), reason, sizeof reason);
        std::fprintf(stderr, "certificate %s, key %s: %s\n", certificate, key, reason);
        std::exit(2);
    }
    return context;
}

}  // namespace

int main(int argc, char** argv) {
    // --cert and --key here; the rest is the common command line.
    const char* certificate = nullptr;
    const char* key = nullptr;
    std::vector<char*> common{argv[0]};
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if ((arg == "--cert" || arg == "--key") && i + 1 < argc) (arg == "--cert" ? certificate : key) = argv[++i];
        else common.push_back(argv[i]);
    }
    if (certificate == nullptr) {
        std::fprintf(stderr, "usage: %s [--host ADDR] [--port N] --cert PEM [--key PEM]\n", argv[0]);
        return 2;
    }
    // OpenSSL's socket BIO writes with write(), not send(MSG_NOSIGNAL): a
    // peer that went away must cost an EPIPE, not the process.
    std::signal(SIGPIPE, SIG_IGN);
    SSL_CTX* context = make_context(certificate, key != nullptr ? key : certificate);
    const bench::ServerOptions options = bench::parse_server_options(static_cast<int>(common.size()), common.data());
    const int listen_fd = bench::listen_tcp(options);

    bench::run_epoll_server(
        listen_fd, [&](int epoll_fd) { accept_all(epoll_fd, listen_fd, context); },
        [](int epoll_fd, void* tag) {
            // A connection is closed only on its own event, and an fd
            // appears once per batch, so no later entry points at it.
            auto* connection = static_cast<Connection*>(tag);
            if (!on_ready(epoll_fd, connection)) close_connection(connection);
        });
    SSL_CTX_free(context);
    return 0;
}
