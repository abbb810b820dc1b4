// The spdlog side of LogLimiter: a warning that logs unless its key has
// logged enough lately, and the summaries of what was suppressed.
//
// Only for plasmon's targets that link spdlog (transport/, store/).
#pragma once

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

#include "core/log_limiter.h"

namespace plasmon {

// Logs what `limiter` suppressed in windows that have ended, one line per
// key; past the limiter's per_key lines, the rest as one line. With `all`,
// windows still open too (when the limiter's owner shuts down).
inline void LogSuppressed(LogLimiter& limiter, spdlog::level::level_enum level, bool all = false) {
  std::vector<LogLimiter::Summary> done = limiter.TakeSummaries(all);
  if (done.empty()) return;
  const int64_t secs = (limiter.options().window_ms + 999) / 1000;
  size_t shown = 0;
  uint64_t rest = 0;
  for (const LogLimiter::Summary& s : done) {
    if (shown < std::max<uint32_t>(1, limiter.options().per_key)) {
      spdlog::log(level, "{}: suppressed {} similar warnings in the last {} s", s.key, s.suppressed,
                  secs);
      shown++;
    } else {
      rest += s.suppressed;
    }
  }
  if (rest > 0)
    spdlog::log(level, "suppressed {} more warnings from {} more sources in the last {} s", rest,
                done.size() - shown, secs);
}

// spdlog::log(level, fmt, args...), unless `limiter` suppresses `key`.
template <typename... Args>
void LimitedLog(LogLimiter& limiter, spdlog::level::level_enum level, std::string_view key,
                spdlog::format_string_t<Args...> fmt, Args&&... args) {
  if (!spdlog::should_log(level)) return;
  const bool log = limiter.Admit(key);
  LogSuppressed(limiter, level);
  if (log) spdlog::log(level, fmt, std::forward<Args>(args)...);
}

}  // namespace plasmon
