// LineFilter, StreamFilter and LengthPrefixedFilter.
#include <anyloop/tcp/filter.hpp>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <stdexcept>

namespace anyloop::tcp {

namespace {

FilterResult record_result(std::string_view record, std::size_t consumed) {
    FilterResult result;
    result.status = FilterResult::Status::record;
    result.consumed = consumed;
    result.record = record;
    return result;
}

FilterResult error_result(int error, std::string message) {
    FilterResult result;
    result.status = FilterResult::Status::error;
    result.error = std::error_code(error, std::generic_category());
    result.message = std::move(message);
    return result;
}

// The length of the longest end of `input` that is a proper start of `eol`:
// an end of line that may be arriving.
std::size_t partial_eol(std::string_view input, std::string_view eol) {
    for (std::size_t k = std::min(eol.size() - 1, input.size()); k > 0; --k)
        if (input.substr(input.size() - k) == eol.substr(0, k)) return k;
    return 0;
}

}  // namespace

// ---- LineFilter -------------------------------------------------------------

LineFilter::LineFilter(std::string eol, std::size_t max_length) : eol_(std::move(eol)), max_length_(max_length) {}

FilterResult LineFilter::next(std::string_view input) {
    // Shorter input than what was searched means the caller started over.
    if (scanned_ > input.size()) scanned_ = 0;
    const std::string_view eol = eol_.empty() ? std::string_view("\n") : std::string_view(eol_);
    const std::size_t found = input.find(eol, scanned_);
    if (found == std::string_view::npos) {
        // With the default end of line a final "\r" may be the start of "\r\n".
        const std::size_t partial =
            eol_.empty() ? (!input.empty() && input.back() == '\r' ? 1 : 0) : partial_eol(input, eol);
        if (max_length_ != 0 && input.size() - partial > max_length_) return too_long();
        scanned_ = input.size() - partial;
        return {};
    }
    scanned_ = 0;
    std::size_t length = found;
    if (eol_.empty() && length > 0 && input[length - 1] == '\r') --length;
    if (max_length_ != 0 && length > max_length_) return too_long();
    return record_result(input.substr(0, length), found + eol.size());
}

FilterResult LineFilter::too_long() const {
    return error_result(EMSGSIZE, "line longer than " + std::to_string(max_length_) + " bytes");
}

void LineFilter::put(std::string_view record, std::string& out) {
    out.append(record);
    out.append(eol_.empty() ? std::string_view("\n") : std::string_view(eol_));
}

std::unique_ptr<Filter> LineFilter::clone() const {
    return std::make_unique<LineFilter>(eol_, max_length_);
}

// ---- StreamFilter -----------------------------------------------------------

FilterResult StreamFilter::next(std::string_view input) {
    if (input.empty()) return {};
    return record_result(input, input.size());
}

void StreamFilter::put(std::string_view record, std::string& out) {
    out.append(record);
}

std::unique_ptr<Filter> StreamFilter::clone() const {
    return std::make_unique<StreamFilter>();
}

// ---- LengthPrefixedFilter ---------------------------------------------------

LengthPrefixedFilter::LengthPrefixedFilter(std::size_t prefix_bytes, std::size_t max_length)
    : prefix_bytes_(prefix_bytes), max_length_(max_length) {
    if (prefix_bytes != 1 && prefix_bytes != 2 && prefix_bytes != 4 && prefix_bytes != 8)
        throw std::invalid_argument("LengthPrefixedFilter: prefix of " + std::to_string(prefix_bytes) +
                                    " bytes; use 1, 2, 4 or 8");
}

FilterResult LengthPrefixedFilter::next(std::string_view input) {
    if (input.size() < prefix_bytes_) return {};
    std::uint64_t length = 0;
    for (std::size_t i = 0; i < prefix_bytes_; ++i) length = length << 8 | static_cast<unsigned char>(input[i]);
    const std::uint64_t limit =
        max_length_ != 0 ? max_length_ : std::numeric_limits<std::size_t>::max() - prefix_bytes_;
    if (length > limit)
        return error_result(EMSGSIZE, "length prefix announces " + std::to_string(length) +
                                          " bytes, more than the limit of " + std::to_string(limit) + " bytes");
    const auto size = static_cast<std::size_t>(length);
    if (input.size() - prefix_bytes_ < size) return {};
    return record_result(input.substr(prefix_bytes_, size), prefix_bytes_ + size);
}

void LengthPrefixedFilter::put(std::string_view record, std::string& out) {
    const std::uint64_t length = record.size();
    if (prefix_bytes_ < 8 && length >> (8 * prefix_bytes_) != 0)
        throw std::length_error("LengthPrefixedFilter::put: " + std::to_string(length) + " bytes do not fit a " +
                                std::to_string(prefix_bytes_) + "-byte length prefix");
    for (std::size_t i = 0; i < prefix_bytes_; ++i)
        out.push_back(static_cast<char>(length >> (8 * (prefix_bytes_ - 1 - i))));
    out.append(record);
}

std::unique_ptr<Filter> LengthPrefixedFilter::clone() const {
    return std::make_unique<LengthPrefixedFilter>(prefix_bytes_, max_length_);
}

}  // namespace anyloop::tcp
