// libFuzzer target: the CLI's parsers of object IDs (ObjectID::FromHex) and
// sizes (ParseSize), each against a plain restatement of what it accepts.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/size.h"
#include "plasmon/object_id.h"
#include "tests/fuzz_util.h"

namespace plasmon {
namespace {

__extension__ typedef unsigned __int128 U128;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Exactly 40 hex digits, either case; Hex() gives them back in lower case.
void CheckHex(std::string_view in) {
  std::optional<ObjectID> id = ObjectID::FromHex(in);
  bool valid = in.size() == 2 * ObjectID::kSize;
  for (char c : in) valid = valid && std::isxdigit(static_cast<unsigned char>(c));
  FUZZ_CHECK(id.has_value() == valid);
  if (id) FUZZ_CHECK(id->Hex() == Lower(in));
}

// Digits, then nothing, "b", or k/m/g/t followed by nothing, "b", "i" or
// "ib" (any case); the value times the unit must fit 64 bits.
void CheckSize(std::string_view in) {
  std::optional<uint64_t> got = ParseSize(in);
  size_t digits = 0;
  while (digits < in.size() && in[digits] >= '0' && in[digits] <= '9') digits++;
  std::string unit = Lower(in.substr(digits));
  int shift = -1;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else if (std::string_view("kmgt").find(unit[0]) != std::string_view::npos) {
    std::string_view rest = std::string_view(unit).substr(1);
    if (rest.empty() || rest == "b" || rest == "i" || rest == "ib")
      shift = 10 * (1 + static_cast<int>(std::string_view("kmgt").find(unit[0])));
  }
  std::optional<uint64_t> want;
  if (digits > 0 && shift >= 0) {
    U128 v = 0;
    bool fits = true;
    for (size_t i = 0; i < digits && fits; i++) {
      v = v * 10 + static_cast<unsigned>(in[i] - '0');
      fits = (v << shift) <= UINT64_MAX;
    }
    if (fits) want = static_cast<uint64_t>(v << shift);
  }
  FUZZ_CHECK(got == want);
}

}  // namespace
}  // namespace plasmon

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  plasmon::CheckHex(in);
  plasmon::CheckSize(in);
  return 0;
}
