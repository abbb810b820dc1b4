#include "core/allocator.h"

#include <algorithm>
#include <cassert>
#include <iterator>

namespace plasmon {

Allocator::Allocator(uint64_t capacity) : capacity_(capacity / kAlignment * kAlignment) {
  if (capacity_ > 0) InsertFree(0, capacity_);
}

void Allocator::InsertFree(uint64_t offset, uint64_t size) {
  by_offset_.emplace(offset, size);
  by_size_.emplace(size, offset);
}

void Allocator::EraseFree(std::map<uint64_t, uint64_t>::iterator it) {
  by_size_.erase({it->second, it->first});
  by_offset_.erase(it);
}

std::optional<uint64_t> Allocator::Allocate(uint64_t size) {
  if (size > capacity_) return std::nullopt;
  size = RoundUp(size);
  auto fit = by_size_.lower_bound({size, 0});
  if (fit == by_size_.end()) return std::nullopt;
  auto [free_size, offset] = *fit;
  by_size_.erase(fit);
  by_offset_.erase(offset);
  if (free_size > size) InsertFree(offset + size, free_size - size);
  used_ += size;
  return offset;
}

void Allocator::Free(uint64_t offset, uint64_t size) {
  size = RoundUp(size);
  assert(offset + size <= capacity_ && used_ >= size);
  used_ -= size;
  auto next = by_offset_.lower_bound(offset);
  if (next != by_offset_.end() && offset + size == next->first) {
    size += next->second;
    EraseFree(next++);
  }
  if (next != by_offset_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      size += prev->second;
      EraseFree(prev);
    }
  }
  InsertFree(offset, size);
}

void Allocator::FreePlan::Free(uint64_t offset, uint64_t size) {
  uint64_t begin = offset, end = offset + RoundUp(size);
  // A free neighbour is either in a planned range already (it met an earlier
  // planned free) or still one of the allocator's own: ranges are maximal,
  // so the planned one, if any, ends or starts exactly at this range.
  auto next = merged_.lower_bound(end);
  if (next != merged_.end() && next->first == end) {
    end += next->second;
    next = merged_.erase(next);
  } else if (auto f = a_.by_offset_.find(end); f != a_.by_offset_.end()) {
    end += f->second;
  }
  auto prev = next == merged_.begin() ? merged_.end() : std::prev(next);
  if (prev != merged_.end() && prev->first + prev->second == begin) {
    begin = prev->first;
    merged_.erase(prev);
  } else if (auto f = a_.by_offset_.lower_bound(begin); f != a_.by_offset_.begin()) {
    --f;
    if (f->first + f->second == begin) begin = f->first;
  }
  merged_.emplace(begin, end - begin);
  largest_ = std::max(largest_, end - begin);
}

uint64_t Allocator::largest_free() const {
  return by_size_.empty() ? 0 : by_size_.rbegin()->first;
}

}  // namespace plasmon
