// A keyed hash for every hash table whose keys come from outside the process:
// object IDs (chosen by applications and by peers asking for fetches) and
// strings such as endpoints and node IDs (read from the directory).
//
// The key is drawn from the kernel's random source the first time it is
// needed and never leaves the process, so nobody outside can choose keys that
// collide (hash flooding). Hash values therefore differ from process to
// process: never store them, send them or compare them across processes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace plasmon {

// xxh3-64 of all `n` bytes of `p`, seeded with this process's secret key.
uint64_t KeyedHash(const void* p, size_t n);

// For unordered containers keyed by strings from outside.
struct KeyedStringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return KeyedHash(s.data(), s.size()); }
  size_t operator()(const std::string& s) const { return KeyedHash(s.data(), s.size()); }
  size_t operator()(const char* s) const { return (*this)(std::string_view(s)); }
};

}  // namespace plasmon
