// EpollSetLoop: I/O watchers kept in a level-triggered epoll(7) set that the
// loop owns, shared by the epoll backend (which waits on the set itself) and
// the Asio backend (which gives Asio only the set's descriptor and collects
// the set's events when Asio reports it readable).
//
// A registration carries a token, (generation << 32) | fd, rather than a node
// pointer. The kernel keys a registration by (fd, open file) and drops it only
// when the last descriptor of that file is closed: a watched fd that was
// dup()ed, or inherited by a child, and then closed keeps a registration that
// EPOLL_CTL_DEL can no longer name. Its events must never be turned into a
// pointer to a node that has since been freed, so every token is checked
// against the fd's live watcher, and a token that matches none makes us
// rebuild the epoll set, the only way to get rid of such a registration.
//
// epoll refuses regular files (EPERM); like poll(2), we report them ready
// for everything on every batch.
#pragma once

#include <anyloop/core/event_loop.hpp>

#include "batch_prefetch.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

namespace anyloop::backends {

struct EpollNode : detail::IoNode {
    std::uint32_t registered = 0;  // the mask in the kernel's set; 0: not in the set
    std::uint32_t generation = 0;  // new for every EPOLL_CTL_ADD, so old tokens never match; 0: not in the set
    bool always_ready = false;     // epoll refused the fd (a regular file): report it ready
};

namespace epoll_set_detail {

// The token of the loop's own descriptor (see EpollSetLoop::watch_own_fd);
// its fd half, 0xffffffff, is no fd.
inline constexpr std::uint64_t own_token = ~std::uint64_t{0};

inline std::uint32_t epoll_mask(Io events) noexcept {
    std::uint32_t mask = 0;
    if (has(events, Io::read)) mask |= EPOLLIN;
    if (has(events, Io::write)) mask |= EPOLLOUT;
    return mask;
}

// Hang-up and error come whatever the interest and wake every watched
// direction; dispatch_io masks, the next read() or write() tells which. EOF
// is EPOLLIN (we never ask for EPOLLRDHUP). A table over the five low bits:
// one load instead of a branch and three operations per event.
static_assert(EPOLLIN == 0x01 && EPOLLPRI == 0x02 && EPOLLOUT == 0x04 && EPOLLERR == 0x08 && EPOLLHUP == 0x10);
inline constexpr auto io_of_bits = [] {
    std::array<Io, 32> table{};
    for (std::uint32_t bits = 0; bits < 32; ++bits) {
        Io io = Io::none;
        if (bits & (EPOLLIN | EPOLLPRI)) io = io | Io::read;
        if (bits & EPOLLOUT) io = io | Io::write;
        if (bits & (EPOLLHUP | EPOLLERR)) io = Io::read_write;
        table[bits] = io;
    }
    return table;
}();

inline Io to_io(std::uint32_t revents) noexcept {
    return io_of_bits[revents & 0x1f];
}

inline std::uint64_t token_of(const EpollNode* node) noexcept {
    return (std::uint64_t{node->generation} << 32) | static_cast<std::uint32_t>(node->fd);
}

// Puts the loop's own descriptor into a set, under own_token; epoll_ctl's
// result.
inline int add_own_fd(int epoll_fd, int own_fd) noexcept {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = own_token;
    return ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, own_fd, &event);
}

// A new epoll set holding `own_fd` (none when negative); -1 with errno on
// failure.
inline int open_epoll_set(int own_fd) noexcept {
    const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0 || own_fd < 0) return epoll_fd;
    if (add_own_fd(epoll_fd, own_fd) != 0) {
        const int saved = errno;
        ::close(epoll_fd);
        errno = saved;
        return -1;
    }
    return epoll_fd;
}

}  // namespace epoll_set_detail

/// The I/O half of a loop whose watchers live in an epoll set of its own:
/// core's io_* hooks, and the collection and dispatch of one batch of the
/// set's events. `Base` is the rest of the loop (an EventLoop); `Derived`,
/// the concrete loop, may define (and befriend this class for)
///
///   void own_fd_ready() noexcept;               // watch_own_fd()'s fd was readable
///   bool epoll_set_replacing(int fresh) noexcept;  // rebuild() is about to
///       // swap the set for `fresh` (its fd still open); false keeps the old
///
/// when it needs them; the defaults below do nothing.
template <typename Derived, typename Base>
class EpollSetLoop : public Base {
protected:
    EpollSetLoop() : epoll_fd_(epoll_set_detail::open_epoll_set(-1)), events_(64), event_capacity_(64) {
        if (epoll_fd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1 for the loop's set");
    }
    ~EpollSetLoop() override {
        this->shutdown_watchers();
        ::close(epoll_fd_);
    }

    /// The set's descriptor: changed by a rebuild (see epoll_set_replacing).
    [[nodiscard]] int epoll_fd() const noexcept { return epoll_fd_; }

    /// Adds a descriptor of the loop's own (the wake-up eventfd) to the set,
    /// reported to Derived::own_fd_ready() instead of a watcher.
    void watch_own_fd(int fd) {
        if (epoll_set_detail::add_own_fd(epoll_fd_, fd) != 0)
            throw std::system_error(errno, std::generic_category(), "epoll_ctl(ADD) of the loop's own fd");
        own_fd_ = fd;
    }

    /// Whether any watcher is in the kernel's set (not counting fds epoll
    /// refused).
    [[nodiscard]] bool watching_any() const noexcept { return registered_count_ != 0; }

    /// Whether a watcher of a regular file wants events: the set must be
    /// collected and dispatched at once, as poll(2) would return at once.
    [[nodiscard]] bool always_ready_wanted() const noexcept { return careful_ && any_always_ready_wanted(); }

    /// Waits up to `timeout_ms` for the set's events (0 when a regular file
    /// is watched), calls new_now(), and dispatches the batch: every ready
    /// watcher, and every watcher of a regular file. Call inside a
    /// DispatchScope. False when epoll_wait failed (errno tells why).
    [[gnu::always_inline]] bool wait_and_dispatch_set(int timeout_ms) {
        if (always_ready_wanted()) timeout_ms = 0;
        epoll_event* const events = events_.data();
        const int n = ::epoll_wait(epoll_fd_, events, event_capacity_, timeout_ms);
        this->new_now();
        if (n < 0) return false;
        // The common case is a straight line: a batch whose tokens all name
        // live watchers (or the loop's own fd), no regular files, no batch to
        // check first. Anything else is careful_ and goes the long way.
        if (careful_) {
            dispatch_carefully(n);
            return true;
        }
        if (n == 1) {
            (void)dispatch_fast(0, 1);
        } else if (n > 1 && !dispatch_batch(n)) {
            return true;  // the rest went the long way
        }
        if (n == event_capacity_) grow_events();
        return true;
    }

    // Event i of n on the fast path; false when its token was stale and the
    // rest of the batch went the long way.
    [[gnu::always_inline]] bool dispatch_fast(int i, int n) {
        const epoll_event& event = events_[static_cast<std::size_t>(i)];
        const std::uint64_t token = event.data.u64;
        if (token == epoll_set_detail::own_token) {
            derived().own_fd_ready();
            return true;
        }
        // A token's fd half is below the table's size: the table never
        // shrinks, and it held the fd when the token was registered. It may
        // grow, and move, inside any callback (a watcher for a new fd), so
        // it is looked up afresh for every event.
        auto* node = static_cast<EpollNode*>(this->watchers_by_fd()[static_cast<std::uint32_t>(token)]);
        if (node == nullptr || node->generation != static_cast<std::uint32_t>(token >> 32)) {
            dispatch_rest_carefully(i, n);  // a stale token: the rest the long way
            return false;
        }
        this->dispatch_io(node, epoll_set_detail::to_io(event.events));
        return true;
    }

    // Several ready fds: with many, their state is out of cache, so it is
    // prefetched ahead of its turn (batch_prefetch.hpp). Out of line, so
    // that a batch of one keeps its short path. False as dispatch_fast().
    [[gnu::noinline]] bool dispatch_batch(int n) {
        const auto count = static_cast<std::size_t>(n);
        const auto node_at = [this](std::size_t i) { return node_of(i); };
        backends::prefetch_batch_start(count, node_at);
        for (std::size_t i = 0; i < count; ++i) {
            backends::prefetch_ahead(i, count, node_at);
            if (!dispatch_fast(static_cast<int>(i), n)) return false;
        }
        return true;
    }

    // The node event i names, for prefetching: the one its token's fd has
    // now (a stale token gives a wrong node at worst), null for our own fd.
    [[nodiscard]] const detail::IoNode* node_of(std::size_t i) const noexcept {
        const std::uint64_t token = events_[i].data.u64;
        if (token == epoll_set_detail::own_token) return nullptr;
        return this->watchers_by_fd()[static_cast<std::uint32_t>(token)];
    }

    // ---- core's I/O hooks --------------------------------------------------

    detail::IoNode* io_create() override { return new EpollNode; }

    void io_start(detail::IoNode* node) override {
        auto* en = static_cast<EpollNode*>(node);
        forget_registration(en);
        en->always_ready = false;
        set_interest(en, epoll_set_detail::epoll_mask(node->events));
    }

    void io_update(detail::IoNode* node, Io) override {
        set_interest(static_cast<EpollNode*>(node), epoll_set_detail::epoll_mask(node->events));
    }

    void io_stop(detail::IoNode* node) noexcept override {
        auto* en = static_cast<EpollNode*>(node);
        if (en->always_ready) {
            forget_always_ready(en);
        } else if (en->registered != 0) {
            // EBADF / ENOENT: the fd was closed meanwhile, and with it (unless
            // the file lives on elsewhere, see the top) the registration.
            ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, node->fd, nullptr);
            forget_registration(en);
        }
    }

    // The hooks' defaults (see the class comment).
    void own_fd_ready() noexcept {}
    bool epoll_set_replacing(int /*fresh*/) noexcept { return true; }

private:
    Derived& derived() noexcept { return static_cast<Derived&>(*this); }

    // Brings the kernel's set to `mask` for this node, with no syscall when
    // nothing changes. Io::none leaves the set entirely: hang-up and error are
    // reported even for an empty mask and would wake a paused watcher forever.
    void set_interest(EpollNode* node, std::uint32_t mask) {
        if (node->always_ready || mask == node->registered) return;
        epoll_event event{};
        event.events = mask;
        if (mask == 0) {
            ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, node->fd, nullptr);  // a closed fd is already out
            forget_registration(node);
            return;
        }
        const bool was_registered = node->registered != 0;
        int op = was_registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (op == EPOLL_CTL_ADD) node->generation = next_generation();
        event.data.u64 = epoll_set_detail::token_of(node);
        int result = ::epoll_ctl(epoll_fd_, op, node->fd, &event);
        if (result != 0 && op == EPOLL_CTL_MOD && errno == ENOENT) {
            // The fd was closed and its number reused: watch what it names now,
            // under a new token, as poll and select would.
            op = EPOLL_CTL_ADD;
            node->generation = next_generation();
            event.data.u64 = epoll_set_detail::token_of(node);
            result = ::epoll_ctl(epoll_fd_, op, node->fd, &event);
        } else if (result != 0 && op == EPOLL_CTL_ADD && errno == EEXIST) {
            // A registration of this very file outlived an earlier fd: take it over.
            op = EPOLL_CTL_MOD;
            result = ::epoll_ctl(epoll_fd_, op, node->fd, &event);
        }
        if (result == 0) {
            if (node->registered == 0) ++registered_count_;
            node->registered = mask;
        } else if (op == EPOLL_CTL_ADD && errno == EPERM) {
            forget_registration(node);
            node->always_ready = true;
            always_ready_.push_back(node);
            careful_ = true;
        } else if (was_registered && errno == EBADF) {
            forget_registration(node);  // closed while watched: the kernel forgot it, and so do we
        } else {
            if (!was_registered) forget_registration(node);
            throw std::system_error(errno, std::generic_category(),
                                    std::string("epoll_ctl(") + (op == EPOLL_CTL_ADD ? "ADD" : "MOD") + ") for fd " +
                                        std::to_string(node->fd));
        }
    }

    // Not in the kernel's set: no token matches the node any more.
    void forget_registration(EpollNode* node) noexcept {
        if (node->registered != 0) --registered_count_;
        node->registered = 0;
        node->generation = 0;
    }

    std::uint32_t next_generation() noexcept {
        if (++generation_ == 0) ++generation_;  // 0 never matches a registered node
        return generation_;
    }

    // The node an event belongs to, or null when its registration is no longer
    // the one we made: stopped, paused, re-added or orphaned.
    EpollNode* live_node(std::uint64_t token) const noexcept {
        auto* node = static_cast<EpollNode*>(this->watcher_of(static_cast<int>(static_cast<std::uint32_t>(token))));
        if (node == nullptr || node->generation != static_cast<std::uint32_t>(token >> 32)) return nullptr;
        return node;
    }

    void forget_always_ready(EpollNode* node) noexcept {
        node->always_ready = false;
        for (std::size_t i = 0; i < always_ready_.size(); ++i) {
            if (always_ready_[i] != node) continue;
            always_ready_[i] = always_ready_.back();
            always_ready_.pop_back();
            break;
        }
        careful_ = prescan_next_ || !always_ready_.empty();
    }

    bool any_always_ready_wanted() const noexcept {
        for (const EpollNode* node : always_ready_)
            if (node->events != Io::none) return true;
        return false;
    }

    // The batch of `n` events, with the checks the fast path leaves out.
    // Before the first callback, core's fd → watcher table matches the
    // kernel's set exactly, so a token without a live watcher can only be an
    // orphaned registration: rebuilt at once. After a callback, a token may
    // also have gone stale because that callback stopped, paused or
    // restarted its watcher (looked up again per event for that reason), so
    // an unknown token there is ambiguous: the next batch is checked in full
    // before any callback (an orphan, level-triggered, is reported again; a
    // stopped watcher is not).
    [[gnu::noinline]] void dispatch_carefully(int n) {
        if (prescan_next_) {
            prescan_next_ = false;
            bool orphan = false;
            for (int i = 0; i < n; ++i) {
                const std::uint64_t token = events_[static_cast<std::size_t>(i)].data.u64;
                if (token != epoll_set_detail::own_token && live_node(token) == nullptr) orphan = true;
            }
            if (orphan) rebuild();
        }
        dispatch_rest_carefully(0, n);
    }

    // Events [from, n) of the batch; those before `from` were dispatched by
    // the fast path, which stops at the first stale token.
    [[gnu::noinline]] void dispatch_rest_carefully(int from, int n) {
        bool dispatched = false;
        for (int i = 0; i < from; ++i)
            if (events_[static_cast<std::size_t>(i)].data.u64 != epoll_set_detail::own_token) dispatched = true;
        bool rebuilt = false;
        for (int i = from; i < n; ++i) {
            const epoll_event& event = events_[static_cast<std::size_t>(i)];
            if (event.data.u64 == epoll_set_detail::own_token) {
                derived().own_fd_ready();
            } else if (EpollNode* node = live_node(event.data.u64)) {
                dispatched = true;
                this->dispatch_io(node, epoll_set_detail::to_io(event.events));
            } else if (!dispatched) {
                if (!rebuilt) rebuild();  // keeps tokens: the rest of this batch still dispatches
                rebuilt = true;
            } else {
                prescan_next_ = true;
            }
        }
        if (!always_ready_.empty()) {
            // A copy, since callbacks may start and stop these; nodes released
            // meanwhile wait for the end of the DispatchScope.
            ready_files_ = always_ready_;
            for (EpollNode* node : ready_files_) this->dispatch_io(node, Io::read_write);
        }
        careful_ = prescan_next_ || !always_ready_.empty();
        if (n == event_capacity_) grow_events();
    }

    // A full array may have left events behind: take more next time.
    [[gnu::noinline]] void grow_events() {
        events_.resize(events_.size() * 2);
        event_capacity_ = static_cast<int>(events_.size());
    }

    // Moves every registration into a fresh epoll set, leaving orphaned ones
    // behind with the old set. Tokens are kept, so this batch still dispatches.
    void rebuild() noexcept {
        const int fresh = epoll_set_detail::open_epoll_set(own_fd_);
        if (fresh < 0) return;  // out of fds: orphans stay ignored; retried on their next event
        if (!derived().epoll_set_replacing(fresh)) {
            ::close(fresh);
            return;
        }
        for (detail::IoNode* watcher : this->watchers_by_fd()) {
            auto* node = static_cast<EpollNode*>(watcher);
            if (node == nullptr || node->registered == 0) continue;
            epoll_event event{};
            event.events = node->registered;
            event.data.u64 = epoll_set_detail::token_of(node);
            // Refused: the fd was closed meanwhile.
            if (::epoll_ctl(fresh, EPOLL_CTL_ADD, node->fd, &event) != 0) forget_registration(node);
        }
        ::close(epoll_fd_);
        epoll_fd_ = fresh;
    }

    int epoll_fd_;
    int own_fd_ = -1;  // watch_own_fd()'s, put into a rebuilt set too
    std::uint32_t generation_ = 0;
    bool prescan_next_ = false;  // check the next batch for orphans before dispatching
    bool careful_ = false;       // prescan_next_, or always_ready_ is not empty
    std::vector<epoll_event> events_;
    int event_capacity_;                    // events_.size()
    std::size_t registered_count_ = 0;      // watchers in the kernel's set
    std::vector<EpollNode*> always_ready_;  // active watchers of fds epoll refused
    std::vector<EpollNode*> ready_files_;   // dispatch copy of always_ready_
};

}  // namespace anyloop::backends
