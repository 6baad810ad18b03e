#include "native_loop.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <system_error>

namespace anyloop::backends {

namespace {

// What a signal handler may touch: per signal, the eventfd of the loop that
// claimed it and a pending flag. Core guarantees one loop per signal.
std::atomic<int> signal_wake_fd[NSIG];
std::atomic<bool> signal_pending[NSIG];

extern "C" void native_signal_handler(int signo) {
    const int saved_errno = errno;
    signal_pending[signo].store(true, std::memory_order_release);
    const int fd = signal_wake_fd[signo].load(std::memory_order_acquire);
    if (fd >= 0) {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
    }
    errno = saved_errno;
}

}  // namespace

NativeLoop::NativeLoop() : wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd for the loop's wake-up");
}

NativeLoop::~NativeLoop() {
    shutdown_watchers();  // uninstalls signals through the still-intact object
    ::close(wake_fd_);
}

void NativeLoop::wake() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void NativeLoop::wake_fd_ready() noexcept {
    std::uint64_t count = 0;
    [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
    woken_ = true;
}

void NativeLoop::dispatch_pending_signals() noexcept {
    woken_ = false;
    for (std::size_t i = 0; i < installed_signals_.size(); ++i) {
        const int signo = installed_signals_[i];
        if (signal_pending[signo].exchange(false, std::memory_order_acq_rel)) dispatch_signal(signo);
    }
}

void NativeLoop::signal_install(int signo) {
    signal_pending[signo].store(false);
    signal_wake_fd[signo].store(wake_fd_, std::memory_order_release);
    struct sigaction action {};
    action.sa_handler = native_signal_handler;
    sigfillset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    struct sigaction previous {};
    if (::sigaction(signo, &action, &previous) != 0) {
        signal_wake_fd[signo].store(-1);
        throw std::system_error(errno, std::generic_category(), "sigaction for signal " + std::to_string(signo));
    }
    installed_signals_.push_back(signo);
    previous_actions_.push_back(previous);
}

void NativeLoop::signal_uninstall(int signo) noexcept {
    for (std::size_t i = 0; i < installed_signals_.size(); ++i) {
        if (installed_signals_[i] != signo) continue;
        ::sigaction(signo, &previous_actions_[i], nullptr);
        signal_wake_fd[signo].store(-1, std::memory_order_release);
        installed_signals_.erase(installed_signals_.begin() + static_cast<std::ptrdiff_t>(i));
        previous_actions_.erase(previous_actions_.begin() + static_cast<std::ptrdiff_t>(i));
        return;
    }
}

}  // namespace anyloop::backends
