#include "store/store.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <climits>
#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <random>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/digest.h"
#include "core/fling.h"
#include "core/protocol.h"
#include "core/size.h"
#include "core/unix_socket.h"
#include "store/fetch.h"
#include "store/object_table.h"
#include "store/seal_watcher.h"
#include "store/session.h"
#include "store/worker.h"

namespace plasmon {

namespace p = protocol;

namespace {
constexpr uint64_t kListenKey = 0;
constexpr uint64_t kWakeKey = 1;
constexpr uint32_t kFirstSessionId = 2;
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxSubscriberBacklog = 16u << 20;
constexpr uint32_t kMaxWaitingGets = 1024;  // per connection, and as many Fetches
// Objects a fetch creates belong to this pseudo-client (sessions start at 2).
constexpr uint32_t kFetchOwner = 1;
// Parked fetches look the directory up again this often, in case a seal
// message was lost (they are woken by the message otherwise).
constexpr int64_t kRecheckUs = 2'000'000;

// The monotonic deadline of a request's timeout, -1 if it has none (0 or -1).
int64_t DeadlineFor(int64_t timeout_ms) {
  if (timeout_ms <= 0) return -1;
  return MonoMicros() + std::min<int64_t>(timeout_ms, INT64_MAX / 4000) * 1000;
}

// Removes `key`'s entry at `deadline_us` (-1: none) from a deadline index.
void EraseDeadline(std::multimap<int64_t, uint64_t>* index, int64_t deadline_us, uint64_t key) {
  if (deadline_us < 0) return;
  auto [lo, hi] = index->equal_range(deadline_us);
  for (auto d = lo; d != hi; ++d) {
    if (d->second == key) {
      index->erase(d);
      return;
    }
  }
}

// A Get that waits for objects to be sealed.
struct PendingGet {
  uint32_t session = 0;
  uint64_t request_id = 0;
  std::vector<ObjectID> ids;
  std::vector<p::GetReply::Entry> entries;
  std::vector<bool> filled;
  size_t remaining = 0;  // entries still waiting
  int64_t deadline_us = -1;  // monotonic; -1: none
};
}  // namespace

class Store::Impl : public TableListener, public ObjectSource {
 public:
  Impl(const StoreOptions& o, Arena arena, UniqueFd listen_fd, UniqueFd epoll_fd, UniqueFd wake_fd)
      : opts_(o),
        arena_(std::move(arena)),
        table_(arena_.base(), arena_.size(), this),
        listen_fd_(std::move(listen_fd)),
        epoll_fd_(std::move(epoll_fd)),
        wake_fd_(std::move(wake_fd)),
        spare_fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)),
        spare_fd2_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {}

  ~Impl() override {
    for (auto& t : transports_) t->Shutdown();  // no more Pin/Unpin calls
    ::unlink(opts_.socket_path.c_str());
  }

  Status Run();
  void Stop() {
    stop_requested_.store(true);
    Wake();
  }
  // Runs `fn` on the loop thread (from any thread).
  void Post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> l(posted_mu_);
      posted_.push_back(std::move(fn));
    }
    Wake();
  }
  const Arena& arena() const { return arena_; }
  // Serves this store's objects through `t` too; returns the endpoint to publish.
  Result<std::string> StartTransport(std::shared_ptr<Transport> t) {
    MemoryRegion region{arena_.base(), arena_.size(), arena_.fd()};
    PLASMON_RETURN_IF_ERROR(t->RegisterMemory(region));
    Result<std::string> ep = t->Listen(this);
    if (!ep.ok()) return ep.status();
    transports_.push_back(std::move(t));
    if (!transfers_) transfers_ = std::make_unique<Worker>(std::max(1, opts_.transfer_threads));
    return ep;
  }
  void JoinCluster(const DirectoryOptions& d) {
    directory_ = std::make_unique<Directory>(d);
    directory_->Start();  // does not wait for Redis: it may be down
    lookups_ = std::make_unique<Worker>();
    if (!transports_.empty()) {
      watcher_ = std::make_unique<SealWatcher>(d, [this](const ObjectID& id, SealWatcher::Event) {
        Post([this, id] { OnWatchEvent(id); });
      });
      watcher_->Start();
    }
  }

  // TableListener
  void OnSealed(const ObjectEntry& e) override;
  void OnRemoved(const ObjectEntry& e, Notification::Kind kind) override;

  // ObjectSource: called by the transport's threads.
  Result<PinnedObject> Pin(const ObjectID& id) override;
  void Unpin(const ObjectID& id, std::optional<uint64_t> computed_digest) override;

 private:
  void Accept();
  void OnReadable(Session* s);
  void OnWritable(Session* s);
  // Handles one frame. Returns false if the session must be closed.
  bool Handle(Session* s, const p::FrameHeader& h, std::string_view body);
  void CloseSession(uint32_t id, const std::string& reason, bool error);
  void Send(Session* s, std::string frame, int pass_fd = -1);
  bool Flush(Session* s);
  void ArmWrite(Session* s, bool on);
  template <typename Msg>
  void Reply(Session* s, const p::FrameHeader& h, const Msg& m) {
    Send(s, p::MakeFrame(h.type | p::kReplyBit, h.request_id, m));
  }

  void DoCreate(Session* s, const p::FrameHeader& h, const p::CreateRequest& r);
  void DoCreateAndSeal(Session* s, const p::FrameHeader& h, const p::CreateAndSealRequest& r);
  void DoGet(Session* s, const p::FrameHeader& h, p::GetRequest r);
  void DoRelease(Session* s, const ObjectID& id);
  void Notify(const Notification& n);
  // Fills entry `i` of `g` if its object is visible; takes a reference.
  bool TryFill(Session* s, PendingGet* g, size_t i);
  void SendGetReply(Session* s, PendingGet* g);
  // Ends a waiting Get: unregisters it and, if `reply`, answers it.
  void EndGet(std::map<uint64_t, PendingGet>::iterator it, bool reply);
  // Fills the waiting Gets that asked for `id`, just sealed.
  void WakeGets(const ObjectID& id);
  void ExpireGets();
  int NextTimeoutMs() const;

  void Wake() {
    uint64_t one = 1;
    ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
    (void)n;
  }
  void RunPosted();
  void DoWhere(Session* s, const p::FrameHeader& h, const ObjectID& id);

  // Fetch: see store/fetch.h for the life of a fetch.
  void DoFetch(Session* s, const p::FrameHeader& h, p::FetchRequest r);
  void StartFetch(const ObjectID& id);
  void LookUp(FetchJob* job, bool use_cache);
  void OnLookedUp(const ObjectID& id, uint64_t seq, Result<std::vector<ObjectLocationRecord>> found);
  void PullNext(FetchJob* job);
  void OnPulled(const ObjectID& id, const FetchCandidate& from, Result<PullResult> r);
  void Park(FetchJob* job);
  // Answers, for `id`, the Fetches with timeout 0 (they do not wait).
  void AnswerNoWait(const ObjectID& id, const Status& result);
  // An object Fetches waited on locally (being created or deleted here) is
  // gone: fetch it from elsewhere.
  void OnLocalGone(const ObjectID& id);
  void OnWatchEvent(const ObjectID& id);
  // Answers, for `id`, every Fetch waiting on it; drops its job unless a
  // transfer is in flight.
  void FinishFetches(const ObjectID& id, const Status& result);
  bool HasWaiters(const ObjectID& id) const { return fetch_waiting_.count(id) > 0; }
  void DropJob(const ObjectID& id);
  void EndFetch(std::map<uint64_t, PendingFetch>::iterator it, bool reply);
  void ExpireFetches();

  StoreOptions opts_;
  Arena arena_;
  ObjectTable table_;
  UniqueFd listen_fd_, epoll_fd_, wake_fd_;
  // Held in reserve for running out of descriptors: freed, they let the store
  // accept-and-close a client it cannot serve, and leave the logger (and a
  // sanitizer's runtime, whose memory probes open a pipe) room to work.
  UniqueFd spare_fd_, spare_fd2_;
  bool stopping_ = false;
  std::atomic<bool> stop_requested_{false};
  std::mutex posted_mu_;
  std::vector<std::function<void()>> posted_;
  std::unique_ptr<Directory> directory_;  // null: single node
  std::unique_ptr<Worker> lookups_;       // directory lookups, off the loop

  // The table's lock. The loop holds it while it works (not while it waits
  // in epoll); transport threads take it to pin objects they send.
  std::mutex table_mu_;
  std::vector<std::shared_ptr<Transport>> transports_;  // preferred first; none: cannot fetch
  // Fetch counters (Stats).
  uint64_t fetched_ = 0, fetched_bytes_ = 0, fetched_verbs_ = 0, pulls_failed_ = 0;
  std::unique_ptr<Worker> transfers_;     // pulls, off the loop
  std::unique_ptr<SealWatcher> watcher_;
  LocationCache location_cache_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::unordered_map<ObjectID, FetchJob, ObjectIDHash> jobs_;
  uint64_t next_fetch_ = 1;
  std::map<uint64_t, PendingFetch> fetches_;
  std::unordered_map<ObjectID, std::vector<uint64_t>, ObjectIDHash> fetch_waiting_;  // id -> fetches
  std::multimap<int64_t, uint64_t> fetch_deadlines_;                                // deadline -> fetch
  bool directory_failing_ = false;  // the last lookup could not reach Redis
  size_t parked_ = 0;            // jobs waiting for a holder to appear
  int64_t next_recheck_us_ = 0;  // when parked jobs look up again
  uint32_t next_session_ = kFirstSessionId;
  std::unordered_map<uint32_t, std::unique_ptr<Session>> sessions_;
  std::vector<uint32_t> subscribers_;

  uint64_t next_get_ = 1;
  std::map<uint64_t, PendingGet> gets_;
  std::unordered_map<ObjectID, std::vector<uint64_t>, ObjectIDHash> waiting_;  // id -> gets
  std::multimap<int64_t, uint64_t> deadlines_;                               // deadline -> get
};

Status Store::Impl::Run() {
  spdlog::info("store serving {} on {} ({} arena{})", FormatSize(arena_.size()), opts_.socket_path,
               opts_.arena.hugepages ? "huge-page" : "memfd",
               arena_.prefaulted() ? ", prefaulted" : "");
  std::vector<epoll_event> events(256);
  while (!stopping_) {
    int n = ::epoll_wait(epoll_fd_.get(), events.data(), static_cast<int>(events.size()),
                         NextTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("epoll_wait", errno);
    }
    std::lock_guard<std::mutex> table_lock(table_mu_);
    for (int i = 0; i < n; i++) {
      uint64_t key = events[i].data.u64;
      if (key == kListenKey) {
        Accept();
        continue;
      }
      if (key == kWakeKey) {
        uint64_t count;
        ssize_t r = ::read(wake_fd_.get(), &count, sizeof(count));
        (void)r;
        RunPosted();
        if (stop_requested_.load()) stopping_ = true;
        continue;
      }
      auto it = sessions_.find(static_cast<uint32_t>(key));
      if (it == sessions_.end()) continue;  // closed earlier in this batch
      Session* s = it->second.get();
      uint32_t ev = events[i].events;
      if (ev & EPOLLOUT) {
        if (!Flush(s)) {
          CloseSession(s->id, "write failed", false);
          continue;
        }
      }
      if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) OnReadable(s);
    }
    ExpireGets();
    ExpireFetches();
  }
  {
    std::lock_guard<std::mutex> l(table_mu_);
    spdlog::info("store shutting down: {} clients, {} objects", sessions_.size(),
                 table_.Stats().object_count);
    while (!sessions_.empty()) CloseSession(sessions_.begin()->first, "store shutting down", false);
  }
  // Unlocked: transport threads may be waiting for the table to pin.
  if (watcher_) watcher_->Stop();          // no more seal events
  for (auto& t : transports_) t->Shutdown();  // breaks pulls in flight
  transfers_.reset();  // their results are posted, handled below
  lookups_.reset();    // finishes queued lookups; their replies find no session
  {
    std::lock_guard<std::mutex> l(table_mu_);
    RunPosted();
  }
  if (directory_) directory_->Stop();
  return Status::OK();
}

void Store::Impl::RunPosted() {
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard<std::mutex> l(posted_mu_);
    fns.swap(posted_);
  }
  for (auto& fn : fns) fn();
}

void Store::Impl::DoWhere(Session* s, const p::FrameHeader& h, const ObjectID& id) {
  if (!directory_) {
    p::WhereReply rep;
    rep.status = Status::InvalidArgument(
        "this store is not part of a cluster (it was started without --redis)");
    Reply(s, h, rep);
    return;
  }
  // Redis answers on a worker thread; the reply is sent from the loop, if the
  // client is still there.
  uint32_t sid = s->id;
  uint64_t request_id = h.request_id;
  lookups_->Submit([this, sid, request_id, id] {
    auto found = directory_->Lookup(id);
    Post([this, sid, request_id, found = std::move(found)] {
      auto it = sessions_.find(sid);
      if (it == sessions_.end()) return;
      p::WhereReply rep;
      if (found.ok()) {
        for (const ObjectLocationRecord& r : *found)
          rep.holders.push_back({r.node_id, r.alive, r.data_size, r.metadata_size,
                                 r.digest_valid, r.digest});
      } else {
        rep.status = Status::Disconnected("the directory (Redis) is unavailable: " +
                                          found.status().message());
      }
      Send(it->second.get(), p::MakeFrame(p::ReplyType(p::MessageType::kWhere), request_id, rep));
    });
  });
}

// ---- ObjectSource ----

Result<PinnedObject> Store::Impl::Pin(const ObjectID& id) {
  std::lock_guard<std::mutex> l(table_mu_);
  ObjectEntry* e = table_.Find(id);
  if (e == nullptr || !e->visible())
    return Status::ObjectNotFound("object " + id.Hex() + " is not in this store");
  table_.AddRef(e);  // neither evicted nor freed by a delete until Unpin
  PinnedObject pin;
  pin.bytes = arena_.base() + e->offset;
  pin.arena_offset = e->offset;
  pin.data_size = e->data_size;
  pin.metadata_size = e->metadata_size;
  pin.digest_valid = e->digest_valid;
  pin.digest = e->digest;
  return pin;
}

void Store::Impl::Unpin(const ObjectID& id, std::optional<uint64_t> computed_digest) {
  Post([this, id, computed_digest] {
    ObjectEntry* e = table_.Find(id);
    if (e == nullptr || e->ref_count == 0) {
      spdlog::error("unpin of {}: the object is not pinned", id.Hex());
      return;
    }
    if (computed_digest && !e->digest_valid) {
      // Still the pinned object: the pin kept it. Tell the directory too.
      e->digest = *computed_digest;
      e->digest_valid = true;
      if (directory_ && !e->delete_pending)
        directory_->Publish(e->id, e->data_size, e->metadata_size, true, e->digest);
    }
    table_.Release(e);
  });
}

// ---- Fetch ----

void Store::Impl::DoFetch(Session* s, const p::FrameHeader& h, p::FetchRequest r) {
  p::FetchReply rep;
  if (r.timeout_ms != 0 && s->pending_fetches >= kMaxWaitingGets) {
    rep.status = Status::InvalidArgument("too many Fetches waiting on this connection (limit " +
                                         std::to_string(kMaxWaitingGets) + ")");
    Reply(s, h, rep);
    return;
  }
  PendingFetch f;
  f.session = s->id;
  f.request_id = h.request_id;
  f.no_wait = r.timeout_ms == 0;
  f.ids = std::move(r.ids);
  f.results.resize(f.ids.size());
  f.done.assign(f.ids.size(), false);
  std::vector<ObjectID> missing;
  for (size_t i = 0; i < f.ids.size(); i++) {
    ObjectEntry* e = table_.Find(f.ids[i]);
    if (e != nullptr && e->visible()) {
      f.done[i] = true;
      continue;
    }
    if (e != nullptr) {
      // Being created (or deleted) here: wait for its seal, or for it to go.
      if (f.no_wait) {
        f.results[i] = Status::ObjectNotSealed("object " + f.ids[i].Hex() +
                                               " is being created (or deleted) on this node");
        f.done[i] = true;
        continue;
      }
      f.remaining++;
      missing.push_back(f.ids[i]);
      continue;
    }
    if (transports_.empty() || !directory_) {
      f.results[i] = Status::ObjectNotFound(
          "object " + f.ids[i].Hex() + " is not here, and this store cannot fetch (it was started " +
          (directory_ ? "without --listen)" : "without --redis)"));
      f.done[i] = true;
      continue;
    }
    f.remaining++;
    missing.push_back(f.ids[i]);
  }
  if (f.remaining == 0) {
    rep.results = std::move(f.results);
    Reply(s, h, rep);
    return;
  }
  uint64_t key = next_fetch_++;
  f.deadline_us = DeadlineFor(r.timeout_ms);
  if (f.deadline_us >= 0) fetch_deadlines_.emplace(f.deadline_us, key);
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
  s->pending_fetches++;
  fetches_.emplace(key, std::move(f));
  for (const ObjectID& id : missing) {
    fetch_waiting_[id].push_back(key);
    if (jobs_.count(id) > 0) {
      // Already being fetched: this request shares that transfer. A parked
      // job answers a no-wait request at once.
      if (jobs_[id].phase == FetchJob::Phase::kParked && r.timeout_ms == 0) Park(&jobs_[id]);
      continue;
    }
    ObjectEntry* e = table_.Find(id);
    if (e != nullptr) continue;  // being created here: its seal answers
    StartFetch(id);
  }
}

void Store::Impl::StartFetch(const ObjectID& id) {
  FetchJob& job = jobs_[id];
  job.id = id;
  LookUp(&job, /*use_cache=*/true);
}

void Store::Impl::LookUp(FetchJob* job, bool use_cache) {
  job->phase = FetchJob::Phase::kLookup;
  if (stopping_ || !lookups_) {
    DropJob(job->id);
    return;
  }
  job->event_seen = false;
  job->lookups++;
  job->from_cache = false;
  if (use_cache) {
    if (const std::vector<FetchCandidate>* c = location_cache_.Find(job->id)) {
      job->candidates = *c;
      job->next = 0;
      job->from_cache = true;
      PullNext(job);
      return;
    }
  }
  ObjectID id = job->id;
  uint64_t seq = ++job->lookup_seq;
  lookups_->Submit([this, id, seq] {
    auto found = directory_->Lookup(id);
    Post([this, id, seq, found = std::move(found)]() mutable {
      OnLookedUp(id, seq, std::move(found));
    });
  });
}

void Store::Impl::OnLookedUp(const ObjectID& id, uint64_t seq,
                             Result<std::vector<ObjectLocationRecord>> found) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;  // finished meanwhile (sealed here)
  FetchJob* job = &it->second;
  // A result for an earlier job of this ID, or one this job no longer waits for.
  if (job->lookup_seq != seq || job->phase != FetchJob::Phase::kLookup) return;
  if (!HasWaiters(id)) {
    DropJob(id);
    return;
  }
  if (!found.ok()) {
    job->last_error = Status::Disconnected("the directory (Redis) is unavailable: " +
                                           found.status().message());
    if (!directory_failing_)
      spdlog::warn("fetch {}: {}", id.Hex(), job->last_error.message());
    directory_failing_ = true;
    Park(job);  // look up again later; the Fetch times out meanwhile
    return;
  }
  if (directory_failing_) {
    // Redis answers again: parked fetches look up now, not at their next check.
    directory_failing_ = false;
    next_recheck_us_ = MonoMicros();
  }
  const std::string self = directory_->options().node_id;
  std::vector<FetchCandidate> candidates;
  std::vector<const ObjectLocationRecord*> holders;
  for (const ObjectLocationRecord& r : *found)
    if (r.node_id != self && r.alive) holders.push_back(&r);
  std::shuffle(holders.begin(), holders.end(), rng_);  // spread the load
  // Each holder over every transport both sides have, the preferred first:
  // a failed RDMA pull falls back to TCP from the same holder.
  for (const ObjectLocationRecord* r : holders) {
    for (size_t t = 0; t < transports_.size(); t++) {
      auto ep = r->endpoints.find(transports_[t]->name());
      if (ep != r->endpoints.end())
        candidates.push_back({r->node_id, ep->second, t, r->data_size, r->metadata_size});
    }
  }
  job->stale = false;
  if (candidates.empty()) {
    if (job->event_seen) {
      LookUp(job, /*use_cache=*/false);  // a seal came while we asked
      return;
    }
    Park(job);
    return;
  }
  location_cache_.Put(id, candidates);
  job->candidates = std::move(candidates);
  job->next = 0;
  PullNext(job);
}

void Store::Impl::PullNext(FetchJob* job) {
  const ObjectID id = job->id;
  if (!HasWaiters(id)) {
    DropJob(id);
    return;
  }
  if (job->next >= job->candidates.size()) {
    location_cache_.Drop(id);
    if ((job->stale || job->from_cache) && job->lookups < 4) {
      LookUp(job, /*use_cache=*/false);  // the directory was behind: ask again
      return;
    }
    if (job->candidates.empty()) {
      Park(job);
      return;
    }
    FinishFetches(id, Status(job->last_error.code(),
                             "fetching " + id.Hex() + " failed from every holder (" +
                                 std::to_string(job->candidates.size()) +
                                 "); the last: " + job->last_error.message()));
    return;
  }
  const FetchCandidate& c = job->candidates[job->next++];
  Result<ObjectEntry*> e = table_.Create(id, c.data_size, c.metadata_size, kFetchOwner);
  if (!e.ok()) {
    if (e.status().IsObjectExists()) {
      // A local client is creating it (or it was just sealed): its seal answers.
      ObjectEntry* cur = table_.Find(id);
      if (cur != nullptr && cur->visible()) {
        FinishFetches(id, Status::OK());
      } else {
        // Its seal answers, or OnLocalGone fetches again if it goes.
        AnswerNoWait(id, Status::ObjectNotSealed("object " + id.Hex() +
                                                 " is being created (or deleted) on this node"));
        DropJob(id);
      }
      return;
    }
    FinishFetches(id, Status(e.status().code(), "cannot make room to fetch " + id.Hex() + ": " +
                                                    e.status().message()));
    return;
  }
  job->phase = FetchJob::Phase::kPull;
  PullRequest req;
  req.id = id;
  req.data_size = c.data_size;
  req.metadata_size = c.metadata_size;
  req.destination = arena_.base() + (*e)->offset;  // owned by kFetchOwner: nothing else frees it
  FetchCandidate from = c;
  spdlog::debug("fetch {}: pulling {} from {} at {} over {}", id.Hex(),
                FormatSize(c.data_size + c.metadata_size), c.node_id, c.endpoint,
                transports_[c.transport]->name());
  transfers_->Submit([this, req, from] {
    Result<PullResult> r = transports_[from.transport]->Pull(from.endpoint, req);
    Post([this, id = req.id, from, r = std::move(r)]() mutable { OnPulled(id, from, std::move(r)); });
  });
}

void Store::Impl::OnPulled(const ObjectID& id, const FetchCandidate& from, Result<PullResult> r) {
  auto it = jobs_.find(id);
  FetchJob* job = it == jobs_.end() ? nullptr : &it->second;
  if (job != nullptr) job->phase = FetchJob::Phase::kLookup;  // no transfer in flight now
  if (!r.ok()) {
    Status st = table_.Abort(id, kFetchOwner);
    if (!st.ok()) spdlog::error("fetch {}: abort: {}", id.Hex(), st.ToString());
    spdlog::warn("fetch {}: pull from {} ({} over {}) failed: {}", id.Hex(), from.node_id,
                 from.endpoint, transports_[from.transport]->name(), r.status().ToString());
    pulls_failed_++;
    location_cache_.Drop(id);  // the next fetch asks the directory
    if (job == nullptr) return;
    job->last_error = Status(r.status().code(), from.node_id + " (" +
                                                    transports_[from.transport]->name() +
                                                    "): " + r.status().message());
    if (r.status().IsObjectNotFound()) {
      job->stale = true;
      // It is gone from that holder whatever the transport: skip its others.
      while (job->next < job->candidates.size() &&
             job->candidates[job->next].node_id == from.node_id)
        job->next++;
    }
    PullNext(job);
    return;
  }
  ObjectEntry* e = table_.Find(id);
  if (e == nullptr || e->state != ObjectState::kCreated || e->creator != kFetchOwner) {
    spdlog::error("fetch {}: the object being received vanished", id.Hex());
    DropJob(id);
    return;
  }
  e->digest = r->digest;  // checked by the transport: no need to hash again
  e->digest_valid = true;
  fetched_++;
  fetched_bytes_ += e->total_size();
  if (std::string_view(transports_[from.transport]->name()) == "verbs") fetched_verbs_++;
  spdlog::debug("fetch {}: {} from {}", id.Hex(), FormatSize(e->total_size()), from.node_id);
  Status st = table_.Seal(id, kFetchOwner);  // publishes; answers the Fetches (OnSealed)
  if (!st.ok()) spdlog::error("fetch {}: seal: {}", id.Hex(), st.ToString());
  DropJob(id);
}

void Store::Impl::AnswerNoWait(const ObjectID& id, const Status& result) {
  auto w = fetch_waiting_.find(id);
  if (w == fetch_waiting_.end()) return;
  std::vector<uint64_t> keys = w->second;
  for (uint64_t key : keys) {
    auto f = fetches_.find(key);
    if (f == fetches_.end() || !f->second.no_wait) continue;
    PendingFetch& pf = f->second;
    for (size_t i = 0; i < pf.ids.size(); i++) {
      if (pf.done[i] || pf.ids[i] != id) continue;
      pf.done[i] = true;
      pf.remaining--;
      pf.results[i] = result;
    }
    auto v = fetch_waiting_.find(id);
    std::erase(v->second, key);
    if (v->second.empty()) fetch_waiting_.erase(v);
    if (pf.remaining == 0) EndFetch(f, /*reply=*/true);
  }
}

void Store::Impl::Park(FetchJob* job) {
  const ObjectID id = job->id;
  // Requests that would not wait get their answer now.
  AnswerNoWait(id, job->last_error.ok() ? Status::ObjectNotFound("no live node holds " + id.Hex())
                                        : job->last_error);
  if (!HasWaiters(id) || stopping_) {
    DropJob(id);
    return;
  }
  job->lookups = 0;  // a later lookup may again retry a directory that was behind
  if (job->phase != FetchJob::Phase::kParked) {
    job->phase = FetchJob::Phase::kParked;
    if (parked_++ == 0) next_recheck_us_ = MonoMicros() + kRecheckUs;
    if (watcher_) watcher_->Watch(id);
  }
}

void Store::Impl::OnLocalGone(const ObjectID& id) {
  if (!HasWaiters(id) || jobs_.count(id) > 0) return;
  ObjectEntry* e = table_.Find(id);
  if (e != nullptr) return;  // created again meanwhile: its seal answers
  if (transports_.empty() || !directory_) {
    FinishFetches(id, Status::ObjectNotFound("object " + id.Hex() + " is not in this store"));
    return;
  }
  StartFetch(id);
}

void Store::Impl::OnWatchEvent(const ObjectID& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  FetchJob* job = &it->second;
  if (!HasWaiters(id) || stopping_) {
    DropJob(id);
    return;
  }
  switch (job->phase) {
    case FetchJob::Phase::kParked:
      parked_--;
      LookUp(job, /*use_cache=*/false);
      break;
    case FetchJob::Phase::kLookup:
      job->event_seen = true;  // the lookup in flight may predate the seal
      break;
    case FetchJob::Phase::kPull:
      break;
  }
}

void Store::Impl::FinishFetches(const ObjectID& id, const Status& result) {
  auto w = fetch_waiting_.find(id);
  if (w != fetch_waiting_.end()) {
    std::vector<uint64_t> keys = std::move(w->second);
    fetch_waiting_.erase(w);
    for (uint64_t key : keys) {
      auto f = fetches_.find(key);
      if (f == fetches_.end()) continue;
      PendingFetch& pf = f->second;
      for (size_t i = 0; i < pf.ids.size(); i++) {
        if (pf.done[i] || pf.ids[i] != id) continue;
        pf.done[i] = true;
        pf.remaining--;
        pf.results[i] = result;
      }
      if (pf.remaining == 0) EndFetch(f, /*reply=*/true);
    }
  }
  auto j = jobs_.find(id);
  if (j != jobs_.end() && j->second.phase != FetchJob::Phase::kPull) DropJob(id);
}

void Store::Impl::DropJob(const ObjectID& id) {
  auto j = jobs_.find(id);
  if (j == jobs_.end()) return;
  if (j->second.phase == FetchJob::Phase::kPull) return;  // OnPulled finishes it
  if (j->second.phase == FetchJob::Phase::kParked) parked_--;
  if (watcher_) watcher_->Unwatch(id);
  jobs_.erase(j);
}

void Store::Impl::EndFetch(std::map<uint64_t, PendingFetch>::iterator it, bool reply) {
  uint64_t key = it->first;
  PendingFetch& f = it->second;
  EraseDeadline(&fetch_deadlines_, f.deadline_us, key);
  for (size_t i = 0; i < f.ids.size(); i++) {
    if (f.done[i]) continue;
    auto w = fetch_waiting_.find(f.ids[i]);
    if (w == fetch_waiting_.end()) continue;
    std::erase(w->second, key);
    if (w->second.empty()) fetch_waiting_.erase(w);  // its job stops at its next step
  }
  auto sit = sessions_.find(f.session);
  if (sit != sessions_.end()) {
    sit->second->pending_fetches--;
    if (reply) {
      for (size_t i = 0; i < f.ids.size(); i++) {
        if (f.done[i]) continue;
        auto j = jobs_.find(f.ids[i]);
        std::string why = "fetching " + f.ids[i].Hex() + " did not finish in time: ";
        if (j == jobs_.end()) {
          why += "it is being created (or deleted) on this node";
        } else if (j->second.phase == FetchJob::Phase::kPull) {
          why += "its transfer is still running";
        } else if (!j->second.last_error.ok()) {
          why += j->second.last_error.message();
        } else {
          why += "no live node held it";
        }
        f.results[i] = Status::Timeout(why);
      }
      p::FetchReply rep;
      rep.results = std::move(f.results);
      Send(sit->second.get(), p::MakeFrame(p::ReplyType(p::MessageType::kFetch), f.request_id, rep));
    }
  }
  fetches_.erase(it);
}

void Store::Impl::ExpireFetches() {
  if (fetch_deadlines_.empty() && parked_ == 0) return;
  int64_t now = MonoMicros();
  while (!fetch_deadlines_.empty() && fetch_deadlines_.begin()->first <= now) {
    EndFetch(fetches_.find(fetch_deadlines_.begin()->second), /*reply=*/true);
  }
  if (parked_ > 0 && now >= next_recheck_us_) {
    // In case a seal message was lost: parked jobs look again, now and then.
    next_recheck_us_ = now + kRecheckUs;
    std::vector<ObjectID> ids;
    for (auto& [id, job] : jobs_)
      if (job.phase == FetchJob::Phase::kParked) ids.push_back(id);
    bool probed = false;
    for (const ObjectID& id : ids) {
      auto it = jobs_.find(id);
      if (it == jobs_.end() || it->second.phase != FetchJob::Phase::kParked) continue;
      if (!HasWaiters(id)) {
        DropJob(id);
        continue;
      }
      // While Redis fails, one lookup probes it: N lookups would queue N
      // timeouts ahead of every Where and new Fetch.
      if (directory_failing_ && probed) continue;
      probed = true;
      parked_--;
      LookUp(&it->second, /*use_cache=*/false);
    }
  }
}

void Store::Impl::Accept() {
  for (;;) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: refuse this one cleanly instead of spinning on it.
        spare_fd_.Reset();
        spare_fd2_.Reset();
        spdlog::warn("out of file descriptors: refusing a client");
        int f = ::accept(listen_fd_.get(), nullptr, nullptr);
        if (f >= 0) ::close(f);
        spare_fd_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        spare_fd2_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (f < 0) return;  // could not even refuse it: back to epoll, never spin
        continue;
      }
      if (errno != EAGAIN) spdlog::warn("accept: {}", std::strerror(errno));
      return;
    }
    auto s = std::make_unique<Session>();
    s->id = next_session_++;
    if (next_session_ == 0) next_session_ = kFirstSessionId;
    s->fd.Reset(fd);
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) s->pid = cred.pid;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = s->id;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      spdlog::warn("epoll_ctl add: {}", std::strerror(errno));
      continue;
    }
    spdlog::debug("client {} connected (pid {})", s->id, s->pid);
    sessions_.emplace(s->id, std::move(s));
  }
}

void Store::Impl::OnReadable(Session* s) {
  const uint32_t sid = s->id;
  for (;;) {
    // Read what is there: a chunk, or the rest of a large frame at once.
    size_t want = kReadChunk;
    if (s->in.size() >= p::kHeaderSize) {
      p::FrameHeader h = p::DecodeHeader(s->in.data());
      size_t frame = p::kHeaderSize + h.body_len;
      if (h.body_len <= p::kMaxRequestBody && frame > s->in.size())
        want = std::max(want, frame - s->in.size());
    }
    char* dst = s->in.Prepare(want);
    ssize_t n = ::recv(s->fd.get(), dst, want, 0);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
      CloseSession(sid, n == 0 ? "disconnected" : std::string("recv: ") + std::strerror(errno),
                   false);
      return;
    }
    s->in.Commit(static_cast<size_t>(n));

    // Handle every complete frame.
    while (s->in.size() >= p::kHeaderSize) {
      p::FrameHeader h = p::DecodeHeader(s->in.data());
      if (h.body_len > p::kMaxRequestBody) {
        CloseSession(sid, "frame of " + std::to_string(h.body_len) + " bytes exceeds the limit of " +
                              std::to_string(p::kMaxRequestBody),
                     true);
        return;
      }
      if (s->in.size() < p::kHeaderSize + h.body_len) break;
      std::string_view body(s->in.data() + p::kHeaderSize, h.body_len);
      bool open = Handle(s, h, body);  // body stays valid: nothing is read meanwhile
      if (!open) return;                // closed
      s->in.Consume(p::kHeaderSize + h.body_len);
    }
    if (static_cast<size_t>(n) < want) break;  // drained
  }
}

bool Store::Impl::Handle(Session* s, const p::FrameHeader& h, std::string_view body) {
  auto bad = [&](const std::string& why) {
    CloseSession(s->id, "protocol error: " + why, true);
    return false;
  };
  if (h.flags != 0) return bad("nonzero flags in header");
  if (h.type & p::kReplyBit) return bad("client sent a reply frame");
  auto type = static_cast<p::MessageType>(h.type);
  if (!s->connected && type != p::MessageType::kConnect) return bad("first message must be Connect");
  if (s->subscriber) return bad("a subscriber connection only receives");

  switch (type) {
    case p::MessageType::kConnect: {
      p::ConnectRequest r;
      if (s->connected) return bad("second Connect");
      if (!p::ParseBody(body, &r)) return bad("malformed Connect");
      if (r.magic != p::kMagic) return bad("wrong magic in Connect");
      p::ConnectReply rep;
      if (r.version != p::kVersion) {
        rep.status = Status::InvalidArgument("protocol version " + std::to_string(r.version) +
                                             " not supported; this store speaks " +
                                             std::to_string(p::kVersion));
        Reply(s, h, rep);
        CloseSession(s->id, "protocol version mismatch", true);
        return false;
      }
      s->connected = true;
      rep.client_id = s->id;
      rep.capacity = table_.allocator().capacity();
      rep.arena_size = arena_.size();
      rep.prefaulted = arena_.prefaulted();
      Send(s, p::MakeFrame(h.type | p::kReplyBit, h.request_id, rep), arena_.fd());
      return true;
    }
    case p::MessageType::kCreate: {
      p::CreateRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Create");
      DoCreate(s, h, r);
      return true;
    }
    case p::MessageType::kSeal:
    case p::MessageType::kAbort: {
      p::IdRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Seal/Abort");
      p::StatusReply rep;
      bool seal = type == p::MessageType::kSeal;
      rep.status = seal ? table_.Seal(r.id, s->id) : table_.Abort(r.id, s->id);
      if (rep.status.ok()) s->creating.erase(r.id);
      if (rep.status.ok() && !seal) OnLocalGone(r.id);
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kCreateAndSeal: {
      p::CreateAndSealRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed CreateAndSeal");
      DoCreateAndSeal(s, h, r);
      return true;
    }
    case p::MessageType::kGet: {
      p::GetRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Get");
      DoGet(s, h, std::move(r));
      return true;
    }
    case p::MessageType::kRelease: {
      p::IdRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Release");
      DoRelease(s, r.id);
      return true;
    }
    case p::MessageType::kContains: {
      p::IdRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Contains");
      p::ContainsReply rep;
      ObjectEntry* e = table_.Find(r.id);
      rep.present = e != nullptr && e->visible();
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kDelete: {
      p::DeleteRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Delete");
      p::DeleteReply rep;
      rep.codes.reserve(r.ids.size());
      for (const ObjectID& id : r.ids) rep.codes.push_back(table_.Delete(id));
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kList: {
      p::ListRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed List");
      p::ListReply rep;
      rep.objects = table_.List(r.has_cursor, r.cursor, r.max, &rep.more);
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kEvict: {
      p::EvictRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Evict");
      p::EvictReply rep;
      std::tie(rep.bytes, rep.count) = table_.Evict(r.bytes);
      if (rep.count > 0)
        spdlog::info("evicted {} objects ({}) at client {}'s request", rep.count,
                     FormatSize(rep.bytes), s->id);
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kStats: {
      if (!body.empty()) return bad("malformed Stats");
      p::StatsReply rep;
      rep.stats = table_.Stats();
      rep.stats.clients = sessions_.size();
      rep.stats.fetched = fetched_;
      rep.stats.fetched_bytes = fetched_bytes_;
      rep.stats.fetched_verbs = fetched_verbs_;
      rep.stats.pulls_failed = pulls_failed_;
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kSubscribe: {
      if (!body.empty()) return bad("malformed Subscribe");
      if (!s->refs.empty() || !s->creating.empty() || s->pending_gets > 0)
        return bad("Subscribe on a connection that holds objects");
      s->subscriber = true;
      subscribers_.push_back(s->id);
      Reply(s, h, p::StatusReply{});
      return true;
    }
    case p::MessageType::kWhere: {
      p::IdRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Where");
      DoWhere(s, h, r.id);
      return true;
    }
    case p::MessageType::kFetch: {
      p::FetchRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Fetch");
      DoFetch(s, h, std::move(r));
      return true;
    }
    case p::MessageType::kNotification:
      break;
  }
  return bad("unknown message type " + std::to_string(h.type));
}

void Store::Impl::DoCreate(Session* s, const p::FrameHeader& h, const p::CreateRequest& r) {
  p::CreateReply rep;
  Result<ObjectEntry*> e = table_.Create(r.id, r.data_size, r.metadata_size, s->id);
  if (e.ok()) {
    s->creating.insert(r.id);
    rep.location = {0, (*e)->offset, r.data_size, r.metadata_size};
  } else {
    rep.status = e.status();
  }
  Reply(s, h, rep);
}

void Store::Impl::DoCreateAndSeal(Session* s, const p::FrameHeader& h,
                                  const p::CreateAndSealRequest& r) {
  p::StatusReply rep;
  Result<ObjectEntry*> e = table_.Create(r.id, r.data.size(), r.metadata.size(), s->id);
  if (e.ok()) {
    uint8_t* dst = arena_.base() + (*e)->offset;
    std::memcpy(dst, r.data.data(), r.data.size());
    std::memcpy(dst + r.data.size(), r.metadata.data(), r.metadata.size());
    rep.status = table_.Seal(r.id, s->id);
  } else {
    rep.status = e.status();
  }
  Reply(s, h, rep);
}

bool Store::Impl::TryFill(Session* s, PendingGet* g, size_t i) {
  ObjectEntry* e = table_.Find(g->ids[i]);
  if (e == nullptr || !e->visible()) return false;
  table_.AddRef(e);
  s->refs[e->id]++;
  g->filled[i] = true;
  g->entries[i].code = StatusCode::kOk;
  g->entries[i].location = {0, e->offset, e->data_size, e->metadata_size};
  return true;
}

// The distinct IDs a Get still waits for: a Get that names an ID many times
// is registered once for it.
static std::vector<ObjectID> UnfilledIds(const PendingGet& g) {
  std::vector<ObjectID> ids;
  for (size_t i = 0; i < g.ids.size(); i++)
    if (!g.filled[i]) ids.push_back(g.ids[i]);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

void Store::Impl::DoGet(Session* s, const p::FrameHeader& h, p::GetRequest r) {
  if (r.timeout_ms != 0 && s->pending_gets >= kMaxWaitingGets) {
    p::GetReply rep;
    rep.status = Status::InvalidArgument("too many Gets waiting on this connection (limit " +
                                         std::to_string(kMaxWaitingGets) + ")");
    Reply(s, h, rep);
    return;
  }
  PendingGet g;
  g.session = s->id;
  g.request_id = h.request_id;
  g.ids = std::move(r.ids);
  g.entries.resize(g.ids.size());
  g.filled.assign(g.ids.size(), false);
  for (size_t i = 0; i < g.ids.size(); i++) {
    if (!TryFill(s, &g, i)) g.remaining++;
  }
  if (g.remaining == 0 || r.timeout_ms == 0) {
    SendGetReply(s, &g);
    return;
  }
  uint64_t key = next_get_++;
  g.deadline_us = DeadlineFor(r.timeout_ms);
  if (g.deadline_us >= 0) deadlines_.emplace(g.deadline_us, key);
  for (const ObjectID& id : UnfilledIds(g)) waiting_[id].push_back(key);
  s->pending_gets++;
  gets_.emplace(key, std::move(g));
}

void Store::Impl::SendGetReply(Session* s, PendingGet* g) {
  p::GetReply rep;
  rep.entries = std::move(g->entries);
  for (size_t i = 0; i < rep.entries.size(); i++) {
    if (g->filled[i]) continue;
    ObjectEntry* e = table_.Find(g->ids[i]);
    rep.entries[i].code = (e == nullptr || e->delete_pending) ? StatusCode::kObjectNotFound
                                                              : StatusCode::kObjectNotSealed;
  }
  Send(s, p::MakeFrame(p::ReplyType(p::MessageType::kGet), g->request_id, rep));
}

void Store::Impl::EndGet(std::map<uint64_t, PendingGet>::iterator it, bool reply) {
  uint64_t key = it->first;
  PendingGet& g = it->second;
  EraseDeadline(&deadlines_, g.deadline_us, key);
  for (const ObjectID& id : UnfilledIds(g)) {
    auto w = waiting_.find(id);
    if (w == waiting_.end()) continue;
    std::erase(w->second, key);
    if (w->second.empty()) waiting_.erase(w);
  }
  auto sit = sessions_.find(g.session);
  if (sit != sessions_.end()) {
    sit->second->pending_gets--;
    if (reply) SendGetReply(sit->second.get(), &g);
  }
  gets_.erase(it);
}

void Store::Impl::WakeGets(const ObjectID& id) {
  auto w = waiting_.find(id);
  if (w == waiting_.end()) return;
  std::vector<uint64_t> keys = std::move(w->second);
  waiting_.erase(w);
  for (uint64_t key : keys) {
    auto it = gets_.find(key);
    if (it == gets_.end()) continue;
    PendingGet& g = it->second;
    Session* s = sessions_.at(g.session).get();
    for (size_t i = 0; i < g.ids.size(); i++) {
      if (!g.filled[i] && g.ids[i] == id && TryFill(s, &g, i)) g.remaining--;
    }
    if (g.remaining == 0) EndGet(it, /*reply=*/true);
  }
}

void Store::Impl::ExpireGets() {
  if (deadlines_.empty()) return;
  int64_t now = MonoMicros();
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    EndGet(gets_.find(deadlines_.begin()->second), /*reply=*/true);
  }
}

int Store::Impl::NextTimeoutMs() const {
  int64_t next = INT64_MAX;
  if (!deadlines_.empty()) next = deadlines_.begin()->first;
  if (!fetch_deadlines_.empty()) next = std::min(next, fetch_deadlines_.begin()->first);
  if (parked_ > 0) next = std::min(next, next_recheck_us_);
  if (next == INT64_MAX) return -1;
  int64_t wait_us = next - MonoMicros();
  if (wait_us <= 0) return 0;
  return static_cast<int>(std::min<int64_t>((wait_us + 999) / 1000, INT_MAX));
}

void Store::Impl::DoRelease(Session* s, const ObjectID& id) {
  auto it = s->refs.find(id);
  if (it == s->refs.end()) {
    spdlog::debug("client {} released {} which it does not hold", s->id, id.Hex());
    return;
  }
  if (--it->second == 0) s->refs.erase(it);
  ObjectEntry* e = table_.Find(id);
  if (e != nullptr) table_.Release(e);
}

void Store::Impl::OnSealed(const ObjectEntry& e) {
  WakeGets(e.id);
  if (!fetch_waiting_.empty()) FinishFetches(e.id, Status::OK());
  if (directory_) directory_->Publish(e.id, e.data_size, e.metadata_size, e.digest_valid, e.digest);
  Notify({Notification::Kind::kSealed, e.id, e.data_size, e.metadata_size});
}

void Store::Impl::OnRemoved(const ObjectEntry& e, Notification::Kind kind) {
  if (directory_) directory_->Withdraw(e.id);
  Notify({kind, e.id, e.data_size, e.metadata_size});
  if (!fetch_waiting_.empty()) {
    ObjectID id = e.id;  // `e` is about to go
    Post([this, id] { OnLocalGone(id); });  // after the table is done removing it
  }
}

void Store::Impl::Notify(const Notification& n) {
  if (subscribers_.empty()) return;
  std::string frame =
      p::MakeFrame(static_cast<uint16_t>(p::MessageType::kNotification), 0, p::NotificationMessage{n});
  for (size_t i = 0; i < subscribers_.size(); i++) {
    auto it = sessions_.find(subscribers_[i]);
    if (it == sessions_.end()) continue;
    Send(it->second.get(), frame);
  }
}

void Store::Impl::Send(Session* s, std::string frame, int pass_fd) {
  s->out_bytes += frame.size();
  s->out.push_back(OutFrame{std::move(frame), pass_fd, 0});
  if (s->out.size() == 1 && !Flush(s)) return;  // closed later by the caller's read path
  size_t limit = s->subscriber ? std::min(kMaxSubscriberBacklog, opts_.max_client_backlog)
                                : opts_.max_client_backlog;
  if (s->out_bytes > limit) {
    // Never block the loop on a client that does not read.
    spdlog::warn("client {} (pid {}) is not reading its replies ({} queued): disconnecting it",
                 s->id, s->pid, FormatSize(s->out_bytes));
    ::shutdown(s->fd.get(), SHUT_RDWR);
  }
}

bool Store::Impl::Flush(Session* s) {
  auto fail = [&] {
    ::shutdown(s->fd.get(), SHUT_RDWR);  // the read path will see EOF and close
    s->out.clear();
    s->out_bytes = 0;
    ArmWrite(s, false);
    return false;
  };
  while (!s->out.empty()) {
    OutFrame& f = s->out.front();
    std::string_view rest = std::string_view(f.bytes).substr(f.sent);
    ssize_t n;
    if (f.pass_fd >= 0 && f.sent == 0) {
      Result<size_t> r = SendWithFd(s->fd.get(), rest, f.pass_fd);
      if (r.ok() && *r == 0) break;  // full: EPOLLOUT resumes
      n = r.ok() ? static_cast<ssize_t>(*r) : -1;
      if (n < 0) {
        spdlog::warn("client {}: {}", s->id, r.status().ToString());
        return fail();
      }
    } else {
      n = ::send(s->fd.get(), rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        return fail();
      }
    }
    f.sent += static_cast<size_t>(n);
    s->out_bytes -= static_cast<size_t>(n);
    if (f.sent == f.bytes.size()) s->out.pop_front();
  }
  ArmWrite(s, !s->out.empty());
  return true;
}

void Store::Impl::ArmWrite(Session* s, bool on) {
  if (s->want_write == on) return;
  s->want_write = on;
  epoll_event ev{};
  ev.events = on ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
  ev.data.u64 = s->id;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, s->fd.get(), &ev);
}

void Store::Impl::CloseSession(uint32_t id, const std::string& reason, bool error) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  std::unique_ptr<Session> s = std::move(it->second);
  sessions_.erase(it);
  if (error) {
    spdlog::warn("closing client {} (pid {}): {}", s->id, s->pid, reason);
  } else {
    spdlog::debug("client {} (pid {}) {}", s->id, s->pid, reason);
  }
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, s->fd.get(), nullptr);
  if (s->subscriber) std::erase(subscribers_, s->id);
  // Gets it was waiting on are dropped; their references go with the rest.
  if (s->pending_gets > 0) {
    for (auto g = gets_.begin(); g != gets_.end();) {
      auto cur = g++;
      if (cur->second.session == s->id) EndGet(cur, /*reply=*/false);
    }
  }
  if (s->pending_fetches > 0) {
    for (auto f = fetches_.begin(); f != fetches_.end();) {
      auto cur = f++;
      if (cur->second.session == s->id) EndFetch(cur, /*reply=*/false);
    }
  }
  size_t aborted = s->creating.size(), released = 0;
  for (const ObjectID& oid : s->creating) {
    Status st = table_.Abort(oid, s->id);
    if (!st.ok()) spdlog::error("cleanup of client {}: {}", s->id, st.ToString());
    OnLocalGone(oid);
  }
  for (const auto& [oid, count] : s->refs) {
    ObjectEntry* e = table_.Find(oid);
    for (uint32_t i = 0; e != nullptr && i < count; i++) {
      table_.Release(e);
      released++;
      if (i + 1 < count) e = table_.Find(oid);
    }
  }
  if (aborted + released > 0)
    spdlog::info("client {} (pid {}) gone: aborted {} unsealed objects, released {} references",
                 s->id, s->pid, aborted, released);
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;
Status Store::Run() { return impl_->Run(); }
void Store::Stop() { impl_->Stop(); }
const Arena& Store::arena() const { return impl_->arena(); }

Result<std::unique_ptr<Store>> Store::Create(const StoreOptions& o) {
  Result<Arena> arena = Arena::Create(o.arena);
  if (!arena.ok()) return arena.status();
  // With a group, the socket is created for its owner alone, given to the
  // group, and only then opened to it: no window where others connect.
  Result<UniqueFd> listen_fd =
      ListenUnix(o.socket_path, o.socket_group >= 0 ? (o.socket_mode & 0700) : o.socket_mode);
  if (!listen_fd.ok()) return listen_fd.status();
  if (o.socket_group >= 0) {
    if (::chown(o.socket_path.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(o.socket_group)) !=
            0 ||
        ::chmod(o.socket_path.c_str(), o.socket_mode) != 0) {
      Status st = Status::FromErrno("giving " + o.socket_path + " to group " +
                                        std::to_string(o.socket_group),
                                    errno);
      ::unlink(o.socket_path.c_str());
      return st;
    }
  }
  UniqueFd epfd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epfd.valid()) return Status::FromErrno("epoll_create1", errno);
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return Status::FromErrno("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenKey;
  if (::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, listen_fd->get(), &ev) != 0)
    return Status::FromErrno("epoll_ctl", errno);
  ev.data.u64 = kWakeKey;
  if (::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, wake.get(), &ev) != 0)
    return Status::FromErrno("epoll_ctl", errno);
  auto impl = std::make_unique<Impl>(o, std::move(*arena), std::move(*listen_fd), std::move(epfd),
                                     std::move(wake));
  std::optional<DirectoryOptions> dir = o.directory;
  for (const std::shared_ptr<Transport>& t : o.transports) {
    if (!dir)
      return Status::InvalidArgument("a transport (--listen) needs a directory (--redis) to publish in");
    Result<std::string> ep = impl->StartTransport(t);
    if (!ep.ok()) return Status(ep.status().code(), std::string(t->name()) + " transport: " +
                                                        ep.status().message());
    dir->endpoints[t->name()] = *ep;
    spdlog::info("serving objects to peers over {} at {}", t->name(), *ep);
  }
  if (dir) impl->JoinCluster(*dir);
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

}  // namespace plasmon
