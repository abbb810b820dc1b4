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
  o.ref_count = static_cast<uint32_t>(std::min<uint64_t>(ref_count, UINT32_MAX));  // saturates
  o.digest_valid = digest_valid;
  o.digest = digest;
  o.create_time_us = create_time_us;
  o.last_access_us = last_access_us;
  return o;
}

ObjectTable::ObjectTable(uint8_t* arena_base, uint64_t capacity, TableListener* listener)
    : base_(arena_base), alloc_(capacity), listener_(listener) {}

ObjectTable::~ObjectTable() = default;

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
  uint64_t size = data_size + metadata_size;
  std::optional<uint64_t> offset = alloc_.Allocate(size);
  uint64_t freed = 0, count = 0;
  while (!offset && !lru_.empty()) {
    ObjectEntry* victim = &objects_.at(lru_.Oldest());
    freed += Allocator::RoundUp(victim->total_size());
    count++;
    Remove(victim, Notification::Kind::kEvicted);
    offset = alloc_.Allocate(size);
  }
  if (count > 0) {
    spdlog::debug("evicted {} objects ({}) for create of {}", count, FormatSize(freed), id.Hex());
  }
  if (!offset) {
    return Status::OutOfMemory("no room for object " + id.Hex() + " of " + FormatSize(size) +
                               ": " + FormatSize(alloc_.capacity() - alloc_.used()) +
                               " free, the rest held by referenced or unsealed objects");
  }
  ObjectEntry& e = objects_[id];
  e.id = id;
  e.offset = *offset;
  e.data_size = data_size;
  e.metadata_size = metadata_size;
  e.creator = creator;
  e.create_time_us = e.last_access_us = WallMicros();
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
  e->last_access_us = WallMicros();
  if (!e->digest_valid && e->total_size() <= kDigestAtSealMax) ComputeDigest(e);
  sealed_count_++;
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
    Remove(e, Notification::Kind::kDeleted);
  } else if (e->state == ObjectState::kSealed) {
    MakeEvictable(e);
  }
}

StatusCode ObjectTable::Delete(const ObjectID& id) {
  ObjectEntry* e = Find(id);
  if (e == nullptr || e->delete_pending) return StatusCode::kObjectNotFound;
  if (e->state != ObjectState::kSealed) return StatusCode::kObjectNotSealed;
  if (e->ref_count > 0) {
    e->delete_pending = true;
    return StatusCode::kObjectInUse;
  }
  Remove(e, Notification::Kind::kDeleted);
  return StatusCode::kOk;
}

std::pair<uint64_t, uint64_t> ObjectTable::Evict(uint64_t bytes) {
  uint64_t freed = 0, count = 0;
  while (freed < bytes && !lru_.empty()) {
    ObjectEntry* victim = &objects_.at(lru_.Oldest());
    freed += Allocator::RoundUp(victim->total_size());
    count++;
    Remove(victim, Notification::Kind::kEvicted);
  }
  return {freed, count};
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
  }
  alloc_.Free(e->offset, e->total_size());
  listener_->OnRemoved(*e, kind);
  ObjectID id = e->id;  // erase must not read the key it is destroying
  objects_.erase(id);
}

void ObjectTable::MakeEvictable(ObjectEntry* e) {
  if (e->in_lru || e->delete_pending) return;
  e->lru = lru_.Add(e->id);
  e->in_lru = true;
}

void ObjectTable::MakeUnevictable(ObjectEntry* e) {
  if (!e->in_lru) return;
  lru_.Remove(e->lru);
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
