#include "core/size.h"

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
