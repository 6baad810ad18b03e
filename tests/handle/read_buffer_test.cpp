// ReadBuffer on its own: consume, append, prepare/commit, compaction and
// trimming.
#include <anyloop/handle/read_buffer.hpp>

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace anyloop::test {
namespace {

TEST(ReadBuffer, AppendConsumeAndView) {
    ReadBuffer buffer;
    EXPECT_TRUE(buffer.empty());
    EXPECT_EQ(buffer.capacity(), 0U);
    buffer.append("hello world");
    EXPECT_EQ(buffer.view(), "hello world");
    const char* before = buffer.data();
    buffer.consume(6);
    EXPECT_EQ(buffer.view(), "world");
    EXPECT_EQ(buffer.data(), before + 6) << "consume moves no bytes";
    EXPECT_EQ(buffer.consumed_total(), 6U);
    buffer.consume(100);  // clamps
    EXPECT_TRUE(buffer.empty());
    EXPECT_EQ(buffer.consumed_total(), 11U);
}

TEST(ReadBuffer, PrepareAndCommit) {
    ReadBuffer buffer;
    auto room = buffer.prepare(10);
    ASSERT_GE(room.size(), 10U);
    std::memcpy(room.data(), "0123456789", 10);
    buffer.commit(4);
    EXPECT_EQ(buffer.view(), "0123");
}

TEST(ReadBuffer, ReclaimsTheConsumedFrontBeforeGrowing) {
    ReadBuffer buffer;
    buffer.append(std::string(1000, 'a'));
    const std::size_t capacity = buffer.capacity();
    buffer.consume(990);
    (void)buffer.prepare(capacity - 20);
    EXPECT_EQ(buffer.capacity(), capacity) << "moved down instead of reallocating";
    EXPECT_EQ(buffer.view(), std::string(10, 'a'));
}

TEST(ReadBuffer, TrimFreesWhenEmptyAndShrinksWhenOversized) {
    ReadBuffer buffer;
    buffer.append(std::string(1 << 20, 'b'));
    buffer.consume((1 << 20) - 10);
    buffer.trim(100);
    EXPECT_EQ(buffer.view(), std::string(10, 'b'));
    EXPECT_LE(buffer.capacity(), 110U);
    buffer.clear();
    buffer.trim(100);
    EXPECT_EQ(buffer.capacity(), 0U);
}

}  // namespace
}  // namespace anyloop::test
