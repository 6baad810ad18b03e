// anyloop/tcp/server.hpp — TcpServer: accept connections on one or many
// addresses and serve each through a Connection that turns bytes into
// records. POE::Component::Server::TCP and Net::Server in C++ idiom.
//
//     ServerOptions options;
//     options.listeners = {{.address = "127.0.0.1:7000"}};
//     TcpServer server(*loop, std::move(options));      // line records both ways
//     server.on_input([](Connection& connection, std::string_view line) {
//         connection.send(line);                          // echo each line
//     });
//     server.start();
//     server.handle_signals();                          // SIGTERM / SIGINT: graceful
//     loop->run();                                      // returns once shut down
//
// Threads. Without workers everything runs on the loop given to the
// constructor. With `workers = N` the server runs N threads, each with a
// loop of its own (ServerOptions::worker_loop) and its own listening
// sockets on the same ports (SO_REUSEPORT; a unix socket is shared); the
// connection callbacks then run on those threads, so they must be
// thread-safe with respect to anything they share. The connection count,
// the concurrency limit, serial numbers and shutdown span all workers. The
// TcpServer object itself (its methods and on_finished) belongs to the
// constructor's loop thread.
//
// Lifetime. A started server keeps its loop alive until a shutdown has
// finished, even while accepting is paused. Destroy the server before its
// loop; destroying a running server closes every connection at once (no
// callback runs) and joins its workers.
#pragma once

#include <anyloop/core/event_loop.hpp>
#include <anyloop/handle/handle.hpp>
#include <anyloop/tcp/access.hpp>
#include <anyloop/tcp/filter.hpp>
#include <anyloop/tcp/log.hpp>

#include <sys/socket.h>

#include <any>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace anyloop::tcp {

namespace detail {
class ServerCore;
struct ListenSocket;
struct ServerShared;
struct WorkerGroup;
}  // namespace detail

/// One address to listen on and how to treat what arrives there.
struct ListenerOptions {
    /// "host:port", "[v6 address]:port", "port" (every IPv4 interface) or
    /// "unix:/path". Port 0 picks a free port; TcpServer::addresses() tells
    /// which. A host name is resolved and each of its addresses is bound.
    std::string address;
    /// The listen() backlog: connections the kernel holds while the server
    /// does not accept (at the concurrency limit, say).
    int backlog = 1024;
    /// Each connection starts with a PROXY protocol header (v1 or v2), as
    /// sent by HAProxy's send-proxy / send-proxy-v2: the client address it
    /// carries replaces the balancer's everywhere, access rules included. A
    /// missing or malformed header closes the connection with a log line.
    bool proxy_protocol = false;
    /// TLS on this listener: a server anyloop::tls::TlsContext. Every
    /// connection then starts with a TLS handshake (after the PROXY header,
    /// if any) and the callbacks see plaintext. on_connected runs when the
    /// connection is accepted; output sent before the handshake finished
    /// waits for it, and a failed handshake is an error (EPROTO with
    /// OpenSSL's reason) that closes the connection. HandleOptions::tls_timeout
    /// (ServerOptions::handle) bounds the handshake.
    std::shared_ptr<TlsLayerFactory> tls_ctx{};
};

/// The settings of a TcpServer.
struct ServerOptions {
    std::vector<ListenerOptions> listeners;

    /// Connections served at once; -1 is unlimited, 0 pauses accepting. At
    /// the limit the server stops watching its listening sockets, so new
    /// clients wait in the kernel's backlog. Shared by all workers.
    int concurrency = -1;
    /// 0 or 1: serve on the constructor's loop. N > 1: N worker threads,
    /// each running a loop made by `worker_loop`.
    unsigned workers = 0;
    /// Makes a worker's loop. Default: a new loop of the server loop's
    /// backend (make_loop(loop.backend())).
    std::function<std::unique_ptr<EventLoop>()> worker_loop;

    /// A connection that completes no input record and makes no progress
    /// with its output for this long is closed: a peer trickling one byte
    /// at a time cannot hold a slot forever. 0 turns it off.
    Duration idle_timeout{};
    /// The longest wait for a PROXY protocol header.
    Duration proxy_header_timeout = std::chrono::seconds(10);
    /// After shutdown(), how long a connection may take to flush its
    /// output before it is closed regardless.
    Duration shutdown_timeout = std::chrono::seconds(30);
    /// After accept() failed for want of descriptors (EMFILE, ENFILE) or
    /// kernel memory, how long accepting pauses before it is tried again
    /// (sooner when a connection closes).
    Duration accept_pause = std::chrono::milliseconds(100);

    /// Which IP clients may connect (unix socket clients always may);
    /// checked right after accept(), before anything is allocated for the
    /// connection (after the header with the PROXY protocol). A refused
    /// client is closed at once and logged at notice level.
    AccessRules access;
    /// Look up each IP client's host name (getnameinfo) so that allow and
    /// deny regexes match it too, and Connection::remote_host() tells it.
    /// Net::Server's reverse_lookups. The lookup blocks the loop thread:
    /// immediate for /etc/hosts names, possibly long with DNS.
    bool reverse_lookups = false;

    /// Turns input bytes into records; cloned for every connection.
    /// Default: LineFilter ("\n" or "\r\n" in, "\n" out).
    std::shared_ptr<const Filter> input_filter;
    /// Turns records given to Connection::send into bytes; cloned for
    /// every connection. Default: a clone of the input filter.
    std::shared_ptr<const Filter> output_filter;

    /// The settings of every connection's Handle.
    HandleOptions handle{};

    /// Where log lines go (default stderr_log_sink()) and from which level
    /// down. With workers the sink is called from their threads.
    LogSink log_sink;
    LogLevel log_level = LogLevel::notice;
};

/// Counters over the server's life, summed over its workers.
struct ServerStats {
    std::uint64_t accepted = 0;  ///< connections that reached the callbacks
    std::uint64_t denied = 0;    ///< refused by the access rules
    /// Closed at once for want of descriptors, or because the loop could
    /// not watch them (select past FD_SETSIZE), or a bad PROXY header.
    std::uint64_t dropped = 0;
};

/// What introspection reports about one open connection.
struct ConnectionInfo {
    std::uint64_t serial = 0;
    std::string address;
    std::uint16_t port = 0;
};

/// One client connection of a TcpServer. The server owns it; callbacks
/// receive it by reference, and it stays valid until the disconnected
/// callback has returned. Keep its serial() rather than a pointer to find
/// it later. Methods are for the thread of the loop that serves it.
class Connection : public std::enable_shared_from_this<Connection> {
public:
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection();

    /// Sends `record` through the output filter. Ignored once the
    /// connection is closed.
    void send(std::string_view record) {
        if (output_transparent_ && state_ != State::closed && handle_) handle_->push_write(record);
        else send_through_filter(record);
    }
    /// Stops reading, writes out what is queued, then closes (and runs the
    /// disconnected callback). Idempotent.
    void shutdown();
    /// Closes at once, dropping queued output, and runs the disconnected
    /// callback. Idempotent.
    void close();
    /// Whether shutdown() or close() was called or the peer went away.
    [[nodiscard]] bool closing() const noexcept { return state_ != State::open && state_ != State::header; }

    /// The client's address ("192.0.2.1", "2001:db8::1", or the socket
    /// path of a unix client, often empty) and port; with the PROXY
    /// protocol, the ones the header carried.
    [[nodiscard]] const std::string& remote_address() const noexcept { return remote_address_; }
    [[nodiscard]] std::uint16_t remote_port() const noexcept { return remote_port_; }
    /// The client's host name with ServerOptions::reverse_lookups (empty
    /// when off or when the address has no name).
    [[nodiscard]] const std::string& remote_host() const noexcept { return remote_host_; }
    [[nodiscard]] const sockaddr* remote_sockaddr() const noexcept {
        return reinterpret_cast<const sockaddr*>(&remote_);
    }
    [[nodiscard]] socklen_t remote_sockaddr_length() const noexcept { return remote_length_; }
    /// The listener it arrived on, as TcpServer::addresses() spells it.
    [[nodiscard]] const std::string& listener_address() const noexcept { return listener_address_; }
    /// A number unique within the server (across workers), from 1 up.
    [[nodiscard]] std::uint64_t serial() const noexcept { return serial_; }
    /// The underlying stream, for timeouts, buffer limits and the like.
    /// Reading is the Connection's business: do not set on_read, readers,
    /// on_eof, on_error or on_drain.
    [[nodiscard]] Handle& handle() noexcept { return *handle_; }
    /// Anything the application wants to keep with the connection.
    [[nodiscard]] std::any& user_data() noexcept { return user_data_; }

private:
    friend class detail::ServerCore;
    enum class State : std::uint8_t { header, open, closing, closed };
    Connection(detail::ServerCore& core, std::uint64_t serial);

    void set_remote(const sockaddr_storage& address, socklen_t length);
    void setup(bool proxy_protocol);
    void announce();
    void send_through_filter(std::string_view record);
    void start_input();
    void process_input();
    bool read_proxy_header(ReadBuffer& input);
    void on_error(std::error_code error, const std::string& message, bool fatal);
    void report(std::error_code error, const std::string& message);
    void on_drain();
    void on_idle_timer();
    void arm_timer(Duration after);
    void touch() noexcept {
        if (idle_timed_) stamp_activity();
    }
    void stamp_activity() noexcept;
    void finish(bool report);

    // What the raw echo path touches first (one cache line with the base).
    detail::ServerCore& core_;
    std::optional<Handle> handle_;  // in place: one pointer less to follow per send
    State state_ = State::header;
    bool input_transparent_;   // input_filter_->transparent(), asked once
    bool output_transparent_;
    bool idle_timed_;          // idle_timeout set: activity is time-stamped (touch())
    bool announced_ = false;
    std::uint64_t serial_;
    std::unique_ptr<Filter> input_filter_;
    std::unique_ptr<Filter> output_filter_;
    std::string encoded_;
    sockaddr_storage remote_{};
    socklen_t remote_length_ = 0;
    std::string remote_address_;
    std::string remote_host_;
    std::uint16_t remote_port_ = 0;
    std::string listener_address_;
    std::shared_ptr<TlsLayerFactory> tls_ctx_;  // the listener's TLS, started after the PROXY header
    TimerWatcher idle_timer_;
    TimePoint last_activity_{};
    std::size_t queued_at_check_ = 0;
    std::any user_data_;
};

/// A TCP (and unix socket) server; see the file comment for threads and
/// lifetime. Set the callbacks, then start().
class TcpServer {
public:
    using ConnectionCallback = std::function<void(Connection& connection)>;
    using InputCallback = std::function<void(Connection& connection, std::string_view record)>;
    using ErrorCallback =
        std::function<void(Connection& connection, std::error_code error, const std::string& message)>;

    /// Checks the options (std::invalid_argument for no listener, a
    /// malformed address, or a tls_ctx that cannot accept); binds nothing yet.
    TcpServer(EventLoop& loop, ServerOptions options);
    ~TcpServer();
    TcpServer(const TcpServer&) = delete;
    TcpServer& operator=(const TcpServer&) = delete;

    // ---- callbacks (set before start()) -------------------------------------

    /// A client connected (after its PROXY header, if any).
    void on_connected(ConnectionCallback callback);
    /// One input record, a view valid during the call.
    void on_input(InputCallback callback);
    /// The connection closed, for whatever reason; runs once for each
    /// connection that was reported connected.
    void on_disconnected(ConnectionCallback callback);
    /// A socket error or an idle timeout (the connection closes after the
    /// call), or a filter error such as an over-long line (the connection
    /// then shuts down: answers already queued still go out).
    void on_error(ErrorCallback callback);
    /// All output queued on the connection was written.
    void on_flushed(ConnectionCallback callback);
    /// The server finished shutting down: every connection closed, every
    /// listener closed, every worker joined. Runs on the constructor's loop.
    void on_finished(std::function<void()> callback);

    // ---- running ------------------------------------------------------------

    /// Binds every listener and starts accepting (and the workers). Throws
    /// std::system_error naming the address that could not be bound; the
    /// server is then not started. Throws std::logic_error if called twice.
    void start();
    /// Graceful: stops accepting and closes the listeners, then shuts every
    /// connection down (each flushes its output, then closes). on_finished
    /// runs when the last one is gone. Idempotent.
    void shutdown();
    /// Installs SIGTERM and SIGINT watchers on the loop that call
    /// shutdown(), and SIGHUP calling `on_hangup` when given. They do not
    /// keep the loop alive and are removed once the server finished.
    void handle_signals(std::function<void()> on_hangup = {});
    /// Changes the concurrency limit (see ServerOptions::concurrency);
    /// lowering it closes nobody, it only holds new clients back.
    void set_concurrency(int limit);

    // ---- introspection ------------------------------------------------------

    [[nodiscard]] int concurrency() const noexcept;
    /// Open connections, over all workers (including those still waiting
    /// for their PROXY header).
    [[nodiscard]] std::size_t connection_count() const noexcept;
    /// Every bound address: "127.0.0.1:7000", "[::1]:7000", "unix:/path".
    [[nodiscard]] const std::vector<std::string>& addresses() const noexcept { return addresses_; }
    /// The port of the first TCP listener (0 before start()).
    [[nodiscard]] std::uint16_t port() const noexcept;
    /// The open connections (a snapshot; callable while workers run).
    [[nodiscard]] std::vector<ConnectionInfo> connections() const;
    [[nodiscard]] ServerStats stats() const noexcept;
    /// Started and not finished.
    [[nodiscard]] bool running() const noexcept { return running_; }
    [[nodiscard]] EventLoop& loop() const noexcept { return loop_; }

private:
    void start_workers(std::vector<std::vector<detail::ListenSocket>> per_core);
    void finish();
    void abort() noexcept;
    template <typename Fn>
    void for_each_core(Fn fn);

    EventLoop& loop_;
    std::shared_ptr<detail::ServerShared> shared_;
    std::vector<std::string> addresses_;
    std::vector<std::string> unix_paths_;
    std::vector<std::uint16_t> ports_;
    std::unique_ptr<detail::ServerCore> core_;           // without workers
    std::shared_ptr<detail::WorkerGroup> workers_;       // with workers
    std::function<void()> on_finished_;
    SignalWatcher on_term_;
    SignalWatcher on_int_;
    SignalWatcher on_hup_;
    bool started_ = false;
    bool running_ = false;
    bool shutting_down_ = false;
};

}  // namespace anyloop::tcp
