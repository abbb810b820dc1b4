#include "transport/tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>

#include "core/clock.h"
#include "core/digest.h"
#include "core/limited_log.h"
#include "core/unix_socket.h"
#include "transport/address.h"
#include "transport/tcp_wire.h"

namespace plasmon {

Status SetCongestionControl(int fd, const std::string& cc) {
  if (!cc.empty() && ::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc.data(),
                                  static_cast<socklen_t>(cc.size())) != 0)
    return Status::FromErrno("setting congestion control " + cc, errno);
  return Status::OK();
}

namespace {

constexpr int kMaxStreams = 64;
// Both ends hash (and send, and receive) this much at a time: it stays in
// the CPU's cache between the copy and the hash.
constexpr uint64_t kHashPiece = 256 << 10;

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

std::string Sizes(uint64_t data, uint64_t metadata) {
  return std::to_string(data) + "+" + std::to_string(metadata) + " bytes";
}

std::string FormatAddress(const sockaddr* sa, socklen_t len) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "?";
  return JoinHostPort(host, serv);
}

Status SetTimeout(int fd, int option, int ms) {
  timeval tv{};
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  if (::setsockopt(fd, SOL_SOCKET, option, &tv, sizeof(tv)) != 0)
    return Status::FromErrno("setsockopt timeout", errno);
  return Status::OK();
}

// The socket's congestion control, if one is chosen (checked at Create, so
// that it fails only where the kernel changed since: then the socket keeps
// the host's default, and says so in the log).
void SetCongestion(int fd, const std::string& cc) {
  Status st = SetCongestionControl(fd, cc);
  static std::atomic<bool> said{false};
  if (!st.ok() && !said.exchange(true))
    spdlog::warn("tcp transport: a connection keeps the host's congestion control: {} (said once)",
                 st.ToString());
}

Status SetNoDelay(int fd) {
  int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
    return Status::FromErrno("setsockopt TCP_NODELAY", errno);
  return Status::OK();
}

// Waits until `fd` is readable (or hung up). Blocks without a timeout.
// 1: readable, 0: `timeout_ms` passed (-1 waits forever), -1: poll failed.
int WaitReadable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, timeout_ms);
    if (r > 0) return 1;
    if (r == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

// Sends one control frame; on failure logs nothing (callers do).
Status SendFrame(int fd, const std::string& frame) { return tcp::SendAll(fd, frame); }

// The rate limit's key for warnings of one kind from one peer address.
std::string PeerKey(const char* what, const std::string& host) {
  return std::string("tcp transport: ") + what + " from " + host;
}

template <typename... Args>
void PeerLog(LogLimiter& limiter, spdlog::level::level_enum level, const char* what,
             const std::string& host, spdlog::format_string_t<Args...> fmt, Args&&... args) {
  LimitedLog(limiter, level, PeerKey(what, host), fmt, std::forward<Args>(args)...);
}


using Clock = std::chrono::steady_clock;

// Milliseconds left until `deadline`, rounded up; 0 once it passed.
int MsUntil(Clock::time_point deadline) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now()).count();
  return us <= 0 ? 0 : static_cast<int>(std::min<int64_t>((us + 999) / 1000, 1 << 30));
}

// Reads exactly n bytes by `deadline`: unlike SO_RCVTIMEO, which bounds each
// recv(), a peer that trickles bytes cannot stretch it.
Status ReadExactBy(int fd, void* dst, size_t n, Clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(dst);
  size_t done = 0;
  while (done < n) {
    int left = MsUntil(deadline);
    if (left == 0) return Status::Disconnected("no complete answer in time");
    int w = WaitReadable(fd, left);
    if (w < 0) return Status::FromErrno("poll", errno);
    if (w == 0) continue;
    ssize_t r = ::recv(fd, p + done, n - done, MSG_DONTWAIT);
    if (r > 0) {
      done += static_cast<size_t>(r);
    } else if (r == 0) {
      return Status::Disconnected("the peer closed the connection");
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      return Status::Disconnected(std::string("recv: ") + std::strerror(errno));
    }
  }
  return Status::OK();
}

// tcp::ReadFrame for the handshake of a pull: all of it by `deadline`.
Status ReadControlFrameBy(int fd, tcp::Frame* out, Clock::time_point deadline) {
  char hdr[protocol::kHeaderSize];
  PLASMON_RETURN_IF_ERROR(ReadExactBy(fd, hdr, sizeof(hdr), deadline));
  out->header = protocol::DecodeHeader(hdr);
  PLASMON_RETURN_IF_ERROR(tcp::CheckHeader(out->header, tcp::kMaxControlBody));
  out->body.resize(out->header.body_len);
  return ReadExactBy(fd, out->body.data(), out->body.size(), deadline);
}

}  // namespace

// A served connection. The fd is closed (under mu_) by its thread when it
// ends, so Shutdown never shuts down a reused descriptor number. The fields
// below the thread are guarded by mu_.
struct TcpTransport::Served {
  uint64_t id = 0;
  UniqueFd fd;
  std::thread thread;
  std::string host;  // the peer's address, without its port
  Phase phase = Phase::kHandshake;
  std::chrono::steady_clock::time_point deadline;  // of the handshake
  std::string cut_why;                             // why a cut handshake was ended
};

// Ends one Pin on every path out of ServePull (or when a hold ends).
class TcpTransport::PinGuard {
 public:
  PinGuard(ObjectSource* source, const ObjectID& id) : source_(source), id_(id) {}
  ~PinGuard() { source_->Unpin(id_, computed_digest); }
  PinGuard(const PinGuard&) = delete;
  PinGuard& operator=(const PinGuard&) = delete;
  std::optional<uint64_t> computed_digest;

 private:
  ObjectSource* source_;
  ObjectID id_;
};

// A client connection on loan from the pool: back to the pool if the last
// exchange left it in a known state, else closed.
class TcpTransport::Lease {
 public:
  Lease(TcpTransport* t, const std::string& endpoint, UniqueFd fd)
      : t_(t), endpoint_(endpoint), fd_(std::move(fd)) {}
  ~Lease() {
    if (!fd_.valid()) return;
    if (reusable_) {
      t_->Release(endpoint_, std::move(fd_));
    } else {
      t_->Discard(std::move(fd_));
    }
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  int fd() const { return fd_.get(); }
  void set_reusable(bool r) { reusable_ = r; }

 private:
  TcpTransport* t_;
  const std::string& endpoint_;
  UniqueFd fd_;
  bool reusable_ = false;
};

// A small pull on the caller's event loop: the request went out on an idle
// pooled connection; each OnReadable reads what arrived (never blocking:
// MSG_DONTWAIT) into the reply frame, then the bytes straight into the
// destination, and checks the digest at the end. The connection goes back
// to the pool if the exchange ended in a known state, else it is closed.
class TcpTransport::LoopPull : public AsyncPull {
 public:
  LoopPull(TcpTransport* t, std::string endpoint, const PullRequest& request, UniqueFd fd,
           uint64_t request_id, int64_t started_us)
      : t_(t),
        endpoint_(std::move(endpoint)),
        request_(request),
        lease_(t, endpoint_, std::move(fd)),
        request_id_(request_id),
        total_(request.data_size + request.metadata_size),
        started_us_(started_us),
        deadline_us_(started_us_ + int64_t{t->opts_.io_timeout_ms} * 1000) {}
  LoopPull(const LoopPull&) = delete;
  LoopPull& operator=(const LoopPull&) = delete;

  int fd() const override { return lease_.fd(); }
  int64_t deadline_us() const override { return deadline_us_; }
  bool stale_connection() const override { return stale_; }
  Status TimedOut() const override {
    return Status::Disconnected("pull of " + request_.id.Hex() + " from " + endpoint_ +
                                ": the holder was silent for " +
                                std::to_string(t_->opts_.io_timeout_ms) + " ms");
  }

  std::optional<Result<PullResult>> OnReadable() override {
    for (;;) {
      uint8_t* dst;
      size_t want;
      if (!have_reply_) {
        // The reply frame and what came after it in one recv: all of a
        // small object (each system call costs here, 1-2 us in a VM).
        dst = scratch_.data() + scratch_got_;
        want = scratch_.size() - scratch_got_;
      } else if (data_got_ < total_) {
        dst = request_.destination + data_got_;
        want = total_ - data_got_;
      } else {
        break;
      }
      ssize_t n = ::recv(lease_.fd(), dst, want, MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return std::nullopt;
      if (n <= 0) {
        // Nothing came back at all: the pooled connection may have died idle.
        stale_ = scratch_got_ == 0;
        return Fail(n == 0 ? Status::Disconnected("the peer closed the connection")
                           : SocketError("recv", errno));
      }
      if (have_reply_) {
        data_got_ += static_cast<uint64_t>(n);
        continue;
      }
      scratch_got_ += static_cast<size_t>(n);
      if (scratch_got_ < protocol::kHeaderSize) continue;
      frame_.header = protocol::DecodeHeader(reinterpret_cast<const char*>(scratch_.data()));
      if (Status bad = tcp::CheckHeader(frame_.header, tcp::kMaxControlBody); !bad.ok())
        return Fail(Status::ProtocolError("malformed reply header: " + bad.message()));
      const size_t frame_len = protocol::kHeaderSize + frame_.header.body_len;
      if (scratch_got_ < frame_len) continue;  // the scratch holds the largest frame
      frame_.body.assign(reinterpret_cast<const char*>(scratch_.data()) + protocol::kHeaderSize,
                         frame_.header.body_len);
      const size_t extra = scratch_got_ - frame_len;  // the object's first bytes
      bool reusable = false;
      Status st =
          t_->CheckPullReply(frame_, endpoint_, request_, request_id_, &reply_, &reusable);
      if (!st.ok()) {
        lease_.set_reusable(reusable && extra == 0);  // bytes after an error: garbage
        return Result<PullResult>(st);
      }
      if (reply_.block_digests)
        return Fail(Status::ProtocolError("block digests that were not asked for"));
      if (extra > total_) return Fail(Status::ProtocolError("more bytes than the object has"));
      if (extra > 0) std::memcpy(request_.destination, scratch_.data() + frame_len, extra);
      data_got_ = extra;
      have_reply_ = true;
    }
    lease_.set_reusable(true);
    const int64_t landed = MonoMicros();
    const std::vector<uint64_t> blocks{BlockDigest(request_.destination, total_)};  // one block
    Result<PullResult> r = t_->Verified(endpoint_, request_, blocks, reply_, false);
    if (r.ok()) {
      r->started_us = started_us_;
      r->landed_us = landed;
      r->checked_us = MonoMicros();
    }
    return r;
  }


 private:
  Result<PullResult> Fail(Status st) {
    lease_.set_reusable(false);
    return Status(st.IsProtocolError() ? st.code() : StatusCode::kDisconnected,
                  "pull of " + request_.id.Hex() + " from " + endpoint_ + ": " + st.message());
  }

  TcpTransport* t_;
  const std::string endpoint_;
  const PullRequest request_;
  Lease lease_;  // back to the pool only if the exchange ended in a known state
  const uint64_t request_id_;
  const uint64_t total_;
  const int64_t started_us_;  // StartAsyncPull began
  const int64_t deadline_us_;
  // The reply frame (at most a header and kMaxControlBody) and, in the same
  // recv, up to 8 KiB of the object after it.
  std::array<uint8_t, protocol::kHeaderSize + tcp::kMaxControlBody + 8192> scratch_;
  size_t scratch_got_ = 0;
  uint64_t data_got_ = 0;
  tcp::Frame frame_;
  tcp::PullReply reply_;
  bool have_reply_ = false;
  bool stale_ = false;
};

Result<std::unique_ptr<TcpTransport>> TcpTransport::Create(TcpTransportOptions options) {
  if (options.streams < 1 || options.streams > kMaxStreams)
    return Status::InvalidArgument("streams must be 1 to " + std::to_string(kMaxStreams));
  if (options.chunk_size == 0 || options.chunk_size % kDigestBlock != 0)
    return Status::InvalidArgument("chunk_size must be a positive multiple of " +
                                   std::to_string(kDigestBlock) + " (the digest block)");
  if (options.io_timeout_ms <= 0 || options.connect_timeout_ms <= 0 ||
      options.hold_timeout_ms <= 0 || options.handshake_timeout_ms <= 0 ||
      options.dial_timeout_ms <= 0)
    return Status::InvalidArgument("timeouts must be positive");
  if (options.max_connections < 1 || options.max_handshakes < 1 ||
      options.max_handshakes_per_address < 1)
    return Status::InvalidArgument(
        "max_connections, max_handshakes and max_handshakes_per_address must be at least 1");
  if (options.node_name.size() > tcp::kMaxNodeName)
    return Status::InvalidArgument("node name longer than " + std::to_string(tcp::kMaxNodeName) +
                                   " bytes");
  std::string host, port;
  if (!SplitHostPort(options.listen, &host, &port))
    return Status::InvalidArgument("listen address must be ADDR:PORT: '" + options.listen + "'");
  if (!options.congestion.empty()) {
    // TCP_CA_NAME_MAX is 16 with the NUL; tried on a socket of our own.
    Status bad;
    if (options.congestion.size() >= 16 || options.congestion.find('\0') != std::string::npos) {
      bad = Status::InvalidArgument("no congestion control is called '" + options.congestion + "'");
    } else {
      UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!probe.valid()) probe.Reset(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!probe.valid())
        return Status::FromErrno("a socket to try congestion control " + options.congestion, errno);
      if (Status st = SetCongestionControl(probe.get(), options.congestion); !st.ok())
        bad = Status::InvalidArgument(
            "congestion control '" + options.congestion +
            "' is not available here: " + st.message() +
            " (see /proc/sys/net/ipv4/tcp_available_congestion_control, and "
            "tcp_allowed_congestion_control for a user without CAP_NET_ADMIN)");
    }
    if (!bad.ok()) {
      if (options.congestion_required) return bad;
      spdlog::warn("tcp transport: {}; its connections keep the host's default", bad.message());
      options.congestion.clear();
    }
  }
  // Initialize spdlog's registry and OpenSSL's default context here, on the
  // caller's thread, not lazily from several transport threads at once.
  spdlog::default_logger_raw();
  (void)tcp::MakeProof("", tcp::kServerLabel, tcp::Nonce{}, tcp::Nonce{});
  return std::unique_ptr<TcpTransport>(new TcpTransport(std::move(options)));
}

TcpTransport::TcpTransport(TcpTransportOptions options) : opts_(std::move(options)) {}

TcpTransport::~TcpTransport() { Shutdown(); }

uint64_t TcpTransport::accepted_connections() const {
  std::lock_guard<std::mutex> l(mu_);
  return accepted_;
}

Transport::Connections TcpTransport::connections() const {
  std::lock_guard<std::mutex> l(mu_);
  return {true, serving_, handshaking_, client_fds_.size()};
}

Status TcpTransport::RegisterMemory(const MemoryRegion& region) {
  if (region.base == nullptr || region.size == 0)
    return Status::InvalidArgument("empty memory region");
  std::lock_guard<std::mutex> l(mu_);
  if (listening_) return Status::InvalidArgument("RegisterMemory after Listen");
  memory_.Add(region);
  return Status::OK();
}

bool TcpTransport::InRegisteredMemory(const uint8_t* p, uint64_t n) const {
  std::lock_guard<std::mutex> l(mu_);
  return memory_.empty() || memory_.Contains(p, n);
}

// ---------------------------------------------------------------- serving

Result<std::string> TcpTransport::Listen(ObjectSource* source) {
  if (source == nullptr) return Status::InvalidArgument("no object source");
  {
    std::lock_guard<std::mutex> l(mu_);
    if (shut_down_) return Status::Disconnected("the transport is shut down");
    if (listening_) return Status::InvalidArgument("already listening");
  }
  std::string host, port;
  if (!SplitHostPort(opts_.listen, &host, &port))
    return Status::InvalidArgument("listen address must be ADDR:PORT: '" + opts_.listen + "'");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int gai = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0)
    return Status::InvalidArgument("cannot resolve " + opts_.listen + ": " + gai_strerror(gai));
  // Non-blocking: the accept thread waits in poll(), which also times the
  // handshake deadlines, and accepts only what is there.
  UniqueFd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  int err = errno;
  Status st;
  if (!fd.valid()) {
    st = Status::FromErrno("socket", err);
  } else {
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    // On the listener, so that accepted connections start with it: one
    // switched after its handshake keeps what the host's default set up
    // (BBR marks it paced, and the mark stays under cubic).
    SetCongestion(fd.get(), opts_.congestion);
    if (::bind(fd.get(), res->ai_addr, res->ai_addrlen) != 0)
      st = Status::FromErrno("bind " + opts_.listen, errno);
    else if (::listen(fd.get(), SOMAXCONN) != 0)
      st = Status::FromErrno("listen " + opts_.listen, errno);
  }
  ::freeaddrinfo(res);
  PLASMON_RETURN_IF_ERROR(st);

  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return Status::FromErrno("getsockname", errno);
  char bound_host[NI_MAXHOST], bound_port[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, bound_host, sizeof(bound_host),
                    bound_port, sizeof(bound_port), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return Status::IOError("getnameinfo of the listening socket failed");
  Result<std::string> advertised =
      AdvertisedEndpoint(opts_.listen, opts_.advertise, bound_host, bound_port, IsWildcard(ss));
  if (!advertised.ok()) return advertised.status();
  const std::string endpoint = *advertised;
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return Status::FromErrno("eventfd", errno);

  std::lock_guard<std::mutex> l(mu_);
  if (shut_down_) return Status::Disconnected("the transport is shut down");
  if (listening_) return Status::InvalidArgument("already listening");
  listening_ = true;
  source_ = source;
  listen_fd_ = std::move(fd);
  wake_fd_ = std::move(wake);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  spdlog::info("tcp transport listening on {} (advertised as {})",
               JoinHostPort(bound_host, bound_port), endpoint);
  return endpoint;
}

void TcpTransport::AcceptLoop() {
  // Both closed only after this thread is joined.
  const int lfd = listen_fd_.get();
  const int wfd = wake_fd_.get();
  for (;;) {
    ReapFinished();
    pollfd p[2] = {{lfd, POLLIN, 0}, {wfd, POLLIN, 0}};
    int r = ::poll(p, 2, CutLateHandshakes());
    if (r < 0 && errno != EINTR) {
      // Cannot happen with valid descriptors; never spin on it.
      spdlog::error("tcp transport: poll: {}", std::strerror(errno));
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, std::chrono::milliseconds(100), [this] { return shut_down_; });
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      if (shut_down_) return;
    }
    if (r <= 0 || (p[0].revents & POLLIN) == 0) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED) continue;
      // Out of descriptors or memory: back off instead of spinning.
      LimitedLog(log_limiter_, spdlog::level::warn, "tcp transport: accept errors",
                 "tcp transport: accept: {}", std::strerror(err));
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, std::chrono::milliseconds(100), [this] { return shut_down_; });
      continue;
    }
    std::string peer = FormatAddress(reinterpret_cast<sockaddr*>(&ss), len);
    if (!AdmitConnection(UniqueFd(fd), HostOf(peer), peer)) return;  // shut down
  }
}

bool TcpTransport::AdmitConnection(UniqueFd conn, const std::string& host,
                                   const std::string& peer) {
  std::lock_guard<std::mutex> l(mu_);
  if (shut_down_) return false;
  accepted_++;
  // One address may not take every handshake slot: refused at once, it costs
  // a thread nothing.
  size_t& from_host = handshaking_by_host_[host];
  if (from_host >= opts_.max_handshakes_per_address) {
    PeerLog(log_limiter_, spdlog::level::warn, "refused connections", host,
            "tcp transport: refusing peer {}: {} connections from {} are already in their "
            "handshake (at most {})",
            peer, from_host, host, opts_.max_handshakes_per_address);
    return true;  // `conn` closes
  }
  // All addresses together: the oldest handshake makes room. An honest
  // peer's handshake takes a round trip or two, so the oldest is the one
  // that dawdles.
  if (handshaking_ >= opts_.max_handshakes) {
    Served* oldest = nullptr;
    for (auto& [id, s] : served_) {
      if (s->phase == Phase::kHandshake && (oldest == nullptr || id < oldest->id))
        oldest = s.get();
    }
    if (oldest != nullptr)
      CutHandshake(oldest, "dropped to make room: " + std::to_string(opts_.max_handshakes) +
                               " connections were in their handshake");
  }
  auto s = std::make_unique<Served>();
  Served* raw = s.get();
  s->id = next_conn_id_++;
  s->host = host;
  s->deadline = std::chrono::steady_clock::now() +
                std::chrono::milliseconds(opts_.handshake_timeout_ms);
  const int fd = conn.get();
  s->fd = std::move(conn);
  handshaking_by_host_[host]++;  // `from_host` may dangle after CutHandshake
  handshaking_++;
  s->thread = std::thread([this, raw, fd, peer] { Serve(raw, fd, peer); });
  served_.emplace(raw->id, std::move(s));
  return true;
}

void TcpTransport::LeaveHandshake(Served* s, Phase next) {
  if (s->phase != Phase::kHandshake) return;
  s->phase = next;
  handshaking_--;
  auto it = handshaking_by_host_.find(s->host);
  if (it != handshaking_by_host_.end() && --it->second == 0) handshaking_by_host_.erase(it);
}

void TcpTransport::CutHandshake(Served* s, std::string why) {
  if (s->phase != Phase::kHandshake) return;
  LeaveHandshake(s, Phase::kCut);
  s->cut_why = std::move(why);
  // Wakes its thread from recv() or send(); the thread closes the fd.
  if (s->fd.valid()) ::shutdown(s->fd.get(), SHUT_RDWR);
}

int TcpTransport::CutLateHandshakes() {
  // Also when nothing else wakes this thread: summaries of what the rate
  // limit suppressed come out within a window of the flood's end.
  LogSuppressed(log_limiter_, spdlog::level::warn);
  const auto now = std::chrono::steady_clock::now();
  auto next = now + std::chrono::milliseconds(log_limiter_.options().window_ms);
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [id, s] : served_) {
    if (s->phase != Phase::kHandshake) continue;
    if (s->deadline <= now) {
      CutHandshake(s.get(), "no handshake within " + std::to_string(opts_.handshake_timeout_ms) +
                                " ms");
    } else {
      next = std::min(next, s->deadline);
    }
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
  return static_cast<int>(std::clamp<int64_t>(ms + 1, 1, 60000));
}

void TcpTransport::ReapFinished() {
  std::vector<std::unique_ptr<Served>> done;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (uint64_t id : finished_) {
      auto it = served_.find(id);
      if (it == served_.end()) continue;
      done.push_back(std::move(it->second));
      served_.erase(it);
    }
    finished_.clear();
  }
  for (auto& s : done) s->thread.join();
}

void TcpTransport::Serve(Served* s, int fd, std::string peer) {
  // The accept thread ends a handshake that takes longer than
  // handshake_timeout (CutLateHandshakes), however slowly its bytes come.
  // Then SO_RCVTIMEO bounds the wait for the rest of a frame once it has
  // begun; between frames the thread sleeps in recv(), which SO_RCVTIMEO
  // wakes now and then to no effect (tcp::FrameReader), so pooled
  // connections may stay idle indefinitely. SO_SNDTIMEO keeps a peer
  // that stops reading from wedging this thread.
  const std::string& host = s->host;  // never changes
  Status st = SetNoDelay(fd);
  if (st.ok()) st = SetTimeout(fd, SO_RCVTIMEO, opts_.io_timeout_ms);
  if (st.ok()) st = SetTimeout(fd, SO_SNDTIMEO, opts_.io_timeout_ms);
  if (!st.ok()) {
    PeerLog(log_limiter_, spdlog::level::warn, "socket errors", host, "tcp transport: peer {}: {}",
            peer, st.ToString());
  } else if (ServerHandshake(s, fd, &peer)) {
    std::unique_ptr<PinGuard> held;  // a Pull with `hold`: until the next frame
    // One recv() takes a whole Pull: a small pull costs this thread one
    // recv and one sendmsg (each system call is 1-2 us in a VM).
    tcp::FrameReader frames(fd);
    for (;;) {
      // A hold ends after hold_timeout even if the puller went silent (stopped,
      // partitioned): pins must not outlive their pull forever. Its chunks
      // still pin one by one, and the digest catches a replaced object.
      tcp::Frame f;
      tcp::FrameReader::Got got = frames.Next(held ? opts_.hold_timeout_ms : -1, &f, &st);
      if (got == tcp::FrameReader::Got::kIdle) {
        spdlog::info("tcp transport: peer {} held an object for {} ms: releasing it", peer,
                     opts_.hold_timeout_ms);
        held.reset();
        continue;
      }
      if (got == tcp::FrameReader::Got::kEof) {
        spdlog::debug("tcp transport: peer {} disconnected", peer);
        break;
      }
      if (got == tcp::FrameReader::Got::kError) {
        PeerLog(log_limiter_, spdlog::level::warn, "broken connections", host,
                "tcp transport: closing connection from {}: {}", peer, st.ToString());
        break;
      }
      if (f.header.type != tcp::Type(tcp::MessageType::kPull)) {
        PeerLog(log_limiter_, spdlog::level::warn, "protocol errors", host,
                "tcp transport: closing connection from {}: protocol error: unexpected "
                "message type {:#x}",
                peer, f.header.type);
        break;
      }
      if (!ServePull(fd, host, peer, f.header.request_id, f.body, &held)) break;
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  if (s->phase == Phase::kServing) {
    serving_--;
  } else {
    LeaveHandshake(s, Phase::kCut);  // frees its slot if it still has one
  }
  auto it = served_.find(s->id);
  if (it != served_.end()) it->second->fd.Reset();  // else Shutdown owns it now
  finished_.push_back(s->id);
}

bool TcpTransport::ReportCut(Served* s, const std::string& peer) {
  std::string why;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (s->phase != Phase::kCut) return false;
    why = s->cut_why;
  }
  PeerLog(log_limiter_, spdlog::level::warn, "failed handshakes", s->host,
          "tcp transport: closing connection from {}: {}", peer, why);
  return true;
}

Status TcpTransport::StartServing(Served* s) {
  std::lock_guard<std::mutex> l(mu_);
  if (s->phase != Phase::kHandshake)
    return Status::Disconnected("the handshake took too long");
  if (serving_ >= opts_.max_connections)
    return Status::Disconnected("the holder is already serving " + std::to_string(serving_) +
                                " connections");
  LeaveHandshake(s, Phase::kServing);
  serving_++;
  return Status::OK();
}

bool TcpTransport::ServerHandshake(Served* s, int fd, std::string* peer) {
  using tcp::MessageType;
  const std::string& host = s->host;
  // Every warning before the Welcome counts as one kind per address.
  auto warn = [&]<typename... Args>(spdlog::format_string_t<Args...> fmt, Args&&... args) {
    PeerLog(log_limiter_, spdlog::level::warn, "failed handshakes", host, fmt,
            std::forward<Args>(args)...);
  };
  tcp::Frame f;
  bool eof = false;
  Status st = tcp::ReadFrame(fd, tcp::kMaxControlBody, &f, &eof);
  if (!st.ok()) {
    if (ReportCut(s, *peer)) return false;
    if (eof) {
      PeerLog(log_limiter_, spdlog::level::info, "connections closed before the handshake", host,
              "tcp transport: peer {} closed the connection before the handshake", *peer);
    } else {
      warn("tcp transport: closing connection from {}: handshake: {}", *peer, st.ToString());
    }
    return false;
  }
  tcp::Hello hello;
  if (f.header.type != tcp::Type(MessageType::kHello) || !tcp::ParseBody(f.body, &hello)) {
    warn("tcp transport: closing connection from {}: protocol error: expected a Hello", *peer);
    return false;
  }
  if (hello.magic != tcp::kMagic) {
    warn("tcp transport: closing connection from {}: protocol error: bad magic {:#x}", *peer,
         hello.magic);
    return false;
  }
  const uint64_t rid = f.header.request_id;
  if (!hello.node_name.empty()) {
    std::string name = hello.node_name;  // the peer's bytes: printable only in logs
    for (char& c : name) {
      if (c < 0x20 || c > 0x7e) c = '?';
    }
    *peer = name + "@" + *peer;
  }
  auto refuse = [&](Status why) {
    warn("tcp transport: refusing peer {}: {}", *peer, why.ToString());
    (void)SendFrame(fd, tcp::MakeFrame(MessageType::kWelcome, rid, tcp::Welcome{std::move(why)}));
    return false;
  };
  if (hello.version != tcp::kVersion)
    return refuse(Status::InvalidArgument("the connecting node speaks TCP protocol version " +
                                          std::to_string(hello.version) + ", the serving node " +
                                          std::to_string(tcp::kVersion)));
  const bool have_secret = !opts_.secret.empty();
  const bool peer_has_secret = (hello.flags & tcp::kHasSecret) != 0;
  if (have_secret != peer_has_secret)
    return refuse(Status::PermissionDenied(
        have_secret ? "the serving node requires the cluster secret; the connecting node has none"
                    : "the connecting node has a cluster secret; the serving node has none"));

  tcp::Challenge ch;
  ch.flags = have_secret ? tcp::kHasSecret : 0;
  st = tcp::RandomNonce(&ch.nonce);
  if (!st.ok()) {
    spdlog::error("tcp transport: {}", st.ToString());
    return false;
  }
  ch.proof = tcp::MakeProof(opts_.secret, tcp::kServerLabel, hello.nonce, ch.nonce);
  st = SendFrame(fd, tcp::MakeFrame(MessageType::kChallenge, rid, ch));
  if (st.ok()) st = tcp::ReadFrame(fd, tcp::kMaxControlBody, &f, &eof);
  if (!st.ok()) {
    if (ReportCut(s, *peer)) return false;
    warn("tcp transport: peer {} failed the handshake: {}{}", *peer, st.ToString(),
         eof ? " (did it reject this node's proof? the cluster secrets may differ)" : "");
    return false;
  }
  tcp::ProofMessage proof;
  if (f.header.type != tcp::Type(MessageType::kProof) || !tcp::ParseBody(f.body, &proof)) {
    warn("tcp transport: closing connection from {}: protocol error: expected a Proof", *peer);
    return false;
  }
  tcp::Proof expected = tcp::MakeProof(opts_.secret, tcp::kClientLabel, hello.nonce, ch.nonce);
  if (!tcp::ProofsEqual(proof.proof, expected))
    return refuse(Status::PermissionDenied("authentication failed: wrong cluster secret"));
  // Handshaken: a serving slot now, or a refusal that says why.
  st = StartServing(s);
  if (!st.ok()) {
    if (ReportCut(s, *peer)) return false;
    return refuse(std::move(st));
  }
  st = SendFrame(fd, tcp::MakeFrame(MessageType::kWelcome, f.header.request_id, tcp::Welcome{}));
  if (!st.ok()) {
    PeerLog(log_limiter_, spdlog::level::warn, "broken connections", host,
            "tcp transport: peer {}: {}", *peer, st.ToString());
    return false;
  }
  spdlog::debug("tcp transport: peer {} connected{}", *peer,
                have_secret ? " and authenticated" : " (unauthenticated)");
  return true;
}

// Sends `frame`, then the range's bytes a piece at a time, each hashed just
// before it is sent (read once from memory for both), then the range's block
// digests. A range that is the whole object gives its digest too, which the
// store keeps for the next pull.
Status TcpTransport::SendHashed(int fd, const std::string& frame, const PinnedObject& p,
                                uint64_t offset, uint64_t length, PinGuard* guard) {
  std::vector<uint64_t> blocks(DigestBlocks(length));
  BlockHasher hasher(blocks.data());
  std::string_view head = frame;
  for (uint64_t done = 0; done < length;) {
    const uint64_t n = std::min(kHashPiece, length - done);
    const uint8_t* piece = p.bytes + offset + done;
    hasher.Update(piece, n);
    PLASMON_RETURN_IF_ERROR(tcp::SendAll(fd, head, piece, n));
    head = {};
    done += n;
  }
  hasher.Finish();
  if (offset == 0 && length == p.total())
    guard->computed_digest = CombineBlockDigests(blocks.data(), blocks.size());
  std::string trailer;
  Encoder e(&trailer);
  for (uint64_t d : blocks) e.PutU64(d);
  return tcp::SendAll(fd, trailer);
}

bool TcpTransport::ServePull(int fd, const std::string& host, const std::string& peer,
                             uint64_t request_id, std::string_view body,
                             std::unique_ptr<PinGuard>* held) {
  tcp::PullMessage m;
  if (!tcp::ParseBody(body, &m)) {
    PeerLog(log_limiter_, spdlog::level::warn, "protocol errors", host,
            "tcp transport: closing connection from {}: protocol error: malformed Pull", peer);
    return false;
  }
  tcp::PullReply rep;
  Result<PinnedObject> pinned = source_->Pin(m.id);
  // A new frame ends the previous hold; pinned again first, the object is
  // never unpinned in between.
  held->reset();
  if (!pinned.ok()) {
    rep.status = pinned.status();
    Status st = SendFrame(fd, tcp::MakeFrame(tcp::MessageType::kPullReply, request_id, rep));
    if (!st.ok())
      PeerLog(log_limiter_, spdlog::level::warn, "broken connections", host,
              "tcp transport: peer {}: {}", peer, st.ToString());
    return st.ok();
  }
  auto guard_ptr = std::make_unique<PinGuard>(source_, m.id);
  PinGuard& guard = *guard_ptr;
  const PinnedObject& p = *pinned;
  const uint64_t total = p.total();
  rep.data_size = p.data_size;
  rep.metadata_size = p.metadata_size;
  rep.digest_valid = p.digest_valid;
  rep.digest = p.digest;
  const uint8_t* tail = nullptr;
  uint64_t n = 0;
  if (m.offset > total || m.length > total - m.offset) {
    rep.status = Status::InvalidArgument(
        "bytes at offset " + std::to_string(m.offset) + " length " + std::to_string(m.length) +
        " lie outside object " + m.id.Hex() + " (" + std::to_string(total) + " bytes)");
  } else if (m.block_digests && m.offset % kDigestBlock != 0) {
    rep.status =
        Status::InvalidArgument("block digests of bytes from offset " + std::to_string(m.offset) +
                                ", not a multiple of " + std::to_string(kDigestBlock));
  } else if (!InRegisteredMemory(p.bytes, total)) {
    spdlog::error("tcp transport: object {} is pinned outside registered memory", m.id.Hex());
    rep.status = Status::IOError("object " + m.id.Hex() + " lies outside registered memory");
  } else if (m.block_digests && !p.digest_valid && m.length > 0) {
    rep.block_digests = true;
  } else {
    if (m.want_digest && !p.digest_valid) {
      uint64_t d = ObjectDigest(p.bytes, p.data_size, p.bytes + p.data_size, p.metadata_size);
      guard.computed_digest = d;
      rep.digest_valid = true;
      rep.digest = d;
    }
    tail = m.length > 0 ? p.bytes + m.offset : nullptr;
    n = m.length;
  }
  // The bytes go out with sendmsg() straight from the pinned arena memory,
  // copied once into the socket buffer. Not sendfile()/splice(): they keep
  // referencing the pages after returning, so the pin would have to outlive
  // the call until the peer acknowledged every byte.
  const std::string frame = tcp::MakeFrame(tcp::MessageType::kPullReply, request_id, rep);
  Status st = rep.block_digests ? SendHashed(fd, frame, p, m.offset, m.length, &guard)
                                : tcp::SendAll(fd, frame, tail, n);
  if (!st.ok()) {
    PeerLog(log_limiter_, spdlog::level::warn, "broken connections", host,
            "tcp transport: pull of {} by {}: {}", m.id.Hex(), peer, st.ToString());
    return false;
  }
  if (m.hold && rep.status.ok()) *held = std::move(guard_ptr);
  return true;
}

void TcpTransport::Shutdown() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    if (listen_fd_.valid()) ::shutdown(listen_fd_.get(), SHUT_RDWR);
    if (wake_fd_.valid()) {
      uint64_t one = 1;  // wakes the accept thread's poll()
      (void)!::write(wake_fd_.get(), &one, sizeof(one));
    }
    for (int fd : client_fds_) ::shutdown(fd, SHUT_RDWR);
    for (UniqueFd& fd : idle_.Close()) client_fds_.erase(fd.get());
    cv_.notify_all();
  }
  pulls_.Close();
  if (accept_thread_.joinable()) accept_thread_.join();
  std::unordered_map<uint64_t, std::unique_ptr<Served>> served;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [id, s] : served_) {
      if (s->fd.valid()) ::shutdown(s->fd.get(), SHUT_RDWR);
    }
    served.swap(served_);
    finished_.clear();
  }
  for (auto& [id, s] : served) s->thread.join();
  served.clear();
  {
    std::lock_guard<std::mutex> l(mu_);
    listen_fd_.Reset();
    wake_fd_.Reset();
  }
  pulls_.WaitIdle();
  LogSuppressed(log_limiter_, spdlog::level::warn, /*all=*/true);
}

// ---------------------------------------------------------------- pulling

Result<UniqueFd> TcpTransport::Acquire(const std::string& endpoint) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (shut_down_)
      return Status::Disconnected("pull from " + endpoint + ": the transport is shut down");
  }
  std::optional<UniqueFd> fd = TakeIdle(endpoint);
  if (fd) return std::move(*fd);
  return Connect(endpoint);
}

std::optional<UniqueFd> TcpTransport::TakeIdle(const std::string& endpoint) {
  // An idle connection has nothing to read: readable means the peer closed
  // it (or sent garbage).
  return idle_.Take(
      endpoint,
      [](const UniqueFd& f) {
        pollfd p{f.get(), POLLIN, 0};
        return ::poll(&p, 1, 0) == 0;
      },
      [this](UniqueFd f) { Discard(std::move(f)); });
}

void TcpTransport::Release(const std::string& endpoint, UniqueFd fd) {
  const size_t max_idle = std::max<size_t>(8, 2 * static_cast<size_t>(opts_.streams));
  std::optional<UniqueFd> refused = idle_.Put(endpoint, std::move(fd), max_idle);
  if (refused) Discard(std::move(*refused));
}

void TcpTransport::Discard(UniqueFd fd) {
  std::lock_guard<std::mutex> l(mu_);
  client_fds_.erase(fd.get());
  fd.Reset();
}

Result<UniqueFd> TcpTransport::Connect(const std::string& endpoint) {
  // One deadline for connecting and the handshake together.
  const Clock::time_point dial_deadline =
      Clock::now() + std::chrono::milliseconds(opts_.dial_timeout_ms);
  std::string host, port;
  if (!SplitHostPort(endpoint, &host, &port))
    return Status::InvalidArgument("malformed endpoint '" + endpoint + "' (want HOST:PORT)");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int gai = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0)
    return Status::Disconnected("cannot resolve " + endpoint + ": " + gai_strerror(gai));
  std::string last_error = "no addresses";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) {
      last_error = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    SetCongestion(fd.get(), opts_.congestion);
    {
      std::lock_guard<std::mutex> l(mu_);
      if (shut_down_) {
        ::freeaddrinfo(res);
        return Status::Disconnected("the transport is shut down");
      }
      client_fds_.insert(fd.get());
    }
    int err = 0;
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p{fd.get(), POLLOUT, 0};
        auto deadline = std::min(
            dial_deadline, Clock::now() + std::chrono::milliseconds(opts_.connect_timeout_ms));
        int r;
        for (;;) {
          auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
              deadline - std::chrono::steady_clock::now());
          r = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
          if (r >= 0 || errno != EINTR) break;
        }
        if (r == 0) {
          err = ETIMEDOUT;
        } else if (r < 0) {
          err = errno;
        } else {
          socklen_t len = sizeof(err);
          if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        }
      }
    }
    if (err != 0) {
      last_error = std::strerror(err);
      Discard(std::move(fd));
      continue;
    }
    ::freeaddrinfo(res);
    int flags = ::fcntl(fd.get(), F_GETFL);
    Status st = flags >= 0 && ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) == 0
                    ? Status::OK()
                    : Status::FromErrno("fcntl", errno);
    if (st.ok()) st = SetNoDelay(fd.get());
    if (st.ok()) st = SetTimeout(fd.get(), SO_RCVTIMEO, opts_.io_timeout_ms);
    // The handshake's few small frames fit the socket buffer: a send that
    // blocks at all means the holder does not read.
    if (st.ok()) st = SetTimeout(fd.get(), SO_SNDTIMEO, std::max(1, MsUntil(dial_deadline)));
    if (st.ok()) st = ClientHandshake(fd.get(), endpoint, dial_deadline);
    if (st.ok()) st = SetTimeout(fd.get(), SO_SNDTIMEO, opts_.io_timeout_ms);
    if (!st.ok()) {
      Discard(std::move(fd));
      return st;
    }
    return fd;
  }
  ::freeaddrinfo(res);
  return Status::Disconnected("cannot connect to " + endpoint + ": " + last_error);
}

Status TcpTransport::ClientHandshake(int fd, const std::string& endpoint,
                                     Clock::time_point deadline) {
  using tcp::MessageType;
  const std::string ctx = "handshake with " + endpoint + ": ";
  auto wire_error = [&](const Status& st) {
    std::string why = st.message();
    if (MsUntil(deadline) == 0)
      why += " (connecting and the handshake may take " + std::to_string(opts_.dial_timeout_ms) +
             " ms)";
    return Status(st.IsProtocolError() ? st.code() : StatusCode::kDisconnected, ctx + why);
  };
  tcp::Hello hello;
  hello.flags = opts_.secret.empty() ? 0 : tcp::kHasSecret;
  hello.node_name = opts_.node_name;
  PLASMON_RETURN_IF_ERROR(tcp::RandomNonce(&hello.nonce));
  Status st = SendFrame(fd, tcp::MakeFrame(MessageType::kHello, 1, hello));
  if (!st.ok()) return wire_error(st);
  tcp::Frame f;
  st = ReadControlFrameBy(fd, &f, deadline);
  if (!st.ok()) return wire_error(st);
  if (f.header.type == tcp::Type(MessageType::kWelcome)) {
    tcp::Welcome w;
    if (!tcp::ParseBody(f.body, &w) || w.status.ok())
      return Status::ProtocolError(ctx + "unexpected Welcome");
    return Status(w.status.code(), ctx + "refused: " + w.status.message());
  }
  tcp::Challenge ch;
  if (f.header.type != tcp::Type(MessageType::kChallenge) || !tcp::ParseBody(f.body, &ch))
    return Status::ProtocolError(ctx + "expected a Challenge");
  const bool have_secret = !opts_.secret.empty();
  if (((ch.flags & tcp::kHasSecret) != 0) != have_secret)
    return Status::PermissionDenied(
        ctx + (have_secret ? "the peer has no cluster secret and this node has one"
                           : "the peer requires a cluster secret"));
  if (!tcp::ProofsEqual(ch.proof,
                        tcp::MakeProof(opts_.secret, tcp::kServerLabel, hello.nonce, ch.nonce)))
    return Status::PermissionDenied(ctx + "the peer failed authentication: wrong cluster secret");
  tcp::ProofMessage proof;
  proof.proof = tcp::MakeProof(opts_.secret, tcp::kClientLabel, hello.nonce, ch.nonce);
  st = SendFrame(fd, tcp::MakeFrame(MessageType::kProof, 2, proof));
  if (st.ok()) st = ReadControlFrameBy(fd, &f, deadline);
  if (!st.ok()) return wire_error(st);
  tcp::Welcome w;
  if (f.header.type != tcp::Type(MessageType::kWelcome) || !tcp::ParseBody(f.body, &w))
    return Status::ProtocolError(ctx + "expected a Welcome");
  if (!w.status.ok()) return Status(w.status.code(), ctx + "refused: " + w.status.message());
  return Status::OK();
}

Status TcpTransport::SendPull(int fd, const std::string& endpoint, const PullRequest& request,
                              uint64_t offset, uint64_t length, const PullAsk& ask,
                              uint64_t request_id) {
  tcp::PullMessage m;
  m.id = request.id;
  m.offset = offset;
  m.length = length;
  m.want_digest = ask.want_digest;
  m.hold = ask.hold;
  m.block_digests = ask.blocks != nullptr;
  Status st = SendFrame(fd, tcp::MakeFrame(tcp::MessageType::kPull, request_id, m));
  if (!st.ok())
    return Status::Disconnected("pull of " + request.id.Hex() + " from " + endpoint + ": " +
                                st.message());
  return st;
}

// Reads `length` bytes to `dst` a piece at a time, hashing each piece right
// after it lands (still in the CPU's cache) into blocks[0, ...).
static Status ReadHashed(int fd, uint8_t* dst, uint64_t length, uint64_t* blocks) {
  BlockHasher hasher(blocks);
  for (uint64_t done = 0; done < length;) {
    const uint64_t n = std::min(kHashPiece, length - done);
    PLASMON_RETURN_IF_ERROR(tcp::ReadExact(fd, dst + done, n));
    hasher.Update(dst + done, n);
    done += n;
  }
  hasher.Finish();
  return Status::OK();
}

Status TcpTransport::CheckPullReply(const tcp::Frame& f, const std::string& endpoint,
                                    const PullRequest& request, uint64_t request_id,
                                    tcp::PullReply* reply, bool* reusable) const {
  *reusable = false;
  const std::string ctx = "pull of " + request.id.Hex() + " from " + endpoint + ": ";
  if (f.header.type != tcp::Type(tcp::MessageType::kPullReply) ||
      f.header.request_id != request_id || !tcp::ParseBody(f.body, reply))
    return Status::ProtocolError(ctx + "malformed reply");
  const Status& hs = reply->status;
  if ((hs.ok() || hs.IsInvalidArgument()) &&
      (reply->data_size != request.data_size || reply->metadata_size != request.metadata_size)) {
    *reusable = !hs.ok();  // no bytes follow an error
    return Status::InvalidArgument(
        ctx + "the directory said " + Sizes(request.data_size, request.metadata_size) +
        ", the holder has " + Sizes(reply->data_size, reply->metadata_size));
  }
  if (!hs.ok()) {
    *reusable = true;
    return Status(hs.code(), ctx + "the holder says: " + hs.message());
  }
  *reusable = true;
  return Status::OK();
}

Status TcpTransport::ReadPullReply(int fd, const std::string& endpoint, const PullRequest& request,
                                   uint64_t offset, uint64_t length, uint64_t* blocks,
                                   uint64_t request_id, tcp::PullReply* reply, bool* reusable) {
  *reusable = false;
  const std::string ctx = "pull of " + request.id.Hex() + " from " + endpoint + ": ";
  tcp::Frame f;
  Status st = tcp::ReadFrame(fd, tcp::kMaxControlBody, &f);
  if (!st.ok()) {
    return Status(st.IsProtocolError() ? st.code() : StatusCode::kDisconnected, ctx + st.message());
  }
  PLASMON_RETURN_IF_ERROR(CheckPullReply(f, endpoint, request, request_id, reply, reusable));
  *reusable = false;
  if (reply->block_digests && (blocks == nullptr || length == 0))
    return Status::ProtocolError(ctx + "block digests that were not asked for");
  if (length > 0) {
    st = blocks != nullptr ? ReadHashed(fd, request.destination + offset, length, blocks)
                           : tcp::ReadExact(fd, request.destination + offset, length);
    if (!st.ok()) {
      return Status(st.IsDisconnected() ? st.code() : StatusCode::kDisconnected,
                    ctx + st.message());
    }
  }
  if (reply->block_digests) {
    const uint64_t count = DigestBlocks(length);
    std::vector<uint64_t> theirs(count);
    st = tcp::ReadExact(fd, theirs.data(), count * sizeof(uint64_t));
    if (!st.ok()) {
      return Status(st.IsDisconnected() ? st.code() : StatusCode::kDisconnected,
                    ctx + st.message());
    }
    *reusable = true;
    for (uint64_t i = 0; i < count; i++) {
      if (theirs[i] != blocks[i])
        return Status::Corruption(
            ctx + "digest mismatch in bytes " + std::to_string(offset + i * kDigestBlock) + " to " +
            std::to_string(offset + std::min(length, (i + 1) * kDigestBlock)) + ": received " +
            Hex64(blocks[i]) + ", holder says " + Hex64(theirs[i]));
    }
  }
  *reusable = true;
  return Status::OK();
}

Status TcpTransport::PullRange(int fd, const std::string& endpoint, const PullRequest& request,
                               uint64_t offset, uint64_t length, const PullAsk& ask,
                               tcp::PullReply* reply, bool* reusable) {
  *reusable = false;
  const uint64_t rid = next_request_id_.fetch_add(1, std::memory_order_relaxed);
  PLASMON_RETURN_IF_ERROR(SendPull(fd, endpoint, request, offset, length, ask, rid));
  return ReadPullReply(fd, endpoint, request, offset, length, ask.blocks, rid, reply, reusable);
}

Result<PullResult> TcpTransport::Pull(const std::string& endpoint, const PullRequest& request) {
  const uint64_t total = request.data_size + request.metadata_size;
  if (total < request.data_size) return Status::InvalidArgument("object size overflows");
  if (total > 0 && request.destination == nullptr) return Status::InvalidArgument("no destination");
  if (!InRegisteredMemory(request.destination, total))
    return Status::InvalidArgument("the destination lies outside registered memory");
  Result<PullGate::Ticket> in_flight = pulls_.Enter();
  if (!in_flight.ok()) return in_flight.status();
  const int64_t started = MonoMicros();
  Result<PullResult> r =
      total <= opts_.chunk_size ? PullWhole(endpoint, request) : PullChunked(endpoint, request);
  if (r.ok()) r->started_us = started;
  return r;
}

std::unique_ptr<AsyncPull> TcpTransport::StartAsyncPull(const std::string& endpoint,
                                                        const PullRequest& request) {
  const int64_t started = MonoMicros();
  const uint64_t total = request.data_size + request.metadata_size;
  if (total < request.data_size || total > opts_.async_max) return nullptr;
  if (total > 0 && (request.destination == nullptr || !InRegisteredMemory(request.destination, total)))
    return nullptr;  // Pull says why
  // After Shutdown the pool is closed and empty: nothing below is found.
  // Only a connection already made: connecting and the handshake block.
  // Not checked with poll() first (a system call): one that died idle fails
  // the pull before any answer, as stale, and the caller pulls again the
  // blocking way on a new one.
  std::optional<UniqueFd> fd = idle_.Take(endpoint);
  if (!fd) return nullptr;
  const uint64_t rid = next_request_id_.fetch_add(1, std::memory_order_relaxed);
  tcp::PullMessage m;
  m.id = request.id;
  m.length = total;
  m.want_digest = true;
  const std::string frame = tcp::MakeFrame(tcp::MessageType::kPull, rid, m);
  // An idle connection's send buffer is empty: a short frame goes out whole.
  // If not, the stream is in an unknown state: close it and pull the slow way.
  ssize_t n = ::send(fd->get(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n != static_cast<ssize_t>(frame.size())) {
    Discard(std::move(*fd));
    return nullptr;
  }
  return std::make_unique<LoopPull>(this, endpoint, request, std::move(*fd), rid, started);
}

// The object's digest from the blocks that arrived, checked against the
// holder's whole digest if it sent one (else every block was checked
// against the holder's as it came).
Result<PullResult> TcpTransport::Verified(const std::string& endpoint, const PullRequest& request,
                                          const std::vector<uint64_t>& blocks,
                                          const tcp::PullReply& holder, bool blocks_checked) {
  const uint64_t d = CombineBlockDigests(blocks.data(), blocks.size());
  const std::string ctx = "pull of " + request.id.Hex() + " from " + endpoint + ": ";
  if (holder.digest_valid) {
    if (d != holder.digest)
      return Status::Corruption(ctx + "digest mismatch: received " + Hex64(d) + ", holder says " +
                                Hex64(holder.digest));
  } else if (!blocks_checked) {
    return Status::ProtocolError(ctx + "the holder sent no digest");
  }
  return PullResult{d, TransportKind::kTcp};
}

Result<PullResult> TcpTransport::PullWhole(const std::string& endpoint,
                                           const PullRequest& request) {
  Result<UniqueFd> fd = Acquire(endpoint);
  if (!fd.ok()) return fd.status();
  Lease lease(this, endpoint, std::move(*fd));
  const uint64_t total = request.data_size + request.metadata_size;
  std::vector<uint64_t> blocks(DigestBlocks(total));
  if (total == 0) blocks[0] = BlockDigest(nullptr, 0);
  tcp::PullReply rep;
  bool reusable = false;
  PullAsk ask;
  ask.want_digest = true;
  ask.blocks = total > 0 ? blocks.data() : nullptr;
  Status st = PullRange(lease.fd(), endpoint, request, 0, total, ask, &rep, &reusable);
  lease.set_reusable(reusable);
  if (!st.ok()) return st;
  const int64_t landed = MonoMicros();
  Result<PullResult> r = Verified(endpoint, request, blocks, rep, rep.block_digests);
  if (r.ok()) {
    r->landed_us = landed;
    r->checked_us = MonoMicros();
  }
  return r;
}

Result<PullResult> TcpTransport::PullChunked(const std::string& endpoint,
                                             const PullRequest& request) {
  const uint64_t total = request.data_size + request.metadata_size;
  const uint64_t cs = opts_.chunk_size;  // a multiple of kDigestBlock
  const uint64_t chunks = total / cs + (total % cs != 0 ? 1 : 0);

  // First a describe on its own connection that holds the object pinned for
  // the whole transfer (each chunk pins it too, but only while it is sent).
  // It tells whether the holder knows the object's digest; if not, every
  // chunk asks for its blocks' digests, which the holder computes as it
  // sends them.
  Result<UniqueFd> dfd = Acquire(endpoint);
  if (!dfd.ok()) return dfd.status();
  Lease describe(this, endpoint, std::move(*dfd));
  tcp::PullReply held;
  bool held_reusable = false;
  PullAsk hold;
  hold.hold = true;
  PLASMON_RETURN_IF_ERROR(
      PullRange(describe.fd(), endpoint, request, 0, 0, hold, &held, &held_reusable));

  // Workers take chunks in order; each hashes its chunk's blocks as they
  // land, into their places in `blocks`.
  std::vector<uint64_t> blocks(DigestBlocks(total));
  std::mutex mu;
  bool failed = false;
  Status error;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> abort{false};
  auto fail = [&](Status st) {
    std::lock_guard<std::mutex> l(mu);
    if (!failed) {
      failed = true;
      error = std::move(st);
    }
    abort.store(true, std::memory_order_relaxed);
  };
  auto worker = [&] {
    Result<UniqueFd> fd = Acquire(endpoint);
    if (!fd.ok()) return fail(fd.status());
    Lease lease(this, endpoint, std::move(*fd));
    lease.set_reusable(true);
    for (;;) {
      if (abort.load(std::memory_order_relaxed)) return;
      uint64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= chunks) return;
      uint64_t off = i * cs;
      tcp::PullReply rep;
      bool reusable = false;
      PullAsk ask;
      ask.blocks = blocks.data() + off / kDigestBlock;
      Status st = PullRange(lease.fd(), endpoint, request, off, std::min(cs, total - off), ask,
                            &rep, &reusable);
      lease.set_reusable(reusable);
      if (st.ok() && !held.digest_valid && !rep.block_digests)
        st = Status::ProtocolError("pull of " + request.id.Hex() + " from " + endpoint +
                                   ": the holder sent no digest");
      if (!st.ok()) return fail(std::move(st));
    }
  };
  // The calling thread is one of the workers.
  const uint64_t nworkers = opts_.StreamsFor(total);
  std::vector<std::thread> threads;
  threads.reserve(nworkers - 1);
  for (uint64_t w = 1; w < nworkers; w++) threads.emplace_back(worker);
  worker();
  for (std::thread& t : threads) t.join();
  if (failed) return error;  // the workers are joined: no lock needed
  const int64_t landed = MonoMicros();  // hashed as they landed: only the last chunk's remains

  // Ends the hold: the next frame does (a plain describe). If that fails,
  // the connection is closed, which ends the hold too; the bytes are in.
  tcp::PullReply last;
  Status ended =
      PullRange(describe.fd(), endpoint, request, 0, 0, PullAsk{}, &last, &held_reusable);
  describe.set_reusable(ended.ok() && held_reusable);
  Result<PullResult> r = Verified(endpoint, request, blocks, held, /*blocks_checked=*/true);
  if (r.ok()) {
    r->landed_us = landed;
    r->checked_us = MonoMicros();
  }
  return r;
}

}  // namespace plasmon
