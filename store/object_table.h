// The object table: every object the store holds, its state, its place in the
// arena, its reference count, and the memory it owns.
//
// It knows nothing of sockets or sessions: callers name clients by a number.
// That keeps the lookup structure and the reference counting apart from the
// I/O, so that a later shared-memory fast path can publish them.
//
// Not thread-safe: the store's event loop owns it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/allocator.h"
#include "plasmon/status.h"
#include "plasmon/types.h"
#include "store/eviction_policy.h"

namespace plasmon {

struct ObjectEntry {
  ObjectID id;
  ObjectState state = ObjectState::kCreated;
  uint64_t offset = 0;
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  uint32_t creator = 0;        // client that created it
  uint32_t quota_owner = 0;    // the client whose quota it counts against; 0: shared
  uint64_t ref_count = 0;      // references held by all clients (64 bits: never wraps)
  bool delete_pending = false; // deleted while referenced: goes at ref_count 0
  bool digest_valid = false;
  uint64_t digest = 0;
  int64_t create_time_us = 0;
  int64_t last_access_us = 0;
  int64_t seal_time_us = 0;
  bool in_lru = false;
  LruPolicy::Handle lru;
  // The shared index (PinGate): where clients find it, if published.
  int64_t index_slot = -1;
  uint64_t index_gen = 0;
  bool index_unpublished = false;  // sealed and visible, but its probe window was full
  // Held by clients' pins (the last scan saw one): out of the LRU, or, if
  // delete_pending, not freed, until a scan finds none.
  bool pin_held = false;
  uint32_t pins_seen = 0;  // pins the last scan found (shown with ref_count in List)

  uint64_t total_size() const { return data_size + metadata_size; }
  bool visible() const { return state == ObjectState::kSealed && !delete_pending; }
  ObjectInfo Info() const;
};

// What the table tells its owner about objects that become visible or go away.
class TableListener {
 public:
  virtual ~TableListener() = default;
  virtual void OnSealed(const ObjectEntry& e) = 0;
  // The object is gone; `kind` is kDeleted or kEvicted.
  virtual void OnRemoved(const ObjectEntry& e, Notification::Kind kind) = 0;
};

// The shared index's side of the table (store/fast_path.h): clients find
// sealed objects there and pin them in their own pages, without the table's
// references. Before the table frees an object's memory it hides the object
// (no new pin validates) and then asks whether a pin stands: the protocol of
// docs/FAST_PATH.md.
class PinGate {
 public:
  virtual ~PinGate() = default;
  virtual void Publish(ObjectEntry* e) = 0;        // sealed: clients may find and pin it
  virtual void Hide(ObjectEntry* e) = 0;           // invisible: no new pin validates (GOING)
  virtual void Unhide(ObjectEntry* e) = 0;         // visible again: an eviction found it pinned
  virtual bool Pinned(const ObjectEntry& e) = 0;   // a pin of it stands (scans every page)
  virtual void Unpublish(ObjectEntry* e) = 0;      // its memory is freed next: the slot goes
  // One scan: the entries that pins name now, and those that fast-path gets
  // used since the last call (the LRU's accesses).
  virtual void Collect(std::vector<ObjectEntry*>* pinned, std::vector<ObjectEntry*>* used) = 0;
};

class ObjectTable {
 public:
  // Objects up to this size get their digest at seal (about 4 us); larger
  // ones when first needed. Hashing runs at about 16 GB/s here and on the
  // store's only thread: 1 MiB would add 65-250 us to every seal and stall
  // other clients meanwhile.
  static constexpr uint64_t kDigestAtSealMax = 64u << 10;

  ObjectTable(uint8_t* arena_base, uint64_t capacity, TableListener* listener);
  ~ObjectTable();

  // Allocates an unsealed object, evicting LRU objects if needed, and only
  // if evicting makes room: a Create that would not fit even after evicting
  // everything evictable (its bytes, or one range of them: the allocator's
  // fragmentation counts) fails at once with OutOfMemory and evicts nothing.
  Result<ObjectEntry*> Create(const ObjectID& id, uint64_t data_size, uint64_t metadata_size,
                              uint32_t creator);
  // Leases (the fast path's creates, docs/FAST_PATH.md): `bytes` of arena
  // space for `client` to place small objects in itself, with no round trip
  // until their seal. One lease per client: a new one returns what is left
  // of the old one. Made room for as a Create is (evicting); refused for a
  // client with a quota. Its bytes count as used until returned.
  Result<uint64_t> Lease(uint32_t client, uint64_t bytes);
  // Returns what is left of the client's lease.
  void EndLease(uint32_t client);
  // An object the client placed in its lease at `offset`, in a part no
  // other object took. InvalidArgument otherwise; ObjectExists as Create.
  // Seal it next.
  Result<ObjectEntry*> CreateLeased(const ObjectID& id, uint64_t offset, uint64_t data_size,
                                    uint64_t metadata_size, uint32_t client);
  // Seals an object `client` created. The object becomes visible. A digest
  // the creator set on the entry beforehand (a fetch that verified it) is
  // kept, not recomputed.
  Status Seal(const ObjectID& id, uint32_t client);
  // Drops an unsealed object `client` created and frees its memory.
  Status Abort(const ObjectID& id, uint32_t client);

  // nullptr if absent.
  ObjectEntry* Find(const ObjectID& id);

  // Takes a reference: the object will not be evicted until released.
  void AddRef(ObjectEntry* e);
  // Drops `count` references (at most as many as it has). May remove the
  // object (a deferred delete): `e` must not be used afterwards.
  void Release(ObjectEntry* e, uint64_t count = 1);

  // kOk: deleted now; kObjectInUse: referenced, deleted at the last release;
  // kObjectNotFound; kObjectNotSealed: still being created (refused).
  StatusCode Delete(const ObjectID& id);

  // Evicts unreferenced sealed objects, oldest first, until at least `bytes`
  // were freed or none is left. Returns (bytes, count) evicted.
  std::pair<uint64_t, uint64_t> Evict(uint64_t bytes);

  // Objects go through `gate` (null: no shared index) from now on.
  void SetPinGate(PinGate* gate) { gate_ = gate; }
  // Brings the table up to date with the clients' pins and fast-path gets:
  // objects that pins hold leave the LRU, those no pin holds any more return
  // to it (or, deleted, are freed), recent gets count as accesses. The store
  // calls it when a client says it released a pin of a going object, when a
  // client's pins are dropped, and the table before it evicts.
  void SyncPins();
  // Objects held by pins only (out of the LRU, or deleted and not freed).
  size_t pin_held_count() const { return pin_held_.size(); }

  // Computes the digest now if it was deferred.
  uint64_t EnsureDigest(ObjectEntry* e);

  // Marks a sealed object as just used: last in line for eviction.
  // kOk; kObjectNotFound (absent or being deleted); kObjectNotSealed.
  StatusCode Refresh(const ObjectID& id);

  // Per-client memory quotas (Arrow Plasma's SetClientOptions). A client
  // with a quota has that many bytes reserved for the objects it creates:
  // they count against its quota, not against the shared rest of the store,
  // and when it needs room it evicts its own objects, least recently used
  // first, never other clients'. A client that creates and holds objects can
  // then fill its quota and no more. Clients without a quota share what the
  // quotas leave (capacity minus their sum), evicting among themselves.
  // InvalidArgument if the client has a quota already, or if `bytes` is 0 or
  // more than what is not reserved yet.
  Status SetQuota(uint32_t client, uint64_t bytes);
  // The client is gone: its quota ends and its objects join the shared part.
  void DropClient(uint32_t client);
  uint64_t QuotaOf(uint32_t client) const;

  // Up to `max` objects with IDs greater than `cursor` (all if !has_cursor),
  // in ID order; *more says whether any remain after them.
  std::vector<ObjectInfo> List(bool has_cursor, const ObjectID& cursor, uint32_t max,
                               bool* more) const;

  StoreStats Stats() const;
  // Since start, for --metrics (store/metrics.h).
  struct Counters {
    uint64_t creates = 0, seals = 0, deletes = 0, deleted_bytes = 0;
  };
  const Counters& counters() const { return counters_; }
  // Used bytes that eviction cannot free: referenced, or not sealed yet.
  uint64_t pinned_bytes() const;
  uint8_t* arena_base() const { return base_; }
  const Allocator& allocator() const { return alloc_; }
  // How many times a Create walked the eviction lists to plan room (for
  // tests: impossible Creates must not each walk them).
  uint64_t plan_walks() const { return plan_walks_; }

 private:
  struct NoRoom {
    // At `generation`, a Create of `need` units or more found no range even
    // after planning to evict all it may (generation 0: nothing known).
    uint64_t generation = 0;
    uint64_t need = 0;
  };
  struct Quota {
    uint64_t limit = 0;
    uint64_t used = 0;  // allocation units of its objects
    LruPolicy lru;      // its evictable objects
    std::unordered_set<ObjectID, ObjectIDHash> members;
    mutable NoRoom no_room;
  };
  struct LeaseRange {
    std::map<uint64_t, uint64_t> unused;  // begin -> end: parts no object took
  };
  // An offset for `size` bytes in the creator's quota or the shared part,
  // evicting as needed (see Create); errors name object `id` (null: a lease).
  Result<uint64_t> Place(uint64_t size, uint32_t creator, const ObjectID* id);
  enum class Room { kFits, kQuotaFull, kNoRange };
  // Whether Create's evictions, in their order (LRU), would make room for
  // `need` allocation units in quota `q` (null: the shared part): exact,
  // with free ranges coalesced as they would be. Evicts nothing. O(1) when
  // free and evictable units together are too few, or when a walk at the
  // same generation found no range for as much or less; otherwise a walk.
  Room PlanRoom(const Quota* q, uint64_t need) const;
  Room WalkRoom(const Quota* q, uint64_t need) const;
  // The arena or an LRU changed in a way that may make room.
  void Changed() { generation_++; }
  void Remove(ObjectEntry* e, Notification::Kind kind);
  // A pin holds `e`: out of the LRU until a scan finds none.
  void HoldForPins(ObjectEntry* e);
  // A deleted object with no references left: freed unless a pin holds it.
  void RemoveUnlessPinned(ObjectEntry* e);
  // Whether `need` units fit in `q` (null: the shared part) without evicting.
  bool FitsNow(const Quota* q, uint64_t need) const;
  void MakeEvictable(ObjectEntry* e);
  void MakeUnevictable(ObjectEntry* e);
  void ComputeDigest(ObjectEntry* e);
  // The LRU `e` belongs in: its quota's, or the shared one.
  LruPolicy& LruOf(const ObjectEntry& e);
  // Evicts the oldest of `lru` until `fits()`; false if it ran out first.
  template <typename Fits>
  bool EvictUntil(LruPolicy* lru, Fits fits, uint64_t* freed, uint64_t* count);
  void Account(const ObjectEntry& e, bool add);

  uint8_t* base_;
  Allocator alloc_;
  TableListener* listener_;
  PinGate* gate_ = nullptr;
  std::unordered_set<ObjectID, ObjectIDHash> pin_held_;  // entries with pin_held
  std::unordered_map<ObjectID, ObjectEntry, ObjectIDHash> objects_;
  LruPolicy lru_;  // evictable objects of the shared part
  std::unordered_map<uint32_t, Quota> quotas_;
  std::unordered_map<uint32_t, LeaseRange> leases_;
  uint64_t reserved_ = 0;     // the quotas' limits together
  uint64_t shared_used_ = 0;  // allocation units of objects outside quotas
  uint64_t sealed_count_ = 0;
  uint64_t evictions_ = 0;
  uint64_t evicted_bytes_ = 0;
  Counters counters_;
  mutable uint64_t plan_walks_ = 0;
  uint64_t pinned_victims_ = 0;  // victims this Create found pinned (so PlanRoom was wrong)
  // Bumped on every allocation, free, LRU insert and quota change: a "no
  // room" verdict holds while it stays the same (removals from an LRU and
  // allocations only take room away).
  uint64_t generation_ = 1;
  mutable NoRoom no_room_;  // the shared part's
};

}  // namespace plasmon
