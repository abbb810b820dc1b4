#include "core/arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <utility>

namespace plasmon {

Mapping::Mapping(Mapping&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)), size_(std::exchange(o.size_, 0)) {}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    if (base_ != nullptr) ::munmap(base_, size_);
    base_ = std::exchange(o.base_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

Mapping::~Mapping() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

Result<Mapping> Mapping::Map(int fd, size_t size, bool writable, bool populate) {
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void* p = ::mmap(nullptr, size, prot, flags, fd, 0);
  if (p == MAP_FAILED) return Status::FromErrno("mmap of " + std::to_string(size) + " bytes", errno);
  return Mapping(static_cast<uint8_t*>(p), size);
}

static Result<UniqueFd> OpenBacking(const ArenaOptions& o) {
  if (o.directory.empty()) {
    unsigned flags = MFD_CLOEXEC | (o.hugepages ? MFD_HUGETLB : 0u);
    int fd = ::memfd_create("plasmon-arena", flags);
    if (fd < 0) return Status::FromErrno("memfd_create", errno);
    return UniqueFd(fd);
  }
  // An unnamed file in the directory: nothing is left behind if we die.
  int fd = ::open(o.directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return UniqueFd(fd);
  // hugetlbfs has no O_TMPFILE: create a named file and unlink it at once.
  std::string path = o.directory + "/plasmon-arena-XXXXXX";
  fd = ::mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("creating a file in " + o.directory, errno);
  ::unlink(path.c_str());
  return UniqueFd(fd);
}

Result<Arena> Arena::Create(const ArenaOptions& o) {
  if (o.size == 0) return Status::InvalidArgument("arena size must be positive");
  Arena a;
  a.page_size_ = o.hugepages ? (2u << 20) : static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t size = (o.size + a.page_size_ - 1) / a.page_size_ * a.page_size_;
  Result<UniqueFd> fd = OpenBacking(o);
  if (!fd.ok()) return fd.status();
  a.fd_ = std::move(*fd);
  if (::ftruncate(a.fd_.get(), static_cast<off_t>(size)) != 0)
    return Status::FromErrno("ftruncate of the arena to " + std::to_string(size) + " bytes", errno);
  Result<Mapping> m = Mapping::Map(a.fd_.get(), size, /*writable=*/true, /*populate=*/false);
  if (!m.ok()) {
    if (o.hugepages)
      return Status::OutOfMemory(m.status().message() +
                                 " (are enough huge pages reserved? see /proc/sys/vm/nr_hugepages)");
    return m.status();
  }
  a.map_ = std::move(*m);
  if (o.prefault) {
    if (::madvise(a.map_.base(), size, MADV_POPULATE_WRITE) != 0) {
      // Older kernels: touch every page by hand.
      for (uint64_t off = 0; off < size; off += a.page_size_) {
        volatile uint8_t* p = a.map_.base() + off;
        *p = 0;
      }
    }
    a.prefaulted_ = true;
  }
  return a;
}

}  // namespace plasmon
