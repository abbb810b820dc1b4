// The store-to-store verbs control protocol (see docs/PROTOCOL.md,
// "Store-to-store verbs protocol").
//
// Object bytes never travel in messages: the receiver RDMA READs them from
// the holder's registered arena. Messages only set up and tear down a read:
//   connect   rdma_cm private data: Hello (client) and Challenge (server)
//   Proof     the client's HMAC; answered by Welcome with the holder's
//             registered regions (address, length, rkey)
//   Describe  pin an object; DescribeReply tells its address and sizes
//   Digest    the holder's digest, when it had to compute it (it hashes while
//             the reads run)
//   Release   unpin
// Every message is a SEND of at most kMaxMessage bytes: an 10-byte header
// (type, request ID) and a body built with Encoder. Decode validates every
// field and returns false on anything malformed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/coding.h"
#include "plasmon/object_id.h"
#include "plasmon/status.h"
#include "transport/auth.h"

namespace plasmon::verbs {

constexpr uint32_t kMagic = 0x50534c56;  // "VLSP" on the wire
// 2: objects over one digest block have the block-tree digest (core/digest.h).
constexpr uint16_t kVersion = 2;
constexpr uint32_t kMaxMessage = 1024;  // a receive slot
constexpr uint32_t kMaxStatusMessage = 512;
constexpr uint32_t kMaxNodeName = 255;
constexpr uint32_t kMaxRegions = 32;  // fits one message

// Requests have bit 15 clear; the answer to request T is T | 0x8000.
enum class MessageType : uint16_t {
  kProof = 1,
  kWelcome = 0x8001,
  kDescribe = 2,
  kDescribeReply = 0x8002,
  kDigest = 0x8003,  // follows a DescribeReply with kDigestFollows
  kRelease = 3,      // no answer
};

constexpr uint8_t kHasSecret = 0x01;  // Hello/Challenge flag
constexpr uint8_t kWantDigest = 0x01;  // Describe flag

// Connect private data (rdma_cm carries at most 56 bytes on a REQ).
struct Hello {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint8_t flags = 0;
  auth::Nonce nonce{};
  static constexpr size_t kSize = 4 + 2 + 1 + auth::kNonceSize;
  std::string Encode() const;
  // The transport may pad private data with zeros: trailing bytes are ignored.
  bool Decode(std::string_view in);
};

// Accept private data (at most 196 bytes on a REP).
struct Challenge {
  uint32_t magic = kMagic;
  uint8_t flags = 0;
  auth::Nonce nonce{};
  auth::Proof proof{};  // MakeProof(secret, kServerLabel, client nonce, server nonce)
  static constexpr size_t kSize = 4 + 1 + auth::kNonceSize + auth::kProofSize;
  std::string Encode() const;
  bool Decode(std::string_view in);
};

// Reject private data: why the holder refused the connection.
struct Refusal {
  uint32_t magic = kMagic;
  uint16_t code = 0;  // a StatusCode; Decode refuses anything else
  static constexpr size_t kSize = 6;
  std::string Encode() const;
  bool Decode(std::string_view in);
};

struct Header {
  MessageType type{};
  uint64_t request_id = 0;
  static constexpr size_t kSize = 10;
};

struct ProofMessage {
  auth::Proof proof{};  // MakeProof(secret, kClientLabel, client nonce, server nonce)
  std::string node_name;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// A piece of the holder's registered memory that peers may read.
struct RemoteRegion {
  uint64_t address = 0;
  uint64_t length = 0;
  uint32_t rkey = 0;
};

struct Welcome {
  Status status;
  std::vector<RemoteRegion> regions;  // only with an OK status
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

struct Describe {
  ObjectID id;
  bool want_digest = false;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

enum class DigestState : uint8_t { kNone = 0, kValid = 1, kFollows = 2 };

struct DescribeReply {
  Status status;
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  uint64_t address = 0;  // of data-then-metadata, inside a Welcome region
  DigestState digest_state = DigestState::kNone;
  uint64_t digest = 0;  // with kValid
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// What a puller that asked for the digest (a Describe with want_digest)
// makes of a DescribeReply's digest state: OK with kValid or kFollows. A
// holder that answers kNone leaves nothing to check the bytes against:
// ProtocolError, before any read (the store would publish what arrived).
Status CheckDigestOffered(const DescribeReply& reply);

struct DigestMessage {
  uint64_t digest = 0;
  void Encode(Encoder* e) const;
  bool Decode(Decoder* d);
};

// Header then body. The result is at most kMaxMessage bytes for every message
// above (regions are capped at kMaxRegions, strings are cut).
template <typename Msg>
std::string MakeMessage(MessageType type, uint64_t request_id, const Msg& msg) {
  std::string out;
  Encoder e(&out);
  e.PutU16(static_cast<uint16_t>(type));
  e.PutU64(request_id);
  msg.Encode(&e);
  return out;
}
std::string MakeMessage(MessageType type, uint64_t request_id);  // header only

// Splits a received message; false if it is shorter than a header.
bool ParseHeader(std::string_view in, Header* h, std::string_view* body);

// Decodes a whole body as `msg`; trailing bytes are an error.
template <typename Msg>
bool ParseBody(std::string_view body, Msg* msg) {
  Decoder d(body);
  return msg->Decode(&d) && d.done();
}

}  // namespace plasmon::verbs
