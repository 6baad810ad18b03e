// The backend-independent half of every EventLoop: watcher bookkeeping, the
// timer heap, post(), keep-alive accounting and failure propagation.
#include <anyloop/core/event_loop.hpp>

#include <algorithm>
#include <csignal>
#include <stdexcept>
#include <string>
#include <utility>

namespace anyloop {

namespace {

// Signals are process-wide, so which loop owns a signal number is the one
// piece of global state: it lets a second loop's claim fail loudly instead
// of silently stealing the handler.
std::mutex signal_claims_mutex;
EventLoop* signal_claims[NSIG] = {};

void claim_signal(int signo, EventLoop* loop) {
    std::lock_guard lock(signal_claims_mutex);
    if (signal_claims[signo] != nullptr && signal_claims[signo] != loop) {
        throw std::logic_error("signal " + std::to_string(signo) +
                               " is already watched by another loop; a signal belongs to one loop at a time");
    }
    signal_claims[signo] = loop;
}

void release_signal(int signo) noexcept {
    std::lock_guard lock(signal_claims_mutex);
    signal_claims[signo] = nullptr;
}

}  // namespace

EventLoop::EventLoop() : now_(Clock::now()) {}

EventLoop::~EventLoop() {
    // A backend calls shutdown_watchers() in its own destructor; this is the
    // fallback that leaves any remaining handles inert rather than dangling.
    while (graveyard_ != nullptr) {
        detail::WatcherNode* node = graveyard_;
        graveyard_ = node->next_released;
        delete node;
    }
    while (parked_ != nullptr) delete std::exchange(parked_, parked_->next);
    for (detail::WatcherNode* node = live_nodes_; node != nullptr; node = node->next_live) node->loop = nullptr;
    // Last, when every watcher is inert: the hooks may destroy some.
    std::map<std::uint64_t, std::function<void()>> hooks = std::move(destroy_hooks_);
    for (auto& [token, fn] : hooks) {
        try {
            fn();
        } catch (...) {
            // A destructor cannot report it; the object is gone either way.
        }
    }
}

std::uint64_t EventLoop::at_destroy(std::function<void()> fn) {
    const std::uint64_t token = next_destroy_hook_++;
    destroy_hooks_.emplace(token, std::move(fn));
    return token;
}

void EventLoop::cancel_at_destroy(std::uint64_t token) noexcept { destroy_hooks_.erase(token); }

void EventLoop::shutdown_watchers() noexcept {
    for (detail::WatcherNode* node = live_nodes_; node != nullptr; node = node->next_live) {
        switch (node->kind) {
            case detail::WatcherNode::Kind::io: stop_io(static_cast<detail::IoNode*>(node)); break;
            case detail::WatcherNode::Kind::timer: stop_timer(static_cast<detail::TimerNode*>(node)); break;
            case detail::WatcherNode::Kind::signal: stop_signal(static_cast<detail::SignalNode*>(node)); break;
        }
    }
    free_released();
    detail::WatcherNode* node = live_nodes_;
    while (node != nullptr) {
        detail::WatcherNode* next = node->next_live;
        node->loop = nullptr;
        node->prev_live = node->next_live = nullptr;
        node = next;
    }
    live_nodes_ = nullptr;
}

// ---- running ----------------------------------------------------------------

namespace {
void check_not_nested(int dispatch_depth, const char* what) {
    if (dispatch_depth > 0)
        throw std::logic_error(std::string(what) + " called from inside a callback of the same loop; "
                               "return from the callback (or post()) instead");
}
}  // namespace

void EventLoop::run() {
    check_not_nested(dispatch_depth_, "EventLoop::run");
    rethrow_failure();
    update_now();  // the cache may be stale from long before this run
    stop_requested_ = false;
    while (!stop_requested_ && alive()) run_iterations();
    stop_requested_ = false;
    rethrow_failure();
}

bool EventLoop::run_once(bool block) {
    check_not_nested(dispatch_depth_, "EventLoop::run_once");
    rethrow_failure();
    iterate(block && alive());
    rethrow_failure();
    return alive();
}

void EventLoop::stop() noexcept {
    stop_requested_ = true;
    break_iteration();
}

void EventLoop::record_failure(std::exception_ptr error) noexcept {
    if (!failure_) failure_ = std::move(error);
    stop_requested_ = true;
    break_iteration();
}

void EventLoop::rethrow_failure() {
    if (failure_) {
        std::exception_ptr error = std::exchange(failure_, nullptr);
        std::rethrow_exception(error);
    }
}

int EventLoop::ms_until_next_deadline() const noexcept {
    const Duration left = next_deadline() - read_clock();
    if (left <= Duration::zero()) return 0;
    // Round up: waking a little early would only spin with zero timeouts.
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return ms > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(ms);
}

// ---- post -------------------------------------------------------------------

void EventLoop::post(std::function<void()> fn) {
    bool first = false;
    {
        std::lock_guard lock(posted_mutex_);
        posted_.push_back(std::move(fn));
        // Set with the push, cleared with the swap: the flag never says
        // "pending" for a queue the loop already emptied, so alive() is exact.
        first = !posted_pending_.exchange(true, std::memory_order_acq_rel);
    }
    // One wake-up per batch: a post that finds the flag set is sure to be
    // seen, since the loop clears it only when it takes the queue.
    if (first) wake();
}

void EventLoop::run_posted_batch() noexcept {
    std::vector<std::function<void()>> batch;
    {
        std::lock_guard lock(posted_mutex_);
        posted_pending_.store(false, std::memory_order_release);
        batch.swap(posted_);
    }
    for (auto& fn : batch) {
        if (!fn) continue;
        // Nothing can reach `batch` but this loop, so the call needs none
        // of guarded()'s care for replaced callbacks.
        ++dispatch_depth_;
        try {
            fn();
        } catch (...) {
            record_failure(std::current_exception());
        }
        if (--dispatch_depth_ == 0 && graveyard_ != nullptr) free_released();
    }
    batch.clear();
    // Hand the capacity back so steady posting does not allocate vectors.
    std::lock_guard lock(posted_mutex_);
    if (posted_.empty()) posted_.swap(batch);
}

// ---- keep-alive -------------------------------------------------------------

void EventLoop::add_alive(long delta) noexcept {
    const bool was = alive_refs_ > 0;
    alive_refs_ += delta;
    const bool is = alive_refs_ > 0;
    if (was != is) alive_changed(is);
}

void EventLoop::ref() noexcept { add_alive(1); }
void EventLoop::unref() noexcept { add_alive(-1); }

void EventLoop::watcher_activated(detail::WatcherNode* node) noexcept {
    node->active = true;
    ++active_count_;
    if (node->keepalive) add_alive(1);
}

void EventLoop::watcher_deactivated(detail::WatcherNode* node) noexcept {
    node->active = false;
    --active_count_;
    if (node->keepalive) add_alive(-1);
}

void EventLoop::set_keepalive(detail::WatcherNode* node, bool keepalive) noexcept {
    if (node->keepalive == keepalive) return;
    node->keepalive = keepalive;
    if (node->active) add_alive(keepalive ? 1 : -1);
}

// ---- node lifetime ----------------------------------------------------------

void EventLoop::link(detail::WatcherNode* node) noexcept {
    node->loop = this;
    node->next_live = live_nodes_;
    if (live_nodes_ != nullptr) live_nodes_->prev_live = node;
    live_nodes_ = node;
}

void EventLoop::release(detail::WatcherNode* node) noexcept {
    switch (node->kind) {
        case detail::WatcherNode::Kind::io: stop_io(static_cast<detail::IoNode*>(node)); break;
        case detail::WatcherNode::Kind::timer: stop_timer(static_cast<detail::TimerNode*>(node)); break;
        case detail::WatcherNode::Kind::signal: stop_signal(static_cast<detail::SignalNode*>(node)); break;
    }
    if (node->prev_live != nullptr) node->prev_live->next_live = node->next_live;
    else live_nodes_ = node->next_live;
    if (node->next_live != nullptr) node->next_live->prev_live = node->prev_live;
    node->prev_live = node->next_live = nullptr;
    if (dispatch_depth_ > 0) {
        node->next_released = graveyard_;
        graveyard_ = node;
    } else {
        free_node(node);
    }
}

void EventLoop::free_released() noexcept {
    while (graveyard_ != nullptr) {
        detail::WatcherNode* node = graveyard_;
        graveyard_ = node->next_released;
        free_node(node);
    }
}

// ---- callbacks replaced while running ---------------------------------------

namespace {
template <typename Node>
struct Parked final : detail::ParkedCallback {
    using Callback = decltype(Node::callback);
    Parked(Node* target, Callback&& replacement) noexcept : callback(std::move(replacement)) { node = target; }
    void install() noexcept override { static_cast<Node*>(node)->callback = std::move(callback); }
    Callback callback;
};
}  // namespace

template <typename Node, typename Callback>
void EventLoop::replace_callback(Node* node, Callback callback) {
    // Overwriting a running std::function would pull its closure (the
    // captures the running code still reads) from under it.
    if (!node->running) {
        node->callback = std::move(callback);
        return;
    }
    for (detail::ParkedCallback* parked = parked_; parked != nullptr; parked = parked->next) {
        if (parked->node == node) {
            static_cast<Parked<Node>*>(parked)->callback = std::move(callback);
            return;
        }
    }
    auto* parked = new Parked<Node>(node, std::move(callback));
    parked->next = parked_;
    parked_ = parked;
}

void EventLoop::install_parked() noexcept {
    // Called after every callback while anything is parked. A node whose
    // callback is still on the stack (a nested dispatch) keeps waiting; the
    // node itself is alive, since guarded() runs inside a dispatch.
    detail::ParkedCallback** link = &parked_;
    while (detail::ParkedCallback* parked = *link) {
        if (parked->node->running) {
            link = &parked->next;
            continue;
        }
        *link = parked->next;
        parked->install();
        delete parked;
    }
}

void EventLoop::free_node(detail::WatcherNode* node) noexcept {
    if (node->kind == detail::WatcherNode::Kind::io) io_destroy(static_cast<detail::IoNode*>(node));
    else delete node;
}

// ---- I/O --------------------------------------------------------------------

IoWatcher EventLoop::io(int fd, Io events, IoCallback callback) {
    if (fd < 0) throw std::invalid_argument("EventLoop::io: invalid fd " + std::to_string(fd));
    detail::IoNode* node = io_create();
    node->fd = fd;
    node->events = events;
    node->callback = std::move(callback);
    link(node);
    IoWatcher watcher(node);
    start_io(node);
    return watcher;
}

void EventLoop::start_io(detail::IoNode* node) {
    if (node->active) return;
    const auto fd = static_cast<std::size_t>(node->fd);
    if (fd >= fd_owner_.size()) fd_owner_.resize(fd + 64, nullptr);
    if (fd_owner_[fd] != nullptr) {
        throw std::logic_error("fd " + std::to_string(node->fd) +
                               " is already watched by another active IoWatcher on this loop; "
                               "use one watcher with Io::read_write");
    }
    io_start(node);
    fd_owner_[fd] = node;
    watcher_activated(node);
}

void EventLoop::stop_io(detail::IoNode* node) noexcept {
    if (!node->active) return;
    fd_owner_[static_cast<std::size_t>(node->fd)] = nullptr;
    io_stop(node);
    watcher_deactivated(node);
}

void EventLoop::update_io(detail::IoNode* node, Io events) {
    const Io old = node->events;
    if (old == events) return;
    node->events = events;
    if (node->active) io_update(node, old);
}

// ---- timers -----------------------------------------------------------------

TimerWatcher EventLoop::timer(Duration after, TimerCallback callback) {
    return timer(after, Duration::zero(), std::move(callback));
}

TimerWatcher EventLoop::timer(Duration after, Duration repeat, TimerCallback callback) {
    auto* node = new detail::TimerNode;
    node->callback = std::move(callback);
    link(node);
    TimerWatcher watcher(node);
    start_timer(node, after, repeat);
    return watcher;
}

void EventLoop::start_timer(detail::TimerNode* node, Duration after, Duration repeat) {
    // Outside any dispatch of this loop the cache may be old: a host driving
    // an adopted loop runs its own callbacks without telling us, and code
    // between two run() calls may have waited. Inside callbacks it is exact.
    if (dispatch_depth_ == 0) update_now();
    const TimePoint before = next_deadline();
    if (node->active) heap_erase(node);
    else watcher_activated(node);
    node->repeat = repeat < Duration::zero() ? Duration::zero() : repeat;
    node->deadline = now() + (after < Duration::zero() ? Duration::zero() : after);
    node->sequence = timer_sequence_++;
    heap_push(node);
    if (next_deadline() != before) timers_changed();
}

void EventLoop::stop_timer(detail::TimerNode* node) noexcept {
    if (!node->active) return;
    const bool was_first = node->heap_index == 0;
    heap_erase(node);
    watcher_deactivated(node);
    if (was_first) timers_changed();
}

void EventLoop::fire_due_timers() noexcept {
    DispatchScope scope(*this);
    // Timers (re)started by the callbacks below get later sequence numbers
    // and wait for the next iteration, so a zero-delay timer cannot spin here.
    const std::uint64_t limit = timer_sequence_;
    while (!timer_heap_.empty()) {
        detail::TimerNode* node = timer_heap_.front();
        if (node->deadline > now_ || node->sequence >= limit) break;
        if (node->repeat > Duration::zero()) {
            node->deadline += node->repeat;
            if (node->deadline < now_) node->deadline = now_;  // fell behind: do not burst
            node->sequence = timer_sequence_++;
            heap_sift_down(0);
        } else {
            heap_erase(node);
            watcher_deactivated(node);
        }
        guarded(node);
    }
    timers_changed();
}

// A binary min-heap on (deadline, sequence); each node knows its index so
// that stop and restart are O(log n).
namespace {
bool earlier(const detail::TimerNode* a, const detail::TimerNode* b) noexcept {
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->sequence < b->sequence);
}
}  // namespace

void EventLoop::heap_push(detail::TimerNode* node) {
    node->heap_index = timer_heap_.size();
    timer_heap_.push_back(node);
    heap_sift_up(node->heap_index);
}

void EventLoop::heap_erase(detail::TimerNode* node) noexcept {
    const std::size_t index = node->heap_index;
    detail::TimerNode* last = timer_heap_.back();
    timer_heap_.pop_back();
    if (last == node) return;
    timer_heap_[index] = last;
    last->heap_index = index;
    heap_sift_up(index);
    heap_sift_down(last->heap_index);
}

void EventLoop::heap_sift_up(std::size_t index) noexcept {
    detail::TimerNode* node = timer_heap_[index];
    while (index > 0) {
        const std::size_t parent = (index - 1) / 2;
        if (!earlier(node, timer_heap_[parent])) break;
        timer_heap_[index] = timer_heap_[parent];
        timer_heap_[index]->heap_index = index;
        index = parent;
    }
    timer_heap_[index] = node;
    node->heap_index = index;
}

void EventLoop::heap_sift_down(std::size_t index) noexcept {
    const std::size_t size = timer_heap_.size();
    detail::TimerNode* node = timer_heap_[index];
    for (;;) {
        std::size_t child = 2 * index + 1;
        if (child >= size) break;
        if (child + 1 < size && earlier(timer_heap_[child + 1], timer_heap_[child])) ++child;
        if (!earlier(timer_heap_[child], node)) break;
        timer_heap_[index] = timer_heap_[child];
        timer_heap_[index]->heap_index = index;
        index = child;
    }
    timer_heap_[index] = node;
    node->heap_index = index;
}

// ---- signals ----------------------------------------------------------------

SignalWatcher EventLoop::signal(int signo, SignalCallback callback) {
    if (signo <= 0 || signo >= NSIG) throw std::invalid_argument("EventLoop::signal: invalid signal " + std::to_string(signo));
    auto* node = new detail::SignalNode;
    node->signo = signo;
    node->callback = std::move(callback);
    link(node);
    SignalWatcher watcher(node);
    start_signal(node);
    return watcher;
}

void EventLoop::start_signal(detail::SignalNode* node) {
    if (node->active) return;
    bool first = true;
    for (const detail::SignalNode* other : signal_watchers_) first = first && other->signo != node->signo;
    if (first) {
        claim_signal(node->signo, this);
        try {
            signal_install(node->signo);
        } catch (...) {
            release_signal(node->signo);
            throw;
        }
    }
    signal_watchers_.push_back(node);
    watcher_activated(node);
}

void EventLoop::stop_signal(detail::SignalNode* node) noexcept {
    if (!node->active) return;
    bool last = true;
    for (auto it = signal_watchers_.begin(); it != signal_watchers_.end();) {
        if (*it == node) it = signal_watchers_.erase(it);
        else last = last && (*it++)->signo != node->signo;
    }
    if (last) {
        signal_uninstall(node->signo);
        release_signal(node->signo);
    }
    watcher_deactivated(node);
}

void EventLoop::dispatch_signal(int signo) noexcept {
    DispatchScope scope(*this);
    // Copy first: callbacks may start or stop signal watchers.
    std::vector<detail::SignalNode*> targets;
    for (detail::SignalNode* node : signal_watchers_)
        if (node->signo == signo) targets.push_back(node);
    for (detail::SignalNode* node : targets)
        if (node->active) guarded(node, signo);
}

// ---- watcher handles --------------------------------------------------------

namespace {
std::logic_error orphaned(const char* what) {
    return std::logic_error(std::string(what) + ": the watcher is empty or its loop was destroyed");
}
}  // namespace

IoWatcher& IoWatcher::operator=(IoWatcher&& other) noexcept {
    if (this != &other) {
        reset();
        node_ = std::exchange(other.node_, nullptr);
    }
    return *this;
}

void IoWatcher::start() {
    if (node_ == nullptr || node_->loop == nullptr) throw orphaned("IoWatcher::start");
    node_->loop->start_io(node_);
}

void IoWatcher::stop() noexcept {
    if (node_ != nullptr && node_->loop != nullptr) node_->loop->stop_io(node_);
}

void IoWatcher::set_events(Io events) {
    if (node_ == nullptr) throw orphaned("IoWatcher::set_events");
    if (node_->loop != nullptr) node_->loop->update_io(node_, events);
}

void IoWatcher::set_callback(IoCallback callback) {
    if (node_ == nullptr) throw orphaned("IoWatcher::set_callback");
    if (node_->loop != nullptr)
        node_->loop->replace_callback(node_, std::move(callback));
    else
        node_->callback = std::move(callback);
}

void IoWatcher::set_hot_state(const void* address, std::size_t bytes) noexcept {
    if (node_ == nullptr) return;
    const std::size_t lines = address == nullptr ? 0 : (bytes + 63) / 64;
    node_->hot = address;
    node_->hot_lines = static_cast<std::uint8_t>(std::min(lines, detail::hot_prefetch_max_lines));
}

void IoWatcher::set_keepalive(bool keepalive) noexcept {
    if (node_ != nullptr && node_->loop != nullptr) node_->loop->set_keepalive(node_, keepalive);
}

void IoWatcher::reset() noexcept {
    detail::IoNode* node = std::exchange(node_, nullptr);
    if (node == nullptr) return;
    if (node->loop != nullptr) node->loop->release(node);
    else delete node;
}

TimerWatcher& TimerWatcher::operator=(TimerWatcher&& other) noexcept {
    if (this != &other) {
        reset();
        node_ = std::exchange(other.node_, nullptr);
    }
    return *this;
}

void TimerWatcher::start(Duration after, Duration repeat) {
    if (node_ == nullptr || node_->loop == nullptr) throw orphaned("TimerWatcher::start");
    node_->loop->start_timer(node_, after, repeat);
}

void TimerWatcher::again() {
    if (node_ == nullptr || node_->loop == nullptr) throw orphaned("TimerWatcher::again");
    if (node_->repeat > Duration::zero()) node_->loop->start_timer(node_, node_->repeat, node_->repeat);
    else node_->loop->stop_timer(node_);
}

void TimerWatcher::stop() noexcept {
    if (node_ != nullptr && node_->loop != nullptr) node_->loop->stop_timer(node_);
}

void TimerWatcher::set_repeat(Duration repeat) noexcept {
    if (node_ != nullptr) node_->repeat = repeat < Duration::zero() ? Duration::zero() : repeat;
}

void TimerWatcher::set_callback(TimerCallback callback) {
    if (node_ == nullptr) throw orphaned("TimerWatcher::set_callback");
    if (node_->loop != nullptr)
        node_->loop->replace_callback(node_, std::move(callback));
    else
        node_->callback = std::move(callback);
}

void TimerWatcher::set_keepalive(bool keepalive) noexcept {
    if (node_ != nullptr && node_->loop != nullptr) node_->loop->set_keepalive(node_, keepalive);
}

Duration TimerWatcher::remaining() const noexcept {
    if (!active()) return Duration::zero();
    const Duration left = node_->deadline - node_->loop->now();
    return left < Duration::zero() ? Duration::zero() : left;
}

void TimerWatcher::reset() noexcept {
    detail::TimerNode* node = std::exchange(node_, nullptr);
    if (node == nullptr) return;
    if (node->loop != nullptr) node->loop->release(node);
    else delete node;
}

SignalWatcher& SignalWatcher::operator=(SignalWatcher&& other) noexcept {
    if (this != &other) {
        reset();
        node_ = std::exchange(other.node_, nullptr);
    }
    return *this;
}

void SignalWatcher::start() {
    if (node_ == nullptr || node_->loop == nullptr) throw orphaned("SignalWatcher::start");
    node_->loop->start_signal(node_);
}

void SignalWatcher::stop() noexcept {
    if (node_ != nullptr && node_->loop != nullptr) node_->loop->stop_signal(node_);
}

void SignalWatcher::set_callback(SignalCallback callback) {
    if (node_ == nullptr) throw orphaned("SignalWatcher::set_callback");
    if (node_->loop != nullptr)
        node_->loop->replace_callback(node_, std::move(callback));
    else
        node_->callback = std::move(callback);
}

void SignalWatcher::set_keepalive(bool keepalive) noexcept {
    if (node_ != nullptr && node_->loop != nullptr) node_->loop->set_keepalive(node_, keepalive);
}

void SignalWatcher::reset() noexcept {
    detail::SignalNode* node = std::exchange(node_, nullptr);
    if (node == nullptr) return;
    if (node->loop != nullptr) node->loop->release(node);
    else delete node;
}

}  // namespace anyloop
