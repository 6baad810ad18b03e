// TcpServer: binding the listeners, one core on the caller's loop or one per
// worker thread, and the end of it all (shutdown, signals, on_finished).
#include "server_core.hpp"

#include <anyloop/backends/registry.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

namespace anyloop::tcp {

namespace detail {

/// The worker threads, each with its own loop and core. Workers announce
/// their end to the server's loop through a weak pointer to this group, so
/// a server destroyed meanwhile is never touched.
struct WorkerGroup {
    struct Worker {
        std::unique_ptr<EventLoop> loop;
        std::unique_ptr<ServerCore> core;
        std::thread thread;
    };
    std::vector<Worker> workers;
    std::size_t exited = 0;
    TcpServer* server = nullptr;

    void join() {
        for (Worker& worker : workers)
            if (worker.thread.joinable()) worker.thread.join();
    }
};

}  // namespace detail

namespace {

void close_sockets(const std::vector<std::vector<detail::ListenSocket>>& per_core) noexcept {
    for (const auto& sockets : per_core)
        for (const detail::ListenSocket& socket : sockets) ::close(socket.fd);
}

}  // namespace

TcpServer::TcpServer(EventLoop& loop, ServerOptions options) : loop_(loop) {
    if (options.listeners.empty()) throw std::invalid_argument("TcpServer: no listener address given");
    for (const ListenerOptions& listener : options.listeners) detail::check_listener_address(listener.address);
    for (const ListenerOptions& listener : options.listeners) {
        if (!listener.tls_ctx) continue;
        try {
            (void)listener.tls_ctx->make_tls_layer(TlsMode::accept, {});
        } catch (const std::invalid_argument& failure) {
            throw std::invalid_argument("TcpServer: listener " + listener.address + ": " + failure.what());
        }
    }
    if (options.workers > 1 && !options.worker_loop)
        options.worker_loop = [backend = std::string(loop.backend())] { return make_loop(backend); };
    if (!options.input_filter) options.input_filter = std::make_shared<LineFilter>();
    if (!options.output_filter) options.output_filter = options.input_filter;
    if (!options.log_sink) options.log_sink = stderr_log_sink();
    shared_ = std::make_shared<detail::ServerShared>(std::move(options));
    shared_->limit.store(shared_->options.concurrency);
}

TcpServer::~TcpServer() { abort(); }

void TcpServer::on_connected(ConnectionCallback callback) { shared_->on_connected = std::move(callback); }
void TcpServer::on_input(InputCallback callback) { shared_->on_input = std::move(callback); }
void TcpServer::on_disconnected(ConnectionCallback callback) { shared_->on_disconnected = std::move(callback); }
void TcpServer::on_error(ErrorCallback callback) { shared_->on_error = std::move(callback); }
void TcpServer::on_flushed(ConnectionCallback callback) { shared_->on_flushed = std::move(callback); }
void TcpServer::on_finished(std::function<void()> callback) { on_finished_ = std::move(callback); }

void TcpServer::start() {
    if (started_) throw std::logic_error("TcpServer::start: the server was started already");
    const ServerOptions& options = shared_->options;
    const std::size_t cores = options.workers > 1 ? options.workers : 1;

    // Everything is bound here, on the caller's thread, so that a bad
    // address fails start() rather than a worker. Workers get sockets of
    // their own on the same port (SO_REUSEPORT), or a duplicate of a unix one.
    std::vector<std::vector<detail::ListenSocket>> per_core(cores);
    try {
        for (const ListenerOptions& listener : options.listeners) {
            std::vector<detail::ListenSocket> first = detail::bind_listener(listener, cores > 1, {});
            std::vector<std::uint16_t> ports;
            for (const detail::ListenSocket& socket : first) {
                ports.push_back(socket.port);
                if (!socket.unix_path.empty()) unix_paths_.push_back(socket.unix_path);
            }
            for (std::size_t core = 1; core < cores; ++core) {
                if (listener.address.starts_with("unix:")) {
                    for (detail::ListenSocket copy : first) {
                        copy.fd = ::fcntl(copy.fd, F_DUPFD_CLOEXEC, 0);
                        if (copy.fd < 0) throw std::system_error(errno, std::generic_category(), "TcpServer: dup");
                        per_core[core].push_back(std::move(copy));
                    }
                } else {
                    for (detail::ListenSocket& socket : detail::bind_listener(listener, true, ports))
                        per_core[core].push_back(std::move(socket));
                }
            }
            for (detail::ListenSocket& socket : first) per_core[0].push_back(std::move(socket));
        }
    } catch (...) {
        close_sockets(per_core);
        for (const std::string& path : unix_paths_) ::unlink(path.c_str());
        unix_paths_.clear();
        throw;
    }
    for (const detail::ListenSocket& socket : per_core[0]) {
        addresses_.push_back(socket.address);
        ports_.push_back(socket.port);
    }
    started_ = true;
    running_ = true;
    if (cores == 1) {
        core_ = std::make_unique<detail::ServerCore>(loop_, *shared_, std::move(per_core[0]), [this] { finish(); });
        shared_->cores = {core_.get()};
        core_->start();
    } else {
        start_workers(std::move(per_core));
    }
}

void TcpServer::start_workers(std::vector<std::vector<detail::ListenSocket>> per_core) {
    workers_ = std::make_shared<detail::WorkerGroup>();
    workers_->server = this;
    for (auto& sockets : per_core) {
        detail::WorkerGroup::Worker worker;
        worker.loop = shared_->options.worker_loop();
        // A worker's loop simply runs out of work once its core is done.
        worker.core = std::make_unique<detail::ServerCore>(*worker.loop, *shared_, std::move(sockets), nullptr);
        shared_->cores.push_back(worker.core.get());
        workers_->workers.push_back(std::move(worker));
    }
    // Everything a worker touches is made before its thread starts.
    for (auto& worker : workers_->workers) worker.core->start();
    loop_.ref();
    const std::weak_ptr<detail::WorkerGroup> group = workers_;
    for (std::size_t index = 0; index < workers_->workers.size(); ++index) {
        auto& worker = workers_->workers[index];
        worker.thread = std::thread([loop = worker.loop.get(), core = worker.core.get(), &home = loop_, group, index] {
            for (;;) {
                try {
                    loop->run();
                    break;
                } catch (const std::exception& failure) {
                    // The loop stays usable: report and go on serving.
                    core->logger().log(LogLevel::err, "worker " + std::to_string(index) + ": a callback threw: " +
                                                          failure.what());
                }
            }
            home.post([group] {
                const auto workers = group.lock();
                if (workers && ++workers->exited == workers->workers.size()) workers->server->finish();
            });
        });
    }
}

template <typename Fn>
void TcpServer::for_each_core(Fn fn) {
    if (core_) fn(*core_);
    if (!workers_) return;
    for (auto& worker : workers_->workers) worker.loop->post([core = worker.core.get(), fn] { fn(*core); });
}

void TcpServer::shutdown() {
    if (!running_ || shutting_down_) return;
    shutting_down_ = true;
    Logger(shared_->options.log_sink, shared_->options.log_level)
        .log(LogLevel::notice, "shutting down: " + std::to_string(connection_count()) + " connections open");
    for_each_core([](detail::ServerCore& core) { core.shutdown(); });
}

void TcpServer::handle_signals(std::function<void()> on_hangup) {
    const auto stop = [this](int signo) {
        Logger(shared_->options.log_sink, shared_->options.log_level)
            .log(LogLevel::notice, std::string("signal ") + ::strsignal(signo));
        shutdown();
    };
    on_term_ = loop_.signal(SIGTERM, stop);
    on_int_ = loop_.signal(SIGINT, stop);
    on_term_.set_keepalive(false);
    on_int_.set_keepalive(false);
    if (on_hangup) {
        on_hup_ = loop_.signal(SIGHUP, [hook = std::move(on_hangup)](int) { hook(); });
        on_hup_.set_keepalive(false);
    }
}

void TcpServer::set_concurrency(int limit) {
    shared_->limit.store(limit < 0 ? -1 : limit, std::memory_order_release);
    for_each_core([](detail::ServerCore& core) { core.update_accepting(); });
}

int TcpServer::concurrency() const noexcept { return shared_->limit.load(std::memory_order_acquire); }

std::size_t TcpServer::connection_count() const noexcept {
    return static_cast<std::size_t>(shared_->connections.load(std::memory_order_acquire));
}

std::uint16_t TcpServer::port() const noexcept {
    for (const std::uint16_t port : ports_)
        if (port != 0) return port;
    return 0;
}

std::vector<ConnectionInfo> TcpServer::connections() const {
    std::vector<ConnectionInfo> result;
    for (const detail::ServerCore* core : shared_->cores) core->snapshot(result);
    return result;
}

ServerStats TcpServer::stats() const noexcept {
    return ServerStats{shared_->accepted.load(std::memory_order_relaxed), shared_->denied.load(std::memory_order_relaxed),
                       shared_->dropped.load(std::memory_order_relaxed)};
}

void TcpServer::finish() {
    if (!running_) return;
    running_ = false;
    if (workers_) {
        workers_->join();
        loop_.unref();
    }
    for (const std::string& path : unix_paths_) ::unlink(path.c_str());
    on_term_.reset();
    on_int_.reset();
    on_hup_.reset();
    // Last: the callback may destroy the server.
    if (auto finished = std::move(on_finished_)) finished();
}

void TcpServer::abort() noexcept {
    if (!running_) return;
    running_ = false;
    if (core_) core_->abort();
    if (workers_) {
        for (auto& worker : workers_->workers)
            worker.loop->post([core = worker.core.get()] { core->abort(); });
        workers_->join();
        loop_.unref();
    }
    for (const std::string& path : unix_paths_) ::unlink(path.c_str());
}

}  // namespace anyloop::tcp
