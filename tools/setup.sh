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
  iperf3                                               # plasmon-bench fetch's link reference
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts redis-server as a service on install; plasmon starts its own.

BUILD_DIR="${1:-build}"
shift || true
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
ninja -C "$BUILD_DIR"
