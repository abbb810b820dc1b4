// Objects that check themselves: each version of an object carries its key,
// its version number and a digest of itself, so that any process that reads
// it can tell whether it read exactly what was sealed (and not freed, reused
// or half-written memory), with no record of what was written.
//
//   bytes 0-7    xxh3-64 (core/digest.h) of bytes 8 to the end
//   bytes 8-15   version
//   bytes 16-19  key (which object: the writer's index of its ID)
//   bytes 20-23  size of the whole object
//   the rest     pseudo-random, from (key, version)
#pragma once

#include <cstdint>
#include <cstring>

#include "core/digest.h"

namespace plasmon::testing {

inline constexpr uint64_t kVersionedHeader = 24;

// Writes version `version` of object `key` into p[0, size). size >= kVersionedHeader.
inline void WriteVersioned(uint8_t* p, uint64_t size, uint32_t key, uint64_t version) {
  const uint32_t size32 = static_cast<uint32_t>(size);
  std::memcpy(p + 8, &version, 8);
  std::memcpy(p + 16, &key, 4);
  std::memcpy(p + 20, &size32, 4);
  uint64_t s = version * 0x9E3779B97F4A7C15ull ^ key;
  for (uint64_t i = kVersionedHeader; i < size; i += 8) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    std::memcpy(p + i, &s, size - i < 8 ? size - i : 8);
  }
  const uint64_t d = BlockDigest(p + 8, size - 8);
  std::memcpy(p, &d, 8);
}

// Whether p[0, size) is an intact version of object `key`; its version in *version.
inline bool CheckVersioned(const uint8_t* p, uint64_t size, uint32_t key, uint64_t* version) {
  if (size < kVersionedHeader) return false;
  uint64_t d;
  uint32_t k, size32;
  std::memcpy(&d, p, 8);
  std::memcpy(version, p + 8, 8);
  std::memcpy(&k, p + 16, 4);
  std::memcpy(&size32, p + 20, 4);
  return k == key && size32 == size && d == BlockDigest(p + 8, size - 8);
}

}  // namespace plasmon::testing
