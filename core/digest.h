// Object digests: xxh3-64 over the data bytes followed by the metadata bytes.
//
// Hashing goes through libxxhash's run-time dispatch (AVX2 where the CPU has
// it): Debian's plain XXH3 entry points run the SSE2 code, at 6 GB/s here
// against 13.6 GB/s dispatched, and a 1 GiB fetch hashes the object twice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace plasmon {

uint64_t ObjectDigest(const uint8_t* data, size_t data_size, const uint8_t* metadata,
                      size_t metadata_size);

// The same digest, fed in pieces, in order.
class DigestStream {
 public:
  DigestStream();
  ~DigestStream();
  DigestStream(const DigestStream&) = delete;
  DigestStream& operator=(const DigestStream&) = delete;
  void Update(const uint8_t* p, size_t n);
  uint64_t Finish() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace plasmon
