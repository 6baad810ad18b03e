// The output a Handle has not written yet, and the one write call that both
// the Handle and a lingering Handle use.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace anyloop::detail {

/// A chain of chunks, flushed with one writev.
///
///   chunks_:  [ sent | unsent ] [ unsent ......... ] [ unsent | room ]
///              head_, offset                           last: append() copies into its room
///
/// Small copies made while no chunk is queued go into `flat_`, a buffer
/// inside the queue itself: append is a memcpy, and the whole of it is one
/// iovec. The flat bytes, when there are any, always come first (nothing
/// goes into `flat_` once a chunk is queued behind it).
///
/// Otherwise a copy goes into the last chunk when it has room, else into a
/// new chunk; a moved std::string becomes a chunk of its own (no copy).
/// Once the queue drains, one small chunk (<= kSmallChunk) is kept for
/// reuse, so steady small writes do not allocate and an idle queue holds
/// well under 1 KiB.
class WriteQueue {
public:
    static constexpr std::size_t kSmallChunk = 512;
    /// Size of the inline buffer for small copies.
    static constexpr std::size_t kFlat = 512;

    WriteQueue() noexcept = default;
    /// `use_flat` false: every piece stays a chunk of its own as appended
    /// (a layer is offered plaintext piece by piece).
    explicit WriteQueue(bool use_flat) noexcept : use_flat_(use_flat) {}

    [[nodiscard]] bool empty() const noexcept { return bytes_ == 0; }
    /// Unsent bytes.
    [[nodiscard]] std::size_t size() const noexcept { return bytes_; }
    /// Pieces gather() describes (the flat buffer counts as one).
    [[nodiscard]] std::size_t chunk_count() const noexcept {
        return (flat_end_ > flat_begin_ ? 1 : 0) + chunks_.size() - head_;
    }

    void append(std::string_view bytes) {
        if (!append_flat(bytes)) append_chunk(bytes);
    }
    /// Queues bytes[offset..] without copying them (tiny ones may be copied
    /// into the last chunk's room instead).
    void append(std::string&& bytes, std::size_t offset = 0);

    /// Describes up to `max` unsent chunks, front first; returns how many.
    std::size_t gather(iovec* iov, std::size_t max) const noexcept;
    /// The front chunk's unsent bytes.
    [[nodiscard]] std::string_view front() const noexcept;
    /// Drops `bytes` sent bytes from the front.
    void consume(std::size_t bytes) noexcept;
    /// Whether every unsent byte is in the flat buffer (no chunk queued).
    [[nodiscard]] bool flat_only() const noexcept { return chunks_.empty(); }
    /// How many bytes append_to_flat() can take now: the flat buffer's
    /// free tail while no chunk is queued, else none.
    [[nodiscard]] std::size_t flat_room() const noexcept {
        return use_flat_ && chunks_.empty() ? kFlat - flat_end_ : 0;
    }
    /// Copies `bytes` (at most flat_room()) into the flat buffer.
    void append_to_flat(std::string_view bytes) noexcept {
        std::memcpy(flat_ + flat_end_, bytes.data(), bytes.size());
        flat_end_ += bytes.size();
        bytes_ += bytes.size();
    }
    /// With flat_only(): the unsent bytes, and dropping `bytes` of them.
    [[nodiscard]] std::string_view flat_bytes() const noexcept {
        return {flat_ + flat_begin_, flat_end_ - flat_begin_};
    }
    void consume_flat(std::size_t bytes) noexcept {
        bytes_ -= bytes;
        flat_begin_ += bytes;
        if (flat_begin_ == flat_end_) flat_begin_ = flat_end_ = 0;
    }
    /// Drops everything and frees the memory.
    void clear() noexcept;

    /// Heap bytes held, the kept chunk included.
    [[nodiscard]] std::size_t capacity() const noexcept;

private:
    struct Chunk {
        std::string bytes;
        std::size_t offset = 0;  // bytes[0..offset) were sent
    };
    void push_chunk(std::string&& bytes, std::size_t offset);
    /// Copies `bytes` into the flat buffer if no chunk is queued and they
    /// fit; returns whether it did.
    bool append_flat(std::string_view bytes) noexcept {
        if (flat_room() < bytes.size()) return false;
        if (!bytes.empty()) append_to_flat(bytes);
        return true;
    }
    void append_chunk(std::string_view bytes);

    // What small writes touch comes first, and the flat buffer right after
    // it, so that a small echo stays within the header's cache line and the
    // next (HandleImpl aligns the queue to a line). bytes_ and flat_begin_
    // are kept apart: side by side, GCC turns consume_flat() into longer
    // vector code.
    std::size_t bytes_ = 0;
    std::vector<Chunk> chunks_;  // empty once every chunk is sent (head_ < size otherwise)
    std::size_t flat_begin_ = 0;  // flat_[flat_begin_..flat_end_) is unsent
    std::size_t flat_end_ = 0;
    bool use_flat_ = true;
    char flat_[kFlat];
    std::size_t head_ = 0;
    std::string spare_;
};

/// writev() / sendmsg() of `count` buffers; retries EINTR. Sockets are
/// written with MSG_NOSIGNAL; other fds with SIGPIPE blocked for the call
/// (and a SIGPIPE it raised discarded), so a closed peer is an EPIPE error
/// and never kills the process. Returns bytes written or -1 with errno.
ssize_t write_vector(int fd, bool is_socket, const iovec* iov, std::size_t count) noexcept;

/// Writes as much of `queue` as the fd takes now. Returns 0, or the errno
/// of a failed write (EAGAIN when the fd is full).
int write_queue_to(int fd, bool is_socket, WriteQueue& queue, std::size_t* written = nullptr) noexcept;

}  // namespace anyloop::detail
