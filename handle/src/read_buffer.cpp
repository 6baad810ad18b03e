#include <anyloop/handle/read_buffer.hpp>

#include <algorithm>
#include <cstring>

namespace anyloop {

void ReadBuffer::append(std::string_view bytes) {
    if (bytes.empty()) return;
    const std::span<char> room = prepare(bytes.size());
    std::memcpy(room.data(), bytes.data(), bytes.size());
    commit(bytes.size());
}

std::span<char> ReadBuffer::prepare(std::size_t bytes) {
    if (borrowed_) settle(bytes);
    if (capacity_ - end_ < bytes) {
        const std::size_t live = size();
        if (capacity_ - live >= bytes && live <= capacity_ / 2) {
            // Enough room once the consumed front is reclaimed, and little to move.
            if (live > 0) std::memmove(storage_.get(), data(), live);
            begin_ = 0;
            end_ = live;
        } else {
            reallocate(std::max(capacity_ * 2, live + bytes));
        }
    }
    return {storage_.get() + end_, capacity_ - end_};
}

void ReadBuffer::reallocate(std::size_t capacity) {
    const std::size_t live = size();
    // Not make_unique<char[]>: that would zero the bytes we overwrite anyway.
    std::unique_ptr<char[]> fresh(capacity > 0 ? new char[capacity] : nullptr);
    if (live > 0) std::memcpy(fresh.get(), data(), live);
    storage_ = std::move(fresh);
    capacity_ = capacity;
    data_ = storage_.get();
    begin_ = 0;
    end_ = live;
    borrowed_ = false;
}

void ReadBuffer::trim_storage(std::size_t spare) noexcept {
    if (empty()) {
        storage_.reset();
        data_ = nullptr;
        capacity_ = begin_ = end_ = 0;
        return;
    }
    // Shrink only when it pays: a big record left a big buffer behind.
    const std::size_t wanted = size() + spare;
    if (capacity_ > 64 * 1024 && capacity_ > 4 * wanted) {
        try {
            reallocate(wanted);
        } catch (...) {
            // Keeping the larger buffer is fine.
        }
    }
}

void ReadBuffer::keep_borrowed(std::size_t spare) {
    const std::size_t live = size();
    const std::size_t needed = live + spare;
    if (capacity_ >= needed) {
        std::memcpy(storage_.get(), data(), live);
        data_ = storage_.get();
        begin_ = 0;
        end_ = live;
        borrowed_ = false;
    } else {
        reallocate(needed);
    }
}

}  // namespace anyloop
