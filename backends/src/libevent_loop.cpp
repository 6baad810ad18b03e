// The libevent 2.1 backend: anyloop's watchers as `struct event`s on an
// event_base that is either ours or a host's.
//
// What libevent gives and what we add:
//  * I/O: one persistent (level-triggered) event per watcher.
//  * Timers: core keeps the heap; one evtimer is armed for its earliest
//    deadline.
//  * post(): an eventfd of ours, because an adopted base may have been made
//    without evthread_use_pthreads() and so cannot be touched from another
//    thread.
//  * Keep-alive: libevent skips events flagged EVLIST_INTERNAL when it counts
//    what keeps event_base_loop running. Every event of ours carries that
//    flag; one extra, counted event (a second read event on the eventfd) is
//    added exactly while anyloop's alive() holds, so the host's count mirrors
//    ours.
//  * EVLOOP_ONCE: libevent also skips internal events when deciding whether
//    an iteration "had an event", so an iteration that ran only internal
//    callbacks would go on waiting. Each callback of ours that did anything
//    therefore activates (once per pass) a counted, never-added "progress"
//    event, which the same pass runs as a no-op and which ends EVLOOP_ONCE.
//  * An owned base is run by nobody but this file, always with
//    EVLOOP_NO_EXIT_ON_EMPTY (libevent's count of events is never asked),
//    so there the I/O events, the hot path, are counted ones: they end
//    EVLOOP_ONCE by themselves and need no progress event. run() on an
//    owned base is one event_base_loop for all its iterations (see
//    run_iterations()).
#include <anyloop/backends/libevent.hpp>

#include <event2/event.h>
#include <event2/event_struct.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace anyloop {
namespace {

class LibeventLoop;

struct LibeventNode final : detail::IoNode {
    explicit LibeventNode(LibeventLoop* loop) noexcept : owner(loop) {}
    LibeventLoop* owner;
    struct event native {};
};

short event_mask(Io events) noexcept {
    short mask = 0;
    if (has(events, Io::read)) mask |= EV_READ;
    if (has(events, Io::write)) mask |= EV_WRITE;
    return mask;
}

// Only valid between event_assign() and event_add(): libevent reads the flag
// when the event enters and leaves its queues, and event_assign() resets it.
void mark_internal(struct event& ev) noexcept { ev.ev_evcallback.evcb_flags |= EVLIST_INTERNAL; }

// libevent routes every signal to one event_base per process (the last one
// to add a signal or start its loop). Two libevent loops over different bases
// with signal watchers would silently lose signals, so the second one fails
// loudly instead. Count of installed signal numbers per claiming base.
std::mutex signal_base_mutex;
struct event_base* signal_base = nullptr;
int signal_base_users = 0;

void claim_signal_base(struct event_base* base) {
    std::lock_guard lock(signal_base_mutex);
    if (signal_base != nullptr && signal_base != base) {
        throw std::logic_error("libevent delivers signals to one event_base at a time; another libevent loop "
                               "over a different event_base already watches signals");
    }
    signal_base = base;
    ++signal_base_users;
}

void release_signal_base() noexcept {
    std::lock_guard lock(signal_base_mutex);
    if (--signal_base_users == 0) signal_base = nullptr;
}

class LibeventLoop final : public EventLoop {
public:
    // On failure the base is left to the caller, owned or not.
    LibeventLoop(struct event_base* base, bool owned) : base_(base), owned_(owned) {
        wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd for the libevent loop's wake-up");
        event_assign(&wake_, base_, wake_fd_, EV_READ | EV_PERSIST, &LibeventLoop::on_wake, this);
        mark_internal(wake_);
        // Same fd and callback as wake_, but counted: added while alive().
        event_assign(&alive_, base_, wake_fd_, EV_READ | EV_PERSIST, &LibeventLoop::on_wake, this);
        evtimer_assign(&timer_, base_, &LibeventLoop::on_timer, this);
        mark_internal(timer_);
        evtimer_assign(&progress_, base_, &LibeventLoop::on_progress, this);
        if (event_add(&wake_, nullptr) != 0) {
            ::close(wake_fd_);
            throw std::runtime_error("libevent: event_add of the wake-up eventfd failed");
        }
    }

    ~LibeventLoop() override {
        shutdown_watchers();  // stops I/O and signal events through this intact object
        for (struct event* ev : {&alive_, &wake_, &timer_, &progress_}) {
            event_del(ev);
            event_debug_unassign(ev);
        }
        for (auto& ev : signal_events_) {
            if (!ev) continue;
            event_del(ev.get());
            event_debug_unassign(ev.get());
        }
        ::close(wake_fd_);
        if (owned_) event_base_free(base_);
    }

    LibeventLoop(const LibeventLoop&) = delete;
    LibeventLoop& operator=(const LibeventLoop&) = delete;

    [[nodiscard]] std::string_view backend() const noexcept override { return "libevent"; }

private:
    // ---- callbacks from libevent ------------------------------------------
    // Each one refreshes now() (libevent 2.1 has no hook before or after its
    // wait), brackets its dispatch in a DispatchScope, and reports progress.
    // Core's dispatch helpers catch every exception, so nothing unwinds into
    // libevent's frames.

    static void on_io(evutil_socket_t, short what, void* arg) noexcept {
        auto* node = static_cast<LibeventNode*>(arg);
        LibeventLoop& loop = *node->owner;
        loop.new_now();
        DispatchScope scope(loop);
        Io revents = Io::none;
        if ((what & EV_READ) != 0) revents = revents | Io::read;
        if ((what & EV_WRITE) != 0) revents = revents | Io::write;
        loop.dispatch_io(node, revents);  // may release node: do not touch it below
        if (!loop.owned_) loop.note_progress();  // owned: the event itself counts
    }

    static void on_wake(evutil_socket_t, short, void* arg) noexcept {
        auto& loop = *static_cast<LibeventLoop*>(arg);
        loop.update_now();
        DispatchScope scope(loop);
        // Drain before running the queue: a post() after this read writes
        // again and wakes the next iteration.
        std::uint64_t count = 0;
        [[maybe_unused]] auto n = ::read(loop.wake_fd_, &count, sizeof count);
        if (!loop.has_posted()) return;
        loop.run_posted();
        loop.note_progress();  // also ends run_iterations() if that emptied the last of alive()
    }

    static void on_timer(evutil_socket_t, short, void* arg) noexcept {
        auto& loop = *static_cast<LibeventLoop*>(arg);
        loop.update_now();
        DispatchScope scope(loop);
        // libevent's default clock is CLOCK_MONOTONIC_COARSE, so it may wake
        // us a few milliseconds early; then nothing is due and we re-arm.
        const bool due = loop.next_deadline() <= loop.now();
        loop.run_due_timers();
        loop.arm_timer();
        if (due) loop.note_progress();
    }

    static void on_signal(evutil_socket_t signo, short, void* arg) noexcept {
        auto& loop = *static_cast<LibeventLoop*>(arg);
        loop.update_now();
        DispatchScope scope(loop);
        loop.dispatch_signal(signo);
        loop.note_progress();
    }

    static void on_progress(evutil_socket_t, short, void* arg) noexcept {
        auto& loop = *static_cast<LibeventLoop*>(arg);
        loop.progress_active_ = false;
        // Queued behind every callback of this pass, so this ends
        // run_iterations() after the iteration, as core's run() would.
        if (loop.in_run_ && !loop.alive()) event_base_loopbreak(loop.base_);
    }

    void note_progress() noexcept {
        if (progress_active_) return;  // already queued to run in this pass
        progress_active_ = true;
        event_active(&progress_, EV_TIMEOUT, 1);
    }

    // ---- I/O --------------------------------------------------------------

    detail::IoNode* io_create() override { return new LibeventNode(this); }

    void io_start(detail::IoNode* node) override { assign_and_add(static_cast<LibeventNode*>(node)); }

    void io_update(detail::IoNode* node, Io) override {
        // event_assign() may only touch an event that is not added; the
        // delete also drops a readiness already queued for the old mask.
        auto* ln = static_cast<LibeventNode*>(node);
        event_del(&ln->native);
        assign_and_add(ln);
    }

    void io_stop(detail::IoNode* node) noexcept override {
        // Also removes the event from libevent's active queue, so a readiness
        // collected in this iteration is not delivered. libevent ignores the
        // EBADF of an fd closed meanwhile.
        event_del(&static_cast<LibeventNode*>(node)->native);
    }

    void io_destroy(detail::IoNode* node) noexcept override {
        auto* ln = static_cast<LibeventNode*>(node);
        event_debug_unassign(&ln->native);
        delete ln;
    }

    void assign_and_add(LibeventNode* node) {
        event_assign(&node->native, base_, node->fd, static_cast<short>(event_mask(node->events) | EV_PERSIST),
                     &LibeventLoop::on_io, node);
        if (!owned_) mark_internal(node->native);  // see the top of the file
        if (node->events == Io::none) return;
        if (event_add(&node->native, nullptr) != 0) {
            throw std::runtime_error("libevent: cannot watch fd " + std::to_string(node->fd) +
                                     " (event_add failed; the backend rejects this kind of fd?)");
        }
    }

    // ---- signals ----------------------------------------------------------

    void signal_install(int signo) override {
        if (signal_events_.empty()) signal_events_.resize(NSIG);
        auto& ev = signal_events_[static_cast<std::size_t>(signo)];
        // Kept after uninstall: a signal event's closure may still be on the
        // stack when a watcher stops itself inside its callback.
        if (!ev) ev = std::make_unique<struct event>();
        claim_signal_base(base_);
        evsignal_assign(ev.get(), base_, signo, &LibeventLoop::on_signal, this);
        mark_internal(*ev);
        if (event_add(ev.get(), nullptr) != 0) {
            release_signal_base();
            throw std::runtime_error("libevent: cannot watch signal " + std::to_string(signo) + " (event_add failed)");
        }
    }

    void signal_uninstall(int signo) noexcept override {
        event_del(signal_events_[static_cast<std::size_t>(signo)].get());  // restores the old handler
        release_signal_base();
    }

    // ---- timers, keep-alive, wake-up, running --------------------------------

    void timers_changed() override { arm_timer(); }

    void arm_timer() noexcept {
        const TimePoint deadline = next_deadline();
        if (deadline == TimePoint::max()) {
            event_del(&timer_);
            return;
        }
        // Far deadlines are clamped (libevent adds the delay to its own
        // clock); the timer then fires early, finds nothing due and re-arms.
        constexpr auto longest = std::chrono::microseconds(std::chrono::hours(24 * 365));
        auto left = std::chrono::ceil<std::chrono::microseconds>(deadline - Clock::now());
        if (left < std::chrono::microseconds::zero()) left = std::chrono::microseconds::zero();
        if (left > longest) left = longest;
        timeval delay{};
        delay.tv_sec = static_cast<decltype(delay.tv_sec)>(left.count() / 1'000'000);
        delay.tv_usec = static_cast<decltype(delay.tv_usec)>(left.count() % 1'000'000);
        event_add(&timer_, &delay);  // replaces an earlier timeout
    }

    void alive_changed(bool alive) override {
        if (alive) {
            event_add(&alive_, nullptr);
        } else {
            event_del(&alive_);
            if (in_run_) note_progress();  // on_progress ends run_iterations()
        }
    }

    void wake() noexcept override {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
    }

    void break_iteration() noexcept override {
        // stop() ends anyloop's own run(); a host driving the base keeps its
        // loop. A failure breaks whichever loop is running so that it
        // surfaces promptly (the next run()/run_once() rethrows it).
        if (iterating_ || failed()) event_base_loopbreak(base_);
    }

    void iterate(bool block) override {
        DispatchScope scope(*this);
        // EVLOOP_ONCE even when not blocking: EVLOOP_NONBLOCK alone repeats
        // until an iteration finds nothing ready, which never happens with a
        // level-triggered watcher on an always-writable socket.
        // EVLOOP_NO_EXIT_ON_EMPTY: our internal and unref'd events are not
        // counted, yet this iteration must poll them.
        int flags = EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY;
        if (!block) flags |= EVLOOP_NONBLOCK;
        iterating_ = true;
        const int result = event_base_loop(base_, flags);
        iterating_ = false;
        // A break can leave the progress event queued; it would only make the
        // next EVLOOP_ONCE return early.
        if (progress_active_) {
            event_del(&progress_);
            progress_active_ = false;
        }
        if (result < 0) {
            throw std::logic_error("libevent: event_base_loop failed; run() and run_once() must not be called "
                                   "while the host's event_base_loop runs on the same event_base");
        }
    }

    // An owned base's run() is one event_base_loop: entering it costs about
    // a hundred instructions per call, and counted I/O events end no
    // EVLOOP_ONCE here. It ends at a break: stop() or a failure
    // (break_iteration()), or on_progress() once alive() turned false.
    // Every callback brackets its own dispatch, so released watchers are
    // still freed as they go.
    void run_iterations() override {
        if (!owned_) {
            iterate(true);
            return;
        }
        iterating_ = in_run_ = true;
        event_base_loop(base_, EVLOOP_NO_EXIT_ON_EMPTY);  // only ever fails while already running
        iterating_ = in_run_ = false;
        if (progress_active_) {
            event_del(&progress_);
            progress_active_ = false;
        }
    }

    struct event_base* base_;
    bool owned_;
    bool iterating_ = false;
    bool progress_active_ = false;  // progress_ is queued and has not run yet
    bool in_run_ = false;           // run_iterations()' event_base_loop is on the stack
    int wake_fd_ = -1;
    struct event wake_ {};
    struct event alive_ {};
    struct event timer_ {};
    struct event progress_ {};
    std::vector<std::unique_ptr<struct event>> signal_events_;  // by signal number
};

}  // namespace

std::unique_ptr<EventLoop> make_libevent_loop() {
    struct event_base* base = event_base_new();
    if (base == nullptr) throw std::runtime_error("libevent: event_base_new failed");
    try {
        return std::make_unique<LibeventLoop>(base, true);
    } catch (...) {
        event_base_free(base);
        throw;
    }
}

std::unique_ptr<EventLoop> make_libevent_loop(struct event_base* host) {
    if (host == nullptr) throw std::invalid_argument("make_libevent_loop: the host's event_base is null");
    return std::make_unique<LibeventLoop>(host, false);
}

}  // namespace anyloop
