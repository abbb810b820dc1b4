// What this process has resident of its mappings, from /proc/self/smaps:
// the Rss of a mapping counts the pages mapped in this process's page tables
// (mincore would not do: for shared memory it says what the file has).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace plasmon::testing {

struct SmapsEntry {
  uintptr_t start = 0, end = 0;
  std::string name;  // the path column: "/memfd:plasmon-arena (deleted)", ...
  uint64_t rss = 0;  // bytes
  uint64_t pmd_mapped = 0;  // bytes of shared memory mapped as 2 MiB pages (ShmemPmdMapped)
};

inline std::vector<SmapsEntry> ReadSmaps() {
  std::vector<SmapsEntry> out;
  std::ifstream f("/proc/self/smaps");
  std::string line;
  while (std::getline(f, line)) {
    size_t space = line.find(' ');
    if (line.find('-') < space) {  // "START-END perms offset dev inode path"
      SmapsEntry m;
      m.start = std::stoull(line.substr(0, line.find('-')), nullptr, 16);
      m.end = std::stoull(line.substr(line.find('-') + 1, space), nullptr, 16);
      size_t path = line.find('/');
      if (path != std::string::npos) m.name = line.substr(path);
      out.push_back(m);
    } else if (!out.empty() && line.rfind("Rss:", 0) == 0) {
      out.back().rss = std::stoull(line.substr(4)) * 1024;  // "Rss:  1234 kB"
    } else if (!out.empty() && line.rfind("ShmemPmdMapped:", 0) == 0) {
      out.back().pmd_mapped = std::stoull(line.substr(15)) * 1024;
    }
  }
  return out;
}

// This process's mappings whose path contains `name`.
inline std::vector<SmapsEntry> MappingsNamed(const std::string& name) {
  std::vector<SmapsEntry> out;
  for (SmapsEntry& m : ReadSmaps())
    if (m.name.find(name) != std::string::npos) out.push_back(m);
  return out;
}

// The resident bytes of the mapping that holds `p` (0 if none does).
inline uint64_t RssOfMappingAt(const void* p) {
  auto at = reinterpret_cast<uintptr_t>(p);
  for (const SmapsEntry& m : ReadSmaps())
    if (at >= m.start && at < m.end) return m.rss;
  return 0;
}

}  // namespace plasmon::testing
