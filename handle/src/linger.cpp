// Lingering: what is left of a Handle destroyed with output still queued.
// It holds the fd, the queue and the Handle's two watchers — never a user
// callback or object — writes until the queue is empty or `linger` passes,
// then closes the fd and frees itself.
#include "handle_impl.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <new>
#include <stdexcept>

namespace anyloop::detail {

namespace {

class Lingerer {
public:
    Lingerer(int fd, bool is_socket, WriteQueue&& queue, bool shutdown_after, IoWatcher&& io, TimerWatcher&& timer)
        : fd_(fd),
          is_socket_(is_socket),
          shutdown_after_(shutdown_after),
          queue_(std::move(queue)),
          io_(std::move(io)),
          timer_(std::move(timer)) {}
    ~Lingerer() {
        if (loop_ != nullptr) loop_->cancel_at_destroy(destroy_token_);
        ::close(fd_);
    }
    Lingerer(const Lingerer&) = delete;
    Lingerer& operator=(const Lingerer&) = delete;

    // Re-points the watchers at this object. Throws if the loop is gone.
    void start(EventLoop& loop, Duration linger) {
        timer_.set_callback([this] { delete this; });
        timer_.set_keepalive(false);  // the write watcher keeps the loop alive
        timer_.start(linger);
        if (io_) {
            io_.set_callback([this](Io) { on_writable(); });
            io_.set_events(Io::write);
            io_.set_keepalive(true);
            io_.start();
        } else {
            io_ = loop.io(fd_, Io::write, [this](Io) { on_writable(); });
        }
        // Registered last, once the watchers proved the loop alive: a loop
        // destroyed before the output is out takes us with it.
        destroy_token_ = loop.at_destroy([this] {
            loop_ = nullptr;
            delete this;
        });
        loop_ = &loop;
    }

private:
    void on_writable() {
        const int error = write_queue_to(fd_, is_socket_, queue_);
        if (error == EAGAIN) return;
        if (error == 0 && shutdown_after_ && is_socket_) (void)::shutdown(fd_, SHUT_WR);
        delete this;  // closes the fd; freeing our watchers inside their callback is safe
    }

    int fd_;
    EventLoop* loop_ = nullptr;
    std::uint64_t destroy_token_ = 0;
    bool is_socket_;
    bool shutdown_after_;
    WriteQueue queue_;
    IoWatcher io_;
    TimerWatcher timer_;
};

}  // namespace

void start_lingering(EventLoop& loop, int fd, bool is_socket, WriteQueue&& queue, bool shutdown_after,
                     Duration linger, IoWatcher&& io, TimerWatcher&& timer) noexcept {
    Lingerer* lingerer = nullptr;
    try {
        lingerer = new Lingerer(fd, is_socket, std::move(queue), shutdown_after, std::move(io), std::move(timer));
    } catch (...) {
        ::close(fd);
        return;
    }
    try {
        lingerer->start(loop, linger);
    } catch (...) {
        // No memory, or the loop is gone: drop the output like linger = 0.
        delete lingerer;
    }
}

}  // namespace anyloop::detail
