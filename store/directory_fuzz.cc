// libFuzzer target: what the directory reads back from Redis (location values,
// the lookup script's reply) and the Redis address it is given.
//
// The whole input is tried as a location value and as an address, each
// against a plain restatement of what it should accept. It is also read as a
// lookup reply, one list per line, its strings separated by tabs: first the
// object's hash, then one node record per line ("!" for an entry that is not
// a list).
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/directory.h"
#include "tests/fuzz_util.h"

namespace plasmon {
namespace {

bool AllOf(std::string_view s, std::string_view chars) {
  return s.find_first_not_of(chars) == std::string_view::npos;
}

// Digits in `base` (10 or 16) that fit 64 bits.
std::optional<uint64_t> Number(std::string_view s, int base) {
  if (s.empty() || !AllOf(s, base == 10 ? "0123456789" : "0123456789abcdefABCDEF"))
    return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    uint64_t d =
        c <= '9' ? static_cast<uint64_t>(c - '0') : static_cast<uint64_t>((c | 0x20) - 'a' + 10);
    if (v > (UINT64_MAX - d) / static_cast<uint64_t>(base)) return std::nullopt;
    v = v * static_cast<uint64_t>(base) + d;
  }
  return v;
}

// DATA_SIZE:METADATA_SIZE:DIGEST, decimal sizes, the digest in hex or "-".
void CheckLocationValue(const std::string& in) {
  ObjectLocationRecord rec;
  bool ok = ParseLocationValue(in, &rec);
  size_t c1 = in.find(':'), c2 = c1 == std::string::npos ? c1 : in.find(':', c1 + 1);
  std::optional<uint64_t> d, m, g;
  bool dash = false;
  if (c2 != std::string::npos) {
    d = Number(std::string_view(in).substr(0, c1), 10);
    m = Number(std::string_view(in).substr(c1 + 1, c2 - c1 - 1), 10);
    std::string_view digest = std::string_view(in).substr(c2 + 1);
    dash = digest == "-";
    g = Number(digest, 16);
  }
  FUZZ_CHECK(ok == (d && m && (dash || g)));
  if (!ok) return;
  FUZZ_CHECK(rec.data_size == *d && rec.metadata_size == *m && rec.digest_valid == !dash);
  if (!dash) FUZZ_CHECK(rec.digest == *g);
  ObjectLocationRecord again;
  FUZZ_CHECK(ParseLocationValue(
      LocationValue(rec.data_size, rec.metadata_size, rec.digest_valid, rec.digest), &again));
  FUZZ_CHECK(again.data_size == rec.data_size && again.metadata_size == rec.metadata_size &&
             again.digest_valid == rec.digest_valid && again.digest == rec.digest);
}

// "unix:PATH", or "HOST:PORT" with a port of 1 to 65535 in digits. Host and
// path go to hiredis as C strings: no NUL inside.
void CheckRedisAddress(const std::string& in) {
  std::string host, path;
  int port = 0;
  Status st = ParseRedisAddress(in, &host, &port, &path);
  FUZZ_CHECK(st.ok() || st.IsInvalidArgument());
  if (in.rfind("unix:", 0) == 0) {
    FUZZ_CHECK(st.ok() == (in.size() > 5 && in.find('\0') == std::string::npos));
    if (st.ok()) FUZZ_CHECK(path == in.substr(5));
    return;
  }
  size_t colon = in.rfind(':');
  std::optional<uint64_t> p;
  if (colon != std::string::npos) p = Number(std::string_view(in).substr(colon + 1), 10);
  FUZZ_CHECK(st.ok() == (colon != std::string::npos && colon > 0 &&
                         in.find('\0') == std::string::npos && p && *p >= 1 && *p <= 65535));
  if (st.ok()) FUZZ_CHECK(host == in.substr(0, colon) && port == static_cast<int>(*p));
}

std::vector<std::string> Split(std::string_view s, char sep) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  for (;;) {
    size_t at = s.find(sep);
    out.emplace_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

void CheckLookupReply(const std::string& in) {
  std::vector<std::string> lines = Split(in, '\n');
  if (lines.empty()) return;
  LookupReply reply;
  reply.object = Split(lines[0], '\t');
  for (size_t i = 1; i < lines.size(); i++) {
    if (lines[i] == "!") {
      reply.nodes.push_back(std::nullopt);
    } else {
      reply.nodes.push_back(Split(lines[i], '\t'));
    }
  }
  LookupResult found = ParseLookupReply(ObjectID(), reply);
  const std::vector<ObjectLocationRecord>& out = found.holders;
  // One record per well-formed location, in order, with its node's record,
  // up to kMaxLookupHolders locations looked at; each other one counted as
  // malformed or left out.
  const size_t pairs = reply.object.size() / 2;
  FUZZ_CHECK(out.size() + found.malformed + found.omitted == pairs);
  FUZZ_CHECK(found.malformed == 0 || !found.problem.empty());
  size_t k = 0;
  for (size_t i = 0; i + 1 < reply.object.size() && i / 2 < kMaxLookupHolders; i += 2) {
    ObjectLocationRecord loc;
    if (!ParseLocationValue(reply.object[i + 1], &loc)) continue;
    FUZZ_CHECK(k < out.size());
    const ObjectLocationRecord& r = out[k++];
    FUZZ_CHECK(r.node_id == reply.object[i]);
    FUZZ_CHECK(r.data_size == loc.data_size && r.metadata_size == loc.metadata_size &&
               r.digest_valid == loc.digest_valid && r.digest == loc.digest);
    const std::optional<std::vector<std::string>>* node =
        i / 2 < reply.nodes.size() ? &reply.nodes[i / 2] : nullptr;
    FUZZ_CHECK(r.alive == (node != nullptr && node->has_value() && !(*node)->empty()));
    for (const auto& [transport, address] : r.endpoints) {
      FUZZ_CHECK(r.alive);
      bool listed = false;
      for (size_t j = 0; j + 1 < (*node)->size(); j += 2)
        listed = listed || ((**node)[j] == "ep:" + transport && (**node)[j + 1] == address);
      FUZZ_CHECK(listed);
    }
  }
  FUZZ_CHECK(k == out.size());
}

}  // namespace
}  // namespace plasmon

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = (spdlog::set_level(spdlog::level::off), true);  // malformed values log
  (void)quiet;
  std::string in(reinterpret_cast<const char*>(data), size);
  plasmon::CheckLocationValue(in);
  plasmon::CheckRedisAddress(in);
  plasmon::CheckLookupReply(in);
  return 0;
}
