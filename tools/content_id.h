// IDs derived from an object's content, for `plasmon put FILE` without an ID.
#pragma once

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t by value: no allocation to fail
#include <xxhash.h>

#include <cstdint>
#include <string_view>

#include "plasmon/object_id.h"

namespace plasmon {

// 20 bytes: xxh3-128 of the content, then the low 4 bytes of its length.
// The same content always gets the same ID.
ObjectID ContentId(std::string_view content);

// The same ID, of content that arrives in pieces (a file read in chunks).
class ContentIdBuilder {
 public:
  ContentIdBuilder();
  void Update(std::string_view piece);
  ObjectID Finish() const;

 private:
  XXH3_state_t state_;
  uint64_t length_ = 0;
};

}  // namespace plasmon
