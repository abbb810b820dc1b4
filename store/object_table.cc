#include "store/object_table.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/clock.h"
#include "core/digest.h"
#include "core/size.h"

namespace plasmon {

ObjectInfo ObjectEntry::Info() const {
  ObjectInfo o;
  o.id = id;
  o.state = state;
  o.data_size = data_size;
  o.metadata_size = metadata_size;
  // Clients' pins count as references (as of the last SyncPins).
  o.ref_count = static_cast<uint32_t>(std::min<uint64_t>(ref_count + pins_seen, UINT32_MAX));
  o.digest_valid = digest_valid;
  o.digest = digest;
  o.create_time_us = create_time_us;
  o.last_access_us = last_access_us;
  o.seal_time_us = state == ObjectState::kSealed ? seal_time_us : 0;
  return o;
}

ObjectTable::ObjectTable(uint8_t* arena_base, uint64_t capacity, TableListener* listener)
    : base_(arena_base), alloc_(capacity), listener_(listener) {}

ObjectTable::~ObjectTable() = default;

Result<uint64_t> ObjectTable::Place(uint64_t size, uint32_t creator, const ObjectID* id) {
  // Named only in errors: a Create that fits builds no string.
  auto what = [id] { return id != nullptr ? "object " + id->Hex() : std::string("a lease"); };
  const uint64_t need = Allocator::RoundUp(size);
  auto quota = quotas_.find(creator);
  Quota* q = quota == quotas_.end() ? nullptr : &quota->second;
  const uint64_t shared = alloc_.capacity() - reserved_;
  if (q != nullptr && need > q->limit)
    return Status::OutOfMemory(what() + " of " + FormatSize(size) +
                               " is larger than this client's memory quota of " +
                               FormatSize(q->limit));
  if (q == nullptr && need > shared)
    return Status::OutOfMemory(what() + " of " + FormatSize(size) +
                               " is larger than the " + FormatSize(shared) +
                               " that clients' memory quotas leave to share");
  // What clients pinned through the shared index must not be chosen, and
  // what they got recently is not oldest: the LRU learns both first.
  if (gate_ != nullptr && !FitsNow(q, need)) SyncPins();
  // Evict only what makes room: if even evicting all that may go would not,
  // fail now and keep the cache.
  switch (PlanRoom(q, need)) {
    case Room::kFits:
      break;
    case Room::kQuotaFull:
      return Status::OutOfMemory("no room for " + what() + " of " + FormatSize(size) +
                                 " in this client's memory quota of " + FormatSize(q->limit) +
                                 ": its referenced or unsealed objects hold too much of it");
    case Room::kNoRange:
      return Status::OutOfMemory(
          "no room for " + what() + " of " + FormatSize(size) + ", even after evicting: " +
          FormatSize(alloc_.capacity() - alloc_.used()) + " free (at most " +
          FormatSize(alloc_.largest_free()) +
          " in one piece), the rest held by referenced or unsealed objects" +
          (reserved_ > 0 ? " or reserved by clients' memory quotas" : ""));
  }
  uint64_t freed = 0, count = 0;
  // Room in the accounts first: within the creator's quota from its own
  // objects only, or within the shared part.
  if (q != nullptr)
    EvictUntil(&q->lru, [&] { return q->used + need <= q->limit; }, &freed, &count);
  else
    EvictUntil(&lru_, [&] { return shared_used_ + need <= shared; }, &freed, &count);
  // Then a free range: the quota's own objects first, then the shared ones
  // (a quota reserves bytes, not addresses).
  std::optional<uint64_t> offset;
  auto allocated = [&] { return (offset = alloc_.Allocate(size)).has_value(); };
  if (q == nullptr || !EvictUntil(&q->lru, allocated, &freed, &count))
    EvictUntil(&lru_, allocated, &freed, &count);
  if (count > 0) {
    spdlog::debug("evicted {} objects ({}) for {}", count, FormatSize(freed), what());
  }
  if (!offset) {  // PlanRoom said it would fit, unless a victim was pinned meanwhile
    if (pinned_victims_ > 0) {
      pinned_victims_ = 0;
      return Status::OutOfMemory("no room for " + what() + " of " + FormatSize(size) +
                                 ": objects clients hold through the shared index fill the rest");
    }
    spdlog::error("{}: evicted {} objects and still found no room", what(), count);
    return Status::OutOfMemory("no room for " + what() + " of " + FormatSize(size));
  }
  pinned_victims_ = 0;
  return *offset;
}

Result<ObjectEntry*> ObjectTable::Create(const ObjectID& id, uint64_t data_size,
                                         uint64_t metadata_size, uint32_t creator) {
  auto it = objects_.find(id);
  if (it != objects_.end()) {
    return Status::ObjectExists("object " + id.Hex() +
                                (it->second.delete_pending ? " is being deleted"
                                                           : " already exists"));
  }
  if (data_size > alloc_.capacity() || metadata_size > alloc_.capacity() - data_size) {
    return Status::OutOfMemory("object " + id.Hex() + " of " +
                               FormatSize(data_size + metadata_size) +
                               " is larger than the store's capacity of " +
                               FormatSize(alloc_.capacity()));
  }
  const uint64_t size = data_size + metadata_size;
  Result<uint64_t> offset = Place(size, creator, &id);
  if (!offset.ok()) return offset.status();
  auto quota = quotas_.find(creator);
  ObjectEntry& e = objects_[id];
  e.id = id;
  e.offset = *offset;
  e.data_size = data_size;
  e.metadata_size = metadata_size;
  e.creator = creator;
  e.create_time_us = e.last_access_us = WallMicros();
  if (quota != quotas_.end()) {
    e.quota_owner = creator;
    quota->second.members.insert(id);
  }
  Account(e, true);
  Changed();
  counters_.creates++;
  return &e;
}

Result<uint64_t> ObjectTable::Lease(uint32_t client, uint64_t bytes) {
  EndLease(client);
  if (quotas_.count(client) > 0)
    return Status::InvalidArgument("a client with a memory quota creates its objects through the "
                                   "store (no leases)");
  const uint64_t units = Allocator::RoundUp(bytes);
  Result<uint64_t> offset = Place(units, client, nullptr);
  if (!offset.ok()) return offset.status();
  leases_[client].unused[*offset] = *offset + units;
  shared_used_ += units;  // the shared part's until carved into objects or returned
  Changed();
  return *offset;
}

void ObjectTable::EndLease(uint32_t client) {
  auto it = leases_.find(client);
  if (it == leases_.end()) return;
  for (const auto& [begin, end] : it->second.unused) {
    alloc_.Free(begin, end - begin);
    shared_used_ -= end - begin;
  }
  leases_.erase(it);
  Changed();
}

Result<ObjectEntry*> ObjectTable::CreateLeased(const ObjectID& id, uint64_t offset,
                                               uint64_t data_size, uint64_t metadata_size,
                                               uint32_t client) {
  auto lease = leases_.find(client);
  if (lease == leases_.end())
    return Status::InvalidArgument("this client holds no lease of arena space");
  // Inside a part of the lease no object took yet, in any order: the store
  // never trusts the client's placement, and two objects never share a byte.
  std::map<uint64_t, uint64_t>& unused = lease->second.unused;
  auto in = unused.upper_bound(offset);
  const bool inside = in != unused.begin() && (--in)->first <= offset && offset < in->second;
  const uint64_t room = inside ? in->second - offset : 0;
  if (offset % Allocator::kAlignment != 0 || room == 0 || data_size > room ||
      metadata_size > room - data_size || Allocator::RoundUp(data_size + metadata_size) > room)
    return Status::InvalidArgument("object " + id.Hex() + " does not lie in an unused part of "
                                   "this client's lease");
  auto it = objects_.find(id);
  if (it != objects_.end())
    return Status::ObjectExists("object " + id.Hex() +
                                (it->second.delete_pending ? " is being deleted"
                                                           : " already exists"));
  const uint64_t units = Allocator::RoundUp(data_size + metadata_size);
  const uint64_t begin = in->first, end = in->second;
  unused.erase(in);
  if (begin < offset) unused[begin] = offset;
  if (offset + units < end) unused[offset + units] = end;
  shared_used_ -= units;  // from the lease to the object (Account adds it back)
  ObjectEntry& e = objects_[id];
  e.id = id;
  e.offset = offset;
  e.data_size = data_size;
  e.metadata_size = metadata_size;
  e.creator = client;
  e.create_time_us = e.last_access_us = WallMicros();
  Account(e, true);
  counters_.creates++;
  return &e;
}

Status ObjectTable::Seal(const ObjectID& id, uint32_t client) {
  ObjectEntry* e = Find(id);
  if (e == nullptr) return Status::ObjectNotFound("cannot seal " + id.Hex() + ": no such object");
  if (e->state == ObjectState::kSealed)
    return Status::AlreadySealed("object " + id.Hex() + " is already sealed");
  if (e->creator != client)
    return Status::InvalidArgument("object " + id.Hex() + " was created by another client");
  e->state = ObjectState::kSealed;
  e->seal_time_us = e->last_access_us = WallMicros();
  if (!e->digest_valid && e->total_size() <= kDigestAtSealMax) ComputeDigest(e);
  sealed_count_++;
  counters_.seals++;
  if (gate_ != nullptr) gate_->Publish(e);  // before the Seal's reply: visible to all when it returns
  if (e->ref_count == 0) MakeEvictable(e);
  listener_->OnSealed(*e);
  return Status::OK();
}

Status ObjectTable::Abort(const ObjectID& id, uint32_t client) {
  ObjectEntry* e = Find(id);
  if (e == nullptr) return Status::ObjectNotFound("cannot abort " + id.Hex() + ": no such object");
  if (e->state == ObjectState::kSealed)
    return Status::AlreadySealed("cannot abort " + id.Hex() + ": it is sealed");
  if (e->creator != client)
    return Status::InvalidArgument("object " + id.Hex() + " was created by another client");
  alloc_.Free(e->offset, e->total_size());
  Account(*e, false);
  Changed();
  ObjectID key = id;  // `id` may alias the entry being erased
  objects_.erase(key);
  return Status::OK();
}

ObjectEntry* ObjectTable::Find(const ObjectID& id) {
  auto it = objects_.find(id);
  return it == objects_.end() ? nullptr : &it->second;
}

void ObjectTable::AddRef(ObjectEntry* e) {
  if (e->ref_count++ == 0) MakeUnevictable(e);
  e->last_access_us = WallMicros();
}

void ObjectTable::Release(ObjectEntry* e, uint64_t count) {
  if (count == 0) return;
  if (count > e->ref_count) {
    spdlog::error("release of {} references to {}, which has {}", count, e->id.Hex(), e->ref_count);
    count = e->ref_count;
  }
  e->ref_count -= count;
  if (e->ref_count > 0) return;
  if (e->delete_pending) {
    // Scanned again even if a pin held it at the last scan: that pin may
    // have been cleared while the object was still sealed (no nudge then).
    RemoveUnlessPinned(e);
  } else if (e->state == ObjectState::kSealed) {
    MakeEvictable(e);
  }
}

StatusCode ObjectTable::Delete(const ObjectID& id) {
  ObjectEntry* e = Find(id);
  if (e == nullptr || e->delete_pending) return StatusCode::kObjectNotFound;
  if (e->state != ObjectState::kSealed) return StatusCode::kObjectNotSealed;
  if (gate_ != nullptr) gate_->Hide(e);  // invisible now, to the fast path too
  if (e->ref_count > 0) {
    e->delete_pending = true;
    MakeUnevictable(e);
    return StatusCode::kObjectInUse;
  }
  if (gate_ != nullptr && gate_->Pinned(*e)) {
    e->delete_pending = true;
    HoldForPins(e);
    return StatusCode::kObjectInUse;
  }
  Remove(e, Notification::Kind::kDeleted);
  return StatusCode::kOk;
}

void ObjectTable::RemoveUnlessPinned(ObjectEntry* e) {
  // Hidden at its Delete: a scan now sees every pin that could still validate.
  if (gate_ != nullptr && gate_->Pinned(*e)) {
    HoldForPins(e);
    return;
  }
  Remove(e, Notification::Kind::kDeleted);
}

void ObjectTable::HoldForPins(ObjectEntry* e) {
  MakeUnevictable(e);
  e->pin_held = true;
  pin_held_.insert(e->id);
}

bool ObjectTable::FitsNow(const Quota* q, uint64_t need) const {
  const uint64_t used = q != nullptr ? q->used : shared_used_;
  const uint64_t limit = q != nullptr ? q->limit : alloc_.capacity() - reserved_;
  return used + need <= limit && alloc_.largest_free() >= need;
}

void ObjectTable::SyncPins() {
  if (gate_ == nullptr) return;
  std::vector<ObjectEntry*> pinned, used;
  gate_->Collect(&pinned, &used);
  const int64_t now = WallMicros();
  for (ObjectEntry* e : used) {
    e->last_access_us = now;
    if (e->in_lru) {  // to the young end, as a socket Get's release puts it
      MakeUnevictable(e);
      MakeEvictable(e);
    }
  }
  for (const ObjectID& id : pin_held_) objects_.at(id).pins_seen = 0;
  std::unordered_set<ObjectEntry*> held;
  for (ObjectEntry* e : pinned) {
    held.insert(e);
    if (!e->pin_held && e->state == ObjectState::kSealed) HoldForPins(e);
    if (e->pin_held) e->pins_seen++;
  }
  // Those no pin holds any more. (A deleted one was hidden at its Delete,
  // before this scan: no pin of it can appear after it.)
  std::vector<ObjectEntry*> released;
  for (const ObjectID& id : pin_held_) {
    ObjectEntry* e = Find(id);
    if (e != nullptr && held.count(e) == 0) released.push_back(e);
  }
  for (ObjectEntry* e : released) {
    pin_held_.erase(e->id);
    e->pin_held = false;
    e->pins_seen = 0;
    if (e->ref_count > 0) continue;  // the last Release decides
    if (e->delete_pending) {
      Remove(e, Notification::Kind::kDeleted);
    } else {
      MakeEvictable(e);
    }
  }
}

std::pair<uint64_t, uint64_t> ObjectTable::Evict(uint64_t bytes) {
  // The shared part first, then the quotas.
  uint64_t freed = 0, count = 0;
  auto enough = [&] { return freed >= bytes; };
  SyncPins();
  if (!EvictUntil(&lru_, enough, &freed, &count)) {
    for (auto& [client, q] : quotas_)
      if (EvictUntil(&q.lru, enough, &freed, &count)) break;
  }
  return {freed, count};
}

ObjectTable::Room ObjectTable::PlanRoom(const Quota* q, uint64_t need) const {
  // A quota's account: evicting all of its evictable objects frees their units.
  if (q != nullptr && q->used - q->lru.units() + need > q->limit) return Room::kQuotaFull;
  // A range: no larger than the free units and all that may be evicted.
  const uint64_t evictable = (q != nullptr ? q->lru.units() : 0) + lru_.units();
  if (alloc_.capacity() - alloc_.used() + evictable < need) return Room::kNoRange;
  // Repeated Creates that cannot fit (a client's retry loop) reuse the
  // verdict of the last walk until something frees or may be evicted.
  NoRoom& known = q != nullptr ? q->no_room : no_room_;
  if (known.generation == generation_ && need >= known.need) return Room::kNoRange;
  const Room room = WalkRoom(q, need);
  if (room == Room::kNoRange) known = NoRoom{generation_, need};
  return room;
}

ObjectTable::Room ObjectTable::WalkRoom(const Quota* q, uint64_t need) const {
  // Walks the LRU lists as Create's eviction would, freeing nothing.
  plan_walks_++;
  Allocator::FreePlan plan(alloc_);
  auto plan_free = [&](const ObjectID& id) {
    const ObjectEntry& v = objects_.at(id);
    plan.Free(v.offset, v.total_size());
    return Allocator::RoundUp(v.total_size());
  };
  const LruPolicy& first = q != nullptr ? q->lru : lru_;
  auto it = first.begin();
  uint64_t used = q != nullptr ? q->used : shared_used_;
  const uint64_t limit = q != nullptr ? q->limit : alloc_.capacity() - reserved_;
  while (used + need > limit && it != first.end()) used -= plan_free(*it++);
  // Only a quota refuses on its account; the shared part goes on to look
  // for a range, as Create does.
  if (q != nullptr && used + need > limit) return Room::kQuotaFull;
  while (plan.largest() < need && it != first.end()) plan_free(*it++);
  if (q != nullptr)
    for (auto s = lru_.begin(); plan.largest() < need && s != lru_.end(); ++s) plan_free(*s);
  return plan.largest() >= need ? Room::kFits : Room::kNoRange;
}

template <typename Fits>
bool ObjectTable::EvictUntil(LruPolicy* lru, Fits fits, uint64_t* freed, uint64_t* count) {
  while (!fits()) {
    if (lru->empty()) return false;
    ObjectEntry* victim = &objects_.at(lru->Oldest());
    if (gate_ != nullptr) {
      // No new pin validates once it is hidden; a pin that stands keeps it.
      gate_->Hide(victim);
      if (gate_->Pinned(*victim)) {
        gate_->Unhide(victim);
        HoldForPins(victim);
        pinned_victims_++;
        continue;
      }
    }
    *freed += Allocator::RoundUp(victim->total_size());
    ++*count;
    Remove(victim, Notification::Kind::kEvicted);
  }
  return true;
}

void ObjectTable::Account(const ObjectEntry& e, bool add) {
  const uint64_t units = Allocator::RoundUp(e.total_size());
  uint64_t* used = &shared_used_;
  if (e.quota_owner != 0) {
    auto q = quotas_.find(e.quota_owner);
    if (q != quotas_.end()) {
      used = &q->second.used;
      if (!add) q->second.members.erase(e.id);
    }
  }
  *used = add ? *used + units : *used - units;
}

LruPolicy& ObjectTable::LruOf(const ObjectEntry& e) {
  if (e.quota_owner != 0) {
    auto q = quotas_.find(e.quota_owner);
    if (q != quotas_.end()) return q->second.lru;
  }
  return lru_;
}

StatusCode ObjectTable::Refresh(const ObjectID& id) {
  ObjectEntry* e = Find(id);
  if (e == nullptr || e->delete_pending) return StatusCode::kObjectNotFound;
  if (e->state != ObjectState::kSealed) return StatusCode::kObjectNotSealed;
  e->last_access_us = WallMicros();
  if (e->in_lru) {  // referenced objects are not evictable anyway
    MakeUnevictable(e);
    MakeEvictable(e);  // at the young end
  }
  return StatusCode::kOk;
}

Status ObjectTable::SetQuota(uint32_t client, uint64_t bytes) {
  if (quotas_.count(client) > 0)
    return Status::InvalidArgument("this client's memory quota is set already (" +
                                   FormatSize(quotas_.at(client).limit) + ")");
  if (bytes == 0) return Status::InvalidArgument("a memory quota must be more than 0 bytes");
  // Its objects already created stay in the shared part: count what that
  // part really holds against what would be left to it.
  const uint64_t unreserved = alloc_.capacity() - reserved_;
  if (bytes > unreserved)
    return Status::InvalidArgument("a memory quota of " + FormatSize(bytes) + " is more than the " +
                                   FormatSize(unreserved) + " not reserved by other clients' quotas");
  Quota& q = quotas_[client];
  q.limit = bytes;
  reserved_ += bytes;
  Changed();
  return Status::OK();
}

uint64_t ObjectTable::QuotaOf(uint32_t client) const {
  auto q = quotas_.find(client);
  return q == quotas_.end() ? 0 : q->second.limit;
}

void ObjectTable::DropClient(uint32_t client) {
  EndLease(client);
  auto it = quotas_.find(client);
  if (it == quotas_.end()) return;
  Quota q = std::move(it->second);
  quotas_.erase(it);
  reserved_ -= q.limit;
  Changed();
  // Its evictable objects join the shared LRU as its youngest, in the order
  // they had among themselves.
  std::vector<ObjectID> order;
  while (!q.lru.empty()) {
    order.push_back(q.lru.Oldest());
    const ObjectEntry& e = objects_.at(order.back());
    q.lru.Remove(e.lru, Allocator::RoundUp(e.total_size()));
  }
  for (const ObjectID& id : q.members) {
    ObjectEntry& e = objects_.at(id);
    e.quota_owner = 0;
    e.in_lru = false;
  }
  shared_used_ += q.used;
  for (const ObjectID& id : order) MakeEvictable(&objects_.at(id));
}

uint64_t ObjectTable::EnsureDigest(ObjectEntry* e) {
  if (!e->digest_valid) ComputeDigest(e);
  return e->digest;
}

void ObjectTable::ComputeDigest(ObjectEntry* e) {
  const uint8_t* p = base_ + e->offset;
  e->digest = ObjectDigest(p, e->data_size, p + e->data_size, e->metadata_size);
  e->digest_valid = true;
}

void ObjectTable::Remove(ObjectEntry* e, Notification::Kind kind) {
  MakeUnevictable(e);
  if (e->state == ObjectState::kSealed) sealed_count_--;
  if (kind == Notification::Kind::kEvicted) {
    evictions_++;
    evicted_bytes_ += Allocator::RoundUp(e->total_size());
  } else {
    counters_.deletes++;
    counters_.deleted_bytes += Allocator::RoundUp(e->total_size());
  }
  if (gate_ != nullptr) gate_->Unpublish(e);  // hidden, and no pin stood at the scan since
  if (e->pin_held) pin_held_.erase(e->id);
  alloc_.Free(e->offset, e->total_size());
  Account(*e, false);
  Changed();
  listener_->OnRemoved(*e, kind);
  ObjectID id = e->id;  // erase must not read the key it is destroying
  objects_.erase(id);
}

void ObjectTable::MakeEvictable(ObjectEntry* e) {
  if (e->in_lru || e->delete_pending || e->pin_held) return;
  e->lru = LruOf(*e).Add(e->id, Allocator::RoundUp(e->total_size()));
  e->in_lru = true;
  Changed();
}

void ObjectTable::MakeUnevictable(ObjectEntry* e) {
  if (!e->in_lru) return;
  LruOf(*e).Remove(e->lru, Allocator::RoundUp(e->total_size()));
  e->in_lru = false;
}

std::vector<ObjectInfo> ObjectTable::List(bool has_cursor, const ObjectID& cursor, uint32_t max,
                                          bool* more) const {
  // Selects the `max` smallest IDs above the cursor in O(n): paging through a
  // million objects must not sort them all on every page.
  std::vector<const ObjectEntry*> rows;
  rows.reserve(has_cursor ? objects_.size() / 2 : objects_.size());
  for (const auto& [id, e] : objects_) {
    if (!has_cursor || cursor < id) rows.push_back(&e);
  }
  auto by_id = [](const ObjectEntry* a, const ObjectEntry* b) { return a->id < b->id; };
  *more = rows.size() > max;
  if (*more) {
    std::nth_element(rows.begin(), rows.begin() + max, rows.end(), by_id);
    rows.resize(max);
  }
  std::sort(rows.begin(), rows.end(), by_id);
  std::vector<ObjectInfo> out;
  out.reserve(rows.size());
  for (const ObjectEntry* e : rows) out.push_back(e->Info());
  return out;
}

uint64_t ObjectTable::pinned_bytes() const {
  uint64_t evictable = lru_.units();
  for (const auto& [client, q] : quotas_) evictable += q.lru.units();
  return alloc_.used() - evictable;
}

StoreStats ObjectTable::Stats() const {
  StoreStats s;
  s.capacity = alloc_.capacity();
  s.used = alloc_.used();
  s.object_count = objects_.size();
  s.sealed_count = sealed_count_;
  s.evictions = evictions_;
  s.evicted_bytes = evicted_bytes_;
  return s;
}

}  // namespace plasmon
