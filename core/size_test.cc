#include "core/size.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "plasmon/object_id.h"

namespace plasmon {
namespace {

TEST(SizeTest, ParsesPlainAndSuffixedSizes) {
  EXPECT_EQ(ParseSize("1000"), 1000u);
  EXPECT_EQ(ParseSize("512M"), 512ull << 20);
  EXPECT_EQ(ParseSize("4G"), 4ull << 30);
  EXPECT_EQ(ParseSize("64KiB"), 64ull << 10);
  EXPECT_EQ(ParseSize("2gb"), 2ull << 30);
  EXPECT_EQ(ParseSize("1T"), 1ull << 40);
}

TEST(SizeTest, RefusesGarbageAndOverflow) {
  for (const char* bad : {"", "M", "12X", "1.5G", "-1", "4 G", "99999999999999999999", "20000000T"})
    EXPECT_FALSE(ParseSize(bad)) << bad;
}

TEST(SizeTest, FormatsHumanReadably) {
  EXPECT_EQ(FormatSize(17), "17 B");
  EXPECT_EQ(FormatSize(4096), "4 KiB");
  EXPECT_EQ(FormatSize(3ull << 29), "1.5 GiB");
}

TEST(ObjectIdTest, HexRoundTripsAndRejectsBadInput) {
  ObjectID id = ObjectID::Random();
  EXPECT_EQ(ObjectID::FromHex(id.Hex()), id);
  EXPECT_FALSE(ObjectID::FromHex("abc"));
  EXPECT_FALSE(ObjectID::FromHex(std::string(40, 'g')));
  EXPECT_EQ(ObjectID::FromHex(std::string(40, 'F'))->Hex(), std::string(40, 'f'));
}

}  // namespace
}  // namespace plasmon

namespace plasmon {
namespace {

TEST(ObjectIdTest, ForkedChildrenDrawDifferentIds) {
  ObjectID parent_next = ObjectID::Random();  // the parent has drawn before forking
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ObjectID child = ObjectID::Random();
    ::_exit(::write(fds[1], child.data(), ObjectID::kSize) == ObjectID::kSize ? 0 : 1);
  }
  ObjectID mine = ObjectID::Random();
  ObjectID child;
  ASSERT_EQ(::read(fds[0], child.mutable_data(), ObjectID::kSize),
            static_cast<ssize_t>(ObjectID::kSize));
  int status;
  ::waitpid(pid, &status, 0);
  ::close(fds[0]);
  ::close(fds[1]);
  EXPECT_NE(child, mine);
  EXPECT_NE(child, parent_next);
}

}  // namespace
}  // namespace plasmon
