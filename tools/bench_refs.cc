#include "tools/bench_refs.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/arena.h"
#include "core/size.h"
#include "core/unix_socket.h"
#include "tools/cluster/process.h"
#include "transport/tcp_transport.h"

namespace plasmon::bench {

namespace {

std::string_view AsView(const std::vector<uint8_t>& b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Keeps the compiler from dropping a copy whose result is never read.
inline void Clobber(void* p) { asm volatile("" : : "r"(p) : "memory"); }

}  // namespace

Status PinToCpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof(set), &set) != 0)
    return Status::FromErrno("pinning to CPU " + std::to_string(cpu), errno);
  return Status::OK();
}

Result<Summary> MeasurePingPong(uint64_t bytes, Counts counts, int peer_cpu) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return Status::FromErrno("socketpair", errno);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    return Status::FromErrno("fork", err);
  }
  std::vector<uint8_t> buf(bytes, 0x5a);
  if (pid == 0) {
    // The echo process: send back every message until the parent closes.
    ::close(sv[0]);
    if (peer_cpu >= 0 && !PinToCpu(peer_cpu).ok()) ::_exit(1);
    for (;;) {
      int r = ReadFull(sv[1], buf.data(), buf.size());
      if (r <= 0) ::_exit(r == 0 ? 0 : 1);
      if (!WriteAll(sv[1], AsView(buf)).ok()) ::_exit(1);
    }
  }
  ::close(sv[1]);
  int fd = sv[0];
  std::vector<uint64_t> samples;
  samples.reserve(counts.iterations);
  Status st;
  for (uint64_t i = 0; i < counts.warmup + counts.iterations; i++) {
    uint64_t t0 = NowNs();
    bool ok = WriteAll(fd, AsView(buf)).ok() && ReadFull(fd, buf.data(), buf.size()) == 1;
    uint64_t t1 = NowNs();
    if (!ok) {
      st = Status::IOError("the ping-pong echo process stopped answering");
      break;
    }
    if (i >= counts.warmup) samples.push_back(t1 - t0);
  }
  ::close(fd);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (!st.ok()) return st;
  return Summarize(&samples);
}

std::vector<MemcpyRow> MeasureMemcpy(const std::vector<uint64_t>& sizes) {
  std::vector<MemcpyRow> rows;
  uint64_t max_size = 0;
  for (uint64_t s : sizes) max_size = std::max(max_size, s);
  if (max_size == 0) return rows;
  // Both buffers written through once, so every page is faulted in.
  std::unique_ptr<uint8_t[]> src(new uint8_t[max_size]);
  std::unique_ptr<uint8_t[]> dst(new uint8_t[max_size]);
  for (uint64_t i = 0; i < max_size; i++) src[i] = static_cast<uint8_t>(i * 131 + 7);
  std::memset(dst.get(), 1, max_size);

  constexpr uint64_t kBatchBytes = 1u << 20;    // small sizes: copies per timed repetition
  constexpr uint64_t kTotalBytes = 256u << 20;  // bytes copied per size, roughly
  for (uint64_t size : sizes) {
    MemcpyRow row;
    row.size = size;
    row.copies = std::max<uint64_t>(1, kBatchBytes / size);
    row.repetitions = std::clamp<uint64_t>(kTotalBytes / (row.copies * size), 21, 1001);
    // One untimed repetition to warm the caches and the TLB.
    for (uint64_t c = 0; c < row.copies; c++) {
      std::memcpy(dst.get(), src.get(), size);
      Clobber(dst.get());
    }
    std::vector<double> rates;
    rates.reserve(row.repetitions);
    for (uint64_t r = 0; r < row.repetitions; r++) {
      uint64_t t0 = NowNs();
      for (uint64_t c = 0; c < row.copies; c++) {
        std::memcpy(dst.get(), src.get(), size);
        Clobber(dst.get());
      }
      uint64_t t1 = NowNs();
      double secs = static_cast<double>(std::max<uint64_t>(t1 - t0, 1)) * 1e-9;
      rates.push_back(static_cast<double>(row.copies * size) / secs / 1e9);
    }
    std::sort(rates.begin(), rates.end());
    row.gb_per_s = rates[(rates.size() - 1) / 2];
    rows.push_back(row);
  }
  return rows;
}

namespace {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};

// What went wrong with a command, or "" if the reply is as expected.
std::string CheckReply(redisContext* c, const redisReply* r, int want_type, size_t want_len) {
  if (r == nullptr) return c->errstr[0] != '\0' ? c->errstr : "no reply";
  if (r->type == REDIS_REPLY_ERROR) return std::string(r->str, r->len);
  if (r->type != want_type) return "unexpected reply type " + std::to_string(r->type);
  if (want_type == REDIS_REPLY_STRING && r->len != want_len)
    return "GET returned " + std::to_string(r->len) + " bytes, expected " +
           std::to_string(want_len);
  return "";
}

}  // namespace

RedisReference MeasureRedis(const std::string& socket, const std::vector<uint64_t>& sizes,
                            const CountsFor& counts, const uint8_t* src) {
  RedisReference ref;
  ref.socket = socket;
  timeval connect_timeout{2, 0};
  std::unique_ptr<redisContext, ContextDeleter> ctx(
      redisConnectUnixWithTimeout(socket.c_str(), connect_timeout));
  if (!ctx || ctx->err) {
    ref.error = "cannot connect to Redis at " + socket + ": " +
                (ctx ? std::string(ctx->errstr) : std::string("out of memory"));
    return ref;
  }
  redisContext* c = ctx.get();
  timeval command_timeout{10, 0};
  redisSetTimeout(c, command_timeout);

  {
    ReplyPtr info(static_cast<redisReply*>(redisCommand(c, "INFO server")));
    std::string err = CheckReply(c, info.get(), REDIS_REPLY_STRING, info ? info->len : 0);
#ifdef REDIS_REPLY_VERB
    if (info && info->type == REDIS_REPLY_VERB) err.clear();  // RESP3 servers
#endif
    if (!err.empty()) {
      ref.error = "Redis at " + socket + " did not answer INFO: " + err;
      return ref;
    }
    std::string text(info->str, info->len);
    size_t at = text.find("redis_version:");
    if (at != std::string::npos) {
      size_t b = at + std::strlen("redis_version:");
      ref.version = text.substr(b, text.find_first_of("\r\n", b) - b);
    }
  }

  std::vector<RedisRow> gets;
  for (uint64_t size : sizes) {
    std::string key = "plasmon-bench:" + std::to_string(::getpid()) + ":" + std::to_string(size);
    Counts n = counts(size);
    std::vector<uint64_t> set_ns, get_ns;
    set_ns.reserve(n.iterations);
    get_ns.reserve(n.iterations);
    for (uint64_t i = 0; i < n.warmup + n.iterations; i++) {
      uint64_t t0 = NowNs();
      ReplyPtr r(static_cast<redisReply*>(
          redisCommand(c, "SET %s %b", key.c_str(), src, static_cast<size_t>(size))));
      std::string err = CheckReply(c, r.get(), REDIS_REPLY_STATUS, 0);
      r.reset();
      uint64_t t1 = NowNs();
      if (!err.empty()) {
        ref.error = "Redis SET of " + std::to_string(size) + " bytes failed: " + err;
        return ref;
      }
      if (i >= n.warmup) set_ns.push_back(t1 - t0);
    }
    for (uint64_t i = 0; i < n.warmup + n.iterations; i++) {
      uint64_t t0 = NowNs();
      ReplyPtr r(static_cast<redisReply*>(redisCommand(c, "GET %s", key.c_str())));
      std::string err = CheckReply(c, r.get(), REDIS_REPLY_STRING, size);
      r.reset();
      uint64_t t1 = NowNs();
      if (!err.empty()) {
        ref.error = "Redis GET of " + std::to_string(size) + " bytes failed: " + err;
        return ref;
      }
      if (i >= n.warmup) get_ns.push_back(t1 - t0);
    }
    ReplyPtr del(static_cast<redisReply*>(redisCommand(c, "DEL %s", key.c_str())));
    ref.rows.push_back({"redis_set", size, Summarize(&set_ns)});
    gets.push_back({"redis_get", size, Summarize(&get_ns)});
  }
  ref.rows.insert(ref.rows.end(), gets.begin(), gets.end());
  return ref;
}

// ---------------------------------------------------------------- network

namespace {

constexpr size_t kMaxTracked = 16;
std::atomic<pid_t> g_tracked[kMaxTracked];

// Waits for `pid` up to `timeout_ms` (-1: forever); SIGKILLs it then. Returns
// its wait status.
int WaitChild(pid_t pid, int timeout_ms) {
  int ws = 0;
  uint64_t deadline = NowNs() + static_cast<uint64_t>(std::max(timeout_ms, 0)) * 1000000;
  for (;;) {
    pid_t r = ::waitpid(pid, &ws, timeout_ms < 0 ? 0 : WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) break;
    if (r == 0 && NowNs() >= deadline) {
      ::kill(pid, SIGKILL);
      timeout_ms = -1;
      continue;
    }
    if (r == 0) ::usleep(5000);
  }
  UntrackChild(pid);
  return ws;
}

// Resolves a numeric address and port.
Status Resolve(const std::string& address, uint16_t port, sockaddr_storage* ss, socklen_t* len) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string p = std::to_string(port);
  int gai = ::getaddrinfo(address.c_str(), p.c_str(), &hints, &res);
  if (gai != 0)
    return Status::InvalidArgument("bad address '" + address + "': " + gai_strerror(gai));
  std::memcpy(ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return Status::OK();
}

void SetPort(sockaddr_storage* ss, uint16_t port) {
  if (ss->ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(ss)->sin_port = htons(port);
  if (ss->ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(ss)->sin6_port = htons(port);
}

uint16_t GetPort(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(ss).sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(ss).sin6_port);
  return 0;
}

// A TCP socket made in `netns`; the calling thread returns to its own
// namespace before this returns.
Result<UniqueFd> SocketInNetns(const std::string& netns, int family) {
  if (netns.empty()) {
    UniqueFd s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) return Status::FromErrno("socket", errno);
    return s;
  }
  UniqueFd self(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!self.valid()) return Status::FromErrno("open /proc/thread-self/ns/net", errno);
  PLASMON_RETURN_IF_ERROR(EnterNetns(netns));
  UniqueFd s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int err = errno;
  if (::setns(self.get(), CLONE_NEWNET) != 0) {
    // This thread is stuck in the other namespace: nothing it does from
    // now on would mean what the caller thinks.
    std::fprintf(stderr, "plasmon-bench: cannot return to this process's network namespace: %s\n",
                 std::strerror(errno));
    std::abort();
  }
  if (!s.valid()) return Status::FromErrno("socket in network namespace " + netns, err);
  return s;
}

Status NoDelay(int fd) {
  int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
    return Status::FromErrno("setsockopt TCP_NODELAY", errno);
  return Status::OK();
}

// Reads from `fd` until EOF or `deadline_ns`. False on a timeout.
bool ReadUntilEof(int fd, std::string* out, uint64_t deadline_ns) {
  char buf[65536];
  for (;;) {
    uint64_t now = NowNs();
    if (now >= deadline_ns) return false;
    pollfd p{fd, POLLIN, 0};
    int left_ms = static_cast<int>(std::min<uint64_t>((deadline_ns - now) / 1000000 + 1, 60000));
    int r = ::poll(&p, 1, left_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return true;
    out->append(buf, static_cast<size_t>(n));
  }
}

// Whether the network namespace of process `pid` has a TCP socket listening
// on `port` (from /proc/PID/net/tcp and tcp6).
bool Listening(pid_t pid, uint16_t port) {
  char want[8];
  std::snprintf(want, sizeof(want), "%04X", port);
  for (const char* f : {"tcp", "tcp6"}) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/net/" + f);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string sl, local, remote, st;
      if (!(fields >> sl >> local >> remote >> st)) continue;
      size_t colon = local.rfind(':');
      if (colon != std::string::npos && local.substr(colon + 1) == want && st == "0A") return true;
    }
  }
  return false;
}

// The number at `pointer` in an iperf3 -J report; NaN if there is none.
double NumberAt(const nlohmann::json& report, const char* pointer) {
  const nlohmann::json::json_pointer p(pointer);
  return report.contains(p) && report.at(p).is_number() ? report.at(p).get<double>() : std::nan("");
}

// Points stdin (and, unless keep_output, stdout and stderr) of a forked child at /dev/null.
void Quiet(bool keep_output) {
  int null = ::open("/dev/null", O_RDWR);
  if (null < 0) return;
  ::dup2(null, STDIN_FILENO);
  if (!keep_output) {
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
  }
  if (null > STDERR_FILENO) ::close(null);
}

// Forks `args` (argv[0] looked up in PATH) into `host`'s namespace, pinned to
// its CPU if it has one, stdin from /dev/null, stdout (and, with `with_stderr`,
// stderr; else /dev/null) into *out_fd. Returns its pid (tracked), or -1.
pid_t SpawnIn(const NetHost& host, const std::vector<std::string>& args, UniqueFd* out_fd,
              bool with_stderr = true) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return -1;
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    Quiet(/*keep_output=*/!with_stderr);
    ::dup2(out[1], STDOUT_FILENO);
    if (with_stderr) ::dup2(out[1], STDERR_FILENO);
    if (Status st = EnterNetns(host.netns); !st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      ::_exit(126);
    }
    if (host.cpu >= 0) {
      if (Status st = PinToCpu(host.cpu); !st.ok()) {
        std::fprintf(stderr, "%s\n", st.ToString().c_str());
        ::_exit(126);
      }
    }
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "cannot run %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(out[1]);
  if (pid < 0) {
    ::close(out[0]);
    return -1;
  }
  TrackChild(pid);
  out_fd->Reset(out[0]);
  return pid;
}

}  // namespace

void TrackChild(pid_t pid) {
  for (std::atomic<pid_t>& slot : g_tracked) {
    pid_t empty = 0;
    if (slot.compare_exchange_strong(empty, pid)) return;
  }
}

void UntrackChild(pid_t pid) {
  for (std::atomic<pid_t>& slot : g_tracked) {
    pid_t p = pid;
    if (slot.compare_exchange_strong(p, 0)) return;
  }
}

void KillTrackedChildren() {
  for (std::atomic<pid_t>& slot : g_tracked) {
    pid_t p = slot.exchange(0);
    if (p > 0) ::kill(p, SIGKILL);
  }
}

Status PinProcess(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu >= 0) {
    CPU_SET(cpu, &set);
  } else {
    long n = ::sysconf(_SC_NPROCESSORS_CONF);
    for (long i = 0; i < n && i < CPU_SETSIZE; i++) CPU_SET(i, &set);
  }
  std::error_code ec;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  int pinned = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    pid_t tid = static_cast<pid_t>(std::atoi(e.path().filename().c_str()));
    if (tid <= 0) continue;
    if (::sched_setaffinity(tid, sizeof(set), &set) != 0 && errno != ESRCH)
      return Status::FromErrno("pinning thread " + std::to_string(tid) + " of process " +
                                   std::to_string(pid) + " to CPU " + std::to_string(cpu),
                               errno);
    pinned++;
  }
  if (ec || pinned == 0) return Status::InvalidArgument("no process " + std::to_string(pid));
  return Status::OK();
}

Status EnterNetns(const std::string& netns) {
  if (netns.empty()) return Status::OK();
  if (netns.find('/') != std::string::npos || netns == "." || netns == "..")
    return Status::InvalidArgument("bad network namespace name '" + netns + "'");
  std::string path = "/run/netns/" + netns;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    path = "/var/run/netns/" + netns;
    fd.Reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  }
  if (!fd.valid()) return Status::FromErrno("open " + path, errno);
  if (::setns(fd.get(), CLONE_NEWNET) != 0)
    return Status::FromErrno("entering network namespace " + netns, errno);
  return Status::OK();
}

namespace {

// A server process forked into `server`'s namespace (pinned to its CPU if
// it has one), listening on an ephemeral port of server.address with room
// for `backlog` connections: `serve` runs there with the listening socket,
// its return value the exit status. The port is sent back on a pipe; a
// server that could not listen sends 0 and why.
struct ForkedServer {
  pid_t pid = -1;
  uint16_t port = 0;
  // SIGKILLs it and reaps it; returns `why`, for the caller's error.
  Status Kill(Status why) const {
    ::kill(pid, SIGKILL);
    WaitChild(pid, -1);
    return why;
  }
};
Result<ForkedServer> ForkServerIn(const NetHost& server, const sockaddr_storage& addr,
                                  socklen_t addr_len, int backlog,
                                  const std::function<int(int listen_fd)>& serve,
                                  const std::string& what) {
  int pfd[2];
  if (::pipe2(pfd, O_CLOEXEC) != 0) return Status::FromErrno("pipe", errno);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(pfd[0]);
    ::close(pfd[1]);
    return Status::FromErrno("fork", err);
  }
  if (pid == 0) {
    ::close(pfd[0]);
    // Not the bench's handlers: a Ctrl-C to the process group would have
    // this copy tear the cluster down too.
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, SIG_DFL);
    Quiet(/*keep_output=*/true);
    auto fail = [&](const std::string& why) {
      uint16_t zero = 0;
      (void)!::write(pfd[1], &zero, sizeof(zero));
      (void)!::write(pfd[1], why.data(), why.size());
      ::_exit(1);
    };
    if (Status st = EnterNetns(server.netns); !st.ok()) fail(st.ToString());
    if (server.cpu >= 0) {
      if (Status st = PinToCpu(server.cpu); !st.ok()) fail(st.ToString());
    }
    int l = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0) fail(std::string("socket: ") + std::strerror(errno));
    int one = 1;
    ::setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    // On the listener, so that accepted connections start with it (one
    // switched after its handshake keeps BBR's pacing mark).
    if (Status st = SetCongestionControl(l, server.congestion); !st.ok()) fail(st.ToString());
    if (::bind(l, reinterpret_cast<const sockaddr*>(&addr), addr_len) != 0)
      fail("bind " + server.address + ": " + std::strerror(errno));
    if (::listen(l, backlog) != 0) fail(std::string("listen: ") + std::strerror(errno));
    sockaddr_storage bound{};
    socklen_t bl = sizeof(bound);
    if (::getsockname(l, reinterpret_cast<sockaddr*>(&bound), &bl) != 0)
      fail(std::string("getsockname: ") + std::strerror(errno));
    uint16_t port = GetPort(bound);
    if (::write(pfd[1], &port, sizeof(port)) != sizeof(port)) ::_exit(1);
    ::close(pfd[1]);
    ::_exit(serve(l));
  }
  TrackChild(pid);
  ::close(pfd[1]);
  UniqueFd report(pfd[0]);
  ForkedServer f{pid, 0};
  std::string msg;
  if (!ReadUntilEof(report.get(), &msg, NowNs() + 10'000'000'000ull) || msg.size() < 2)
    return f.Kill(Status::IOError("the " + what + " did not start"));
  std::memcpy(&f.port, msg.data(), sizeof(f.port));
  if (f.port == 0) return f.Kill(Status::IOError("the " + what + " failed: " + msg.substr(2)));
  return f;
}

// Accepts one connection on `l` within 10 s; -1 if none came.
int AcceptOne(int l) {
  pollfd p{l, POLLIN, 0};
  if (::poll(&p, 1, 10000) <= 0) return -1;  // nobody came
  return ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
}

// A TCP socket in `host`'s namespace, with its congestion control,
// connected to addr (with `port`).
Result<UniqueFd> ConnectFrom(const NetHost& host, sockaddr_storage addr, socklen_t addr_len,
                             uint16_t port, const std::string& what) {
  SetPort(&addr, port);
  Result<UniqueFd> sock = SocketInNetns(host.netns, addr.ss_family);
  if (!sock.ok()) return sock.status();
  PLASMON_RETURN_IF_ERROR(SetCongestionControl(sock->get(), host.congestion));
  int rc;
  do {
    rc = ::connect(sock->get(), reinterpret_cast<sockaddr*>(&addr), addr_len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return Status::FromErrno("connecting to the " + what, errno);
  return sock;
}

}  // namespace

Result<std::unique_ptr<TcpPingPong>> TcpPingPong::Start(const NetHost& client,
                                                        const NetHost& server, uint64_t bytes) {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  PLASMON_RETURN_IF_ERROR(Resolve(server.address, 0, &addr, &addr_len));
  std::vector<uint8_t> buf(bytes, 0x5a);
  // The echo server: echoes every message of one connection until it closes.
  Result<ForkedServer> echo = ForkServerIn(
      server, addr, addr_len, 1,
      [&](int l) {
        int c = AcceptOne(l);
        if (c < 0) return 1;
        ::close(l);
        (void)NoDelay(c);
        for (;;) {
          int r = ReadFull(c, buf.data(), buf.size());
          if (r <= 0) return r == 0 ? 0 : 1;
          if (!WriteAll(c, AsView(buf)).ok()) return 1;
        }
      },
      "TCP echo server");
  if (!echo.ok()) return echo.status();
  Result<UniqueFd> sock =
      ConnectFrom(client, addr, addr_len, echo->port, "TCP echo server at " + server.address);
  if (!sock.ok()) return echo->Kill(sock.status());
  if (Status st = NoDelay(sock->get()); !st.ok()) return echo->Kill(st);
  return std::unique_ptr<TcpPingPong>(new TcpPingPong(echo->pid, sock->Release(), bytes));
}

TcpPingPong::~TcpPingPong() {
  ::close(fd_);
  WaitChild(pid_, 5000);  // it ends when the connection does
}

Result<uint64_t> TcpPingPong::RoundTrip() {
  uint64_t t0 = NowNs();
  bool ok = WriteAll(fd_, AsView(buf_)).ok() && ReadFull(fd_, buf_.data(), buf_.size()) == 1;
  uint64_t t1 = NowNs();
  if (!ok) return Status::IOError("the TCP echo server stopped answering");
  return t1 - t0;
}

Result<Summary> TcpPingPong::Measure(Counts counts) {
  std::vector<uint64_t> samples;
  samples.reserve(counts.iterations);
  for (uint64_t i = 0; i < counts.warmup + counts.iterations; i++) {
    Result<uint64_t> ns = RoundTrip();
    if (!ns.ok()) return ns.status();
    if (i >= counts.warmup) samples.push_back(*ns);
  }
  return Summarize(&samples);
}

Result<Summary> MeasureTcpPingPong(const NetHost& client, const NetHost& server, uint64_t bytes,
                                   Counts counts) {
  Result<std::unique_ptr<TcpPingPong>> pp = TcpPingPong::Start(client, server, bytes);
  if (!pp.ok()) return pp.status();
  return (*pp)->Measure(counts);
}

Iperf3Result MeasureIperf3(const NetHost& client, const NetHost& server, int port, int streams,
                           int seconds) {
  Iperf3Result res;
  res.streams = streams;
  res.seconds = seconds;
  res.pinned = client.cpu >= 0 || server.cpu >= 0;
  const std::string port_s = std::to_string(port);
  UniqueFd server_fd, client_fd;
  std::string server_out, json;
  pid_t server_pid =
      SpawnIn(server, {"iperf3", "-s", "-1", "-B", server.address, "-p", port_s}, &server_fd);
  auto fail = [&](const std::string& why) {
    res.error = why;
    res.bits_per_second = 0;
    if (server_pid > 0) WaitChild(server_pid, 0);  // SIGKILLed if it still runs
    return res;
  };
  if (server_pid < 0) return fail(std::string("fork: ") + std::strerror(errno));
  // Ready when its namespace has a socket listening on the port.
  for (uint64_t deadline = NowNs() + 5'000'000'000ull;
       !Listening(server_pid, static_cast<uint16_t>(port));) {
    int ws = 0;
    if (::waitpid(server_pid, &ws, WNOHANG) == server_pid) {
      UntrackChild(server_pid);
      server_pid = -1;
      return fail(
          WIFEXITED(ws) && WEXITSTATUS(ws) == 127
              ? "cannot run iperf3 (install it: apt-get install iperf3; tools/setup.sh does)"
              : "iperf3 -s ended at once (" + cluster::DescribeExit(ws) + "; port " + port_s +
                    " in use?)");
    }
    if (NowNs() >= deadline)
      return fail("iperf3 -s did not listen on port " + port_s + " within 5 s");
    ::usleep(10000);
  }
  std::vector<std::string> args = {"iperf3",
                                   "-c",
                                   server.address,
                                   "-p",
                                   port_s,
                                   "-P",
                                   std::to_string(streams),
                                   "-t",
                                   std::to_string(seconds),
                                   "-J"};
  if (!client.congestion.empty()) args.insert(args.end(), {"-C", client.congestion});
  pid_t client_pid = SpawnIn(client, args, &client_fd, /*with_stderr=*/false);
  if (client_pid < 0) return fail(std::string("fork: ") + std::strerror(errno));
  bool done = ReadUntilEof(client_fd.get(), &json, NowNs() + (seconds + 30) * 1'000'000'000ull);
  int ws = WaitChild(client_pid, done ? 5000 : 0);
  // {"end": {"sum_received": {"bits_per_second": ..}, "sum_sent": {"retransmits": ..}},
  //  "error": ".." (when it failed)}; not a JSON document: discarded, no exception.
  const nlohmann::json report = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  res.bits_per_second = NumberAt(report, "/end/sum_received/bits_per_second");
  double retr = NumberAt(report, "/end/sum_sent/retransmits");
  if (std::isfinite(retr) && retr >= 0) res.retransmits = static_cast<uint64_t>(retr);
  const nlohmann::json::json_pointer error("/error");
  if (!done) return fail("iperf3 -c did not finish within " + std::to_string(seconds + 30) + " s");
  if (report.contains(error) && report.at(error).is_string())
    return fail("iperf3: " + report.at(error).get<std::string>());
  if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0 || !std::isfinite(res.bits_per_second))
    return fail("iperf3 -c failed (" + cluster::DescribeExit(ws) + ")");
  // It ends after one test; its output (the same report) is not needed.
  ReadUntilEof(server_fd.get(), &server_out, NowNs() + 5'000'000'000ull);
  WaitChild(server_pid, 5000);
  return res;
}

TcpBulkResult MeasureTcpBulk(const NetHost& sender, const NetHost& receiver, uint64_t bytes,
                             int streams, int reps) {
  TcpBulkResult res;
  res.bytes = bytes;
  res.streams = streams;
  auto fail = [&](const Status& st) {
    res.error = st.ToString();
    res.bits_per_second.clear();
    return res;
  };
  if (bytes == 0 || streams < 1 || reps < 1)
    return fail(Status::InvalidArgument("bytes, streams and reps must be positive"));
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (Status st = Resolve(sender.address, 0, &addr, &addr_len); !st.ok()) return fail(st);
  const ArenaOptions arena{bytes, "", false, /*prefault=*/true};
  // The sender: one thread per connection, each sending the ranges asked
  // for ({offset, length}, 16 bytes) until the connection closes.
  Result<ForkedServer> src = ForkServerIn(
      sender, addr, addr_len, streams,
      [&](int l) {
        std::vector<UniqueFd> conns;
        for (int i = 0; i < streams; i++) {
          int c = AcceptOne(l);
          if (c < 0) return 1;
          conns.emplace_back(c);
        }
        // Then its buffer, written through; each connection says whether
        // it is ready (1) or could not be made (0).
        Result<Arena> a = Arena::Create(arena);
        if (a.ok()) std::memset(a->base(), 0x5a, a->size());
        const char ready = a.ok() ? 1 : 0;
        for (UniqueFd& c : conns)
          if (!WriteAll(c.get(), std::string_view(&ready, 1)).ok() || !a.ok()) return 2;
        std::vector<std::thread> threads;
        for (UniqueFd& c : conns)
          threads.emplace_back([fd = c.get(), base = a->base(), bytes] {
            for (uint64_t range[2]; ReadFull(fd, range, sizeof(range)) == 1;) {
              if (range[0] > bytes || range[1] > bytes - range[0]) break;
              const std::string_view part(reinterpret_cast<const char*>(base) + range[0], range[1]);
              if (!WriteAll(fd, part).ok()) break;
            }
            ::shutdown(fd, SHUT_RDWR);  // its reader learns at once, not at the join
          });
        for (std::thread& t : threads) t.join();
        return 0;
      },
      "TCP bulk sender");
  if (!src.ok()) return fail(src.status());
  auto stop = [&](const Status& st) { return fail(src->Kill(st)); };
  Result<Arena> dst = Arena::Create(arena);
  if (!dst.ok()) return stop(dst.status());
  std::vector<UniqueFd> conns;
  for (int i = 0; i < streams; i++) {
    Result<UniqueFd> c =
        ConnectFrom(receiver, addr, addr_len, src->port, "TCP bulk sender at " + sender.address);
    if (!c.ok()) return stop(c.status());
    conns.push_back(std::move(*c));
  }
  // A sender that stops answering fails the reference, never hangs it: its
  // buffer has `kReadyS` to be made (a prefault of many GiB takes seconds),
  // each read of a transfer kIoS.
  constexpr int kReadyS = 300, kIoS = 10;
  auto timeout = [&](int seconds) {
    const timeval tv{seconds, 0};
    for (UniqueFd& c : conns)
      if (::setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
          ::setsockopt(c.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
        return Status::FromErrno("setsockopt SO_RCVTIMEO/SO_SNDTIMEO", errno);
    return Status::OK();
  };
  if (Status st = timeout(kReadyS); !st.ok()) return stop(st);
  for (UniqueFd& c : conns) {
    char ready = 0;
    if (ReadFull(c.get(), &ready, 1) != 1 || ready != 1)
      return stop(Status::IOError(ready == 0 ? "the TCP bulk sender could not make its " +
                                                   FormatSize(bytes) + " buffer (or stopped)"
                                             : "the TCP bulk sender stopped before it was ready"));
  }
  if (Status st = timeout(kIoS); !st.ok()) return stop(st);
  constexpr uint64_t kPiece = 256 << 10;
  for (int r = 0; r < reps; r++) {
    std::atomic<bool> failed{false};
    const uint64_t t0 = NowNs();
    std::vector<std::thread> threads;
    for (int i = 0; i < streams; i++) {
      const uint64_t off = bytes * static_cast<uint64_t>(i) / static_cast<uint64_t>(streams);
      const uint64_t end = bytes * static_cast<uint64_t>(i + 1) / static_cast<uint64_t>(streams);
      threads.emplace_back([&, fd = conns[i].get(), off, end] {
        const uint64_t range[2] = {off, end - off};
        if (!WriteAll(fd, std::string_view(reinterpret_cast<const char*>(range), sizeof(range)))
                 .ok()) {
          failed = true;
          return;
        }
        for (uint64_t at = off; at < end; at += kPiece) {
          if (ReadFull(fd, dst->base() + at, std::min(kPiece, end - at)) != 1) {
            failed = true;
            return;
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
    const uint64_t ns = NowNs() - t0;
    if (failed)
      return stop(Status::IOError("a TCP bulk transfer broke off (or stalled for " +
                                  std::to_string(kIoS) + " s)"));
    res.bits_per_second.push_back(static_cast<double>(bytes) * 8e9 /
                                  static_cast<double>(std::max<uint64_t>(ns, 1)));
  }
  conns.clear();  // the sender's threads see the end and it exits
  WaitChild(src->pid, 5000);
  return res;
}

// ---------------------------------------------------------------- RDMA

namespace {

// The last lines of a tool's output, indented, for an error message.
std::string OutputTail(const std::string& who, const std::string& out) {
  std::vector<std::string> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r-") != std::string::npos) lines.push_back(line);
  std::string text = "\n  " + who + (lines.empty() ? " printed nothing" : ":");
  for (size_t i = lines.size() > 12 ? lines.size() - 12 : 0; i < lines.size(); i++)
    text += "\n    " + lines[i];
  return text;
}

// perftest's result table: the last header line (its first word "#bytes")
// and the first line of numbers after it, as (column, value) pairs. Column
// names are the header's words, a word without a unit joined to the next
// one that has one: "BW peak[MB/sec]" -> "BW_peak[MB/sec]", "99% percentile[usec]"
// -> "99%_percentile[usec]".
using Columns = std::vector<std::pair<std::string, double>>;
Result<Columns> ParsePerftestTable(const std::string& out) {
  std::vector<std::string> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  auto words = [](const std::string& l) {
    std::vector<std::string> w;
    std::istringstream ws(l);
    std::string x;
    while (ws >> x) w.push_back(x);
    return w;
  };
  size_t header = lines.size();
  for (size_t i = 0; i < lines.size(); i++) {
    std::vector<std::string> w = words(lines[i]);
    if (!w.empty() && w[0] == "#bytes") header = i;
  }
  if (header == lines.size()) return Status::IOError("no result table (no '#bytes' header)");
  std::vector<std::string> names, w = words(lines[header]);
  for (size_t i = 0; i < w.size(); i++) {
    bool unitless = w[i].find('[') == std::string::npos && w[i][0] != '#';
    if (unitless && i + 1 < w.size() && w[i + 1].find('[') != std::string::npos) {
      names.push_back(w[i] + "_" + w[i + 1]);
      i++;
    } else {
      names.push_back(w[i]);
    }
  }
  for (size_t i = header + 1; i < lines.size(); i++) {
    std::vector<std::string> v = words(lines[i]);
    if (v.empty() || !std::isdigit(static_cast<unsigned char>(v[0][0]))) continue;
    if (v.size() != names.size())
      return Status::IOError("the result table has " + std::to_string(names.size()) +
                             " columns but a row of " + std::to_string(v.size()) + " numbers");
    Columns cols;
    for (size_t k = 0; k < v.size(); k++) {
      char* end = nullptr;
      double x = std::strtod(v[k].c_str(), &end);
      if (end == v[k].c_str() || *end != '\0')
        return Status::IOError("'" + v[k] + "' in the result table is not a number");
      cols.emplace_back(names[k], x);
    }
    return cols;
  }
  return Status::IOError("the result table has a header but no numbers");
}

// The value of the column whose name starts with `prefix`; its unit (what
// is in brackets) in *unit.
Result<double> Column(const Columns& cols, const std::string& prefix, std::string* unit) {
  for (const auto& [name, v] : cols) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    if (unit != nullptr) {
      size_t b = name.find('['), e = name.rfind(']');
      *unit = b != std::string::npos && e > b ? name.substr(b + 1, e - b - 1) : "";
    }
    return v;
  }
  std::string have;
  for (const auto& c : cols) have += (have.empty() ? "" : " ") + c.first;
  return Status::IOError("no column " + prefix + "... in the result table (" + have + ")");
}

// "Device         : rxe0" in perftest's banner.
std::string PerftestDevice(const std::string& out) {
  for (size_t at = out.find("Device"); at != std::string::npos; at = out.find("Device", at + 1)) {
    size_t colon = out.find_first_not_of(' ', at + 6);
    if (colon == std::string::npos || out[colon] != ':') continue;
    std::istringstream v(out.substr(colon + 1, out.find('\n', colon) - colon - 1));
    std::string dev;
    v >> dev;
    return dev;
  }
  return "";
}

struct PerftestRun {
  std::string client_out, server_out;
  Columns table;
};

// One perftest run over rdma_cm (see MeasureIbReadLat). `timeout_s` bounds
// each client run.
Result<PerftestRun> RunPerftest(const std::string& tool, const NetHost& client,
                                const NetHost& server, int port, uint64_t size, uint64_t iterations,
                                int timeout_s) {
  const std::vector<std::string> base = {tool,
                                         "-R",
                                         "-F",
                                         "-s",
                                         std::to_string(size),
                                         "-n",
                                         std::to_string(iterations),
                                         "-p",
                                         std::to_string(port)};
  const std::string what = tool + " -R -s " + std::to_string(size) + " -n " +
                           std::to_string(iterations) + " -p " + std::to_string(port);
  PerftestRun run;
  UniqueFd server_fd;
  pid_t server_pid = SpawnIn(server, base, &server_fd);
  if (server_pid < 0) return Status::FromErrno("starting " + tool, errno);
  bool server_reaped = false;
  // Collects the server's output until it ends (SIGKILL after wait_ms).
  auto finish_server = [&](int wait_ms) {
    if (server_fd.valid()) {
      ReadUntilEof(server_fd.get(), &run.server_out,
                   NowNs() + static_cast<uint64_t>(wait_ms) * 1000000);
      server_fd.Reset(-1);
    }
    if (!server_reaped) WaitChild(server_pid, 0);
    server_reaped = true;
  };
  auto fail = [&](const std::string& why) -> Status {
    if (!server_reaped) ::kill(server_pid, SIGKILL);
    finish_server(2000);
    return Status::IOError(what + ": " + why +
                           OutputTail("the client (" + client.address + ")", run.client_out) +
                           OutputTail("the server (" + server.address + ")", run.server_out));
  };
  std::vector<std::string> client_args = base;
  client_args.push_back(server.address);
  // The server listens a moment after it starts: until it does, a client
  // fails at once (its connection is rejected); try again while it runs.
  const uint64_t connect_deadline = NowNs() + 30'000'000'000ull;
  for (int attempt = 1;; attempt++) {
    UniqueFd client_fd;
    pid_t client_pid = SpawnIn(client, client_args, &client_fd);
    if (client_pid < 0) return fail(std::string("fork: ") + std::strerror(errno));
    run.client_out.clear();
    bool done = ReadUntilEof(client_fd.get(), &run.client_out,
                             NowNs() + static_cast<uint64_t>(timeout_s) * 1'000'000'000ull);
    if (!done) ::kill(client_pid, SIGKILL);
    int ws = WaitChild(client_pid, 5000);
    if (!done) return fail("the client did not finish within " + std::to_string(timeout_s) + " s");
    if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) break;
    if (WIFEXITED(ws) && WEXITSTATUS(ws) == 127)
      return fail("cannot run " + tool + " (install it: apt-get install perftest)");
    int sws = 0;
    if (::waitpid(server_pid, &sws, WNOHANG) == server_pid) {
      UntrackChild(server_pid);
      server_reaped = true;
      return fail("the client failed (" + cluster::DescribeExit(ws) + ") and the server ended (" +
                  cluster::DescribeExit(sws) + ")");
    }
    if (NowNs() >= connect_deadline)
      return fail("the client failed " + std::to_string(attempt) +
                  " times in 30 s (last: " + cluster::DescribeExit(ws) + ")");
    ::usleep(200000);
  }
  finish_server(10000);  // it ends after the test
  Result<Columns> table = ParsePerftestTable(run.client_out);
  if (!table.ok())
    return Status::IOError(what + ": cannot read the client's output: " + table.status().message() +
                           OutputTail("the client (" + client.address + ")", run.client_out));
  run.table = std::move(*table);
  return run;
}

}  // namespace

Result<RdmaReadLatency> MeasureIbReadLat(const NetHost& client, const NetHost& server, int port,
                                         uint64_t size, uint64_t iterations) {
  // Generous: Soft-RoCE under emulation moves ~30 MB/s.
  int timeout_s = 60 + static_cast<int>(size * iterations / 5'000'000);
  Result<PerftestRun> run =
      RunPerftest("ib_read_lat", client, server, port, size, iterations, timeout_s);
  if (!run.ok()) return run.status();
  RdmaReadLatency r;
  r.size = size;
  r.iterations = iterations;
  r.device = PerftestDevice(run->client_out);
  struct {
    const char* prefix;
    double* v;
  } cols[] = {{"t_min", &r.min_us},     {"t_typical", &r.typical_us}, {"t_avg", &r.avg_us},
              {"t_stdev", &r.stdev_us}, {"99%_", &r.p99_us},          {"99.9%_", &r.p999_us},
              {"t_max", &r.max_us}};
  for (const auto& c : cols) {
    std::string unit;
    Result<double> v = Column(run->table, c.prefix, &unit);
    if (!v.ok()) return Status::IOError("ib_read_lat: " + v.status().message());
    if (unit != "usec")
      return Status::IOError(std::string("ib_read_lat: column ") + c.prefix + "... is in '" + unit +
                             "', not usec");
    *c.v = *v;
  }
  return r;
}

Result<RdmaReadBandwidth> MeasureIbReadBw(const NetHost& client, const NetHost& server, int port,
                                          uint64_t size, uint64_t iterations) {
  int timeout_s = 60 + static_cast<int>(size * iterations / 5'000'000);
  Result<PerftestRun> run =
      RunPerftest("ib_read_bw", client, server, port, size, iterations, timeout_s);
  if (!run.ok()) return run.status();
  RdmaReadBandwidth r;
  r.size = size;
  r.iterations = iterations;
  r.device = PerftestDevice(run->client_out);
  for (auto [prefix, v] : {std::pair<const char*, double*>{"BW_peak", &r.peak_bits_per_second},
                           {"BW_average", &r.avg_bits_per_second}}) {
    std::string unit;
    Result<double> x = Column(run->table, prefix, &unit);
    if (!x.ok()) return Status::IOError("ib_read_bw: " + x.status().message());
    if (unit == "MB/sec") {
      *v = *x * 1048576 * 8;  // perftest's MB is a MiB
    } else if (unit == "Gb/sec") {
      *v = *x * 1e9;
    } else {
      return Status::IOError(std::string("ib_read_bw: column ") + prefix + "... is in '" + unit +
                             "', not MB/sec or Gb/sec");
    }
  }
  Result<double> rate = Column(run->table, "MsgRate", nullptr);
  r.msg_rate_mpps = rate.ok() ? *rate : std::nan("");
  return r;
}

}  // namespace plasmon::bench
