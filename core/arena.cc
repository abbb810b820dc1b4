#include "core/arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

#include "core/size.h"

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

Result<Mapping> Mapping::Map(int fd, size_t size, bool writable) {
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  // Never MAP_POPULATE: it maps every page of the arena, which made a
  // client's Connect cost 0.8 s on a prefaulted 12 GiB store.
  void* p = ::mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Status::FromErrno("mmap of " + std::to_string(size) + " bytes", errno);
  // Asks for 2 MiB pages where the kernel gives shared memory transparent
  // huge pages only when asked (shmem_enabled "advise"; see ShmemHugePages).
  // On this project's VMs a prefaulted store on them starts in half the
  // time (a touch per 2 MiB, not per 4 KiB: TouchThroughMapping), its first
  // 1 GiB fetch ran as fast as the later ones (0.99 of them, against 0.63 on
  // 4 KiB pages), and a new client's first read of 64 MiB at 0.77 GB/s
  // against 0.42 (docs/BENCHMARKS.md, fifth session). Where the setting is
  // "never" (Debian's default) or the mapping is hugetlb already, it changes
  // nothing, so its result is ignored.
  (void)::madvise(p, size, MADV_HUGEPAGE);
  return Mapping(static_cast<uint8_t*>(p), size);
}

bool Mapping::Populate(uint64_t offset, uint64_t len, bool write) const {
  if (len == 0 || offset >= size_) return false;
  len = std::min<uint64_t>(len, size_ - offset);
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  // The mapping's base is page-aligned, so offsets align as addresses do.
  uint64_t begin = offset / page * page;
  uint64_t end = std::min<uint64_t>((offset + len + page - 1) / page * page, size_);
  int advice = write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
  return ::madvise(base_ + begin, end - begin, advice) == 0;
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

namespace {

// A field of /proc/meminfo in bytes ("MemTotal:  24576 kB"); nullopt if absent.
std::optional<uint64_t> MemInfo(const std::string& text, const std::string& field) {
  size_t at = text.find("\n" + field + ":");
  if (at == std::string::npos) return std::nullopt;
  const char* p = text.c_str() + at + field.size() + 2;
  while (*p == ' ') p++;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(p, text.c_str() + text.size(), v);
  if (ec != std::errc()) return std::nullopt;
  bool kb = std::string_view(end).substr(0, 3) == " kB";
  return kb ? v * 1024 : v;
}

std::string ReadSmallFile(const char* path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The memory limit of this process's cgroup (v2), if it has one.
std::optional<uint64_t> CgroupLimit() {
  std::string self = ReadSmallFile("/proc/self/cgroup");  // "0::/some/path"
  size_t at = self.find("0::");
  if (at == std::string::npos) return std::nullopt;
  std::string path = self.substr(at + 3);
  path = path.substr(0, path.find('\n'));
  std::string max = ReadSmallFile(("/sys/fs/cgroup" + path + "/memory.max").c_str());
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(max.data(), max.data() + max.size(), v);
  if (ec != std::errc()) return std::nullopt;  // "max": none
  return v;
}

}  // namespace

// The word in brackets in a sysfs choice list ("always [advise] never").
static std::string ChosenWord(const std::string& text) {
  size_t open = text.find('['), close = text.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return "";
  return text.substr(open + 1, close - open - 1);
}

bool ShmemHugePages(std::string* setting) {
  std::string global = ChosenWord(ReadSmallFile("/sys/kernel/mm/transparent_hugepage/shmem_enabled"));
  // Linux 6.11 and later: a setting per page size, which may defer to the global one.
  std::string pmd =
      ChosenWord(ReadSmallFile("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled"));
  std::string chosen = pmd.empty() || pmd == "inherit" ? global : pmd;
  if (setting != nullptr) *setting = chosen.empty() ? "absent" : chosen;
  // "within_size": huge pages inside the file's size, i.e. all of an arena's.
  return chosen == "always" || chosen == "within_size" || chosen == "advise" || chosen == "force";
}

Result<std::string> CheckArenaBacking(const ArenaOptions& o) {
  if (o.size > Arena::kMaxArenaSize)
    return Status::InvalidArgument(std::to_string(o.size) + " bytes is more than the largest "
                                   "arena, " + FormatSize(Arena::kMaxArenaSize));
  uint64_t most = 0, now = 0;  // what the host has in all, what is free
  std::string what;
  if (!o.directory.empty() && !o.hugepages) {
    struct statvfs fs;
    if (::statvfs(o.directory.c_str(), &fs) != 0) return std::string();  // Create will say why
    most = static_cast<uint64_t>(fs.f_blocks) * fs.f_frsize;
    now = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
    what = "the file system of " + o.directory;
  } else {
    std::string info = "\n" + ReadSmallFile("/proc/meminfo");
    if (o.hugepages) {
      uint64_t page = MemInfo(info, "Hugepagesize").value_or(2 << 20);
      most = MemInfo(info, "HugePages_Total").value_or(0) * page;
      now = MemInfo(info, "HugePages_Free").value_or(0) * page;
      what = "the reserved huge pages (/proc/sys/vm/nr_hugepages)";
    } else {
      std::optional<uint64_t> total = MemInfo(info, "MemTotal");
      if (!total) return std::string();  // no /proc: nothing to check against
      most = *total + MemInfo(info, "SwapTotal").value_or(0);
      now = MemInfo(info, "MemAvailable").value_or(*total) + MemInfo(info, "SwapFree").value_or(0);
      what = "this host's memory and swap";
      if (std::optional<uint64_t> limit = CgroupLimit(); limit && *limit < most) {
        most = *limit;
        now = std::min(now, *limit);
        what = "this cgroup's memory.max";
      }
    }
  }
  std::string asked = FormatSize(o.size);
  if (o.size > most)
    return Status::InvalidArgument(asked + " is more than " + what + " can ever hold (" +
                                   FormatSize(most) + ")");
  if (o.size > now) {
    std::string s = asked + " is more than " + what + " has free now (" + FormatSize(now) + ")";
    if (o.prefault) return Status::InvalidArgument(s + ": it cannot be prefaulted");
    return s + ": filling the store may fail or wake the OOM killer";
  }
  return std::string();
}

namespace {

// Populating fills the guest's page tables from inside the kernel; a
// hypervisor that shadows them (as on this project's VMs, where the guest
// kernel and guest user mode each have their own) still takes an exit, 2-7
// us, at the first access to each page through a mapping, once from user
// mode and once from the kernel's copies (recv and send). A prefaulted arena
// paid that at its first use instead: the first 256 MiB fetch of a run took
// 7x the later ones, in the holder's send, the receiver's recv and both
// hashes. So the store reads one byte of every page, and has the kernel
// write one (a zero over a zero: the arena is new) with readv() from
// /dev/zero, 1024 pages a call. On bare metal both cost a TLB walk a page.
void TouchThroughMapping(uint8_t* base, uint64_t size, uint64_t page) {
  UniqueFd zero(::open("/dev/zero", O_RDONLY | O_CLOEXEC));
  uint8_t sink = 0;
  constexpr int kBatch = 1024;  // IOV_MAX
  iovec iov[kBatch];
  for (uint64_t off = 0; off < size;) {
    int n = 0;
    for (; n < kBatch && off < size; n++, off += page) {
      sink ^= *static_cast<volatile uint8_t*>(base + off);
      iov[n] = {base + off, 1};
    }
    if (zero.valid()) (void)!::readv(zero.get(), iov, n);
  }
  (void)sink;
}

}  // namespace

void Mapping::Prefault(uint64_t page_size) const {
  if (!Populate(0, size_, /*write=*/true)) {
    // Older kernels: touch every page by hand, every base page: a 2 MiB
    // "page" of a transparent huge page arena may be 4 KiB ones after all.
    static const uint64_t base = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    for (uint64_t off = 0; off < size_; off += std::min(page_size, base)) {
      volatile uint8_t* p = base_ + off;
      *p = 0;
    }
  } else {
    TouchThroughMapping(base_, size_, page_size);
  }
}

Result<Arena> Arena::Create(const ArenaOptions& o) {
  if (o.size == 0) return Status::InvalidArgument("arena size must be positive");
  if (o.size > kMaxArenaSize)
    return Status::InvalidArgument("an arena of " + std::to_string(o.size) +
                                   " bytes is more than the largest, " + FormatSize(kMaxArenaSize));
  Arena a;
  if (!o.hugepages && o.directory.empty()) a.transparent_huge_ = ShmemHugePages(&a.shmem_setting_);
  a.page_size_ = o.hugepages || a.transparent_huge_ ? (2u << 20)
                                                    : static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t size = (o.size + a.page_size_ - 1) / a.page_size_ * a.page_size_;
  Result<UniqueFd> fd = OpenBacking(o);
  if (!fd.ok()) return fd.status();
  a.fd_ = std::move(*fd);
  if (::ftruncate(a.fd_.get(), static_cast<off_t>(size)) != 0)
    return Status::FromErrno("ftruncate of the arena to " + std::to_string(size) + " bytes", errno);
  Result<Mapping> m = Mapping::Map(a.fd_.get(), size, /*writable=*/true);
  if (!m.ok()) {
    if (o.hugepages)
      return Status::OutOfMemory(m.status().message() +
                                 " (are enough huge pages reserved? see /proc/sys/vm/nr_hugepages)");
    return m.status();
  }
  a.map_ = std::move(*m);
  if (o.prefault) {
    a.map_.Prefault(a.page_size_);
    a.prefaulted_ = true;
  }
  return a;
}

}  // namespace plasmon
