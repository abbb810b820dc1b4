// The verbs transport. Written by hand on libibverbs and librdmacm because
// the transfer engine is the product: the pieces it stands on (rdma_cm for
// connections, RC queue pairs, RDMA READ) are rdma-core's, the choreography
// of pins, reads and digests is ours.
#include "transport/verbs_transport.h"

#include <fcntl.h>
#include <infiniband/verbs.h>
#include <netdb.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/digest.h"
#include "core/event_loop.h"
#include "core/fd.h"
#include "core/limited_log.h"
#include "core/size.h"
#include "transport/address.h"
#include "transport/plumbing.h"
#include "transport/verbs_wire.h"

namespace plasmon {

namespace {

using verbs::MessageType;

constexpr int kRecvSlots = 8;   // control messages a connection can receive ahead
constexpr int kSendSlots = 8;   // control messages in flight from one side
constexpr size_t kMaxPinsPerConnection = 16;
constexpr uint64_t kMinChunkSize = 4096;
// Idle connections kept per peer (each holds a QP, a CQ and registered
// control buffers); more than the store's transfer threads is never needed.
constexpr size_t kMaxIdlePerEndpoint = 16;
// How often the serving thread looks for connections that did not
// authenticate in time and pins held past their timeout.
constexpr int64_t kHousekeepUs = 500000;

// What a work request was, in the top bits of its wr_id; the slot below.
enum class WrKind : uint64_t { kRecv = 1, kSend = 2, kRead = 3 };
uint64_t WrId(WrKind k, uint64_t index) { return (static_cast<uint64_t>(k) << 56) | index; }
WrKind KindOf(uint64_t wr_id) { return static_cast<WrKind>(wr_id >> 56); }
uint64_t IndexOf(uint64_t wr_id) { return wr_id & ((uint64_t{1} << 56) - 1); }

std::string Errno(int err) { return std::strerror(err); }

// ibv_reg_mr fails with ENOMEM/EPERM/EAGAIN when the locked-memory limit is
// too low for the arena: say so, with the fix.
Status RegistrationError(uint64_t bytes, int err) {
  std::string msg = "registering " + FormatSize(bytes) + " for RDMA failed: " + Errno(err);
  if (err == ENOMEM || err == EPERM || err == EAGAIN) {
    rlimit rl{};
    if (::getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
      msg += ". RLIMIT_MEMLOCK is " + FormatSize(rl.rlim_cur) +
             ", too low to pin the arena: raise it (ulimit -l unlimited; LimitMEMLOCK=infinity "
             "for a systemd unit; memlock in /etc/security/limits.conf; --ulimit memlock=-1 for "
             "a container)";
    }
  }
  return Status::IOError(msg);
}

// Resolves HOST[:PORT] for rdma_cm. An absent port is 0 (ephemeral).
Status ResolveAddress(const std::string& s, bool passive, sockaddr_storage* out) {
  std::string host = s, port = "0";
  if (!SplitHostPort(s, &host, &port)) {
    host = s;
    port = "0";
    if (!host.empty() && host.front() == '[' && host.back() == ']')
      host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) return Status::InvalidArgument("empty RDMA address");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  int gai = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0) return Status::InvalidArgument("cannot resolve '" + s + "': " + gai_strerror(gai));
  std::memcpy(out, res->ai_addr, std::min<size_t>(res->ai_addrlen, sizeof(*out)));
  ::freeaddrinfo(res);
  return Status::OK();
}

std::string FormatSockaddr(const sockaddr* sa) {
  if (sa == nullptr) return "?";
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  socklen_t len = sa->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "?";
  return JoinHostPort(host, serv);
}

Status SetNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return Status::FromErrno("fcntl O_NONBLOCK", errno);
  return Status::OK();
}

// A piece of registered memory on one device.
struct LocalMr {
  uint8_t* base = nullptr;
  uint64_t length = 0;
  ibv_mr* mr = nullptr;
};

// One RDMA device (as rdma_cm opened it) with the protection domain and the
// registrations every connection on it shares.
struct Device {
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  ibv_device_attr attr{};
  std::vector<LocalMr> mrs;

  ~Device() {
    for (LocalMr& m : mrs)
      if (m.mr != nullptr) ibv_dereg_mr(m.mr);
    if (pd != nullptr) ibv_dealloc_pd(pd);
  }
  std::string name() const { return ibv_get_device_name(ctx->device); }
  // The registration holding [p, p + 1), or null.
  const LocalMr* Find(const uint8_t* p) const {
    for (const LocalMr& m : mrs)
      if (p >= m.base && p < m.base + m.length) return &m;
    return nullptr;
  }
};

// The registered buffers control messages are sent from and received into.
class ControlSlots {
 public:
  ~ControlSlots() { Reset(); }
  // Deregisters (before the protection domain's connection goes).
  void Reset() {
    if (mr_ != nullptr) ibv_dereg_mr(mr_);
    mr_ = nullptr;
  }
  Status Init(ibv_pd* pd) {
    buf_.assign(size_t{kRecvSlots + kSendSlots} * verbs::kMaxMessage, 0);
    // An int: ibv_reg_mr's macro masks it with another enum's value.
    mr_ = ibv_reg_mr(pd, buf_.data(), buf_.size(), static_cast<int>(IBV_ACCESS_LOCAL_WRITE));
    if (mr_ == nullptr) return RegistrationError(buf_.size(), errno);
    busy_.assign(kSendSlots, false);
    return Status::OK();
  }
  Status PostRecv(ibv_qp* qp, int slot) {
    ibv_sge sge{reinterpret_cast<uint64_t>(Recv(slot)), verbs::kMaxMessage, mr_->lkey};
    ibv_recv_wr wr{};
    wr.wr_id = WrId(WrKind::kRecv, static_cast<uint64_t>(slot));
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    int rc = ibv_post_recv(qp, &wr, &bad);
    return rc == 0 ? Status::OK() : Status::IOError("ibv_post_recv: " + Errno(rc));
  }
  Status PostAllRecvs(ibv_qp* qp) {
    for (int i = 0; i < kRecvSlots; i++) PLASMON_RETURN_IF_ERROR(PostRecv(qp, i));
    return Status::OK();
  }
  // Sends from a free slot (signaled: OnSendDone frees it).
  Status Send(ibv_qp* qp, std::string_view msg) {
    if (msg.size() > verbs::kMaxMessage) return Status::InvalidArgument("control message too long");
    auto it = std::find(busy_.begin(), busy_.end(), false);
    if (it == busy_.end()) return Status::ProtocolError("too many control messages in flight");
    int slot = static_cast<int>(it - busy_.begin());
    std::memcpy(SendBuf(slot), msg.data(), msg.size());
    ibv_sge sge{reinterpret_cast<uint64_t>(SendBuf(slot)), static_cast<uint32_t>(msg.size()),
                mr_->lkey};
    ibv_send_wr wr{};
    wr.wr_id = WrId(WrKind::kSend, static_cast<uint64_t>(slot));
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_SIGNALED;
    ibv_send_wr* bad = nullptr;
    int rc = ibv_post_send(qp, &wr, &bad);
    if (rc != 0) return Status::IOError("ibv_post_send: " + Errno(rc));
    busy_[slot] = true;
    return Status::OK();
  }
  void OnSendDone(uint64_t slot) {
    if (slot < busy_.size()) busy_[slot] = false;
  }
  bool AnySendBusy() const { return std::find(busy_.begin(), busy_.end(), true) != busy_.end(); }
  bool AllSendsBusy() const { return std::find(busy_.begin(), busy_.end(), false) == busy_.end(); }
  std::string_view Received(uint64_t slot, uint32_t len) const {
    return {reinterpret_cast<const char*>(buf_.data()) + slot * verbs::kMaxMessage,
            std::min<uint32_t>(len, verbs::kMaxMessage)};
  }

 private:
  uint8_t* Recv(int slot) { return buf_.data() + size_t(slot) * verbs::kMaxMessage; }
  uint8_t* SendBuf(int slot) { return buf_.data() + size_t(kRecvSlots + slot) * verbs::kMaxMessage; }
  std::vector<uint8_t> buf_;
  ibv_mr* mr_ = nullptr;
  std::vector<bool> busy_;
};

// Queue pair capacities for a device: what we want, within what it allows.
ibv_qp_init_attr QpAttr(const Device& dev, ibv_cq* cq, int reads) {
  ibv_qp_init_attr a{};
  a.send_cq = cq;
  a.recv_cq = cq;
  a.qp_type = IBV_QPT_RC;
  a.cap.max_send_wr = static_cast<uint32_t>(std::min(reads + kSendSlots, dev.attr.max_qp_wr));
  a.cap.max_recv_wr = static_cast<uint32_t>(std::min(kRecvSlots, dev.attr.max_qp_wr));
  a.cap.max_send_sge = 1;  // every request moves one contiguous range
  a.cap.max_recv_sge = 1;
  return a;
}
int CqSize(const Device& dev, int reads) {
  return std::min(reads + kSendSlots + kRecvSlots, dev.attr.max_cqe);
}

}  // namespace

// ---------------------------------------------------------------------------

class VerbsTransport::Impl {
 public:
  explicit Impl(VerbsTransportOptions o) : opts_(std::move(o)) {}
  ~Impl();

  Status Init();
  Status RegisterMemory(const MemoryRegion& region);
  Result<std::string> Listen(ObjectSource* source);
  Result<PullResult> Pull(const std::string& endpoint, const PullRequest& request);
  void Shutdown();
  uint64_t accepted() const {
    std::lock_guard<std::mutex> l(mu_);
    return accepted_;
  }
  size_t pinned() const {
    std::lock_guard<std::mutex> l(mu_);
    return pins_.size();
  }
  bool shutting_down() const {
    std::lock_guard<std::mutex> l(mu_);
    return shut_down_;
  }
  Transport::Connections connections() const {
    const uint64_t served = served_count_.load(std::memory_order_relaxed);
    const uint64_t authed = std::min(served, served_authed_.load(std::memory_order_relaxed));
    return {true, authed, served - authed, outgoing_.load(std::memory_order_relaxed)};
  }

 private:
  // ---- client side: a connection to one holder, used by one Pull at a time.
  struct Peer {
    std::string endpoint;
    rdma_event_channel* events = nullptr;
    rdma_cm_id* id = nullptr;
    Device* dev = nullptr;
    ibv_comp_channel* comp = nullptr;
    ibv_cq* cq = nullptr;
    unsigned unacked = 0;
    bool armed = false;
    bool connected = false;
    bool broken = false;
    ControlSlots ctl;
    std::vector<verbs::RemoteRegion> remote;
    int reads = 1;        // READs outstanding at most
    uint64_t chunk = 0;   // bytes per READ at most
    uint64_t reads_done = 0;
    std::deque<std::string> inbox;
    // An epoll set of comp's and events' fds, made at the first LoopPull: a
    // loop watches one fd and hears of completions and disconnects.
    UniqueFd waitset;
    std::atomic<uint64_t>* live = nullptr;  // the transport's count of outgoing connections
    ~Peer();
  };

  // ---- server side: one connection from a puller.
  struct Served {
    uint64_t conn_id = 0;
    rdma_cm_id* id = nullptr;
    Device* dev = nullptr;
    ibv_cq* cq = nullptr;
    unsigned unacked = 0;
    ControlSlots ctl;
    auth::Nonce client_nonce{}, server_nonce{};
    std::string peer;
    std::string host;  // the peer's address without its port (the log's rate limit)
    int64_t since_us = 0;
    bool established = false;
    bool authed = false;
    bool close_after_send = false;
    bool doomed = false;
    size_t pins = 0;
  };

  // An object pinned for a peer, keyed by (connection, request ID).
  struct HeldPin {
    ObjectID id;
    const uint8_t* bytes = nullptr;
    uint64_t data_size = 0;
    uint64_t metadata_size = 0;
    int64_t since_us = 0;
    bool hashing = false;   // the hashing thread reads it
    bool released = false;  // Unpin once the hash is done
    std::optional<uint64_t> digest;  // computed here
  };
  using PinKey = std::pair<uint64_t, uint64_t>;

  struct HashJob {
    PinKey key;
    const uint8_t* bytes;
    uint64_t data_size, metadata_size;
  };

  Result<Device*> GetDevice(ibv_context* ctx);
  Status RegisterOn(Device* dev, const MemoryRegion& r);

  // client
  Result<std::unique_ptr<Peer>> Acquire(const std::string& endpoint, bool* pooled);
  Result<std::unique_ptr<Peer>> Connect(const std::string& endpoint);
  Status WaitCm(Peer* p, rdma_cm_event_type want, int64_t deadline_us, std::string* private_data,
                rdma_conn_param* param);
  Status Progress(Peer* p, int timeout_ms, const std::function<bool()>& done);
  Status Drain(Peer* p, bool* progressed);
  // Takes the completion channel's event, if one is there (never blocks);
  // false if there was none.
  static bool TakeCqEvent(Peer* p);
  // Reads the connection's rdma_cm events (never blocks); true if it is
  // disconnected (then also marked broken).
  static bool TakeCmEvents(Peer* p);
  // Asks for an event at the next completion (the caller drains once more
  // after: one may have landed before).
  static Status Arm(Peer* p);
  // What the inbox held: the message looked for, nothing yet, or something
  // a well-behaved holder never sends. Stale Digests (of abandoned pulls)
  // are skipped.
  enum class Taken { kNothing, kFound, kBad };
  static Taken TakeMessage(Peer* p, MessageType type, uint64_t request_id, std::string* body);
  // `body` decoded as `msg` (named `what` in errors); a malformed one breaks
  // the connection.
  template <typename Msg>
  static Status Parsed(Peer* p, const std::string& body, const char* what, Msg* msg) {
    if (verbs::ParseBody(body, msg)) return Status::OK();
    p->broken = true;
    return Status::ProtocolError(p->endpoint + ": a malformed " + what);
  }
  Result<std::string> AwaitMessage(Peer* p, MessageType type, uint64_t request_id);
  template <typename Msg>
  Status AwaitParsed(Peer* p, MessageType type, uint64_t request_id, const char* what, Msg* msg) {
    Result<std::string> body = AwaitMessage(p, type, request_id);
    if (!body.ok()) return body.status();
    return Parsed(p, *body, what, msg);
  }
  class PullOp;
  class LoopPull;
  Result<PullResult> PullOn(Peer* p, const PullRequest& req);
  void Return(std::unique_ptr<Peer> p);

 public:
  std::unique_ptr<AsyncPull> StartAsyncPull(const std::string& endpoint,
                                            const PullRequest& request);

 private:

  // server
  void ServeLoop();
  void OnCmEvent(rdma_cm_event* ev, rdma_cm_id** destroy_after_ack);
  void OnConnectRequest(rdma_cm_event* ev, rdma_cm_id** destroy_after_ack);
  void OnServerCq();
  void OnCmChannel();
  void ArmHousekeeping();  // Housekeep every kHousekeepUs
  void ReapDoomed();       // destroys connections marked doomed
  void OnMessage(Served* s, std::string_view msg);
  void OnDescribe(Served* s, uint64_t request_id, const verbs::Describe& d);
  void OnRelease(Served* s, uint64_t request_id);
  void OnHashed();
  void Housekeep();
  void Doom(Served* s, const std::string& why);
  void DestroyServed(Served* s);
  void Reply(Served* s, const std::string& msg);
  void EndPin(std::map<PinKey, HeldPin>::iterator it);  // mu_ held
  void HashLoop();

  const VerbsTransportOptions opts_;
  UniqueFd shutdown_fd_;  // eventfd: readable once Shutdown starts; never reset
  std::atomic<uint64_t> next_request_id_{1};

  mutable std::mutex mu_;
  bool shut_down_ = false;
  RegisteredMemory memory_;
  std::unordered_map<ibv_context*, std::unique_ptr<Device>> devices_;
  IdlePool<std::unique_ptr<Peer>> idle_;
  PullGate pulls_;
  uint64_t accepted_ = 0;
  std::map<PinKey, HeldPin> pins_;
  LogLimiter log_limiter_;  // warnings a peer can cause, by peer address and reason

  // Serving (the fields below mu_ are the serving thread's alone).
  ObjectSource* source_ = nullptr;
  rdma_event_channel* listen_events_ = nullptr;
  rdma_cm_id* listen_id_ = nullptr;
  std::unordered_map<ibv_context*, ibv_comp_channel*> comp_channels_;
  std::thread serve_thread_;
  uint64_t next_conn_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Served>> served_;
  // For --metrics (read by any thread): served connections, those past
  // their handshake, and outgoing ones (pooled or pulling).
  std::atomic<uint64_t> served_count_{0}, served_authed_{0}, outgoing_{0};
  std::unique_ptr<EventLoop> serve_loop_;

  // Hashing.
  std::mutex hash_mu_;
  std::condition_variable hash_cv_;
  std::deque<HashJob> hash_jobs_;
  std::vector<std::pair<PinKey, uint64_t>> hash_done_;
  bool hash_stop_ = false;
  UniqueFd hash_fd_;  // eventfd: results waiting
  std::thread hash_thread_;
};

VerbsTransport::Impl::Peer::~Peer() {
  if (live != nullptr) live->fetch_sub(1, std::memory_order_relaxed);
  if (id != nullptr) {
    if (connected) rdma_disconnect(id);
    if (id->qp != nullptr) rdma_destroy_qp(id);
  }
  if (cq != nullptr) {
    if (unacked > 0) ibv_ack_cq_events(cq, unacked);
    ibv_destroy_cq(cq);
  }
  if (comp != nullptr) ibv_destroy_comp_channel(comp);
  ctl.Reset();
  if (id != nullptr) rdma_destroy_id(id);
  if (events != nullptr) rdma_destroy_event_channel(events);
}

VerbsTransport::Impl::~Impl() {
  Shutdown();
  std::lock_guard<std::mutex> l(mu_);
  devices_.clear();
}

Status VerbsTransport::Impl::Init() {
  shutdown_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  hash_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!shutdown_fd_.valid() || !hash_fd_.valid()) return Status::FromErrno("eventfd", errno);
  return Status::OK();
}

Status VerbsTransport::Impl::RegisterOn(Device* dev, const MemoryRegion& r) {
  // Split where the region exceeds the device's largest MR.
  uint64_t max = dev->attr.max_mr_size == 0 ? r.size : dev->attr.max_mr_size;
  if (opts_.max_registration > 0) max = std::min(max, opts_.max_registration);
  max = std::max<uint64_t>(max & ~uint64_t{4095}, 4096);
  for (uint64_t off = 0; off < r.size; off += max) {
    uint64_t len = std::min(max, r.size - off);
    ibv_mr* mr = ibv_reg_mr(dev->pd, r.base + off, len,
                            IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
    if (mr == nullptr) return RegistrationError(len, errno);
    dev->mrs.push_back({r.base + off, len, mr});
  }
  return Status::OK();
}

Result<Device*> VerbsTransport::Impl::GetDevice(ibv_context* ctx) {
  if (ctx == nullptr) return Status::IOError("rdma_cm gave no device for this address");
  std::lock_guard<std::mutex> l(mu_);
  auto it = devices_.find(ctx);
  if (it != devices_.end()) return it->second.get();
  auto dev = std::make_unique<Device>();
  dev->ctx = ctx;
  if (int rc = ibv_query_device(ctx, &dev->attr); rc != 0)
    return Status::IOError("ibv_query_device: " + Errno(rc));
  dev->pd = ibv_alloc_pd(ctx);
  if (dev->pd == nullptr) return Status::IOError("ibv_alloc_pd: " + Errno(errno));
  int64_t t0 = MonoMicros();
  uint64_t bytes = 0;
  for (const MemoryRegion& r : memory_.regions()) {
    PLASMON_RETURN_IF_ERROR(RegisterOn(dev.get(), r));
    bytes += r.size;
  }
  spdlog::info("verbs transport: device {}: registered {} in {} region(s) in {} ms "
               "(max MR {}, {} outstanding reads, max {} WRs)",
               dev->name(), FormatSize(bytes), dev->mrs.size(), (MonoMicros() - t0) / 1000,
               FormatSize(dev->attr.max_mr_size), dev->attr.max_qp_init_rd_atom,
               dev->attr.max_qp_wr);
  Device* raw = dev.get();
  devices_.emplace(ctx, std::move(dev));
  return raw;
}

Status VerbsTransport::Impl::RegisterMemory(const MemoryRegion& region) {
  if (region.base == nullptr || region.size == 0)
    return Status::InvalidArgument("empty memory region");
  std::lock_guard<std::mutex> l(mu_);
  if (shut_down_) return Status::Disconnected("the transport is shut down");
  for (auto& [ctx, dev] : devices_) PLASMON_RETURN_IF_ERROR(RegisterOn(dev.get(), region));
  memory_.Add(region);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Serving

Result<std::string> VerbsTransport::Impl::Listen(ObjectSource* source) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (shut_down_) return Status::Disconnected("the transport is shut down");
    if (listen_id_ != nullptr) return Status::InvalidArgument("already listening");
  }
  sockaddr_storage addr{};
  PLASMON_RETURN_IF_ERROR(ResolveAddress(opts_.listen, /*passive=*/true, &addr));
  listen_events_ = rdma_create_event_channel();
  if (listen_events_ == nullptr)
    return Status::IOError("rdma_create_event_channel: " + Errno(errno) +
                           " (is rdma_ucm loaded and /dev/infiniband/rdma_cm present?)");
  PLASMON_RETURN_IF_ERROR(SetNonBlocking(listen_events_->fd));
  if (rdma_create_id(listen_events_, &listen_id_, nullptr, RDMA_PS_TCP) != 0) {
    listen_id_ = nullptr;
    return Status::IOError("rdma_create_id: " + Errno(errno));
  }
  if (rdma_bind_addr(listen_id_, reinterpret_cast<sockaddr*>(&addr)) != 0)
    return Status::IOError("rdma_bind_addr " + opts_.listen + ": " + Errno(errno) +
                           " (no RDMA device on that address?)");
  // Register every region on the listening device now, not at the first pull.
  if (listen_id_->verbs != nullptr) {
    Result<Device*> dev = GetDevice(listen_id_->verbs);
    if (!dev.ok()) return dev.status();
  }
  if (rdma_listen(listen_id_, 128) != 0) return Status::IOError("rdma_listen: " + Errno(errno));

  std::string port = std::to_string(ntohs(rdma_get_src_port(listen_id_)));
  std::string bound = FormatSockaddr(rdma_get_local_addr(listen_id_));
  std::string bound_host, bound_port;
  if (!SplitHostPort(bound, &bound_host, &bound_port)) bound_host = bound;
  Result<std::string> advertised =
      AdvertisedEndpoint(opts_.listen, opts_.advertise, bound_host, port, IsWildcard(addr));
  if (!advertised.ok()) return advertised.status();
  const std::string endpoint = *advertised;

  Result<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  if (!loop.ok()) return loop.status();
  serve_loop_ = std::move(*loop);
  PLASMON_RETURN_IF_ERROR(serve_loop_->Add(listen_events_->fd, EPOLLIN, [this](uint32_t) {
    OnCmChannel();
    ReapDoomed();
  }));
  PLASMON_RETURN_IF_ERROR(serve_loop_->Add(hash_fd_.get(), EPOLLIN, [this](uint32_t) {
    OnHashed();
    ReapDoomed();
  }));

  std::lock_guard<std::mutex> l(mu_);
  if (shut_down_) return Status::Disconnected("the transport is shut down");
  source_ = source;
  hash_thread_ = std::thread([this] { HashLoop(); });
  serve_thread_ = std::thread([this] { ServeLoop(); });
  spdlog::info("verbs transport: serving on {} (advertised as {})", bound, endpoint);
  return endpoint;
}

void VerbsTransport::Impl::ServeLoop() {
  ArmHousekeeping();
  Status st = serve_loop_->Run();  // until Shutdown stops it
  if (!st.ok()) spdlog::error("verbs transport: {}", st.ToString());
  for (auto& [id, s] : served_) DestroyServed(s.get());
  served_.clear();
}

void VerbsTransport::Impl::OnCmChannel() {
  rdma_cm_event* ev = nullptr;
  while (rdma_get_cm_event(listen_events_, &ev) == 0) {
    rdma_cm_id* destroy = nullptr;
    OnCmEvent(ev, &destroy);
    rdma_ack_cm_event(ev);
    if (destroy != nullptr) rdma_destroy_id(destroy);
  }
}

void VerbsTransport::Impl::ArmHousekeeping() {
  serve_loop_->AddTimerAfter(kHousekeepUs, [this] {
    Housekeep();
    ReapDoomed();
    ArmHousekeeping();
  });
}

void VerbsTransport::Impl::ReapDoomed() {
  for (auto it = served_.begin(); it != served_.end();) {
    if (it->second->doomed) {
      DestroyServed(it->second.get());
      it = served_.erase(it);
    } else {
      ++it;
    }
  }
}

void VerbsTransport::Impl::OnCmEvent(rdma_cm_event* ev, rdma_cm_id** destroy_after_ack) {
  if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
    OnConnectRequest(ev, destroy_after_ack);
    return;
  }
  if (ev->id == listen_id_) {
    spdlog::error("verbs transport: listener event {}", rdma_event_str(ev->event));
    return;
  }
  auto* s = static_cast<Served*>(ev->id->context);
  if (s == nullptr) return;
  switch (ev->event) {
    case RDMA_CM_EVENT_ESTABLISHED:
      s->established = true;
      break;
    case RDMA_CM_EVENT_DISCONNECTED:
      s->established = false;  // nothing to disconnect any more
      Doom(s, "");
      break;
    case RDMA_CM_EVENT_TIMEWAIT_EXIT:
      break;
    default:
      Doom(s, std::string("rdma_cm ") + rdma_event_str(ev->event));
      break;
  }
}

void VerbsTransport::Impl::OnConnectRequest(rdma_cm_event* ev, rdma_cm_id** destroy_after_ack) {
  rdma_cm_id* id = ev->id;
  std::string addr = FormatSockaddr(rdma_get_peer_addr(id));
  auto refuse = [&](StatusCode code, const std::string& why) {
    LimitedLog(log_limiter_, spdlog::level::warn,
               "verbs transport: refused connections from " + HostOf(addr),
               "verbs transport: refused a connection from {}: {}", addr, why);
    verbs::Refusal r;
    r.code = static_cast<uint16_t>(code);
    std::string pd = r.Encode();
    rdma_reject(id, pd.data(), static_cast<uint8_t>(pd.size()));
    *destroy_after_ack = id;
  };
  {
    std::lock_guard<std::mutex> l(mu_);
    accepted_++;
  }
  verbs::Hello hello;
  std::string_view pdata(static_cast<const char*>(ev->param.conn.private_data),
                         ev->param.conn.private_data == nullptr ? 0
                                                                : ev->param.conn.private_data_len);
  if (!hello.Decode(pdata)) return refuse(StatusCode::kProtocolError, "not a plasmon peer");
  if (hello.version != verbs::kVersion)
    return refuse(StatusCode::kProtocolError,
                  "protocol version " + std::to_string(hello.version) + " (this store speaks " +
                      std::to_string(verbs::kVersion) + ")");
  if (served_.size() >= opts_.max_connections)
    return refuse(StatusCode::kOutOfMemory,
                  "already serving " + std::to_string(served_.size()) + " connections");
  Result<Device*> dev = GetDevice(id->verbs);
  if (!dev.ok()) return refuse(StatusCode::kIOError, dev.status().message());

  auto s = std::make_unique<Served>();
  s->conn_id = next_conn_id_++;
  s->id = id;
  s->dev = *dev;
  s->peer = addr;
  s->host = HostOf(addr);
  s->since_us = MonoMicros();
  s->client_nonce = hello.nonce;
  auto fail = [&](const std::string& why) {
    // Tear down what was made; the id itself goes after the ack.
    if (id->qp != nullptr) rdma_destroy_qp(id);
    if (s->cq != nullptr) ibv_destroy_cq(s->cq);
    id->context = nullptr;
    refuse(StatusCode::kIOError, why);
  };
  ibv_comp_channel*& comp = comp_channels_[id->verbs];
  if (comp == nullptr) {
    comp = ibv_create_comp_channel(id->verbs);
    if (comp == nullptr) return fail("ibv_create_comp_channel: " + Errno(errno));
    Status st = SetNonBlocking(comp->fd);
    if (st.ok()) st = serve_loop_->Add(comp->fd, EPOLLIN, [this](uint32_t) {
      OnServerCq();
      ReapDoomed();
    });
    if (!st.ok())
      return fail("cannot watch the completion channel");
  }
  s->cq = ibv_create_cq(id->verbs, CqSize(**dev, 0), s.get(), comp, 0);
  if (s->cq == nullptr) return fail("ibv_create_cq: " + Errno(errno));
  if (int rc = ibv_req_notify_cq(s->cq, 0); rc != 0) return fail("ibv_req_notify_cq: " + Errno(rc));
  ibv_qp_init_attr qa = QpAttr(**dev, s->cq, 0);
  if (rdma_create_qp(id, (*dev)->pd, &qa) != 0) return fail("rdma_create_qp: " + Errno(errno));
  if (Status st = s->ctl.Init((*dev)->pd); !st.ok()) return fail(st.message());
  if (Status st = s->ctl.PostAllRecvs(id->qp); !st.ok()) return fail(st.message());

  verbs::Challenge ch;
  if (Status st = auth::RandomNonce(&ch.nonce); !st.ok()) return fail(st.message());
  ch.flags = opts_.secret.empty() ? 0 : verbs::kHasSecret;
  ch.proof = auth::MakeProof(opts_.secret, auth::kServerLabel, hello.nonce, ch.nonce);
  s->server_nonce = ch.nonce;
  std::string pd = ch.Encode();
  rdma_conn_param param{};
  param.private_data = pd.data();
  param.private_data_len = static_cast<uint8_t>(pd.size());
  // The peer reads from us: accept as many reads in flight as it asks for,
  // within what this device can answer.
  param.responder_resources = static_cast<uint8_t>(std::min<int>(
      ev->param.conn.initiator_depth, std::min(dev.value()->attr.max_qp_rd_atom, 255)));
  param.initiator_depth = 0;
  param.rnr_retry_count = 7;
  id->context = s.get();
  if (rdma_accept(id, &param) != 0) return fail("rdma_accept: " + Errno(errno));
  spdlog::debug("verbs transport: connection {} from {} ({} reads in flight)", s->conn_id, addr,
                param.responder_resources);
  served_count_.fetch_add(1, std::memory_order_relaxed);
  served_.emplace(s->conn_id, std::move(s));
}

void VerbsTransport::Impl::OnServerCq() {
  for (auto& [ctx, comp] : comp_channels_) {
    ibv_cq* cq = nullptr;
    void* cq_ctx = nullptr;
    while (ibv_get_cq_event(comp, &cq, &cq_ctx) == 0) {
      auto* s = static_cast<Served*>(cq_ctx);
      s->unacked++;
      if (s->doomed) continue;
      ibv_req_notify_cq(cq, 0);
      ibv_wc wc[16];
      int n;
      while (!s->doomed && (n = ibv_poll_cq(cq, 16, wc)) > 0) {
        for (int i = 0; i < n && !s->doomed; i++) {
          if (wc[i].status != IBV_WC_SUCCESS) {
            // Flushes after the peer went away are the usual end of a connection.
            Doom(s, wc[i].status == IBV_WC_WR_FLUSH_ERR
                        ? ""
                        : std::string("completion error: ") + ibv_wc_status_str(wc[i].status));
            break;
          }
          uint64_t slot = IndexOf(wc[i].wr_id);
          if (KindOf(wc[i].wr_id) == WrKind::kRecv) {
            std::string msg(s->ctl.Received(slot, wc[i].byte_len));
            if (Status st = s->ctl.PostRecv(s->id->qp, static_cast<int>(slot)); !st.ok()) {
              Doom(s, st.message());
              break;
            }
            OnMessage(s, msg);
          } else if (KindOf(wc[i].wr_id) == WrKind::kSend) {
            s->ctl.OnSendDone(slot);
            if (s->close_after_send && !s->ctl.AnySendBusy()) Doom(s, "");
          }
        }
      }
    }
  }
}

void VerbsTransport::Impl::Reply(Served* s, const std::string& msg) {
  if (Status st = s->ctl.Send(s->id->qp, msg); !st.ok())
    Doom(s, "cannot answer: " + st.message());
}

void VerbsTransport::Impl::OnMessage(Served* s, std::string_view msg) {
  verbs::Header h;
  std::string_view body;
  if (!verbs::ParseHeader(msg, &h, &body)) return Doom(s, "protocol error: a short message");
  if (!s->authed) {
    verbs::ProofMessage proof;
    if (h.type != MessageType::kProof || !verbs::ParseBody(body, &proof))
      return Doom(s, "protocol error: expected a Proof");
    if (!proof.node_name.empty()) s->peer += " (" + proof.node_name + ")";
    auth::Proof expected =
        auth::MakeProof(opts_.secret, auth::kClientLabel, s->client_nonce, s->server_nonce);
    verbs::Welcome w;
    if (!auth::ProofsEqual(proof.proof, expected)) {
      LimitedLog(log_limiter_, spdlog::level::warn,
                 "verbs transport: failed handshakes from " + s->host,
                 "verbs transport: refused {}: it does not know the cluster secret", s->peer);
      w.status = Status::PermissionDenied("the cluster secret does not match");
      s->close_after_send = true;
    } else {
      s->authed = true;
      served_authed_.fetch_add(1, std::memory_order_relaxed);
      for (const LocalMr& m : s->dev->mrs)
        w.regions.push_back({reinterpret_cast<uint64_t>(m.base), m.length, m.mr->rkey});
      if (w.regions.size() > verbs::kMaxRegions) {
        w.status = Status::IOError("too many registered regions to describe");
        w.regions.clear();
        s->close_after_send = true;
      }
    }
    return Reply(s, verbs::MakeMessage(MessageType::kWelcome, h.request_id, w));
  }
  switch (h.type) {
    case MessageType::kDescribe: {
      verbs::Describe d;
      if (!verbs::ParseBody(body, &d)) return Doom(s, "protocol error: a malformed Describe");
      return OnDescribe(s, h.request_id, d);
    }
    case MessageType::kRelease:
      if (!body.empty()) return Doom(s, "protocol error: a malformed Release");
      return OnRelease(s, h.request_id);
    default:
      return Doom(s, "protocol error: unexpected message type " +
                         std::to_string(static_cast<unsigned>(h.type)));
  }
}

void VerbsTransport::Impl::OnDescribe(Served* s, uint64_t request_id, const verbs::Describe& d) {
  verbs::DescribeReply r;
  PinKey key{s->conn_id, request_id};
  bool duplicate;
  {
    std::lock_guard<std::mutex> l(mu_);
    duplicate = pins_.count(key) != 0;
  }
  if (duplicate) return Doom(s, "protocol error: request ID reused");
  if (s->pins >= kMaxPinsPerConnection) {
    r.status = Status::InvalidArgument("a connection may hold at most " +
                                       std::to_string(kMaxPinsPerConnection) + " objects");
    return Reply(s, verbs::MakeMessage(MessageType::kDescribeReply, request_id, r));
  }
  Result<PinnedObject> pin = source_->Pin(d.id);
  if (!pin.ok()) {
    r.status = pin.status();
    return Reply(s, verbs::MakeMessage(MessageType::kDescribeReply, request_id, r));
  }
  r.data_size = pin->data_size;
  r.metadata_size = pin->metadata_size;
  r.address = reinterpret_cast<uint64_t>(pin->bytes);
  HeldPin held;
  held.id = d.id;
  held.bytes = pin->bytes;
  held.data_size = pin->data_size;
  held.metadata_size = pin->metadata_size;
  held.since_us = MonoMicros();
  if (pin->digest_valid) {
    r.digest_state = verbs::DigestState::kValid;
    r.digest = pin->digest;
  } else if (d.want_digest) {
    r.digest_state = verbs::DigestState::kFollows;
    held.hashing = true;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    pins_.emplace(key, held);
  }
  s->pins++;
  if (held.hashing) {
    std::lock_guard<std::mutex> l(hash_mu_);
    hash_jobs_.push_back({key, held.bytes, held.data_size, held.metadata_size});
    hash_cv_.notify_one();
  }
  Reply(s, verbs::MakeMessage(MessageType::kDescribeReply, request_id, r));
}

void VerbsTransport::Impl::EndPin(std::map<PinKey, HeldPin>::iterator it) {
  source_->Unpin(it->second.id, it->second.digest);
  pins_.erase(it);
}

void VerbsTransport::Impl::OnRelease(Served* s, uint64_t request_id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = pins_.find({s->conn_id, request_id});
  if (it == pins_.end()) return;  // a late Release of a pin the hold timeout ended
  s->pins--;
  if (it->second.hashing) {
    it->second.released = true;
  } else {
    EndPin(it);
  }
}

void VerbsTransport::Impl::OnHashed() {
  uint64_t v;
  while (::read(hash_fd_.get(), &v, sizeof(v)) > 0) {
  }
  std::vector<std::pair<PinKey, uint64_t>> done;
  {
    std::lock_guard<std::mutex> l(hash_mu_);
    done.swap(hash_done_);
  }
  for (auto& [key, digest] : done) {
    bool send = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = pins_.find(key);
      if (it == pins_.end()) continue;
      it->second.hashing = false;
      it->second.digest = digest;
      if (it->second.released) {
        EndPin(it);
      } else {
        send = true;
      }
    }
    auto s = served_.find(key.first);
    if (send && s != served_.end() && !s->second->doomed) {
      verbs::DigestMessage m;
      m.digest = digest;
      Reply(s->second.get(), verbs::MakeMessage(MessageType::kDigest, key.second, m));
    }
  }
}

void VerbsTransport::Impl::HashLoop() {
  std::unique_lock<std::mutex> l(hash_mu_);
  for (;;) {
    hash_cv_.wait(l, [&] { return hash_stop_ || !hash_jobs_.empty(); });
    if (hash_stop_) return;
    HashJob job = hash_jobs_.front();
    hash_jobs_.pop_front();
    l.unlock();
    uint64_t d = ObjectDigest(job.bytes, job.data_size, job.bytes + job.data_size,
                              job.metadata_size);
    l.lock();
    hash_done_.push_back({job.key, d});
    uint64_t one = 1;
    (void)!::write(hash_fd_.get(), &one, sizeof(one));
  }
}

void VerbsTransport::Impl::Housekeep() {
  LogSuppressed(log_limiter_, spdlog::level::warn);  // windows that ended quietly
  int64_t now = MonoMicros();
  for (auto& [conn_id, s] : served_) {
    if (!s->authed && !s->doomed && now - s->since_us > int64_t{opts_.io_timeout_ms} * 1000)
      Doom(s.get(), "it did not authenticate within " + std::to_string(opts_.io_timeout_ms) + " ms");
  }
  std::vector<uint64_t> expired;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [key, pin] : pins_)
      if (!pin.released && now - pin.since_us > int64_t{opts_.hold_timeout_ms} * 1000)
        expired.push_back(key.first);
  }
  for (uint64_t conn_id : expired) {
    auto it = served_.find(conn_id);
    if (it != served_.end() && !it->second->doomed)
      Doom(it->second.get(), "it held an object longer than " +
                                 std::to_string(opts_.hold_timeout_ms) + " ms");
  }
}

void VerbsTransport::Impl::Doom(Served* s, const std::string& why) {
  if (s->doomed) return;
  s->doomed = true;
  if (!why.empty())
    LimitedLog(log_limiter_, spdlog::level::warn,
               "verbs transport: closed connections from " + s->host,
               "verbs transport: closing connection from {}: {}", s->peer, why);
}

void VerbsTransport::Impl::DestroyServed(Served* s) {
  // The QP goes to error first: no read of ours is served after the unpin.
  if (s->established) rdma_disconnect(s->id);
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto it = pins_.lower_bound({s->conn_id, 0});
         it != pins_.end() && it->first.first == s->conn_id;) {
      auto next = std::next(it);
      if (it->second.hashing) {
        it->second.released = true;
      } else {
        EndPin(it);
      }
      it = next;
    }
  }
  if (s->id->qp != nullptr) rdma_destroy_qp(s->id);
  if (s->cq != nullptr) {
    if (s->unacked > 0) ibv_ack_cq_events(s->cq, s->unacked);
    ibv_destroy_cq(s->cq);
  }
  s->ctl.Reset();
  s->id->context = nullptr;
  rdma_destroy_id(s->id);
  served_count_.fetch_sub(1, std::memory_order_relaxed);
  if (s->authed) served_authed_.fetch_sub(1, std::memory_order_relaxed);
  spdlog::debug("verbs transport: connection {} closed", s->conn_id);
}

// ---------------------------------------------------------------------------
// Pulling

Result<std::unique_ptr<VerbsTransport::Impl::Peer>> VerbsTransport::Impl::Acquire(
    const std::string& endpoint, bool* pooled) {
  std::optional<std::unique_ptr<Peer>> p = idle_.Take(endpoint);
  *pooled = p.has_value();
  if (p) return std::move(*p);
  return Connect(endpoint);
}

void VerbsTransport::Impl::Return(std::unique_ptr<Peer> p) {
  if (p->broken) return;  // destroyed here
  const std::string endpoint = p->endpoint;  // not p->endpoint: p is moved from in the call
  idle_.Put(endpoint, std::move(p), kMaxIdlePerEndpoint);  // destroyed if refused
}

Status VerbsTransport::Impl::WaitCm(Peer* p, rdma_cm_event_type want, int64_t deadline_us,
                                    std::string* private_data, rdma_conn_param* param) {
  for (;;) {
    rdma_cm_event* ev = nullptr;
    if (rdma_get_cm_event(p->events, &ev) == 0) {
      rdma_cm_event_type got = ev->event;
      int status = ev->status;
      std::string pd;
      if (ev->param.conn.private_data != nullptr)
        pd.assign(static_cast<const char*>(ev->param.conn.private_data),
                  ev->param.conn.private_data_len);
      if (param != nullptr) *param = ev->param.conn;
      rdma_ack_cm_event(ev);
      if (private_data != nullptr) *private_data = pd;
      if (got == want) return Status::OK();
      if (got == RDMA_CM_EVENT_REJECTED) {
        verbs::Refusal r;
        if (r.Decode(pd)) {
          StatusCode code = static_cast<StatusCode>(r.code);
          return Status(code == StatusCode::kPermissionDenied ? code : StatusCode::kDisconnected,
                        "the holder refused the connection (" +
                            std::string(StatusCodeName(code)) + "; its log says why)");
        }
        return Status::Disconnected("connection refused (nothing listens there, status " +
                                    std::to_string(status) + ")");
      }
      return Status::Disconnected(std::string("rdma_cm: ") + rdma_event_str(got) + " (status " +
                                  std::to_string(status) + ") while waiting for " +
                                  rdma_event_str(want));
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return Status::IOError("rdma_get_cm_event: " + Errno(errno));
    int64_t left_ms = (deadline_us - MonoMicros()) / 1000;
    if (left_ms <= 0)
      return Status::Disconnected(std::string("no answer (") + rdma_event_str(want) + ") within " +
                                  std::to_string(opts_.connect_timeout_ms) + " ms");
    pollfd fds[2] = {{p->events->fd, POLLIN, 0}, {shutdown_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, static_cast<int>(std::min<int64_t>(left_ms, 1000))) < 0 && errno != EINTR)
      return Status::FromErrno("poll", errno);
    if (fds[1].revents != 0) return Status::Disconnected("the transport is shutting down");
  }
}

Result<std::unique_ptr<VerbsTransport::Impl::Peer>> VerbsTransport::Impl::Connect(
    const std::string& endpoint) {
  std::string host, port;
  if (!SplitHostPort(endpoint, &host, &port))
    return Status::InvalidArgument("malformed endpoint '" + endpoint + "' (want HOST:PORT)");
  sockaddr_storage dst{};
  if (Status st = ResolveAddress(endpoint, false, &dst); !st.ok())
    return Status::Disconnected(st.message());
  const int64_t deadline = MonoMicros() + int64_t{opts_.connect_timeout_ms} * 1000;
  auto p = std::make_unique<Peer>();
  p->endpoint = endpoint;
  p->live = &outgoing_;
  outgoing_.fetch_add(1, std::memory_order_relaxed);
  p->events = rdma_create_event_channel();
  if (p->events == nullptr) return Status::IOError("rdma_create_event_channel: " + Errno(errno));
  PLASMON_RETURN_IF_ERROR(SetNonBlocking(p->events->fd));
  if (rdma_create_id(p->events, &p->id, nullptr, RDMA_PS_TCP) != 0) {
    p->id = nullptr;
    return Status::IOError("rdma_create_id: " + Errno(errno));
  }
  if (rdma_resolve_addr(p->id, nullptr, reinterpret_cast<sockaddr*>(&dst),
                        opts_.connect_timeout_ms) != 0)
    return Status::Disconnected("rdma_resolve_addr " + endpoint + ": " + Errno(errno));
  PLASMON_RETURN_IF_ERROR(WaitCm(p.get(), RDMA_CM_EVENT_ADDR_RESOLVED, deadline, nullptr, nullptr));
  if (rdma_resolve_route(p->id, opts_.connect_timeout_ms) != 0)
    return Status::Disconnected("rdma_resolve_route " + endpoint + ": " + Errno(errno));
  PLASMON_RETURN_IF_ERROR(
      WaitCm(p.get(), RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, nullptr, nullptr));

  Result<Device*> dev = GetDevice(p->id->verbs);
  if (!dev.ok()) return dev.status();
  p->dev = *dev;
  const ibv_device_attr& attr = p->dev->attr;
  int want_reads = std::clamp(opts_.max_reads, 1, std::max(1, attr.max_qp_init_rd_atom));
  want_reads = std::min(want_reads, 255);
  p->comp = ibv_create_comp_channel(p->id->verbs);
  if (p->comp == nullptr) return Status::IOError("ibv_create_comp_channel: " + Errno(errno));
  PLASMON_RETURN_IF_ERROR(SetNonBlocking(p->comp->fd));
  p->cq = ibv_create_cq(p->id->verbs, CqSize(*p->dev, want_reads), p.get(), p->comp, 0);
  if (p->cq == nullptr) return Status::IOError("ibv_create_cq: " + Errno(errno));
  ibv_qp_init_attr qa = QpAttr(*p->dev, p->cq, want_reads);
  if (rdma_create_qp(p->id, p->dev->pd, &qa) != 0)
    return Status::IOError("rdma_create_qp: " + Errno(errno));
  PLASMON_RETURN_IF_ERROR(p->ctl.Init(p->dev->pd));
  PLASMON_RETURN_IF_ERROR(p->ctl.PostAllRecvs(p->id->qp));
  ibv_port_attr port_attr{};
  uint64_t max_msg = 1u << 30;
  if (ibv_query_port(p->id->verbs, p->id->port_num, &port_attr) == 0 && port_attr.max_msg_sz > 0)
    max_msg = port_attr.max_msg_sz;
  p->chunk = std::max(kMinChunkSize, std::min<uint64_t>(opts_.chunk_size, max_msg));

  verbs::Hello hello;
  PLASMON_RETURN_IF_ERROR(auth::RandomNonce(&hello.nonce));
  hello.flags = opts_.secret.empty() ? 0 : verbs::kHasSecret;
  std::string pd = hello.Encode();
  rdma_conn_param param{};
  param.private_data = pd.data();
  param.private_data_len = static_cast<uint8_t>(pd.size());
  param.initiator_depth = static_cast<uint8_t>(want_reads);
  param.responder_resources = 1;
  param.retry_count = 7;
  param.rnr_retry_count = 7;
  if (rdma_connect(p->id, &param) != 0)
    return Status::Disconnected("rdma_connect " + endpoint + ": " + Errno(errno));
  std::string reply;
  rdma_conn_param got{};
  PLASMON_RETURN_IF_ERROR(WaitCm(p.get(), RDMA_CM_EVENT_ESTABLISHED, deadline, &reply, &got));
  p->connected = true;
  // The holder accepted this many reads in flight; ask no more.
  p->reads = got.responder_resources > 0 ? std::min<int>(want_reads, got.responder_resources)
                                         : want_reads;
  if (got.initiator_depth > 0 && got.initiator_depth < p->reads) p->reads = got.initiator_depth;

  verbs::Challenge ch;
  if (!ch.Decode(reply))
    return Status::ProtocolError(endpoint + " answered the connection without a plasmon challenge");
  if (!auth::ProofsEqual(ch.proof, auth::MakeProof(opts_.secret, auth::kServerLabel, hello.nonce,
                                                   ch.nonce)))
    return Status::PermissionDenied(endpoint + " does not know the cluster secret");
  verbs::ProofMessage proof;
  proof.proof = auth::MakeProof(opts_.secret, auth::kClientLabel, hello.nonce, ch.nonce);
  proof.node_name = opts_.node_name;
  PLASMON_RETURN_IF_ERROR(
      p->ctl.Send(p->id->qp, verbs::MakeMessage(MessageType::kProof, 0, proof)));
  verbs::Welcome w;
  PLASMON_RETURN_IF_ERROR(AwaitParsed(p.get(), MessageType::kWelcome, 0, "Welcome", &w));
  if (!w.status.ok())
    return Status(w.status.code(), endpoint + " refused: " + w.status.message());
  p->remote = std::move(w.regions);
  spdlog::debug("verbs transport: connected to {} on {} ({} reads of {} in flight)", endpoint,
                p->dev->name(), p->reads, FormatSize(p->chunk));
  return p;
}

Status VerbsTransport::Impl::Drain(Peer* p, bool* progressed) {
  ibv_wc wc[16];
  int n;
  while ((n = ibv_poll_cq(p->cq, 16, wc)) > 0) {
    *progressed = true;
    for (int i = 0; i < n; i++) {
      WrKind kind = KindOf(wc[i].wr_id);
      if (wc[i].status != IBV_WC_SUCCESS) {
        p->broken = true;
        const char* what = kind == WrKind::kRead ? "RDMA READ" : kind == WrKind::kSend ? "send"
                                                                                      : "receive";
        return Status::Disconnected(std::string(what) + " from " + p->endpoint +
                                    " failed: " + ibv_wc_status_str(wc[i].status));
      }
      uint64_t slot = IndexOf(wc[i].wr_id);
      if (kind == WrKind::kRecv) {
        p->inbox.emplace_back(p->ctl.Received(slot, wc[i].byte_len));
        if (Status st = p->ctl.PostRecv(p->id->qp, static_cast<int>(slot)); !st.ok()) {
          p->broken = true;
          return st;
        }
      } else if (kind == WrKind::kSend) {
        p->ctl.OnSendDone(slot);
      } else {
        p->reads_done++;
      }
    }
  }
  if (n < 0) {
    p->broken = true;
    return Status::IOError("ibv_poll_cq failed");
  }
  return Status::OK();
}

bool VerbsTransport::Impl::TakeCqEvent(Peer* p) {
  ibv_cq* cq = nullptr;
  void* ctx = nullptr;
  if (ibv_get_cq_event(p->comp, &cq, &ctx) != 0) return false;  // none (the fd is non-blocking)
  p->unacked++;
  p->armed = false;
  if (p->unacked >= 64) {
    ibv_ack_cq_events(p->cq, p->unacked);
    p->unacked = 0;
  }
  return true;
}

bool VerbsTransport::Impl::TakeCmEvents(Peer* p) {
  rdma_cm_event* ev = nullptr;
  while (rdma_get_cm_event(p->events, &ev) == 0) {
    rdma_cm_event_type type = ev->event;
    rdma_ack_cm_event(ev);
    if (type == RDMA_CM_EVENT_DISCONNECTED || type == RDMA_CM_EVENT_DEVICE_REMOVAL) {
      p->connected = false;
      p->broken = true;
    }
  }
  return !p->connected;
}

Status VerbsTransport::Impl::Arm(Peer* p) {
  if (int rc = ibv_req_notify_cq(p->cq, 0); rc != 0) {
    p->broken = true;
    return Status::IOError("ibv_req_notify_cq: " + Errno(rc));
  }
  p->armed = true;
  return Status::OK();
}

Status VerbsTransport::Impl::Progress(Peer* p, int timeout_ms, const std::function<bool()>& done) {
  int64_t deadline = MonoMicros() + int64_t{timeout_ms} * 1000;
  for (;;) {
    bool progressed = false;
    PLASMON_RETURN_IF_ERROR(Drain(p, &progressed));
    if (done()) return Status::OK();
    if (progressed) deadline = MonoMicros() + int64_t{timeout_ms} * 1000;
    if (!p->armed) {
      PLASMON_RETURN_IF_ERROR(Arm(p));
      continue;  // a completion may have landed before arming
    }
    int64_t left_ms = (deadline - MonoMicros()) / 1000;
    if (left_ms <= 0) {
      p->broken = true;
      return Status::Disconnected(p->endpoint + " made no progress for " +
                                  std::to_string(timeout_ms) + " ms");
    }
    pollfd fds[3] = {{p->comp->fd, POLLIN, 0},
                     {p->events->fd, POLLIN, 0},
                     {shutdown_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 3, static_cast<int>(std::min<int64_t>(left_ms, 1000))) < 0 && errno != EINTR)
      return Status::FromErrno("poll", errno);
    if (fds[2].revents != 0) {
      p->broken = true;
      return Status::Disconnected("the transport is shutting down");
    }
    if (fds[1].revents != 0 && TakeCmEvents(p)) {
      // Completions already queued still count: take them first.
      bool more = false;
      PLASMON_RETURN_IF_ERROR(Drain(p, &more));
      if (done()) return Status::OK();
      return Status::Disconnected(p->endpoint + " closed the connection");
    }
    if (fds[0].revents != 0) (void)TakeCqEvent(p);
  }
}

VerbsTransport::Impl::Taken VerbsTransport::Impl::TakeMessage(Peer* p, MessageType type,
                                                             uint64_t request_id,
                                                             std::string* body) {
  while (!p->inbox.empty()) {
    std::string msg = std::move(p->inbox.front());
    p->inbox.pop_front();
    verbs::Header h;
    std::string_view b;
    if (!verbs::ParseHeader(msg, &h, &b)) return Taken::kBad;
    if (h.type == type && h.request_id == request_id) {
      body->assign(b);
      return Taken::kFound;
    }
    // Anything else is stale (a Digest for an abandoned pull) or garbage.
    if (h.type != MessageType::kDigest) return Taken::kBad;
  }
  return Taken::kNothing;
}

Result<std::string> VerbsTransport::Impl::AwaitMessage(Peer* p, MessageType type,
                                                       uint64_t request_id) {
  std::string found;
  Taken taken = Taken::kNothing;
  Status st = Progress(p, opts_.io_timeout_ms, [&] {
    taken = TakeMessage(p, type, request_id, &found);
    return taken != Taken::kNothing;
  });
  if (!st.ok()) return st;
  if (taken == Taken::kBad) {
    p->broken = true;
    return Status::ProtocolError(p->endpoint + " sent an unexpected message");
  }
  return found;
}

// One pull on one connection, as a state machine: Describe, then RDMA READs
// in pieces that each lie inside one remote and one local region (several
// outstanding, each hashed as it lands), then the digest (the holder's, or
// the one it sends when its hash is done), then Release. Whoever waits for
// the connection's completions drives it: PullOn, blocking, for any size;
// a LoopPull, on the caller's event loop, for small objects. Step() looks at
// what Drain left: the peer's inbox and its count of finished READs.
class VerbsTransport::Impl::PullOp {
 public:
  PullOp(Impl* t, Peer* p, const PullRequest& req)
      : t_(t), p_(p), req_(req), total_(req.data_size + req.metadata_size) {}

  Status Start() {
    rid_ = t_->next_request_id_.fetch_add(1, std::memory_order_relaxed);
    verbs::Describe d;
    d.id = req_.id;
    d.want_digest = true;
    return Broken(p_->ctl.Send(p_->id->qp, verbs::MakeMessage(MessageType::kDescribe, rid_, d)));
  }

  // The result once the pull is over; nullopt while it waits for more.
  std::optional<Result<PullResult>> Step() {
    std::string body;
    switch (phase_) {
      case Phase::kDescribe: {
        Taken taken = TakeMessage(p_, MessageType::kDescribeReply, rid_, &body);
        if (taken == Taken::kNothing) return std::nullopt;
        if (taken == Taken::kBad) return Unexpected();
        PLASMON_RETURN_IF_ERROR(Parsed(p_, body, "DescribeReply", &reply_));
        if (!reply_.status.ok()) return Result<PullResult>(reply_.status);  // nothing pinned
        if (reply_.data_size != req_.data_size || reply_.metadata_size != req_.metadata_size) {
          Release();
          return Result<PullResult>(Status::InvalidArgument(
              "the holder has " + std::to_string(reply_.data_size) + "+" +
              std::to_string(reply_.metadata_size) + " bytes, the directory said " +
              std::to_string(req_.data_size) + "+" + std::to_string(req_.metadata_size)));
        }
        if (Status offered = verbs::CheckDigestOffered(reply_); !offered.ok()) {
          Release();
          return Result<PullResult>(Status(offered.code(), "object " + req_.id.Hex() + " from " +
                                                               p_->endpoint + ": " +
                                                               offered.message()));
        }
        phase_ = Phase::kRead;
        reads_seen_ = p_->reads_done;
        PLASMON_RETURN_IF_ERROR(PostMore());
        [[fallthrough]];  // nothing to read in an empty object
      }
      case Phase::kRead: {
        // Completions on one RC queue arrive in order: the oldest pieces landed.
        std::vector<Piece> ready;
        for (; reads_seen_ < p_->reads_done && !in_flight_.empty(); reads_seen_++) {
          ready.push_back(in_flight_.front());
          in_flight_.pop_front();
        }
        PLASMON_RETURN_IF_ERROR(PostMore());  // keep the link busy while hashing
        for (const Piece& pc : ready) digest_.Update(pc.dst, pc.len);
        if (!in_flight_.empty()) return std::nullopt;
        landed_us_ = MonoMicros();  // hashed as they landed: only the last pieces remained
        got_ = digest_.Finish();
        if (reply_.digest_state != verbs::DigestState::kFollows) return Finish(reply_.digest);
        phase_ = Phase::kDigest;
        [[fallthrough]];
      }
      case Phase::kDigest: {
        Taken taken = TakeMessage(p_, MessageType::kDigest, rid_, &body);
        if (taken == Taken::kNothing) return std::nullopt;
        if (taken == Taken::kBad) return Unexpected();
        verbs::DigestMessage dm;
        PLASMON_RETURN_IF_ERROR(Parsed(p_, body, "Digest", &dm));
        return Finish(dm.digest);
      }
    }
    return std::nullopt;
  }

  // The holder answered the Describe (a failure after that is not the
  // pooled connection's having died while idle).
  bool answered() const { return phase_ != Phase::kDescribe; }

 private:
  enum class Phase { kDescribe, kRead, kDigest };
  struct Piece {
    uint8_t* dst;
    uint64_t len;
  };

  // A failure after which the connection's state is unknown (reads may
  // still be landing in the destination): it is destroyed, and the caller
  // aborts the object.
  Status Broken(Status st) {
    if (!st.ok()) p_->broken = true;
    return st;
  }
  Result<PullResult> Unexpected() {
    return Broken(Status::ProtocolError(p_->endpoint + " sent an unexpected message"));
  }

  Status PostMore() {
    while (issued_ < total_ && static_cast<int>(in_flight_.size()) < p_->reads) {
      uint64_t raddr = reply_.address + issued_;
      const verbs::RemoteRegion* rr = nullptr;
      for (const verbs::RemoteRegion& x : p_->remote)
        if (raddr >= x.address && raddr - x.address < x.length) rr = &x;
      uint8_t* dst = req_.destination + issued_;
      const LocalMr* lm = p_->dev->Find(dst);
      if (rr == nullptr)
        return Broken(
            Status::ProtocolError(p_->endpoint + " described an object outside its regions"));
      if (lm == nullptr)
        return Broken(Status::InvalidArgument("the destination is not in registered memory"));
      uint64_t len = std::min({p_->chunk, total_ - issued_, rr->address + rr->length - raddr,
                               static_cast<uint64_t>(lm->base + lm->length - dst)});
      ibv_sge sge{reinterpret_cast<uint64_t>(dst), static_cast<uint32_t>(len), lm->mr->lkey};
      ibv_send_wr wr{};
      wr.wr_id = WrId(WrKind::kRead, issued_);
      wr.sg_list = &sge;
      wr.num_sge = 1;
      wr.opcode = IBV_WR_RDMA_READ;
      wr.send_flags = IBV_SEND_SIGNALED;
      wr.wr.rdma.remote_addr = raddr;
      wr.wr.rdma.rkey = rr->rkey;
      ibv_send_wr* bad = nullptr;
      if (int rc = ibv_post_send(p_->id->qp, &wr, &bad); rc != 0)
        return Broken(Status::IOError("posting an RDMA READ: " + Errno(rc)));
      in_flight_.push_back({dst, len});
      issued_ += len;
    }
    return Status::OK();
  }

  void Release() {
    (void)Broken(p_->ctl.Send(p_->id->qp, verbs::MakeMessage(MessageType::kRelease, rid_)));
  }

  Result<PullResult> Finish(uint64_t expected) {
    Release();
    if (got_ != expected)
      return Status::Corruption("object " + req_.id.Hex() + " from " + p_->endpoint +
                                ": digest mismatch");
    return PullResult{got_, TransportKind::kVerbs, 0, landed_us_, MonoMicros()};
  }

  Impl* const t_;
  Peer* const p_;
  const PullRequest req_;
  const uint64_t total_;
  uint64_t rid_ = 0;
  Phase phase_ = Phase::kDescribe;
  verbs::DescribeReply reply_;
  std::deque<Piece> in_flight_;
  DigestStream digest_;
  uint64_t issued_ = 0;
  uint64_t reads_seen_ = 0;  // the peer's reads_done that Step has accounted for
  int64_t landed_us_ = 0;
  uint64_t got_ = 0;
};

Result<PullResult> VerbsTransport::Impl::PullOn(Peer* p, const PullRequest& req) {
  PullOp op(this, p, req);
  PLASMON_RETURN_IF_ERROR(op.Start());
  std::optional<Result<PullResult>> out;
  Status st = Progress(p, opts_.io_timeout_ms, [&] {
    out = op.Step();
    return out.has_value();
  });
  if (!st.ok()) {
    p->broken = true;  // reads may still be in flight into the destination
    return st;
  }
  return std::move(*out);
}

// A small pull on the caller's event loop (StartAsyncPull): the Describe
// went out on an idle pooled connection whose queue was armed first; each
// OnReadable takes the completion channel's event, drains the queue, steps
// the pull, and arms the queue again. Nothing else runs between the
// loop and the NIC: a cached small fetch is one Describe, one READ and one
// Release. The loop watches the connection's waitset (its completion and
// rdma_cm channels and the transport's shutdown eventfd), so a holder that
// goes away is noticed by its disconnect (or a failed completion, or the
// deadline), and Shutdown fails the pull at once. A holder silent past the
// deadline fails it as TimedOut, not stale (as the TCP loop pull: a dead
// peer's queue pair fails its sends well before). Destroyed before its result, the pull is
// abandoned and its connection destroyed (READs may still be landing); after,
// the connection goes back to the pool unless it broke. The transport must
// outlive it.
class VerbsTransport::Impl::LoopPull : public AsyncPull {
 public:
  LoopPull(Impl* t, std::unique_ptr<Peer> p, const PullRequest& req, int64_t started_us)
      : t_(t),
        p_(std::move(p)),
        op_(t, p_.get(), req),
        id_(req.id),
        started_us_(started_us),
        deadline_us_(started_us + int64_t{t->opts_.io_timeout_ms} * 1000) {}
  LoopPull(const LoopPull&) = delete;
  LoopPull& operator=(const LoopPull&) = delete;
  ~LoopPull() override {
    if (!done_) p_->broken = true;
    t_->Return(std::move(p_));
  }

  Status Start() {
    if (!p_->waitset.valid()) {
      UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
      if (!ep.valid()) return Status::FromErrno("epoll_create1", errno);
      for (int fd : {p_->comp->fd, p_->events->fd, t_->shutdown_fd_.get()}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
          return Status::FromErrno("epoll_ctl", errno);
      }
      p_->waitset = std::move(ep);
    }
    if (!p_->armed) PLASMON_RETURN_IF_ERROR(Arm(p_.get()));  // before the first completion
    return op_.Start();
  }

  int fd() const override { return p_->waitset.get(); }
  int64_t deadline_us() const override { return deadline_us_; }
  bool stale_connection() const override { return stale_; }
  Status TimedOut() const override {
    return Status::Disconnected("pull of " + id_.Hex() + " from " + p_->endpoint +
                                ": the holder was silent for " +
                                std::to_string(t_->opts_.io_timeout_ms) + " ms");
  }

  std::optional<Result<PullResult>> OnReadable() override {
    // Woken without a completion event: the shutdown eventfd or the
    // rdma_cm channel has news. (Not looked at otherwise: that would cost a
    // lock and a system call per wake-up.)
    if (!TakeCqEvent(p_.get())) {
      if (t_->shutting_down()) {
        p_->broken = true;
        return Done(
            Status::Disconnected("pull of " + id_.Hex() + ": the transport is shutting down"));
      }
      if (TakeCmEvents(p_.get())) {
        bool more = false;  // completions already queued still count
        Status st = t_->Drain(p_.get(), &more);
        if (!st.ok()) return Done(st);
        if (std::optional<Result<PullResult>> r = op_.Step()) return Done(std::move(*r));
        return Done(Status::Disconnected("pull of " + id_.Hex() + ": " + p_->endpoint +
                                         " closed the connection"));
      }
    }
    for (;;) {
      bool progressed = false;
      Status st = t_->Drain(p_.get(), &progressed);
      if (!st.ok()) return Done(st);
      if (std::optional<Result<PullResult>> r = op_.Step()) return Done(std::move(*r));
      if (p_->armed) return std::nullopt;
      if (st = Arm(p_.get()); !st.ok()) return Done(st);
      // Drain once more: a completion may have landed before arming.
    }
  }

 private:
  Result<PullResult> Done(Result<PullResult> r) {
    done_ = true;
    if (r.ok()) {
      r->started_us = started_us_;
      return r;
    }
    // Nothing came back on a connection that had been idle: it may only
    // have died meanwhile (the caller tries once more, the blocking way).
    stale_ = !op_.answered() && p_->broken && r.status().IsDisconnected();
    return r;
  }

  Impl* const t_;
  std::unique_ptr<Peer> p_;
  PullOp op_;
  const ObjectID id_;
  const int64_t started_us_;
  const int64_t deadline_us_;
  bool done_ = false;
  bool stale_ = false;
};

std::unique_ptr<AsyncPull> VerbsTransport::Impl::StartAsyncPull(const std::string& endpoint,
                                                                const PullRequest& request) {
  const int64_t started = MonoMicros();
  const uint64_t total = request.data_size + request.metadata_size;
  if (total < request.data_size || total > opts_.async_max) return nullptr;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (shut_down_ || !memory_.Contains(request.destination, total)) return nullptr;  // Pull says why
  }
  // Only a connection already made: connecting blocks.
  std::optional<std::unique_ptr<Peer>> p = idle_.Take(endpoint);
  if (!p) return nullptr;
  auto pull = std::make_unique<LoopPull>(this, std::move(*p), request, started);
  // Failed to post: that connection is destroyed with `pull`; Pull makes a new one.
  if (!pull->Start().ok()) return nullptr;
  return pull;
}

Result<PullResult> VerbsTransport::Impl::Pull(const std::string& endpoint,
                                              const PullRequest& request) {
  const uint64_t total = request.data_size + request.metadata_size;
  if (total < request.data_size) return Status::InvalidArgument("object size overflows");
  {
    std::lock_guard<std::mutex> l(mu_);
    if (shut_down_) return Status::Disconnected("the transport is shut down");
    if (!memory_.Contains(request.destination, total))
      return Status::InvalidArgument("the destination is not in registered memory");
  }
  Result<PullGate::Ticket> in_flight = pulls_.Enter();
  if (!in_flight.ok()) return in_flight.status();
  const int64_t started = MonoMicros();
  Result<PullResult> result = Status::Disconnected("not tried");
  for (int attempt = 0; attempt < 2; attempt++) {
    bool pooled = false;
    Result<std::unique_ptr<Peer>> p = Acquire(endpoint, &pooled);
    if (!p.ok()) {
      result = p.status();
      break;
    }
    result = PullOn(p->get(), request);
    bool stale = pooled && (*p)->broken && result.status().IsDisconnected();
    Return(std::move(*p));
    // A pooled connection may have died while idle (the holder restarted):
    // one fresh try before giving up on this holder.
    if (!stale) break;
  }
  if (result.ok()) result->started_us = started;
  return result;
}

void VerbsTransport::Impl::Shutdown() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  uint64_t one = 1;
  if (shutdown_fd_.valid()) (void)!::write(shutdown_fd_.get(), &one, sizeof(one));
  if (serve_loop_) serve_loop_->Stop();
  pulls_.Close();
  pulls_.WaitIdle();
  idle_.Close();  // destroys the idle connections
  if (serve_thread_.joinable()) serve_thread_.join();  // destroys served connections
  {
    std::lock_guard<std::mutex> l(hash_mu_);
    hash_stop_ = true;
    hash_cv_.notify_all();
  }
  if (hash_thread_.joinable()) hash_thread_.join();
  {
    std::lock_guard<std::mutex> l(mu_);
    while (!pins_.empty()) EndPin(pins_.begin());  // hashes cut short: no digest kept
  }
  for (auto& [ctx, comp] : comp_channels_) ibv_destroy_comp_channel(comp);
  comp_channels_.clear();
  if (listen_id_ != nullptr) rdma_destroy_id(listen_id_);
  listen_id_ = nullptr;
  if (listen_events_ != nullptr) rdma_destroy_event_channel(listen_events_);
  listen_events_ = nullptr;
  LogSuppressed(log_limiter_, spdlog::level::warn, /*all=*/true);
}

// ---------------------------------------------------------------------------

Result<std::unique_ptr<VerbsTransport>> VerbsTransport::Create(VerbsTransportOptions options) {
  if (options.listen.empty())
    return Status::InvalidArgument("the verbs transport needs an address (--rdma-addr)");
  if (options.chunk_size < kMinChunkSize || options.max_reads < 1 || options.io_timeout_ms < 1 ||
      options.connect_timeout_ms < 1 || options.hold_timeout_ms < 1 ||
      options.max_connections == 0)
    return Status::InvalidArgument("invalid verbs transport options");
  auto impl = std::make_unique<Impl>(std::move(options));
  PLASMON_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<VerbsTransport>(new VerbsTransport(std::move(impl)));
}

Result<std::string> VerbsTransport::DeviceFor(const std::string& address) {
  sockaddr_storage addr{};
  PLASMON_RETURN_IF_ERROR(ResolveAddress(address, true, &addr));
  rdma_event_channel* ch = rdma_create_event_channel();
  if (ch == nullptr)
    return Status::IOError("no RDMA support here (rdma_create_event_channel: " + Errno(errno) + ")");
  rdma_cm_id* id = nullptr;
  Result<std::string> out = Status::IOError("rdma_create_id: " + Errno(errno));
  if (rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP) == 0) {
    if (rdma_bind_addr(id, reinterpret_cast<sockaddr*>(&addr)) != 0)
      out = Status::IOError("no RDMA device owns " + address + " (rdma_bind_addr: " +
                            Errno(errno) + ")");
    else if (id->verbs == nullptr)
      out = Status::InvalidArgument(address + " is not one device's address");
    else
      out = std::string(ibv_get_device_name(id->verbs->device));
    rdma_destroy_id(id);
  }
  rdma_destroy_event_channel(ch);
  return out;
}

VerbsTransport::VerbsTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VerbsTransport::~VerbsTransport() = default;
Status VerbsTransport::RegisterMemory(const MemoryRegion& region) {
  return impl_->RegisterMemory(region);
}
Result<std::string> VerbsTransport::Listen(ObjectSource* source) { return impl_->Listen(source); }
Result<PullResult> VerbsTransport::Pull(const std::string& endpoint, const PullRequest& request) {
  return impl_->Pull(endpoint, request);
}
std::unique_ptr<AsyncPull> VerbsTransport::StartAsyncPull(const std::string& endpoint,
                                                          const PullRequest& request) {
  return impl_->StartAsyncPull(endpoint, request);
}
void VerbsTransport::Shutdown() { impl_->Shutdown(); }
uint64_t VerbsTransport::accepted_connections() const { return impl_->accepted(); }
size_t VerbsTransport::pinned_objects() const { return impl_->pinned(); }
Transport::Connections VerbsTransport::connections() const { return impl_->connections(); }

}  // namespace plasmon
