// The Asio backend: anyloop's watchers on an io_context, either our own or
// one a host program runs.
//
// I/O watchers live in a level-triggered epoll set of the loop's own
// (EpollSetLoop, epoll_set.hpp, shared with the epoll backend), and Asio sees
// only the set's descriptor, with one wait_read outstanding on it while any
// watcher is in the set; when it completes, one epoll_wait collects the ready
// watchers and dispatches them. Asio's reactor is edge-triggered and starts
// every wait with an EPOLL_CTL_MOD, which re-checks readiness: re-arming the
// one wait after each batch costs one epoll_ctl per batch instead of one per
// ready fd, and gives every watcher level-triggered readiness, since the set
// stays readable while any fd in it is ready. With no watcher in the set no
// wait is outstanding, so a host's run() returns when anyloop has nothing to
// watch. Regular files, which epoll refuses, are always ready: while one is
// watched, a posted completion takes the wait's place.
//
// Two more rules shape this file:
//
//  * Every handler we give Asio may run after the loop is gone: a cancelled
//    wait completes with operation_aborted later, and on an adopted
//    io_context that may be long after the wrapper was destroyed. So
//    handlers hold the shared LoopLink and check it; they never hold a raw
//    loop pointer of their own.
//  * Asio has no iterations: poll() runs handlers until none is ready, and a
//    re-armed ready set is always ready. Inside our own iterate() every
//    re-arm (the set's wait, the timer, signals, the post() wake-up) is
//    therefore deferred to the end of the iteration, which is what bounds one
//    run_once(). When the host drives the io_context, re-arms happen at once,
//    as Asio code does, and so they do in an owned loop's run(): that is one
//    io_context::run(), stopped by stop(), a failure, or alive() turning false
//    (an iteration is then one handler, and a batch costs one epoll_wait of
//    Asio's and one of ours instead of Asio's two).

#include <anyloop/backends/asio.hpp>

#include "epoll_set.hpp"

#include <asio/basic_waitable_timer.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/signal_set.hpp>

#include <chrono>
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
// It also keeps the memory of the set's waits (see WaitAllocator), since the
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
    // One wait is outstanding at a time, plus perhaps a cancelled one that
    // has not completed yet.
    static constexpr std::size_t max_spare = 4;
    Block* spare = nullptr;
    std::size_t spare_count = 0;
    std::size_t block_size = 0;  // every wait operation has the same type, hence size
};

// The allocator Asio uses for a wait on the set. Without one, Asio takes the
// memory from a cache in the stack frame of run_one()/poll_one(), which is
// gone by the time the next wait is started (after the iteration), so every
// wait would cost a malloc and a free.
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

// The I/O objects are bound to the io_context's own executor type rather
// than Asio's default any_io_executor: every wait then dispatches its
// completion without the type-erased executor's indirect calls.
using Executor = asio::io_context::executor_type;
using SetDescriptor = asio::posix::basic_stream_descriptor<Executor>;
using Clock = std::chrono::steady_clock;
using Timer = asio::basic_waitable_timer<Clock, asio::wait_traits<Clock>, Executor>;
using SignalSet = asio::basic_signal_set<Executor>;

// One signal set per installed signal number.
struct SignalEntry {
    int signo = 0;
    std::unique_ptr<SignalSet> set;
    struct sigaction previous {};
    std::uint64_t arm = 0;  // bumped by every wait; an older completion is stale
    bool waiting = false;
};

// The completion handler of a wait on the set.
struct SetWaitHandler {
    using allocator_type = WaitAllocator<void>;
    [[nodiscard]] allocator_type get_allocator() const noexcept { return allocator_type(link.get()); }
    void operator()(const asio::error_code& error) const noexcept;

    std::shared_ptr<LoopLink> link;
    std::uint64_t arm;
};

class AsioLoop final : public backends::EpollSetLoop<AsioLoop, EventLoop> {
public:
    // The owning form: the io_context is created before everything that
    // refers to it and destroyed after it (members are destroyed in reverse).
    // Nobody else sees it, and only the loop's thread starts, cancels and
    // runs its I/O, so the reactor's per-descriptor locks are left out;
    // the scheduler keeps its lock, since post() calls asio::post() from
    // any thread.
    AsioLoop()
        : owned_(std::make_unique<asio::io_context>(ASIO_CONCURRENCY_HINT_UNSAFE_IO)),
          ctx_(*owned_),
          set_(ctx_),
          timer_(ctx_) {
        assign_set();
    }
    explicit AsioLoop(asio::io_context& host) : ctx_(host), set_(ctx_), timer_(ctx_) { assign_set(); }

    ~AsioLoop() override {
        // Stops every watcher while this object is intact: the set's wait
        // and the timer's are cancelled, signal sets destroyed.
        shutdown_watchers();
        link_->loop = nullptr;
        set_.release();   // the set's fd is EpollSetLoop's to close
        timer_.cancel();  // timers never report an error here
        keepalive_.reset();
    }

    std::string_view backend() const noexcept override { return "asio"; }

    // ---- what the handlers call ------------------------------------------

    // The set was reported readable (or, `error` clear, a regular file is
    // watched): dispatch what is ready, then wait again.
    void on_set_ready(std::uint64_t arm, const asio::error_code& error) noexcept {
        if (arm != set_arm_) {
            ++stale_;
            return;
        }
        set_waiting_ = false;
        if (error == asio::error::operation_aborted) {
            // Not from us (we bump the arm when we cancel): keep waiting.
            ++stale_;
            request_set_wait();
            return;
        }
        {
            DispatchScope scope(*this);
            // Cannot block (timeout 0) and so cannot be interrupted; a
            // failure would mean the set's fd is gone, which we never allow.
            (void)wait_and_dispatch_set(0);
        }
        // The callbacks may have started or stopped watchers; request_set_wait
        // looks at the set as it is now.
        request_set_wait();
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
    friend class backends::EpollSetLoop<AsioLoop, EventLoop>;

    // ---- I/O: EpollSetLoop keeps the set; Asio waits on it ----------------

    void assign_set() {
        asio::error_code error;
        set_.assign(epoll_fd(), error);
        if (error) throw std::system_error(error, "asio backend: cannot wait on the loop's epoll set");
    }

    void io_start(detail::IoNode* node) override {
        EpollSetLoop::io_start(node);
        request_set_wait();
    }

    void io_update(detail::IoNode* node, Io old_events) override {
        EpollSetLoop::io_update(node, old_events);
        request_set_wait();
    }

    void io_stop(detail::IoNode* node) noexcept override {
        EpollSetLoop::io_stop(node);
        // A wait with nothing to wait for would keep the host's io_context
        // busy. (Starting one is left to request_set_wait, which may throw.)
        if (!set_wait_wanted()) retire_set_wait();
    }

    [[nodiscard]] bool set_wait_wanted() const noexcept { return watching_any() || always_ready_wanted(); }

    void request_set_wait() {
        if (in_iterate_)
            set_deferred_ = true;
        else
            sync_set_wait();
    }

    // Keeps one wait outstanding while the set holds a watcher, a posted
    // completion while a regular file wants events (it is ready at once),
    // and neither otherwise.
    void sync_set_wait() {
        if (!set_wait_wanted()) {
            retire_set_wait();
            return;
        }
        const bool ready_now = always_ready_wanted();
        if (set_waiting_ && (set_posted_ || !ready_now)) return;
        retire_set_wait();  // a wait on the set gives way to a posted completion
        const std::uint64_t arm = set_arm_ + 1;
        if (ready_now) {
            asio::post(ctx_, [link = link_, arm]() noexcept {
                if (AsioLoop* loop = link->loop) loop->on_set_ready(arm, asio::error_code());
            });
        } else {
            set_.async_wait(SetDescriptor::wait_read, SetWaitHandler{link_, arm});
        }
        set_arm_ = arm;  // only now: neither call above may have thrown
        set_waiting_ = true;
        set_posted_ = ready_now;
    }

    // Makes the outstanding completion, if any, stale.
    void retire_set_wait() noexcept {
        if (!set_waiting_) return;
        ++set_arm_;
        set_waiting_ = false;
        if (!set_posted_) {
            asio::error_code ignored;
            set_.cancel(ignored);
        }
    }

    // EpollSetLoop rebuilds the set (to shed an orphaned registration):
    // wait on the fresh one instead.
    bool epoll_set_replacing(int fresh) noexcept {
        SetDescriptor descriptor(ctx_);
        asio::error_code error;
        descriptor.assign(fresh, error);
        if (error) return false;  // keep the old set: its orphan stays ignored
        retire_set_wait();
        set_.release();
        set_ = std::move(descriptor);
        return true;
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
        entry.set = std::make_unique<SignalSet>(ctx_);
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
        DispatchScope scope(*this);  // nodes released in the iteration are freed at its end
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
        if (std::exchange(set_deferred_, false)) sync_set_wait();
        if (std::exchange(timer_deferred_, false)) arm_timer();
        if (std::exchange(signal_deferred_, false)) arm_signals();
        if (std::exchange(wake_deferred_, false)) wake();
    }

    std::unique_ptr<asio::io_context> owned_;  // first: destroyed last
    asio::io_context& ctx_;
    const std::shared_ptr<LoopLink> link_ = std::make_shared<LoopLink>(this);
    SetDescriptor set_;  // EpollSetLoop's epoll fd, released (never closed) by us
    std::uint64_t set_arm_ = 0;           // bumped by every wait and every cancel; older completions are stale
    bool set_waiting_ = false;            // a completion of set_arm_ is outstanding
    bool set_posted_ = false;             // ... and it is a posted one (a regular file is watched)
    Timer timer_;
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
    bool set_deferred_ = false;
    bool timer_deferred_ = false;
    bool signal_deferred_ = false;
    bool wake_deferred_ = false;
};

void SetWaitHandler::operator()(const asio::error_code& error) const noexcept {
    if (AsioLoop* loop = link->loop) loop->on_set_ready(arm, error);
}

}  // namespace

std::unique_ptr<EventLoop> make_asio_loop() {
    return std::make_unique<AsioLoop>();
}

std::unique_ptr<EventLoop> make_asio_loop(asio::io_context& host) {
    return std::make_unique<AsioLoop>(host);
}

}  // namespace anyloop
