// The Handle's event plumbing and write path: loop entry points, settle(),
// gathering and flushing output, interest, timeouts, errors and the end of
// a Handle's life.
#include "handle_impl.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

namespace anyloop::detail {

namespace {

constexpr std::size_t kMaxIov = 64;
// Bounds the settle() loop (flush → on_drain → more output → flush ...):
// what is left waits for the next writable event, so others get a turn.
constexpr int kSettleRounds = 16;

std::error_code errno_code(int error) noexcept { return {error, std::generic_category()}; }

std::span<const std::byte> as_byte_span(std::string_view bytes) noexcept {
    return {reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()};
}

std::string seconds_text(Duration duration) {
    const double seconds = std::chrono::duration<double>(duration).count();
    std::string text = std::to_string(seconds);
    text.erase(text.find_last_not_of('0') + 1);
    if (!text.empty() && text.back() == '.') text.pop_back();
    return text + " s";
}

}  // namespace

// ---- loop entry points ----------------------------------------------------

void HandleImpl::on_io(Io revents) {
    entered([&] {
        if (has(revents, Io::write) && !flags_.dead) {
            flags_.write_blocked = false;
            flush();
        }
        if (has(revents, Io::read) && !flags_.dead && !flags_.orphaned && reading_wanted()) read_ready();
    });
    settle();
}

void HandleImpl::on_timer() {
    entered([&] { check_timeouts(); });
    settle();
}

void HandleImpl::settle() {
    if (depth_ > 0 || settle_quick()) return;
    if (!flags_.orphaned && !flags_.dead) entered([&] {
        for (int round = 0; round < kSettleRounds && !flags_.dead && !flags_.orphaned; ++round) {
            if (flags_.starttls_due || flags_.stoptls_due) {
                report_layer_events();
                continue;
            }
            if (flags_.input_pending) {
                dispatch_input();
                continue;
            }
            // A stoptls() made inside a callback has no output queued yet:
            // its close_notify is made by flush() too.
            if (!flags_.write_blocked &&
                (!queue_.empty() || !plain_.empty() || (flags_.shutdown_requested && !flags_.write_shut) ||
                 (flags_.stoptls_requested && !flags_.layer_shutdown)))
                flush();
            if (flags_.drain_due && !flags_.dead && !flags_.orphaned) {
                flags_.drain_due = false;
                if (on_drain_.ready()) {
                    invoke(on_drain_);
                    continue;
                }
            }
            break;
        }
        if (!flags_.dead && !flags_.orphaned) update_interest();
    });
    if (flags_.orphaned) {
        finish_orphan();  // frees this
        return;
    }
    if (flags_.dead) rbuf_.trim(0);
}

void HandleImpl::unwound() noexcept {
    // An exception from a user callback is leaving the Handle.
    if (flags_.orphaned) {
        finish_orphan();
        return;
    }
    if (flags_.dead) return;
    try {
        update_interest();
    } catch (...) {
        // The loop reports the callback's exception; this one adds nothing.
    }
}

// ---- writing ----------------------------------------------------------------

void HandleImpl::push_write_slow(std::string_view bytes, std::string* owned) {
    if (flags_.dead || flags_.orphaned) return;
    if (flags_.shutdown_requested)
        throw std::logic_error("Handle::push_write after push_shutdown (" + where() + "the write side is closed)");
    if (bytes.empty()) return;
    const bool nested = depth_ > 0;
    entered([&] {
        if (layer_ && flags_.stoptls_requested) {
            // After stoptls(): plain, once the layer has finished.
            if (owned != nullptr) after_layer_.append(std::move(*owned));
            else after_layer_.append(bytes);
        } else if (layer_) {
            std::size_t taken = 0;
            const bool large = bytes.size() > WriteQueue::kSmallChunk;
            if (large && plain_.empty() && layer_ready_ && !flags_.write_blocked) {
                // Large: straight into the layer, as the plain path writes
                // large bytes at once; only what it does not take is queued.
                taken = layer_->write_plaintext(as_byte_span(bytes));
            }
            if (taken < bytes.size()) {
                if (owned != nullptr) plain_.append(std::move(*owned), taken);
                else plain_.append(bytes.substr(taken));
            }
            if ((!nested || taken > 0) && !flags_.write_blocked) flush();
        } else if (flags_.write_blocked || (nested && queue_.size() + bytes.size() <= WriteQueue::kSmallChunk)) {
            // The fd is full (the write watcher flushes), or we are inside a
            // callback and the bytes are small: gather them, and settle()
            // writes everything gathered with one writev when it returns.
            if (owned != nullptr) queue_.append(std::move(*owned));
            else queue_.append(bytes);
        } else {
            write_now(bytes, owned);
        }
        if (!flags_.dead) {
            update_backpressure();
            if (options_.wbuf_max > 0) check_wbuf_max();
        }
    });
    if (!nested) settle();  // nested: the outermost entry settles
}

// Writes the queue and then `bytes` (not queued yet) with one writev, and
// queues only what the fd did not take: the common case copies nothing.
void HandleImpl::write_now(std::string_view bytes, std::string* owned) {
    iovec iov[kMaxIov];
    const std::size_t queued = queue_.gather(iov, kMaxIov - 1);
    if (queued < queue_.chunk_count()) {
        // A long chain: `bytes` must follow all of it.
        if (owned != nullptr) queue_.append(std::move(*owned));
        else queue_.append(bytes);
        flush();
        return;
    }
    iov[queued].iov_base = const_cast<char*>(bytes.data());
    iov[queued].iov_len = bytes.size();
    const std::size_t offered = queue_.size() + bytes.size();
    const ssize_t n = write_vector(fd_, is_socket_, iov, queued + 1);
    std::size_t written = 0;
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            write_failed(errno);
            return;
        }
    } else {
        written = static_cast<std::size_t>(n);
    }
    const std::size_t from_queue = std::min(written, queue_.size());
    queue_.consume(from_queue);
    const std::size_t from_bytes = written - from_queue;
    if (from_bytes < bytes.size()) {
        if (owned != nullptr) queue_.append(std::move(*owned), from_bytes);
        else queue_.append(bytes.substr(from_bytes));
    }
    if (written < offered) flags_.write_blocked = true;
    after_write(written);
}

// Moves output toward the socket as far as it goes now: plaintext into the
// layer, the layer's output into the queue, the queue into the fd.
void HandleImpl::flush() {
    if (!layer_ && is_socket_ && queue_.flat_only() && !queue_.empty() && !flags_.dead) {
        send_flat();
        return;
    }
    std::size_t written = 0;
    // With a layer, go on until the socket is full or the layer takes no
    // more, as write_queue_to() does for plain bytes: a round limit here
    // left plaintext stranded (no write interest with queue_ empty) when
    // the socket never filled.
    while (!flags_.dead) {
        const bool layer_moved = layer_ && pump_layer(written);
        if (flags_.dead) return;
        if (!queue_.empty()) {
            const int error = write_queue_to(fd_, is_socket_, queue_, &written);
            if (error == EAGAIN) {
                flags_.write_blocked = true;
                break;
            }
            if (error != 0) {
                write_failed(error);
                return;
            }
        }
        // With a layer, the socket taking its output may let it take more.
        if (!layer_moved || plain_.empty()) break;
    }
    after_write(written);
}

// The common case of flush() (small writes gathered by callbacks, on a
// plain socket): one send of the flat buffer.
void HandleImpl::send_flat() {
    const std::string_view bytes = queue_.flat_bytes();
    ssize_t n;
    do {
        n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            write_failed(errno);
            return;
        }
        n = 0;
    }
    const auto written = static_cast<std::size_t>(n);
    queue_.consume_flat(written);
    if (written == bytes.size() && !flags_.hwm_paused && !flags_.shutdown_requested) {
        // after_write() when a plain socket took all (never nothing: the
        // queue was not empty) and the Handle is neither paused nor
        // shutting down: nothing is queued now, which is at or below any
        // low-water mark.
        stamp_write();
        flags_.drain_due = true;
        return;
    }
    if (written < bytes.size()) flags_.write_blocked = true;
    after_write(written);
}

// Offers queued plaintext to the layer and sends what it produced: straight
// from the layer when nothing is queued before it, so only what the socket
// refuses is copied into the queue. Adds what it sent to `written`. Returns
// whether anything moved.
bool HandleImpl::pump_layer(std::size_t& written) {
    bool moved = false;
    while (!plain_.empty()) {
        const std::string_view front = plain_.front();
        const std::size_t taken = layer_->write_plaintext(as_byte_span(front));
        plain_.consume(taken);
        moved = moved || taken > 0;
        if (taken < front.size()) break;
    }
    // close_notify once everything queued went in, and not before the
    // handshake is done: half-closing then would break the handshake.
    if (plain_.empty() && (flags_.shutdown_requested || flags_.stoptls_requested) && !flags_.layer_shutdown &&
        layer_->established()) {
        flags_.layer_shutdown = true;
        layer_->shutdown();
    }
    // What the layer sent through the transport itself.
    written += std::exchange(transport_.sent, 0);
    const std::span<const std::byte> output = layer_->pending_output();
    if (!output.empty() && queue_.empty() && !flags_.write_blocked) {
        const iovec one{const_cast<std::byte*>(output.data()), output.size()};
        const ssize_t n = write_vector(fd_, is_socket_, &one, 1);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            write_failed(errno);
            return false;
        }
        const std::size_t sent = n > 0 ? static_cast<std::size_t>(n) : 0;
        if (sent < output.size()) flags_.write_blocked = true;
        layer_->consume_output(sent);
        written += sent;
        moved = moved || sent > 0;
    }
    if (queue_layer_output()) moved = true;
    if (layer_failed()) return false;
    // Our close_notify is queued and the peer's came: TLS is over.
    if (flags_.stoptls_requested && flags_.layer_shutdown && layer_->input_closed()) finish_stoptls();
    return moved;
}

// Copies what the layer produced into the queue; returns whether there was any.
bool HandleImpl::queue_layer_output() {
    const std::span<const std::byte> output = layer_->pending_output();
    if (output.empty()) return false;
    queue_.append(std::string_view(reinterpret_cast<const char*>(output.data()), output.size()));
    layer_->consume_output(output.size());
    return true;
}

// Whether the layer failed, or the fd under its transport; if so, fails
// the Handle with the reason (a socket error keeps its own code).
bool HandleImpl::layer_failed() {
    if (transport_.error != 0) {
        const int failed = transport_.error;
        fail(errno_code(failed),
             where() + (transport_.read_error ? "read failed: " : "write failed: ") + std::strerror(failed), true);
        return true;
    }
    const std::error_code error = layer_->error();
    if (!error) return false;
    fail(error, where() + layer_->error_message(), true);
    return true;
}

void HandleImpl::write_failed(int error) {
    fail(errno_code(error), where() + "write failed: " + std::strerror(error), true);
}

void HandleImpl::after_write(std::size_t written) {
    if (flags_.dead) return;
    if (written > 0) {
        stamp_write();
        if (queued_bytes() <= options_.low_water_mark) flags_.drain_due = true;
    }
    // A plain write only shrinks the queue: it can end a pause, not start
    // one (a layer's output may be larger than the plaintext it took).
    if (flags_.hwm_paused || (layer_ && options_.high_water_mark > 0)) update_backpressure();
    if (flags_.shutdown_requested && !flags_.write_shut && queue_.empty() && plain_.empty() && after_layer_.empty() &&
        (!layer_ || (flags_.layer_shutdown && !flags_.stoptls_requested)))
        do_shutdown();
}

void HandleImpl::do_shutdown() noexcept {
    flags_.write_shut = true;
    if (is_socket_) (void)::shutdown(fd_, SHUT_WR);
}

void HandleImpl::push_shutdown() {
    if (flags_.dead || flags_.shutdown_requested) return;
    flags_.shutdown_requested = true;
    const bool nested = depth_ > 0;
    if (!nested && !flags_.write_blocked) entered([&] { flush(); });
    settle();
}

void HandleImpl::check_wbuf_max() {
    const std::size_t queued = queued_bytes();
    if (options_.wbuf_max > 0 && queued > options_.wbuf_max)
        fail(errno_code(ENOSPC),
             where() + "write queue holds " + std::to_string(queued) + " bytes, more than wbuf_max " +
                 std::to_string(options_.wbuf_max),
             true);
}

// ---- interest and timeouts --------------------------------------------------

void HandleImpl::update_interest() {
    const bool want_read = reading_wanted();
    const bool want_write = !queue_.empty();
    const Io events = (want_read ? Io::read : Io::none) | (want_write ? Io::write : Io::none);
    if (events != io_events_) apply_events(events);
    if (want_read != read_wanted_ || want_write != write_wanted_) {
        // A read or write timeout counts from the moment it has something to wait for.
        const TimePoint now = loop_.now();
        if (want_read && !read_wanted_) last_read_ = now;
        if (want_write && !write_wanted_) last_write_ = now;
        read_wanted_ = want_read;
        write_wanted_ = want_write;
        if (options_.rtimeout > Duration::zero() || options_.wtimeout > Duration::zero()) arm_timer();
    }
}

void HandleImpl::apply_events(Io events) {
    if (events == Io::none) {
        io_.stop();
    } else if (!io_) {
        io_ = loop_.io(fd_, events, [this](Io revents) {
            if (revents == Io::read && quick_read_ok()) read_quick();
            else on_io(revents);
        });
        // What an event touches first (the layout in handle_impl.hpp): the
        // state from the scalars on; set_hot_state() keeps its first 8
        // lines, the scalars to the write queue's inline buffer.
        const auto* begin = reinterpret_cast<const char*>(this);
        io_.set_hot_state(this, static_cast<std::size_t>(reinterpret_cast<const char*>(&options_) + 64 - begin));
    } else {
        io_.set_events(events);
        io_.start();
    }
    io_events_ = events;
}

void HandleImpl::timeouts_changed() {
    const bool timed = any_timeout();
    if (timed && !timed_) last_activity_ = last_read_ = last_write_ = loop_.now();
    timed_ = timed;
    if (!flags_.dead) arm_timer();
}

// libev's strategy for activity timeouts: progress only records the time;
// the one timer fires at the earliest possible deadline, and re-arms itself
// for the real one if there was activity meanwhile.
void HandleImpl::arm_timer() {
    TimePoint next = TimePoint::max();
    if (options_.timeout > Duration::zero()) next = std::min(next, last_activity_ + options_.timeout);
    if (options_.rtimeout > Duration::zero() && read_wanted_) next = std::min(next, last_read_ + options_.rtimeout);
    if (options_.wtimeout > Duration::zero() && write_wanted_) next = std::min(next, last_write_ + options_.wtimeout);
    if (options_.tls_timeout > Duration::zero() && layer_ && !layer_ready_)
        next = std::min(next, layer_since_ + options_.tls_timeout);
    if (next == TimePoint::max()) {
        timer_.stop();
        return;
    }
    const Duration after = std::max(next - loop_.now(), Duration::zero());
    if (!timer_.active() || timer_.remaining() > after) timer_.start(after);
}

void HandleImpl::check_timeouts() {
    const TimePoint now = loop_.now();
    if (options_.tls_timeout > Duration::zero() && layer_ && !layer_ready_ &&
        layer_since_ + options_.tls_timeout <= now) {
        fail(errno_code(ETIMEDOUT), where() + "TLS handshake not finished within " + seconds_text(options_.tls_timeout),
             true);
        return;
    }
    if (options_.timeout > Duration::zero() && last_activity_ + options_.timeout <= now) {
        last_activity_ = now;
        fire_timeout(on_timeout_, "nothing read or written for", options_.timeout);
        if (flags_.dead || flags_.orphaned) return;
    }
    if (options_.rtimeout > Duration::zero() && read_wanted_ && last_read_ + options_.rtimeout <= now) {
        last_read_ = now;
        fire_timeout(on_rtimeout_, "nothing read for", options_.rtimeout);
        if (flags_.dead || flags_.orphaned) return;
    }
    if (options_.wtimeout > Duration::zero() && write_wanted_ && last_write_ + options_.wtimeout <= now) {
        last_write_ = now;
        fire_timeout(on_wtimeout_, "nothing written for", options_.wtimeout);
        if (flags_.dead || flags_.orphaned) return;
    }
    arm_timer();
}

void HandleImpl::fire_timeout(CallbackSlot<Handle::Callback>& slot, const char* what, Duration limit) {
    if (slot.ready()) invoke(slot);
    else fail(errno_code(ETIMEDOUT), where() + what + " " + seconds_text(limit), false);
}

// ---- errors and the end ------------------------------------------------------

void HandleImpl::fail(std::error_code error, const std::string& message, bool fatal) {
    if (flags_.dead) return;
    if (fatal) flags_.dead = true;  // nothing else runs; the fd stays open for on_error to inspect
    if (fatal && layer_) {
        // Best effort: the layer's last words (a TLS alert telling the peer
        // why) go out before the fd closes.
        queue_layer_output();
        if (!queue_.empty() && fd_ >= 0) (void)write_queue_to(fd_, is_socket_, queue_);
        if (!layer_ready_ && !flags_.orphaned) {
            layer_ready_ = true;  // reported: once
            if (on_starttls_.ready()) invoke(on_starttls_, false, message);
        }
    }
    const bool reported = on_error_.ready() && !flags_.orphaned;
    if (reported) invoke(on_error_, error, message, fatal);
    // A non-fatal error nobody hears about cannot be handled: close.
    if (fatal || !reported) close_now();
}

void HandleImpl::finish_orphan() noexcept {
    if (!flags_.dead && fd_ >= 0) {
        // Whether the loop still exists: a watcher of a destroyed loop
        // refuses to start. The timer is idle now, so stopping it is free.
        bool loop_alive = true;
        try {
            timer_.set_repeat(Duration::zero());
            timer_.again();
        } catch (const std::logic_error&) {
            loop_alive = false;
        }
        if (loop_alive) {
            try {
                // Last chance for output gathered by the callbacks. No callback
                // runs: the Handle is orphaned.
                if (!flags_.write_blocked) flush();
            } catch (...) {
                // Lingering is best effort.
            }
            const bool unfinished = !queue_.empty() || (flags_.shutdown_requested && !flags_.write_shut);
            if (!flags_.dead && unfinished && options_.linger > Duration::zero()) {
                const int fd = fd_;
                fd_ = -1;
                start_lingering(loop_, fd, is_socket_, std::move(queue_),
                                flags_.shutdown_requested && !flags_.write_shut,
                                options_.linger, std::move(io_), std::move(timer_));
            }
        }
    }
    delete this;
}

}  // namespace anyloop::detail
