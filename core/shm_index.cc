#include "core/shm_index.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <xxhash.h>

#include <cerrno>
#include <cstring>

namespace plasmon::shm {

uint64_t HashId(const ObjectID& id, uint64_t seed) {
  return XXH3_64bits_withSeed(id.data(), ObjectID::kSize, seed);
}

static void IdWords(const ObjectID& id, uint64_t out[3]) {
  uint8_t padded[24] = {};
  std::memcpy(padded, id.data(), ObjectID::kSize);
  std::memcpy(out, padded, sizeof(padded));
}

// A memfd of `bytes`, which can be sealed.
static Result<UniqueFd> SealableMemfd(const char* name, uint64_t bytes) {
  int fd = ::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return Status::FromErrno("memfd_create", errno);
  UniqueFd owned(fd);
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0)
    return Status::FromErrno(std::string("sizing ") + name, errno);
  return owned;
}

// ---- IndexReader ----

IndexReader::IndexReader(Mapping map, const IndexPrefix& prefix) : map_(std::move(map)) {
  slots_ = reinterpret_cast<const IndexSlot*>(map_.base() + kHeaderBytes);
  mask_ = prefix.slot_count - 1;
  seed_ = prefix.seed;
}

// The first sizeof(T) bytes of the file behind `fd`.
template <typename T>
static Status ReadPrefix(int fd, T* out, const char* what) {
  ssize_t n;
  do {
    n = ::pread(fd, out, sizeof(T), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Status::FromErrno(std::string("reading the store's ") + what, errno);
  if (static_cast<size_t>(n) != sizeof(T))
    return Status::ProtocolError(std::string("the store's ") + what + " is too small");
  return Status::OK();
}

Result<IndexReader> IndexReader::Open(Mapping map, int fd) {
  if (map.size() < kHeaderBytes) return Status::ProtocolError("the store's index is too small");
  IndexPrefix h;
  PLASMON_RETURN_IF_ERROR(ReadPrefix(fd, &h, "index"));
  const uint64_t n = h.slot_count;
  if (h.magic != kIndexMagic || h.layout != kLayout || n == 0 || (n & (n - 1)) != 0 ||
      n > kMaxSlots || h.max_probe != kMaxProbe || IndexBytes(n) > map.size())
    return Status::ProtocolError("the store's index has a layout this client does not know");
  return IndexReader(std::move(map), h);
}

std::optional<Found> IndexReader::Lookup(const ObjectID& id) const {
  uint64_t want[3];
  IdWords(id, want);
  const uint64_t home = HashId(id, seed_);
  for (uint32_t i = 0; i < kMaxProbe; i++) {
    const uint64_t slot = (home + i) & mask_;
    const IndexSlot& s = slots_[slot];
    const uint64_t w = s.word.load(std::memory_order_acquire);
    if (w == 0) return std::nullopt;  // never used: the probe ends here
    if (WordState(w) == kEmpty) continue;
    // Acquire loads (plain loads on x86) of fields the store writes with
    // release stores: one that reads a rewritten field also sees the word
    // change that came before the rewrite, so the reload below differs.
    if (s.id[0].load(std::memory_order_acquire) != want[0] ||
        s.id[1].load(std::memory_order_acquire) != want[1] ||
        s.id[2].load(std::memory_order_acquire) != want[2])
      continue;
    Found f;
    f.slot = slot;
    f.offset = s.offset.load(std::memory_order_acquire);
    f.data_size = s.data_size.load(std::memory_order_acquire);
    f.metadata_size = s.metadata_size.load(std::memory_order_acquire);
    // The seqlock's check: an unchanged word means the store rewrote none
    // of the fields read above.
    if (s.word.load(std::memory_order_acquire) != w) return std::nullopt;  // changing: the socket path
    f.word = w;
    return f;
  }
  return std::nullopt;
}

// ---- IndexWriter ----

IndexWriter::IndexWriter(UniqueFd fd, Mapping map, bool read_only)
    : fd_(std::move(fd)), map_(std::move(map)), read_only_(read_only) {
  slots_ = reinterpret_cast<IndexSlot*>(map_.base() + kHeaderBytes);
  mask_ = header()->slot_count - 1;
  seed_ = header()->seed;
}

Result<IndexWriter> IndexWriter::Create(uint64_t slot_count) {
  uint64_t n = 1;
  while (n < slot_count && n < kMaxSlots) n <<= 1;
  Result<UniqueFd> fd = SealableMemfd("plasmon-index", IndexBytes(n));
  if (!fd.ok()) return fd.status();
  Result<Mapping> map = Mapping::Map(fd->get(), IndexBytes(n), /*writable=*/true);
  if (!map.ok()) return map.status();
  auto* h = reinterpret_cast<IndexHeader*>(map->base());
  h->magic = kIndexMagic;
  h->layout = kLayout;
  h->max_probe = kMaxProbe;
  h->slot_count = n;
  // Random per store: the hash is no secret (clients read it), but IDs that
  // collide in one store's index do not in the next one's.
  if (::getrandom(&h->seed, sizeof(h->seed), 0) != sizeof(h->seed)) h->seed = 0x9e3779b97f4a7c15;
  h->unpublished.store(0, std::memory_order_relaxed);
  // Clients may map it read-only and no more; and no one may resize it (the
  // store's own accesses would fault). The mapping made above stays writable.
  bool read_only = ::fcntl(fd->get(), F_ADD_SEALS,
                           F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL | F_SEAL_FUTURE_WRITE) == 0;
  if (!read_only && ::fcntl(fd->get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)
    return Status::FromErrno("sealing the index", errno);
  return IndexWriter(std::move(*fd), std::move(*map), read_only);
}

void IndexWriter::Prefault() const {
  map_.Prefault(static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)));
}

std::optional<IndexWriter::Place> IndexWriter::Publish(const ObjectID& id, uint64_t offset,
                                                       uint64_t data_size, uint64_t metadata_size) {
  const uint64_t home = HashId(id, seed_);
  for (uint32_t i = 0; i < kMaxProbe; i++) {
    const uint64_t slot = (home + i) & mask_;
    IndexSlot& s = slots_[slot];
    const uint64_t w = s.word.load(std::memory_order_relaxed);  // only we write it
    if (WordState(w) != kEmpty) continue;
    const uint64_t gen = w == 0 ? 1 : WordGen(w);
    // The word changed (freed) before these writes, and they are release
    // stores: a reader that sees any of them also sees a word other than
    // the one it started from. (No standalone fences: TSan cannot check them.)
    uint64_t words[3];
    IdWords(id, words);
    for (int j = 0; j < 3; j++) s.id[j].store(words[j], std::memory_order_release);
    s.offset.store(offset, std::memory_order_release);
    s.data_size.store(data_size, std::memory_order_release);
    s.metadata_size.store(metadata_size, std::memory_order_release);
    s.word.store(MakeWord(gen, kSealed), std::memory_order_release);
    return Place{slot, gen};
  }
  header()->unpublished.fetch_add(1, std::memory_order_release);
  return std::nullopt;
}

// ---- pin pages ----

Result<PinPageStore> PinPageStore::Create() {
  Result<UniqueFd> fd = SealableMemfd("plasmon-pins", kPinPageBytes);
  if (!fd.ok()) return fd.status();
  // Written through the file, not the mapping: the store's mapping stays
  // untouched until it scans the page (a fault less on the Connect path).
  const PinPrefix h{kPinMagic, kLayout, kPinSlots, kRingSlots, 0};
  const ssize_t n = ::pwrite(fd->get(), &h, sizeof(h), 0);
  if (n < 0) return Status::FromErrno("writing a pin page's header", errno);
  if (static_cast<size_t>(n) != sizeof(h)) return Status::IOError("short write of a pin page's header");
  Result<Mapping> map = Mapping::Map(fd->get(), kPinPageBytes, /*writable=*/true);
  if (!map.ok()) return map.status();
  if (::fcntl(fd->get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    return Status::FromErrno("sealing a pin page", errno);
  // The header faulted in now (the store makes pages ahead of Connects),
  // not at the first scan, which is on some request's path.
  (void)reinterpret_cast<const PinHeader*>(map->base())->revoked.load(std::memory_order_relaxed);
  return PinPageStore(std::move(*fd), std::move(*map));
}

Result<std::unique_ptr<PinPageClient>> PinPageClient::Open(int fd) {
  PinPrefix h;
  PLASMON_RETURN_IF_ERROR(ReadPrefix(fd, &h, "pin page"));
  if (h.magic != kPinMagic || h.layout != kLayout || h.pin_slots != kPinSlots ||
      h.ring_slots != kRingSlots)
    return Status::ProtocolError("the store's pin page has a layout this client does not know");
  Result<Mapping> map = Mapping::Map(fd, kPinPageBytes, /*writable=*/true);
  if (!map.ok()) return map.status();
  // A child must not write its parent's pins: it gets no mapping of them
  // (MADV_WIPEONFORK takes only private memory). The client stops using the
  // page in a child (see ForkEpoch).
  if (::madvise(map->base(), map->size(), MADV_DONTFORK) != 0)
    return Status::FromErrno("madvise(MADV_DONTFORK) of the pin page", errno);
  return std::unique_ptr<PinPageClient>(new PinPageClient(std::move(*map)));
}

static std::atomic<uint64_t> fork_epoch{0};

uint64_t ForkEpoch() {
  static std::once_flag once;
  std::call_once(once, [] {
    ::pthread_atfork(nullptr, nullptr, [] { fork_epoch.fetch_add(1, std::memory_order_relaxed); });
  });
  return fork_epoch.load(std::memory_order_relaxed);
}

int PinPageClient::Acquire() {
  std::lock_guard<std::mutex> l(mu_);
  if (!free_.empty()) {
    int k = free_.back();
    free_.pop_back();
    return k;
  }
  if (used_ == static_cast<int>(kPinSlots)) return -1;
  return used_++;
}

bool PinPageClient::Pin(int k, uint64_t token) {
  PinHeader* h = header();
  // Before the pin: a store that reads an older mark scanned before the
  // pin existed, so it also stored GOING before our reload (seq_cst).
  if (h->high_water.load(std::memory_order_relaxed) <= static_cast<uint64_t>(k)) {
    uint64_t cur = h->high_water.load(std::memory_order_relaxed);
    while (cur <= static_cast<uint64_t>(k) &&
           !h->high_water.compare_exchange_weak(cur, static_cast<uint64_t>(k) + 1,
                                                std::memory_order_seq_cst)) {
    }
  }
  pins()[k].store(token, std::memory_order_seq_cst);
  return h->revoked.load(std::memory_order_seq_cst) == 0;
}

void PinPageClient::Unpin(int k) {
  pins()[k].store(0, std::memory_order_seq_cst);
  std::lock_guard<std::mutex> l(mu_);
  free_.push_back(k);
}

void PinPageClient::RecordGet(uint64_t token) {
  PinHeader* h = header();
  h->gets.fetch_add(1, std::memory_order_relaxed);
  uint64_t at = h->ring_head.load(std::memory_order_relaxed);
  ring()[at % kRingSlots].store(token, std::memory_order_relaxed);
  h->ring_head.store(at + 1, std::memory_order_release);  // threads racing here may lose an entry: a hint
}

}  // namespace plasmon::shm
