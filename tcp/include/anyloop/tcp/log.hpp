// anyloop/tcp/log.hpp — Net::Server's log levels and where log lines go.
//
//     Logger logger(stderr_log_sink(), LogLevel::info);
//     logger.log(LogLevel::notice, "listening on 127.0.0.1:7000");   // written
//     if (logger.enabled(LogLevel::debug))                           // skip the formatting
//         logger.log(LogLevel::debug, "accepted " + describe(peer)); // not written at info
//
// A sink is any function; the two provided write to stderr and to syslog.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace anyloop::tcp {

/// Net::Server's levels 0 to 4, which are syslog's err to debug.
enum class LogLevel : std::uint8_t { err = 0, warning = 1, notice = 2, info = 3, debug = 4 };

/// "error", "warning", "notice", "info", "debug".
std::string_view log_level_name(LogLevel level) noexcept;
/// A level from its name (as above, or "err") or its number "0" to "4"
/// (Net::Server's log_level setting); nullopt for anything else.
std::optional<LogLevel> parse_log_level(std::string_view text) noexcept;

/// Receives every line a Logger lets through. Called on the thread that
/// logs; a sink shared by loops on several threads must be thread-safe
/// (both sinks below are).
using LogSink = std::function<void(LogLevel level, std::string_view message)>;

/// Writes "[anyloop] notice: message\n" to fd 2, one write(2) per line so
/// lines from several threads or processes do not interleave.
LogSink stderr_log_sink();
/// Sends each line to syslog(3) with the level's priority (err -> LOG_ERR
/// ... debug -> LOG_DEBUG) and `facility` (default LOG_DAEMON, 3 << 3).
/// Calls openlog(ident, LOG_PID, facility), and closelog() when the last
/// copy of the sink is destroyed: syslog's ident is process-wide, so use
/// one syslog sink per process.
LogSink syslog_log_sink(std::string ident = "anyloop", int facility = 3 << 3);

/// A sink and a threshold: lines at the threshold or more important
/// (a lower number) go to the sink, the rest are dropped.
class Logger {
public:
    Logger(LogSink sink = stderr_log_sink(), LogLevel level = LogLevel::notice);

    void set_level(LogLevel level) noexcept { level_ = level; }
    /// An empty sink drops everything.
    void set_sink(LogSink sink) { sink_ = std::move(sink); }
    [[nodiscard]] LogLevel level() const noexcept { return level_; }

    /// Whether a line of `level` would be written (level <= threshold).
    [[nodiscard]] bool enabled(LogLevel level) const noexcept { return level <= level_ && sink_; }
    /// Hands the line to the sink; nothing happens when not enabled.
    void log(LogLevel level, std::string_view message) const {
        if (enabled(level)) sink_(level, message);
    }

private:
    LogSink sink_;
    LogLevel level_;
};

}  // namespace anyloop::tcp
