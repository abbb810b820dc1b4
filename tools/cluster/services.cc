#include "tools/cluster/services.h"

#include <hiredis/hiredis.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <thread>

#include "core/unix_socket.h"

namespace plasmon::cluster {

namespace {

using Clock = std::chrono::steady_clock;

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Context = std::unique_ptr<redisContext, ContextFree>;
using Reply = std::unique_ptr<redisReply, ReplyFree>;

Reply Command(redisContext* c, const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  return Reply(static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(args.size()), args.data(), lens.data())));
}

// A connection to the server on `socket`, authenticated with `password`.
Result<Context> Connect(const std::string& socket, const std::string& password) {
  timeval tv{2, 0};
  Context c(redisConnectUnixWithTimeout(socket.c_str(), tv));
  if (c == nullptr || c->err != 0)
    return Status::Disconnected("redis at " + socket + ": " + (c ? c->errstr : "no memory"));
  if (!password.empty()) Command(c.get(), {"AUTH", password});
  return c;
}

Status RunIp(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = RunCommand(argv);
  if (r.ok()) return Status::OK();
  std::string cmd;
  for (const std::string& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  while (!r.err.empty() && r.err.back() == '\n') r.err.pop_back();
  return Status::IOError("'" + cmd + "' failed (" + std::to_string(r.exit_code) + "): " + r.err +
                         (::geteuid() != 0 ? " (network namespaces need root)" : ""));
}

}  // namespace

// ---- Redis ----

Redis::Redis(RedisOptions o) : o_(std::move(o)), socket_(o_.dir + "/redis.sock") {
  if (o_.log.empty()) o_.log = o_.dir + "/redis.log";
}

Status Redis::Start() {
  ::unlink(socket_.c_str());
  std::vector<std::string> argv = {o_.binary, "--port", "0",   "--unixsocket",
                                   socket_,   "--save", "",    "--appendonly",
                                   "no",      "--dir",  o_.dir};
  if (!o_.password.empty()) argv.insert(argv.end(), {"--requirepass", o_.password});
  argv.insert(argv.end(), o_.extra.begin(), o_.extra.end());
  SpawnOptions so = o_.spawn;
  so.log = o_.log;
  Result<Process> p = Process::Spawn(argv, so);
  if (!p.ok())
    return Status::IOError(p.status().message() + " (tools/setup.sh installs redis-server)");
  process_ = std::move(*p);
  auto deadline = Clock::now() + std::chrono::milliseconds(o_.wait_ms);
  while (Clock::now() < deadline) {
    if (Ping()) return Status::OK();
    if (!process_.Alive()) {
      std::optional<int> ws = process_.exit_status();
      return Status::IOError(o_.binary + " exited at start (" +
                             (ws ? DescribeExit(*ws) : std::string("no wait status")) + "; see " +
                             o_.log + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Status::Timeout(o_.binary + " did not answer PING within " +
                         std::to_string(o_.wait_ms / 1000) + " s (see " + o_.log + ")");
}

void Redis::Kill() {
  process_.Kill();
  ::unlink(socket_.c_str());
}

Result<std::vector<std::string>> RedisQuery(const std::string& socket,
                                            const std::vector<std::string>& argv,
                                            const std::string& password) {
  Result<Context> c = Connect(socket, password);
  if (!c.ok()) return c.status();
  Reply r = Command(c->get(), argv);
  if (r == nullptr) return Status::Disconnected("redis at " + socket + ": " + (*c)->errstr);
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      return std::vector<std::string>{std::to_string(r->integer)};
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_STRING:
      return std::vector<std::string>{std::string(r->str, r->len)};
    case REDIS_REPLY_ARRAY: {
      std::vector<std::string> out;
      for (size_t i = 0; i < r->elements; i++)
        out.emplace_back(r->element[i]->str != nullptr ? r->element[i]->str : "");
      return out;
    }
    case REDIS_REPLY_ERROR:
      return Status::ProtocolError("redis: " + std::string(r->str, r->len));
    default:
      return std::vector<std::string>{};
  }
}

bool Redis::Ping() const {
  Result<std::vector<std::string>> r = RedisQuery(socket_, {"PING"}, o_.password);
  return r.ok() && r->size() == 1 && (*r)[0] == "PONG";
}

Result<long long> Redis::Integer(const std::vector<std::string>& argv) const {
  Result<std::vector<std::string>> r = RedisQuery(socket_, argv, o_.password);
  if (!r.ok()) return r.status();
  char* end = nullptr;
  long long v = r->size() == 1 ? std::strtoll((*r)[0].c_str(), &end, 10) : 0;
  if (end == nullptr || *end != '\0' || (*r)[0].empty())
    return Status::ProtocolError("redis: not an integer reply");
  return v;
}

// ---- Store ----

std::vector<std::string> StoreArgv(const StoreOptions& o) {
  std::vector<std::string> argv;
  if (!o.netns.empty()) argv = {"ip", "netns", "exec", o.netns};
  argv.insert(argv.end(), {o.binary, "-s", o.socket});
  argv.insert(argv.end(), o.args.begin(), o.args.end());
  return argv;
}

Status Store::Spawn() {
  ::unlink(o_.socket.c_str());
  SpawnOptions so = o_.spawn;
  so.log = o_.log;
  Result<Process> p = Process::Spawn(StoreArgv(o_), so);
  if (!p.ok()) return p.status();
  process_ = std::move(*p);
  return Status::OK();
}

Status Store::WaitReady(int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (ConnectUnix(o_.socket).ok()) return Status::OK();
    if (!process_.Alive()) {
      std::optional<int> ws = process_.exit_status();
      return Status::IOError("plasmon-store exited during start-up (" +
                             (ws ? DescribeExit(*ws) : std::string("no wait status")) + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Status::Timeout("plasmon-store did not listen on " + o_.socket + " within " +
                         std::to_string(timeout_ms / 1000) + " s");
}

Status Store::Start(int timeout_ms) {
  Status st = Spawn();
  return st.ok() ? WaitReady(timeout_ms) : st;
}

// ---- Network ----

Network::~Network() {
  if (owned_) (void)Delete(names());
}

std::string Network::address(int i) const {
  return "10." + std::to_string(subnet_) + ".0." + std::to_string(i);
}

std::vector<std::string> Network::names() const {
  std::vector<std::string> n = {hub()};
  for (int i = 1; i <= nodes_; i++) n.push_back(ns(i));
  return n;
}

bool Network::Exists(const std::string& ns) {
  return ::access(("/run/netns/" + ns).c_str(), F_OK) == 0;
}

Status Network::CreateHub() {
  if (Status st = RunIp({"netns", "add", hub()}); !st.ok()) return st;
  owned_ = true;
  for (const std::vector<std::string>& a :
       {std::vector<std::string>{"-n", hub(), "link", "set", "lo", "up"},
        {"-n", hub(), "link", "add", "br0", "type", "bridge"},
        {"-n", hub(), "link", "set", "br0", "up"}})
    if (Status st = RunIp(a); !st.ok()) return st;
  return Status::OK();
}

Status Network::CreateNodes() {
  for (int i = 1; i <= nodes_; i++) {
    std::string n = ns(i), veth = "veth-n" + std::to_string(i);
    for (const std::vector<std::string>& a :
         {std::vector<std::string>{"netns", "add", n},
          {"-n", hub(), "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n},
          {"-n", hub(), "link", "set", veth, "master", "br0", "up"},
          {"-n", n, "addr", "add", address(i) + "/24", "dev", "eth0"},
          {"-n", n, "link", "set", "eth0", "up"},
          {"-n", n, "link", "set", "lo", "up"}})
      if (Status st = RunIp(a); !st.ok()) return st;
  }
  return Status::OK();
}

Status Network::Create() {
  Status st = CreateHub();
  return st.ok() ? CreateNodes() : st;
}

Status Network::LimitRate(int i, const std::string& rate) {
  CommandResult r =
      RunCommand({"ip", "netns", "exec", ns(i), "tc", "qdisc", "replace", "dev", "eth0", "root",
                  "tbf", "rate", rate, "burst", "64kb", "latency", "1s"},
                 RunOptions{{}, {}, true, {}});
  return r.ok() ? Status::OK() : Status::IOError("tc in " + ns(i) + " failed: " + r.out);
}

Status Network::Delete(const std::vector<std::string>& names) {
  std::string left;
  for (const std::string& n : names) {
    if (!Exists(n)) continue;
    if (!RunIp({"netns", "del", n}).ok() || Exists(n)) left += (left.empty() ? "" : " ") + n;
  }
  return left.empty() ? Status::OK() : Status::IOError("namespaces left behind: " + left);
}

// ---- cluster.env ----

std::string ShellQuote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                        "0123456789_./:,=@%+-") == std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

Result<std::map<std::string, std::string>> ReadEnvFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(path, errno);
  if (st.st_uid != ::geteuid())
    return Status::PermissionDenied(path + " is not owned by us; refusing to read it");
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return Status::PermissionDenied(path + " is writable by others; refusing to read it");
  std::ifstream f(path);
  std::map<std::string, std::string> vars;
  for (std::string line; std::getline(f, line);) {
    size_t eq = line.find('=');
    if (line.empty() || line[0] == '#' || eq == std::string::npos) continue;
    std::string v;  // '...', "...", \x and bare characters, as the shell reads them
    char quote = 0;
    for (size_t i = eq + 1; i < line.size(); i++) {
      char c = line[i];
      if (quote != 0 && c == quote)
        quote = 0;
      else if (quote == 0 && (c == '\'' || c == '"'))
        quote = c;
      else if (c == '\\' && quote != '\'' && i + 1 < line.size())
        v += line[++i];
      else
        v += c;
    }
    vars[line.substr(0, eq)] = v;
  }
  return vars;
}

}  // namespace plasmon::cluster
