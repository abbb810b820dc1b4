// plasmon-store --metrics: what a scrape says after a workload, checked by
// Prometheus' own tools (promtool, and a real Prometheus server that scrapes
// a live store), and that a scraper that never reads leaves the store alone.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "plasmon/client.h"
#include "tests/cluster_util.h"
#include "tests/redis_process.h"
#include "tests/store_process.h"
#include "tools/cluster/process.h"

namespace plasmon {
namespace {

// The value of the first sample in a Prometheus query's answer
// ({"data":{"result":[{"value":[TIME,"VALUE"]},...]}}), or "" if none. (Not
// std::regex: GCC 12's <regex> trips -Wmaybe-uninitialized in the sanitizer
// builds.)
std::string FirstSample(const std::string& answer) {
  nlohmann::json j = nlohmann::json::parse(answer, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("data") || !j["data"].is_object()) return "";
  const nlohmann::json& result = j["data"]["result"];
  if (!result.is_array() || result.empty() || !result[0].is_object()) return "";
  const nlohmann::json& value = result[0]["value"];
  if (!value.is_array() || value.size() != 2 || !value[1].is_string()) return "";
  return value[1].get<std::string>();
}

using namespace std::chrono_literals;
using testing::StoreProcess;

int FreePort() { return cluster::FreeLocalPort(); }

// GET http://127.0.0.1:port/path; nullopt if it failed.
std::optional<std::string> HttpGet(int port, const std::string& path) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(5, 0);
  auto res = c.Get(path.c_str());
  if (!res || res->status != 200) return std::nullopt;
  return res->body;
}

// The value of the sample `series` (name and labels, as exposed), or -1.
double Sample(const std::string& text, const std::string& series) {
  size_t at = 0;
  while ((at = text.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + series.size() + 1));
    at++;
  }
  return -1;
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    ASSERT_GT(port_, 0);
    store_ = std::make_unique<StoreProcess>(std::vector<std::string>{
        "-m", "16M", "--metrics", "127.0.0.1:" + std::to_string(port_)});
    ASSERT_TRUE(store_->started());
    ASSERT_TRUE(client_.Connect(store_->socket()).ok());
  }
  std::string Scrape() {
    std::optional<std::string> m = HttpGet(port_, "/metrics");
    EXPECT_TRUE(m.has_value()) << "no answer from /metrics\n" << store_->Log();
    return m.value_or("");
  }

  int port_ = 0;
  std::unique_ptr<StoreProcess> store_;
  Client client_;
};

TEST_F(MetricsTest, CountsWhatClientsDid) {
  std::vector<ObjectID> ids;
  for (int i = 0; i < 3; i++) {
    ids.push_back(ObjectID::Random());
    ASSERT_TRUE(client_.CreateAndSeal(ids.back(), std::string(1000, 'x')).ok());
  }
  Result<MutableBuffer> unsealed = client_.Create(ObjectID::Random(), 100);
  ASSERT_TRUE(unsealed.ok());
  // Two held, one asked for that is not there: three IDs got.
  auto held = client_.Get({ids[0], ids[1]}, 0);
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(client_.Get({ObjectID::Random()}, 0).ok());
  auto deleted = client_.Delete({ids[2]});
  ASSERT_TRUE(deleted.ok() && (*deleted)[0].ok());

  const std::string m = Scrape();
  Result<StoreStats> st = client_.Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(Sample(m, "plasmon_creates_total"), 4) << m;
  EXPECT_EQ(Sample(m, "plasmon_seals_total"), 3);
  // The two sealed ones from the shared index, the missing one from the store.
  EXPECT_EQ(Sample(m, "plasmon_gets_total{path=\"shm\"}"), 2);
  EXPECT_EQ(Sample(m, "plasmon_gets_total{path=\"socket\"}"), 1);
  EXPECT_EQ(Sample(m, "plasmon_deletes_total"), 1);
  EXPECT_EQ(Sample(m, "plasmon_deleted_bytes_total"), 1024);  // in 64-byte units
  EXPECT_EQ(Sample(m, "plasmon_objects{state=\"sealed\"}"), 2);
  EXPECT_EQ(Sample(m, "plasmon_objects{state=\"created\"}"), 1);
  // Held twice 1024 bytes, and the unsealed 128: nothing of it evictable.
  EXPECT_EQ(Sample(m, "plasmon_pinned_bytes"), 2 * 1024 + 128);
  // The same numbers as Stats.
  EXPECT_EQ(Sample(m, "plasmon_used_bytes"), static_cast<double>(st->used));
  EXPECT_EQ(Sample(m, "plasmon_capacity_bytes"), static_cast<double>(st->capacity));
  EXPECT_EQ(Sample(m, "plasmon_clients"), static_cast<double>(st->clients));
  EXPECT_EQ(Sample(m, "plasmon_evictions_total"), 0);
  EXPECT_EQ(Sample(m, "plasmon_fetch_duration_seconds_count"), 0);
  // A single node: no directory, no transports.
  EXPECT_EQ(m.find("plasmon_directory_"), std::string::npos);

  held->clear();  // releases both
  ASSERT_TRUE(client_.Abort(unsealed->id).ok());
  Result<StoreStats> after = client_.Stats();  // a round trip: the releases are handled
  ASSERT_TRUE(after.ok());
  const std::string m2 = Scrape();
  EXPECT_EQ(Sample(m2, "plasmon_pinned_bytes"), 0) << m2;
  EXPECT_EQ(Sample(m2, "plasmon_objects{state=\"created\"}"), 0);
}

TEST_F(MetricsTest, PromtoolAcceptsTheExposition) {
  ASSERT_TRUE(client_.CreateAndSeal(ObjectID::Random(), "x").ok());
  const std::string m = Scrape();
  ASSERT_FALSE(m.empty());
  const std::string promtool = cluster::FindExecutable("promtool");
  ASSERT_FALSE(promtool.empty()) << "promtool not found (apt-get install prometheus; tools/setup.sh)";
  testing::CommandResult r = testing::RunCommand({promtool, "check", "metrics"}, m);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << "\n" << m;
}

TEST_F(MetricsTest, AStuckScraperDoesNotDisturbTheStore) {
  // Connections that send half a request, or a whole one and never read
  // the answer, hold the metrics threads (until their 5 s timeouts); the
  // store serves its clients meanwhile as if they were not there.
  std::vector<int> stuck;
  for (int i = 0; i < 8; i++) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    const std::string req = i % 2 ? "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" : "GET /metr";
    ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
    stuck.push_back(fd);
  }
  Client c;
  ConnectOptions o;
  o.request_timeout_ms = 5000;  // a store that stalled would fail these
  ASSERT_TRUE(c.Connect(store_->socket(), o).ok());
  for (int i = 0; i < 200; i++) {
    ObjectID id = ObjectID::Random();
    ASSERT_TRUE(c.CreateAndSeal(id, std::string(100, 'y')).ok()) << i;
    auto got = c.Get({id}, 0);
    ASSERT_TRUE(got.ok() && (*got)[0].valid()) << i;
  }
  for (int fd : stuck) ::close(fd);
  // Once they are gone, scrapes are served again and saw every request.
  std::string m;
  for (int i = 0; i < 100 && Sample(m, "plasmon_creates_total") < 0; i++) {
    m = HttpGet(port_, "/metrics").value_or("");
    if (m.empty()) std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(Sample(m, "plasmon_creates_total"), 200) << m;
  EXPECT_EQ(Sample(m, "plasmon_gets_total{path=\"socket\"}") +
                Sample(m, "plasmon_gets_total{path=\"shm\"}"),
            200);
}

TEST(MetricsFlag, BadAddressesAreClearErrors) {
  const std::string dir = testing::TempDir();
  for (const std::string& bad : {std::string("9464"), std::string("localhost:port"),
                                 std::string("127.0.0.1:70000")}) {
    testing::CommandResult r = testing::RunCommand(
        {testing::StoreBinary(), "-s", dir + "/s.sock", "-m", "8M", "--metrics", bad});
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_NE(r.err.find("--metrics wants ADDR:PORT"), std::string::npos) << bad << ": " << r.err;
  }
  // A port in use: said so, and the store does not start.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  testing::CommandResult r = testing::RunCommand(
      {testing::StoreBinary(), "-s", dir + "/s.sock", "-m", "8M", "--metrics",
       "127.0.0.1:" + std::to_string(ntohs(a.sin_port))});
  ::close(fd);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot bind"), std::string::npos) << r.err;
  EXPECT_NE(::access((dir + "/s.sock").c_str(), F_OK), 0) << "the socket was left behind";
  std::filesystem::remove_all(dir);
}

// Two stores on loopback and a Redis: a fetch shows in the puller's
// fetch counters and histogram, and both show their directory and
// transport connections.
TEST(MetricsCluster, CountsAFetch) {
  testing::RedisProcess redis;
  ASSERT_TRUE(redis.started());
  const std::string dir = testing::TempDir();
  std::ofstream(dir + "/secret") << "a shared secret for the metrics test\n";
  int metrics[3];
  std::unique_ptr<StoreProcess> stores[3];
  Client clients[3];
  for (int i = 1; i <= 2; i++) {
    metrics[i] = FreePort();
    const int listen = FreePort();
    ASSERT_GT(metrics[i], 0);
    ASSERT_GT(listen, 0);
    stores[i] = std::make_unique<StoreProcess>(std::vector<std::string>{
        "-m", "64M", "--redis", redis.address(), "--node-id", "m" + std::to_string(i),
        "--listen", "127.0.0.1:" + std::to_string(listen), "--transport", "tcp",
        "--cluster-secret-file", dir + "/secret", "--node-cache-ms", "60000", "--metrics",
        "127.0.0.1:" + std::to_string(metrics[i])});
    ASSERT_TRUE(stores[i]->started());
    ASSERT_TRUE(clients[i].Connect(stores[i]->socket()).ok());
  }
  const ObjectID id = ObjectID::Random();
  const std::string data = testing::Bytes(300000, 1);
  ASSERT_TRUE(testing::Put(clients[1], id, data).ok());
  ASSERT_TRUE(testing::Published(clients[2], id, "m1"));
  Status st = testing::FetchOne(clients[2], id);
  ASSERT_TRUE(st.ok()) << st.ToString() << stores[2]->Log();
  // A small object goes by the loop, which polls for the answer.
  const ObjectID small = ObjectID::Random();
  ASSERT_TRUE(testing::Put(clients[1], small, testing::Bytes(4096, 2)).ok());
  ASSERT_TRUE(testing::Published(clients[2], small, "m1"));
  st = testing::FetchOne(clients[2], small);
  ASSERT_TRUE(st.ok()) << st.ToString() << stores[2]->Log();

  const std::string m = HttpGet(metrics[2], "/metrics").value_or("");
  EXPECT_EQ(Sample(m, "plasmon_fetches_total{transport=\"tcp\",result=\"ok\"}"), 2) << m;
  EXPECT_EQ(Sample(m, "plasmon_fetches_total{transport=\"tcp\",result=\"failed\"}"), 0);
  EXPECT_EQ(Sample(m, "plasmon_fetched_bytes_total"), static_cast<double>(data.size() + 4096));
  EXPECT_EQ(Sample(m, "plasmon_fetch_duration_seconds_count"), 2);
  EXPECT_EQ(Sample(m, "plasmon_fetch_duration_seconds_bucket{le=\"+Inf\"}"), 2);
  // The small pull's wait was polled for (at least one round, the answer
  // there or not).
  EXPECT_GE(Sample(m, "plasmon_loop_polls_total{result=\"answered\"}") +
                Sample(m, "plasmon_loop_polls_total{result=\"empty\"}"),
            1);
  EXPECT_GT(Sample(m, "plasmon_fetch_duration_seconds_sum"), 0);
  EXPECT_EQ(Sample(m, "plasmon_directory_connected"), 1);
  EXPECT_GE(Sample(m, "plasmon_directory_publishes_queued"), 0);
  EXPECT_EQ(Sample(m, "plasmon_directory_publish_failures_total"), 0);
  // Two fetches, two lookups; the Where before each cached m1's record.
  EXPECT_EQ(Sample(m, "plasmon_directory_lookups_total{how=\"hscan\"}") +
                Sample(m, "plasmon_directory_lookups_total{how=\"script\"}"),
            2);
  EXPECT_GE(Sample(m, "plasmon_directory_lookups_total{how=\"hscan\"}"), 1);
  // The pulled object's connection stays pooled, to be used again.
  EXPECT_GE(Sample(m, "plasmon_transport_connections{transport=\"tcp\",role=\"outgoing\"}"), 1);
  const std::string m1 = HttpGet(metrics[1], "/metrics").value_or("");
  EXPECT_GE(Sample(m1, "plasmon_transport_connections{transport=\"tcp\",role=\"serving\"}"), 1)
      << m1;
  EXPECT_EQ(Sample(m1, "plasmon_fetch_duration_seconds_count"), 0);
  // It waited for no answer: it never polled.
  EXPECT_EQ(Sample(m1, "plasmon_loop_polls_total{result=\"answered\"}"), 0);
  EXPECT_EQ(Sample(m1, "plasmon_loop_polls_total{result=\"empty\"}"), 0);
  const std::string promtool = cluster::FindExecutable("promtool");
  ASSERT_FALSE(promtool.empty());
  testing::CommandResult r = testing::RunCommand({promtool, "check", "metrics"}, m);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  std::filesystem::remove_all(dir);
}

// Prometheus itself (Debian's server) scrapes a store during a workload; its
// HTTP API then returns the store's counters.
TEST(MetricsPrometheus, ScrapesALiveStore) {
  const std::string prometheus = cluster::FindExecutable("prometheus");
  ASSERT_FALSE(prometheus.empty()) << "prometheus not found (apt-get install prometheus; tools/setup.sh)";
  const int metrics_port = FreePort(), prom_port = FreePort();
  ASSERT_GT(metrics_port, 0);
  ASSERT_GT(prom_port, 0);
  StoreProcess store({"-m", "16M", "--metrics", "127.0.0.1:" + std::to_string(metrics_port)});
  ASSERT_TRUE(store.started());
  const std::string dir = testing::TempDir();
  std::ofstream(dir + "/prometheus.yml")
      << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
      << "scrape_configs:\n  - job_name: plasmon\n    static_configs:\n"
      << "      - targets: ['127.0.0.1:" << metrics_port << "']\n";
  cluster::SpawnOptions so;
  so.log = dir + "/prometheus.log";
  so.die_with_parent = true;
  Result<cluster::Process> prom = cluster::Process::Spawn(
      {prometheus, "--config.file=" + dir + "/prometheus.yml", "--storage.tsdb.path=" + dir + "/data",
       "--web.listen-address=127.0.0.1:" + std::to_string(prom_port), "--log.level=warn"},
      so);
  ASSERT_TRUE(prom.ok()) << prom.status().ToString();

  Client c;
  ASSERT_TRUE(c.Connect(store.socket()).ok());
  for (int i = 0; i < 7; i++) ASSERT_TRUE(c.CreateAndSeal(ObjectID::Random(), "z").ok());
  // Until Prometheus has scraped the store after the workload (it starts,
  // then scrapes every second): its API answers with the store's count.
  std::string answer;
  bool seen = false;
  for (int i = 0; i < 300 && !seen; i++) {
    std::this_thread::sleep_for(100ms);
    answer = HttpGet(prom_port, "/api/v1/query?query=plasmon_creates_total").value_or("");
    seen = FirstSample(answer) == "7";
  }
  EXPECT_TRUE(seen) << answer << "\n" << std::ifstream(dir + "/prometheus.log").rdbuf();
  answer = HttpGet(prom_port, "/api/v1/query?query=plasmon_objects%7Bstate%3D%22sealed%22%7D")
               .value_or("");
  EXPECT_EQ(FirstSample(answer), "7") << answer;
  answer = HttpGet(prom_port, "/api/v1/query?query=up%7Bjob%3D%22plasmon%22%7D").value_or("");
  EXPECT_EQ(FirstSample(answer), "1") << answer;
  prom->Kill();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace plasmon
