#include "plasmon/object_id.h"

#include <gtest/gtest.h>

#include <string>

namespace plasmon {
namespace {

TEST(ObjectIdTest, FromBinaryTakesExactlyTwentyBytes) {
  const std::string bytes = "my-twenty-byte-id!!!";
  ASSERT_EQ(bytes.size(), ObjectID::kSize);
  Result<ObjectID> id = ObjectID::FromBinary(bytes);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(id->Binary(), bytes);
  ObjectID random = ObjectID::Random();
  EXPECT_EQ(*ObjectID::FromBinary(random.Binary()), random);
}

// Issue 9: a short name became the ID padded with zeros, a long one its
// first 20 bytes, without a word.
TEST(ObjectIdTest, FromBinaryRefusesAnyOtherLengthNamingIt) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{19}, size_t{21}, size_t{40}}) {
    Result<ObjectID> id = ObjectID::FromBinary(std::string(size, 'a'));
    ASSERT_FALSE(id.ok()) << size << " bytes accepted";
    EXPECT_TRUE(id.status().IsInvalidArgument()) << id.status().ToString();
    EXPECT_NE(id.status().message().find(std::to_string(size)), std::string::npos)
        << id.status().message();
  }
}

}  // namespace
}  // namespace plasmon
