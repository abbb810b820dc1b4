// plasmon::Client: the library applications use to talk to their node's store.
//
//   plasmon::Client c;
//   if (plasmon::Status st = c.Connect("/tmp/plasmon.sock"); !st.ok()) ...
//   plasmon::Result<plasmon::MutableBuffer> buf = c.Create(id, size);  // writable shared memory
//   if (!buf.ok()) ...                      // buf.status(): ObjectExists, OutOfMemory, ...
//   fill(buf->data, buf->size);             // fields: the bytes to write, in place
//   if (plasmon::Status st = c.Seal(id); !st.ok()) ...  // now immutable and visible
//   auto got = c.Get({id}, /*timeout_ms=*/1000);
//   if (got.ok() && (*got)[0].valid())      // a missing object is an invalid buffer
//     use((*got)[0].data(), (*got)[0].size());  // no copy: the store's memory
//
// Thread safety: one Client may be used from several threads at once; each
// call blocks only its own thread (a Get waiting for a seal does not hold up
// other threads' calls). Connect must finish before other calls start.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "plasmon/object_id.h"
#include "plasmon/status.h"
#include "plasmon/types.h"

namespace plasmon {

namespace internal {
class Reference;
class ClientImpl;
}  // namespace internal

// A sealed object's bytes, read-only and in place in the store's memory.
// Copies share one reference to the object; the last copy to go releases it.
// The release reaches the store with this client's next request, or within
// 1 ms, whichever comes first (riding along saves the store a wake-up).
// A buffer stays readable after its Client is gone.
class ObjectBuffer {
 public:
  ObjectBuffer() = default;

  // Whether the object was found. If not, status() says why: ObjectNotFound
  // (no such object) or ObjectNotSealed (it exists but was not sealed in time).
  bool valid() const { return ref_ != nullptr; }
  const Status& status() const { return status_; }

  const ObjectID& id() const { return id_; }
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const uint8_t* metadata() const { return metadata_; }
  uint64_t metadata_size() const { return metadata_size_; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }
  std::string_view metadata_view() const {
    return {reinterpret_cast<const char*>(metadata_), metadata_size_};
  }

 private:
  friend class internal::ClientImpl;
  ObjectID id_;
  Status status_;
  std::shared_ptr<internal::Reference> ref_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  const uint8_t* metadata_ = nullptr;
  uint64_t metadata_size_ = 0;
};

// The writable data of an object being created. Valid until Seal or Abort.
struct MutableBuffer {
  ObjectID id;
  uint8_t* data = nullptr;
  uint64_t size = 0;
};

// How this process talks to the store (Client::Connect).
struct ConnectOptions {
  // How long a request may go unanswered before the call returns Timeout:
  // every call but the waits of Get and Fetch, which get this long on top
  // of their own timeout (none if that is -1), and Connect itself. The
  // connection stays, and so does everything this client holds: a store that
  // was only slow (or stopped a while) goes on serving it. What a timed-out
  // request did once it is answered after all is undone: a Get's references
  // are released, a Create's object is aborted; other requests may have
  // taken effect (a Delete, a Seal). -1: no deadline.
  int64_t request_timeout_ms = 10'000;
  // Use the store's shared index, if it offers one (docs/FAST_PATH.md): a
  // Get of sealed objects, their release and Contains then read and write
  // shared memory only, with no round trip to the store. false: every call
  // goes through the socket, as with a store started with --no-shared-index.
  bool shared_index = true;
  // With the shared index: a Create of a small object (up to 16 KiB with its
  // metadata) is placed by this client in arena space the store leased to
  // it, with no round trip, and its Seal creates and seals it in one round
  // trip (create+write+seal: one round trip in all instead of two). The
  // price: until that Seal the store does not know the object (List and
  // Stats do not show it, a Get of it from another client waits as for an
  // absent one, another client may create the same ID, and this Seal then
  // fails with ObjectExists), and up to 256 KiB of the store stay leased to
  // this client while it is connected. Off: every Create asks the store.
  bool leased_creates = false;
};

// Options of one client connection (Client::SetOptions).
struct ClientOptions {
  // Bytes reserved for the objects this client creates (Arrow Plasma's
  // output memory quota); 0: none. Its objects count against the quota, not
  // against the rest of the store; when it needs room it evicts its own
  // objects, least recently used first, never other clients'. A client that
  // creates and holds objects can fill its quota and no more. Clients
  // without a quota share what the quotas leave. The quota ends with the
  // connection; its objects then stay, shared.
  uint64_t memory_quota = 0;
};

// Where a Fetch spent its time inside the store (Client::Fetch with a
// report), so that a slow fetch can be taken apart: the client's own wall
// time minus in_store_us is the cost of reaching the store and back.
struct FetchReport {
  struct Id {
    bool pulled = false;           // pulled from another node (else: it was local, or failed)
    bool shared = false;           // joined a transfer an earlier request had started
    bool cached_location = false;  // its holders came from the store's location cache
    bool rdma = false;             // carried by RDMA READ (else TCP)
    bool on_loop = false;          // pulled by the store's event loop itself, no hand-off
    // Microseconds per stage, in order: the directory lookup (or cache), the
    // wait for a transfer slot and the create, the hand-off to the thread
    // that runs the pull (0 when the store's loop runs it), the transfer
    // itself (request, reply and bytes), checking the digest, the hand-off
    // back to the store's loop, and seal, publish and reply.
    uint32_t lookup_us = 0, queue_us = 0, dispatch_us = 0, transfer_us = 0, digest_us = 0,
             back_us = 0, seal_us = 0;
    uint64_t bytes = 0;  // pulled (data and metadata)
  };
  uint32_t in_store_us = 0;  // the store read the request -> it sent the reply
  std::vector<Id> ids;       // one per requested ID
};

struct GetOptions {
  // Pull objects that are not in the local store from other nodes first
  // (cluster only; see Client::Fetch). The timeout covers the fetch.
  bool fetch = false;
};

// Events from the store, read from their own connection (see Subscribe).
class Subscription {
 public:
  Subscription();
  Subscription(Subscription&&) noexcept;
  Subscription& operator=(Subscription&&) noexcept;
  ~Subscription();

  // Readable (poll/epoll) when a notification is waiting.
  int fd() const;
  // The next event: waits up to timeout_ms (0 polls, -1 forever); Timeout if
  // none came, Disconnected if the store went away.
  Result<Notification> Next(int timeout_ms);

 private:
  friend class internal::ClientImpl;
  struct State;
  std::unique_ptr<State> state_;
};

class Client {
 public:
  Client();
  ~Client();  // disconnects
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Connects to the store at `socket_path` and maps its memory, touching
  // none of it (the cost does not grow with the store's size): a large
  // object's pages are mapped when it is created or got. Timeout if the
  // store does not answer within options.request_timeout_ms.
  Status Connect(const std::string& socket_path, const ConnectOptions& options = {});
  // Closes the connection. The store releases every reference this client
  // holds and aborts every object it created and did not seal.
  void Disconnect();
  bool connected() const;

  // Creates an object of `data_size` bytes with `metadata` stored after it,
  // and returns its writable data. Errors: ObjectExists, OutOfMemory (no room
  // even after evicting unreferenced objects), InvalidArgument.
  // With ConnectOptions::leased_creates, a small object is placed without a
  // round trip and created at its Seal (see there).
  Result<MutableBuffer> Create(const ObjectID& id, uint64_t data_size,
                               std::string_view metadata = {});
  // Makes an object this client created immutable and visible to all.
  // The creator holds no reference afterwards: Get it to read it.
  Status Seal(const ObjectID& id);
  // Discards an object this client created and has not sealed.
  Status Abort(const ObjectID& id);
  // Create, copy in and seal, in one round trip. For objects up to 1 MiB
  // (data and metadata together); InvalidArgument beyond.
  Status CreateAndSeal(const ObjectID& id, std::string_view data, std::string_view metadata = {});
  // Several objects at once, in one round trip: one Status per object, as
  // CreateAndSeal would return it. `metadata` is empty (none) or one per
  // object. Data and metadata of all objects together up to 1 MiB, and at
  // most 16384 objects; InvalidArgument beyond.
  Result<std::vector<Status>> CreateAndSeal(const std::vector<ObjectID>& ids,
                                            const std::vector<std::string_view>& data,
                                            const std::vector<std::string_view>& metadata = {});

  // One buffer per ID, in order, each holding a reference. Waits until each
  // object is sealed or `timeout_ms` passes (0 polls, -1 waits forever). A
  // missing object comes back as an invalid buffer, not as an error.
  // With the shared index, sealed objects are found and pinned in shared
  // memory, with no round trip; only the others are asked of the store.
  // With options.fetch, objects missing here are fetched from other nodes and
  // a failed fetch's error is the buffer's status.
  Result<std::vector<ObjectBuffer>> Get(const std::vector<ObjectID>& ids, int64_t timeout_ms,
                                        const GetOptions& options = {});
  // Drops one reference this client holds (taken by Get), before the buffer
  // holding it goes. With several held (several Gets of `id`), it is the
  // newest one still held: that of the latest of those Gets, so that Get,
  // read, Release leaves a buffer kept from an earlier Get valid. The released
  // buffer (and its copies) must not be read afterwards, and its end sends
  // nothing; every other buffer still releases its own reference when it goes.
  // Like a buffer's release, it reaches the store with the next request or
  // within 1 ms. InvalidArgument if this client holds no reference to `id`;
  // Disconnected when not connected (never, or no longer).
  Status Release(const ObjectID& id);

  // Whether a sealed object with this ID is in the store (answered from the
  // shared index when it can be: no round trip).
  Result<bool> Contains(const ObjectID& id);
  // Whether this connection uses the store's shared index: offered by the
  // store, connected, in the process that connected, and mapped (the index
  // and the pin page are mapped at the first call that can use them, this
  // one included; false if they could not be).
  bool shared_index() const;
  // Every object in the store, in ID order.
  Result<std::vector<ObjectInfo>> List();
  // Deletes objects; one Status per ID: OK (deleted), ObjectInUse (referenced:
  // deleted when the last reference goes; invisible from now on),
  // ObjectNotFound, ObjectNotSealed (still being created; not deleted).
  Result<std::vector<Status>> Delete(const std::vector<ObjectID>& ids);
  // Marks sealed objects as just used, so that eviction takes them last,
  // without getting them (Arrow Plasma's Refresh). One Status per ID: OK,
  // ObjectNotFound, ObjectNotSealed.
  Result<std::vector<Status>> Refresh(const std::vector<ObjectID>& ids);
  // The digest of a sealed object's data followed by its metadata (Arrow
  // Plasma's Hash), for objects of every size: xxh3-64 of the bytes up to
  // 64 KiB, else xxh3-64 of the xxh3-64s of its 64 KiB blocks (8 bytes
  // little-endian each). Computed when first asked for if the store did not
  // compute it at seal. ObjectNotFound, ObjectNotSealed.
  Result<uint64_t> Digest(const ObjectID& id);
  // Sets this connection's options (once). InvalidArgument if the quota is
  // set already or is more than what other clients' quotas leave.
  Status SetOptions(const ClientOptions& options);

  // Evicts unreferenced objects, least recently used first, until at least
  // `bytes` are freed or none is left. Returns the bytes freed.
  Result<uint64_t> Evict(uint64_t bytes);
  Result<StoreStats> Stats();

  // The nodes of the cluster that hold the object, according to the
  // directory (Redis): at most 4096; `left_out`, if given, says how many more
  // there were and how many malformed records were skipped. InvalidArgument
  // on a store that is not in a cluster; Disconnected if Redis is
  // unreachable; Corruption, naming the key, if the object's record in Redis
  // is malformed.
  Result<std::vector<ObjectHolder>> Where(const ObjectID& id, HoldersLeftOut* left_out = nullptr);

  // Makes objects local: the store pulls each one it lacks from a node that
  // holds it, checks its digest and seals it here (and publishes its new
  // location). One Status per ID: OK (local now), Timeout (no node held it
  // before the deadline, or the transfer did not finish in time), or why the
  // transfer failed after every holder was tried (Disconnected, Corruption,
  // PermissionDenied, OutOfMemory, ...). An object that no node holds yet is
  // waited for until `timeout_ms` (-1 forever; 0: ObjectNotFound at once).
  // Concurrent fetches of one object share one transfer.
  // With `report`, the store also says where the time went (FetchReport).
  Result<std::vector<Status>> Fetch(const std::vector<ObjectID>& ids, int64_t timeout_ms,
                                    FetchReport* report = nullptr);

  // Opens a second connection on which the store reports every seal, delete
  // and eviction, in order.
  Result<Subscription> Subscribe();

 private:
  std::shared_ptr<internal::ClientImpl> impl_;
};

}  // namespace plasmon
