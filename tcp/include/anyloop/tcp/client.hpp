// anyloop/tcp/client.hpp — TcpClient: a TCP client that speaks in records
// and can reconnect by itself, after POE::Component::Client::TCP.
//
//     TcpClient client(*loop);                      // lines both ways by default
//     client.on_connected([](TcpClient& c) { c.send("HELLO"); });
//     client.on_input([](TcpClient& c, std::string_view line) {
//         std::cout << line << "\n";
//         c.shutdown();                             // flush, then close
//     });
//     client.on_error([](TcpClient&, std::error_code, const std::string& message) {
//         std::cerr << message << "\n";             // "cannot connect to localhost:7000: Connection refused ..."
//     });
//     client.connect("localhost", 7000);
//     loop->run();
//
// Connecting. connect() resolves the name and tries each address in turn
// (tcp_connect, anyloop/handle/connect.hpp), each for at most the connect
// timeout. With reconnect on, a failed attempt or a lost connection is
// retried after a delay that starts at initial_delay and doubles with each
// failure in a row up to max_delay; after max_attempts failed attempts in
// a row (0: never) the client gives up and goes idle.
//
// Records. Input bytes go through the input filter (a fresh clone per
// connection), each complete record to on_input; send() puts a record
// through the output filter. Both default to LineFilter().
//
// When callbacks run. From the loop, on the loop thread; on_flushed can
// also run inside send() when the write completed at once (the Handle's
// on_drain). The TcpClient may be destroyed inside any of its callbacks;
// no callback runs afterwards. Setting a callback inside a callback is safe.
#pragma once

#include <anyloop/core/event_loop.hpp>
#include <anyloop/handle/connect.hpp>
#include <anyloop/handle/handle.hpp>
#include <anyloop/tcp/filter.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace anyloop::tcp {

/// When and how often a TcpClient connects again.
struct ReconnectOptions {
    /// Off: a failed connect or a lost connection leaves the client idle.
    bool enabled = false;
    /// The delay before the first retry; doubled after each failure in a row.
    Duration initial_delay = std::chrono::milliseconds(500);
    /// The longest delay between two attempts.
    Duration max_delay = std::chrono::seconds(30);
    /// Failed attempts in a row (the first one included) after which the
    /// client gives up; 0 = never.
    unsigned max_attempts = 0;
};

/// The settings of a TcpClient.
struct TcpClientOptions {
    /// The limit for each address tried, and the Handle's options (buffer
    /// limits, inactivity timeouts, TCP_NODELAY ...).
    ConnectOptions connect{};
    ReconnectOptions reconnect{};
};

/// A TCP connection to one host and port that speaks in records. See the
/// file comment for connecting, filters and when callbacks run. Loop
/// thread only; neither copyable nor movable.
class TcpClient {
public:
    using Callback = std::function<void(TcpClient& client)>;
    using InputCallback = std::function<void(TcpClient& client, std::string_view record)>;
    using ErrorCallback = std::function<void(TcpClient& client, std::error_code error, const std::string& message)>;

    /// Where the client is.
    enum class State : std::uint8_t {
        idle,           // not connected, nothing planned
        connecting,     // an attempt is under way
        connected,      // connected: send() writes
        waiting,        // lost or failed; the next attempt is timed
        shutting_down,  // shutdown(): flushing, then closing
    };

    explicit TcpClient(EventLoop& loop, TcpClientOptions options = {});
    /// Closes at once (queued output still lingers, see Handle); no callback runs.
    ~TcpClient();
    TcpClient(const TcpClient&) = delete;
    TcpClient& operator=(const TcpClient&) = delete;
    TcpClient(TcpClient&&) = delete;
    TcpClient& operator=(TcpClient&&) = delete;

    // ---- callbacks ----------------------------------------------------------

    /// A connection is up (also after each reconnect).
    void on_connected(Callback callback);
    /// One complete input record; the view is valid during the call.
    void on_input(InputCallback callback);
    /// A connection that was up is gone: the peer closed, an error, or
    /// shutdown() finished. Not called for close() or destruction, nor
    /// for attempts that never connected.
    void on_disconnected(Callback callback);
    /// A failure: a connect attempt that failed (the message says whether
    /// and when the client retries), a socket error (then on_disconnected
    /// follows), a filter error such as EMSGSIZE (the connection is
    /// dropped), or a non-fatal inactivity timeout (ETIMEDOUT).
    void on_error(ErrorCallback callback);
    /// Everything queued was written.
    void on_flushed(Callback callback);

    // ---- settings -----------------------------------------------------------

    /// The input filter (cloned for each connection) and the output filter;
    /// a null `output` means a clone of `input`. Takes effect for input
    /// from the next connection on, for output at once.
    void set_filter(std::unique_ptr<Filter> input, std::unique_ptr<Filter> output = nullptr);
    void set_reconnect(const ReconnectOptions& reconnect) { options_.reconnect = reconnect; }
    [[nodiscard]] const TcpClientOptions& options() const noexcept { return options_; }

    // ---- connecting ---------------------------------------------------------

    /// Connects to `host` (a name or an address) and `port`. A connection
    /// or attempt already under way is dropped first (without callbacks).
    void connect(std::string_view host, std::uint16_t port);
    /// Flushes what was sent, then closes and calls on_disconnected; no
    /// reconnect follows and input is no longer read. When not connected,
    /// stops any attempt or retry (no callback).
    void shutdown();
    /// Closes at once: queued output lingers (see Handle), no callback
    /// runs, no reconnect follows.
    void close() noexcept;

    // ---- sending ------------------------------------------------------------

    /// Puts `record` through the output filter and writes it. While an
    /// attempt is under way or timed, the bytes wait for the connection;
    /// they are written, in order, with whatever on_connected sends, when
    /// on_connected returns. Returns false (and drops the record) when idle
    /// or shutting down.
    bool send(std::string_view record);

    // ---- state --------------------------------------------------------------

    [[nodiscard]] State state() const noexcept { return state_; }
    [[nodiscard]] bool connected() const noexcept { return state_ == State::connected; }
    /// The connection's Handle while connected or shutting down (its fd,
    /// timeouts, buffer sizes), else null. Do not destroy or close it.
    [[nodiscard]] Handle* handle() const noexcept { return handle_.get(); }
    /// Failed attempts since the last connection was up.
    [[nodiscard]] unsigned failed_attempts() const noexcept { return failed_attempts_; }
    [[nodiscard]] const std::string& host() const noexcept { return host_; }
    [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
    [[nodiscard]] EventLoop& loop() const noexcept { return loop_; }

private:
    void start_attempt();
    void on_connect_result(std::unique_ptr<Handle> handle, std::error_code error, const std::string& message);
    void attach(std::unique_ptr<Handle> handle);
    void dispatch_input();
    void lose_connection(std::error_code error, const std::string& message);
    void finish_shutdown();
    // Times the next attempt; returns false when the client gives up (or
    // reconnecting is off).
    bool schedule_retry(Duration& delay);
    bool write_pending();
    void drop_connection() noexcept;
    [[nodiscard]] std::string where() const;
    // Calls the callback in `slot` (a copy of the pointer, so the callback
    // may replace itself); returns false when the client was destroyed in it.
    template <typename Function, typename... Args>
    bool notify(const std::shared_ptr<const Function>& slot, Args&&... args);

    EventLoop& loop_;
    TcpClientOptions options_;
    std::shared_ptr<const Callback> on_connected_;
    std::shared_ptr<const InputCallback> on_input_;
    std::shared_ptr<const Callback> on_disconnected_;
    std::shared_ptr<const ErrorCallback> on_error_;
    std::shared_ptr<const Callback> on_flushed_;

    std::unique_ptr<Filter> input_prototype_;
    std::unique_ptr<Filter> input_filter_;  // this connection's
    std::unique_ptr<Filter> output_filter_;

    std::string host_;
    std::uint16_t port_ = 0;
    State state_ = State::idle;
    ConnectRequest request_;
    std::unique_ptr<Handle> handle_;
    TimerWatcher timer_;   // the next attempt, or the end of a shutdown
    std::string pending_;  // output sent before the connection was up
    std::string wire_;     // scratch for the output filter
    unsigned failed_attempts_ = 0;
    // Lets a callback's caller tell that the client was destroyed in it.
    std::shared_ptr<char> alive_ = std::make_shared<char>();
};

}  // namespace anyloop::tcp
