// The hash of object IDs and of outside strings: every byte counts, values
// spread over a table's buckets, and the key differs from process to process.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/keyed_hash.h"
#include "plasmon/object_id.h"

namespace plasmon {
namespace {

// `count` IDs equal to `base` except for a little-endian counter written over
// bytes [pos, pos + width) (wrapping past byte 19 to byte 0).
std::vector<ObjectID> VaryAt(const ObjectID& base, size_t pos, size_t width, size_t count) {
  std::vector<ObjectID> ids;
  for (size_t i = 0; i < count; i++) {
    ObjectID id = base;
    for (size_t b = 0; b < width; b++)
      id.mutable_data()[(pos + b) % ObjectID::kSize] = static_cast<uint8_t>(i >> (8 * b));
    ids.push_back(id);
  }
  return ids;
}

// Puts the IDs in an unordered_set keyed by ObjectIDHash (as the store's
// tables are) with one bucket per ID or more, and checks the buckets fill as
// a random function would fill them: no bucket far above the mean and about
// 1 - 1/e of them used.
void ExpectEvenBuckets(const std::vector<ObjectID>& ids, const std::string& what) {
  std::unordered_set<ObjectID, ObjectIDHash> set;
  set.max_load_factor(1.0);
  set.reserve(ids.size());
  for (const ObjectID& id : ids) set.insert(id);
  ASSERT_EQ(set.size(), ids.size()) << what;
  size_t used = 0, largest = 0;
  for (size_t b = 0; b < set.bucket_count(); b++) {
    size_t n = set.bucket_size(b);
    used += n > 0;
    largest = std::max(largest, n);
  }
  double expected_used =
      static_cast<double>(set.bucket_count()) *
      (1 - std::pow(1 - 1.0 / static_cast<double>(set.bucket_count()), static_cast<double>(ids.size())));
  // With a random function at load ~1, the largest of ~4096 buckets holds about
  // 6; the old hash put every ID of bytes 8-15 in one bucket.
  EXPECT_LE(largest, 12u) << what;
  EXPECT_GE(static_cast<double>(used), 0.9 * expected_used) << what;
}

TEST(KeyedHashTest, EveryBytePositionChangesTheHash) {
  const ObjectID base = ObjectID::FromHex("00112233445566778899aabbccddeeff01234567").value();
  for (size_t pos = 0; pos < ObjectID::kSize; pos++) {
    std::vector<ObjectID> ids = VaryAt(base, pos, 1, 256);
    std::unordered_set<size_t> hashes;
    for (const ObjectID& id : ids) hashes.insert(id.Hash());
    EXPECT_EQ(hashes.size(), 256u) << "IDs differing only in byte " << pos;
  }
}

TEST(KeyedHashTest, ThousandsOfIdsDifferingInTwoBytesSpreadEvenly) {
  // Two neighbouring bytes give thousands of IDs per position: a counter
  // starting at every byte of the ID.
  const ObjectID base = ObjectID::Random();
  for (size_t pos = 0; pos < ObjectID::kSize; pos++) {
    std::vector<ObjectID> ids = VaryAt(base, pos, 2, 4096);
    std::unordered_set<size_t> hashes;
    for (const ObjectID& id : ids) hashes.insert(id.Hash());
    EXPECT_EQ(hashes.size(), ids.size()) << "IDs differing only in bytes " << pos << "-" << pos + 1;
    ExpectEvenBuckets(ids, "bytes " + std::to_string(pos) + "-" + std::to_string(pos + 1));
  }
}

TEST(KeyedHashTest, PrefixCounterIndexIdsSpreadEvenly) {
  // The scheme of the issue: a job prefix in bytes 0-7, a counter in bytes
  // 8-15, a fixed index in bytes 16-19.
  const ObjectID base = ObjectID::Random();
  ExpectEvenBuckets(VaryAt(base, 8, 8, 50000), "a counter in bytes 8-15");
  ExpectEvenBuckets(VaryAt(base, 12, 4, 50000), "a counter in bytes 12-15");
}

TEST(KeyedHashTest, StringsHashEveryByte) {
  KeyedStringHash h;
  std::unordered_set<size_t> hashes;
  std::string s(64, 'x');
  for (size_t pos = 0; pos < s.size(); pos++) {
    std::string t = s;
    t[pos] = 'y';
    hashes.insert(h(t));
  }
  EXPECT_EQ(hashes.size(), s.size());
  EXPECT_EQ(h(std::string("10.0.0.1:7000")), h(std::string_view("10.0.0.1:7000")));
  EXPECT_NE(h(std::string("a")), h(std::string("a\0", 2)));
}

// Run by KeyIsDrawnPerProcess in a child process: prints the hash of a fixed ID.
TEST(KeyedHashTest, DISABLED_PrintHashOfFixedId) {
  ObjectID id = ObjectID::FromHex("0000000000000000000000000000000000000001").value();
  std::printf("HASH=%zx\n", id.Hash());
}

size_t HashInChild() {
  std::string cmd = "/proc/" + std::to_string(::getpid()) +
                    "/exe --gtest_also_run_disabled_tests "
                    "--gtest_filter=KeyedHashTest.DISABLED_PrintHashOfFixedId";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return 0;
  char line[256];
  size_t value = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr)
    if (std::sscanf(line, "HASH=%zx", &value) == 1) break;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
  }
  ::pclose(f);
  return value;
}

TEST(KeyedHashTest, KeyIsDrawnPerProcess) {
  // The same ID hashes differently in two processes (a chance of 2^-64 that
  // two random keys agree): an outsider cannot precompute colliding IDs.
  size_t a = HashInChild(), b = HashInChild();
  ASSERT_NE(a, 0u);
  ASSERT_NE(b, 0u);
  EXPECT_NE(a, b);
  ObjectID id = ObjectID::FromHex("0000000000000000000000000000000000000001").value();
  EXPECT_EQ(id.Hash(), id.Hash());  // stable within a process
}

}  // namespace
}  // namespace plasmon
