#include "tests/redis_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "tests/store_process.h"

namespace plasmon::testing {

RedisProcess::RedisProcess(std::string password) : password_(std::move(password)) {
  // hiredis writes with write(): a process that talks to Redis must ignore
  // SIGPIPE (plasmon-store does), or a Redis going away kills it.
  ::signal(SIGPIPE, SIG_IGN);
  dir_ = TempDir();
  socket_ = dir_ + "/redis.sock";
  Start();
}

bool RedisProcess::Start() {
  std::string sock_arg = socket_, dir_arg = dir_;
  // Built before fork: the child only execs.
  std::vector<const char*> argv = {"redis-server", "--port",       "0",  "--unixsocket",
                                   sock_arg.c_str(), "--save",     "",   "--appendonly",
                                   "no",             "--dir",      dir_arg.c_str(),
                                   "--loglevel",     "warning"};
  if (!password_.empty()) argv.insert(argv.end(), {"--requirepass", password_.c_str()});
  argv.push_back(nullptr);
  int log_fd = ::open((dir_ + "/redis.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    ::execvp("redis-server", const_cast<char* const*>(argv.data()));
    ::_exit(127);
  }
  ::close(log_fd);
  for (int i = 0; i < 2000; i++) {
    redisContext* c = redisConnectUnix(socket_.c_str());
    if (c != nullptr && c->err == 0) {
      if (!password_.empty())
        freeReplyObject(redisCommand(c, "AUTH %s", password_.c_str()));
      auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
      bool ok = r != nullptr && r->type == REDIS_REPLY_STATUS;
      if (r != nullptr) freeReplyObject(r);
      redisFree(c);
      if (ok) return true;
    } else if (c != nullptr) {
      redisFree(c);
    }
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "redis-server did not start (is it installed? tools/setup.sh installs it)";
  pid_ = -1;
  return false;
}

std::optional<long long> RedisProcess::Integer(const std::vector<std::string>& argv) const {
  redisContext* c = redisConnectUnix(socket_.c_str());
  if (c == nullptr) return std::nullopt;
  std::optional<long long> out;
  if (c->err == 0) {
    if (!password_.empty()) freeReplyObject(redisCommand(c, "AUTH %s", password_.c_str()));
    std::vector<const char*> args;
    std::vector<size_t> lens;
    for (const std::string& a : argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(args.size()), args.data(), lens.data()));
    if (r != nullptr && r->type == REDIS_REPLY_INTEGER) out = r->integer;
    if (r != nullptr) freeReplyObject(r);
  }
  redisFree(c);
  return out;
}

void RedisProcess::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  ::unlink(socket_.c_str());
}

RedisProcess::~RedisProcess() {
  Kill();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace plasmon::testing
