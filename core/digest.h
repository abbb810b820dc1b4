// Object digests: xxh3-64 over the data bytes followed by the metadata bytes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace plasmon {

uint64_t ObjectDigest(const uint8_t* data, size_t data_size, const uint8_t* metadata,
                      size_t metadata_size);

}  // namespace plasmon
