// LogLimiter: decides whether a repeated warning is logged, so that a remote
// peer or a local client cannot flood the log by repeating what makes the
// store warn.
//
// Lines are grouped by a key that the caller builds from who caused them and
// why (e.g. "tcp transport: handshake failures from 10.0.0.7"; an address
// without its port, so that reconnecting does not make a new key). Each key
// may log `per_key` lines per window, and all keys together `total` lines
// per window; the rest are counted. When a key's window ends with lines
// suppressed, one summary says how many ("... suppressed 1234 similar
// warnings in the last 10 s"). The table of keys is bounded: past `max_keys`,
// new keys share one entry, so a flood of distinct keys costs no memory.
//
// Thread-safe. The logic has no logging of its own (core/ does not depend on
// spdlog); core/limited_log.h is the spdlog side.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace plasmon {

class LogLimiter {
 public:
  struct Options {
    int64_t window_ms = 10000;
    uint32_t per_key = 5;   // lines one key may log per window
    uint32_t total = 50;    // lines all keys together may log per window
    size_t max_keys = 256;  // keys tracked at once
  };
  struct Summary {
    std::string key;
    uint64_t suppressed = 0;
  };
  // The key that keys past max_keys share.
  static constexpr std::string_view kOverflowKey = "warnings from further sources";

  // `now_ms`: a monotonic clock in milliseconds (a fake one in tests).
  LogLimiter();  // the default Options, the steady clock
  explicit LogLimiter(Options options, std::function<int64_t()> now_ms = nullptr);

  LogLimiter(const LogLimiter&) = delete;
  LogLimiter& operator=(const LogLimiter&) = delete;

  // One occurrence of `key`: true if it should be logged; if not, it is
  // counted as suppressed.
  bool Admit(std::string_view key);

  // The keys whose window ended with lines suppressed, each reported once
  // (and forgotten: a key's table entry lives only as long as its window).
  // With `all`, windows still open too (at shutdown).
  std::vector<Summary> TakeSummaries(bool all = false);

  // Lines suppressed since creation.
  uint64_t suppressed() const;

  const Options& options() const { return opts_; }

 private:
  struct Entry {
    int64_t start_ms = 0;
    uint32_t logged = 0;
    uint64_t suppressed = 0;
  };
  // Moves the suppressed count of an entry whose window ended into pending_.
  void Close(const std::string& key, Entry* e);
  // Closes and forgets the entries whose windows ended (with `all`, every one).
  void Sweep(int64_t now, bool all);

  const Options opts_;
  const std::function<int64_t()> now_ms_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> keys_;
  std::vector<Summary> pending_;  // closed windows with suppressed lines, not yet taken
  int64_t total_start_ms_ = 0;
  uint32_t total_logged_ = 0;
  int64_t next_sweep_ms_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace plasmon
