// anyloop/backends/poll.hpp — the poll(2) backend.
#pragma once

#include <anyloop/core/event_loop.hpp>

#include <memory>

namespace anyloop {

/// A loop over poll(2): portable, O(watched fds) per iteration.
std::unique_ptr<EventLoop> make_poll_loop();

}  // namespace anyloop
