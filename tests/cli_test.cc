// The `plasmon` command line against a real store.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "plasmon/client.h"
#include "tests/store_process.h"
#include "core/digest.h"
#include "core/unix_socket.h"
#include "tools/content_id.h"

namespace plasmon {
namespace {

using testing::CliBinary;
using testing::CommandResult;
using testing::RunCommand;
using testing::StoreProcess;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(store_.started()); }

  CommandResult Cli(std::vector<std::string> args, const std::string& in = {}) {
    args.insert(args.begin(), {CliBinary(), "--socket", store_.socket()});
    return RunCommand(args, in);
  }

  StoreProcess store_{{"-m", "64M"}};
};

TEST_F(CliTest, PutThenGetRoundTripsBytesThroughStdinAndStdout) {
  std::string data(3 << 20, '\0');  // larger than one inline message
  for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<char>(i * 7);
  std::string id = ObjectID::Random().Hex();
  auto put = Cli({"put", id, "-"}, data);
  ASSERT_EQ(put.exit_code, 0) << put.err;
  EXPECT_EQ(put.out, id + "\n");
  auto get = Cli({"get", id});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, data);
}

TEST_F(CliTest, PutWithoutIdDerivesItFromTheContent) {
  auto put = Cli({"put", "-"}, "some content");
  ASSERT_EQ(put.exit_code, 0) << put.err;
  EXPECT_EQ(put.out, ContentId("some content").Hex() + "\n");
  // The same content again names the same object: success, same ID.
  auto again = Cli({"put", "-"}, "some content");
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, put.out);
}

TEST_F(CliTest, PutFromFileAndGetToFile) {
  std::string dir = testing::TempDir();
  {
    std::ofstream f(dir + "/in");
    f << "file bytes";
  }
  auto put = Cli({"put", dir + "/in"});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  std::string id = put.out.substr(0, 40);
  auto get = Cli({"get", id, "-o", dir + "/out"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  std::ifstream f(dir + "/out");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(s, "file bytes");
}

TEST_F(CliTest, LsStatsAndRm) {
  std::string id = Cli({"put", "-"}, "hello").out.substr(0, 40);
  auto ls = Cli({"ls"});
  ASSERT_EQ(ls.exit_code, 0);
  EXPECT_NE(ls.out.find(id), std::string::npos);
  EXPECT_NE(ls.out.find("sealed"), std::string::npos);
  auto stats = Cli({"stats"});
  ASSERT_EQ(stats.exit_code, 0);
  EXPECT_NE(stats.out.find("capacity       64 MiB"), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find("objects        1 (1 sealed)"), std::string::npos) << stats.out;
  auto rm = Cli({"rm", id});
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_EQ(Cli({"ls"}).out.find(id), std::string::npos);
}

TEST_F(CliTest, StatsAndLsAsJson) {
  const std::string id = ObjectID::Random().Hex();
  ASSERT_EQ(Cli({"put", "--metadata", "m=1", id, "-"}, std::string(1000, 'a')).exit_code, 0);
  Client c;
  ASSERT_TRUE(c.Connect(store_.socket()).ok());
  Result<MutableBuffer> open = c.Create(ObjectID::Random(), 10);  // unsealed, listed as created
  ASSERT_TRUE(open.ok());

  CommandResult ls = Cli({"ls", "--json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  nlohmann::json rows = nlohmann::json::parse(ls.out);
  ASSERT_EQ(rows.size(), 2u) << ls.out;
  const nlohmann::json& put = rows[0]["id"] == id ? rows[0] : rows[1];
  const nlohmann::json& created = rows[0]["id"] == id ? rows[1] : rows[0];
  EXPECT_EQ(put["id"], id);
  EXPECT_EQ(put["state"], "sealed");
  EXPECT_EQ(put["data_size"], 1000);
  EXPECT_EQ(put["metadata_size"], 3);
  EXPECT_EQ(put["ref_count"], 0);
  auto digest = c.Digest(*ObjectID::FromHex(id));
  ASSERT_TRUE(digest.ok());
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(*digest));
  EXPECT_EQ(put["digest"], hex);
  EXPECT_GE(put["create_to_seal_us"].get<int64_t>(), 0);
  EXPECT_EQ(created["state"], "created");
  EXPECT_EQ(created["create_to_seal_us"], -1);
  EXPECT_TRUE(created["digest"].is_null());

  CommandResult stats = Cli({"stats", "--json"});
  ASSERT_EQ(stats.exit_code, 0) << stats.err;
  nlohmann::json j = nlohmann::json::parse(stats.out);
  Result<StoreStats> st = c.Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(j["objects"], 2);
  EXPECT_EQ(j["sealed_objects"], 1);
  EXPECT_EQ(j["capacity_bytes"], st->capacity);
  EXPECT_EQ(j["used_bytes"], st->used);
  EXPECT_EQ(j["clients"], 2);  // c and the CLI itself
  EXPECT_EQ(j["evictions"], 0);
  EXPECT_EQ(j["fetched"], 0);
}

TEST_F(CliTest, DigestAndRefresh) {
  std::string id = Cli({"put", "-"}, "hello").out.substr(0, 40);
  auto d = Cli({"digest", id});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx",
                static_cast<unsigned long long>(
                    ObjectDigest(reinterpret_cast<const uint8_t*>("hello"), 5, nullptr, 0)));
  EXPECT_EQ(d.out, id + "\t" + hex + "\n");
  EXPECT_EQ(Cli({"refresh", id}).exit_code, 0);
  std::string missing = ObjectID::Random().Hex();
  auto bad = Cli({"digest", missing});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("ObjectNotFound"), std::string::npos) << bad.err;
  EXPECT_EQ(Cli({"refresh", missing}).exit_code, 1);
  // ls says how long the object took from create to seal.
  auto ls = Cli({"ls"});
  EXPECT_NE(ls.out.find("SEALED_AFTER"), std::string::npos);
  EXPECT_NE(ls.out.find(" ms\n"), std::string::npos) << ls.out;
}

TEST_F(CliTest, ErrorsAreOneClearLineAndNonZero) {
  std::string missing = ObjectID::Random().Hex();
  auto get = Cli({"get", missing});
  EXPECT_EQ(get.exit_code, 1);
  EXPECT_EQ(get.err, "plasmon: ObjectNotFound: object " + missing + " is not in the store\n");
  auto rm = Cli({"rm", missing});
  EXPECT_EQ(rm.exit_code, 1);
  EXPECT_NE(rm.err.find("ObjectNotFound"), std::string::npos);
  auto bad = Cli({"get", "xyz"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.err, "plasmon: invalid object ID 'xyz': expected 40 hex digits\n");
  auto nofile = Cli({"put", "/nonexistent/file"});
  EXPECT_EQ(nofile.exit_code, 1);
  EXPECT_NE(nofile.err.find("cannot open /nonexistent/file"), std::string::npos);
  std::string id = ObjectID::Random().Hex();
  ASSERT_EQ(Cli({"put", id, "-"}, "x").exit_code, 0);
  auto dup = Cli({"put", id, "-"}, "y");
  EXPECT_EQ(dup.exit_code, 1);
  EXPECT_NE(dup.err.find("ObjectExists"), std::string::npos);
  auto big = Cli({"put", "-"}, std::string(65 << 20, 'b'));
  EXPECT_EQ(big.exit_code, 1);
  EXPECT_NE(big.err.find("OutOfMemory"), std::string::npos) << big.err;
}

// examples/hello.cc, built as an application that sees only plasmon/*.h.
TEST_F(CliTest, TheExampleApplicationRunsAgainstAStore) {
  auto r = RunCommand({std::string(PLASMON_BINARY_DIR) + "/examples/plasmon-hello", store_.socket()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"hello, plasmon\" (digest "), std::string::npos) << r.out;
  auto stats = Cli({"stats"});
  EXPECT_NE(stats.out.find("objects        0 (0 sealed)"), std::string::npos) << stats.out;
}

TEST_F(CliTest, NoStoreIsAClearError) {
  auto r = RunCommand({CliBinary(), "--socket", "/tmp/plasmon-no-such.sock", "stats"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot connect to store at /tmp/plasmon-no-such.sock"), std::string::npos)
      << r.err;
}

TEST_F(CliTest, SocketComesFromTheEnvironment) {
  auto r = RunCommand({CliBinary(), "stats"}, {}, {"PLASMON_SOCKET=" + store_.socket()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// Input is never read whole into the CLI's memory: endless input or a file
// larger than the store ends in one clear OutOfMemory line (it used to be
// std::bad_alloc and SIGABRT), and the store is left as it was.
TEST_F(CliTest, PutOfInputLargerThanTheStoreIsAClearOutOfMemory) {
  // `timeout`: before the fix this read /dev/zero until the heap gave out.
  auto endless = RunCommand({"timeout", "60", "/bin/sh", "-c",
                             "exec \"$0\" --socket \"$1\" put - </dev/zero", CliBinary(),
                             store_.socket()});
  EXPECT_EQ(endless.exit_code, 1) << endless.err;
  EXPECT_EQ(endless.err, "plasmon: OutOfMemory: the input is larger than the store's capacity "
                         "of 64 MiB\n");
  std::string dir = testing::TempDir();
  std::string sparse = dir + "/sparse";
  {
    std::ofstream f(sparse);
  }
  std::filesystem::resize_file(sparse, uint64_t{8} << 30);  // 8 GiB, no blocks
  auto file = RunCommand({"timeout", "60", CliBinary(), "--socket", store_.socket(), "put", sparse});
  EXPECT_EQ(file.exit_code, 1) << file.err;
  EXPECT_NE(file.err.find("OutOfMemory: " + sparse + " is larger than the store's capacity"),
            std::string::npos) << file.err;
  auto stats = Cli({"stats"});
  EXPECT_NE(stats.out.find("objects        0 (0 sealed)"), std::string::npos) << stats.out;
  std::filesystem::remove_all(dir);
}

// A file beyond one inline message goes straight into the object, with the
// ID given or derived from its content (read twice, the same either way).
TEST_F(CliTest, PutOfALargeFileRoundTrips) {
  std::string dir = testing::TempDir();
  std::string data(5 << 20, '\0');
  for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<char>(i * 31 + i / 4096);
  {
    std::ofstream f(dir + "/big");
    f << data;
  }
  auto derived = Cli({"put", dir + "/big", "--metadata", "m"});
  ASSERT_EQ(derived.exit_code, 0) << derived.err;
  EXPECT_EQ(derived.out, ContentId(data).Hex() + "\n");
  std::string id = ObjectID::Random().Hex();
  auto named = Cli({"put", id, dir + "/big"});
  ASSERT_EQ(named.exit_code, 0) << named.err;
  EXPECT_EQ(Cli({"get", id}).out, data);
  EXPECT_EQ(Cli({"get", derived.out.substr(0, 40)}).out, data);
  // From a pipe, in chunks: the same content, the same ID.
  auto piped = Cli({"put", "-", "--metadata", "m"}, data);
  EXPECT_EQ(piped.exit_code, 0) << piped.err;
  EXPECT_EQ(piped.out, derived.out);
  std::filesystem::remove_all(dir);
}

// /proc files say they are empty: they are read as streams, not stored empty.
TEST_F(CliTest, PutOfAProcFileStoresWhatItReads) {
  std::ifstream f("/proc/version");
  std::string version((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(version.empty());
  auto put = Cli({"put", "/proc/version"});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  EXPECT_EQ(put.out, ContentId(version).Hex() + "\n");
  EXPECT_EQ(Cli({"get", put.out.substr(0, 40)}).out, version);
}

// Numbers out of range are refused, not saturated into "wait forever".
TEST_F(CliTest, OutOfRangeNumbersAreRefused) {
  std::string id = ObjectID::Random().Hex();
  // timeout(1): a Get of 99999999999999999999 ms used to wait forever.
  auto huge = RunCommand({"timeout", "20", CliBinary(), "--socket", store_.socket(), "get", id,
                          "-t", "99999999999999999999"});
  EXPECT_EQ(huge.exit_code, 1);
  EXPECT_EQ(huge.err, "plasmon: get --timeout 99999999999999999999 is out of range (at most "
                      "9223372036854775807 ms)\n");
  for (std::vector<std::string> args :
       {std::vector<std::string>{"get", id, "-t", "-2"}, {"get", id, "-t", "1e3"},
        {"fetch", id, "-t", " 5"}, {"--timeout", "0", "stats"}, {"--timeout", "x", "stats"}}) {
    auto r = Cli(args);
    EXPECT_EQ(r.exit_code, 1) << args[0] << " " << args[args.size() - 1];
    EXPECT_NE(r.err.find("--timeout"), std::string::npos) << r.err;
  }
  EXPECT_EQ(Cli({"--timeout", "-1", "stats"}).exit_code, 0);
}

// A socket that accepts and never answers (a hung store, or not a store):
// every command gives up at --timeout with one clear line.
TEST_F(CliTest, AStoreThatNeverAnswersTimesOut) {
  std::string dir = testing::TempDir();
  auto silent = ListenUnix(dir + "/silent.sock", 0600);  // never accepts, never answers
  ASSERT_TRUE(silent.ok()) << silent.status().ToString();
  for (std::vector<std::string> args :
       {std::vector<std::string>{"--timeout", "300", "stats"}, {"ls", "--timeout", "300"},
        {"--timeout", "300", "get", ObjectID::Random().Hex(), "-t", "100"}}) {
    args.insert(args.begin(), {"timeout", "60", CliBinary(), "--socket", dir + "/silent.sock"});
    auto r = RunCommand(args);
    EXPECT_EQ(r.exit_code, 1) << args[args.size() - 1] << ": " << r.err;  // not 124: timeout(1)
    EXPECT_NE(r.err.find("plasmon: Timeout: the store at " + dir + "/silent.sock did not answer "
                         "within 300 ms"), std::string::npos) << r.err;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace plasmon
