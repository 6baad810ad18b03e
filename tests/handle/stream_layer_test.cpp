// The stream-layer interface, with a toy layer (XOR) standing in for TLS:
// input is decoded before readers see it, output encoded before the
// socket does, partial acceptance, shutdown and errors.
#include <anyloop/handle/stream_layer.hpp>

#include <anyloop/handle/handle.hpp>

#include "handle/handle_test_support.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace anyloop::test {
namespace {

using namespace handle_support;
using StreamLayerTest = LoopTest;

std::string xor_bytes(std::string_view bytes, char key) {
    std::string out(bytes);
    for (char& c : out) c = static_cast<char>(c ^ key);
    return out;
}

// XORs every byte with a key. Takes at most `chunk` plaintext bytes per
// call (backpressure), says "BYE" on shutdown, and fails on the byte '!'
// (after decoding), the way a TLS session fails on a bad record.
class XorLayer final : public StreamLayer {
public:
    explicit XorLayer(char key, std::size_t chunk = 1 << 20) : key_(key), chunk_(chunk) {}

    std::size_t feed_input(std::span<const std::byte> bytes) override {
        for (std::byte b : bytes) {
            const char c = static_cast<char>(static_cast<char>(b) ^ key_);
            if (c == '!') {
                error_ = std::make_error_code(std::errc::protocol_error);
                return 0;
            }
            decoded_.push_back(c);
        }
        return bytes.size();
    }
    void feed_eof() override { ++eofs; }
    std::size_t read_plaintext(std::span<std::byte> buffer) override {
        const std::size_t n = std::min(buffer.size(), decoded_.size() - taken_);
        std::memcpy(buffer.data(), decoded_.data() + taken_, n);
        taken_ += n;
        if (taken_ == decoded_.size()) decoded_.clear(), taken_ = 0;
        return n;
    }
    std::size_t write_plaintext(std::span<const std::byte> bytes) override {
        const std::size_t n = std::min(bytes.size(), chunk_);
        output_ += xor_bytes({reinterpret_cast<const char*>(bytes.data()), n}, key_);
        ++writes;
        return n;
    }
    void shutdown() override {
        ++shutdowns;
        output_ += xor_bytes("BYE", key_);
    }
    std::span<const std::byte> pending_output() const noexcept override {
        return {reinterpret_cast<const std::byte*>(output_.data()), output_.size()};
    }
    void consume_output(std::size_t bytes) override { output_.erase(0, bytes); }
    std::error_code error() const noexcept override { return error_; }
    std::string error_message() const override { return "xor layer: forbidden byte"; }

    int eofs = 0;
    int writes = 0;
    int shutdowns = 0;

private:
    char key_;
    std::size_t chunk_;
    std::string decoded_;
    std::size_t taken_ = 0;
    std::string output_;
    std::error_code error_;
};

TEST_P(StreamLayerTest, ReadersSeePlaintextAndThePeerSeesEncodedBytes) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    auto owned = std::make_unique<XorLayer>('K', 4);  // 4 bytes at a time
    XorLayer* layer = owned.get();
    handle.set_layer(std::move(owned));
    EXPECT_EQ(handle.layer(), layer);

    std::vector<std::string> lines;
    std::function<void()> read_next = [&] {
        handle.push_read(Reader::line([&](Handle& h, std::string_view line) {
            lines.emplace_back(line);
            h.push_write("got " + std::string(line) + "\n");
            read_next();
        }));
    };
    read_next();
    const std::string wire = xor_bytes("hello\nworld\n", 'K');
    write_all(pair.b, wire.data(), wire.size());
    std::string received;
    ASSERT_TRUE(run_until(*loop, [&] {
        received += read_now(pair.b);
        return received.size() >= 20;
    }));
    EXPECT_EQ(lines, (std::vector<std::string>{"hello", "world"}));
    EXPECT_EQ(xor_bytes(received, 'K'), "got hello\ngot world\n");
    EXPECT_GE(layer->writes, 5) << "the layer took the 20 bytes of plaintext 4 bytes at a time";

    // push_shutdown: the layer's closing record, then end of file.
    handle.push_shutdown();
    ASSERT_TRUE(run_until(*loop, [&] {
        received += read_now(pair.b);
        return received.size() >= 23;
    }));
    EXPECT_EQ(layer->shutdowns, 1);
    EXPECT_EQ(xor_bytes(received.substr(20), 'K'), "BYE");
    char byte;
    EXPECT_EQ(::recv(pair.b, &byte, 1, 0), 0) << "write side shut down";
}

TEST_P(StreamLayerTest, BufferedInputBecomesTheLayersFirstInput) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    // "STARTTLS"-style: a plain line, then encoded bytes in the same packet.
    const std::string wire = "plain\n" + xor_bytes("secret\n", 'x');
    write_all(pair.b, wire.data(), wire.size());
    std::vector<std::string> lines;
    handle.push_read(Reader::line([&](Handle& h, std::string_view line) {
        lines.emplace_back(line);
        h.set_layer(std::make_unique<XorLayer>('x'));
        h.push_read(Reader::line([&](Handle&, std::string_view second) { lines.emplace_back(second); }));
    }));
    ASSERT_TRUE(run_until(*loop, [&] { return lines.size() == 2; }));
    EXPECT_EQ(lines, (std::vector<std::string>{"plain", "secret"}));
}

TEST_P(StreamLayerTest, ALayerErrorIsFatalWithItsMessage) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    handle.set_layer(std::make_unique<XorLayer>('e'));
    std::error_code error;
    std::string message;
    handle.on_error([&](Handle&, std::error_code code, const std::string& text, bool fatal) {
        error = code;
        message = text;
        EXPECT_TRUE(fatal);
    });
    handle.push_read(Reader::line([](Handle&, std::string_view) {}));
    const std::string wire = xor_bytes("bad!\n", 'e');
    write_all(pair.b, wire.data(), wire.size());
    ASSERT_TRUE(run_until(*loop, [&] { return static_cast<bool>(error); }));
    EXPECT_EQ(error, std::errc::protocol_error);
    EXPECT_NE(message.find("forbidden byte"), std::string::npos);
    EXPECT_TRUE(handle.closed());
}

TEST_P(StreamLayerTest, EndOfFileReachesTheLayerAndReleaseGoesBackToPlain) {
    SocketPair pair;
    Handle handle(*loop, std::exchange(pair.a, -1));
    auto owned = std::make_unique<XorLayer>('z');
    XorLayer* layer = owned.get();
    handle.set_layer(std::move(owned));
    handle.push_write("coded");
    EXPECT_EQ(read_now(pair.b), xor_bytes("coded", 'z'));
    std::unique_ptr<StreamLayer> released = handle.release_layer();
    EXPECT_EQ(released.get(), layer);
    handle.push_write("plain");
    EXPECT_EQ(read_now(pair.b), "plain");

    handle.set_layer(std::move(released));
    int eofs = 0;
    handle.on_eof([&](Handle&) { ++eofs; });
    handle.push_read(Reader::line([](Handle&, std::string_view) {}));
    pair.close_b();
    ASSERT_TRUE(run_until(*loop, [&] { return eofs == 1; }));
    EXPECT_EQ(layer->eofs, 1);
}

ANYLOOP_INSTANTIATE_BACKENDS(StreamLayerTest);

}  // namespace
}  // namespace anyloop::test
