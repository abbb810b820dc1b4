// Endpoint addresses shared by the transports: "HOST:PORT" or "[V6]:PORT".
#pragma once

#include <sys/socket.h>

#include <string>

namespace plasmon {

// Splits "HOST:PORT" or "[V6]:PORT". False if malformed.
bool SplitHostPort(const std::string& s, std::string* host, std::string* port);

// The inverse: brackets an IPv6 host.
std::string JoinHostPort(const std::string& host, const std::string& port);

// The host of a peer's "HOST:PORT" (`peer` itself if malformed): a peer that
// reconnects from another port is the same peer, for limits and the log's
// rate limit.
std::string HostOf(const std::string& peer);

// Whether a bound address is 0.0.0.0 or [::].
bool IsWildcard(const sockaddr_storage& ss);

}  // namespace plasmon
