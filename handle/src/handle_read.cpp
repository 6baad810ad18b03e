// The Handle's read path: reading from the fd, handing records to readers,
// and end of file.
//
// Bytes are read into a 64 KiB buffer on the stack when the read buffer is
// empty (the usual case between records), and readers are handed views of
// them in place; only what they leave is copied into the heap buffer. When
// the read buffer already holds part of a record, readv() fills its free
// tail first and spills the rest onto the stack, so one syscall reads as
// much as is there without growing the heap buffer in advance.
#include <anyloop/handle/reader.hpp>

#include "handle_impl.hpp"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace anyloop {

namespace {

constexpr std::size_t kSpillSize = 64 * 1024;

}  // namespace

// ---- Reader factories ---------------------------------------------------------

Reader Reader::line(Callback callback, LineOptions options) {
    Reader reader;
    reader.kind_ = Kind::line;
    reader.eol_ = std::move(options.eol);
    reader.max_ = options.max_length;
    reader.on_record_ = std::move(callback);
    return reader;
}

Reader Reader::chunk(std::size_t size, Callback callback) {
    Reader reader;
    reader.kind_ = Kind::chunk;
    reader.size_ = size;
    reader.on_record_ = std::move(callback);
    return reader;
}

Reader Reader::length_prefixed(std::size_t prefix_bytes, Callback callback, std::size_t max_length) {
    if (prefix_bytes != 1 && prefix_bytes != 2 && prefix_bytes != 4 && prefix_bytes != 8)
        throw std::invalid_argument("Reader::length_prefixed: prefix of " + std::to_string(prefix_bytes) +
                                    " bytes; use 1, 2, 4 or 8");
    Reader reader;
    reader.kind_ = Kind::length_prefixed;
    reader.size_ = prefix_bytes;
    reader.max_ = max_length;
    reader.on_record_ = std::move(callback);
    return reader;
}

Reader Reader::available(Callback callback) {
    Reader reader;
    reader.kind_ = Kind::available;
    reader.on_record_ = std::move(callback);
    return reader;
}

Reader Reader::custom(CustomCallback callback) {
    Reader reader;
    reader.kind_ = Kind::custom;
    reader.on_input_ = std::move(callback);
    return reader;
}

namespace detail {

namespace {

std::error_code errno_code(int error) noexcept { return {error, std::generic_category()}; }

}  // namespace

// ---- reading from the fd -----------------------------------------------------

namespace {

// Input still borrowed from a stack buffer (plain bytes, or a layer's
// decoded ones) is copied into the read buffer's storage on every way out
// of the frame that owns the stack buffer — an early return or a
// callback's exception — before the frame goes away.
struct KeepInputOnUnwind {
    ReadBuffer& input;
    ~KeepInputOnUnwind() { HandleImpl::keep_borrowed_input(input); }
};

}  // namespace

void HandleImpl::read_ready() {
    char spill[kSpillSize];
    KeepInputOnUnwind keep_input{rbuf_};
    // A layer with a transport reads the fd itself, until its input ended
    // (what follows is read below and kept for after the layer).
    if (transport_.attached && !layer_->input_closed()) {
        read_through_transport({spill, sizeof spill});
        return;
    }
    for (unsigned attempt = 0; attempt < options_.reads_per_event; ++attempt) {
        // With rbuf_max, read no more than one byte past it: a record that
        // cannot fit then always fails, however its bytes arrive.
        const std::size_t budget = options_.rbuf_max > 0
                                       ? options_.rbuf_max + 1 - std::min(rbuf_.size(), options_.rbuf_max)
                                       : std::numeric_limits<std::size_t>::max();
        std::size_t asked = std::min(sizeof spill, budget);
        ssize_t n;
        // A layer that offers room gets the bytes read straight into it.
        std::span<std::byte> direct = layer_ ? layer_->input_space() : std::span<std::byte>{};
        if (!direct.empty()) {
            asked = std::min(direct.size(), budget);
            n = ::read(fd_, direct.data(), asked);
        } else if (layer_ || rbuf_.empty()) {
            n = ::read(fd_, spill, asked);
            if (n > 0 && !layer_) rbuf_.borrow(spill, static_cast<std::size_t>(n));
        } else {
            std::span<char> tail = rbuf_.prepare(std::min(read_size_, budget));
            if (tail.size() > budget) tail = tail.first(budget);
            iovec iov[2] = {{tail.data(), tail.size()}, {spill, std::min(sizeof spill, budget - tail.size())}};
            asked = iov[0].iov_len + iov[1].iov_len;
            n = ::readv(fd_, iov, iov[1].iov_len > 0 ? 2 : 1);
            if (n > 0) {
                const std::size_t into_tail = std::min(static_cast<std::size_t>(n), tail.size());
                rbuf_.commit(into_tail);
                if (static_cast<std::size_t>(n) > into_tail)
                    rbuf_.append(std::string_view(spill, static_cast<std::size_t>(n) - into_tail));
            }
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            read_failed(errno);
            return;
        }
        if (n == 0) {
            end_of_input();
            return;
        }
        const auto got = static_cast<std::size_t>(n);
        note_read(got, asked);
        if (layer_) {
            if (!direct.empty()) {
                layer_->commit_input(got);
                drain_layer_plaintext({spill, sizeof spill});
                layer_input_done(nullptr, 0);
            } else {
                feed_layer(spill, got, {spill, sizeof spill});
            }
            if (!after_layer_input()) return;
        }
        if (!take_input(true)) return;
        // A short read emptied the socket: another read would only say EAGAIN.
        if (got < asked || !reading_wanted()) break;
    }
    rbuf_.trim(read_size_);
}

// The echo path: a quiet Handle (quick_read_ok()) reads once onto the
// stack, on_read sees the bytes in place, and settle() sends what it wrote.
// When on_read leaves bytes or pushes readers, the read filled the buffer,
// or anything else happened, the general path goes on from there.
void HandleImpl::read_quick() {
    char spill[kSpillSize];
    const std::size_t asked = options_.rbuf_max > 0 ? std::min(kSpillSize, options_.rbuf_max + 1) : kSpillSize;
    const ssize_t n = ::read(fd_, spill, asked);
    if (n <= 0) {
        const int error = n < 0 ? errno : 0;
        if (error == EAGAIN || error == EWOULDBLOCK) return;  // nothing changed
        entered([&] {
            if (error == EINTR) read_ready();
            else if (error != 0) read_failed(error);
            else end_of_input();
        });
        settle();
        return;
    }
    const auto got = static_cast<std::size_t>(n);
    rbuf_.borrow(spill, got);
    note_read(got, asked);
    entered([&] {
        KeepInputOnUnwind keep_input{rbuf_};
        call_idle(on_read_);  // quick_read_ok(): set, and nothing runs at depth 0
        if (rbuf_.empty() && readers_.empty() && got < asked && flags_.quiet()) {
            rbuf_.settle(0);
            return;
        }
        // As dispatch_input() goes on: on_read again only if it took bytes.
        if (!take_input(rbuf_.size() != got || !readers_.empty())) return;
        if (got == asked && reading_wanted()) read_ready();
        rbuf_.trim(read_size_);
    });
    if (!settle_quick()) settle();
}

// After input went through the layer: on_starttls, which comes before the
// data that arrived with the end of the handshake (on_stoptls comes after
// the data that came over TLS, as on_eof follows every record), and the
// peer's close_notify when nobody takes it for stoptls: end of file. False
// when reading must stop.
bool HandleImpl::after_layer_input() {
    if (flags_.dead) return false;
    if (flags_.starttls_due) {
        flags_.starttls_due = false;
        invoke(on_starttls_, true, std::string());
        if (flags_.dead || flags_.orphaned) return false;
    }
    if (layer_ && layer_->input_closed() && !flags_.stoptls_requested) {
        end_of_input();
        return false;
    }
    return true;
}

// After new input: the readers take what they can, the rest leaves the
// stack buffer, and rbuf_max is enforced. False when reading must stop
// (the Handle closed or is gone).
void HandleImpl::copy_borrowed_input(ReadBuffer& input) noexcept {
    try {
        input.settle(0);
    } catch (...) {
        input.clear();
        input.settle(0);
    }
}

bool HandleImpl::take_input(bool dispatch) {
    if (dispatch) dispatch_input();
    if (flags_.dead || flags_.orphaned) return false;
    if (flags_.stoptls_due) {
        report_layer_events();
        if (flags_.dead || flags_.orphaned) return false;
    }
    rbuf_.settle(read_size_);
    if (options_.rbuf_max > 0 && rbuf_.size() > options_.rbuf_max) {
        fail(errno_code(ENOSPC),
             where() + "read buffer holds " + std::to_string(rbuf_.size()) + " bytes, more than rbuf_max " +
                 std::to_string(options_.rbuf_max),
             true);
        return false;
    }
    return true;
}

void HandleImpl::read_failed(int error) {
    fail(errno_code(error), where() + "read failed: " + std::strerror(error), true);
}

// Doubles the growth step while reads fill everything offered; halves it
// back after a run of small reads.
void HandleImpl::adapt_read_size(std::size_t got, std::size_t asked) noexcept {
    if (got >= asked) {
        read_size_ = std::min(read_size_ * 2, options_.max_read_size);
        small_reads_ = 0;
    } else if (got < read_size_ / 4 && read_size_ > options_.read_size) {
        if (++small_reads_ >= 8) {
            read_size_ = std::max(read_size_ / 2, options_.read_size);
            small_reads_ = 0;
        }
    } else {
        small_reads_ = 0;
    }
}

// `scratch` (may be `bytes` itself) is free for decoded input once the
// layer took every byte: plaintext is then borrowed from it, as plain input
// is from the spill buffer, instead of being copied into the read buffer.
void HandleImpl::feed_layer(const char* bytes, std::size_t size, std::span<char> scratch) {
    std::size_t offset = 0;
    while (offset < size) {
        const std::size_t taken =
            layer_->feed_input({reinterpret_cast<const std::byte*>(bytes) + offset, size - offset});
        offset += taken;
        // Drained after every feed, so nothing waits in the layer below.
        const std::size_t decoded = drain_layer_plaintext(offset == size ? scratch : std::span<char>{});
        if (layer_->error() || layer_->input_closed()) break;
        if (taken == 0 && decoded == 0) break;  // the layer takes no more input
    }
    layer_input_done(bytes + offset, size - offset);
}

// After input went into the layer (and its plaintext into the read
// buffer): errors, the end of the handshake, the peer's end of the layer
// (`rest`: socket bytes the layer did not take), and output the layer
// produced while reading (handshake messages, alerts).
void HandleImpl::layer_input_done(const char* rest, std::size_t rest_size) {
    if (layer_failed()) return;
    check_layer_input();
    if (layer_->input_closed()) {
        // What the layer did not take follows its end: plain input after a stoptls.
        if (rest_size > 0) layer_rest_.append(rest, rest_size);
        layer_input_closed();
        if (flags_.dead || !layer_) return;
    }
    // Reading may have produced output (handshake messages, alerts).
    if (!flags_.write_blocked) flush();
}

void HandleImpl::check_layer_input() {
    if (layer_ready_ || !layer_->established()) return;
    layer_ready_ = true;
    flags_.starttls_due = true;
    if (options_.tls_timeout > Duration::zero()) arm_timer();
}

// The peer ended the layer. With stoptls() pending, or on_stoptls set (the
// peer's stoptls, answered here), the layer finishes and the stream goes on
// plain; otherwise read_ready() takes it for end of file.
void HandleImpl::layer_input_closed() {
    if (!flags_.stoptls_requested && !on_stoptls_.ready()) return;
    flags_.stoptls_requested = true;
    if (!flags_.write_blocked) flush();  // our close_notify; finishes the layer
}

void HandleImpl::finish_stoptls() {
    std::string trailing = layer_->take_trailing_input();
    trailing += layer_rest_;
    layer_rest_.clear();
    transport_.attached = false;
    layer_.reset();
    flags_.layer_shutdown = false;
    flags_.stoptls_requested = false;
    layer_ready_ = false;
    if (!trailing.empty()) {
        rbuf_.append(trailing);
        flags_.input_pending = true;
    }
    // Output queued since stoptls() follows the close_notify, plain.
    while (!after_layer_.empty()) {
        const std::string_view front = after_layer_.front();
        queue_.append(front);
        after_layer_.consume(front.size());
    }
    flags_.stoptls_due = true;
}

void HandleImpl::report_layer_events() {
    if (flags_.starttls_due) {
        flags_.starttls_due = false;
        invoke(on_starttls_, true, std::string());
        if (flags_.dead || flags_.orphaned) return;
    }
    if (flags_.stoptls_due) {
        flags_.stoptls_due = false;
        invoke(on_stoptls_);
    }
}

std::size_t HandleImpl::drain_layer_plaintext(std::span<char> scratch) {
    std::size_t total = 0;
    if (!scratch.empty() && rbuf_.empty()) {
        total = layer_->read_plaintext({reinterpret_cast<std::byte*>(scratch.data()), scratch.size()});
        if (total > 0) rbuf_.borrow(scratch.data(), total);
        if (total < scratch.size()) return total;
    }
    for (;;) {
        const std::span<char> room = rbuf_.prepare(std::max<std::size_t>(read_size_, 16 * 1024));
        const std::size_t got = layer_->read_plaintext({reinterpret_cast<std::byte*>(room.data()), room.size()});
        rbuf_.commit(got);
        total += got;
        if (got < room.size()) return total;
    }
}

void HandleImpl::end_of_input() {
    flags_.eof = true;
    if (layer_) {
        layer_->feed_eof();
        drain_layer_plaintext();
        if (layer_failed()) return;
    }
    dispatch_input();
    if (flags_.dead || flags_.orphaned) return;
    if (!rbuf_.empty() && (!readers_.empty() || on_read_.ready())) {
        fail(errno_code(EPIPE),
             where() + "end of file with " + std::to_string(rbuf_.size()) + " bytes of an incomplete record",
             true);
        return;
    }
    if (on_eof_.ready()) invoke(on_eof_);
    else fail(errno_code(EPIPE), where() + "end of file from the peer (and no on_eof callback)", true);
}

// ---- handing input to readers -------------------------------------------------

void HandleImpl::dispatch_input() {
    flags_.input_pending = false;
    if (dispatching_) return;  // the loop below is running and sees the change
    struct Dispatching {
        bool& flag;
        explicit Dispatching(bool& f) : flag(f) { flag = true; }
        ~Dispatching() { flag = false; }
    } dispatching(dispatching_);
    while (!flags_.dead && !flags_.orphaned) {
        if (!readers_.empty()) {
            if (run_front_reader()) continue;
            if (flags_.dead || flags_.orphaned || !layer_has_more()) break;
            continue;
        }
        if (!on_read_.ready() || (rbuf_.empty() && !layer_has_more())) break;
        const std::size_t before = rbuf_.size();
        invoke(on_read_);
        // on_read that took nothing waits for more input.
        if (readers_.empty() && rbuf_.size() == before && !layer_has_more()) break;
    }
}

// Pops the front reader, consumes its record and calls it. The record stays
// where it is in memory during the call: consume() moves no bytes.
bool HandleImpl::deliver(std::size_t offset, std::size_t length, std::size_t consume) {
    Reader running = readers_.pop_front();
    const std::string_view record(rbuf_.data() + offset, length);
    rbuf_.consume(consume);
    running.on_record_(*owner_, record);
    return !flags_.dead && !flags_.orphaned;
}

// Runs the front reader if the input completes its record. Returns whether
// it made progress (and the Handle is still alive).
bool HandleImpl::run_front_reader() {
    Reader& reader = readers_.front();
    const std::string_view input = rbuf_.view();
    switch (reader.kind_) {
        case Reader::Kind::none:
            readers_.pop_front();
            return true;

        case Reader::Kind::available:
            return !input.empty() && deliver(0, input.size(), input.size());

        case Reader::Kind::chunk:
            return input.size() >= reader.size_ && deliver(0, reader.size_, reader.size_);

        case Reader::Kind::length_prefixed: {
            const std::size_t width = reader.size_;
            if (input.size() < width) return false;
            std::uint64_t length = 0;
            for (std::size_t i = 0; i < width; ++i) length = (length << 8) | static_cast<unsigned char>(input[i]);
            if ((reader.max_ > 0 && length > reader.max_) ||
                length > std::numeric_limits<std::size_t>::max() - width) {
                fail(errno_code(EMSGSIZE),
                     where() + "length prefix announces " + std::to_string(length) +
                         " bytes, more than max_length " + std::to_string(reader.max_),
                     true);
                return false;
            }
            if (options_.rbuf_max > 0 && width + length > options_.rbuf_max) {
                fail(errno_code(ENOSPC),
                     where() + "length prefix announces " + std::to_string(length) + " bytes, more than rbuf_max " +
                         std::to_string(options_.rbuf_max),
                     true);
                return false;
            }
            if (input.size() - width < length) return false;
            return deliver(width, static_cast<std::size_t>(length), width + static_cast<std::size_t>(length));
        }

        case Reader::Kind::line: {
            const bool default_eol = reader.eol_.empty();
            const std::size_t eol_size = default_eol ? 1 : reader.eol_.size();
            std::size_t from = reader.scan_mark_ == rbuf_.consumed_total() ? reader.scan_from_ : 0;
            from = std::min(from, input.size());
            std::size_t end = std::string_view::npos;
            if (default_eol) {
                const void* hit =
                    from < input.size() ? std::memchr(input.data() + from, '\n', input.size() - from) : nullptr;
                if (hit != nullptr) end = static_cast<std::size_t>(static_cast<const char*>(hit) - input.data());
            } else {
                end = input.find(reader.eol_, from);
            }
            std::size_t length;
            std::size_t consume;
            if (end != std::string_view::npos) {
                length = end;
                if (default_eol && length > 0 && input[length - 1] == '\r') --length;
                consume = end + eol_size;
            } else if (flags_.eof && !input.empty()) {
                length = consume = input.size();  // the unterminated last line
            } else {
                // The longest input that may still end in an acceptable line:
                // max_length bytes plus all but the last byte of the EOL
                // ("\r" of "\r\n" for the default).
                const std::size_t slack = default_eol ? 1 : eol_size - 1;
                if (reader.max_ > 0 && input.size() > reader.max_ + slack) {
                    fail(errno_code(EMSGSIZE),
                         where() + "line longer than max_length " + std::to_string(reader.max_) +
                             " (no end of line in the first " + std::to_string(input.size()) + " bytes)",
                         true);
                    return false;
                }
                reader.scan_from_ = input.size() >= eol_size ? input.size() - (eol_size - 1) : 0;
                reader.scan_mark_ = rbuf_.consumed_total();
                return false;
            }
            if (reader.max_ > 0 && length > reader.max_) {
                fail(errno_code(EMSGSIZE),
                     where() + "line of " + std::to_string(length) + " bytes, longer than max_length " +
                         std::to_string(reader.max_),
                     true);
                return false;
            }
            return deliver(0, length, consume);
        }

        case Reader::Kind::custom: {
            if (input.empty() && !flags_.eof) return false;
            Reader running = readers_.pop_front();
            const std::uint64_t consumed_before = rbuf_.consumed_total();
            const bool done = running.on_input_(*owner_, rbuf_);
            if (flags_.dead || flags_.orphaned) return false;
            if (done) return true;
            // Not done: it stays first. Call it again only if it took bytes
            // and some are left.
            readers_.push_front(std::move(running));
            return rbuf_.consumed_total() != consumed_before && !rbuf_.empty();
        }
    }
    return false;
}

}  // namespace detail
}  // namespace anyloop
