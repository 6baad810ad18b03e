// Logger thresholds, level names, and the stderr sink's line format.
#include <anyloop/tcp/log.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

namespace anyloop::tcp::test {
namespace {

TEST(Logger, WritesAtOrBelowTheThreshold) {
    std::vector<std::pair<LogLevel, std::string>> lines;
    Logger logger([&](LogLevel level, std::string_view message) { lines.emplace_back(level, message); },
                  LogLevel::notice);
    EXPECT_TRUE(logger.enabled(LogLevel::err));
    EXPECT_TRUE(logger.enabled(LogLevel::notice));
    EXPECT_FALSE(logger.enabled(LogLevel::info));
    logger.log(LogLevel::err, "bad");
    logger.log(LogLevel::notice, "note");
    logger.log(LogLevel::info, "chatter");
    logger.log(LogLevel::debug, "noise");
    ASSERT_EQ(lines.size(), 2U);
    EXPECT_EQ(lines[0], std::make_pair(LogLevel::err, std::string("bad")));
    EXPECT_EQ(lines[1], std::make_pair(LogLevel::notice, std::string("note")));

    logger.set_level(LogLevel::debug);
    EXPECT_EQ(logger.level(), LogLevel::debug);
    logger.log(LogLevel::debug, "noise");
    EXPECT_EQ(lines.size(), 3U);
    logger.set_level(LogLevel::err);
    logger.log(LogLevel::warning, "dropped");
    EXPECT_EQ(lines.size(), 3U);
}

TEST(Logger, EmptySinkDropsEverything) {
    Logger logger(nullptr, LogLevel::debug);
    EXPECT_FALSE(logger.enabled(LogLevel::err));
    logger.log(LogLevel::err, "nowhere");  // no crash
    int calls = 0;
    logger.set_sink([&](LogLevel, std::string_view) { ++calls; });
    logger.log(LogLevel::err, "somewhere");
    EXPECT_EQ(calls, 1);
}

TEST(LogLevel, NamesAndParsing) {
    EXPECT_EQ(log_level_name(LogLevel::err), "error");
    EXPECT_EQ(log_level_name(LogLevel::warning), "warning");
    EXPECT_EQ(log_level_name(LogLevel::notice), "notice");
    EXPECT_EQ(log_level_name(LogLevel::info), "info");
    EXPECT_EQ(log_level_name(LogLevel::debug), "debug");
    EXPECT_EQ(parse_log_level("err"), LogLevel::err);
    EXPECT_EQ(parse_log_level("error"), LogLevel::err);
    EXPECT_EQ(parse_log_level("0"), LogLevel::err);
    EXPECT_EQ(parse_log_level("4"), LogLevel::debug);
    EXPECT_EQ(parse_log_level("info"), LogLevel::info);
    EXPECT_EQ(parse_log_level("5"), std::nullopt);
    EXPECT_EQ(parse_log_level("loud"), std::nullopt);
    EXPECT_EQ(parse_log_level(""), std::nullopt);
}

// Points fd 2 at a pipe for the test's lifetime and collects what arrives.
class CapturedStderr {
public:
    CapturedStderr() {
        EXPECT_EQ(::pipe2(pipe_, O_CLOEXEC | O_NONBLOCK), 0);
        saved_ = ::dup(STDERR_FILENO);
        ::dup2(pipe_[1], STDERR_FILENO);
    }
    ~CapturedStderr() {
        ::dup2(saved_, STDERR_FILENO);
        ::close(saved_);
        ::close(pipe_[0]);
        ::close(pipe_[1]);
    }
    CapturedStderr(const CapturedStderr&) = delete;
    CapturedStderr& operator=(const CapturedStderr&) = delete;
    // Each read returns what one write(2) put in the pipe.
    std::vector<std::string> writes() {
        std::vector<std::string> chunks;
        char buffer[4096];
        for (ssize_t n; (n = ::read(pipe_[0], buffer, sizeof buffer)) > 0;)
            chunks.emplace_back(buffer, static_cast<std::size_t>(n));
        return chunks;
    }

private:
    int pipe_[2] = {-1, -1};
    int saved_ = -1;
};

TEST(StderrLogSink, OneWritePerLine) {
    CapturedStderr captured;
    const LogSink sink = stderr_log_sink();
    sink(LogLevel::notice, "listening on 127.0.0.1:7000");
    const std::vector<std::string> first = captured.writes();
    sink(LogLevel::err, "cannot bind");
    const std::vector<std::string> second = captured.writes();
    ASSERT_EQ(first.size(), 1U);
    EXPECT_EQ(first[0], "[anyloop] notice: listening on 127.0.0.1:7000\n");
    ASSERT_EQ(second.size(), 1U);
    EXPECT_EQ(second[0], "[anyloop] error: cannot bind\n");
}

TEST(StderrLogSink, IsTheLoggerDefault) {
    CapturedStderr captured;
    const Logger logger;
    EXPECT_EQ(logger.level(), LogLevel::notice);
    logger.log(LogLevel::warning, "w");
    logger.log(LogLevel::info, "not at notice");
    const std::vector<std::string> writes = captured.writes();
    ASSERT_EQ(writes.size(), 1U);
    EXPECT_EQ(writes[0], "[anyloop] warning: w\n");
}

TEST(SyslogLogSink, SendsEveryLevel) {
    // syslog() cannot be read back here; this proves the sink formats every
    // level without failing, with or without a syslog daemon.
    LogSink sink = syslog_log_sink("anyloop-test");
    for (const LogLevel level : {LogLevel::err, LogLevel::warning, LogLevel::notice, LogLevel::info, LogLevel::debug})
        sink(level, "anyloop tcp_unit_test: syslog sink check, 100% harmless");
    LogSink copy = sink;
    sink = nullptr;
    copy(LogLevel::debug, "the ident outlives the first copy");
}

}  // namespace
}  // namespace anyloop::tcp::test
