// The cluster supervisor (issue 9), part 2: what a plasmon cluster is made
// of. A redis-server on a Unix socket, plasmon-store daemons, and network
// namespaces joined by veth pairs to a bridge in a hub namespace, the way
// separate hosts share a switch. Each object owns what it started and
// stops or deletes it when it goes (unless released, for plasmon-cluster up).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "plasmon/status.h"
#include "tools/cluster/process.h"

namespace plasmon::cluster {

struct RedisOptions {
  std::string dir;  // its working directory; the socket is DIR/redis.sock
  std::string binary = "redis-server";
  std::string password;            // --requirepass, if not empty
  std::string log;                 // its output; empty: DIR/redis.log
  std::vector<std::string> extra;  // more redis-server flags
  SpawnOptions spawn;              // (its log field is set from `log`)
  int wait_ms = 30000;             // for it to answer PING
};

// One command to the redis-server on `socket`, on a connection of its own:
// its reply as strings (an integer in decimal; an array's elements).
Result<std::vector<std::string>> RedisQuery(const std::string& socket,
                                            const std::vector<std::string>& argv,
                                            const std::string& password = {});

class Redis {
 public:
  explicit Redis(RedisOptions o);
  // Starts it (again, empty) and waits until it answers PING.
  Status Start();
  void Kill();  // SIGKILL: no goodbye; the socket goes
  bool Ping() const;
  // One command on a connection of its own; its integer reply.
  Result<long long> Integer(const std::vector<std::string>& argv) const;

  const std::string& socket() const { return socket_; }
  std::string address() const { return "unix:" + socket_; }
  Process& process() { return process_; }
  const Process& process() const { return process_; }

 private:
  RedisOptions o_;
  std::string socket_;
  Process process_;
};

struct StoreOptions {
  std::string binary;  // plasmon-store
  std::string socket;
  std::vector<std::string> args;  // after `-s SOCKET`
  std::string netns;              // run in it (ip netns exec), if not empty
  std::string log;
  SpawnOptions spawn;  // (its log field is set from `log`)
};

// plasmon-store's argv for `o`.
std::vector<std::string> StoreArgv(const StoreOptions& o);

class Store {
 public:
  explicit Store(StoreOptions o) : o_(std::move(o)) {}
  Status Spawn();
  // Until its socket accepts connections; fails at once if it exits.
  Status WaitReady(int timeout_ms);
  Status Start(int timeout_ms = 20000);  // Spawn, then WaitReady
  const std::string& socket() const { return o_.socket; }
  const StoreOptions& options() const { return o_; }
  Process& process() { return process_; }
  const Process& process() const { return process_; }

 private:
  StoreOptions o_;
  Process process_;
};

// Network namespaces PREFIX-hub (a bridge, br0) and PREFIX-n1..PREFIX-nN,
// node i with address 10.SUBNET.0.i/24 on its eth0, whose veth peer
// (veth-n<i>) is on the bridge. Only namespaces of those names are touched.
class Network {
 public:
  Network(std::string prefix, int nodes, int subnet)
      : prefix_(std::move(prefix)), nodes_(nodes), subnet_(subnet) {}
  ~Network();  // deletes them, unless released
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // Makes the hub (on failure: nothing is left), or the nodes' namespaces
  // (on failure: the caller's destructor or Delete cleans up).
  Status CreateHub();
  Status CreateNodes();
  Status Create();  // both
  void Release() { owned_ = false; }

  std::string hub() const { return prefix_ + "-hub"; }
  std::string ns(int i) const { return prefix_ + "-n" + std::to_string(i); }
  std::string address(int i) const;        // 10.SUBNET.0.i
  std::vector<std::string> names() const;  // the hub first
  // Limits what node i sends to `rate` (tc tbf, e.g. "200mbit").
  Status LimitRate(int i, const std::string& rate);

  static bool Exists(const std::string& ns);
  // Deletes those that exist (a veth end goes with its namespace, and its
  // peer with it); an error names those left.
  static Status Delete(const std::vector<std::string>& names);

 private:
  std::string prefix_;
  int nodes_, subnet_;
  bool owned_ = false;
};

// ---- plasmon-cluster's DIR/cluster.env: shell-sourceable KEY=VALUE lines ----

// `s` as one shell word ('...' unless it needs no quotes).
std::string ShellQuote(const std::string& s);
// Its variables. Refuses a file that is not ours or that others may write.
Result<std::map<std::string, std::string>> ReadEnvFile(const std::string& path);

}  // namespace plasmon::cluster
