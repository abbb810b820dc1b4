// Which transports a store runs, chosen from its configuration: RDMA verbs
// where the address given has an RDMA device (or where asked for), TCP where
// a listen address is given, in order of preference (verbs first: a pull
// prefers it where the holder has it too, and falls back to TCP).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "plasmon/status.h"
#include "transport/tcp_transport.h"
#include "transport/transport.h"

namespace plasmon {

struct TransportConfig {
  // "tcp": TCP only; "verbs": RDMA required (an error where there is no
  // device); "auto": RDMA where the address has a device, else TCP only.
  std::string mode = "auto";
  std::string listen;     // TCP's ADDR:PORT; empty: no TCP transport
  std::string rdma_addr;  // ADDR[:PORT] for rdma_cm; empty: the listen address, any port
  std::string secret;     // shared by the cluster; empty: peers are not authenticated
  std::string node_name;
  TcpTransportOptions tcp;  // streams, advertise, timeouts (listen, secret, node_name are set here)
};

// Whether `c` asks for any transport at all.
inline bool WantsTransports(const TransportConfig& c) {
  return !c.listen.empty() || c.mode == "verbs" || !c.rdma_addr.empty();
}

// The transports, preferred first. InvalidArgument for a configuration that
// cannot work (an unknown mode, verbs without an address); other errors
// where a transport could not be made (no RDMA device with mode "verbs").
Result<std::vector<std::shared_ptr<Transport>>> MakeTransports(const TransportConfig& c);

}  // namespace plasmon
