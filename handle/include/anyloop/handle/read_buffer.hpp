// anyloop/handle/read_buffer.hpp — the bytes a Handle received and no reader
// has consumed yet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

namespace anyloop {

namespace detail {
class HandleImpl;
}

/// The input of a Handle that no reader has consumed yet. on_read callbacks
/// and custom readers look at it through Handle::read_buffer(); stream layers
/// (TLS) append the plaintext they decode to it.
///
///     storage                                                   capacity()
///     |  consumed: free  |   readable: view()   |   writable: prepare()   |
///     0                begin                   end
///
/// consume() only moves `begin`; the free front is reclaimed by moving the
/// readable bytes down when room is needed at the end. The Handle frees the
/// storage when the buffer is empty after a read, so an idle Handle holds no
/// read memory.
///
/// While the Handle dispatches bytes it has just read into its on-stack
/// buffer, the ReadBuffer views them in place ("borrowed"): readers see them
/// without a copy, and only what they leave behind is copied into storage.
///
/// Pointers and views into the buffer stay valid until the next append(),
/// prepare() or read from the socket; consume() does not move bytes.
class ReadBuffer {
public:
    ReadBuffer() noexcept = default;
    ReadBuffer(const ReadBuffer&) = delete;
    ReadBuffer& operator=(const ReadBuffer&) = delete;

    /// The readable bytes.
    [[nodiscard]] const char* data() const noexcept { return data_ + begin_; }
    [[nodiscard]] std::size_t size() const noexcept { return end_ - begin_; }
    [[nodiscard]] bool empty() const noexcept { return begin_ == end_; }
    [[nodiscard]] std::string_view view() const noexcept { return {data(), size()}; }

    /// Drops the first `bytes` readable bytes (all of them if fewer remain).
    void consume(std::size_t bytes) noexcept {
        bytes = bytes < size() ? bytes : size();
        begin_ += bytes;
        consumed_total_ += bytes;
        // An empty buffer starts over at the front: the next read needs no move.
        if (begin_ == end_ && !borrowed_) begin_ = end_ = 0;
    }
    /// Drops every readable byte.
    void clear() noexcept { consume(size()); }

    /// Appends a copy of `bytes`.
    void append(std::string_view bytes);
    /// Writable space of at least `bytes` after the readable bytes; fill it
    /// and commit() what was written.
    [[nodiscard]] std::span<char> prepare(std::size_t bytes);
    /// Makes the first `bytes` of the last prepare() readable.
    void commit(std::size_t bytes) noexcept { end_ += bytes; }

    /// Heap bytes held (0 when borrowing or released).
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
    /// Bytes consumed since the buffer was created; lets a reader tell
    /// whether the front moved since it last looked.
    [[nodiscard]] std::uint64_t consumed_total() const noexcept { return consumed_total_; }

    /// Frees the storage if nothing is readable; otherwise shrinks it to the
    /// readable bytes plus `spare` when it is much larger than that.
    void trim(std::size_t spare) noexcept {
        if (borrowed_ || (capacity_ == 0 && empty())) return;  // nothing held: the steady state of an echo
        trim_storage(spare);
    }

private:
    friend class detail::HandleImpl;

    // Views `size` external bytes in place (the buffer must be empty).
    void borrow(const char* bytes, std::size_t size) noexcept {
        data_ = bytes;
        begin_ = 0;
        end_ = size;
        borrowed_ = true;
    }
    // Ends a borrow: copies what is still readable into storage with
    // `spare` free bytes after it.
    void settle(std::size_t spare) {
        if (!borrowed_) return;
        if (empty()) {
            // Everything borrowed was consumed: the common case.
            borrowed_ = false;
            data_ = storage_.get();
            begin_ = end_ = 0;
            return;
        }
        keep_borrowed(spare);
    }
    void keep_borrowed(std::size_t spare);
    void trim_storage(std::size_t spare) noexcept;
    [[nodiscard]] bool borrowed() const noexcept { return borrowed_; }
    void reallocate(std::size_t capacity);

    std::unique_ptr<char[]> storage_;
    std::size_t capacity_ = 0;
    const char* data_ = nullptr;  // storage_.get(), or the borrowed bytes
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
    bool borrowed_ = false;
    std::uint64_t consumed_total_ = 0;
};

}  // namespace anyloop
