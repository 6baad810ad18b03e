// anyloop/core/event_loop.hpp — the EventLoop contract.
//
// One abstract class that every backend (libev, libevent, Asio, poll, select,
// epoll) implements. docs/event-loop.md is the long form; in short:
//
//  * I/O watchers are level-triggered; a watcher stopped during dispatch never
//    fires again, even if its event is already pending in this iteration.
//  * Timers run on a monotonic clock; now() is cached per iteration; timers due
//    at the same time fire in start order. anyloop keeps the timers itself in
//    one heap per loop, so this holds on every backend.
//  * Signal callbacks run in loop context.
//  * post() is the only thread-safe entry: functions run on the loop thread,
//    in FIFO order per posting thread, and a blocked loop wakes up.
//  * run() returns when stop() is called or nothing that keeps the loop alive
//    remains; run_once() does one iteration.
//  * Watchers are RAII and may be destroyed inside their own callbacks.
//  * An exception thrown by a callback is caught where it was thrown (never
//    crossing a C library's frames), ends the current iteration's run() and is
//    rethrown from run() / run_once(); the loop stays usable.
#pragma once

#include <anyloop/core/clock.hpp>
#include <anyloop/core/watchers.hpp>

#include <time.h>

#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string_view>
#include <vector>

namespace anyloop {

namespace detail {
/// A callback given to set_callback() while the node's current one was
/// running; EventLoop installs it when that call returns.
struct ParkedCallback {
    ParkedCallback() = default;
    ParkedCallback(const ParkedCallback&) = delete;
    ParkedCallback& operator=(const ParkedCallback&) = delete;
    virtual ~ParkedCallback() = default;
    virtual void install() noexcept = 0;
    WatcherNode* node = nullptr;
    ParkedCallback* next = nullptr;
};
}  // namespace detail

/// An event loop. Everything attached to a loop (watchers, handles, servers)
/// belongs to the one thread that runs it; post() is the door in from other
/// threads. Obtain one with make_loop() (anyloop/backends/registry.hpp).
class EventLoop {
public:
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;
    /// Destroying the loop with watchers still alive is allowed: they are
    /// stopped and their handles become inert.
    virtual ~EventLoop();

    /// The backend's name: "libev", "libevent", "asio", "poll", "select", "epoll".
    [[nodiscard]] virtual std::string_view backend() const noexcept = 0;

    // ---- watchers --------------------------------------------------------

    /// A started watcher on `fd` for `events`.
    [[nodiscard]] IoWatcher io(int fd, Io events, IoCallback callback);
    /// A started one-shot timer.
    [[nodiscard]] TimerWatcher timer(Duration after, TimerCallback callback);
    /// A started timer: first expiry after `after`, then every `repeat`.
    [[nodiscard]] TimerWatcher timer(Duration after, Duration repeat, TimerCallback callback);
    /// A started signal watcher.
    [[nodiscard]] SignalWatcher signal(int signo, SignalCallback callback);

    // ---- running ---------------------------------------------------------

    /// Runs until stop() or until nothing keeps the loop alive. Rethrows the
    /// first exception a callback threw (after finishing that iteration).
    /// Not reentrant: calling run() or run_once() from a callback throws.
    void run();
    /// One iteration. With `block`, waits for at least one event when
    /// something keeps the loop alive; otherwise only collects what is ready.
    /// Returns whether anything still keeps the loop alive.
    bool run_once(bool block = true);
    /// Makes the current run() return after this iteration. Loop thread only;
    /// from another thread use post([&loop] { loop.stop(); }).
    void stop() noexcept;

    /// Thread-safe: queues `fn` to run on the loop thread and wakes the loop.
    void post(std::function<void()> fn);

    // ---- time ------------------------------------------------------------

    /// The loop's time for this iteration: read from the clock the first
    /// time it is needed after the wait (by a callback, or to check timers),
    /// then the same until the next iteration. A loop whose callbacks never
    /// ask and that has no timer never reads the clock.
    [[nodiscard]] TimePoint now() const noexcept {
        if (now_stale_) {
            now_ = read_clock();
            now_stale_ = false;
        }
        return now_;
    }
    /// Refreshes the cached time (after a long callback, say).
    void update_now() noexcept {
        now_ = read_clock();
        now_stale_ = false;
    }

    // ---- keep-alive and introspection ------------------------------------

    /// Loop-level keep-alive counter, like ev_ref / ev_unref.
    void ref() noexcept;
    void unref() noexcept;
    /// Active watchers, counted whether or not they keep the loop alive.
    [[nodiscard]] std::size_t active_watchers() const noexcept { return active_count_; }
    /// Whether run() would go on: keep-alive watchers, ref()s or posted work.
    [[nodiscard]] bool alive() const noexcept { return alive_refs_ > 0 || has_posted(); }

    // ---- objects that own themselves -------------------------------------

    /// Runs `fn` once when the loop is destroyed, after every watcher was
    /// stopped and made inert (so `fn` may destroy watchers and close fds).
    /// For objects that own themselves on a loop, such as a Handle that
    /// lingers to write its last output. Returns a token for
    /// cancel_at_destroy(). Loop thread only.
    std::uint64_t at_destroy(std::function<void()> fn);
    /// Forgets an at_destroy() registration; unknown tokens are ignored.
    void cancel_at_destroy(std::uint64_t token) noexcept;

protected:
    EventLoop();

    // ---- what a backend implements ---------------------------------------

    /// Allocates the backend's node type (derived from detail::IoNode).
    virtual detail::IoNode* io_create() = 0;
    /// Begins watching node->fd for node->events.
    virtual void io_start(detail::IoNode* node) = 0;
    /// node->events changed from `old_events` while active.
    virtual void io_update(detail::IoNode* node, Io old_events) = 0;
    /// Stops watching; must also drop an event already pending for the node.
    /// Must not fail if the fd was closed meanwhile.
    virtual void io_stop(detail::IoNode* node) noexcept = 0;
    /// Frees an inactive node once no dispatch can reach it.
    virtual void io_destroy(detail::IoNode* node) noexcept { delete node; }

    /// The first watcher of `signo` on this loop started: install a handler
    /// that makes the loop call dispatch_signal(signo) in loop context.
    virtual void signal_install(int signo) = 0;
    /// The last watcher of `signo` on this loop stopped: restore the old
    /// disposition.
    virtual void signal_uninstall(int signo) noexcept = 0;

    /// The earliest timer deadline may have changed (a backend that relies on
    /// a native timer re-arms it here; poll-style backends read
    /// next_deadline() before waiting instead).
    virtual void timers_changed() {}
    /// Whether anything keeps the loop alive changed (libev mirrors it with
    /// ev_ref / ev_unref so an adopted loop's ev_run sees the same thing).
    virtual void alive_changed(bool /*alive*/) {}
    /// Thread-safe: make a blocked iteration return and run_posted() soon.
    virtual void wake() noexcept = 0;
    /// A callback failed: ask the native loop to return soon.
    virtual void break_iteration() noexcept {}
    /// One iteration: wait (if `block`) and dispatch everything ready.
    virtual void iterate(bool block) = 0;
    /// run()'s body: blocking iterations, called again as long as no stop()
    /// and alive(). One iterate(true) by default; a backend whose native
    /// loop runs many iterations in one call more cheaply may do that, if it
    /// ends the call after the iteration in which stop() was called
    /// (break_iteration()) or alive() turned false (alive_changed()).
    virtual void run_iterations() { iterate(true); }

    // ---- what core offers a backend --------------------------------------

    /// Brackets a dispatch: nodes released inside it are freed when the
    /// outermost scope ends, so pointers held by the backend stay valid.
    class DispatchScope {
    public:
        explicit DispatchScope(EventLoop& loop) noexcept : loop_(loop) { ++loop_.dispatch_depth_; }
        ~DispatchScope() {
            if (--loop_.dispatch_depth_ == 0 && loop_.graveyard_ != nullptr) loop_.free_released();
        }
        DispatchScope(const DispatchScope&) = delete;
        DispatchScope& operator=(const DispatchScope&) = delete;

    private:
        EventLoop& loop_;
    };

    /// A new iteration begins (its wait ended): the next now() reads the
    /// clock. Cheaper than update_now() when nobody asks.
    void new_now() noexcept { now_stale_ = true; }

    /// Whether run()'s loop goes on after this iteration: no stop() and
    /// alive(). For a backend's run_iterations() that loops by itself.
    [[nodiscard]] bool keep_running() const noexcept { return !stop_requested_ && alive(); }

    /// Frees the nodes released so far. For a backend whose DispatchScope
    /// spans several iterations, between two of them (when no pointer into
    /// a ready list is left).
    void free_released_nodes() noexcept {
        if (graveyard_ != nullptr) free_released();
    }

    /// Runs an I/O callback if the node is still active and wants any of
    /// `revents`. Call inside a DispatchScope.
    void dispatch_io(detail::IoNode* node, Io revents) noexcept {
        revents = revents & node->events;
        if (node->active && revents != Io::none) guarded(node, revents);
    }
    /// Runs the callbacks of every active watcher of `signo` on this loop.
    void dispatch_signal(int signo) noexcept;
    /// Fires timers due at now() in (deadline, start order); call new_now()
    /// or update_now() first if the cached time may be old.
    void run_due_timers() noexcept {
        if (!timer_heap_.empty() && timer_heap_.front()->deadline <= now()) fire_due_timers();
    }
    /// Runs everything post()ed so far.
    void run_posted() noexcept {
        if (has_posted()) run_posted_batch();  // the common case: no lock
    }
    /// Earliest timer deadline, or TimePoint::max() when there is none.
    [[nodiscard]] TimePoint next_deadline() const noexcept {
        return timer_heap_.empty() ? TimePoint::max() : timer_heap_.front()->deadline;
    }
    /// Milliseconds to wait for an iteration (-1 = forever, 0 = poll), for
    /// backends built on poll-like calls.
    [[nodiscard]] int wait_timeout_ms(bool block) const noexcept {
        if (!block || has_posted()) return 0;
        return timer_heap_.empty() ? -1 : ms_until_next_deadline();
    }
    /// Whether posted work is queued.
    [[nodiscard]] bool has_posted() const noexcept { return posted_pending_.load(std::memory_order_acquire); }
    /// Whether a callback has failed and the iteration should end soon.
    [[nodiscard]] bool failed() const noexcept { return static_cast<bool>(failure_); }
    /// The active watcher of `fd` on this loop, or null. Core keeps this
    /// table for the one-watcher-per-fd rule; backends that need an fd →
    /// watcher map read it instead of keeping their own. It is set once
    /// io_start() returned and cleared before io_stop() is called.
    [[nodiscard]] detail::IoNode* watcher_of(int fd) const noexcept {
        const auto index = static_cast<std::size_t>(fd);
        return index < fd_owner_.size() ? fd_owner_[index] : nullptr;
    }
    /// The whole table, indexed by fd (entries may be null).
    [[nodiscard]] const std::vector<detail::IoNode*>& watchers_by_fd() const noexcept { return fd_owner_; }
    /// Stops every watcher; a backend's destructor calls this first, while
    /// its own state is still intact.
    void shutdown_watchers() noexcept;

private:
    friend class IoWatcher;
    friend class TimerWatcher;
    friend class SignalWatcher;

    // Clock::now() without libstdc++'s out-of-line wrapper around the same
    // call: steady_clock is CLOCK_MONOTONIC on the platforms we build on.
    static TimePoint read_clock() noexcept {
        timespec now{};
        ::clock_gettime(CLOCK_MONOTONIC, &now);
        return TimePoint(std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec));
    }

    // Runs a node's callback in place. Nothing the callback does destroys
    // or overwrites the closure that is running: a released node waits in
    // the graveyard until the outermost dispatch ends, and a callback
    // replaced while running (set_callback) is parked and installed when the
    // call returns. Every caller (dispatch_io, fire_due_timers,
    // dispatch_signal) runs inside a DispatchScope, which keeps the node and
    // counts the depth, so this is the cheapest possible wrapper around the
    // call.
    template <typename Node, typename... Args>
    void guarded(Node* node, Args... args) noexcept {
        if (!node->callback) return;
        const bool outer = node->running;  // only a host's nested dispatch makes it true
        node->running = true;
        try {
            node->callback(args...);
        } catch (...) {
            record_failure(std::current_exception());
        }
        node->running = outer;
        if (parked_ != nullptr) install_parked();
    }
    void fire_due_timers() noexcept;
    void run_posted_batch() noexcept;
    [[nodiscard]] int ms_until_next_deadline() const noexcept;
    // set_callback(): stores `callback` in node->callback, or parks it while
    // the old one is running.
    template <typename Node, typename Callback>
    void replace_callback(Node* node, Callback callback);
    void install_parked() noexcept;
    void record_failure(std::exception_ptr error) noexcept;
    void rethrow_failure();

    void watcher_activated(detail::WatcherNode* node) noexcept;
    void watcher_deactivated(detail::WatcherNode* node) noexcept;
    void set_keepalive(detail::WatcherNode* node, bool keepalive) noexcept;
    void link(detail::WatcherNode* node) noexcept;
    void release(detail::WatcherNode* node) noexcept;
    void free_released() noexcept;
    void free_node(detail::WatcherNode* node) noexcept;

    void start_io(detail::IoNode* node);
    void stop_io(detail::IoNode* node) noexcept;
    void update_io(detail::IoNode* node, Io events);

    void start_timer(detail::TimerNode* node, Duration after, Duration repeat);
    void stop_timer(detail::TimerNode* node) noexcept;
    void heap_push(detail::TimerNode* node);
    void heap_erase(detail::TimerNode* node) noexcept;
    void heap_sift_up(std::size_t index) noexcept;
    void heap_sift_down(std::size_t index) noexcept;

    void start_signal(detail::SignalNode* node);
    void stop_signal(detail::SignalNode* node) noexcept;
    void add_alive(long delta) noexcept;

    mutable TimePoint now_;
    mutable bool now_stale_ = false;  // now() reads the clock first
    bool stop_requested_ = false;
    long alive_refs_ = 0;
    std::size_t active_count_ = 0;

    int dispatch_depth_ = 0;
    detail::WatcherNode* graveyard_ = nullptr;
    detail::ParkedCallback* parked_ = nullptr;
    detail::WatcherNode* live_nodes_ = nullptr;

    std::vector<detail::IoNode*> fd_owner_;
    std::vector<detail::TimerNode*> timer_heap_;
    std::uint64_t timer_sequence_ = 0;
    std::vector<detail::SignalNode*> signal_watchers_;

    std::mutex posted_mutex_;
    std::vector<std::function<void()>> posted_;
    std::atomic<bool> posted_pending_{false};

    std::exception_ptr failure_;

    std::map<std::uint64_t, std::function<void()>> destroy_hooks_;
    std::uint64_t next_destroy_hook_ = 1;
};

}  // namespace anyloop
