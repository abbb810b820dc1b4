#include "tests/netns.h"

#include <unistd.h>

#include <cstdlib>

#include "tests/store_process.h"

namespace plasmon::testing {

NetNamespaces::NetNamespaces(int nodes) : nodes_(nodes) {
  // Short (interface names have 15 characters) and unique per test process.
  prefix_ = "pt" + std::to_string(::getpid() % 1000000);
  std::string hub = prefix_ + "h";
  if (!Run("ip netns add " + hub) || !Run("ip -n " + hub + " link add br0 type bridge") ||
      !Run("ip -n " + hub + " link set br0 up"))
    return;
  for (int i = 1; i <= nodes; i++) {
    std::string n = ns(i), port = prefix_ + "p" + std::to_string(i);
    if (!Run("ip netns add " + n) ||
        !Run("ip -n " + hub + " link add " + port + " type veth peer name eth0 netns " + n) ||
        !Run("ip -n " + hub + " link set " + port + " master br0 up") ||
        !Run("ip -n " + n + " addr add " + address(i) + "/24 dev eth0") ||
        !Run("ip -n " + n + " link set eth0 up") || !Run("ip -n " + n + " link set lo up"))
      return;
  }
  ok_ = true;
}

NetNamespaces::~NetNamespaces() {
  // Deleting a namespace deletes the veth ends in it, and so their peers.
  for (int i = 1; i <= nodes_; i++) Run("ip netns del " + ns(i) + " 2>/dev/null");
  Run("ip netns del " + prefix_ + "h 2>/dev/null");
}

std::string NetNamespaces::ns(int i) const { return prefix_ + "n" + std::to_string(i); }
std::string NetNamespaces::address(int i) const { return "10.99.0." + std::to_string(i); }

bool NetNamespaces::LimitRate(int i, const std::string& rate) {
  return Run("ip netns exec " + ns(i) + " tc qdisc replace dev eth0 root tbf rate " + rate +
             " burst 64kb latency 1s");
}

bool NetNamespaces::Run(const std::string& cmd) {
  CommandResult r = RunCommand({"/bin/sh", "-c", cmd});
  if (r.exit_code != 0 && error_.empty())
    error_ = "'" + cmd + "' failed (" + std::to_string(r.exit_code) + "): " + r.err +
             (::geteuid() != 0 ? " (network namespaces need root)" : "");
  return r.exit_code == 0;
}

}  // namespace plasmon::testing
