// The poll(2) backend: a dense pollfd array, slot 0 for the wake-up eventfd.
#include <anyloop/backends/poll.hpp>

#include "native_loop.hpp"

#include <poll.h>

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

class PollLoop final : public backends::NativeLoop {
public:
    PollLoop() {
        pollfds_.push_back({wake_fd(), POLLIN, 0});
        nodes_.push_back(nullptr);
    }
    ~PollLoop() override { shutdown_watchers(); }

    std::string_view backend() const noexcept override { return "poll"; }

private:
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

    void wait_and_dispatch(int timeout_ms) override {
        const int n = ::poll(pollfds_.data(), pollfds_.size(), timeout_ms);
        update_now();
        if (n < 0) {
            if (errno == EINTR) return;
            throw std::system_error(errno, std::generic_category(), "poll");
        }
        if (n == 0) return;
        ready_.clear();
        if (pollfds_[0].revents != 0) wake_fd_ready();
        for (std::size_t i = 1; i < pollfds_.size(); ++i) {
            const short revents = pollfds_[i].revents;
            if (revents == 0) continue;
            Io io = Io::none;
            if (revents & (POLLIN | POLLPRI)) io = io | Io::read;
            if (revents & POLLOUT) io = io | Io::write;
            // Hang-up, error and a closed fd wake every watched direction;
            // the next read() or write() reports what happened.
            if (revents & (POLLHUP | POLLERR | POLLNVAL)) io = Io::read_write;
            ready_.emplace_back(nodes_[i], io);
        }
        for (auto& [node, io] : ready_) dispatch_io(node, io);
    }

    std::vector<pollfd> pollfds_;
    std::vector<PollNode*> nodes_;
    std::vector<std::pair<PollNode*, Io>> ready_;
};

}  // namespace

std::unique_ptr<EventLoop> make_poll_loop() { return std::make_unique<PollLoop>(); }

}  // namespace anyloop
