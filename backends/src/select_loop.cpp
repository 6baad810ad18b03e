// The select(2) backend: two interest fd_sets kept up to date as watchers
// change and copied for each call, plus a table from fd to watcher. Every fd
// must be below FD_SETSIZE: FD_SET past it writes outside the set, so fds are
// checked where they come in (io_start and the wake-up fd) and nowhere else.
#include <anyloop/backends/select.hpp>

#include "native_loop.hpp"

#include <fcntl.h>
#include <sys/select.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace anyloop {
namespace {

// An fd_set is a bit array of machine words, fd i at bit i % 64 of word
// i / 64 (the layout select(2) shares with the kernel); scanning it a word at
// a time skips 64 idle fds per step.
using Word = unsigned long;
constexpr int word_bits = 8 * sizeof(Word);
static_assert(sizeof(fd_set) * 8 == FD_SETSIZE && FD_SETSIZE % word_bits == 0);

Word word(const fd_set& set, int index) noexcept {
    Word value;
    std::memcpy(&value, reinterpret_cast<const char*>(&set) + static_cast<std::size_t>(index) * sizeof value, sizeof value);
    return value;
}

std::string too_high(const char* what, int fd) {
    return std::string("select backend: ") + what + std::to_string(fd) + " is not below FD_SETSIZE (" +
           std::to_string(FD_SETSIZE) + "); use the poll or epoll backend";
}

class SelectLoop final : public backends::NativeLoopFor<SelectLoop> {
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
    friend class backends::NativeLoopFor<SelectLoop>;

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

    [[gnu::always_inline]] void wait_and_dispatch(int timeout_ms) {
        // select() reads and writes only the words that hold fds below its
        // first argument, so only those are copied and scanned.
        const int words = max_fd_ / word_bits + 1;
        fd_set readable;
        fd_set writable;
        std::memcpy(&readable, &read_interest_, static_cast<std::size_t>(words) * sizeof(Word));
        std::memcpy(&writable, &write_interest_, static_cast<std::size_t>(words) * sizeof(Word));
        timeval timeout{};
        timeval* timeout_ptr = nullptr;
        if (timeout_ms >= 0) {
            timeout.tv_sec = timeout_ms / 1000;
            timeout.tv_usec = (timeout_ms % 1000) * 1000;
            timeout_ptr = &timeout;
        }
        const int n = ::select(max_fd_ + 1, &readable, &writable, nullptr, timeout_ptr);
        new_now();
        if (n <= 0) {
            if (n < 0) wait_failed();
            return;
        }
        // Collected first, then dispatched: dispatch_io skips watchers stopped
        // by an earlier callback, and released nodes live until the end of the
        // DispatchScope.
        ready_.clear();
        for (int index = 0; index < words; ++index) {
            const Word can_read = word(readable, index);
            const Word can_write = word(writable, index);
            for (Word ready = can_read | can_write; ready != 0; ready &= ready - 1) {
                const int bit = std::countr_zero(ready);
                const int fd = index * word_bits + bit;
                if (fd == wake_fd()) {
                    wake_fd_ready();
                    continue;
                }
                Io io = Io::none;
                if ((can_read >> bit) & 1U) io = io | Io::read;
                if ((can_write >> bit) & 1U) io = io | Io::write;
                ready_.emplace_back(watcher_of(fd), io);
            }
        }
        for (auto& [node, io] : ready_) dispatch_io(node, io);
    }

    [[gnu::noinline]] void wait_failed() {
        if (errno == EINTR) return;
        if (errno == EBADF) {
            report_closed_fds();
            return;
        }
        throw std::system_error(errno, std::generic_category(), "select");
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
