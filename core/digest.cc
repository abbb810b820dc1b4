#include "core/digest.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

namespace plasmon {

uint64_t ObjectDigest(const uint8_t* data, size_t data_size, const uint8_t* metadata,
                      size_t metadata_size) {
  if (metadata_size == 0) return XXH3_64bits(data, data_size);
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, data, data_size);
  XXH3_64bits_update(&st, metadata, metadata_size);
  return XXH3_64bits_digest(&st);
}

}  // namespace plasmon
