#include "plasmon/object_id.h"

#include <unistd.h>

#include <random>

#include "core/keyed_hash.h"

namespace plasmon {

Result<ObjectID> ObjectID::FromBinary(std::string_view binary) {
  if (binary.size() != kSize)
    return Status::InvalidArgument("an object ID is " + std::to_string(kSize) + " bytes, not " +
                                   std::to_string(binary.size()));
  ObjectID id;
  std::memcpy(id.bytes_.data(), binary.data(), kSize);
  return id;
}

size_t ObjectID::Hash() const { return static_cast<size_t>(KeyedHash(bytes_.data(), kSize)); }

static int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<ObjectID> ObjectID::FromHex(std::string_view hex) {
  if (hex.size() != 2 * kSize) return std::nullopt;
  ObjectID id;
  for (size_t i = 0; i < kSize; i++) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    id.bytes_[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return id;
}

ObjectID ObjectID::Random() {
  // Reseeded in a forked child: otherwise parent and children would draw the
  // same IDs after fork().
  thread_local std::mt19937_64 rng;
  thread_local pid_t seeded_for = 0;
  if (seeded_for != ::getpid()) {
    seeded_for = ::getpid();
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    rng.seed(seq);
  }
  ObjectID id;
  for (size_t i = 0; i < kSize; i += 4) {
    uint32_t r = static_cast<uint32_t>(rng());
    std::memcpy(id.bytes_.data() + i, &r, 4);
  }
  return id;
}

std::string ObjectID::Hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * kSize, '0');
  for (size_t i = 0; i < kSize; i++) {
    s[2 * i] = kDigits[bytes_[i] >> 4];
    s[2 * i + 1] = kDigits[bytes_[i] & 0xf];
  }
  return s;
}

}  // namespace plasmon
