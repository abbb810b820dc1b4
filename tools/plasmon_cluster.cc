// plasmon-cluster: a plasmon cluster on one machine, for trying Fetch out
// (tools/plasmon-cluster runs this command of a build; --help for the flags).
//   up [--nodes N] [--dir DIR] [--mode netns|loopback|hosts] [--addresses A1,...] ...
//      [-- plasmon-store flags]; status; exec I [-- CMD]; down [--name NAME]
// One redis-server on a Unix socket in DIR and N plasmon-store daemons: in
// netns mode (the default as root) store i in namespace NAME-n<i> at
// 10.SUBNET.0.<i>/24, its veth on a bridge in NAME-hub; in loopback mode on
// 127.0.0.1:PORT+i; in hosts mode on A_i:PORT+i. Only namespaces NAME-* are
// touched. DIR holds cluster.env (shell-sourceable), the secret, sockets,
// logs and pid files ("PID START_TIME": a reused pid is never ours). status
// and down find the processes by them (a store whose pid file exists but
// that has not exec'd yet is 'starting'), or by their sockets and working
// directory when DIR lost them.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include "plasmon/client.h"
#include "tools/cluster/process.h"
#include "tools/cluster/services.h"

#ifndef PLASMON_SOURCE_DIR
#define PLASMON_SOURCE_DIR "."
#endif

namespace plasmon::cluster {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

void Note(const std::string& m) { std::fprintf(stderr, "plasmon-cluster: %s\n", m.c_str()); }
int Fail(const std::string& m) {
  Note(m);
  return 1;
}

volatile std::sig_atomic_t g_signal = 0;

struct Config {
  std::string dir, name = "plc", mode = "auto", addresses, memory = "1G", build, secret_file;
  std::string log_level = "info", bin, state, prefix = "plasmon";
  int nodes = 2, subnet = 213, port = 7400, wait_s = 10;
  bool prefault = false, secret_generated = false, name_given = false;
  std::vector<std::string> extra, namespaces, hosts;  // hosts: the nodes' addresses
};

std::string Ns(const Config& c, int i) { return c.name + "-n" + std::to_string(i); }
std::string Endpoint(const Config& c, int i) {
  if (c.mode == "netns")
    return "10." + std::to_string(c.subnet) + ".0." + std::to_string(i) + ":" +
           std::to_string(c.port);
  std::string host = c.mode == "hosts" ? c.hosts[static_cast<size_t>(i - 1)] : "127.0.0.1";
  return host + ":" + std::to_string(c.port + i);
}
std::string Path(const Config& c, const std::string& f) { return c.dir + "/" + f; }
std::string Node(int i, const char* suffix) { return "n" + std::to_string(i) + suffix; }

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string w; std::getline(ss, w, sep);)
    if (!w.empty()) out.push_back(w);
  return out;
}

// (Not std::regex: GCC 12's <regex> trips -Wmaybe-uninitialized in the sanitizer builds.)
bool AllOf(const std::string& s, const char* chars) {
  return !s.empty() && s.find_first_not_of(chars) == std::string::npos;
}
bool IsName(const std::string& s) {
  return s.size() <= 8 &&
         AllOf(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
}
// "n<digits>" + suffix
bool IsNodeFile(const std::string& f, const std::string& suffix) {
  return f.size() > suffix.size() + 1 && f[0] == 'n' && f.ends_with(suffix) &&
         AllOf(f.substr(1, f.size() - 1 - suffix.size()), "0123456789");
}

std::string Join(const std::vector<std::string>& v, const char* sep = " ") {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// ---- cluster.env ----

void WriteEnv(const Config& c, const std::string& state) {
  char when[32];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::ofstream f(Path(c, "cluster.env.tmp"), std::ios::trunc);
  f << "# plasmon-cluster " << state << " " << when << "; source it: . " << c.dir
    << "/cluster.env\n";
  auto var = [&](const std::string& k, const std::string& v) {
    f << k << "=" << ShellQuote(v) << "\n";
  };
  var("PLASMON_CLUSTER_STATE", state);
  var("PLASMON_CLUSTER_DIR", c.dir);
  var("PLASMON_CLUSTER_NAME", c.name);
  var("PLASMON_CLUSTER_MODE", c.mode);
  var("PLASMON_NODES", std::to_string(c.nodes));
  var("PLASMON_REDIS", "unix:" + Path(c, "redis.sock"));
  var("PLASMON_REDIS_SOCKET", Path(c, "redis.sock"));
  var("PLASMON_REDIS_PREFIX", c.prefix);
  var("PLASMON_BIN", c.bin);
  var("PLASMON_SECRET_FILE", c.secret_file);
  var("PLASMON_SECRET_GENERATED", c.secret_generated ? "1" : "0");
  var("PLASMON_SUBNET", std::to_string(c.subnet));
  var("PLASMON_PORT", std::to_string(c.port));
  f << "PLASMON_NAMESPACES=\"" << Join(c.namespaces) << "\"\n";  // names are [A-Za-z0-9-]
  var("PLASMON_ADDRESSES", Join(c.hosts, ","));
  for (int i = 1; i <= c.nodes; i++) {
    std::string n = std::to_string(i);
    var("PLASMON_NODE_ID_" + n, "n" + n);
    var("PLASMON_SOCKET_" + n, Path(c, Node(i, ".sock")));
    var("PLASMON_ENDPOINT_" + n, Endpoint(c, i));
    if (c.mode == "netns") var("PLASMON_NS_" + n, Ns(c, i));
  }
  f.close();
  fs::rename(Path(c, "cluster.env.tmp"), Path(c, "cluster.env"));
}

// Loads DIR/cluster.env into *c; false if there is none.
bool LoadEnv(Config* c) {
  if (!fs::exists(Path(*c, "cluster.env"))) return false;
  Result<std::map<std::string, std::string>> env = ReadEnvFile(Path(*c, "cluster.env"));
  if (!env.ok()) {
    Note(env.status().message());
    std::exit(1);
  }
  std::map<std::string, std::string>& e = *env;
  c->name = e["PLASMON_CLUSTER_NAME"];
  c->mode = e["PLASMON_CLUSTER_MODE"];
  c->nodes = std::atoi(e["PLASMON_NODES"].c_str());
  if (!e["PLASMON_BIN"].empty()) c->bin = e["PLASMON_BIN"];
  c->subnet = std::atoi(e["PLASMON_SUBNET"].c_str());
  c->port = std::atoi(e["PLASMON_PORT"].c_str());
  c->hosts = Split(e["PLASMON_ADDRESSES"], ',');
  c->secret_file = e["PLASMON_SECRET_FILE"];
  c->secret_generated = e["PLASMON_SECRET_GENERATED"] == "1";
  c->state = e["PLASMON_CLUSTER_STATE"];
  c->prefix = e["PLASMON_REDIS_PREFIX"];
  c->namespaces = Split(e["PLASMON_NAMESPACES"], ' ');
  return true;
}

// ---- finding the cluster's processes ----

bool ServesDirSocket(const Config& c, pid_t pid) {
  for (const std::string& a : Cmdline(pid))
    if (a.rfind(c.dir + "/", 0) == 0 && IsNodeFile(a.substr(c.dir.size() + 1), ".sock"))
      return true;
  return false;
}

// Node i's process, if its pid file names a live one; *store: it is
// plasmon-store serving DIR/n<i>.sock already (else it is still starting).
std::optional<ProcessId> NodeProcess(const Config& c, int i, bool* store) {
  std::optional<ProcessId> id = LiveFromPidFile(Path(c, Node(i, ".pid")));
  const std::vector<std::string> argv = id ? Cmdline(id->pid) : std::vector<std::string>{};
  *store = id && Comm(id->pid) == "plasmon-store" &&
           std::find(argv.begin(), argv.end(), Path(c, Node(i, ".sock"))) != argv.end();
  return id;
}

// Every live plasmon-store of DIR: by pid file, or serving a socket DIR/n<i>.sock.
std::vector<ProcessId> StoreProcesses(const Config& c) {
  std::vector<ProcessId> ids;
  for (int i = 1; i <= c.nodes; i++) {
    bool store;
    if (std::optional<ProcessId> id = NodeProcess(c, i, &store)) ids.push_back(*id);
  }
  for (pid_t pid : ProcessesNamed("plasmon-store")) {
    bool known =
        std::any_of(ids.begin(), ids.end(), [&](const ProcessId& id) { return id.pid == pid; });
    if (!known && ServesDirSocket(c, pid))
      if (std::optional<ProcessId> id = Identify(pid)) ids.push_back(*id);
  }
  return ids;
}

// Our redis-server: by pid file, or (DIR lost it) the one working in DIR.
std::optional<ProcessId> RedisProcess(const Config& c) {
  if (std::optional<ProcessId> id = LiveFromPidFile(Path(c, "redis.pid")))
    if (Comm(id->pid) == "redis-server") return id;
  for (pid_t pid : ProcessesNamed("redis-server")) {
    std::error_code ec;
    std::string cwd = fs::read_symlink("/proc/" + std::to_string(pid) + "/cwd", ec).string();
    std::string title = Join(Cmdline(pid));
    if (cwd == c.dir || cwd == c.dir + " (deleted)" ||
        title.find("unixsocket:" + Path(c, "redis.sock")) != std::string::npos)
      return Identify(pid);
  }
  return std::nullopt;
}

bool ClusterRemains(const Config& c) {
  return RedisProcess(c) || !StoreProcesses(c).empty() ||
         std::any_of(c.namespaces.begin(), c.namespaces.end(), Network::Exists);
}

std::string Pids(const std::vector<ProcessId>& ids) {
  std::vector<std::string> p;
  for (const ProcessId& id : ids) p.push_back(std::to_string(id.pid));
  return Join(p);
}

void Stop(const std::vector<ProcessId>& ids, int grace_s) {
  std::vector<ProcessId> killed = StopProcesses(ids, grace_s * 1000);
  if (!killed.empty())
    Note("killing " + Pids(killed) + " (still running " + std::to_string(grace_s) +
         "s after SIGTERM)");
}

// down, and what a failed up leaves: the stores, whatever else runs in the
// namespaces (commands started with exec), Redis, the namespaces, then the
// sockets, pid files and generated secret. Logs stay.
void Teardown(const Config& c) {
  std::vector<ProcessId> stores = StoreProcesses(c);
  if (!stores.empty()) {
    Note("stopping " + std::to_string(stores.size()) + " store(s) (pids " + Pids(stores) + ")");
    Stop(stores, 5);
  }
  std::vector<ProcessId> others;
  for (const std::string& ns : c.namespaces) {
    if (!Network::Exists(ns)) continue;
    for (const std::string& p : Split(RunCommand({"ip", "netns", "pids", ns}).out, '\n'))
      if (std::optional<ProcessId> id = Identify(std::atoi(p.c_str()))) others.push_back(*id);
  }
  if (!others.empty()) {
    Note("stopping " + std::to_string(others.size()) +
         " other process(es) in the cluster's namespaces (pids " + Pids(others) + ")");
    Stop(others, 3);
  }
  if (std::optional<ProcessId> redis = RedisProcess(c)) {
    Note("stopping redis-server (pid " + std::to_string(redis->pid) + ")");
    Stop({*redis}, 5);
  }
  for (const std::string& ns : c.namespaces)
    if (!Network::Delete({ns}).ok()) Note("could not delete namespace " + ns);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(c.dir, ec)) {
    std::string f = e.path().filename().string();
    if (f.ends_with(".sock") || f.ends_with(".pid") || f.ends_with(".pid.tmp") ||
        f.rfind("cluster.env", 0) == 0 || (f == "secret" && c.secret_generated))
      fs::remove(e.path(), ec);
  }
}

// One up or down at a time per DIR (the lock goes with this process; one
// that was just killed may take a moment to let it go).
bool LockDir(const Config& c) {
  int fd = ::open(Path(c, ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  for (int i = 0; fd >= 0 && i < 40; i++) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  Note("another plasmon-cluster up/down is running on " + c.dir);
  return false;
}

std::string Absolute(const std::string& p) {
  std::error_code ec;
  fs::path a = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? p : a.string();
}

std::string Short(const std::string& p) {
  std::string cwd = fs::current_path().string() + "/";
  return p.rfind(cwd, 0) == 0 ? p.substr(cwd.size()) : p;
}

void LogTail(const std::string& f) {
  std::ifstream in(f);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::fprintf(stderr, lines.empty() ? "(%s is empty)\n" : "---- last lines of %s ----\n",
               f.c_str());
  for (size_t i = lines.size() > 20 ? lines.size() - 20 : 0; i < lines.size(); i++)
    std::fprintf(stderr, "    %s\n%s", lines[i].c_str(), i + 1 == lines.size() ? "----\n" : "");
}

bool PortInUse(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_ANY);  // collides with a listener on any address
  bool used =
      fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 && errno == EADDRINUSE;
  if (fd >= 0) ::close(fd);
  return used;
}

std::string CheckPorts(const Config& c) {
  for (int i = 1; i <= c.nodes; i++)
    if (PortInUse(c.port + i))
      return "port " + std::to_string(c.port + i) + " on this host is in use (" + c.mode +
             " mode uses --port+i); pick another --port";
  return "";
}

// Hosts mode: at least one IPv4 address of this host per node.
std::string CheckAddresses(Config* c) {
  std::vector<std::string> list = Split(c->addresses, ',');
  if (static_cast<int>(list.size()) < c->nodes)
    return "--addresses has " + std::to_string(list.size()) + " address(es) for " +
           std::to_string(c->nodes) + " node(s); give at least one per node";
  for (size_t i = 0; i < list.size(); i++) {
    in_addr a;
    if (::inet_pton(AF_INET, list[i].c_str(), &a) != 1)
      return "--addresses: '" + list[i] + "' is not an IPv4 address";
    if (static_cast<int>(i) < c->nodes && !FindExecutable("ip").empty() &&
        RunCommand({"ip", "-o", "route", "get", list[i]}).out.rfind("local ", 0) != 0)
      return "--addresses: " + list[i] + " is not an address of this host";
  }
  list.resize(static_cast<size_t>(c->nodes));
  c->hosts = list;
  return "";
}

// ---- up ----

// Node i answers (Stats) and its record is in Redis; "" or why not.
std::string NodeReady(const Config& c, int i) {
  std::string sock = Path(c, Node(i, ".sock"));
  if (!fs::is_socket(sock)) return "has no socket";
  Client client;
  if (!client.Connect(sock).ok() || !client.Stats().ok()) return "does not answer";
  Result<std::vector<std::string>> e =
      RedisQuery(Path(c, "redis.sock"), {"EXISTS", c.prefix + ":node:n" + std::to_string(i)});
  if (!e.ok() || *e != std::vector<std::string>{"1"})
    return "did not register in Redis (" + c.prefix + ":node:n" + std::to_string(i) + ")";
  return "";
}

void PrintSummary(const Config& c) {
  std::string cli = Short(c.bin + "/plasmon"),
              me = Short(std::string(PLASMON_SOURCE_DIR) + "/tools/plasmon-cluster");
  std::printf("plasmon cluster '%s' is up: %d node(s), %s mode, in %s\n", c.name.c_str(), c.nodes,
              c.mode.c_str(), c.dir.c_str());
  std::printf("  redis  unix:%s/redis.sock  (log %s/redis.log)\n", c.dir.c_str(), c.dir.c_str());
  int digits = static_cast<int>(std::to_string(c.nodes).size());
  int w_ns = std::max(9, c.mode == "netns" ? static_cast<int>(c.name.size()) + digits + 2 : 9);
  int w_sock = static_cast<int>(c.dir.size()) + digits + 7;
  auto row = [&](const std::string& a, const std::string& b, const std::string& e,
                 const std::string& s, const std::string& l) {
    std::printf("  %-5s %-*s  %-21s  %-*s  %s\n", a.c_str(), w_ns, b.c_str(), e.c_str(), w_sock,
                s.c_str(), l.c_str());
  };
  row("node", "namespace", "transfer endpoint", "socket", "log");
  for (int i = 1; i <= c.nodes; i++)
    row(Node(i, ""), c.mode == "netns" ? Ns(c, i) : "-", Endpoint(c, i), Path(c, Node(i, ".sock")),
        Path(c, Node(i, ".log")));
  const char* d = c.dir.c_str();
  int last = c.nodes > 1 ? 2 : 1;
  std::printf("Try:\n  id=$(%s -s %s/n1.sock put FILE)\n  %s -s %s/n1.sock where $id\n",
              cli.c_str(), d, cli.c_str(), d);
  std::printf("  %s -s %s/n%d.sock fetch $id\n  %s -s %s/n%d.sock get $id | sha256sum\n",
              cli.c_str(), d, last, cli.c_str(), d, last);
  std::printf("  %s exec --dir %s %d -- ip addr   # a command on node %d (%s)\n", me.c_str(), d,
              last, last, c.mode.c_str());
  std::printf("  %s status --dir %s\n  %s down --dir %s\n", me.c_str(), d, me.c_str(), d);
  std::printf("  . %s/cluster.env       # sets PLASMON_SOCKET_1..%d, PLASMON_REDIS, ...\n", d,
              c.nodes);
}

// What up starts, owned until it is all up: a failure stops it all.
struct Started {
  std::unique_ptr<Network> net;
  std::unique_ptr<Redis> redis;
  std::vector<Store> stores;
};

int StartAll(Config& c, bool mode_given, Started* s) {
  if (c.mode == "netns") {
    s->net = std::make_unique<Network>(c.name, c.nodes, c.subnet);
    Status hub = s->net->CreateHub();
    if (!hub.ok()) {
      // Without an explicit --mode, a host where namespaces cannot be made
      // (a container without CAP_SYS_ADMIN) gets a loopback cluster instead.
      if (mode_given)
        return Fail("cannot create network namespace " + c.name + "-hub: " + hub.message());
      Note("cannot create network namespaces (" + hub.message() + "); using --mode loopback");
      s->net.reset();
      c.mode = "loopback";
      c.namespaces.clear();
      WriteEnv(c, "starting");
      if (std::string why = CheckPorts(c); !why.empty()) return Fail(why);
    } else {
      Note("creating namespaces " + Join(c.namespaces) + " (10." + std::to_string(c.subnet) +
           ".0.0/24 on a bridge in " + c.name + "-hub)");
      if (Status st = s->net->CreateNodes(); !st.ok()) return Fail(st.message());
    }
  }
  if (c.secret_file.empty()) {
    c.secret_file = Path(c, "secret");
    c.secret_generated = true;
    std::random_device rd;
    char hex[65];
    for (int i = 0; i < 32; i++) std::snprintf(hex + 2 * i, 3, "%02x", rd() & 0xff);
    mode_t old = ::umask(077);
    std::ofstream(c.secret_file, std::ios::trunc) << hex << "\n";
    ::umask(old);
    WriteEnv(c, "starting");
  }

  // Redis on a Unix socket only: it crosses the namespaces, no port to collide.
  Note("starting redis-server on " + Path(c, "redis.sock"));
  RedisOptions ro;
  ro.dir = c.dir;
  ro.extra = {"--unixsocketperm", "700", "--daemonize", "no", "--logfile", ""};
  ro.spawn.new_session = true;
  ro.spawn.truncate_log = true;
  ro.wait_ms = c.wait_s * 1000;
  s->redis = std::make_unique<Redis>(ro);
  Status st = s->redis->Start();
  if (st.ok()) st = WritePidFile(Path(c, "redis.pid"), s->redis->process().pid());
  if (!st.ok()) {
    Note("redis-server did not come up: " + st.message());
    LogTail(Path(c, "redis.log"));
    return 1;
  }

  for (int i = 1; i <= c.nodes; i++) {
    if (g_signal != 0) return Fail("interrupted");
    StoreOptions so;
    so.binary = c.bin + "/plasmon-store";
    so.socket = Path(c, Node(i, ".sock"));
    so.args = {"-m",        c.memory,    "--redis",     "unix:" + Path(c, "redis.sock"),
               "--node-id", Node(i, ""), "--log-level", c.log_level};
    if (c.prefault) so.args.push_back("--prefault");
    so.args.insert(so.args.end(),
                   {"--listen", Endpoint(c, i), "--cluster-secret-file", c.secret_file});
    so.args.insert(so.args.end(), c.extra.begin(), c.extra.end());
    if (c.mode == "netns") so.netns = Ns(c, i);
    so.log = Path(c, Node(i, ".log"));
    so.spawn.new_session = true;
    so.spawn.truncate_log = true;
    std::vector<std::string> shown;
    for (const std::string& a : StoreArgv(so)) shown.push_back(ShellQuote(a));
    std::ofstream(Path(c, Node(i, ".cmd")), std::ios::trunc) << Join(shown) << "\n";
    s->stores.emplace_back(so);
    if (Status sp = s->stores.back().Spawn(); !sp.ok())
      return Fail("store n" + std::to_string(i) + ": " + sp.message());
    if (Status pf = WritePidFile(Path(c, Node(i, ".pid")), s->stores.back().process().pid());
        !pf.ok())
      return Fail(pf.message());
  }
  Note("started " + std::to_string(c.nodes) + " store(s); waiting for them to answer (at most " +
       std::to_string(c.wait_s) + "s)");
  auto deadline = Clock::now() + std::chrono::seconds(c.wait_s);
  for (int i = 1; i <= c.nodes; i++) {
    std::string why;
    for (;;) {
      if (g_signal != 0) return Fail("interrupted");
      if (!s->stores[static_cast<size_t>(i - 1)].process().Alive()) {
        why = "exited";
        break;
      }
      why = NodeReady(c, i);
      if (why.empty()) break;
      if (Clock::now() >= deadline) {
        why += " after " + std::to_string(c.wait_s) + "s";
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!why.empty()) {
      std::ifstream cmd(Path(c, Node(i, ".cmd")));
      std::string line;
      std::getline(cmd, line);
      Note("store n" + std::to_string(i) + " " + why + ": " + line);
      LogTail(Path(c, Node(i, ".log")));
      return 1;
    }
  }
  return 0;
}

int Up(Config c, bool mode_given) {
  // Check everything before touching anything.
  // (--nodes, --name, --subnet, --wait and --mode are checked as they are parsed.)
  if (c.port < 1 || c.port + c.nodes > 65535)
    return Fail("--port must be 1.." + std::to_string(65535 - c.nodes));
  const std::vector<std::string> ours = {
      "-s",         "--socket",   "-m",       "--memory",
      "--redis",    "--node-id",  "--listen", "--cluster-secret-file",
      "--prefault", "--log-level"};
  for (size_t i = 0; i < c.extra.size(); i++) {
    const std::string& a = c.extra[i];
    if (std::find(ours.begin(), ours.end(), a.substr(0, a.find('='))) != ours.end())
      return Fail("'" + a +
                  "' after --: the launcher sets it (use its own flags: --memory, --prefault, "
                  "--secret-file, --log-level)");
    if (a == "--redis-prefix" && i + 1 < c.extra.size()) c.prefix = c.extra[i + 1];
    if (a.rfind("--redis-prefix=", 0) == 0) c.prefix = a.substr(15);
  }
  if (!c.addresses.empty()) {
    if (c.mode != "auto" && c.mode != "hosts") return Fail("--addresses is for --mode hosts");
    c.mode = "hosts";
  }
  bool netns_works = ::geteuid() == 0 && RunCommand({"ip", "netns", "list"}).ok();
  if (c.mode == "auto") {
    c.mode = netns_works ? "netns" : "loopback";
  } else if (c.mode == "netns") {
    if (::geteuid() != 0) return Fail("needs root for network namespaces; use --mode loopback");
    if (!netns_works)
      return Fail("'ip netns' does not work here (apt-get install iproute2); use --mode loopback");
  } else if (c.mode == "hosts") {
    if (c.addresses.empty()) return Fail("--mode hosts needs --addresses A1,A2,...");
    if (std::string why = CheckAddresses(&c); !why.empty()) return Fail(why);
  }
  if (FindExecutable("redis-server").empty())
    return Fail("needs redis-server (tools/setup.sh installs it)");
  if (!c.build.empty()) {
    std::string b = c.build;
    if (b[0] != '/' && !fs::is_directory(b) &&
        fs::is_directory(std::string(PLASMON_SOURCE_DIR) + "/" + b))
      b = std::string(PLASMON_SOURCE_DIR) + "/" + b;
    if (!fs::is_directory(b))
      return Fail("no build directory " + b +
                  " (run tools/setup.sh to build, or pass --build DIR)");
    c.bin = Absolute(b) + "/tools";
  }
  if (::access((c.bin + "/plasmon-store").c_str(), X_OK) != 0 ||
      ::access((c.bin + "/plasmon").c_str(), X_OK) != 0)
    return Fail("no plasmon-store/plasmon in " + c.bin + " (build first)");

  // DIR: ours, and nobody else's to write in.
  struct stat st;
  if (::stat(c.dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return Fail(c.dir + " exists and is not a directory");
    if (st.st_uid != ::geteuid()) return Fail(c.dir + " is not owned by us");
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
      return Fail(c.dir + " is writable by others; use a directory of its own (e.g. " + c.dir +
                  "/plasmon-cluster)");
  } else {
    std::error_code ec;
    fs::create_directories(fs::path(c.dir).parent_path(), ec);
    if (::mkdir(c.dir.c_str(), 0700) != 0)
      return Fail("cannot create " + c.dir + ": " + std::strerror(errno));
  }
  c.dir = Absolute(c.dir);
  if (c.dir.size() > 90)
    return Fail("--dir " + c.dir + " is too long for Unix socket paths (at most 90 characters)");
  if (!LockDir(c)) return 1;

  // A cluster already there?
  Config old = c;
  if (LoadEnv(&old)) {
    if (ClusterRemains(old))
      return Fail("a cluster is running in " + c.dir +
                  " (state: " + (old.state.empty() ? "?" : old.state) +
                  "); 'plasmon-cluster down --dir " + c.dir + "' first");
    Note("cleaning up after a cluster in " + c.dir + " that did not go down");
    Teardown(old);
  }
  if (c.mode == "netns") {
    Network names(c.name, c.nodes, c.subnet);
    c.namespaces = names.names();
    for (const std::string& ns : c.namespaces)
      if (Network::Exists(ns))
        return Fail("network namespace " + ns + " already exists (another cluster with --name " +
                    c.name +
                    "? down it with 'plasmon-cluster down --dir ITS_DIR', or pick another --name)");
  } else if (std::string why = CheckPorts(c); !why.empty()) {
    return Fail(why);
  }
  if (!c.secret_file.empty()) {
    std::error_code ec;
    if (::access(c.secret_file.c_str(), R_OK) != 0 || fs::file_size(c.secret_file, ec) == 0)
      return Fail("--secret-file " + c.secret_file + " is not a readable, non-empty file");
    c.secret_file = Absolute(c.secret_file);
  }

  // From here on, a failure (or SIGINT/SIGTERM) stops what was started.
  struct sigaction sa {};
  sa.sa_handler = [](int sig) { g_signal = sig; };
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  WriteEnv(c, "starting");
  int rc;
  {
    Started s;
    rc = StartAll(c, mode_given, &s);
    if (rc == 0 && g_signal == 0) {
      if (s.net) s.net->Release();
      s.redis->process().Release();
      for (Store& store : s.stores) store.process().Release();
    } else {
      Note("up failed; tearing down what it started (logs stay in " + c.dir + ")");
      rc = g_signal != 0 ? 128 + g_signal : 1;
    }
  }
  if (rc != 0) {
    Teardown(c);
    return rc;
  }
  WriteEnv(c, "up");
  PrintSummary(c);
  return 0;
}

// ---- down, status, exec ----

int Down(Config c) {
  c.namespaces.clear();
  bool had_env = false;
  if (fs::is_directory(c.dir)) {
    c.dir = Absolute(c.dir);
    if (!LockDir(c)) return 1;
    had_env = LoadEnv(&c);
  }
  // With --name (e.g. after DIR was deleted), also the namespaces NAME-hub and NAME-n<i>.
  if (c.name_given) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/run/netns", ec)) {
      std::string ns = e.path().filename().string(),
                  rest = ns.substr(std::min(ns.size(), c.name.size() + 1));
      if (ns.rfind(c.name + "-", 0) == 0 && (rest == "hub" || IsNodeFile(rest, "")) &&
          std::find(c.namespaces.begin(), c.namespaces.end(), ns) == c.namespaces.end())
        c.namespaces.push_back(ns);
    }
  }
  if (!had_env && !ClusterRemains(c)) {
    Note("no cluster in " + c.dir + "; nothing to do");
    return 0;
  }
  if (!c.namespaces.empty() && ::geteuid() != 0)
    return Fail("needs root to delete network namespaces " + Join(c.namespaces));
  Teardown(c);
  std::vector<std::string> left;
  for (const std::string& ns : c.namespaces)
    if (Network::Exists(ns)) left.push_back(ns);
  if (!left.empty()) return Fail("namespaces left behind: " + Join(left));
  Note("cluster in " + c.dir + " is down (logs kept there)");
  return 0;
}

// The cluster in c->dir, if there is one.
bool Open(Config* c) {
  if (fs::is_directory(c->dir)) c->dir = Absolute(c->dir);
  return fs::is_directory(c->dir) && LoadEnv(c);
}

int StatusCmd(Config c) {
  if (!Open(&c)) {
    std::printf("no cluster in %s\n", c.dir.c_str());
    return 1;
  }
  int bad = 0;
  std::printf("cluster '%s' in %s: %d node(s), %s mode, state %s\n", c.name.c_str(), c.dir.c_str(),
              c.nodes, c.mode.c_str(), c.state.c_str());
  std::string rsock = Path(c, "redis.sock");
  std::optional<ProcessId> redis = RedisProcess(c);
  Result<std::vector<std::string>> pong = RedisQuery(rsock, {"PING"});
  if (redis && pong.ok() && *pong == std::vector<std::string>{"PONG"}) {
    std::printf("redis  unix:%s  up (pid %d)\n", rsock.c_str(), redis->pid);
  } else {
    std::printf("redis  unix:%s  DOWN\n", rsock.c_str());
    bad = 1;
  }
  for (int i = 1; i <= c.nodes; i++) {
    std::string ns = "-", sock = Path(c, Node(i, ".sock"));
    if (c.mode == "netns") ns = Ns(c, i) + (Network::Exists(Ns(c, i)) ? "" : " (MISSING)");
    bool store = false;
    std::optional<ProcessId> id = NodeProcess(c, i, &store);
    if (!store) {
      std::printf("n%d  %s  namespace %s  socket %s  (log %s)\n", i,
                  id ? ("starting (pid " + std::to_string(id->pid) + ")").c_str() : "DOWN",
                  ns.c_str(), sock.c_str(), Path(c, Node(i, ".log")).c_str());
      bad = 1;
      continue;
    }
    std::vector<std::string> eps;
    Result<std::vector<std::string>> rec =
        RedisQuery(rsock, {"HGETALL", c.prefix + ":node:" + Node(i, "")});
    for (size_t k = 0; rec.ok() && k + 1 < rec->size(); k += 2)
      if ((*rec)[k].rfind("ep:", 0) == 0) eps.push_back((*rec)[k].substr(3) + "=" + (*rec)[k + 1]);
    std::printf("n%d  up (pid %d)  namespace %s  socket %s  endpoints: %s\n", i, id->pid,
                ns.c_str(), sock.c_str(), eps.empty() ? "none published" : Join(eps).c_str());
    CommandResult stats =
        RunCommand({c.bin + "/plasmon", "-s", sock, "stats"}, RunOptions{{}, {}, true, {}});
    if (!stats.ok()) bad = 1;
    for (const std::string& l : Split(stats.out, '\n')) std::printf("    %s\n", l.c_str());
  }
  return bad;
}

int Exec(Config c, int node, std::vector<std::string> cmd) {
  if (!Open(&c)) return Fail("no cluster in " + c.dir);
  if (node < 1 || node > c.nodes)
    return Fail("node " + std::to_string(node) + ": the cluster has nodes 1.." +
                std::to_string(c.nodes));
  if (cmd.empty()) cmd = {std::getenv("SHELL") != nullptr ? std::getenv("SHELL") : "/bin/bash"};
  ::setenv("PLASMON_SOCKET", Path(c, Node(node, ".sock")).c_str(), 1);
  ::setenv("PLASMON_NODE", Node(node, "").c_str(), 1);
  if (c.mode == "netns") {
    if (!Network::Exists(Ns(c, node)))
      return Fail("namespace " + Ns(c, node) + " is gone; 'plasmon-cluster down --dir " + c.dir +
                  "' and up again");
    cmd.insert(cmd.begin(), {"ip", "netns", "exec", Ns(c, node)});
  }
  std::string exe =
      FindExecutable(cmd[0]);  // loopback, hosts: every node shares the host's network
  std::vector<char*> argv;
  for (std::string& a : cmd) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(exe.c_str(), argv.data());
  return Fail("cannot run " + cmd[0] + ": " + std::strerror(errno));
}

}  // namespace
}  // namespace plasmon::cluster

int main(int argc, char** argv) {
  using namespace plasmon::cluster;
  ::signal(SIGPIPE, SIG_IGN);
  Config c;
  const char* env_dir = std::getenv("PLASMON_CLUSTER_DIR");
  c.dir = env_dir != nullptr && *env_dir != '\0' ? env_dir : "/tmp/plasmon-cluster";
  std::error_code ec;
  c.bin = fs::read_symlink("/proc/self/exe", ec).parent_path().string();  // this build's tools/
  CLI::App app{"Redis and N plasmon-store daemons on this machine (see tools/plasmon_cluster.cc)",
               "plasmon-cluster"};
  app.require_subcommand(1);
  const CLI::Validator name(
      [](std::string& v) { return IsName(v) ? "" : "1 to 8 letters or digits"; }, "NAME");
  auto dir_opt = [&](CLI::App* s) {
    s->add_option("--dir", c.dir,
                  "State, sockets, logs [$PLASMON_CLUSTER_DIR, /tmp/plasmon-cluster]");
  };
  CLI::App* up = app.add_subcommand("up", "Start a cluster");
  dir_opt(up);
  up->add_option("--nodes", c.nodes, "Stores to start [2]")->check(CLI::Range(1, 200));
  up->add_option("--mode", c.mode, "netns (default as root), loopback or hosts (with --addresses)")
      ->check(CLI::IsMember({"auto", "netns", "loopback", "hosts"}));
  up->add_option("--addresses", c.addresses,
                 "A1,A2,...: node i listens on A_i:PORT+i (hosts mode)");
  up->add_option("--name", c.name, "Namespace prefix [plc]")->check(name);
  up->add_option("--subnet", c.subnet, "Nodes at 10.BYTE.0.<i> in netns mode [213]")
      ->check(CLI::Range(0, 255));
  up->add_option("--port", c.port, "Transfer port in each namespace, PORT+i otherwise [7400]");
  up->add_option("-m,--memory", c.memory, "Arena of each store [1G]");
  up->add_option("--build", c.build, "Build directory of the stores [this command's]");
  up->add_flag("--prefault", c.prefault, "Pass --prefault to the stores");
  up->add_option("--secret-file", c.secret_file, "Cluster secret [a random one, DIR/secret]");
  up->add_option("--wait", c.wait_s, "Seconds a store may take to answer [10]")
      ->check(CLI::Range(1, 86400));
  up->add_option("--log-level", c.log_level, "Stores' log level [info]");
  up->footer("After --: more plasmon-store flags for every store (e.g. --transport verbs)");
  CLI::App* status = app.add_subcommand("status", "Processes and stats (exit 1 if any is down)");
  dir_opt(status);
  CLI::App* exec = app.add_subcommand("exec", "Run CMD [$SHELL] as node I (in its namespace)");
  dir_opt(exec);
  int node = 0;
  exec->add_option("node", node, "I")->required();
  exec->prefix_command();
  CLI::App* down = app.add_subcommand("down", "Stop it, delete its namespaces (logs stay)");
  dir_opt(down);
  down->add_option("--name", c.name, "Also the namespaces NAME-hub, NAME-n<i> (DIR lost)")
      ->check(name)
      ->each([&](const std::string&) { c.name_given = true; });
  if (argc < 2) {
    std::fprintf(stderr, "%s", app.help().c_str());
    return 2;
  }
  // What follows "--": store flags (up) or the command (exec).
  int n = argc;
  for (int i = 1; i < argc && n == argc; i++)
    if (std::strcmp(argv[i], "--") == 0) n = i;
  std::vector<std::string> rest(argv + std::min(n + 1, argc), argv + argc);
  CLI11_PARSE(app, n, argv);
  c.extra = rest;
  if (up->parsed()) return Up(c, up->count("--mode") > 0);
  if (down->parsed()) return Down(c);
  if (status->parsed()) return StatusCmd(c);
  std::vector<std::string> cmd = exec->remaining();
  cmd.insert(cmd.end(), rest.begin(), rest.end());
  return Exec(c, node, cmd);
}
