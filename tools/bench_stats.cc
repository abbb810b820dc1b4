#include "tools/bench_stats.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "core/arena.h"

namespace plasmon::bench {

uint64_t NearestRank(const std::vector<uint64_t>& sorted, uint32_t permille) {
  // rank = ceil(permille * n / 1000), in integers so that p99.9 of 20000
  // samples is exactly rank 19980.
  uint64_t n = sorted.size();
  uint64_t rank = (static_cast<uint64_t>(permille) * n + 999) / 1000;
  rank = std::clamp<uint64_t>(rank, 1, n);
  return sorted[rank - 1];
}

Summary Summarize(std::vector<uint64_t>* ns) {
  Summary s;
  if (ns->empty()) return s;
  std::sort(ns->begin(), ns->end());
  const std::vector<uint64_t>& v = *ns;
  auto us = [](uint64_t x) { return static_cast<double>(x) / 1000.0; };
  long double total = 0;
  for (uint64_t x : v) total += static_cast<long double>(x);
  s.samples = v.size();
  s.min_us = us(v.front());
  s.p50_us = us(NearestRank(v, 500));
  s.p90_us = us(NearestRank(v, 900));
  s.p99_us = us(NearestRank(v, 990));
  s.p999_us = us(NearestRank(v, 999));
  s.max_us = us(v.back());
  s.mean_us = static_cast<double>(total / static_cast<long double>(v.size()) / 1000.0L);
  for (uint64_t x : v) {
    const int k = x == 0 ? -1 : static_cast<int>(std::floor(16 * std::log2(static_cast<double>(x))));
    uint64_t bound = static_cast<uint64_t>(std::ceil(std::exp2((k + 1) / 16.0)));
    if (bound <= x) bound = x + 1;  // rounding at the edge of a bucket
    if (!s.histogram.empty() && s.histogram.back().first >= bound) {
      s.histogram.back().second++;
    } else {
      s.histogram.emplace_back(bound, 1);
    }
  }
  return s;
}

std::string FormatUs(double us) {
  char buf[32];
  if (us < 10) {
    std::snprintf(buf, sizeof(buf), "%.2f", us);
  } else if (us < 1000) {
    std::snprintf(buf, sizeof(buf), "%.1f", us);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f", us);
  }
  return buf;
}

std::string FormatRate(double per_s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f", per_s);
  return buf;
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

static std::string HistogramJson(const Summary& s) {
  std::string out = "[";
  for (const auto& [bound, count] : s.histogram) {
    if (out.size() > 1) out += ", ";
    out += "[" + std::to_string(bound) + ", " + std::to_string(count) + "]";
  }
  return out + "]";
}

std::string JsonSummaryFields(const Summary& s) {
  return "\"p50_us\": " + JsonNumber(s.p50_us) + ", \"p90_us\": " + JsonNumber(s.p90_us) +
         ", \"p99_us\": " + JsonNumber(s.p99_us) + ", \"p999_us\": " + JsonNumber(s.p999_us) +
         ", \"max_us\": " + JsonNumber(s.max_us) + ", \"min_us\": " + JsonNumber(s.min_us) +
         ", \"mean_us\": " + JsonNumber(s.mean_us) + ", \"histogram_ns\": " + HistogramJson(s);
}

std::optional<bool> Target::met() const {
  if (!std::isfinite(value)) return std::nullopt;
  if (std::strcmp(cmp, "<=") == 0) return value <= bound;
  if (std::strcmp(cmp, "<") == 0) return value < bound;
  return value >= bound;
}

std::string TargetLine(const Target& t, int name_width) {
  std::optional<bool> met = t.met();
  char value[32] = "n/a", bound[32], line[512];
  if (std::isfinite(t.value)) std::snprintf(value, sizeof(value), "%.2f", t.value);
  std::snprintf(bound, sizeof(bound), "%s %.2f", t.cmp, t.bound);
  std::snprintf(line, sizeof(line), "  %-*s %6s  (target %-7s)  %-7s", name_width, t.name.c_str(),
                value, bound, !met ? "n/a" : *met ? "met" : "not met");
  return line;
}

std::string TargetsJson(const std::vector<Target>& targets, bool with_after) {
  std::string out = "[";
  for (size_t i = 0; i < targets.size(); i++) {
    const Target& t = targets[i];
    std::optional<bool> met = t.met();
    out += std::string(i > 0 ? "," : "") + "\n    {\"name\": " + JsonString(t.name) +
           ", \"value\": " + JsonNumber(t.value) +
           (with_after ? ", \"value_vs_floor_after\": " + JsonNumber(t.value_after) : "") +
           ", \"comparison\": " + JsonString(t.cmp) + ", \"bound\": " + JsonNumber(t.bound) +
           ", \"met\": " + (!met ? "null" : *met ? "true" : "false") +
           ", \"note\": " + JsonString(t.note) + "}";
  }
  return out + "\n  ]";
}

bool WriteFull(int fd, const void* data, size_t n) {
  auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

int ReadFull(int fd, void* data, size_t n) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r == 0 ? 0 : -1;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return 1;
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

Machine DescribeMachine() {
  Machine m;
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) == 0) m.hostname = host;
  struct utsname u;
  if (::uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) m.cpu = line.substr(line.find_first_not_of(" \t", colon + 1));
      break;
    }
  }
  m.cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) m.memory = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
  (void)ShmemHugePages(&m.shmem_thp);
  // DAMON's sysfs interface: kdamonds/N/state, and what each runs.
  const std::string damon = "/sys/kernel/mm/damon/admin/kdamonds/";
  if (::access(damon.c_str(), F_OK) == 0 && ::access((damon + "nr_kdamonds").c_str(), R_OK) != 0)
    m.damon_known = false;
  const long n = std::atol(ReadFirstLine(damon + "nr_kdamonds").c_str());
  for (long i = 0; i < n && i < 64; i++) {
    const std::string k = damon + std::to_string(i) + "/";
    if (ReadFirstLine(k + "state") != "on") continue;
    const std::string ctx = k + "contexts/0/";
    std::string what = ReadFirstLine(ctx + "operations");
    const long schemes = std::atol(ReadFirstLine(ctx + "schemes/nr_schemes").c_str());
    for (long j = 0; j < schemes && j < 64; j++)
      what += ", " + ReadFirstLine(ctx + "schemes/" + std::to_string(j) + "/action");
    m.damon.push_back("kdamond " + std::to_string(i) + " (" + what + ")");
  }
  return m;
}

std::string MemoryLine(const Machine& m) {
  std::string line = "memory: shmem transparent huge pages '" + m.shmem_thp + "'; DAMON ";
  if (!m.damon_known) return line + "unknown (its sysfs is readable by root only)";
  if (m.damon.empty()) return line + "not running";
  line += "running:";
  for (size_t i = 0; i < m.damon.size(); i++) line += (i > 0 ? ", " : " ") + m.damon[i];
  return line + " (the first touch of memory idle for a while may cost more)";
}

std::string MachineJson(const Machine& m) {
  std::string damon = m.damon_known ? "[" : "null";
  for (size_t i = 0; m.damon_known && i < m.damon.size(); i++)
    damon += (i > 0 ? ", " : "") + JsonString(m.damon[i]);
  if (m.damon_known) damon += "]";
  return "{\"hostname\": " + JsonString(m.hostname) + ", \"kernel\": " + JsonString(m.kernel) +
         ", \"cpu\": " + JsonString(m.cpu) + ", \"cpus\": " + std::to_string(m.cpus) +
         ", \"memory_bytes\": " + std::to_string(m.memory) +
         ", \"shmem_thp\": " + JsonString(m.shmem_thp) + ", \"damon\": " + damon + "}";
}

bool g_progress = false;

void ClearProgress() {
  if (g_progress) std::fprintf(stderr, "\r\033[K");
}

void Progress(const std::string& what) {
  if (!g_progress) return;
  std::fprintf(stderr, "\r\033[K%s", what.c_str());
  std::fflush(stderr);
}

}  // namespace plasmon::bench
