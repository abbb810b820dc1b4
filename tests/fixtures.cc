// The test fixtures of store_process.h and redis_process.h, over the
// cluster supervisor.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/redis_process.h"
#include "tests/store_process.h"

namespace plasmon::testing {

std::string StoreBinary() { return PLASMON_STORE_BINARY; }
std::string CliBinary() { return PLASMON_CLI_BINARY; }

std::string TempDir() {
  Result<std::string> d = cluster::MakeTempDir("plasmon-test");
  if (!d.ok()) ADD_FAILURE() << d.status().ToString();
  return d.ok() ? *d : "/nonexistent";
}

StoreProcess::StoreProcess(std::vector<std::string> args, const std::string& netns)
    : dir_(TempDir()), store_({}) {
  if (std::find(args.begin(), args.end(), "--log-level") == args.end())
    args.insert(args.begin(), {"--log-level", "warn"});
  cluster::StoreOptions o;
  o.binary = StoreBinary();
  o.socket = dir_ + "/store.sock";
  o.args = std::move(args);
  o.netns = netns;
  o.log = dir_ + "/store.log";
  o.spawn.truncate_log = true;
  store_ = cluster::Store(std::move(o));
  if (Status st = store_.Start(20000); !st.ok()) ADD_FAILURE() << st.ToString() << "\n" << Log();
}

std::string StoreProcess::Log() const {
  std::ifstream f(store_.options().log);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int StoreProcess::Terminate() {
  Result<int> r = store_.process().Stop(10000);
  return r.ok() ? *r : -1;
}

StoreProcess::~StoreProcess() {
  (void)store_.process().Stop(10000);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

cluster::RedisOptions TestRedis(const std::string& dir, std::string password) {
  cluster::RedisOptions o;
  o.dir = dir;
  o.password = std::move(password);
  o.extra = {"--loglevel", "warning"};
  return o;
}

RedisProcess::RedisProcess(std::string password)
    : dir_(TempDir()), redis_(TestRedis(dir_, std::move(password))) {
  // hiredis writes with write(): a process that talks to Redis must ignore
  // SIGPIPE (plasmon-store does), or a Redis going away kills it.
  ::signal(SIGPIPE, SIG_IGN);
  Start();
}

bool RedisProcess::Start() {
  Status st = redis_.Start();
  if (!st.ok()) ADD_FAILURE() << st.ToString();
  return st.ok();
}

std::optional<long long> RedisProcess::Integer(const std::vector<std::string>& argv) const {
  Result<long long> r = redis_.Integer(argv);
  return r.ok() ? std::optional<long long>(*r) : std::nullopt;
}

RedisProcess::~RedisProcess() {
  Kill();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace plasmon::testing
