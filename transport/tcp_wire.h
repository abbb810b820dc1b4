// The store-to-store TCP wire format (see docs/PROTOCOL.md, "Store-to-store
// TCP protocol").
//
// Frames use core's 16-byte FrameHeader; bodies are built with Encoder and
// read with Decoder. Every Decode validates lengths and flags and returns
// false on anything malformed. A PullReply with an OK status is followed, on
// the stream and outside its frame, by exactly the requested number of raw
// object bytes.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/coding.h"
#include "core/protocol.h"
#include "transport/auth.h"
#include "plasmon/object_id.h"
#include "plasmon/status.h"

namespace plasmon::tcp {

constexpr uint32_t kMagic = 0x50534c50;  // "PLSP" on the wire
// 2: objects over one digest block have the block-tree digest (core/digest.h),
// and pulls may ask for the digests of their blocks after the bytes.
constexpr uint16_t kVersion = 2;
using auth::kNonceSize;
using auth::kProofSize;
constexpr uint32_t kMaxControlBody = 4096;  // any frame body, either direction
constexpr uint32_t kMaxNodeName = 255;
constexpr uint32_t kMaxStatusMessage = 1024;  // longer messages are cut when sent

// Requests have bit 15 clear; the answer to request T is T | 0x8000.
enum class MessageType : uint16_t {
  kHello = 1,
  kChallenge = 0x8001,  // answers Hello
  kProof = 2,
  kWelcome = 0x8002,  // answers Proof, or Hello when the server refuses at once
  kPull = 3,
  kPullReply = 0x8003,
};
inline uint16_t Type(MessageType t) { return static_cast<uint16_t>(t); }

// Hello and Challenge flags.
constexpr uint8_t kHasSecret = 0x01;  // the sender has a cluster secret
// Pull flags.
constexpr uint8_t kWantDigest = 0x01;
constexpr uint8_t kHold = 0x02;
constexpr uint8_t kBlockDigests = 0x04;
// PullReply flags.
constexpr uint8_t kDigestValid = 0x01;
constexpr uint8_t kBlockDigestsFollow = 0x02;

// The handshake's pieces (transport/auth.h).
using auth::kClientLabel;
using auth::kServerLabel;
using auth::MakeProof;
using auth::Nonce;
using auth::Proof;
using auth::ProofsEqual;
using auth::RandomNonce;

struct Hello {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint8_t flags = 0;
  Nonce nonce{};
  std::string node_name;  // may be empty; for the server's logs
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct Challenge {
  uint8_t flags = 0;
  Nonce nonce{};
  Proof proof{};  // MakeProof(secret, kServerLabel, client nonce, server nonce)
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct ProofMessage {
  Proof proof{};  // MakeProof(secret, kClientLabel, client nonce, server nonce)
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct Welcome {
  Status status;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// Asks for bytes [offset, offset + length) of an object's data-then-metadata.
// length == 0 only describes the object. With `hold`, the holder keeps the
// object pinned after the reply, until the next frame on this connection or
// its end: a chunked pull holds it on one connection while the chunks travel
// on others, so the object cannot be evicted between two chunks. With
// `block_digests` (offset then a multiple of kDigestBlock), a holder that does
// not know the object's digest hashes the range's blocks as it sends them and
// sends their digests after the bytes (PullReply::block_digests), so that
// neither end hashes the object before or after the transfer.
struct PullMessage {
  ObjectID id;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool want_digest = false;
  bool hold = false;
  bool block_digests = false;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// Sizes are the holder's whenever it has the object (also on InvalidArgument).
// With `block_digests`, the raw bytes are followed by DigestBlocks(length)
// block digests, 8 bytes little-endian each.
struct PullReply {
  Status status;
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  bool digest_valid = false;
  bool block_digests = false;
  uint64_t digest = 0;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// ---- blocking socket I/O (all sends use MSG_NOSIGNAL) ----

// Reads exactly n bytes. A peer that closes, resets or stays silent past the
// socket's SO_RCVTIMEO is Disconnected; *got (if given) counts bytes read.
Status ReadExact(int fd, void* dst, size_t n, size_t* got = nullptr);

// Writes all of `frame`, then `n` bytes at `tail`, with sendmsg() straight
// from the caller's memory. A peer that stops reading past SO_SNDTIMEO, closes
// or resets is Disconnected.
Status SendAll(int fd, std::string_view frame, const uint8_t* tail = nullptr, size_t n = 0);

// One frame: header and body.
struct Frame {
  protocol::FrameHeader header;
  std::string body;
};

// Reads one frame, refusing bodies over `max_body` and nonzero flags
// (ProtocolError). A peer that closes before the first header byte sets
// *clean_eof (if given) and returns Disconnected.
Status ReadFrame(int fd, uint32_t max_body, Frame* out, bool* clean_eof = nullptr);
// What ReadFrame refuses in a header (ProtocolError), or OK.
Status CheckHeader(const protocol::FrameHeader& h, uint32_t max_body);

// The frames a served connection sends, read through a buffer that holds
// the largest one, so that one recv() usually takes a whole frame (and any
// pipelined after it). The socket is blocking; its SO_RCVTIMEO bounds each
// wait once a frame has begun. Between frames the wait is unbounded (a
// pooled connection may stay idle), or `idle_ms` if that is >= 0.
class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd) {}
  enum class Got {
    kFrame,  // *out holds the next frame
    kIdle,   // idle_ms passed before it began
    kEof,    // the peer closed between frames
    kError,  // *st says why (a malformed header, a peer that stopped mid-frame)
  };
  Got Next(int idle_ms, Frame* out, Status* st);

 private:
  const int fd_;
  char buf_[protocol::kHeaderSize + kMaxControlBody];
  size_t begin_ = 0, end_ = 0;  // the bytes read and not yet taken
};

// Decodes a whole body as `msg`; trailing bytes are an error.
template <typename Msg>
bool ParseBody(std::string_view body, Msg* msg) {
  Decoder d(body);
  return msg->Decode(&d) && d.done();
}

template <typename Msg>
std::string MakeFrame(MessageType type, uint64_t request_id, const Msg& msg) {
  return protocol::MakeFrame(Type(type), request_id, msg);
}

}  // namespace plasmon::tcp
