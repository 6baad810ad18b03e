// anyloop/handle/reader.hpp — typed readers for Handle::push_read and
// Handle::unshift_read.
//
// A reader waits in the Handle's queue until the input holds one complete
// record of its kind, then removes the record from the input and calls its
// callback once with a view of the record's bytes. The view points into the
// Handle's buffer (no copy) and is valid only during the callback.
//
//     handle.push_read(Reader::line([](Handle& h, std::string_view line) {
//         h.push_write(std::string(line) + "\n");
//     }));
//
// Records that break a reader's limit end in on_error(EMSGSIZE, message,
// fatal = true). At end of file a line reader takes an unterminated last
// line and an "available" reader takes what is left; any other incomplete
// record is an error (EPIPE) instead of on_eof.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace anyloop {

class Handle;
class ReadBuffer;

namespace detail {
class HandleImpl;
}

/// Options of Reader::line.
struct LineOptions {
    /// The end-of-line sequence, matched literally (any bytes, "\0"
    /// included). Empty, the default, accepts "\n" and "\r\n".
    std::string eol{};
    /// The longest line accepted, not counting its end of line; 0 means no
    /// limit other than the Handle's rbuf_max.
    std::size_t max_length = 0;
};

/// One queued read request. Built by the factory functions below; moved
/// into a Handle with push_read() or unshift_read().
class Reader {
public:
    /// Receives one record: a view into the Handle's input, valid during
    /// the call. The record is already consumed from read_buffer().
    using Callback = std::function<void(Handle& handle, std::string_view record)>;
    /// A custom reader looks at the input, consumes what it takes, and
    /// returns true when it is done (and leaves the queue).
    using CustomCallback = std::function<bool(Handle& handle, ReadBuffer& input)>;

    /// A line up to an end-of-line sequence (see LineOptions); the line is
    /// passed without it.
    [[nodiscard]] static Reader line(Callback callback, LineOptions options = {});
    /// Exactly `size` bytes.
    [[nodiscard]] static Reader chunk(std::size_t size, Callback callback);
    /// A record preceded by its length as a big-endian unsigned integer of
    /// `prefix_bytes` (1, 2, 4 or 8) bytes, like Perl's pack "C/a*", "n/a*",
    /// "N/a*" and "Q>/a*"; the prefix is not passed. A length above
    /// `max_length` (0: no limit) is an error as soon as the prefix arrives.
    /// Throws std::invalid_argument for another prefix width.
    [[nodiscard]] static Reader length_prefixed(std::size_t prefix_bytes, Callback callback,
                                                std::size_t max_length = 0);
    /// Whatever input is there, as soon as there is at least one byte.
    [[nodiscard]] static Reader available(Callback callback);
    /// A reader of your own (AnyEvent's code-reference reader): called with
    /// the input whenever it changed while this reader is first in the
    /// queue, and once more at end of file. It leaves the queue when it
    /// returns true. It must consume the bytes it used.
    [[nodiscard]] static Reader custom(CustomCallback callback);

    /// An empty reader; pushing it throws std::invalid_argument.
    Reader() = default;

private:
    friend class detail::HandleImpl;

    enum class Kind : std::uint8_t { none, line, chunk, length_prefixed, available, custom };

    Kind kind_ = Kind::none;
    std::size_t size_ = 0;  // chunk: the size; length_prefixed: the prefix width
    std::size_t max_ = 0;   // line and length_prefixed: the limit (0: none)
    std::string eol_;       // line: empty = "\n" or "\r\n"
    // A line search resumes where the last one stopped, as long as the
    // input's front has not moved (consumed_total() still equals scan_mark_).
    std::size_t scan_from_ = 0;
    std::uint64_t scan_mark_ = 0;
    Callback on_record_;
    CustomCallback on_input_;
};

}  // namespace anyloop
