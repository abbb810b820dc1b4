// Shared-memory arenas: the memory objects live in.
//
// The store creates each arena once at start (a memfd, or a file in a
// directory such as a hugetlbfs mount), maps it, and never shrinks or moves it,
// so it can be registered for RDMA once. Clients map the same fd, received
// over the socket, and address objects as offsets into it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/fd.h"
#include "plasmon/status.h"

namespace plasmon {

// An mmap'd region, unmapped on destruction.
class Mapping {
 public:
  Mapping() = default;
  Mapping(uint8_t* base, size_t size) : base_(base), size_(size) {}
  Mapping(Mapping&& o) noexcept;
  Mapping& operator=(Mapping&& o) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();

  // Maps `size` bytes of `fd` shared. It touches no page: the cost is the
  // same for 256 MiB as for 64 TiB (see Populate for what comes after).
  static Result<Mapping> Map(int fd, size_t size, bool writable);

  // Asks the kernel to map [offset, offset + len) now, for writing
  // (MADV_POPULATE_WRITE) or reading (MADV_POPULATE_READ), with one call
  // instead of one page fault per page when the range is touched. The range
  // is widened to whole pages. A hint: false if it did nothing (a kernel
  // before 5.14 says EINVAL), and the pages then fault in as they are used.
  bool Populate(uint64_t offset, uint64_t len, bool write) const;

  // Backs every page of a new mapping now and makes its first accesses
  // cheap (see TouchThroughMapping in arena.cc): MADV_POPULATE_WRITE, or a
  // write to every page on kernels before 5.14. Only for memory no one else
  // uses yet: it writes zeros over what should be zeros.
  void Prefault(uint64_t page_size) const;

  uint8_t* base() const { return base_; }
  size_t size() const { return size_; }

 private:
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
};

struct ArenaOptions {
  uint64_t size = 0;       // bytes; rounded up to the page size
  std::string directory;   // empty: anonymous memfd
  bool hugepages = false;  // MFD_HUGETLB (or a hugetlbfs directory)
  bool prefault = false;   // populate every page now
};

// What the host can back for an arena (checked by the daemon before it
// creates one, so that a mistyped --memory fails at once, not when the
// arena fills and the kernel kills the store).
//   InvalidArgument  options.size exceeds kMaxArenaSize, or all the memory
//                    (or huge pages, or the directory's file system) the
//                    host has, or, with prefault, what is free now
//   a warning        (the returned string) when it exceeds what is free
//                    now: writes may then fail or wake the OOM killer
//   ""               when it fits
Result<std::string> CheckArenaBacking(const ArenaOptions& options);

// Whether this kernel backs a memfd arena mapped with MADV_HUGEPAGE (as
// Mapping::Map maps every one) with transparent 2 MiB pages: the shmem
// setting in /sys/kernel/mm/transparent_hugepage (shmem_enabled, or
// hugepages-2048kB/shmem_enabled where that does not say "inherit"), whose
// word goes to *setting ("never" on a default Debian 12; "advise" turns it
// on for plasmon without reserving pages as --hugepages needs). A hint: the
// kernel falls back to 4 KiB pages when it finds no free 2 MiB.
bool ShmemHugePages(std::string* setting);

class Arena {
 public:
  // The largest arena: 64 TiB (x86-64 processes address 128 TiB in all).
  static constexpr uint64_t kMaxArenaSize = uint64_t{1} << 46;

  static Result<Arena> Create(const ArenaOptions& options);

  int fd() const { return fd_.get(); }
  uint8_t* base() const { return map_.base(); }
  uint64_t size() const { return map_.size(); }
  uint64_t page_size() const { return page_size_; }
  bool prefaulted() const { return prefaulted_; }
  // A memfd arena on transparent 2 MiB pages (see ShmemHugePages), and the
  // host's setting that decided it ("" for hugetlb and directory arenas).
  bool transparent_huge() const { return transparent_huge_; }
  const std::string& shmem_setting() const { return shmem_setting_; }

 private:
  UniqueFd fd_;
  Mapping map_;
  uint64_t page_size_ = 4096;
  bool prefaulted_ = false;
  bool transparent_huge_ = false;
  std::string shmem_setting_;
};

}  // namespace plasmon
