// Human-readable byte sizes: "512M", "4G", "64KiB", "1000".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace plasmon {

// Parses a count of bytes with an optional binary suffix (K, M, G, T, with or
// without "i"/"iB"/"B"; case-insensitive). nullopt on anything else or overflow.
std::optional<uint64_t> ParseSize(std::string_view text);
// "4 KiB", "1.5 GiB", "17 B".
std::string FormatSize(uint64_t bytes);

}  // namespace plasmon
