// plasmon-store: the per-node store daemon.
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>

#include "core/arena.h"
#include "core/size.h"
#include "store/store.h"
#include "store/wait_queue.h"
#include "transport/factory.h"

namespace {
plasmon::Store* volatile g_store = nullptr;

// A --log-level in any case; nullopt for anything else (spdlog's own
// from_str turns every unknown name into "off", hiding all errors).
std::optional<spdlog::level::level_enum> ParseLogLevel(std::string name) {
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (name == "warn") name = "warning";
  if (name == "err") name = "error";
  for (int l = spdlog::level::trace; l < spdlog::level::n_levels; l++) {
    auto level = static_cast<spdlog::level::level_enum>(l);
    spdlog::string_view_t n = spdlog::level::to_string_view(level);
    if (name == std::string_view(n.data(), n.size())) return level;
  }
  return std::nullopt;
}

volatile sig_atomic_t g_stop_requested = 0;
// Installed before the socket exists: a SIGTERM that comes while the store
// starts is remembered (not the default action, which would leave the socket).
void OnSignal(int) {
  g_stop_requested = 1;
  plasmon::Store* s = g_store;
  if (s != nullptr) s->Stop();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"plasmon-store: the plasmon object store daemon for one node"};
  app.set_version_flag("--version", PLASMON_VERSION);
  plasmon::StoreOptions opts;
  opts.socket_path = "/tmp/plasmon.sock";
  std::string memory = "1G", log_level = "info", socket_mode = "0600";
  app.add_option("-s,--socket", opts.socket_path, "Unix socket clients connect to")
      ->capture_default_str();
  app.add_option("-m,--memory", memory,
                 "Capacity for objects, e.g. 512M, 4G (used exactly, in whole 64-byte allocation "
                 "units; the arena behind it is rounded up to a page)")
      ->capture_default_str();
  app.add_option("-d,--directory", opts.arena.directory,
                 "Back the arena with a file in this directory (e.g. a hugetlbfs mount) "
                 "instead of an anonymous memfd");
  app.add_flag("--hugepages", opts.arena.hugepages, "Use 2 MiB huge pages (MFD_HUGETLB)");
  app.add_flag("--prefault", opts.arena.prefault,
               "Populate every arena page at start (first writes then run at memory speed)");
  bool no_shared_index = false;
  app.add_flag("--no-shared-index", no_shared_index,
               "Serve every request through the socket: no shared index, so clients get, release "
               "and test objects with a round trip each (the fast path off, for comparison)");
  std::string socket_group;
  app.add_option("--socket-group", socket_group,
                 "Let this group's members connect: the socket gets this group and mode 0660 "
                 "(unless --socket-mode says otherwise)");
  app.add_option("--socket-mode", socket_mode, "Octal file mode of the socket")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off (any case)")
      ->capture_default_str();
  std::string backlog = "64M";
  app.add_option("--max-client-backlog", backlog,
                 "A client whose unread replies exceed this is disconnected, so that one that "
                 "never reads cannot stall the store (subscribers: at most 16M)")
      ->capture_default_str();
  // Waiting requests: IDs per client and in all (the store's memory for them).
  const uint64_t min_waiting = plasmon::WaitBudget::ChargeOf(1), max_waiting = uint64_t{1} << 32;
  app.add_option("--max-waiting-ids-per-client", opts.max_waiting_ids_per_client,
                 "IDs that one client's waiting Gets and Fetches may name together (each request "
                 "counts 16 more); a request past it is refused with OutOfMemory")
      ->check(CLI::Range(min_waiting, max_waiting))
      ->capture_default_str();
  app.add_option("--max-wheres", opts.max_wheres,
                 "Where requests (directory lookups) all clients may have in flight; one past it "
                 "is refused with OutOfMemory (each client may have 64)")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
  app.add_option("--max-waiting-ids", opts.max_waiting_ids,
                 "IDs that all clients' waiting Gets and Fetches may name together (about 100 "
                 "bytes of store memory each)")
      ->check(CLI::Range(min_waiting, max_waiting))
      ->capture_default_str();
  app.add_option("--metrics", opts.metrics_listen,
                 "Serve Prometheus metrics at http://ADDR:PORT/metrics (e.g. 127.0.0.1:9464; "
                 "port 0: any free port, logged), on threads of their own");
  plasmon::DirectoryOptions dir;
  char host[256] = "node";
  ::gethostname(host, sizeof(host) - 1);
  dir.node_id = host;
  std::string password_file;
  app.add_option("--redis", dir.redis,
                 "Join a cluster: publish object locations in Redis at HOST:PORT or unix:PATH");
  app.add_option("--redis-password", dir.password, "Redis AUTH password");
  app.add_option("--redis-password-file", password_file, "Read the Redis AUTH password from a file");
  app.add_option("--redis-prefix", dir.prefix, "Prefix of every key plasmon writes in Redis")
      ->capture_default_str();
  app.add_option("--node-id", dir.node_id, "This node's name in the cluster (default: hostname)");
  app.add_option("--node-ttl-ms", dir.ttl_ms,
                 "A node record lives this long without a heartbeat")->capture_default_str();
  app.add_option("--node-cache-ms", dir.node_cache_ms,
                 "Fetches reuse holders' node records looked up less than this long ago and ask "
                 "Redis only for the object's record (0: ask for both every time)")
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  plasmon::TcpTransportOptions tcp;
  std::string listen, secret_file;
  app.add_option("--listen", listen,
                 "Serve objects to other stores over TCP at ADDR:PORT (needs --redis); "
                 "enables Fetch");
  app.add_option("--advertise", tcp.advertise,
                 "Address peers dial, if --listen binds 0.0.0.0 (ADDR or ADDR:PORT)");
  app.add_option("--cluster-secret-file", secret_file,
                 "File holding the secret every store of the cluster shares; peers without "
                 "it are refused (also: $PLASMON_CLUSTER_SECRET)");
  app.add_option("--transfer-streams", tcp.streams,
                 "TCP connections one large object is pulled over in parallel")
      ->capture_default_str();
  CLI::Option* congestion =
      app.add_option("--tcp-congestion", tcp.congestion,
                     "Congestion control of the TCP transport's connections ('default' keeps "
                     "the host's); named here, the store refuses to start without it")
          ->capture_default_str();
  app.add_option("--transfer-threads", opts.transfer_threads, "Pulls in flight at once")
      ->capture_default_str();
  app.add_option("--busy-poll-us", opts.busy_poll_us,
                 "While a small pull or a directory lookup is unanswered, the store's loop "
                 "polls for the answer for up to this long instead of sleeping (saves a "
                 "thread wake-up per fetch; costs CPU only while an answer is due). 0: never")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  // Fetching from holders that do not answer (issue 10).
  app.add_option("--dial-timeout-ms", tcp.dial_timeout_ms,
                 "Connecting to a holder and the handshake together end within this; a holder "
                 "that misses it is suspect for 10 s (tried last, one pull at a time)")
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  app.add_option("--transfer-threads-per-holder", opts.transfer_threads_per_holder,
                 "Pulls in flight from one holder at most (default: half of --transfer-threads, "
                 "at least 1), so that one hung holder cannot stall the others' pulls")
      ->check(CLI::Range(1, 256));
  std::string transport = "auto", rdma_addr;
  app.add_option("--transport", transport,
                 "tcp: TCP only. verbs: RDMA READ through rdma_cm, required to work (TCP stays "
                 "on for peers without RDMA when --listen is given). auto: verbs if an RDMA "
                 "device owns the RDMA address, else TCP only")
      ->check(CLI::IsMember({"tcp", "verbs", "auto"}))
      ->capture_default_str();
  app.add_option("--rdma-addr", rdma_addr,
                 "ADDR[:PORT] of the RDMA-capable interface peers read from (default: the "
                 "--listen address, ephemeral port)");
  // Peers that have not finished their TCP handshake (docs/SECURITY.md, "Peer stores").
  app.add_option("--peer-handshake-timeout-ms", tcp.handshake_timeout_ms,
                 "A connecting peer must finish its handshake within this long, or it is "
                 "disconnected")
      ->check(CLI::Range(1, 3600000))
      ->capture_default_str();
  app.add_option("--peer-handshakes-per-address", tcp.max_handshakes_per_address,
                 "Connections one peer address may have in their handshake at once; more are "
                 "refused")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  app.add_option("--peer-max-handshakes", tcp.max_handshakes,
                 "Connections in their handshake at once, all addresses together; past it the "
                 "oldest is dropped. They never take the slots of handshaken peers")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  opts.shared_index = !no_shared_index;
  if (tcp.congestion == "default") tcp.congestion.clear();
  tcp.congestion_required = congestion->count() > 0 && !tcp.congestion.empty();

  std::optional<spdlog::level::level_enum> level = ParseLogLevel(log_level);
  if (!level) {
    std::fprintf(stderr, "plasmon-store: invalid --log-level '%s' (trace, debug, info, warn, "
                         "error, critical or off)\n", log_level.c_str());
    return 2;
  }
  spdlog::set_level(*level);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ plasmon-store: %v");
  std::optional<uint64_t> size = plasmon::ParseSize(memory);
  if (!size || *size == 0) {
    std::fprintf(stderr, "plasmon-store: invalid --memory '%s' (expected e.g. 512M, 4G%s)\n",
                 memory.c_str(), size ? "" : "; at most 64T");
    return 2;
  }
  opts.arena.size = *size;
  // Before anything starts: a size the host cannot back would fail only
  // when the arena fills, by the OOM killer.
  plasmon::Result<std::string> backing = plasmon::CheckArenaBacking(opts.arena);
  if (!backing.ok()) {
    std::fprintf(stderr, "plasmon-store: invalid --memory '%s': %s\n", memory.c_str(),
                 backing.status().message().c_str());
    return 2;
  }
  if (!backing->empty())
    spdlog::warn("--memory {}: {} (--prefault would refuse it)", memory, *backing);
  std::optional<uint64_t> max_backlog = plasmon::ParseSize(backlog);
  if (!max_backlog || *max_backlog < 4096) {
    std::fprintf(stderr, "plasmon-store: invalid --max-client-backlog '%s' (at least 4K)\n",
                 backlog.c_str());
    return 2;
  }
  opts.max_client_backlog = *max_backlog;
  char* end = nullptr;
  unsigned long mode = std::strtoul(socket_mode.c_str(), &end, 8);
  if (end == socket_mode.c_str() || *end != '\0' || mode > 0777) {
    std::fprintf(stderr, "plasmon-store: invalid --socket-mode '%s'\n", socket_mode.c_str());
    return 2;
  }
  opts.socket_mode = static_cast<unsigned>(mode);
  if (!socket_group.empty()) {
    struct group* g = ::getgrnam(socket_group.c_str());
    if (g == nullptr) {
      std::fprintf(stderr, "plasmon-store: no group '%s' (--socket-group)\n", socket_group.c_str());
      return 2;
    }
    opts.socket_group = static_cast<int>(g->gr_gid);
    if (app.count("--socket-mode") == 0) opts.socket_mode = 0660;
  }
  if (!password_file.empty()) {
    std::ifstream f(password_file);
    if (!f || !std::getline(f, dir.password)) {
      std::fprintf(stderr, "plasmon-store: cannot read --redis-password-file %s\n",
                   password_file.c_str());
      return 2;
    }
  }
  if (!dir.redis.empty()) {
    std::string h, path;
    int port = 0;
    if (auto st = plasmon::ParseRedisAddress(dir.redis, &h, &port, &path); !st.ok()) {
      std::fprintf(stderr, "plasmon-store: %s\n", st.message().c_str());
      return 2;
    }
    if (dir.node_id.empty() || dir.node_id.size() > 255) {
      std::fprintf(stderr, "plasmon-store: --node-id must be 1 to 255 characters\n");
      return 2;
    }
    if (dir.ttl_ms < 1000) {
      std::fprintf(stderr, "plasmon-store: --node-ttl-ms must be at least 1000\n");
      return 2;
    }
    dir.heartbeat_ms = std::max(200, dir.ttl_ms / 4);
    opts.directory = dir;
  }

  plasmon::TransportConfig tc;
  tc.mode = transport;
  tc.listen = listen;
  tc.rdma_addr = rdma_addr;
  tc.node_name = dir.node_id;
  tc.tcp = tcp;
  if (plasmon::WantsTransports(tc)) {
    if (!opts.directory) {
      std::fprintf(stderr, "plasmon-store: --listen and --rdma-addr need --redis (peers find "
                           "this store there)\n");
      return 2;
    }
    if (const char* env = std::getenv("PLASMON_CLUSTER_SECRET")) tc.secret = env;
    if (!secret_file.empty()) {
      std::ifstream f(secret_file);
      if (!f || !std::getline(f, tc.secret) || tc.secret.empty()) {
        std::fprintf(stderr, "plasmon-store: cannot read a secret from --cluster-secret-file %s\n",
                     secret_file.c_str());
        return 2;
      }
    }
    if (tcp.streams < 1 || tcp.streams > 64 || opts.transfer_threads < 1 ||
        opts.transfer_threads > 256) {
      std::fprintf(stderr,
                   "plasmon-store: --transfer-streams must be 1..64, --transfer-threads 1..256\n");
      return 2;
    }
    // Each store's two handshake deadlines stand for the cluster's (they
    // should be alike on every store): a holder cuts a handshake at its
    // --peer-handshake-timeout-ms, so a longer dial deadline buys nothing.
    if (tcp.dial_timeout_ms > tcp.handshake_timeout_ms)
      spdlog::warn("--dial-timeout-ms {} is longer than --peer-handshake-timeout-ms {}: holders "
                   "with these flags cut a pull's handshake after {} ms, so the longer dial "
                   "deadline buys nothing; set both alike on every store (docs/SECURITY.md, "
                   "\"Peer stores\")",
                   tcp.dial_timeout_ms, tcp.handshake_timeout_ms, tcp.handshake_timeout_ms);
    auto transports = plasmon::MakeTransports(tc);
    if (!transports.ok()) {
      std::fprintf(stderr, "plasmon-store: %s\n", transports.status().IsInvalidArgument()
                                                      ? transports.status().message().c_str()
                                                      : transports.status().ToString().c_str());
      return transports.status().IsInvalidArgument() ? 2 : 1;
    }
    opts.transports = std::move(*transports);
  }

  // Each client is a descriptor: allow as many as the hard limit permits.
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }

  signal(SIGPIPE, SIG_IGN);  // before any thread starts: peers and Redis may hang up
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  auto store = plasmon::Store::Create(opts);
  if (!store.ok()) {
    std::fprintf(stderr, "plasmon-store: %s\n", store.status().ToString().c_str());
    return 1;
  }
  g_store = store->get();
  if (g_stop_requested) (*store)->Stop();  // a signal came while it started
  plasmon::Status st = (*store)->Run();
  g_store = nullptr;
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  return 0;
}
