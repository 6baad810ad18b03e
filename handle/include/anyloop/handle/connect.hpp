// anyloop/handle/connect.hpp — tcp_connect: a Handle on a new TCP
// connection to a host name or address.
//
//     ConnectRequest request = tcp_connect(*loop, "localhost", 7000, {},
//         [&](std::unique_ptr<Handle> handle, std::error_code error, const std::string& message) {
//             if (!handle) { std::cerr << message << "\n"; return; }
//             ...
//         });
#pragma once

#include <anyloop/core/event_loop.hpp>
#include <anyloop/handle/handle.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace anyloop {

namespace detail {
struct ConnectState;
}

/// Settings of tcp_connect.
struct ConnectOptions {
    /// Limit for each address tried (a name may resolve to several).
    Duration timeout = std::chrono::seconds(30);
    /// The options of the Handle made on success.
    HandleOptions handle{};
};

/// Receives the connected Handle, or a null Handle with the error and a
/// message naming the host, the port and the reason, such as
/// "cannot connect to localhost:7000: Connection refused (tried [::1]:7000, 127.0.0.1:7000)".
using ConnectCallback =
    std::function<void(std::unique_ptr<Handle> handle, std::error_code error, const std::string& message)>;

/// A connection attempt in progress. Destroying it (or cancel()) abandons
/// the attempt: the callback never runs. Destroying it inside its own
/// callback is safe. Movable.
class [[nodiscard]] ConnectRequest {
public:
    ConnectRequest() noexcept = default;
    ConnectRequest(ConnectRequest&& other) noexcept;
    ConnectRequest& operator=(ConnectRequest&& other) noexcept;
    ConnectRequest(const ConnectRequest&) = delete;
    ConnectRequest& operator=(const ConnectRequest&) = delete;
    ~ConnectRequest() { cancel(); }

    /// Abandons the attempt; idempotent.
    void cancel() noexcept;
    /// Whether the callback is still to come.
    [[nodiscard]] bool pending() const noexcept;

private:
    friend ConnectRequest tcp_connect(EventLoop&, std::string_view, std::uint16_t, ConnectOptions, ConnectCallback);
    explicit ConnectRequest(detail::ConnectState* state) noexcept : state_(state) {}
    detail::ConnectState* state_ = nullptr;
};

/// Resolves `host` (a name, or an IPv4 / IPv6 address) and connects to
/// `port`, trying each resolved address in turn with a non-blocking
/// connect, each for at most options.timeout. The callback runs once, from
/// the loop, never before tcp_connect returns.
///
/// Name resolution uses getaddrinfo() on the loop thread and blocks it for
/// as long as the resolver takes: immediate for addresses, "localhost" and
/// /etc/hosts names, possibly seconds for DNS. Resolve in advance (or pass
/// an address) where that matters.
ConnectRequest tcp_connect(EventLoop& loop, std::string_view host, std::uint16_t port, ConnectOptions options,
                           ConnectCallback callback);

/// The category of getaddrinfo() errors (EAI_* values), whose messages are
/// gai_strerror()'s.
const std::error_category& resolver_category() noexcept;

}  // namespace anyloop
