// Clocks in microseconds.
#pragma once

#include <chrono>
#include <cstdint>

namespace plasmon {

inline int64_t WallMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline int64_t MonoMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The monotonic deadline (MonoMicros) of a request's timeout in
// milliseconds; -1 (none) for 0 or a negative timeout. Huge timeouts are
// clamped rather than overflowing.
inline int64_t DeadlineAfterMs(int64_t timeout_ms) {
  if (timeout_ms <= 0) return -1;
  constexpr int64_t kMaxMs = INT64_MAX / 4000;
  return MonoMicros() + (timeout_ms < kMaxMs ? timeout_ms : kMaxMs) * 1000;
}

}  // namespace plasmon
