#include "plasmon/status.h"

#include <gtest/gtest.h>

#include <string>

namespace plasmon {
namespace {

Result<int> Number(bool ok) {
  if (!ok) return Status::Timeout("no number");
  return 7;
}

// Counts how far it got, to show where PLASMON_RETURN_IF_ERROR left.
Status Steps(bool first_ok, bool second_ok, int* reached) {
  *reached = 0;
  PLASMON_RETURN_IF_ERROR(first_ok ? Status::OK() : Status::IOError("first"));
  *reached = 1;
  PLASMON_RETURN_IF_ERROR(Number(second_ok));  // a Result, as the macro's comment says
  *reached = 2;
  return Status::OK();
}

TEST(StatusTest, ReturnIfErrorPropagatesAStatusOrAFailedResult) {
  int reached = -1;
  EXPECT_TRUE(Steps(true, true, &reached).ok());
  EXPECT_EQ(reached, 2);

  Status st = Steps(false, true, &reached);
  EXPECT_TRUE(st.IsIOError()) << st.ToString();
  EXPECT_EQ(reached, 0);

  st = Steps(true, false, &reached);
  EXPECT_TRUE(st.IsTimeout()) << st.ToString();
  EXPECT_EQ(st.message(), "no number");
  EXPECT_EQ(reached, 1);
}

// In a function that returns a Result too.
Result<std::string> Describe(bool ok) {
  PLASMON_RETURN_IF_ERROR(Number(ok));
  return std::string("fine");
}

TEST(StatusTest, ReturnIfErrorWorksInAFunctionReturningAResult) {
  EXPECT_EQ(*Describe(true), "fine");
  EXPECT_TRUE(Describe(false).status().IsTimeout());
}

}  // namespace
}  // namespace plasmon
