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

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/event_loop.h"
#include "core/log_limiter.h"
#include "plasmon/object_id.h"
#include "plasmon/status.h"

struct redisContext;
struct redisReply;
struct redisAsyncContext;

namespace plasmon {

struct DirectoryOptions {
  std::string redis;     // "HOST:PORT" or "unix:PATH"
  std::string password;  // AUTH, if set
  std::string prefix = "plasmon";
  std::string node_id;
  std::map<std::string, std::string> endpoints;  // transport -> address, e.g. "tcp" -> "10.0.0.1:7000"
  int ttl_ms = 10000;       // a node record lives this long without a heartbeat
  int heartbeat_ms = 2000;  // renewal period
  // Updates that met a damaged object record are retried at each heartbeat,
  // this many per beat, taking turns (lowered by tests).
  size_t damaged_retries_per_heartbeat = 1000;
  // Publish and Withdraw do not wake the writer; the caller calls Kick()
  // soon after (the store does from a timer on its loop, so that the writer
  // wakes once per batch of updates, not in the middle of every request).
  bool caller_kicks = false;
  // A lookup that may use cached node records (NodeRecords::kCached) takes a
  // holder's record from what earlier lookups found, if they found it less
  // than this long ago (0: never cached).
  int node_cache_ms = 2000;
};

// Whether a lookup may take holders' node records from the directory's
// cache (see Directory::Lookup).
enum class NodeRecords { kFresh, kCached };

// What the directory knows of one object on one node.
struct ObjectLocationRecord {
  std::string node_id;
  bool alive = false;  // the node's record has not expired
  std::map<std::string, std::string> endpoints;  // transport -> address
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
  bool digest_valid = false;  // large objects publish before their digest is known
  uint64_t digest = 0;
  bool node_cached = false;  // alive and endpoints came from the node-record cache
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

// A lookup returns at most this many holders of one object (the most a Where
// reply carries, protocol::kMaxHolders); it says how many more there were.
constexpr uint64_t kMaxLookupHolders = 4096;

// What one lookup found.
struct LookupResult {
  std::vector<ObjectLocationRecord> holders;  // at most kMaxLookupHolders
  uint64_t omitted = 0;    // holders past kMaxLookupHolders, not looked at
  uint64_t malformed = 0;  // holders skipped: a location value or node record that is malformed
  std::string problem;     // what was wrong with the first of those ("" if none)
  bool scanned = false;    // answered by the HSCAN of a kCached lookup, not the script
};

// Directory::Lookup's script reply, as plain strings and counts: the number
// of fields in the object's record, the holders the script skipped (their
// node record is malformed) and what was wrong with the first, the object's
// hash as kept (node ID, location value, ...), then one entry per kept holder,
// in order: its node record (field, value, ...), or nullopt where the reply
// had no list.
struct LookupReply {
  uint64_t fields = 0;
  uint64_t malformed_nodes = 0;
  std::string problem;
  std::vector<std::string> object;
  std::vector<std::optional<std::vector<std::string>>> nodes;
};
// The holders in `reply`, with what was left out; malformed locations (in
// the record of `id`) are counted and skipped.
LookupResult ParseLookupReply(const ObjectID& id, const LookupReply& reply);

class Directory {
 public:
  explicit Directory(DirectoryOptions opts);
  ~Directory();  // withdraws nothing: a stopped store's record just expires

  // Starts the writer thread. Does not wait for Redis: it may be down.
  void Start();
  void Stop();

  // Queue an update; never blocks on Redis. True if the queue was empty
  // (with caller_kicks: a Kick is due).
  bool Publish(const ObjectID& id, uint64_t data_size, uint64_t metadata_size, bool digest_valid,
               uint64_t digest);
  bool Withdraw(const ObjectID& id);
  // Wakes the writer to send what is queued.
  void Kick() { cv_.notify_one(); }

  // Where the object is, according to Redis (blocking; any thread). Nodes
  // whose record expired come back with alive false; malformed records are
  // skipped (and logged, at most once per 10 s). Disconnected when Redis
  // cannot be reached; Corruption, naming the key, when the object's record
  // is not a hash.
  //
  // With kCached, a lookup whose holders' node records are all in the cache
  // asks Redis only for the object's record, with one plain HSCAN; the
  // holders' records come from earlier lookups (DirectoryOptions::
  // node_cache_ms) and are marked node_cached. Otherwise (a holder not in the
  // cache, a record too large for one HSCAN page, anything unexpected) it
  // runs the lookup script, as kFresh always does, and caches what it found.
  // The script costs Redis about 8 us more than the HSCAN, on the path of
  // every small fetch; a cached record can be stale (a node that restarted
  // with another endpoint, or died), so a fetch that fails from such holders
  // looks up again with kFresh.
  Result<std::vector<ObjectLocationRecord>> Lookup(const ObjectID& id,
                                                   NodeRecords nodes = NodeRecords::kFresh);
  // The same, on a connection of its own (a client's Where does not wait for
  // fetches' lookups), with what was left out.
  Result<LookupResult> LookupForClient(const ObjectID& id);

  // Whether the writer is connected and has re-published everything.
  bool synced() const;
  // For --metrics (any thread).
  struct Counters {
    bool synced = false;
    uint64_t queued = 0;            // updates not yet taken by the writer
    uint64_t failed_updates = 0;    // updates in batches that failed (re-published on resync)
    // Fetches' lookups answered (Lookup and LoopLookups; not clients' Where):
    // by one HSCAN, the holders' node records cached, or by the script.
    uint64_t lookups_scanned = 0;
    uint64_t lookups_scripted = 0;
  };
  Counters counters() const;
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

  // One batch of updates, and for each command the object whose record it
  // writes (nullopt for this node's own keys and PUBLISH).
  struct Batch {
    std::vector<std::vector<std::string>> cmds;
    std::vector<std::optional<ObjectID>> objects;
    void Add(std::vector<std::string> cmd, std::optional<ObjectID> object = std::nullopt);
  };

  void Run();
  Status Resync(RedisConnection* c);
  // Renews the node record. Sets *lost if it was gone or malformed (Redis was
  // flushed, failed over to an empty replica, or the record expired): what
  // this node published may be gone too.
  Status Heartbeat(RedisConnection* c, bool* lost);
  Status Apply(RedisConnection* c, const std::vector<Op>& ops);
  // Sends `batch`. A damaged object record (not a hash) costs only the
  // updates of that object, retried at every heartbeat; any other error
  // fails the batch. Runs on the writer's thread.
  Status Send(RedisConnection* c, const Batch& batch);
  void AddUpdate(const Op& op, Batch* batch);  // REQUIRES: mu_ held
  Result<LookupResult> Query(RedisConnection* c, const ObjectID& id,
                             NodeRecords nodes = NodeRecords::kFresh);
  // A lookup's command, and what its reply says (for LoopLookups too).
  // By the script's SHA1 (EVALSHA: Redis neither receives nor hashes the
  // script again), or the script itself (EVAL, when Redis answers NOSCRIPT:
  // restarted, flushed, or failed over).
  std::vector<std::string> LookupCommand(const ObjectID& id, bool by_sha = true) const;
  Result<LookupResult> OnLookupReply(const ObjectID& id, const redisReply* reply);
  // The HSCAN of a kCached lookup, and the holders it found if every one's
  // node record is cached (nullopt: run the script).
  bool node_cache_enabled() const { return opts_.node_cache_ms > 0; }
  std::vector<std::string> ScanCommand(const ObjectID& id) const;
  std::optional<LookupResult> OnScanReply(const ObjectID& id, const redisReply* reply);
  // ParseLookupReply, and the (rate-limited) warning if it skipped records.
  LookupResult Parsed(const ObjectID& id, const LookupReply& reply);
  friend class LoopLookups;

  DirectoryOptions opts_;
  int64_t start_time_ms_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool synced_ = false;
  uint64_t failed_updates_ = 0;
  std::deque<Op> queue_;
  std::unordered_map<ObjectID, Published, ObjectIDHash> published_;  // what Redis should say
  std::thread thread_;
  // The writer's: objects whose update failed on a damaged record, ordered
  // so that the retries take turns: each heartbeat retries the next few
  // after damaged_cursor_ (wrapping), so that records that stay damaged
  // cannot keep the others from ever being retried.
  std::set<ObjectID> damaged_;
  std::optional<ObjectID> damaged_cursor_;  // the last one retried

  std::mutex lookup_mu_;
  RedisConnection lookup_conn_;
  std::mutex client_lookup_mu_;
  RedisConnection client_lookup_conn_;
  // Holders' node records (field, value, ...) that lookup scripts returned,
  // or {} for a holder without one (its record expired: the node is dead),
  // and when each was cached (MonoMicros). Any lookup's thread.
  struct CachedNode {
    std::vector<std::string> record;
    int64_t cached_us = 0;
  };
  static constexpr size_t kMaxCachedNodes = 65536;  // cleared when it grows past
  std::atomic<uint64_t> lookups_scanned_{0}, lookups_scripted_{0};
  void CountLookup(const LookupResult& r) {
    (r.scanned ? lookups_scanned_ : lookups_scripted_).fetch_add(1, std::memory_order_relaxed);
  }
  std::mutex node_cache_mu_;
  std::unordered_map<std::string, CachedNode> node_cache_;
  // Damaged records, written or looked up: one line per 10 s per kind, the
  // rest counted ("suppressed N similar warnings").
  LogLimiter warnings_{LogLimiter::Options{10000, 1, 10, 16}};
};

// Lookups of a Directory from an event loop, without blocking it and without
// a hand-off to another thread: hiredis's asynchronous API, driven by the
// loop (epoll readiness calls redisAsyncHandleRead/Write), on a connection
// of its own. Replies come back in order, so a lookup that gets no answer
// within kTimeoutMs fails, with every later one, and the connection is
// dropped. Until it is connected (it connects in the background at the
// first Start, and again at most once per kRetryUs after a failure; a
// connect has kTimeoutMs), Start refuses and the caller looks up the
// blocking way, as it always does for a Redis named by a host name (hiredis
// would resolve it with a blocking getaddrinfo()). Loop thread only.
class LoopLookups {
 public:
  using Done = std::function<void(Result<std::vector<ObjectLocationRecord>>)>;
  static constexpr int64_t kTimeoutMs = 2000;
  static constexpr int64_t kRetryUs = 1'000'000;

  LoopLookups(EventLoop* loop, Directory* directory);
  ~LoopLookups();  // pending lookups are dropped, their Done not run
  LoopLookups(const LoopLookups&) = delete;
  LoopLookups& operator=(const LoopLookups&) = delete;

  // Sends the lookup of `id`; `done` runs on the loop with its result, never
  // before Start returns. False (and `done` never runs) when not connected.
  bool Start(const ObjectID& id, Done done, NodeRecords nodes = NodeRecords::kFresh);
  bool connected() const { return ready_; }
  size_t in_flight() const { return pending_.size(); }

 private:
  struct Pending {
    uint64_t seq;
    ObjectID id;
    Done done;
    int64_t deadline_us;
    EventLoop::PollWindow poll;  // the loop polls while Redis answers
    bool scan = false;           // a kCached lookup's HSCAN, not the script
  };
  void Connect();
  // Sends `p`'s lookup (EVALSHA, or EVAL after a NOSCRIPT) and queues it
  // (moving from `p`); false, and `p` as it was, if hiredis refuses it.
  // Except from inside a hiredis reply callback (in_reply_), the command is
  // written at once rather than when the loop next sees the socket writable:
  // that saves two epoll_ctl calls and a round of the loop per lookup, on the
  // path of a fetch (the socket nearly always takes the few bytes at once).
  bool Send(Pending& p, bool by_sha);
  void CancelConnectTimer();
  // The connection failed or was dropped: every pending lookup fails with
  // `why`, and the next connect waits kRetryUs.
  void Drop(const Status& why);
  void Watch(uint32_t events);  // the events of the context's fd to watch
  // hiredis's hooks for starting and stopping to read or write.
  template <uint32_t kEvent, bool kOn>
  static void Interest(void* self) {
    auto* l = static_cast<LoopLookups*>(self);
    if (kEvent == EPOLLOUT && l->deferring_write_) {
      l->write_wanted_ = kOn;  // Send writes it itself
      return;
    }
    l->Watch(kOn ? l->events_ | kEvent : l->events_ & ~kEvent);
  }
  void ArmTimer();
  void OnTimer();
  static void OnReply(redisAsyncContext* ac, void* reply, void* privdata);
  static void OnConnected(const redisAsyncContext* ac, int status);
  static void OnDisconnected(const redisAsyncContext* ac, int status);

  EventLoop* loop_;
  Directory* directory_;
  redisAsyncContext* ac_ = nullptr;
  int fd_ = -1;           // registered with the loop
  uint32_t events_ = 0;   // what it watches
  bool deferring_write_ = false;  // in Send: hiredis's write interest is noted, not watched
  bool write_wanted_ = false;
  // In a reply callback: no write from here (hiredis 0.14 frees the context
  // at once when a write fails, under the reply loop that called us).
  bool in_reply_ = false;
  // In Send's write: a failure drops the connection there, and the lookups
  // it fails are answered from the loop (Drop posts them), not inside Start.
  bool in_send_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // for what Drop posts
  bool ready_ = false;    // connected (and authenticated, if need be)
  bool usable_ = true;    // false for a Redis named by a host name (see Connect)
  EventLoop::TimerId connect_timer_ = EventLoop::kNoTimer;
  int64_t retry_at_us_ = 0;
  uint64_t seq_ = 0;
  std::deque<Pending> pending_;  // in the order sent, as the replies come
  EventLoop::TimerId timer_ = EventLoop::kNoTimer;
};

}  // namespace plasmon
