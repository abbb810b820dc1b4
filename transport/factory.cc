#include "transport/factory.h"

#include <spdlog/spdlog.h>

#include "transport/address.h"
#include "transport/verbs_transport.h"

namespace plasmon {

Result<std::vector<std::shared_ptr<Transport>>> MakeTransports(const TransportConfig& c) {
  if (c.mode != "tcp" && c.mode != "verbs" && c.mode != "auto")
    return Status::InvalidArgument("unknown transport '" + c.mode + "' (tcp, verbs or auto)");
  std::vector<std::shared_ptr<Transport>> out;
  if (c.secret.empty())
    spdlog::warn("no cluster secret: any host that reaches this store's transports can read "
                 "every object here (use --cluster-secret-file)");
  if (c.mode != "tcp") {
    std::string addr = c.rdma_addr;
    if (addr.empty()) {
      std::string h, p;
      if (!SplitHostPort(c.listen, &h, &p))
        return Status::InvalidArgument("--transport verbs needs --rdma-addr ADDR[:PORT]");
      addr = JoinHostPort(h, "0");
    }
    Result<std::string> device = VerbsTransport::DeviceFor(addr);
    if (!device.ok()) {
      if (c.mode == "verbs")
        return Status(device.status().code(), "--transport verbs: " + device.status().message());
      spdlog::info("no RDMA here ({}): fetching over TCP only", device.status().message());
    } else {
      VerbsTransportOptions v;
      v.listen = addr;
      v.advertise = c.tcp.advertise;
      if (!v.advertise.empty()) {
        std::string h, p;
        if (SplitHostPort(v.advertise, &h, &p)) v.advertise = h;  // its own port
      }
      v.secret = c.secret;
      v.node_name = c.node_name;
      Result<std::unique_ptr<VerbsTransport>> t = VerbsTransport::Create(v);
      if (!t.ok()) return t.status();
      spdlog::info("RDMA device {} owns {}: pulling by RDMA READ where peers have it too",
                   *device, addr);
      out.push_back(std::shared_ptr<Transport>(std::move(*t)));
    }
  }
  if (!c.listen.empty()) {
    TcpTransportOptions tcp = c.tcp;
    tcp.listen = c.listen;
    tcp.node_name = c.node_name;
    tcp.secret = c.secret;
    Result<std::unique_ptr<TcpTransport>> t = TcpTransport::Create(tcp);
    if (!t.ok()) return t.status();
    out.push_back(std::shared_ptr<Transport>(std::move(*t)));
  }
  return out;
}

}  // namespace plasmon
