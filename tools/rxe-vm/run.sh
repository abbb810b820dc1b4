#!/usr/bin/env bash
# plasmon: run one command inside throw-away QEMU VMs that have Soft-RoCE.
#
#   tools/rxe-vm/run.sh [--vms 1|2] [--mem MB] [--smp N] [--timeout S]
#                       [--env NAME=VALUE]... [--share DIR]... -- CMD [ARG...]
#
# The host kernel has no RDMA and cannot load modules, so we boot Debian 12's
# stock kernel (which ships rdma_rxe as a module) under QEMU, from a busybox
# initramfs holding the rxe module closure. The host root filesystem is
# mounted read-only over 9p under a tmpfs overlay and chrooted into, so every
# host binary runs unchanged; writes vanish with the VM. /tmp, /run and
# /dev/shm are fresh tmpfs mounts in the VM; if the caller's directory lies
# under one of them, it is shared read-write over 9p at the same path (as is
# every --share DIR), so writes there land on the host.
#
# --vms 1 (default): one VM, before CMD runs:
#   veth va 10.77.0.1/24 <-> vb 10.77.0.2/24, both in the VM's initial netns
#   rxe0 on va, rxe1 on vb; ulimit -l unlimited; cwd = the caller's cwd.
# --vms 2: two VMs (separate kernels, -smp 1 each) linked by a QEMU socket
#   netdev on a free host loopback port; both run CMD. In VM N (N = 1, 2):
#   eth0 10.78.0.N/24, rxe0 on eth0 (ACTIVE), ulimit -l unlimited, and
#   PLASMON_RXE_VM_NODE=N PLASMON_RXE_VM_ADDR=10.78.0.N
#   PLASMON_RXE_VM_PEERS="10.78.0.1 10.78.0.2". Console lines are prefixed
#   "[vm1] " / "[vm2] ".
#
# Exit status: CMD's status (--vms 2: 0 only if both exited 0, else the first
# non-zero in VM order); 124 if a VM timed out (all are killed); 125 if the
# harness itself failed (missing tools, kernel not fetchable, QEMU or VM setup
# broke; with --vms 2 the other VM is killed). CMD's stdout and stderr both
# arrive on this script's stdout (serial console); harness notes on stderr.
#
# Environment: PLASMON_RXE_VM_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/plasmon-rxe-vm)
#              PLASMON_RXE_VM_ACCEL=tcg|kvm (default tcg)
#              PLASMON_RXE_VM_VERBOSE=1 shows the whole boot log.
set -euo pipefail

ME=rxe-vm
die() { echo "$ME: error: $*" >&2; exit 125; }
note() { echo "$ME: $*" >&2; }
usage() {
  echo "usage: $0 [--vms 1|2] [--mem MB] [--smp N] [--timeout S] [--env NAME=VALUE]... [--share DIR]... -- CMD [ARG...]" >&2
  exit 125
}

VMS=1
MEM=
TIMEOUT=600
SMP=
ENVS=()
SHARE_ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --vms) [ $# -ge 2 ] || usage; VMS=$2; shift 2 ;;
    --mem) [ $# -ge 2 ] || usage; MEM=$2; shift 2 ;;
    --timeout) [ $# -ge 2 ] || usage; TIMEOUT=$2; shift 2 ;;
    --smp) [ $# -ge 2 ] || usage; SMP=$2; shift 2 ;;
    --env) [ $# -ge 2 ] || usage
      [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, got '$2'"
      ENVS+=("$2"); shift 2 ;;
    --share) [ $# -ge 2 ] || usage; SHARE_ARGS+=("$2"); shift 2 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "$ME: unknown option '$1'" >&2; usage ;;
  esac
done
[ $# -gt 0 ] || usage
case $VMS in
  1) : "${MEM:=2048}" "${SMP:=2}" ;;
  2) : "${MEM:=1024}" "${SMP:=1}" ;;  # per VM; 2 vCPUs in all on a 2-core host
  *) die "--vms must be 1 or 2, not '$VMS'" ;;
esac
for v in "$MEM" "$TIMEOUT" "$SMP"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "'$v' is not a positive integer"
done

# Directories shared read-write over 9p, mounted at the same path in the VM:
# every --share DIR, and the caller's directory if the VM's fresh tmpfs
# mounts (/tmp, /run, /dev/shm) would hide it. Physical paths, parents first.
SHARES=()
add_share() {
  local d
  d=$(cd -- "$1" 2>/dev/null && pwd -P) || die "--share '$1': not a directory"
  [ "$d" != / ] || die "--share /: the host root is already visible (read-only)"
  [[ $d != *$'\n'* ]] || die "--share: a path with a newline is not supported"
  SHARES+=("$d")
}
for s in ${SHARE_ARGS[@]+"${SHARE_ARGS[@]}"}; do add_share "$s"; done
CWD_P=$(pwd -P) || die "cannot resolve the current directory"
case $CWD_P in
  /tmp|/tmp/*|/run|/run/*|/dev/shm|/dev/shm/*)
    covered=0
    for s in ${SHARES[@]+"${SHARES[@]}"}; do
      [[ $CWD_P == "$s" || $CWD_P == "$s"/* ]] && covered=1
    done
    [ $covered = 1 ] || add_share "$CWD_P" ;;
esac
if [ ${#SHARES[@]} -gt 0 ]; then
  mapfile -t SHARES < <(printf '%s\n' "${SHARES[@]}" | awk '{print gsub("/", "/"), $0}' |
    sort -n -s -k1,1 | cut -d' ' -f2- | awk '!seen[$0]++')
fi

CACHE=${PLASMON_RXE_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/plasmon-rxe-vm}
mkdir -p "$CACHE" || die "cannot create cache dir $CACHE"
CACHE=$(cd "$CACHE" && pwd -P)

# ---------------------------------------------------------------- host tools
PKGS=(qemu-system-x86 busybox-static cpio kmod rdma-core ibverbs-providers
      perftest rdmacm-utils ibverbs-utils)  # rping is in rdmacm-utils
missing=()
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$st" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing packages: ${missing[*]} (run as root, or: sudo apt-get install -y ${missing[*]})"
  note "installing: ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >"$CACHE/apt-install.log" 2>&1; then
    note "apt-get install failed; running apt-get update and retrying"
    apt-get update -q >>"$CACHE/apt-install.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$CACHE/apt-install.log" 2>&1 ||
      { tail -n 20 "$CACHE/apt-install.log" >&2; die "apt-get install ${missing[*]} failed (log: $CACHE/apt-install.log)"; }
  fi
fi
for c in qemu-system-x86_64 busybox cpio modprobe depmod dpkg-deb; do
  command -v "$c" >/dev/null || die "'$c' not found even though its package is installed"
done
BUSYBOX=$(command -v busybox)
command -v file >/dev/null && file -L "$BUSYBOX" | grep -q 'dynamically linked' &&
  die "$BUSYBOX is dynamically linked; the initramfs needs busybox-static"
qemu-system-x86_64 --version >/dev/null 2>&1 ||
  die "qemu-system-x86_64 cannot run: $(qemu-system-x86_64 --version 2>&1 | head -n 3)"

# ------------------------------------------------------------ kernel package
# The same kernel the reference uses: the one Debian 12's linux-image-amd64
# metapackage depends on. Cached per package name, guarded by a lock.
resolve_kpkg() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/{print $2; exit}'
}
exec 9>"$CACHE/lock"
flock 9
KPKG=$(resolve_kpkg)
if [ -z "$KPKG" ]; then
  note "linux-image-amd64 unknown to apt-cache; running apt-get update"
  apt-get update -q >"$CACHE/apt-update.log" 2>&1 || note "apt-get update failed (log: $CACHE/apt-update.log)"
  KPKG=$(resolve_kpkg)
fi
if [ -z "$KPKG" ]; then
  if [ -f "$CACHE/current" ] && [ -f "$CACHE/$(cat "$CACHE/current")/ready" ]; then
    KPKG=$(cat "$CACHE/current")
    note "warning: cannot resolve linux-image-amd64; using cached $KPKG"
  else
    die "cannot resolve Debian's kernel package (apt-cache depends linux-image-amd64 gave nothing) and nothing is cached"
  fi
fi
KDIR=$CACHE/$KPKG
if [ ! -f "$KDIR/ready" ]; then
  note "fetching $KPKG (once; cached in $KDIR)"
  rm -rf "$KDIR" "$KDIR.tmp"; mkdir -p "$KDIR.tmp/dl"
  (cd "$KDIR.tmp/dl" && apt-get download "$KPKG") >"$KDIR.tmp/download.log" 2>&1 || {
    # An outdated index names a file the mirror no longer has: refresh once.
    apt-get update -q >>"$KDIR.tmp/download.log" 2>&1 || true
    (cd "$KDIR.tmp/dl" && apt-get download "$KPKG") >>"$KDIR.tmp/download.log" 2>&1 || {
      tail -n 15 "$KDIR.tmp/download.log" >&2
      rm -rf "$KDIR.tmp"
      die "cannot fetch kernel package $KPKG with apt-get download (see above)"
    }
  }
  deb=$(ls "$KDIR.tmp"/dl/*.deb 2>/dev/null | head -n 1)
  [ -n "$deb" ] || { rm -rf "$KDIR.tmp"; die "apt-get download $KPKG produced no .deb"; }
  dpkg-deb -x "$deb" "$KDIR.tmp/root" || { rm -rf "$KDIR.tmp"; die "cannot unpack $deb"; }
  kver=$(ls "$KDIR.tmp/root/lib/modules")
  [ -n "$kver" ] && [ -f "$KDIR.tmp/root/boot/vmlinuz-$kver" ] ||
    { rm -rf "$KDIR.tmp"; die "$deb has no kernel image/modules where expected"; }
  depmod -b "$KDIR.tmp/root" "$kver" || { rm -rf "$KDIR.tmp"; die "depmod failed for $kver"; }
  rm -rf "$KDIR.tmp/dl"
  echo "$kver" > "$KDIR.tmp/kver"
  mv "$KDIR.tmp" "$KDIR"
  touch "$KDIR/ready"
  echo "$KPKG" > "$CACHE/current"
fi
KVER=$(cat "$KDIR/kver")
KROOT=$KDIR/root
VMLINUZ=$KROOT/boot/vmlinuz-$KVER

# --------------------------------------------------------------- initramfs
# The base initramfs (busybox + module closure + init) is cached per kernel and
# rebuilt when this script changes; each run appends a small cpio holding the
# command script (the kernel unpacks concatenated archives in order).
SELF_SUM=$( (cat "$0"; cat "$BUSYBOX") | sha256sum | cut -c1-16)
BASE=$KDIR/initrd-$SELF_SUM.cpio.gz
if [ ! -f "$BASE" ]; then
  rm -f "$KDIR"/initrd-*.cpio.gz
  B=$(mktemp -d "$KDIR/initrd-build.XXXXXX")
  mkdir -p "$B"/{bin,dev,proc,sys,lower,rw,host,mods}
  cp "$BUSYBOX" "$B/bin/busybox"
  # Roots of the closure: virtio transport + 9p + overlay for the host root,
  # veth (one-VM layout), virtio_net (two-VM layout; pulls in net_failover),
  # rxe, the verbs/rdma_cm user interfaces, and the crc32 shash that rxe's
  # ICRC allocates at device creation (not a modules.dep dependency).
  roots=(virtio_pci 9pnet_virtio 9p overlay veth virtio_net rdma_rxe ib_uverbs rdma_ucm)
  for opt in crc32_generic crc32-pclmul; do
    modprobe -d "$KROOT" -S "$KVER" --show-depends "$opt" >/dev/null 2>&1 && roots+=("$opt")
  done
  : > "$B/mods/order"
  for m in "${roots[@]}"; do
    modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>"$B/err" ||
      { cat "$B/err" >&2; rm -rf "$B"; die "module $m not resolvable in $KVER"; }
  done | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++' > "$B/list"
  while read -r ko; do
    cp "$ko" "$B/mods/"
    echo "/mods/$(basename "$ko")" >> "$B/mods/order"
  done < "$B/list"
  grep -q '/rdma_rxe\.ko' "$B/mods/order" || { rm -rf "$B"; die "rdma_rxe.ko missing from the module closure"; }
  rm -f "$B/list" "$B/err"
  cat > "$B/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
report() { echo "PLASMON-RXE-VM-EXIT $1" > /dev/ttyS1; echo "rxe-vm: command exited $1"; sync; poweroff -f; }
fail() { echo "rxe-vm: VM setup failed: $*"; echo "PLASMON-RXE-VM-SETUP-FAILED" > /dev/ttyS1; report 125; }
for ko in $(cat /mods/order); do
  insmod "$ko" || fail "insmod $ko"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 host /lower || fail "9p mount of the host root"
mount -t tmpfs -o mode=0755 rw /rw && mkdir -p /rw/upper /rw/work || fail "tmpfs"
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /host || fail "overlay mount"
mount -t proc proc /host/proc && mount -t sysfs sys /host/sys && mount -t devtmpfs dev /host/dev || fail "proc/sys/dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts; mount -t tmpfs shm /host/dev/shm
mount -t tmpfs run /host/run && mount -t tmpfs tmp /host/tmp || fail "tmpfs /run /tmp"
cp /cmd.sh /host/run/plasmon-rxe-cmd.sh || fail "no command script"
chroot /host /bin/bash /run/plasmon-rxe-cmd.sh < /dev/null
report $?
INIT
  chmod +x "$B/init"
  (cd "$B" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$B.cpio.gz" ||
    { rm -rf "$B" "$B.cpio.gz"; die "building the initramfs failed"; }
  mv "$B.cpio.gz" "$BASE"
  rm -rf "$B"
fi
flock -u 9
exec 9>&-

# ------------------------------------------------------------------ this run
CMD=("$@")
RUN=$(mktemp -d "$CACHE/run.XXXXXX")
# Per-VM bookkeeping, indexed by VM number: timeout(1) pid (QEMU's parent),
# console filter pid, done/killed flags, end state, CMD status, qemu status.
TPID=(); FPID=(); FINISHED=(); KILLED=(); STATE=(); RCODE=(); QRC=()

vm_qemu_pid() {  # VM -> pid of its QEMU, if that process is still ours
  local q
  q=$(cat "$RUN/vm$1/qemu.pid" 2>/dev/null) && [[ $q =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' < "/proc/$q/cmdline" 2>/dev/null | grep -qF -- "$RUN/vm$1/" || return 1
  echo "$q"
}
kill_vm() {  # VM: stop its QEMU (TERM, then KILL after 5 s)
  local i=$1 t=${TPID[$1]:-} q
  [ -n "$t" ] && [ "${FINISHED[$i]:-0}" != 1 ] || return 0
  KILLED[$i]=1
  q=$(vm_qemu_pid "$i") || q=$(pgrep -P "$t" 2>/dev/null | head -n 1) || q=
  kill -TERM "$t" ${q:+"$q"} 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$t" 2>/dev/null || { [ -n "$q" ] && kill -0 "$q" 2>/dev/null; } || break
    sleep 0.1
  done
  q=$(vm_qemu_pid "$i") || q=$(pgrep -P "$t" 2>/dev/null | head -n 1) || q=
  kill -KILL "$t" ${q:+"$q"} 2>/dev/null || true
}
release_filter() {  # VM: make sure its console filter sees EOF and ends
  local i=$1 f=${FPID[$1]:-} fd
  [ -n "$f" ] || return 0
  if kill -0 "$f" 2>/dev/null && [ -p "$RUN/vm$i/out" ]; then
    # A reader still blocked in open() needs a writer to come and go.
    exec {fd}<>"$RUN/vm$i/out" && exec {fd}>&- || true
  fi
  for _ in $(seq 30); do kill -0 "$f" 2>/dev/null || break; sleep 0.1; done
  kill -TERM "$f" 2>/dev/null || true
  wait "$f" 2>/dev/null || true
}
cleanup() {
  set +e
  local i
  for i in "${!TPID[@]}"; do kill_vm "$i"; done
  for i in "${!FPID[@]}"; do release_filter "$i"; done
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ACCEL=${PLASMON_RXE_VM_ACCEL:-}
# TCG by default: on these machines /dev/kvm exists but a KVM guest hung
# before printing anything, so KVM is opt-in.
[ -n "$ACCEL" ] || ACCEL=tcg
case $ACCEL in
  kvm) accel_args=(-accel kvm -cpu max) ;;
  tcg) accel_args=(-accel tcg,thread=multi -cpu max) ;;
  *) die "PLASMON_RXE_VM_ACCEL must be kvm or tcg" ;;
esac

share_args=()
for k in "${!SHARES[@]}"; do
  share_args+=(-virtfs "local,path=${SHARES[$k]//,/,,},mount_tag=plasmon$k,security_model=none,multidevs=remap")
done

q() { printf '%q ' "$@"; }
write_cmd() {  # VM number -> $RUN/vmN/cmd.sh, the script run in the chroot
  local i=$1 e k
  {
    echo 'fail() { echo "rxe-vm: VM setup failed: $*"; echo PLASMON-RXE-VM-SETUP-FAILED > /dev/ttyS1; exit 125; }'
    echo 'wait_active() { local n=0; until rdma link show "$1/1" 2>/dev/null | grep -q "state ACTIVE"; do n=$((n+1)); [ $n -le 100 ] || fail "$1 not ACTIVE after 10 s: $(rdma link show "$1/1" 2>&1)"; sleep 0.1; done; }'
    echo "export PATH=$(printf %q "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH")"
    echo "export HOME=$(printf %q "$HOME") LANG=C.UTF-8 TERM=dumb"
    echo 'ulimit -l unlimited || fail "ulimit -l unlimited"'
    echo 'ip link set lo up || fail "lo up"'
    if [ "$VMS" = 1 ]; then
      echo 'ip link add va type veth peer name vb || fail "veth pair"'
      echo 'ip addr add 10.77.0.1/24 dev va && ip addr add 10.77.0.2/24 dev vb || fail "veth addresses"'
      echo 'ip link set va up && ip link set vb up || fail "veth up"'
      echo 'rdma link add rxe0 type rxe netdev va || fail "rdma link add rxe0"'
      echo 'rdma link add rxe1 type rxe netdev vb || fail "rdma link add rxe1"'
      echo 'wait_active rxe0; wait_active rxe1'
    else
      echo 'ip link show eth0 >/dev/null 2>&1 || fail "no eth0 (virtio_net)"'
      echo "ip link set eth0 up && ip addr add 10.78.0.$i/24 dev eth0 || fail 'eth0 10.78.0.$i/24'"
      echo 'rdma link add rxe0 type rxe netdev eth0 || fail "rdma link add rxe0"'
      echo 'wait_active rxe0'
    fi
    for k in "${!SHARES[@]}"; do
      echo "mkdir -p -- $(q "${SHARES[$k]}")&& mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap plasmon$k $(q "${SHARES[$k]}")|| fail $(q "9p mount of ${SHARES[$k]}")"
    done
    echo "cd -- $(printf %q "$PWD") || fail \"cannot cd to the caller's directory\""
    # The caller's --env come after the harness's own setup (so a PATH given
    # there cannot break it) and before its PLASMON_RXE_VM* (which win).
    for e in ${ENVS[@]+"${ENVS[@]}"}; do
      echo "export ${e%%=*}=$(printf %q "${e#*=}")"
    done
    echo "export PLASMON_RXE_VM=1 PLASMON_RXE_VM_VMS=$VMS"
    [ "$VMS" = 1 ] || echo "export PLASMON_RXE_VM_NODE=$i PLASMON_RXE_VM_ADDR=10.78.0.$i PLASMON_RXE_VM_PEERS='10.78.0.1 10.78.0.2'"
    echo "unset -f fail wait_active"
    echo "$(q "${CMD[@]}")"
  } > "$RUN/vm$i/cmd.sh"
  (cd "$RUN/vm$i" && echo cmd.sh | cpio -o -H newc --quiet | gzip -1) > "$RUN/vm$i/cmd.cpio.gz" &&
    cat "$BASE" "$RUN/vm$i/cmd.cpio.gz" > "$RUN/vm$i/initrd.gz" || die "cannot build the initrd of vm$i"
}

filter() {
  if [ "${PLASMON_RXE_VM_VERBOSE:-0}" = 1 ]; then sed -u 's/\r//g'; return; fi
  # Drop firmware chatter and terminal escapes; keep everything the VM prints.
  sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' |
    grep --line-buffered -v -E '^\s*$|SeaBIOS|iPXE|Booting from ROM|Press Ctrl-B|^Machine UUID|^Booting from|^Probing EDD|reboot: Power down'
}

launch_vm() {  # VM number, extra QEMU args...: start QEMU in the background
  local i=$1 d=$RUN/vm$1
  shift
  rm -f "$d/out" "$d/qemu.pid"
  mkfifo "$d/out" || die "mkfifo $d/out failed"
  : > "$d/status"; : > "$d/qemu.err"
  FINISHED[$i]=0; KILLED[$i]=0; STATE[$i]=; RCODE[$i]=; QRC[$i]=
  if [ "$VMS" = 1 ]; then
    (filter < "$d/out") &
  else
    (filter < "$d/out" | sed -u "s/^/[vm$i] /") &
  fi
  FPID[$i]=$!
  timeout -k 10 "$TIMEOUT" qemu-system-x86_64 "${accel_args[@]}" -m "$MEM" -smp "$SMP" \
    -display none -no-reboot -nodefaults -serial stdio -serial "file:$d/status" \
    -pidfile "$d/qemu.pid" -kernel "$VMLINUZ" -initrd "$d/initrd.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" \
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
    ${share_args[@]+"${share_args[@]}"} "$@" </dev/null >"$d/out" 2>"$d/qemu.err" &
  TPID[$i]=$!
}

finish_vm() {  # VM number: reap it and classify how it ended
  local i=$1 d=$RUN/vm$1 qrc rc
  set +e
  wait "${TPID[$i]}"; qrc=$?
  release_filter "$i"
  set -e
  FINISHED[$i]=1; QRC[$i]=$qrc
  rc=$(tr -d '\r' < "$d/status" | awk '/^PLASMON-RXE-VM-EXIT [0-9]+$/{print $2}' | tail -n 1)
  if grep -q PLASMON-RXE-VM-SETUP-FAILED "$d/status"; then STATE[$i]=harness
  elif [ -n "$rc" ]; then STATE[$i]="exit"; RCODE[$i]=$rc
  elif [ "${KILLED[$i]}" = 1 ]; then STATE[$i]=killed
  elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then STATE[$i]=timeout
  else STATE[$i]=harness  # QEMU ended without a status
  fi
}

ABORT=
monitor() {  # wait for every VM; on a timeout or harness failure, kill the rest
  local i alive deadline=$((SECONDS + TIMEOUT + 30))
  while :; do
    alive=0
    for i in $(seq 1 "$VMS"); do
      [ "${FINISHED[$i]}" = 1 ] && continue
      if kill -0 "${TPID[$i]}" 2>/dev/null; then alive=1; continue; fi
      finish_vm "$i"
      case ${STATE[$i]} in timeout|harness) [ "$ABORT" = harness ] || ABORT=${STATE[$i]} ;; esac
    done
    if [ -z "$ABORT" ] && [ $SECONDS -ge $deadline ]; then
      ABORT=timeout; note "backstop: the VMs outlived the timeout; killing them"
    fi
    if [ -n "$ABORT" ]; then
      for i in $(seq 1 "$VMS"); do
        [ "${FINISHED[$i]}" = 1 ] || { kill_vm "$i"; finish_vm "$i"; }
      done
      return 0
    fi
    [ $alive = 1 ] || return 0
    sleep 0.2
  done
}

pick_port() {  # a loopback TCP port nobody uses right now (QEMU binds it; retried on a race)
  local used p
  used=$(awk 'FNR > 1 {split($2, a, ":"); print a[2]}' /proc/net/tcp /proc/net/tcp6 2>/dev/null || true)
  for _ in $(seq 200); do
    p=$(( 10000 + (RANDOM * 32768 + RANDOM) % 22000 ))  # below the ephemeral range
    grep -qx "$(printf %04X "$p")" <<<"$used" || { echo "$p"; return 0; }
  done
  return 1
}
owns_tcp() {  # FIELD STATE PORT PID: PID holds a TCP socket in STATE (hex) whose
               # local (FIELD 2) or remote (FIELD 3) address is 127.0.0.1:PORT
  local inode fd
  for inode in $(awk -v f="$1" -v st="$2" -v a="$(printf '0100007F:%04X' "$3")" \
                   '$f == a && $4 == st {print $10}' /proc/net/tcp); do
    [ "$inode" != 0 ] || continue
    for fd in /proc/"$4"/fd/*; do
      [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ] && return 0
    done
  done
  return 1
}
listens() { owns_tcp 2 0A "$1" "$2"; }    # PORT PID: PID listens on 127.0.0.1:PORT
connected() { owns_tcp 3 01 "$1" "$2"; }  # PORT PID: PID is connected to 127.0.0.1:PORT

for i in $(seq 1 "$VMS"); do mkdir -p "$RUN/vm$i"; write_cmd "$i"; done
[ ${#SHARES[@]} = 0 ] || note "sharing read-write over 9p: ${SHARES[*]}"
if [ "$VMS" = 1 ]; then
  note "booting $KVER ($ACCEL, ${SMP} cpu, ${MEM} MB, timeout ${TIMEOUT}s)"
  launch_vm 1
else
  note "booting 2 VMs of $KVER ($ACCEL, ${SMP} cpu and ${MEM} MB each, timeout ${TIMEOUT}s)"
  up=0
  for _ in 1 2 3 4 5; do
    port=$(pick_port) || die "no free loopback TCP port found for the VMs' link"
    launch_vm 1 -netdev "socket,id=n0,listen=127.0.0.1:$port" \
      -device virtio-net-pci,netdev=n0,mac=52:54:00:78:00:01
    t0=$SECONDS
    while [ $((SECONDS - t0)) -lt 60 ]; do
      if qp=$(vm_qemu_pid 1) && listens "$port" "$qp"; then up=1; break; fi
      kill -0 "${TPID[1]}" 2>/dev/null || break
      sleep 0.1
    done
    [ $up = 0 ] || break
    if kill -0 "${TPID[1]}" 2>/dev/null; then
      kill_vm 1; finish_vm 1
      die "vm1: QEMU did not listen on 127.0.0.1:$port within 60 s"
    fi
    finish_vm 1
    if grep -qi 'in use' "$RUN/vm1/qemu.err"; then
      note "127.0.0.1:$port was taken meanwhile; trying another port"
      continue
    fi
    sed 's/^/[vm1] qemu: /' "$RUN/vm1/qemu.err" >&2
    die "vm1: QEMU failed to start (exit ${QRC[1]})"
  done
  [ $up = 1 ] || die "vm1: no usable loopback port after 5 tries"
  note "vm1 listens on 127.0.0.1:$port; starting vm2"
  launch_vm 2 -netdev "socket,id=n0,connect=127.0.0.1:$port" \
    -device virtio-net-pci,netdev=n0,mac=52:54:00:78:00:02
  # QEMU does not fail when its connect does: it boots with a dead link. So
  # make sure vm2's QEMU really is connected to vm1's port.
  t0=$SECONDS; up=0
  while [ $((SECONDS - t0)) -lt 30 ] && kill -0 "${TPID[2]}" 2>/dev/null; do
    if qp=$(vm_qemu_pid 2) && connected "$port" "$qp"; then up=1; break; fi
    sleep 0.1
  done
  if [ $up = 0 ] && kill -0 "${TPID[2]}" 2>/dev/null; then
    kill_vm 1; kill_vm 2
    die "vm2: QEMU did not connect to vm1 on 127.0.0.1:$port within 30 s; both VMs killed"
  fi
fi
monitor

if [ "$VMS" = 1 ]; then
  case ${STATE[1]} in
    exit)
      [ "${QRC[1]}" = 0 ] || note "warning: qemu exited ${QRC[1]}"
      exit "${RCODE[1]}" ;;
    timeout|killed)
      echo "$ME: error: VM timed out after ${TIMEOUT}s and was killed" >&2
      exit 124 ;;
    *)
      if grep -q PLASMON-RXE-VM-SETUP-FAILED "$RUN/vm1/status"; then
        die "VM setup failed (the reason is in the console output above)"
      fi
      [ -s "$RUN/vm1/qemu.err" ] && sed 's/^/qemu: /' "$RUN/vm1/qemu.err" >&2
      die "VM ended without reporting the command's status (qemu exit ${QRC[1]})" ;;
  esac
fi

# Two VMs: say how each ended, then pick the status.
final=0; harness=0; timedout=0; words=()
for i in 1 2; do
  case ${STATE[$i]} in
    exit) words+=("vm$i exited ${RCODE[$i]}")
      [ "$final" != 0 ] || final=${RCODE[$i]} ;;
    timeout) words+=("vm$i timed out after ${TIMEOUT}s"); timedout=1 ;;
    killed) words+=("vm$i killed") ;;
    harness) harness=1
      if grep -q PLASMON-RXE-VM-SETUP-FAILED "$RUN/vm$i/status"; then
        words+=("vm$i harness failed (VM setup; see [vm$i] above)")
      else
        [ -s "$RUN/vm$i/qemu.err" ] && sed "s/^/[vm$i] qemu: /" "$RUN/vm$i/qemu.err" >&2
        words+=("vm$i harness failed (QEMU exit ${QRC[$i]} without a status)")
      fi ;;
  esac
done
summary=$(IFS=,; echo "${words[*]}" | sed 's/,/, /g')
if [ $harness = 1 ]; then
  echo "$ME: error: harness failure: $summary" >&2; exit 125
elif [ $timedout = 1 ] || [ "$ABORT" = timeout ]; then
  echo "$ME: error: timed out (${TIMEOUT}s): $summary" >&2; exit 124
fi
note "$summary"
exit "$final"
