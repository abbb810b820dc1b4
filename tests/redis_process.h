// Test fixture: a real redis-server on a Unix socket in a temporary
// directory, started by the cluster supervisor (tools/cluster/).
#pragma once

#include <signal.h>

#include <optional>
#include <string>
#include <vector>

#include "tools/cluster/services.h"

namespace plasmon::testing {

class RedisProcess {
 public:
  // Starts it (requiring `password` if not empty) and waits until it answers PING.
  explicit RedisProcess(std::string password = {});
  ~RedisProcess();

  bool started() const { return redis_.process().pid() > 0; }
  const std::string& socket() const { return redis_.socket(); }
  std::string address() const { return redis_.address(); }
  // Stops the server (SIGKILL: no goodbye), and starts it again empty.
  void Kill() { redis_.Kill(); }
  // SIGSTOP: it hangs (connections are still accepted by the kernel, but
  // nothing is answered); Resume (SIGCONT) lets it go on.
  void Pause() { ::kill(redis_.process().pid(), SIGSTOP); }
  void Resume() { ::kill(redis_.process().pid(), SIGCONT); }
  bool Start();
  // Runs one command on a connection of its own and returns its integer
  // reply (e.g. {"SCARD", key}); nullopt for an error or another reply type.
  std::optional<long long> Integer(const std::vector<std::string>& argv) const;

 private:
  std::string dir_;
  cluster::Redis redis_;
};

}  // namespace plasmon::testing
