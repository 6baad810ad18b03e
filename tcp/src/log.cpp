// The log sinks and level names.
#include <anyloop/tcp/log.hpp>

#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

namespace anyloop::tcp {

namespace {

constexpr std::string_view level_names[] = {"error", "warning", "notice", "info", "debug"};
constexpr int syslog_priorities[] = {LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG};

// Writes all of `text` to `fd`: one write(2) unless the kernel takes less.
void write_fully(int fd, std::string_view text) {
    while (!text.empty()) {
        const ssize_t written = ::write(fd, text.data(), text.size());
        if (written < 0 && errno == EINTR) continue;
        if (written <= 0) return;  // nowhere left to report it
        text.remove_prefix(static_cast<std::size_t>(written));
    }
}

}  // namespace

std::string_view log_level_name(LogLevel level) noexcept {
    const auto index = static_cast<std::size_t>(level);
    return index < std::size(level_names) ? level_names[index] : "unknown";
}

std::optional<LogLevel> parse_log_level(std::string_view text) noexcept {
    if (text == "err") return LogLevel::err;
    for (std::size_t i = 0; i < std::size(level_names); ++i)
        if (text == level_names[i] || (text.size() == 1 && text[0] == static_cast<char>('0' + i)))
            return static_cast<LogLevel>(i);
    return std::nullopt;
}

LogSink stderr_log_sink() {
    return [](LogLevel level, std::string_view message) {
        std::string line;
        line.reserve(message.size() + 32);
        line.append("[anyloop] ").append(log_level_name(level)).append(": ").append(message).push_back('\n');
        write_fully(STDERR_FILENO, line);
    };
}

LogSink syslog_log_sink(std::string ident, int facility) {
    // openlog() keeps the pointer it is given: the sink keeps the string,
    // and the last copy of the sink calls closelog() (which forgets the
    // pointer) before the string goes.
    std::shared_ptr<const std::string> kept(new std::string(std::move(ident)), [](const std::string* text) {
        ::closelog();
        delete text;
    });
    ::openlog(kept->c_str(), LOG_PID, facility);
    return [kept, facility](LogLevel level, std::string_view message) {
        const auto index = static_cast<std::size_t>(level);
        const int priority = index < std::size(syslog_priorities) ? syslog_priorities[index] : LOG_DEBUG;
        ::syslog(facility | priority, "%.*s", static_cast<int>(message.size()), message.data());
    };
}

Logger::Logger(LogSink sink, LogLevel level) : sink_(std::move(sink)), level_(level) {}

}  // namespace anyloop::tcp
