// anyloop/core/watchers.hpp — the RAII watcher objects a user holds.
//
// A watcher is a small move-only handle to a node the loop owns. Destroying
// the handle stops the watcher; the node itself is freed by the loop once no
// dispatch can still reach it, which is what makes destroying a watcher (or
// the object that owns it) inside its own callback safe.
#pragma once

#include <anyloop/core/clock.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace anyloop {

class EventLoop;

/// I/O interest and readiness, a small bit set.
enum class Io : std::uint8_t { none = 0, read = 1, write = 2, read_write = 3 };

constexpr Io operator|(Io a, Io b) noexcept {
    return static_cast<Io>(static_cast<std::uint8_t>(a) | static_cast<std::uint8_t>(b));
}
constexpr Io operator&(Io a, Io b) noexcept {
    return static_cast<Io>(static_cast<std::uint8_t>(a) & static_cast<std::uint8_t>(b));
}
constexpr Io operator~(Io a) noexcept {
    return static_cast<Io>(~static_cast<std::uint8_t>(a) & 3U);
}
/// True when `set` contains any bit of `bits`.
constexpr bool has(Io set, Io bits) noexcept { return (set & bits) != Io::none; }

using IoCallback = std::function<void(Io revents)>;
using TimerCallback = std::function<void()>;
using SignalCallback = std::function<void(int signo)>;

namespace detail {

/// What every watcher node carries. Backends derive their own node types
/// from IoNode to keep native state (an ev_io, a struct event, a descriptor)
/// next to ours; timers and signal watchers are kept by core alone.
struct WatcherNode {
    enum class Kind : std::uint8_t { io, timer, signal };
    explicit WatcherNode(Kind k) noexcept : kind(k) {}
    Kind kind;
    EventLoop* loop = nullptr;
    bool active = false;
    bool keepalive = true;
    bool running = false;                  // its callback is on the stack (EventLoop::guarded)
    WatcherNode* next_released = nullptr;  // graveyard link
    WatcherNode* prev_live = nullptr;      // the loop's list of live nodes
    WatcherNode* next_live = nullptr;
    virtual ~WatcherNode() = default;
};

struct IoNode : WatcherNode {
    IoNode() noexcept : WatcherNode(Kind::io) {}
    int fd = -1;
    Io events = Io::none;
    std::uint8_t hot_lines = 0;  // cache lines from `hot` (IoWatcher::set_hot_state)
    const void* hot = nullptr;
    IoCallback callback;
};

/// The most cache lines of hot state a backend prefetches for a watcher
/// (backends/src/batch_prefetch.hpp).
inline constexpr std::size_t hot_prefetch_max_lines = 8;

struct TimerNode : WatcherNode {
    TimerNode() noexcept : WatcherNode(Kind::timer) {}
    TimePoint deadline{};
    Duration repeat{};
    std::uint64_t sequence = 0;      // start order; breaks deadline ties
    std::size_t heap_index = 0;
    TimerCallback callback;
};

struct SignalNode : WatcherNode {
    SignalNode() noexcept : WatcherNode(Kind::signal) {}
    int signo = 0;
    SignalCallback callback;
};

}  // namespace detail

/// Watches one file descriptor for read and/or write readiness.
///
/// Level-triggered: the callback runs on every iteration in which the fd is
/// ready for an event in `events()`. End of file, hang-up and socket errors
/// are reported as readiness for whatever is watched; the following read()
/// or write() tells which. At most one active IoWatcher per fd per loop.
class IoWatcher {
public:
    IoWatcher() noexcept = default;
    IoWatcher(IoWatcher&& other) noexcept : node_(other.node_) { other.node_ = nullptr; }
    IoWatcher& operator=(IoWatcher&& other) noexcept;
    IoWatcher(const IoWatcher&) = delete;
    IoWatcher& operator=(const IoWatcher&) = delete;
    /// Stops the watcher; safe inside its own callback.
    ~IoWatcher() { reset(); }

    /// Starts watching; throws std::logic_error if another active watcher
    /// of this loop holds the same fd.
    void start();
    /// Stops watching. Idempotent. An event already pending in the current
    /// iteration is dropped: the callback does not run after stop().
    void stop() noexcept;
    /// Changes the watched events, also while active (Io::none pauses).
    void set_events(Io events);
    /// Replaces the callback; safe inside the callback itself.
    void set_callback(IoCallback callback);
    /// Whether this watcher keeps run() from returning (ev_ref / ev_unref).
    void set_keepalive(bool keepalive) noexcept;
    /// A hint, never dereferenced: the memory the callback touches first
    /// (up to 8 cache lines from `address`). With many ready fds, a backend
    /// that dispatches a batch prefetches it a few watchers ahead, so that
    /// the state is in cache when the callback runs. nullptr clears it.
    void set_hot_state(const void* address, std::size_t bytes) noexcept;
    /// Stops and releases the watcher, leaving an empty handle.
    void reset() noexcept;

    [[nodiscard]] bool active() const noexcept { return node_ != nullptr && node_->active; }
    [[nodiscard]] Io events() const noexcept { return node_ ? node_->events : Io::none; }
    [[nodiscard]] int fd() const noexcept { return node_ ? node_->fd : -1; }
    explicit operator bool() const noexcept { return node_ != nullptr; }

private:
    friend class EventLoop;
    explicit IoWatcher(detail::IoNode* node) noexcept : node_(node) {}
    detail::IoNode* node_ = nullptr;
};

/// A one-shot or repeating timer on the loop's monotonic clock.
///
/// Deadlines are relative to the loop's cached now(); timers due at the same
/// time fire in the order they were started.
class TimerWatcher {
public:
    TimerWatcher() noexcept = default;
    TimerWatcher(TimerWatcher&& other) noexcept : node_(other.node_) { other.node_ = nullptr; }
    TimerWatcher& operator=(TimerWatcher&& other) noexcept;
    TimerWatcher(const TimerWatcher&) = delete;
    TimerWatcher& operator=(const TimerWatcher&) = delete;
    ~TimerWatcher() { reset(); }

    /// (Re)starts the timer: first expiry `after` from now(), then every
    /// `repeat` when repeat > 0. Safe from any callback, including its own.
    void start(Duration after, Duration repeat = Duration::zero());
    /// libev's ev_timer_again: restarts with `repeat()` as the delay, or
    /// stops the timer when repeat() is zero.
    void again();
    void stop() noexcept;
    void set_repeat(Duration repeat) noexcept;
    void set_callback(TimerCallback callback);
    void set_keepalive(bool keepalive) noexcept;
    void reset() noexcept;

    [[nodiscard]] bool active() const noexcept { return node_ != nullptr && node_->active; }
    [[nodiscard]] Duration repeat() const noexcept { return node_ ? node_->repeat : Duration::zero(); }
    /// Time until the next expiry, or zero when inactive.
    [[nodiscard]] Duration remaining() const noexcept;
    explicit operator bool() const noexcept { return node_ != nullptr; }

private:
    friend class EventLoop;
    explicit TimerWatcher(detail::TimerNode* node) noexcept : node_(node) {}
    detail::TimerNode* node_ = nullptr;
};

/// Watches a POSIX signal. The callback runs in loop context, never inside
/// the signal handler. A signal number belongs to one loop at a time (any
/// number of watchers on that loop); starting it on a second loop throws.
class SignalWatcher {
public:
    SignalWatcher() noexcept = default;
    SignalWatcher(SignalWatcher&& other) noexcept : node_(other.node_) { other.node_ = nullptr; }
    SignalWatcher& operator=(SignalWatcher&& other) noexcept;
    SignalWatcher(const SignalWatcher&) = delete;
    SignalWatcher& operator=(const SignalWatcher&) = delete;
    ~SignalWatcher() { reset(); }

    void start();
    void stop() noexcept;
    void set_callback(SignalCallback callback);
    void set_keepalive(bool keepalive) noexcept;
    void reset() noexcept;

    [[nodiscard]] bool active() const noexcept { return node_ != nullptr && node_->active; }
    [[nodiscard]] int signo() const noexcept { return node_ ? node_->signo : 0; }
    explicit operator bool() const noexcept { return node_ != nullptr; }

private:
    friend class EventLoop;
    explicit SignalWatcher(detail::SignalNode* node) noexcept : node_(node) {}
    detail::SignalNode* node_ = nullptr;
};

}  // namespace anyloop
