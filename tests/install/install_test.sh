#!/usr/bin/env bash
# Installs this build into a temporary prefix, checks what is there, then
# builds examples/hello.cc outside the tree against it, with find_package
# (shared and static library) and with pkg-config, and runs all three
# against the installed plasmon-store. Also compiles each installed header
# on its own, with no include path but the prefix's.
#   tests/install/install_test.sh BUILD_DIR SOURCE_DIR
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
. "$(dirname "$0")/../script_lib.sh" install

p="$tmp/prefix"
cmake --install "$build" --prefix "$p" >/dev/null
libdir=$(sed -n 's/^libdir=\${prefix}\///p' "$p"/lib*/pkgconfig/plasmon.pc 2>/dev/null || true)
[ -n "$libdir" ] || fail "no lib/pkgconfig/plasmon.pc (or no libdir in it)"

# The layout the README promises.
for f in bin/plasmon-store bin/plasmon bin/plasmon-bench bin/plasmon-cluster \
         "$libdir"/libplasmon.a "$libdir"/libplasmon.so "$libdir"/cmake/plasmon/plasmonConfig.cmake \
         "$libdir"/cmake/plasmon/plasmonConfigVersion.cmake "$libdir"/cmake/plasmon/plasmonTargets.cmake \
         share/man/man1/plasmon-store.1 share/man/man1/plasmon.1 share/doc/plasmon/README.md \
         share/doc/plasmon/ARCHITECTURE.md; do
  [ -e "$p/$f" ] || fail "not installed: $f"
done
version=$(sed -n 's/^Version: //p' "$p/$libdir/pkgconfig/plasmon.pc")
soname=$(readelf -d "$p/$libdir/libplasmon.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libplasmon.so.${version%%.*}" ] || fail "SONAME '$soname', expected libplasmon.so.${version%%.*}"
[ -f "$p/$libdir/libplasmon.so.$version" ] || fail "no libplasmon.so.$version"
[ "$(readlink "$p/$libdir/$soname")" = "libplasmon.so.$version" ] || fail "$soname is not a link to libplasmon.so.$version"
grep -q "plasmon-store" "$p/share/man/man1/plasmon-store.1" && grep -qF -- '\-\-socket' "$p/share/man/man1/plasmon-store.1" \
  || fail "plasmon-store.1 does not document --socket"

# Exactly the public headers, each compiling alone.
want=$(cd "$src" && ls client/include/plasmon/*.h core/include/plasmon/*.h | xargs -n1 basename | sort)
got=$(cd "$p/include/plasmon" && ls | sort)
[ "$want" = "$got" ] || fail "installed headers differ from the public ones: $(echo $got) vs $(echo $want)"
for h in $got; do
  echo "#include <plasmon/$h>" | c++ -std=c++20 -Wall -Wextra -Wpedantic -Werror -fsyntax-only \
    -I"$p/include" -x c++ - || fail "installed header plasmon/$h does not compile on its own"
done

# find_package(plasmon): the shared and the static library.
cmake -S "$src/tests/install" -B "$tmp/app" -G Ninja -DCMAKE_PREFIX_PATH="$p" \
  -DHELLO_SOURCE="$src/examples/hello.cc" >/dev/null
cmake --build "$tmp/app" >/dev/null
# ldd's output whole, then grep: `ldd | grep -q` under pipefail fails when
# grep stops reading before ldd is done writing (SIGPIPE), as it did under load.
libs=$(ldd "$tmp/app/hello_shared")
grep -q "$p/$libdir/libplasmon.so.${version%%.*}" <<<"$libs" \
  || fail "hello_shared does not load the installed libplasmon: $(grep plasmon <<<"$libs")"
libs=$(ldd "$tmp/app/hello_static")
! grep -q libplasmon <<<"$libs" || fail "hello_static loads libplasmon.so"

# pkg-config.
flags=$(PKG_CONFIG_PATH="$p/$libdir/pkgconfig" pkg-config --cflags --libs plasmon)
c++ "$src/examples/hello.cc" $flags -Wl,-rpath,"$p/$libdir" -o "$tmp/hello_pc"

# Against the installed store.
sock="$tmp/s.sock"
start_store "$p/bin/plasmon-store" "$sock" -m 16M
for app in "$tmp/app/hello_shared" "$tmp/app/hello_static" "$tmp/hello_pc"; do
  out=$("$app" "$sock") || fail "$(basename "$app") failed: $out"
  echo "$out" | grep -q '"hello, plasmon"' || fail "$(basename "$app") printed: $out"
done
stats=$("$p/bin/plasmon" -s "$sock" stats)
grep -q "objects" <<<"$stats" || fail "installed plasmon stats"
# The installed benchmark starts its cluster with the installed launcher and
# stores (not a build tree's), in namespaces of its own (root, as CI is).
if [ "$(id -u)" = 0 ]; then
  "$p/bin/plasmon-bench" fetch --name "in$(($$ % 100000))" --subnet 217 --sizes 4K --iterations 20 \
    --warmup 2 --pingpong-round-trips 100 --throughput-size 0 --iperf-seconds 0 --json \
    >"$tmp/fetch.json" 2>"$tmp/fetch.err" || { tail -20 "$tmp/fetch.err"; fail "installed plasmon-bench fetch"; }
  grep -q '"fetch_cached"' "$tmp/fetch.json" || fail "installed plasmon-bench fetch printed no results"
fi
echo "install test passed: $p ($version)"
