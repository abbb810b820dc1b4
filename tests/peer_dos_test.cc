// Hostile peers against a real plasmon-store's TCP transport (issue 10):
// slow and silent connections that never finish their handshake, a flood of
// garbage connections, and, meanwhile, a fetch by a store with the secret.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/fd.h"
#include "plasmon/client.h"
#include "tests/cluster_util.h"
#include "tests/redis_process.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

using namespace std::chrono_literals;
using testing::RedisProcess;
using testing::StoreProcess;

// A loopback port free at the moment (the store binds it right after).
int FreePort() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return -1;
  return ntohs(a.sin_port);
}

// A connection to 127.0.0.1:port from the loopback address `from`.
UniqueFd ConnectFrom(int port, const std::string& from) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, from.c_str(), &local.sin_addr);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
      ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    fd.Reset();
  timeval tv{10, 0};
  if (fd.valid()) ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

size_t CountLines(const std::string& log, const std::string& what) {
  size_t n = 0;
  for (size_t at = 0; (at = log.find(what, at)) != std::string::npos; at++) n++;
  return n;
}

TEST(PeerDosTest, SlowPeersAndGarbageNeitherBlockFetchesNorFloodTheLog) {
  RedisProcess redis;
  ASSERT_TRUE(redis.started());
  std::string secret = testing::TempDir() + "/secret";
  std::ofstream(secret) << "the cluster's secret\n";
  const int port = FreePort();
  ASSERT_GT(port, 0);
  auto args = [&](const std::string& node, const std::string& listen) {
    return std::vector<std::string>{"-m",        "64M",  "--redis", redis.address(),
                                    "--node-id", node,   "--listen", listen,
                                    "--cluster-secret-file", secret,
                                    "--peer-handshake-timeout-ms", "500",
                                    "--peer-handshakes-per-address", "8"};
  };
  StoreProcess holder(args("holder", "127.0.0.1:" + std::to_string(port)));
  StoreProcess fetcher(args("fetcher", "127.0.0.1:0"));
  ASSERT_TRUE(holder.started() && fetcher.started());
  Client h, f;
  ASSERT_TRUE(h.Connect(holder.socket()).ok());
  ASSERT_TRUE(f.Connect(fetcher.socket()).ok());
  ObjectID id = ObjectID::Random();
  std::string data = testing::Bytes(3 << 20, 1);
  ASSERT_TRUE(testing::Put(h, id, data).ok());
  ASSERT_TRUE(testing::Published(f, id, "holder"));

  // Slowloris: 4 addresses x 72 connections, more than the holder's 256
  // serving slots (and far over each address's cap of 8), one header byte
  // every 100 ms, never a whole header.
  std::vector<UniqueFd> slow;
  for (int a = 2; a <= 5; a++)
    for (int i = 0; i < 72; i++) slow.push_back(ConnectFrom(port, "127.0.0." + std::to_string(a)));
  std::atomic<bool> stop{false};
  std::thread drip([&] {
    for (int round = 0; round < 15 && !stop; round++) {
      for (UniqueFd& fd : slow)
        if (fd.valid()) (void)::send(fd.get(), "\0", 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(100ms);
    }
  });
  // Garbage: 2000 connections from another address.
  std::thread garbage([&] {
    for (int i = 0; i < 2000; i++) {
      UniqueFd fd = ConnectFrom(port, "127.0.0.6");
      if (!fd.valid()) continue;
      (void)::send(fd.get(), "GET / HTTP/1.0\r\n\r\n", 18, MSG_NOSIGNAL);
      char buf[64];
      while (::recv(fd.get(), buf, sizeof(buf), 0) > 0) {
      }
    }
  });
  // The fetch goes through while they are at it.
  Status st = testing::FetchOne(f, id);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(testing::HasBytes(f, id, data));
  garbage.join();
  // The first slow connections (within their address's cap) are cut at the
  // handshake deadline, long before the 10 s a recv() may wait.
  char byte;
  ssize_t n = ::recv(slow[0].get(), &byte, 1, 0);
  int err = errno;
  EXPECT_TRUE(n == 0 || (n < 0 && err == ECONNRESET)) << "a slow connection was not closed";
  stop = true;
  drip.join();

  EXPECT_EQ(holder.Terminate(), 0);  // summarizes what it suppressed
  std::string log = holder.Log();
  EXPECT_LE(CountLines(log, "tcp transport"), 60u) << log;
  EXPECT_NE(log.find("suppressed"), std::string::npos) << log;
  EXPECT_NE(log.find("no handshake within 500 ms"), std::string::npos) << log;
  EXPECT_NE(log.find("are already in their handshake"), std::string::npos) << log;
}

}  // namespace
}  // namespace plasmon
