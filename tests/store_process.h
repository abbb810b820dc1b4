// Test fixture helpers: a real plasmon-store process on a temporary socket,
// started by the cluster supervisor (tools/cluster/).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "tools/cluster/process.h"
#include "tools/cluster/services.h"

namespace plasmon::testing {

// Paths of the binaries under test (set by CMake).
std::string StoreBinary();
std::string CliBinary();

// A fresh, empty directory under $TMPDIR (the caller removes it).
std::string TempDir();

class StoreProcess {
 public:
  // Starts plasmon-store with `args` (socket and log-level flags are added;
  // it logs at warn unless `args` set --log-level) and waits until it
  // accepts connections. Fails the current test if it does not. With
  // `netns`, it runs inside that network namespace (ip netns exec).
  explicit StoreProcess(std::vector<std::string> args = {"-m", "64M"},
                        const std::string& netns = {});
  ~StoreProcess();  // SIGTERM, then SIGKILL if it does not exit

  const std::string& socket() const { return store_.socket(); }
  pid_t pid() const { return store_.process().pid(); }
  bool started() const { return pid() > 0; }
  // Sends SIGTERM and returns the exit status (as from waitpid); a store
  // still running after 10 s is SIGKILLed and that status returned. -1 only
  // if waitpid itself fails.
  int Terminate();
  // SIGKILL: the store gets no chance to clean up.
  void Kill() { store_.process().Kill(); }
  bool Alive() { return store_.process().Alive(); }
  // What the store logged so far (stdout and stderr).
  std::string Log() const;

 private:
  std::string dir_;
  cluster::Store store_;
};

// Runs a command, captures stdout (and stderr separately); returns exit code.
using cluster::CommandResult;
inline CommandResult RunCommand(const std::vector<std::string>& argv,
                                const std::string& stdin_data = {},
                                const std::vector<std::string>& env = {}) {
  return cluster::RunCommand(argv, cluster::RunOptions{stdin_data, env, false, {}});
}

}  // namespace plasmon::testing
