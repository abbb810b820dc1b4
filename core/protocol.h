// The client <-> store wire protocol (see docs/PROTOCOL.md).
//
// A frame is a 16-byte header followed by `body_len` bytes. Every request and
// reply type has a struct here with a symmetric Encode/Decode pair; Decode
// validates every count and length against the limits below and returns false
// on anything malformed, so the store can drop the client with a reason.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/coding.h"
#include "plasmon/status.h"
#include "plasmon/types.h"

namespace plasmon::protocol {

constexpr uint32_t kMagic = 0x4d534c50;  // "PLSM" on the wire
constexpr uint16_t kVersion = 6;  // 2: Refresh, batches, Digest, SetOptions; seal times in List
                                  // 3: Where says how many holders it left out
                                  // 4: Fetch flags; a Fetch reply may carry its timing
                                  // 5: the shared index (Connect flags, Unpinned); Stats' shm counts
                                  // 6: the index's descriptors come with AttachIndex, not Connect
// The oldest version a store still serves (without the shared index).
constexpr uint16_t kOldestVersion = 4;
constexpr size_t kHeaderSize = 16;

// Limits. A request body over kMaxRequestBody closes the connection before the
// store buffers it.
constexpr uint32_t kMaxInlineObject = 1u << 20;  // CreateAndSeal data + metadata
constexpr uint32_t kMaxRequestBody = kMaxInlineObject + 4096;
constexpr uint32_t kMaxReplyBody = 16u << 20;
constexpr uint32_t kMaxBatch = 16384;     // IDs in one Get or Delete
constexpr uint32_t kMaxListPage = 16384;  // rows in one List reply
constexpr uint64_t kMaxMetadata = 1u << 20;
constexpr uint32_t kMaxMessage = 4096;    // an error message's text
constexpr uint32_t kMaxNodeId = 255;      // a node's name
constexpr uint32_t kMaxHolders = 4096;    // nodes in one Where reply
constexpr uint32_t kMaxResultMessage = 512;  // an error message per ID in a Fetch reply

enum class MessageType : uint16_t {
  kConnect = 1,
  kCreate = 2,
  kSeal = 3,
  kAbort = 4,
  kCreateAndSeal = 5,
  kGet = 6,
  kRelease = 7,  // one-way: never answered
  kContains = 8,
  kDelete = 9,
  kList = 10,
  kEvict = 11,
  kStats = 12,
  kSubscribe = 13,
  kNotification = 14,  // store -> subscriber, unsolicited
  kWhere = 15,         // which nodes hold an object (cluster only)
  kFetch = 16,         // make objects local, pulling them from other nodes
  kRefresh = 17,       // mark objects as just used (LRU), without getting them
  kCreateAndSealBatch = 18,  // several small objects in one round trip
  kDigest = 19,        // a sealed object's xxh3-64, computed if not known yet
  kSetOptions = 20,    // this client's options (its memory quota)
  kUnpinned = 21,      // one-way: a pin of an object the index marks going was cleared
  kLease = 22,         // arena space for this client to place small objects in
  kSealLeased = 23,    // create and seal an object placed in the lease
  kAttachIndex = 24,   // the shared index's and this client's pin page's descriptors
};
constexpr uint64_t kMaxLease = 4u << 20;
constexpr uint16_t kReplyBit = 0x8000;
inline uint16_t ReplyType(MessageType t) { return static_cast<uint16_t>(t) | kReplyBit; }

struct FrameHeader {
  uint32_t body_len = 0;
  uint16_t type = 0;
  uint16_t flags = 0;  // must be zero in version 1
  uint64_t request_id = 0;
};
void EncodeHeader(const FrameHeader& h, char* out);  // writes kHeaderSize bytes
FrameHeader DecodeHeader(const char* in);            // reads kHeaderSize bytes

// Builds one frame: header first, then the body through encoder(), then
// Finish() patches in the body length.
class FrameBuilder {
 public:
  FrameBuilder(uint16_t type, uint64_t request_id);
  Encoder& encoder() { return enc_; }
  std::string Finish() &&;

 private:
  std::string buf_;
  Encoder enc_;
};

// Where an object's bytes are: data at [offset, offset + data_size), its
// metadata right after.
struct ObjectLocation {
  uint32_t arena = 0;
  uint64_t offset = 0;
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// A status: u8 code, then the message as a byte string cut at `max_message`.
void EncodeStatus(const Status& s, Encoder* e, uint32_t max_message = kMaxMessage);
bool DecodeStatus(Decoder* d, Status* s, uint32_t max_message = kMaxMessage);

// ---- requests ----
// Stats and Subscribe carry no body.
struct EmptyRequest {
  void Encode(Encoder*) const {}
};

// Connect flags (version 5).
constexpr uint32_t kConnectSharedIndex = 1;  // map the shared index, get a pin page
struct ConnectRequest {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint32_t pid = 0;
  uint32_t flags = 0;  // kConnect* bits (version 5 on); unknown bits are refused
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct CreateRequest {
  ObjectID id;
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// Seal, Abort, Release and Contains name one object.
struct IdRequest {
  ObjectID id;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct CreateAndSealRequest {
  ObjectID id;
  std::string_view data;      // views into the frame being decoded
  std::string_view metadata;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct GetRequest {
  int64_t timeout_ms = 0;  // 0 polls, -1 waits forever
  std::vector<ObjectID> ids;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// Fetch: a Get's body (a timeout and IDs), then flags.
constexpr uint8_t kFetchWantTiming = 1;  // the reply carries a FetchTiming per ID
struct FetchRequest {
  int64_t timeout_ms = 0;  // 0 does not wait for an object to appear, -1 waits forever
  std::vector<ObjectID> ids;
  uint8_t flags = 0;  // kFetch* bits; unknown bits are refused
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// Several objects created and sealed in one round trip; their data and
// metadata together at most kMaxInlineObject.
struct CreateAndSealBatchRequest {
  struct Item {
    ObjectID id;
    std::string_view data;  // views into the frame being decoded
    std::string_view metadata;
  };
  std::vector<Item> items;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// SealLeased: an object the client placed in its lease (ObjectTable::CreateLeased).
struct SealLeasedRequest {
  ObjectID id;
  uint64_t offset = 0;
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct SetOptionsRequest {
  uint64_t memory_quota = 0;  // bytes; 0: none
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// Delete and Refresh name several objects.
struct DeleteRequest {
  std::vector<ObjectID> ids;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct ListRequest {
  bool has_cursor = false;  // list IDs strictly greater than cursor
  ObjectID cursor;
  uint32_t max = kMaxListPage;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct EvictRequest {
  uint64_t bytes = 0;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// ---- replies: each begins with a Status ----
struct ConnectReply {
  Status status;
  uint16_t version = kVersion;
  uint32_t client_id = 0;
  uint64_t capacity = 0;
  uint64_t arena_size = 0;  // the mapping behind the fd passed with this reply
  bool prefaulted = false;  // every page is backed: clients populate whole 64 KiB granules
  // Version 5 on: with kConnectSharedIndex granted, the sizes of the index
  // and of the client's pin page (0: not granted). Version 6 grants it only
  // to version 6 clients, and passes their descriptors with AttachIndex.
  uint64_t index_size = 0;
  uint64_t pin_page_size = 0;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// AttachIndex's reply: the index's and the pin page's sizes again; when OK,
// their descriptors ride on it (SCM_RIGHTS), the index's first.
struct AttachIndexReply {
  Status status;
  uint64_t index_size = 0;
  uint64_t pin_page_size = 0;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct StatusReply {
  Status status;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct CreateReply {
  Status status;
  ObjectLocation location;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct ContainsReply {
  Status status;
  bool present = false;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct GetReply {
  struct Entry {
    StatusCode code = StatusCode::kOk;  // kOk: the object is referenced for the caller
    ObjectLocation location;
  };
  Status status;
  std::vector<Entry> entries;  // one per requested ID, in request order
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// Delete and Refresh.
struct DeleteReply {
  Status status;
  std::vector<StatusCode> codes;  // one per requested ID
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// One Status per requested ID (Fetch, CreateAndSealBatch).
struct StatusListReply {
  Status status;
  std::vector<Status> results;  // one per requested ID; messages cut at kMaxResultMessage
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// Where one ID's fetch spent its time inside the store, in microseconds (a
// Fetch with kFetchWantTiming). Stages of the transfer job, in order:
//   lookup    job start -> holders known (directory or location cache)
//   queue     -> the pull starts (a transfer slot, creating the object)
//   dispatch  -> the pull runs (a hand-off to a transfer thread; 0 on the loop)
//   transfer  -> the last byte is in (request to holder, reply, bytes)
//   digest    -> the received bytes are hashed and checked
//   back      -> the store's loop has the result (a hand-off back)
//   seal      -> sealed, published, this reply built
// The job may be older than the request (kShared) and may have tried more
// than one holder (the stages then span every attempt).
struct FetchTiming {
  static constexpr uint8_t kPulled = 1;         // this ID was pulled (else: it was local, or failed)
  static constexpr uint8_t kShared = 2;         // joined a job another request had started
  static constexpr uint8_t kCachedLocation = 4; // holders came from the location cache
  static constexpr uint8_t kRdma = 8;           // carried by RDMA READ
  static constexpr uint8_t kOnLoop = 16;        // pulled by the store's loop (no hand-off)
  uint8_t flags = 0;
  uint32_t lookup_us = 0, queue_us = 0, dispatch_us = 0, transfer_us = 0, digest_us = 0,
           back_us = 0, seal_us = 0;
  uint64_t bytes = 0;  // pulled (data and metadata), if kPulled
};

// A StatusListReply, then (if the request asked) the timing of the request
// inside the store and of each ID.
struct FetchReply {
  Status status;
  std::vector<Status> results;  // one per requested ID; messages cut at kMaxResultMessage
  bool has_timing = false;
  uint32_t in_store_us = 0;     // the request read -> its reply sent
  std::vector<FetchTiming> timing;  // one per requested ID, if has_timing
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct DigestReply {
  Status status;
  uint64_t digest = 0;  // xxh3-64 of data then metadata
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct ListReply {
  Status status;
  std::vector<ObjectInfo> objects;
  bool more = false;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct EvictReply {
  Status status;
  uint64_t bytes = 0;
  uint64_t count = 0;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct StatsReply {
  Status status;
  StoreStats stats;
  uint16_t version = kVersion;  // of the connection: the shm counts from 5 on (not encoded)
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct WhereReply {
  struct Holder {
    std::string node_id;
    bool alive = false;
    uint64_t data_size = 0;
    uint64_t metadata_size = 0;
    bool digest_valid = false;
    uint64_t digest = 0;
  };
  Status status;
  std::vector<Holder> holders;  // at most kMaxHolders
  uint64_t not_shown = 0;  // more holders the directory lists, past kMaxHolders
  uint64_t malformed = 0;  // records the store skipped: not what a location or node record is
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct NotificationMessage {
  Notification n;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// Encodes `msg` as a complete frame.
template <typename Msg>
std::string MakeFrame(uint16_t type, uint64_t request_id, const Msg& msg) {
  FrameBuilder b(type, request_id);
  msg.Encode(&b.encoder());
  return std::move(b).Finish();
}

// Decodes a whole body as `msg`; trailing bytes are an error.
template <typename Msg>
bool ParseBody(std::string_view body, Msg* msg) {
  Decoder d(body);
  return msg->Decode(&d) && d.done();
}

}  // namespace plasmon::protocol
