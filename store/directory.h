// The location directory: what this store tells Redis, and what it asks it.
//
// Each store registers a node record (its ID, transfer endpoints, start time)
// that expires unless a heartbeat renews it, and publishes the location of
// every sealed object it holds. Updates are queued and sent, pipelined, by
// the directory's own thread: a Seal never waits for Redis. If Redis goes
// away, local work goes on; when it comes back, the store registers again and
// re-publishes everything it holds (the directory keeps its own copy of what
// it published, so it needs nothing from the store's event loop to do so).
//
// Key layout: see docs/DIRECTORY.md. REQUIRES: SIGPIPE is ignored in the
// process (hiredis writes with write(); plasmon-store ignores it).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "plasmon/object_id.h"
#include "plasmon/status.h"

struct redisContext;

namespace plasmon {

struct DirectoryOptions {
  std::string redis;     // "HOST:PORT" or "unix:PATH"
  std::string password;  // AUTH, if set
  std::string prefix = "plasmon";
  std::string node_id;
  std::map<std::string, std::string> endpoints;  // transport -> address, e.g. "tcp" -> "10.0.0.1:7000"
  int ttl_ms = 10000;       // a node record lives this long without a heartbeat
  int heartbeat_ms = 2000;  // renewal period
};

// What the directory knows of one object on one node.
struct ObjectLocationRecord {
  std::string node_id;
  bool alive = false;  // the node's record has not expired
  std::map<std::string, std::string> endpoints;  // transport -> address
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  bool digest_valid = false;  // large objects publish before their digest is known
  uint64_t digest = 0;
};

// A connection to Redis, owned; reconnects on demand.
class RedisConnection {
 public:
  explicit RedisConnection(DirectoryOptions opts) : opts_(std::move(opts)) {}
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Connects (and authenticates) if not connected.
  Status Ensure(int timeout_ms);
  void Drop();
  bool connected() const { return ctx_ != nullptr; }
  redisContext* get() { return ctx_; }

 private:
  DirectoryOptions opts_;
  redisContext* ctx_ = nullptr;
};

// The channels a node publishes to when it seals an object are this prefix
// followed by the object's hex ID.
inline std::string SealedChannelPrefix(const std::string& key_prefix) {
  return key_prefix + ":sealed:";
}

// Parses "HOST:PORT" (PORT: 1 to 65535, digits only) or "unix:PATH";
// InvalidArgument otherwise, and for a NUL byte anywhere.
Status ParseRedisAddress(const std::string& addr, std::string* host, int* port, std::string* path);

// An object's location value in Redis: "DATA_SIZE:METADATA_SIZE:DIGEST", the
// digest in hex or "-" if not known yet.
std::string LocationValue(uint64_t data_size, uint64_t metadata_size, bool digest_valid,
                          uint64_t digest);
// Sets the sizes and digest of *out; false if `v` is not exactly a location
// value (no signs, spaces or prefixes; each number fits 64 bits).
bool ParseLocationValue(std::string_view v, ObjectLocationRecord* out);

// Directory::Lookup's script reply, as plain strings: the object's hash
// (node ID, location value, ...), then one entry per node of it, in order:
// its node record (field, value, ...), or nullopt where the reply had no list.
struct LookupReply {
  std::vector<std::string> object;
  std::vector<std::optional<std::vector<std::string>>> nodes;
};
// The holders in `reply`; malformed locations are logged (naming `id`) and
// skipped.
std::vector<ObjectLocationRecord> ParseLookupReply(const ObjectID& id, const LookupReply& reply);

class Directory {
 public:
  explicit Directory(DirectoryOptions opts);
  ~Directory();  // withdraws nothing: a stopped store's record just expires

  // Starts the writer thread. Does not wait for Redis: it may be down.
  void Start();
  void Stop();

  // Queue an update; never blocks on Redis.
  void Publish(const ObjectID& id, uint64_t data_size, uint64_t metadata_size, bool digest_valid,
               uint64_t digest);
  void Withdraw(const ObjectID& id);

  // Where the object is, according to Redis (blocking; any thread). Nodes
  // whose record expired come back with alive false.
  Result<std::vector<ObjectLocationRecord>> Lookup(const ObjectID& id);

  // Whether the writer is connected and has re-published everything.
  bool synced() const;
  const DirectoryOptions& options() const { return opts_; }

  std::string NodeKey(const std::string& node) const { return opts_.prefix + ":node:" + node; }
  std::string ObjectKey(const ObjectID& id) const { return opts_.prefix + ":obj:" + id.Hex(); }
  std::string HeldKey() const { return opts_.prefix + ":held:" + opts_.node_id; }
  std::string SealedChannel(const ObjectID& id) const {
    return SealedChannelPrefix(opts_.prefix) + id.Hex();
  }

 private:
  struct Op {
    bool publish;
    ObjectID id;
  };
  struct Published {
    uint64_t data_size, metadata_size;
    bool digest_valid;
    uint64_t digest;
  };

  void Run();
  Status Resync(RedisConnection* c);
  Status Heartbeat(RedisConnection* c);
  Status Apply(RedisConnection* c, const std::vector<Op>& ops);

  DirectoryOptions opts_;
  int64_t start_time_ms_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool synced_ = false;
  std::deque<Op> queue_;
  std::unordered_map<ObjectID, Published, ObjectIDHash> published_;  // what Redis should say
  std::thread thread_;

  std::mutex lookup_mu_;
  RedisConnection lookup_conn_;
};

}  // namespace plasmon
