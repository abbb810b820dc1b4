// Test fixture helpers: a real plasmon-store process on a temporary socket.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace plasmon::testing {

// Paths of the binaries under test (set by CMake).
std::string StoreBinary();
std::string CliBinary();

// A fresh, empty directory under $TMPDIR, removed with its contents at exit.
std::string TempDir();

class StoreProcess {
 public:
  // Starts plasmon-store with `args` (socket and log-level flags are added;
  // it logs at info) and waits
  // until it accepts connections. Fails the current test if it does not.
  // With `netns`, it runs inside that network namespace (ip netns exec).
  explicit StoreProcess(std::vector<std::string> args = {"-m", "64M"}, const std::string& netns = {});
  ~StoreProcess();  // SIGTERM, then SIGKILL if it does not exit

  const std::string& socket() const { return socket_; }
  pid_t pid() const { return pid_; }
  bool started() const { return pid_ > 0; }
  // Sends SIGTERM and returns the exit status (as from waitpid), -1 on timeout.
  int Terminate();
  // SIGKILL: the store gets no chance to clean up.
  void Kill();
  // Whether the process is still running.
  bool Alive();
  // What the store logged so far (stdout and stderr).
  std::string Log() const;

 private:
  std::string dir_, socket_, log_;
  pid_t pid_ = -1;
};

// Runs a command, captures stdout (and stderr separately); returns exit code.
struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& stdin_data = {},
                         const std::vector<std::string>& env = {});

}  // namespace plasmon::testing
