#!/usr/bin/env bash
# Installs what plasmon needs from Debian 12's packages and builds it.
#   tools/setup.sh [BUILD_DIR [extra cmake args...]]
# Re-running is cheap: packages already present are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config       # toolchain
  libspdlog-dev libfmt-dev libcli11-dev libxxhash-dev  # logging, flags, digests
  libhiredis-dev redis-server                          # Redis client; server for references and tests
  libssl-dev                                           # HMAC for store-to-store authentication
  libibverbs-dev librdmacm-dev                         # the RDMA verbs transport (rdma-core)
  libgtest-dev libgmock-dev                            # tests
  procps iproute2                                      # pgrep/pkill; ip netns and tc for cluster tests
  iperf3 nlohmann-json3-dev                            # plasmon-bench fetch's link reference, its -J
  python3-dev pybind11-dev python3-pybind11            # the Python binding (python/), for /usr/bin/python3
  python3-numpy python3-pytest                         # its numpy support and its tests
  libcpp-httplib-dev prometheus                        # --metrics; promtool and a real scrape in tests
  help2man dpkg-dev systemd file                       # man pages; the .deb, its unit and its check
  gnuplot-nox                                          # plasmon-bench --plot (its test reads the images with python3)
  spin                                                 # the SPIN model checker (tests/model)
)

tools/install-packages.sh setup "${PACKAGES[@]}"
# Debian starts redis-server as a service on install; plasmon starts its own.

BUILD_DIR="${1:-build}"
shift || true
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
ninja -C "$BUILD_DIR"
