// The libev backend: anyloop's watchers on a libev loop, owned or adopted.
//
// Keep-alive. libev counts every active watcher in the loop's activity count
// and ev_run returns when it reaches zero. Every native watcher started here
// is ev_unref'd right after its ev_*_start and ev_ref'd right before its
// ev_*_stop, so none of them counts by itself; alive_changed() then holds
// exactly one ev_ref while anything keeps the anyloop side alive. A host's
// ev_run therefore sees anyloop as one watcher that is active exactly when
// anyloop's run() would go on, and never because of the internals below.
//
// now() is renewed once per iteration, before any anyloop callback runs
// (new_now(): the clock is read when someone first asks). On an owned loop
// every callback is ours, so the first of them in an iteration (told by
// ev_iteration()) renews it: no watcher needed. On an
// adopted loop the host's callbacks may read now() or start timers, so an
// ev_check at EV_MAXPRI renews it after every poll (check watchers are
// queued after polling, and the highest priority runs first).
//
// Internals, one each per loop:
//   ev_check    adopted loops only: the refresh above.
//   ev_timer    armed for the earliest deadline of core's timer heap.
//   ev_async    post()'s thread-safe wake-up; its callback runs posted work.
//   ev_prepare  at EV_MINPRI, only while some ev_io was (re)started since the
//               last iteration: checks those fds just before libev hands them
//               to the kernel (see check_started_fds()).
// plus one ev_io per active IoWatcher and one ev_signal per watched signal.
#include <anyloop/backends/libev.hpp>

#include <ev.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <memory>
#include <stdexcept>
#include <vector>

namespace anyloop {
namespace {

struct LibevIoNode final : detail::IoNode {
    ev_io io{};
    // Whether we started `io` and took back its unit of the activity count.
    // libev can stop the watcher behind our back (see reconcile()).
    bool started = false;
    // Index in LibevLoop::unchecked_ while the fd awaits its check.
    std::size_t unchecked_slot = not_queued;
    static constexpr std::size_t not_queued = static_cast<std::size_t>(-1);
};

struct SignalSlot {
    ev_signal watcher{};
    struct sigaction previous {};
};

int native_events(Io events) noexcept {
    return (has(events, Io::read) ? EV_READ : 0) | (has(events, Io::write) ? EV_WRITE : 0);
}

class LibevLoop final : public EventLoop {
public:
    LibevLoop(struct ev_loop* loop, bool owned) noexcept : loop_(loop), owned_(owned) {
        ev_async_init(&async_, on_async);
        async_.data = this;
        ev_async_start(loop_, &async_);
        ev_unref(loop_);

        if (!owned_) {
            ev_check_init(&check_, on_check);
            check_.data = this;
            ev_set_priority(&check_, EV_MAXPRI);
            ev_check_start(loop_, &check_);
            ev_unref(loop_);
        }

        ev_init(&timer_, on_timer);
        timer_.data = this;

        ev_prepare_init(&prepare_, on_prepare);
        prepare_.data = this;
        ev_set_priority(&prepare_, EV_MINPRI);  // after the host's own prepare watchers
    }

    ~LibevLoop() override {
        // Stops every watcher through the overrides below while they still work.
        shutdown_watchers();
        disarm_timer();
        if (ev_is_active(&prepare_)) {
            ev_ref(loop_);
            ev_prepare_stop(loop_, &prepare_);
        }
        if (ev_is_active(&check_)) {
            ev_ref(loop_);
            ev_check_stop(loop_, &check_);
        }
        ev_ref(loop_);
        ev_async_stop(loop_, &async_);
        if (holding_ref_) ev_unref(loop_);  // a ref() never matched by unref()
        if (owned_) ev_loop_destroy(loop_);
    }

    LibevLoop(const LibevLoop&) = delete;
    LibevLoop& operator=(const LibevLoop&) = delete;

    std::string_view backend() const noexcept override { return "libev"; }

private:
    // ---- I/O ---------------------------------------------------------------

    detail::IoNode* io_create() override {
        // Room in unchecked_ for every live node, so that queue_check() never
        // allocates and starting a watcher cannot fail halfway.
        if (unchecked_.capacity() < ++io_nodes_) unchecked_.reserve(std::max(io_nodes_, 2 * unchecked_.capacity()));
        auto* node = new LibevIoNode;
        ev_init(&node->io, on_io);
        node->io.data = node;
        return node;
    }

    void io_destroy(detail::IoNode* node) noexcept override {
        --io_nodes_;
        delete node;
    }

    void io_start(detail::IoNode* node) override { start_native(static_cast<LibevIoNode*>(node)); }

    // libev's documented way to change an ev_io: stop, set, start.
    void io_update(detail::IoNode* node, Io) override {
        auto* io_node = static_cast<LibevIoNode*>(node);
        stop_native(io_node);
        start_native(io_node);
    }

    void io_stop(detail::IoNode* node) noexcept override { stop_native(static_cast<LibevIoNode*>(node)); }

    void start_native(LibevIoNode* node) noexcept {
        if (node->events == Io::none) return;  // paused: nothing to ask libev for
        // ev_io_set also tells libev to re-register the fd, which matters when
        // the number was closed and reused since the last start.
        ev_io_set(&node->io, node->fd, native_events(node->events));
        ev_io_start(loop_, &node->io);
        ev_unref(loop_);
        node->started = true;
        queue_check(node);
    }

    void stop_native(LibevIoNode* node) noexcept {
        reconcile(node);
        if (node->started) {
            ev_ref(loop_);
            node->started = false;
        }
        // Also on an inactive watcher: this drops an event already pending
        // for it in the current iteration.
        ev_io_stop(loop_, &node->io);
        unqueue_check(node);
    }

    // libev registers a (re)started fd with the kernel only at the start of
    // the next iteration, and a build with assertions (Debian's) aborts the
    // process when that fd is no longer open by then (a build without kills
    // the watcher with EV_ERROR). So every started fd is checked right
    // before, from a prepare watcher: one fcntl per start or change. A closed
    // fd is kept from libev and reported once as readiness instead, much as
    // poll(2) reports POLLNVAL; the read() or write() that follows says EBADF.
    void queue_check(LibevIoNode* node) noexcept {
        if (node->unchecked_slot != LibevIoNode::not_queued) return;
        node->unchecked_slot = unchecked_.size();
        unchecked_.push_back(node);
        if (!ev_is_active(&prepare_)) {
            ev_prepare_start(loop_, &prepare_);
            ev_unref(loop_);
        }
    }

    void unqueue_check(LibevIoNode* node) noexcept {
        const std::size_t slot = node->unchecked_slot;
        if (slot == LibevIoNode::not_queued) return;
        unchecked_[slot] = unchecked_.back();
        unchecked_[slot]->unchecked_slot = slot;
        unchecked_.pop_back();
        node->unchecked_slot = LibevIoNode::not_queued;
    }

    static void on_prepare(struct ev_loop*, ev_prepare* prepare, int) noexcept {
        static_cast<LibevLoop*>(prepare->data)->check_started_fds();
    }

    void check_started_fds() noexcept {
        // No user code runs in here (fed events run after we return), so
        // the list cannot change under the loop.
        for (LibevIoNode* node : unchecked_) {
            node->unchecked_slot = LibevIoNode::not_queued;
            if (::fcntl(node->fd, F_GETFD) != -1 || errno != EBADF) continue;
            ev_ref(loop_);
            node->started = false;
            ev_io_stop(loop_, &node->io);
            ev_feed_event(loop_, &node->io, EV_ERROR | EV_READ | EV_WRITE);
        }
        unchecked_.clear();
        ev_ref(loop_);
        ev_prepare_stop(loop_, &prepare_);
    }

    // When libev finds an fd unusable (a closed fd, say) it stops every ev_io
    // on it and feeds them EV_ERROR. That stop took a unit from the activity
    // count which our ev_unref had already taken; give it back.
    void reconcile(LibevIoNode* node) noexcept {
        if (node->started && !ev_is_active(&node->io)) {
            ev_ref(loop_);
            node->started = false;
        }
    }

    static void on_io(struct ev_loop*, ev_io* io, int revents) noexcept {
        auto* node = static_cast<LibevIoNode*>(io->data);
        static_cast<LibevLoop*>(node->loop)->io_ready(node, revents);
    }

    void io_ready(LibevIoNode* node, int revents) noexcept {
        refresh_now();
        DispatchScope scope(*this);
        static_assert(EV_READ == static_cast<int>(Io::read) && EV_WRITE == static_cast<int>(Io::write));
        Io ready = static_cast<Io>(revents & (EV_READ | EV_WRITE));
        if (revents & EV_ERROR) {
            // libev stops a watcher only together with feeding it EV_ERROR.
            reconcile(node);
            ready = Io::read_write;  // the next read() or write() tells what failed
        }
        // After EV_ERROR the native watcher stays stopped: the error is
        // reported once, and again only after set_events() or a restart.
        dispatch_io(node, ready);
    }

    // ---- timers ------------------------------------------------------------

    void timers_changed() noexcept override { arm_timer(); }

    void arm_timer() noexcept {
        const TimePoint deadline = next_deadline();
        if (ev_is_active(&timer_) && deadline == armed_for_) return;
        disarm_timer();
        if (deadline == TimePoint::max()) return;
        armed_for_ = deadline;
        const TimePoint clock_now = Clock::now();
        double delay = deadline > clock_now ? std::chrono::duration<double>(deadline - clock_now).count() : 0.0;
        // libev counts the delay from its cached loop time, which lags behind
        // the clock by however long this iteration has run so far; adding the
        // lag is libev's documented correction (ev.pod, "ev_timer").
        const double lag = ev_time() - ev_now(loop_);
        if (lag > 0) delay += lag;
        // Repeating, so that libev never stops it by itself (a one-shot timer
        // is stopped before its callback runs, which would unbalance the
        // activity count); on_timer re-arms it every time anyway.
        ev_timer_set(&timer_, delay, 3600.0);
        ev_timer_start(loop_, &timer_);
        ev_unref(loop_);
    }

    void disarm_timer() noexcept {
        if (!ev_is_active(&timer_)) return;
        ev_ref(loop_);
        ev_timer_stop(loop_, &timer_);
    }

    static void on_timer(struct ev_loop*, ev_timer* timer, int) noexcept {
        auto* self = static_cast<LibevLoop*>(timer->data);
        self->update_now();
        // Re-arm unconditionally afterwards: should libev's clock have run a
        // hair ahead of ours, no timer is due yet and core leaves the native
        // timer alone, so we must aim it again.
        self->armed_for_ = TimePoint::min();
        self->run_due_timers();
        self->arm_timer();
    }

    // ---- signals -----------------------------------------------------------

    void signal_install(int signo) override {
        auto slot = std::make_unique<SignalSlot>();
        ::sigaction(signo, nullptr, &slot->previous);
        ev_signal_init(&slot->watcher, on_signal, signo);
        slot->watcher.data = this;
        signals_.push_back(std::move(slot));
        ev_signal_start(loop_, &signals_.back()->watcher);
        ev_unref(loop_);
    }

    void signal_uninstall(int signo) noexcept override {
        for (auto it = signals_.begin(); it != signals_.end(); ++it) {
            if ((*it)->watcher.signum != signo) continue;
            ev_ref(loop_);
            ev_signal_stop(loop_, &(*it)->watcher);
            // libev resets the disposition to SIG_DFL when the last ev_signal
            // of that number in the process stops; put back what was there
            // before us. If libev kept its handler (a host's ev_signal still
            // watches the number), leave it.
            struct sigaction current {};
            ::sigaction(signo, nullptr, &current);
            if (current.sa_handler == SIG_DFL && (current.sa_flags & SA_SIGINFO) == 0)
                ::sigaction(signo, &(*it)->previous, nullptr);
            signals_.erase(it);
            return;
        }
    }

    static void on_signal(struct ev_loop*, ev_signal* watcher, int) noexcept {
        auto* self = static_cast<LibevLoop*>(watcher->data);
        self->refresh_now();
        self->dispatch_signal(watcher->signum);
    }

    // ---- running -----------------------------------------------------------

    void alive_changed(bool alive) noexcept override {
        if (alive == holding_ref_) return;
        holding_ref_ = alive;
        if (alive)
            ev_ref(loop_);
        else
            ev_unref(loop_);
    }

    void wake() noexcept override { ev_async_send(loop_, &async_); }

    static void on_async(struct ev_loop*, ev_async* async, int) noexcept {
        auto* self = static_cast<LibevLoop*>(async->data);
        self->refresh_now();
        self->run_posted();
    }

    static void on_check(struct ev_loop*, ev_check* check, int) noexcept {
        static_cast<LibevLoop*>(check->data)->new_now();
    }

    // Owned loops: the first callback of each iteration refreshes now()
    // (adopted ones have the check watcher do it; see the top of the file).
    void refresh_now() noexcept {
        if (!owned_) return;
        const unsigned int iteration = ev_iteration(loop_);
        if (iteration == now_iteration_) return;
        now_iteration_ = iteration;
        new_now();
    }

    // A failure breaks any ev_run; a plain stop() only the one run() of an
    // owned loop runs (a host's ev_run must not end because of it: see
    // libev.hpp). EVBREAK_ONE ends the innermost ev_run only, so a
    // run_once() nested in a host callback leaves the host's going.
    void break_iteration() noexcept override {
        if (failed() || in_run_) ev_break(loop_, EVBREAK_ONE);
    }

    void iterate(bool block) override {
        DispatchScope scope(*this);
        ev_run(loop_, block ? EVRUN_ONCE : EVRUN_NOWAIT);
    }

    // An owned loop's run() is one ev_run: entering ev_run costs about a
    // hundred instructions per call. It returns when our one ev_ref goes
    // (alive() turned false) or at a break (stop() or a failure), after the
    // iteration, as core's run() would. Every callback brackets its own
    // dispatch, so released watchers are still freed as they go.
    void run_iterations() override {
        if (!owned_) {
            iterate(true);
            return;
        }
        in_run_ = true;
        ev_run(loop_, 0);
        in_run_ = false;
    }

    struct ev_loop* loop_;
    bool owned_;
    bool holding_ref_ = false;  // the one ev_ref that mirrors alive()
    bool in_run_ = false;       // run_iterations()' ev_run is on the stack
    TimePoint armed_for_ = TimePoint::min();
    unsigned int now_iteration_ = static_cast<unsigned int>(-1);  // owned: the iteration now() was read in
    ev_async async_{};
    ev_check check_{};
    ev_timer timer_{};
    ev_prepare prepare_{};
    std::vector<LibevIoNode*> unchecked_;  // started since the last iteration
    std::size_t io_nodes_ = 0;             // live, for unchecked_'s capacity
    std::vector<std::unique_ptr<SignalSlot>> signals_;
};

}  // namespace

std::unique_ptr<EventLoop> make_libev_loop() {
    struct ev_loop* loop = ev_loop_new(EVFLAG_AUTO);
    if (loop == nullptr)
        throw std::runtime_error("make_libev_loop: ev_loop_new(EVFLAG_AUTO) failed: no usable backend");
    try {
        return std::make_unique<LibevLoop>(loop, true);
    } catch (...) {
        ev_loop_destroy(loop);
        throw;
    }
}

std::unique_ptr<EventLoop> make_libev_loop(struct ev_loop* host) {
    if (host == nullptr) throw std::invalid_argument("make_libev_loop: the host loop is null");
    return std::make_unique<LibevLoop>(host, false);
}

}  // namespace anyloop
