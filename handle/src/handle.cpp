// Handle's public functions, construction, options and layering. The read
// path is in handle_read.cpp, the write path and the event plumbing in
// handle_io.cpp.
#include <anyloop/handle/handle.hpp>

#include "handle_impl.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <string>

namespace anyloop {

namespace {

HandleOptions normalized(HandleOptions options) {
    options.read_size = std::max<std::size_t>(options.read_size, 64);
    options.max_read_size = std::max(options.max_read_size, options.read_size);
    options.reads_per_event = std::max(options.reads_per_event, 1U);
    return options;
}

}  // namespace

namespace detail {

HandleImpl::HandleImpl(Handle& owner, EventLoop& loop, int fd, const HandleOptions& options)
    : owner_(&owner), loop_(loop), fd_(fd), options_(normalized(options)) {
    read_size_ = options_.read_size;
    if (fd < 0) throw std::invalid_argument("Handle: invalid fd " + std::to_string(fd));
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ((flags & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0))
        throw std::system_error(errno, std::generic_category(), "Handle: cannot make fd " + std::to_string(fd) + " non-blocking");

    // Only sockets accept SO_OOBINLINE, so setting it also tells whether the
    // fd is a socket (sent to with MSG_NOSIGNAL) or a pipe / tty.
    if (options_.oob_inline) {
        const int on = 1;
        if (::setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &on, sizeof on) < 0 && errno == ENOTSOCK) is_socket_ = false;
    } else {
        int type = 0;
        socklen_t length = sizeof type;
        if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) < 0 && errno == ENOTSOCK) is_socket_ = false;
    }
    flags_.not_socket = !is_socket_;
    if (is_socket_) {
        // TCP_NODELAY fails harmlessly on a unix socket.
        if (options_.no_delay) apply_socket_option(IPPROTO_TCP, TCP_NODELAY, true);
        if (options_.keepalive) apply_socket_option(SOL_SOCKET, SO_KEEPALIVE, true);
    }

    last_activity_ = last_read_ = last_write_ = loop.now();
    timed_ = any_timeout();
    // Created now, started only while a timeout runs. Its existence also
    // lets a late destructor find out whether the loop is still there.
    timer_ = loop.timer(Duration::zero(), [this] { on_timer(); });
    timer_.stop();
    if (options_.timeout > Duration::zero()) arm_timer();
}

HandleImpl::~HandleImpl() {
    layer_.reset();  // before transport_, which it may use, is destroyed
    if (fd_ >= 0) ::close(fd_);
}

void HandleImpl::apply_socket_option(int level, int name, bool on) noexcept {
    if (!is_socket_ || fd_ < 0) return;
    const int value = on ? 1 : 0;
    (void)::setsockopt(fd_, level, name, &value, sizeof value);
}

std::string HandleImpl::where() const { return "fd " + std::to_string(fd_) + ": "; }


void HandleImpl::orphan() noexcept {
    flags_.orphaned = true;
    owner_ = nullptr;
    clear_callbacks();
    readers_.clear();
    if (depth_ == 0) finish_orphan();
}

void HandleImpl::clear_callbacks() noexcept {
    on_read_.set(nullptr);
    on_eof_.set(nullptr);
    on_error_.set(nullptr);
    on_drain_.set(nullptr);
    on_timeout_.set(nullptr);
    on_rtimeout_.set(nullptr);
    on_wtimeout_.set(nullptr);
    on_starttls_.set(nullptr);
    on_stoptls_.set(nullptr);
}

// Something that may let readers progress changed (a reader or on_read was
// added, or input became available outside a read).
void HandleImpl::input_changed() {
    if (flags_.dead) return;
    if (depth_ > 0) {
        // Inside a callback: the running dispatch loop, or settle(), takes it.
        if (!rbuf_.empty()) flags_.input_pending = true;
        return;
    }
    if (!rbuf_.empty()) entered([&] { dispatch_input(); });
    settle();
}

// Only the read/write interest may have to change.
void HandleImpl::interest_changed() {
    if (depth_ == 0 && !flags_.dead) settle();
}

void HandleImpl::push_read(Reader&& reader, bool front) {
    if (reader.kind_ == Reader::Kind::none) throw std::invalid_argument("Handle::push_read: empty Reader");
    if (flags_.dead) return;
    if (front) readers_.push_front(std::move(reader));
    else readers_.push_back(std::move(reader));
    input_changed();
}

void HandleImpl::set_paused(bool paused) {
    flags_.user_paused = paused;
    // Input the layer may still hold is invisible to the socket: the
    // readers fetch it (dispatch_input() drains the layer when they starve).
    if (!paused && layer_ && !flags_.dead) flags_.input_pending = true;
    interest_changed();
}

void HandleImpl::set_layer(std::unique_ptr<StreamLayer> layer) {
    if (!layer) throw std::invalid_argument("Handle::set_layer: null layer");
    if (layer_) throw std::logic_error("Handle::set_layer: " + where() + "a layer is installed already");
    if (flags_.dead) return;
    layer_ = std::move(layer);
    transport_.attached = layer_->attach_transport(&transport_);
    layer_ready_ = false;
    layer_since_ = loop_.now();
    if (options_.tls_timeout > Duration::zero()) arm_timer();
    const bool nested = depth_ > 0;
    entered([&] {
        // Unread input arrived after the switch: it is the layer's.
        if (!rbuf_.empty()) {
            rbuf_.settle(0);
            const std::string early(rbuf_.view());
            rbuf_.clear();
            feed_layer(early.data(), early.size());
        }
        if (!flags_.dead) check_layer_input();
        // A client layer may have its first message ready.
        if (!nested && !flags_.dead) flush();
        if (!rbuf_.empty()) flags_.input_pending = true;
    });
    settle();
}

std::unique_ptr<StreamLayer> HandleImpl::release_layer() {
    if (!plain_.empty())
        throw std::logic_error("Handle::release_layer: " + where() + std::to_string(plain_.size()) +
                               " plaintext bytes still wait for the layer");
    if (transport_.attached) layer_->attach_transport(nullptr);
    transport_.attached = false;
    std::unique_ptr<StreamLayer> layer = std::move(layer_);
    flags_.layer_shutdown = false;
    flags_.stoptls_requested = false;
    interest_changed();
    return layer;
}

void HandleImpl::starttls(TlsMode mode, const std::shared_ptr<TlsLayerFactory>& factory, const std::string& peername) {
    if (mode == TlsMode::none) throw std::invalid_argument("Handle::starttls: mode none");
    if (!factory) throw std::invalid_argument("Handle::starttls: " + where() + "no tls_ctx");
    if (layer_) throw std::logic_error("Handle::starttls: " + where() + "TLS (or another layer) is on already");
    if (flags_.dead) return;
    set_layer(factory->make_tls_layer(mode, peername));
}

void HandleImpl::stoptls() {
    if (!layer_ || flags_.dead || flags_.stoptls_requested) return;
    flags_.stoptls_requested = true;
    const bool nested = depth_ > 0;
    // flush() sends the queued plaintext, then close_notify, and finishes
    // when the peer's close_notify is in already.
    if (!nested && !flags_.write_blocked) entered([&] { flush(); });
    settle();
}

void HandleImpl::close_now() noexcept {
    flags_.dead = true;
    io_.reset();
    io_events_ = Io::none;
    timer_.reset();
    clear_callbacks();
    readers_.clear();
    queue_.clear();
    plain_.clear();
    // The storage may still hold the record a running reader is looking at;
    // settle() frees it once no callback is on the stack.
    rbuf_.clear();
    transport_.attached = false;
    layer_.reset();
    after_layer_.clear();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

}  // namespace detail

// ---- Handle -------------------------------------------------------------------

Handle::Handle(EventLoop& loop, int fd, HandleOptions options)
    : impl_(new detail::HandleImpl(*this, loop, fd, options)) {
    if (options.tls == TlsMode::none) return;
    try {
        impl_->starttls(options.tls, impl_->options_.tls_ctx, impl_->options_.peername);
    } catch (...) {
        impl_->fd_ = -1;  // still the caller's, as documented
        impl_->orphan();
        throw;
    }
}

Handle::~Handle() { impl_->orphan(); }

void Handle::on_read(Callback callback) {
    impl_->on_read_.set(std::move(callback));
    impl_->input_changed();
}
void Handle::on_eof(Callback callback) { impl_->on_eof_.set(std::move(callback)); }
void Handle::on_error(ErrorCallback callback) { impl_->on_error_.set(std::move(callback)); }
void Handle::on_drain(Callback callback) { impl_->on_drain_.set(std::move(callback)); }
void Handle::on_timeout(Callback callback) { impl_->on_timeout_.set(std::move(callback)); }
void Handle::on_rtimeout(Callback callback) { impl_->on_rtimeout_.set(std::move(callback)); }
void Handle::on_wtimeout(Callback callback) { impl_->on_wtimeout_.set(std::move(callback)); }
void Handle::on_starttls(StartTlsCallback callback) { impl_->on_starttls_.set(std::move(callback)); }
void Handle::on_stoptls(Callback callback) { impl_->on_stoptls_.set(std::move(callback)); }

void Handle::push_read(Reader reader) { impl_->push_read(std::move(reader), false); }
void Handle::unshift_read(Reader reader) { impl_->push_read(std::move(reader), true); }
ReadBuffer& Handle::read_buffer() noexcept { return impl_->rbuf_; }
void Handle::stop_read() { impl_->set_paused(true); }
void Handle::start_read() { impl_->set_paused(false); }
bool Handle::reading() const noexcept { return has(impl_->io_events_, Io::read); }
bool Handle::at_eof() const noexcept { return impl_->flags_.eof; }

void Handle::push_write(std::string_view bytes) { impl_->push_write(bytes, nullptr); }
void Handle::push_write(std::string&& bytes) { impl_->push_write(bytes, &bytes); }

void Handle::push_write_prefixed(std::size_t prefix_bytes, std::string_view payload) {
    if (prefix_bytes != 1 && prefix_bytes != 2 && prefix_bytes != 4 && prefix_bytes != 8)
        throw std::invalid_argument("Handle::push_write_prefixed: prefix of " + std::to_string(prefix_bytes) +
                                    " bytes; use 1, 2, 4 or 8");
    const std::uint64_t length = payload.size();
    if (prefix_bytes < 8 && length >> (8 * prefix_bytes) != 0)
        throw std::length_error("Handle::push_write_prefixed: " + std::to_string(length) +
                                " bytes do not fit a " + std::to_string(prefix_bytes) + "-byte length prefix");
    char header[8];
    for (std::size_t i = 0; i < prefix_bytes; ++i)
        header[i] = static_cast<char>(length >> (8 * (prefix_bytes - 1 - i)));
    if (payload.size() <= 4096) {
        // One chunk, so the pair goes out in one piece.
        std::string record;
        record.reserve(prefix_bytes + payload.size());
        record.append(header, prefix_bytes).append(payload);
        push_write(std::move(record));
    } else {
        push_write(std::string_view(header, prefix_bytes));
        push_write(payload);
    }
}

void Handle::push_shutdown() { impl_->push_shutdown(); }
std::size_t Handle::write_queue_size() const noexcept { return impl_->queued_bytes(); }

void Handle::set_timeout(Duration timeout) {
    impl_->options_.timeout = timeout;
    impl_->timeouts_changed();
}
void Handle::set_rtimeout(Duration timeout) {
    impl_->options_.rtimeout = timeout;
    impl_->timeouts_changed();
}
void Handle::set_wtimeout(Duration timeout) {
    impl_->options_.wtimeout = timeout;
    impl_->timeouts_changed();
}
void Handle::timeout_reset() { impl_->last_activity_ = impl_->loop_.now(); }
void Handle::rtimeout_reset() { impl_->last_read_ = impl_->loop_.now(); }
void Handle::wtimeout_reset() { impl_->last_write_ = impl_->loop_.now(); }

void Handle::set_rbuf_max(std::size_t bytes) { impl_->options_.rbuf_max = bytes; }
void Handle::set_wbuf_max(std::size_t bytes) { impl_->options_.wbuf_max = bytes; }
void Handle::set_low_water_mark(std::size_t bytes) {
    impl_->options_.low_water_mark = bytes;
    impl_->update_backpressure();
    impl_->interest_changed();
}
void Handle::set_high_water_mark(std::size_t bytes) {
    impl_->options_.high_water_mark = bytes;
    impl_->update_backpressure();
    impl_->interest_changed();
}
void Handle::set_linger(Duration linger) { impl_->options_.linger = linger; }
void Handle::set_no_delay(bool on) {
    impl_->options_.no_delay = on;
    impl_->apply_socket_option(IPPROTO_TCP, TCP_NODELAY, on);
}
void Handle::set_keepalive(bool on) {
    impl_->options_.keepalive = on;
    impl_->apply_socket_option(SOL_SOCKET, SO_KEEPALIVE, on);
}
void Handle::set_oob_inline(bool on) {
    impl_->options_.oob_inline = on;
    impl_->apply_socket_option(SOL_SOCKET, SO_OOBINLINE, on);
}
const HandleOptions& Handle::options() const noexcept { return impl_->options_; }

void Handle::set_layer(std::unique_ptr<StreamLayer> layer) { impl_->set_layer(std::move(layer)); }
std::unique_ptr<StreamLayer> Handle::release_layer() { return impl_->release_layer(); }
StreamLayer* Handle::layer() const noexcept { return impl_->layer_.get(); }

void Handle::starttls(TlsMode mode) { impl_->starttls(mode, impl_->options_.tls_ctx, impl_->options_.peername); }
void Handle::starttls(TlsMode mode, std::shared_ptr<TlsLayerFactory> tls_ctx, std::string peername) {
    impl_->starttls(mode, tls_ctx, peername.empty() ? impl_->options_.peername : peername);
}
void Handle::stoptls() { impl_->stoptls(); }
bool Handle::tls_established() const noexcept {
    return impl_->layer_ && impl_->layer_ready_ && !impl_->flags_.stoptls_requested;
}

EventLoop& Handle::loop() const noexcept { return impl_->loop_; }
int Handle::fd() const noexcept { return impl_->fd_; }
bool Handle::closed() const noexcept { return impl_->flags_.dead; }
void Handle::close() noexcept {
    if (impl_->flags_.dead) return;
    impl_->close_now();
    if (impl_->depth_ == 0) impl_->rbuf_.trim(0);
}
std::size_t Handle::buffer_capacity() const noexcept {
    return impl_->rbuf_.capacity() + impl_->queue_.capacity() + impl_->plain_.capacity() +
           impl_->after_layer_.capacity();
}

}  // namespace anyloop
