// plasmon-bench: the latency microbenchmark of a plasmon store (`local`,
// below) and of cross-node fetches (`fetch`, in tools/bench_fetch.cc).
//
//   plasmon-bench local [--socket PATH] [--sizes 64,4K,64K,1M,8M,64M] [--iterations N]
//                       [--warmup N] [--clients N] [--json] [--redis-socket PATH]
//                       [--ops create_seal,create_and_seal,get_release,contains,delete]
//                       [--fill 40000[,1000000...]] [--connects N] [--first-touch N]
//                       [--aggregate-ms N]
//
// It connects to a store that is already running (it never starts one) and
// times, for each object size, after a warm-up:
//
//   create+write+seal  Create, write every byte (memcpy from a prepared buffer),
//    (create_seal)     Seal; the object is deleted afterwards, untimed
//   create_and_seal    CreateAndSeal (sizes up to 1 MiB); deleted afterwards, untimed
//   get+release        Get({id}, 0) of a sealed object, then the buffer's
//    (get_release)     destruction (which sends the one-way release)
//   contains           Contains(id) of a present object
//   delete             Delete({id}) of an object created and sealed just before, untimed
//
// each by two paths, one after the other: [socket], a Client connected with
// ConnectOptions::shared_index = false (every call a round trip), and
// [shm], a Client on the store's shared index (issue 12, docs/FAST_PATH.md:
// Get of a sealed object, its release and Contains read and write shared
// memory only; the other calls are the same round trips). A [shm] phase of
// get+release or contains fails unless the store counted its operations as
// answered by the index (Stats' shm_gets, shm_contains). Against a store
// started with --no-shared-index there are [socket] rows only.
//
// and, with --aggregate-ms N (500 by default, 0 for none), the aggregate
// throughput of get+release of one 4 KiB object shared by the --clients
// processes, each path: every process gets and releases it as fast as it can
// for N ms after a common start and counts its operations; ops/s = all their
// operations / the longest process's time (counted, not derived from a p50).
//
// and what a new client pays before its first byte: Connect (--connects N
// times, default 100; each also as Connect+Stats+close, what `plasmon stats`
// does), and the first Get and full read of a sealed 64 MiB object by a new
// client process (--first-touch N processes, default 5: the first touch of a
// fresh mapping of the arena, against memcpy of 64 MiB).
//
// and, with --fill N (40000 by default, 0 for none), the throughput of
// filling the store with N CreateAndSeal of 1-byte objects, kept until the
// fill ends, with structured IDs (a fixed 8-byte prefix, a counter in bytes
// 8-15, a fixed index in bytes 16-19, as job/task ID schemes make them)
// beside random IDs: after an untimed fill that lets the store's table and
// heap grow, random, structured, structured, random, so that a drift of the
// machine weighs on both kinds alike. Each fill is deleted, untimed.
//
// and measures in the same run the references the figures are judged against:
// a 64-byte ping-pong over a Unix socketpair between two processes (the IPC
// floor), memcpy into faulted memory (the bandwidth limit) and, with
// --redis-socket, Redis SET and GET over a Unix socket (hiredis). A final
// "targets" section turns them into ratios, each "met" or "not met". The
// floor is measured again after the store's figures: if the machine's round
// trip changed meanwhile (common on shared VMs), the ratios say so.
//
// Latencies are nearest-rank percentiles of per-iteration samples of a steady
// clock with nanosecond resolution, reported in microseconds. Throughput is
// derived from the median: ops/s = clients / p50 and GB/s = clients * size /
// p50 (GB = 1e9 bytes), what the p50 latency sustains with one operation in
// flight per client. GB/s is given only for operations that copy the bytes.
//
// --clients N forks N client processes, each with its own Client and its own
// object IDs; every (operation, size) starts in all of them at once (a pipe
// barrier), and each sends its raw samples back through a pipe, so the
// percentiles are over all samples of all clients.
//
// --plot DIR draws latency CDFs and throughput charts (tools/bench_plot.h).
//
// --json prints one JSON document on stdout instead of the tables (progress
// and warnings go to stderr). Times in microseconds, sizes in bytes:
//
// {
//   "tool": "plasmon-bench local", "schema": 2,
//   "machine": {"hostname": str, "kernel": str, "cpu": str, "cpus": int, "memory_bytes": int},
//   "config": {"socket": str, "clients": int, "iterations": int, "warmup": int,
//              "store_capacity": int, "store_objects": int,
//              "throughput": "ops_per_s = clients / p50; gb_per_s = clients * size / p50"},
//   "references": {
//     "ipc_floor": ROW,                                     // op "pingpong", size 64
//     "ipc_floor_after": ROW,                               // the same, after the store runs
//     "memcpy": [{"size": int, "repetitions": int, "copies": int, "gb_per_s": num}],
//     "redis": null                                         // without --redis-socket
//            | {"socket": str, "version": str, "error": str|null, "results": [ROW, ...]}
//   },
//   "results": [ROW, ...],    // each with "path": "socket" | "shm"
//   "aggregate": [{"op": "get_release", "path": "socket" | "shm", "size": int, "clients": int,
//                  "ops": int, "seconds": num, "ops_per_s": num}],
//   "connect": [ROW, ...],    // ops "connect", "connect_stats", "connect_get" (size: the store's capacity),
//                             // "first_get_read" (samples: new processes)
//   "fill": [{"objects": int, "ids": "random" | "structured", "runs": int, "seconds": num,
//             "ops_per_s": num}],                    // seconds: the mean of the runs
//   "targets": [{"name": str, "value": num|null, "value_vs_floor_after": num|null,
//                "comparison": "<=" | "<" | ">=", "bound": num, "met": bool|null, "note": str}]
//   ("met" judges "value"; ratios to the floor use the floor measured first,
//    "value_vs_floor_after" the one measured last)
// }
// ROW = {"op": str, ["path": str,] "size": int, "clients": int,
//        "iterations": int,                                           // samples, all clients
//        "p50_us": num, "p90_us": num, "p99_us": num, "p999_us": num, "max_us": num,
//        "min_us": num, "mean_us": num, "ops_per_s": num, "gb_per_s": num|null,
//        "histogram_ns": [[bound, count], ...]}   // every sample: `count` of them below
//                                                 // `bound` ns (buckets 1/16 of an octave)
// Result ops: "create_seal", "create_and_seal", "get_release", "contains", "delete";
// Redis ops: "redis_set", "redis_get". A value that could not be computed is null.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <functional>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/size.h"
#include "plasmon/client.h"
#include "tools/bench_fetch.h"
#include "tools/bench_plot.h"
#include "tools/bench_refs.h"
#include "tools/bench_stats.h"
#include "tools/cluster/process.h"

namespace {

namespace b = plasmon::bench;
using plasmon::Client;
using plasmon::ObjectID;
using plasmon::Status;

constexpr const char* kDefaultSocket = "/tmp/plasmon.sock";
constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB, kGiB = 1024 * kMiB;
constexpr uint64_t kMaxCreateAndSeal = 1 * kMiB;  // the protocol's inline limit
constexpr uint64_t kMaxRedisSize = 1 * kMiB;
constexpr uint64_t kPingPongBytes = 64;
// Large objects: at most this many bytes written per operation and size, but
// never fewer than kLargeMinIterations iterations.
constexpr uint64_t kLargeBudget = 2 * kGiB;
constexpr uint64_t kLargeMinIterations = 100;
// Redis moves every value through its socket, so it gets a smaller budget:
// 16384 iterations at 4 KiB, 1024 at 64 KiB, 100 at 1 MiB.
constexpr uint64_t kRedisBudget = 64 * kMiB;
constexpr unsigned kMaxClients = 64;

// ---- operations ----

enum class Op { kCreateSeal, kCreateAndSeal, kGetRelease, kContains, kDelete };

struct OpInfo {
  Op op;
  const char* key;    // --ops name and JSON "op"
  const char* label;  // table name
  bool copies_data;   // GB/s is meaningful
};

constexpr OpInfo kOps[] = {
    {Op::kCreateSeal, "create_seal", "create+write+seal", true},
    {Op::kCreateAndSeal, "create_and_seal", "create_and_seal", true},
    {Op::kGetRelease, "get_release", "get+release", false},
    {Op::kContains, "contains", "contains", false},
    {Op::kDelete, "delete", "delete", false},
};

const OpInfo& InfoOf(Op op) {
  for (const OpInfo& i : kOps)
    if (i.op == op) return i;
  return kOps[0];
}

struct Config {
  std::string socket;
  std::vector<uint64_t> sizes;
  uint64_t iterations = 20000;
  uint64_t warmup = 1000;
  unsigned clients = 1;
  bool json = false;
  std::string plot_dir;  // --plot
  std::string redis_socket;
  std::vector<Op> ops;
  int pin_client = -1;  // --pin: CPU of the benchmark's clients
  int pin_peer = -1;    // --pin: CPU of the ping-pong's echo process (and the store's)
  std::vector<uint64_t> fill = {40000};  // --fill: object counts (none: empty)
  uint64_t connects = 100;    // --connects: Connect (and Connect+Stats+close) samples
  uint64_t first_touch = 5;   // --first-touch: new processes that Get and read an object
  uint64_t aggregate_ms = 500;  // --aggregate-ms: the aggregate get+release run, per path
};

// The object the new processes of --first-touch read (the 64 MiB).
constexpr uint64_t kFirstTouchSize = 64 * kMiB;

// Iterations (per client) and warm-up for one size: the configured counts,
// scaled down for large objects so that a default run stays short.
b::Counts CountsFor(const Config& cfg, uint64_t size) {
  uint64_t it = std::min(cfg.iterations, std::max(kLargeMinIterations, kLargeBudget / size));
  uint64_t wu = std::min(cfg.warmup, std::max<uint64_t>(10, it / 10));
  return {it, wu};
}

b::Counts RedisCountsFor(const Config& cfg, uint64_t size) {
  uint64_t it = std::min(cfg.iterations, std::max(kLargeMinIterations, kRedisBudget / size));
  uint64_t wu = std::min(cfg.warmup, std::max<uint64_t>(10, it / 10));
  return {it, wu};
}

// Which client measures: one on the store's shared index (the fast path of
// issue 12: Get of sealed objects, their release and Contains with no round
// trip), or one connected with ConnectOptions::shared_index = false, whose
// every call is a round trip on the socket.
const char* PathName(bool shm) { return shm ? "shm" : "socket"; }
std::string PathLabel(const char* label, bool shm) {
  return std::string(label) + " [" + PathName(shm) + "]";
}

struct Phase {
  Op op;
  uint64_t size;
  b::Counts counts;
  bool shm = false;
};

// Each operation and size through the socket, then (if the store offers
// it) through the shared index.
std::vector<Phase> MakePhases(const Config& cfg, bool have_shm) {
  std::vector<Phase> phases;
  for (Op op : cfg.ops) {
    for (uint64_t size : cfg.sizes) {
      if (op == Op::kCreateAndSeal && size > kMaxCreateAndSeal) continue;
      phases.push_back({op, size, CountsFor(cfg, size), false});
      if (have_shm) phases.push_back({op, size, CountsFor(cfg, size), true});
    }
  }
  return phases;
}

std::string PhaseName(const Phase& ph) {
  return PathLabel(InfoOf(ph.op).label, ph.shm) + " " + plasmon::FormatSize(ph.size);
}

// ---- errors and progress ----

int g_report_fd = -1;     // in a forked client: the pipe to the parent
using b::ClearProgress;
using b::g_progress;
using b::Progress;

using b::ReadFull;
using b::WriteFull;
using plasmon::cluster::DescribeExit;

// Messages from a forked client to the parent: one tag byte, then
//   'R'  ready for the next phase (no payload)
//   'E'  failed: uint32 length, then the message
//   'S'  done: for each phase, uint64 count then count uint64 samples (ns)
constexpr char kMsgReady = 'R', kMsgError = 'E', kMsgSamples = 'S', kMsgGo = 'G';

// Reports a fatal error and exits non-zero. In a forked client the message
// goes to the parent, which prints it and stops the other clients.
[[noreturn]] void Die(const std::string& msg) {
  if (g_report_fd >= 0) {
    auto len = static_cast<uint32_t>(std::min<size_t>(msg.size(), 1u << 16));
    bool ok = WriteFull(g_report_fd, &kMsgError, 1) && WriteFull(g_report_fd, &len, sizeof(len)) &&
              WriteFull(g_report_fd, msg.data(), len);
    if (!ok) std::fprintf(stderr, "plasmon-bench: %s\n", msg.c_str());
    ::_exit(1);
  }
  ClearProgress();
  std::fprintf(stderr, "plasmon-bench: %s\n", msg.c_str());
  std::exit(1);
}

[[noreturn]] void Die(const std::string& context, const Status& st) {
  Die(context + ": " + st.ToString());
}

// ---- one client's measurements ----

class Runner {
 public:
  // `shm` uses the store's shared index, `socket` does not (the same client
  // if the store offers no index); `src` holds at least the largest size;
  // `salt` tells this client's IDs apart from other clients' (see NewId).
  Runner(Client* shm, Client* socket, const uint8_t* src, uint8_t salt)
      : shm_(shm), socket_(socket), src_(src), salt_(salt) {}

  // Untimed set-up before a phase: the object Get and Contains look at.
  void Prepare(const Phase& ph) {
    if (ph.op == Op::kGetRelease || ph.op == Op::kContains) {
      fixed_ = NewId();
      fixed_ids_ = {fixed_};
      CreateSealed(C(ph), fixed_, ph.size, /*fill=*/true, PhaseName(ph) + ": preparing its object");
    }
    if (ph.shm) fast_before_ = FastCounts(ph);
  }

  // The warm-up, then one sample (ns) per timed iteration.
  std::vector<uint64_t> Run(const Phase& ph) {
    std::vector<uint64_t> samples;
    samples.reserve(ph.counts.iterations);
    for (uint64_t i = 0; i < ph.counts.warmup; i++) Once(ph);
    for (uint64_t i = 0; i < ph.counts.iterations; i++) samples.push_back(Once(ph));
    return samples;
  }

  // Untimed clean-up after a phase. A phase of the shared index checks that
  // its gets and Contains were answered there (the store's counts rose by at
  // least its own operations; other clients may add theirs).
  void Finish(const Phase& ph) {
    if (ph.op == Op::kGetRelease || ph.op == Op::kContains)
      DeleteNow(C(ph), fixed_, PhaseName(ph) + ": deleting its object");
    if (ph.shm && (ph.op == Op::kGetRelease || ph.op == Op::kContains) &&
        FastCounts(ph) - fast_before_ < ph.counts.warmup + ph.counts.iterations)
      Die(PhaseName(ph) + ": the store counts fewer fast-path answers (" +
          std::to_string(FastCounts(ph) - fast_before_) + ") than the phase's operations");
  }

 private:
  Client* C(const Phase& ph) const { return ph.shm ? shm_ : socket_; }

  // The store's count of the phase's operation answered by the shared index.
  uint64_t FastCounts(const Phase& ph) {
    auto st = shm_->Stats();
    if (!st.ok()) Die(PhaseName(ph) + ": Stats", st.status());
    return ph.op == Op::kContains ? st->shm_contains : st->shm_gets;
  }

  // ObjectID::Random() draws from a per-thread generator seeded once; a
  // forked client could inherit its parent's state and repeat its IDs. The
  // salt keeps clients' IDs apart even then.
  ObjectID NewId() {
    ObjectID id = ObjectID::Random();
    id.mutable_data()[ObjectID::kSize - 1] ^= salt_;
    return id;
  }

  void CreateSealed(Client* c, const ObjectID& id, uint64_t size, bool fill, const std::string& ctx) {
    auto buf = c->Create(id, size);
    if (!buf.ok()) Die(ctx + ": Create", buf.status());
    if (fill) std::memcpy(buf->data, src_, size);
    if (Status st = c->Seal(id); !st.ok()) Die(ctx + ": Seal", st);
  }

  void DeleteNow(Client* c, const ObjectID& id, const std::string& ctx) {
    auto res = c->Delete({id});
    if (!res.ok()) Die(ctx + ": Delete", res.status());
    if (!(*res)[0].ok()) Die(ctx + ": Delete", (*res)[0]);
  }

  uint64_t Once(const Phase& ph) {
    Client* c = C(ph);
    switch (ph.op) {
      case Op::kCreateSeal: {
        ObjectID id = NewId();
        uint64_t t0 = b::NowNs();
        auto buf = c->Create(id, ph.size);
        if (!buf.ok()) Die(PhaseName(ph) + ": Create", buf.status());
        std::memcpy(buf->data, src_, ph.size);
        Status st = c->Seal(id);
        uint64_t t1 = b::NowNs();
        if (!st.ok()) Die(PhaseName(ph) + ": Seal", st);
        DeleteNow(c, id, PhaseName(ph));
        return t1 - t0;
      }
      case Op::kCreateAndSeal: {
        ObjectID id = NewId();
        std::string_view data(reinterpret_cast<const char*>(src_), ph.size);
        uint64_t t0 = b::NowNs();
        Status st = c->CreateAndSeal(id, data);
        uint64_t t1 = b::NowNs();
        if (!st.ok()) Die(PhaseName(ph) + ": CreateAndSeal", st);
        DeleteNow(c, id, PhaseName(ph));
        return t1 - t0;
      }
      case Op::kGetRelease: {
        uint64_t t0 = b::NowNs();
        {
          auto got = c->Get(fixed_ids_, 0);
          if (!got.ok()) Die(PhaseName(ph) + ": Get", got.status());
          if (!(*got)[0].valid()) Die(PhaseName(ph) + ": Get", (*got)[0].status());
        }  // the buffer goes here: the release (an unpin, or the one-way message)
        uint64_t t1 = b::NowNs();
        return t1 - t0;
      }
      case Op::kContains: {
        uint64_t t0 = b::NowNs();
        auto present = c->Contains(fixed_);
        uint64_t t1 = b::NowNs();
        if (!present.ok()) Die(PhaseName(ph) + ": Contains", present.status());
        if (!*present)
          Die(PhaseName(ph) + ": Contains says the sealed object " + fixed_.Hex() +
              " is not in the store");
        return t1 - t0;
      }
      case Op::kDelete: {
        ObjectID id = NewId();
        CreateSealed(c, id, ph.size, /*fill=*/false, PhaseName(ph) + ": preparing an object");
        std::vector<ObjectID> ids{id};
        uint64_t t0 = b::NowNs();
        auto res = c->Delete(ids);
        uint64_t t1 = b::NowNs();
        if (!res.ok()) Die(PhaseName(ph) + ": Delete", res.status());
        if (!(*res)[0].ok()) Die(PhaseName(ph) + ": Delete", (*res)[0]);
        return t1 - t0;
      }
    }
    return 0;
  }

  Client* shm_;
  Client* socket_;
  const uint8_t* src_;
  uint8_t salt_;
  ObjectID fixed_;
  std::vector<ObjectID> fixed_ids_;
  uint64_t fast_before_ = 0;
};

using PhaseSamples = std::vector<std::vector<uint64_t>>;  // one vector per phase

std::string ConnectError(const std::string& socket, const Status& st) {
  return "cannot connect to the store at " + socket + ": " + st.ToString() +
         " (is plasmon-store running? start one with: plasmon-store -s " + socket +
         " -m 1G --prefault)";
}

// ---- filling the store: structured IDs beside random ones ----

// Each fill's objects take one allocation unit (64 B) of the store.
constexpr uint64_t kFillUnit = 64;

struct FillRow {
  uint64_t objects = 0;
  bool structured = false;
  unsigned runs = 0;
  double seconds = 0;  // mean over the runs
  double ops_per_s() const { return seconds > 0 ? static_cast<double>(objects) / seconds : 0; }
};

// The ID of the i-th object of a fill: structured IDs share every byte with
// `base` but a little-endian counter in bytes 8-15.
ObjectID FillId(const ObjectID& base, bool structured, uint64_t i) {
  if (!structured) return ObjectID::Random();
  ObjectID id = base;
  for (int k = 0; k < 8; k++) id.mutable_data()[8 + k] = static_cast<uint8_t>(i >> (8 * k));
  return id;
}

// One timed fill of `n` objects (seconds), then its untimed deletion.
double FillOnce(Client* c, uint64_t n, bool structured) {
  const std::string what = std::string("fill ") + std::to_string(n) +
                           (structured ? " structured" : " random") + " IDs";
  const ObjectID base = ObjectID::Random();
  std::vector<ObjectID> ids;
  ids.reserve(n);
  for (uint64_t i = 0; i < n; i++) ids.push_back(FillId(base, structured, i));
  Progress("measuring " + what);
  uint64_t t0 = b::NowNs();
  for (uint64_t i = 0; i < n; i++) {
    if (Status st = c->CreateAndSeal(ids[i], "x"); !st.ok())
      Die(what + ": CreateAndSeal of object " + std::to_string(i), st);
  }
  uint64_t t1 = b::NowNs();
  Progress("deleting " + what);
  constexpr size_t kBatch = 4096;
  for (size_t at = 0; at < ids.size(); at += kBatch) {
    std::vector<ObjectID> batch(ids.begin() + static_cast<ptrdiff_t>(at),
                                ids.begin() + static_cast<ptrdiff_t>(std::min(ids.size(), at + kBatch)));
    auto res = c->Delete(batch);
    if (!res.ok()) Die(what + ": Delete", res.status());
  }
  return static_cast<double>(t1 - t0) * 1e-9;
}

// For each count: random, structured, structured, random.
std::vector<FillRow> MeasureFill(const Config& cfg) {
  std::vector<FillRow> rows;
  if (cfg.fill.empty()) return rows;
  Client c;
  if (Status st = c.Connect(cfg.socket); !st.ok()) Die(ConnectError(cfg.socket, st));
  for (uint64_t n : cfg.fill) {
    FillRow random{n, false, 0, 0}, structured{n, true, 0, 0};
    // An untimed fill first: the store's table grows its buckets and its heap
    // once (neither shrinks when the objects go), which would otherwise weigh
    // on whichever kind ran first.
    FillOnce(&c, n, false);
    for (bool s : {false, true, true, false}) {
      FillRow& r = s ? structured : random;
      r.seconds += FillOnce(&c, n, s);
      r.runs++;
    }
    random.seconds /= random.runs;
    structured.seconds /= structured.runs;
    rows.push_back(random);
    rows.push_back(structured);
  }
  return rows;
}

// ---- what a new client pays: Connect and the first touch ----

// Connect alone (a new Client and its Connect; the close is untimed), what a
// CLI call such as `plasmon stats` does (Connect, Stats, close), and what a
// short script does (Connect, Get of the sealed object `id` and its release,
// close: with the shared index, the Get attaches it), `n` times each.
// Samples in ns.
struct ConnectSamples {
  std::vector<uint64_t> connect, stats, get;
};
ConnectSamples MeasureConnects(const Config& cfg, uint64_t n, const ObjectID& id) {
  ConnectSamples out;
  // One pattern at a time: the connect+get+close clients' teardown (the
  // store unmaps their pin pages later) must not land in the Connect row.
  for (uint64_t i = 0; i < 3 * n; i++) {
    Progress("measuring connect (" + std::to_string(i + 1) + "/" + std::to_string(3 * n) + ")");
    uint64_t t0 = b::NowNs();
    {
      Client c;
      Status st = c.Connect(cfg.socket);
      uint64_t t1 = b::NowNs();
      if (!st.ok()) Die(ConnectError(cfg.socket, st));
      if (i < n) {
        out.connect.push_back(t1 - t0);  // the close is untimed
        continue;
      }
      if (i < 2 * n) {
        auto s = c.Stats();
        if (!s.ok()) Die("connect+stats+close: Stats", s.status());
      } else {
        auto got = c.Get({id}, 0);
        if (!got.ok() || !(*got)[0].valid())
          Die("connect+get+close: Get", got.ok() ? (*got)[0].status() : got.status());
      }
    }
    (i < 2 * n ? out.stats : out.get).push_back(b::NowNs() - t0);
  }
  return out;
}

// The first Get and full read (a memcpy into a faulted buffer, as the memcpy
// reference does) of a sealed object of `size` bytes by a new client process,
// `n` processes one after the other: what a process that maps the arena for
// the first time pays for the object's pages. Samples in ns, Get to the end of
// the read (the child's Connect is not counted: the connect rows have it).
std::vector<uint64_t> MeasureFirstTouch(const Config& cfg, Client* owner, uint64_t size,
                                        const uint8_t* src, uint64_t n) {
  const ObjectID id = ObjectID::Random();
  auto buf = owner->Create(id, size);
  if (!buf.ok()) Die("first get+read: Create", buf.status());
  std::memcpy(buf->data, src, size);
  if (Status st = owner->Seal(id); !st.ok()) Die("first get+read: Seal", st);
  std::vector<uint64_t> samples;
  for (uint64_t i = 0; i < n; i++) {
    Progress("measuring first get+read " + plasmon::FormatSize(size) + " by a new process (" +
             std::to_string(i + 1) + "/" + std::to_string(n) + ")");
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) Die(std::string("pipe: ") + std::strerror(errno));
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) Die(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::close(fds[0]);
      g_report_fd = fds[1];
      g_progress = false;
      // Its own destination, faulted in before the clock starts (the parent's
      // heap would be copy-on-write here).
      std::unique_ptr<uint8_t[]> dst(new uint8_t[size]);
      std::memset(dst.get(), 1, size);
      // Or the compiler drops the memset as a dead store, and the timed copy
      // faults the destination in (400 ms of 64 MiB on the VM).
      asm volatile("" : : "r"(dst.get()) : "memory");
      Client c;
      if (Status st = c.Connect(cfg.socket); !st.ok()) Die(ConnectError(cfg.socket, st));
      uint64_t t0 = b::NowNs();
      {
        auto got = c.Get({id}, 0);
        if (!got.ok()) Die("first get+read: Get", got.status());
        if (!(*got)[0].valid()) Die("first get+read: Get", (*got)[0].status());
        std::memcpy(dst.get(), (*got)[0].data(), size);
      }
      uint64_t ns = b::NowNs() - t0;
      if (std::memcmp(dst.get(), src, size) != 0) Die("first get+read: the bytes read differ");
      if (!WriteFull(fds[1], &kMsgSamples, 1) || !WriteFull(fds[1], &ns, sizeof(ns))) ::_exit(1);
      ::_exit(0);
    }
    ::close(fds[1]);
    char tag = 0;
    uint64_t ns = 0;
    std::string error;
    if (ReadFull(fds[0], &tag, 1) != 1) {
      error = "the process exited early";
    } else if (tag == kMsgError) {
      uint32_t len = 0;
      if (ReadFull(fds[0], &len, sizeof(len)) == 1) {
        error.assign(len, '\0');
        if (ReadFull(fds[0], error.data(), len) != 1) error = "failed";
      }
    } else if (tag != kMsgSamples || ReadFull(fds[0], &ns, sizeof(ns)) != 1) {
      error = "it sent a malformed sample";
    }
    ::close(fds[0]);
    int ws = 0;
    while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (!error.empty())
      Die("first get+read by a new process: " + error + " (" + DescribeExit(ws) + ")");
    samples.push_back(ns);
  }
  auto deleted = owner->Delete({id});
  if (!deleted.ok()) Die("first get+read: Delete", deleted.status());
  return samples;
}

// The connection measured as [shm]: the shared index, and small Creates
// placed in a lease (create+write+seal in one round trip).
plasmon::ConnectOptions ShmOptions() {
  plasmon::ConnectOptions o;
  o.leased_creates = true;
  return o;
}

// A second connection, every call through the socket (the first one's
// calls go through the shared index where they can).
std::unique_ptr<Client> ConnectSocketOnly(const Config& cfg, const std::string& who) {
  auto c = std::make_unique<Client>();
  plasmon::ConnectOptions o;
  o.shared_index = false;
  if (Status st = c->Connect(cfg.socket, o); !st.ok()) Die(who + ConnectError(cfg.socket, st));
  return c;
}

PhaseSamples RunInProcess(const Config& cfg, Client* c, const std::vector<Phase>& phases,
                          const uint8_t* src) {
  PhaseSamples out(phases.size());
  std::unique_ptr<Client> socket_only = ConnectSocketOnly(cfg, "");
  Runner r(c, socket_only.get(), src, 0);
  for (size_t i = 0; i < phases.size(); i++) {
    Progress("measuring " + PhaseName(phases[i]) + " (" + std::to_string(i + 1) + "/" +
             std::to_string(phases.size()) + ")");
    r.Prepare(phases[i]);
    out[i] = r.Run(phases[i]);
    r.Finish(phases[i]);
  }
  return out;
}

[[noreturn]] void ChildMain(const Config& cfg, unsigned index, const std::vector<Phase>& phases,
                            const uint8_t* src, int ctl_fd, int report_fd) {
  g_report_fd = report_fd;
  g_progress = false;
  const std::string who = "client " + std::to_string(index + 1) + " of " +
                          std::to_string(cfg.clients) + ": ";
  PhaseSamples samples(phases.size());
  {
    Client c;
    if (Status st = c.Connect(cfg.socket, ShmOptions()); !st.ok())
      Die(who + ConnectError(cfg.socket, st));
    std::unique_ptr<Client> socket_only = ConnectSocketOnly(cfg, who);
    Runner r(&c, socket_only.get(), src, static_cast<uint8_t>(index));
    for (size_t i = 0; i < phases.size(); i++) {
      r.Prepare(phases[i]);
      char go = 0;
      if (!WriteFull(report_fd, &kMsgReady, 1) || ReadFull(ctl_fd, &go, 1) != 1 || go != kMsgGo)
        ::_exit(1);  // the parent is gone
      samples[i] = r.Run(phases[i]);
      r.Finish(phases[i]);
    }
  }
  if (!WriteFull(report_fd, &kMsgSamples, 1)) ::_exit(1);
  for (const std::vector<uint64_t>& s : samples) {
    uint64_t n = s.size();
    if (!WriteFull(report_fd, &n, sizeof(n)) || !WriteFull(report_fd, s.data(), n * sizeof(uint64_t)))
      ::_exit(1);
  }
  ::_exit(0);
}

struct Child {
  pid_t pid = -1;
  int ctl = -1;   // parent -> child
  int data = -1;  // child -> parent
};

[[noreturn]] void StopChildren(std::vector<Child>* kids, const std::string& msg) {
  for (Child& k : *kids)
    if (k.pid > 0) ::kill(k.pid, SIGTERM);
  for (Child& k : *kids) {
    if (k.pid <= 0) continue;
    int ws;
    while (::waitpid(k.pid, &ws, 0) < 0 && errno == EINTR) {
    }
    k.pid = -1;
  }
  Die(msg);
}

// Reads the next message tag from client `i`; an error message or an early
// exit stops everything.
char ReadTag(std::vector<Child>* kids, size_t i) {
  Child& k = (*kids)[i];
  char tag = 0;
  if (ReadFull(k.data, &tag, 1) != 1) {
    int ws = 0;
    while (::waitpid(k.pid, &ws, 0) < 0 && errno == EINTR) {
    }
    k.pid = -1;
    StopChildren(kids, "client " + std::to_string(i + 1) + " exited unexpectedly (" +
                           DescribeExit(ws) + ")");
  }
  if (tag == kMsgError) {
    uint32_t len = 0;
    std::string msg = "client " + std::to_string(i + 1) + " failed";
    if (ReadFull(k.data, &len, sizeof(len)) == 1) {
      msg.assign(len, '\0');
      if (ReadFull(k.data, msg.data(), len) != 1) msg = "client " + std::to_string(i + 1) + " failed";
    }
    StopChildren(kids, msg);
  }
  return tag;
}

// Forks `n` client processes, each with a control pipe (parent -> child)
// and a data pipe (child -> parent); child(i, ctl_fd, data_fd) never returns.
std::vector<Child> ForkClients(unsigned n, const std::function<void(unsigned, int, int)>& child) {
  std::vector<Child> kids;
  std::vector<int> parent_fds;  // closed in every later child
  for (unsigned i = 0; i < n; i++) {
    int ctl[2], data[2];
    if (::pipe2(ctl, O_CLOEXEC) != 0 || ::pipe2(data, O_CLOEXEC) != 0)
      StopChildren(&kids, std::string("pipe: ") + std::strerror(errno));
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) StopChildren(&kids, std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      for (int fd : parent_fds) ::close(fd);
      ::close(ctl[1]);
      ::close(data[0]);
      child(i, ctl[0], data[1]);
      ::_exit(0);
    }
    ::close(ctl[0]);
    ::close(data[1]);
    kids.push_back({pid, ctl[1], data[0]});
    parent_fds.push_back(ctl[1]);
    parent_fds.push_back(data[0]);
  }
  return kids;
}

// Waits until every client says it is ready, then lets them all go at once.
void StartTogether(std::vector<Child>* kids, const std::string& progress) {
  for (size_t i = 0; i < kids->size(); i++)
    if (ReadTag(kids, i) != kMsgReady)
      StopChildren(kids, "client " + std::to_string(i + 1) + " sent an unexpected message");
  if (!progress.empty()) Progress(progress);
  for (size_t i = 0; i < kids->size(); i++)
    if (!WriteFull((*kids)[i].ctl, &kMsgGo, 1))
      StopChildren(kids, "client " + std::to_string(i + 1) + " is gone");
}

// Reaps the clients; any that did not exit 0 stops the benchmark.
void ReapClients(std::vector<Child>* kids, const std::string& what) {
  for (size_t i = 0; i < kids->size(); i++) {
    Child& k = (*kids)[i];
    int ws = 0;
    while (::waitpid(k.pid, &ws, 0) < 0 && errno == EINTR) {
    }
    k.pid = -1;
    ::close(k.ctl);
    ::close(k.data);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
      StopChildren(kids, what + "client " + std::to_string(i + 1) + " ended badly (" +
                             DescribeExit(ws) + ")");
  }
}

PhaseSamples RunForked(const Config& cfg, const std::vector<Phase>& phases, const uint8_t* src) {
  std::vector<Child> kids = ForkClients(cfg.clients, [&](unsigned i, int ctl, int data) {
    ChildMain(cfg, i, phases, src, ctl, data);
  });
  for (size_t p = 0; p < phases.size(); p++)
    StartTogether(&kids, "measuring " + PhaseName(phases[p]) + " with " +
                             std::to_string(cfg.clients) + " clients (" + std::to_string(p + 1) +
                             "/" + std::to_string(phases.size()) + ")");

  PhaseSamples merged(phases.size());
  for (size_t i = 0; i < kids.size(); i++) {
    if (ReadTag(&kids, i) != kMsgSamples)
      StopChildren(&kids, "client " + std::to_string(i + 1) + " sent an unexpected message");
    for (size_t p = 0; p < phases.size(); p++) {
      uint64_t n = 0;
      if (ReadFull(kids[i].data, &n, sizeof(n)) != 1 || n > phases[p].counts.iterations)
        StopChildren(&kids, "client " + std::to_string(i + 1) + " sent malformed samples");
      size_t old = merged[p].size();
      merged[p].resize(old + n);
      if (ReadFull(kids[i].data, merged[p].data() + old, n * sizeof(uint64_t)) != 1)
        StopChildren(&kids, "client " + std::to_string(i + 1) + " sent malformed samples");
    }
  }
  ReapClients(&kids, "");
  return merged;
}

// ---- aggregate throughput: --clients processes on one shared object ----

constexpr uint64_t kAggregateSize = 4 * kKiB;

struct AggregateRow {
  bool shm = false;
  uint64_t size = 0;
  unsigned clients = 0;
  uint64_t ops = 0;      // of all clients together
  double seconds = 0;    // the longest client's run
  double ops_per_s() const { return seconds > 0 ? static_cast<double>(ops) / seconds : 0; }
};

// cfg.clients processes, each with its own Client (on the shared index or
// not), get and release one sealed object they all share, as fast as they
// can for cfg.aggregate_ms after a common start (a pipe barrier), each
// counting its operations: the throughput they sustain together, counted,
// not derived from a latency.
AggregateRow MeasureAggregate(const Config& cfg, bool shm, const uint8_t* src) {
  AggregateRow row{shm, kAggregateSize, cfg.clients, 0, 0};
  const std::string what = "aggregate " + PathLabel("get+release", shm);
  const ObjectID id = ObjectID::Random();
  {
    Client owner;  // gone before the fork: the object stays, sealed
    if (Status st = owner.Connect(cfg.socket); !st.ok()) Die(ConnectError(cfg.socket, st));
    auto buf = owner.Create(id, kAggregateSize);
    if (!buf.ok()) Die(what + ": Create", buf.status());
    std::memcpy(buf->data, src, kAggregateSize);
    if (Status st = owner.Seal(id); !st.ok()) Die(what + ": Seal", st);
  }
  std::vector<Child> kids = ForkClients(cfg.clients, [&](unsigned, int ctl_fd, int data_fd) {
    g_report_fd = data_fd;
    g_progress = false;
    Client c;
    plasmon::ConnectOptions o;
    o.shared_index = shm;
    if (Status st = c.Connect(cfg.socket, o); !st.ok()) Die(ConnectError(cfg.socket, st));
    if (shm && !c.shared_index()) Die(what + ": the store offers no shared index");
    const std::vector<ObjectID> ids{id};
    char go = 0;
    if (!WriteFull(data_fd, &kMsgReady, 1) || ReadFull(ctl_fd, &go, 1) != 1 || go != kMsgGo)
      ::_exit(1);
    uint64_t n = 0;
    const uint64_t t0 = b::NowNs(), end = t0 + cfg.aggregate_ms * 1'000'000;
    uint64_t t = t0;
    while (t < end) {
      for (int k = 0; k < 64; k++) {
        auto got = c.Get(ids, 0);
        if (!got.ok()) Die(what + ": Get", got.status());
        if (!(*got)[0].valid()) Die(what + ": Get", (*got)[0].status());
      }
      n += 64;
      t = b::NowNs();
    }
    const uint64_t result[2] = {n, t - t0};
    if (!WriteFull(data_fd, &kMsgSamples, 1) || !WriteFull(data_fd, result, sizeof(result)))
      ::_exit(1);
  });
  StartTogether(&kids, "measuring " + what + " with " + std::to_string(cfg.clients) + " clients");
  for (size_t i = 0; i < kids.size(); i++) {
    uint64_t result[2] = {0, 0};
    if (ReadTag(&kids, i) != kMsgSamples || ReadFull(kids[i].data, result, sizeof(result)) != 1)
      StopChildren(&kids, "client " + std::to_string(i + 1) + " sent a malformed count");
    row.ops += result[0];
    row.seconds = std::max(row.seconds, static_cast<double>(result[1]) * 1e-9);
  }
  ReapClients(&kids, what + ": ");
  Client c;
  if (Status st = c.Connect(cfg.socket); !st.ok()) Die(ConnectError(cfg.socket, st));
  auto deleted = c.Delete({id});
  if (!deleted.ok()) Die(what + ": Delete", deleted.status());
  return row;
}

// ---- reporting ----

struct Row {
  std::string op;     // JSON name
  std::string label;  // table name
  std::string path;   // "shm" or "socket" (results); empty for references
  uint64_t size = 0;
  unsigned clients = 1;
  b::Summary s;
  double ops_per_s = 0;
  double gb_per_s = std::numeric_limits<double>::quiet_NaN();  // NaN: not meaningful
};

Row MakeRow(std::string op, std::string label, uint64_t size, unsigned clients, const b::Summary& s,
            bool copies_data) {
  Row r{std::move(op), std::move(label), "", size, clients, s};
  if (s.p50_us > 0) {
    r.ops_per_s = clients * 1e6 / s.p50_us;
    if (copies_data) r.gb_per_s = clients * static_cast<double>(size) / (s.p50_us * 1e-6) / 1e9;
  }
  return r;
}

void PrintTableHeader() {
  std::printf("  %-26s %7s %7s %8s %8s %8s %8s %8s %8s %9s %7s\n", "op", "size", "iters", "p50",
              "p90", "p99", "p99.9", "max", "mean", "ops/s", "GB/s");
}

void PrintRow(const Row& r) {
  std::string gb = "-";
  if (std::isfinite(r.gb_per_s)) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.2f", r.gb_per_s);
    gb = buf;
  }
  std::printf("  %-26s %7s %7llu %8s %8s %8s %8s %8s %8s %9s %7s\n", r.label.c_str(),
              plasmon::FormatSize(r.size).c_str(), static_cast<unsigned long long>(r.s.samples),
              b::FormatUs(r.s.p50_us).c_str(), b::FormatUs(r.s.p90_us).c_str(),
              b::FormatUs(r.s.p99_us).c_str(), b::FormatUs(r.s.p999_us).c_str(),
              b::FormatUs(r.s.max_us).c_str(), b::FormatUs(r.s.mean_us).c_str(),
              b::FormatRate(r.ops_per_s).c_str(), gb.c_str());
}

std::string RowJson(const Row& r) {
  return "{\"op\": " + b::JsonString(r.op) +
         (r.path.empty() ? std::string() : ", \"path\": " + b::JsonString(r.path)) +
         ", \"size\": " + std::to_string(r.size) +
         ", \"clients\": " + std::to_string(r.clients) +
         ", \"iterations\": " + std::to_string(r.s.samples) + ", " + b::JsonSummaryFields(r.s) +
         ", \"ops_per_s\": " + b::JsonNumber(r.ops_per_s) +
         ", \"gb_per_s\": " + b::JsonNumber(r.gb_per_s) + "}";
}

using b::Target;

const Row* FindRow(const std::vector<Row>& rows, const std::string& op, uint64_t size,
                   const std::string& path = "socket") {
  for (const Row& r : rows)
    if (r.op == op && r.size == size && r.path == path) return &r;
  return nullptr;
}

std::vector<Target> ComputeTargets(const std::vector<Row>& results, const Row& floor,
                                   const Row& floor_after,
                                   const std::vector<b::MemcpyRow>& memcpy_rows,
                                   const b::RedisReference* redis,
                                   const std::vector<FillRow>& fill,
                                   const std::vector<Row>& connect_rows,
                                   const std::vector<AggregateRow>& aggregate) {
  std::vector<Target> t;
  for (const Row& r : connect_rows) {
    Target x;
    if (r.op == "first_get_read") {
      x.name = "first get+read " + plasmon::FormatSize(r.size) + " by a new process GB/s";
      x.cmp = ">=";
      x.bound = 5.0;
      x.value = r.gb_per_s;
    } else {
      x.name = r.label + " p50 ms (" + plasmon::FormatSize(r.size) + " store)";
      x.cmp = "<=";
      x.bound = 5.0;
      x.value = r.s.p50_us / 1000;
    }
    t.push_back(x);
  }
  for (size_t i = 0; i + 1 < fill.size(); i += 2) {
    Target x;
    x.name = "fill " + std::to_string(fill[i].objects) + ": structured IDs s / random IDs s";
    x.cmp = "<=";
    x.bound = 1.10;
    if (fill[i].seconds > 0) x.value = fill[i + 1].seconds / fill[i].seconds;
    t.push_back(x);
  }
  const double floor_p50 = floor.s.p50_us;
  auto p50_of = [&](const char* op, uint64_t size) {
    const Row* r = FindRow(results, op, size);
    return r != nullptr ? r->s.p50_us : std::numeric_limits<double>::quiet_NaN();
  };
  auto vs_floor = [&](const char* op, const char* label, double bound) {
    Target x;
    x.name = PathLabel(label, false) + " 4 KiB p50 / IPC floor p50";
    x.value = p50_of(op, 4 * kKiB) / floor_p50;
    x.value_after = p50_of(op, 4 * kKiB) / floor_after.s.p50_us;
    x.cmp = "<=";
    x.bound = bound;
    if (!std::isfinite(x.value)) x.note = std::string(op) + " at 4 KiB was not measured";
    return x;
  };
  t.push_back(vs_floor("get_release", "get+release", 1.2));
  {
    Target x;
    x.name = "get+release [socket] 4 KiB p50 / Redis GET 4 KiB p50";
    x.cmp = "<";
    x.bound = 1.0;
    if (redis != nullptr) {
      for (const b::RedisRow& rr : redis->rows)
        if (rr.op == "redis_get" && rr.size == 4 * kKiB)
          x.value = p50_of("get_release", 4 * kKiB) / rr.summary.p50_us;
    }
    if (!std::isfinite(x.value))
      x.note = redis == nullptr           ? "Redis not measured (no --redis-socket)"
               : !redis->error.empty() ? "Redis not measured: " + redis->error
                                       : "Redis GET 4 KiB or get+release 4 KiB not measured";
    t.push_back(x);
  }
  t.push_back(vs_floor("create_seal", "create+write+seal", 2.1));
  t.push_back(vs_floor("create_and_seal", "create_and_seal", 1.2));
  t.push_back(vs_floor("contains", "contains", 1.2));
  t.push_back(vs_floor("delete", "delete", 1.2));
  // The shared-memory fast path (issue 12).
  auto shm_vs_floor = [&](const char* op, const char* label, bool p99, double bound) {
    Target x;
    x.name = PathLabel(label, true) + " 4 KiB " + (p99 ? "p99" : "p50") + " / IPC floor p50";
    x.cmp = "<=";
    x.bound = bound;
    if (const Row* r = FindRow(results, op, 4 * kKiB, "shm")) {
      const double v = p99 ? r->s.p99_us : r->s.p50_us;
      x.value = v / floor_p50;
      x.value_after = v / floor_after.s.p50_us;
    } else {
      x.note = std::string(op) + " [shm] at 4 KiB was not measured";
    }
    return x;
  };
  t.push_back(shm_vs_floor("get_release", "get+release", false, 0.05));
  t.push_back(shm_vs_floor("get_release", "get+release", true, 0.2));
  t.push_back(shm_vs_floor("contains", "contains", false, 0.03));
  t.push_back(shm_vs_floor("create_seal", "create+write+seal", false, 1.0));
  {
    Target x;
    x.name = "aggregate get+release [shm] 4 KiB, 2+ clients, Mops/s";
    x.cmp = ">=";
    x.bound = 2.0;
    for (const AggregateRow& a : aggregate)
      if (a.shm && a.clients >= 2) x.value = a.ops_per_s() / 1e6;
    if (!std::isfinite(x.value)) x.note = "needs --clients 2 or more and the shared index";
    t.push_back(x);
  }
  {
    Target x;
    x.name = "create+write+seal 64 MiB GB/s / memcpy 64 MiB GB/s";
    x.cmp = ">=";
    x.bound = 0.60;
    x.note = "needs a store started with --prefault";
    const Row* r = FindRow(results, "create_seal", 64 * kMiB);
    for (const b::MemcpyRow& m : memcpy_rows) {
      if (m.size == 64 * kMiB && r != nullptr && r->s.p50_us > 0) {
        // Per-operation bandwidth (size / p50), whatever the number of clients.
        double gbs = static_cast<double>(64 * kMiB) / (r->s.p50_us * 1e-6) / 1e9;
        x.value = gbs / m.gb_per_s;
      }
    }
    if (!std::isfinite(x.value)) x.note = "create+write+seal at 64 MiB was not measured; " + x.note;
    t.push_back(x);
  }
  return t;
}

// How much the floor's p50 moved during the run (+0.1: 10% slower at the end).
// A large drift makes every ratio to the floor unreliable.
constexpr double kMaxFloorDrift = 0.25;
double FloorDrift(const Row& before, const Row& after) {
  return before.s.p50_us > 0 ? after.s.p50_us / before.s.p50_us - 1 : 0;
}

void PrintTargets(const std::vector<Target>& targets, const Row& floor, const Row& floor_after,
                  unsigned clients) {
  double drift = FloorDrift(floor, floor_after);
  std::printf("\ntargets (IPC floor = 64 B ping-pong p50 = %s us before the store's figures, %s us "
              "after: %+.0f%%",
              b::FormatUs(floor.s.p50_us).c_str(), b::FormatUs(floor_after.s.p50_us).c_str(),
              100 * drift);
  if (clients > 1)
    std::printf("; store figures with %u clients at once, the floor with one", clients);
  std::printf(")\n");
  if (std::fabs(drift) > kMaxFloorDrift)
    std::printf("  warning: the machine's round trip changed by more than %.0f%% during the run: "
                "the ratios below are unreliable; run again on a quieter machine\n",
                100 * kMaxFloorDrift);
  for (const Target& t : targets) {
    std::printf("%s", b::TargetLine(t, 60).c_str());
    if (std::fabs(drift) > kMaxFloorDrift && std::isfinite(t.value_after))
      std::printf("  (%.2f against the floor measured after)", t.value_after);
    if (!t.note.empty()) std::printf("  %s", t.note.c_str());
    std::printf("\n");
  }
}

// ---- --plot ----

// Per size: a latency CDF of each operation, beside the IPC floor and
// Redis at that size; one chart of GB/s against size beside memcpy.
void WriteLocalPlots(const Config& cfg, const std::vector<Row>& results, const Row& floor,
                     const std::vector<Row>& redis_rows, const std::vector<b::MemcpyRow>& memcpy_rows) {
  std::vector<b::LatencyChart> latency;
  for (uint64_t size : cfg.sizes) {
    b::LatencyChart c;
    c.file = "local-latency-" + b::SizeForFile(size);
    c.title = "plasmon-bench local: latency of " + plasmon::FormatSize(size) + " objects (" +
              std::to_string(cfg.clients) + " client" + (cfg.clients > 1 ? "s" : "") + ")";
    for (const Row& r : results)
      if (r.size == size) c.curves.push_back({r.label, &r.s, false});
    for (const Row& r : redis_rows)
      if (r.size == size) c.curves.push_back({r.label, &r.s, true});
    c.curves.push_back({"IPC floor (" + plasmon::FormatSize(floor.size) + " ping-pong)", &floor.s, true});
    latency.push_back(std::move(c));
  }
  b::ThroughputChart t;
  t.file = "local-throughput";
  t.title = "plasmon-bench local: throughput at the median latency, against size";
  for (Op op : cfg.ops) {
    const OpInfo& info = InfoOf(op);
    if (!info.copies_data) continue;
    for (bool shm : {false, true}) {
      b::RateLine l{PathLabel(info.label, shm), {}, false};
      for (const Row& r : results)
        if (r.op == info.key && r.path == PathName(shm)) l.points.push_back({r.size, r.gb_per_s});
      if (!l.points.empty()) t.lines.push_back(std::move(l));
    }
  }
  b::RateLine m{"memcpy", {}, true};
  for (const b::MemcpyRow& r : memcpy_rows)
    if (std::find(cfg.sizes.begin(), cfg.sizes.end(), r.size) != cfg.sizes.end())
      m.points.push_back({r.size, r.gb_per_s});
  t.lines.push_back(std::move(m));
  std::vector<std::string> written;
  if (Status st = b::WritePlots(cfg.plot_dir, latency, {t}, &written); !st.ok()) Die("--plot", st);
}

// ---- command line ----

bool ParseConfig(const std::vector<std::string>& sizes, const std::vector<std::string>& ops,
                 Config* cfg, std::string* err) {
  if (sizes.empty()) {
    cfg->sizes = {64, 4 * kKiB, 64 * kKiB, 1 * kMiB, 8 * kMiB, 64 * kMiB};
  } else {
    for (const std::string& s : sizes) {
      std::optional<uint64_t> v = plasmon::ParseSize(s);
      if (!v || *v == 0 || *v > 64 * kGiB) {
        *err = "invalid size '" + s + "' in --sizes (expected e.g. 64,4K,64K,1M,8M,64M)";
        return false;
      }
      if (std::find(cfg->sizes.begin(), cfg->sizes.end(), *v) == cfg->sizes.end())
        cfg->sizes.push_back(*v);
    }
  }
  if (ops.empty()) {
    for (const OpInfo& i : kOps) cfg->ops.push_back(i.op);
  } else {
    for (const std::string& s : ops) {
      const OpInfo* found = nullptr;
      for (const OpInfo& i : kOps)
        if (s == i.key) found = &i;
      if (found == nullptr) {
        *err = "unknown operation '" + s +
               "' in --ops (expected create_seal, create_and_seal, get_release, contains, delete)";
        return false;
      }
      if (std::find(cfg->ops.begin(), cfg->ops.end(), found->op) == cfg->ops.end())
        cfg->ops.push_back(found->op);
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"plasmon-bench: benchmarks of plasmon stores, beside references measured in "
               "the same run"};
  app.require_subcommand(1);
  app.footer("Run 'plasmon-bench local --help' or 'plasmon-bench fetch --help' for their flags.");

  Config cfg;
  const char* env = std::getenv("PLASMON_SOCKET");
  cfg.socket = env != nullptr && *env != '\0' ? env : kDefaultSocket;
  std::vector<std::string> sizes_arg, ops_arg;

  auto* local = app.add_subcommand(
      "local",
      "Time the client operations against a store already running on this machine, beside "
      "references measured in the same run (Unix-socket ping-pong, memcpy, optionally Redis)");
  local->add_option("-s,--socket", cfg.socket,
                    "Socket of the running store (default: $PLASMON_SOCKET, else "
                    "/tmp/plasmon.sock). The benchmark never starts a store itself");
  local->add_option("--sizes", sizes_arg,
                    "Comma-separated object sizes in bytes, with optional K/M/G suffixes "
                    "(binary) (default: 64,4K,64K,1M,8M,64M)")
      ->delimiter(',');
  local
      ->add_option("--iterations", cfg.iterations,
                   "Timed iterations per operation and size, in each client. Large objects run "
                   "fewer: min(N, max(100, 2 GiB / size)), i.e. 2048 at 1 MiB, 256 at 8 MiB, 100 at "
                   "64 MiB; Redis runs min(N, max(100, 64 MiB / size)). Also the round trips "
                   "of the ping-pong")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  local
      ->add_option("--warmup", cfg.warmup,
                   "Untimed iterations before each measurement; large objects run "
                   "min(N, max(10, iterations / 10))")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  local
      ->add_option("--clients", cfg.clients,
                   "Client processes measuring at once, each with its own connection and object "
                   "IDs; percentiles are over all their samples, throughput is their sum")
      ->check(CLI::Range(1u, kMaxClients))
      ->capture_default_str();
  local->add_option("--plot", cfg.plot_dir,
                    "Also draw the results into DIR: latency CDFs per size (with the IPC floor "
                    "and Redis) and throughput against size (with memcpy), PNG and SVG (gnuplot)");
  local->add_flag("--json", cfg.json,
                  "Print one JSON document on stdout instead of the tables (schema at the top "
                  "of tools/plasmon_bench.cc); progress and warnings go to stderr");
  std::string pin_arg;
  local->add_option("--pin", pin_arg,
                    "CLIENT_CPU,STORE_CPU: pin the clients to one CPU and the ping-pong's echo "
                    "process to the other, and start the store on the second "
                    "(taskset -c STORE_CPU plasmon-store ...). The floor and the store's figures "
                    "then cross CPUs the same way, which makes runs comparable on a noisy machine");
  local->add_option("--redis-socket", cfg.redis_socket,
                    "Also time Redis SET and GET (sizes up to 1 MiB) over this Unix socket, "
                    "e.g. of: redis-server --port 0 --unixsocket PATH --save ''. If it cannot "
                    "connect, it says so and goes on without Redis");
  local->add_option("--ops", ops_arg,
                    "Comma-separated operations to time (default: all): create_seal "
                    "(Create + write every byte + Seal), create_and_seal (CreateAndSeal, sizes "
                    "up to 1 MiB), get_release (Get + dropping the buffer), contains, delete")
      ->delimiter(',');
  std::vector<std::string> fill_arg;
  local->add_option("--fill", fill_arg,
                    "Comma-separated object counts: for each, time filling the store with that "
                    "many CreateAndSeal of 1-byte objects with structured IDs (a prefix, a "
                    "counter in bytes 8-15, an index) beside random IDs, interleaved (default: "
                    "40000; 0: none). Each object takes 64 B of the store")
      ->delimiter(',');
  local
      ->add_option("--connects", cfg.connects,
                   "Connects to time (each also as Connect+Stats+close, what a CLI call such as "
                   "'plasmon stats' does), on the store's whole arena; 0: none")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  local
      ->add_option("--first-touch", cfg.first_touch,
                   "New client processes, one after the other, that each Get a sealed 64 MiB "
                   "object and read all of it (into faulted memory, as memcpy does): the "
                   "first-touch cost of a process that has just mapped the arena; 0: none")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  local
      ->add_option("--aggregate-ms", cfg.aggregate_ms,
                   "How long the --clients processes get and release one shared 4 KiB object "
                   "at once, each path, counting their operations (aggregate ops/s); 0: none")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  local->footer(
      "Latencies are nearest-rank percentiles in microseconds after the warm-up. Throughput is "
      "derived from the median: ops/s = clients / p50, GB/s = clients x size / p50 (GB = 1e9 "
      "bytes). At the end, 'targets' compares the p50s to the IPC floor (a 64-byte ping-pong "
      "over a Unix socketpair) and the 64 MiB create bandwidth to memcpy; start the store with "
      "--prefault for the latter. Objects are deleted as the benchmark goes: each client holds "
      "at most one object at a time, so N clients need a store of N x the largest size. The "
      "floor is measured again at the end; a drift of more than 25% is flagged.");

  b::FetchConfig fetch_cfg;
  CLI::App* fetch = b::AddFetchCommand(&app, &fetch_cfg);

  CLI11_PARSE(app, argc, argv);
  if (fetch->parsed()) return b::RunFetch(std::move(fetch_cfg));

  std::string err;
  if (!ParseConfig(sizes_arg, ops_arg, &cfg, &err)) Die(err);
  if (!fill_arg.empty()) {
    cfg.fill.clear();
    for (const std::string& f : fill_arg) {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), n);
      if (ec != std::errc() || end != f.data() + f.size() || n > (uint64_t{1} << 32))
        Die("invalid --fill count '" + f + "': expected object counts such as 40000,1000000, or 0");
      if (n > 0) cfg.fill.push_back(n);
    }
  }
  if (!pin_arg.empty()) {
    int a = -1, b2 = -1;
    char extra;
    if (std::sscanf(pin_arg.c_str(), "%d,%d%c", &a, &b2, &extra) != 2 || a < 0 || b2 < 0)
      Die("invalid --pin '" + pin_arg + "': expected CLIENT_CPU,STORE_CPU, e.g. 0,1");
    cfg.pin_client = a;
    cfg.pin_peer = b2;
    if (Status st = b::PinToCpu(a); !st.ok()) Die("--pin", st);
  }
  ::signal(SIGPIPE, SIG_IGN);
  // Keep freed memory in the process: by default glibc hands large blocks
  // back to the kernel (trim, mmap threshold), and the per-request buffers of
  // hiredis and of the client library would then page-fault on every call.
  // That measures the allocator, not the systems (64 KiB Redis SETs took 13x
  // longer on a VM).
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
  g_progress = ::isatty(STDERR_FILENO) == 1;

  uint64_t max_size = *std::max_element(cfg.sizes.begin(), cfg.sizes.end());

  // Connect first, so that a missing store fails fast with one clear line.
  auto probe = std::make_unique<Client>();
  if (Status st = probe->Connect(cfg.socket, ShmOptions()); !st.ok())
    Die(ConnectError(cfg.socket, st));
  auto stats = probe->Stats();
  if (!stats.ok()) Die("Stats", stats.status());
  // A store started with --no-shared-index: socket rows only.
  const bool have_shm = probe->shared_index();
  std::vector<Phase> phases = MakePhases(cfg, have_shm);
  if (static_cast<double>(max_size) * cfg.clients > static_cast<double>(stats->capacity))
    Die(std::to_string(cfg.clients) + " client(s) with objects of " + plasmon::FormatSize(max_size) +
        " need more than the store's capacity of " + plasmon::FormatSize(stats->capacity) +
        ": use smaller --sizes, fewer --clients, or a larger store (-m)");
  for (uint64_t n : cfg.fill)
    if (static_cast<double>(n) * kFillUnit > static_cast<double>(stats->capacity))
      Die("--fill " + std::to_string(n) + " needs " + plasmon::FormatSize(n * kFillUnit) +
          " of the store, more than its capacity of " + plasmon::FormatSize(stats->capacity) +
          ": use a smaller count or a larger store (-m)");
  if (stats->object_count > 0)
    std::fprintf(stderr,
                 "plasmon-bench: warning: the store already holds %llu objects (%s); they may "
                 "be evicted and they skew the figures\n",
                 static_cast<unsigned long long>(stats->object_count),
                 plasmon::FormatSize(stats->used).c_str());

  // The bytes every create writes, faulted in before any timing.
  const uint64_t src_size =
      std::max({max_size, cfg.first_touch > 0 ? kFirstTouchSize : 0,
                cfg.aggregate_ms > 0 ? kAggregateSize : 0});
  std::unique_ptr<uint8_t[]> src(new uint8_t[src_size]);
  for (uint64_t i = 0; i < src_size; i++) src[i] = static_cast<uint8_t>(i * 131 + 7);

  b::Machine machine = b::DescribeMachine();
  if (!cfg.json) {
    std::printf("plasmon-bench local: store %s (%s capacity, %llu objects), %u client%s\n",
                cfg.socket.c_str(), plasmon::FormatSize(stats->capacity).c_str(),
                static_cast<unsigned long long>(stats->object_count), cfg.clients,
                cfg.clients == 1 ? "" : "s at once");
    std::printf("machine: %s, %s, %s, %ld CPUs, %s RAM\n", machine.hostname.c_str(),
                machine.kernel.c_str(), machine.cpu.c_str(), machine.cpus,
                plasmon::FormatSize(machine.memory).c_str());
    std::printf("%s\n", b::MemoryLine(machine).c_str());
    std::printf("latency in us: nearest-rank percentiles after warm-up; throughput from the "
                "median: ops/s = clients / p50, GB/s = clients x size / p50 (GB = 1e9 B)\n");
    if (cfg.pin_client >= 0)
      std::printf("pinned: clients on CPU %d, ping-pong echo on CPU %d (the store should be too)\n",
                  cfg.pin_client, cfg.pin_peer);
    std::printf("paths: [socket] every call a round trip (ConnectOptions::shared_index = false)%s\n",
                have_shm ? "; [shm] the store's shared index (gets, releases and Contains "
                           "without a round trip; small creates leased, sealed in one)"
                         : "; the store offers no shared index (--no-shared-index): no [shm] rows");
    std::fflush(stdout);
  }

  // ---- references ----
  Progress("measuring the references: ping-pong");
  auto pingpong = b::MeasurePingPong(kPingPongBytes, {cfg.iterations, cfg.warmup}, cfg.pin_peer);
  if (!pingpong.ok()) Die("the ping-pong reference", pingpong.status());
  Row floor = MakeRow("pingpong", "ping-pong (floor)", kPingPongBytes, 1, *pingpong, false);

  Progress("measuring the references: memcpy");
  std::vector<uint64_t> memcpy_sizes = cfg.sizes;
  const bool first_touch =
      cfg.first_touch > 0 && stats->capacity >= kFirstTouchSize + kFirstTouchSize / 8;
  if (first_touch &&
      std::find(memcpy_sizes.begin(), memcpy_sizes.end(), kFirstTouchSize) == memcpy_sizes.end())
    memcpy_sizes.push_back(kFirstTouchSize);
  std::vector<b::MemcpyRow> memcpy_rows = b::MeasureMemcpy(memcpy_sizes);

  std::optional<b::RedisReference> redis;
  std::vector<Row> redis_rows;
  if (!cfg.redis_socket.empty()) {
    Progress("measuring the references: Redis");
    std::vector<uint64_t> redis_sizes;
    for (uint64_t s : cfg.sizes)
      if (s <= kMaxRedisSize) redis_sizes.push_back(s);
    redis = b::MeasureRedis(cfg.redis_socket, redis_sizes,
                            [&](uint64_t size) { return RedisCountsFor(cfg, size); }, src.get());
    for (const b::RedisRow& rr : redis->rows)
      redis_rows.push_back(MakeRow(rr.op, rr.op == "redis_set" ? "redis SET" : "redis GET", rr.size,
                                   1, rr.summary, true));
    if (!redis->error.empty() && cfg.json) {
      ClearProgress();
      std::fprintf(stderr, "plasmon-bench: %s; going on without Redis\n", redis->error.c_str());
    }
  }
  ClearProgress();

  if (!cfg.json) {
    std::printf("\nreferences (measured in this run)\n");
    std::printf("  the IPC floor: %llu B ping-pong over a Unix socketpair between two processes\n",
                static_cast<unsigned long long>(kPingPongBytes));
    PrintTableHeader();
    PrintRow(floor);
    if (redis) {
      std::printf("  Redis%s%s over %s (hiredis, one connection)\n", redis->version.empty() ? "" : " ",
                  redis->version.c_str(), redis->socket.c_str());
      if (!redis_rows.empty()) PrintTableHeader();
      for (const Row& r : redis_rows) PrintRow(r);
      if (!redis->error.empty())
        std::printf("  Redis: %s; going on without it\n", redis->error.c_str());
    }
    std::printf("  the bandwidth limit: memcpy into already-faulted memory (median of repetitions)\n");
    std::printf("  %-26s %7s %7s %8s %7s\n", "op", "size", "reps", "copies", "GB/s");
    for (const b::MemcpyRow& m : memcpy_rows)
      std::printf("  %-26s %7s %7llu %8llu %7.2f\n", "memcpy", plasmon::FormatSize(m.size).c_str(),
                  static_cast<unsigned long long>(m.repetitions),
                  static_cast<unsigned long long>(m.copies), m.gb_per_s);
    std::fflush(stdout);
  }

  // ---- what a new client pays ----
  std::vector<Row> connect_rows;
  if (cfg.connects > 0) {
    const ObjectID id = ObjectID::Random();
    if (Status st = probe->CreateAndSeal(id, std::string(4096, 'c')); !st.ok())
      Die("connect+get+close: CreateAndSeal", st);
    ConnectSamples s = MeasureConnects(cfg, cfg.connects, id);
    (void)probe->Delete({id});
    connect_rows.push_back(
        MakeRow("connect", "connect", stats->capacity, 1, b::Summarize(&s.connect), false));
    connect_rows.push_back(MakeRow("connect_stats", "connect+stats+close", stats->capacity, 1,
                                   b::Summarize(&s.stats), false));
    connect_rows.push_back(MakeRow("connect_get", "connect+get+close", stats->capacity, 1,
                                   b::Summarize(&s.get), false));
  }
  if (first_touch) {
    std::vector<uint64_t> ft =
        MeasureFirstTouch(cfg, probe.get(), kFirstTouchSize, src.get(), cfg.first_touch);
    connect_rows.push_back(MakeRow("first_get_read", "first get+read", kFirstTouchSize, 1,
                                   b::Summarize(&ft), true));
  } else if (cfg.first_touch > 0) {
    std::fprintf(stderr, "plasmon-bench: the store is too small for the first-touch figure "
                 "(it needs a %s object): skipped\n", plasmon::FormatSize(kFirstTouchSize).c_str());
  }
  ClearProgress();
  if (!cfg.json && !connect_rows.empty()) {
    std::printf("\nwhat a new client pays (size: the store's capacity for connect; \"first "
                "get+read\": a new process's first Get and read of every byte, each sample a "
                "new process)\n");
    PrintTableHeader();
    for (const Row& r : connect_rows) PrintRow(r);
    std::fflush(stdout);
  }

  // ---- the store ----
  PhaseSamples samples;
  if (cfg.clients == 1) {
    samples = RunInProcess(cfg, probe.get(), phases, src.get());
    probe.reset();
  } else {
    probe.reset();  // before the fork: the clients connect on their own
    samples = RunForked(cfg, phases, src.get());
  }
  std::vector<AggregateRow> aggregate;
  if (cfg.aggregate_ms > 0) {
    aggregate.push_back(MeasureAggregate(cfg, false, src.get()));
    if (have_shm) aggregate.push_back(MeasureAggregate(cfg, true, src.get()));
  }
  std::vector<FillRow> fill = MeasureFill(cfg);
  Progress("measuring the IPC floor again");
  auto pingpong_after =
      b::MeasurePingPong(kPingPongBytes, {cfg.iterations, cfg.warmup}, cfg.pin_peer);
  if (!pingpong_after.ok()) Die("the ping-pong reference", pingpong_after.status());
  Row floor_after =
      MakeRow("pingpong", "ping-pong (after)", kPingPongBytes, 1, *pingpong_after, false);
  ClearProgress();
  if (cfg.json && std::fabs(FloorDrift(floor, floor_after)) > kMaxFloorDrift)
    std::fprintf(stderr,
                 "plasmon-bench: warning: the IPC floor moved from %s us to %s us during the "
                 "run: the target ratios are unreliable\n",
                 b::FormatUs(floor.s.p50_us).c_str(), b::FormatUs(floor_after.s.p50_us).c_str());

  std::vector<Row> results;
  for (size_t i = 0; i < phases.size(); i++) {
    const OpInfo& info = InfoOf(phases[i].op);
    results.push_back(MakeRow(info.key, PathLabel(info.label, phases[i].shm), phases[i].size,
                              cfg.clients, b::Summarize(&samples[i]), info.copies_data));
    results.back().path = PathName(phases[i].shm);
  }
  std::vector<Target> targets =
      ComputeTargets(results, floor, floor_after, memcpy_rows, redis ? &*redis : nullptr, fill,
                     connect_rows, aggregate);
  if (!cfg.plot_dir.empty()) WriteLocalPlots(cfg, results, floor, redis_rows, memcpy_rows);

  if (!cfg.json) {
    std::printf("\nresults%s\n",
                cfg.clients > 1 ? (" (" + std::to_string(cfg.clients) +
                                   " clients at once; iters = samples of all clients)")
                                      .c_str()
                                : "");
    PrintTableHeader();
    for (const Row& r : results) PrintRow(r);
    bool skipped_cas = false;
    for (Op op : cfg.ops)
      if (op == Op::kCreateAndSeal && max_size > kMaxCreateAndSeal) skipped_cas = true;
    if (skipped_cas) std::printf("  (create_and_seal takes objects up to 1 MiB only)\n");
    if (!aggregate.empty()) {
      std::printf("\naggregate: get+release of one shared %s object by %u client process%s at "
                  "once, counted for %llu ms\n",
                  plasmon::FormatSize(kAggregateSize).c_str(), cfg.clients,
                  cfg.clients == 1 ? "" : "es", static_cast<unsigned long long>(cfg.aggregate_ms));
      std::printf("  %-26s %7s %12s %10s %12s\n", "op", "clients", "ops", "seconds", "ops/s");
      for (const AggregateRow& a : aggregate)
        std::printf("  %-26s %7u %12llu %10.3f %12s\n", PathLabel("get+release", a.shm).c_str(),
                    a.clients, static_cast<unsigned long long>(a.ops), a.seconds,
                    b::FormatRate(a.ops_per_s()).c_str());
    }
    if (!fill.empty()) {
      std::printf("\nfill: CreateAndSeal of 1-byte objects kept until the fill ends (mean of %u "
                  "runs each, interleaved)\n",
                  fill[0].runs);
      std::printf("  %-12s %10s %10s %10s\n", "ids", "objects", "seconds", "ops/s");
      for (const FillRow& f : fill)
        std::printf("  %-12s %10llu %10.3f %10s\n", f.structured ? "structured" : "random",
                    static_cast<unsigned long long>(f.objects), f.seconds,
                    b::FormatRate(f.ops_per_s()).c_str());
    }
    PrintTargets(targets, floor, floor_after, cfg.clients);
    return 0;
  }

  // ---- JSON ----
  std::string j = "{\n  \"tool\": \"plasmon-bench local\", \"schema\": 2,\n";
  j += "  \"machine\": {\"hostname\": " + b::JsonString(machine.hostname) +
       ", \"kernel\": " + b::JsonString(machine.kernel) + ", \"cpu\": " + b::JsonString(machine.cpu) +
       ", \"cpus\": " + std::to_string(machine.cpus) +
       ", \"memory_bytes\": " + std::to_string(machine.memory) + "},\n";
  j += "  \"config\": {\"socket\": " + b::JsonString(cfg.socket) +
       ", \"clients\": " + std::to_string(cfg.clients) +
       ", \"iterations\": " + std::to_string(cfg.iterations) +
       ", \"warmup\": " + std::to_string(cfg.warmup) +
       ", \"store_capacity\": " + std::to_string(stats->capacity) +
       ", \"store_objects\": " + std::to_string(stats->object_count) +
       ", \"throughput\": \"ops_per_s = clients / p50; gb_per_s = clients * size / p50\"},\n";
  j += "  \"references\": {\n    \"ipc_floor\": " + RowJson(floor) +
       ",\n    \"ipc_floor_after\": " + RowJson(floor_after) + ",\n    \"memcpy\": [";
  for (size_t i = 0; i < memcpy_rows.size(); i++) {
    const b::MemcpyRow& m = memcpy_rows[i];
    j += std::string(i > 0 ? "," : "") + "\n      {\"size\": " + std::to_string(m.size) +
         ", \"repetitions\": " + std::to_string(m.repetitions) +
         ", \"copies\": " + std::to_string(m.copies) + ", \"gb_per_s\": " + b::JsonNumber(m.gb_per_s) +
         "}";
  }
  j += "\n    ],\n    \"redis\": ";
  if (!redis) {
    j += "null";
  } else {
    j += "{\"socket\": " + b::JsonString(redis->socket) +
         ", \"version\": " + b::JsonString(redis->version) +
         ", \"error\": " + (redis->error.empty() ? "null" : b::JsonString(redis->error)) +
         ", \"results\": [";
    for (size_t i = 0; i < redis_rows.size(); i++)
      j += std::string(i > 0 ? "," : "") + "\n      " + RowJson(redis_rows[i]);
    j += "\n    ]}";
  }
  j += "\n  },\n  \"results\": [";
  for (size_t i = 0; i < results.size(); i++)
    j += std::string(i > 0 ? "," : "") + "\n    " + RowJson(results[i]);
  j += "\n  ],\n  \"connect\": [";
  for (size_t i = 0; i < connect_rows.size(); i++)
    j += std::string(i > 0 ? "," : "") + "\n    " + RowJson(connect_rows[i]);
  j += "\n  ],\n  \"aggregate\": [";
  for (size_t i = 0; i < aggregate.size(); i++)
    j += std::string(i > 0 ? "," : "") + "\n    {\"op\": \"get_release\", \"path\": " +
         b::JsonString(PathName(aggregate[i].shm)) + ", \"size\": " +
         std::to_string(aggregate[i].size) + ", \"clients\": " +
         std::to_string(aggregate[i].clients) + ", \"ops\": " + std::to_string(aggregate[i].ops) +
         ", \"seconds\": " + b::JsonNumber(aggregate[i].seconds) +
         ", \"ops_per_s\": " + b::JsonNumber(aggregate[i].ops_per_s()) + "}";
  j += "\n  ],\n  \"fill\": [";
  for (size_t i = 0; i < fill.size(); i++)
    j += std::string(i > 0 ? "," : "") + "\n    {\"objects\": " + std::to_string(fill[i].objects) +
         ", \"ids\": " + (fill[i].structured ? "\"structured\"" : "\"random\"") +
         ", \"runs\": " + std::to_string(fill[i].runs) +
         ", \"seconds\": " + b::JsonNumber(fill[i].seconds) +
         ", \"ops_per_s\": " + b::JsonNumber(fill[i].ops_per_s()) + "}";
  j += "\n  ],\n  \"targets\": " + b::TargetsJson(targets, true) + "\n}\n";
  std::fputs(j.c_str(), stdout);
  return 0;
}
