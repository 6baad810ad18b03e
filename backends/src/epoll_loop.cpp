// The epoll(7) backend: level-triggered, one epoll_wait per iteration into a
// reusable event array, the whole batch dispatched inside NativeLoop's
// DispatchScope. The set, its registrations and the dispatch of a batch are
// EpollSetLoop's (epoll_set.hpp), shared with the Asio backend; this file
// adds the wake-up eventfd to the set and plugs the set's wait into
// NativeLoop's iteration.
#include <anyloop/backends/epoll.hpp>

#include "epoll_set.hpp"
#include "native_loop.hpp"

#include <cerrno>
#include <system_error>

namespace anyloop {
namespace {

class EpollLoop final : public backends::EpollSetLoop<EpollLoop, backends::NativeLoopFor<EpollLoop>> {
public:
    EpollLoop() { watch_own_fd(wake_fd()); }

    std::string_view backend() const noexcept override { return "epoll"; }

private:
    friend class backends::NativeLoopFor<EpollLoop>;
    friend class backends::EpollSetLoop<EpollLoop, backends::NativeLoopFor<EpollLoop>>;

    [[gnu::always_inline]] void wait_and_dispatch(int timeout_ms) {
        if (!wait_and_dispatch_set(timeout_ms)) wait_failed();
    }

    // The set's own fd is the wake-up eventfd.
    void own_fd_ready() noexcept { wake_fd_ready(); }

    [[gnu::noinline]] void wait_failed() {
        if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "epoll_wait");
    }
};

}  // namespace

std::unique_ptr<EventLoop> make_epoll_loop() {
    return std::make_unique<EpollLoop>();
}

}  // namespace anyloop
