#include "core/digest.h"

#include <algorithm>
#include <bit>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t by value
#include <xxhash.h>
#if defined(__x86_64__) && __has_include(<xxh_x86dispatch.h>)
#include <xxh_x86dispatch.h>  // XXH3_* become their run-time dispatched versions
#endif

namespace plasmon {

namespace {

// Feeds [p, p + n) to the block being hashed (`in_block` bytes of it fed
// into `st` so far) and calls emit(digest) for every block it completes. A
// whole block within the piece is hashed in one call, without the state.
template <typename Emit>
void Feed(XXH3_state_t* st, uint64_t* in_block, const uint8_t* p, size_t n, Emit&& emit) {
  while (n > 0) {
    if (*in_block == 0 && n >= kDigestBlock) {
      emit(XXH3_64bits(p, kDigestBlock));
      p += kDigestBlock;
      n -= kDigestBlock;
      continue;
    }
    if (*in_block == 0) XXH3_64bits_reset(st);
    size_t take = static_cast<size_t>(std::min<uint64_t>(n, kDigestBlock - *in_block));
    XXH3_64bits_update(st, p, take);
    *in_block += take;
    p += take;
    n -= take;
    if (*in_block == kDigestBlock) {
      emit(XXH3_64bits_digest(st));
      *in_block = 0;
    }
  }
}

}  // namespace

uint64_t BlockDigest(const uint8_t* p, size_t n) { return XXH3_64bits(p, n); }

uint64_t CombineBlockDigests(const uint64_t* blocks, uint64_t count) {
  if (count == 1) return blocks[0];
  static_assert(std::endian::native == std::endian::little, "block digests are hashed as stored");
  return XXH3_64bits(blocks, count * sizeof(uint64_t));
}

uint64_t ObjectDigest(const uint8_t* data, size_t data_size, const uint8_t* metadata,
                      size_t metadata_size) {
  if (metadata_size == 0 && data_size <= kDigestBlock) return XXH3_64bits(data, data_size);
  DigestStream s;
  s.Update(data, data_size);
  s.Update(metadata, metadata_size);
  return s.Finish();
}

struct BlockHasher::State {
  XXH3_state_t st;
};

BlockHasher::BlockHasher(uint64_t* out) : state_(std::make_unique<State>()), out_(out) {}
BlockHasher::~BlockHasher() = default;

void BlockHasher::Update(const uint8_t* p, size_t n) {
  Feed(&state_->st, &in_block_, p, n, [this](uint64_t d) { out_[written_++] = d; });
}

void BlockHasher::Finish() {
  if (in_block_ > 0) out_[written_++] = XXH3_64bits_digest(&state_->st);
  in_block_ = 0;
}

struct DigestStream::State {
  XXH3_state_t st;
};

DigestStream::DigestStream() : state_(std::make_unique<State>()) {}
DigestStream::~DigestStream() = default;

void DigestStream::Update(const uint8_t* p, size_t n) {
  Feed(&state_->st, &in_block_, p, n, [this](uint64_t d) { blocks_.push_back(d); });
}

uint64_t DigestStream::Finish() const {
  if (blocks_.empty()) {
    if (in_block_ == 0) return XXH3_64bits(nullptr, 0);
    return XXH3_64bits_digest(&state_->st);
  }
  std::vector<uint64_t> all = blocks_;
  if (in_block_ > 0) all.push_back(XXH3_64bits_digest(&state_->st));
  return CombineBlockDigests(all.data(), all.size());
}

}  // namespace plasmon
