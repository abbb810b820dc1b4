#include "transport/verbs_wire.h"

#include <algorithm>

#include "core/protocol.h"

namespace plasmon::verbs {

std::string Hello::Encode() const {
  std::string out;
  Encoder e(&out);
  e.PutU32(magic);
  e.PutU16(version);
  e.PutU8(flags);
  e.PutRaw(nonce.data(), nonce.size());
  return out;
}
bool Hello::Decode(std::string_view in) {
  Decoder d(in);
  return d.GetU32(&magic) && magic == kMagic && d.GetU16(&version) && d.GetU8(&flags) &&
         (flags & ~kHasSecret) == 0 && d.GetRaw(nonce.data(), nonce.size());
}

std::string Challenge::Encode() const {
  std::string out;
  Encoder e(&out);
  e.PutU32(magic);
  e.PutU8(flags);
  e.PutRaw(nonce.data(), nonce.size());
  e.PutRaw(proof.data(), proof.size());
  return out;
}
bool Challenge::Decode(std::string_view in) {
  Decoder d(in);
  return d.GetU32(&magic) && magic == kMagic && d.GetU8(&flags) && (flags & ~kHasSecret) == 0 &&
         d.GetRaw(nonce.data(), nonce.size()) && d.GetRaw(proof.data(), proof.size());
}

std::string Refusal::Encode() const {
  std::string out;
  Encoder e(&out);
  e.PutU32(magic);
  e.PutU16(code);
  return out;
}
bool Refusal::Decode(std::string_view in) {
  Decoder d(in);
  // A code past the last StatusCode would be cut to a wrong one when cast.
  return d.GetU32(&magic) && magic == kMagic && d.GetU16(&code) &&
         code <= static_cast<uint16_t>(StatusCode::kCorruption);
}

void ProofMessage::Encode(Encoder* e) const {
  e->PutRaw(proof.data(), proof.size());
  e->PutBytes(std::string_view(node_name).substr(0, kMaxNodeName));
}
bool ProofMessage::Decode(Decoder* d) {
  std::string_view name;
  if (!d->GetRaw(proof.data(), proof.size()) || !d->GetBytes(&name, kMaxNodeName)) return false;
  node_name.assign(name);
  return true;
}

void Welcome::Encode(Encoder* e) const {
  protocol::EncodeStatus(status, e, kMaxStatusMessage);
  size_t n = std::min<size_t>(regions.size(), kMaxRegions);
  e->PutU32(static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; i++) {
    e->PutU64(regions[i].address);
    e->PutU64(regions[i].length);
    e->PutU32(regions[i].rkey);
  }
}
bool Welcome::Decode(Decoder* d) {
  uint32_t n;
  if (!protocol::DecodeStatus(d, &status, kMaxStatusMessage) || !d->GetU32(&n) || n > kMaxRegions)
    return false;
  regions.resize(n);
  for (RemoteRegion& r : regions) {
    if (!d->GetU64(&r.address) || !d->GetU64(&r.length) || !d->GetU32(&r.rkey)) return false;
    if (r.length == 0 || r.address + r.length < r.address) return false;  // empty or wraps
  }
  return true;
}

void Describe::Encode(Encoder* e) const {
  e->PutID(id);
  e->PutU8(want_digest ? kWantDigest : 0);
}
bool Describe::Decode(Decoder* d) {
  uint8_t flags;
  if (!d->GetID(&id) || !d->GetU8(&flags) || (flags & ~kWantDigest) != 0) return false;
  want_digest = (flags & kWantDigest) != 0;
  return true;
}

void DescribeReply::Encode(Encoder* e) const {
  protocol::EncodeStatus(status, e, kMaxStatusMessage);
  e->PutU64(data_size);
  e->PutU64(metadata_size);
  e->PutU64(address);
  e->PutU8(static_cast<uint8_t>(digest_state));
  e->PutU64(digest);
}
bool DescribeReply::Decode(Decoder* d) {
  uint8_t state;
  if (!protocol::DecodeStatus(d, &status, kMaxStatusMessage) || !d->GetU64(&data_size) ||
      !d->GetU64(&metadata_size) || !d->GetU64(&address) || !d->GetU8(&state) ||
      state > static_cast<uint8_t>(DigestState::kFollows) || !d->GetU64(&digest))
    return false;
  digest_state = static_cast<DigestState>(state);
  // Sizes that overflow together are malformed whatever the status.
  return data_size + metadata_size >= data_size;
}

Status CheckDigestOffered(const DescribeReply& reply) {
  if (reply.digest_state == DigestState::kNone)
    return Status::ProtocolError("the holder sent no digest (it was asked for one)");
  return Status::OK();
}

void DigestMessage::Encode(Encoder* e) const { e->PutU64(digest); }
bool DigestMessage::Decode(Decoder* d) { return d->GetU64(&digest); }

std::string MakeMessage(MessageType type, uint64_t request_id) {
  std::string out;
  Encoder e(&out);
  e.PutU16(static_cast<uint16_t>(type));
  e.PutU64(request_id);
  return out;
}

bool ParseHeader(std::string_view in, Header* h, std::string_view* body) {
  Decoder d(in);
  uint16_t type;
  if (!d.GetU16(&type) || !d.GetU64(&h->request_id)) return false;
  h->type = static_cast<MessageType>(type);
  *body = in.substr(Header::kSize);
  return true;
}

}  // namespace plasmon::verbs
