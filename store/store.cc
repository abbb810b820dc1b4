#include "store/store.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <climits>
#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/digest.h"
#include "core/fling.h"
#include "core/protocol.h"
#include "core/size.h"
#include "core/unix_socket.h"
#include "store/object_table.h"
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
constexpr uint32_t kMaxWaitingGets = 1024;  // per connection

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

class Store::Impl : public TableListener {
 public:
  Impl(const StoreOptions& o, Arena arena, UniqueFd listen_fd, UniqueFd epoll_fd, UniqueFd wake_fd)
      : opts_(o),
        arena_(std::move(arena)),
        table_(arena_.base(), arena_.size(), this),
        listen_fd_(std::move(listen_fd)),
        epoll_fd_(std::move(epoll_fd)),
        wake_fd_(std::move(wake_fd)),
        spare_fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {}

  ~Impl() override { ::unlink(opts_.socket_path.c_str()); }

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
  void JoinCluster(const DirectoryOptions& d) {
    directory_ = std::make_unique<Directory>(d);
    directory_->Start();  // does not wait for Redis: it may be down
    lookups_ = std::make_unique<Worker>();
  }

  // TableListener
  void OnSealed(const ObjectEntry& e) override;
  void OnRemoved(const ObjectEntry& e, Notification::Kind kind) override;

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

  StoreOptions opts_;
  Arena arena_;
  ObjectTable table_;
  UniqueFd listen_fd_, epoll_fd_, wake_fd_, spare_fd_;
  bool stopping_ = false;
  std::atomic<bool> stop_requested_{false};
  std::mutex posted_mu_;
  std::vector<std::function<void()>> posted_;
  std::unique_ptr<Directory> directory_;  // null: single node
  std::unique_ptr<Worker> lookups_;       // directory lookups, off the loop
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
  }
  spdlog::info("store shutting down: {} clients, {} objects", sessions_.size(),
               table_.Stats().object_count);
  while (!sessions_.empty()) CloseSession(sessions_.begin()->first, "store shutting down", false);
  lookups_.reset();  // finishes queued lookups; their replies find no session
  RunPosted();
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

void Store::Impl::Accept() {
  for (;;) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: refuse this one cleanly instead of spinning on it.
        spdlog::warn("out of file descriptors: refusing a client");
        spare_fd_.Reset();
        int f = ::accept(listen_fd_.get(), nullptr, nullptr);
        if (f >= 0) ::close(f);
        spare_fd_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
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
  if (r.timeout_ms > 0) {
    int64_t ms = std::min<int64_t>(r.timeout_ms, INT64_MAX / 4000);
    g.deadline_us = MonoMicros() + ms * 1000;
    deadlines_.emplace(g.deadline_us, key);
  }
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
  if (g.deadline_us >= 0) {
    auto [lo, hi] = deadlines_.equal_range(g.deadline_us);
    for (auto d = lo; d != hi; ++d) {
      if (d->second == key) {
        deadlines_.erase(d);
        break;
      }
    }
  }
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
  if (deadlines_.empty()) return -1;
  int64_t wait_us = deadlines_.begin()->first - MonoMicros();
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
  if (directory_) directory_->Publish(e.id, e.data_size, e.metadata_size, e.digest_valid, e.digest);
  Notify({Notification::Kind::kSealed, e.id, e.data_size, e.metadata_size});
}

void Store::Impl::OnRemoved(const ObjectEntry& e, Notification::Kind kind) {
  if (directory_) directory_->Withdraw(e.id);
  Notify({kind, e.id, e.data_size, e.metadata_size});
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
  size_t limit = s->subscriber ? kMaxSubscriberBacklog : opts_.max_client_backlog;
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
  size_t aborted = s->creating.size(), released = 0;
  for (const ObjectID& oid : s->creating) {
    Status st = table_.Abort(oid, s->id);
    if (!st.ok()) spdlog::error("cleanup of client {}: {}", s->id, st.ToString());
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
  Result<UniqueFd> listen_fd = ListenUnix(o.socket_path, o.socket_mode);
  if (!listen_fd.ok()) return listen_fd.status();
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
  if (o.directory) impl->JoinCluster(*o.directory);
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

}  // namespace plasmon
