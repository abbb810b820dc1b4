// Fetcher: makes objects held by other nodes local. It owns everything a
// fetch needs beside the object table: the jobs, the Fetch requests waiting
// on them, the location cache, the seal watcher and the worker threads that
// run the blocking steps (directory lookups, transfers).
//
// A fetch of one ID is a job that the store's loop drives through steps, each
// blocking step running on a worker and posting its result back to the loop:
//   lookup   ask the directory (or the location cache) which live nodes hold it
//   queue    wait for a transfer slot: a holder has at most `per_holder`
//            transfers in flight (one while it is suspect), so that no holder
//            can take every transfer thread and work for the others never
//            queues behind it
//   pull     create the object here (unsealed, invisible), pull its bytes from
//            one holder through a transport (digest checked), seal: the seal
//            publishes the new location and answers the waiting Fetches. A
//            small object on a pooled connection is pulled by the loop
//            itself (Transport::StartAsyncPull): no hand-off to a transfer
//            thread and back, which costs a wake-up each way
//   park     no live node holds it yet: subscribe to its seal channel and
//            look up again when it is sealed somewhere; in case a message was
//            lost, also now and then (per job, backing off exponentially;
//            all jobs together at a bounded rate), until no Fetch waits
// A failed pull (or a create that finds no room for one holder's size) aborts
// the local object and tries the next holder. Holders that disagree on the
// object's size are settled before anything is created: the size most
// holders claim goes first (the smaller on a tie), so that a holder lying
// about the size cannot make this store evict for it. A holder whose
// connection fails (unreachable, silent, hung) is suspect for kSuspectUs:
// it goes last among holders of its size, gets one transfer at a time (a
// probe), and the pulls queued for it move on at once (before the failed
// pull's own next step can start one of them as the probe). Every Fetch naming the ID waits on the one job: concurrent fetches
// share one transfer. Fetch requests time out on their own (the wait queue's
// timers); a job nobody waits for stops at its next step. Directory lookups
// of jobs go to the lookup worker a few at a time, so that a client's Where
// never queues behind thousands of them.
//
// Loop thread only, but for what the workers and the watcher post back.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/event_loop.h"
#include "core/protocol.h"
#include "plasmon/object_id.h"
#include "plasmon/status.h"
#include "store/directory.h"
#include "store/metrics.h"
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
  // Parked fetches are woken by their seal channel. In case a message was
  // lost, each also looks the directory up again after kRecheckUs, then
  // after twice as long each time, up to kMaxRecheckUs (with +-25% jitter);
  // and all jobs together at most kRecheckBatch every kRecheckTickUs.
  static constexpr int64_t kRecheckUs = 2'000'000;
  static constexpr int64_t kMaxRecheckUs = 60'000'000;
  static constexpr size_t kRecheckBatch = 8;
  static constexpr int64_t kRecheckTickUs = 125'000;
  // Lookups of jobs handed to the lookup worker at once (the rest wait here).
  static constexpr int kMaxLookupsInFlight = 8;
  // A holder whose connection failed is suspect this long.
  static constexpr int64_t kSuspectUs = 10'000'000;

  struct Counters {
    uint64_t fetched = 0, fetched_bytes = 0, fetched_rdma = 0, pulls_failed = 0;
    uint64_t pulls_failed_rdma = 0;  // of pulls_failed (--metrics)
    LatencyHistogram latency;        // pulled objects: from the job's start to the seal
  };
  using ReplyFn = std::function<void(uint32_t session, uint64_t request_id, protocol::FetchReply)>;

  // `directory` may be null (a single node: every Fetch of a missing object
  // fails at once); `transports` may be empty (cannot pull). At most
  // `transfer_threads` pulls run at once, at most `per_holder` of them from
  // one holder (0: half of transfer_threads, at least 1).
  Fetcher(EventLoop* loop, ObjectTable* table, Directory* directory,
          std::vector<std::shared_ptr<Transport>> transports, int transfer_threads, int per_holder,
          ReplyFn reply);
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

  // Events of the object table.
  void OnSealed(const ObjectID& id);
  // An object Fetches waited on locally (being created or deleted here) is
  // gone: fetch it from elsewhere.
  void OnLocalGone(const ObjectID& id);
  // The session went away: its Fetches are dropped, unanswered.
  void DropSession(uint32_t session);

  // Shutdown, in this order, with the table unlocked: no more seal events;
  // then (after the transports were shut down) the workers finish and post
  // what they had (run by the caller's final drain of the loop).
  void StopWatcher();
  void StopWorkers();

  const Counters& counters() const { return counters_; }
  // Entries in every holder's queue, stale ones included (for tests).
  size_t QueuedEntries() const;

 private:
  struct Job {
    // kQueued: waiting for a transfer slot of candidates[next - 1]'s holder.
    enum class Phase { kLookup, kQueued, kPull, kParked };
    ObjectID id;
    Phase phase = Phase::kLookup;
    std::vector<FetchCandidate> candidates;  // from the last lookup, in the order tried
    size_t next = 0;                         // next candidate to try
    int lookups = 0;
    uint64_t lookup_seq = 0;  // the lookup in flight; older results are ignored
    bool from_cache = false;  // candidates came from the location cache
    bool cached_nodes = false;  // the lookup may use / used cached node records
    // Looking up again only because the last lookup used cached node
    // records: if the fresh one names the same holders, the fetch has failed.
    bool recheck_nodes = false;
    bool stale = false;       // a holder said it no longer has the object
    bool event_seen = false;  // a seal event came while a lookup was running
    Status last_error;        // why the last pull failed
    // A create for these sizes found no room: skip candidates claiming them.
    std::optional<std::pair<uint64_t, uint64_t>> no_room;
    int64_t recheck_backoff_us = 0;  // the last wait between rechecks while parked
    int64_t recheck_at_us = 0;       // in recheck_schedule_ (while parked)
    uint64_t queue_seq = 0;          // its entry in its holder's queue (while queued)
    // When its steps happened (MonoMicros), for the Fetches that ask: it
    // began, its holders were known, its last pull began and ended (on the
    // loop), and the transport's own times of that pull.
    int64_t started_us = 0, looked_up_us = 0, pull_started_us = 0, pulled_us = 0;
    PullResult pull;
    bool pulled_on_loop = false;
    uint64_t pulled_bytes = 0;
  };
  // A holder as a pull dials it (transport and endpoint): its transfers in
  // flight, the jobs waiting for one of its slots, and whether it is suspect.
  struct Holder {
    int running = 0;
    // Jobs in kQueued, by (ID, queue_seq). A job dropped while queued leaves
    // a stale entry, skipped when popped; they are counted, and compacted
    // away once they outnumber the live ones (a holder at its limit would
    // otherwise collect one per Fetch that expired and came again).
    std::deque<std::pair<ObjectID, uint64_t>> queue;
    size_t stale = 0;
    int64_t suspect_until_us = 0;  // its connection failed: suspect until then
    bool in_ready = false;         // listed in ready_
  };
  // One Fetch request of one client.
  struct Pending : WaitingRequest {
    std::vector<Status> results;
    bool no_wait = false;  // timeout 0: do not wait for an object to appear
    bool want_timing = false;
    int64_t arrived_us = 0;
    std::vector<protocol::FetchTiming> timing;  // one per ID, if want_timing
  };
  // Where `job`'s time went, for a Fetch that arrived at `arrived_us`.
  static protocol::FetchTiming TimingOf(const Job& job, int64_t arrived_us, int64_t now_us);

  void Reply(Pending& f);
  void Expired(Pending& f);
  void StartJob(const ObjectID& id);
  void LookUp(Job* job, bool use_cache);
  void OnLookedUp(const ObjectID& id, uint64_t seq, Result<std::vector<ObjectLocationRecord>> found);
  // Hands queued lookups to the lookup worker, up to kMaxLookupsInFlight.
  void PumpLookups();
  void LookedUp(const ObjectID& id, uint64_t seq, Result<std::vector<ObjectLocationRecord>> found);
  // Orders fresh candidates: by claimed size (most holders first, then the
  // smaller), suspect holders last within a size; logs holders that disagree.
  void OrderCandidates(const ObjectID& id, std::vector<FetchCandidate>* c, bool log);
  void PullNext(Job* job);
  // Every candidate of the job failed: its fetches get the last error.
  void FailFromEveryHolder(Job* job);
  std::string HolderKey(const FetchCandidate& c) const;
  bool Suspect(const Holder& h, int64_t now_us) const { return h.suspect_until_us > now_us; }
  // Starts queued pulls while transfer slots are free.
  void Dispatch();
  // Creates the object and starts the pull of a queued job; false if it did
  // not start one (the job moved on, or ended).
  bool StartPull(Job* job);
  // Runs `req` from `from` with the transport's blocking Pull on a transfer
  // thread; the result comes back to the loop.
  void SubmitPull(const PullRequest& req, const FetchCandidate& from);
  // A pull on the loop (AsyncPull): its connection is readable, or its
  // deadline passed. Ending it unregisters it first.
  void OnLoopPullReadable(const ObjectID& id);
  void OnLoopPullTimeout(const ObjectID& id);
  // Ends every pull on the loop (shutdown): with `report`, their failures
  // are posted to the loop like the transfer threads' results.
  void AbandonLoopPulls(bool report);
  // `on_loop`: the loop ran the pull itself (AsyncPull).
  void OnPulled(const ObjectID& id, const FetchCandidate& from, Result<PullResult> r,
                bool on_loop = false);
  // The pulls queued for a holder a pull just could not reach move on to
  // their next candidate (called before that pull's own next step).
  void FailQueued(const std::string& key, const Status& why);
  // Whether a holder's queue entry is still its job's (the job did not end
  // or move on since).
  bool Live(const std::pair<ObjectID, uint64_t>& entry) const;
  void Park(Job* job);
  void Unpark(Job* job);
  void Recheck();
  void ArmRecheck(int64_t at_us);
  // Every parked job rechecks soon (the rate limit spreads them).
  void RecheckAllSoon();
  // Settles, for `id`, the Fetches with timeout 0 (they do not wait).
  void AnswerNoWait(const ObjectID& id, const Status& result);
  void OnWatchEvent(const ObjectID& id);
  // Settles, for `id`, every Fetch waiting on it; drops its job unless a
  // transfer is in flight.
  void FinishFetches(const ObjectID& id, const Status& result);
  void DropJob(const ObjectID& id);
  // Drops (soon, once for many calls) the jobs no Fetch waits for any more.
  void SweepAbandonedSoon();
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
  std::set<std::pair<int64_t, ObjectID>> recheck_schedule_;  // parked jobs by recheck time
  EventLoop::TimerId recheck_timer_ = EventLoop::kNoTimer;
  int64_t recheck_timer_at_us_ = 0;
  int64_t recheck_not_before_us_ = 0;                       // one batch of rechecks per tick
  std::deque<std::pair<ObjectID, uint64_t>> lookup_queue_;  // (job, lookup_seq) to hand over
  int lookups_in_flight_ = 0;
  const int transfer_threads_;
  const int per_holder_;
  int running_ = 0;  // pulls in flight
  uint64_t queue_seq_ = 0;  // the last queue entry's
  bool dispatching_ = false;
  bool sweep_posted_ = false;
  std::unordered_map<std::string, Holder> holders_;  // by HolderKey
  std::deque<std::string> ready_;                    // holders with queued jobs, served in turn
  // Pulls the loop drives itself (small objects on pooled connections).
  struct LoopPull {
    std::unique_ptr<AsyncPull> pull;
    EventLoop::TimerId timer = EventLoop::kNoTimer;
    PullRequest request;
    FetchCandidate from;
    EventLoop::PollWindow poll;  // the loop polls while the holder answers
  };
  std::unordered_map<ObjectID, LoopPull, ObjectIDHash> loop_pulls_;
  // Lookups the loop sends to Redis itself; the lookup worker runs them
  // while that connection is not up.
  std::unique_ptr<LoopLookups> loop_lookups_;
  std::unique_ptr<Worker> lookups_;    // directory lookups, off the loop
  std::unique_ptr<Worker> transfers_;  // pulls, off the loop
  std::unique_ptr<SealWatcher> watcher_;
};

}  // namespace plasmon
