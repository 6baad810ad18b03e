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
// touches the socket, so it works the same on every backend. A Handle
// without a layer does none of this: the plain path is a single branch.
//
// This interface mirrors anyloop::tls::TlsSession; the TLS issue may extend
// it (on_starttls / on_stoptls notifications, bytes after close_notify).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <system_error>

namespace anyloop {

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
    /// The socket reached end of file.
    virtual void feed_eof() = 0;
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
    /// Non-zero once the layer failed; the Handle then raises
    /// on_error(error(), error_message(), fatal = true). TLS uses EPROTO.
    [[nodiscard]] virtual std::error_code error() const noexcept = 0;
    [[nodiscard]] virtual std::string error_message() const = 0;
};

}  // namespace anyloop
