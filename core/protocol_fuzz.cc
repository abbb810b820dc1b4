// libFuzzer target: client <-> store frames (core/protocol.h).
//
// Every input is read two ways. As a byte stream, fed in uneven chunks
// through a ByteBuffer and cut into frames the way the store's session reads
// them (Store::Impl::OnReadable and Handle in store/store.cc). And as one
// message: its type (2 bytes), then a body, of which only what the message
// takes is read (fuzz::DecodeAndCheck). Requests are decoded as the store
// decodes them, replies and notifications as the client does. Whatever
// decodes must encode back to the same fields; a request to the same bytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "core/byte_buffer.h"
#include "core/protocol.h"
#include "tests/fuzz_util.h"

namespace plasmon::protocol {
namespace {

template <typename Msg>
std::optional<Msg> Check(std::string_view body, bool prefix, bool exact) {
  return fuzz::DecodeAndCheck<Msg>(body, prefix, exact,
                                   [](std::string_view b, Msg* m) { return ParseBody(b, m); });
}

void Request(MessageType type, std::string_view body, bool prefix) {
  switch (type) {
    case MessageType::kConnect: Check<ConnectRequest>(body, prefix, true); return;
    case MessageType::kCreate: {
      auto r = Check<CreateRequest>(body, prefix, true);
      if (r) FUZZ_CHECK(r->metadata_size <= kMaxMetadata);
      return;
    }
    case MessageType::kSeal:
    case MessageType::kAbort:
    case MessageType::kRelease:
    case MessageType::kContains:
    case MessageType::kDigest:
    case MessageType::kWhere: Check<IdRequest>(body, prefix, true); return;
    case MessageType::kSetOptions: Check<SetOptionsRequest>(body, prefix, true); return;
    case MessageType::kCreateAndSealBatch: {
      auto r = Check<CreateAndSealBatchRequest>(body, prefix, true);
      if (!r) return;
      FUZZ_CHECK(r->items.size() <= kMaxBatch);
      uint64_t total = 0;
      for (const CreateAndSealBatchRequest::Item& it : r->items) {
        FUZZ_CHECK(it.data.data() >= body.data() && it.data.end() <= body.end());
        FUZZ_CHECK(it.metadata.data() >= body.data() && it.metadata.end() <= body.end());
        total += it.data.size() + it.metadata.size();
      }
      FUZZ_CHECK(total <= kMaxInlineObject);
      return;
    }
    case MessageType::kCreateAndSeal: {
      auto r = Check<CreateAndSealRequest>(body, prefix, true);
      if (!r) return;
      // Views into the body, within the limit together.
      FUZZ_CHECK(r->data.data() >= body.data() && r->data.end() <= body.end());
      FUZZ_CHECK(r->metadata.data() >= body.data() && r->metadata.end() <= body.end());
      FUZZ_CHECK(r->data.size() + r->metadata.size() <= kMaxInlineObject);
      return;
    }
    case MessageType::kGet: {
      auto r = Check<GetRequest>(body, prefix, true);
      if (r) FUZZ_CHECK(r->timeout_ms >= -1 && r->ids.size() <= kMaxBatch);
      return;
    }
    case MessageType::kFetch: {
      auto r = Check<FetchRequest>(body, prefix, true);
      if (r)
        FUZZ_CHECK(r->timeout_ms >= -1 && r->ids.size() <= kMaxBatch &&
                   (r->flags & ~kFetchWantTiming) == 0);
      return;
    }
    case MessageType::kDelete:
    case MessageType::kRefresh: {
      auto r = Check<DeleteRequest>(body, prefix, true);
      if (r) FUZZ_CHECK(r->ids.size() <= kMaxBatch);
      return;
    }
    case MessageType::kList: {
      auto r = Check<ListRequest>(body, prefix, true);
      if (r) FUZZ_CHECK(r->max >= 1 && r->max <= kMaxListPage);
      return;
    }
    case MessageType::kEvict:
    case MessageType::kLease: Check<EvictRequest>(body, prefix, true); return;  // one u64 each
    case MessageType::kSealLeased: {
      auto r = Check<SealLeasedRequest>(body, prefix, true);
      if (r) FUZZ_CHECK(r->metadata_size <= kMaxMetadata);
      return;
    }
    case MessageType::kStats:
    case MessageType::kUnpinned:
    case MessageType::kAttachIndex:
    case MessageType::kSubscribe:  // the store wants an empty body
    case MessageType::kNotification: return;
  }
}

// Replies are decoded by the client. An OK status's message is dropped, and
// some flags take any nonzero byte as true: the same fields, not bytes.
void Reply(MessageType type, std::string_view body, bool prefix) {
  switch (type) {
    case MessageType::kConnect: Check<ConnectReply>(body, prefix, false); return;
    case MessageType::kAttachIndex: Check<AttachIndexReply>(body, prefix, false); return;
    case MessageType::kCreate:
    case MessageType::kLease: Check<CreateReply>(body, prefix, false); return;
    case MessageType::kSeal:
    case MessageType::kSealLeased:
    case MessageType::kAbort:
    case MessageType::kCreateAndSeal:
    case MessageType::kSetOptions:
    case MessageType::kSubscribe: {
      auto r = Check<StatusReply>(body, prefix, false);
      if (r) FUZZ_CHECK(r->status.message().size() <= kMaxMessage);
      return;
    }
    case MessageType::kGet: {
      auto r = Check<GetReply>(body, prefix, false);
      if (r) FUZZ_CHECK(r->entries.size() <= kMaxBatch);
      return;
    }
    case MessageType::kContains: Check<ContainsReply>(body, prefix, false); return;
    case MessageType::kDigest: Check<DigestReply>(body, prefix, false); return;
    case MessageType::kDelete:
    case MessageType::kRefresh: {
      auto r = Check<DeleteReply>(body, prefix, false);
      if (r) FUZZ_CHECK(r->codes.size() <= kMaxBatch);
      return;
    }
    case MessageType::kList: {
      auto r = Check<ListReply>(body, prefix, false);
      if (r) FUZZ_CHECK(r->objects.size() <= kMaxListPage);
      return;
    }
    case MessageType::kEvict: Check<EvictReply>(body, prefix, false); return;
    case MessageType::kStats: Check<StatsReply>(body, prefix, false); return;
    case MessageType::kWhere: {
      auto r = Check<WhereReply>(body, prefix, false);
      if (!r) return;
      FUZZ_CHECK(r->holders.size() <= kMaxHolders);
      for (const WhereReply::Holder& h : r->holders) FUZZ_CHECK(h.node_id.size() <= kMaxNodeId);
      return;
    }
    case MessageType::kFetch: {
      auto r = Check<FetchReply>(body, prefix, false);
      if (!r) return;
      FUZZ_CHECK(r->results.size() <= kMaxBatch);
      FUZZ_CHECK(!r->has_timing ? r->timing.empty() : r->timing.size() == r->results.size());
      for (const Status& s : r->results) FUZZ_CHECK(s.message().size() <= kMaxResultMessage);
      return;
    }
    case MessageType::kCreateAndSealBatch: {
      auto r = Check<StatusListReply>(body, prefix, false);
      if (!r) return;
      FUZZ_CHECK(r->results.size() <= kMaxBatch);
      for (const Status& s : r->results) FUZZ_CHECK(s.message().size() <= kMaxResultMessage);
      return;
    }
    case MessageType::kRelease:
    case MessageType::kUnpinned:
    case MessageType::kNotification: return;
  }
}

void Message(uint16_t type, std::string_view body, bool prefix) {
  if (type == static_cast<uint16_t>(MessageType::kNotification)) {
    auto n = Check<NotificationMessage>(body, prefix, true);
    using K = Notification::Kind;
    if (n) FUZZ_CHECK(n->n.kind >= K::kSealed && n->n.kind <= K::kEvicted);
    return;
  }
  auto t = static_cast<MessageType>(type & ~kReplyBit);
  if (type & kReplyBit) return Reply(t, body, prefix);
  return Request(t, body, prefix);
}

}  // namespace
}  // namespace plasmon::protocol

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace p = plasmon::protocol;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.size() >= 2) {
    uint16_t type;
    std::memcpy(&type, in.data(), 2);
    p::Message(type, in.substr(2), /*prefix=*/true);
  }
  plasmon::ByteBuffer buf;
  size_t fed = 0;
  uint32_t rng = static_cast<uint32_t>(size) * 2654435761u;
  while (fed < in.size()) {
    // Chunks of 1 to 64 bytes, as recv() may return.
    rng = rng * 1103515245u + 12345u;
    size_t n = std::min<size_t>(1 + (rng >> 16) % 64, in.size() - fed);
    std::memcpy(buf.Prepare(n), in.data() + fed, n);
    buf.Commit(n);
    fed += n;
    while (buf.size() >= p::kHeaderSize) {
      p::FrameHeader h = p::DecodeHeader(buf.data());
      char again[p::kHeaderSize];
      p::EncodeHeader(h, again);
      FUZZ_CHECK(std::memcmp(again, buf.data(), p::kHeaderSize) == 0);
      // The store (or the client) closes the connection at an oversized
      // frame or nonzero flags.
      uint32_t limit = (h.type & p::kReplyBit) != 0 ? p::kMaxReplyBody : p::kMaxRequestBody;
      if (h.body_len > limit || h.flags != 0) return 0;
      if (buf.size() < p::kHeaderSize + h.body_len) break;
      p::Message(h.type, std::string_view(buf.data() + p::kHeaderSize, h.body_len), false);
      buf.Consume(p::kHeaderSize + h.body_len);
    }
  }
  return 0;
}
