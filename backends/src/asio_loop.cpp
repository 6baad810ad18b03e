// The Asio backend: anyloop's watchers as asynchronous waits on an
// io_context, either our own or one a host program runs.
//
// Three rules shape this file:
//
//  * Every handler we give Asio may run after the watcher, or the whole loop,
//    is gone: a cancelled wait completes with operation_aborted later, and on
//    an adopted io_context that may be long after the wrapper was destroyed.
//    So handlers hold shared state (LoopLink, IoPort) and check it; they
//    never hold a raw node or loop pointer of their own.
//  * Asio's reactor is edge-triggered; a new async_wait re-arms the fd
//    (EPOLL_CTL_MOD), so starting a wait after each completion gives the
//    contract's level-triggered readiness.
//  * Asio has no iterations: poll() runs handlers until none is ready, and a
//    re-armed ready fd is always ready. Inside our own iterate() every re-arm
//    (I/O, the timer, signals, the post() wake-up) is therefore deferred to
//    the end of the iteration, which is what bounds one run_once(). When the
//    host drives the io_context, re-arms happen at once, as Asio code does,
//    and so they do in an owned loop's run(): that is one io_context::run(),
//    stopped by stop(), a failure, or alive() turning false (an iteration is
//    then one handler, and each wait costs one epoll_wait instead of two).

#include <anyloop/backends/asio.hpp>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>

#include <poll.h>

#include <csignal>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace anyloop {
namespace {

class AsioLoop;

// The handlers' way back to the loop: cleared when the loop is destroyed.
// It also keeps the memory of the I/O waits (see WaitAllocator), since the
// last wait may complete after the loop is gone.
struct LoopLink {
    explicit LoopLink(AsioLoop* l) noexcept : loop(l) {}
    LoopLink(const LoopLink&) = delete;
    LoopLink& operator=(const LoopLink&) = delete;
    ~LoopLink() {
        while (spare != nullptr) {
            Block* block = spare;
            spare = block->next;
            ::operator delete(block);
        }
    }

    void* allocate(std::size_t bytes) {
        if (bytes == block_size && spare != nullptr) {
            --spare_count;
            return std::exchange(spare, spare->next);
        }
        return ::operator new(bytes);
    }

    void deallocate(void* memory, std::size_t bytes) noexcept {
        if (block_size == 0 && bytes >= sizeof(Block)) block_size = bytes;
        if (bytes == block_size && spare_count < max_spare) {
            spare = new (memory) Block{spare};
            ++spare_count;
            return;
        }
        ::operator delete(memory);
    }

    AsioLoop* loop = nullptr;

private:
    struct Block {
        Block* next;
    };
    // Enough for a busy server's waits of one iteration; beyond that, the
    // blocks go back to malloc.
    static constexpr std::size_t max_spare = 1024;
    Block* spare = nullptr;
    std::size_t spare_count = 0;
    std::size_t block_size = 0;  // every I/O wait operation has the same type, hence size
};

// The allocator Asio uses for an I/O wait operation. Without one, Asio takes
// the memory from a cache in the stack frame of run_one()/poll_one(), which
// is gone by the time the next wait is started (after the iteration), so
// every wait would cost a malloc and a free.
template <typename T>
struct WaitAllocator {
    using value_type = T;
    explicit WaitAllocator(LoopLink* l) noexcept : link(l) {}
    template <typename U>
    WaitAllocator(const WaitAllocator<U>& other) noexcept : link(other.link) {}  // NOLINT: rebinding is implicit
    T* allocate(std::size_t n) { return static_cast<T*>(link->allocate(n * sizeof(T))); }
    void deallocate(T* memory, std::size_t n) noexcept { link->deallocate(memory, n * sizeof(T)); }
    template <typename U>
    bool operator==(const WaitAllocator<U>& other) const noexcept {
        return link == other.link;
    }
    LoopLink* link;
};

struct AsioIoNode;

// The Asio side of one I/O watcher. It lives as long as the watcher's node
// or any wait handler that refers to it, whichever is last; the descriptor
// is engaged exactly while the watcher is started.
struct IoPort {
    explicit IoPort(std::shared_ptr<LoopLink> l) noexcept : link(std::move(l)) {}
    IoPort(const IoPort&) = delete;
    IoPort& operator=(const IoPort&) = delete;
    ~IoPort() {
        // Never reached with an engaged descriptor (io_stop releases it);
        // releasing here anyway guarantees Asio never closes the user's fd.
        if (descriptor) descriptor->release();
    }

    std::shared_ptr<LoopLink> link;
    std::optional<asio::posix::stream_descriptor> descriptor;
    AsioIoNode* node = nullptr;  // cleared when the node is deleted
    // Bumped by every stop and every cancel: a completion of an older
    // generation is stale and must neither dispatch nor re-arm.
    std::uint64_t generation = 0;
    bool waiting[2] = {false, false};  // a wait of this generation is outstanding: [0] read, [1] write
    bool rearm_queued = false;         // on the loop's deferred re-arm list
};

struct AsioIoNode final : detail::IoNode {
    explicit AsioIoNode(std::shared_ptr<IoPort> p) noexcept : port(std::move(p)) { port->node = this; }
    ~AsioIoNode() override { port->node = nullptr; }
    std::shared_ptr<IoPort> port;
};

// One asio::signal_set per installed signal number.
struct SignalEntry {
    int signo = 0;
    std::unique_ptr<asio::signal_set> set;
    struct sigaction previous {};
    std::uint64_t arm = 0;  // like IoPort::generation
    bool waiting = false;
};

constexpr Io direction_bit(int direction) noexcept {
    return direction == 0 ? Io::read : Io::write;
}

// The completion handler of one I/O wait.
struct WaitHandler {
    using allocator_type = WaitAllocator<void>;
    [[nodiscard]] allocator_type get_allocator() const noexcept { return allocator_type(port->link.get()); }
    void operator()(const asio::error_code& error) const noexcept;

    std::shared_ptr<IoPort> port;
    int direction;
    std::uint64_t generation;
};

class AsioLoop final : public EventLoop {
public:
    // The owning form: the io_context is created before everything that
    // refers to it and destroyed after it (members are destroyed in reverse).
    AsioLoop() : owned_(std::make_unique<asio::io_context>(1)), ctx_(*owned_), timer_(ctx_) {}
    explicit AsioLoop(asio::io_context& host) : ctx_(host), timer_(ctx_) {}

    ~AsioLoop() override {
        // Stops every watcher while this object is intact: descriptors are
        // released, signal sets destroyed, the timer wait cancelled.
        // (io_rearm_ is empty: only iterate() fills it, and it empties it.)
        shutdown_watchers();
        link_->loop = nullptr;
        timer_.cancel();  // timers never report an error here
        keepalive_.reset();
    }

    std::string_view backend() const noexcept override { return "asio"; }

    // ---- what the handlers call ------------------------------------------

    void on_io(const std::shared_ptr<IoPort>& port, int direction, std::uint64_t generation,
               const asio::error_code& error) noexcept {
        AsioIoNode* node = port->node;
        if (node == nullptr || !node->active || generation != port->generation) {
            ++stale_;
            return;
        }
        port->waiting[direction] = false;
        if (error == asio::error::operation_aborted) {
            // Not from us (we bump the generation when we cancel): keep waiting.
            ++stale_;
            request_arm(port);
            return;
        }
        // Asio reports a descriptor it cannot wait on (a regular file, an
        // fd epoll refused) as an error; like poll(2), call that ready for
        // everything, and the next read() or write() tells what happened.
        Io revents = error ? Io::read_write : direction_bit(direction);
        const int other = 1 - direction;
        if (!error && has(node->events, direction_bit(other))) {
            // Both directions watched: Asio completes each wait on its own,
            // but the contract reports all ready events in one callback. Ask
            // the kernel about the other direction now.
            pollfd probe{node->fd, static_cast<short>(other == 0 ? POLLIN : POLLOUT), 0};
            if (::poll(&probe, 1, 0) > 0 && probe.revents != 0) revents = Io::read_write;
        }
        if (has(revents, direction_bit(other)) && port->waiting[other]) {
            // Reported here, so the other wait (perhaps completed and queued
            // already) must not report it a second time: retire it.
            ++port->generation;
            port->waiting[other] = false;
            asio::error_code ignored;
            port->descriptor->cancel(ignored);
        }
        new_now();
        {
            DispatchScope scope(*this);
            dispatch_io(node, revents);
        }
        // The callback may have stopped, restarted or destroyed the watcher;
        // request_arm looks at the port's state as it is now.
        request_arm(port);
    }

    void on_timer(std::uint64_t arm) noexcept {
        if (arm != timer_arm_) {
            ++stale_;
            return;
        }
        timer_waiting_ = false;
        update_now();
        run_due_timers();
        request_timer_arm();  // run_due_timers re-arms only when something was due
    }

    void on_signal(int signo, std::uint64_t arm, const asio::error_code& error) noexcept {
        SignalEntry* entry = find_signal(signo);
        if (entry == nullptr || entry->arm != arm) {
            ++stale_;
            return;
        }
        entry->waiting = false;
        if (!error) {
            update_now();
            dispatch_signal(signo);  // opens its own DispatchScope
        } else {
            ++stale_;
        }
        request_signal_arm();
    }

    void on_wake() noexcept {
        if (in_iterate_) {
            // One batch of posted functions per iteration: what they post
            // runs in the next one, as on the other backends.
            if (posted_ran_) {
                wake_deferred_ = true;
                return;
            }
            posted_ran_ = true;
        }
        new_now();
        {
            DispatchScope scope(*this);
            run_posted();
        }
        // Queued posts keep the loop alive without a count: the last of them
        // may have been what kept run() going.
        if (in_run_ && !alive()) ctx_.stop();
    }

private:
    // ---- I/O -------------------------------------------------------------

    detail::IoNode* io_create() override { return new AsioIoNode(std::make_shared<IoPort>(link_)); }

    void io_start(detail::IoNode* node) override {
        IoPort& port = *static_cast<AsioIoNode*>(node)->port;
        port.descriptor.emplace(ctx_);
        asio::error_code error;
        port.descriptor->assign(node->fd, error);
        if (error) {
            port.descriptor.reset();
            throw std::system_error(error, "asio backend: cannot watch fd " + std::to_string(node->fd));
        }
        ++port.generation;
        port.waiting[0] = port.waiting[1] = false;
        try {
            request_arm(static_cast<AsioIoNode*>(node)->port);
        } catch (...) {
            port.descriptor->release();
            port.descriptor.reset();
            throw;
        }
    }

    void io_update(detail::IoNode* node, Io old_events) override {
        const std::shared_ptr<IoPort>& port = static_cast<AsioIoNode*>(node)->port;
        if (!port->descriptor) return;
        // A wait for an event no longer wanted would still keep the host's
        // io_context busy; cancel it (and the other direction with it: Asio
        // cancels per descriptor) and re-arm what remains.
        const Io dropped = old_events & ~node->events;
        if ((has(dropped, Io::read) && port->waiting[0]) || (has(dropped, Io::write) && port->waiting[1])) {
            ++port->generation;
            port->waiting[0] = port->waiting[1] = false;
            asio::error_code ignored;
            port->descriptor->cancel(ignored);
        }
        request_arm(port);
    }

    void io_stop(detail::IoNode* node) noexcept override {
        IoPort& port = *static_cast<AsioIoNode*>(node)->port;
        ++port.generation;  // a completion already queued is now stale
        port.waiting[0] = port.waiting[1] = false;
        if (port.descriptor) {
            // release(), not close(): the fd stays the user's. Outstanding
            // waits complete with operation_aborted and find a newer generation.
            port.descriptor->release();
            port.descriptor.reset();
        }
    }

    void request_arm(const std::shared_ptr<IoPort>& port) {
        if (port->node == nullptr || !port->descriptor) return;
        if (in_iterate_) {
            if (!port->rearm_queued) {
                io_rearm_.push_back(port.get());
                port->rearm_queued = true;
            }
            return;
        }
        arm(*port);
    }

    // Starts a wait for every wanted direction without one outstanding.
    void arm(IoPort& port) {
        if (port.node == nullptr || !port.descriptor) return;
        const Io wanted = port.node->events;
        for (int direction = 0; direction < 2; ++direction) {
            if (!has(wanted, direction_bit(direction)) || port.waiting[direction]) continue;
            const auto type =
                direction == 0 ? asio::posix::stream_descriptor::wait_read : asio::posix::stream_descriptor::wait_write;
            port.descriptor->async_wait(type, WaitHandler{port.node->port, direction, port.generation});
            port.waiting[direction] = true;
        }
    }

    // ---- timers ----------------------------------------------------------

    void timers_changed() override { request_timer_arm(); }

    void request_timer_arm() {
        if (in_iterate_)
            timer_deferred_ = true;
        else
            arm_timer();
    }

    // Keeps exactly one wait outstanding, for next_deadline(), and none
    // while there is no timer.
    void arm_timer() {
        const TimePoint deadline = next_deadline();
        if (deadline == TimePoint::max()) {
            if (timer_waiting_) {
                ++timer_arm_;
                timer_waiting_ = false;
                timer_.cancel();
            }
            return;
        }
        if (timer_waiting_ && timer_deadline_ == deadline) return;
        ++timer_arm_;
        timer_.expires_at(deadline);  // cancels a pending wait, which then finds an older arm
        timer_deadline_ = deadline;
        timer_waiting_ = true;
        timer_.async_wait([link = link_, arm = timer_arm_](const asio::error_code&) noexcept {
            if (AsioLoop* loop = link->loop) loop->on_timer(arm);
        });
    }

    // ---- signals ---------------------------------------------------------

    SignalEntry* find_signal(int signo) noexcept {
        for (SignalEntry& entry : signals_)
            if (entry.signo == signo) return &entry;
        return nullptr;
    }

    void signal_install(int signo) override {
        SignalEntry entry;
        entry.signo = signo;
        ::sigaction(signo, nullptr, &entry.previous);
        entry.set = std::make_unique<asio::signal_set>(ctx_);
        asio::error_code error;
        entry.set->add(signo, error);
        if (error) throw std::system_error(error, "asio backend: cannot watch signal " + std::to_string(signo));
        signals_.push_back(std::move(entry));
        request_signal_arm();
    }

    void signal_uninstall(int signo) noexcept override {
        for (auto it = signals_.begin(); it != signals_.end(); ++it) {
            if (it->signo != signo) continue;
            asio::error_code ignored;
            it->set->cancel(ignored);
            it->set->clear(ignored);
            // Asio resets a signal it no longer needs to SIG_DFL; give back
            // what was there before, unless Asio still handles the signal for
            // a signal_set of the host.
            struct sigaction current {};
            if (::sigaction(signo, nullptr, &current) == 0 && (current.sa_flags & SA_SIGINFO) == 0 &&
                current.sa_handler == SIG_DFL)
                ::sigaction(signo, &it->previous, nullptr);
            signals_.erase(it);
            return;
        }
    }

    void request_signal_arm() {
        if (in_iterate_)
            signal_deferred_ = true;
        else
            arm_signals();
    }

    void arm_signals() {
        for (SignalEntry& entry : signals_) {
            if (entry.waiting) continue;
            ++entry.arm;
            entry.waiting = true;
            entry.set->async_wait(
                [link = link_, signo = entry.signo, arm = entry.arm](const asio::error_code& error, int) noexcept {
                    if (AsioLoop* loop = link->loop) loop->on_signal(signo, arm, error);
                });
        }
    }

    // ---- post, keep-alive, iterations ------------------------------------

    void wake() noexcept override {
        // Thread-safe, and transient: the handler is work only until it runs.
        asio::post(ctx_, [link = link_]() noexcept {
            if (AsioLoop* loop = link->loop) loop->on_wake();
        });
    }

    void alive_changed(bool alive) override {
        // Outstanding waits keep an io_context running by themselves; this
        // covers the rest of what keeps anyloop alive (ref(), a watcher with
        // no events), so that run_one() blocks and a host's run() goes on.
        if (alive) {
            keepalive_.emplace(ctx_.get_executor());
        } else {
            keepalive_.reset();
            // Waits of watchers that do not keep the loop alive would keep
            // run_iterations()' io_context::run() going.
            if (in_run_ && !has_posted()) ctx_.stop();
        }
    }

    void break_iteration() noexcept override {
        // Ends our own iterate() or run_iterations(); a host's run() is never
        // stopped by us.
        break_requested_ = true;
        if (in_run_) ctx_.stop();
    }

    // An owned loop's run() is one io_context::run(), with every re-arm at
    // once: Asio's own loop then waits once per readiness (iterate() needs
    // a second, non-blocking wait to find the end of an iteration).
    void run_iterations() override {
        if (!owned_) {
            iterate(true);
            return;
        }
        if (ctx_.stopped()) ctx_.restart();
        in_run_ = true;
        try {
            ctx_.run();
        } catch (...) {
            in_run_ = false;
            throw;
        }
        in_run_ = false;
    }

    void iterate(bool block) override {
        DispatchScope scope(*this);  // also keeps every port in io_rearm_ alive
        in_iterate_ = true;
        break_requested_ = false;
        posted_ran_ = false;
        try {
            if (block) {
                // Wait for one handler that is more than the leftover of a
                // cancelled wait, then collect whatever else is ready now.
                for (;;) {
                    const std::uint64_t stale_before = stale_;
                    std::size_t ran = ctx_.run_one();
                    if (ran == 0) {
                        // Stopped: by running out of work, or by a host.
                        // (Asking stopped() first would take the
                        // scheduler's lock on every iteration.)
                        ctx_.restart();
                        ran = ctx_.run_one();
                    }
                    if (ran == 0 || stale_ == stale_before || break_requested_) break;
                }
            } else if (ctx_.stopped()) {
                ctx_.restart();
            }
            while (!break_requested_ && ctx_.poll_one() != 0) {
            }
        } catch (...) {
            end_iteration();
            throw;
        }
        end_iteration();
    }

    // Performs the re-arms deferred during the iteration, so that what is
    // still ready completes in the next one.
    void end_iteration() {
        in_iterate_ = false;
        // The list is emptied even if arm() throws: its pointers are only
        // good until iterate() returns. (arm() runs no handler, so nothing
        // is added to the list meanwhile.)
        try {
            for (IoPort* port : io_rearm_) {
                port->rearm_queued = false;
                arm(*port);
            }
        } catch (...) {
            for (IoPort* port : io_rearm_) port->rearm_queued = false;
            io_rearm_.clear();
            throw;
        }
        io_rearm_.clear();
        if (std::exchange(timer_deferred_, false)) arm_timer();
        if (std::exchange(signal_deferred_, false)) arm_signals();
        if (std::exchange(wake_deferred_, false)) wake();
    }

    std::unique_ptr<asio::io_context> owned_;  // first: destroyed last
    asio::io_context& ctx_;
    const std::shared_ptr<LoopLink> link_ = std::make_shared<LoopLink>(this);
    asio::steady_timer timer_;
    std::uint64_t timer_arm_ = 0;
    TimePoint timer_deadline_{};
    bool timer_waiting_ = false;
    std::vector<SignalEntry> signals_;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> keepalive_;

    bool in_iterate_ = false;
    bool in_run_ = false;  // run_iterations()' io_context::run() is on the stack
    bool break_requested_ = false;
    bool posted_ran_ = false;
    std::uint64_t stale_ = 0;  // handlers that found their wait cancelled or outdated
    // Ports whose waits are re-armed at the end of the iteration. Plain
    // pointers: iterate()'s DispatchScope keeps every node, and with it its
    // port, alive until then.
    std::vector<IoPort*> io_rearm_;
    bool timer_deferred_ = false;
    bool signal_deferred_ = false;
    bool wake_deferred_ = false;
};

void WaitHandler::operator()(const asio::error_code& error) const noexcept {
    if (AsioLoop* loop = port->link->loop) loop->on_io(port, direction, generation, error);
}

}  // namespace

std::unique_ptr<EventLoop> make_asio_loop() {
    return std::make_unique<AsioLoop>();
}

std::unique_ptr<EventLoop> make_asio_loop(asio::io_context& host) {
    return std::make_unique<AsioLoop>(host);
}

}  // namespace anyloop
