// Private parts of TcpServer: the state all workers share and the ServerCore
// that accepts and serves connections on one loop.
#pragma once

#include <anyloop/tcp/server.hpp>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace anyloop::tcp::detail {

/// A bound, listening socket (non-blocking), before a core watches it.
struct ListenSocket {
    int fd = -1;
    std::string address;  // as TcpServer::addresses() reports it
    std::string unix_path;
    std::uint16_t port = 0;
    bool proxy_protocol = false;
    std::shared_ptr<TlsLayerFactory> tls_ctx{};
};

/// Parses a listener address and binds it. `reuse_port` adds SO_REUSEPORT
/// (workers); `port_override`, when not 0, replaces the port (so that every
/// worker binds the port the first one was given). Throws std::system_error
/// or std::invalid_argument naming the address.
std::vector<ListenSocket> bind_listener(const ListenerOptions& options, bool reuse_port,
                                        const std::vector<std::uint16_t>& port_overrides);
/// Checks the syntax of a listener address; throws std::invalid_argument.
void check_listener_address(const std::string& address);
/// The address and port of `address`, with an IPv4-mapped IPv6 address
/// turned into plain IPv4 (in place), so that rules and logs see 192.0.2.1
/// rather than ::ffff:192.0.2.1.
void unmap_ipv4(sockaddr_storage& address, socklen_t& length) noexcept;

/// What every core of one server shares: the settings and callbacks (fixed
/// once started) and the counters (atomic: workers update them).
struct ServerShared {
    explicit ServerShared(ServerOptions server_options) : options(std::move(server_options)) {}

    ServerOptions options;
    TcpServer::ConnectionCallback on_connected;
    TcpServer::InputCallback on_input;
    TcpServer::ConnectionCallback on_disconnected;
    TcpServer::ErrorCallback on_error;
    TcpServer::ConnectionCallback on_flushed;

    std::atomic<int> limit{-1};
    std::atomic<long> connections{0};
    std::atomic<std::uint64_t> next_serial{1};
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> denied{0};
    std::atomic<std::uint64_t> dropped{0};

    /// The cores, fixed once started; cores of other threads are reached
    /// only through their loop's post().
    std::vector<ServerCore*> cores;

    /// Takes a connection slot if the limit allows.
    bool try_reserve() noexcept;
    /// Gives a slot back and wakes the cores waiting for one.
    void release(ServerCore& releasing);
};

/// Accepts and serves the connections of one loop: the listening sockets,
/// the reserve descriptor, the open connections.
class ServerCore {
public:
    ServerCore(EventLoop& loop, ServerShared& shared, std::vector<ListenSocket> sockets,
               std::function<void()> on_done);
    ~ServerCore();
    ServerCore(const ServerCore&) = delete;
    ServerCore& operator=(const ServerCore&) = delete;

    /// Starts watching the listening sockets; keeps the loop alive until done.
    void start();
    /// Starts or stops watching the listeners, as the limit and state allow.
    void update_accepting();
    /// Graceful shutdown of this core (see TcpServer::shutdown).
    void shutdown();
    /// Closes everything at once, without callbacks.
    void abort() noexcept;

    [[nodiscard]] EventLoop& loop() const noexcept { return loop_; }
    [[nodiscard]] ServerShared& shared() const noexcept { return shared_; }
    [[nodiscard]] Logger& logger() noexcept { return logger_; }
    [[nodiscard]] bool shutting_down() const noexcept { return shutting_down_; }
    void snapshot(std::vector<ConnectionInfo>& out) const;

    /// Whether this core stopped accepting for want of a slot (the releasing
    /// core clears it and wakes this one).
    std::atomic<bool> waiting_for_slot{false};

    // ---- for Connection -----------------------------------------------------
    /// The access rules on a peer address; logs and counts a refusal.
    /// Checks the access rules (with the host name, when reverse lookups
    /// are on; `host_name` receives it). Logs and counts a refusal.
    bool allowed(const sockaddr* address, socklen_t length, const std::string& listener,
                 std::string* host_name = nullptr);
    /// The connection closed: callbacks, counters, and its removal.
    void closed(Connection& connection, bool was_connected);
    /// The connection reached the callbacks: list it for snapshot().
    void announced(const Connection& connection);

private:
    struct Listener {
        ListenSocket socket;
        IoWatcher watcher;
    };
    void accept_from(Listener& listener);
    void out_of_descriptors(Listener& listener, int error);
    void serve(int fd, sockaddr_storage& address, socklen_t length, const Listener& listener);
    void drop(Connection& connection, const std::string& why);
    void pause_accepting();
    void close_listeners() noexcept;
    void check_done();

    EventLoop& loop_;
    ServerShared& shared_;
    Logger logger_;
    std::vector<Listener> listeners_;
    std::map<std::uint64_t, std::shared_ptr<Connection>> connections_;
    // What snapshot() reports, copied so that other threads never look at
    // a Connection: the announced connections by serial.
    std::map<std::uint64_t, ConnectionInfo> registry_;
    mutable std::mutex registry_mutex_;
    int reserve_fd_ = -1;
    TimerWatcher pause_timer_;
    std::function<void()> on_done_;
    bool started_ = false;
    bool paused_ = false;  // by accept_pause, after EMFILE and the like
    bool shutting_down_ = false;
    bool done_ = false;
    bool holding_loop_ = false;
};

}  // namespace anyloop::tcp::detail
