// tools/plasmon-cluster, the local cluster launcher: up, a cross-node fetch
// through the CLI, down, and nothing left behind.
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/store_process.h"

namespace plasmon {
namespace {

using testing::CliBinary;
using testing::RunCommand;
using testing::TempDir;

const std::string kScript = std::string(PLASMON_SOURCE_DIR) + "/tools/plasmon-cluster";

std::string Env(const std::string& file, const std::string& key) {
  std::ifstream f(file);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key + "=", 0) != 0) continue;
    std::string v = line.substr(key.size() + 1);
    if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"')) v = v.substr(1, v.size() - 2);
    return v;
  }
  return {};
}

TEST(ClusterLauncherTest, UpFetchAcrossNodesDown) {
  std::string dir = TempDir() + "/cluster";
  std::string name = "lt" + std::to_string(::getpid() % 100000);
  auto up = RunCommand({"/bin/bash", kScript, "up", "--nodes", "2", "--dir", dir, "--name", name,
                        "--subnet", "216", "--memory", "64M", "--build", PLASMON_BINARY_DIR});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  std::string s1 = Env(dir + "/cluster.env", "PLASMON_SOCKET_1");
  std::string s2 = Env(dir + "/cluster.env", "PLASMON_SOCKET_2");
  ASSERT_FALSE(s1.empty() || s2.empty()) << up.out;

  std::string data(100000, 'p');
  auto put = RunCommand({CliBinary(), "-s", s1, "put", "-"}, data);
  ASSERT_EQ(put.exit_code, 0) << put.err;
  std::string id = put.out.substr(0, 40);
  auto fetch = RunCommand({CliBinary(), "-s", s2, "fetch", "-t", "10000", id});
  EXPECT_EQ(fetch.exit_code, 0) << fetch.err;
  auto get = RunCommand({CliBinary(), "-s", s2, "get", id});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, data);

  auto down = RunCommand({"/bin/bash", kScript, "down", "--dir", dir});
  EXPECT_EQ(down.exit_code, 0) << down.out << down.err;
  auto ns = RunCommand({"/usr/sbin/ip", "netns", "list"});
  EXPECT_EQ(ns.out.find(name + "-"), std::string::npos) << ns.out;
  EXPECT_FALSE(std::filesystem::exists(s1));
  std::error_code ec;
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path(), ec);
}

// Hosts mode: no namespaces, each store on its own address of this host.
TEST(ClusterLauncherTest, HostsModeOnTwoLoopbackAddresses) {
  std::string dir = TempDir() + "/cluster";
  std::string port = std::to_string(30000 + 3 * (::getpid() % 3000));
  auto up = RunCommand({"/bin/bash", kScript, "up", "--nodes", "2", "--dir", dir, "--addresses",
                        "127.0.0.1,127.0.0.2", "--port", port, "--memory", "64M", "--build",
                        PLASMON_BINARY_DIR, "--", "--transport", "tcp"});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  std::string env = dir + "/cluster.env";
  EXPECT_EQ(Env(env, "PLASMON_CLUSTER_MODE"), "hosts");
  EXPECT_EQ(Env(env, "PLASMON_NAMESPACES"), "");
  EXPECT_EQ(Env(env, "PLASMON_ENDPOINT_2"), "127.0.0.2:" + std::to_string(std::stoi(port) + 2));
  std::string s1 = Env(env, "PLASMON_SOCKET_1"), s2 = Env(env, "PLASMON_SOCKET_2");

  std::string data(100000, 'h');
  auto put = RunCommand({CliBinary(), "-s", s1, "put", "-"}, data);
  ASSERT_EQ(put.exit_code, 0) << put.err;
  auto fetch = RunCommand({CliBinary(), "-s", s2, "fetch", "-t", "10000", put.out.substr(0, 40)});
  EXPECT_EQ(fetch.exit_code, 0) << fetch.err;
  auto status = RunCommand({"/bin/bash", kScript, "status", "--dir", dir});
  EXPECT_EQ(status.exit_code, 0) << status.out << status.err;
  EXPECT_NE(status.out.find("hosts mode"), std::string::npos) << status.out;

  auto down = RunCommand({"/bin/bash", kScript, "down", "--dir", dir});
  EXPECT_EQ(down.exit_code, 0) << down.out << down.err;
  EXPECT_FALSE(std::filesystem::exists(s1));
  std::error_code ec;
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path(), ec);
}

}  // namespace
}  // namespace plasmon
