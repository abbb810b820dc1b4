// What a client maps of the arena, and when.
//
// Connect maps the arena without touching it, so that it costs the same on a
// 256 MiB store as on a 64 TiB one. An object's pages are mapped when the
// client is about to use them instead: at Create for writing and at Get for
// reading, with one madvise (Mapping::Populate) for a large object in place of
// one page fault per 4 KiB page. Small objects just fault: a few faults cost
// less than the call.
//
// The arena's space is reused (the allocator hands freed ranges out again),
// and a range once mapped stays mapped in this process, so PopulateHints
// remembers, in granules of the arena, what this client has populated
// already: a Create or Get in a range populated before costs one look at a
// bitmap. The record is only a hint: pages the kernel unmapped since just
// fault in again.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "core/arena.h"

namespace plasmon::internal {

class PopulateHints {
 public:
  // Objects smaller than this (data and metadata) are left to fault in.
  static constexpr uint64_t kMinObject = 64 * 1024;
  // The smallest granule of the record; larger arenas get larger granules, so
  // that the record stays under 2 MiB (see GranuleFor).
  static constexpr uint64_t kMinGranule = 64 * 1024;

  // `map` outlives this. `prefaulted`: the store populated the whole arena,
  // so every page exists and populating a range only maps it; the object's
  // range is then widened to kMinGranule boundaries. Otherwise only the
  // object's own pages are populated (populating others would allocate
  // memory for objects nobody has created).
  PopulateHints(const Mapping* map, bool prefaulted);

  // [offset, offset + len) of the mapping is about to be written (a new
  // object) or read (a sealed one).
  void BeforeWrite(uint64_t offset, uint64_t len) { Before(offset, len, true); }
  void BeforeRead(uint64_t offset, uint64_t len) { Before(offset, len, false); }

  uint64_t granule() const { return granule_; }
  static uint64_t GranuleFor(uint64_t arena_size);

 private:
  void Before(uint64_t offset, uint64_t len, bool write);

  const Mapping* map_;
  const bool prefaulted_;
  const uint64_t granule_;
  std::atomic<bool> unsupported_{false};  // the kernel has no MADV_POPULATE_*

  std::mutex mu_;
  // One bit per granule: populated for writing (which covers reading too),
  // and for reading. Allocated at the first large object, so that a client
  // that never touches one (a CLI call) pays nothing.
  std::vector<uint64_t> written_, read_;
};

}  // namespace plasmon::internal
