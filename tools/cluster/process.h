// The cluster supervisor (issue 9), part 1: processes. Everything that
// starts Redis, stores or helper commands (the integration tests,
// plasmon-soak, plasmon-bench, plasmon-cluster) starts them through this.
//
// A child's argv is built before fork; between fork and exec the child only
// redirects its descriptors (and, as asked, calls setsid or prctl). A child
// of ours is watched with waitpid; a process we did not start (one that
// `plasmon-cluster up` left running) is known by its pid and its start time,
// so that a reused pid is never taken for it.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "plasmon/status.h"

namespace plasmon::cluster {

// "exit 3", "signal Killed", from a wait status.
std::string DescribeExit(int wait_status);

// The full path of `name` (searched in PATH unless it has a '/'); empty if none.
std::string FindExecutable(const std::string& name);

struct SpawnOptions {
  std::string log;  // stdout and stderr go here (appended); empty: ours
  bool truncate_log = false;
  bool die_with_parent = false;  // SIGKILLed when the process that started it ends
  bool new_session = false;      // setsid: outlives its starter and its terminal
};

// A child process, owned: destroying it stops it (SIGTERM, at most 5 s, then
// SIGKILL) unless it was Released.
class Process {
 public:
  Process() = default;
  static Result<Process> Spawn(const std::vector<std::string>& argv, const SpawnOptions& o = {});
  Process(Process&& o) noexcept { *this = std::move(o); }
  Process& operator=(Process&& o) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  pid_t pid() const { return pid_; }  // -1 once reaped (or never started)
  bool Alive();                       // reaps it if it has exited
  // How it ended, once reaped.
  std::optional<int> exit_status() const { return status_; }
  // Waits up to `timeout_ms` (-1: no bound) for it to exit: its wait status.
  // Timeout while it runs; IOError if it cannot be waited for (ECHILD: not
  // ours, or reaped elsewhere), which is never taken for a clean exit.
  Result<int> Wait(int timeout_ms);
  // Sends `sig`, waits up to `grace_ms`, then SIGKILLs it: its wait status.
  Result<int> Stop(int grace_ms = 5000, int sig = SIGTERM);
  void Kill() { (void)Stop(0, SIGKILL); }
  // Gives it up, still running (plasmon-cluster up); returns its pid.
  pid_t Release();

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Runs argv to its end: its output, and its exit code (128 + N after signal N;
// -1 if it could not run).
struct CommandResult {
  int exit_code = -1;
  std::string out, err;
  bool ok() const { return exit_code == 0; }
};
struct RunOptions {
  std::string input;                   // written to its stdin
  std::vector<std::string> env;        // NAME=VALUE, before (so over) ours
  bool merge_err = false;              // stderr into `out`
  std::function<void(pid_t)> started;  // told its pid, while it runs
};
CommandResult RunCommand(const std::vector<std::string>& argv, const RunOptions& o = {});

// ---- processes we did not start, known by their pid files ----

// A process's identity: its pid and its start time (field 22 of
// /proc/PID/stat, which a later process with the same pid cannot share).
struct ProcessId {
  pid_t pid = -1;
  uint64_t start_time = 0;
};
std::optional<ProcessId> Identify(pid_t pid);  // nullopt: gone or a zombie
// "PID START_TIME\n", written atomically (tmp + rename).
Status WritePidFile(const std::string& path, pid_t pid);
// The process in a pid file, if it is still that process.
std::optional<ProcessId> LiveFromPidFile(const std::string& path);
bool SameProcess(const ProcessId& id);
std::string Comm(pid_t pid);                  // its /proc/PID/comm
std::vector<std::string> Cmdline(pid_t pid);  // its argv
std::vector<pid_t> ProcessesNamed(const std::string& comm);
// Signals every process of `ids` still alive, waits up to `grace_ms` for all
// to go, then SIGKILLs the rest (and waits up to 2 s more). Returns those
// it had to kill.
std::vector<ProcessId> StopProcesses(const std::vector<ProcessId>& ids, int grace_ms);

// A fresh, empty directory $TMPDIR/PREFIX-XXXXXX (mode 0700).
Result<std::string> MakeTempDir(const std::string& prefix);

// A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick,
// so that tests running at once do not collide); -1 if none.
int FreeLocalPort();

}  // namespace plasmon::cluster
