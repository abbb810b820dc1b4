// The store daemon's dispatch: it owns the arena, the object table, the
// client sessions and the Gets waiting for seals, and wires the fetcher and
// the transports to them. Rooms and what flows between them: docs/ARCHITECTURE.md.
#include "store/store.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/digest.h"
#include "core/event_loop.h"
#include "core/limited_log.h"
#include "core/protocol.h"
#include "core/size.h"
#include "core/unix_socket.h"
#include "store/fast_path.h"
#include "store/fetcher.h"
#include "store/metrics.h"
#include "store/object_table.h"
#include "store/session.h"
#include "store/wait_queue.h"
#include "store/worker.h"

namespace plasmon {

namespace p = protocol;

namespace {
// Sessions are numbered from 2: 0 is no one, 1 the fetcher (Fetcher::kOwner).
constexpr uint32_t kFirstSessionId = 2;
// Gets with a timeout that one connection may have waiting, and as many Fetches.
constexpr uint32_t kMaxWaitingPerSession = 1024;
// Where requests that one connection may have queued or running (each is a
// Redis round trip on the Where thread).
constexpr uint32_t kMaxWheresPerSession = 64;
// Digests asked for are computed on the loop up to this size (about 1 ms at
// the dispatched xxh3's 13 GB/s, 4 ms at SSE2's), on the hashing thread above.
constexpr uint64_t kDigestOnLoopMax = 4u << 20;

// A Get that waits for objects to be sealed. Its settled slots hold a
// reference each (in the session's refs); their locations are read from the
// table when it is answered, so that a waiting slot costs no more than its ID.
struct PendingGet : WaitingRequest {};
}  // namespace

class Store::Impl : public TableListener, public ObjectSource, public SessionOwner {
 public:
  Impl(const StoreOptions& o, Arena arena, UniqueFd listen_fd, std::unique_ptr<EventLoop> loop)
      : opts_(o),
        arena_(std::move(arena)),
        table_(arena_.base(), std::min<uint64_t>(o.arena.size, arena_.size()), this),
        loop_(std::move(loop)),
        listen_fd_(std::move(listen_fd)),
        spare_fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)),
        spare_fd2_(::open("/dev/null", O_RDONLY | O_CLOEXEC)),
        max_wheres_(o.max_wheres),
        wait_budget_(o.max_waiting_ids_per_client, o.max_waiting_ids),
        gets_(loop_.get(), [this](PendingGet& g) { AnswerWaitingGet(g); },
              [this](PendingGet& g) { AnswerWaitingGet(g); }) {
    loop_->SetDispatchLock(&table_mu_);
  }

  ~Impl() override {
    for (auto& t : transports_) t->Shutdown();  // no more Pin/Unpin calls
    fetcher_.reset();
    ::unlink(opts_.socket_path.c_str());
  }

  Status Listen() { return loop_->Add(listen_fd_.get(), EPOLLIN, [this](uint32_t) { Accept(); }); }
  Status Run();
  void Stop() { loop_->Stop(); }
  const Arena& arena() const { return arena_; }
  Status StartFastPath() {
    Result<std::unique_ptr<FastPath>> f =
        FastPath::Create(table_.allocator().capacity(), arena_.prefaulted());
    if (!f.ok()) return f.status();
    fast_ = std::move(*f);
    table_.SetPinGate(fast_.get());
    return Status::OK();
  }

  // Serves this store's objects through `t` too; returns the endpoint to publish.
  Result<std::string> StartTransport(std::shared_ptr<Transport> t) {
    MemoryRegion region{arena_.base(), arena_.size(), arena_.fd()};
    PLASMON_RETURN_IF_ERROR(t->RegisterMemory(region));
    Result<std::string> ep = t->Listen(this);
    if (!ep.ok()) return ep.status();
    transports_.push_back(std::move(t));
    return ep;
  }
  void JoinCluster(DirectoryOptions d) {
    d.caller_kicks = true;  // KickSoon
    directory_ = std::make_unique<Directory>(d);
    directory_->Start();  // does not wait for Redis: it may be down
  }
  // After the transports and the directory: the fetcher wires them together.
  void StartFetcher() {
    fetcher_ = std::make_unique<Fetcher>(
        loop_.get(), &table_, directory_.get(), transports_, opts_.transfer_threads,
        opts_.transfer_threads_per_holder,
        [this](uint32_t sid, uint64_t request_id, p::FetchReply rep) {
          RefundFetch(sid, request_id);
          if (Session* s = FindSession(sid))
            s->Send(p::MakeFrame(p::ReplyType(p::MessageType::kFetch), request_id, rep));
        });
  }

  // TableListener
  void OnSealed(const ObjectEntry& e) override;
  void OnRemoved(const ObjectEntry& e, Notification::Kind kind) override;

  // ObjectSource: called by the transports' threads.
  Result<PinnedObject> Pin(const ObjectID& id) override;
  void Unpin(const ObjectID& id, std::optional<uint64_t> computed_digest) override;
  // Ends a pin on the loop: keeps a digest computed meanwhile, then releases.
  void EndPin(const ObjectID& id, std::optional<uint64_t> computed_digest);
  // The directory's queue has updates since `first` made it non-empty: the
  // writer is woken kDirectoryKickUs later, once for all of them, rather
  // than in the middle of the request that sealed or removed an object
  // (where its wake-up and its Redis round trip would compete with the
  // reply for this store's CPU). With `now`, at once (a new object).
  void KickSoon(bool first, bool now = false);
  static constexpr int64_t kDirectoryKickUs = 1000;
  EventLoop::TimerId kick_timer_ = EventLoop::kNoTimer;

  // SessionOwner
  bool HandleFrame(Session* s, const p::FrameHeader& h, std::string_view body) override;
  void CloseSession(uint32_t id, const std::string& reason, bool error) override;

 private:
  Session* FindSession(uint32_t id) {
    auto it = sessions_.find(id);
    return it == sessions_.end() ? nullptr : it->second.get();
  }
  void Accept();
  template <typename Msg>
  void Reply(Session* s, const p::FrameHeader& h, const Msg& m) {
    s->Send(p::MakeFrame(h.type | p::kReplyBit, h.request_id, m));
  }

  void DoCreate(Session* s, const p::FrameHeader& h, const p::CreateRequest& r);
  void DoCreateAndSeal(Session* s, const p::FrameHeader& h, const p::CreateAndSealRequest& r);
  Status CreateAndSeal(Session* s, const ObjectID& id, std::string_view data,
                       std::string_view metadata);
  void DoDigest(Session* s, const p::FrameHeader& h, const ObjectID& id);
  void DoGet(Session* s, const p::FrameHeader& h, p::GetRequest r);
  void DoRelease(Session* s, const ObjectID& id);
  void DoWhere(Session* s, const p::FrameHeader& h, const ObjectID& id);
  void DoFetch(Session* s, const p::FrameHeader& h, p::FetchRequest r);
  void Notify(const Notification& n);
  // If `id`'s object is visible, takes a reference to it for `s`.
  bool TryFill(Session* s, const ObjectID& id);
  void SendGetReply(const PendingGet& g);
  void AnswerWaitingGet(const PendingGet& g) {
    wait_budget_.Refund(g.session, g.ids.size());
    SendGetReply(g);
  }
  // A Fetch was answered: its charge to the wait budget ends.
  void RefundFetch(uint32_t sid, uint64_t request_id);

  StoreOptions opts_;
  Arena arena_;
  // The table's lock. The loop holds it while it runs handlers (not while it
  // waits in epoll); transport threads take it to pin objects they send.
  std::mutex table_mu_;
  ObjectTable table_;
  std::unique_ptr<EventLoop> loop_;
  UniqueFd listen_fd_;
  // Held in reserve for running out of descriptors: freed, they let the store
  // accept-and-close a client it cannot serve, and leave the logger (and a
  // sanitizer's runtime, whose memory probes open a pipe) room to work.
  UniqueFd spare_fd_, spare_fd2_;
  // Out of descriptors: the spares are let go for what must run then (a
  // refusing accept, a log sink, a sanitizer's pipe()), and taken again.
  void LetSpareFdsGo() {
    spare_fd_.Reset();
    spare_fd2_.Reset();
  }
  void TakeSpareFds() {
    spare_fd_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    spare_fd2_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }
  std::unique_ptr<Directory> directory_;                // null: single node
  std::vector<std::shared_ptr<Transport>> transports_;  // preferred first; none: cannot fetch
  std::unique_ptr<Fetcher> fetcher_;
  std::unique_ptr<FastPath> fast_;  // null: --no-shared-index
  // While revoked pin pages remain: looks every 100 ms whether their pins
  // or their processes are gone.
  void ArmReap();
  // Unmaps closed clients' pin pages (FastPath::ReleaseRetired) after
  // `delay_us`, a few at a time.
  void ArmRetire(int64_t delay_us);
  EventLoop::TimerId reap_timer_ = EventLoop::kNoTimer;
  EventLoop::TimerId retire_timer_ = EventLoop::kNoTimer;  // closed clients' pin pages
  std::unique_ptr<Worker> hasher_;  // digests of large objects, off the loop
  std::unique_ptr<Worker> where_;   // clients' directory lookups (Where), off the loop
  // Wheres queued or running, per session and in all (loop thread).
  std::unordered_map<uint32_t, uint32_t> wheres_by_session_;
  uint32_t wheres_ = 0;
  uint32_t max_wheres_;
  uint32_t next_session_ = kFirstSessionId;
  std::unordered_map<uint32_t, std::unique_ptr<Session>> sessions_;
  // Clients closed for their errors, by pid: a client that reconnects and
  // errs again and again cannot flood the log.
  LogLimiter client_log_;
  std::vector<uint32_t> subscribers_;
  // What waiting Gets and Fetches hold; charged before they wait.
  WaitBudget wait_budget_;
  // The charges of Fetches not answered yet, by (session, request id): the
  // fetcher answers through a callback that names only these.
  std::multimap<std::pair<uint32_t, uint64_t>, size_t> fetch_charges_;
  WaitQueue<PendingGet> gets_;
  // --metrics: the loop copies its numbers into the slot when a scrape asks.
  uint64_t gets_socket_ = 0;  // IDs asked for by Gets
  std::unique_ptr<SnapshotSlot> metrics_slot_;
  std::unique_ptr<MetricsServer> metrics_;
  // What Stats answers, and --metrics shows with more.
  StoreStats StatsNow() const;
  MetricsSnapshot TakeSnapshot() const;

 public:
  Status StartMetrics(const std::string& listen) {
    metrics_slot_ = std::make_unique<SnapshotSlot>([this] {
      loop_->Post([this] {
        table_.SyncPins();  // pinned bytes count what clients pin
        metrics_slot_->Publish(std::make_shared<MetricsSnapshot>(TakeSnapshot()));
      });
    });
    Result<std::unique_ptr<MetricsServer>> server = MetricsServer::Start(listen, metrics_slot_.get());
    if (!server.ok()) return server.status();
    metrics_ = std::move(*server);
    return Status::OK();
  }
};

StoreStats Store::Impl::StatsNow() const {
  StoreStats s = table_.Stats();
  s.clients = sessions_.size();
  const Fetcher::Counters& fc = fetcher_->counters();
  s.fetched = fc.fetched;
  s.fetched_bytes = fc.fetched_bytes;
  s.fetched_verbs = fc.fetched_rdma;
  s.pulls_failed = fc.pulls_failed;
  if (fast_) {
    s.shm_gets = fast_->gets();
    s.shm_contains = fast_->contains();
  }
  return s;
}

MetricsSnapshot Store::Impl::TakeSnapshot() const {
  MetricsSnapshot m;
  m.stats = StatsNow();
  m.pinned_bytes = table_.pinned_bytes();
  const ObjectTable::Counters& tc = table_.counters();
  m.creates = tc.creates;
  m.seals = tc.seals;
  m.deletes = tc.deletes;
  m.deleted_bytes = tc.deleted_bytes;
  m.gets_socket = gets_socket_;
  m.gets_shm = m.stats.shm_gets;
  const Fetcher::Counters& fc = fetcher_->counters();
  m.pulls_ok_verbs = fc.fetched_rdma;
  m.pulls_ok_tcp = fc.fetched - fc.fetched_rdma;
  m.pulls_failed_verbs = fc.pulls_failed_rdma;
  m.pulls_failed_tcp = fc.pulls_failed - fc.pulls_failed_rdma;
  m.fetch_latency = fc.latency;
  m.polls_answered = loop_->fruitful_polls();
  m.polls_empty = loop_->empty_polls();
  if (directory_) {
    Directory::Counters dc = directory_->counters();
    m.has_directory = true;
    m.directory_connected = dc.synced;
    m.directory_queued = dc.queued;
    m.directory_failed = dc.failed_updates;
    m.lookups_scanned = dc.lookups_scanned;
    m.lookups_scripted = dc.lookups_scripted;
  }
  for (const std::shared_ptr<Transport>& t : transports_) {
    Transport::Connections c = t->connections();
    if (c.known) m.transports.push_back({t->name(), c.serving, c.handshaking, c.outgoing});
  }
  m.taken_us = WallMicros();
  return m;
}

Status Store::Impl::Run() {
  spdlog::info("store serving {} on {} ({} arena{})", FormatSize(table_.allocator().capacity()),
               opts_.socket_path,
               opts_.arena.hugepages        ? "huge-page"
               : arena_.transparent_huge() ? "memfd, transparent 2 MiB pages"
                                            : "memfd",
               arena_.prefaulted() ? ", prefaulted" : "");
  if (arena_.shmem_setting() == "never")
    spdlog::info("the arena is on 4 KiB pages: with 'advise' in "
                 "/sys/kernel/mm/transparent_hugepage/shmem_enabled it gets 2 MiB ones, on which "
                 "large fetches run faster (README, plasmon-store flags)");
  Status st = loop_->Run();
  metrics_.reset();  // no scrape asks the stopped loop for snapshots
  {
    std::lock_guard<std::mutex> l(table_mu_);
    spdlog::info("store shutting down: {} clients, {} objects", sessions_.size(),
                 table_.Stats().object_count);
    while (!sessions_.empty()) CloseSession(sessions_.begin()->first, "store shutting down", false);
    LogSuppressed(client_log_, spdlog::level::warn, /*all=*/true);
  }
  // Unlocked: transport threads may be waiting for the table to pin.
  fetcher_->StopWatcher();                    // no more seal events
  for (auto& t : transports_) t->Shutdown();  // breaks pulls in flight
  fetcher_->StopWorkers();                    // their results are posted, run below
  hasher_.reset();                            // likewise
  // Every client is gone: the Wheres still queued would only keep the store
  // from exiting (2 s each while Redis hangs). The running one finishes.
  if (where_) where_->DiscardQueued();
  where_.reset();
  {
    std::lock_guard<std::mutex> l(table_mu_);
    loop_->RunPosted();
  }
  if (directory_) directory_->Stop();
  return st;
}

static_assert(kMaxLookupHolders <= p::kMaxHolders, "a lookup's holders fit one Where reply");

void Store::Impl::DoWhere(Session* s, const p::FrameHeader& h, const ObjectID& id) {
  if (!directory_) {
    p::WhereReply rep;
    rep.status = Status::InvalidArgument(
        "this store is not part of a cluster (it was started without --redis)");
    Reply(s, h, rep);
    return;
  }
  // Redis answers on a thread of Where's own (a Where does not queue behind
  // fetches' lookups); the reply is sent from the loop, if the client is
  // still there.
  uint32_t sid = s->id();
  uint64_t request_id = h.request_id;
  // Bounded, per connection and in all: each holds the Where thread for a
  // round trip, and a flood would delay everyone's answers without limit.
  uint32_t& mine = wheres_by_session_[sid];
  if (mine >= kMaxWheresPerSession || wheres_ >= max_wheres_) {
    p::WhereReply rep;
    rep.status = mine >= kMaxWheresPerSession
                     ? Status::InvalidArgument("too many Wheres in flight on this connection (limit " +
                                               std::to_string(kMaxWheresPerSession) + ")")
                     : Status::OutOfMemory("too many Wheres in flight in this store (limit " +
                                           std::to_string(max_wheres_) + ", --max-wheres)");
    if (mine == 0) wheres_by_session_.erase(sid);
    Reply(s, h, rep);
    return;
  }
  mine++;
  wheres_++;
  if (!where_) where_ = std::make_unique<Worker>();
  where_->Submit([this, id, sid, request_id] {
    Result<LookupResult> found = directory_->LookupForClient(id);
    loop_->Post([this, sid, request_id, found = std::move(found)]() mutable {
      auto n = wheres_by_session_.find(sid);
      if (--n->second == 0) wheres_by_session_.erase(n);
      wheres_--;
      Session* c = FindSession(sid);
      if (c == nullptr) return;
      p::WhereReply rep;
      if (found.ok()) {
        for (const ObjectLocationRecord& r : found->holders)
          rep.holders.push_back(
              {r.node_id, r.alive, r.data_size, r.metadata_size, r.digest_valid, r.digest});
        rep.not_shown = found->omitted;
        rep.malformed = found->malformed;
      } else if (found.status().IsCorruption()) {
        rep.status = found.status();  // the object's record is malformed: say so
      } else {
        rep.status = Status::Disconnected("the directory (Redis) is unavailable: " +
                                          found.status().message());
      }
      c->Send(p::MakeFrame(p::ReplyType(p::MessageType::kWhere), request_id, rep));
    });
  });
}

void Store::Impl::DoFetch(Session* s, const p::FrameHeader& h, p::FetchRequest r) {
  p::FetchReply refused;
  if (r.timeout_ms != 0 && fetcher_->WaitingFor(s->id()) >= kMaxWaitingPerSession) {
    refused.status = Status::InvalidArgument("too many Fetches waiting on this connection (limit " +
                                             std::to_string(kMaxWaitingPerSession) + ")");
    Reply(s, h, refused);
    return;
  }
  // Charged for all it names until answered (often at once): even a Fetch
  // that does not wait holds its IDs while their lookups run.
  const size_t units = r.ids.size() * WaitBudget::kFetchIdWeight;
  refused.status = wait_budget_.Charge(s->id(), r.ids.size(), "Fetch", WaitBudget::kFetchIdWeight);
  if (!refused.status.ok()) {
    Reply(s, h, refused);
    return;
  }
  fetch_charges_.emplace(std::make_pair(s->id(), h.request_id), units);
  fetcher_->Request(s->id(), h.request_id, std::move(r));
}

void Store::Impl::RefundFetch(uint32_t sid, uint64_t request_id) {
  auto it = fetch_charges_.find(std::make_pair(sid, request_id));
  if (it == fetch_charges_.end()) return;
  wait_budget_.Refund(sid, it->second);
  fetch_charges_.erase(it);
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
  loop_->Post([this, id, computed_digest] { EndPin(id, computed_digest); });
}

void Store::Impl::EndPin(const ObjectID& id, std::optional<uint64_t> computed_digest) {
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
      KickSoon(directory_->Publish(e->id, e->data_size, e->metadata_size, true, e->digest));
  }
  table_.Release(e);
}

// ---- sessions ----

void Store::Impl::Accept() {
  for (;;) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: refuse this one cleanly instead of spinning on it.
        LetSpareFdsGo();
        spdlog::warn("out of file descriptors: refusing a client");
        int f = ::accept(listen_fd_.get(), nullptr, nullptr);
        if (f >= 0) ::close(f);
        TakeSpareFds();
        if (f < 0) return;  // could not even refuse it: back to epoll, never spin
        continue;
      }
      if (errno != EAGAIN) spdlog::warn("accept: {}", std::strerror(errno));
      return;
    }
    uint32_t sid = next_session_++;
    if (next_session_ == 0) next_session_ = kFirstSessionId;
    pid_t pid = 0;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) pid = cred.pid;
    auto s = std::make_unique<Session>(sid, UniqueFd(fd), pid, loop_.get(), this,
                                       opts_.max_client_backlog);
    Status st = loop_->Add(fd, EPOLLIN, [this, sid](uint32_t events) {
      if (Session* c = FindSession(sid)) c->OnEvents(events);
    });
    if (!st.ok()) {
      spdlog::warn("client {}: {}", sid, st.ToString());
      continue;
    }
    spdlog::debug("client {} connected (pid {})", sid, pid);
    sessions_.emplace(sid, std::move(s));
  }
}

bool Store::Impl::HandleFrame(Session* s, const p::FrameHeader& h, std::string_view body) {
  auto bad = [&](const std::string& why) {
    CloseSession(s->id(), "protocol error: " + why, true);
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
      if (r.version < p::kOldestVersion || r.version > p::kVersion) {
        rep.status = Status::InvalidArgument(
            "protocol version " + std::to_string(r.version) + " not supported; this store speaks " +
            std::to_string(p::kOldestVersion) + " to " + std::to_string(p::kVersion));
        Reply(s, h, rep);
        CloseSession(s->id(), "protocol version mismatch", true);
        return false;
      }
      if ((r.flags & ~p::kConnectSharedIndex) != 0) return bad("unknown Connect flags");
      s->connected = true;
      s->version = r.version;  // its replies are in its version (an older client: no index)
      rep.version = r.version;
      rep.client_id = s->id();
      rep.capacity = table_.allocator().capacity();
      rep.arena_size = arena_.size();
      rep.prefaulted = arena_.prefaulted();
      // The index is offered here and attached at the client's first use of
      // it (AttachIndex): a client that never uses it (a CLI call, a short
      // script) costs no pin page, and its Connect passes one descriptor.
      // A version 5 client, which wants the descriptors now, goes without.
      if ((r.flags & p::kConnectSharedIndex) != 0 && fast_ && r.version >= 6) {
        s->index_offered = true;
        rep.index_size = fast_->index_bytes();
        rep.pin_page_size = shm::kPinPageBytes;
      }
      s->Send(p::MakeFrame(h.type | p::kReplyBit, h.request_id, rep), {arena_.fd()});
      return true;
    }
    case p::MessageType::kAttachIndex: {
      if (!body.empty()) return bad("malformed AttachIndex");
      p::AttachIndexReply rep;
      if (!s->index_offered || s->fast_path) {
        rep.status = Status::InvalidArgument(s->fast_path ? "the shared index is attached already"
                                                          : "this connection was not offered the "
                                                            "shared index");
        Reply(s, h, rep);
        return true;
      }
      Result<UniqueFd> page = fast_->AddClient(s->id());
      if (!page.ok()) {  // it works without: every request then takes the socket
        // Usually out of descriptors, as at accept: the spares are let go
        // while the warning is written (a sink, or a sanitizer's checks, may
        // need a descriptor), and one warning stands for many clients.
        LetSpareFdsGo();
        LimitedLog(client_log_, spdlog::level::warn, "store: clients without a pin page",
                   "client {}: no pin page for the fast path, it is served by the socket: {}",
                   s->id(), page.status().ToString());
        TakeSpareFds();
        s->index_offered = false;
        rep.status = page.status();
        Reply(s, h, rep);
        return true;
      }
      s->fast_path = true;
      rep.index_size = fast_->index_bytes();
      rep.pin_page_size = shm::kPinPageBytes;
      // The page's descriptor is passed last and closed once sent: the store
      // keeps its mapping.
      s->Send(p::MakeFrame(h.type | p::kReplyBit, h.request_id, rep), {fast_->index_fd()},
              std::move(*page));
      fast_->PrepareNextPage();  // for the next client, while this one maps its own
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
      rep.status = seal ? table_.Seal(r.id, s->id()) : table_.Abort(r.id, s->id());
      if (rep.status.ok()) s->creating.erase(r.id);
      if (rep.status.ok() && !seal) fetcher_->OnLocalGone(r.id);
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
      table_.SyncPins();  // pins counted with references, fast-path gets as accesses
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
                     FormatSize(rep.bytes), s->id());
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kStats: {
      if (!body.empty()) return bad("malformed Stats");
      table_.SyncPins();  // what clients pin counts as pinned
      p::StatsReply rep;
      rep.version = s->version;
      rep.stats = StatsNow();
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kSubscribe: {
      if (!body.empty()) return bad("malformed Subscribe");
      if (!s->refs.empty() || !s->creating.empty() || gets_.CountFor(s->id()) > 0)
        return bad("Subscribe on a connection that holds objects");
      s->subscriber = true;
      subscribers_.push_back(s->id());
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
    case p::MessageType::kRefresh: {
      p::DeleteRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Refresh");
      p::DeleteReply rep;
      rep.codes.reserve(r.ids.size());
      for (const ObjectID& id : r.ids) rep.codes.push_back(table_.Refresh(id));
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kCreateAndSealBatch: {
      p::CreateAndSealBatchRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed CreateAndSealBatch");
      p::StatusListReply rep;
      rep.results.reserve(r.items.size());
      for (const p::CreateAndSealBatchRequest::Item& it : r.items)
        rep.results.push_back(CreateAndSeal(s, it.id, it.data, it.metadata));
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kDigest: {
      p::IdRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed Digest");
      DoDigest(s, h, r.id);
      return true;
    }
    case p::MessageType::kSetOptions: {
      p::SetOptionsRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed SetOptions");
      p::StatusReply rep;
      if (r.memory_quota > 0) rep.status = table_.SetQuota(s->id(), r.memory_quota);
      if (rep.status.ok() && r.memory_quota > 0)
        spdlog::info("client {} (pid {}) has a memory quota of {}", s->id(), s->pid(),
                     FormatSize(r.memory_quota));
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kUnpinned: {
      // A pin of an object the index marks going was cleared: what waited
      // for it may go now. (Any client may say so: it costs a scan.)
      if (!body.empty()) return bad("malformed Unpinned");
      table_.SyncPins();
      return true;
    }
    case p::MessageType::kLease: {
      p::EvictRequest r;  // one u64: the bytes
      if (!p::ParseBody(body, &r)) return bad("malformed Lease");
      p::CreateReply rep;
      if (!s->fast_path || r.bytes == 0 || r.bytes > p::kMaxLease) {
        rep.status = Status::InvalidArgument(
            s->fast_path ? "a lease is of 1 byte to " + FormatSize(p::kMaxLease)
                         : "leases come with the shared index (this connection has none)");
      } else if (Result<uint64_t> at = table_.Lease(s->id(), r.bytes); at.ok()) {
        rep.location = {0, *at, r.bytes, 0};
      } else {
        rep.status = at.status();
      }
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kSealLeased: {
      p::SealLeasedRequest r;
      if (!p::ParseBody(body, &r)) return bad("malformed SealLeased");
      p::StatusReply rep;
      Result<ObjectEntry*> e =
          table_.CreateLeased(r.id, r.offset, r.data_size, r.metadata_size, s->id());
      rep.status = e.ok() ? table_.Seal(r.id, s->id()) : e.status();
      Reply(s, h, rep);
      return true;
    }
    case p::MessageType::kNotification:
      break;
  }
  return bad("unknown message type " + std::to_string(h.type));
}

void Store::Impl::DoCreate(Session* s, const p::FrameHeader& h, const p::CreateRequest& r) {
  p::CreateReply rep;
  Result<ObjectEntry*> e = table_.Create(r.id, r.data_size, r.metadata_size, s->id());
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
  rep.status = CreateAndSeal(s, r.id, r.data, r.metadata);
  Reply(s, h, rep);
}

Status Store::Impl::CreateAndSeal(Session* s, const ObjectID& id, std::string_view data,
                                  std::string_view metadata) {
  Result<ObjectEntry*> e = table_.Create(id, data.size(), metadata.size(), s->id());
  if (!e.ok()) return e.status();
  uint8_t* dst = arena_.base() + (*e)->offset;
  std::memcpy(dst, data.data(), data.size());
  std::memcpy(dst + data.size(), metadata.data(), metadata.size());
  return table_.Seal(id, s->id());
}

void Store::Impl::DoDigest(Session* s, const p::FrameHeader& h, const ObjectID& id) {
  p::DigestReply rep;
  ObjectEntry* e = table_.Find(id);
  if (e == nullptr || e->delete_pending) {
    rep.status = Status::ObjectNotFound("object " + id.Hex() + " is not in this store");
  } else if (e->state != ObjectState::kSealed) {
    rep.status = Status::ObjectNotSealed("object " + id.Hex() + " is not sealed yet");
  } else if (e->digest_valid || e->total_size() <= kDigestOnLoopMax) {
    rep.digest = table_.EnsureDigest(e);
  } else {
    // Hashing a large object would stall every client for milliseconds:
    // it runs on the hashing thread, the object pinned meanwhile.
    table_.AddRef(e);
    const uint8_t* bytes = arena_.base() + e->offset;
    const uint64_t data_size = e->data_size, metadata_size = e->metadata_size;
    const uint32_t sid = s->id();
    const uint64_t request_id = h.request_id;
    if (!hasher_) hasher_ = std::make_unique<Worker>();
    hasher_->Submit([this, id, bytes, data_size, metadata_size, sid, request_id] {
      uint64_t d = ObjectDigest(bytes, data_size, bytes + data_size, metadata_size);
      loop_->Post([this, id, d, sid, request_id] {
        EndPin(id, d);  // keeps the digest, as a transport's unpin does
        if (Session* c = FindSession(sid)) {
          p::DigestReply late;
          late.digest = d;
          c->Send(p::MakeFrame(p::ReplyType(p::MessageType::kDigest), request_id, late));
        }
      });
    });
    return;
  }
  Reply(s, h, rep);
}

bool Store::Impl::TryFill(Session* s, const ObjectID& id) {
  ObjectEntry* e = table_.Find(id);
  if (e == nullptr || !e->visible()) return false;
  table_.AddRef(e);
  s->refs[e->id]++;
  return true;
}

void Store::Impl::DoGet(Session* s, const p::FrameHeader& h, p::GetRequest r) {
  if (r.timeout_ms != 0 && gets_.CountFor(s->id()) >= kMaxWaitingPerSession) {
    p::GetReply rep;
    rep.status = Status::InvalidArgument("too many Gets waiting on this connection (limit " +
                                         std::to_string(kMaxWaitingPerSession) + ")");
    Reply(s, h, rep);
    return;
  }
  PendingGet g;
  g.session = s->id();
  g.request_id = h.request_id;
  g.InitSlots(std::move(r.ids));
  gets_socket_ += g.ids.size();
  for (size_t i = 0; i < g.ids.size(); i++)
    if (TryFill(s, g.ids[i])) g.Settle(i);
  if (g.remaining == 0 || r.timeout_ms == 0) {
    SendGetReply(g);
    return;
  }
  if (Status st = wait_budget_.Charge(s->id(), g.ids.size(), "Get"); !st.ok()) {
    // Refused whole: the references its present objects took go back.
    for (size_t i = 0; i < g.ids.size(); i++)
      if (g.done[i]) DoRelease(s, g.ids[i]);
    p::GetReply rep;
    rep.status = std::move(st);
    Reply(s, h, rep);
    return;
  }
  gets_.Add(std::move(g), DeadlineAfterMs(r.timeout_ms));
}

void Store::Impl::SendGetReply(const PendingGet& g) {
  Session* s = FindSession(g.session);
  if (s == nullptr) return;
  p::GetReply rep;
  rep.entries.resize(g.ids.size());
  for (size_t i = 0; i < rep.entries.size(); i++) {
    ObjectEntry* e = table_.Find(g.ids[i]);
    if (g.done[i] && e != nullptr) {  // the slot's reference kept it
      rep.entries[i].location = {0, e->offset, e->data_size, e->metadata_size};
      continue;
    }
    rep.entries[i].code = (e == nullptr || e->delete_pending) ? StatusCode::kObjectNotFound
                                                              : StatusCode::kObjectNotSealed;
  }
  s->Send(p::MakeFrame(p::ReplyType(p::MessageType::kGet), g.request_id, rep));
}

void Store::Impl::DoRelease(Session* s, const ObjectID& id) {
  auto it = s->refs.find(id);
  if (it == s->refs.end()) {
    spdlog::debug("client {} released {} which it does not hold", s->id(), id.Hex());
    return;
  }
  if (--it->second == 0) s->refs.erase(it);
  ObjectEntry* e = table_.Find(id);
  if (e != nullptr) table_.Release(e);
}

void Store::Impl::KickSoon(bool first, bool now) {
  if (now) {
    if (kick_timer_ != EventLoop::kNoTimer) loop_->CancelTimer(kick_timer_);
    kick_timer_ = EventLoop::kNoTimer;
    directory_->Kick();
    return;
  }
  if (!first || kick_timer_ != EventLoop::kNoTimer) return;
  kick_timer_ = loop_->AddTimerAfter(kDirectoryKickUs, [this] {
    kick_timer_ = EventLoop::kNoTimer;
    directory_->Kick();
  });
}

void Store::Impl::OnSealed(const ObjectEntry& e) {
  gets_.Resolve(e.id, [&](PendingGet& g, size_t i) {
    Session* s = FindSession(g.session);
    return s != nullptr && TryFill(s, g.ids[i]);
  });
  fetcher_->OnSealed(e.id);
  // A new object is announced at once (other nodes may be waiting for it);
  // a fetched copy, a second holder, with the next batch.
  if (directory_)
    KickSoon(directory_->Publish(e.id, e.data_size, e.metadata_size, e.digest_valid, e.digest),
             /*now=*/e.creator != Fetcher::kOwner);
  Notify({Notification::Kind::kSealed, e.id, e.data_size, e.metadata_size});
}

void Store::Impl::OnRemoved(const ObjectEntry& e, Notification::Kind kind) {
  if (directory_) KickSoon(directory_->Withdraw(e.id));
  Notify({kind, e.id, e.data_size, e.metadata_size});
  if (fetcher_->waiting()) {
    ObjectID id = e.id;  // `e` is about to go
    loop_->Post([this, id] { fetcher_->OnLocalGone(id); });  // after the table is done removing it
  }
}

void Store::Impl::Notify(const Notification& n) {
  if (subscribers_.empty()) return;
  std::string frame =
      p::MakeFrame(static_cast<uint16_t>(p::MessageType::kNotification), 0, p::NotificationMessage{n});
  for (uint32_t sid : subscribers_)
    if (Session* s = FindSession(sid)) s->Send(frame);
}

void Store::Impl::CloseSession(uint32_t id, const std::string& reason, bool error) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  std::unique_ptr<Session> s = std::move(it->second);
  sessions_.erase(it);
  if (error) {
    LimitedLog(client_log_, spdlog::level::warn,
               "store: clients of pid " + std::to_string(s->pid()) + " closed for errors",
               "closing client {} (pid {}): {}", s->id(), s->pid(), reason);
  } else {
    spdlog::debug("client {} (pid {}) {}", s->id(), s->pid(), reason);
  }
  loop_->Remove(s->fd());
  if (s->subscriber) std::erase(subscribers_, s->id());
  // Requests it was waiting on are dropped; their references go with the rest.
  gets_.DropSession(s->id());
  fetcher_->DropSession(s->id());
  wait_budget_.DropSession(s->id());
  fetch_charges_.erase(fetch_charges_.lower_bound({s->id(), 0}),
                       fetch_charges_.upper_bound({s->id(), UINT64_MAX}));
  size_t aborted = s->creating.size();
  uint64_t released = 0;
  for (const ObjectID& oid : s->creating) {
    Status st = table_.Abort(oid, s->id());
    if (!st.ok()) spdlog::error("cleanup of client {}: {}", s->id(), st.ToString());
    fetcher_->OnLocalGone(oid);
  }
  for (const auto& [oid, count] : s->refs) {
    ObjectEntry* e = table_.Find(oid);
    if (e == nullptr) continue;
    table_.Release(e, count);  // all at once: the count is 64-bit
    released += count;
  }
  table_.DropClient(s->id());  // its quota ends; its objects stay
  if (s->fast_path) {
    // Its pins end with it, as its references do; unless the store closed a
    // client that may still be running, whose standing pins are kept.
    fast_->DropClient(s->id(), s->pid(), error || s->shut_by_store());
    table_.SyncPins();
    if (fast_->has_revoked()) ArmReap();
    if (fast_->has_retired()) ArmRetire(20'000);
  }
  if (aborted + released > 0)
    spdlog::info("client {} (pid {}) gone: aborted {} unsealed objects, released {} references",
                 s->id(), s->pid(), aborted, released);
}

void Store::Impl::ArmRetire(int64_t delay_us) {
  if (retire_timer_ != EventLoop::kNoTimer) return;
  retire_timer_ = loop_->AddTimerAfter(delay_us, [this] {
    retire_timer_ = EventLoop::kNoTimer;
    // Two per millisecond, then the next two: a munmap of a touched page
    // took 45 us on average (under perf trace) on the project's VMs, so this
    // takes about a tenth of the loop while clients come and go (past FastPath::kMaxRetired
    // waiting, each close unmaps the oldest itself).
    fast_->ReleaseRetired(2);
    if (fast_->has_retired()) ArmRetire(1'000);
  });
}

void Store::Impl::ArmReap() {
  if (reap_timer_ != EventLoop::kNoTimer) return;
  reap_timer_ = loop_->AddTimerAfter(100'000, [this] {
    reap_timer_ = EventLoop::kNoTimer;
    if (fast_->Reap()) table_.SyncPins();
    if (fast_->has_revoked()) ArmReap();
  });
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
  Result<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  if (!loop.ok()) return loop.status();
  (*loop)->set_busy_poll_us(o.busy_poll_us);
  auto impl = std::make_unique<Impl>(o, std::move(*arena), std::move(*listen_fd), std::move(*loop));
  PLASMON_RETURN_IF_ERROR(impl->Listen());
  if (o.shared_index) PLASMON_RETURN_IF_ERROR(impl->StartFastPath());
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
  impl->StartFetcher();
  if (!o.metrics_listen.empty()) PLASMON_RETURN_IF_ERROR(impl->StartMetrics(o.metrics_listen));
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

}  // namespace plasmon
