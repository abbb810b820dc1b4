#include "core/digest.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace plasmon {
namespace {

std::vector<uint8_t> Bytes(uint64_t n) {
  std::vector<uint8_t> v(n);
  for (uint64_t i = 0; i < n; i++) v[i] = static_cast<uint8_t>(i * 131 + (i >> 9));
  return v;
}

// Objects of at most one block keep the plain xxh3-64 of their bytes (the
// digests the store computes at seal, up to 64 KiB).
TEST(DigestTest, AnObjectOfOneBlockHasThePlainDigest) {
  for (uint64_t n : {uint64_t{0}, uint64_t{1}, uint64_t{4096}, kDigestBlock}) {
    std::vector<uint8_t> b = Bytes(n);
    EXPECT_EQ(ObjectDigest(b.data(), n, nullptr, 0), BlockDigest(b.data(), n)) << n;
    EXPECT_EQ(ObjectDigest(b.data(), n / 2, b.data() + n / 2, n - n / 2), BlockDigest(b.data(), n));
  }
}

// Larger ones: the combined digest of their blocks, however the bytes are
// cut: data and metadata, pieces of a stream, or chunks hashed apart.
TEST(DigestTest, EveryWayOfFeedingALargeObjectAgrees) {
  for (uint64_t n : {kDigestBlock + 1, 3 * kDigestBlock, 5 * kDigestBlock + 77}) {
    std::vector<uint8_t> b = Bytes(n);
    const uint64_t blocks = DigestBlocks(n);
    std::vector<uint64_t> want(blocks);
    for (uint64_t i = 0; i < blocks; i++)
      want[i] =
          BlockDigest(b.data() + i * kDigestBlock, std::min(kDigestBlock, n - i * kDigestBlock));
    const uint64_t d = CombineBlockDigests(want.data(), blocks);
    EXPECT_NE(d, BlockDigest(b.data(), n)) << "a tree, not the plain digest";
    EXPECT_EQ(ObjectDigest(b.data(), n, nullptr, 0), d) << n;
    EXPECT_EQ(ObjectDigest(b.data(), 100, b.data() + 100, n - 100), d) << n;
    for (size_t piece : {size_t{1000}, size_t{kDigestBlock}, size_t{kDigestBlock + 3}}) {
      DigestStream s;
      for (uint64_t off = 0; off < n; off += piece)
        s.Update(b.data() + off, std::min<uint64_t>(piece, n - off));
      EXPECT_EQ(s.Finish(), d) << n << " in pieces of " << piece;
    }
    // Two chunks of whole blocks, each hashed apart in odd pieces.
    std::vector<uint64_t> got(blocks, 0);
    const uint64_t cut = kDigestBlock * (blocks / 2);
    for (auto [from, to] : {std::pair<uint64_t, uint64_t>{0, cut}, {cut, n}}) {
      BlockHasher h(got.data() + from / kDigestBlock);
      for (uint64_t off = from; off < to; off += 9999)
        h.Update(b.data() + off, std::min<uint64_t>(9999, to - off));
      h.Finish();
      EXPECT_EQ(h.blocks(), DigestBlocks(to - from));
    }
    EXPECT_EQ(got, want);
  }
}

}  // namespace
}  // namespace plasmon
