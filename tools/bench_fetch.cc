// plasmon-bench fetch: the latency and throughput of Client::Fetch between
// two stores on two hosts, here two network namespaces joined by veth pairs
// to a bridge (tools/plasmon-cluster), beside references measured in the same
// run over the same link.
//
//   plasmon-bench fetch [--sizes 64,4K,64K,1M,16M,256M,1G] [--iterations N]
//                       [--throughput-size 1G] [--throughput-reps N] [--pin auto|none|A,B]
//                       [--transport tcp|verbs|auto] [--json]
//                       [--cluster-dir DIR | --addresses A,B | --name NAME --subnet BYTE]
//                       [--memory SIZE --cluster-script PATH --keep-cluster --store-arg F]
//
// Without --cluster-dir it starts its own cluster: `tools/plasmon-cluster up
// --nodes 2 --prefault --memory M` (M: twice the largest object plus slack)
// in a fresh directory under /tmp, and tears it down at the end, also after
// an error or SIGINT/SIGTERM/SIGHUP (after a failure its logs stay in the
// directory). Node 1 holds the objects, node 2 fetches them. The benchmark
// itself runs in the host's namespace and reaches both stores and Redis over
// their Unix sockets; only store-to-store transfers (and the network
// references) cross the link. With --addresses A,B the cluster runs in the
// host's namespace instead (`--mode hosts --addresses A,B`: node 1 on A, node
// 2 on B), as on a machine whose RDMA devices own A and B (rxe only works in
// the initial namespace); the network references then run between A and B.
// --transport X starts the stores with `--transport X`.
//
// For each size, objects are created on node 1 (and the benchmark waits until
// the directory lists them), then a client of node 2 times Fetch({id}):
//   fetch (lookup)  a new object every time: node 2 asks the directory
//                   (Redis) where it is, pulls it, checks its digest, seals it
//   fetch (cached)  an object node 2 fetched and deleted just before: its
//                   location is in node 2's location cache (entries live
//                   10 s; the object is replaced every 5 s), so no lookup;
//                   the holder also knows its digest already
// Objects are deleted on both nodes as the benchmark goes. Throughput: a new
// object of --throughput-size (1 GiB) fetched --throughput-reps times, median.
//
// References, each measured in this run:
//   TCP ping-pong  64-byte round trips over one TCP connection (TCP_NODELAY)
//                  from node 2's namespace to an echo process in node 1's,
//                  over the same veth pairs and bridge; before the fetches,
//                  in blocks between the 4 KiB fetches, and after them
//   IPC ping-pong  64-byte round trips over a Unix socketpair (the local IPC)
//   Redis GET      of 4 KiB on the cluster's Redis, over its Unix socket
//   iperf3         node 1 -> node 2 (the direction objects travel), 1 and 2
//                  streams, --iperf-seconds each; end.sum_received; and,
//                  when the latencies run pinned, first one stream pinned
//                  as they are (what one CPU per node gets, beside the
//                  1 MiB fetches)
//   TCP into memory  node 1 -> node 2, --throughput-size bytes from one
//                  prefaulted arena into another over as many connections
//                  as the stores pull such an object over, --throughput-reps
//                  times, after the throughput fetches: every byte once,
//                  from memory into memory, as a fetch moves them (iperf3
//                  moves one small buffer in the cache)
// and the targets (issue 11): 1 GiB fetch >= 95% of the better iperf3
// figure, 1 MiB >= 50% of it; the first throughput fetch >= 80% of the
// median of the later ones; 4 KiB fetch p50 <= 3x the TCP ping-pong p50 with
// a lookup, <= 2x with the location cached (against the ping-pong blocks
// between those fetches).
//
// With --transport verbs, also (perftest, over rdma_cm; server on node 1,
// the client on node 2 reads from it):
//   ib_read_lat -R  RDMA READ round trips at each measured size up to 1 MiB
//                   (64 B and 4 KiB if none is), pinned as the fetches are;
//                   its typical (median), 99% and 99.9% figures
//   ib_read_bw -R   RDMA READ bandwidth of 1 MiB messages (at most the
//                   throughput size), as many bytes as a throughput fetch
// and the targets: throughput fetch >= 85% of ib_read_bw's average; 4 KiB
// fetch p50 <= 4x ib_read_lat's typical with a lookup, <= 2.5x cached. It
// checks in node 2's Stats that fetches went by RDMA (fetched_verbs > 0) and
// fails if none did, or if perftest cannot run. Under PLASMON_RXE_VM (Soft-
// RoCE in tools/rxe-vm's emulated VM) every RDMA figure is marked emulated:
// it shows correctness, not speed.
//
// CPUs: a VM that halts idle vCPUs wakes a thread on another vCPU an order of
// magnitude slower than one on its own (a 64-byte TCP round trip: ~60 us
// across vCPUs, ~6 us on one), and the scheduler moves threads between the
// two at will, so unpinned latencies jump between modes from one second to
// the next. --pin (default on a machine with 2 CPUs or more) runs the latency
// part as on two one-CPU hosts: node 1's store, Redis and the ping-pong's
// echo on one CPU, node 2's store and this benchmark (its client) on
// another, so every message between nodes crosses CPUs and nothing else
// must. The throughput part (iperf3 and the fetches) runs unpinned: both may
// use every CPU.
//
// --json prints one JSON document on stdout instead of the tables (progress
// and the cluster's output go to stderr). Times in microseconds, sizes in
// bytes, rates in bits or bytes (GB = 1e9 B) per second:
// {
//   "tool": "plasmon-bench fetch", "schema": 1,
//   "machine": {"hostname": str, "kernel": str, "cpu": str, "cpus": int, "memory_bytes": int},
//   "config": {"cluster_dir": str, "started_cluster": bool,
//              "mode": "netns"|"loopback"|"hosts", "transport": str | null,
//              "emulated_rdma": bool,         // PLASMON_RXE_VM: Soft-RoCE under emulation
//              "holder": NODE, "fetcher": NODE, "pin": [int, int] | null,
//              "tcp_congestion": str ("": the host's default),
//              "store_capacity": int, "iterations": int, "warmup": int, "timeout_ms": int},
//   NODE = {"node_id": str, "socket": str, "netns": str, "address": str}
//   "references": {
//     "tcp_pingpong": ROW, "tcp_pingpong_after": ROW,
//     "tcp_pingpong_interleaved": {"fetch_lookup": ROW, "fetch_cached": ROW},
//     "ipc_pingpong": ROW, "redis_get": ROW | null, "redis_error": str | null,
//     "iperf3": [{"streams": int, "seconds": int, "bits_per_second": num,
//                 "retransmits": int, "pinned": bool, "error": str | null}, ...],
//                (pinned: one stream, one CPU per node as the latencies ran;
//                 first, and only when they ran pinned)
//     "tcp_bulk": null | {"bytes": int, "streams": int, "bits_per_second": [num, ...],
//                         "error": str | null},  // TCP into memory, each transfer's
//     "rdma": null | {"emulated": bool, "client": str, "server": str, "port": int,
//       "ib_read_lat": [{"size": int, "iterations": int, "device": str, "min_us": num,
//                        "typical_us": num, "avg_us": num, "stdev_us": num, "p99_us": num,
//                        "p999_us": num, "max_us": num}, ...],
//       "ib_read_bw": {"size": int, "iterations": int, "device": str,
//                      "avg_bits_per_second": num, "peak_bits_per_second": num,
//                      "msg_rate_mpps": num} | null}     // null: --transport is not verbs
//   },
//   "results": [ROW, ...],                  // ops "fetch_lookup", "fetch_cached"
//   "tcp_pingpong_spread": num,  // largest TCP ping-pong p50 / smallest; > 1.5: unreliable
//   "fetch_counters": {"node_id": str, "fetched": int, "fetched_bytes": int,
//                      "fetched_verbs": int, "pulls_failed": int},  // node 2, over the run
//   "throughput": {"size": int, "repetitions": int, "gbit_per_s": [num, ...],
//                  "transfer_ms": [num|null, ...],  // each one's transfer stage
//                  "median_gbit_per_s": num, "median_gb_per_s": num} | null,
//   "targets": [{"name": str, "value": num|null, "comparison": "<=" | ">=",
//                "bound": num, "met": bool|null, "note": str}]
// }
// ROW = {"op": str, "size": int, "iterations": int, "p50_us": num, "p90_us": num,
//        "p99_us": num, "p999_us": num, "max_us": num, "min_us": num, "mean_us": num,
//        "histogram_ns": [[int, int], ...],   // the whole distribution (tools/bench_stats.h)
//        "gb_per_s": num, "gbit_per_s": num,     // rates: size / p50
//        "stages_p50_us": {"client_store": num, "lookup": num, "queue": num, "dispatch": num,
//                          "transfer": num, "digest": num, "back": num, "seal": num,
//                          "in_store": num, "total": num}}   // fetches only: FetchReport
#include "tools/bench_fetch.h"

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
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
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/arena.h"
#include "core/size.h"
#include "plasmon/client.h"
#include "tools/bench_plot.h"
#include "tools/bench_refs.h"
#include "tools/bench_stats.h"
#include "tools/cluster/process.h"
#include "tools/cluster/services.h"
#include "transport/tcp_transport.h"

namespace plasmon::bench {

namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB, kGiB = 1024 * kMiB;
constexpr uint64_t kPingPongBytes = 64;
constexpr uint64_t kTargetSmall = 4 * kKiB;  // the latency targets' object size
// Large objects: at most this many bytes per mode and size, but never fewer
// than kLargeMinIterations iterations.
constexpr uint64_t kLatencyBudget = 2 * kGiB;
constexpr uint64_t kLargeMinIterations = 5;
constexpr uint64_t kPatternBytes = 4 * kMiB;  // objects are filled from this
// The location cache keeps an entry 10 s (store/fetcher.h); the cached mode
// replaces its object well before.
constexpr uint64_t kRefreshNs = 5'000'000'000ull;
// ib_read_lat runs at the measured sizes up to this, at most kPerftestLatBytes
// per size; ib_read_bw moves messages of at most kPerftestBwMessage.
constexpr uint64_t kPerftestLatMax = 1 * kMiB;
constexpr uint64_t kPerftestLatBytes = 256 * kMiB;
constexpr uint64_t kPerftestBwMessage = 1 * kMiB;

// ---- progress and errors ----


// Prints a line on stderr (clearing the progress line first).
void Note(const std::string& what) {
  ClearProgress();
  std::fprintf(stderr, "plasmon-bench: %s\n", what.c_str());
}

// Exits non-zero; the atexit handler tears the cluster down.
[[noreturn]] void Die(const std::string& msg) {
  Note(msg);
  std::exit(1);
}

[[noreturn]] void Die(const std::string& context, const Status& st) {
  Die(context + ": " + st.ToString());
}

// ---- the cluster's teardown, from anywhere (async-signal-safe) ----

std::atomic<bool> g_down_armed{false};
std::vector<std::string> g_down_args;  // set before arming, never changed after
char* g_down_argv[16];
std::string g_cluster_dir_note;  // printed after a teardown at exit

void TearDownNow() {
  if (!g_down_armed.exchange(false)) return;
  KillTrackedChildren();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(STDERR_FILENO, STDOUT_FILENO);  // keep stdout (--json) clean
    ::execv(g_down_argv[0], g_down_argv);
    ::_exit(127);
  }
  if (pid > 0) {
    int ws;
    while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
  }
}

void OnSignal(int sig) {
  bool armed = g_down_armed.load();
  TearDownNow();
  if (armed) {
    // Written before arming, never changed after: safe to read here.
    std::string_view note = g_cluster_dir_note;
    (void)!::write(STDERR_FILENO, "\nplasmon-bench: interrupted; ", 29);
    (void)!::write(STDERR_FILENO, note.data(), note.size());
    (void)!::write(STDERR_FILENO, "\n", 1);
  }
  ::_exit(128 + sig);
}

void TearDownAtExit() {
  if (!g_down_armed.load()) return;
  Note("tearing down the cluster");
  TearDownNow();
  if (!g_cluster_dir_note.empty()) Note(g_cluster_dir_note);
}

void ArmTeardown(const std::string& script, const std::string& dir) {
  g_down_args = {script, "down", "--dir", dir};
  size_t i = 0;
  for (std::string& a : g_down_args) g_down_argv[i++] = a.data();
  g_down_argv[i] = nullptr;
  g_cluster_dir_note = "the cluster's logs are in " + dir;
  g_down_armed.store(true);
}

// ---- running commands ----

// Runs argv (stdout and stderr into *output), tracked while it runs so that
// a signal handler can stop it. Whether it exited 0.
bool Run(const std::vector<std::string>& args, std::string* output) {
  pid_t pid = -1;
  cluster::RunOptions ro;
  ro.merge_err = true;
  ro.started = [&](pid_t p) { TrackChild(pid = p); };
  cluster::CommandResult r = cluster::RunCommand(args, ro);
  UntrackChild(pid);
  *output = r.out;
  return r.ok();
}

std::string Indent(const std::string& text) {
  std::string out = "    ";
  for (char ch : text) {
    out += ch;
    if (ch == '\n') out += "    ";
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == '\n')) out.pop_back();
  return out;
}

// ---- the cluster ----

struct Node {
  std::string node_id, socket, endpoint;
  NetHost host;  // its namespace (empty in loopback mode) and address
};

struct Cluster {
  std::string dir, name, mode;
  std::string redis_socket;
  Node nodes[2];  // node 1 (holder) and node 2 (fetcher)
  bool started = false;
};

// The pid in DIR/FILE if that process is still `comm`; -1 otherwise.
pid_t PidOf(const std::string& dir, const std::string& file, const std::string& comm) {
  std::optional<cluster::ProcessId> id = cluster::LiveFromPidFile(dir + "/" + file);
  return id && cluster::Comm(id->pid) == comm ? id->pid : -1;
}

// Pins node 1's processes to cpu1 and node 2's to cpu2 (see FetchConfig::pin);
// with cpu1 < 0, lets them all run on every CPU again.
void PinCluster(Cluster* c, int cpu1, int cpu2) {
  struct {
    const char* file;
    const char* comm;
    int cpu;
  } procs[] = {{"n1.pid", "plasmon-store", cpu1},
               {"redis.pid", "redis-server", cpu1},
               {"n2.pid", "plasmon-store", cpu2}};
  for (const auto& p : procs) {
    pid_t pid = PidOf(c->dir, p.file, p.comm);
    if (pid < 0)
      Die(std::string("--pin: no live ") + p.comm + " in " + c->dir + "/" + p.file +
          " (a cluster started by tools/plasmon-cluster has one; or use --pin none)");
    if (Status st = PinProcess(pid, p.cpu); !st.ok()) Die("--pin", st);
  }
  c->nodes[0].host.cpu = cpu1;
  c->nodes[1].host.cpu = cpu2;
  // This process is node 2's client (and the node-2 end of the ping-pong);
  // threads the clients start inherit it.
  if (Status st = PinProcess(::getpid(), cpu2); !st.ok()) Die("--pin", st);
}

void UnpinCluster(Cluster* c) {
  for (const auto& [file, comm] : {std::pair<const char*, const char*>{"n1.pid", "plasmon-store"},
                                   {"redis.pid", "redis-server"},
                                   {"n2.pid", "plasmon-store"}}) {
    pid_t pid = PidOf(c->dir, file, comm);
    if (pid > 0) (void)PinProcess(pid, -1);
  }
  (void)PinProcess(::getpid(), -1);
  c->nodes[0].host.cpu = -1;
  c->nodes[1].host.cpu = -1;
}

std::string ExeDir() {
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "" : exe.parent_path().string();
}

// "10.215.0.2:7400" -> "10.215.0.2"; "[::1]:7400" -> "::1".
std::string HostOf(const std::string& endpoint) {
  if (!endpoint.empty() && endpoint[0] == '[') {
    size_t close = endpoint.find(']');
    return close == std::string::npos ? endpoint : endpoint.substr(1, close - 1);
  }
  size_t colon = endpoint.rfind(':');
  return colon == std::string::npos ? endpoint : endpoint.substr(0, colon);
}

Cluster LoadCluster(const std::string& dir) {
  std::string env = dir + "/cluster.env";
  if (::access(env.c_str(), R_OK) != 0)
    Die("no cluster in " + dir + " (no readable " + env + "; start one with tools/plasmon-cluster up)");
  Result<std::map<std::string, std::string>> vars = cluster::ReadEnvFile(env);
  if (!vars.ok()) Die("cannot read " + env, vars.status());
  auto var = [&](const std::string& k) {
    auto it = vars->find(k);
    return it == vars->end() ? std::string() : it->second;
  };
  Cluster c;
  c.dir = dir;
  std::string state = var("PLASMON_CLUSTER_STATE"), nodes = var("PLASMON_NODES");
  if (state != "up") Die("the cluster in " + dir + " is not up (state '" + state + "')");
  c.name = var("PLASMON_CLUSTER_NAME");
  c.mode = var("PLASMON_CLUSTER_MODE");
  if (std::atoi(nodes.c_str()) < 2) Die("the cluster in " + dir + " has " + nodes + " node(s); fetch needs 2");
  c.redis_socket = var("PLASMON_REDIS_SOCKET");
  for (int i = 0; i < 2; i++) {
    Node& n = c.nodes[i];
    const std::string k = std::to_string(i + 1);
    n.node_id = var("PLASMON_NODE_ID_" + k);
    n.socket = var("PLASMON_SOCKET_" + k);
    n.endpoint = var("PLASMON_ENDPOINT_" + k);
    n.host.netns = var("PLASMON_NS_" + k);
    n.host.address = HostOf(n.endpoint);
    if (n.endpoint.empty())
      Die("node " + std::to_string(i + 1) + " of the cluster in " + dir +
          " has no transfer endpoint (its plasmon-store has no --listen)");
  }
  if (c.mode == "loopback" || c.mode == "hosts") {
    // Every node is on the host's network: the references run there too.
    for (Node& n : c.nodes) n.host.netns.clear();
  }
  return c;
}

Cluster StartCluster(const FetchConfig& cfg, uint64_t memory) {
  // The plasmon-cluster of the build this binary belongs to, unless told.
  std::string script = cfg.cluster_script.empty() ? ExeDir() + "/plasmon-cluster" : cfg.cluster_script;
  char tmpl[] = "/tmp/pbf-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) Die(std::string("mkdtemp: ") + std::strerror(errno));
  std::string dir = tmpl;
  std::string name = cfg.name.empty() ? "pbf" + std::to_string(::getpid() % 100000) : cfg.name;
  std::vector<std::string> args = {script, "up", "--nodes", "2", "--dir", dir,
                                   "--name", name, "--subnet", std::to_string(cfg.subnet),
                                   "--prefault", "--memory",
                                   cfg.memory.empty() ? std::to_string(memory / kMiB) + "M"
                                                      : cfg.memory,
                                   // Prefaulting (and registering for RDMA) large arenas
                                   // takes a while on a slow or emulated machine.
                                   "--wait", "120"};
  if (!cfg.addresses.empty()) {
    // The host's own ports: one of this process's, less likely to be taken
    // than the launcher's default.
    int port = 20000 + 3 * (::getpid() % 3000);
    args.insert(args.end(), {"--mode", "hosts", "--addresses", cfg.addresses, "--port",
                             std::to_string(port)});
  }
  // The stores of the build this binary belongs to (also when --cluster-script
  // names another plasmon-cluster, e.g. the tools/plasmon-cluster wrapper).
  // An installed binary (not in a build's tools/) has them beside it, where
  // plasmon-cluster looks by default.
  const std::filesystem::path exe_dir(ExeDir());
  if (exe_dir.filename() == "tools")
    args.insert(args.end(), {"--build", exe_dir.parent_path().string()});
  std::vector<std::string> store_args = cfg.store_args;
  if (!cfg.transport.empty()) store_args.insert(store_args.end(), {"--transport", cfg.transport});
  if (!store_args.empty()) {
    args.push_back("--");
    args.insert(args.end(), store_args.begin(), store_args.end());
  }
  ArmTeardown(script, dir);
  Progress("starting a 2-node cluster in " + dir + " (stores prefault their arenas)");
  std::string out;
  if (!Run(args, &out)) {
    std::string shown;
    for (const std::string& a : args) shown += a + " ";
    Die("could not start the cluster: " + shown + "\n" + Indent(out));
  }
  Cluster c = LoadCluster(dir);
  c.started = true;
  return c;
}

void StopCluster(const Cluster& c) {
  if (!c.started || !g_down_armed.exchange(false)) return;
  Progress("tearing down the cluster");
  std::string out;
  bool ok = Run(g_down_args, &out);
  ClearProgress();
  if (!ok) {
    Note("tearing down the cluster failed:\n" + Indent(out) + "\n" + g_cluster_dir_note);
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(c.dir, ec);  // only logs are left in it
}

// ---- measuring fetches ----

Counts FetchCounts(const FetchConfig& cfg, uint64_t size) {
  uint64_t it = std::min(cfg.iterations, std::max(kLargeMinIterations, kLatencyBudget / size));
  uint64_t wu = std::min(cfg.warmup, std::max<uint64_t>(1, it / 10));
  return {it, wu};
}

// Where fetches' time went, stage by stage (FetchReport), in ns per sample:
// the client's wall time less the store's in-store time is the trip from
// the client to the store and back; the rest the store measured itself.
struct Stages {
  static constexpr size_t kCount = 10;
  static constexpr const char* kNames[kCount] = {"client-store", "lookup", "queue", "dispatch",
                                                 "transfer",     "digest", "back",  "seal",
                                                 "in store",     "total"};
  static constexpr const char* kJson[kCount] = {"client_store", "lookup",   "queue",  "dispatch",
                                                "transfer",     "digest",   "back",   "seal",
                                                "in_store",     "total"};
  std::vector<uint64_t> ns[kCount];
  void Add(uint64_t total_ns, const FetchReport& r) {
    const FetchReport::Id& x = r.ids.at(0);
    const uint64_t in_store = uint64_t{r.in_store_us} * 1000;
    const uint32_t us[] = {x.lookup_us,  x.queue_us, x.dispatch_us, x.transfer_us,
                           x.digest_us,  x.back_us,  x.seal_us};
    ns[0].push_back(total_ns > in_store ? total_ns - in_store : 0);
    for (size_t i = 0; i < 7; i++) ns[1 + i].push_back(uint64_t{us[i]} * 1000);
    ns[8].push_back(in_store);
    ns[9].push_back(total_ns);
  }
  bool empty() const { return ns[9].empty(); }
  // The p50 of each stage, in us.
  std::vector<double> Medians() const {
    std::vector<double> m;
    for (const std::vector<uint64_t>& v : ns) {
      std::vector<uint64_t> c = v;
      m.push_back(c.empty() ? NAN : Summarize(&c).p50_us);
    }
    return m;
  }
};

class Fetcher {
 public:
  Fetcher(Client* holder, Client* fetcher, std::string holder_id, int64_t timeout_ms)
      : holder_(holder), fetcher_(fetcher), holder_id_(std::move(holder_id)),
        timeout_ms_(timeout_ms), pattern_(kPatternBytes) {
    for (uint64_t i = 0; i < kPatternBytes; i++) pattern_[i] = static_cast<uint8_t>(i * 131 + 7);
  }

  // A new sealed object of `size` bytes on the holder, once the directory lists it.
  ObjectID Put(uint64_t size, const std::string& ctx) {
    ObjectID id = ObjectID::Random();
    auto buf = holder_->Create(id, size);
    if (!buf.ok()) Die(ctx + ": Create on node 1", buf.status());
    for (uint64_t off = 0; off < size; off += kPatternBytes)
      std::memcpy(buf->data + off, pattern_.data(), std::min(kPatternBytes, size - off));
    uint64_t n = ++puts_;  // every object's bytes differ
    std::memcpy(buf->data, &n, std::min<uint64_t>(sizeof(n), size));
    if (Status st = holder_->Seal(id); !st.ok()) Die(ctx + ": Seal on node 1", st);
    WaitListed(id, ctx);
    return id;
  }

  // The time Fetch({id}) takes on the fetching node, in ns; the store's
  // account of where it went in *report.
  uint64_t Fetch(const ObjectID& id, const std::string& ctx, FetchReport* report = nullptr) {
    std::vector<ObjectID> ids{id};
    uint64_t t0 = NowNs();
    auto r = fetcher_->Fetch(ids, timeout_ms_, report);
    uint64_t t1 = NowNs();
    if (!r.ok()) Die(ctx + ": Fetch", r.status());
    if (!(*r)[0].ok()) Die(ctx + ": Fetch of " + id.Hex(), (*r)[0]);
    return t1 - t0;
  }

  // Where the time of the timed fetches of the last Lookup or Cached went.
  const Stages& stages() const { return stages_; }

  void DropFetched(const ObjectID& id, const std::string& ctx) {
    Delete(fetcher_, id, false, ctx + " (node 2)");
  }
  // The holder may still pin the object for a moment after the transfer
  // (the transport's unpin reaches the store's loop asynchronously): then
  // it goes when unpinned.
  void DropHeld(const ObjectID& id, const std::string& ctx) {
    Delete(holder_, id, true, ctx + " (node 1)");
  }

  // Called (untimed) right before every fetch of Lookup and Cached; `timed`
  // is false in their warm-ups.
  void set_before_fetch(std::function<void(bool timed)> fn) { before_fetch_ = std::move(fn); }

  // A new object each time: the fetching node looks its location up.
  std::vector<uint64_t> Lookup(uint64_t size, Counts n, const std::string& ctx) {
    stages_ = Stages();
    std::vector<uint64_t> samples;
    samples.reserve(n.iterations);
    for (uint64_t i = 0; i < n.warmup + n.iterations; i++) {
      ObjectID id = Put(size, ctx);
      if (before_fetch_) before_fetch_(i >= n.warmup);
      FetchReport report;
      uint64_t ns = Fetch(id, ctx, &report);
      DropFetched(id, ctx);
      DropHeld(id, ctx);
      if (i >= n.warmup) {
        samples.push_back(ns);
        stages_.Add(ns, report);
      }
    }
    return samples;
  }

  // The same object again and again, deleted on the fetching node after
  // each fetch: its location stays in that node's cache.
  std::vector<uint64_t> Cached(uint64_t size, Counts n, const std::string& ctx) {
    stages_ = Stages();
    std::vector<uint64_t> samples;
    samples.reserve(n.iterations);
    ObjectID id;
    bool have = false;
    uint64_t primed_at = 0;
    for (uint64_t i = 0; i < n.warmup + n.iterations; i++) {
      if (!have || NowNs() - primed_at > kRefreshNs) {
        if (have) DropHeld(id, ctx);
        id = Put(size, ctx);
        primed_at = NowNs();
        Fetch(id, ctx);  // looks it up: the cache has it from now on
        DropFetched(id, ctx);
        have = true;
      }
      if (before_fetch_) before_fetch_(i >= n.warmup);
      FetchReport report;
      uint64_t ns = Fetch(id, ctx, &report);
      DropFetched(id, ctx);
      if (i >= n.warmup) {
        samples.push_back(ns);
        stages_.Add(ns, report);
      }
    }
    if (have) DropHeld(id, ctx);
    return samples;
  }

 private:
  void WaitListed(const ObjectID& id, const std::string& ctx) {
    uint64_t deadline = NowNs() + 10'000'000'000ull;
    for (;;) {
      auto where = holder_->Where(id);
      if (!where.ok()) Die(ctx + ": Where on node 1", where.status());
      for (const ObjectHolder& h : *where)
        if (h.node_id == holder_id_ && h.alive) return;
      if (NowNs() > deadline)
        Die(ctx + ": the directory does not list " + id.Hex() + " on " + holder_id_ +
            " 10 s after its seal");
      ::usleep(100);
    }
  }

  void Delete(Client* c, const ObjectID& id, bool in_use_ok, const std::string& ctx) {
    auto res = c->Delete({id});
    if (!res.ok()) Die(ctx + ": Delete", res.status());
    const Status& st = (*res)[0];
    if (!st.ok() && !(in_use_ok && st.code() == StatusCode::kObjectInUse))
      Die(ctx + ": Delete of " + id.Hex(), st);
  }

  Client* holder_;
  Client* fetcher_;
  std::string holder_id_;
  int64_t timeout_ms_;
  std::vector<uint8_t> pattern_;
  uint64_t puts_ = 0;
  std::function<void(bool)> before_fetch_;
  Stages stages_;
};

// The value of `flag` among the flags given to the stores this bench
// starts (--store-arg), as "--flag VALUE" or "--flag=VALUE"; nullopt if
// not given.
std::optional<std::string> StoreArg(const std::vector<std::string>& store_args,
                                    const std::string& flag) {
  std::optional<std::string> v;
  for (size_t i = 0; i < store_args.size(); i++) {
    const std::string& a = store_args[i];
    if (a == flag && i + 1 < store_args.size()) v = store_args[i + 1];
    if (a.rfind(flag + "=", 0) == 0) v = a.substr(flag.size() + 1);
  }
  return v;
}

// The TCP connections the stores pull an object of `size` bytes over: one
// per chunk, up to their --transfer-streams (else the transport's default).
int StoreStreams(const std::vector<std::string>& store_args, uint64_t size) {
  TcpTransportOptions o;
  // The store refuses what is not 1..64.
  if (std::optional<std::string> v = StoreArg(store_args, "--transfer-streams"))
    o.streams = std::atoi(v->c_str());
  return static_cast<int>(o.StreamsFor(size));
}

// ---- reporting ----

struct Row {
  std::string op, label;
  uint64_t size = 0;
  Summary s;
  std::vector<double> stage_p50_us;  // Stages::Medians(), for fetches
};

double GBps(uint64_t size, double us) { return us > 0 ? static_cast<double>(size) / us / 1e3 : NAN; }
double Gbitps(uint64_t size, double us) { return us > 0 ? static_cast<double>(size) * 8 / us / 1e3 : NAN; }

void PrintHeader() {
  std::printf("  %-22s %7s %6s %8s %8s %8s %8s %8s %8s %7s %7s\n", "op", "size", "iters", "min",
              "p50", "p90", "p99", "max", "mean", "GB/s", "Gbit/s");
}

// A latency column; "-" for a figure not measured (NaN).
std::string Us(double us) { return std::isfinite(us) ? FormatUs(us) : "-"; }

void PrintRow(const Row& r, bool rates) {
  char gb[16] = "-", gbit[16] = "-";
  if (rates && r.s.p50_us > 0) {
    std::snprintf(gb, sizeof(gb), "%.2f", GBps(r.size, r.s.p50_us));
    std::snprintf(gbit, sizeof(gbit), "%.2f", Gbitps(r.size, r.s.p50_us));
  }
  std::printf("  %-22s %7s %6llu %8s %8s %8s %8s %8s %8s %7s %7s\n", r.label.c_str(),
              FormatSize(r.size).c_str(), static_cast<unsigned long long>(r.s.samples),
              Us(r.s.min_us).c_str(), Us(r.s.p50_us).c_str(), Us(r.s.p90_us).c_str(),
              Us(r.s.p99_us).c_str(), Us(r.s.max_us).c_str(), Us(r.s.mean_us).c_str(), gb, gbit);
}

// An ib_read_lat result as a row of the results table: p50 is its typical
// (median), mean its average; it has no p90.
Row LatRow(const RdmaReadLatency& l) {
  Summary s;
  s.samples = l.iterations;
  s.min_us = l.min_us;
  s.p50_us = l.typical_us;
  s.p90_us = NAN;
  s.p99_us = l.p99_us;
  s.p999_us = l.p999_us;
  s.max_us = l.max_us;
  s.mean_us = l.avg_us;
  return Row{"ib_read_lat", "ib_read_lat -R", l.size, s, {}};
}

std::string LatJson(const RdmaReadLatency& l) {
  return "{\"size\": " + std::to_string(l.size) + ", \"iterations\": " +
         std::to_string(l.iterations) + ", \"device\": " + JsonString(l.device) +
         ", \"min_us\": " + JsonNumber(l.min_us) + ", \"typical_us\": " + JsonNumber(l.typical_us) +
         ", \"avg_us\": " + JsonNumber(l.avg_us) + ", \"stdev_us\": " + JsonNumber(l.stdev_us) +
         ", \"p99_us\": " + JsonNumber(l.p99_us) + ", \"p999_us\": " + JsonNumber(l.p999_us) +
         ", \"max_us\": " + JsonNumber(l.max_us) + "}";
}

std::string BwJson(const RdmaReadBandwidth& b) {
  return "{\"size\": " + std::to_string(b.size) + ", \"iterations\": " +
         std::to_string(b.iterations) + ", \"device\": " + JsonString(b.device) +
         ", \"avg_bits_per_second\": " + JsonNumber(b.avg_bits_per_second) +
         ", \"peak_bits_per_second\": " + JsonNumber(b.peak_bits_per_second) +
         ", \"msg_rate_mpps\": " + JsonNumber(b.msg_rate_mpps) + "}";
}

std::string RowJson(const Row& r) {
  std::string stages;
  if (!r.stage_p50_us.empty()) {
    stages = ", \"stages_p50_us\": {";
    for (size_t i = 0; i < Stages::kCount; i++)
      stages += std::string(i > 0 ? ", " : "") + "\"" + Stages::kJson[i] +
                "\": " + JsonNumber(r.stage_p50_us[i]);
    stages += "}";
  }
  return "{\"op\": " + JsonString(r.op) + ", \"size\": " + std::to_string(r.size) +
         ", \"iterations\": " + std::to_string(r.s.samples) + ", " + JsonSummaryFields(r.s) +
         ", \"gb_per_s\": " + JsonNumber(GBps(r.size, r.s.p50_us)) +
         ", \"gbit_per_s\": " + JsonNumber(Gbitps(r.size, r.s.p50_us)) + stages + "}";
}

// Where the time of each size's fetches went: the p50 of each stage.
void PrintStages(const std::vector<Row>& rows) {
  std::printf("  %-22s %7s", "op", "size");
  for (const char* n : Stages::kNames) std::printf(" %*s", n == Stages::kNames[0] ? 12 : 8, n);
  std::printf("\n");
  for (const Row& r : rows) {
    if (r.stage_p50_us.empty()) continue;
    std::printf("  %-22s %7s", r.label.c_str(), FormatSize(r.size).c_str());
    for (size_t i = 0; i < Stages::kCount; i++)
      std::printf(" %*s", i == 0 ? 12 : 8, Us(r.stage_p50_us[i]).c_str());
    std::printf("\n");
  }
}

// The largest p50 of the TCP ping-pongs over the smallest: well above 1, the
// machine's round trip changed during the run (on a VM, usually threads
// moving between running on one vCPU and on two).
constexpr double kMaxSpread = 1.5;
double PingPongSpread(const Row& before, const Row& after, const std::vector<Row>& between) {
  double lo = std::min(before.s.p50_us, after.s.p50_us), hi = std::max(before.s.p50_us, after.s.p50_us);
  for (const Row& r : between) {
    lo = std::min(lo, r.s.p50_us);
    hi = std::max(hi, r.s.p50_us);
  }
  return lo > 0 ? hi / lo : 0;
}

std::string NodeJson(const Node& n) {
  return "{\"node_id\": " + JsonString(n.node_id) + ", \"socket\": " + JsonString(n.socket) +
         ", \"netns\": " + JsonString(n.host.netns) + ", \"address\": " + JsonString(n.host.address) +
         "}";
}

double Median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

CLI::App* AddFetchCommand(CLI::App* app, FetchConfig* cfg) {
  auto* f = app->add_subcommand(
      "fetch",
      "Time Fetch between two stores in separate network namespaces or on two addresses of "
      "this host (a cluster it starts with tools/plasmon-cluster, or --cluster-dir), beside "
      "iperf3, a TCP ping-pong over the same link, a Redis GET and, with --transport verbs, "
      "perftest's RDMA READ, measured in the same run");
  f->add_option("--sizes", cfg->sizes_arg,
                "Comma-separated object sizes, with optional K/M/G suffixes (binary) "
                "(default: 64,4K,64K,1M,16M,256M,1G, less those an existing cluster's stores "
                "cannot hold twice)")
      ->delimiter(',');
  f->add_option("--iterations", cfg->iterations,
                "Timed fetches per size and mode; large objects run fewer: "
                "min(N, max(5, 2 GiB / size)), i.e. 128 at 16 MiB, 8 at 256 MiB, 5 at 1 GiB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  f->add_option("--warmup", cfg->warmup,
                "Untimed fetches before each measurement; large objects run min(N, max(1, "
                "iterations / 10))")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  f->add_option("--throughput-size", cfg->throughput_size_arg,
                "Size of the object of the throughput measurement (0: none) (default: 1G, or "
                "less if an existing cluster's stores are too small)");
  f->add_option("--throughput-reps", cfg->throughput_reps,
                "Fetches of a new object of --throughput-size; the median counts")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  f->add_option("--pingpong-round-trips", cfg->pingpong_round_trips,
                "Round trips of each ping-pong reference (after a tenth as many untimed)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  f->add_option("--iperf-seconds", cfg->iperf_seconds, "Duration of each iperf3 run (0: skip iperf3)")
      ->check(CLI::Range(0, 600))
      ->capture_default_str();
  f->add_option("--iperf-port", cfg->iperf_port, "Port of the iperf3 server in node 2's namespace")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  f->add_option("--timeout-ms", cfg->timeout_ms, "Timeout of each Fetch")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  f->add_flag("--json", cfg->json,
              "Print one JSON document on stdout instead of the tables (schema at the top of "
              "tools/bench_fetch.cc)");
  f->add_option("--plot", cfg->plot_dir,
                "Also draw the results into DIR: latency CDFs per size (with the TCP ping-pong "
                "and Redis GET) and GB/s against size (with iperf3), PNG and SVG (gnuplot)");
  f->add_option("--cluster-dir", cfg->cluster_dir,
                "Use the cluster already up in this directory (tools/plasmon-cluster up --dir "
                "DIR; nodes 1 and 2) instead of starting one. Its stores should run with "
                "--prefault and hold twice the largest size");
  f->add_option("--cluster-script", cfg->cluster_script,
                "plasmon-cluster command to start the cluster with (default: the one beside "
                "this binary, in its build)");
  f->add_option("--name", cfg->name,
                "Namespace prefix of the cluster it starts, 1-8 letters/digits (default: pbf "
                "and this process's ID)");
  f->add_option("--subnet", cfg->subnet, "Its nodes get 10.SUBNET.0.<i>")
      ->check(CLI::Range(0, 255))
      ->capture_default_str();
  f->add_option("--memory", cfg->memory,
                "Arena of each store it starts (default: twice the largest object + 256 MiB)");
  f->add_option("--store-arg", cfg->store_args,
                "A flag for the stores it starts, e.g. --store-arg=--transfer-streams "
                "--store-arg=2 (repeatable)");
  f->add_option("--pin", cfg->pin,
                "N1_CPU,N2_CPU: run node 1's processes (its store, Redis, the echo and iperf3 "
                "sender of the references) on one CPU and node 2's (its store, this benchmark, "
                "the iperf3 receiver) on another, as two one-CPU hosts; 'none' leaves placement "
                "to the scheduler; 'auto': 0,1 on a machine with 2 CPUs or more")
      ->capture_default_str();
  f->add_flag("--keep-cluster", cfg->keep, "Leave the cluster it started running (and say where)");
  f->add_option("--addresses", cfg->addresses,
                "A,B: start the cluster in the host's own network namespace, node 1 on address "
                "A and node 2 on B (tools/plasmon-cluster --mode hosts; addresses this host "
                "has, e.g. those its RDMA devices own), instead of in network namespaces; the "
                "network references run between A and B");
  f->add_option("--transport", cfg->transport,
                "Start the stores with --transport tcp|verbs|auto (default: their own default). "
                "verbs also measures perftest's RDMA READ (ib_read_lat -R, ib_read_bw -R) "
                "between the nodes and fails unless fetches went by RDMA; with --cluster-dir "
                "it only selects those")
      ->check(CLI::IsMember({"tcp", "verbs", "auto"}));
  f->add_option("--perftest-port", cfg->perftest_port,
                "rdma_cm port of perftest's server on node 1 (--transport verbs)")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  f->footer(
      "fetch (lookup): a new object every time, so the fetching store asks the directory (Redis) "
      "where it is; fetch (cached): an object fetched and deleted just before, whose location "
      "the store has cached. Latencies in us, nearest-rank percentiles; GB/s and Gbit/s are "
      "size / p50 (GB = 1e9 B). Needs root (network namespaces; not with --addresses), "
      "redis-server and iperf3 (tools/setup.sh installs them); --transport verbs needs an RDMA "
      "device owning the nodes' addresses and perftest (tools/rxe-vm/run.sh has both).");
  return f;
}

int RunFetch(FetchConfig cfg) {
  // ---- configuration ----
  if (cfg.sizes_arg.empty()) {
    cfg.sizes = {64, 4 * kKiB, 64 * kKiB, 1 * kMiB, 16 * kMiB, 256 * kMiB, 1 * kGiB};
  } else {
    for (const std::string& s : cfg.sizes_arg) {
      std::optional<uint64_t> v = ParseSize(s);
      if (!v || *v == 0 || *v > 64 * kGiB)
        Die("invalid size '" + s + "' in --sizes (expected e.g. 64,4K,1M,1G)");
      if (std::find(cfg.sizes.begin(), cfg.sizes.end(), *v) == cfg.sizes.end())
        cfg.sizes.push_back(*v);
    }
  }
  const bool default_sizes = cfg.sizes_arg.empty();
  const bool default_throughput = cfg.throughput_size_arg.empty();
  if (default_throughput) {
    cfg.throughput_size = 1 * kGiB;
  } else {
    std::optional<uint64_t> v = ParseSize(cfg.throughput_size_arg);
    if (!v || *v > 64 * kGiB)
      Die("invalid --throughput-size '" + cfg.throughput_size_arg + "'");
    cfg.throughput_size = *v;
  }
  if (!cfg.name.empty()) {
    bool ok = cfg.name.size() <= 8 &&
              std::all_of(cfg.name.begin(), cfg.name.end(), [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)); });
    if (!ok) Die("--name must be 1 to 8 letters or digits");
  }
  if (!cfg.addresses.empty()) {
    if (!cfg.cluster_dir.empty())
      Die("--addresses is for the cluster this starts; not with --cluster-dir");
    size_t comma = cfg.addresses.find(',');
    bool ok = comma != std::string::npos && comma > 0 && comma + 1 < cfg.addresses.size() &&
              cfg.addresses.find(',', comma + 1) == std::string::npos &&
              cfg.addresses.find_first_of(" \t") == std::string::npos;
    if (!ok)
      Die("invalid --addresses '" + cfg.addresses +
          "': expected two addresses of this host, A,B (e.g. 10.77.0.1,10.77.0.2)");
  }
  const bool verbs = cfg.transport == "verbs";
  // tools/rxe-vm: Soft-RoCE in a VM under TCG, ~30 MB/s.
  const char* rxe_vm = std::getenv("PLASMON_RXE_VM");
  const bool emulated = rxe_vm != nullptr && *rxe_vm != '\0' && std::strcmp(rxe_vm, "0") != 0;
  uint64_t largest = std::max(*std::max_element(cfg.sizes.begin(), cfg.sizes.end()),
                              cfg.throughput_size);
  const uint64_t need = 2 * largest + 256 * kMiB;

  ::signal(SIGPIPE, SIG_IGN);
  // As in `local`: keep freed memory in the process (per-call buffers would
  // otherwise page-fault on every call).
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
  // Not in tools/rxe-vm's VM: its serial console keeps every redrawn line.
  g_progress = ::isatty(STDERR_FILENO) == 1 && !emulated;
  std::atexit(TearDownAtExit);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);

  // ---- the cluster ----
  Cluster cluster = cfg.cluster_dir.empty() ? StartCluster(cfg, need) : LoadCluster(cfg.cluster_dir);
  int pin1 = -1, pin2 = -1;
  if (cfg.pin == "auto") {
    if (::sysconf(_SC_NPROCESSORS_ONLN) >= 2) pin1 = 0, pin2 = 1;
  } else if (cfg.pin != "none") {
    char extra;
    if (std::sscanf(cfg.pin.c_str(), "%d,%d%c", &pin1, &pin2, &extra) != 2 || pin1 < 0 ||
        pin2 < 0)
      Die("invalid --pin '" + cfg.pin + "': expected N1_CPU,N2_CPU (e.g. 0,1), auto or none");
  }
  if (pin1 >= 0) PinCluster(&cluster, pin1, pin2);
  // The TCP references' connections get the congestion control the
  // stores' do (their --tcp-congestion, else the transport's default; a
  // cluster this run did not start is taken to have the default).
  std::string congestion =
      StoreArg(cfg.store_args, "--tcp-congestion").value_or(TcpTransportOptions{}.congestion);
  if (congestion == "default") congestion.clear();  // the host's, as the store reads it
  for (Node& n : cluster.nodes) n.host.congestion = congestion;
  const Node& n1 = cluster.nodes[0];
  const Node& n2 = cluster.nodes[1];

  Client c1, c2;
  if (Status st = c1.Connect(n1.socket); !st.ok()) Die("connecting to node 1 at " + n1.socket, st);
  if (Status st = c2.Connect(n2.socket); !st.ok()) Die("connecting to node 2 at " + n2.socket, st);
  uint64_t capacity = 0;
  StoreStats start2;  // node 2's transfer counters before the run
  for (int i = 0; i < 2; i++) {
    auto stats = (i == 0 ? c1 : c2).Stats();
    if (!stats.ok()) Die("Stats", stats.status());
    if (i == 1) start2 = *stats;
    capacity = capacity == 0 ? stats->capacity : std::min(capacity, stats->capacity);
    if (stats->object_count > 0)
      Note("warning: node " + std::to_string(i + 1) + "'s store already holds " +
           std::to_string(stats->object_count) + " objects (" + FormatSize(stats->used) +
           "); they may be evicted, and they skew the figures");
  }
  // An existing cluster's stores may be smaller than the defaults want:
  // default sizes that do not fit twice over are left out (an object may
  // stay on the holder, pinned, for a moment after its transfer).
  auto fits = [&](uint64_t size) { return 2 * size + 64 * kMiB <= capacity; };
  if (default_sizes || default_throughput) {
    std::vector<uint64_t> kept;
    for (uint64_t size : cfg.sizes)
      if (!default_sizes || fits(size)) kept.push_back(size);
    if (kept.empty()) kept.push_back(64);
    if (default_sizes && kept.size() < cfg.sizes.size())
      Note("the stores hold " + FormatSize(capacity) + ": leaving out default sizes above " +
           FormatSize(kept.back()));
    cfg.sizes = kept;
    if (default_throughput && !fits(cfg.throughput_size)) {
      while (cfg.throughput_size > 16 * kMiB && !fits(cfg.throughput_size)) cfg.throughput_size /= 2;
      Note("the stores hold " + FormatSize(capacity) + ": the throughput object is " +
           FormatSize(cfg.throughput_size) + " instead of 1 GiB");
    }
    largest = std::max(*std::max_element(cfg.sizes.begin(), cfg.sizes.end()), cfg.throughput_size);
  }
  if (capacity < largest + 64 * kMiB)
    Die("the stores hold " + FormatSize(capacity) + ", too little for objects of " +
        FormatSize(largest) + ": use smaller --sizes / --throughput-size or larger stores (" +
        FormatSize(need) + ")");

  Machine machine = DescribeMachine();
  if (!cfg.json) {
    const bool huge = cluster.started && std::find(cfg.store_args.begin(), cfg.store_args.end(),
                                                   "--hugepages") != cfg.store_args.end();
    // A running cluster's stores got the pages of the setting at their start.
    std::string thp;
    const bool thp_on = ShmemHugePages(&thp);
    std::string pages = huge                ? ", 2 MiB pages (--hugepages)"
                        : !cluster.started ? ", shmem_enabled now: " + thp
                        : thp_on ? ", transparent 2 MiB pages (shmem_enabled: " + thp + ")"
                                 : ", 4 KiB pages (shmem_enabled: " + thp + ")";
    std::printf("plasmon-bench fetch: %s cluster '%s' in %s (%s), %s arenas (prefaulted%s%s)\n",
                cluster.mode.c_str(), cluster.name.c_str(), cluster.dir.c_str(),
                cluster.started ? "started for this run" : "already running",
                FormatSize(capacity).c_str(), cluster.started ? "" : " if they were started so",
                pages.c_str());
    std::printf("  holder  %s: %s%s%s, fetcher %s: %s%s%s\n", n1.node_id.c_str(),
                n1.endpoint.c_str(), n1.host.netns.empty() ? "" : " in ", n1.host.netns.c_str(),
                n2.node_id.c_str(), n2.endpoint.c_str(), n2.host.netns.empty() ? "" : " in ",
                n2.host.netns.c_str());
    std::string transport = "their default (no --transport)";
    if (!cfg.transport.empty())
      transport = cluster.started ? "--transport " + cfg.transport
                                  : cfg.transport + " (expected; not set by this run)";
    std::printf("  stores' transport: %s\n", transport.c_str());
    if (emulated && verbs)
      std::printf("  RDMA: Soft-RoCE (rdma_rxe) in an emulated VM (PLASMON_RXE_VM): the RDMA "
                  "figures show correctness, not speed\n");
    std::printf("machine: %s, %s, %s, %ld CPUs, %s RAM\n", machine.hostname.c_str(),
                machine.kernel.c_str(), machine.cpu.c_str(), machine.cpus,
                FormatSize(machine.memory).c_str());
    std::printf("%s\n", MemoryLine(machine).c_str());
    const std::string host_default = ReadFirstLine("/proc/sys/net/ipv4/tcp_congestion_control");
    std::printf(
        "TCP: congestion control %s on the stores' connections and the TCP "
        "references' (the host's default: %s)\n",
        congestion.empty() ? "the host's default" : ("'" + congestion + "'").c_str(),
        host_default.empty() ? "?" : host_default.c_str());
    if (pin1 >= 0) {
      std::printf("latencies pinned as on two one-CPU hosts: CPU %d runs node 1 (store %s, Redis, "
                  "the ping-pong's echo), CPU %d node 2 (store %s, this benchmark as its client); "
                  "throughput unpinned\n",
                  pin1, n1.node_id.c_str(), pin2, n2.node_id.c_str());
    } else {
      std::printf("not pinned: the stores, Redis, iperf3 and the benchmark share the CPUs as the "
                  "scheduler places them\n");
    }
    std::fflush(stdout);
  }

  // ---- references for the latencies ----
  const Counts pp{cfg.pingpong_round_trips, std::max<uint64_t>(1, cfg.pingpong_round_trips / 10)};
  Progress("measuring the references: TCP ping-pong between the nodes");
  // From node 2 (this process) to an echo process on node 1.
  auto tcp_pp = MeasureTcpPingPong(n2.host, n1.host, kPingPongBytes, pp);
  if (!tcp_pp.ok()) Die("the TCP ping-pong reference", tcp_pp.status());
  Row tcp_row{"tcp_pingpong", "TCP ping-pong", kPingPongBytes, *tcp_pp, {}};
  Progress("measuring the references: IPC ping-pong");
  auto ipc_pp = MeasurePingPong(kPingPongBytes, pp, pin2);  // both on node 2's CPU
  if (!ipc_pp.ok()) Die("the IPC ping-pong reference", ipc_pp.status());
  Row ipc_row{"ipc_pingpong", "IPC ping-pong", kPingPongBytes, *ipc_pp, {}};
  Progress("measuring the references: Redis GET");
  std::vector<uint8_t> redis_src(kTargetSmall, 0x42);
  RedisReference redis = MeasureRedis(
      cluster.redis_socket, {kTargetSmall}, [&](uint64_t) { return Counts{5000, 500}; },
      redis_src.data());
  std::optional<Row> redis_row;
  for (const RedisRow& rr : redis.rows)
    if (rr.op == "redis_get") redis_row = Row{"redis_get", "Redis GET", rr.size, rr.summary, {}};
  // RDMA READ round trips, node 2 reading node 1's memory, pinned as the fetches are.
  std::vector<RdmaReadLatency> rdma_lat;
  if (verbs) {
    std::vector<uint64_t> lat_sizes;
    for (uint64_t size : cfg.sizes)
      if (size <= kPerftestLatMax) lat_sizes.push_back(size);
    if (lat_sizes.empty()) lat_sizes = {64, kTargetSmall};
    std::sort(lat_sizes.begin(), lat_sizes.end());
    for (uint64_t size : lat_sizes) {
      uint64_t iters = std::max<uint64_t>(
          5, std::min(FetchCounts(cfg, size).iterations, kPerftestLatBytes / size));
      Progress("measuring the references: ib_read_lat -R, " + FormatSize(size));
      auto lat = MeasureIbReadLat(n2.host, n1.host, cfg.perftest_port, size, iters);
      if (!lat.ok()) Die("--transport verbs: the RDMA READ latency reference", lat.status());
      rdma_lat.push_back(*lat);
    }
  }
  ClearProgress();

  if (!cfg.json) {
    std::printf("\nreferences (measured in this run; latency in us, nearest-rank percentiles)\n");
    PrintHeader();
    PrintRow(tcp_row, false);
    PrintRow(ipc_row, false);
    if (redis_row) PrintRow(*redis_row, false);
    std::printf("  TCP ping-pong: %s -> echo process at %s (%s -> %s), TCP_NODELAY\n",
                n2.host.address.c_str(), n1.host.address.c_str(),
                n2.host.netns.empty() ? "host" : n2.host.netns.c_str(),
                n1.host.netns.empty() ? "host" : n1.host.netns.c_str());
    std::printf("  IPC ping-pong: Unix socketpair between two processes (the local IPC)\n");
    if (redis_row)
      std::printf("  Redis GET: Redis %s over %s (hiredis)\n", redis.version.c_str(),
                  redis.socket.c_str());
    if (!redis.error.empty()) std::printf("  Redis: %s\n", redis.error.c_str());
    std::fflush(stdout);
  }

  // ---- fetch latencies ----
  Fetcher f(&c1, &c2, n1.node_id, cfg.timeout_ms);
  {
    // Open the transfer connections (one small pull, one in chunks) before timing.
    Progress("warming up");
    f.Lookup(64, {2, 0}, "warm-up");
    if (largest >= 16 * kMiB) f.Lookup(16 * kMiB, {1, 0}, "warm-up");
  }
  // The machine's round trip can change within seconds (on a VM, waking a
  // halted vCPU costs far more than waking a busy one), so the 4 KiB fetches
  // alternate with blocks of TCP round trips on a connection kept open: the
  // ratio compares the two over the same stretch of time. (Round trips
  // right after a fetch would be biased: the stores' asynchronous work, e.g.
  // directory updates, keeps the vCPUs awake; each block starts with untimed
  // round trips.)
  auto live_pp = TcpPingPong::Start(n2.host, n1.host, kPingPongBytes);
  if (!live_pp.ok()) Die("the interleaved TCP ping-pong", live_pp.status());
  constexpr uint64_t kBlock = 100;       // fetches, then as many round trips
  constexpr uint64_t kBlockWarmup = 10;  // untimed round trips starting each block
  std::vector<Row> results, interleaved;
  std::vector<uint64_t> sizes = cfg.sizes;
  std::sort(sizes.begin(), sizes.end());
  size_t step = 0;
  for (uint64_t size : sizes) {
    Counts n = FetchCounts(cfg, size);
    for (bool cached : {false, true}) {
      std::string label = cached ? "fetch (cached)" : "fetch (lookup)";
      std::string op = cached ? "fetch_cached" : "fetch_lookup";
      std::string ctx = label + " " + FormatSize(size);
      Progress("measuring " + ctx + " (" + std::to_string(++step) + "/" +
               std::to_string(2 * sizes.size()) + ")");
      std::vector<uint64_t> pp_samples;
      uint64_t fetches = 0;
      if (size == kTargetSmall) {
        f.set_before_fetch([&](bool timed) {
          if (!timed || fetches++ % kBlock != 0) return;
          for (uint64_t k = 0; k < kBlockWarmup + kBlock; k++) {
            Result<uint64_t> ns = (*live_pp)->RoundTrip();
            if (!ns.ok()) Die("the interleaved TCP ping-pong", ns.status());
            if (k >= kBlockWarmup) pp_samples.push_back(*ns);
          }
        });
      }
      std::vector<uint64_t> samples = cached ? f.Cached(size, n, ctx) : f.Lookup(size, n, ctx);
      f.set_before_fetch(nullptr);
      results.push_back(Row{op, label, size, Summarize(&samples), f.stages().Medians()});
      if (!pp_samples.empty())
        interleaved.push_back(
            Row{op, "TCP ping-pong, " + std::string(cached ? "cached" : "lookup"), kPingPongBytes,
                Summarize(&pp_samples), {}});
    }
  }
  live_pp->reset();

  Progress("measuring the TCP ping-pong again");
  auto tcp_after = MeasureTcpPingPong(n2.host, n1.host, kPingPongBytes, pp);
  if (!tcp_after.ok()) Die("the TCP ping-pong reference", tcp_after.status());
  Row tcp_after_row{"tcp_pingpong", "TCP ping-pong (after)", kPingPongBytes, *tcp_after, {}};

  // Did the fetches go by RDMA? Node 2's store counts what it pulled how.
  auto fetcher_stats = [&]() {
    auto st = c2.Stats();
    if (!st.ok()) Die("Stats of node 2", st.status());
    return *st;
  };
  if (verbs) {
    StoreStats now = fetcher_stats();
    if (now.fetched_verbs == start2.fetched_verbs)
      Die("--transport verbs, but none of node 2's " +
          std::to_string(now.fetched - start2.fetched) +
          " fetches went by RDMA (Stats: fetched_verbs unchanged, " +
          std::to_string(now.pulls_failed - start2.pulls_failed) +
          " failed pulls); see the stores' logs");
  }

  // ---- throughput, next to its reference ----
  std::vector<Iperf3Result> iperf;
  // First one stream pinned as the latencies were, one CPU per node: what
  // the link gives the 1 MiB fetches above, which ran so. Not a target's
  // reference (the targets take the better unpinned figure below).
  if (cfg.iperf_seconds > 0 && pin1 >= 0) {
    Progress("measuring the references: iperf3, 1 stream pinned as the latencies, " +
             std::to_string(cfg.iperf_seconds) + " s");
    iperf.push_back(MeasureIperf3(n1.host, n2.host, cfg.iperf_port, 1, cfg.iperf_seconds));
  }
  // Then unpinned: each side may use every CPU, as iperf3 does; one CPU per
  // node would make both the copies' speed of one CPU.
  if (pin1 >= 0) UnpinCluster(&cluster);
  if (cfg.iperf_seconds > 0) {
    for (int streams : {1, 2}) {
      Progress("measuring the references: iperf3, " + std::to_string(streams) + " stream(s), " +
               std::to_string(cfg.iperf_seconds) + " s");
      iperf.push_back(MeasureIperf3(n1.host, n2.host, cfg.iperf_port, streams, cfg.iperf_seconds));
    }
  }
  double best_iperf = 0, pinned_iperf = 0;
  for (const Iperf3Result& r : iperf) {
    double& best = r.pinned ? pinned_iperf : best_iperf;
    best = std::max(best, r.bits_per_second);
  }
  // RDMA READ bandwidth: as many bytes as one throughput fetch, in messages of 1 MiB.
  std::optional<RdmaReadBandwidth> rdma_bw;
  if (verbs) {
    uint64_t total = cfg.throughput_size > 0 ? cfg.throughput_size : 256 * kMiB;
    uint64_t msg = std::min(total, kPerftestBwMessage);
    uint64_t iters = std::max<uint64_t>(5, total / msg);
    Progress("measuring the references: ib_read_bw -R, " + std::to_string(iters) + " x " +
             FormatSize(msg));
    auto bw = MeasureIbReadBw(n2.host, n1.host, cfg.perftest_port, msg, iters);
    if (!bw.ok()) Die("--transport verbs: the RDMA READ bandwidth reference", bw.status());
    rdma_bw = *bw;
  }
  std::vector<double> tput;
  std::vector<double> tput_transfer_ms;  // each one's transfer stage, as n2's store measured it
  if (cfg.throughput_size > 0) {
    for (uint64_t i = 0; i < cfg.throughput_reps; i++) {
      std::string ctx = "throughput " + FormatSize(cfg.throughput_size);
      Progress("measuring " + ctx + " (" + std::to_string(i + 1) + "/" +
               std::to_string(cfg.throughput_reps) + ")");
      ObjectID id = f.Put(cfg.throughput_size, ctx);
      FetchReport report;
      uint64_t ns = f.Fetch(id, ctx, &report);
      tput_transfer_ms.push_back(report.ids.empty() || !report.ids[0].pulled
                                     ? NAN
                                     : report.ids[0].transfer_us / 1e3);
      f.DropFetched(id, ctx);
      f.DropHeld(id, ctx);
      tput.push_back(static_cast<double>(cfg.throughput_size) * 8 / static_cast<double>(ns));
    }
  }
  const double tput_median = Median(tput);  // Gbit/s
  // The median of the transfers after the first (NaN: fewer than two).
  const auto later_median = [](const std::vector<double>& v) {
    return v.size() < 2 ? NAN : Median(std::vector<double>(v.begin() + 1, v.end()));
  };
  // After the fetches (it would leave the fetcher's arena idle for seconds
  // before the first one): TCP into memory as large as the object, over as
  // many connections as the stores used, as often as the fetches (what
  // iperf3's small cached buffer does not show: bytes that land in memory
  // once). Skipped where the host cannot back two more such buffers.
  std::optional<TcpBulkResult> bulk;
  if (!verbs && cfg.throughput_size > 0 && cfg.iperf_seconds > 0) {
    const int streams = StoreStreams(cfg.store_args, cfg.throughput_size);
    Result<std::string> room =
        CheckArenaBacking(ArenaOptions{2 * cfg.throughput_size, "", false, /*prefault=*/true});
    if (!room.ok() || !room->empty()) {
      bulk = TcpBulkResult{cfg.throughput_size,
                           streams,
                           {},
                           "no room for two more " + FormatSize(cfg.throughput_size) +
                               " buffers: " + (room.ok() ? *room : room.status().message())};
    } else {
      Progress("measuring the references: TCP into " + FormatSize(cfg.throughput_size) +
               " of memory, " + std::to_string(streams) + " stream(s), " +
               std::to_string(cfg.throughput_reps) + " times");
      bulk = MeasureTcpBulk(n1.host, n2.host, cfg.throughput_size, streams,
                            static_cast<int>(cfg.throughput_reps));
    }
  }
  const double bulk_later =  // Gbit/s
      bulk && bulk->error.empty() ? later_median(bulk->bits_per_second) / 1e9 : NAN;
  const double tput_later = later_median(tput);  // Gbit/s
  const StoreStats end2 = fetcher_stats();
  const uint64_t fetched = end2.fetched - start2.fetched,
                 fetched_verbs = end2.fetched_verbs - start2.fetched_verbs,
                 fetched_bytes = end2.fetched_bytes - start2.fetched_bytes,
                 pulls_failed = end2.pulls_failed - start2.pulls_failed;

  ClearProgress();

  // ---- targets ----
  auto find = [](const std::vector<Row>& rows, const char* op, uint64_t size) -> const Row* {
    for (const Row& r : rows)
      if (r.op == op && r.size == size) return &r;
    return nullptr;
  };
  std::vector<Target> targets;
  {
    Target t;
    t.name = "fetch " + FormatSize(cfg.throughput_size) + " Gbit/s / better iperf3 Gbit/s";
    t.cmp = ">=";
    t.bound = 0.95;
    if (best_iperf > 0 && std::isfinite(tput_median)) {
      t.value = tput_median * 1e9 / best_iperf;
      char buf[96];
      std::snprintf(buf, sizeof(buf), "%.2f vs %.2f Gbit/s", tput_median, best_iperf / 1e9);
      t.note = buf;
      if (std::isfinite(bulk_later) && std::isfinite(tput_later)) {
        std::snprintf(buf, sizeof(buf), "; later ones %.2f of TCP into memory's (%.2f Gbit/s)",
                      tput_later / bulk_later, bulk_later);
        t.note += buf;
      }
      if (cfg.throughput_size != 1 * kGiB) t.note += "; the target is for 1 GiB";
    } else {
      t.note = best_iperf <= 0 ? "iperf3 not measured" : "throughput not measured";
    }
    targets.push_back(t);
  }
  {
    // The first large fetch after the cluster starts (new connections,
    // memory no pull touched yet) against the ones after it.
    Target t;
    t.name = "first " + FormatSize(cfg.throughput_size) + " fetch / median of the later ones";
    t.cmp = ">=";
    t.bound = 0.8;
    if (tput.size() >= 2) {
      t.value = tput[0] / tput_later;
      char buf[96];
      std::snprintf(buf, sizeof(buf), "%.2f vs %.2f Gbit/s", tput[0], tput_later);
      t.note = buf;
      if (std::isfinite(bulk_later)) {
        std::snprintf(buf, sizeof(buf), "; TCP into new memory: %.2f",
                      bulk->bits_per_second[0] / 1e9 / bulk_later);
        t.note += buf;
      }
    } else {
      t.note = "needs --throughput-reps 2 or more";
    }
    targets.push_back(t);
  }
  {
    const Row* r = find(results, "fetch_lookup", 1 * kMiB);
    Target t;
    t.name = "fetch (lookup) 1 MiB GB/s / better iperf3 GB/s";
    t.cmp = ">=";
    t.bound = 0.5;
    if (r != nullptr && best_iperf > 0) {
      t.value = GBps(r->size, r->s.p50_us) * 8e9 / best_iperf;
      char buf[96];
      std::snprintf(buf, sizeof(buf), "%.2f vs %.2f GB/s", GBps(r->size, r->s.p50_us),
                    best_iperf / 8e9);
      t.note = buf;
      if (pinned_iperf > 0) {
        std::snprintf(buf, sizeof(buf), "; %.2f of pinned one-stream iperf3 (%.2f GB/s)",
                      GBps(r->size, r->s.p50_us) * 8e9 / pinned_iperf, pinned_iperf / 8e9);
        t.note += buf;
      }
    } else {
      t.note = r == nullptr ? "1 MiB not measured (add it to --sizes)" : "iperf3 not measured";
    }
    targets.push_back(t);
  }
  for (bool cached : {false, true}) {
    const char* op = cached ? "fetch_cached" : "fetch_lookup";
    const Row* r = find(results, op, kTargetSmall);
    const Row* p = find(interleaved, op, kPingPongBytes);
    Target t;
    t.name = std::string(cached ? "fetch (cached)" : "fetch (lookup)") +
             " 4 KiB p50 / TCP ping-pong p50";
    t.cmp = "<=";
    t.bound = cached ? 2.0 : 3.0;
    if (r != nullptr && p != nullptr && p->s.p50_us > 0) {
      t.value = r->s.p50_us / p->s.p50_us;
      char buf[160];
      std::snprintf(buf, sizeof(buf),
                    "%s / %s us (interleaved); %.2f / %.2f against the ping-pong before / after",
                    FormatUs(r->s.p50_us).c_str(), FormatUs(p->s.p50_us).c_str(),
                    r->s.p50_us / tcp_row.s.p50_us, r->s.p50_us / tcp_after_row.s.p50_us);
      t.note = buf;
    } else {
      t.note = "4 KiB not measured (add it to --sizes)";
    }
    targets.push_back(t);
  }

  // Against RDMA READ itself, measured by perftest in this run.
  if (verbs) {
    const std::string tag = emulated ? " [emulated]" : "";
    const std::string emu =
        emulated ? "; Soft-RoCE under emulation (PLASMON_RXE_VM): correctness, not speed" : "";
    Target t;
    t.name = "fetch " + FormatSize(cfg.throughput_size) + " Gbit/s / ib_read_bw Gbit/s" + tag;
    t.cmp = ">=";
    t.bound = 0.85;
    if (rdma_bw && rdma_bw->avg_bits_per_second > 0 && std::isfinite(tput_median)) {
      t.value = tput_median * 1e9 / rdma_bw->avg_bits_per_second;
      char buf[96];
      std::snprintf(buf, sizeof(buf), "%.3f vs %.3f Gbit/s (average, %s messages)", tput_median,
                    rdma_bw->avg_bits_per_second / 1e9, FormatSize(rdma_bw->size).c_str());
      t.note = buf + emu;
    } else {
      t.note = "throughput not measured";
    }
    targets.push_back(t);
    const RdmaReadLatency* lat = nullptr;
    for (const RdmaReadLatency& l : rdma_lat)
      if (l.size == kTargetSmall) lat = &l;
    for (bool cached : {false, true}) {
      const Row* r = find(results, cached ? "fetch_cached" : "fetch_lookup", kTargetSmall);
      Target u;
      u.name = std::string(cached ? "fetch (cached)" : "fetch (lookup)") +
               " 4 KiB p50 / ib_read_lat typical" + tag;
      u.cmp = "<=";
      u.bound = cached ? 2.5 : 4.0;
      if (r != nullptr && lat != nullptr && lat->typical_us > 0) {
        u.value = r->s.p50_us / lat->typical_us;
        u.note = FormatUs(r->s.p50_us) + " / " + FormatUs(lat->typical_us) + " us" + emu;
      } else {
        u.note = "4 KiB not measured (add it to --sizes)";
      }
      targets.push_back(u);
    }
  }

  if (!cfg.plot_dir.empty()) {  // tools/bench_plot.h
    std::vector<PlotRow> plotted, refs;
    for (const Row& r : results) plotted.push_back({r.op, r.label, r.size, &r.s});
    refs.push_back({tcp_row.op, tcp_row.label, tcp_row.size, &tcp_row.s});
    if (redis_row) refs.push_back({redis_row->op, redis_row->label, redis_row->size, &redis_row->s});
    Status st = WriteFetchPlots(cfg.plot_dir, plotted, refs, best_iperf / 8e9, cfg.throughput_size,
                                tput_median / 8);
    if (!st.ok()) Die("--plot", st);
  }

  // ---- output ----
  if (!cfg.json) {
    std::printf("\nresults: Fetch({id}) by a client of %s of an object held by %s "
                "(GB/s, Gbit/s: size / p50)\n",
                n2.node_id.c_str(), n1.node_id.c_str());
    PrintHeader();
    for (const Row& r : results) PrintRow(r, r.size >= 1 * kMiB);
    for (const RdmaReadLatency& l : rdma_lat) PrintRow(LatRow(l), l.size >= 1 * kMiB);
    std::printf("  (lookup: a new object each time, its location asked of Redis; cached: the "
                "location known from a fetch just before)\n");
    std::printf("\nwhere the time goes: p50 of each stage in us, as %s's store measured it "
                "(Fetch with a FetchReport; p50s do not add up)\n",
                n2.node_id.c_str());
    PrintStages(results);
    std::printf("  (client-store: the client's time less the store's, i.e. the trip to the "
                "store and back; lookup: Redis or the location cache; queue: a transfer slot "
                "and the create; dispatch: the hand-off to the thread running the pull; "
                "transfer: request to last byte; digest: the check after the last byte; back: "
                "the hand-off back to the store's loop; seal: seal, publish and reply)\n");
    if (!rdma_lat.empty())
      std::printf("  (ib_read_lat -R: perftest's RDMA READ round trip, %s reading %s's memory at "
                  "%s over rdma_cm (device %s), measured before the fetches; p50 is its typical "
                  "(median), mean its average; no p90)%s\n",
                  n2.node_id.c_str(), n1.node_id.c_str(), n1.host.address.c_str(),
                  rdma_lat[0].device.empty() ? "?" : rdma_lat[0].device.c_str(),
                  emulated ? "\n  (emulated: Soft-RoCE under TCG in tools/rxe-vm; correctness, "
                             "not speed)"
                           : "");
    if (!interleaved.empty()) {
      std::printf("  TCP ping-pong in blocks of %llu round trips between blocks of %llu 4 KiB "
                  "fetches, and again after the run:\n",
                  static_cast<unsigned long long>(kBlock), static_cast<unsigned long long>(kBlock));
      for (const Row& r : interleaved) PrintRow(r, false);
      PrintRow(tcp_after_row, false);
    }
    std::printf("\nthroughput\n");
    for (const Iperf3Result& r : iperf) {
      if (r.error.empty()) {
        std::printf("  iperf3 %s -> %s, %d stream%s%s, %d s: %.2f Gbit/s (%.2f GB/s), %llu "
                    "retransmits\n",
                    n1.node_id.c_str(), n2.node_id.c_str(), r.streams, r.streams == 1 ? "" : "s",
                    r.pinned ? " pinned as the latencies" : "", r.seconds,
                    r.bits_per_second / 1e9, r.bits_per_second / 8e9,
                    static_cast<unsigned long long>(r.retransmits));
      } else {
        std::printf("  iperf3, %d stream(s)%s: not measured: %s\n", r.streams,
                    r.pinned ? " pinned" : "", r.error.c_str());
      }
    }
    if (bulk && bulk->error.empty()) {
      std::printf("  TCP %s -> %s into %s of memory (after the fetches), %d stream%s, %zu times:",
                  n1.node_id.c_str(), n2.node_id.c_str(), FormatSize(bulk->bytes).c_str(),
                  bulk->streams, bulk->streams == 1 ? "" : "s", bulk->bits_per_second.size());
      for (double b : bulk->bits_per_second) std::printf(" %.2f", b / 1e9);
      std::printf(" Gbit/s");
      if (std::isfinite(bulk_later))
        std::printf("; median of the later ones %.2f Gbit/s (%.2f GB/s)", bulk_later,
                    bulk_later / 8);
      std::printf("\n");
    } else if (bulk) {
      std::printf("  TCP into memory: not measured: %s\n", bulk->error.c_str());
    }
    if (!tput.empty()) {
      std::printf("  fetch of a new %s object, %llu times:", FormatSize(cfg.throughput_size).c_str(),
                  static_cast<unsigned long long>(tput.size()));
      for (double g : tput) std::printf(" %.2f", g);
      std::printf(" Gbit/s; median %.2f Gbit/s (%.2f GB/s)\n", tput_median, tput_median / 8);
      // The stage a first-fetch penalty shows in (docs/BENCHMARKS.md).
      std::printf("  their transfer stage (request to last byte, in n2's store):");
      for (double ms : tput_transfer_ms) {
        if (std::isfinite(ms)) {
          std::printf(" %.1f", ms);
        } else {
          std::printf(" -");
        }
      }
      std::printf(" ms\n");
    }
    if (rdma_bw)
      std::printf("  ib_read_bw -R, %s reads %s, %llu x %s (device %s): average %.3f Gbit/s "
                  "(%.3f GB/s), peak %.3f Gbit/s, %s messages/s%s\n",
                  n2.node_id.c_str(), n1.node_id.c_str(),
                  static_cast<unsigned long long>(rdma_bw->iterations),
                  FormatSize(rdma_bw->size).c_str(),
                  rdma_bw->device.empty() ? "?" : rdma_bw->device.c_str(),
                  rdma_bw->avg_bits_per_second / 1e9, rdma_bw->avg_bits_per_second / 8e9,
                  rdma_bw->peak_bits_per_second / 1e9,
                  FormatRate(rdma_bw->msg_rate_mpps * 1e6).c_str(),
                  emulated ? " [emulated]" : "");
    std::printf("\ntransfers (node 2's Stats over the run): %llu objects fetched (%s), %llu by "
                "RDMA READ, %llu over TCP; %llu failed pulls\n",
                static_cast<unsigned long long>(fetched), FormatSize(fetched_bytes).c_str(),
                static_cast<unsigned long long>(fetched_verbs),
                static_cast<unsigned long long>(fetched - fetched_verbs),
                static_cast<unsigned long long>(pulls_failed));
    if (verbs)
      std::fputs(fetched_verbs == fetched
                     ? "  --transport verbs: every fetch went by RDMA\n"
                     : "  warning: --transport verbs, but not every fetch went by RDMA\n",
                 stdout);
    std::printf("\ntargets\n");
    if (PingPongSpread(tcp_row, tcp_after_row, interleaved) > kMaxSpread)
      std::printf("  warning: the TCP ping-pong's p50 moved by more than %.0f%% during the run "
                  "(before, between the 4 KiB fetches, after): the latency ratios are unreliable "
                  "(unpinned? see --pin)\n",
                  100 * (kMaxSpread - 1));
    int width = 48;
    for (const Target& t : targets) width = std::max(width, static_cast<int>(t.name.size()));
    for (const Target& t : targets)
      std::printf("%s  %s\n", TargetLine(t, width).c_str(), t.note.c_str());
    std::fflush(stdout);
  } else {
    std::string j = "{\n  \"tool\": \"plasmon-bench fetch\", \"schema\": 1,\n";
    j += "  \"machine\": " + MachineJson(machine) + ",\n";
    j += "  \"config\": {\"cluster_dir\": " + JsonString(cluster.dir) +
         ", \"started_cluster\": " + (cluster.started ? "true" : "false") +
         ", \"mode\": " + JsonString(cluster.mode) +
         ", \"transport\": " + (cfg.transport.empty() ? "null" : JsonString(cfg.transport)) +
         ", \"emulated_rdma\": " + (emulated ? "true" : "false") + ", \"holder\": " + NodeJson(n1) +
         ", \"fetcher\": " + NodeJson(n2) + ", \"pin\": " +
         (pin1 >= 0 ? "[" + std::to_string(pin1) + ", " + std::to_string(pin2) + "]" : "null") +
         ", \"tcp_congestion\": " + JsonString(congestion) +
         ", \"store_capacity\": " + std::to_string(capacity) +
         ", \"iterations\": " + std::to_string(cfg.iterations) +
         ", \"warmup\": " + std::to_string(cfg.warmup) +
         ", \"timeout_ms\": " + std::to_string(cfg.timeout_ms) + "},\n";
    j += "  \"references\": {\n    \"tcp_pingpong\": " + RowJson(tcp_row) +
         ",\n    \"tcp_pingpong_after\": " + RowJson(tcp_after_row) +
         ",\n    \"tcp_pingpong_interleaved\": {";
    for (size_t i = 0; i < interleaved.size(); i++)
      j += std::string(i > 0 ? ", " : "") + JsonString(interleaved[i].op) + ": " +
           RowJson(interleaved[i]);
    j += "},\n    \"ipc_pingpong\": " + RowJson(ipc_row) +
         ",\n    \"redis_get\": " + (redis_row ? RowJson(*redis_row) : "null") +
         ", \"redis_error\": " + (redis.error.empty() ? "null" : JsonString(redis.error)) +
         ",\n    \"iperf3\": [";
    for (size_t i = 0; i < iperf.size(); i++) {
      const Iperf3Result& r = iperf[i];
      j += std::string(i > 0 ? "," : "") + "\n      {\"streams\": " + std::to_string(r.streams) +
           ", \"seconds\": " + std::to_string(r.seconds) +
           ", \"bits_per_second\": " + JsonNumber(r.bits_per_second) +
           ", \"retransmits\": " + std::to_string(r.retransmits) +
           ", \"pinned\": " + (r.pinned ? "true" : "false") +
           ", \"error\": " + (r.error.empty() ? "null" : JsonString(r.error)) + "}";
    }
    j += "\n    ],\n    \"tcp_bulk\": ";
    if (!bulk) {
      j += "null";
    } else {
      j += "{\"bytes\": " + std::to_string(bulk->bytes) +
           ", \"streams\": " + std::to_string(bulk->streams) + ", \"bits_per_second\": [";
      for (size_t i = 0; i < bulk->bits_per_second.size(); i++)
        j += std::string(i > 0 ? ", " : "") + JsonNumber(bulk->bits_per_second[i]);
      j +=
          "], \"error\": " + (bulk->error.empty() ? std::string("null") : JsonString(bulk->error)) +
          "}";
    }
    j += ",\n    \"rdma\": ";
    if (!verbs) {
      j += "null";
    } else {
      j += "{\"emulated\": " + std::string(emulated ? "true" : "false") +
           ", \"client\": " + JsonString(n2.host.address) +
           ", \"server\": " + JsonString(n1.host.address) +
           ", \"port\": " + std::to_string(cfg.perftest_port) + ",\n      \"ib_read_lat\": [";
      for (size_t i = 0; i < rdma_lat.size(); i++)
        j += std::string(i > 0 ? "," : "") + "\n        " + LatJson(rdma_lat[i]);
      j += "],\n      \"ib_read_bw\": " + (rdma_bw ? BwJson(*rdma_bw) : "null") + "}";
    }
    j += "\n  },\n  \"results\": [";
    for (size_t i = 0; i < results.size(); i++)
      j += std::string(i > 0 ? "," : "") + "\n    " + RowJson(results[i]);
    j += "\n  ],\n  \"tcp_pingpong_spread\": " +
         JsonNumber(PingPongSpread(tcp_row, tcp_after_row, interleaved)) +
         ",\n  \"fetch_counters\": {\"node_id\": " + JsonString(n2.node_id) +
         ", \"fetched\": " + std::to_string(fetched) +
         ", \"fetched_bytes\": " + std::to_string(fetched_bytes) +
         ", \"fetched_verbs\": " + std::to_string(fetched_verbs) +
         ", \"pulls_failed\": " + std::to_string(pulls_failed) + "}" +
         ",\n  \"throughput\": ";
    if (tput.empty()) {
      j += "null";
    } else {
      j += "{\"size\": " + std::to_string(cfg.throughput_size) +
           ", \"repetitions\": " + std::to_string(tput.size()) + ", \"gbit_per_s\": [";
      for (size_t i = 0; i < tput.size(); i++) j += (i > 0 ? ", " : "") + JsonNumber(tput[i]);
      j += "], \"transfer_ms\": [";
      for (size_t i = 0; i < tput_transfer_ms.size(); i++)
        j += (i > 0 ? ", " : "") + JsonNumber(tput_transfer_ms[i]);
      j += "], \"median_gbit_per_s\": " + JsonNumber(tput_median) +
           ", \"median_gb_per_s\": " + JsonNumber(tput_median / 8) + "}";
    }
    j += ",\n  \"targets\": " + TargetsJson(targets, false) + "\n}\n";
    std::fputs(j.c_str(), stdout);
    std::fflush(stdout);
  }

  c1.Disconnect();
  c2.Disconnect();
  if (cluster.started) {
    if (cfg.keep) {
      g_down_armed.store(false);
      Note("the cluster is still up: tools/plasmon-cluster down --dir " + cluster.dir);
    } else {
      StopCluster(cluster);
    }
  }
  return 0;
}

}  // namespace plasmon::bench
