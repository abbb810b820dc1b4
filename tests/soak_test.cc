// A short run of plasmon-soak (tools/soak.cc): clients killed, store B and
// Redis killed and restarted, and store A checked at the end for leaks, lost
// or corrupt objects. Every fault is forced at least once.
#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>
#include <string>

#include "tests/store_process.h"

namespace plasmon {
namespace {

int Figure(const std::string& out, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(name + "=([0-9]+)"))) return -1;
  return std::stoi(m[1]);
}

TEST(SoakTest, ShortRunWithEveryFaultHoldsEveryCheck) {
  const std::string soak = std::string(PLASMON_BINARY_DIR) + "/tools/plasmon-soak";
  ASSERT_EQ(::access(soak.c_str(), X_OK), 0) << soak << " is not built";
  testing::CommandResult r =
      testing::RunCommand({soak, "--seconds", "20", "--clients", "4", "--seed", "20240601",
                           "--min-kills", "2", "--min-b-restarts", "1", "--min-redis-restarts", "1",
                           "--store-binary", testing::StoreBinary()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("RESULT: PASS"), std::string::npos) << r.out << r.err;
  EXPECT_GE(Figure(r.out, "client_kills"), 2) << r.out;
  EXPECT_GE(Figure(r.out, "b_restarts"), 1) << r.out;
  EXPECT_GE(Figure(r.out, "redis_restarts"), 1) << r.out;
  EXPECT_GT(Figure(r.out, "fetches_ok"), 0) << r.out;
  EXPECT_GT(Figure(r.out, "ops"), 0) << r.out;
  EXPECT_EQ(Figure(r.out, "violations"), 0) << r.out;
}

}  // namespace
}  // namespace plasmon
