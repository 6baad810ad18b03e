// HandleImpl: everything a Handle is. The public Handle is a pointer to it,
// so that the state can outlive the Handle while one of its callbacks is
// still on the stack, and then linger.
//
// Re-entrancy is managed with one counter, depth_: every entry into the
// Handle (a loop callback, or a public call) holds a DepthGuard while it
// works (through entered()), and the outermost entry finishes with settle(), which flushes
// output gathered meanwhile, runs on_drain, applies the read/write interest
// and, if the Handle was destroyed meanwhile, lingers or frees the state.
// Code that ran a user callback checks dead_ / orphaned_ before touching
// anything else.
#pragma once

#include <anyloop/handle/handle.hpp>

#include "reader_queue.hpp"
#include "write_queue.hpp"

#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
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
    Fn fn;
    Fn next;                // set() during the call: installed when it returns
    unsigned version = 0;
    bool running = false;
    bool replaced = false;  // `next` holds what set() gave during the call
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
            queue_.append(bytes);
            if (options_.high_water_mark > 0) update_backpressure();
            if (options_.wbuf_max > 0) check_wbuf_max();
            return;
        }
        push_write_slow(bytes, owned);
    }
    void push_write_slow(std::string_view bytes, std::string* owned);
    /// Whether push_write() just copies `size` bytes into the queue: inside
    /// a callback, small, plain, and the Handle open for writing.
    [[nodiscard]] bool gathers(std::size_t size) const noexcept {
        return depth_ > 0 && !layer_ && !dead_ && !orphaned_ && !shutdown_requested_ &&
               queue_.size() + size <= WriteQueue::kSmallChunk;
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
    void update_backpressure() noexcept;
    void apply_socket_option(int level, int name, bool on) noexcept;
    [[nodiscard]] bool reading_wanted() const noexcept;

    // ---- state ---------------------------------------------------------------
    Handle* owner_;
    EventLoop& loop_;
    int fd_;
    HandleOptions options_;
    bool is_socket_ = true;

    CallbackSlot<Handle::Callback> on_read_;
    CallbackSlot<Handle::Callback> on_eof_;
    CallbackSlot<Handle::ErrorCallback> on_error_;
    CallbackSlot<Handle::Callback> on_drain_;
    CallbackSlot<Handle::Callback> on_timeout_;
    CallbackSlot<Handle::Callback> on_rtimeout_;
    CallbackSlot<Handle::Callback> on_wtimeout_;
    CallbackSlot<Handle::StartTlsCallback> on_starttls_;
    CallbackSlot<Handle::Callback> on_stoptls_;

    ReadBuffer rbuf_;
    ReaderQueue readers_;
    WriteQueue queue_;   // bytes for the socket
    WriteQueue plain_;   // with a layer: plaintext the layer has not taken yet
    LayerTransport transport_{*this};  // before layer_: outlives it
    std::unique_ptr<StreamLayer> layer_;
    WriteQueue after_layer_;  // queued after stoptls(): goes out plain once the layer is gone
    std::string layer_rest_;   // socket input the closed layer did not take: plain input after it
    TimePoint layer_since_;    // when the layer was installed (the TLS handshake timeout)
    IoWatcher io_;       // created on first use
    TimerWatcher timer_; // the one timeout timer; created with the Handle
    Io io_events_ = Io::none;

    int depth_ = 0;
    bool orphaned_ = false;         // the Handle object is gone
    bool dead_ = false;             // closed: fatal error or close()
    bool eof_ = false;              // end of file read
    bool user_paused_ = false;      // stop_read()
    bool hwm_paused_ = false;       // high-water mark reached
    bool write_blocked_ = false;    // the last write hit EAGAIN; wait for writability
    bool shutdown_requested_ = false;
    bool layer_shutdown_ = false;   // layer_->shutdown() was called
    bool write_shut_ = false;       // shutdown(SHUT_WR) done
    bool input_pending_ = false;    // readers may progress: dispatch in settle()
    bool dispatching_ = false;      // dispatch_input() is on the stack
    bool drain_due_ = false;        // run on_drain in settle()
    bool read_wanted_ = false;      // interest as of the last update_interest()
    bool write_wanted_ = false;
    bool layer_ready_ = false;      // layer_->established() was seen (and reported)
    bool stoptls_requested_ = false;
    bool starttls_due_ = false;     // run on_starttls(true)
    bool stoptls_due_ = false;      // run on_stoptls

    std::size_t read_size_;
    unsigned small_reads_ = 0;
    TimePoint last_activity_;
    TimePoint last_read_;
    TimePoint last_write_;

    // ---- entry points (handle_io.cpp) ---------------------------------------
    void on_io(Io revents);
    void on_timer();
    void settle();

    // ---- reading (handle_read.cpp) -------------------------------------------
    void read_ready();
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
        return layer_ && !dead_ && layer_->has_buffered_input() && drain_layer_plaintext() > 0;
    }
    std::size_t drain_layer_plaintext(std::span<char> scratch = {});
    void adapt_read_size(std::size_t got, std::size_t asked) noexcept;

    // ---- writing (handle_io.cpp) ---------------------------------------------
    void write_now(std::string_view bytes, std::string* owned);
    void flush();
    bool pump_layer(std::size_t& written);
    bool queue_layer_output();
    bool layer_failed();
    void write_failed(int error);
    void after_write(std::size_t written);
    void do_shutdown() noexcept;
    void check_wbuf_max();
    [[nodiscard]] std::size_t queued_bytes() const noexcept { return queue_.size() + plain_.size() + after_layer_.size(); }

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
    if (dead_ || eof_ || user_paused_ || hwm_paused_) return false;
    return on_read_.ready() || !readers_.empty() || (layer_ && (stoptls_requested_ || layer_->wants_input()));
}

inline void HandleImpl::update_backpressure() noexcept {
    const std::size_t high = options_.high_water_mark;
    if (high == 0) {
        hwm_paused_ = false;
        return;
    }
    const std::size_t queued = queued_bytes();
    if (queued >= high) hwm_paused_ = true;
    else if (queued <= options_.low_water_mark) hwm_paused_ = false;
}

template <typename Fn, typename... Args>
void HandleImpl::invoke(CallbackSlot<Fn>& slot, Args&&... args) {
    if (orphaned_ || !slot.ready()) return;
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
