// Test fixture: a real redis-server on a Unix socket in a temporary directory.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace plasmon::testing {

class RedisProcess {
 public:
  // Starts it (requiring `password` if not empty) and waits until it answers PING.
  explicit RedisProcess(std::string password = {});
  ~RedisProcess();

  bool started() const { return pid_ > 0; }
  const std::string& socket() const { return socket_; }
  std::string address() const { return "unix:" + socket_; }
  // Stops the server (SIGKILL: no goodbye), and starts it again empty.
  void Kill();
  bool Start();
  // Runs one command on a connection of its own and returns its integer
  // reply (e.g. {"SCARD", key}); nullopt for an error or another reply type.
  std::optional<long long> Integer(const std::vector<std::string>& argv) const;

 private:
  std::string password_, dir_, socket_;
  pid_t pid_ = -1;
};

}  // namespace plasmon::testing
