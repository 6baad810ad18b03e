// The poll(2) backend: a dense pollfd array, slot 0 for the wake-up eventfd.
#include <anyloop/backends/poll.hpp>

#include "batch_prefetch.hpp"
#include "native_loop.hpp"

#include <poll.h>

#include <array>
#include <cerrno>
#include <system_error>
#include <utility>

namespace anyloop {
namespace {

struct PollNode : detail::IoNode {
    std::size_t slot = 0;  // index into pollfds_ while active
};

short poll_mask(Io events) noexcept {
    short mask = 0;
    if (has(events, Io::read)) mask |= POLLIN;
    if (has(events, Io::write)) mask |= POLLOUT;
    return mask;
}

// poll() reports POLLHUP, POLLERR and POLLNVAL even for an empty event mask,
// so a paused (Io::none) watcher on a hung-up socket would end every wait at
// once and spin the loop. A negative fd makes poll() skip the slot entirely.
pollfd poll_entry(const detail::IoNode* node) noexcept {
    return {node->events == Io::none ? -1 : node->fd, poll_mask(node->events), 0};
}

// Hang-up, error and a closed fd wake every watched direction; the next
// read() or write() reports what happened. A table over the six low bits
// (the only ones poll() reports for POLLIN | POLLOUT) saves the branches.
static_assert(POLLIN == 0x01 && POLLPRI == 0x02 && POLLOUT == 0x04 && POLLERR == 0x08 && POLLHUP == 0x10 &&
              POLLNVAL == 0x20);
constexpr auto io_of_bits = [] {
    std::array<Io, 64> table{};
    for (unsigned bits = 0; bits < 64; ++bits) {
        Io io = Io::none;
        if (bits & (POLLIN | POLLPRI)) io = io | Io::read;
        if (bits & POLLOUT) io = io | Io::write;
        if (bits & (POLLHUP | POLLERR | POLLNVAL)) io = Io::read_write;
        table[bits] = io;
    }
    return table;
}();

Io to_io(short revents) noexcept { return io_of_bits[static_cast<unsigned>(revents) & 0x3f]; }

class PollLoop final : public backends::NativeLoopFor<PollLoop> {
public:
    PollLoop() {
        pollfds_.push_back({wake_fd(), POLLIN, 0});
        nodes_.push_back(nullptr);
    }
    ~PollLoop() override { shutdown_watchers(); }

    std::string_view backend() const noexcept override { return "poll"; }

private:
    friend class backends::NativeLoopFor<PollLoop>;

    detail::IoNode* io_create() override { return new PollNode; }

    void io_start(detail::IoNode* node) override {
        auto* pn = static_cast<PollNode*>(node);
        pn->slot = pollfds_.size();
        pollfds_.push_back(poll_entry(node));
        nodes_.push_back(pn);
    }

    void io_update(detail::IoNode* node, Io) override {
        pollfds_[static_cast<PollNode*>(node)->slot] = poll_entry(node);
    }

    void io_stop(detail::IoNode* node) noexcept override {
        // Swap-remove keeps the array dense; ready events were copied out
        // before dispatch, so moving slots here is safe.
        const std::size_t slot = static_cast<PollNode*>(node)->slot;
        const std::size_t last = pollfds_.size() - 1;
        if (slot != last) {
            pollfds_[slot] = pollfds_[last];
            nodes_[slot] = nodes_[last];
            nodes_[slot]->slot = slot;
        }
        pollfds_.pop_back();
        nodes_.pop_back();
    }

    [[gnu::always_inline]] void wait_and_dispatch(int timeout_ms) {
        int n = ::poll(pollfds_.data(), pollfds_.size(), timeout_ms);
        new_now();
        if (n <= 0) {
            if (n < 0) wait_failed();
            return;
        }
        const pollfd* const fds = pollfds_.data();
        if (fds[0].revents != 0) {
            wake_fd_ready();
            if (--n == 0) return;
        }
        if (n == 1) {
            // One ready watcher, the common case: no callback runs before
            // it, so it is dispatched straight from its slot.
            std::size_t slot = 1;
            while (fds[slot].revents == 0) ++slot;
            dispatch_io(nodes_[slot], to_io(fds[slot].revents));
            return;
        }
        // Several: collected first, since a callback that stops a watcher
        // moves another one into its slot; nodes and hot state prefetched
        // ahead of their turn (batch_prefetch.hpp).
        ready_.clear();
        for (std::size_t slot = 1; n > 0; ++slot) {
            if (fds[slot].revents == 0) continue;
            ready_.emplace_back(nodes_[slot], to_io(fds[slot].revents));
            --n;
        }
        const std::size_t count = ready_.size();
        const auto node_at = [this](std::size_t i) { return ready_[i].first; };
        backends::prefetch_batch_start(count, node_at);
        for (std::size_t i = 0; i < count; ++i) {
            backends::prefetch_ahead(i, count, node_at);
            dispatch_io(ready_[i].first, ready_[i].second);
        }
    }

    [[gnu::noinline]] static void wait_failed() {
        if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll");
    }

    std::vector<pollfd> pollfds_;
    std::vector<PollNode*> nodes_;
    std::vector<std::pair<PollNode*, Io>> ready_;
};

}  // namespace

std::unique_ptr<EventLoop> make_poll_loop() { return std::make_unique<PollLoop>(); }

}  // namespace anyloop
