#include "core/allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <random>
#include <vector>

namespace plasmon {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kGiB = 1 << 30;

// Checks that live blocks are aligned, inside capacity, and do not overlap.
void CheckNoOverlap(const std::map<uint64_t, uint64_t>& live, uint64_t capacity) {
  uint64_t end = 0;
  for (auto [off, size] : live) {
    ASSERT_EQ(off % Allocator::kAlignment, 0u);
    ASSERT_GE(off, end) << "blocks overlap at " << off;
    end = off + Allocator::RoundUp(size);
    ASSERT_LE(end, capacity);
  }
}

TEST(AllocatorTest, AlignsEveryAllocationTo64Bytes) {
  Allocator a(1 * kMiB);
  for (uint64_t size : {1u, 63u, 64u, 65u, 100u, 4097u}) {
    auto off = a.Allocate(size);
    ASSERT_TRUE(off);
    EXPECT_EQ(*off % 64, 0u);
  }
  EXPECT_EQ(a.used(), 64u + 64 + 64 + 128 + 128 + 4160);
}

TEST(AllocatorTest, ZeroSizeTakesOneUnit) {
  Allocator a(1024);
  auto x = a.Allocate(0), y = a.Allocate(0);
  ASSERT_TRUE(x && y);
  EXPECT_NE(*x, *y);
  EXPECT_EQ(a.used(), 128u);
}

TEST(AllocatorTest, RefusesWhatDoesNotFit) {
  Allocator a(4096);
  EXPECT_FALSE(a.Allocate(4097));
  EXPECT_FALSE(a.Allocate(UINT64_MAX));
  ASSERT_TRUE(a.Allocate(4096));
  EXPECT_FALSE(a.Allocate(1));
}

TEST(AllocatorTest, FreeCoalescesNeighboursBackToOneRange) {
  Allocator a(1 * kMiB);
  std::vector<uint64_t> offs;
  for (int i = 0; i < 16; i++) offs.push_back(*a.Allocate(64 * 1024));
  EXPECT_FALSE(a.Allocate(1));
  // Free in an order that exercises merge-left, merge-right and both.
  for (int i : {1, 3, 2, 0, 15, 13, 14, 5, 4, 7, 6, 9, 8, 11, 10, 12}) a.Free(offs[i], 64 * 1024);
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(a.free_ranges(), 1u);
  EXPECT_EQ(a.largest_free(), 1 * kMiB);
}

TEST(AllocatorTest, BestFitPrefersTheSmallestHole) {
  Allocator a(1 * kMiB);
  uint64_t a1 = *a.Allocate(1000 * 64), b1 = *a.Allocate(64), a2 = *a.Allocate(10 * 64);
  uint64_t b2 = *a.Allocate(64);
  (void)b1;
  (void)b2;
  a.Free(a1, 1000 * 64);
  a.Free(a2, 10 * 64);
  // A 10-unit request fits both holes; best fit takes the 10-unit one.
  EXPECT_EQ(*a.Allocate(10 * 64), a2);
}

// The capacity promise: at least 95% of -m holds 8 MiB objects.
TEST(AllocatorTest, HoldsAllOf1GiBIn8MiBObjects) {
  Allocator a(kGiB);
  int n = 0;
  while (a.Allocate(8 * kMiB)) n++;
  EXPECT_EQ(n, 128);
  EXPECT_GE(static_cast<double>(a.used()), 0.95 * static_cast<double>(kGiB));
}

// Sizes log-uniform between 64 B and 64 MiB.
uint64_t MixedSize(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(std::log(64.0), std::log(64.0 * kMiB));
  return static_cast<uint64_t>(std::exp(u(rng)));
}

// Mixed workload with churn: after many random frees and allocations, filling
// the store still reaches 95% of capacity before sizes stop fitting.
TEST(AllocatorTest, MixedWorkloadAfterChurnStillFills95Percent) {
  for (uint64_t seed : {1, 2, 3}) {
    std::mt19937_64 rng(seed);
    Allocator a(kGiB);
    std::map<uint64_t, uint64_t> live;  // offset -> size
    auto free_random = [&] {
      auto it = live.begin();
      std::advance(it, std::uniform_int_distribution<size_t>(0, live.size() - 1)(rng));
      a.Free(it->first, it->second);
      live.erase(it);
    };
    // Churn: 20000 allocations, freeing random blocks whenever one does not
    // fit and whenever the store is over 90% full.
    for (int i = 0; i < 20000; i++) {
      uint64_t size = MixedSize(rng);
      std::optional<uint64_t> off;
      while (!(off = a.Allocate(size)) && !live.empty()) free_random();
      ASSERT_TRUE(off);
      live[*off] = size;
      while (a.used() > kGiB * 9 / 10) free_random();
    }
    CheckNoOverlap(live, kGiB);
    // Fill: keep drawing sizes; stop after 200 refusals in a row.
    int refusals = 0;
    while (refusals < 200) {
      uint64_t size = MixedSize(rng);
      auto off = a.Allocate(size);
      if (!off) {
        refusals++;
        continue;
      }
      refusals = 0;
      live[*off] = size;
    }
    CheckNoOverlap(live, kGiB);
    double fill = static_cast<double>(a.used()) / static_cast<double>(kGiB);
    EXPECT_GE(fill, 0.95) << "seed " << seed;
    RecordProperty("fill_seed_" + std::to_string(seed), std::to_string(fill));
  }
}

TEST(AllocatorTest, RandomOperationsKeepBlocksDisjointAndAccountingExact) {
  std::mt19937_64 rng(42);
  Allocator a(64 * kMiB);
  std::map<uint64_t, uint64_t> live;
  uint64_t expect_used = 0;
  for (int i = 0; i < 50000; i++) {
    if (live.empty() || rng() % 2 == 0) {
      uint64_t size = rng() % (1 * kMiB);
      if (auto off = a.Allocate(size)) {
        ASSERT_EQ(live.count(*off), 0u);
        live[*off] = size;
        expect_used += Allocator::RoundUp(size);
      }
    } else {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      a.Free(it->first, it->second);
      expect_used -= Allocator::RoundUp(it->second);
      live.erase(it);
    }
    ASSERT_EQ(a.used(), expect_used);
    if (i % 1000 == 0) CheckNoOverlap(live, 64 * kMiB);
  }
  for (auto [off, size] : live) a.Free(off, size);
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(a.free_ranges(), 1u);
}

}  // namespace
}  // namespace plasmon
