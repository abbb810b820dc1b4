#include "client/populate.h"

#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "core/fd.h"
#include "tests/smaps.h"

namespace plasmon::internal {
namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB;

// A shared memfd mapping, as a client's of the arena, with every page
// allocated (as a prefaulted store leaves it) but none mapped here.
class PopulateHintsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = UniqueFd(::memfd_create("populate-test", MFD_CLOEXEC));
    ASSERT_TRUE(fd_.valid());
    ASSERT_EQ(::ftruncate(fd_.get(), kSize), 0);
    Result<Mapping> m = Mapping::Map(fd_.get(), kSize, /*writable=*/true);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    map_ = std::move(*m);
    ASSERT_TRUE(map_.Populate(0, kSize, /*write=*/true));  // allocates every page
    Unmap();
  }
  // Drops this process's page-table entries; the memfd keeps the pages.
  void Unmap() { ASSERT_EQ(::madvise(map_.base(), kSize, MADV_DONTNEED), 0); }
  uint64_t Rss() const { return testing::RssOfMappingAt(map_.base()); }

  static constexpr uint64_t kSize = 8 * kMiB;
  UniqueFd fd_;
  Mapping map_;
};

TEST_F(PopulateHintsTest, APrefaultedArenaGetsTheObjectWidenedTo64KiBBoundaries) {
  PopulateHints hints(&map_, /*prefaulted=*/true);
  EXPECT_EQ(Rss(), 0u);
  hints.BeforeWrite(100 * kKiB, 64 * kKiB);  // [100 KiB, 164 KiB) -> [64 KiB, 192 KiB)
  EXPECT_EQ(Rss(), 128 * kKiB);
  // A range populated once is not populated again: what the kernel dropped
  // since just faults in.
  Unmap();
  hints.BeforeWrite(100 * kKiB, 64 * kKiB);
  hints.BeforeRead(120 * kKiB, 64 * kKiB);
  EXPECT_EQ(Rss(), 0u);
  // Only the granules not populated yet: [192 KiB, 320 KiB).
  hints.BeforeWrite(100 * kKiB, 200 * kKiB);
  EXPECT_EQ(Rss(), 128 * kKiB);
  // For reading, the same; the kernel's fault-around may map up to 60 KiB
  // more on either side (64 KiB windows of addresses, and the mapping is
  // aligned to 4 KiB only), which allocates nothing.
  Unmap();
  hints.BeforeRead(kMiB, 64 * kKiB);
  EXPECT_GE(Rss(), 64 * kKiB);
  EXPECT_LE(Rss(), (64 + 120) * kKiB);
}

TEST_F(PopulateHintsTest, ALazyArenaGetsTheObjectsOwnPagesOnly) {
  PopulateHints hints(&map_, /*prefaulted=*/false);
  // For writing (reads may map more: see fault-around above).
  hints.BeforeWrite(100 * kKiB + 10, 64 * kKiB);  // pages 100 KiB .. 168 KiB
  EXPECT_EQ(Rss(), 68 * kKiB);
}

TEST_F(PopulateHintsTest, SmallObjectsAreLeftToFaultIn) {
  PopulateHints hints(&map_, /*prefaulted=*/true);
  hints.BeforeWrite(0, PopulateHints::kMinObject - 1);
  hints.BeforeRead(kMiB, 4 * kKiB);
  EXPECT_EQ(Rss(), 0u);
  hints.BeforeWrite(kSize - 64 * kKiB, 64 * kKiB);  // the last granule, up to the end
  EXPECT_EQ(Rss(), 64 * kKiB);
}

TEST_F(PopulateHintsTest, RangesAcrossWordsOfTheRecordArePopulatedOnceEach) {
  // 8 MiB of 64 KiB granules: two 64-bit words of the record, the second
  // from 4 MiB. Ranges that start and end inside either word, and span both.
  PopulateHints hints(&map_, /*prefaulted=*/false);
  hints.BeforeWrite(3 * kMiB + 512 * kKiB, 1536 * kKiB);  // [3.5, 5) MiB
  EXPECT_EQ(Rss(), 1536 * kKiB);
  Unmap();
  hints.BeforeWrite(3 * kMiB + 512 * kKiB, 1536 * kKiB);
  hints.BeforeRead(3 * kMiB + 512 * kKiB, 1536 * kKiB);
  EXPECT_EQ(Rss(), 0u) << "populated already; written covers reading";
  hints.BeforeWrite(0, kSize);  // only the rest: [0, 3.5) and [5, 8) MiB
  EXPECT_EQ(Rss(), kSize - 1536 * kKiB);
  // Read-populated is not enough for writing (fault-around may map up to
  // 60 KiB more on either side of a read; see above).
  PopulateHints fresh(&map_, /*prefaulted=*/false);
  Unmap();
  fresh.BeforeRead(3 * kMiB, 2 * kMiB);
  EXPECT_GE(Rss(), 2 * kMiB);
  EXPECT_LE(Rss(), 2 * kMiB + 120 * kKiB);
  Unmap();
  fresh.BeforeRead(3 * kMiB, 2 * kMiB);
  EXPECT_EQ(Rss(), 0u);
  fresh.BeforeWrite(3 * kMiB, 2 * kMiB);
  EXPECT_EQ(Rss(), 2 * kMiB);
}

TEST(PopulateGranuleTest, TheRecordStaysSmallForEveryArena) {
  EXPECT_EQ(PopulateHints::GranuleFor(16ull << 30), 64 * kKiB);
  EXPECT_EQ(PopulateHints::GranuleFor(1ull << 40), 128 * kKiB);   // 1 TiB: 2^23 granules
  EXPECT_EQ(PopulateHints::GranuleFor(1ull << 46), 8 * kMiB);     // 64 TiB: 2^23 granules
}

}  // namespace
}  // namespace plasmon::internal
