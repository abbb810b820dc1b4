// ObjectID: the 20-byte name an application gives an object.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "plasmon/status.h"

namespace plasmon {

class ObjectID {
 public:
  static constexpr size_t kSize = 20;

  ObjectID() { bytes_.fill(0); }

  // The ID made of `binary`, which must be exactly kSize bytes; otherwise
  // InvalidArgument naming its length. A check, not a precondition: the bytes
  // often come from outside (a file, a peer), and a name padded or cut
  // without a word would name another object.
  static Result<ObjectID> FromBinary(std::string_view binary);
  // Parses 40 hex digits (either case); nullopt for anything else.
  static std::optional<ObjectID> FromHex(std::string_view hex);
  // A uniformly random ID (for tests and tools).
  static ObjectID Random();

  const uint8_t* data() const { return bytes_.data(); }
  uint8_t* mutable_data() { return bytes_.data(); }
  std::string Binary() const { return std::string(reinterpret_cast<const char*>(data()), kSize); }
  std::string Hex() const;

  bool operator==(const ObjectID& o) const { return bytes_ == o.bytes_; }
  bool operator!=(const ObjectID& o) const { return !(*this == o); }
  bool operator<(const ObjectID& o) const { return bytes_ < o.bytes_; }

  // A keyed hash of all 20 bytes (xxh3-64 seeded with a random key drawn
  // once per process). IDs are chosen by applications, and many schemes make
  // them a prefix, a counter and an index, so no byte can be left out; the
  // key keeps anyone outside from choosing IDs that collide. The value
  // differs from process to process: use it only for in-process tables.
  size_t Hash() const;

 private:
  std::array<uint8_t, kSize> bytes_;
};

struct ObjectIDHash {
  size_t operator()(const ObjectID& id) const { return id.Hash(); }
};

}  // namespace plasmon
