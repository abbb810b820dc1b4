// The arena allocator: hands out 64-byte aligned ranges of offsets.
//
// Written by hand because it decides how much of the memory users pay for
// they can actually use. Plasma's dlmalloc-based store held only 496 MB of
// 8 MB objects in 1 GB; plasmon's keeps all its state outside the arena (no
// headers between objects, so 8 MiB objects pack exactly), picks the best fit
// (the smallest free range that holds the request, lowest offset first) and
// coalesces neighbours on free, which keeps fragmentation low for mixed sizes.
// Cost: O(log n) in the number of free ranges.
//
// Not thread-safe: the store's event loop owns it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>

namespace plasmon {

class Allocator {
 public:
  static constexpr uint64_t kAlignment = 64;

  explicit Allocator(uint64_t capacity);

  // Rounds `size` up to the alignment (a zero size still takes one unit).
  static uint64_t RoundUp(uint64_t size) {
    if (size == 0) return kAlignment;
    return (size + kAlignment - 1) / kAlignment * kAlignment;
  }

  // An offset for RoundUp(size) bytes, or nullopt if no free range is big enough.
  std::optional<uint64_t> Allocate(uint64_t size);
  // Returns a range. REQUIRES: (offset, size) came from Allocate and is live.
  void Free(uint64_t offset, uint64_t size);

  uint64_t capacity() const { return capacity_; }
  uint64_t used() const { return used_; }
  uint64_t free_ranges() const { return by_offset_.size(); }
  uint64_t largest_free() const;

  // What freeing some live ranges would leave, found without freeing them:
  // the ranges planned so far are coalesced with one another and with the
  // free ranges beside them, as Free would. O(log n) per range. The
  // allocator must not change while a plan is in use.
  class FreePlan {
   public:
    explicit FreePlan(const Allocator& a) : a_(a), largest_(a.largest_free()) {}
    // REQUIRES: (offset, size) is live, and not in this plan yet.
    void Free(uint64_t offset, uint64_t size);
    // The largest free range there would be: Allocate(n) would succeed for
    // every n up to it.
    uint64_t largest() const { return largest_; }

   private:
    const Allocator& a_;
    std::map<uint64_t, uint64_t> merged_;  // offset -> size: ranges holding planned frees
    uint64_t largest_;
  };

 private:
  void InsertFree(uint64_t offset, uint64_t size);
  void EraseFree(std::map<uint64_t, uint64_t>::iterator it);

  uint64_t capacity_;
  uint64_t used_ = 0;
  std::map<uint64_t, uint64_t> by_offset_;          // free ranges: offset -> size
  std::set<std::pair<uint64_t, uint64_t>> by_size_;  // free ranges: (size, offset)
};

}  // namespace plasmon
