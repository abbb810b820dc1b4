// The bench module, shared by plasmon-bench local (plasmon_bench.cc), fetch
// (bench_fetch.cc) and the references (bench_refs.cc): the clock,
// percentiles, number and JSON formatting, targets, full reads and writes.
#pragma once

#include <chrono>
#include <limits>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace plasmon::bench {

static_assert(std::chrono::steady_clock::is_steady);
static_assert(std::ratio_less_equal_v<std::chrono::steady_clock::period, std::nano>,
              "plasmon-bench needs a steady clock with nanosecond resolution");

// Monotonic time in nanoseconds.
inline uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// The latency distribution of one measurement. Times in microseconds.
struct Summary {
  uint64_t samples = 0;
  double min_us = 0, p50_us = 0, p90_us = 0, p99_us = 0, p999_us = 0, max_us = 0, mean_us = 0;
  // The whole distribution, HdrHistogram-style: (bound, count) of each
  // non-empty bucket, ascending. Buckets are 1/16 of a power of two wide
  // (within 4.4%): `count` samples were below `bound` ns and at or above the
  // previous bucket's bound. For --json and --plot's CDFs.
  std::vector<std::pair<uint64_t, uint64_t>> histogram;
};

// The nearest-rank percentile of `sorted` (ascending, non-empty): the smallest
// sample with at least permille/1000 of the samples at or below it.
uint64_t NearestRank(const std::vector<uint64_t>& sorted, uint32_t permille);

// Sorts `ns` (samples in nanoseconds) and summarizes them. Empty: all zero.
Summary Summarize(std::vector<uint64_t>* ns);

// A latency for a table column: "7.95", "123.4", "12345".
std::string FormatUs(double us);
// A rate for a table column with no decimals: "125842".
std::string FormatRate(double per_s);

// A progress line on stderr, redrawn in place; only while g_progress (set
// when stderr is a terminal).
extern bool g_progress;
void ClearProgress();
void Progress(const std::string& what);

// JSON pieces for the hand-written --json document.
std::string JsonString(std::string_view s);
// A number with enough digits; "null" if not finite.
std::string JsonNumber(double v);
// "p50_us": .., ..., "mean_us": .., "histogram_ns": [[bound, count], ...]
std::string JsonSummaryFields(const Summary& s);

// A target: a figure (usually a ratio to its reference) against a bound.
struct Target {
  std::string name;
  double value = std::numeric_limits<double>::quiet_NaN();  // NaN: not measured
  // plasmon-bench local's ratios to the floor: the same against the floor
  // measured at the end.
  double value_after = std::numeric_limits<double>::quiet_NaN();
  const char* cmp = "<=";  // "<=", "<" or ">="
  double bound = 0;
  std::string note;
  std::optional<bool> met() const;  // nullopt: not measured
};
// "  NAME  VALUE  (target >= BOUND)  met": a table line, without the note.
std::string TargetLine(const Target& t, int name_width);
// The JSON array of them (with "value_vs_floor_after" if `with_after`).
std::string TargetsJson(const std::vector<Target>& targets, bool with_after);

// All of [p, p+n) to fd / exactly n bytes from it, through EINTR and short
// transfers. Read: 1 done, 0 the peer closed first, -1 an error.
bool WriteFull(int fd, const void* p, size_t n);
int ReadFull(int fd, void* p, size_t n);

// What the figures were measured on.
struct Machine {
  std::string hostname, kernel, cpu;
  long cpus = 0;
  uint64_t memory = 0;
  // What decides how memory behaves under the figures: the shmem setting
  // for transparent huge pages (as ShmemHugePages names it, "absent" if the
  // kernel has none), and the DAMON monitors running, each as "kdamond N
  // (OPERATIONS, ACTION...)". On the project's VMs a running monitor makes
  // the first touch of memory left idle for seconds slow (it clears the
  // pages' accessed bits, and the hypervisor charges each one set again).
  std::string shmem_thp;
  std::vector<std::string> damon;
  bool damon_known = true;  // false: its sysfs is there but not readable (root only)
};
Machine DescribeMachine();
// The first line of a (small, e.g. /proc or /sys) file, without its
// newline; "" if it cannot be read.
std::string ReadFirstLine(const std::string& path);
// "memory: ..." for the line under "machine: ..."
std::string MemoryLine(const Machine& m);
// {"hostname": .., "kernel": .., "cpu": .., "cpus": .., "memory_bytes": ..,
//  "shmem_thp": .., "damon": [..] | null (not readable)}
std::string MachineJson(const Machine& m);

}  // namespace plasmon::bench
