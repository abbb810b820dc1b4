#include "core/protocol.h"

#include <algorithm>

namespace plasmon::protocol {

void EncodeHeader(const FrameHeader& h, char* out) {
  std::memcpy(out, &h.body_len, 4);
  std::memcpy(out + 4, &h.type, 2);
  std::memcpy(out + 6, &h.flags, 2);
  std::memcpy(out + 8, &h.request_id, 8);
}

FrameHeader DecodeHeader(const char* in) {
  FrameHeader h;
  std::memcpy(&h.body_len, in, 4);
  std::memcpy(&h.type, in + 4, 2);
  std::memcpy(&h.flags, in + 6, 2);
  std::memcpy(&h.request_id, in + 8, 8);
  return h;
}

FrameBuilder::FrameBuilder(uint16_t type, uint64_t request_id) : enc_(&buf_) {
  buf_.resize(kHeaderSize);
  FrameHeader h;
  h.type = type;
  h.request_id = request_id;
  EncodeHeader(h, buf_.data());
}

std::string FrameBuilder::Finish() && {
  uint32_t body_len = static_cast<uint32_t>(buf_.size() - kHeaderSize);
  std::memcpy(buf_.data(), &body_len, 4);
  return std::move(buf_);
}

void ObjectLocation::Encode(Encoder* e) const {
  e->PutU32(arena);
  e->PutU64(offset);
  e->PutU64(data_size);
  e->PutU64(metadata_size);
}
bool ObjectLocation::Decode(Decoder* d) {
  return d->GetU32(&arena) && d->GetU64(&offset) && d->GetU64(&data_size) &&
         d->GetU64(&metadata_size);
}

static bool ValidCode(uint8_t c) { return c <= static_cast<uint8_t>(StatusCode::kCorruption); }

void EncodeStatus(const Status& s, Encoder* e, uint32_t max_message) {
  e->PutU8(static_cast<uint8_t>(s.code()));
  std::string_view m = s.message();
  e->PutBytes(m.substr(0, max_message));
}
bool DecodeStatus(Decoder* d, Status* s, uint32_t max_message) {
  uint8_t code;
  std::string_view m;
  if (!d->GetU8(&code) || !ValidCode(code) || !d->GetBytes(&m, max_message)) return false;
  *s = code == 0 ? Status() : Status(static_cast<StatusCode>(code), std::string(m));
  return true;
}

void ConnectRequest::Encode(Encoder* e) const {
  e->PutU32(magic);
  e->PutU16(version);
  e->PutU32(pid);
  if (version >= 5) e->PutU32(flags);
}
bool ConnectRequest::Decode(Decoder* d) {
  if (!d->GetU32(&magic) || !d->GetU16(&version) || !d->GetU32(&pid)) return false;
  return version < 5 || d->GetU32(&flags);
}

void CreateRequest::Encode(Encoder* e) const {
  e->PutID(id);
  e->PutU64(data_size);
  e->PutU64(metadata_size);
}
bool CreateRequest::Decode(Decoder* d) {
  return d->GetID(&id) && d->GetU64(&data_size) && d->GetU64(&metadata_size) &&
         metadata_size <= kMaxMetadata;
}

void SealLeasedRequest::Encode(Encoder* e) const {
  e->PutID(id);
  e->PutU64(offset);
  e->PutU64(data_size);
  e->PutU64(metadata_size);
}
bool SealLeasedRequest::Decode(Decoder* d) {
  return d->GetID(&id) && d->GetU64(&offset) && d->GetU64(&data_size) &&
         d->GetU64(&metadata_size) && metadata_size <= kMaxMetadata;
}

void IdRequest::Encode(Encoder* e) const { e->PutID(id); }
bool IdRequest::Decode(Decoder* d) { return d->GetID(&id); }

void CreateAndSealRequest::Encode(Encoder* e) const {
  e->PutID(id);
  e->PutBytes(data);
  e->PutBytes(metadata);
}
bool CreateAndSealRequest::Decode(Decoder* d) {
  return d->GetID(&id) && d->GetBytes(&data, kMaxInlineObject) &&
         d->GetBytes(&metadata, kMaxInlineObject) &&
         data.size() + metadata.size() <= kMaxInlineObject;
}

void CreateAndSealBatchRequest::Encode(Encoder* e) const {
  e->PutU32(static_cast<uint32_t>(items.size()));
  for (const Item& it : items) {
    e->PutID(it.id);
    e->PutBytes(it.data);
    e->PutBytes(it.metadata);
  }
}
bool CreateAndSealBatchRequest::Decode(Decoder* d) {
  uint32_t n;
  // Each item takes at least its ID and two lengths.
  if (!d->GetU32(&n) || n > kMaxBatch || n * (ObjectID::kSize + 8ull) > d->remaining())
    return false;
  items.resize(n);
  uint64_t total = 0;
  for (Item& it : items) {
    if (!d->GetID(&it.id) || !d->GetBytes(&it.data, kMaxInlineObject) ||
        !d->GetBytes(&it.metadata, kMaxInlineObject))
      return false;
    total += it.data.size() + it.metadata.size();
    if (total > kMaxInlineObject) return false;
  }
  return true;
}

void SetOptionsRequest::Encode(Encoder* e) const { e->PutU64(memory_quota); }
bool SetOptionsRequest::Decode(Decoder* d) { return d->GetU64(&memory_quota); }

void DigestReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  e->PutU64(digest);
}
bool DigestReply::Decode(Decoder* d) { return DecodeStatus(d, &status) && d->GetU64(&digest); }

static void EncodeIds(const std::vector<ObjectID>& ids, Encoder* e) {
  e->PutU32(static_cast<uint32_t>(ids.size()));
  for (const ObjectID& id : ids) e->PutID(id);
}
static bool DecodeIds(Decoder* d, std::vector<ObjectID>* ids) {
  uint32_t n;
  if (!d->GetU32(&n) || n > kMaxBatch || n * ObjectID::kSize > d->remaining()) return false;
  ids->resize(n);
  for (ObjectID& id : *ids) {
    if (!d->GetID(&id)) return false;
  }
  return true;
}

void GetRequest::Encode(Encoder* e) const {
  e->PutI64(timeout_ms);
  EncodeIds(ids, e);
}
bool GetRequest::Decode(Decoder* d) {
  return d->GetI64(&timeout_ms) && timeout_ms >= -1 && DecodeIds(d, &ids);
}

void FetchRequest::Encode(Encoder* e) const {
  e->PutI64(timeout_ms);
  EncodeIds(ids, e);
  e->PutU8(flags);
}
bool FetchRequest::Decode(Decoder* d) {
  return d->GetI64(&timeout_ms) && timeout_ms >= -1 && DecodeIds(d, &ids) && d->GetU8(&flags) &&
         (flags & ~kFetchWantTiming) == 0;
}

void DeleteRequest::Encode(Encoder* e) const { EncodeIds(ids, e); }
bool DeleteRequest::Decode(Decoder* d) { return DecodeIds(d, &ids); }

void ListRequest::Encode(Encoder* e) const {
  e->PutU8(has_cursor ? 1 : 0);
  e->PutID(cursor);
  e->PutU32(max);
}
bool ListRequest::Decode(Decoder* d) {
  uint8_t hc;
  if (!d->GetU8(&hc) || hc > 1 || !d->GetID(&cursor) || !d->GetU32(&max)) return false;
  has_cursor = hc == 1;
  return max >= 1 && max <= kMaxListPage;
}

void EvictRequest::Encode(Encoder* e) const { e->PutU64(bytes); }
bool EvictRequest::Decode(Decoder* d) { return d->GetU64(&bytes); }

void ConnectReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  e->PutU16(version);
  e->PutU32(client_id);
  e->PutU64(capacity);
  e->PutU64(arena_size);
  e->PutU8(prefaulted ? 1 : 0);
  if (version >= 5) {
    e->PutU64(index_size);
    e->PutU64(pin_page_size);
  }
}
bool ConnectReply::Decode(Decoder* d) {
  uint8_t pf;
  if (!DecodeStatus(d, &status) || !d->GetU16(&version) || !d->GetU32(&client_id) ||
      !d->GetU64(&capacity) || !d->GetU64(&arena_size) || !d->GetU8(&pf))
    return false;
  prefaulted = pf != 0;
  return version < 5 || (d->GetU64(&index_size) && d->GetU64(&pin_page_size));
}

void AttachIndexReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  e->PutU64(index_size);
  e->PutU64(pin_page_size);
}
bool AttachIndexReply::Decode(Decoder* d) {
  return DecodeStatus(d, &status) && d->GetU64(&index_size) && d->GetU64(&pin_page_size);
}

void StatusReply::Encode(Encoder* e) const { EncodeStatus(status, e); }
bool StatusReply::Decode(Decoder* d) { return DecodeStatus(d, &status); }

void CreateReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  location.Encode(e);
}
bool CreateReply::Decode(Decoder* d) { return DecodeStatus(d, &status) && location.Decode(d); }

void ContainsReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  e->PutU8(present ? 1 : 0);
}
bool ContainsReply::Decode(Decoder* d) {
  uint8_t p;
  if (!DecodeStatus(d, &status) || !d->GetU8(&p) || p > 1) return false;
  present = p == 1;
  return true;
}

void GetReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  e->PutU32(static_cast<uint32_t>(entries.size()));
  for (const Entry& en : entries) {
    e->PutU8(static_cast<uint8_t>(en.code));
    en.location.Encode(e);
  }
}
bool GetReply::Decode(Decoder* d) {
  uint32_t n;
  if (!DecodeStatus(d, &status) || !d->GetU32(&n) || n > kMaxBatch) return false;
  entries.resize(n);
  for (Entry& en : entries) {
    uint8_t c;
    if (!d->GetU8(&c) || !ValidCode(c) || !en.location.Decode(d)) return false;
    en.code = static_cast<StatusCode>(c);
  }
  return true;
}

void DeleteReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  e->PutU32(static_cast<uint32_t>(codes.size()));
  for (StatusCode c : codes) e->PutU8(static_cast<uint8_t>(c));
}
bool DeleteReply::Decode(Decoder* d) {
  uint32_t n;
  if (!DecodeStatus(d, &status) || !d->GetU32(&n) || n > kMaxBatch) return false;
  codes.resize(n);
  for (StatusCode& c : codes) {
    uint8_t v;
    if (!d->GetU8(&v) || !ValidCode(v)) return false;
    c = static_cast<StatusCode>(v);
  }
  return true;
}

void StatusListReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  e->PutU32(static_cast<uint32_t>(results.size()));
  for (const Status& r : results) EncodeStatus(r, e, kMaxResultMessage);
}
bool StatusListReply::Decode(Decoder* d) {
  uint32_t n;
  // Each status takes at least 5 bytes (code and message length).
  if (!DecodeStatus(d, &status) || !d->GetU32(&n) || n > kMaxBatch || n * 5ull > d->remaining())
    return false;
  results.assign(n, Status());
  for (Status& r : results)
    if (!DecodeStatus(d, &r, kMaxResultMessage)) return false;
  return true;
}

namespace {
constexpr size_t kTimingBytes = 1 + 7 * 4 + 8;
}

void FetchReply::Encode(Encoder* e) const {
  StatusListReply{status, results}.Encode(e);
  e->PutU8(has_timing ? 1 : 0);
  if (!has_timing) return;
  e->PutU32(in_store_us);
  for (size_t i = 0; i < results.size(); i++) {  // one per result, whatever `timing` holds
    const FetchTiming t = i < timing.size() ? timing[i] : FetchTiming{};
    e->PutU8(t.flags);
    for (uint32_t v : {t.lookup_us, t.queue_us, t.dispatch_us, t.transfer_us, t.digest_us,
                       t.back_us, t.seal_us})
      e->PutU32(v);
    e->PutU64(t.bytes);
  }
}
bool FetchReply::Decode(Decoder* d) {
  StatusListReply list;
  uint8_t has = 0;
  if (!list.Decode(d) || !d->GetU8(&has) || has > 1) return false;
  status = std::move(list.status);
  results = std::move(list.results);
  has_timing = has == 1;
  timing.clear();
  if (!has_timing) return true;
  if (!d->GetU32(&in_store_us) || results.size() * kTimingBytes > d->remaining()) return false;
  timing.resize(results.size());
  for (FetchTiming& t : timing) {
    if (!d->GetU8(&t.flags)) return false;
    for (uint32_t* v : {&t.lookup_us, &t.queue_us, &t.dispatch_us, &t.transfer_us, &t.digest_us,
                        &t.back_us, &t.seal_us})
      if (!d->GetU32(v)) return false;
    if (!d->GetU64(&t.bytes)) return false;
  }
  return true;
}

static void EncodeInfo(const ObjectInfo& o, Encoder* e) {
  e->PutID(o.id);
  e->PutU8(static_cast<uint8_t>(o.state));
  e->PutU64(o.data_size);
  e->PutU64(o.metadata_size);
  e->PutU32(o.ref_count);
  e->PutU8(o.digest_valid ? 1 : 0);
  e->PutU64(o.digest);
  e->PutI64(o.create_time_us);
  e->PutI64(o.last_access_us);
  e->PutI64(o.seal_time_us);
}
static bool DecodeInfo(Decoder* d, ObjectInfo* o) {
  uint8_t state, dv;
  if (!d->GetID(&o->id) || !d->GetU8(&state) || !d->GetU64(&o->data_size) ||
      !d->GetU64(&o->metadata_size) || !d->GetU32(&o->ref_count) || !d->GetU8(&dv) ||
      !d->GetU64(&o->digest) || !d->GetI64(&o->create_time_us) || !d->GetI64(&o->last_access_us) ||
      !d->GetI64(&o->seal_time_us))
    return false;
  if (state != static_cast<uint8_t>(ObjectState::kCreated) &&
      state != static_cast<uint8_t>(ObjectState::kSealed))
    return false;
  o->state = static_cast<ObjectState>(state);
  o->digest_valid = dv != 0;
  return true;
}

void ListReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  e->PutU32(static_cast<uint32_t>(objects.size()));
  for (const ObjectInfo& o : objects) EncodeInfo(o, e);
  e->PutU8(more ? 1 : 0);
}
bool ListReply::Decode(Decoder* d) {
  uint32_t n;
  if (!DecodeStatus(d, &status) || !d->GetU32(&n) || n > kMaxListPage) return false;
  objects.resize(n);
  for (ObjectInfo& o : objects) {
    if (!DecodeInfo(d, &o)) return false;
  }
  uint8_t m;
  if (!d->GetU8(&m)) return false;
  more = m != 0;
  return true;
}

void EvictReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  e->PutU64(bytes);
  e->PutU64(count);
}
bool EvictReply::Decode(Decoder* d) {
  return DecodeStatus(d, &status) && d->GetU64(&bytes) && d->GetU64(&count);
}

void StatsReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  e->PutU64(stats.capacity);
  e->PutU64(stats.used);
  e->PutU64(stats.object_count);
  e->PutU64(stats.sealed_count);
  e->PutU64(stats.evictions);
  e->PutU64(stats.evicted_bytes);
  e->PutU64(stats.clients);
  e->PutU64(stats.fetched);
  e->PutU64(stats.fetched_bytes);
  e->PutU64(stats.fetched_verbs);
  e->PutU64(stats.pulls_failed);
  if (version >= 5) {
    e->PutU64(stats.shm_gets);
    e->PutU64(stats.shm_contains);
  }
}
bool StatsReply::Decode(Decoder* d) {
  return DecodeStatus(d, &status) && d->GetU64(&stats.capacity) && d->GetU64(&stats.used) &&
         d->GetU64(&stats.object_count) && d->GetU64(&stats.sealed_count) &&
         d->GetU64(&stats.evictions) && d->GetU64(&stats.evicted_bytes) &&
         d->GetU64(&stats.clients) && d->GetU64(&stats.fetched) &&
         d->GetU64(&stats.fetched_bytes) && d->GetU64(&stats.fetched_verbs) &&
         d->GetU64(&stats.pulls_failed) &&
         (version < 5 || (d->GetU64(&stats.shm_gets) && d->GetU64(&stats.shm_contains)));
}

void WhereReply::Encode(Encoder* e) const {
  EncodeStatus(status, e);
  // The decoder refuses more: never send a reply that breaks the protocol.
  const size_t n = std::min<size_t>(holders.size(), kMaxHolders);
  e->PutU32(static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; i++) {
    const Holder& h = holders[i];
    e->PutBytes(std::string_view(h.node_id).substr(0, kMaxNodeId));
    e->PutU8(h.alive ? 1 : 0);
    e->PutU64(h.data_size);
    e->PutU64(h.metadata_size);
    e->PutU8(h.digest_valid ? 1 : 0);
    e->PutU64(h.digest);
  }
  e->PutU64(not_shown + (holders.size() - n));
  e->PutU64(malformed);
}
bool WhereReply::Decode(Decoder* d) {
  uint32_t n;
  if (!DecodeStatus(d, &status) || !d->GetU32(&n) || n > kMaxHolders) return false;
  holders.resize(n);
  for (Holder& h : holders) {
    std::string_view node;
    uint8_t alive, dv;
    if (!d->GetBytes(&node, kMaxNodeId) || !d->GetU8(&alive) || alive > 1 ||
        !d->GetU64(&h.data_size) || !d->GetU64(&h.metadata_size) || !d->GetU8(&dv) || dv > 1 ||
        !d->GetU64(&h.digest))
      return false;
    h.node_id = node;
    h.alive = alive == 1;
    h.digest_valid = dv == 1;
  }
  return d->GetU64(&not_shown) && d->GetU64(&malformed);
}

void NotificationMessage::Encode(Encoder* e) const {
  e->PutU8(static_cast<uint8_t>(n.kind));
  e->PutID(n.id);
  e->PutU64(n.data_size);
  e->PutU64(n.metadata_size);
}
bool NotificationMessage::Decode(Decoder* d) {
  uint8_t k;
  if (!d->GetU8(&k) || k < 1 || k > 3) return false;
  n.kind = static_cast<Notification::Kind>(k);
  return d->GetID(&n.id) && d->GetU64(&n.data_size) && d->GetU64(&n.metadata_size);
}

}  // namespace plasmon::protocol
