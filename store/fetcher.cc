#include "store/fetcher.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/clock.h"
#include "core/size.h"

namespace plasmon {

namespace p = protocol;

// ---- LocationCache ----

const std::vector<FetchCandidate>* LocationCache::Find(const ObjectID& id, int64_t now_us) {
  auto it = map_.find(id);
  if (it == map_.end()) return nullptr;
  if (now_us - it->second->time_us > kTtlUs) {
    lru_.erase(it->second);
    map_.erase(it);
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return &it->second->candidates;
}

void LocationCache::Put(const ObjectID& id, std::vector<FetchCandidate> c, int64_t now_us) {
  auto it = map_.find(id);
  if (it != map_.end()) {
    it->second->candidates = std::move(c);
    it->second->time_us = now_us;
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  if (capacity_ == 0) return;
  if (map_.size() >= capacity_) {
    map_.erase(lru_.back().id);
    lru_.pop_back();
  }
  lru_.push_front(Entry{id, std::move(c), now_us});
  map_.emplace(id, lru_.begin());
}

void LocationCache::Drop(const ObjectID& id) {
  auto it = map_.find(id);
  if (it == map_.end()) return;
  lru_.erase(it->second);
  map_.erase(it);
}

// ---- Fetcher ----

Fetcher::Fetcher(EventLoop* loop, ObjectTable* table, Directory* directory,
                 std::vector<std::shared_ptr<Transport>> transports, int transfer_threads,
                 ReplyFn reply)
    : loop_(loop),
      table_(table),
      directory_(directory),
      transports_(std::move(transports)),
      reply_(std::move(reply)),
      waiting_(loop, [this](Pending& f) { Reply(f); }, [this](Pending& f) { Expired(f); }) {
  if (directory_ == nullptr) return;
  lookups_ = std::make_unique<Worker>();
  if (transports_.empty()) return;
  transfers_ = std::make_unique<Worker>(std::max(1, transfer_threads));
  watcher_ = std::make_unique<SealWatcher>(directory_->options(),
                                           [this](const ObjectID& id, SealWatcher::Event) {
                                             loop_->Post([this, id] { OnWatchEvent(id); });
                                           });
  watcher_->Start();
}

Fetcher::~Fetcher() {
  StopWatcher();
  StopWorkers();
  if (recheck_timer_ != EventLoop::kNoTimer) loop_->CancelTimer(recheck_timer_);
}

void Fetcher::StopWatcher() {
  if (watcher_) watcher_->Stop();
}

void Fetcher::StopWorkers() {
  transfers_.reset();  // their results are posted to the loop
  lookups_.reset();    // finishes queued lookups; their replies find no session
}

void Fetcher::LookUpForClient(const ObjectID& id, LookupFn done) {
  lookups_->Submit([this, id, done = std::move(done)]() mutable {
    auto found = directory_->Lookup(id);
    loop_->Post([done = std::move(done), found = std::move(found)]() mutable {
      done(std::move(found));
    });
  });
}

void Fetcher::Request(uint32_t session, uint64_t request_id, p::FetchRequest r) {
  Pending f;
  f.session = session;
  f.request_id = request_id;
  f.no_wait = r.timeout_ms == 0;
  f.InitSlots(std::move(r.ids));
  f.results.resize(f.ids.size());
  std::vector<ObjectID> missing;
  for (size_t i = 0; i < f.ids.size(); i++) {
    ObjectEntry* e = table_->Find(f.ids[i]);
    if (e != nullptr && e->visible()) {
      f.Settle(i);
      continue;
    }
    if (e != nullptr) {
      // Being created (or deleted) here: wait for its seal, or for it to go.
      if (f.no_wait) {
        f.results[i] = Status::ObjectNotSealed("object " + f.ids[i].Hex() +
                                               " is being created (or deleted) on this node");
        f.Settle(i);
        continue;
      }
      missing.push_back(f.ids[i]);
      continue;
    }
    if (!can_fetch()) {
      f.results[i] = Status::ObjectNotFound(
          "object " + f.ids[i].Hex() + " is not here, and this store cannot fetch (it was started " +
          (directory_ ? "without --listen)" : "without --redis)"));
      f.Settle(i);
      continue;
    }
    missing.push_back(f.ids[i]);
  }
  if (f.remaining == 0) {
    Reply(f);
    return;
  }
  waiting_.Add(std::move(f), DeadlineAfterMs(r.timeout_ms));
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
  for (const ObjectID& id : missing) {
    auto j = jobs_.find(id);
    if (j != jobs_.end()) {
      // Already being fetched: this request shares that transfer. A parked
      // job answers a no-wait request at once.
      if (j->second.phase == Job::Phase::kParked && r.timeout_ms == 0) Park(&j->second);
      continue;
    }
    if (table_->Find(id) != nullptr) continue;  // being created here: its seal answers
    StartJob(id);
  }
}

void Fetcher::Reply(Pending& f) {
  p::FetchReply rep;
  rep.results = std::move(f.results);
  reply_(f.session, f.request_id, std::move(rep));
}

void Fetcher::Expired(Pending& f) {
  for (size_t i = 0; i < f.ids.size(); i++) {
    if (f.done[i]) continue;
    auto j = jobs_.find(f.ids[i]);
    std::string why = "fetching " + f.ids[i].Hex() + " did not finish in time: ";
    if (j == jobs_.end()) {
      why += "it is being created (or deleted) on this node";
    } else if (j->second.phase == Job::Phase::kPull) {
      why += "its transfer is still running";
    } else if (!j->second.last_error.ok()) {
      why += j->second.last_error.message();
    } else {
      why += "no live node held it";
    }
    f.results[i] = Status::Timeout(why);
  }
  Reply(f);
}

void Fetcher::StartJob(const ObjectID& id) {
  Job& job = jobs_[id];
  job.id = id;
  LookUp(&job, /*use_cache=*/true);
}

void Fetcher::LookUp(Job* job, bool use_cache) {
  Unpark(job);
  job->phase = Job::Phase::kLookup;
  if (loop_->stopping() || !lookups_) {
    DropJob(job->id);
    return;
  }
  job->event_seen = false;
  job->lookups++;
  job->from_cache = false;
  if (use_cache) {
    if (const std::vector<FetchCandidate>* c = location_cache_.Find(job->id, MonoMicros())) {
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
    loop_->Post([this, id, seq, found = std::move(found)]() mutable {
      OnLookedUp(id, seq, std::move(found));
    });
  });
}

void Fetcher::OnLookedUp(const ObjectID& id, uint64_t seq,
                         Result<std::vector<ObjectLocationRecord>> found) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;  // finished meanwhile (sealed here)
  Job* job = &it->second;
  // A result for an earlier job of this ID, or one this job no longer waits for.
  if (job->lookup_seq != seq || job->phase != Job::Phase::kLookup) return;
  if (!HasWaiters(id)) {
    DropJob(id);
    return;
  }
  if (!found.ok()) {
    job->last_error = Status::Disconnected("the directory (Redis) is unavailable: " +
                                           found.status().message());
    if (!directory_failing_) spdlog::warn("fetch {}: {}", id.Hex(), job->last_error.message());
    directory_failing_ = true;
    Park(job);  // look up again later; the Fetch times out meanwhile
    return;
  }
  if (directory_failing_) {
    // Redis answers again: parked fetches look up now, not at their next check.
    directory_failing_ = false;
    if (parked_ > 0) ArmRecheck(MonoMicros());
  }
  const std::string& self = directory_->options().node_id;
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
  location_cache_.Put(id, candidates, MonoMicros());
  job->candidates = std::move(candidates);
  job->next = 0;
  PullNext(job);
}

void Fetcher::PullNext(Job* job) {
  const ObjectID id = job->id;
  if (!HasWaiters(id)) {
    DropJob(id);
    return;
  }
  if (job->next >= job->candidates.size()) {
    location_cache_.Drop(id);
    if ((job->stale || job->from_cache) && job->lookups < kMaxLookups) {
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
  Result<ObjectEntry*> e = table_->Create(id, c.data_size, c.metadata_size, kOwner);
  if (!e.ok()) {
    if (e.status().IsObjectExists()) {
      // A local client is creating it (or it was just sealed): its seal answers.
      ObjectEntry* cur = table_->Find(id);
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
  job->phase = Job::Phase::kPull;
  PullRequest req;
  req.id = id;
  req.data_size = c.data_size;
  req.metadata_size = c.metadata_size;
  req.destination = table_->arena_base() + (*e)->offset;  // owned by kOwner: nothing else frees it
  FetchCandidate from = c;
  spdlog::debug("fetch {}: pulling {} from {} at {} over {}", id.Hex(),
                FormatSize(c.data_size + c.metadata_size), c.node_id, c.endpoint,
                transports_[c.transport]->name());
  transfers_->Submit([this, req, from] {
    Result<PullResult> r = transports_[from.transport]->Pull(from.endpoint, req);
    loop_->Post([this, id = req.id, from, r = std::move(r)]() mutable {
      OnPulled(id, from, std::move(r));
    });
  });
}

void Fetcher::OnPulled(const ObjectID& id, const FetchCandidate& from, Result<PullResult> r) {
  auto it = jobs_.find(id);
  Job* job = it == jobs_.end() ? nullptr : &it->second;
  if (job != nullptr) job->phase = Job::Phase::kLookup;  // no transfer in flight now
  const char* via = transports_[from.transport]->name();
  if (!r.ok()) {
    Status st = table_->Abort(id, kOwner);
    if (!st.ok()) spdlog::error("fetch {}: abort: {}", id.Hex(), st.ToString());
    spdlog::warn("fetch {}: pull from {} ({} over {}) failed: {}", id.Hex(), from.node_id,
                 from.endpoint, via, r.status().ToString());
    counters_.pulls_failed++;
    location_cache_.Drop(id);  // the next fetch asks the directory
    if (job == nullptr) return;
    job->last_error =
        Status(r.status().code(), from.node_id + " (" + via + "): " + r.status().message());
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
  ObjectEntry* e = table_->Find(id);
  if (e == nullptr || e->state != ObjectState::kCreated || e->creator != kOwner) {
    spdlog::error("fetch {}: the object being received vanished", id.Hex());
    DropJob(id);
    return;
  }
  e->digest = r->digest;  // checked by the transport: no need to hash again
  e->digest_valid = true;
  counters_.fetched++;
  counters_.fetched_bytes += e->total_size();
  if (r->carried_by == TransportKind::kVerbs) counters_.fetched_rdma++;
  spdlog::debug("fetch {}: {} from {}", id.Hex(), FormatSize(e->total_size()), from.node_id);
  Status st = table_->Seal(id, kOwner);  // publishes; answers the Fetches (OnSealed)
  if (!st.ok()) spdlog::error("fetch {}: seal: {}", id.Hex(), st.ToString());
  DropJob(id);
}

void Fetcher::AnswerNoWait(const ObjectID& id, const Status& result) {
  waiting_.Resolve(id, [&](Pending& f, size_t i) {
    if (!f.no_wait) return false;
    f.results[i] = result;
    return true;
  });
}

void Fetcher::Park(Job* job) {
  const ObjectID id = job->id;
  // Requests that would not wait get their answer now.
  AnswerNoWait(id, job->last_error.ok() ? Status::ObjectNotFound("no live node holds " + id.Hex())
                                        : job->last_error);
  if (!HasWaiters(id) || loop_->stopping()) {
    DropJob(id);
    return;
  }
  job->lookups = 0;  // a later lookup may again retry a directory that was behind
  if (job->phase != Job::Phase::kParked) {
    job->phase = Job::Phase::kParked;
    if (parked_++ == 0) ArmRecheck(MonoMicros() + kRecheckUs);
    if (watcher_) watcher_->Watch(id);
  }
}

void Fetcher::Unpark(Job* job) {
  if (job->phase != Job::Phase::kParked) return;
  job->phase = Job::Phase::kLookup;
  if (--parked_ == 0 && recheck_timer_ != EventLoop::kNoTimer) {
    loop_->CancelTimer(recheck_timer_);
    recheck_timer_ = EventLoop::kNoTimer;
  }
}

void Fetcher::ArmRecheck(int64_t at_us) {
  if (recheck_timer_ != EventLoop::kNoTimer) loop_->CancelTimer(recheck_timer_);
  recheck_timer_ = loop_->AddTimer(at_us, [this] {
    recheck_timer_ = EventLoop::kNoTimer;
    Recheck();
  });
}

void Fetcher::Recheck() {
  // In case a seal message was lost: parked jobs look again, now and then.
  std::vector<ObjectID> ids;
  for (auto& [id, job] : jobs_)
    if (job.phase == Job::Phase::kParked) ids.push_back(id);
  bool probed = false;
  for (const ObjectID& id : ids) {
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.phase != Job::Phase::kParked) continue;
    if (!HasWaiters(id)) {
      DropJob(id);
      continue;
    }
    // While Redis fails, one lookup probes it: N lookups would queue N
    // timeouts ahead of every Where and new Fetch.
    if (directory_failing_ && probed) continue;
    probed = true;
    Unpark(&it->second);
    LookUp(&it->second, /*use_cache=*/false);
  }
  if (parked_ > 0 && recheck_timer_ == EventLoop::kNoTimer)
    ArmRecheck(MonoMicros() + kRecheckUs);
}

void Fetcher::OnLocalGone(const ObjectID& id) {
  if (!HasWaiters(id) || jobs_.count(id) > 0) return;
  if (table_->Find(id) != nullptr) return;  // created again meanwhile: its seal answers
  if (!can_fetch()) {
    FinishFetches(id, Status::ObjectNotFound("object " + id.Hex() + " is not in this store"));
    return;
  }
  StartJob(id);
}

void Fetcher::OnWatchEvent(const ObjectID& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job* job = &it->second;
  if (!HasWaiters(id) || loop_->stopping()) {
    DropJob(id);
    return;
  }
  switch (job->phase) {
    case Job::Phase::kParked:
      Unpark(job);
      LookUp(job, /*use_cache=*/false);
      break;
    case Job::Phase::kLookup:
      job->event_seen = true;  // the lookup in flight may predate the seal
      break;
    case Job::Phase::kPull:
      break;
  }
}

void Fetcher::OnSealed(const ObjectID& id) {
  if (waiting_.size() > 0) FinishFetches(id, Status::OK());
}

void Fetcher::FinishFetches(const ObjectID& id, const Status& result) {
  waiting_.Resolve(id, [&](Pending& f, size_t i) {
    f.results[i] = result;
    return true;
  });
  auto j = jobs_.find(id);
  if (j != jobs_.end() && j->second.phase != Job::Phase::kPull) DropJob(id);
}

void Fetcher::DropJob(const ObjectID& id) {
  auto j = jobs_.find(id);
  if (j == jobs_.end()) return;
  if (j->second.phase == Job::Phase::kPull) return;  // OnPulled finishes it
  Unpark(&j->second);
  if (watcher_) watcher_->Unwatch(id);
  jobs_.erase(j);
}

}  // namespace plasmon
