// HandleImpl: everything a Handle is. The public Handle is a pointer to it,
// so that the state can outlive the Handle while one of its callbacks is
// still on the stack, and then linger.
//
// Re-entrancy is managed with one counter, depth_: every entry into the
// Handle (a loop callback, or a public call) holds a DepthGuard while it
// works (through entered()), and the outermost entry finishes with settle(), which flushes
// output gathered meanwhile, runs on_drain, applies the read/write interest
// and, if the Handle was destroyed meanwhile, lingers or frees the state.
// Code that ran a user callback checks flags_.dead / flags_.orphaned before
// touching anything else.
#pragma once

#include <anyloop/handle/handle.hpp>

#include "reader_queue.hpp"
#include "write_queue.hpp"

#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

namespace anyloop::detail {

/// A user callback. While it runs it stays where it is (`running`), and
/// set() parks a replacement (or the release) in `next` until the call
/// returns, so a callback that replaces itself or destroys its Handle never
/// destroys the closure that is running, and calling costs no moves.
/// ready() is what a test of the slot means: whether a call would run
/// something (a running callback that was not replaced counts as unset).
/// `version` tells whether the slot was set meanwhile.
template <typename Fn>
struct CallbackSlot {
    // A call touches fn and the flags, which come first (one cache line
    // when the slot starts one); `next` is rarely used.
    Fn fn;
    unsigned version = 0;
    bool running = false;
    bool replaced = false;  // `next` holds what set() gave during the call
    Fn next;                // set() during the call: installed when it returns
    void set(Fn callback) {
        ++version;
        if (running) {
            next = std::move(callback);
            replaced = true;
        } else {
            fn = std::move(callback);
        }
    }
    [[nodiscard]] bool ready() const noexcept {
        return running ? replaced && static_cast<bool>(next) : static_cast<bool>(fn);
    }
};

/// The states a Handle is rarely in, one bit each in one 16-bit word, so
/// that one test tells whether it is in none of them (quiet()): the echo
/// path's condition. Exactly 16 one-bit fields: no padding bit whose value
/// quiet() could see.
struct HandleFlags {
    bool orphaned : 1 = false;            // the Handle object is gone
    bool dead : 1 = false;                // closed: fatal error or close()
    bool eof : 1 = false;                 // end of file read
    bool user_paused : 1 = false;         // stop_read()
    bool hwm_paused : 1 = false;          // high-water mark reached
    bool write_blocked : 1 = false;       // the last write hit EAGAIN; wait for writability
    bool shutdown_requested : 1 = false;  // push_shutdown()
    bool write_shut : 1 = false;          // shutdown(SHUT_WR) done
    bool input_pending : 1 = false;       // readers may progress: dispatch in settle()
    bool drain_due : 1 = false;           // run on_drain in settle()
    bool layer_shutdown : 1 = false;      // layer_->shutdown() was called
    bool stoptls_requested : 1 = false;
    bool starttls_due : 1 = false;        // run on_starttls(true)
    bool stoptls_due : 1 = false;         // run on_stoptls
    bool not_socket : 1 = false;          // a pipe or tty (!is_socket_): no send(), no quick path
    bool unused : 1 = false;
    /// Whether none is set.
    [[nodiscard]] bool quiet() const noexcept {
        std::uint16_t word;
        std::memcpy(&word, this, sizeof word);
        return word == 0;
    }
};
static_assert(sizeof(HandleFlags) == sizeof(std::uint16_t) && std::is_trivially_copyable_v<HandleFlags>);

class HandleImpl;

/// The fd as the layer reads and writes it itself (StreamTransport; TLS's
/// BIO), on the Handle's terms: reads only while read_through_transport()
/// allows them, writes only inside an entry when nothing queued must go
/// first. What happened to the fd is noted here and acted on once the
/// layer's call has returned (handle_transport.cpp).
class LayerTransport final : public StreamTransport {
public:
    explicit LayerTransport(HandleImpl& handle) noexcept : handle_(handle) {}
    std::size_t receive(std::span<std::byte> buffer) override;
    std::size_t send(std::span<const std::byte> bytes) override;

    bool attached = false;       // the layer took it (StreamLayer::attach_transport)
    bool reads_allowed = false;  // inside read_through_transport()
    bool drained = false;        // a read came back short: the socket is empty
    bool eof = false;            // a read returned end of file
    int error = 0;               // errno of a failed read or write
    bool read_error = false;     // `error` came from a read
    std::size_t sent = 0;        // written since pump_layer() last counted

private:
    HandleImpl& handle_;
};

class HandleImpl {
public:
    HandleImpl(Handle& owner, EventLoop& loop, int fd, const HandleOptions& options);
    ~HandleImpl();
    HandleImpl(const HandleImpl&) = delete;
    HandleImpl& operator=(const HandleImpl&) = delete;

    /// ~Handle: no callback runs from now on; the state lingers or is freed
    /// once no entry into the Handle is on the stack.
    void orphan() noexcept;

    // ---- what Handle's public functions do (handle.cpp) --------------------
    void push_read(Reader&& reader, bool front);
    void push_write(std::string_view bytes, std::string* owned) {
        if (gathers(bytes.size())) {
            // The echo case: a small write inside a callback, gathered for
            // the one send settle() makes when the callback's entry ends.
            queue_.append_to_flat(bytes);
            // The queue grew: a pause may start (quiet means none runs yet).
            if (options_.high_water_mark > 0 && queue_.size() >= options_.high_water_mark) flags_.hwm_paused = true;
            if (options_.wbuf_max > 0) check_wbuf_max();
            return;
        }
        push_write_slow(bytes, owned);
    }
    void push_write_slow(std::string_view bytes, std::string* owned);
    /// Whether push_write() just copies `size` bytes into the queue's flat
    /// buffer: inside a callback, they fit, no layer, and the Handle quiet
    /// (open for writing; push_write_slow() gathers in the other cases
    /// where that is right).
    [[nodiscard]] bool gathers(std::size_t size) const noexcept {
        return depth_ > 0 && flags_.quiet() && !layer_ && queue_.flat_room() >= size;
    }
    void push_shutdown();
    void set_paused(bool paused);
    void input_changed();
    void interest_changed();
    void set_layer(std::unique_ptr<StreamLayer> layer);
    std::unique_ptr<StreamLayer> release_layer();
    void starttls(TlsMode mode, const std::shared_ptr<TlsLayerFactory>& factory, const std::string& peername);
    void stoptls();
    void close_now() noexcept;
    void arm_timer();
    /// After timeout, rtimeout or wtimeout changed. Without any, progress
    /// was not stamped: a timeout set then counts from now.
    void timeouts_changed();
    [[nodiscard]] bool any_timeout() const noexcept {
        return options_.timeout > Duration::zero() || options_.rtimeout > Duration::zero() ||
               options_.wtimeout > Duration::zero();
    }
    void update_backpressure() noexcept;
    void apply_socket_option(int level, int name, bool on) noexcept;
    [[nodiscard]] bool reading_wanted() const noexcept;

    // ---- state ---------------------------------------------------------------
    // Laid out for the echo path (read_quick(), push_write(), settle_quick()):
    // with 1000 connections each event finds the Handle out of cache, so
    // what that path touches sits in few cache lines, in the order it is
    // touched: the scalars (line 0), on_read_'s callable and state (line 1),
    // the read buffer (line 2), the readers' count and on_drain_'s test
    // (line 3), the write queue's header and flat buffer (from line 5), the
    // options the path reads (the first line of options_). The rest is cold.
    Handle* owner_;
    std::unique_ptr<StreamLayer> layer_;  // ~HandleImpl resets it first: it may use transport_
    EventLoop& loop_;
    std::size_t read_size_ = 0;
    int fd_;
    int depth_ = 0;
    unsigned small_reads_ = 0;
    HandleFlags flags_;
    Io io_events_ = Io::none;
    bool is_socket_ = true;
    bool dispatching_ = false;      // dispatch_input() is on the stack
    bool read_wanted_ = false;      // interest as of the last update_interest()
    bool write_wanted_ = false;
    bool layer_ready_ = false;      // layer_->established() was seen (and reported)
    bool timed_ = false;            // timeout, rtimeout or wtimeout set: progress is time-stamped

    alignas(64) CallbackSlot<Handle::Callback> on_read_;
    ReadBuffer rbuf_;
    ReaderQueue readers_;
    CallbackSlot<Handle::Callback> on_drain_;
    alignas(64) WriteQueue queue_;  // bytes for the socket
    alignas(64) HandleOptions options_;

    CallbackSlot<Handle::Callback> on_eof_;
    CallbackSlot<Handle::ErrorCallback> on_error_;
    CallbackSlot<Handle::Callback> on_timeout_;
    CallbackSlot<Handle::Callback> on_rtimeout_;
    CallbackSlot<Handle::Callback> on_wtimeout_;
    CallbackSlot<Handle::StartTlsCallback> on_starttls_;
    CallbackSlot<Handle::Callback> on_stoptls_;

    WriteQueue plain_;   // with a layer: plaintext the layer has not taken yet
    LayerTransport transport_{*this};
    WriteQueue after_layer_;  // queued after stoptls(): goes out plain once the layer is gone
    std::string layer_rest_;   // socket input the closed layer did not take: plain input after it
    TimePoint layer_since_;    // when the layer was installed (the TLS handshake timeout)
    IoWatcher io_;       // created on first use
    TimerWatcher timer_; // the one timeout timer; created with the Handle
    TimePoint last_activity_;
    TimePoint last_read_;
    TimePoint last_write_;

    // ---- entry points (handle_io.cpp) ---------------------------------------
    void on_io(Io revents);
    void on_timer();
    void settle();
    /// settle()'s common case, at depth 0: a quiet plain socket Handle whose
    /// callbacks only gathered output. Sends it; true when that settled
    /// everything: no on_drain to run, and the interest (and the timeouts'
    /// view of it) is what update_interest() would leave.
    bool settle_quick() {
        if (!flags_.quiet() || layer_ || !queue_.flat_only()) return false;
        if (!queue_.empty()) {
            entered([&] { send_flat(); });
            // At depth 0 no callback runs: fn is what ready() would test.
            if (flags_.drain_due && !on_drain_.fn) flags_.drain_due = false;
            if (!flags_.quiet()) return false;  // blocked, failed, or on_drain due
        }
        // Quiet, so the queue is empty and reading is wanted as long as
        // something takes the input. Open, io_events_ is the interest
        // read_wanted_ and write_wanted_ describe (update_interest() sets
        // them together).
        const bool want_read = static_cast<bool>(on_read_.fn) || !readers_.empty();
        return io_events_ == (want_read ? Io::read : Io::none);
    }

    // ---- reading (handle_read.cpp) -------------------------------------------
    void read_ready();
    void read_quick();
    /// Whether a read event may take read_quick(): an entry from the loop
    /// into a quiet plain socket Handle with only on_read and nothing
    /// buffered either way (nor read memory held, which the general path
    /// trims).
    [[nodiscard]] bool quick_read_ok() const noexcept {
        // At depth 0 no callback runs, so on_read_.fn is what ready() would test.
        // Between entries input is never borrowed, so a buffer without
        // storage is empty.
        return depth_ == 0 && flags_.quiet() && !layer_ && static_cast<bool>(on_read_.fn) &&
               readers_.empty() && rbuf_.capacity() == 0 && queue_.empty();
    }
    bool take_input(bool dispatch);
    bool after_layer_input();
    /// Copies input still borrowed from a stack buffer into storage.
    static void keep_borrowed_input(ReadBuffer& input) noexcept {
        if (input.borrowed()) copy_borrowed_input(input);
    }
    static void copy_borrowed_input(ReadBuffer& input) noexcept;
    void read_failed(int error);
    /// Progress, for the timeouts (none set: nothing to record).
    void stamp_read() noexcept {
        if (timed_) last_activity_ = last_read_ = loop_.now();
    }
    void stamp_write() noexcept {
        if (timed_) last_activity_ = last_write_ = loop_.now();
    }
    /// Bookkeeping of a read that brought `got` of `asked` bytes.
    void note_read(std::size_t got, std::size_t asked) noexcept {
        stamp_read();
        // Small reads are counted only while read_size_ is above the option.
        if (got >= asked || read_size_ > options_.read_size) adapt_read_size(got, asked);
    }
    void read_through_transport(std::span<char> spill);
    void dispatch_input();
    bool run_front_reader();
    bool deliver(std::size_t offset, std::size_t length, std::size_t consume);
    void end_of_input();
    void feed_layer(const char* bytes, std::size_t size, std::span<char> scratch = {});
    void layer_input_done(const char* rest, std::size_t rest_size);
    void check_layer_input();
    void layer_input_closed();
    void finish_stoptls();
    void report_layer_events();
    /// Whether the layer had more plaintext for the readers (and now added
    /// it to the input): OpenSSL may hold records the socket no longer signals.
    bool layer_has_more() {
        return layer_ && !flags_.dead && layer_->has_buffered_input() && drain_layer_plaintext() > 0;
    }
    std::size_t drain_layer_plaintext(std::span<char> scratch = {});
    void adapt_read_size(std::size_t got, std::size_t asked) noexcept;

    // ---- writing (handle_io.cpp) ---------------------------------------------
    void write_now(std::string_view bytes, std::string* owned);
    void flush();
    void send_flat();
    bool pump_layer(std::size_t& written);
    bool queue_layer_output();
    bool layer_failed();
    void write_failed(int error);
    void after_write(std::size_t written);
    void do_shutdown() noexcept;
    void check_wbuf_max();
    [[nodiscard]] std::size_t queued_bytes() const noexcept {
        return queue_.size() + plain_.size() + after_layer_.size();
    }

    // ---- the rest (handle_io.cpp) ------------------------------------------
    void update_interest();
    void apply_events(Io events);
    void check_timeouts();
    void fire_timeout(CallbackSlot<Handle::Callback>& slot, const char* name, Duration limit);
    void fail(std::error_code error, const std::string& message, bool fatal);
    void unwound() noexcept;
    void finish_orphan() noexcept;
    void clear_callbacks() noexcept;
    [[nodiscard]] std::string where() const;

    template <typename Fn, typename... Args>
    void invoke(CallbackSlot<Fn>& slot, Args&&... args);
    /// invoke() of a set slot that is not running.
    template <typename Fn, typename... Args>
    void call_idle(CallbackSlot<Fn>& slot, Args&&... args);
    template <typename Body>
    void entered(Body&& body);
};

/// Counts an entry into the Handle for the duration of a scope. Entries
/// hold it through HandleImpl::entered(), which also deals with exceptions.
class DepthGuard {
public:
    explicit DepthGuard(HandleImpl& handle) noexcept : handle_(handle) { ++handle_.depth_; }
    ~DepthGuard() { --handle_.depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

private:
    HandleImpl& handle_;
};

/// Runs `body` as an entry into the Handle (depth_ counted). On the normal
/// path the caller calls settle() afterwards; when an exception from a user
/// callback unwinds the outermost entry, what must not be lost is finished
/// here (freeing an orphaned state, keeping the interest right) without
/// running any callback, and the exception goes on. The try block costs
/// nothing on the normal path (table-driven unwinding), unlike asking
/// std::uncaught_exceptions() at every entry.
template <typename Body>
void HandleImpl::entered(Body&& body) {
    try {
        DepthGuard guard(*this);
        body();
    } catch (...) {
        if (depth_ == 0) unwound();
        throw;
    }
}

inline bool HandleImpl::reading_wanted() const noexcept {
    if (flags_.dead || flags_.eof || flags_.user_paused || flags_.hwm_paused) return false;
    return on_read_.ready() || !readers_.empty() || (layer_ && (flags_.stoptls_requested || layer_->wants_input()));
}

inline void HandleImpl::update_backpressure() noexcept {
    const std::size_t high = options_.high_water_mark;
    if (high == 0) {
        flags_.hwm_paused = false;
        return;
    }
    const std::size_t queued = queued_bytes();
    if (queued >= high) flags_.hwm_paused = true;
    else if (queued <= options_.low_water_mark) flags_.hwm_paused = false;
}

template <typename Fn, typename... Args>
void HandleImpl::invoke(CallbackSlot<Fn>& slot, Args&&... args) {
    if (flags_.orphaned || !slot.ready()) return;
    if (slot.running) {
        // Called again from inside its own call, after it was replaced
        // there: the replacement runs, moved out of `next` meanwhile, and
        // goes back unless the slot was set again.
        struct PutBack {
            CallbackSlot<Fn>& slot;
            Fn running;
            unsigned version;
            ~PutBack() {
                if (slot.version == version) slot.next = std::move(running);
            }
        } guard{slot, std::move(slot.next), slot.version};
        slot.next = nullptr;
        guard.running(*owner_, std::forward<Args>(args)...);
        return;
    }
    call_idle(slot, std::forward<Args>(args)...);
}

template <typename Fn, typename... Args>
inline void HandleImpl::call_idle(CallbackSlot<Fn>& slot, Args&&... args) {
    struct Finish {
        CallbackSlot<Fn>& slot;
        ~Finish() {
            slot.running = false;
            if (!slot.replaced) return;
            slot.replaced = false;
            // The finished closure dies last, once the slot is consistent:
            // its destructor may come back to the Handle.
            Fn finished = std::move(slot.fn);
            slot.fn = std::move(slot.next);
            slot.next = nullptr;
        }
    } finish{slot};
    slot.running = true;
    slot.fn(*owner_, std::forward<Args>(args)...);
}

/// Writes what a destroyed Handle still had queued, for up to `linger`,
/// then closes the fd. Owns itself; holds no user object. Takes over the
/// Handle's watchers (re-pointing their callbacks), so the fd stays watched
/// by one watcher. If the loop is gone, closes the fd at once.
void start_lingering(EventLoop& loop, int fd, bool is_socket, WriteQueue&& queue, bool shutdown_after,
                     Duration linger, IoWatcher&& io, TimerWatcher&& timer) noexcept;

}  // namespace anyloop::detail
