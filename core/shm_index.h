// The shared-memory fast path's memory (issue 12; the protocol is
// docs/FAST_PATH.md, checked by tests/model/fast_path_pins.pml).
//
// Two kinds of shared memory, both memfds the store makes and passes at
// Connect:
//   - the index: one per store, written by the store alone, mapped
//     read-only by clients (sealed with F_SEAL_FUTURE_WRITE): which sealed
//     objects the store holds and where. An open-addressed table of 64-byte
//     slots, each with a state word = (generation, state) and the object's
//     ID, offset and sizes.
//   - a pin page per client, written by that client, read by the store (and
//     never trusted: a pin names a slot and a generation, both checked):
//     the pins it holds, a ring of recent gets (for the LRU), counters.
//
// Hand-written because it is the heart of the fast path: its layout is a
// wire format between processes, and each access's memory order is part of
// the protocol. Every field that the other side may be writing at the same
// time is an atomic (lock-free, so address-free: the same object works in
// two processes' mappings).
//
// Memory orders (the numbers are docs/FAST_PATH.md's):
//   - the store's GOING store to a state word and its loads of the pins, and
//     a client's pin store and its reload of the state word, are seq_cst:
//     the two halves of a Dekker handshake (either the client's reload sees
//     GOING, or the store's scan sees the pin);
//   - the other fields of a slot are read between two loads of the state
//     word as in a seqlock: the store rewrites them only after the word
//     changed, with release stores, and the reader loads them with acquire
//     loads (both plain moves on x86), so a reader that sees a rewritten
//     field also sees the changed word at its second load: equal words mean
//     the fields belong to that word. (Release/acquire on the fields rather
//     than standalone fences, which TSan cannot check.);
//   - a publication's word is a release store, its first load by a client an
//     acquire load: the object's bytes (written before its seal) are then
//     visible to the client that finds it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "core/arena.h"
#include "core/fd.h"
#include "plasmon/object_id.h"
#include "plasmon/status.h"

namespace plasmon::shm {

static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");

// ---- the state word: generation << 2 | state ----
enum SlotState : uint64_t {
  kEmpty = 0,   // free (a word of 0 was never used: a lookup stops there)
  kSealed = 1,  // clients may pin it
  kGoing = 2,   // deleted, or being evicted: no new pin validates
};
inline constexpr uint64_t MakeWord(uint64_t gen, uint64_t state) { return gen << 2 | state; }
inline constexpr uint64_t WordGen(uint64_t w) { return w >> 2; }
inline constexpr uint64_t WordState(uint64_t w) { return w & 3; }

// ---- a pin: (slot + 1) in the low 24 bits, the generation's low 40 above ----
// A generation wraps only after 2^40 reuses of one slot.
constexpr unsigned kSlotBits = 24;
constexpr uint64_t kMaxSlots = uint64_t{1} << 23;
constexpr uint64_t kGenMask = (uint64_t{1} << (64 - kSlotBits)) - 1;
inline constexpr uint64_t PinToken(uint64_t slot, uint64_t gen) {
  return (gen & kGenMask) << kSlotBits | (slot + 1);
}
inline constexpr uint64_t TokenSlot(uint64_t t) { return (t & ((uint64_t{1} << kSlotBits) - 1)) - 1; }
inline constexpr uint64_t TokenGen(uint64_t t) { return t >> kSlotBits; }

constexpr uint32_t kLayout = 1;
constexpr uint64_t kIndexMagic = 0x31584449534c50;  // "PLSIDX1"
constexpr uint64_t kPinMagic = 0x314e4950534c50;    // "PLSPIN1"
// A lookup probes at most this many slots from the ID's home slot; an
// object that finds none free there is not published (the socket path still
// serves it, and the header says such objects exist).
constexpr uint32_t kMaxProbe = 32;
constexpr size_t kHeaderBytes = 4096;

struct IndexHeader {
  uint64_t magic;
  uint32_t layout;
  uint32_t max_probe;
  uint64_t slot_count;  // a power of two
  uint64_t seed;        // of the ID hash
  // Visible objects the store could not publish (their probe window was
  // full): while it is 0, an ID the index lacks is not in the store.
  std::atomic<uint64_t> unpublished;
};

// The header's first, immutable fields as plain data: what a client reads
// with pread() to check the index before it touches the mapping (a page
// touched costs a fault, and a TLB shoot-down at its munmap: only what a
// lookup or pin needs is touched).
struct IndexPrefix {
  uint64_t magic;
  uint32_t layout;
  uint32_t max_probe;
  uint64_t slot_count;
  uint64_t seed;
};
static_assert(sizeof(IndexPrefix) <= offsetof(IndexHeader, unpublished) &&
              offsetof(IndexHeader, seed) == offsetof(IndexPrefix, seed) &&
              offsetof(IndexHeader, slot_count) == offsetof(IndexPrefix, slot_count) &&
              offsetof(IndexHeader, max_probe) == offsetof(IndexPrefix, max_probe));

struct alignas(64) IndexSlot {
  std::atomic<uint64_t> word;
  std::atomic<uint64_t> id[3];  // the 20 bytes of the ID, zero-padded
  std::atomic<uint64_t> offset;
  std::atomic<uint64_t> data_size;
  std::atomic<uint64_t> metadata_size;
  std::atomic<uint64_t> reserved;
};
static_assert(sizeof(IndexSlot) == 64);

inline uint64_t IndexBytes(uint64_t slot_count) { return kHeaderBytes + slot_count * sizeof(IndexSlot); }

// The home slot of `id`.
uint64_t HashId(const ObjectID& id, uint64_t seed);

// What a lookup found in one slot, read between two equal loads of its word.
struct Found {
  uint64_t slot = 0;
  uint64_t word = 0;
  uint64_t offset = 0, data_size = 0, metadata_size = 0;
};

// A client's read-only view of the index.
class IndexReader {
 public:
  // Checks the header (read from `fd`, the mapping's descriptor: nothing
  // of the mapping is touched) against the mapping's size. ProtocolError if
  // it is not an index of this layout.
  static Result<IndexReader> Open(Mapping map, int fd);

  // The slot holding `id` (sealed or going), consistently read; nullopt if
  // none does (then `unpublished()` says whether that is final).
  std::optional<Found> Lookup(const ObjectID& id) const;
  // The slot's word now (seq_cst: the second half of the pin handshake).
  uint64_t Word(uint64_t slot) const { return slots_[slot].word.load(std::memory_order_seq_cst); }
  bool unpublished() const { return header()->unpublished.load(std::memory_order_acquire) != 0; }

 private:
  IndexReader(Mapping map, const IndexPrefix& prefix);
  const IndexHeader* header() const { return reinterpret_cast<const IndexHeader*>(map_.base()); }
  Mapping map_;
  const IndexSlot* slots_ = nullptr;
  uint64_t mask_ = 0;
  uint64_t seed_ = 0;
};

// The store's side of the index: the only writer.
class IndexWriter {
 public:
  // A sealed memfd of `slot_count` slots (rounded up to a power of two,
  // at most kMaxSlots), mapped writable here.
  static Result<IndexWriter> Create(uint64_t slot_count);

  int fd() const { return fd_.get(); }
  uint64_t bytes() const { return map_.size(); }
  uint64_t slot_count() const { return mask_ + 1; }
  // Whether clients can only map it read-only (F_SEAL_FUTURE_WRITE held).
  bool sealed_read_only() const { return read_only_; }
  // Backs all its pages now (for a prefaulted store). Otherwise a page is
  // backed when a Publish first writes a slot in it, on that Seal's path:
  // 20-36 us a page on this project's VMs, about the cost of a 4 KiB fetch's
  // network round trip. Before any client maps it.
  void Prefault() const;

  // Publishes a sealed object; its (slot, generation), or nullopt if its
  // probe window is full (counted as unpublished until Forget).
  struct Place {
    uint64_t slot, gen;
  };
  std::optional<Place> Publish(const ObjectID& id, uint64_t offset, uint64_t data_size,
                               uint64_t metadata_size);
  // GOING (seq_cst): no pin validates from now on. Scan the pins after it.
  void Hide(const Place& p) { slots_[p.slot].word.store(MakeWord(p.gen, kGoing), std::memory_order_seq_cst); }
  // SEALED again, same generation: an eviction that found the object pinned.
  void Unhide(const Place& p) { slots_[p.slot].word.store(MakeWord(p.gen, kSealed), std::memory_order_seq_cst); }
  // The slot is free under the next generation. REQUIRES: Hide, then a scan
  // that found no pin of it.
  void Free(const Place& p) {
    slots_[p.slot].word.store(MakeWord(p.gen + 1, kEmpty), std::memory_order_release);
  }
  // The unpublished count: an object that could not be published stopped
  // being visible.
  void Forget() { header()->unpublished.fetch_sub(1, std::memory_order_release); }

 private:
  IndexWriter(UniqueFd fd, Mapping map, bool read_only);
  IndexHeader* header() const { return reinterpret_cast<IndexHeader*>(map_.base()); }
  UniqueFd fd_;
  Mapping map_;
  IndexSlot* slots_ = nullptr;
  uint64_t mask_ = 0;
  uint64_t seed_ = 0;
  bool read_only_ = false;
};

// ---- a client's pin page ----
constexpr uint32_t kPinSlots = 4096;
constexpr uint32_t kRingSlots = 1024;

struct PinHeader {
  uint64_t magic;
  uint32_t layout;
  uint32_t pin_slots;
  uint32_t ring_slots;
  uint32_t pad;
  // The store closed this connection itself while the client lives: no new
  // pin validates (the client loads it after publishing a pin, seq_cst).
  alignas(64) std::atomic<uint64_t> revoked;
  // Pins may stand in slots [0, high_water): raised (seq_cst) before a pin
  // is published above it, never lowered.
  alignas(64) std::atomic<uint64_t> high_water;
  alignas(64) std::atomic<uint64_t> gets;      // fast-path gets, counted by the client
  std::atomic<uint64_t> contains;              // fast-path Contains answers
  alignas(64) std::atomic<uint64_t> ring_head; // gets written to the ring
};

// PinHeader's immutable fields as plain data (see IndexPrefix): the store
// writes them with pwrite() and the client reads them with pread().
struct PinPrefix {
  uint64_t magic;
  uint32_t layout;
  uint32_t pin_slots;
  uint32_t ring_slots;
  uint32_t pad;
};
static_assert(sizeof(PinPrefix) <= offsetof(PinHeader, revoked) &&
              offsetof(PinHeader, ring_slots) == offsetof(PinPrefix, ring_slots) &&
              offsetof(PinHeader, pin_slots) == offsetof(PinPrefix, pin_slots));

constexpr size_t kRingOffset = kHeaderBytes;
constexpr size_t kPinsOffset = kRingOffset + kRingSlots * sizeof(uint64_t);
constexpr size_t kPinPageBytes = kPinsOffset + kPinSlots * sizeof(uint64_t);

// Where a pin page's parts are, in one mapping of it (both sides).
class PinPageMap {
 protected:
  explicit PinPageMap(Mapping map) : map_(std::move(map)) {}
  PinHeader* header() const { return reinterpret_cast<PinHeader*>(map_.base()); }
  std::atomic<uint64_t>* ring() const {
    return reinterpret_cast<std::atomic<uint64_t>*>(map_.base() + kRingOffset);
  }
  std::atomic<uint64_t>* pins() const {
    return reinterpret_cast<std::atomic<uint64_t>*>(map_.base() + kPinsOffset);
  }
  Mapping map_;
};

// The store's view of one client's pin page: it made it and reads it.
class PinPageStore : private PinPageMap {
 public:
  // A fresh (zeroed) page, sealed against resizing (a client that shrank it
  // would make the store's reads fault).
  static Result<PinPageStore> Create();
  // The descriptor to pass to the client; the page stays mapped here.
  UniqueFd TakeFd() { return std::move(fd_); }

  // Calls fn(token) for every pin standing now (seq_cst loads, after the
  // seq_cst load of the high-water mark).
  template <typename Fn>
  void ScanPins(Fn&& fn) const {
    uint64_t hw = header()->high_water.load(std::memory_order_seq_cst);
    if (hw > kPinSlots) hw = kPinSlots;  // the client's word, not trusted
    for (uint64_t k = 0; k < hw; k++) {
      uint64_t t = pins()[k].load(std::memory_order_seq_cst);
      if (t != 0) fn(t);
    }
  }
  // Calls fn(token) for the gets recorded since the last drain (at most the
  // ring's size: older ones were overwritten).
  template <typename Fn>
  void DrainRing(Fn&& fn) {
    uint64_t head = header()->ring_head.load(std::memory_order_acquire);
    if (head - ring_tail_ > kRingSlots) ring_tail_ = head - kRingSlots;  // also a lying head
    for (; ring_tail_ != head; ring_tail_++)
      fn(ring()[ring_tail_ % kRingSlots].load(std::memory_order_relaxed));
  }
  void Revoke() { header()->revoked.store(1, std::memory_order_seq_cst); }
  uint64_t gets() const { return header()->gets.load(std::memory_order_relaxed); }
  uint64_t contains() const { return header()->contains.load(std::memory_order_relaxed); }

 private:
  PinPageStore(UniqueFd fd, Mapping map) : PinPageMap(std::move(map)), fd_(std::move(fd)) {}
  UniqueFd fd_;
  uint64_t ring_tail_ = 0;
};

// Counts the forks of this process: a child sees a number its parent did
// not, and leaves the parent's pin page (not mapped in it) alone.
uint64_t ForkEpoch();

// The client's side of its pin page. Thread-safe.
class PinPageClient : private PinPageMap {
 public:
  // Maps the page the store passed (MADV_DONTFORK: a forked child has no
  // mapping of it; see ForkEpoch).
  static Result<std::unique_ptr<PinPageClient>> Open(int fd);
  PinPageClient(const PinPageClient&) = delete;
  PinPageClient& operator=(const PinPageClient&) = delete;

  // A free pin slot, or -1 if all are in use.
  int Acquire();
  // Publishes `token` in slot k (seq_cst, after raising the high-water
  // mark), then says whether the store revoked the page (seq_cst).
  bool Pin(int k, uint64_t token);
  // Clears slot k (seq_cst) and returns it to the free list.
  void Unpin(int k);
  // A get that succeeded: counted, and recorded in the ring for the LRU.
  void RecordGet(uint64_t token);
  void RecordContains() { header()->contains.fetch_add(1, std::memory_order_relaxed); }

 private:
  explicit PinPageClient(Mapping map) : PinPageMap(std::move(map)) {}
  std::mutex mu_;
  std::vector<int> free_;  // slots below used_ that are free
  int used_ = 0;           // slots ever handed out (the high-water mark)
};

}  // namespace plasmon::shm
