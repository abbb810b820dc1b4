#include "tools/cluster/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace plasmon::cluster {

namespace {

using Clock = std::chrono::steady_clock;

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// argv as execv wants it; the strings must outlive the call.
std::vector<char*> CArgv(const std::vector<std::string>& args) {
  std::vector<char*> v;
  for (const std::string& a : args) v.push_back(const_cast<char*>(a.c_str()));
  v.push_back(nullptr);
  return v;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Drain(int fd) {
  std::string s;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  return s;
}

}  // namespace

std::string DescribeExit(int ws) {
  if (WIFEXITED(ws)) return "exit " + std::to_string(WEXITSTATUS(ws));
  if (WIFSIGNALED(ws)) return std::string("signal ") + strsignal(WTERMSIG(ws));
  return "status " + std::to_string(ws);
}

std::string FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
  for (std::string d; std::getline(dirs, d, ':');) {
    std::string p = (d.empty() ? "." : d) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  // root's tools (ip) are not on every user's PATH.
  for (const char* d : {"/usr/sbin", "/sbin"}) {
    std::string p = std::string(d) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

// ---- Process ----

Result<Process> Process::Spawn(const std::vector<std::string>& args, const SpawnOptions& o) {
  if (args.empty()) return Status::InvalidArgument("nothing to run");
  std::vector<std::string> argv = args;
  argv[0] = FindExecutable(args[0]);
  if (argv[0].empty()) return Status::InvalidArgument("cannot find " + args[0] + " to run");
  std::vector<char*> cargv = CArgv(argv);
  int log_fd = -1;
  if (!o.log.empty()) {
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (o.truncate_log ? O_TRUNC : O_APPEND);
    log_fd = ::open(o.log.c_str(), flags, 0644);
    if (log_fd < 0) return Status::FromErrno("open " + o.log, errno);
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    if (o.new_session) ::setsid();
    if (o.die_with_parent && (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent))
      ::_exit(126);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    if (log_fd >= 0) {
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
    }
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  int err = errno;
  if (log_fd >= 0) ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  if (pid < 0) return Status::FromErrno("fork", err);
  Process p;
  p.pid_ = pid;
  return p;
}

Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0) Kill();
    pid_ = o.pid_;
    status_ = o.status_;
    o.pid_ = -1;
  }
  return *this;
}

Process::~Process() {
  if (pid_ > 0) (void)Stop();
}

pid_t Process::Release() {
  pid_t p = pid_;
  pid_ = -1;
  return p;
}

bool Process::Alive() { return pid_ > 0 && Wait(0).status().IsTimeout(); }

Result<int> Process::Wait(int timeout_ms) {
  if (pid_ <= 0) {
    if (status_) return *status_;
    return Status::InvalidArgument("no process to wait for");
  }
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int ws = 0;
    pid_t r = ::waitpid(pid_, &ws, timeout_ms < 0 ? 0 : WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      status_ = ws;
      return ws;
    }
    if (r < 0 && errno != EINTR) {
      int err = errno;
      pid_t was = pid_;
      pid_ = -1;  // never signal that pid again: it may be another process's now
      return Status::FromErrno("waitpid " + std::to_string(was) + " (no wait status)", err);
    }
    if (r == 0 && Clock::now() >= deadline) return Status::Timeout("still running");
    if (r == 0) SleepMs(2);
  }
}

Result<int> Process::Stop(int grace_ms, int sig) {
  if (pid_ <= 0) return Wait(0);
  ::kill(pid_, sig);
  Result<int> r = Wait(grace_ms);
  if (!r.status().IsTimeout()) return r;
  ::kill(pid_, SIGKILL);
  return Wait(-1);
}

// ---- RunCommand ----

CommandResult RunCommand(const std::vector<std::string>& args, const RunOptions& o) {
  CommandResult r;
  if (args.empty()) return r;
  std::vector<std::string> argv = args;
  argv[0] = FindExecutable(args[0]);
  if (argv[0].empty()) {
    r.exit_code = 127;
    r.err = "cannot find " + args[0] + "\n";
    return r;
  }
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]})
      if (fd >= 0) ::close(fd);
    return r;
  }
  std::vector<char*> cargv = CArgv(argv);
  std::vector<char*> envp;
  for (const std::string& e : o.env) envp.push_back(const_cast<char*>(e.c_str()));  // first wins
  for (char** e = environ; *e != nullptr; e++) envp.push_back(*e);
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in[0], STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(o.merge_err ? out[1] : err[1], STDERR_FILENO);
    ::execve(cargv[0], cargv.data(), envp.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  if (pid < 0) {
    for (int fd : {in[1], out[0], err[0]}) ::close(fd);
    return r;
  }
  if (o.started) o.started(pid);
  // Its stdin is fed from a thread, so that a large input cannot deadlock
  // against its output.
  std::thread feeder([&] {
    // A command may exit before it reads all of its input: that is EPIPE
    // here, not a SIGPIPE that kills the caller (the signal is thread-
    // directed and dies, blocked, with this thread).
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    size_t off = 0;
    while (off < o.input.size()) {
      ssize_t n = ::write(in[1], o.input.data() + off, o.input.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::close(in[1]);
  });
  std::thread errt([&] { r.err = Drain(err[0]); });
  r.out = Drain(out[0]);
  errt.join();
  feeder.join();
  ::close(out[0]);
  ::close(err[0]);
  int ws = 0;
  while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
  return r;
}

// ---- processes known by pid files ----

std::optional<ProcessId> Identify(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');  // the name may hold spaces and parentheses
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(paren + 1));
  std::string state, f;
  fields >> state;  // field 3
  for (int i = 4; i < 22 && fields >> f; i++) {
  }
  uint64_t start = 0;
  if (!(fields >> start) || state == "Z" || state == "X") return std::nullopt;
  return ProcessId{pid, start};
}

bool SameProcess(const ProcessId& id) {
  std::optional<ProcessId> now = Identify(id.pid);
  return now && now->start_time == id.start_time;
}

Status WritePidFile(const std::string& path, pid_t pid) {
  std::optional<ProcessId> id = Identify(pid);
  if (!id) return Status::IOError("process " + std::to_string(pid) + " is gone already");
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << pid << " " << id->start_time << "\n";
    if (!f.flush()) return Status::IOError("cannot write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Status::FromErrno("rename " + tmp, errno);
  return Status::OK();
}

std::optional<ProcessId> LiveFromPidFile(const std::string& path) {
  std::ifstream f(path);
  ProcessId id;
  if (!(f >> id.pid >> id.start_time) || id.pid <= 0) return std::nullopt;
  if (!SameProcess(id)) return std::nullopt;
  return id;
}

std::string Comm(pid_t pid) {
  std::string c = ReadFile("/proc/" + std::to_string(pid) + "/comm");
  while (!c.empty() && c.back() == '\n') c.pop_back();
  return c;
}

std::vector<std::string> Cmdline(pid_t pid) {
  std::string raw = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> argv;
  size_t start = 0;
  for (size_t i = 0; i < raw.size(); i++) {
    if (raw[i] != '\0') continue;
    argv.push_back(raw.substr(start, i - start));
    start = i + 1;
  }
  return argv;
}

std::vector<pid_t> ProcessesNamed(const std::string& comm) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    if (Comm(pid) == comm && Identify(pid)) pids.push_back(pid);
  }
  return pids;
}

std::vector<ProcessId> StopProcesses(const std::vector<ProcessId>& ids, int grace_ms) {
  for (const ProcessId& id : ids)
    if (SameProcess(id)) ::kill(id.pid, SIGTERM);
  auto left = [&] {
    std::vector<ProcessId> l;
    for (const ProcessId& id : ids)
      if (SameProcess(id)) l.push_back(id);
    return l;
  };
  auto wait_all = [&](int ms) {
    auto deadline = Clock::now() + std::chrono::milliseconds(ms);
    while (!left().empty() && Clock::now() < deadline) SleepMs(20);
  };
  wait_all(grace_ms);
  std::vector<ProcessId> killed = left();
  for (const ProcessId& id : killed) ::kill(id.pid, SIGKILL);
  if (!killed.empty()) wait_all(2000);
  return killed;
}

int FreeLocalPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = -1;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  if (fd >= 0) ::close(fd);
  return port;
}

Result<std::string> MakeTempDir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string templ =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/" + prefix + "-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) return Status::FromErrno("mkdtemp " + templ, errno);
  return templ;
}

}  // namespace plasmon::cluster
