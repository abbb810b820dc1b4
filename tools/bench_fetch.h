// plasmon-bench fetch: cross-node Fetch latency and throughput between two
// stores in separate network namespaces (or on two addresses of this host),
// beside the network's own figures (iperf3, a TCP ping-pong; with RDMA,
// perftest's RDMA READ) and Redis, measured in the same run. The
// description of what it measures and its JSON schema are at the top of
// tools/bench_fetch.cc.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace plasmon::bench {

struct FetchConfig {
  // The cluster: an existing one (its directory) or, if empty, one that the
  // benchmark starts with `cluster_script up` and tears down at the end.
  std::string cluster_dir;
  std::string cluster_script;  // tools/plasmon-cluster
  std::string name;            // namespace prefix of the cluster it starts
  int subnet = 215;
  std::string memory;  // arena of each store it starts; empty: from the sizes
  std::vector<std::string> store_args;
  bool keep = false;  // leave the cluster it started running
  // "A,B": the cluster it starts runs in hosts mode, node 1 on address A and
  // node 2 on B of this host, instead of in network namespaces.
  std::string addresses;
  // The stores' --transport (tcp, verbs, auto; empty: their default). verbs
  // also measures perftest's RDMA READ and checks the fetches went by RDMA.
  std::string transport;
  int perftest_port = 18515;  // rdma_cm port of perftest's server

  std::vector<std::string> sizes_arg;
  std::vector<uint64_t> sizes;
  uint64_t iterations = 2000;
  uint64_t warmup = 50;
  std::string throughput_size_arg;  // empty: 1 GiB (less if the stores are small)
  uint64_t throughput_size = 0;
  uint64_t throughput_reps = 5;
  uint64_t pingpong_round_trips = 10000;
  int iperf_seconds = 4;
  int iperf_port = 5201;
  int64_t timeout_ms = 120000;
  // "N1,N2": node 1's processes (its store, Redis, the references' node-1
  // ends) on CPU N1, node 2's (its store, this benchmark, the references'
  // node-2 ends) on CPU N2; "none"; "auto": 0,1 with 2 CPUs or more.
  std::string pin = "auto";
  bool json = false;
  std::string plot_dir;  // --plot
};

// Adds the `fetch` subcommand to `app`; its flags fill *cfg.
CLI::App* AddFetchCommand(CLI::App* app, FetchConfig* cfg);

// Runs it (after parsing). Returns the process's exit status.
int RunFetch(FetchConfig cfg);

}  // namespace plasmon::bench
