// ServerCore: accepting on one loop — connection slots, access rules before
// allocation, the reserve descriptor for EMFILE, and the graceful end.
#include "server_core.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace anyloop::tcp::detail {
namespace {

// Accepts per readiness event, so that a flood of clients cannot starve the
// connections already open.
constexpr int accept_batch = 64;

std::string peer_text(const sockaddr_storage& address, socklen_t length) {
    const auto* generic = reinterpret_cast<const sockaddr*>(&address);
    if (address.ss_family == AF_UNIX) return "unix client";
    const std::string host = address_text(generic, length);
    const std::string shown = address.ss_family == AF_INET6 ? "[" + host + "]" : host;
    return shown + ":" + std::to_string(address_port(generic, length));
}

int open_reserve() noexcept { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

}  // namespace

// ---- ServerShared ---------------------------------------------------------------

bool ServerShared::try_reserve() noexcept {
    const int max = limit.load(std::memory_order_acquire);
    if (max < 0) {
        connections.fetch_add(1, std::memory_order_acq_rel);
        return true;
    }
    long current = connections.load(std::memory_order_acquire);
    while (current < max) {
        if (connections.compare_exchange_weak(current, current + 1, std::memory_order_acq_rel)) return true;
    }
    return false;
}

void ServerShared::release(ServerCore& releasing) {
    connections.fetch_sub(1, std::memory_order_acq_rel);
    for (ServerCore* core : cores) {
        if (!core->waiting_for_slot.exchange(false, std::memory_order_acq_rel)) continue;
        if (core == &releasing) core->update_accepting();
        else core->loop().post([core] { core->update_accepting(); });
    }
}

// ---- ServerCore -----------------------------------------------------------------

ServerCore::ServerCore(EventLoop& loop, ServerShared& shared, std::vector<ListenSocket> sockets,
                       std::function<void()> on_done)
    : loop_(loop),
      shared_(shared),
      logger_(shared.options.log_sink, shared.options.log_level),
      on_done_(std::move(on_done)) {
    for (ListenSocket& socket : sockets) listeners_.push_back(Listener{std::move(socket), IoWatcher{}});
}

ServerCore::~ServerCore() { abort(); }

void ServerCore::start() {
    started_ = true;
    reserve_fd_ = open_reserve();
    for (Listener& listener : listeners_) {
        listener.watcher = loop_.io(listener.socket.fd, Io::read, [this, &listener](Io) { accept_from(listener); });
        listener.watcher.stop();
    }
    // Paused or not, a running server keeps its loop alive until it is done.
    loop_.ref();
    holding_loop_ = true;
    update_accepting();
}

void ServerCore::update_accepting() {
    if (!started_ || shutting_down_ || done_) return;
    bool accepting = !paused_;
    if (accepting) {
        // The same order as a failed reservation: flag first, then look
        // again, so that a slot released meanwhile is not missed.
        const auto has_room = [this] {
            const int max = shared_.limit.load(std::memory_order_acquire);
            return max < 0 || shared_.connections.load(std::memory_order_acquire) < max;
        };
        if (!has_room()) {
            waiting_for_slot.store(true, std::memory_order_release);
            accepting = has_room();
            if (accepting) waiting_for_slot.store(false, std::memory_order_release);
        }
    }
    for (Listener& listener : listeners_) {
        if (accepting && !listener.watcher.active()) listener.watcher.start();
        else if (!accepting) listener.watcher.stop();
    }
}

void ServerCore::accept_from(Listener& listener) {
    for (int i = 0; i < accept_batch && !shutting_down_ && !paused_; ++i) {
        if (!shared_.try_reserve()) {
            update_accepting();  // stops the watchers, or finds a slot freed meanwhile
            if (!listener.watcher.active()) return;
            continue;
        }
        sockaddr_storage address{};
        socklen_t length = sizeof address;
        const int fd = ::accept4(listener.socket.fd, reinterpret_cast<sockaddr*>(&address), &length,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            serve(fd, address, length, listener);
            continue;
        }
        const int error = errno;
        shared_.release(*this);
        switch (error) {
        case EAGAIN:
            return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
            continue;  // that client gave up; look for the next
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            out_of_descriptors(listener, error);
            return;
        default:
            logger_.log(LogLevel::err,
                        "accept() on " + listener.socket.address + " failed: " + std::strerror(error));
            pause_accepting();
            return;
        }
    }
}

// The reserve-descriptor trick (libev's and Node's): the pending client would
// make the listener readable forever, so spend the spare descriptor on
// accepting and closing it, then pause instead of spinning.
void ServerCore::out_of_descriptors(Listener& listener, int error) {
    std::string dropped;
    if ((error == EMFILE || error == ENFILE) && reserve_fd_ >= 0) {
        ::close(std::exchange(reserve_fd_, -1));
        sockaddr_storage address{};
        socklen_t length = sizeof address;
        const int fd = ::accept4(listener.socket.fd, reinterpret_cast<sockaddr*>(&address), &length, SOCK_CLOEXEC);
        if (fd >= 0) {
            ::close(fd);
            shared_.dropped.fetch_add(1, std::memory_order_relaxed);
            dropped = "; closed " + peer_text(address, length);
        }
        reserve_fd_ = open_reserve();
    }
    logger_.log(LogLevel::warning, "accept() on " + listener.socket.address + ": " + std::strerror(error) + dropped +
                                       "; pausing accepting");
    pause_accepting();
}

void ServerCore::pause_accepting() {
    paused_ = true;
    update_accepting();
    pause_timer_ = loop_.timer(shared_.options.accept_pause, [this] {
        paused_ = false;
        update_accepting();
    });
}

bool ServerCore::allowed(const sockaddr* address, socklen_t length, const std::string& listener,
                         std::string* host_name) {
    // The rules are about network addresses; a unix socket peer has none.
    if (address->sa_family == AF_UNIX) return true;
    char host[NI_MAXHOST] = "";
    if (shared_.options.reverse_lookups &&
        ::getnameinfo(address, length, host, sizeof host, nullptr, 0, NI_NAMEREQD) == 0 && host_name != nullptr)
        *host_name = host;
    if (shared_.options.access.empty()) return true;
    const AccessDecision decision = shared_.options.access.check(address, length, host);
    if (decision.allowed) return true;
    shared_.denied.fetch_add(1, std::memory_order_relaxed);
    if (logger_.enabled(LogLevel::notice))
        logger_.log(LogLevel::notice, "denied " + peer_text(*reinterpret_cast<const sockaddr_storage*>(address), length) +
                                          " on " + listener + ": " + decision.reason);
    return false;
}

void ServerCore::serve(int fd, sockaddr_storage& address, socklen_t length, const Listener& listener) {
    unmap_ipv4(address, length);
    const auto* generic = reinterpret_cast<const sockaddr*>(&address);
    std::string host_name;
    if (!listener.socket.proxy_protocol && !allowed(generic, length, listener.socket.address, &host_name)) {
        ::close(fd);
        shared_.release(*this);
        return;
    }
    const std::uint64_t serial = shared_.next_serial.fetch_add(1, std::memory_order_relaxed);
    std::shared_ptr<Connection> connection(new Connection(*this, serial));
    try {
        connection->set_remote(address, length);
        connection->remote_host_ = std::move(host_name);
        connection->listener_address_ = listener.socket.address;
        connection->tls_ctx_ = listener.socket.tls_ctx;
        connection->handle_.emplace(loop_, fd, shared_.options.handle);
    } catch (const std::exception& failure) {
        ::close(fd);  // the Handle did not take it
        drop(*connection, failure.what());
        return;
    }
    connections_.emplace(serial, connection);
    try {
        // Watching the descriptor starts here, so this is where a loop that
        // cannot watch it (select past FD_SETSIZE) refuses.
        connection->setup(listener.socket.proxy_protocol);
    } catch (const std::exception& failure) {
        connections_.erase(serial);
        drop(*connection, failure.what());
        return;
    }
    if (!listener.socket.proxy_protocol) connection->announce();
}

void ServerCore::drop(Connection& connection, const std::string& why) {
    logger_.log(LogLevel::err, "cannot serve " + peer_text(connection.remote_, connection.remote_length_) + " on " +
                                   connection.listener_address_ + ": " + why);
    connection.state_ = Connection::State::closed;
    if (connection.handle_) connection.handle_->close();
    shared_.dropped.fetch_add(1, std::memory_order_relaxed);
    shared_.release(*this);
}

void ServerCore::closed(Connection& connection, bool was_connected) {
    const std::shared_ptr<Connection> keep = connection.shared_from_this();
    if (was_connected && shared_.on_disconnected) shared_.on_disconnected(connection);
    connections_.erase(connection.serial());
    if (was_connected) {
        const std::lock_guard lock(registry_mutex_);
        registry_.erase(connection.serial());
    }
    shared_.release(*this);
    // A descriptor came free: no need to wait for the pause to end.
    if (paused_ && !shutting_down_) {
        pause_timer_.reset();
        paused_ = false;
        update_accepting();
    }
    check_done();
}

void ServerCore::shutdown() {
    if (shutting_down_ || done_) return;
    shutting_down_ = true;
    close_listeners();
    std::vector<std::shared_ptr<Connection>> open;
    open.reserve(connections_.size());
    for (const auto& [serial, connection] : connections_) open.push_back(connection);
    for (const auto& connection : open) connection->shutdown();
    check_done();
}

void ServerCore::close_listeners() noexcept {
    for (Listener& listener : listeners_) {
        listener.watcher.reset();
        if (listener.socket.fd >= 0) ::close(std::exchange(listener.socket.fd, -1));
    }
    pause_timer_.reset();
}

void ServerCore::check_done() {
    if (!shutting_down_ || done_ || !connections_.empty()) return;
    done_ = true;
    if (reserve_fd_ >= 0) ::close(std::exchange(reserve_fd_, -1));
    if (std::exchange(holding_loop_, false)) loop_.unref();
    // Last: the callback may destroy the server, and this core with it.
    if (auto done = std::move(on_done_)) done();
}

void ServerCore::abort() noexcept {
    shutting_down_ = true;
    done_ = true;
    close_listeners();
    std::map<std::uint64_t, std::shared_ptr<Connection>> open;
    open.swap(connections_);
    {
        const std::lock_guard lock(registry_mutex_);
        registry_.clear();
    }
    for (const auto& [serial, connection] : open) {
        connection->state_ = Connection::State::closed;
        connection->idle_timer_.reset();
        if (connection->handle_) connection->handle_->close();
        shared_.connections.fetch_sub(1, std::memory_order_acq_rel);
    }
    if (reserve_fd_ >= 0) ::close(std::exchange(reserve_fd_, -1));
    if (std::exchange(holding_loop_, false)) loop_.unref();
}

void ServerCore::announced(const Connection& connection) {
    shared_.accepted.fetch_add(1, std::memory_order_relaxed);
    const std::lock_guard lock(registry_mutex_);
    registry_.emplace(connection.serial(),
                      ConnectionInfo{connection.serial(), connection.remote_address(), connection.remote_port()});
}

void ServerCore::snapshot(std::vector<ConnectionInfo>& out) const {
    const std::lock_guard lock(registry_mutex_);
    for (const auto& [serial, info] : registry_) out.push_back(info);
}

}  // namespace anyloop::tcp::detail
