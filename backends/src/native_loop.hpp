// NativeLoop: the shared half of the backends anyloop drives itself (poll,
// select, epoll). It owns the wake-up eventfd that post() and signal
// handlers write to, installs signal handlers, and runs one iteration as
//   wait(timeout) -> update_now -> I/O callbacks -> timers -> signals -> posted
// A subclass supplies only the readiness multiplexer.
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

    /// Waits up to `timeout_ms` (-1 forever, 0 not at all), calls
    /// update_now() once the wait ends, then dispatch_io() for every ready
    /// watcher and wake_fd_ready() if wake_fd() was readable. Runs inside a
    /// DispatchScope, so node pointers collected before dispatch stay valid.
    virtual void wait_and_dispatch(int timeout_ms) = 0;

    /// The eventfd every multiplexer must watch for reading.
    [[nodiscard]] int wake_fd() const noexcept { return wake_fd_; }
    /// Call when wake_fd() was reported readable.
    void wake_fd_ready() noexcept;

private:
    void wake() noexcept final;
    void iterate(bool block) final;
    void signal_install(int signo) final;
    void signal_uninstall(int signo) noexcept final;

    int wake_fd_ = -1;
    bool woken_ = false;
    std::vector<int> installed_signals_;
    std::vector<struct sigaction> previous_actions_;
};

}  // namespace anyloop::backends
