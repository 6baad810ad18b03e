// anyloop/backends/registry.hpp — choosing a backend by name.
//
// The backends compiled in are fixed at build time (CMake options
// ANYLOOP_WITH_<BACKEND>); which one make_loop() returns is
// ANYLOOP_DEFAULT_BACKEND. Every built backend can also be picked at run time.
#pragma once

#include <anyloop/core/event_loop.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace anyloop {

/// A new loop on the default backend.
std::unique_ptr<EventLoop> make_loop();

/// A new loop on the named backend ("libev", "libevent", "asio", "poll",
/// "select", "epoll"). An unknown or unbuilt name throws
/// std::invalid_argument listing the built backends.
std::unique_ptr<EventLoop> make_loop(std::string_view backend);

/// The built backends, the default first.
std::vector<std::string> available_backends();

/// The name make_loop() uses.
std::string_view default_backend() noexcept;

}  // namespace anyloop
