// The select(2) backend: two interest fd_sets kept up to date as watchers
// change and copied for each call, plus a table from fd to watcher. Every fd
// must be below FD_SETSIZE: FD_SET past it writes outside the set, so fds are
// checked where they come in (io_start and the wake-up fd) and nowhere else.
#include <anyloop/backends/select.hpp>

#include "native_loop.hpp"

#include <fcntl.h>
#include <sys/select.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace anyloop {
namespace {

std::string too_high(const char* what, int fd) {
    return std::string("select backend: ") + what + std::to_string(fd) + " is not below FD_SETSIZE (" +
           std::to_string(FD_SETSIZE) + "); use the poll or epoll backend";
}

class SelectLoop final : public backends::NativeLoop {
public:
    SelectLoop() {
        if (wake_fd() >= FD_SETSIZE) throw std::runtime_error(too_high("the loop's wake-up fd ", wake_fd()));
        FD_ZERO(&read_interest_);
        FD_ZERO(&write_interest_);
        FD_SET(wake_fd(), &read_interest_);
        max_fd_ = wake_fd();
    }
    ~SelectLoop() override { shutdown_watchers(); }

    std::string_view backend() const noexcept override { return "select"; }

private:
    detail::IoNode* io_create() override { return new detail::IoNode; }

    void io_start(detail::IoNode* node) override {
        if (node->fd >= FD_SETSIZE) throw std::invalid_argument(too_high("fd ", node->fd));
        set_interest(node->fd, node->events);
        if (node->fd > max_fd_) max_fd_ = node->fd;
    }

    void io_update(detail::IoNode* node, Io) override { set_interest(node->fd, node->events); }

    void io_stop(detail::IoNode* node) noexcept override {
        set_interest(node->fd, Io::none);
        // Core already forgot this fd's watcher; the highest watched fd may drop.
        while (max_fd_ > wake_fd() && watcher_of(max_fd_) == nullptr) --max_fd_;
    }

    void set_interest(int fd, Io events) noexcept {
        if (has(events, Io::read))
            FD_SET(fd, &read_interest_);
        else
            FD_CLR(fd, &read_interest_);
        if (has(events, Io::write))
            FD_SET(fd, &write_interest_);
        else
            FD_CLR(fd, &write_interest_);
    }

    void wait_and_dispatch(int timeout_ms) override {
        fd_set readable = read_interest_;
        fd_set writable = write_interest_;
        timeval timeout{};
        timeval* timeout_ptr = nullptr;
        if (timeout_ms >= 0) {
            timeout.tv_sec = timeout_ms / 1000;
            timeout.tv_usec = (timeout_ms % 1000) * 1000;
            timeout_ptr = &timeout;
        }
        int n = ::select(max_fd_ + 1, &readable, &writable, nullptr, timeout_ptr);
        update_now();
        if (n < 0) {
            if (errno == EINTR) return;
            if (errno == EBADF) {
                report_closed_fds();
                return;
            }
            throw std::system_error(errno, std::generic_category(), "select");
        }
        ready_.clear();
        // Collected first, then dispatched: dispatch_io skips watchers stopped
        // by an earlier callback, and released nodes live until the end of the
        // DispatchScope.
        for (int fd = 0; fd <= max_fd_ && n > 0; ++fd) {
            Io io = Io::none;
            if (FD_ISSET(fd, &readable)) {
                io = io | Io::read;
                --n;
            }
            if (FD_ISSET(fd, &writable)) {
                io = io | Io::write;
                --n;
            }
            if (io == Io::none) continue;
            if (fd == wake_fd())
                wake_fd_ready();
            else
                ready_.emplace_back(watcher_of(fd), io);
        }
        for (auto& [node, io] : ready_) dispatch_io(node, io);
    }

    // select() fails as a whole with EBADF when any watched fd was closed.
    // Report those fds ready, like POLLNVAL, so their owners' read() or
    // write() sees EBADF and they can stop watching; the others are served
    // on the next iteration.
    void report_closed_fds() {
        ready_.clear();
        for (int fd = 0; fd <= max_fd_; ++fd) {
            detail::IoNode* node = watcher_of(fd);
            if (node == nullptr || node->events == Io::none) continue;
            if (::fcntl(fd, F_GETFD) == -1 && errno == EBADF) ready_.emplace_back(node, Io::read_write);
        }
        // None found: another thread reused the number since, and the next
        // select() will do. Only a lost wake-up fd would make this spin.
        if (ready_.empty() && ::fcntl(wake_fd(), F_GETFD) == -1)
            throw std::system_error(EBADF, std::generic_category(),
                                    "select: the loop's wake-up fd " + std::to_string(wake_fd()) + " was closed");
        for (auto& [node, io] : ready_) dispatch_io(node, io);
    }

    fd_set read_interest_;
    fd_set write_interest_;
    int max_fd_ = -1;                     // highest of the wake-up fd and watched fds
    std::vector<std::pair<detail::IoNode*, Io>> ready_;
};

}  // namespace

std::unique_ptr<EventLoop> make_select_loop() {
    return std::make_unique<SelectLoop>();
}

}  // namespace anyloop
