// anyloop/handle/stream_layer.hpp — a transformation between a Handle's
// socket and its readers and writers. TLS (anyloop::tls) is one.
//
//   socket ──bytes──▶ feed_input() ─┐            ┌─▶ read_plaintext() ──▶ readers
//                                   │  layer     │
//   socket ◀──bytes── pending_output() ◀─────────┴── write_plaintext() ◀── push_write
//
// The Handle moves the bytes: after reading from the socket it feeds the
// layer and drains its plaintext into the read buffer; after push_write it
// offers the plaintext and sends what the layer produced. The layer never
// watches the socket, so it works the same on every backend. A Handle
// without a layer does none of this: the plain path is a single branch.
//
// A layer may instead move its bytes itself through the Handle's
// StreamTransport (attach_transport(); TLS does): the Handle still decides
// when it may read (only after transport_readable(), inside the Handle's
// read event) and write (only when nothing the Handle queued must go
// first), and keeps readiness, timeouts, errors, end of file and the write
// queue; the layer saves the copies through its own buffers.
//
// A layer can end before the stream does (TLS's stoptls): once it has
// finished both ways (input_closed() and shutdown() called) the Handle
// removes it, and take_trailing_input() — bytes that followed the layer's
// end — becomes the first plain input.
//
// TLS plugs in through TlsLayerFactory, which anyloop::tls::TlsContext
// implements: a Handle asks it for a layer on starttls() (or
// HandleOptions::tls), so this library names no TLS type and a program
// that never uses TLS does not link OpenSSL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <system_error>

namespace anyloop {

/// A Handle's socket as its layer may use it (implemented by the Handle).
/// Both calls come from inside the layer's own calls, on the loop thread.
class StreamTransport {
public:
    virtual ~StreamTransport() = default;
    /// Reads up to buffer.size() bytes into `buffer`; returns how many. 0
    /// means nothing now: no data, reading not allowed at the moment, end
    /// of file or an error — the Handle acts on the last two itself once
    /// the layer's call has returned.
    virtual std::size_t receive(std::span<std::byte> buffer) = 0;
    /// Offers `bytes` for the socket; returns how many were taken. The
    /// layer keeps the rest in pending_output() and offers nothing new
    /// while that is not empty. A Handle takes all of them (what the socket
    /// refused now waits in its queue, and the Handle waits for
    /// writability) or none, when the layer may not write now (output
    /// queued before must go first, or the socket failed).
    virtual std::size_t send(std::span<const std::byte> bytes) = 0;
};

/// A byte-stream transformation plugged into a Handle with
/// Handle::set_layer(). All calls come from the loop thread.
class StreamLayer {
public:
    virtual ~StreamLayer() = default;

    // ---- socket → layer → readers -----------------------------------------

    /// Bytes read from the socket. Returns how many the layer took: fewer
    /// only when its input is full, and the Handle then drains
    /// read_plaintext() before offering the rest. Taking none while
    /// read_plaintext() yields nothing ends the input (the rest is dropped).
    virtual std::size_t feed_input(std::span<const std::byte> bytes) = 0;
    /// Zero-copy alternative to feed_input(): room inside the layer to read
    /// the socket into directly, then commit_input() of what was read.
    /// Empty (the default) when the layer offers none; the Handle then
    /// feeds a copy.
    [[nodiscard]] virtual std::span<std::byte> input_space() { return {}; }
    virtual void commit_input(std::size_t bytes) { (void)bytes; }
    /// The socket reached end of file.
    virtual void feed_eof() = 0;
    /// Offers the Handle's socket (nullptr: takes it back, before the
    /// layer is released). Returns whether the layer uses it: then the
    /// Handle calls transport_readable() instead of reading the socket
    /// itself, and the layer sends output through it. The default: no.
    virtual bool attach_transport(StreamTransport* transport) {
        (void)transport;
        return false;
    }
    /// With a transport: the socket is readable, and the next
    /// read_plaintext() calls may receive from it. `exact`: take no byte
    /// beyond the layer's own end (bytes after it are plain: stoptls).
    virtual void transport_readable(bool exact) { (void)exact; }
    /// Decodes into `buffer` and returns the bytes written there; a result
    /// smaller than buffer.size() means nothing more without new input.
    virtual std::size_t read_plaintext(std::span<std::byte> buffer) = 0;

    // ---- writers → layer → socket -----------------------------------------

    /// Encodes up to bytes.size() plaintext bytes and returns how many it
    /// took. Taking fewer is backpressure (or a handshake still running):
    /// the Handle keeps the rest and offers it again after the socket took
    /// the pending output.
    virtual std::size_t write_plaintext(std::span<const std::byte> bytes) = 0;
    /// push_shutdown(): produce the closing record (close_notify), once.
    /// Called after every queued plaintext byte was taken.
    virtual void shutdown() = 0;
    /// Bytes waiting for the socket (records, handshake messages, alerts).
    [[nodiscard]] virtual std::span<const std::byte> pending_output() const noexcept = 0;
    /// The first `bytes` of pending_output() were taken for the socket.
    virtual void consume_output(std::size_t bytes) = 0;

    // ---- state ------------------------------------------------------------

    /// Whether the Handle must read even when no reader waits (during a
    /// handshake, say). Reading is otherwise driven by the readers.
    [[nodiscard]] virtual bool wants_input() const noexcept { return false; }
    /// Whether the layer carries application data yet (TLS: the handshake
    /// finished). The Handle reports the moment to on_starttls.
    [[nodiscard]] virtual bool established() const noexcept { return true; }
    /// Whether read_plaintext() could return bytes without new input (TLS:
    /// decrypted bytes or whole records inside OpenSSL). The Handle drains
    /// them when reading resumes, since the socket will not say so.
    [[nodiscard]] virtual bool has_buffered_input() const noexcept { return false; }
    /// Whether the peer ended the layer (TLS: its close_notify arrived).
    /// The Handle then either finishes a stoptls or treats it as end of file.
    [[nodiscard]] virtual bool input_closed() const noexcept { return false; }
    /// After input_closed(): the bytes that followed the layer's end, moved out.
    virtual std::string take_trailing_input() { return {}; }
    /// Non-zero once the layer failed; the Handle then raises
    /// on_error(error(), error_message(), fatal = true). TLS uses EPROTO.
    [[nodiscard]] virtual std::error_code error() const noexcept = 0;
    [[nodiscard]] virtual std::string error_message() const = 0;
};

/// Which side of a TLS handshake a Handle takes (AnyEvent's tls => "accept"
/// or "connect").
enum class TlsMode : std::uint8_t { none, accept, connect };

/// Makes the TLS layer for Handle::starttls(). anyloop::tls::TlsContext is
/// the implementation; share one among many Handles.
class TlsLayerFactory {
public:
    virtual ~TlsLayerFactory() = default;
    /// A fresh layer for `mode`; for connect, `peername` is the name the
    /// server's certificate must carry (and the SNI). Throws
    /// std::invalid_argument when the factory cannot serve `mode`.
    [[nodiscard]] virtual std::unique_ptr<StreamLayer> make_tls_layer(TlsMode mode, const std::string& peername) = 0;
};

}  // namespace anyloop
