// Helpers for the libFuzzer targets (the *_fuzz.cc files; docs/TESTING.md).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "core/coding.h"

// A property of the code under test: abort, which libFuzzer reports as a
// crash and saves the input of, if it does not hold.
#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace plasmon::fuzz {

template <typename Msg>
std::string Encoded(const Msg& m) {
  std::string out;
  Encoder e(&out);
  m.Encode(&e);
  return out;
}

// Decodes `body` as Msg with `parse` (a ParseBody) and checks the result
// against its encoding: that must decode again and encode to the same bytes;
// with `exact`, those bytes must be `body` itself (the decoder loses nothing
// and accepts nothing the encoder would not write). With `prefix`, only as
// much of `body` is read as the message takes, and that much must parse
// alone to the same message: the fuzzer need not match a length field to the
// input's size to reach a decoder's limits.
template <typename Msg, typename Parse>
std::optional<Msg> DecodeAndCheck(std::string_view body, bool prefix, bool exact, Parse parse) {
  Msg m;
  if (prefix) {
    Decoder d(body);
    if (!m.Decode(&d)) return std::nullopt;
    body.remove_suffix(d.remaining());
    Msg alone;
    FUZZ_CHECK(parse(body, &alone));
    FUZZ_CHECK(Encoded(alone) == Encoded(m));
  } else if (!parse(body, &m)) {
    return std::nullopt;
  }
  std::string once = Encoded(m);
  if (exact) FUZZ_CHECK(once == body);
  Msg again;
  FUZZ_CHECK(parse(once, &again));
  FUZZ_CHECK(Encoded(again) == once);
  return m;
}

}  // namespace plasmon::fuzz
