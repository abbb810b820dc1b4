// Test helpers for work done in forked child processes (client processes
// that are killed, or that report through shared memory), shared by the
// crash and fast-path stress tests.
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace plasmon::testing {

// Sanitizer builds run several times slower: tests do fewer rounds there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kUnderSanitizer = true;
#else
inline constexpr bool kUnderSanitizer = false;
#endif

// Runs `body` in a child process; returns its pid. The child never returns,
// and is killed if the test process dies first.
template <typename F>
pid_t Spawn(F body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    body();
    ::_exit(0);
  }
  return pid;
}

// SIGKILL and reap.
inline void Kill(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status;
  ::waitpid(pid, &status, 0);
}

// Waits for a child; its exit code, or 128 + the signal that ended it, or -1.
inline int ExitCode(pid_t pid) {
  int status;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

// Runs body(checkpoint) in a child and returns its pid once the child has
// called checkpoint(); -1 (and the child killed) if it failed before that.
template <typename F>
pid_t SpawnUntilCheckpoint(F body) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  pid_t pid = Spawn([&] {
    ::close(fds[0]);
    body([&] {
      char c = 1;
      if (::write(fds[1], &c, 1) != 1) ::_exit(3);
    });
  });
  ::close(fds[1]);
  char c;
  ssize_t n = ::read(fds[0], &c, 1);
  ::close(fds[0]);
  if (n == 1) return pid;
  Kill(pid);
  return -1;
}

// Runs body(i, checkpoint) in n children at once (i = 0 .. n-1) and returns
// their pids once every one has called checkpoint(); the pids of those
// that failed before it are -1 (and they are killed).
template <typename F>
std::vector<pid_t> SpawnManyUntilCheckpoint(int n, F body) {
  std::vector<pid_t> pids(n, -1);
  std::vector<int> readers(n, -1);
  for (int i = 0; i < n; i++) {
    int fds[2];
    if (::pipe(fds) != 0) break;
    pids[i] = Spawn([&] {
      ::close(fds[0]);
      for (int k = 0; k < i; k++) ::close(readers[k]);
      body(i, [&] {
        char c = 1;
        if (::write(fds[1], &c, 1) != 1) ::_exit(3);
      });
    });
    ::close(fds[1]);
    readers[i] = fds[0];
  }
  for (int i = 0; i < n; i++) {
    if (readers[i] < 0) continue;
    char c;
    ssize_t got = ::read(readers[i], &c, 1);
    ::close(readers[i]);
    if (got != 1 && pids[i] > 0) {
      Kill(pids[i]);
      pids[i] = -1;
    }
  }
  return pids;
}

[[noreturn]] inline void HangForever() {
  for (;;) ::pause();
}

// A T in memory shared with the children forked after it was made
// (MAP_SHARED | MAP_ANONYMOUS): counters that children add to and the
// parent reads. T must be usable across processes (lock-free atomics).
template <typename T>
class SharedMemory {
 public:
  SharedMemory() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    value_ = p == MAP_FAILED ? nullptr : new (p) T();
  }
  ~SharedMemory() {
    if (value_ != nullptr) {
      value_->~T();
      ::munmap(value_, sizeof(T));
    }
  }
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;
  bool ok() const { return value_ != nullptr; }
  T* operator->() const { return value_; }
  T& operator*() const { return *value_; }

 private:
  T* value_ = nullptr;
};

}  // namespace plasmon::testing
