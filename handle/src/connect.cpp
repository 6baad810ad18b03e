// tcp_connect: resolve (a name on a resolver thread, so the loop never
// waits for DNS), then a non-blocking connect to each address in turn, each
// bounded by the timeout, until one succeeds.
#include <anyloop/handle/connect.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace anyloop {

namespace {

class ResolverCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "getaddrinfo"; }
    std::string message(int code) const override { return ::gai_strerror(code); }
};

std::string address_text(const sockaddr_storage& address) {
    char text[INET6_ADDRSTRLEN] = "?";
    std::uint16_t port = 0;
    if (address.ss_family == AF_INET) {
        const auto& in = reinterpret_cast<const sockaddr_in&>(address);
        ::inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
        port = ntohs(in.sin_port);
        return std::string(text) + ":" + std::to_string(port);
    }
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(address);
    ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    port = ntohs(in6.sin6_port);
    return "[" + std::string(text) + "]:" + std::to_string(port);
}

struct Address {
    sockaddr_storage storage;
    socklen_t length;
};

/// What getaddrinfo() said: a status (0 or EAI_*), errno for EAI_SYSTEM,
/// and the IPv4 and IPv6 stream addresses.
struct Lookup {
    int status = 0;
    int system_error = 0;
    std::vector<Address> addresses;
};

Lookup look_up(const std::string& host, std::uint16_t port, int flags) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    // No AI_ADDRCONFIG: on a host whose only interface is loopback it would
    // hide "localhost".
    hints.ai_flags = flags;
    addrinfo* list = nullptr;
    Lookup result;
    result.status = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list);
    if (result.status != 0) {
        if (result.status == EAI_SYSTEM) result.system_error = errno;
        return result;
    }
    for (const addrinfo* entry = list; entry != nullptr; entry = entry->ai_next) {
        if (entry->ai_family != AF_INET && entry->ai_family != AF_INET6) continue;
        Address address{};
        std::memcpy(&address.storage, entry->ai_addr, entry->ai_addrlen);
        address.length = entry->ai_addrlen;
        result.addresses.push_back(address);
    }
    ::freeaddrinfo(list);
    return result;
}

/// A name being resolved on its own thread. The thread shares only this
/// with the loop: it stores the answer and then writes the eventfd the
/// loop watches. It never touches the loop or the request, so either may
/// be gone by then; the last owner closes the eventfd.
struct ResolverJob {
    explicit ResolverJob(int fd) noexcept : done_fd(fd) {}
    ~ResolverJob() { ::close(done_fd); }
    ResolverJob(const ResolverJob&) = delete;
    ResolverJob& operator=(const ResolverJob&) = delete;

    const int done_fd;
    std::mutex mutex;
    Lookup answer;  // guarded by mutex
};

std::string host_port_text(std::string_view host, std::uint16_t port) {
    const bool ipv6 = host.find(':') != std::string_view::npos;
    return (ipv6 ? "[" + std::string(host) + "]" : std::string(host)) + ":" + std::to_string(port);
}

}  // namespace

const std::error_category& resolver_category() noexcept {
    static const ResolverCategory category;
    return category;
}

namespace detail {

struct ConnectState {
    ConnectState(EventLoop& event_loop, std::string_view host_name, std::uint16_t port_number, ConnectOptions opts,
                 ConnectCallback cb)
        : loop(event_loop), host(host_name), port(port_number), options(std::move(opts)), callback(std::move(cb)) {}
    ~ConnectState() { close_attempt(); }

    void resolve();
    void resolved(Lookup lookup);
    void resolver_done();
    void try_next();
    void on_ready();
    void on_timeout();
    void attempt_failed(int error);
    void close_attempt() noexcept;
    void deliver(std::unique_ptr<Handle> handle, std::error_code error, const std::string& message);
    void deliver_failure();

    EventLoop& loop;
    std::string host;
    std::uint16_t port;
    ConnectOptions options;
    ConnectCallback callback;
    bool done = false;

    std::shared_ptr<ResolverJob> resolver;  // while a name is being resolved
    std::vector<Address> addresses;
    std::size_t next = 0;
    int fd = -1;
    IoWatcher io;
    TimerWatcher timer;

    std::error_code last_error;
    std::string reason;  // of the last failure
    std::string tried;   // "a, b, c"
};

// An address is parsed at once; a name goes to a resolver thread, so a
// slow DNS server never stalls the loop. The timeout bounds the wait.
void ConnectState::resolve() {
    Lookup numeric = look_up(host, port, AI_NUMERICHOST);
    if (numeric.status != EAI_NONAME) {
        resolved(std::move(numeric));
        return;
    }
    const int done_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (done_fd < 0) {
        resolved({EAI_SYSTEM, errno, {}});
        return;
    }
    auto job = std::make_shared<ResolverJob>(done_fd);
    try {
        std::thread([job, name = host, number = port] {
            Lookup answer = look_up(name, number, 0);
            {
                std::lock_guard lock(job->mutex);
                job->answer = std::move(answer);
            }
            const std::uint64_t one = 1;
            (void)!::write(job->done_fd, &one, sizeof one);
        }).detach();
    } catch (const std::system_error& failure) {
        resolved({EAI_SYSTEM, failure.code().value(), {}});
        return;
    }
    resolver = std::move(job);
    io = loop.io(done_fd, Io::read, [this](Io) { resolver_done(); });
    timer.set_callback([this] {
        // The thread goes on; its answer is dropped with the job.
        io.reset();
        resolver.reset();
        last_error = std::make_error_code(std::errc::timed_out);
        reason = "name resolution took longer than the timeout";
        deliver_failure();
    });
    timer.start(options.timeout);
}

void ConnectState::resolver_done() {
    Lookup answer;
    {
        std::lock_guard lock(resolver->mutex);
        answer = std::move(resolver->answer);
    }
    io.reset();
    timer.stop();
    resolver.reset();
    resolved(std::move(answer));
}

void ConnectState::resolved(Lookup lookup) {
    if (lookup.status != 0) {
        last_error = lookup.status == EAI_SYSTEM ? std::error_code(lookup.system_error, std::generic_category())
                                                 : std::error_code(lookup.status, resolver_category());
        reason = "cannot resolve the name: " + last_error.message();
    } else if (lookup.addresses.empty()) {
        last_error = std::error_code(EAI_NONAME, resolver_category());
        reason = "the name has no IPv4 or IPv6 address";
    }
    addresses = std::move(lookup.addresses);
    if (addresses.empty()) deliver_failure();
    else try_next();
}

void ConnectState::try_next() {
    while (next < addresses.size()) {
        const Address& address = addresses[next++];
        tried += (tried.empty() ? "" : ", ") + address_text(address.storage);
        fd = ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0) {
            attempt_failed(errno);
            continue;
        }
        if (::connect(fd, reinterpret_cast<const sockaddr*>(&address.storage), address.length) == 0) {
            on_ready();  // connected at once (loopback can)
            return;
        }
        if (errno != EINPROGRESS) {
            attempt_failed(errno);
            continue;
        }
        io = loop.io(fd, Io::write, [this](Io) { on_ready(); });
        timer.set_callback([this] { on_timeout(); });
        timer.start(options.timeout);
        return;
    }
    deliver_failure();
}

void ConnectState::on_ready() {
    int error = 0;
    socklen_t length = sizeof error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0) error = errno;
    if (error != 0) {
        attempt_failed(error);
        try_next();
        return;
    }
    io.reset();  // the Handle watches the fd from now on
    timer.stop();
    std::unique_ptr<Handle> handle;
    try {
        handle = std::make_unique<Handle>(loop, fd, options.handle);
    } catch (const std::system_error& failure) {
        attempt_failed(failure.code().value());
        try_next();
        return;
    } catch (const std::exception& failure) {
        // TLS could not start (a context of the wrong role, a bad peer name):
        // no other address would do better.
        deliver(nullptr, std::make_error_code(std::errc::invalid_argument),
                "cannot connect to " + host_port_text(host, port) + ": " + failure.what());
        return;
    }
    fd = -1;  // the Handle owns it
    deliver(std::move(handle), {}, {});
}

void ConnectState::on_timeout() {
    attempt_failed(ETIMEDOUT);
    try_next();
}

void ConnectState::attempt_failed(int error) {
    close_attempt();
    last_error = std::error_code(error, std::generic_category());
    reason = std::strerror(error);
}

void ConnectState::close_attempt() noexcept {
    io.reset();
    timer.stop();
    if (fd >= 0) ::close(fd);
    fd = -1;
}

void ConnectState::deliver_failure() {
    std::string message = "cannot connect to " + host_port_text(host, port) + ": " + reason;
    if (addresses.size() > 1) message += " (tried " + tried + ")";
    deliver(nullptr, last_error, message);
}

void ConnectState::deliver(std::unique_ptr<Handle> handle, std::error_code error, const std::string& message) {
    done = true;
    io.reset();
    timer.stop();
    ConnectCallback running = std::move(callback);
    callback = nullptr;
    // The callback may destroy the request, and with it this state: nothing
    // touches `this` after the call.
    running(std::move(handle), error, message);
}

}  // namespace detail

ConnectRequest::ConnectRequest(ConnectRequest&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {}

ConnectRequest& ConnectRequest::operator=(ConnectRequest&& other) noexcept {
    if (this != &other) {
        cancel();
        state_ = std::exchange(other.state_, nullptr);
    }
    return *this;
}

void ConnectRequest::cancel() noexcept { delete std::exchange(state_, nullptr); }

bool ConnectRequest::pending() const noexcept { return state_ != nullptr && !state_->done; }

ConnectRequest tcp_connect(EventLoop& loop, std::string_view host, std::uint16_t port, ConnectOptions options,
                           ConnectCallback callback) {
    if (options.handle.tls != TlsMode::none) {
        if (!options.handle.tls_ctx) throw std::invalid_argument("tcp_connect: TLS without a tls_ctx");
        // The certificate must name the host we meant to reach.
        if (options.handle.peername.empty()) options.handle.peername = std::string(host);
    }
    auto state = std::make_unique<detail::ConnectState>(loop, host, port, std::move(options), std::move(callback));
    detail::ConnectState* raw = state.get();
    // Everything happens from the loop, so the callback never runs inside
    // tcp_connect. The timer also serves each attempt's timeout.
    state->timer = loop.timer(Duration::zero(), [raw] { raw->resolve(); });
    return ConnectRequest(state.release());
}

}  // namespace anyloop
