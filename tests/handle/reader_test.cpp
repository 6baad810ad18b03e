// Readers: every reader type with the input split at every byte boundary,
// pipelined records, mixed readers, unshift order, end of file, and the
// limits that close one connection and no other.
#include <anyloop/handle/reader.hpp>

#include <anyloop/handle/handle.hpp>

#include "handle/handle_test_support.hpp"

#include <memory>
#include <string>
#include <vector>

namespace anyloop::test {
namespace {

using namespace std::chrono_literals;
using namespace handle_support;
using Records = std::vector<std::string>;
using ReaderFactory = std::function<Reader(Reader::Callback)>;

// Keeps one reader made by `make` queued on `handle`, appending each record
// to `records` and queueing the next reader from inside the callback.
void keep_collecting(Handle& handle, const ReaderFactory& make, Records& records) {
    handle.push_read(make([&make, &records](Handle& h, std::string_view record) {
        records.emplace_back(record);
        keep_collecting(h, make, records);
    }));
}

class ReaderTest : public LoopTest {
protected:
    // Feeds `input` to a Handle in two writes split at `split`, the Handle
    // re-queueing `make` after each record; returns the records.
    Records feed_split(const ReaderFactory& make, const std::string& input, std::size_t split, std::size_t expected) {
        SocketPair pair;
        Records records;
        Handle handle(*loop, std::exchange(pair.a, -1));
        keep_collecting(handle, make, records);
        write_all(pair.b, input.data(), split);
        run_until_drained(*loop, handle.fd());
        write_all(pair.b, input.data() + split, input.size() - split);
        EXPECT_TRUE(run_until(*loop, [&] { return records.size() >= expected; }, 5s)) << "split at " << split;
        return records;
    }

    // The same input split at every boundary, and byte by byte.
    void expect_every_split(const ReaderFactory& make, const std::string& input, const Records& expected) {
        for (std::size_t split = 0; split <= input.size(); ++split) {
            EXPECT_EQ(feed_split(make, input, split, expected.size()), expected) << "split at " << split;
            if (HasFailure()) return;
        }
        SocketPair pair;
        Records records;
        Handle handle(*loop, std::exchange(pair.a, -1));
        keep_collecting(handle, make, records);
        for (char byte : input) {
            write_all(pair.b, &byte, 1);
            run_until_drained(*loop, handle.fd());
        }
        EXPECT_TRUE(run_until(*loop, [&] { return records.size() >= expected.size(); }, 5s));
        EXPECT_EQ(records, expected) << "byte by byte";
    }
};

TEST_P(ReaderTest, LineWithDefaultEolAtEverySplit) {
    expect_every_split([](Reader::Callback cb) { return Reader::line(std::move(cb)); },
                       "alpha\nbeta\r\n\r\n\ngamma delta\n", {"alpha", "beta", "", "", "gamma delta"});
}

TEST_P(ReaderTest, LineWithCustomEolAtEverySplit) {
    expect_every_split([](Reader::Callback cb) { return Reader::line(std::move(cb), {.eol = "\r\n\r\n"}); },
                       "a\r\nb\r\n\r\n\r\n\r\nc\r\r\n\r\n", {"a\r\nb", "", "c\r"});
    const std::string nul(1, '\0');
    expect_every_split([&](Reader::Callback cb) { return Reader::line(std::move(cb), {.eol = nul}); },
                       "one" + nul + nul + "two\n" + nul, {"one", "", "two\n"});
}

TEST_P(ReaderTest, ChunkAtEverySplit) {
    expect_every_split([](Reader::Callback cb) { return Reader::chunk(3, std::move(cb)); }, "abcdefghi",
                       {"abc", "def", "ghi"});
}

TEST_P(ReaderTest, LengthPrefixedAtEverySplitForEachWidth) {
    for (std::size_t width : {1U, 2U, 4U, 8U}) {
        const std::string big(width == 1 ? 200 : 300, 'z');
        const Records payloads{"", "x", "hello world", big};
        std::string input;
        for (const std::string& payload : payloads) input += prefixed(width, payload);
        expect_every_split(
            [width](Reader::Callback cb) { return Reader::length_prefixed(width, std::move(cb)); }, input, payloads);
        if (HasFailure()) return;
    }
    EXPECT_THROW((void)Reader::length_prefixed(3, [](Handle&, std::string_view) {}), std::invalid_argument);
}

TEST_P(ReaderTest, AvailableAtEverySplit) {
    const std::string input = "whatever comes";
    for (std::size_t split = 1; split < input.size(); ++split) {
        Records got = feed_split([](Reader::Callback cb) { return Reader::available(std::move(cb)); }, input, split, 2);
        ASSERT_EQ(got.size(), 2U) << "split at " << split;
        EXPECT_EQ(got[0] + got[1], input);
        EXPECT_EQ(got[0], input.substr(0, split));
    }
}

// A custom reader for netstrings ("5:hello,").
Reader netstring_reader(Reader::Callback callback) {
    return Reader::custom([callback = std::move(callback)](Handle& handle, ReadBuffer& input) {
        const std::string_view view = input.view();
        const std::size_t colon = view.find(':');
        if (colon == std::string_view::npos) return false;
        const std::size_t length = std::stoul(std::string(view.substr(0, colon)));
        if (view.size() < colon + 1 + length + 1) return false;
        const std::string payload(view.substr(colon + 1, length));
        input.consume(colon + 1 + length + 1);
        callback(handle, payload);
        return true;
    });
}

TEST_P(ReaderTest, CustomAtEverySplit) {
    expect_every_split(netstring_reader, "5:hello,0:,11:hello world,", {"hello", "", "hello world"});
}

TEST_P(ReaderTest, PipelinedRecordsInOneWrite) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    std::string input;
    for (int i = 0; i < 2000; ++i) input += "line " + std::to_string(i) + "\n";
    Records lines;
    const ReaderFactory line = [](Reader::Callback callback) { return Reader::line(std::move(callback)); };
    keep_collecting(handle, line, lines);
    write_all(pair.b, input.data(), input.size());
    ASSERT_TRUE(run_until(*loop, [&] { return lines.size() == 2000; }));
    for (int i = 0; i < 2000; ++i) ASSERT_EQ(lines[static_cast<std::size_t>(i)], "line " + std::to_string(i));
}

TEST_P(ReaderTest, MixedReadersInOneStream) {
    // A header line announcing a chunk, then a length-prefixed record, then
    // whatever is left, queued up front.
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    Records got;
    auto keep = [&](Handle&, std::string_view record) { got.emplace_back(record); };
    handle.push_read(Reader::line([&](Handle& h, std::string_view line) {
        got.emplace_back(line);
        h.unshift_read(Reader::chunk(std::stoul(std::string(line.substr(4))), keep));
    }));
    handle.push_read(Reader::length_prefixed(2, keep));
    handle.push_read(Reader::available(keep));
    const std::string input = "LEN 5\r\n12345" + prefixed(2, "prefixed") + "tail";
    for (char byte : input) {
        write_all(pair.b, &byte, 1);
        run_until_drained(*loop, handle.fd());
    }
    ASSERT_TRUE(run_until(*loop, [&] { return got.size() >= 4; }));
    EXPECT_EQ(got, (Records{"LEN 5", "12345", "prefixed", "t"}));
    // The "available" reader took the first byte of the tail. With no reader
    // left the Handle stops reading: the rest waits, in its buffer or the socket.
    EXPECT_FALSE(handle.reading());
    EXPECT_EQ(handle.read_buffer().size() + readable_bytes(handle.fd()), 3U);
}

TEST_P(ReaderTest, UnshiftReadGoesFirst) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    std::string order;
    auto tag = [&](char name) { return [&order, name](Handle&, std::string_view) { order.push_back(name); }; };
    handle.push_read(Reader::chunk(1, [&](Handle& h, std::string_view) {
        order.push_back('A');
        h.unshift_read(Reader::chunk(1, tag('C')));
        h.unshift_read(Reader::chunk(1, tag('D')));  // before C
        h.push_read(Reader::chunk(1, tag('E')));     // after B
    }));
    handle.push_read(Reader::chunk(1, tag('B')));
    handle.unshift_read(Reader::chunk(1, tag('0')));  // before A
    write_all(pair.b, "123456", 6);
    ASSERT_TRUE(run_until(*loop, [&] { return order.size() == 6; }));
    EXPECT_EQ(order, "0ADCBE");
}

TEST_P(ReaderTest, OnReadSeesTheBufferAndConsumesWhatItUses) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    std::string taken;
    int calls = 0;
    handle.on_read([&](Handle& h) {
        ++calls;
        ReadBuffer& input = h.read_buffer();
        // Take whole pairs of bytes only.
        const std::size_t even = input.size() / 2 * 2;
        taken.append(input.data(), even);
        input.consume(even);
    });
    write_all(pair.b, "abc", 3);
    ASSERT_TRUE(run_until(*loop, [&] { return calls >= 1; }));
    EXPECT_EQ(taken, "ab");
    EXPECT_EQ(handle.read_buffer().view(), "c");
    write_all(pair.b, "de", 2);
    ASSERT_TRUE(run_until(*loop, [&] { return taken.size() == 4; }));
    EXPECT_EQ(taken, "abcd");
    EXPECT_EQ(handle.read_buffer().view(), "e");
}

TEST_P(ReaderTest, EndOfFileDeliversTheRestThenOnEof) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    Records lines;
    int eofs = 0;
    handle.on_eof([&](Handle& h) {
        ++eofs;
        EXPECT_TRUE(h.at_eof());
    });
    std::function<void()> queue_next = [&] {
        handle.push_read(Reader::line([&](Handle&, std::string_view line) {
            lines.emplace_back(line);
            EXPECT_EQ(eofs, 0);  // every line comes before on_eof
            queue_next();
        }));
    };
    queue_next();
    const std::string input = "one\ntwo\nlast without newline";
    write_all(pair.b, input.data(), input.size());
    pair.close_b();
    ASSERT_TRUE(run_until(*loop, [&] { return eofs == 1; }));
    EXPECT_EQ(lines, (Records{"one", "two", "last without newline"}));
    EXPECT_FALSE(handle.closed());
    EXPECT_FALSE(handle.reading());
}

TEST_P(ReaderTest, EndOfFileInsideARecordIsAnError) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    std::error_code error;
    std::string message;
    int eofs = 0;
    handle.on_eof([&](Handle&) { ++eofs; });
    handle.on_error([&](Handle&, std::error_code code, const std::string& text, bool fatal) {
        error = code;
        message = text;
        EXPECT_TRUE(fatal);
    });
    handle.push_read(Reader::chunk(10, [](Handle&, std::string_view) { ADD_FAILURE() << "incomplete chunk delivered"; }));
    write_all(pair.b, "1234", 4);
    pair.close_b();
    ASSERT_TRUE(run_until(*loop, [&] { return static_cast<bool>(error); }));
    EXPECT_EQ(error, std::errc::broken_pipe);
    EXPECT_NE(message.find("4 bytes"), std::string::npos) << message;
    EXPECT_EQ(eofs, 0);
    EXPECT_TRUE(handle.closed());
    EXPECT_EQ(handle.fd(), -1);
}

// One connection breaks a limit; another on the same loop goes on.
class LimitTest : public ReaderTest {
protected:
    void expect_only_first_closed(const std::function<void(Handle&)>& arm, const std::string& offending,
                                  std::errc expected_error, const std::string& expected_text) {
        TcpPair bad_pair;
        TcpPair good_pair;
        Handle bad(*loop, bad_pair.take_a());
        Handle good(*loop, good_pair.take_a());
        std::error_code error;
        std::string message;
        bad.on_error([&](Handle& h, std::error_code code, const std::string& text, bool fatal) {
            error = code;
            message = text;
            EXPECT_TRUE(fatal);
            EXPECT_GE(h.fd(), 0);  // still open during the callback
        });
        arm(bad);
        Records good_lines;
        good.push_read(Reader::line([&](Handle& h, std::string_view line) {
            good_lines.emplace_back(line);
            h.push_write("echo " + std::string(line) + "\n");
        }));
        write_all(bad_pair.b, offending.data(), offending.size());
        ASSERT_TRUE(run_until(*loop, [&] { return static_cast<bool>(error); }));
        EXPECT_EQ(error, expected_error);
        EXPECT_NE(message.find(expected_text), std::string::npos) << message;
        EXPECT_TRUE(bad.closed());
        // The peer of the closed connection sees it end.
        RawPeer bad_peer(*loop, bad_pair.b);
        ASSERT_TRUE(run_until(*loop, [&] { return bad_peer.done(); }));
        bad_peer.stop_reading();
        // The other connection is unaffected.
        RawPeer good_peer(*loop, good_pair.b);
        write_all(good_pair.b, "still here\n", 11);
        ASSERT_TRUE(run_until(*loop, [&] { return good_peer.received == "echo still here\n"; }));
        EXPECT_EQ(good_lines, Records{"still here"});
        good_peer.stop_reading();
    }
};

TEST_P(LimitTest, OversizedLineClosesOnlyThatConnection) {
    expect_only_first_closed(
        [](Handle& h) {
            h.push_read(Reader::line([](Handle&, std::string_view) { ADD_FAILURE(); }, {.max_length = 16}));
        },
        std::string(100, 'x'), std::errc::message_size, "max_length 16");
}

TEST_P(LimitTest, LineOfExactlyMaxLengthIsAccepted) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    Records lines;
    handle.push_read(Reader::line([&](Handle&, std::string_view line) { lines.emplace_back(line); }, {.max_length = 4}));
    write_all(pair.b, "abcd\r", 5);
    run_until_drained(*loop, handle.fd());
    EXPECT_FALSE(handle.closed());
    write_all(pair.b, "\n", 1);
    ASSERT_TRUE(run_until(*loop, [&] { return lines.size() == 1; }));
    EXPECT_EQ(lines[0], "abcd");
}

TEST_P(LimitTest, OversizedLengthPrefixClosesOnlyThatConnection) {
    // The error comes as soon as the prefix is in: no payload is awaited.
    expect_only_first_closed(
        [](Handle& h) {
            h.push_read(Reader::length_prefixed(4, [](Handle&, std::string_view) { ADD_FAILURE(); }, 1000));
        },
        std::string("\x00\x0f\x42\x40", 4), std::errc::message_size, "1000000 bytes, more than max_length 1000");
}

TEST_P(LimitTest, ReadBufferBeyondRbufMax) {
    expect_only_first_closed(
        [](Handle& h) {
            h.set_rbuf_max(1024);
            h.push_read(Reader::chunk(4096, [](Handle&, std::string_view) { ADD_FAILURE(); }));
        },
        std::string(4096, 'r'), std::errc::no_space_on_device, "rbuf_max 1024");
}

TEST_P(LimitTest, WriteQueueBeyondWbufMax) {
    TcpPair pair;
    Handle handle(*loop, pair.take_a());
    handle.set_wbuf_max(64 * 1024);
    std::error_code error;
    std::string message;
    handle.on_error([&](Handle&, std::error_code code, const std::string& text, bool) {
        error = code;
        message = text;
    });
    // The peer reads nothing: the kernel's buffers fill, then the queue.
    const std::string block(16 * 1024, 'w');
    for (int i = 0; i < 4096 && !handle.closed(); ++i) handle.push_write(block);
    EXPECT_EQ(error, std::errc::no_space_on_device);
    EXPECT_NE(message.find("wbuf_max 65536"), std::string::npos) << message;
    EXPECT_TRUE(handle.closed());
}

ANYLOOP_INSTANTIATE_BACKENDS(ReaderTest);
ANYLOOP_INSTANTIATE_BACKENDS(LimitTest);

}  // namespace
}  // namespace anyloop::test
