#include "tools/content_id.h"

#include <cstring>

namespace plasmon {

namespace {

ObjectID MakeId(XXH128_hash_t h, uint64_t length) {
  ObjectID id;
  uint8_t* p = id.mutable_data();
  std::memcpy(p, &h.high64, 8);
  std::memcpy(p + 8, &h.low64, 8);
  uint32_t len = static_cast<uint32_t>(length);
  std::memcpy(p + 16, &len, 4);
  return id;
}

}  // namespace

ObjectID ContentId(std::string_view content) {
  return MakeId(XXH3_128bits(content.data(), content.size()), content.size());
}

ContentIdBuilder::ContentIdBuilder() { XXH3_128bits_reset(&state_); }

void ContentIdBuilder::Update(std::string_view piece) {
  XXH3_128bits_update(&state_, piece.data(), piece.size());
  length_ += piece.size();
}

ObjectID ContentIdBuilder::Finish() const { return MakeId(XXH3_128bits_digest(&state_), length_); }

}  // namespace plasmon
