// Test fixture: nodes in their own network namespaces, joined by veth pairs
// to a bridge in a hub namespace, the way separate hosts share a switch.
// Only namespaces and links this object creates are touched; it deletes
// them when it goes. Needs root (CAP_NET_ADMIN).
#pragma once

#include <string>

namespace plasmon::testing {

class NetNamespaces {
 public:
  // Creates `nodes` namespaces; node i (from 1) has address 10.99.0.i/24.
  explicit NetNamespaces(int nodes);
  ~NetNamespaces();
  NetNamespaces(const NetNamespaces&) = delete;
  NetNamespaces& operator=(const NetNamespaces&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  std::string ns(int i) const;       // node i's namespace name
  std::string address(int i) const;  // node i's IPv4 address
  // Limits what node i sends to `rate` (tc tbf, e.g. "200mbit"): makes
  // transfers slow enough to act on them while they run.
  bool LimitRate(int i, const std::string& rate);

 private:
  bool Run(const std::string& cmd);
  std::string prefix_;
  int nodes_;
  bool ok_ = false;
  std::string error_;
};

}  // namespace plasmon::testing
