// anyloop/backends/epoll.hpp — the epoll(7) backend (Linux).
#pragma once

#include <anyloop/core/event_loop.hpp>

#include <memory>

namespace anyloop {

/// A loop over level-triggered epoll(7): one epoll_wait per iteration, cost
/// proportional to the ready fds, not the watched ones. Linux only.
///
/// Differences from poll that a user can see: a watched fd that is closed
/// without stopping its watcher goes quiet (the kernel forgets it) instead
/// of reporting readiness; regular files, which epoll refuses, are reported
/// as always ready, as poll(2) does.
std::unique_ptr<EventLoop> make_epoll_loop();

}  // namespace anyloop
