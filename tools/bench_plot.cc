#include "tools/bench_plot.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/size.h"
#include "tools/cluster/process.h"

namespace plasmon::bench {

namespace {

// A gnuplot string (the terminals are noenhanced: '_' is not markup).
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Both terminals from one script: PNG for viewers, SVG for documents.
std::string Terminals(const std::string& dir, const std::string& file, const std::string& plot) {
  const std::string base = dir + "/" + file;
  return "set terminal pngcairo noenhanced size 1000,640 font 'Sans,10'\nset output " + Quote(base + ".png") +
         "\n" + plot + "set output\nset terminal svg noenhanced size 1000,640 dynamic font 'Sans,10'\n" +
         "set output " + Quote(base + ".svg") + "\n" + plot + "set output\n";
}

// Writes DIR/FILE.gp to draw `plot` and runs it: DIR/FILE.png and .svg.
Status Draw(const std::string& dir, const std::string& file, const std::string& plot,
            std::vector<std::string>* written) {
  const std::string gnuplot = cluster::FindExecutable("gnuplot");
  if (gnuplot.empty())
    return Status::IOError("--plot needs gnuplot (apt-get install gnuplot-nox; tools/setup.sh)");
  const std::string gp = dir + "/" + file + ".gp";
  std::ofstream(gp) << Terminals(dir, file, plot);
  cluster::CommandResult r = cluster::RunCommand({gnuplot, gp});
  if (!r.ok()) return Status::IOError("gnuplot " + gp + " failed: " + r.err);
  written->push_back(dir + "/" + file + ".png");
  written->push_back(dir + "/" + file + ".svg");
  return Status::OK();
}

// The sizes measured, labelled in binary units, as the x axis' tics.
std::string SizeTics(const ThroughputChart& c) {
  std::vector<uint64_t> sizes;
  for (const RateLine& l : c.lines)
    for (const auto& p : l.points) sizes.push_back(p.first);
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  std::string tics = "set xtics (";
  for (size_t i = 0; i < sizes.size(); i++)
    tics += (i > 0 ? ", " : "") + Quote(FormatSize(sizes[i])) + " " + std::to_string(sizes[i]);
  return tics + ")\n";
}

}  // namespace

std::string SizeForFile(uint64_t bytes) {
  std::string s = FormatSize(bytes);
  std::string out;
  for (char c : s)
    if (c != ' ') out += c;
  return out;
}

Status WritePlots(const std::string& dir, const std::vector<LatencyChart>& latency,
                  const std::vector<ThroughputChart>& throughput,
                  std::vector<std::string>* written) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("--plot " + dir + ": " + ec.message());

  for (const LatencyChart& c : latency) {
    // The CDF of each curve at its buckets' upper bounds: fraction of samples below.
    const std::string dat = dir + "/" + c.file + ".dat";
    std::ofstream d(dat);
    std::string plot = "set title " + Quote(c.title) +
                       "\nset xlabel 'latency (us, log scale)'\nset ylabel 'fraction of "
                       "operations at or below'\nset logscale x\nset yrange [0:1.02]\nset grid\n"
                       "set key bottom right\nplot ";
    int index = 0;
    for (const CdfCurve& cv : c.curves) {
      if (cv.summary == nullptr || cv.summary->samples == 0) continue;
      d << "# " << cv.label << "\n";
      uint64_t seen = 0;
      d << cv.summary->min_us << " 0\n";
      for (const auto& [upper_ns, count] : cv.summary->histogram) {
        seen += count;
        d << static_cast<double>(upper_ns) / 1000.0 << " "
          << static_cast<double>(seen) / static_cast<double>(cv.summary->samples) << "\n";
      }
      d << "\n\n";
      if (index > 0) plot += ", \\\n     ";
      plot += Quote(dat) + " index " + std::to_string(index) + " with steps lw 2" +
              (cv.reference ? " dt 2" : "") + " title " + Quote(cv.label);
      index++;
    }
    d.close();
    if (!d) return Status::IOError("cannot write " + dat);
    if (index == 0) continue;
    PLASMON_RETURN_IF_ERROR(Draw(dir, c.file, plot + "\n", written));
  }

  for (const ThroughputChart& c : throughput) {
    const std::string dat = dir + "/" + c.file + ".dat";
    std::ofstream d(dat);
    std::string plot = "set title " + Quote(c.title) +
                       "\nset xlabel 'object size (log scale)'\nset ylabel 'GB/s (log scale)'\n"
                       "set logscale xy\nset grid\nset key top left\n" +
                       SizeTics(c) + "plot ";
    int index = 0;
    for (const RateLine& l : c.lines) {
      int points = 0;
      d << "# " << l.label << "\n";
      for (const auto& [size, rate] : l.points)
        if (std::isfinite(rate)) {
          d << size << " " << rate << "\n";
          points++;
        }
      d << "\n\n";
      if (points == 0) {
        index++;  // its (empty) block keeps the indices aligned
        continue;
      }
      if (plot.back() != ' ') plot += ", \\\n     ";
      plot += Quote(dat) + " index " + std::to_string(index) + " with linespoints lw 2" +
              (l.reference ? " dt 2" : "") + " title " + Quote(l.label);
      index++;
    }
    d.close();
    if (!d) return Status::IOError("cannot write " + dat);
    if (plot.back() == ' ') continue;  // nothing to draw
    PLASMON_RETURN_IF_ERROR(Draw(dir, c.file, plot + "\n", written));
  }
  std::fprintf(stderr, "plasmon-bench: wrote %zu plots to %s (PNG and SVG; data and gnuplot "
                       "scripts beside them)\n", written->size() / 2, dir.c_str());
  return Status::OK();
}

Status WriteFetchPlots(const std::string& dir, const std::vector<PlotRow>& rows,
                       const std::vector<PlotRow>& references, double iperf_gb_per_s,
                       uint64_t throughput_size, double throughput_gb_per_s) {
  std::vector<uint64_t> sizes;
  for (const PlotRow& r : rows)
    if (std::find(sizes.begin(), sizes.end(), r.size) == sizes.end()) sizes.push_back(r.size);
  std::vector<LatencyChart> latency;
  for (uint64_t size : sizes) {
    LatencyChart c;
    c.file = "fetch-latency-" + SizeForFile(size);
    c.title = "plasmon-bench fetch: latency of " + FormatSize(size) + " objects, node 2 from node 1";
    for (const PlotRow& r : rows)
      if (r.size == size) c.curves.push_back({r.label, r.s, false});
    for (const PlotRow& r : references)
      if (r.op != "redis_get" || r.size == size)
        c.curves.push_back({r.label + " (" + FormatSize(r.size) + ")", r.s, true});
    latency.push_back(std::move(c));
  }
  ThroughputChart t;
  t.file = "fetch-throughput";
  t.title = "plasmon-bench fetch: GB/s at the median latency, against size";
  std::vector<std::string> ops;
  for (const PlotRow& r : rows)
    if (std::find(ops.begin(), ops.end(), r.op) == ops.end()) ops.push_back(r.op);
  uint64_t largest = throughput_size;
  for (const std::string& op : ops) {
    RateLine l;
    for (const PlotRow& r : rows)
      if (r.op == op) {
        l.label = r.label;
        if (r.s->p50_us > 0)
          l.points.push_back({r.size, static_cast<double>(r.size) / r.s->p50_us / 1e3});
        largest = std::max(largest, r.size);
      }
    t.lines.push_back(std::move(l));
  }
  if (throughput_size > 0 && std::isfinite(throughput_gb_per_s))
    t.lines.push_back({"fetch " + FormatSize(throughput_size) + " (median of the throughput runs)",
                       {{throughput_size, throughput_gb_per_s}}, false});
  if (iperf_gb_per_s > 0 && !sizes.empty()) {
    // The link's rate, over the sizes measured.
    const uint64_t smallest = *std::min_element(sizes.begin(), sizes.end());
    t.lines.push_back({"iperf3 (the better of 1 and 2 streams)",
                       {{smallest, iperf_gb_per_s}, {largest, iperf_gb_per_s}}, true});
  }
  std::vector<std::string> written;
  return WritePlots(dir, latency, {t}, &written);
}

}  // namespace plasmon::bench
