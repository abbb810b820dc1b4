#include "core/log_limiter.h"

#include <chrono>

namespace plasmon {

namespace {

int64_t SteadyMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

LogLimiter::LogLimiter() : LogLimiter(Options{}) {}

LogLimiter::LogLimiter(Options options, std::function<int64_t()> now_ms)
    : opts_(options), now_ms_(now_ms ? std::move(now_ms) : SteadyMillis) {
  const int64_t now = now_ms_();
  total_start_ms_ = now;
  next_sweep_ms_ = now + opts_.window_ms;
}

void LogLimiter::Close(const std::string& key, Entry* e) {
  if (e->suppressed > 0) {
    // Bounded too: past max_keys unread summaries, they are folded into one.
    if (pending_.size() < opts_.max_keys || pending_.empty()) {
      pending_.push_back({key, e->suppressed});
    } else {
      pending_.back().key = std::string(kOverflowKey);
      pending_.back().suppressed += e->suppressed;
    }
  }
  e->suppressed = 0;
  e->logged = 0;
}

void LogLimiter::Sweep(int64_t now, bool all) {
  next_sweep_ms_ = now + opts_.window_ms;
  for (auto e = keys_.begin(); e != keys_.end();) {
    if (all || now - e->second.start_ms >= opts_.window_ms) {
      Close(e->first, &e->second);
      e = keys_.erase(e);
    } else {
      ++e;
    }
  }
}

bool LogLimiter::Admit(std::string_view key) {
  std::lock_guard<std::mutex> l(mu_);
  const int64_t now = now_ms_();
  if (now - total_start_ms_ >= opts_.window_ms) {
    total_start_ms_ = now;
    total_logged_ = 0;
  }
  std::string k(key);
  auto it = keys_.find(k);
  if (it == keys_.end()) {
    if (keys_.size() >= opts_.max_keys) {
      // Full: forget the keys whose windows ended (at most once a window,
      // so that a flood of new keys costs no scan each), else share one entry.
      if (now >= next_sweep_ms_) Sweep(now, false);
      if (keys_.size() >= opts_.max_keys) k = std::string(kOverflowKey);
    }
    it = keys_.try_emplace(std::move(k), Entry{now, 0, 0}).first;
  } else if (now - it->second.start_ms >= opts_.window_ms) {
    Close(it->first, &it->second);
    it->second.start_ms = now;
  }
  Entry& e = it->second;
  if (e.logged < opts_.per_key && total_logged_ < opts_.total) {
    e.logged++;
    total_logged_++;
    return true;
  }
  e.suppressed++;
  suppressed_++;
  return false;
}

std::vector<LogLimiter::Summary> LogLimiter::TakeSummaries(bool all) {
  std::lock_guard<std::mutex> l(mu_);
  const int64_t now = now_ms_();
  if (all || now >= next_sweep_ms_) Sweep(now, all);
  std::vector<Summary> out;
  out.swap(pending_);
  return out;
}

uint64_t LogLimiter::suppressed() const {
  std::lock_guard<std::mutex> l(mu_);
  return suppressed_;
}

}  // namespace plasmon
