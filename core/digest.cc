#include "core/digest.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t by value
#include <xxhash.h>
#if defined(__x86_64__) && __has_include(<xxh_x86dispatch.h>)
#include <xxh_x86dispatch.h>  // XXH3_* become their run-time dispatched versions
#endif

namespace plasmon {

uint64_t ObjectDigest(const uint8_t* data, size_t data_size, const uint8_t* metadata,
                      size_t metadata_size) {
  if (metadata_size == 0) return XXH3_64bits(data, data_size);
  DigestStream s;
  s.Update(data, data_size);
  s.Update(metadata, metadata_size);
  return s.Finish();
}

struct DigestStream::State {
  XXH3_state_t st;
};

DigestStream::DigestStream() : state_(std::make_unique<State>()) { XXH3_64bits_reset(&state_->st); }
DigestStream::~DigestStream() = default;
void DigestStream::Update(const uint8_t* p, size_t n) { XXH3_64bits_update(&state_->st, p, n); }
uint64_t DigestStream::Finish() const { return XXH3_64bits_digest(&state_->st); }

}  // namespace plasmon
