#!/usr/bin/env bash
# plasmon-bench --plot: runs `plasmon-bench local` (and, with --fetch,
# `plasmon-bench fetch` on a cluster it starts) with few iterations and
# --plot, then checks that every chart is there as a valid PNG (signature,
# header, size) and a valid SVG (parses as XML, an <svg> root with drawn
# paths), and that --json carries each row's whole distribution.
#   tests/bench/plot_test.sh BUILD_DIR [--fetch]
build=$(cd "$1" && pwd)
fetch="${2:-}"
. "$(dirname "$0")/../script_lib.sh" plot

# Each image, and the histograms of the JSON's rows (at `rows`, a path of
# keys) summing to their iteration counts.
check() {  # DIR JSON ROWS_EXPR CHART...
  local dir="$1" json="$2" rows="$3"
  shift 3
  python3 - "$dir" "$json" "$rows" "$@" <<'PY' || fail "plots or JSON of $json"
import json, struct, sys, xml.etree.ElementTree as ET
d, js, rows, charts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
for c in charts:
    with open(f"{d}/{c}.png", "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{c}.png: not a PNG"
    assert head[12:16] == b"IHDR", f"{c}.png: no IHDR"
    w, h = struct.unpack(">II", head[16:24])
    assert w >= 100 and h >= 100, f"{c}.png: {w}x{h}"
    root = ET.parse(f"{d}/{c}.svg").getroot()
    assert root.tag.endswith("svg"), f"{c}.svg: root {root.tag}"
    paths = [e for e in root.iter() if e.tag.endswith("path")]
    assert len(paths) > 5, f"{c}.svg: {len(paths)} paths"
doc = json.load(open(js))
n = 0
for key in rows.split(","):
    for r in eval(key, {"doc": doc}):
        h = r["histogram_ns"]
        assert sum(c for _, c in h) == r["iterations"], (r["op"], r["size"])
        assert all(a[0] < b[0] for a, b in zip(h, h[1:])), "bounds not ascending"
        n += 1
assert n > 0, "no rows"
PY
}

sock="$tmp/s.sock"
start_store "$build/tools/plasmon-store" "$sock" -m 64M
"$build/tools/plasmon-bench" local -s "$sock" --sizes 64,4K --iterations 50 --warmup 5 --fill 0 \
  --connects 5 --first-touch 0 --plot "$tmp/local" --json >"$tmp/local.json" 2>"$tmp/local.err" \
  || { cat "$tmp/local.err"; fail "plasmon-bench local"; }
grep -q "wrote 3 plots to $tmp/local" "$tmp/local.err" || fail "it did not say where the plots are: $(cat "$tmp/local.err")"
check "$tmp/local" "$tmp/local.json" 'doc["results"],[doc["references"]["ipc_floor"]]' \
  local-latency-64B local-latency-4KiB local-throughput
# A directory it cannot make is a clear error.
: >"$tmp/file"
if "$build/tools/plasmon-bench" local -s "$sock" --sizes 64 --iterations 5 --warmup 1 --fill 0 \
     --connects 1 --first-touch 0 --plot "$tmp/file/sub" >/dev/null 2>"$tmp/bad.err"; then
  fail "--plot into a file succeeded"
fi
grep -q -- "--plot" "$tmp/bad.err" || fail "unclear error: $(cat "$tmp/bad.err")"

if [ "$fetch" = --fetch ]; then
  "$build/tools/plasmon-bench" fetch --name "pl$(($$ % 100000))" --sizes 4K --iterations 30 --warmup 5 \
    --throughput-size 4M --throughput-reps 1 --iperf-seconds 1 --pingpong-round-trips 100 \
    --plot "$tmp/fetch" --json >"$tmp/fetch.json" 2>"$tmp/fetch.err" \
    || { tail -20 "$tmp/fetch.err"; fail "plasmon-bench fetch"; }
  check "$tmp/fetch" "$tmp/fetch.json" 'doc["results"]' fetch-latency-4KiB fetch-throughput
  # The link references: one stream pinned as the latencies ran (when they
  # did), then 1 and 2 streams unpinned; each measured.
  python3 - "$tmp/fetch.json" <<'PY' || fail "iperf3 references in fetch.json"
import json, sys
doc = json.load(open(sys.argv[1]))
runs = doc["references"]["iperf3"]
pinned = doc["config"]["pin"] is not None
want = ([(1, True)] if pinned else []) + [(1, False), (2, False)]
assert [(r["streams"], r["pinned"]) for r in runs] == want, runs
assert all(r["error"] is None and r["bits_per_second"] > 0 for r in runs), runs
# TCP into memory as large as the object, over as many connections as the
# stores pull it over (one per 4 MiB chunk, up to 4), once per throughput
# fetch.
bulk = doc["references"]["tcp_bulk"]
assert bulk["error"] is None and bulk["bytes"] == 4 << 20 and bulk["streams"] == 1, bulk
assert len(bulk["bits_per_second"]) == 1 and bulk["bits_per_second"][0] > 0, bulk
m = doc["machine"]
assert isinstance(m["shmem_thp"], str) and (m["damon"] is None or isinstance(m["damon"], list)), m
PY
fi
echo "plot test passed"
