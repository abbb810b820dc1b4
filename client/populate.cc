#include "client/populate.h"

#include <algorithm>
#include <cerrno>
#include <utility>

namespace plasmon::internal {

namespace {

constexpr uint64_t kMaxGranules = uint64_t{1} << 24;  // 2 MiB of bits per record


}  // namespace

uint64_t PopulateHints::GranuleFor(uint64_t arena_size) {
  uint64_t g = kMinGranule;
  while (arena_size / g >= kMaxGranules) g *= 2;
  return g;
}

PopulateHints::PopulateHints(const Mapping* map, bool prefaulted)
    : map_(map), prefaulted_(prefaulted), granule_(GranuleFor(map->size())) {}

void PopulateHints::Before(uint64_t offset, uint64_t len, bool write) {
  if (len < kMinObject || unsupported_.load(std::memory_order_relaxed)) return;
  const uint64_t size = map_->size();
  if (offset >= size) return;
  const uint64_t end = offset + std::min(len, size - offset);
  const uint64_t first = offset / granule_, last = (end - 1) / granule_;
  // The runs of granules not populated yet, marked now: a concurrent call for
  // the same range then leaves them to this one (or faults, if it touches
  // them first, which is all that happens without populating).
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // [first, last] granules
  {
    std::lock_guard<std::mutex> l(mu_);
    if (written_.empty()) {
      const uint64_t words = (size / granule_ + 1 + 63) / 64;
      written_.assign(words, 0);
      read_.assign(words, 0);
    }
    // A word of granules at a time: a large object seen before costs a few
    // hundred steps here, not one per granule (16384 for 1 GiB).
    std::vector<uint64_t>& mark = write ? written_ : read_;
    for (uint64_t w = first / 64; w <= last / 64; w++) {
      const uint64_t lo_bit = w == first / 64 ? first % 64 : 0;
      const uint64_t hi_bit = w == last / 64 ? last % 64 : 63;
      const uint64_t span = (hi_bit == 63 ? ~uint64_t{0} : (uint64_t{1} << (hi_bit + 1)) - 1) &
                            ~((uint64_t{1} << lo_bit) - 1);
      uint64_t missing = span & ~written_[w] & (write ? ~uint64_t{0} : ~read_[w]);
      mark[w] |= missing;
      while (missing != 0) {
        const uint64_t g = w * 64 + static_cast<uint64_t>(__builtin_ctzll(missing));
        missing &= missing - 1;
        if (!runs.empty() && runs.back().second + 1 == g) {
          runs.back().second = g;
        } else {
          runs.emplace_back(g, g);
        }
      }
    }
  }
  // On a prefaulted arena the neighbours' pages exist too: mapping them now
  // spares the objects next to this one their faults. At most kMinGranule
  // on either side, though, so that a small object in a huge arena (whose
  // granules are larger) does not map megabytes. On other arenas only the
  // object's own pages exist, or are to be made: populating more would
  // allocate memory for objects nobody has created.
  const uint64_t margin = prefaulted_ ? kMinGranule : 1;
  const uint64_t lo = offset / margin * margin;
  const uint64_t hi = std::min((end + margin - 1) / margin * margin, size);
  for (const auto& [a, b] : runs) {
    const uint64_t from = std::max(a * granule_, lo), to = std::min((b + 1) * granule_, hi);
    if (!map_->Populate(from, to - from, write)) {
      // EINVAL on kernels before 5.14: the pages fault in as they are used.
      // Other errors (EFAULT, ENOMEM) are left to the access itself to meet.
      if (errno == EINVAL) unsupported_.store(true, std::memory_order_relaxed);
      return;
    }
  }
}

}  // namespace plasmon::internal
