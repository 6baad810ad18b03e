// anyloop/core/clock.hpp — the one clock every loop uses.
#pragma once

#include <chrono>

namespace anyloop {

/// Monotonic: never jumps with the wall clock.
using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

}  // namespace anyloop
