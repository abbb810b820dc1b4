#!/usr/bin/env bash
# plasmon: run one command inside a throw-away QEMU VM that has Soft-RoCE.
#
#   tools/rxe-vm/run.sh [--mem MB] [--timeout S] [--smp N] -- CMD [ARG...]
#
# The host kernel has no RDMA and cannot load modules, so we boot Debian 12's
# stock kernel (which ships rdma_rxe as a module) under QEMU, from a busybox
# initramfs holding the rxe module closure. The host root filesystem is
# mounted read-only over 9p under a tmpfs overlay and chrooted into, so every
# host binary runs unchanged; writes vanish with the VM. Before CMD runs:
#
#   veth va 10.77.0.1/24 <-> vb 10.77.0.2/24, both in the VM's initial netns
#   rxe0 on va, rxe1 on vb; ulimit -l unlimited; cwd = the caller's cwd.
#
# Exit status: CMD's status; 124 if the VM timed out; 125 if the harness
# itself failed (missing tools, kernel not fetchable, QEMU or VM setup broke).
# CMD's stdout and stderr both arrive on this script's stdout (serial console).
#
# Environment: PLASMON_RXE_VM_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/plasmon-rxe-vm)
#              PLASMON_RXE_VM_ACCEL=tcg|kvm (default tcg)
#              PLASMON_RXE_VM_VERBOSE=1 shows the whole boot log.
set -euo pipefail

ME=rxe-vm
die() { echo "$ME: error: $*" >&2; exit 125; }
note() { echo "$ME: $*" >&2; }
usage() {
  echo "usage: $0 [--mem MB] [--timeout S] [--smp N] -- CMD [ARG...]" >&2
  exit 125
}

MEM=2048
TIMEOUT=600
SMP=2
while [ $# -gt 0 ]; do
  case $1 in
    --mem) [ $# -ge 2 ] || usage; MEM=$2; shift 2 ;;
    --timeout) [ $# -ge 2 ] || usage; TIMEOUT=$2; shift 2 ;;
    --smp) [ $# -ge 2 ] || usage; SMP=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "$ME: unknown option '$1'" >&2; usage ;;
  esac
done
[ $# -gt 0 ] || usage
for v in "$MEM" "$TIMEOUT" "$SMP"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "'$v' is not a positive integer"
done

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
  # veth, rxe, the verbs/rdma_cm user interfaces, and the crc32 shash that
  # rxe's ICRC allocates at device creation (not a modules.dep dependency).
  roots=(virtio_pci 9pnet_virtio 9p overlay veth rdma_rxe ib_uverbs rdma_ucm)
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
fail() { echo "rxe-vm: VM setup failed: $*"; report 125; }
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
RUN=$(mktemp -d "$CACHE/run.XXXXXX")
cleanup() { rm -rf "$RUN"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

q() { printf '%q ' "$@"; }
{
  echo 'fail() { echo "rxe-vm: VM setup failed: $*"; exit 125; }'
  echo "export PATH=$(printf %q "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH")"
  echo "export HOME=$(printf %q "$HOME") LANG=C.UTF-8 TERM=dumb PLASMON_RXE_VM=1"
  echo 'ulimit -l unlimited || fail "ulimit -l unlimited"'
  echo 'ip link set lo up || fail "lo up"'
  echo 'ip link add va type veth peer name vb || fail "veth pair"'
  echo 'ip addr add 10.77.0.1/24 dev va && ip addr add 10.77.0.2/24 dev vb || fail "veth addresses"'
  echo 'ip link set va up && ip link set vb up || fail "veth up"'
  echo 'rdma link add rxe0 type rxe netdev va || fail "rdma link add rxe0"'
  echo 'rdma link add rxe1 type rxe netdev vb || fail "rdma link add rxe1"'
  echo "cd -- $(printf %q "$PWD") || fail \"cannot cd to the caller's directory\""
  echo "$(q "$@")"
} > "$RUN/cmd.sh"
(cd "$RUN" && echo cmd.sh | cpio -o -H newc --quiet | gzip -1) > "$RUN/cmd.cpio.gz"
cat "$BASE" "$RUN/cmd.cpio.gz" > "$RUN/initrd.gz"
: > "$RUN/status"

ACCEL=${PLASMON_RXE_VM_ACCEL:-}
# TCG by default: on these machines /dev/kvm exists but a KVM guest hung
# before printing anything, so KVM is opt-in.
[ -n "$ACCEL" ] || ACCEL=tcg
case $ACCEL in
  kvm) accel_args=(-accel kvm -cpu max) ;;
  tcg) accel_args=(-accel tcg,thread=multi -cpu max) ;;
  *) die "PLASMON_RXE_VM_ACCEL must be kvm or tcg" ;;
esac

filter() {
  if [ "${PLASMON_RXE_VM_VERBOSE:-0}" = 1 ]; then sed -u 's/\r//g'; return; fi
  # Drop firmware chatter and terminal escapes; keep everything the VM prints.
  sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' |
    grep --line-buffered -v -E '^\s*$|SeaBIOS|iPXE|Booting from ROM|Press Ctrl-B|^Machine UUID|^Booting from|^Probing EDD|reboot: Power down'
}

note "booting $KVER ($ACCEL, ${SMP} cpu, ${MEM} MB, timeout ${TIMEOUT}s)"
set +e
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 "${accel_args[@]}" -m "$MEM" -smp "$SMP" \
  -display none -no-reboot -nodefaults -serial stdio -serial "file:$RUN/status" \
  -kernel "$VMLINUZ" -initrd "$RUN/initrd.gz" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" \
  -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
  </dev/null 2>"$RUN/qemu.err" | filter
rcs=("${PIPESTATUS[@]}")
set -e
qrc=${rcs[0]}
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  echo "$ME: error: VM timed out after ${TIMEOUT}s and was killed" >&2
  exit 124
fi
rc=$(tr -d '\r' < "$RUN/status" | awk '/^PLASMON-RXE-VM-EXIT [0-9]+$/{print $2}' | tail -n 1)
if [ -z "$rc" ]; then
  [ -s "$RUN/qemu.err" ] && sed 's/^/qemu: /' "$RUN/qemu.err" >&2
  die "VM ended without reporting the command's status (qemu exit $qrc)"
fi
[ "$qrc" = 0 ] || note "warning: qemu exited $qrc"
exit "$rc"
