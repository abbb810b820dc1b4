#include "plasmon/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "client/frame_reader.h"
#include "client/populate.h"
#include "core/arena.h"
#include "core/clock.h"
#include "core/protocol.h"
#include "core/shm_index.h"
#include "core/unix_socket.h"

namespace plasmon {

// A spin-wait hint to the CPU (a waiting loop that yields the core's
// resources to its sibling thread and saves power).
static inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

namespace p = protocol;

namespace internal {

// One reference to an object, shared by the copies of an ObjectBuffer. Keeps
// the mapping alive so that a buffer outlives its client safely.
class Reference {
 public:
  Reference(std::weak_ptr<ClientImpl> client, std::shared_ptr<const Mapping> map, ObjectID id)
      : client_(std::move(client)), map_(std::move(map)), id_(id) {}
  ~Reference();  // releases it, unless Client::Release did already

 private:
  friend class ClientImpl;
  std::weak_ptr<ClientImpl> client_;
  std::shared_ptr<const Mapping> map_;
  ObjectID id_;
  // Guarded by the client's refs_mu_. While the store counts this reference
  // for us it is linked into the client's list of references to id_, in the
  // order of the Gets; an explicit Release unlinks it, and then its end sends
  // nothing.
  bool held_ = false;
  Reference* older_ = nullptr;
  Reference* newer_ = nullptr;
  // A pin in the shared index (pin slot, index slot, generation) instead of
  // a reference the store counts; pin_ < 0: the store's reference.
  int pin_ = -1;
  uint64_t slot_ = 0, gen_ = 0;
};

class ClientImpl : public std::enable_shared_from_this<ClientImpl> {
 public:
  explicit ClientImpl(int64_t request_timeout_ms)
      : request_timeout_ms_(request_timeout_ms), reader_(p::kMaxReplyBody) {}
  static void SetBufferStatus(ObjectBuffer* b, Status s) { b->status_ = std::move(s); }
  ~ClientImpl() {
    {
      std::lock_guard<std::mutex> w(write_mu_);
      flusher_stop_ = true;
    }
    flusher_cv_.notify_all();
    if (flusher_.joinable()) flusher_.join();
  }

  Status Connect(const std::string& path, bool shared_index);
  void Shutdown() {
    std::lock_guard<std::mutex> l(mu_);
    fast_live_.store(false, std::memory_order_relaxed);
    if (!broken_) {
      broken_ = true;
      broken_status_ = Status::Disconnected("the client disconnected");
      ::shutdown(sock_.get(), SHUT_RDWR);
    }
    cv_.notify_all();
  }
  bool connected() {
    std::lock_guard<std::mutex> l(mu_);
    return !broken_;
  }

  // What to do with the reply to a request given up on (it timed out) if it
  // comes after all: undo what the store did for us (references, creates).
  // Made by an OnLate only when a request times out, so that the common
  // case copies nothing.
  using LateFn = std::function<void(const std::string& body)>;
  using OnLate = std::function<LateFn()>;

  // Sends `req` as a `type` request and decodes the reply into `rep`. The
  // store may take `wait_ms` (-1: forever) on top of the request deadline.
  template <typename Req, typename Rep>
  Status Call(p::MessageType type, const Req& req, Rep* rep, int64_t wait_ms = 0,
              const OnLate& on_late = {}) {
    int64_t deadline_us = DeadlineFor(wait_ms);
    uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
    PLASMON_RETURN_IF_ERROR(Send(p::MakeFrame(static_cast<uint16_t>(type), id, req)));
    std::string body;
    PLASMON_RETURN_IF_ERROR(WaitReply(id, p::ReplyType(type), &body, deadline_us, on_late));
    return Decode(body, rep);
  }
  // A reply's body into `rep`; a malformed one breaks the connection.
  template <typename Rep>
  Status Decode(const std::string& body, Rep* rep) {
    if (!p::ParseBody(body, rep)) return Fail(Status::ProtocolError("malformed reply from the store"));
    return Status::OK();
  }
  Result<MutableBuffer> Create(const ObjectID& id, uint64_t data_size, std::string_view metadata);
  Result<std::vector<ObjectBuffer>> Get(const std::vector<ObjectID>& ids, int64_t timeout_ms);
  // Get through the store (a round trip).
  Result<std::vector<ObjectBuffer>> SocketGet(const std::vector<ObjectID>& ids, int64_t timeout_ms);
  // Contains from the shared index; nullopt if only the store can say.
  std::optional<bool> FastContains(const ObjectID& id);
  // Whether a call may take the fast path: the store offered it on this
  // connection, which lives, this is the process that connected, and the
  // index and pin page are mapped. The first call that asks attaches them
  // (AttachIndex, one round trip): a client that never asks (a CLI call, a
  // short script) costs no descriptor, mapping or pin page, and its Connect
  // is as fast as one without the index. fast_mapped_ is stored (release)
  // once index_ and pins_ are set, and loaded (acquire) before they are used.
  bool FastOn() {
    if (!fast_live_.load(std::memory_order_relaxed) || !InParent()) return false;
    return fast_mapped_.load(std::memory_order_acquire) || AttachIndex();
  }
  // Client::Release: gives up the newest reference to `id` still held.
  Status Release(const ObjectID& id);
  // A Reference going away: releases it if it is still held.
  void Drop(Reference* ref);
  Result<Subscription> Subscribe();

 private:
  // The MonoMicros deadline of a request the store may hold for `wait_ms`
  // (-1: forever) before it answers; -1 when there is none.
  int64_t DeadlineFor(int64_t wait_ms) const {
    if (request_timeout_ms_ < 0 || wait_ms < 0) return -1;
    // Either may be huge: DeadlineAfterMs clamps, the sum must not overflow.
    return DeadlineAfterMs(wait_ms > INT64_MAX / 2 - request_timeout_ms_
                               ? INT64_MAX / 2
                               : wait_ms + request_timeout_ms_);
  }
  Status Send(const std::string& frame);
  Status WaitReply(uint64_t id, uint16_t type, std::string* body, int64_t deadline_us,
                   const OnLate& on_late);
  Status Fail(Status st);
  // Request `id` went unanswered past its deadline (mu_ held): its reply, if
  // it ever comes, goes to on_late's function instead of a caller. The
  // connection stays: a store that was only slow goes on serving.
  Status GiveUp(uint64_t id, const OnLate& on_late);
  // Queues a Release of one reference to `id` for the store.
  Status SendRelease(const ObjectID& id);
  // Queues a one-way frame: it rides with the next request, or goes within
  // kReleaseDelay.
  Status Defer(const std::string& frame);
  // Ends what `ref` holds: its pin, or the store's reference.
  Status ReleaseRef(Reference* ref);
  // Finds a sealed `id` in the shared index and pins it (docs/FAST_PATH.md:
  // publish the pin, then revalidate); false: ask the store.
  bool FastGet(const ObjectID& id, ObjectBuffer* b);
  // Clears a pin, then looks whether the store waits for it, and tells it.
  void Unpin(int pin, uint64_t slot, uint64_t gen);

 public:
  // Creates placed in a lease of arena space (docs/FAST_PATH.md): no round
  // trip until the Seal, which creates and seals in one. nullopt: ask the
  // store instead (no index, too large, no lease to be had).
  std::optional<Result<MutableBuffer>> LeasedCreate(const ObjectID& id, uint64_t data_size,
                                                    std::string_view metadata);
  // Seal and Abort of an object placed in the lease; nullopt if `id` is none.
  std::optional<Status> LeasedSeal(const ObjectID& id);
  std::optional<Status> LeasedAbort(const ObjectID& id);

 private:
  static constexpr uint64_t kLeaseBytes = 256 << 10;
  static constexpr uint64_t kLeasedMax = 16 << 10;  // larger objects: Create through the store
  struct Leased {
    uint64_t offset, data_size, metadata_size;
  };
  // Whether the index shows `id` sealed where this client placed it, within
  // kSealSpinUs of spinning (the store publishes before it answers: about
  // half a round trip sooner than its reply would wake us).
  bool SeenSealed(const ObjectID& id, const Leased& placed);
  static constexpr int64_t kSealSpinUs = 50;
  static constexpr size_t kMaxUnreadSeals = 64;
  std::mutex lease_mu_;
  uint64_t lease_next_ = 0, lease_end_ = 0;  // what is left of the lease
  bool leases_refused_ = false;              // a quota, or a store that leases nothing
  // Seals of this lease's objects taken out of leased_ and not written to
  // the socket yet: another thread's new lease would end this one (and let
  // the store reuse its space) before they reach the store.
  uint32_t sealing_ = 0;
 public:
  bool leased_creates_ = false;  // ConnectOptions::leased_creates
 private:
  std::unordered_map<ObjectID, Leased, ObjectIDHash> leased_;  // placed, not sealed yet
  // Sends a `type` request about `id` whose reply nobody waits for.
  void SendAbandoned(p::MessageType type, const ObjectID& id) {
    uint64_t rid = next_id_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> l(mu_);
      given_up_.emplace(rid, LateFn());
    }
    (void)Send(p::MakeFrame(static_cast<uint16_t>(type), rid, p::IdRequest{id}));
  }
  // The list of held references (refs_mu_ held).
  void Link(Reference* ref);
  void Unlink(Reference* ref);
  // Checks that a location the store sent lies inside the mapping.
  bool InArena(const p::ObjectLocation& loc) const {
    uint64_t size = map_->size();
    return loc.arena == 0 && loc.offset <= size && loc.data_size <= size - loc.offset &&
           loc.metadata_size <= size - loc.offset - loc.data_size;
  }

  std::string path_;
  const int64_t request_timeout_ms_;  // ConnectOptions; -1: none
  UniqueFd sock_;
  std::shared_ptr<const Mapping> map_;
  std::unique_ptr<PopulateHints> populate_;  // of *map_
  std::atomic<uint64_t> next_id_{1};
  // The fast path (null without it, or until its first use): the index,
  // read-only, and our pin page.
  std::unique_ptr<shm::IndexReader> index_;
  std::unique_ptr<shm::PinPageClient> pins_;
  // Cleared when the connection ends: the store honours no pin after that.
  std::atomic<bool> fast_live_{false};
  uint64_t fork_epoch_ = 0;  // shm::ForkEpoch() at Connect: in a child, the pin page is not mapped
  bool InParent() const { return shm::ForkEpoch() == fork_epoch_; }
  bool AttachIndex();
  Status MapIndex(const p::AttachIndexReply& rep, std::vector<UniqueFd> fds);
  std::atomic<bool> fast_mapped_{false};
  std::mutex attach_mu_;  // one AttachIndex at a time
  uint64_t index_size_ = 0;  // offered at Connect
  // While an AttachIndex may be answered, the reader takes descriptors with
  // the bytes it reads and keeps them here (under mu_) for it: they come
  // with its reply's bytes, so they are here when its reply is. Otherwise it
  // reads without (the kernel closes any a store sends).
  std::atomic<bool> want_fds_{false};
  std::vector<UniqueFd> passed_fds_;

  // Writes a frame, with any deferred releases in front of it.
  Status WriteLocked(std::string_view frame);
  void FlushReleases();

  std::mutex write_mu_;  // one frame at a time on the socket

  // Releases wait here to ride with the next request (one write, one wake-up
  // of the store instead of two), or for the flusher, at most kReleaseDelay.
  static constexpr auto kReleaseDelay = std::chrono::milliseconds(1);
  std::string pending_releases_;  // guarded by write_mu_
  std::condition_variable flusher_cv_;
  bool flusher_idle_ = false;  // waiting for the first deferred release
  bool flusher_stop_ = false;
  std::thread flusher_;  // started by the first Release, under write_mu_

  // Replies are read by whichever waiting thread holds the reader role; it
  // files replies meant for others in `replies_` and wakes them. One thread
  // alone never waits on another (no extra wake-up on the request path).
  std::mutex mu_;
  std::condition_variable cv_;
  bool reading_ = false;
  bool broken_ = false;
  Status broken_status_;
  std::unordered_map<uint64_t, std::pair<uint16_t, std::string>> replies_;
  std::unordered_map<uint64_t, LateFn> given_up_;  // requests that timed out
  FrameReader reader_;  // used only by the thread in the reader role

  // The references from Get that the store still counts for us, per ID, in
  // the order of the Gets. Each is released exactly once: by the explicit
  // Release that unlinks it, or else when its last buffer goes. Tracking the
  // references themselves (not a count per ID) keeps an early Release of one
  // buffer from being charged to another buffer of the same object.
  struct HeldList {
    Reference* oldest = nullptr;
    Reference* newest = nullptr;
  };
  std::mutex refs_mu_;
  std::unordered_map<ObjectID, HeldList, ObjectIDHash> held_;
};

Reference::~Reference() {
  if (auto c = client_.lock()) c->Drop(this);
}

Status ClientImpl::Connect(const std::string& path, bool shared_index) {
  path_ = path;
  int64_t deadline_us = DeadlineFor(0);
  Result<UniqueFd> fd = ConnectUnix(path, request_timeout_ms_);
  if (!fd.ok()) return fd.status();
  sock_ = std::move(*fd);
  p::ConnectRequest req;
  req.pid = static_cast<uint32_t>(::getpid());
  req.flags = shared_index ? p::kConnectSharedIndex : 0;
  PLASMON_RETURN_IF_ERROR(WriteAll(sock_.get(), p::MakeFrame(static_cast<uint16_t>(p::MessageType::kConnect), 0, req)));
  p::FrameHeader h;
  std::string body;
  std::vector<UniqueFd> fds;  // the arena's; then the index's and the pin page's
  if (Status st = reader_.Read(sock_.get(), &h, &body, &fds, deadline_us); !st.ok()) {
    if (st.IsTimeout())
      return Status::Timeout("the store at " + path + " did not answer within " +
                             std::to_string(request_timeout_ms_) + " ms (stopped, or overloaded?)");
    if (st.IsDisconnected())
      return Status::Disconnected("the store at " + path + " closed the connection before "
                                  "answering (out of file descriptors, or shutting down?)");
    return st;
  }
  p::ConnectReply rep;
  if (h.type != p::ReplyType(p::MessageType::kConnect) || !p::ParseBody(body, &rep))
    return Status::ProtocolError("malformed Connect reply from " + path);
  PLASMON_RETURN_IF_ERROR(rep.status);
  if (fds.empty()) return Status::ProtocolError("the store did not pass its arena");
  // Nothing of the arena is touched here (see client/populate.h): the
  // objects' pages are mapped as they are created and got.
  Result<Mapping> m = Mapping::Map(fds[0].get(), rep.arena_size, /*writable=*/true);
  if (!m.ok()) return m.status();
  map_ = std::make_shared<const Mapping>(std::move(*m));
  populate_ = std::make_unique<PopulateHints>(map_.get(), rep.prefaulted);
  if (rep.index_size > 0) {
    if (fds.size() != 1 || rep.pin_page_size != shm::kPinPageBytes)
      return Status::ProtocolError("malformed shared-index offer in the Connect reply");
    // Attached at the first call that can use it (FastOn).
    index_size_ = rep.index_size;
    fork_epoch_ = shm::ForkEpoch();
    want_fds_.store(true, std::memory_order_relaxed);
    fast_live_.store(true, std::memory_order_relaxed);
  }
  return Status::OK();
}

bool ClientImpl::AttachIndex() {
  std::lock_guard<std::mutex> a(attach_mu_);
  if (fast_mapped_.load(std::memory_order_relaxed)) return true;
  // Once: a failed attach (below), like a broken connection, cleared it.
  if (!fast_live_.load(std::memory_order_relaxed)) return false;
  p::AttachIndexReply rep;
  Status st = Call(p::MessageType::kAttachIndex, p::EmptyRequest{}, &rep);
  std::vector<UniqueFd> fds;
  {
    std::lock_guard<std::mutex> l(mu_);
    want_fds_.store(false, std::memory_order_relaxed);  // no other reply brings any
    fds.swap(passed_fds_);
  }
  if (st.ok()) st = rep.status;  // refused (out of descriptors): the socket serves
  if (st.ok()) st = MapIndex(rep, std::move(fds));
  if (!st.ok()) {
    // The socket path serves every call as well, and shared_index() says
    // false from now on. A store that passed what this client cannot map or
    // does not know (a lying or newer store) is not trusted again.
    fast_live_.store(false, std::memory_order_relaxed);
    return false;
  }
  fast_mapped_.store(true, std::memory_order_release);
  return true;
}

Status ClientImpl::MapIndex(const p::AttachIndexReply& rep, std::vector<UniqueFd> fds) {
  if (fds.size() != 2 || rep.index_size != index_size_ || rep.pin_page_size != shm::kPinPageBytes)
    return Status::ProtocolError("the store's shared index came without its descriptors");
  // Read-only: the store is its only writer, and needs to trust no client.
  Result<Mapping> im = Mapping::Map(fds[0].get(), index_size_, /*writable=*/false);
  if (!im.ok()) return im.status();
  Result<shm::IndexReader> index = shm::IndexReader::Open(std::move(*im), fds[0].get());
  if (!index.ok()) return index.status();
  Result<std::unique_ptr<shm::PinPageClient>> pins = shm::PinPageClient::Open(fds[1].get());
  if (!pins.ok()) return pins.status();
  index_ = std::make_unique<shm::IndexReader>(std::move(*index));
  pins_ = std::move(*pins);
  return Status::OK();
}

Status ClientImpl::Fail(Status st) {
  std::lock_guard<std::mutex> l(mu_);
  fast_live_.store(false, std::memory_order_relaxed);
  if (!broken_) {
    broken_ = true;
    broken_status_ = st;
    ::shutdown(sock_.get(), SHUT_RDWR);
  }
  cv_.notify_all();
  return st;
}

Status ClientImpl::GiveUp(uint64_t id, const OnLate& on_late) {
  given_up_.emplace(id, on_late ? on_late() : LateFn());
  return Status::Timeout("the store at " + path_ + " did not answer within " +
                         std::to_string(request_timeout_ms_) + " ms (stopped, or overloaded?)");
}

Status ClientImpl::WriteLocked(std::string_view frame) {
  if (pending_releases_.empty()) return WriteAll(sock_.get(), frame);
  Status st = WriteAllV(sock_.get(), pending_releases_, frame);
  pending_releases_.clear();
  return st;
}

Status ClientImpl::Send(const std::string& frame) {
  Status st;
  {
    std::lock_guard<std::mutex> w(write_mu_);
    st = WriteLocked(frame);
  }
  if (!st.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    if (broken_) return broken_status_;
    if (!st.IsDisconnected()) st = Status::Disconnected(st.message());
  }
  return st.ok() ? st : Fail(st);
}

void ClientImpl::FlushReleases() {
  std::unique_lock<std::mutex> w(write_mu_);
  while (!flusher_stop_) {
    flusher_idle_ = true;
    flusher_cv_.wait(w, [&] { return flusher_stop_ || !pending_releases_.empty(); });
    flusher_idle_ = false;
    // Give the application the chance to send them with its next request.
    flusher_cv_.wait_for(w, kReleaseDelay,
                         [&] { return flusher_stop_ || pending_releases_.empty(); });
    if (!pending_releases_.empty()) {
      Status st = WriteAll(sock_.get(), pending_releases_);
      (void)st;  // a broken connection is reported to the next caller
      pending_releases_.clear();
    }
  }
}

Status ClientImpl::WaitReply(uint64_t id, uint16_t type, std::string* body,
                             int64_t deadline_us, const OnLate& on_late) {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    auto it = replies_.find(id);
    if (it != replies_.end()) {
      uint16_t got = it->second.first;
      *body = std::move(it->second.second);
      replies_.erase(it);
      if (got != type) {
        l.unlock();
        return Fail(Status::ProtocolError("the store answered with message type " + std::to_string(got)));
      }
      return Status::OK();
    }
    if (broken_) return broken_status_;
    if (reading_) {
      if (deadline_us < 0) {
        cv_.wait(l);
      } else if (cv_.wait_for(l, std::chrono::microseconds(deadline_us - MonoMicros())) ==
                     std::cv_status::timeout &&
                 replies_.count(id) == 0 && !broken_) {
        return GiveUp(id, on_late);
      }
      continue;
    }
    reading_ = true;
    l.unlock();
    p::FrameHeader h;
    std::string b;
    std::vector<UniqueFd> fds;
    const bool want_fds = want_fds_.load(std::memory_order_relaxed);
    Status st = reader_.Read(sock_.get(), &h, &b, want_fds ? &fds : nullptr, deadline_us);
    l.lock();
    reading_ = false;
    // Before the reply is filed: its waiter takes them with it.
    for (UniqueFd& f : fds)
      if (passed_fds_.size() < 2) passed_fds_.push_back(std::move(f));
    if (st.IsTimeout()) {
      cv_.notify_all();  // the reader role is free: another waiter takes it
      return GiveUp(id, on_late);
    }
    if (!st.ok()) {
      fast_live_.store(false, std::memory_order_relaxed);
      if (!broken_) {
        broken_ = true;
        broken_status_ = st;
        ::shutdown(sock_.get(), SHUT_RDWR);  // the store then frees what we held
      }
      cv_.notify_all();
      return broken_status_;
    }
    if (auto g = given_up_.find(h.request_id); g != given_up_.end()) {
      // The late reply to a request that timed out: nobody waits for it.
      LateFn settle = std::move(g->second);
      given_up_.erase(g);
      l.unlock();
      if (settle) settle(b);
      l.lock();
    } else {
      replies_[h.request_id] = {h.type, std::move(b)};
    }
    // Someone else may be waiting for this reply, or for the reader role.
    cv_.notify_all();
  }
}

Result<MutableBuffer> ClientImpl::Create(const ObjectID& id, uint64_t data_size,
                                         std::string_view metadata) {
  if (metadata.size() > p::kMaxMetadata)
    return Status::InvalidArgument("metadata of " + std::to_string(metadata.size()) +
                                   " bytes exceeds the limit of " + std::to_string(p::kMaxMetadata));
  p::CreateRequest req{id, data_size, metadata.size()};
  p::CreateReply rep;
  // A Create answered after we gave up made an object nobody will seal.
  OnLate abort_late = [this, id] {
    return [this, id](const std::string& body) {
      p::CreateReply late;
      if (p::ParseBody(body, &late) && late.status.ok()) SendAbandoned(p::MessageType::kAbort, id);
    };
  };
  PLASMON_RETURN_IF_ERROR(Call(p::MessageType::kCreate, req, &rep, 0, abort_late));
  PLASMON_RETURN_IF_ERROR(rep.status);
  if (!InArena(rep.location) || rep.location.data_size != data_size)
    return Fail(Status::ProtocolError("the store placed an object outside its arena"));
  uint8_t* base = map_->base() + rep.location.offset;
  populate_->BeforeWrite(rep.location.offset, data_size + metadata.size());
  if (!metadata.empty()) std::memcpy(base + data_size, metadata.data(), metadata.size());
  return MutableBuffer{id, base, data_size};
}

Result<std::vector<ObjectBuffer>> ClientImpl::Get(const std::vector<ObjectID>& ids,
                                                  int64_t timeout_ms) {
  if (ids.size() > p::kMaxBatch)
    return Status::InvalidArgument("at most " + std::to_string(p::kMaxBatch) + " IDs per Get");
  if (timeout_ms < -1) return Status::InvalidArgument("timeout_ms must be -1, 0 or positive");
  std::vector<ObjectBuffer> out(ids.size());
  // What the shared index has costs no round trip; the store is asked for
  // the rest only.
  std::vector<ObjectID> rest;
  std::vector<size_t> where;
  if (FastOn()) {
    for (size_t i = 0; i < ids.size(); i++) {
      if (FastGet(ids[i], &out[i])) continue;
      rest.push_back(ids[i]);
      where.push_back(i);
    }
    if (rest.empty()) return out;
    if (rest.size() < ids.size()) {
      Result<std::vector<ObjectBuffer>> more = SocketGet(rest, timeout_ms);
      if (!more.ok()) return more.status();
      for (size_t j = 0; j < rest.size(); j++) out[where[j]] = std::move((*more)[j]);
      return out;
    }
  }
  return SocketGet(ids, timeout_ms);
}

Result<std::vector<ObjectBuffer>> ClientImpl::SocketGet(const std::vector<ObjectID>& ids,
                                                        int64_t timeout_ms) {
  std::vector<ObjectBuffer> out(ids.size());
  p::GetRequest req{timeout_ms, ids};
  p::GetReply rep;
  // A Get answered after we gave up holds references nobody has: release them.
  OnLate release_late = [this, &ids] {
    return [this, ids](const std::string& body) {
      p::GetReply late;
      if (!p::ParseBody(body, &late)) return;
      for (size_t i = 0; i < late.entries.size() && i < ids.size(); i++)
        if (late.entries[i].code == StatusCode::kOk) (void)SendRelease(ids[i]);
    };
  };
  PLASMON_RETURN_IF_ERROR(Call(p::MessageType::kGet, req, &rep, timeout_ms, release_late));
  PLASMON_RETURN_IF_ERROR(rep.status);
  if (rep.entries.size() != ids.size())
    return Fail(Status::ProtocolError("Get reply has the wrong number of entries"));
  std::weak_ptr<ClientImpl> self = weak_from_this();
  for (size_t i = 0; i < ids.size(); i++) {
    const p::GetReply::Entry& e = rep.entries[i];
    ObjectBuffer& b = out[i];
    b.id_ = ids[i];
    if (e.code != StatusCode::kOk) {
      b.status_ = Status(e.code, e.code == StatusCode::kObjectNotSealed
                                     ? "object " + ids[i].Hex() + " was not sealed in time"
                                     : "object " + ids[i].Hex() + " is not in the store");
      continue;
    }
    b.ref_ = std::make_shared<Reference>(self, map_, ids[i]);
    {
      std::lock_guard<std::mutex> l(refs_mu_);
      Link(b.ref_.get());
    }
    if (!InArena(e.location)) return Fail(Status::ProtocolError("the store sent an object outside its arena"));
    b.data_ = map_->base() + e.location.offset;
    b.size_ = e.location.data_size;
    b.metadata_ = b.data_ + b.size_;
    b.metadata_size_ = e.location.metadata_size;
    populate_->BeforeRead(e.location.offset, e.location.data_size + e.location.metadata_size);
  }
  return out;
}

void ClientImpl::Link(Reference* ref) {
  HeldList& list = held_[ref->id_];
  ref->held_ = true;
  ref->older_ = list.newest;
  ref->newer_ = nullptr;
  (list.newest ? list.newest->newer_ : list.oldest) = ref;
  list.newest = ref;
}

void ClientImpl::Unlink(Reference* ref) {
  auto it = held_.find(ref->id_);
  HeldList& list = it->second;
  (ref->older_ ? ref->older_->newer_ : list.oldest) = ref->newer_;
  (ref->newer_ ? ref->newer_->older_ : list.newest) = ref->older_;
  ref->held_ = false;
  ref->older_ = ref->newer_ = nullptr;
  if (list.oldest == nullptr) held_.erase(it);
}

Status ClientImpl::Release(const ObjectID& id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    // As every other call after Disconnect (or a lost connection) says.
    if (broken_) return broken_status_;
  }
  Reference* ref = nullptr;
  {
    std::lock_guard<std::mutex> l(refs_mu_);
    auto it = held_.find(id);
    if (it == held_.end())
      return Status::InvalidArgument("this client holds no reference to " + id.Hex());
    // The newest: Get, read, Release pairs up like a scope, and leaves alone
    // a buffer of the same object kept from an earlier Get.
    ref = it->second.newest;
    Unlink(ref);  // its buffer's end now sends nothing
  }
  return ReleaseRef(ref);
}

void ClientImpl::Drop(Reference* ref) {
  {
    std::lock_guard<std::mutex> l(refs_mu_);
    if (!ref->held_) return;  // released already, by an explicit Release
    Unlink(ref);
  }
  Status st = ReleaseRef(ref);
  (void)st;  // a buffer's end has no one to tell; a broken connection freed it anyway
}

Status ClientImpl::ReleaseRef(Reference* ref) {
  if (ref->pin_ < 0) return SendRelease(ref->id_);
  Unpin(ref->pin_, ref->slot_, ref->gen_);
  ref->pin_ = -1;
  return Status::OK();
}

bool ClientImpl::FastGet(const ObjectID& id, ObjectBuffer* b) {
  std::optional<shm::Found> f = index_->Lookup(id);
  if (!f || shm::WordState(f->word) != shm::kSealed) return false;  // the store knows more
  const uint64_t gen = shm::WordGen(f->word);
  const int pin = pins_->Acquire();
  if (pin < 0) return false;  // every pin slot in use: a reference from the store
  // Publish, then revalidate (seq_cst both): the store, which marks an
  // object going before it scans the pins, either sees this pin or has
  // already changed the word we reload.
  const bool live = pins_->Pin(pin, shm::PinToken(f->slot, gen));
  if (!live || index_->Word(f->slot) != f->word || !fast_live_.load(std::memory_order_relaxed)) {
    Unpin(pin, f->slot, gen);
    return false;
  }
  p::ObjectLocation loc{0, f->offset, f->data_size, f->metadata_size};
  if (!InArena(loc)) {  // the store's own index says so: never read outside the mapping
    Unpin(pin, f->slot, gen);
    return false;
  }
  pins_->RecordGet(shm::PinToken(f->slot, gen));
  b->id_ = id;
  b->ref_ = std::make_shared<Reference>(weak_from_this(), map_, id);
  b->ref_->pin_ = pin;
  b->ref_->slot_ = f->slot;
  b->ref_->gen_ = gen;
  {
    std::lock_guard<std::mutex> l(refs_mu_);
    Link(b->ref_.get());
  }
  b->data_ = map_->base() + loc.offset;
  b->size_ = loc.data_size;
  b->metadata_ = b->data_ + b->size_;
  b->metadata_size_ = loc.metadata_size;
  populate_->BeforeRead(loc.offset, loc.data_size + loc.metadata_size);
  return true;
}

void ClientImpl::Unpin(int pin, uint64_t slot, uint64_t gen) {
  if (!InParent()) return;  // the parent's pin: not ours to clear (nor mapped here)
  pins_->Unpin(pin);  // cleared (seq_cst), then the look:
  const uint64_t w = index_->Word(slot);
  if (shm::WordGen(w) == gen && shm::WordState(w) == shm::kSealed) return;
  // Going (or gone): the store may be waiting for this pin. One-way, and
  // deferred like a release.
  (void)Defer(p::MakeFrame(static_cast<uint16_t>(p::MessageType::kUnpinned), 0, p::EmptyRequest{}));
}

std::optional<Result<MutableBuffer>> ClientImpl::LeasedCreate(const ObjectID& id,
                                                              uint64_t data_size,
                                                              std::string_view metadata) {
  if (!leased_creates_ || !FastOn()) return std::nullopt;
  if (data_size > kLeasedMax || metadata.size() > kLeasedMax - data_size) return std::nullopt;
  if (std::optional<shm::Found> f = index_->Lookup(id))
    return Result<MutableBuffer>(Status::ObjectExists("object " + id.Hex() + " already exists"));
  const uint64_t units = std::max<uint64_t>(64, (data_size + metadata.size() + 63) / 64 * 64);
  uint64_t offset;
  {
    std::lock_guard<std::mutex> l(lease_mu_);
    if (leases_refused_) return std::nullopt;
    if (leased_.count(id) > 0)
      return Result<MutableBuffer>(
          Status::ObjectExists("object " + id.Hex() + " is being created by this client"));
    if (lease_next_ + units > lease_end_) {
      // A new lease returns what is left of this one to the store: only
      // once nothing placed in it waits for its seal.
      if (!leased_.empty() || sealing_ > 0) return std::nullopt;
      p::CreateReply rep;
      Status st = Call(p::MessageType::kLease, p::EvictRequest{kLeaseBytes}, &rep);
      if (!st.ok()) return Result<MutableBuffer>(st);
      if (!rep.status.ok()) {
        // Full (the store's Create then evicts or says why), or refused.
        if (rep.status.IsInvalidArgument()) leases_refused_ = true;
        lease_next_ = lease_end_ = 0;
        return std::nullopt;
      }
      if (!InArena(rep.location) || rep.location.data_size != kLeaseBytes)
        return Result<MutableBuffer>(Fail(Status::ProtocolError("the store leased space outside its arena")));
      lease_next_ = rep.location.offset;
      lease_end_ = rep.location.offset + kLeaseBytes;
    }
    offset = lease_next_;
    lease_next_ += units;
    leased_[id] = Leased{offset, data_size, metadata.size()};
  }
  uint8_t* base = map_->base() + offset;
  if (!metadata.empty()) std::memcpy(base + data_size, metadata.data(), metadata.size());
  return Result<MutableBuffer>(MutableBuffer{id, base, data_size});
}

std::optional<Status> ClientImpl::LeasedSeal(const ObjectID& id) {
  Leased placed;
  {
    std::lock_guard<std::mutex> l(lease_mu_);
    auto it = leased_.find(id);
    if (it == leased_.end()) return std::nullopt;
    placed = it->second;
    leased_.erase(it);
    sealing_++;  // no new lease (which ends this one) until the SealLeased is written
  }
  const int64_t deadline_us = DeadlineFor(0);
  const uint64_t rid = next_id_.fetch_add(1, std::memory_order_relaxed);
  Status sent = Send(p::MakeFrame(
      static_cast<uint16_t>(p::MessageType::kSealLeased), rid,
      p::SealLeasedRequest{id, placed.offset, placed.data_size, placed.metadata_size}));
  {
    // Written: a Lease sent after it reaches the store after it.
    std::lock_guard<std::mutex> l(lease_mu_);
    sealing_--;
  }
  PLASMON_RETURN_IF_ERROR(sent);
  bool spin;
  {
    std::lock_guard<std::mutex> l(mu_);
    spin = given_up_.size() < kMaxUnreadSeals;
  }
  if (spin && SeenSealed(id, placed)) {
    // The store seals (in its table) and publishes before it answers: the
    // object is visible to every client now. Its reply, an OK, is dropped
    // when the next reader comes to it; at most kMaxUnreadSeals wait, so
    // that the store's replies never pile up in the socket.
    std::lock_guard<std::mutex> l(mu_);
    if (replies_.erase(rid) == 0) given_up_.emplace(rid, LateFn());
    return Status::OK();
  }
  std::string body;
  PLASMON_RETURN_IF_ERROR(
      WaitReply(rid, p::ReplyType(p::MessageType::kSealLeased), &body, deadline_us, {}));
  p::StatusReply rep;
  PLASMON_RETURN_IF_ERROR(Decode(body, &rep));
  return rep.status;
}

bool ClientImpl::SeenSealed(const ObjectID& id, const Leased& placed) {
  const int64_t until = MonoMicros() + kSealSpinUs;
  do {
    if (!fast_live_.load(std::memory_order_relaxed)) return false;
    // Our offset (in our lease: no other object can be there) and sizes.
    std::optional<shm::Found> f = index_->Lookup(id);
    if (f && shm::WordState(f->word) == shm::kSealed && f->offset == placed.offset &&
        f->data_size == placed.data_size && f->metadata_size == placed.metadata_size)
      return true;
    for (int i = 0; i < 32; i++) CpuRelax();
  } while (MonoMicros() < until);
  return false;  // an error, a slow store or a full probe window: the reply says
}

std::optional<Status> ClientImpl::LeasedAbort(const ObjectID& id) {
  std::lock_guard<std::mutex> l(lease_mu_);
  if (leased_.erase(id) == 0) return std::nullopt;
  return Status::OK();  // its space goes back to the store with the lease
}

std::optional<bool> ClientImpl::FastContains(const ObjectID& id) {
  if (!FastOn()) return std::nullopt;
  std::optional<shm::Found> f = index_->Lookup(id);
  if (f) {
    if (shm::WordState(f->word) != shm::kSealed) return std::nullopt;  // going: it may stay
  } else if (index_->unpublished()) {
    return std::nullopt;  // the store holds objects its index could not take
  }
  pins_->RecordContains();
  return f.has_value();
}

Status ClientImpl::SendRelease(const ObjectID& id) {
  // One-way (the store never answers a Release), and deferred: see kReleaseDelay.
  return Defer(p::MakeFrame(static_cast<uint16_t>(p::MessageType::kRelease), 0, p::IdRequest{id}));
}

Status ClientImpl::Defer(const std::string& frame) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> w(write_mu_);
    wake = pending_releases_.empty() && flusher_idle_;
    pending_releases_ += frame;
    // Started on first use: a client that never releases needs no thread.
    if (!flusher_.joinable()) flusher_ = std::thread([this] { FlushReleases(); });
    if (pending_releases_.size() >= 64 * 1024) {
      Status st = WriteAll(sock_.get(), pending_releases_);
      pending_releases_.clear();
      return st;
    }
  }
  if (wake) flusher_cv_.notify_one();
  return Status::OK();
}

}  // namespace internal

// ---- Subscription ----

struct Subscription::State {
  UniqueFd sock;
  internal::FrameReader reader{p::kMaxReplyBody};
};

Subscription::Subscription() = default;
Subscription::Subscription(Subscription&&) noexcept = default;
Subscription& Subscription::operator=(Subscription&&) noexcept = default;
Subscription::~Subscription() = default;

int Subscription::fd() const { return state_ ? state_->sock.get() : -1; }

Result<Notification> Subscription::Next(int timeout_ms) {
  if (!state_) return Status::Disconnected("not subscribed");
  if (!state_->reader.HasFrame()) {
    pollfd pfd{state_->sock.get(), POLLIN, 0};
    int n;
    do {
      n = ::poll(&pfd, 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return Status::FromErrno("poll", errno);
    if (n == 0) return Status::Timeout("no notification within " + std::to_string(timeout_ms) + " ms");
  }
  p::FrameHeader h;
  std::string body;
  PLASMON_RETURN_IF_ERROR(state_->reader.Read(state_->sock.get(), &h, &body));
  p::NotificationMessage m;
  if (h.type != static_cast<uint16_t>(p::MessageType::kNotification) || !p::ParseBody(body, &m))
    return Status::ProtocolError("malformed notification from the store");
  return m.n;
}

Result<Subscription> internal::ClientImpl::Subscribe() {
  int64_t deadline_us = DeadlineFor(0);
  Result<UniqueFd> fd = ConnectUnix(path_, request_timeout_ms_);
  if (!fd.ok()) return fd.status();
  Subscription sub;
  sub.state_ = std::make_unique<Subscription::State>();
  sub.state_->sock = std::move(*fd);
  int s = sub.state_->sock.get();
  p::ConnectRequest creq;
  creq.pid = static_cast<uint32_t>(::getpid());
  std::string frames = p::MakeFrame(static_cast<uint16_t>(p::MessageType::kConnect), 1, creq) +
                       p::MakeFrame(static_cast<uint16_t>(p::MessageType::kSubscribe), 2, p::EmptyRequest{});
  PLASMON_RETURN_IF_ERROR(WriteAll(s, frames));
  p::FrameHeader h;
  std::string body;
  std::vector<UniqueFd> unused;  // the arena fd that comes with every Connect reply
  PLASMON_RETURN_IF_ERROR(sub.state_->reader.Read(s, &h, &body, &unused, deadline_us));
  PLASMON_RETURN_IF_ERROR(sub.state_->reader.Read(s, &h, &body, nullptr, deadline_us));
  p::StatusReply rep;
  if (h.type != p::ReplyType(p::MessageType::kSubscribe) || !p::ParseBody(body, &rep))
    return Status::ProtocolError("malformed Subscribe reply");
  PLASMON_RETURN_IF_ERROR(rep.status);
  return sub;
}

// ---- Client ----

Client::Client() = default;
Client::~Client() { Disconnect(); }

Status Client::Connect(const std::string& socket_path, const ConnectOptions& options) {
  if (impl_ && impl_->connected()) return Status::InvalidArgument("already connected");
  if (options.request_timeout_ms < -1 || options.request_timeout_ms == 0)
    return Status::InvalidArgument("request_timeout_ms must be positive, or -1 for none");
  auto impl = std::make_shared<internal::ClientImpl>(options.request_timeout_ms);
  impl->leased_creates_ = options.leased_creates;
  PLASMON_RETURN_IF_ERROR(impl->Connect(socket_path, options.shared_index));
  impl_ = std::move(impl);
  return Status::OK();
}

void Client::Disconnect() {
  if (impl_) impl_->Shutdown();
}

bool Client::connected() const { return impl_ && impl_->connected(); }

#define PLASMON_REQUIRE_CONNECTED() \
  if (!impl_) return Status::Disconnected("not connected to a store")

Result<MutableBuffer> Client::Create(const ObjectID& id, uint64_t data_size,
                                     std::string_view metadata) {
  PLASMON_REQUIRE_CONNECTED();
  if (std::optional<Result<MutableBuffer>> placed = impl_->LeasedCreate(id, data_size, metadata))
    return std::move(*placed);
  return impl_->Create(id, data_size, metadata);
}

Status Client::Seal(const ObjectID& id) {
  PLASMON_REQUIRE_CONNECTED();
  if (std::optional<Status> st = impl_->LeasedSeal(id)) return *st;
  p::StatusReply rep;
  PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kSeal, p::IdRequest{id}, &rep));
  return rep.status;
}

Status Client::Abort(const ObjectID& id) {
  PLASMON_REQUIRE_CONNECTED();
  if (std::optional<Status> st = impl_->LeasedAbort(id)) return *st;
  p::StatusReply rep;
  PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kAbort, p::IdRequest{id}, &rep));
  return rep.status;
}

Status Client::CreateAndSeal(const ObjectID& id, std::string_view data, std::string_view metadata) {
  PLASMON_REQUIRE_CONNECTED();
  if (data.size() + metadata.size() > p::kMaxInlineObject)
    return Status::InvalidArgument("CreateAndSeal takes at most " +
                                   std::to_string(p::kMaxInlineObject) +
                                   " bytes; use Create and Seal for larger objects");
  p::StatusReply rep;
  PLASMON_RETURN_IF_ERROR(
      impl_->Call(p::MessageType::kCreateAndSeal, p::CreateAndSealRequest{id, data, metadata}, &rep));
  return rep.status;
}

Result<std::vector<Status>> Client::CreateAndSeal(const std::vector<ObjectID>& ids,
                                                  const std::vector<std::string_view>& data,
                                                  const std::vector<std::string_view>& metadata) {
  PLASMON_REQUIRE_CONNECTED();
  if (data.size() != ids.size() || (!metadata.empty() && metadata.size() != ids.size()))
    return Status::InvalidArgument("CreateAndSeal of a batch needs one data (and none or one "
                                   "metadata) per ID");
  if (ids.size() > p::kMaxBatch)
    return Status::InvalidArgument("at most " + std::to_string(p::kMaxBatch) +
                                   " objects per CreateAndSeal batch");
  p::CreateAndSealBatchRequest req;
  req.items.reserve(ids.size());
  uint64_t total = 0;
  for (size_t i = 0; i < ids.size(); i++) {
    std::string_view m = metadata.empty() ? std::string_view() : metadata[i];
    total += data[i].size() + m.size();
    req.items.push_back({ids[i], data[i], m});
  }
  if (total > p::kMaxInlineObject)
    return Status::InvalidArgument("a CreateAndSeal batch takes at most " +
                                   std::to_string(p::kMaxInlineObject) +
                                   " bytes in all; use several batches or Create and Seal");
  if (ids.empty()) return std::vector<Status>{};
  p::StatusListReply rep;
  PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kCreateAndSealBatch, req, &rep));
  PLASMON_RETURN_IF_ERROR(rep.status);
  if (rep.results.size() != ids.size())
    return Status::ProtocolError("CreateAndSeal batch reply has the wrong size");
  return std::move(rep.results);
}

Result<std::vector<ObjectBuffer>> Client::Get(const std::vector<ObjectID>& ids,
                                              int64_t timeout_ms, const GetOptions& options) {
  PLASMON_REQUIRE_CONNECTED();
  if (!options.fetch) return impl_->Get(ids, timeout_ms);
  if (timeout_ms < -1) return Status::InvalidArgument("timeout_ms must be -1, 0 or positive");
  // One deadline for the whole call, however many Fetches it takes.
  const int64_t deadline_us = timeout_ms < 0 ? -1 : DeadlineAfterMs(timeout_ms);
  // What is here already costs one round trip; the rest is fetched, then got.
  Result<std::vector<ObjectBuffer>> got = impl_->Get(ids, 0);
  if (!got.ok()) return got;
  std::vector<ObjectID> missing;
  std::vector<size_t> where;
  for (size_t i = 0; i < ids.size(); i++) {
    if ((*got)[i].valid()) continue;
    missing.push_back(ids[i]);
    where.push_back(i);
  }
  // A fetched object may be evicted (or deleted) before the Get that follows
  // takes its reference: such ones are fetched again, a few times at most,
  // within what is left of the deadline.
  for (int attempt = 0; attempt < 3 && !missing.empty(); attempt++) {
    int64_t left_ms = timeout_ms;
    if (deadline_us >= 0) {
      left_ms = std::max<int64_t>(0, (deadline_us - MonoMicros() + 999) / 1000);
      if (attempt > 0 && left_ms == 0) break;  // out of time: they stay as the last Get saw them
    }
    Result<std::vector<Status>> fetched = Fetch(missing, left_ms);
    if (!fetched.ok()) return fetched.status();
    Result<std::vector<ObjectBuffer>> rest = impl_->Get(missing, 0);
    if (!rest.ok()) return rest.status();
    std::vector<ObjectID> again;
    std::vector<size_t> again_where;
    for (size_t j = 0; j < missing.size(); j++) {
      ObjectBuffer& b = (*rest)[j];
      if (!b.valid() && !(*fetched)[j].ok()) internal::ClientImpl::SetBufferStatus(&b, (*fetched)[j]);
      if (!b.valid() && (*fetched)[j].ok()) {
        again.push_back(missing[j]);
        again_where.push_back(where[j]);
      }
      (*got)[where[j]] = std::move(b);
    }
    missing.swap(again);
    where.swap(again_where);
  }
  return got;
}

Result<std::vector<Status>> Client::Fetch(const std::vector<ObjectID>& ids, int64_t timeout_ms,
                                          FetchReport* report) {
  PLASMON_REQUIRE_CONNECTED();
  if (ids.size() > p::kMaxBatch)
    return Status::InvalidArgument("at most " + std::to_string(p::kMaxBatch) + " IDs per Fetch");
  if (timeout_ms < -1) return Status::InvalidArgument("timeout_ms must be -1, 0 or positive");
  p::FetchReply rep;
  const uint8_t flags = report != nullptr ? p::kFetchWantTiming : 0;
  PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kFetch,
                                      p::FetchRequest{timeout_ms, ids, flags}, &rep, timeout_ms));
  PLASMON_RETURN_IF_ERROR(rep.status);
  if (rep.results.size() != ids.size())
    return Status::ProtocolError("Fetch reply has the wrong number of results");
  if (report != nullptr) {
    if (!rep.has_timing) return Status::ProtocolError("Fetch reply has no timing");
    report->in_store_us = rep.in_store_us;
    report->ids.clear();
    for (const p::FetchTiming& t : rep.timing) {
      FetchReport::Id r;
      r.pulled = (t.flags & p::FetchTiming::kPulled) != 0;
      r.shared = (t.flags & p::FetchTiming::kShared) != 0;
      r.cached_location = (t.flags & p::FetchTiming::kCachedLocation) != 0;
      r.rdma = (t.flags & p::FetchTiming::kRdma) != 0;
      r.on_loop = (t.flags & p::FetchTiming::kOnLoop) != 0;
      r.lookup_us = t.lookup_us;
      r.queue_us = t.queue_us;
      r.dispatch_us = t.dispatch_us;
      r.transfer_us = t.transfer_us;
      r.digest_us = t.digest_us;
      r.back_us = t.back_us;
      r.seal_us = t.seal_us;
      r.bytes = t.bytes;
      report->ids.push_back(r);
    }
  }
  return std::move(rep.results);
}

Status Client::Release(const ObjectID& id) {
  PLASMON_REQUIRE_CONNECTED();
  return impl_->Release(id);
}

bool Client::shared_index() const { return impl_ && impl_->FastOn(); }

Result<bool> Client::Contains(const ObjectID& id) {
  PLASMON_REQUIRE_CONNECTED();
  if (std::optional<bool> known = impl_->FastContains(id)) return *known;
  p::ContainsReply rep;
  PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kContains, p::IdRequest{id}, &rep));
  PLASMON_RETURN_IF_ERROR(rep.status);
  return rep.present;
}

Result<std::vector<ObjectInfo>> Client::List() {
  PLASMON_REQUIRE_CONNECTED();
  std::vector<ObjectInfo> all;
  p::ListRequest req;
  for (;;) {
    p::ListReply rep;
    PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kList, req, &rep));
    PLASMON_RETURN_IF_ERROR(rep.status);
    all.insert(all.end(), rep.objects.begin(), rep.objects.end());
    if (!rep.more || rep.objects.empty()) break;
    req.has_cursor = true;
    req.cursor = rep.objects.back().id;
  }
  return all;
}

// Delete and Refresh: IDs in, one code per ID out.
static Result<std::vector<StatusCode>> CallWithIds(internal::ClientImpl* impl, p::MessageType type,
                                            const std::vector<ObjectID>& ids, const char* what) {
  if (ids.size() > p::kMaxBatch)
    return Status::InvalidArgument("at most " + std::to_string(p::kMaxBatch) + " IDs per " + what);
  p::DeleteReply rep;
  PLASMON_RETURN_IF_ERROR(impl->Call(type, p::DeleteRequest{ids}, &rep));
  PLASMON_RETURN_IF_ERROR(rep.status);
  if (rep.codes.size() != ids.size())
    return Status::ProtocolError(std::string(what) + " reply has the wrong size");
  return std::move(rep.codes);
}

Result<std::vector<Status>> Client::Delete(const std::vector<ObjectID>& ids) {
  PLASMON_REQUIRE_CONNECTED();
  Result<std::vector<StatusCode>> codes =
      CallWithIds(impl_.get(), p::MessageType::kDelete, ids, "Delete");
  if (!codes.ok()) return codes.status();
  std::vector<Status> out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); i++) {
    switch ((*codes)[i]) {
      case StatusCode::kOk: out.emplace_back(); break;
      case StatusCode::kObjectInUse:
        out.push_back(Status::ObjectInUse("object " + ids[i].Hex() +
                                          " is in use: it will be deleted when released"));
        break;
      case StatusCode::kObjectNotSealed:
        out.push_back(Status::ObjectNotSealed("object " + ids[i].Hex() +
                                              " is still being created: not deleted"));
        break;
      case StatusCode::kObjectNotFound:
        out.push_back(Status::ObjectNotFound("object " + ids[i].Hex() + " is not in the store"));
        break;
      default: out.emplace_back((*codes)[i], "deleting " + ids[i].Hex() + " failed"); break;
    }
  }
  return out;
}

Result<std::vector<Status>> Client::Refresh(const std::vector<ObjectID>& ids) {
  PLASMON_REQUIRE_CONNECTED();
  Result<std::vector<StatusCode>> codes =
      CallWithIds(impl_.get(), p::MessageType::kRefresh, ids, "Refresh");
  if (!codes.ok()) return codes.status();
  std::vector<Status> out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); i++) {
    switch ((*codes)[i]) {
      case StatusCode::kOk: out.emplace_back(); break;
      case StatusCode::kObjectNotSealed:
        out.push_back(Status::ObjectNotSealed("object " + ids[i].Hex() + " is not sealed yet"));
        break;
      case StatusCode::kObjectNotFound:
        out.push_back(Status::ObjectNotFound("object " + ids[i].Hex() + " is not in the store"));
        break;
      default: return Status::ProtocolError("Refresh reply has an unexpected code");
    }
  }
  return out;
}

Result<uint64_t> Client::Digest(const ObjectID& id) {
  PLASMON_REQUIRE_CONNECTED();
  p::DigestReply rep;
  PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kDigest, p::IdRequest{id}, &rep));
  PLASMON_RETURN_IF_ERROR(rep.status);
  return rep.digest;
}

Status Client::SetOptions(const ClientOptions& options) {
  PLASMON_REQUIRE_CONNECTED();
  p::StatusReply rep;
  PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kSetOptions,
                                      p::SetOptionsRequest{options.memory_quota}, &rep));
  return rep.status;
}

Result<uint64_t> Client::Evict(uint64_t bytes) {
  PLASMON_REQUIRE_CONNECTED();
  p::EvictReply rep;
  PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kEvict, p::EvictRequest{bytes}, &rep));
  PLASMON_RETURN_IF_ERROR(rep.status);
  return rep.bytes;
}

Result<StoreStats> Client::Stats() {
  PLASMON_REQUIRE_CONNECTED();
  p::StatsReply rep;
  PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kStats, p::EmptyRequest{}, &rep));
  PLASMON_RETURN_IF_ERROR(rep.status);
  return rep.stats;
}

Result<std::vector<ObjectHolder>> Client::Where(const ObjectID& id, HoldersLeftOut* left_out) {
  PLASMON_REQUIRE_CONNECTED();
  p::WhereReply rep;
  PLASMON_RETURN_IF_ERROR(impl_->Call(p::MessageType::kWhere, p::IdRequest{id}, &rep));
  PLASMON_RETURN_IF_ERROR(rep.status);
  if (left_out != nullptr) *left_out = {rep.not_shown, rep.malformed};
  std::vector<ObjectHolder> out;
  for (const auto& h : rep.holders)
    out.push_back({h.node_id, h.alive, h.data_size, h.metadata_size, h.digest_valid, h.digest});
  return out;
}

Result<Subscription> Client::Subscribe() {
  PLASMON_REQUIRE_CONNECTED();
  return impl_->Subscribe();
}

}  // namespace plasmon
