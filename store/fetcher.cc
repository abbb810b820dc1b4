#include "store/fetcher.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

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

namespace {

std::string Sizes(uint64_t data, uint64_t metadata) {
  return std::to_string(data) + "+" + std::to_string(metadata) + " bytes";
}

bool IsUnreachable(const Status& st) { return st.IsDisconnected() || st.IsTimeout(); }

}  // namespace

Fetcher::Fetcher(EventLoop* loop, ObjectTable* table, Directory* directory,
                 std::vector<std::shared_ptr<Transport>> transports, int transfer_threads,
                 int per_holder, ReplyFn reply)
    : loop_(loop),
      table_(table),
      directory_(directory),
      transports_(std::move(transports)),
      reply_(std::move(reply)),
      waiting_(loop, [this](Pending& f) { Reply(f); }, [this](Pending& f) { Expired(f); }),
      transfer_threads_(std::max(1, transfer_threads)),
      per_holder_(per_holder > 0 ? std::min(per_holder, transfer_threads_)
                                 : std::max(1, transfer_threads_ / 2)) {
  if (directory_ == nullptr) return;
  lookups_ = std::make_unique<Worker>();
  loop_lookups_ = std::make_unique<LoopLookups>(loop_, directory_);
  if (transports_.empty()) return;
  transfers_ = std::make_unique<Worker>(transfer_threads_);
  watcher_ = std::make_unique<SealWatcher>(directory_->options(),
                                           [this](const ObjectID& id, SealWatcher::Event) {
                                             loop_->Post([this, id] { OnWatchEvent(id); });
                                           });
  watcher_->Start();
}

Fetcher::~Fetcher() {
  StopWatcher();
  AbandonLoopPulls(/*report=*/false);  // nothing would run what they post
  StopWorkers();
  if (recheck_timer_ != EventLoop::kNoTimer) loop_->CancelTimer(recheck_timer_);
}

void Fetcher::StopWatcher() {
  if (watcher_) watcher_->Stop();
}

void Fetcher::StopWorkers() {
  AbandonLoopPulls(/*report=*/true);
  loop_lookups_.reset();  // their jobs end with the store
  transfers_.reset();  // their results are posted to the loop
  lookups_.reset();    // finishes queued lookups; their replies find no session
}

void Fetcher::Request(uint32_t session, uint64_t request_id, p::FetchRequest r) {
  Pending f;
  f.session = session;
  f.request_id = request_id;
  f.no_wait = r.timeout_ms == 0;
  f.want_timing = (r.flags & p::kFetchWantTiming) != 0;
  f.arrived_us = MonoMicros();
  f.InitSlots(std::move(r.ids));
  f.results.resize(f.ids.size());
  if (f.want_timing) f.timing.resize(f.ids.size());
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
  if (f.want_timing) {
    rep.has_timing = true;
    rep.in_store_us = static_cast<uint32_t>(std::max<int64_t>(0, MonoMicros() - f.arrived_us));
    rep.timing = std::move(f.timing);
  }
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
    } else if (j->second.phase == Job::Phase::kQueued) {
      why += "it waits for a transfer slot of " + j->second.candidates[j->second.next - 1].node_id;
      if (!j->second.last_error.ok()) why += " (before: " + j->second.last_error.message() + ")";
    } else if (!j->second.last_error.ok()) {
      why += j->second.last_error.message();
    } else {
      why += "no live node held it";
    }
    f.results[i] = Status::Timeout(why);
  }
  Reply(f);
  SweepAbandonedSoon();  // its parked jobs would otherwise wait for their next recheck
}

void Fetcher::DropSession(uint32_t session) {
  waiting_.DropSession(session);
  SweepAbandonedSoon();
}

void Fetcher::SweepAbandonedSoon() {
  if (sweep_posted_ || jobs_.empty()) return;
  sweep_posted_ = true;
  loop_->Post([this] {
    sweep_posted_ = false;
    std::vector<ObjectID> abandoned;
    for (const auto& [id, job] : jobs_)
      if (job.phase != Job::Phase::kPull && !HasWaiters(id)) abandoned.push_back(id);
    for (const ObjectID& id : abandoned) DropJob(id);
  });
}

void Fetcher::StartJob(const ObjectID& id) {
  Job& job = jobs_[id];
  job.id = id;
  job.started_us = MonoMicros();
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
  // A first lookup may take holders' node records from the directory's
  // cache; one after a failure (or a seal event) asks for them afresh.
  job->cached_nodes = use_cache;
  if (use_cache) {
    if (const std::vector<FetchCandidate>* c = location_cache_.Find(job->id, MonoMicros())) {
      job->candidates = *c;
      OrderCandidates(job->id, &job->candidates, /*log=*/false);
      job->next = 0;
      job->no_room.reset();
      job->from_cache = true;
      job->looked_up_us = MonoMicros();
      PullNext(job);
      return;
    }
  }
  lookup_queue_.emplace_back(job->id, ++job->lookup_seq);
  PumpLookups();
}

void Fetcher::PumpLookups() {
  while (lookups_in_flight_ < kMaxLookupsInFlight && !lookup_queue_.empty() && lookups_) {
    auto [id, seq] = lookup_queue_.front();
    lookup_queue_.pop_front();
    auto j = jobs_.find(id);
    if (j == jobs_.end() || j->second.lookup_seq != seq || j->second.phase != Job::Phase::kLookup)
      continue;  // finished or moved on meanwhile
    if (!HasWaiters(id)) {
      DropJob(id);
      continue;
    }
    lookups_in_flight_++;
    // On the loop when its connection is up: no hand-off to the worker and
    // back. Either way the result comes in on the loop.
    const NodeRecords nodes = j->second.cached_nodes ? NodeRecords::kCached : NodeRecords::kFresh;
    if (loop_lookups_ &&
        loop_lookups_->Start(
            id, [this, id = id, seq = seq](auto found) { LookedUp(id, seq, std::move(found)); },
            nodes))
      continue;
    lookups_->Submit([this, id = id, seq = seq, nodes] {
      auto found = directory_->Lookup(id, nodes);
      loop_->Post([this, id, seq, found = std::move(found)]() mutable {
        LookedUp(id, seq, std::move(found));
      });
    });
  }
}

void Fetcher::LookedUp(const ObjectID& id, uint64_t seq,
                       Result<std::vector<ObjectLocationRecord>> found) {
  lookups_in_flight_--;
  OnLookedUp(id, seq, std::move(found));
  PumpLookups();
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
  if (found.status().IsCorruption()) {
    // This object's record is malformed (Redis answers): say so now rather
    // than wait it out as if Redis were down, and slow nobody else's lookups.
    spdlog::warn("fetch {}: {}", id.Hex(), found.status().message());
    FinishFetches(id, found.status());
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
    // Redis answers again: parked fetches look up soon, not at their next check.
    directory_failing_ = false;
    RecheckAllSoon();
  }
  const std::string& self = directory_->options().node_id;
  std::vector<FetchCandidate> candidates;
  std::vector<const ObjectLocationRecord*> holders;
  job->cached_nodes = false;
  for (const ObjectLocationRecord& r : *found) {
    if (r.node_id != self && r.alive) holders.push_back(&r);
    job->cached_nodes |= r.node_cached;
  }
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
  if (std::exchange(job->recheck_nodes, false) && !job->candidates.empty()) {
    // The holders just tried, as the fresh records name them too: trying
    // them again would fail the same way, after as long.
    std::set<std::string> tried, fresh;
    for (const FetchCandidate& c : job->candidates) tried.insert(HolderKey(c));
    for (const FetchCandidate& c : candidates) fresh.insert(HolderKey(c));
    if (fresh == tried) {
      FailFromEveryHolder(job);
      return;
    }
  }
  OrderCandidates(id, &candidates, /*log=*/true);
  location_cache_.Put(id, candidates, MonoMicros());
  job->candidates = std::move(candidates);
  job->next = 0;
  job->no_room.reset();
  job->recheck_backoff_us = 0;  // it has holders: a later park starts over
  job->looked_up_us = MonoMicros();
  PullNext(job);
}

std::string Fetcher::HolderKey(const FetchCandidate& c) const {
  return std::string(transports_[c.transport]->name()) + " " + c.endpoint;
}

void Fetcher::OrderCandidates(const ObjectID& id, std::vector<FetchCandidate>* c, bool log) {
  // How many holders claim each size. An ID names one object, so holders
  // that disagree are stale or lying: settle it before creating anything,
  // since creating for a size can evict others' objects.
  std::map<std::pair<uint64_t, uint64_t>, std::set<std::string>> claims;
  for (const FetchCandidate& x : *c) claims[{x.data_size, x.metadata_size}].insert(x.node_id);
  const int64_t now = MonoMicros();
  auto suspect = [&](const FetchCandidate& x) {
    auto h = holders_.find(HolderKey(x));
    return h != holders_.end() && Suspect(h->second, now);
  };
  auto rank = [&](const FetchCandidate& x) {
    const auto& holders = claims[{x.data_size, x.metadata_size}];
    return std::make_tuple(-static_cast<int64_t>(holders.size()), x.data_size + x.metadata_size,
                           x.data_size, suspect(x));
  };
  std::stable_sort(c->begin(), c->end(), [&](const FetchCandidate& a, const FetchCandidate& b) {
    return rank(a) < rank(b);
  });
  if (!log || claims.size() < 2) return;
  std::string who;
  for (const auto& [size, nodes] : claims) {
    who += who.empty() ? "" : "; ";
    who += Sizes(size.first, size.second) + " by ";
    size_t n = 0;
    for (const std::string& node : nodes) {
      if (n == 3) {
        who += " and " + std::to_string(nodes.size() - n) + " more";
        break;
      }
      who += (n++ > 0 ? ", " : "") + node;
    }
  }
  spdlog::warn(
      "fetch {}: its holders disagree on its size ({}): trying {} first (what most holders "
      "claim, the smaller on a tie); the others only if that fails",
      id.Hex(), who, Sizes(c->front().data_size, c->front().metadata_size));
}

void Fetcher::PullNext(Job* job) {
  const ObjectID id = job->id;
  job->phase = Job::Phase::kLookup;  // between steps
  if (!HasWaiters(id)) {
    DropJob(id);
    return;
  }
  // A size that found no room here will not find it from another holder.
  while (job->next < job->candidates.size() && job->no_room &&
         *job->no_room == std::make_pair(job->candidates[job->next].data_size,
                                         job->candidates[job->next].metadata_size))
    job->next++;
  if (job->next >= job->candidates.size()) {
    location_cache_.Drop(id);
    if ((job->stale || job->from_cache || job->cached_nodes) && job->lookups < kMaxLookups) {
      // The directory was behind, or what we had of it: ask again.
      job->recheck_nodes = !job->stale && !job->from_cache;
      LookUp(job, /*use_cache=*/false);
      return;
    }
    if (job->candidates.empty()) {
      Park(job);
      return;
    }
    FailFromEveryHolder(job);
    return;
  }
  const std::string key = HolderKey(job->candidates[job->next++]);
  job->phase = Job::Phase::kQueued;
  Holder& h = holders_[key];
  job->queue_seq = ++queue_seq_;
  h.queue.emplace_back(id, job->queue_seq);
  if (!h.in_ready) {
    h.in_ready = true;
    ready_.push_back(key);
  }
  Dispatch();
}

void Fetcher::FailFromEveryHolder(Job* job) {
  FinishFetches(job->id, Status(job->last_error.code(),
                                "fetching " + job->id.Hex() + " failed from every holder (" +
                                    std::to_string(job->candidates.size()) +
                                    "); the last: " + job->last_error.message()));
}

void Fetcher::Dispatch() {
  if (dispatching_) return;  // a pull that moved on while we dispatch: the loop below takes it
  dispatching_ = true;
  // Holders with queued jobs take turns, one pull each, while transfer slots
  // are free; one at its limit waits for its own pulls to end, not in front
  // of the others.
  size_t passed = 0;  // holders at their limit, in a row
  while (running_ < transfer_threads_ && !ready_.empty() && passed < ready_.size()) {
    const std::string key = std::move(ready_.front());
    ready_.pop_front();
    auto hit = holders_.find(key);
    if (hit == holders_.end()) continue;
    Holder& h = hit->second;
    h.in_ready = false;
    if (h.queue.empty()) continue;
    if (h.running >= (Suspect(h, MonoMicros()) ? 1 : per_holder_)) {
      h.in_ready = true;
      ready_.push_back(key);
      passed++;
      continue;
    }
    passed = 0;
    const std::pair<ObjectID, uint64_t> entry = h.queue.front();
    h.queue.pop_front();
    if (!h.queue.empty()) {
      h.in_ready = true;
      ready_.push_back(key);
    }
    if (!Live(entry)) {  // a stale entry: the job ended or moved on
      if (h.stale > 0) h.stale--;
      continue;
    }
    StartPull(&jobs_.find(entry.first)->second);
  }
  dispatching_ = false;
}

bool Fetcher::StartPull(Job* job) {
  const ObjectID id = job->id;
  job->phase = Job::Phase::kLookup;  // not queued any more
  if (!HasWaiters(id) || loop_->stopping() || !transfers_) {
    DropJob(id);
    return false;
  }
  const FetchCandidate& c = job->candidates[job->next - 1];
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
      return false;
    }
    // No room for what this holder claims: another may claim a size that fits.
    spdlog::warn("fetch {}: no room for the {} that {} claims: {}", id.Hex(),
                 Sizes(c.data_size, c.metadata_size), c.node_id, e.status().ToString());
    job->no_room = std::make_pair(c.data_size, c.metadata_size);
    job->last_error =
        Status(e.status().code(), "cannot make room to fetch " + id.Hex() + " (" +
                                      Sizes(c.data_size, c.metadata_size) + ", as " + c.node_id +
                                      " claims): " + e.status().message());
    PullNext(job);
    return false;
  }
  job->phase = Job::Phase::kPull;
  PullRequest req;
  req.id = id;
  req.data_size = c.data_size;
  req.metadata_size = c.metadata_size;
  req.destination = table_->arena_base() + (*e)->offset;  // owned by kOwner: nothing else frees it
  FetchCandidate from = c;
  running_++;
  holders_[HolderKey(from)].running++;
  job->pull_started_us = MonoMicros();
  spdlog::debug("fetch {}: pulling {} from {} at {} over {}", id.Hex(),
                FormatSize(c.data_size + c.metadata_size), c.node_id, c.endpoint,
                transports_[c.transport]->name());
  if (std::unique_ptr<AsyncPull> a = transports_[from.transport]->StartAsyncPull(from.endpoint, req)) {
    const int fd = a->fd();
    if (loop_->Add(fd, EPOLLIN, [this, id](uint32_t) { OnLoopPullReadable(id); }).ok()) {
      LoopPull& lp = loop_pulls_[id];
      lp.timer = loop_->AddTimer(a->deadline_us(), [this, id] { OnLoopPullTimeout(id); });
      lp.pull = std::move(a);
      lp.request = req;
      lp.from = from;
      lp.poll = loop_->ExpectSoon();
      return true;
    }
    // Cannot watch it (out of memory for epoll): the request is out, so
    // that connection is done for; pull the slow way.
  }
  SubmitPull(req, from);
  return true;
}

void Fetcher::SubmitPull(const PullRequest& req, const FetchCandidate& from) {
  transfers_->Submit([this, req, from] {
    Result<PullResult> r = transports_[from.transport]->Pull(from.endpoint, req);
    loop_->Post([this, id = req.id, from, r = std::move(r)]() mutable {
      OnPulled(id, from, std::move(r));
    });
  });
}

void Fetcher::OnLoopPullReadable(const ObjectID& id) {
  auto it = loop_pulls_.find(id);
  if (it == loop_pulls_.end()) return;
  std::optional<Result<PullResult>> r = it->second.pull->OnReadable();
  if (!r) return;  // more to come
  LoopPull lp = std::move(it->second);
  loop_pulls_.erase(it);
  loop_->Remove(lp.pull->fd());
  loop_->CancelTimer(lp.timer);
  const bool stale = !r->ok() && lp.pull->stale_connection();
  lp.pull.reset();  // its connection goes back to the pool before the next pull
  if (stale && !loop_->stopping() && transfers_) {
    // The holder's answer never came on a connection that had been idle:
    // it may have died meanwhile. One try on a new one.
    SubmitPull(lp.request, lp.from);
    return;
  }
  OnPulled(id, lp.from, std::move(*r), /*on_loop=*/true);
}

void Fetcher::OnLoopPullTimeout(const ObjectID& id) {
  auto it = loop_pulls_.find(id);
  if (it == loop_pulls_.end()) return;
  LoopPull lp = std::move(it->second);
  loop_pulls_.erase(it);
  loop_->Remove(lp.pull->fd());
  Status why = lp.pull->TimedOut();
  lp.pull.reset();
  OnPulled(id, lp.from, why);
}

void Fetcher::AbandonLoopPulls(bool report) {
  std::unordered_map<ObjectID, LoopPull, ObjectIDHash> pulls;
  pulls.swap(loop_pulls_);
  for (auto& [id, lp] : pulls) {
    loop_->Remove(lp.pull->fd());
    loop_->CancelTimer(lp.timer);
    lp.pull.reset();
    if (report)
      loop_->Post([this, id = id, from = lp.from] {
        OnPulled(id, from, Status::Disconnected("the store is shutting down"));
      });
  }
}

void Fetcher::OnPulled(const ObjectID& id, const FetchCandidate& from, Result<PullResult> r,
                       bool on_loop) {
  running_--;
  const std::string key = HolderKey(from);
  auto hit = holders_.find(key);
  if (hit != holders_.end()) {
    Holder& h = hit->second;
    h.running--;
    if (r.ok()) {
      h.suspect_until_us = 0;
    } else if (IsUnreachable(r.status())) {
      h.suspect_until_us = MonoMicros() + kSuspectUs;
    }
  }
  auto it = jobs_.find(id);
  Job* job = it == jobs_.end() ? nullptr : &it->second;
  if (job != nullptr) {
    job->phase = Job::Phase::kLookup;  // no transfer in flight now
    job->pulled_us = MonoMicros();
    job->pulled_on_loop = on_loop;
    job->pulled_bytes = from.data_size + from.metadata_size;
    if (r.ok()) job->pull = *r;
  }
  const char* via = transports_[from.transport]->name();
  if (!r.ok()) {
    Status st = table_->Abort(id, kOwner);
    if (!st.ok()) spdlog::error("fetch {}: abort: {}", id.Hex(), st.ToString());
    spdlog::warn("fetch {}: pull from {} ({} over {}) failed: {}", id.Hex(), from.node_id,
                 from.endpoint, via, r.status().ToString());
    counters_.pulls_failed++;
    if (std::string_view(via) == "verbs") counters_.pulls_failed_rdma++;
    location_cache_.Drop(id);  // the next fetch asks the directory
    // The pulls queued for an unreachable holder would wait for the same
    // failure, one at a time: they move on now, before this job's next step
    // dispatches (the holder is suspect with nothing running: its next
    // queued pull would start at once as its probe, and fail the same way).
    if (IsUnreachable(r.status())) {
      FailQueued(key, r.status());
      it = jobs_.find(id);
      job = it == jobs_.end() ? nullptr : &it->second;
    }
    if (job != nullptr) {
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
    }
  } else {
    ObjectEntry* e = table_->Find(id);
    if (e == nullptr || e->state != ObjectState::kCreated || e->creator != kOwner) {
      spdlog::error("fetch {}: the object being received vanished", id.Hex());
      DropJob(id);
    } else {
      e->digest = r->digest;  // checked by the transport: no need to hash again
      e->digest_valid = true;
      counters_.fetched++;
      counters_.fetched_bytes += e->total_size();
      if (r->carried_by == TransportKind::kVerbs) counters_.fetched_rdma++;
      if (job != nullptr) counters_.latency.Add(MonoMicros() - job->started_us);
      spdlog::debug("fetch {}: {} from {}", id.Hex(), FormatSize(e->total_size()), from.node_id);
      Status st = table_->Seal(id, kOwner);  // publishes; answers the Fetches (OnSealed)
      if (!st.ok()) spdlog::error("fetch {}: seal: {}", id.Hex(), st.ToString());
      DropJob(id);
    }
  }
  // Forget holders with nothing left to remember (their keys come from Redis).
  hit = holders_.find(key);
  if (hit != holders_.end() && hit->second.running == 0 && hit->second.queue.empty() &&
      !hit->second.in_ready && !Suspect(hit->second, MonoMicros()))
    holders_.erase(hit);
  if (holders_.size() > 4096) {
    const int64_t now = MonoMicros();
    for (auto h = holders_.begin(); h != holders_.end();) {
      const Holder& x = h->second;
      h = x.running == 0 && x.queue.empty() && !x.in_ready && !Suspect(x, now) ? holders_.erase(h)
                                                                               : std::next(h);
    }
  }
  Dispatch();  // a slot is free
}

void Fetcher::FailQueued(const std::string& key, const Status& why) {
  auto hit = holders_.find(key);
  if (hit == holders_.end()) return;
  std::deque<std::pair<ObjectID, uint64_t>> queued;
  queued.swap(hit->second.queue);
  hit->second.stale = 0;
  for (const auto& entry : queued) {
    if (!Live(entry)) continue;
    Job* job = &jobs_.find(entry.first)->second;
    const FetchCandidate& c = job->candidates[job->next - 1];
    job->last_error =
        Status(why.code(), c.node_id + " (" + transports_[c.transport]->name() +
                               "): not tried: a pull from it just failed: " + why.message());
    PullNext(job);
  }
}

bool Fetcher::Live(const std::pair<ObjectID, uint64_t>& entry) const {
  auto j = jobs_.find(entry.first);
  return j != jobs_.end() && j->second.phase == Job::Phase::kQueued &&
         j->second.queue_seq == entry.second;
}

size_t Fetcher::QueuedEntries() const {
  size_t n = 0;
  for (const auto& [key, h] : holders_) n += h.queue.size();
  return n;
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
    parked_++;
    // The seal channel wakes it; this recheck only covers a lost message,
    // so it backs off, with jitter so that many jobs never come due at once.
    int64_t b = job->recheck_backoff_us;
    b = b == 0 ? kRecheckUs : std::min(kMaxRecheckUs, 2 * b);
    job->recheck_backoff_us = b;
    job->recheck_at_us =
        MonoMicros() + b + std::uniform_int_distribution<int64_t>(-b / 4, b / 4)(rng_);
    recheck_schedule_.emplace(job->recheck_at_us, id);
    ArmRecheck(recheck_schedule_.begin()->first);
    if (watcher_) watcher_->Watch(id);
  }
}

void Fetcher::Unpark(Job* job) {
  if (job->phase != Job::Phase::kParked) return;
  job->phase = Job::Phase::kLookup;
  recheck_schedule_.erase({job->recheck_at_us, job->id});
  if (--parked_ == 0 && recheck_timer_ != EventLoop::kNoTimer) {
    loop_->CancelTimer(recheck_timer_);
    recheck_timer_ = EventLoop::kNoTimer;
  }
}

void Fetcher::ArmRecheck(int64_t at_us) {
  at_us = std::max(at_us, recheck_not_before_us_);  // the rate limit
  if (recheck_timer_ != EventLoop::kNoTimer) {
    if (recheck_timer_at_us_ <= at_us) return;  // an earlier one is set: it re-arms
    loop_->CancelTimer(recheck_timer_);
  }
  recheck_timer_at_us_ = at_us;
  recheck_timer_ = loop_->AddTimer(at_us, [this] {
    recheck_timer_ = EventLoop::kNoTimer;
    Recheck();
  });
}

void Fetcher::RecheckAllSoon() {
  if (recheck_schedule_.empty()) return;
  const int64_t now = MonoMicros();
  std::set<std::pair<int64_t, ObjectID>> soon;
  for (const auto& [at, id] : recheck_schedule_) {
    auto j = jobs_.find(id);
    if (j == jobs_.end()) continue;
    j->second.recheck_at_us = std::min(at, now);
    soon.emplace(j->second.recheck_at_us, id);
  }
  recheck_schedule_.swap(soon);
  ArmRecheck(now);
}

void Fetcher::Recheck() {
  // In case a seal message was lost: parked jobs whose time came look again,
  // a few per tick (while Redis fails, one probes it: N lookups would queue
  // N timeouts ahead of every Where and new Fetch).
  const int64_t now = MonoMicros();
  size_t budget = directory_failing_ ? 1 : kRecheckBatch;
  recheck_not_before_us_ = now + (directory_failing_ ? kRecheckUs : kRecheckTickUs);
  while (budget > 0 && !recheck_schedule_.empty() && recheck_schedule_.begin()->first <= now) {
    const ObjectID id = recheck_schedule_.begin()->second;
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.phase != Job::Phase::kParked) {
      recheck_schedule_.erase(recheck_schedule_.begin());  // cannot happen; never loop on it
      continue;
    }
    if (!HasWaiters(id)) {
      DropJob(id);
      continue;
    }
    budget--;
    LookUp(&it->second, /*use_cache=*/false);
  }
  if (!recheck_schedule_.empty()) ArmRecheck(recheck_schedule_.begin()->first);
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
    case Job::Phase::kQueued:
    case Job::Phase::kPull:
      break;
  }
}

void Fetcher::OnSealed(const ObjectID& id) {
  if (waiting_.size() > 0) FinishFetches(id, Status::OK());
}

p::FetchTiming Fetcher::TimingOf(const Job& job, int64_t arrived_us, int64_t now_us) {
  p::FetchTiming t;
  auto span = [](int64_t from, int64_t to) {
    return from > 0 && to >= from ? static_cast<uint32_t>(std::min<int64_t>(to - from, UINT32_MAX))
                                  : 0u;
  };
  if (job.started_us < arrived_us) t.flags |= p::FetchTiming::kShared;
  if (job.from_cache) t.flags |= p::FetchTiming::kCachedLocation;
  t.lookup_us = span(job.started_us, job.looked_up_us);
  t.queue_us = span(job.looked_up_us, job.pull_started_us);
  if (job.pulled_us == 0 || job.pull.landed_us == 0) return t;  // not pulled (or not measured)
  t.flags |= p::FetchTiming::kPulled;
  t.bytes = job.pulled_bytes;
  if (job.pull.carried_by == TransportKind::kVerbs) t.flags |= p::FetchTiming::kRdma;
  if (job.pulled_on_loop) t.flags |= p::FetchTiming::kOnLoop;
  t.dispatch_us = span(job.pull_started_us, job.pull.started_us);
  t.transfer_us = span(job.pull.started_us, job.pull.landed_us);
  t.digest_us = span(job.pull.landed_us, job.pull.checked_us);
  t.back_us = span(job.pull.checked_us, job.pulled_us);
  t.seal_us = span(job.pulled_us, now_us);
  return t;
}

void Fetcher::FinishFetches(const ObjectID& id, const Status& result) {
  auto j = jobs_.find(id);
  const int64_t now = MonoMicros();
  waiting_.Resolve(id, [&](Pending& f, size_t i) {
    f.results[i] = result;
    if (f.want_timing && j != jobs_.end()) f.timing[i] = TimingOf(j->second, f.arrived_us, now);
    return true;
  });
  j = jobs_.find(id);
  if (j != jobs_.end() && j->second.phase != Job::Phase::kPull) DropJob(id);
}

void Fetcher::DropJob(const ObjectID& id) {
  auto j = jobs_.find(id);
  if (j == jobs_.end()) return;
  if (j->second.phase == Job::Phase::kPull) return;  // OnPulled finishes it
  Unpark(&j->second);
  if (watcher_) watcher_->Unwatch(id);
  const bool queued = j->second.phase == Job::Phase::kQueued;
  const std::string key = queued ? HolderKey(j->second.candidates[j->second.next - 1]) : "";
  jobs_.erase(j);
  if (!queued) return;
  // Its queue entry is stale now. Once stale entries outnumber the live ones,
  // drop them all (each entry is compacted away once: amortized O(1)).
  auto hit = holders_.find(key);
  if (hit == holders_.end()) return;
  Holder& h = hit->second;
  if (++h.stale <= h.queue.size() / 2) return;
  std::deque<std::pair<ObjectID, uint64_t>> live;
  for (const auto& entry : h.queue)
    if (Live(entry)) live.push_back(entry);
  h.queue.swap(live);
  h.stale = 0;
}

}  // namespace plasmon
