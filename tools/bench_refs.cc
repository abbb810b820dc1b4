#include "tools/bench_refs.h"

#include "core/unix_socket.h"

#include <hiredis/hiredis.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace plasmon::bench {

namespace {

// Sends all of [p, p+n). False on error or a closed peer.
std::string_view AsView(const std::vector<uint8_t>& b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Receives exactly n bytes. 1: done; 0: the peer closed first; -1: error.
int RecvAll(int fd, uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return 0;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return 1;
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
      int r = RecvAll(sv[1], buf.data(), buf.size());
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
    bool ok = WriteAll(fd, AsView(buf)).ok() && RecvAll(fd, buf.data(), buf.size()) == 1;
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

  constexpr uint64_t kBatchBytes = 1u << 20;   // small sizes: copies per timed repetition
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
    return "GET returned " + std::to_string(r->len) + " bytes, expected " + std::to_string(want_len);
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

}  // namespace plasmon::bench
