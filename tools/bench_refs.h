// plasmon-bench references: what the store's figures are judged against,
// measured in the same run on the same machine.
//
//   the IPC floor        a 64-byte ping-pong between two processes over a Unix
//                        socketpair: one round trip, nothing else
//   the bandwidth limit  memcpy into already-faulted memory
//   Redis                SET and GET over a Unix socket through hiredis
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "plasmon/status.h"
#include "tools/bench_stats.h"

namespace plasmon::bench {

// How many timed iterations and warm-up iterations to run for objects of a size.
struct Counts {
  uint64_t iterations = 0;
  uint64_t warmup = 0;
};
using CountsFor = std::function<Counts(uint64_t size)>;

// Round trips of `bytes` bytes over a socketpair to a forked echo process;
// one sample per round trip (send + receive of the echo).
// `peer_cpu` >= 0 pins the echo process to that CPU (see --pin).
Result<Summary> MeasurePingPong(uint64_t bytes, Counts counts, int peer_cpu = -1);

// Pins the calling process (and the children it forks later) to one CPU.
Status PinToCpu(int cpu);

struct MemcpyRow {
  uint64_t size = 0;
  uint64_t repetitions = 0;  // timed repetitions; the median rate is reported
  uint64_t copies = 0;       // memcpy calls per repetition (small sizes are batched)
  double gb_per_s = 0;       // GB = 1e9 bytes
};
// memcpy of each size from one faulted buffer into another.
std::vector<MemcpyRow> MeasureMemcpy(const std::vector<uint64_t>& sizes);

struct RedisRow {
  std::string op;  // "redis_set" or "redis_get"
  uint64_t size = 0;
  Summary summary;
};
struct RedisReference {
  std::string socket;
  std::string version;  // from INFO server
  std::string error;    // set if Redis could not be measured (rows may be partial)
  std::vector<RedisRow> rows;
};
// SET then GET of a `size`-byte value (taken from `src`) for each size, over
// one hiredis connection to the Unix socket `socket`. Never fails hard: a
// connection or command failure is reported in `error`.
RedisReference MeasureRedis(const std::string& socket, const std::vector<uint64_t>& sizes,
                            const CountsFor& counts, const uint8_t* src);

}  // namespace plasmon::bench
