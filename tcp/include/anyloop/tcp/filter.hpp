// anyloop/tcp/filter.hpp — filters: records out of bytes and back, after
// POE's filters (POE::Filter::Line, ::Stream, ::Block with a length prefix).
//
// A TcpServer or TcpClient owns one filter per direction and connection.
// Input: it calls next() with the bytes it has not consumed yet, hands a
// complete record to your input callback, then drops `consumed` bytes and
// asks again until the filter wants more. Output: put() appends the wire
// form of a record.
//
//     LineFilter lines("\r\n", 4096);             // CRLF both ways, 4 KiB lines
//     std::string_view input = "HELO x\r\nQUIT\r\n";
//     for (;;) {
//         FilterResult result = lines.next(input);
//         if (result.status != FilterResult::Status::record) break;
//         handle_command(result.record);          // "HELO x", then "QUIT"
//         input.remove_prefix(result.consumed);
//     }
//     std::string out;
//     lines.put("250 ok", out);                   // out == "250 ok\r\n"
//
// A filter of your own derives from Filter. A filter may keep state between
// calls (the line filter remembers how far it searched): after need_more,
// the next call must see the same bytes at the start of its input, followed
// by whatever arrived since; after a record, input without the consumed
// bytes. clone() gives each connection its own filter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace anyloop::tcp {

/// What Filter::next() found at the start of its input.
struct FilterResult {
    enum class Status : std::uint8_t { record, need_more, error };
    Status status = Status::need_more;
    /// Input bytes to drop after the record was used (the record and its
    /// framing: end of line, length prefix).
    std::size_t consumed = 0;
    /// The record: valid until the next call on the filter or until the
    /// input changes; points into the input or into the filter.
    std::string_view record{};
    /// With Status::error: EMSGSIZE for an over-long record, EPROTO for
    /// bytes that cannot be a record (std::generic_category).
    std::error_code error{};
    /// With Status::error: what went wrong, e.g. "line longer than 4096 bytes".
    std::string message{};
};

/// Turns bytes into records (next) and records into bytes (put).
class Filter {
public:
    virtual ~Filter() = default;
    /// Looks for the next record at the start of `input` (bytes not consumed
    /// yet). An error is final for the connection: the caller closes it.
    virtual FilterResult next(std::string_view input) = 0;
    /// Appends the wire form of `record` to `out`.
    virtual void put(std::string_view record, std::string& out) = 0;
    /// Whether the filter passes bytes through unchanged both ways (every
    /// available byte is one record; put() appends the record as it is), so
    /// that a server may skip it: StreamFilter.
    [[nodiscard]] virtual bool transparent() const noexcept { return false; }
    /// A fresh filter with the same settings (one per connection).
    [[nodiscard]] virtual std::unique_ptr<Filter> clone() const = 0;
};

/// Lines. With an empty `eol` (the default) input lines end at "\n", a "\r"
/// before it is removed too, and output lines end with "\n". A non-empty
/// `eol` is matched literally, in both directions. Records exclude the end
/// of line. A line longer than `max_length` bytes (0: no limit) is an
/// EMSGSIZE error, reported as soon as the input holds more than
/// max_length bytes that are not an end of line (or the start of one).
class LineFilter final : public Filter {
public:
    explicit LineFilter(std::string eol = {}, std::size_t max_length = 0);
    FilterResult next(std::string_view input) override;
    void put(std::string_view record, std::string& out) override;
    [[nodiscard]] std::unique_ptr<Filter> clone() const override;

    [[nodiscard]] const std::string& eol() const noexcept { return eol_; }
    [[nodiscard]] std::size_t max_length() const noexcept { return max_length_; }

private:
    [[nodiscard]] FilterResult too_long() const;

    std::string eol_;
    std::size_t max_length_;
    // Where the search for the end of line resumes after need_more: the
    // bytes before it were searched already.
    std::size_t scanned_ = 0;
};

/// No framing: every available byte is a record (as soon as at least one
/// arrived); put() copies.
class StreamFilter final : public Filter {
public:
    FilterResult next(std::string_view input) override;
    void put(std::string_view record, std::string& out) override;
    [[nodiscard]] bool transparent() const noexcept override { return true; }
    [[nodiscard]] std::unique_ptr<Filter> clone() const override;
};

/// Records preceded by their length as a big-endian unsigned integer of
/// `prefix_bytes` (1, 2, 4 or 8), like Reader::length_prefixed and
/// Handle::push_write_prefixed. A length above `max_length` (0: no limit)
/// is an EMSGSIZE error as soon as the prefix arrived, before the payload.
/// The constructor throws std::invalid_argument for another prefix width;
/// put() throws std::length_error for a record whose size the prefix cannot
/// hold.
class LengthPrefixedFilter final : public Filter {
public:
    explicit LengthPrefixedFilter(std::size_t prefix_bytes = 4, std::size_t max_length = 0);
    FilterResult next(std::string_view input) override;
    void put(std::string_view record, std::string& out) override;
    [[nodiscard]] std::unique_ptr<Filter> clone() const override;

    [[nodiscard]] std::size_t prefix_bytes() const noexcept { return prefix_bytes_; }
    [[nodiscard]] std::size_t max_length() const noexcept { return max_length_; }

private:
    std::size_t prefix_bytes_;
    std::size_t max_length_;
};

}  // namespace anyloop::tcp
