#!/usr/bin/env bash
# Builds the Debian package with CPack from this build, then checks it
# without installing it: its contents (dpkg-deb -c), its control fields
# (dependencies from dpkg-shlibdeps, the conffile, the maintainer scripts),
# the systemd unit (systemd-analyze verify), and that the packaged
# plasmon-store starts with the flags of the packaged /etc/default file.
#   tests/package/deb_test.sh BUILD_DIR
build=$(cd "$1" && pwd)
. "$(dirname "$0")/../script_lib.sh" deb

cpack --config "$build/CPackConfig.cmake" -G DEB -B "$tmp/out" >"$tmp/cpack.log" 2>&1 \
  || { cat "$tmp/cpack.log"; fail "cpack failed"; }
debs=("$tmp"/out/plasmon_*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "expected one plasmon_*.deb, got: ${debs[*]}"
deb="${debs[0]}"
version=$(dpkg-deb -f "$deb" Version)
[ "$(dpkg-deb -f "$deb" Package)" = plasmon ] || fail "package name"
[ "$(basename "$deb")" = "plasmon_${version}_$(dpkg --print-architecture).deb" ] || fail "file name $(basename "$deb")"

contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/bin/plasmon-store ./usr/bin/plasmon ./usr/bin/plasmon-bench ./usr/bin/plasmon-cluster \
         "./usr/lib/libplasmon.so.$version" "./usr/lib/libplasmon.so.${version%%.*}" ./usr/lib/libplasmon.so \
         ./usr/lib/libplasmon.a ./usr/include/plasmon/client.h ./usr/lib/cmake/plasmon/plasmonConfig.cmake \
         ./usr/lib/pkgconfig/plasmon.pc ./usr/share/man/man1/plasmon-store.1 ./usr/share/man/man1/plasmon.1 \
         ./usr/share/doc/plasmon/README.md ./lib/systemd/system/plasmon-store.service \
         ./etc/default/plasmon-store; do
  grep -qxF "$f" <<<"$contents" || fail "not in the package: $f"
done
# The Python module, where Debian's python3 looks, if this build made it.
if [ -f "$build/python/plasmon/__init__.py" ]; then
  grep -qxF ./usr/lib/python3/dist-packages/plasmon/__init__.py <<<"$contents" \
    || fail "the Python package is not in /usr/lib/python3/dist-packages"
  grep -qE '^\./usr/lib/python3/dist-packages/plasmon/_plasmon\..*\.so$' <<<"$contents" \
    || fail "the compiled _plasmon module is not in the package"
  python=yes
fi
# Nothing from the build or source tree, no test binaries.
! grep -E 'tests|_CPack|/build/|\.o$' <<<"$contents" || fail "stray files in the package"

# Dependencies found by dpkg-shlibdeps (libraries the binaries link).
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libc6 libstdc++6 libhiredis libssl3 libcpp-httplib adduser ${python:+python3}; do
  grep -q "$lib" <<<"$depends" || fail "Depends lacks $lib: $depends"
done
dpkg-deb -e "$deb" "$tmp/control"
grep -qxF /etc/default/plasmon-store "$tmp/control/conffiles" || fail "/etc/default/plasmon-store is not a conffile"
for s in postinst prerm postrm; do
  [ -x "$tmp/control/$s" ] || fail "no executable $s"
  sh -n "$tmp/control/$s" || fail "$s does not parse"
done

# The unit, as systemd reads it: no complaint at all. Its command points
# into the package (verify checks that it is executable: pointed at the
# extracted copy here, since nothing is installed on this machine).
dpkg-deb -x "$deb" "$tmp/root"
unit="$tmp/root/lib/systemd/system/plasmon-store.service"
grep -qxF 'EnvironmentFile=-/etc/default/plasmon-store' "$unit" || fail "the unit does not read /etc/default/plasmon-store"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[ "$exec_start" = '/usr/bin/plasmon-store $PLASMON_STORE_OPTS' ] || fail "ExecStart=$exec_start"
mkdir "$tmp/unit"
sed "s|^ExecStart=/usr/bin/|ExecStart=$tmp/root/usr/bin/|" "$unit" >"$tmp/unit/plasmon-store.service"
out=$(systemd-analyze verify --man=no "$tmp/unit/plasmon-store.service" 2>&1) \
  || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify complains: $out"

# The packaged defaults start the packaged store (its socket in $tmp, no
# group: the package's postinst would have made it).
opts=$(. "$tmp/root/etc/default/plasmon-store" && echo "$PLASMON_STORE_OPTS")
opts=$(sed -e "s|--socket [^ ]*||" -e 's|--socket-group [^ ]*||' \
           -e 's|--metrics [^ ]*|--metrics 127.0.0.1:0|' <<<"$opts")
# shellcheck disable=SC2086
start_store "$tmp/root/usr/bin/plasmon-store" "$tmp/s.sock" $opts
"$tmp/root/usr/bin/plasmon" -s "$tmp/s.sock" stats >/dev/null || fail "the packaged plasmon cannot reach it"
if [ -n "${python:-}" ]; then
  PYTHONPATH="$tmp/root/usr/lib/python3/dist-packages" /usr/bin/python3 -c \
    'import sys, plasmon; c = plasmon.connect(sys.argv[1]); i = c.put(b"from the .deb"); assert bytes(c.get(i)) == b"from the .deb"' \
    "$tmp/s.sock" || fail "the packaged Python module cannot use the packaged store"
fi
echo "deb test passed: $(basename "$deb")"
