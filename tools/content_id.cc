#include "tools/content_id.h"

#include <xxhash.h>

#include <cstring>

namespace plasmon {

ObjectID ContentId(std::string_view content) {
  XXH128_hash_t h = XXH3_128bits(content.data(), content.size());
  ObjectID id;
  uint8_t* p = id.mutable_data();
  std::memcpy(p, &h.high64, 8);
  std::memcpy(p + 8, &h.low64, 8);
  uint32_t len = static_cast<uint32_t>(content.size());
  std::memcpy(p + 16, &len, 4);
  return id;
}

}  // namespace plasmon
