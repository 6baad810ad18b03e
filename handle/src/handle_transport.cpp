// A layer that moves its own bytes (TLS): the Handle's fd as its transport,
// and the read path that lets the layer read the fd.
//
// The layer (OpenSSL, through TlsSession's BIO) receives straight into its
// own buffer and sends straight from it, so no ciphertext byte is copied in
// user space. The Handle keeps the say over the fd: reads happen only inside
// read_through_transport(), on a read event; writes only inside an entry and
// only when nothing the Handle queued must go first, and what the socket
// refuses lands in the Handle's queue, so waiting for writability, linger,
// shutdown and the queue's limits work as for plain bytes. Errors and end
// of file are noted and acted on once the layer's call has returned: a
// user callback must never run while OpenSSL is on the stack.
#include "handle_impl.hpp"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace anyloop::detail {

std::size_t LayerTransport::receive(std::span<std::byte> buffer) {
    if (!reads_allowed || eof || error != 0) return 0;
    ssize_t n;
    do {
        n = ::read(handle_.fd_, buffer.data(), buffer.size());
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        const auto got = static_cast<std::size_t>(n);
        if (got < buffer.size()) drained = true;
        handle_.stamp_read();
        return got;
    }
    drained = true;
    if (n == 0) {
        eof = true;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        error = errno;
        read_error = true;
    }
    return 0;
}

std::size_t LayerTransport::send(std::span<const std::byte> bytes) {
    HandleImpl& h = handle_;
    if (h.depth_ == 0 || h.flags_.dead || h.flags_.write_blocked || !h.queue_.empty() || error != 0) return 0;
    const iovec one{const_cast<std::byte*>(bytes.data()), bytes.size()};
    const ssize_t n = write_vector(h.fd_, h.is_socket_, &one, 1);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        error = errno;
        read_error = false;
        return 0;
    }
    const std::size_t written = n > 0 ? static_cast<std::size_t>(n) : 0;
    if (written > 0) {
        sent += written;
        h.stamp_write();
    }
    if (written < bytes.size()) {
        // The socket is full: the rest waits in the queue, and whatever the
        // layer writes meanwhile waits behind it (a non-empty queue refuses
        // above). flags_.write_blocked is left to the Handle's own writes: the
        // queue is flushed right after the layer's call, which then waits
        // for writability, or finds the socket drained meanwhile.
        const auto* rest = reinterpret_cast<const char*>(bytes.data()) + written;
        h.queue_.append(std::string_view(rest, bytes.size() - written));
    }
    return bytes.size();
}

// read_ready() with a transport: the layer reads the fd itself while it
// decodes into the read buffer (or `spill`), then the readers run. The same
// order as a read of the socket followed by feeding the layer.
void HandleImpl::read_through_transport(std::span<char> spill) {
    for (unsigned attempt = 0; attempt < options_.reads_per_event; ++attempt) {
        transport_.drained = false;
        transport_.reads_allowed = true;
        // Without read-ahead when the layer may end with plain bytes behind it.
        layer_->transport_readable(flags_.stoptls_requested || on_stoptls_.ready());
        drain_layer_plaintext(spill);
        transport_.reads_allowed = false;
        layer_input_done(nullptr, 0);  // errors (the fd's first), the handshake, the peer's end, output
        if (!after_layer_input() || !take_input(true)) return;
        if (transport_.eof) {
            end_of_input();
            return;
        }
        // A short read emptied the socket. After the peer's close_notify
        // (and after a stoptls) the plain path reads on at the next event.
        if (transport_.drained || !transport_.attached || layer_->input_closed() || !reading_wanted()) break;
    }
    rbuf_.trim(read_size_);
}

}  // namespace anyloop::detail
