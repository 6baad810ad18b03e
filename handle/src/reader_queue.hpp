// The queue of pending readers: a ring over a vector, so push_read /
// unshift_read / completing a reader are O(1) and a Handle that pushes one
// reader per record allocates nothing after the first.
#pragma once

#include <anyloop/handle/reader.hpp>

#include <cstddef>
#include <utility>
#include <vector>

namespace anyloop::detail {

class ReaderQueue {
public:
    [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
    [[nodiscard]] std::size_t size() const noexcept { return count_; }
    [[nodiscard]] Reader& front() noexcept { return slots_[head_]; }

    void push_back(Reader&& reader) {
        if (count_ == slots_.size()) grow();
        slots_[(head_ + count_) & (slots_.size() - 1)] = std::move(reader);
        ++count_;
    }
    void push_front(Reader&& reader) {
        if (count_ == slots_.size()) grow();
        head_ = (head_ + slots_.size() - 1) & (slots_.size() - 1);
        slots_[head_] = std::move(reader);
        ++count_;
    }
    Reader pop_front() noexcept {
        Reader reader = std::move(slots_[head_]);
        slots_[head_] = Reader();
        head_ = (head_ + 1) & (slots_.size() - 1);
        --count_;
        return reader;
    }
    void clear() noexcept {
        std::vector<Reader>().swap(slots_);
        head_ = count_ = 0;
    }

private:
    // Capacity stays a power of two so that wrapping is a mask.
    void grow() {
        std::vector<Reader> bigger(slots_.empty() ? 4 : slots_.size() * 2);
        for (std::size_t i = 0; i < count_; ++i) bigger[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
        slots_.swap(bigger);
        head_ = 0;
    }

    std::size_t count_ = 0;  // first: empty() is on the Handle's echo path
    std::size_t head_ = 0;
    std::vector<Reader> slots_;
};

}  // namespace anyloop::detail
