// Test fixture: nodes in their own network namespaces (pt<pid>-n<i>, node i
// at 10.99.0.i/24), joined by veth pairs to a bridge in pt<pid>-hub, the way
// separate hosts share a switch (tools/cluster/services.h). Deleted when it
// goes. Needs root (CAP_NET_ADMIN).
#pragma once

#include <unistd.h>

#include <string>

#include "tools/cluster/services.h"

namespace plasmon::testing {

class NetNamespaces : public cluster::Network {
 public:
  explicit NetNamespaces(int nodes)
      : Network("pt" + std::to_string(::getpid() % 1000000), nodes, 99), status_(Create()) {}
  bool ok() const { return status_.ok(); }
  const std::string& error() const { return status_.message(); }
  // Limits what node i sends to `rate` (tc tbf, e.g. "200mbit"): makes
  // transfers slow enough to act on them while they run.
  bool LimitRate(int i, const std::string& rate) { return Network::LimitRate(i, rate).ok(); }

 private:
  Status status_;
};

}  // namespace plasmon::testing
