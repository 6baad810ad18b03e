// Filters: every record type with its input split at every byte boundary,
// limits, and what each filter does with bytes that are not records.
#include <anyloop/tcp/filter.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace anyloop::tcp::test {
namespace {

using Status = FilterResult::Status;

struct Outcome {
    std::vector<std::string> records;
    FilterResult error;  // status error when one happened
    std::string left;    // bytes not consumed at the end
};

// Plays the server: the input arrives in pieces (cut at `cuts`, ascending),
// and after each piece the filter is asked for records until it wants more.
Outcome feed(Filter& filter, std::string_view wire, const std::vector<std::size_t>& cuts) {
    Outcome outcome;
    std::string input;
    std::size_t from = 0;
    for (std::size_t piece = 0; piece <= cuts.size(); ++piece) {
        const std::size_t to = piece < cuts.size() ? cuts[piece] : wire.size();
        input.append(wire.substr(from, to - from));
        from = to;
        for (;;) {
            FilterResult result = filter.next(input);
            if (result.status == Status::need_more) break;
            if (result.status == Status::error) {
                outcome.error = std::move(result);
                outcome.left = input;
                return outcome;
            }
            EXPECT_GT(result.consumed, 0U);
            EXPECT_LE(result.consumed, input.size());
            outcome.records.emplace_back(result.record);
            input.erase(0, result.consumed);
        }
    }
    outcome.left = input;
    return outcome;
}

// The input in one piece, in two pieces cut at every position, and one
// byte at a time: every way must give `expected` and leave `left`.
void expect_records_at_every_split(const Filter& prototype, std::string_view wire,
                                   const std::vector<std::string>& expected, std::string_view left = {}) {
    for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
        auto filter = prototype.clone();
        const Outcome outcome = feed(*filter, wire, {cut});
        EXPECT_EQ(outcome.records, expected) << "cut at " << cut;
        EXPECT_EQ(outcome.left, left) << "cut at " << cut;
        EXPECT_NE(outcome.error.status, Status::error) << outcome.error.message;
    }
    std::vector<std::size_t> every_byte;
    for (std::size_t i = 1; i < wire.size(); ++i) every_byte.push_back(i);
    auto filter = prototype.clone();
    const Outcome outcome = feed(*filter, wire, every_byte);
    EXPECT_EQ(outcome.records, expected) << "one byte at a time";
    EXPECT_EQ(outcome.left, left) << "one byte at a time";
}

// ---- LineFilter ---------------------------------------------------------------

TEST(LineFilter, DefaultEolAcceptsLfAndCrLf) {
    expect_records_at_every_split(LineFilter(), "a\nbb\r\n\nccc\r\n\r\nmid\rdle\ntail",
                                  {"a", "bb", "", "ccc", "", "mid\rdle"}, "tail");
}

TEST(LineFilter, DefaultEolWritesLf) {
    LineFilter filter;
    std::string out;
    filter.put("one", out);
    filter.put("", out);
    EXPECT_EQ(out, "one\n\n");
}

TEST(LineFilter, LiteralEolBothWays) {
    expect_records_at_every_split(LineFilter("\r\n"), "x\ny\r\nz\r\n\r\n", {"x\ny", "z", ""});
    LineFilter filter("\r\n");
    std::string out;
    filter.put("250 ok", out);
    EXPECT_EQ(out, "250 ok\r\n");
}

TEST(LineFilter, LiteralEolWithRepeatedPrefix) {
    // Partial matches of the end of line inside records, and an end of line
    // whose start repeats ("aab" after "a").
    expect_records_at_every_split(LineFilter("<END>"), "ab<EN<END><<END>x<E<END>", {"ab<EN", "<", "x<E"});
    expect_records_at_every_split(LineFilter("aab"), "xaaab|aab", {"xa", "|"});
    expect_records_at_every_split(LineFilter(std::string("\0\0", 2)), std::string("p\0q\0\0r\0\0", 8),
                                  {std::string("p\0q", 3), "r"});
}

TEST(LineFilter, RecordViewPointsIntoInput) {
    LineFilter filter;
    const std::string input = "hello\r\nrest";
    const FilterResult result = filter.next(input);
    ASSERT_EQ(result.status, Status::record);
    EXPECT_EQ(result.record, "hello");
    EXPECT_EQ(result.record.data(), input.data());
    EXPECT_EQ(result.consumed, 7U);
}

TEST(LineFilter, LineOfExactlyMaxLengthIsAccepted) {
    expect_records_at_every_split(LineFilter({}, 4), "abcd\r\nabc\nabcd\n", {"abcd", "abc", "abcd"});
    expect_records_at_every_split(LineFilter("\r\n", 4), "abcd\r\n\r\n", {"abcd", ""});
}

TEST(LineFilter, OverLongLineIsEmsgsizeAsSoonAsItShows) {
    LineFilter filter({}, 4);
    EXPECT_EQ(filter.next("abcd").status, Status::need_more);
    EXPECT_EQ(filter.next("abcd\r").status, Status::need_more) << "the \\r may start \\r\\n";
    const FilterResult result = filter.next("abcde");
    ASSERT_EQ(result.status, Status::error);
    EXPECT_EQ(result.error, std::error_code(EMSGSIZE, std::generic_category()));
    EXPECT_EQ(result.message, "line longer than 4 bytes");

    LineFilter crlf("\r\n", 4);
    EXPECT_EQ(crlf.next("abcd\r").status, Status::need_more);
    EXPECT_EQ(crlf.next("abcd\rx").status, Status::error);
    EXPECT_EQ(LineFilter({}, 4).next("abcde\n").status, Status::error) << "complete but too long";
    EXPECT_EQ(LineFilter({}, 4).next("abcd\r\r\n").status, Status::error) << "only one \\r is stripped";
}

TEST(LineFilter, OverLongLineAfterGoodOnesAtEverySplit) {
    const std::string wire = "ok\nfine\n" + std::string(9, 'x');
    for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
        LineFilter filter({}, 8);
        const Outcome outcome = feed(filter, wire, {cut});
        EXPECT_EQ(outcome.records, (std::vector<std::string>{"ok", "fine"}));
        EXPECT_EQ(outcome.error.status, Status::error) << "cut at " << cut;
        EXPECT_EQ(outcome.error.error.value(), EMSGSIZE);
        EXPECT_EQ(outcome.left, std::string(9, 'x'));
    }
}

TEST(LineFilter, ResumedSearchStillFindsEolAfterTheInputStartsOver) {
    LineFilter filter;
    EXPECT_EQ(filter.next("abcdef").status, Status::need_more);
    // A caller that dropped its input (a new connection with a reused
    // filter) passes shorter input: the filter must not skip past the eol.
    const FilterResult result = filter.next("x\n");
    ASSERT_EQ(result.status, Status::record);
    EXPECT_EQ(result.record, "x");
}

TEST(LineFilter, CloneKeepsSettingsNotState) {
    LineFilter filter("|", 3);
    EXPECT_EQ(filter.next("ab").status, Status::need_more);
    const auto copy = filter.clone();
    const FilterResult result = copy->next("a|");
    ASSERT_EQ(result.status, Status::record);
    EXPECT_EQ(result.record, "a");
    EXPECT_EQ(copy->next("abcd").status, Status::error);
    std::string out;
    copy->put("z", out);
    EXPECT_EQ(out, "z|");
}

TEST(LineFilter, RandomBytesGiveLinesOrEmsgsizeNeverMore) {
    std::mt19937 generator(7);
    std::string wire(4096, '\0');
    for (char& c : wire) c = static_cast<char>(generator() % 4 == 0 ? '\n' : generator() & 0xFF);
    for (const std::size_t limit : {0U, 3U, 64U}) {
        LineFilter filter({}, limit);
        const Outcome outcome = feed(filter, wire, {1, 100, 101, 2000});
        for (const std::string& record : outcome.records) {
            EXPECT_EQ(record.find('\n'), std::string::npos);
            if (limit != 0) {
                EXPECT_LE(record.size(), limit);
            }
        }
        if (outcome.error.status == Status::error) {
            EXPECT_EQ(outcome.error.error.value(), EMSGSIZE);
        }
    }
}

// ---- StreamFilter -------------------------------------------------------------

TEST(StreamFilter, EveryAvailableByteIsARecord) {
    StreamFilter filter;
    EXPECT_EQ(filter.next("").status, Status::need_more);
    const FilterResult result = filter.next("abc");
    ASSERT_EQ(result.status, Status::record);
    EXPECT_EQ(result.record, "abc");
    EXPECT_EQ(result.consumed, 3U);
    std::string out = "x";
    filter.put(std::string_view("\0y", 2), out);
    EXPECT_EQ(out, std::string("x\0y", 3));
}

TEST(StreamFilter, PiecesJoinBackIntoTheInput) {
    const std::string wire = "any\0bytes\n at all";
    for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
        StreamFilter filter;
        const Outcome outcome = feed(filter, wire, {cut});
        std::string joined;
        for (const std::string& record : outcome.records) joined += record;
        EXPECT_EQ(joined, wire);
        EXPECT_EQ(outcome.records.size(), cut == 0 || cut == wire.size() ? 1U : 2U);
    }
}

// ---- LengthPrefixedFilter -----------------------------------------------------

TEST(LengthPrefixedFilter, RoundTripForEveryWidthAtEverySplit) {
    for (const std::size_t width : {1U, 2U, 4U, 8U}) {
        LengthPrefixedFilter filter(width);
        const std::vector<std::string> records = {"hello", "", std::string("\0\n\xff", 3), std::string(200, 'z')};
        std::string wire;
        for (const std::string& record : records) filter.put(record, wire);
        EXPECT_EQ(wire.size(), 4 * width + 5 + 0 + 3 + 200);
        SCOPED_TRACE("width " + std::to_string(width));
        expect_records_at_every_split(filter, wire, records);
    }
}

TEST(LengthPrefixedFilter, PrefixIsBigEndian) {
    LengthPrefixedFilter filter(2);
    std::string out;
    filter.put(std::string(258, 'a'), out);
    EXPECT_EQ(out.substr(0, 2), std::string("\x01\x02", 2));
    LengthPrefixedFilter eight(8);
    out.clear();
    eight.put("abc", out);
    EXPECT_EQ(out, std::string("\0\0\0\0\0\0\0\x03"
                               "abc",
                               11));
}

TEST(LengthPrefixedFilter, OversizeLengthIsEmsgsizeBeforeThePayload) {
    LengthPrefixedFilter filter(4, 100);
    EXPECT_EQ(filter.next(std::string("\0\0", 2)).status, Status::need_more);
    const FilterResult result = filter.next(std::string("\0\0\0\x65", 4));  // 101, nothing of it yet
    ASSERT_EQ(result.status, Status::error);
    EXPECT_EQ(result.error, std::error_code(EMSGSIZE, std::generic_category()));
    EXPECT_EQ(result.message, "length prefix announces 101 bytes, more than the limit of 100 bytes");
    const FilterResult exact = filter.next(std::string("\0\0\0\x64", 4) + std::string(100, 'p'));
    EXPECT_EQ(exact.status, Status::record);
    EXPECT_EQ(exact.record.size(), 100U);
}

TEST(LengthPrefixedFilter, GarbageLengthWithoutLimitIsStillEmsgsize) {
    // Eight 0xff bytes announce 2^64 - 1 bytes: no buffer could hold that.
    LengthPrefixedFilter filter(8);
    const FilterResult result = filter.next(std::string(8, '\xff') + "junk");
    ASSERT_EQ(result.status, Status::error);
    EXPECT_EQ(result.error.value(), EMSGSIZE);
}

TEST(LengthPrefixedFilter, RejectsBadWidthAndRecordsTooBigForThePrefix) {
    EXPECT_THROW(LengthPrefixedFilter(3), std::invalid_argument);
    EXPECT_THROW(LengthPrefixedFilter(0), std::invalid_argument);
    LengthPrefixedFilter filter(1);
    std::string out;
    filter.put(std::string(255, 'a'), out);
    EXPECT_EQ(out.size(), 256U);
    EXPECT_THROW(filter.put(std::string(256, 'a'), out), std::length_error);
}

TEST(LengthPrefixedFilter, CloneKeepsSettings) {
    const LengthPrefixedFilter filter(2, 10);
    const auto copy = filter.clone();
    EXPECT_EQ(copy->next(std::string("\0\x0b", 2)).status, Status::error);
    std::string out;
    copy->put("ab", out);
    EXPECT_EQ(out, std::string("\0\x02"
                               "ab",
                               4));
}

}  // namespace
}  // namespace anyloop::tcp::test
