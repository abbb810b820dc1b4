// plasmon-bench --plot DIR: latency CDFs and throughput charts, drawn by
// gnuplot (Debian's gnuplot-nox) as PNG and SVG from the distributions the
// benchmark measured (Summary::histogram), references on the same axes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "plasmon/status.h"
#include "tools/bench_stats.h"

namespace plasmon::bench {

// One curve of a latency CDF: a distribution and its legend.
struct CdfCurve {
  std::string label;
  const Summary* summary;
  bool reference = false;  // drawn dashed
};
struct LatencyChart {
  std::string file;   // DIR/FILE.png and DIR/FILE.svg
  std::string title;
  std::vector<CdfCurve> curves;
};

// One line of a throughput chart: GB/s against object size.
struct RateLine {
  std::string label;
  std::vector<std::pair<uint64_t, double>> points;  // (bytes, GB/s); NaN rates are skipped
  bool reference = false;
};
struct ThroughputChart {
  std::string file;
  std::string title;
  std::vector<RateLine> lines;
};

// Writes every chart into `dir` (made if missing) as FILE.png and FILE.svg,
// with the data and the gnuplot script beside them (FILE.dat, FILE.gp) so
// that a user can restyle them, and says so on stderr. *written lists the
// images.
Status WritePlots(const std::string& dir, const std::vector<LatencyChart>& latency,
                  const std::vector<ThroughputChart>& throughput,
                  std::vector<std::string>* written);

// plasmon-bench fetch's charts: per size, a CDF of each fetch row beside
// the references (TCP ping-pong, Redis GET); GB/s at the p50 against size
// beside iperf3's best rate and the large fetch's median (NaN/0: not measured).
struct PlotRow {
  std::string op, label;
  uint64_t size = 0;
  const Summary* s = nullptr;
};
Status WriteFetchPlots(const std::string& dir, const std::vector<PlotRow>& rows,
                       const std::vector<PlotRow>& references, double iperf_gb_per_s,
                       uint64_t throughput_size, double throughput_gb_per_s);

// "4KiB", "64MiB": a size for a file name.
std::string SizeForFile(uint64_t bytes);

}  // namespace plasmon::bench
