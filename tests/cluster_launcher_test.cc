// tools/plasmon-cluster, the local cluster launcher: up, a cross-node fetch
// through the CLI, down, and nothing left behind.
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

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

std::vector<std::string> Words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// The network namespaces named PREFIX-* that `ip netns list` shows, sorted;
// nullopt if it cannot list them (no `ip` on the PATH, or no netns support).
std::optional<std::vector<std::string>> NamespacesNamed(const std::string& prefix) {
  auto r = RunCommand({"/usr/bin/env", "ip", "netns", "list"});
  if (r.exit_code != 0) return std::nullopt;
  std::vector<std::string> found;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    std::string ns = line.substr(0, line.find(' '));  // "NAME" or "NAME (id: N)"
    if (ns.rfind(prefix + "-", 0) == 0) found.push_back(ns);
  }
  std::sort(found.begin(), found.end());
  return found;
}

TEST(ClusterLauncherTest, UpFetchAcrossNodesDown) {
  std::string dir = TempDir() + "/cluster";
  std::string name = "lt" + std::to_string(::getpid() % 100000);
  std::optional<std::vector<std::string>> before = NamespacesNamed(name);
  auto up = RunCommand({"/bin/bash", kScript, "up", "--nodes", "2", "--dir", dir, "--name", name,
                        "--subnet", "216", "--memory", "64M", "--build", PLASMON_BINARY_DIR});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  std::string s1 = Env(dir + "/cluster.env", "PLASMON_SOCKET_1");
  std::string s2 = Env(dir + "/cluster.env", "PLASMON_SOCKET_2");
  ASSERT_FALSE(s1.empty() || s2.empty()) << up.out;
  // Without --mode the launcher picks netns when it can make namespaces here,
  // else loopback; only in netns mode is there something to leave behind.
  const std::string mode = Env(dir + "/cluster.env", "PLASMON_CLUSTER_MODE");
  EXPECT_TRUE(mode == "netns" || mode == "loopback") << "mode '" << mode << "'\n" << up.out;
  std::vector<std::string> made = Words(Env(dir + "/cluster.env", "PLASMON_NAMESPACES"));
  std::sort(made.begin(), made.end());
  if (mode == "netns") {
    EXPECT_TRUE(before.has_value()) << "netns mode, but `ip netns list` failed before up";
    EXPECT_EQ(before.value_or(std::vector<std::string>{}), std::vector<std::string>{})
        << "namespaces named " << name << "-* before up";
    EXPECT_EQ(made.size(), 3u) << "a hub and one per node";
    // The listing sees what the launcher made: its silence after down means something.
    std::optional<std::vector<std::string>> during = NamespacesNamed(name);
    EXPECT_TRUE(during.has_value()) << "`ip netns list` failed while the cluster was up";
    EXPECT_EQ(during.value_or(std::vector<std::string>{}), made);
  } else {
    EXPECT_TRUE(made.empty()) << "loopback mode with namespaces";
  }

  std::string data(100000, 'p');
  auto put = RunCommand({CliBinary(), "-s", s1, "put", "-"}, data);
  ASSERT_EQ(put.exit_code, 0) << put.err;
  std::string id = put.out.substr(0, 40);
  auto fetch = RunCommand({CliBinary(), "-s", s2, "fetch", "-t", "10000", id});
  EXPECT_EQ(fetch.exit_code, 0) << fetch.err;
  // It says what the transfer itself took, as the store measured it.
  EXPECT_NE(fetch.err.find(id + ": pulled 97.7 KiB over TCP: transfer "), std::string::npos)
      << fetch.err;
  EXPECT_NE(fetch.err.find(" GB/s (lookup "), std::string::npos) << fetch.err;
  // Fetched again, it is local: nothing was pulled.
  auto again = RunCommand({CliBinary(), "-s", s2, "fetch", "-t", "10000", id});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.err.find("pulled"), std::string::npos) << again.err;
  auto get = RunCommand({CliBinary(), "-s", s2, "get", id});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, data);

  auto down = RunCommand({"/bin/bash", kScript, "down", "--dir", dir});
  EXPECT_EQ(down.exit_code, 0) << down.out << down.err;
  EXPECT_FALSE(std::filesystem::exists(s1));
  std::error_code ec;
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path(), ec);
  if (mode != "netns") {
    GTEST_SKIP() << "the launcher fell back to loopback mode (not root, no `ip`, or no "
                    "namespaces allowed here): that down leaves no namespace behind is "
                    "not checked; up, fetch and down passed";
  }
  std::optional<std::vector<std::string>> after = NamespacesNamed(name);
  ASSERT_TRUE(after.has_value()) << "`ip netns list` failed after down";
  EXPECT_TRUE(after->empty()) << "left behind: " << ::testing::PrintToString(*after);
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
