// Helpers for the Handle's TLS tests (tls_handle_test, tls_starttls_test,
// tls_peer_test, tls_bad_input_test): contexts over the test certificates, a
// record of what a Handle reported, readers (bytes, and lines that queue
// themselves again), a TLS echo server with its own accept loop, a recording
// relay, a TlsSession driven by hand over a raw socket (alone, or facing a
// client Handle), and a child process (the openssl command) with pipes the
// loop watches.
#pragma once

#include <anyloop/handle/handle.hpp>
#include <anyloop/tls/tls_context.hpp>
#include <anyloop/tls/tls_layer.hpp>
#include <anyloop/tls/tls_session.hpp>

#include "handle/handle_test_support.hpp"
#include "tls/tls_test_support.hpp"

#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

extern char** environ;

namespace anyloop::test::tls_handle {

using handle_support::connect_loopback;
using handle_support::Listener;
using handle_support::read_now;
using handle_support::readable_bytes;
using handle_support::set_nonblocking;
using handle_support::TcpPair;

// ---- contexts -------------------------------------------------------------

/// A server context for `certificate` (+ `key`; empty: the key is in the
/// certificate file), tweaked by `adjust`.
inline std::shared_ptr<tls::TlsContext> server_context(
    const std::string& certificate, const std::string& key,
    const std::function<void(tls::TlsContextOptions&)>& adjust = {}) {
    tls::TlsContextOptions options;
    options.role = tls::TlsRole::server;
    options.certificate_file = certificate;
    options.private_key_file = key;
    if (adjust) adjust(options);
    return tls::TlsContext::create(options);
}

/// The usual server: localhost / 127.0.0.1 / ::1, signed by ca.pem.
inline std::shared_ptr<tls::TlsContext> server_context() {
    const TestCertificates& certs = test_certificates();
    return server_context(certs.server_cert(), certs.server_key());
}

/// A client trusting `ca_file` (ca.pem unless given), tweaked by `adjust`.
inline std::shared_ptr<tls::TlsContext> client_context(
    std::string ca_file = {}, const std::function<void(tls::TlsContextOptions&)>& adjust = {}) {
    tls::TlsContextOptions options;
    options.role = tls::TlsRole::client;
    options.ca_file = ca_file.empty() ? test_certificates().ca() : std::move(ca_file);
    if (adjust) adjust(options);
    return tls::TlsContext::create(options);
}

inline HandleOptions tls_options(TlsMode mode, std::shared_ptr<tls::TlsContext> context, std::string peername = {}) {
    HandleOptions options;
    options.tls = mode;
    options.tls_ctx = std::move(context);
    options.peername = std::move(peername);
    // A test that ends with output queued must not leave a lingering writer
    // behind on the loop.
    options.linger = Duration::zero();
    return options;
}

// ---- what a Handle reported -----------------------------------------------

/// Counts the TLS and error callbacks of one Handle and keeps their messages.
struct Events {
    int starttls_ok = 0;
    int starttls_failed = 0;
    std::string starttls_message;
    int stoptls = 0;
    int errors = 0;
    int fatal_errors = 0;
    std::error_code error;
    std::string message;  // every error message, one per line
    int eofs = 0;

    /// Sets on_starttls and on_error (and on_eof unless `eof` is false).
    void watch(Handle& handle, bool eof = true) {
        handle.on_starttls([this](Handle&, bool success, const std::string& text) {
            ++(success ? starttls_ok : starttls_failed);
            if (!success) starttls_message = text;
        });
        handle.on_error([this](Handle&, std::error_code code, const std::string& text, bool fatal) {
            ++errors;
            if (fatal) ++fatal_errors;
            error = code;
            message += text + "\n";
        });
        if (eof) handle.on_eof([this](Handle&) { ++eofs; });
    }
    [[nodiscard]] bool failed() const { return errors > 0; }
};

// ---- readers ------------------------------------------------------------------

/// Sends every byte `handle` reads straight back.
inline void echo_bytes(Handle& handle) {
    handle.on_read([](Handle& h) {
        h.push_write(h.read_buffer().view());
        h.read_buffer().clear();
    });
}

/// Appends every byte `handle` reads to `received` (which must outlive the
/// Handle).
inline void collect_bytes(Handle& handle, std::string& received) {
    handle.on_read([&received](Handle& h) {
        received += h.read_buffer().view();
        h.read_buffer().clear();
    });
}

/// Reads lines on `handle` for as long as it lives, appending each to `lines`
/// (which must outlive the Handle).
inline void collect_lines(Handle& handle, std::vector<std::string>& lines) {
    handle.push_read(Reader::line([&lines](Handle& h, std::string_view line) {
        lines.emplace_back(line);
        collect_lines(h, lines);
    }));
}

/// Answers every line on `handle` with `prefix` + LINE + "\n".
inline void echo_lines(Handle& handle, const std::string& prefix = "echo: ") {
    handle.push_read(Reader::line([prefix](Handle& h, std::string_view line) {
        h.push_write(prefix + std::string(line) + "\n");
        echo_lines(h, prefix);
    }));
}

// ---- an echo server with an accept loop ------------------------------------

/// Accepts on 127.0.0.1 with the loop's io watcher and puts a TLS Handle
/// (tls = accept) on every connection. Each connection echoes lines as
/// "echo: LINE\n" and answers end of file with push_shutdown().
class TlsEchoServer {
public:
    struct Connection {
        std::unique_ptr<Handle> handle;
        Events events;
        std::vector<std::string> lines;
        std::function<void(Handle&, std::string_view)> echo;
    };

    TlsEchoServer(EventLoop& loop, std::shared_ptr<tls::TlsContext> context)
        : loop_(loop), context_(std::move(context)) {
        set_nonblocking(listener_.fd);
        watcher_ = loop_.io(listener_.fd, Io::read, [this](Io) { accept_all(); });
    }
    ~TlsEchoServer() { connections.clear(); }
    TlsEchoServer(const TlsEchoServer&) = delete;
    TlsEchoServer& operator=(const TlsEchoServer&) = delete;

    [[nodiscard]] std::uint16_t port() const { return listener_.port; }
    [[nodiscard]] Connection& last() { return *connections.back(); }

    std::vector<std::unique_ptr<Connection>> connections;

private:
    void accept_all() {
        for (;;) {
            const int fd = ::accept4(listener_.fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) return;  // EAGAIN: all taken
            auto connection = std::make_unique<Connection>();
            Connection* c = connection.get();
            c->handle = std::make_unique<Handle>(loop_, fd, tls_options(TlsMode::accept, context_));
            c->events.watch(*c->handle, false);
            c->handle->on_eof([c](Handle& handle) {
                ++c->events.eofs;
                handle.push_shutdown();
            });
            c->echo = [c](Handle& handle, std::string_view line) {
                c->lines.emplace_back(line);
                handle.push_write("echo: " + std::string(line) + "\n");
                handle.push_read(Reader::line(c->echo));
            };
            c->handle->push_read(Reader::line(c->echo));
            connections.push_back(std::move(connection));
        }
    }

    EventLoop& loop_;
    std::shared_ptr<tls::TlsContext> context_;
    Listener listener_;
    IoWatcher watcher_;
};

/// Whether a well-behaved TLS client (a Handle with `context`, verifying
/// `peername`) gets "ping" echoed by the server on `port` within two seconds.
/// `why` receives the client's errors.
inline bool echo_round_trip(EventLoop& loop, std::uint16_t port, std::shared_ptr<tls::TlsContext> context,
                            const std::string& peername, std::string* why = nullptr) {
    Handle client(loop, connect_loopback(port), tls_options(TlsMode::connect, std::move(context), peername));
    Events events;
    events.watch(client);
    std::string reply;
    client.push_write("ping\n");
    client.push_read(Reader::line([&](Handle&, std::string_view line) { reply = line; }));
    const bool done = run_until(
        loop, [&] { return !reply.empty() || events.failed(); }, std::chrono::seconds(2));
    if (why != nullptr) *why = events.message;
    return done && reply == "echo: ping" && events.starttls_ok == 1 && !events.failed();
}

// ---- a relay that records -----------------------------------------------------

/// Forwards bytes between two sockets (each a non-blocking fd it owns) on the
/// loop, recording each direction, and passes end of file on as a half-close.
class RecordingRelay {
public:
    RecordingRelay(EventLoop& loop, int left, int right) : left_{left}, right_{right} {
        left_.watcher = loop.io(left, Io::read, [this](Io events) { on_event(left_, right_, events); });
        right_.watcher = loop.io(right, Io::read, [this](Io events) { on_event(right_, left_, events); });
    }
    ~RecordingRelay() {
        left_.watcher.reset();
        right_.watcher.reset();
        ::close(left_.fd);
        ::close(right_.fd);
    }
    RecordingRelay(const RecordingRelay&) = delete;
    RecordingRelay& operator=(const RecordingRelay&) = delete;

    /// Everything that went left → right and right → left.
    [[nodiscard]] const std::string& left_to_right() const { return left_.recorded; }
    [[nodiscard]] const std::string& right_to_left() const { return right_.recorded; }

private:
    struct Side {
        int fd;
        IoWatcher watcher{};
        std::string recorded{};  // read from this side
        std::string pending{};   // read from the other side, not yet written here
        bool eof = false;        // this side reached end of file
    };

    void on_event(Side& from, Side& to, Io events) {
        if (has(events, Io::write)) write_pending(from);
        if (has(events, Io::read) && !from.eof) {
            char buffer[64 * 1024];
            for (;;) {
                const ssize_t n = ::read(from.fd, buffer, sizeof buffer);
                if (n > 0) {
                    from.recorded.append(buffer, static_cast<std::size_t>(n));
                    to.pending.append(buffer, static_cast<std::size_t>(n));
                    continue;
                }
                if (n < 0 && errno == EINTR) continue;
                if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) from.eof = true;  // end or reset
                break;
            }
            write_pending(to);
        }
        update(from);
        update(to);
    }
    // Writes what waits for `side`; passes the other side's EOF on once done.
    void write_pending(Side& side) {
        while (!side.pending.empty()) {
            const ssize_t n = ::send(side.fd, side.pending.data(), side.pending.size(), MSG_NOSIGNAL);
            if (n <= 0) break;
            side.pending.erase(0, static_cast<std::size_t>(n));
        }
        Side& other = &side == &left_ ? right_ : left_;
        if (side.pending.empty() && other.eof) ::shutdown(side.fd, SHUT_WR);
    }
    void update(Side& side) {
        const Io events = (side.eof ? Io::none : Io::read) | (side.pending.empty() ? Io::none : Io::write);
        if (events == Io::none) {
            side.watcher.stop();
            return;
        }
        side.watcher.set_events(events);
        if (!side.watcher.active()) side.watcher.start();
    }

    Side left_;
    Side right_;
};

// ---- a TlsSession over a raw socket, driven by the test ----------------------

/// The far end of a Handle as a bare TlsSession on a raw socket, for tests
/// that control exactly which bytes go on the wire and when.
class SessionPeer {
public:
    SessionPeer(std::shared_ptr<tls::TlsContext> context, int fd, std::string peer_name = {})
        : session(std::move(context), tls::TlsSessionOptions{.peer_name = std::move(peer_name)}), fd_(fd) {
        const int on = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);  // one byte, one segment
    }

    /// Sends all pending ciphertext one byte per write(), letting the loop
    /// take each byte (the Handle on `handle_fd` reads it alone) before the next.
    void send_bytewise(EventLoop& loop, int handle_fd) {
        const std::vector<std::byte> bytes = session.take_ciphertext();
        for (const std::byte byte : bytes) {
            write_all(fd_, &byte, 1);
            handle_support::run_until_drained(loop, handle_fd);
            ++bytes_sent;
        }
    }
    /// Sends all pending ciphertext at once.
    void send_all() {
        const std::vector<std::byte> bytes = session.take_ciphertext();
        std::size_t offset = 0;
        while (offset < bytes.size()) {
            const ssize_t n = ::send(fd_, bytes.data() + offset, bytes.size() - offset, MSG_NOSIGNAL);
            if (n > 0)
                offset += static_cast<std::size_t>(n);
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                return;  // the peer is gone
        }
    }
    /// Feeds what the socket holds now and decrypts it into `plaintext`;
    /// bytes after the peer's close_notify go to `after_close`. Returns
    /// whether the socket reached end of file.
    bool receive() {
        const std::string bytes = read_now(fd_);
        ciphertext_received += bytes;
        std::size_t offset = 0;
        for (;;) {
            const std::size_t taken = session.feed_ciphertext(
                {reinterpret_cast<const std::byte*>(bytes.data()) + offset, bytes.size() - offset});
            offset += taken;
            char buffer[16 * 1024];
            std::size_t decrypted = 0;
            std::size_t got;
            while ((got = session.read_plaintext({reinterpret_cast<std::byte*>(buffer), sizeof buffer})) > 0) {
                plaintext.append(buffer, got);
                decrypted += got;
            }
            if (offset == bytes.size() || session.failed() || session.peer_closed()) break;
            if (taken == 0 && decrypted == 0) break;
        }
        if (session.peer_closed()) {
            const std::vector<std::byte> behind = session.take_bytes_after_close();
            after_close.append(reinterpret_cast<const char*>(behind.data()), behind.size());
            after_close.append(bytes, offset);
        }
        char probe;
        const ssize_t n = ::recv(fd_, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) socket_eof = true;
        return socket_eof;
    }
    /// Receives whenever the socket is readable (and, with auto_send, sends
    /// what the session produced), until end of file.
    void watch(EventLoop& loop) {
        watcher_ = loop.io(fd_, Io::read, [this](Io) {
            if (receive()) watcher_.stop();
            if (auto_send) send_all();
        });
    }
    void write(std::string_view text) {
        const std::size_t taken =
            session.write_plaintext({reinterpret_cast<const std::byte*>(text.data()), text.size()});
        ASSERT_EQ(taken, text.size());
    }

    tls::TlsSession session;
    std::string plaintext;
    std::string ciphertext_received;
    std::string after_close;
    std::size_t bytes_sent = 0;
    bool socket_eof = false;
    bool auto_send = false;

private:
    int fd_;
    IoWatcher watcher_;
};

/// A client Handle (tls = connect, verifying "localhost") on one end of a
/// TcpPair, and a SessionPeer server the test drives on the other. `events`
/// watches the Handle and `lines` collects the lines it reads. Tests take
/// the parts apart: `auto& [sockets, client, events, lines, server] = pair;`.
struct ClientAndSessionServer {
    explicit ClientAndSessionServer(EventLoop& loop)
        : client(loop, sockets.take_a(), tls_options(TlsMode::connect, client_context(), "localhost")),
          server(server_context(), sockets.b) {
        events.watch(client);
        collect_lines(client, lines);
    }

    /// Lets the server answer whatever arrives by itself and runs until both
    /// sides finished the handshake (true) or the client failed or 2 s passed.
    bool handshake(EventLoop& loop) {
        server.auto_send = true;
        server.watch(loop);
        return run_until(
            loop, [&] { return (events.starttls_ok == 1 && server.session.handshake_done()) || events.failed(); },
            std::chrono::seconds(2));
    }

    TcpPair sockets;
    Handle client;
    Events events;
    std::vector<std::string> lines;
    SessionPeer server;
};

/// The mirror image: a server Handle (tls = accept) that answers every line
/// with "echo: LINE", watched by `events`, and a SessionPeer client
/// (verifying "localhost") the test drives. Taken apart as
/// `auto& [sockets, server, events, client] = pair;`.
struct ServerAndSessionClient {
    explicit ServerAndSessionClient(EventLoop& loop)
        : server(loop, sockets.take_b(), tls_options(TlsMode::accept, server_context())),
          client(client_context(), sockets.a, "localhost") {
        events.watch(server);
        echo_lines(server);
    }

    TcpPair sockets;
    Handle server;
    Events events;
    SessionPeer client;
};

// ---- a child process with pipes ----------------------------------------------

/// Runs a program (the openssl command) with its stdin, stdout and stderr on
/// pipes. The parent's ends are non-blocking; the loop watches stdout and
/// stderr through RawPeers. Killed and reaped on destruction.
class ChildProcess {
public:
    explicit ChildProcess(EventLoop& loop, const std::vector<std::string>& arguments) {
        // A child that exits early must not kill the test with SIGPIPE.
        ::signal(SIGPIPE, SIG_IGN);
        int in[2], out[2], err[2];
        if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
            throw std::system_error(errno, std::generic_category(), "pipe2");
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, in[0], 0);
        posix_spawn_file_actions_adddup2(&actions, out[1], 1);
        posix_spawn_file_actions_adddup2(&actions, err[1], 2);
        std::vector<char*> argv;
        for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
        argv.push_back(nullptr);
        spawn_error = ::posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        ::close(in[0]);
        ::close(out[1]);
        ::close(err[1]);
        stdin_fd_ = in[1];
        stdout_fd_ = out[0];
        stderr_fd_ = err[0];
        set_nonblocking(stdin_fd_);
        set_nonblocking(stdout_fd_);
        set_nonblocking(stderr_fd_);
        if (spawn_error != 0) pid_ = -1;
        out_.emplace(loop, stdout_fd_);
        err_.emplace(loop, stderr_fd_);
        // Nothing wakes the loop when the child exits after closing its
        // pipes: look now and then, so a wait for finished() ends promptly.
        reaper_ = loop.timer(std::chrono::milliseconds(5), std::chrono::milliseconds(5), [this] {
            if (exited()) reaper_.stop();
        });
        reaper_.set_keepalive(false);
    }
    ~ChildProcess() {
        reaper_.reset();
        if (pid_ > 0 && !exited()) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, &status_, 0);
        }
        out_.reset();
        err_.reset();
        close_stdin();
        ::close(stdout_fd_);
        ::close(stderr_fd_);
    }
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    [[nodiscard]] bool started() const { return pid_ > 0; }
    void write_stdin(std::string_view text) { write_all(stdin_fd_, text.data(), text.size()); }
    void close_stdin() {
        if (stdin_fd_ >= 0) ::close(stdin_fd_);
        stdin_fd_ = -1;
    }
    /// Whether the child has exited (reaps it; see exit_status()).
    bool exited() {
        if (pid_ <= 0) return true;
        if (reaped_) return true;
        if (::waitpid(pid_, &status_, WNOHANG) == pid_) reaped_ = true;
        return reaped_;
    }
    /// The exit code once exited() (128 + signal for a killed child).
    [[nodiscard]] int exit_status() const {
        return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
    }
    [[nodiscard]] const std::string& out() const { return out_->received; }
    [[nodiscard]] const std::string& err() const { return err_->received; }
    /// Both output pipes reached end of file and the child was reaped.
    bool finished() { return out_->done() && err_->done() && exited(); }

    int spawn_error = 0;

private:
    pid_t pid_ = -1;
    int status_ = 0;
    bool reaped_ = false;
    int stdin_fd_ = -1;
    int stdout_fd_ = -1;
    int stderr_fd_ = -1;
    std::optional<handle_support::RawPeer> out_;
    std::optional<handle_support::RawPeer> err_;
    TimerWatcher reaper_;
};

}  // namespace anyloop::test::tls_handle
