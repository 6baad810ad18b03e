#include "write_queue.hpp"

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>

namespace anyloop::detail {

namespace {

constexpr std::size_t kMaxIov = 64;

// Whether a string owns heap memory (longer than its inline buffer).
bool on_heap(const std::string& s) noexcept { return s.capacity() > std::string().capacity(); }

}  // namespace

void WriteQueue::append_chunk(std::string_view bytes) {
    if (bytes.empty()) return;
    if (head_ < chunks_.size()) {
        std::string& last = chunks_.back().bytes;
        if (last.capacity() - last.size() >= bytes.size()) {
            last.append(bytes);
            bytes_ += bytes.size();
            return;
        }
    }
    std::string block;
    if (bytes.size() <= kSmallChunk) {
        if (spare_.capacity() >= bytes.size()) {
            block = std::move(spare_);
            spare_ = std::string();
            block.clear();
        } else {
            block.reserve(kSmallChunk);
        }
    } else {
        block.reserve(bytes.size());
    }
    block.append(bytes);
    push_chunk(std::move(block), 0);
}

void WriteQueue::append(std::string&& bytes, std::size_t offset) {
    if (offset >= bytes.size()) return;
    const std::size_t length = bytes.size() - offset;
    if (length <= 64 && append_flat(std::string_view(bytes).substr(offset))) return;
    if (length <= 64 && head_ < chunks_.size()) {
        const std::string& last = chunks_.back().bytes;
        if (last.capacity() - last.size() >= length) {
            append(std::string_view(bytes).substr(offset));
            return;
        }
    }
    push_chunk(std::move(bytes), offset);
}

void WriteQueue::push_chunk(std::string&& bytes, std::size_t offset) {
    const std::size_t length = bytes.size() - offset;
    // Reclaim the sent front of a long chain before it grows again.
    if (head_ > 16 && head_ * 2 > chunks_.size()) {
        chunks_.erase(chunks_.begin(), chunks_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
    }
    chunks_.push_back(Chunk{std::move(bytes), offset});
    bytes_ += length;
}

std::size_t WriteQueue::gather(iovec* iov, std::size_t max) const noexcept {
    std::size_t count = 0;
    if (flat_end_ > flat_begin_ && max > 0) {
        iov[0].iov_base = const_cast<char*>(flat_ + flat_begin_);
        iov[0].iov_len = flat_end_ - flat_begin_;
        count = 1;
    }
    for (std::size_t i = head_; i < chunks_.size() && count < max; ++i, ++count) {
        const Chunk& chunk = chunks_[i];
        iov[count].iov_base = const_cast<char*>(chunk.bytes.data() + chunk.offset);
        iov[count].iov_len = chunk.bytes.size() - chunk.offset;
    }
    return count;
}

std::string_view WriteQueue::front() const noexcept {
    if (flat_end_ > flat_begin_) return {flat_ + flat_begin_, flat_end_ - flat_begin_};
    if (head_ >= chunks_.size()) return {};
    const Chunk& chunk = chunks_[head_];
    return std::string_view(chunk.bytes).substr(chunk.offset);
}

void WriteQueue::consume(std::size_t bytes) noexcept {
    bytes_ -= bytes;
    if (flat_end_ > flat_begin_) {
        const std::size_t left = flat_end_ - flat_begin_;
        if (bytes < left) {
            flat_begin_ += bytes;
            return;
        }
        bytes -= left;
        flat_begin_ = flat_end_ = 0;
        if (bytes == 0) return;
    }
    while (bytes > 0 && head_ < chunks_.size()) {
        Chunk& chunk = chunks_[head_];
        const std::size_t left = chunk.bytes.size() - chunk.offset;
        if (bytes < left) {
            chunk.offset += bytes;
            return;
        }
        bytes -= left;
        // Keep one small block for the next writes; free the rest.
        if (chunk.bytes.capacity() <= kSmallChunk && chunk.bytes.capacity() > spare_.capacity()) {
            spare_ = std::move(chunk.bytes);
        }
        chunk.bytes = std::string();
        ++head_;
    }
    if (head_ == chunks_.size()) {
        head_ = 0;
        if (chunks_.capacity() > 4) std::vector<Chunk>().swap(chunks_);
        else chunks_.clear();
    }
}

void WriteQueue::clear() noexcept {
    std::vector<Chunk>().swap(chunks_);
    head_ = 0;
    bytes_ = 0;
    spare_ = std::string();
    flat_begin_ = flat_end_ = 0;
}

std::size_t WriteQueue::capacity() const noexcept {
    std::size_t total = chunks_.capacity() * sizeof(Chunk);
    for (std::size_t i = head_; i < chunks_.size(); ++i)
        if (on_heap(chunks_[i].bytes)) total += chunks_[i].bytes.capacity();
    if (on_heap(spare_)) total += spare_.capacity();
    return total;
}

ssize_t write_vector(int fd, bool is_socket, const iovec* iov, std::size_t count) noexcept {
    if (is_socket) {
        if (count == 1) {
            for (;;) {
                const ssize_t n = ::send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
                if (n >= 0 || errno != EINTR) return n;
            }
        }
        msghdr message{};
        message.msg_iov = const_cast<iovec*>(iov);
        message.msg_iovlen = count;
        for (;;) {
            const ssize_t n = ::sendmsg(fd, &message, MSG_NOSIGNAL);
            if (n >= 0 || errno != EINTR) return n;
        }
    }
    // A pipe or tty has no MSG_NOSIGNAL: block SIGPIPE around the write and
    // discard the one it raised, unless one was pending already.
    sigset_t pipe_only;
    sigset_t previous;
    sigset_t pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigpending(&pending);
    const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
    ssize_t n;
    do {
        n = ::writev(fd, iov, static_cast<int>(count));
    } while (n < 0 && errno == EINTR);
    const int saved = errno;
    if (n < 0 && saved == EPIPE && !was_pending) {
        const timespec zero{};
        while (::sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    errno = saved;
    return n;
}

int write_queue_to(int fd, bool is_socket, WriteQueue& queue, std::size_t* written) noexcept {
    if (queue.empty()) return 0;
    if (queue.flat_only()) {
        // The common case: one flat piece, one send.
        const std::string_view bytes = queue.front();
        const iovec one{const_cast<char*>(bytes.data()), bytes.size()};
        const ssize_t n = write_vector(fd, is_socket, &one, 1);
        if (n < 0) return errno == EWOULDBLOCK ? EAGAIN : errno;
        queue.consume(static_cast<std::size_t>(n));
        if (written != nullptr) *written += static_cast<std::size_t>(n);
        return static_cast<std::size_t>(n) < bytes.size() ? EAGAIN : 0;
    }
    iovec iov[kMaxIov];
    while (!queue.empty()) {
        const std::size_t count = queue.gather(iov, kMaxIov);
        std::size_t offered = 0;
        for (std::size_t i = 0; i < count; ++i) offered += iov[i].iov_len;
        const ssize_t n = write_vector(fd, is_socket, iov, count);
        if (n < 0) return errno == EWOULDBLOCK ? EAGAIN : errno;
        queue.consume(static_cast<std::size_t>(n));
        if (written != nullptr) *written += static_cast<std::size_t>(n);
        if (static_cast<std::size_t>(n) < offered) return EAGAIN;  // the fd is full
    }
    return 0;
}

}  // namespace anyloop::detail
