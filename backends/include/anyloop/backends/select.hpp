// anyloop/backends/select.hpp — the select(2) backend.
#pragma once

#include <anyloop/core/event_loop.hpp>

#include <memory>

namespace anyloop {

/// A loop over select(2): the most portable multiplexer, O(highest fd) per
/// iteration, and limited to fds below FD_SETSIZE (1024 on Linux).
///
/// Watching an fd at or above FD_SETSIZE throws std::invalid_argument (an
/// fd_set cannot hold it); creating the loop throws std::runtime_error when
/// the process has no free fd below FD_SETSIZE for the loop's own wake-up.
/// A watched fd closed while active is reported ready, as poll's POLLNVAL
/// is, so the next read() or write() fails with EBADF.
std::unique_ptr<EventLoop> make_select_loop();

}  // namespace anyloop
