// Helpers for the cluster tests: object contents, put, fetch, checks.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "plasmon/client.h"

namespace plasmon::testing {

constexpr int64_t kTimeoutMs = 30000;

inline std::string Bytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, std::min<size_t>(8, n - i));
  }
  return s;
}

inline Status Put(Client& c, const ObjectID& id, const std::string& data, const std::string& meta = {}) {
  if (data.size() + meta.size() <= (1u << 20)) return c.CreateAndSeal(id, data, meta);
  Result<MutableBuffer> b = c.Create(id, data.size(), meta);
  if (!b.ok()) return b.status();
  std::memcpy(b->data, data.data(), data.size());
  return c.Seal(id);
}

// The object's bytes in the store `c` talks to, compared with what was put.
inline ::testing::AssertionResult HasBytes(Client& c, const ObjectID& id, const std::string& data,
                                    const std::string& meta = {}) {
  auto got = c.Get({id}, 0);
  if (!got.ok()) return ::testing::AssertionFailure() << got.status().ToString();
  const ObjectBuffer& b = (*got)[0];
  if (!b.valid()) return ::testing::AssertionFailure() << b.status().ToString();
  if (b.view() != data) return ::testing::AssertionFailure() << "data differs (" << b.size() << " bytes)";
  if (b.metadata_view() != meta) return ::testing::AssertionFailure() << "metadata differs";
  return ::testing::AssertionSuccess();
}

inline Status FetchOne(Client& c, const ObjectID& id, int64_t timeout_ms = kTimeoutMs) {
  auto r = c.Fetch({id}, timeout_ms);
  if (!r.ok()) return r.status();
  return (*r)[0];
}

// Waits (up to 20 s) until the directory, as `c`'s store sees it, lists
// `node` as a live holder of `id`.
inline bool Published(Client& c, const ObjectID& id, const std::string& node) {
  for (int i = 0; i < 2000; i++) {
    auto w = c.Where(id);
    if (w.ok())
      for (const ObjectHolder& h : *w)
        if (h.node_id == node && h.alive) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace plasmon::testing
