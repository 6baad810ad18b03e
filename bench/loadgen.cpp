// loadgen — a ping-pong load generator for echo servers.
//
// Each of N connections sends a message of M bytes, waits for the complete
// echo, checks every echoed byte, and sends the next one; with a pipeline
// depth D it keeps D messages in flight per connection. The bytes of a
// message depend on the connection and the message's sequence number, so an
// echo that is late, lost, duplicated or sent to the wrong connection shows
// up as a mismatch, which ends the run with exit status 1.
//
// One thread and one level-triggered epoll set drive every connection.
// After a warm-up, a measured window of fixed length yields round trips per
// second, payload MB/s (one direction), round-trip latency percentiles and,
// when the server's pid is given, the server's CPU time per round trip (its
// utime + stime over the window, the count /proc/<pid>/stat rounds to clock
// ticks, read through the process's CPU-time clock), and the share of the
// machine's CPU time the hypervisor took meanwhile (steal, from /proc/stat:
// on a shared virtual machine a window with much steal says little about
// the server). With --count the run instead does exactly K round trips and
// measures all of them; the callgrind script uses that so two runs differ
// only in the number of round trips.
// --think-us T waits T microseconds after each echo before sending the next
// message, so that the server is always idle in its wait when a message
// arrives (under valgrind the server would otherwise be the slow side, and
// whether the next message is already there when it looks would vary).
//
// --port2 P adds a second server, measured beside the first in one run: N
// connections to each, and the two servers take turns (--slice-ms, default
// 50): one group of connections sends while the other server sits idle in
// its wait; at the end of a turn the group stops sending, its last echoes
// arrive, and the other group starts. The window starts and ends at a turn
// of the first server, so both get the same number of turns, and each
// server's CPU time is read at the window's ends, where both are idle.
// Whatever the machine does on a scale of seconds (another guest, the
// host's frequency, where the hypervisor put the vCPUs) then falls on both
// servers alike, which sequential runs cannot give. The report has a
// RESULT line per server; their msgs/s and seconds count that server's
// turns only.
//
// --tls wraps every connection in TLS (OpenSSL on the socket, no
// certificate verification: the peer is a benchmark server). Each
// handshake completes, blocking, right after its connect, so handshakes
// fall before the measured window (and cancel out of the callgrind
// script's difference of two runs); the plain path is untouched by it.
//
// The last line on stdout is machine-readable: "RESULT key=value ...".
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#ifdef LOADGEN_WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#else
struct ssl_st;  // SSL, never created without OpenSSL
using SSL = ssl_st;
#endif

namespace {

struct Options {
    std::string host = "127.0.0.1";
    std::string port;
    std::uint32_t connections = 1;
    std::size_t size = 64;
    std::uint32_t pipeline = 1;
    double duration = 3.0;
    double warmup = 0.5;
    std::uint64_t count = 0;  // > 0: exactly this many round trips, no warm-up
    std::int64_t think_ns = 0;  // pause between an echo and the next message
    long server_pid = 0;
    std::string label;
    std::string port2;  // a second server, taking turns with the first
    long server_pid2 = 0;
    std::string label2;
    double slice_ms = 50;
    bool quiet = false;
    bool tls = false;
};

[[noreturn]] void fail(const char* format, ...) __attribute__((format(printf, 1, 2)));
void fail(const char* format, ...) {
    std::va_list args;
    va_start(args, format);
    std::fputs("loadgen: ", stderr);
    std::vfprintf(stderr, format, args);
    std::fputc('\n', stderr);
    va_end(args);
    std::exit(1);
}

[[noreturn]] void usage(const char* program) {
    std::fprintf(stderr,
                 "usage: %s --port N [--host ADDR] [--connections N] [--size BYTES] [--pipeline D]\n"
                 "          [--duration SECONDS] [--warmup SECONDS] [--count ROUND_TRIPS]\n"
                 "          [--think-us MICROSECONDS] [--server-pid PID] [--label TEXT] [--quiet] [--tls]\n"
                 "          [--port2 N [--server-pid2 PID] [--label2 TEXT] [--slice-ms MS]]\n",
                 program);
    std::exit(2);
}

template <typename T>
T parse_number(const char* program, std::string_view name, std::string_view text) {
    T value{};
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc{} || end != text.data() + text.size()) {
        std::fprintf(stderr, "loadgen: %.*s: not a number: %.*s\n", static_cast<int>(name.size()), name.data(),
                     static_cast<int>(text.size()), text.data());
        usage(program);
    }
    return value;
}

Options parse_options(int argc, char** argv) {
    Options options;
    for (int i = 1; i < argc; ++i) {
        const std::string_view name = argv[i];
        if (name == "--quiet" || name == "--tls") {
            (name == "--quiet" ? options.quiet : options.tls) = true;
            continue;
        }
        if (i + 1 >= argc) usage(argv[0]);
        const std::string_view value = argv[++i];
        if (name == "--host") options.host = value;
        else if (name == "--port") options.port = value;
        else if (name == "--connections") options.connections = parse_number<std::uint32_t>(argv[0], name, value);
        else if (name == "--size") options.size = parse_number<std::size_t>(argv[0], name, value);
        else if (name == "--pipeline") options.pipeline = parse_number<std::uint32_t>(argv[0], name, value);
        else if (name == "--duration") options.duration = parse_number<double>(argv[0], name, value);
        else if (name == "--warmup") options.warmup = parse_number<double>(argv[0], name, value);
        else if (name == "--count") options.count = parse_number<std::uint64_t>(argv[0], name, value);
        else if (name == "--think-us") options.think_ns = 1000 * parse_number<std::int64_t>(argv[0], name, value);
        else if (name == "--server-pid") options.server_pid = parse_number<long>(argv[0], name, value);
        else if (name == "--label") options.label = value;
        else if (name == "--port2") options.port2 = value;
        else if (name == "--server-pid2") options.server_pid2 = parse_number<long>(argv[0], name, value);
        else if (name == "--label2") options.label2 = value;
        else if (name == "--slice-ms") options.slice_ms = parse_number<double>(argv[0], name, value);
        else usage(argv[0]);
    }
    if (options.port.empty() || options.connections == 0 || options.size == 0 || options.pipeline == 0 ||
        options.duration <= 0 || options.warmup < 0 || options.slice_ms <= 0)
        usage(argv[0]);
    if (!options.port2.empty() && (options.count > 0 || options.think_ns > 0))
        fail("--port2 takes a timed window: not with --count or --think-us");
    return options;
}

std::int64_t now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// ---- message contents -------------------------------------------------------

std::uint64_t mix(std::uint64_t z) noexcept {  // splitmix64's finalizer
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/// The bytes of message `sequence` on connection `connection`.
void fill_message(unsigned char* out, std::size_t size, std::uint32_t connection, std::uint64_t sequence) noexcept {
    std::uint64_t state = (std::uint64_t{connection} << 40) ^ sequence ^ 0x6A09E667F3BCC909ULL;
    std::size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        const std::uint64_t word = mix(state += 0x9E3779B97F4A7C15ULL);
        std::memcpy(out + i, &word, 8);
    }
    if (i < size) {
        const std::uint64_t word = mix(state += 0x9E3779B97F4A7C15ULL);
        std::memcpy(out + i, &word, size - i);
    }
}

// ---- CPU accounting ---------------------------------------------------------

/// utime + stime of a process in clock ticks, or -1 when unreadable.
long long process_cpu_ticks(long pid) {
    std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    // The command name (field 2) may hold spaces: fields are counted from
    // the last ')'. Field 3 is the state; utime and stime are fields 14, 15.
    const std::size_t close = text.rfind(')');
    if (close == std::string::npos) return -1;
    std::istringstream fields(text.substr(close + 1));
    std::string field;
    long long utime = -1;
    long long stime = -1;
    for (int number = 3; fields >> field && number <= 15; ++number) {
        if (number == 14) utime = std::atoll(field.c_str());
        if (number == 15) stime = std::atoll(field.c_str());
    }
    return utime < 0 || stime < 0 ? -1 : utime + stime;
}

/// The CPU time of a process, all its threads, in nanoseconds, or -1 when
/// unreadable: the kernel's count of which utime + stime in
/// /proc/<pid>/stat are the rounding to clock ticks (10 ms), read at full
/// resolution through the process's CPU-time clock when the kernel lets us,
/// else from /proc.
std::int64_t process_cpu_ns(long pid) {
    if (pid <= 0) return -1;
    clockid_t clock{};
    timespec time{};
    if (::clock_getcpuclockid(static_cast<pid_t>(pid), &clock) == 0 && ::clock_gettime(clock, &time) == 0)
        return static_cast<std::int64_t>(time.tv_sec) * 1'000'000'000 + time.tv_nsec;
    const long long ticks = process_cpu_ticks(pid);
    return ticks < 0 ? -1 : ticks * 1'000'000'000 / ::sysconf(_SC_CLK_TCK);
}

/// The machine's CPU time so far and the part of it the hypervisor gave to
/// someone else ("steal", field 8 of /proc/stat's "cpu" line), in ticks.
struct StealSample {
    long long steal = -1;
    long long total = -1;
};

StealSample steal_sample() {
    std::ifstream file("/proc/stat");
    std::string name;
    file >> name;
    if (name != "cpu") return {};
    StealSample sample{0, 0};
    long long value = 0;
    for (int field = 1; field <= 8 && file >> value; ++field) {
        sample.total += value;  // user nice system idle iowait irq softirq steal
        if (field == 8) sample.steal = value;
    }
    return sample;
}

std::int64_t own_cpu_ns() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    const auto ns = [](const timeval& tv) { return static_cast<std::int64_t>(tv.tv_sec) * 1'000'000'000 + tv.tv_usec * 1000; };
    return ns(usage.ru_utime) + ns(usage.ru_stime);
}

// ---- the generator ----------------------------------------------------------

struct Connection {
    int fd = -1;
    std::uint32_t id = 0;
    std::unique_ptr<unsigned char[]> slots;  // pipeline × size: messages in flight
    std::unique_ptr<std::int64_t[]> sent_at;  // per slot: when it was queued
    std::uint64_t queued = 0;                 // messages filled so far
    std::uint64_t written = 0;                // messages completely written
    std::size_t write_offset = 0;             // bytes of message `written` already written
    std::uint64_t received = 0;               // messages completely echoed
    std::size_t read_offset = 0;              // bytes of message `received` already echoed
    bool watching_write = false;
    std::uint8_t group = 0;         // index into LoadGenerator::groups_
    SSL* ssl = nullptr;             // with --tls
    bool write_wants_read = false;  // with --tls: SSL_write waits for input
};

// The connections to one server and what was measured of it: one group, or
// two with --port2.
struct Group {
    std::string port;
    long server_pid = 0;
    std::string label;
    std::uint32_t first = 0;       // its connections: connections_[first, first + options_.connections)
    std::uint64_t issued = 0;      // messages queued on its connections
    std::uint64_t completed = 0;   // their round trips
    std::uint64_t completed_at_start = 0;
    std::uint64_t completed_at_end = 0;
    std::int64_t cpu_ns_at_start = -1;  // the server's CPU time, at the window's ends
    std::int64_t cpu_ns_at_end = -1;
    std::int64_t active_ns = 0;     // the window, or with --port2 its turns within it
    std::vector<std::int64_t> latencies_ns;
};

class LoadGenerator {
public:
    explicit LoadGenerator(Options options) : options_(std::move(options)) {
        add_group(options_.port, options_.server_pid, options_.label);
        if (!options_.port2.empty()) add_group(options_.port2, options_.server_pid2, options_.label2);
    }

    int run();

private:
    void add_group(const std::string& port, long server_pid, const std::string& label) {
        Group& group = groups_.emplace_back();
        group.port = port;
        group.server_pid = server_pid;
        group.label = label;
    }
    void connect_all();
    void connect_one(std::uint32_t i, const addrinfo& address, const std::string& port);
    void queue_message(Connection& connection, std::int64_t now);
    void flush(Connection& connection);
    void on_readable(Connection& connection);
    void start_tls(Connection& connection);
    void flush_tls(Connection& connection);
    void on_readable_tls(Connection& connection);
    void consume(Connection& connection, const unsigned char* data, std::size_t size, std::int64_t now);
    void watch_write(Connection& connection, bool on);
    void begin_window(std::int64_t now);
    void end_window(std::int64_t now);
    void start_turn(std::int64_t now);
    [[nodiscard]] bool switch_turn(std::int64_t now, std::int64_t window_start, std::int64_t window_end);
    [[nodiscard]] bool may_send(const Connection& connection) const noexcept {
        if (options_.count > 0) return issued_ < options_.count;
        return !done_ && (groups_.size() == 1 || (connection.group == active_ && !draining_));
    }
    unsigned char* slot(Connection& connection, std::uint64_t sequence) const noexcept {
        return connection.slots.get() + (sequence % options_.pipeline) * options_.size;
    }
    int wait(std::vector<epoll_event>& ready, std::int64_t deadline);
    void send_due_thinkers(std::int64_t now);
    void report() const;
    void report(const Group& group) const;

    Options options_;
    int epoll_fd_ = -1;
#ifdef LOADGEN_WITH_TLS
    SSL_CTX* tls_context_ = nullptr;
#endif
    std::vector<Connection> connections_;
    std::vector<Group> groups_;
    std::uint32_t active_ = 0;     // with --port2: the group whose turn it is
    bool draining_ = false;        // ... and its turn is over: no new messages
    std::int64_t turn_start_ns_ = 0;
    std::int64_t turn_end_ns_ = 0;
    std::uint64_t issued_ = 0;     // messages queued over all connections
    std::uint64_t completed_ = 0;  // round trips completed over all connections
    bool measuring_ = false;
    bool done_ = false;

    // The measured window.
    std::int64_t window_start_ns_ = 0;
    std::int64_t window_end_ns_ = 0;
    std::int64_t client_cpu_at_start_ = 0;
    std::int64_t client_cpu_at_end_ = 0;
    StealSample steal_at_start_;
    StealSample steal_at_end_;
    // With --think-us: connections waiting to send, in due order (the pause
    // is the same for all, so first in is first due).
    std::deque<std::pair<std::int64_t, std::uint32_t>> thinking_;
};

void LoadGenerator::connect_all() {
    connections_.resize(options_.connections * groups_.size());
    for (std::uint8_t g = 0; g < groups_.size(); ++g) {
        Group& group = groups_[g];
        group.first = g * options_.connections;
        group.latencies_ns.reserve(1 << 20);
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
        addrinfo* address = nullptr;
        if (const int rc = ::getaddrinfo(options_.host.c_str(), group.port.c_str(), &hints, &address); rc != 0)
            fail("%s:%s: %s", options_.host.c_str(), group.port.c_str(), gai_strerror(rc));
        for (std::uint32_t i = group.first; i < group.first + options_.connections; ++i) {
            connections_[i].group = g;
            connect_one(i, *address, group.port);
        }
        ::freeaddrinfo(address);
    }
}

void LoadGenerator::connect_one(std::uint32_t i, const addrinfo& address, const std::string& port) {
    Connection& connection = connections_[i];
    connection.id = i;
    connection.fd = ::socket(address.ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connection.fd < 0) fail("socket for connection %u: %s (raise ulimit -n)", i, std::strerror(errno));
    // A blocking connect, one at a time: the server's accept queue never
    // overflows, whatever backlog it chose.
    if (::connect(connection.fd, address.ai_addr, address.ai_addrlen) != 0)
        fail("connect %u to %s:%s: %s", i, options_.host.c_str(), port.c_str(), std::strerror(errno));
    const int one = 1;
    ::setsockopt(connection.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (options_.tls) start_tls(connection);
    ::fcntl(connection.fd, F_SETFL, ::fcntl(connection.fd, F_GETFL) | O_NONBLOCK);
    connection.slots = std::make_unique<unsigned char[]>(options_.pipeline * options_.size);
    connection.sent_at = std::make_unique<std::int64_t[]>(options_.pipeline);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u32 = i;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, connection.fd, &event) != 0) fail("epoll_ctl: %s", std::strerror(errno));
}

void LoadGenerator::watch_write(Connection& connection, bool on) {
    if (connection.watching_write == on) return;
    connection.watching_write = on;
    epoll_event event{};
    event.events = on ? EPOLLIN | EPOLLOUT : EPOLLIN;
    event.data.u32 = connection.id;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, connection.fd, &event);
}

void LoadGenerator::queue_message(Connection& connection, std::int64_t now) {
    const std::uint64_t sequence = connection.queued++;
    fill_message(slot(connection, sequence), options_.size, connection.id, sequence);
    connection.sent_at[sequence % options_.pipeline] = now;
    ++issued_;
    ++groups_[connection.group].issued;
}

void LoadGenerator::flush(Connection& connection) {
    if (connection.ssl != nullptr) return flush_tls(connection);
    while (connection.written < connection.queued) {
        const unsigned char* data = slot(connection, connection.written) + connection.write_offset;
        const std::size_t left = options_.size - connection.write_offset;
        const ssize_t n = ::send(connection.fd, data, left, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                watch_write(connection, true);
                return;
            }
            fail("send on connection %u: %s", connection.id, std::strerror(errno));
        }
        connection.write_offset += static_cast<std::size_t>(n);
        if (connection.write_offset == options_.size) {
            connection.write_offset = 0;
            ++connection.written;
        }
    }
    watch_write(connection, false);
}

void LoadGenerator::on_readable(Connection& connection) {
    if (connection.ssl != nullptr) return on_readable_tls(connection);
    static unsigned char buffer[256 * 1024];
    for (;;) {
        const ssize_t n = ::read(connection.fd, buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            fail("read on connection %u: %s", connection.id, std::strerror(errno));
        }
        if (n == 0)
            fail("connection %u closed by the server after %" PRIu64 " round trips", connection.id,
                 connection.received);
        consume(connection, buffer, static_cast<std::size_t>(n), now_ns());
        if (static_cast<std::size_t>(n) < sizeof buffer) return;
    }
}

void LoadGenerator::consume(Connection& connection, const unsigned char* data, std::size_t size, std::int64_t now) {
    const std::uint64_t echoed_end = connection.received * options_.size + connection.read_offset + size;
    const std::uint64_t sent_end = connection.written * options_.size + connection.write_offset;
    if (echoed_end > sent_end)
        fail("connection %u: the server echoed %" PRIu64 " bytes but only %" PRIu64 " were sent", connection.id,
             echoed_end, sent_end);
    bool sent_more = false;
    while (size > 0) {
        const std::size_t take = std::min(size, options_.size - connection.read_offset);
        const unsigned char* expected = slot(connection, connection.received) + connection.read_offset;
        if (std::memcmp(data, expected, take) != 0) {
            std::size_t at = 0;
            while (data[at] == expected[at]) ++at;
            fail("connection %u, message %" PRIu64 ", byte %zu: expected 0x%02x, echoed 0x%02x", connection.id,
                 connection.received, connection.read_offset + at, expected[at], data[at]);
        }
        data += take;
        size -= take;
        connection.read_offset += take;
        if (connection.read_offset < options_.size) break;
        // A complete echo: record it, and the freed slot carries the next message.
        connection.read_offset = 0;
        Group& group = groups_[connection.group];
        if (measuring_) group.latencies_ns.push_back(now - connection.sent_at[connection.received % options_.pipeline]);
        ++connection.received;
        ++completed_;
        ++group.completed;
        if (!may_send(connection)) continue;
        if (options_.think_ns > 0) {
            ++issued_;  // reserved now, so --count is not overshot
            thinking_.emplace_back(now + options_.think_ns, connection.id);
        } else {
            queue_message(connection, now);
            sent_more = true;
        }
    }
    if (sent_more) flush(connection);
}

// epoll_wait until `deadline` (ns, CLOCK_MONOTONIC; -1 = none). epoll_pwait2
// takes the timeout in nanoseconds, so a --think-us pause is not rounded up
// to a millisecond; kernels before 5.11 fall back to epoll_wait.
int LoadGenerator::wait(std::vector<epoll_event>& ready, std::int64_t deadline) {
    const int capacity = static_cast<int>(ready.size());
    if (deadline < 0) return ::epoll_wait(epoll_fd_, ready.data(), capacity, -1);
    const std::int64_t left = std::max<std::int64_t>(0, deadline - now_ns());
    const timespec timeout{static_cast<time_t>(left / 1'000'000'000), static_cast<long>(left % 1'000'000'000)};
    const int n = ::epoll_pwait2(epoll_fd_, ready.data(), capacity, &timeout, nullptr);
    if (n >= 0 || errno != ENOSYS) return n;
    return ::epoll_wait(epoll_fd_, ready.data(), capacity, static_cast<int>((left + 999'999) / 1'000'000));
}

void LoadGenerator::send_due_thinkers(std::int64_t now) {
    while (!thinking_.empty() && thinking_.front().first <= now) {
        Connection& connection = connections_[thinking_.front().second];
        thinking_.pop_front();
        --issued_;  // queue_message counts it again
        queue_message(connection, now);
        flush(connection);
    }
}

// ---- TLS ----------------------------------------------------------------------

#ifdef LOADGEN_WITH_TLS

std::string openssl_reason() {
    char text[256] = "unknown error";
    if (const unsigned long code = ERR_get_error(); code != 0) ERR_error_string_n(code, text, sizeof text);
    ERR_clear_error();
    return text;
}

// The handshake, on the still blocking socket.
void LoadGenerator::start_tls(Connection& connection) {
    if (tls_context_ == nullptr) {
        // OpenSSL writes with write(): a server that went away must be an
        // error message, not SIGPIPE.
        std::signal(SIGPIPE, SIG_IGN);
        tls_context_ = SSL_CTX_new(TLS_client_method());
        if (tls_context_ == nullptr) fail("SSL_CTX_new: %s", openssl_reason().c_str());
        SSL_CTX_set_verify(tls_context_, SSL_VERIFY_NONE, nullptr);
        SSL_CTX_set_mode(tls_context_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_read_ahead(tls_context_, 1);
    }
    connection.ssl = SSL_new(tls_context_);
    if (connection.ssl == nullptr || SSL_set_fd(connection.ssl, connection.fd) != 1)
        fail("SSL_new for connection %u: %s", connection.id, openssl_reason().c_str());
    if (SSL_connect(connection.ssl) != 1)
        fail("TLS handshake of connection %u: %s", connection.id, openssl_reason().c_str());
}

// flush() over TLS. After SSL_write reported WANT_WRITE it must be called
// again with the same bytes: the slot and offset stay where they were.
void LoadGenerator::flush_tls(Connection& connection) {
    connection.write_wants_read = false;
    while (connection.written < connection.queued) {
        const unsigned char* data = slot(connection, connection.written) + connection.write_offset;
        const std::size_t left = options_.size - connection.write_offset;
        const int n = SSL_write(connection.ssl, data, static_cast<int>(left));
        if (n <= 0) {
            const int error = SSL_get_error(connection.ssl, n);
            if (error == SSL_ERROR_WANT_WRITE) {
                watch_write(connection, true);
                return;
            }
            if (error == SSL_ERROR_WANT_READ) {  // renegotiation-like: resumes in on_readable_tls
                connection.write_wants_read = true;
                watch_write(connection, false);
                return;
            }
            fail("SSL_write on connection %u: %s", connection.id, openssl_reason().c_str());
        }
        connection.write_offset += static_cast<std::size_t>(n);
        if (connection.write_offset == options_.size) {
            connection.write_offset = 0;
            ++connection.written;
        }
    }
    watch_write(connection, false);
}

// on_readable() over TLS: records until OpenSSL holds no more (read-ahead
// took whatever the socket had; level-triggered epoll reports the rest).
void LoadGenerator::on_readable_tls(Connection& connection) {
    static unsigned char buffer[64 * 1024];
    do {
        const int n = SSL_read(connection.ssl, buffer, sizeof buffer);
        if (n <= 0) {
            const int error = SSL_get_error(connection.ssl, n);
            if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) break;
            if (error == SSL_ERROR_ZERO_RETURN || (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
                fail("connection %u closed by the server after %" PRIu64 " round trips", connection.id,
                     connection.received);
            fail("SSL_read on connection %u: %s", connection.id, openssl_reason().c_str());
        }
        consume(connection, buffer, static_cast<std::size_t>(n), now_ns());
    } while (SSL_has_pending(connection.ssl));
    if (connection.write_wants_read) flush_tls(connection);
}

#else

void LoadGenerator::start_tls(Connection&) { fail("--tls: this loadgen was built without OpenSSL"); }
void LoadGenerator::flush_tls(Connection&) {}
void LoadGenerator::on_readable_tls(Connection&) {}

#endif

void LoadGenerator::begin_window(std::int64_t now) {
    measuring_ = true;
    window_start_ns_ = now;
    for (Group& group : groups_) {
        group.completed_at_start = group.completed;
        group.cpu_ns_at_start = process_cpu_ns(group.server_pid);
    }
    client_cpu_at_start_ = own_cpu_ns();
    steal_at_start_ = steal_sample();
}

void LoadGenerator::end_window(std::int64_t now) {
    measuring_ = false;
    done_ = true;
    window_end_ns_ = now;
    for (Group& group : groups_) {
        group.completed_at_end = group.completed;
        group.cpu_ns_at_end = process_cpu_ns(group.server_pid);
    }
    if (groups_.size() == 1) groups_[0].active_ns = window_end_ns_ - window_start_ns_;
    client_cpu_at_end_ = own_cpu_ns();
    steal_at_end_ = steal_sample();
}

// With --port2: the active group sends on every connection.
void LoadGenerator::start_turn(std::int64_t now) {
    turn_start_ns_ = now;
    turn_end_ns_ = now + static_cast<std::int64_t>(options_.slice_ms * 1e6);
    const Group& group = groups_[active_];
    for (std::uint32_t i = group.first; i < group.first + options_.connections; ++i) {
        Connection& connection = connections_[i];
        for (std::uint32_t d = 0; d < options_.pipeline && may_send(connection); ++d) queue_message(connection, now);
        flush(connection);
    }
}

// With --port2: the active group's last echo of its turn arrived; the other
// group's turn begins. The window opens and closes only before a turn of
// the first group, so within it both had as many turns. False: the run is
// over.
bool LoadGenerator::switch_turn(std::int64_t now, std::int64_t window_start, std::int64_t window_end) {
    if (measuring_) groups_[active_].active_ns += now - turn_start_ns_;
    active_ ^= 1;
    draining_ = false;
    if (active_ == 0) {
        if (measuring_ && now >= window_end) {
            end_window(now);
            return false;
        }
        if (!measuring_ && now >= window_start) begin_window(now);
    }
    start_turn(now);
    return true;
}

int LoadGenerator::run() {
    // 1000 connections need more than the usual 1024 descriptors.
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &limit);
    }
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) fail("epoll_create1: %s", std::strerror(errno));
    connect_all();
    const bool turns = groups_.size() == 2;

    const std::int64_t start = now_ns();
    const bool counted = options_.count > 0;
    const std::int64_t window_start = start + (counted ? 0 : static_cast<std::int64_t>(options_.warmup * 1e9));
    const std::int64_t window_end = window_start + static_cast<std::int64_t>(options_.duration * 1e9);
    if (counted || window_start == start) begin_window(start);

    if (turns) {
        start_turn(start);
    } else {
        for (Connection& connection : connections_) {
            for (std::uint32_t d = 0; d < options_.pipeline && may_send(connection); ++d) queue_message(connection, start);
            flush(connection);
        }
    }

    std::vector<epoll_event> ready(std::min<std::size_t>(connections_.size(), 1024));
    for (;;) {
        std::int64_t deadline = counted ? -1 : measuring_ ? window_end : window_start;
        if (turns) deadline = draining_ ? -1 : turn_end_ns_;  // the window moves only between turns
        if (!thinking_.empty() && (deadline < 0 || thinking_.front().first < deadline)) deadline = thinking_.front().first;
        const int n = wait(ready, deadline);
        if (n < 0 && errno != EINTR) fail("epoll_wait: %s", std::strerror(errno));
        for (int i = 0; i < n; ++i) {
            Connection& connection = connections_[ready[i].data.u32];
            if (ready[i].events & EPOLLOUT) flush(connection);
            if (ready[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(connection);
        }
        const std::int64_t now = now_ns();
        send_due_thinkers(now);
        if (turns) {
            if (!draining_ && now >= turn_end_ns_) draining_ = true;
            const Group& group = groups_[active_];
            if (draining_ && group.completed == group.issued && !switch_turn(now, window_start, window_end)) break;
        } else if (counted) {
            if (completed_ >= options_.count) {
                end_window(now);
                break;
            }
        } else if (!measuring_ && now >= window_start) {
            begin_window(now);
        } else if (measuring_ && now >= window_end) {
            end_window(now);
            break;
        }
    }
    for (Connection& connection : connections_) {
#ifdef LOADGEN_WITH_TLS
        if (connection.ssl != nullptr) SSL_shutdown(connection.ssl);  // close_notify: a clean end for the server
        SSL_free(connection.ssl);
#endif
        ::close(connection.fd);
    }
    report();
    return 0;
}

void LoadGenerator::report() const {
    for (const Group& group : groups_) report(group);
}

// One server's RESULT line. With --port2, seconds and msgs/s count its turns
// only; loadgen's CPU and the steal are the whole window's.
void LoadGenerator::report(const Group& group) const {
    const double seconds = static_cast<double>(group.active_ns) / 1e9;
    const double window_seconds = static_cast<double>(window_end_ns_ - window_start_ns_) / 1e9;
    const std::uint64_t round_trips = group.completed_at_end - group.completed_at_start;
    const double msgs_per_s = seconds > 0 ? static_cast<double>(round_trips) / seconds : 0;
    const double mb_per_s = msgs_per_s * static_cast<double>(options_.size) / 1e6;

    std::vector<std::int64_t> sorted = group.latencies_ns;
    const auto percentile_us = [&sorted](double q) -> double {
        if (sorted.empty()) return 0;
        const auto index = std::min(sorted.size() - 1, static_cast<std::size_t>(q * static_cast<double>(sorted.size())));
        std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(index), sorted.end());
        return static_cast<double>(sorted[index]) / 1e3;
    };
    const double p50 = percentile_us(0.50);
    const double p99 = percentile_us(0.99);

    double server_us_per_rt = -1;
    double server_cpu_pct = -1;
    if (group.cpu_ns_at_start >= 0 && group.cpu_ns_at_end >= 0 && round_trips > 0) {
        const double server_s = static_cast<double>(group.cpu_ns_at_end - group.cpu_ns_at_start) / 1e9;
        server_us_per_rt = server_s * 1e6 / static_cast<double>(round_trips);
        server_cpu_pct = seconds > 0 ? 100.0 * server_s / seconds : 0;
    }
    const double client_cpu_pct =
        window_seconds > 0 ? 100.0 * static_cast<double>(client_cpu_at_end_ - client_cpu_at_start_) / 1e9 / window_seconds
                           : 0;
    // How much of the machine the hypervisor took during the window (-1:
    // unknown). Timings from a window with much steal say little.
    double steal_pct = -1;
    if (steal_at_start_.steal >= 0 && steal_at_end_.steal >= 0 && steal_at_end_.total > steal_at_start_.total)
        steal_pct = 100.0 * static_cast<double>(steal_at_end_.steal - steal_at_start_.steal) /
                    static_cast<double>(steal_at_end_.total - steal_at_start_.total);

    if (!options_.quiet) {
        std::fprintf(stderr,
                     "%s%s%u connections x %zu bytes, pipeline %u: %" PRIu64 " round trips in %.3f s\n"
                     "  %.0f msgs/s, %.2f MB/s, latency p50 %.1f us, p99 %.1f us\n",
                     group.label.c_str(), group.label.empty() ? "" : ": ", options_.connections, options_.size,
                     options_.pipeline, round_trips, seconds, msgs_per_s, mb_per_s, p50, p99);
        if (server_us_per_rt >= 0)
            std::fprintf(stderr, "  server CPU %.3f us per round trip (%.0f%% of a core); loadgen CPU %.0f%%\n",
                         server_us_per_rt, server_cpu_pct, client_cpu_pct);
        if (steal_pct >= 0) std::fprintf(stderr, "  steal (CPU time the hypervisor took): %.1f%%\n", steal_pct);
    }
    std::printf("RESULT label=%s connections=%u size=%zu pipeline=%u seconds=%.3f round_trips=%" PRIu64
                " msgs_per_s=%.0f mb_per_s=%.2f p50_us=%.1f p99_us=%.1f server_cpu_us_per_rt=%.3f"
                " server_cpu_pct=%.1f client_cpu_pct=%.1f steal_pct=%.1f\n",
                group.label.empty() ? "-" : group.label.c_str(), options_.connections, options_.size,
                options_.pipeline, seconds, round_trips, msgs_per_s, mb_per_s, p50, p99, server_us_per_rt,
                server_cpu_pct, client_cpu_pct, steal_pct);
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    return LoadGenerator(parse_options(argc, argv)).run();
}
