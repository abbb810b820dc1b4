// Fetcher: makes objects held by other nodes local. It owns everything a
// fetch needs beside the object table: the jobs, the Fetch requests waiting
// on them, the location cache, the seal watcher and the worker threads that
// run the blocking steps (directory lookups, transfers).
//
// A fetch of one ID is a job that the store's loop drives through steps, each
// blocking step running on a worker and posting its result back to the loop:
//   lookup   ask the directory (or the location cache) which live nodes hold it
//   pull     create the object here (unsealed, invisible), pull its bytes from
//            one holder through a transport (digest checked), seal: the seal
//            publishes the new location and answers the waiting Fetches
//   park     no live node holds it yet: subscribe to its seal channel and
//            look up again when it is sealed somewhere (or every few seconds,
//            in case a message was lost), until no Fetch waits any more
// A failed pull aborts the local object and tries the next holder. Every
// Fetch naming the ID waits on the one job: concurrent fetches share one
// transfer. Fetch requests time out on their own (the wait queue's timers);
// a job nobody waits for stops at its next step.
//
// Loop thread only, but for what the workers and the watcher post back.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/event_loop.h"
#include "core/protocol.h"
#include "plasmon/object_id.h"
#include "plasmon/status.h"
#include "store/directory.h"
#include "store/object_table.h"
#include "store/seal_watcher.h"
#include "store/wait_queue.h"
#include "store/worker.h"
#include "transport/transport.h"

namespace plasmon {

// One node that holds an object, as far as the directory knows.
struct FetchCandidate {
  std::string node_id;
  std::string endpoint;  // for transport number `transport` of this store
  size_t transport = 0;
  uint64_t data_size = 0;
  uint64_t metadata_size = 0;
};

// Recent lookups, so that fetching an object whose holders are known skips
// the directory round trip. Entries expire after a while; a failed pull drops
// its entry; beyond its capacity the least recently used entry goes.
class LocationCache {
 public:
  static constexpr int64_t kTtlUs = 10'000'000;
  static constexpr size_t kDefaultCapacity = 65536;

  explicit LocationCache(size_t capacity = kDefaultCapacity) : capacity_(capacity) {}
  // The holders, if looked up less than kTtlUs ago (the entry becomes the
  // most recently used).
  const std::vector<FetchCandidate>* Find(const ObjectID& id, int64_t now_us);
  void Put(const ObjectID& id, std::vector<FetchCandidate> c, int64_t now_us);
  void Drop(const ObjectID& id);
  size_t size() const { return map_.size(); }

 private:
  struct Entry {
    ObjectID id;
    std::vector<FetchCandidate> candidates;
    int64_t time_us = 0;
  };
  size_t capacity_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<ObjectID, std::list<Entry>::iterator, ObjectIDHash> map_;
};

class Fetcher {
 public:
  // Objects a fetch creates belong to this pseudo-client (sessions start at 2).
  static constexpr uint32_t kOwner = 1;
  // A pull that finds the directory behind (the holder no longer has the
  // object, or a cached location is stale) looks up again, this many times
  // in all, before it reports the failure.
  static constexpr int kMaxLookups = 4;
  // Parked fetches look the directory up again this often, in case a seal
  // message was lost (they are woken by the message otherwise).
  static constexpr int64_t kRecheckUs = 2'000'000;

  struct Counters {
    uint64_t fetched = 0, fetched_bytes = 0, fetched_rdma = 0, pulls_failed = 0;
  };
  using ReplyFn = std::function<void(uint32_t session, uint64_t request_id, protocol::FetchReply)>;
  using LookupFn = std::function<void(Result<std::vector<ObjectLocationRecord>>)>;

  // `directory` may be null (a single node: every Fetch of a missing object
  // fails at once); `transports` may be empty (cannot pull).
  Fetcher(EventLoop* loop, ObjectTable* table, Directory* directory,
          std::vector<std::shared_ptr<Transport>> transports, int transfer_threads, ReplyFn reply);
  ~Fetcher();
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;

  bool can_fetch() const { return directory_ != nullptr && !transports_.empty(); }
  const std::vector<std::shared_ptr<Transport>>& transports() const { return transports_; }

  // A client's Fetch: answered through ReplyFn, at once or when done.
  void Request(uint32_t session, uint64_t request_id, protocol::FetchRequest r);
  // Fetches queued for `session` (to cap them per connection).
  uint32_t WaitingFor(uint32_t session) const { return waiting_.CountFor(session); }
  // Whether any Fetch waits.
  bool waiting() const { return waiting_.size() > 0; }
  // A directory lookup for a client (Where), on the lookup worker; `done`
  // runs on the loop. REQUIRES: a directory.
  void LookUpForClient(const ObjectID& id, LookupFn done);

  // Events of the object table.
  void OnSealed(const ObjectID& id);
  // An object Fetches waited on locally (being created or deleted here) is
  // gone: fetch it from elsewhere.
  void OnLocalGone(const ObjectID& id);
  // The session went away: its Fetches are dropped, unanswered.
  void DropSession(uint32_t session) { waiting_.DropSession(session); }

  // Shutdown, in this order, with the table unlocked: no more seal events;
  // then (after the transports were shut down) the workers finish and post
  // what they had (run by the caller's final drain of the loop).
  void StopWatcher();
  void StopWorkers();

  const Counters& counters() const { return counters_; }

 private:
  struct Job {
    enum class Phase { kLookup, kPull, kParked };
    ObjectID id;
    Phase phase = Phase::kLookup;
    std::vector<FetchCandidate> candidates;  // from the last lookup, in the order tried
    size_t next = 0;                         // next candidate to try
    int lookups = 0;
    uint64_t lookup_seq = 0;  // the lookup in flight; older results are ignored
    bool from_cache = false;  // candidates came from the location cache
    bool stale = false;       // a holder said it no longer has the object
    bool event_seen = false;  // a seal event came while a lookup was running
    Status last_error;        // why the last pull failed
  };
  // One Fetch request of one client.
  struct Pending : WaitingRequest {
    std::vector<Status> results;
    bool no_wait = false;  // timeout 0: do not wait for an object to appear
  };

  void Reply(Pending& f);
  void Expired(Pending& f);
  void StartJob(const ObjectID& id);
  void LookUp(Job* job, bool use_cache);
  void OnLookedUp(const ObjectID& id, uint64_t seq, Result<std::vector<ObjectLocationRecord>> found);
  void PullNext(Job* job);
  void OnPulled(const ObjectID& id, const FetchCandidate& from, Result<PullResult> r);
  void Park(Job* job);
  void Unpark(Job* job);
  void Recheck();
  void ArmRecheck(int64_t at_us);
  // Settles, for `id`, the Fetches with timeout 0 (they do not wait).
  void AnswerNoWait(const ObjectID& id, const Status& result);
  void OnWatchEvent(const ObjectID& id);
  // Settles, for `id`, every Fetch waiting on it; drops its job unless a
  // transfer is in flight.
  void FinishFetches(const ObjectID& id, const Status& result);
  void DropJob(const ObjectID& id);
  bool HasWaiters(const ObjectID& id) const { return waiting_.Waiting(id); }

  EventLoop* loop_;
  ObjectTable* table_;
  Directory* directory_;
  std::vector<std::shared_ptr<Transport>> transports_;  // preferred first
  ReplyFn reply_;
  WaitQueue<Pending> waiting_;
  std::unordered_map<ObjectID, Job, ObjectIDHash> jobs_;
  LocationCache location_cache_;
  std::mt19937_64 rng_{std::random_device{}()};
  Counters counters_;
  bool directory_failing_ = false;  // the last lookup could not reach Redis
  size_t parked_ = 0;               // jobs waiting for a holder to appear
  EventLoop::TimerId recheck_timer_ = EventLoop::kNoTimer;
  std::unique_ptr<Worker> lookups_;    // directory lookups, off the loop
  std::unique_ptr<Worker> transfers_;  // pulls, off the loop
  std::unique_ptr<SealWatcher> watcher_;
};

}  // namespace plasmon
