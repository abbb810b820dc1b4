// The transport interface: how one store pulls an object's bytes from another.
//
// The store's fetch logic sees only this interface. A pull copies a sealed
// object from the holder's arena straight into a destination the receiver has
// already allocated in its own arena; the holder pins the object for as long
// as its bytes may still be read. TCP and RDMA verbs both fit:
//   - TCP: a request on a pooled connection; the holder send()s from its
//     arena, the receiver recv()s into the destination, in chunks over
//     several connections for large objects.
//   - verbs: a control message pins the object and returns its offset; the
//     receiver issues one-sided RDMA READs against the holder's arena, which
//     was registered once (RegisterMemory) and whose key the peer learnt when
//     it connected; a second message unpins.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "plasmon/object_id.h"
#include "plasmon/status.h"

namespace plasmon {

// A sealed object pinned in the holder's arena for the length of a transfer.
struct PinnedObject {
  const uint8_t* bytes = nullptr;  // data then metadata
  uint64_t arena_offset = 0;       // where `bytes` sits in the arena
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  bool digest_valid = false;       // large objects get their digest on demand
  uint64_t digest = 0;
  uint64_t total() const { return data_size + metadata_size; }
};

// What a store lends a transport that serves pulls. Thread-safe: transports
// call it from their own threads.
class ObjectSource {
 public:
  virtual ~ObjectSource() = default;
  // Pins a sealed object: its memory is neither evicted nor reused until
  // Unpin. ObjectNotFound if it is absent, unsealed or being deleted.
  virtual Result<PinnedObject> Pin(const ObjectID& id) = 0;
  // Ends one Pin. `computed_digest` is the digest if the transport had to
  // compute it (the store keeps it for the next pull).
  virtual void Unpin(const ObjectID& id, std::optional<uint64_t> computed_digest) = 0;
};

// Memory pulls write into and pins point into: a store's arena.
struct MemoryRegion {
  uint8_t* base = nullptr;
  uint64_t size = 0;
  int fd = -1;  // the arena's memfd, for transports that can use it
};

struct PullRequest {
  ObjectID id;
  // What the directory said; the holder must agree or the pull fails.
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  // Where the bytes go: data_size + metadata_size bytes inside a registered
  // region, owned by the caller for the length of the pull.
  uint8_t* destination = nullptr;
};

// Which kind of transport carried a pull (for the store's counters).
enum class TransportKind : uint8_t { kTcp, kVerbs };

struct PullResult {
  uint64_t digest = 0;  // the digest (core/digest.h) of what arrived; equal to the holder's
  TransportKind carried_by = TransportKind::kTcp;
  // Where the pull's time went, MonoMicros() on the thread that ran it (0:
  // not measured): it began, its last byte was in, its digest was checked.
  int64_t started_us = 0, landed_us = 0, checked_us = 0;
};

// A pull that the caller's event loop drives, without blocking it and
// without another thread: the caller watches fd() for readability and calls
// OnReadable() whenever it is, until that returns a result. Destroying it
// before then abandons the pull (its connection is closed). Made by
// Transport::StartAsyncPull; used on one thread.
class AsyncPull {
 public:
  virtual ~AsyncPull() = default;
  virtual int fd() const = 0;
  // When a peer that stays silent fails the pull (MonoMicros()); the caller
  // then destroys it and reports `TimedOut()`.
  virtual int64_t deadline_us() const = 0;
  // Reads what has arrived; nullopt while more is to come.
  virtual std::optional<Result<PullResult>> OnReadable() = 0;
  virtual Status TimedOut() const = 0;
  // The pull failed before the holder answered anything, on a pooled
  // connection that may only have died while idle: worth one more try on
  // a new connection (the blocking Pull makes one).
  virtual bool stale_connection() const = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // "tcp" or "verbs": the key of this transport's endpoint in node records.
  virtual const char* name() const = 0;
  // Registers memory once, before Listen. Pull destinations and pinned
  // objects must lie inside registered memory.
  virtual Status RegisterMemory(const MemoryRegion& region) = 0;
  // Starts serving pulls of `source`'s objects. Returns the endpoint to
  // publish (e.g. "10.0.0.1:7400").
  virtual Result<std::string> Listen(ObjectSource* source) = 0;
  // Copies an object from the peer at `endpoint` into request.destination
  // and checks it against the holder's digest. Blocks; thread-safe; many may
  // run at once. Errors: ObjectNotFound (the holder does not have it),
  // Disconnected (the peer is unreachable or went away mid-transfer),
  // PermissionDenied (authentication failed), Corruption (digest mismatch),
  // InvalidArgument (the holder's sizes differ from the request's),
  // ProtocolError (the peer sent garbage).
  virtual Result<PullResult> Pull(const std::string& endpoint, const PullRequest& request) = 0;
  // Starts `request` as an AsyncPull, if this transport can without
  // blocking (TCP: a small object and an idle pooled connection to
  // `endpoint`); nullptr if not, and the caller uses Pull instead. The
  // request has been sent when it returns.
  virtual std::unique_ptr<AsyncPull> StartAsyncPull(const std::string& endpoint,
                                                    const PullRequest& request) {
    (void)endpoint;
    (void)request;
    return nullptr;
  }
  // Stops serving and breaks pulls in flight (they fail). Idempotent.
  virtual void Shutdown() = 0;

  // The connections it holds now, for --metrics (any thread); `known` false
  // where the transport does not count them.
  struct Connections {
    bool known = false;
    uint64_t serving = 0;      // from peers, handshaken
    uint64_t handshaking = 0;  // from peers, in their handshake
    uint64_t outgoing = 0;     // to holders, pooled or pulling
  };
  virtual Connections connections() const { return {}; }
};

}  // namespace plasmon
