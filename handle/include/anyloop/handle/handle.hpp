// anyloop/handle/handle.hpp — Handle: a buffered, queued, timed byte stream
// over a connected fd on an EventLoop. AnyEvent::Handle in C++ idiom;
// docs/handle.md is the long form.
//
//     auto handle = std::make_unique<Handle>(*loop, fd);
//     handle->on_error([](Handle&, std::error_code, const std::string& message, bool) {
//         std::cerr << message << "\n";
//     });
//     handle->on_read([](Handle& h) {                 // echo
//         h.push_write(h.read_buffer().view());
//         h.read_buffer().clear();
//     });
//
// Ownership. A Handle owns its fd (it closes it) and is neither copyable
// nor movable: hold it in a std::unique_ptr (or as a member) and let
// callbacks capture plain pointers. Every callback receives the Handle.
// Destroying the Handle is safe anywhere, including inside any of its own
// callbacks: the internals outlive the call, and no callback of that
// Handle runs afterwards. Destroying it after its loop is safe too; using
// it otherwise after the loop is gone is not.
//
// Linger. A Handle destroyed with output still queued hands the fd and the
// queue (never a user callback or object) to an internal object that keeps
// writing for up to `linger` (default 3600 s), then closes the fd. While it
// writes it keeps the loop alive. linger = 0 drops the queue at once.
//
// When callbacks run. Callbacks run on the loop thread, from the loop, or
// from a Handle call made outside that Handle's own callbacks: push_write()
// may run on_drain() before it returns when the write completed at once,
// and push_read() may run the reader at once when the input already holds
// its record. Inside the Handle's own callbacks nothing re-enters: small
// writes are gathered and flushed with one writev when the callback
// returns (before control goes back to the loop), and readers pushed there
// run after it.
//
// Errors reach on_error(code, message, fatal) with std::generic_category
// errno values: ECONNRESET, EPIPE and other socket errors; ENOSPC when
// rbuf_max or wbuf_max is exceeded; EMSGSIZE when a record breaks a
// reader's limit; EPIPE for end of file inside a record; ETIMEDOUT (not
// fatal) for a timeout without its own callback; EPROTO from a TLS layer.
// After a fatal error the Handle has closed its fd, dropped its queues
// and will call nothing more; destroying it is still up to you. Without an
// on_error callback, a fatal error just closes the Handle.
#pragma once

#include <anyloop/core/event_loop.hpp>
#include <anyloop/handle/read_buffer.hpp>
#include <anyloop/handle/reader.hpp>
#include <anyloop/handle/stream_layer.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace anyloop {

namespace detail {
class HandleImpl;
}

/// The settings of a Handle. Sizes are in bytes; 0 turns a limit off.
struct HandleOptions {
    /// First growth step of the read buffer; doubled (up to max_read_size)
    /// whenever a read fills all the room offered, halved back after a run
    /// of small reads.
    std::size_t read_size = 2048;
    std::size_t max_read_size = 128 * 1024;
    /// Fairness: at most this many reads per readiness event.
    unsigned reads_per_event = 4;

    /// Input held for readers beyond this is a fatal ENOSPC error.
    std::size_t rbuf_max = 0;
    /// Output queued beyond this is a fatal ENOSPC error.
    std::size_t wbuf_max = 0;
    /// on_drain runs when the output queue falls to this many bytes or fewer.
    std::size_t low_water_mark = 0;
    /// Backpressure: while at least this much output is queued, the Handle
    /// stops reading from the peer; it resumes once the queue falls to
    /// low_water_mark.
    std::size_t high_water_mark = 0;

    /// Inactivity timeouts, 0 = off. `timeout`: nothing read or written;
    /// `rtimeout`: nothing read while a reader (or on_read) waits;
    /// `wtimeout`: nothing written while output is queued.
    Duration timeout{};
    Duration rtimeout{};
    Duration wtimeout{};

    /// How long a destroyed Handle keeps writing its queued output.
    Duration linger = std::chrono::seconds(3600);

    /// SO_OOBINLINE: TCP urgent data arrives in the stream, in order.
    bool oob_inline = true;
    /// TCP_NODELAY on TCP sockets.
    bool no_delay = true;
    /// SO_KEEPALIVE.
    bool keepalive = false;

    /// TLS from the start: the Handle's constructor calls starttls(tls)
    /// with tls_ctx and peername (see Handle::starttls).
    TlsMode tls = TlsMode::none;
    /// What makes the TLS layer: an anyloop::tls::TlsContext.
    std::shared_ptr<TlsLayerFactory> tls_ctx{};
    /// Client: the name the server's certificate must carry (host name or
    /// IP address; also the SNI). tcp_connect() fills in its host when empty.
    std::string peername{};
    /// The TLS handshake must finish within this (0 = no limit); otherwise
    /// a fatal ETIMEDOUT error.
    Duration tls_timeout{};
};

/// A buffered byte stream over a connected socket (TCP, unix) or another
/// pollable fd (a pipe, a tty) on an EventLoop. See the file comment for
/// ownership, linger, and when callbacks run.
class Handle {
public:
    using Callback = std::function<void(Handle& handle)>;
    using ErrorCallback =
        std::function<void(Handle& handle, std::error_code error, const std::string& message, bool fatal)>;
    using StartTlsCallback = std::function<void(Handle& handle, bool success, const std::string& message)>;

    /// Takes ownership of `fd` (a connected stream; made non-blocking here)
    /// and applies the socket options. Throws std::invalid_argument for a
    /// negative fd and std::system_error if the fd cannot be set up; the fd
    /// is then still the caller's.
    Handle(EventLoop& loop, int fd, HandleOptions options = {});
    /// Stops every callback, then lingers or closes (see the file comment).
    ~Handle();
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    Handle(Handle&&) = delete;
    Handle& operator=(Handle&&) = delete;

    // ---- callbacks ----------------------------------------------------------
    // Each setter replaces the callback (an empty function removes it) and
    // is safe inside any callback, including the one being replaced.

    /// Input arrived and no reader is queued. Look at read_buffer() and
    /// consume what you use; it is called again when more input arrives.
    void on_read(Callback callback);
    /// The peer closed its side, after every complete record was delivered.
    /// Writing still works. Without on_eof, end of file is a fatal EPIPE error.
    void on_eof(Callback callback);
    /// An error; `fatal` means the Handle has closed (after this call).
    void on_error(ErrorCallback callback);
    /// The output queue fell to low_water_mark or below after a write.
    void on_drain(Callback callback);
    /// The timeouts; without its callback a timeout is a non-fatal
    /// ETIMEDOUT error. The timeout restarts after the call.
    void on_timeout(Callback callback);
    void on_rtimeout(Callback callback);
    void on_wtimeout(Callback callback);

    // ---- reading ------------------------------------------------------------

    /// Queues a reader after the others.
    void push_read(Reader reader);
    /// Puts a reader before all others (also before those queued earlier
    /// in the same callback).
    void unshift_read(Reader reader);
    /// The input no reader has taken yet, for on_read and custom readers.
    [[nodiscard]] ReadBuffer& read_buffer() noexcept;
    /// Stops reading from the fd (input already buffered is still handed to
    /// readers); start_read() resumes. Reading otherwise runs by itself
    /// while a reader is queued or on_read is set.
    void stop_read();
    void start_read();
    /// Whether the Handle is watching the fd for input right now.
    [[nodiscard]] bool reading() const noexcept;
    /// Whether end of file was received.
    [[nodiscard]] bool at_eof() const noexcept;

    // ---- writing ------------------------------------------------------------

    /// Queues a copy of `bytes` (written at once when possible, so usually
    /// nothing is copied at all). Ignored once the Handle is closed; throws
    /// std::logic_error after push_shutdown().
    void push_write(std::string_view bytes);
    /// Queues `bytes` without copying them.
    void push_write(std::string&& bytes);
    void push_write(const char* bytes) { push_write(std::string_view(bytes)); }
    /// Queues `payload` preceded by its length as a big-endian integer of
    /// `prefix_bytes` (1, 2, 4 or 8): the writing side of
    /// Reader::length_prefixed. Throws std::length_error if the length does
    /// not fit the prefix.
    void push_write_prefixed(std::size_t prefix_bytes, std::string_view payload);
    /// Half-closes: shutdown(SHUT_WR) once the queue has drained. Reading
    /// goes on.
    void push_shutdown();
    /// Output bytes queued and not yet written.
    [[nodiscard]] std::size_t write_queue_size() const noexcept;

    // ---- timeouts -----------------------------------------------------------

    /// Change a timeout (0 = off); the activity clock is not reset.
    void set_timeout(Duration timeout);
    void set_rtimeout(Duration timeout);
    void set_wtimeout(Duration timeout);
    /// Count now as activity for that timeout.
    void timeout_reset();
    void rtimeout_reset();
    void wtimeout_reset();

    // ---- limits and options -------------------------------------------------

    void set_rbuf_max(std::size_t bytes);
    void set_wbuf_max(std::size_t bytes);
    void set_low_water_mark(std::size_t bytes);
    void set_high_water_mark(std::size_t bytes);
    void set_linger(Duration linger);
    /// Socket options; errors (a non-TCP socket for no_delay) are ignored.
    void set_no_delay(bool on);
    void set_keepalive(bool on);
    void set_oob_inline(bool on);
    [[nodiscard]] const HandleOptions& options() const noexcept;

    // ---- TLS ----------------------------------------------------------------
    // Over a stream layer that anyloop::tls provides; see docs/tls.md.
    //
    //     auto context = tls::TlsContext::create({.role = tls::TlsRole::server,
    //                                             .certificate_file = "server.pem"});
    //     HandleOptions options;
    //     options.tls = TlsMode::accept;
    //     options.tls_ctx = context;
    //     Handle handle(loop, fd, options);   // readers and writers see plaintext

    /// Starts TLS now, at any point of a plain stream (after a STARTTLS
    /// exchange, say): output queued before this call goes out plain,
    /// output queued after it is encrypted (written once the handshake is
    /// done), and input not yet consumed is the peer's first TLS bytes.
    /// Uses options().tls_ctx and options().peername unless given here.
    /// Throws std::invalid_argument without a context or with a mode it
    /// cannot serve, std::logic_error while a layer is installed already.
    void starttls(TlsMode mode);
    void starttls(TlsMode mode, std::shared_ptr<TlsLayerFactory> tls_ctx, std::string peername = {});
    /// Ends TLS but not the stream: output queued so far is encrypted and
    /// sent, then close_notify; once the peer's close_notify arrives the
    /// Handle is plain again (on_stoptls), and output queued meanwhile goes
    /// out plain. Does nothing without TLS.
    void stoptls();
    /// The handshake finished (success) or failed (then on_error follows
    /// with EPROTO or ETIMEDOUT and the reason).
    void on_starttls(StartTlsCallback callback);
    /// TLS ended and the stream goes on plain: after our stoptls() or the
    /// peer's. While this callback is set, a close_notify from the peer is
    /// answered and taken as the peer's stoptls; without it, a close_notify
    /// is end of file (on_eof), and writing still works.
    void on_stoptls(Callback callback);
    /// Whether TLS carries the stream: handshake done, not stopped.
    [[nodiscard]] bool tls_established() const noexcept;

    // ---- layering -----------------------------------------------------------

    /// Installs a stream layer (TLS). Input already buffered and not yet
    /// consumed is treated as the layer's first input: it arrived after
    /// the protocol switched.
    void set_layer(std::unique_ptr<StreamLayer> layer);
    /// Removes the layer; from now on bytes go to the socket unchanged.
    /// Throws std::logic_error while plaintext still waits for the layer.
    std::unique_ptr<StreamLayer> release_layer();
    [[nodiscard]] StreamLayer* layer() const noexcept;

    // ---- state --------------------------------------------------------------

    [[nodiscard]] EventLoop& loop() const noexcept;
    /// The fd, or -1 once the Handle closed.
    [[nodiscard]] int fd() const noexcept;
    /// Whether the Handle closed (fatal error or close()).
    [[nodiscard]] bool closed() const noexcept;
    /// Closes at once: queued output is dropped, no callback runs again.
    void close() noexcept;
    /// Heap bytes held by the read buffer and the output queue. An idle
    /// Handle (nothing buffered either way) holds at most 1 KiB.
    [[nodiscard]] std::size_t buffer_capacity() const noexcept;

private:
    detail::HandleImpl* impl_;
};

}  // namespace anyloop
