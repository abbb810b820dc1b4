#include "core/keyed_hash.h"

#include <sys/random.h>

#include <cerrno>
#include <chrono>

#define XXH_INLINE_ALL  // 20-byte keys: the call overhead would be most of the cost
#include <xxhash.h>

namespace plasmon {
namespace {

uint64_t DrawKey() {
  uint64_t key = 0;
  size_t got = 0;
  while (got < sizeof(key)) {
    ssize_t n = ::getrandom(reinterpret_cast<char*>(&key) + got, sizeof(key) - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      // No random source (a kernel before 3.17 or a seccomp filter): a key
      // that still differs per run, weaker, but better than a fixed one.
      key ^= static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) *
              0x9E3779B97F4A7C15ull;
      key ^= reinterpret_cast<uintptr_t>(&key);
      break;
    }
  }
  return key;
}

}  // namespace

uint64_t KeyedHash(const void* p, size_t n) {
  static const uint64_t key = DrawKey();  // thread-safe once-only initialisation
  return XXH3_64bits_withSeed(p, n, key);
}

}  // namespace plasmon
