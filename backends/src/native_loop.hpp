// NativeLoop: the shared half of the backends anyloop drives itself (poll,
// select, epoll). It owns the wake-up eventfd that post() and signal
// handlers write to, installs signal handlers, and runs one iteration as
//   wait(timeout) -> new_now -> I/O callbacks -> timers -> signals -> posted
// A subclass supplies only the readiness multiplexer.
//
// The iteration is the hot path of every server on these backends, so it is
// a template over the multiplexer (NativeLoopFor): run() spins in one
// function with the multiplexer's wait and dispatch inlined into it, and the
// common iteration — one ready fd, no timer due, nothing posted — is a
// straight line with a handful of checks for the rest.
#pragma once

#include <anyloop/core/event_loop.hpp>

#include <csignal>
#include <vector>

namespace anyloop::backends {

class NativeLoop : public EventLoop {
public:
    ~NativeLoop() override;

protected:
    NativeLoop();

    /// The eventfd every multiplexer must watch for reading.
    [[nodiscard]] int wake_fd() const noexcept { return wake_fd_; }
    /// Call when wake_fd() was reported readable.
    void wake_fd_ready() noexcept;

    /// What follows the I/O callbacks of an iteration: due timers, signals
    /// (only when the eventfd fired) and posted work.
    void finish_iteration() noexcept {
        run_due_timers();
        if (woken_) dispatch_pending_signals();
        run_posted();
    }

private:
    void wake() noexcept final;
    void signal_install(int signo) final;
    void signal_uninstall(int signo) noexcept final;
    void dispatch_pending_signals() noexcept;

    int wake_fd_ = -1;
    bool woken_ = false;
    std::vector<int> installed_signals_;
    std::vector<struct sigaction> previous_actions_;
};

/// The iteration over a concrete multiplexer, which derives from this and
/// defines (not virtual)
///
///   void wait_and_dispatch(int timeout_ms);
///
/// It waits up to `timeout_ms` (-1 forever, 0 not at all), calls
/// new_now() once the wait ends, then dispatch_io() for every ready
/// watcher and wake_fd_ready() if wake_fd() was readable. It runs inside a
/// DispatchScope, so node pointers collected before dispatch stay valid.
template <typename Multiplexer>
class NativeLoopFor : public NativeLoop {
protected:
    NativeLoopFor() = default;

private:
    void iterate(bool block) final {
        DispatchScope scope(*this);
        iteration(block);
    }

    // run()'s body in one call: no virtual call and no register spills per
    // iteration. One DispatchScope spans them all; released watchers are
    // freed after each iteration.
    void run_iterations() final {
        DispatchScope scope(*this);
        do {
            iteration(true);
            free_released_nodes();
        } while (keep_running());
    }

    [[gnu::always_inline]] void iteration(bool block) {
        static_cast<Multiplexer*>(this)->wait_and_dispatch(wait_timeout_ms(block));
        finish_iteration();
    }
};

}  // namespace anyloop::backends
