"""python3 -m plasmon.bench: what the Python binding adds to the C++ client.

Against a store already running (--socket, else $PLASMON_SOCKET), in one run:
  get+release   Python `c.get(id)` + `buf.release()`, beside the same Get and
                buffer drop timed in C++ on the same connection (a loop inside the
                module: the C++ client without Python), in alternating blocks of
                50, per size;
  put           Python `c.put(data)` (CreateAndSeal up to 1 MiB, else Create +
                one copy + Seal), per size;
  get_object    `c.get_object(id)` of a numpy array of 1 KiB and of 1 GiB (at most 1000 times)
                (--object-mib): a view of the store's memory, no copy;
and, with --plasmon-bench PATH, `plasmon-bench local --json` on the same store
(its get_release, create_and_seal and create_seal), so that the Python figures
sit beside the C++ benchmark's own. Times are microseconds, nearest-rank
percentiles after a warm-up. The store needs room for the largest object
twice (64 MiB puts) and for the get_object array.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import plasmon

DEFAULT_SIZES = "64,4K,64K,1M,8M,64M"


def parse_size(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper()
    if s and s[-1] in units:
        return int(s[:-1]) * units[s[-1]]
    return int(s)


def percentiles(ns):
    s = sorted(ns)

    def rank(p):  # nearest rank
        return s[max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))] / 1000.0

    return {"samples": len(s), "p50_us": rank(50), "p90_us": rank(90), "p99_us": rank(99)}


def iterations_for(size, n):
    # As plasmon-bench local: large objects run fewer iterations.
    return min(n, max(100, (2 << 30) // max(size, 1)))


def time_get_release(c, oid, n, warmup):
    for _ in range(warmup):
        c.get(oid, 0).release()
    clock = time.perf_counter_ns
    ns = []
    for _ in range(n):
        t0 = clock()
        b = c.get(oid, 0)
        b.release()
        ns.append(clock() - t0)
    return ns


def _time_each(n, warmup, op, undo):
    """Times op() n times after warmup untimed calls; undo(result) after each, untimed."""
    clock = time.perf_counter_ns
    ns = []
    for i in range(warmup + n):
        t0 = clock()
        got = op()
        t1 = clock()
        undo(got)
        del got  # its last reference goes here, untimed
        if i >= warmup:
            ns.append(t1 - t0)
    return ns


def time_put(c, data, n, warmup):
    return _time_each(n, warmup, lambda: c.put(data), c.delete)


def time_get_object(c, oid, n, warmup):
    return _time_each(n, warmup, lambda: c.get_object(oid), lambda a: None)


def run_plasmon_bench(path, socket, sizes, iterations):
    argv = [path, "local", "--socket", socket, "--json", "--sizes", sizes,
            "--iterations", str(iterations), "--ops", "get_release,create_and_seal,create_seal",
            "--fill", "0", "--connects", "0", "--first-touch", "0"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    rows = {(r["op"], r["size"]): r for r in doc["results"]}
    return doc, rows


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m plasmon.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-s", "--socket", default=None,
                    help="the running store's socket (default: $PLASMON_SOCKET, else %s)"
                    % plasmon.DEFAULT_SOCKET)
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="object sizes (default %(default)s)")
    ap.add_argument("--iterations", type=int, default=5000,
                    help="timed iterations per size (fewer for large objects, as plasmon-bench)")
    ap.add_argument("--object-mib", type=int, default=1024,
                    help="size of the get_object array in MiB (default %(default)s)")
    ap.add_argument("--plasmon-bench", default=None, metavar="PATH",
                    help="also run PATH local --json on the same store (the C++ figures)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    out = {"tool": "python3 -m plasmon.bench", "python": sys.version.split()[0],
           "numpy": np.__version__, "cpus": os.cpu_count(),
           "loadavg_before": os.getloadavg(), "results": []}
    c = plasmon.connect(args.socket)
    out["socket"] = c.socket
    rng = np.random.default_rng(0)
    for size in sizes:
        n = iterations_for(size, args.iterations)
        warm = max(10, n // 10)
        data = rng.integers(0, 256, size, dtype=np.uint8)
        oid = c.put(data)
        # Python and C++ in alternating blocks, so that a machine whose load
        # drifts (other jobs) weighs on both alike.
        time_get_release(c, oid, 0, warm)
        c._time_get_release(oid, warm)
        py_ns, cxx_ns = [], []
        while len(py_ns) < n:
            block = min(50, n - len(py_ns))
            py_ns += time_get_release(c, oid, block, 0)
            cxx_ns += c._time_get_release(oid, block)
        py, cxx = percentiles(py_ns), percentiles(cxx_ns)
        c.delete(oid)
        put = percentiles(time_put(c, data, n, warm))
        out["results"].append({"size": size, "get_release_python": py,
                               "get_release_cxx_same_connection": cxx, "put_python": put})

    objects = []
    for nbytes in (1024, args.object_mib << 20):
        arr = np.zeros(nbytes // 8, dtype=np.float64)
        oid = c.put_object(arr)
        del arr
        n = min(1000, args.iterations)
        got = percentiles(time_get_object(c, oid, n, max(10, n // 10)))
        objects.append({"array_bytes": nbytes, "get_object": got})
        c.delete(oid)
    out["get_object"] = objects

    if args.plasmon_bench:
        doc, rows = run_plasmon_bench(args.plasmon_bench, c.socket, args.sizes, args.iterations)
        out["plasmon_bench"] = {"ipc_floor_p50_us": doc["references"]["ipc_floor"]["p50_us"]}
        for r in out["results"]:
            for op in ("get_release", "create_and_seal", "create_seal"):
                row = rows.get((op, r["size"]))
                if row:
                    r["plasmon_bench_" + op] = {k: row[k] for k in ("p50_us", "p90_us", "p99_us")}
    out["loadavg_after"] = os.getloadavg()
    c.close()

    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"python3 -m plasmon.bench on {out['socket']} (load average before "
          f"{out['loadavg_before'][0]:.2f}, after {out['loadavg_after'][0]:.2f}, "
          f"{out['cpus']} CPUs); p50 / p99 in us")
    head = f"{'size':>9} | {'get+release py':>15} {'C++ same conn':>14} {'py adds':>8}"
    if args.plasmon_bench:
        head += f" {'plasmon-bench':>14}"
    head += f" | {'put py':>15}"
    if args.plasmon_bench:
        head += f" {'plasmon-bench':>14}"
    print(head)
    for r in out["results"]:
        py, cxx, put = r["get_release_python"], r["get_release_cxx_same_connection"], r["put_python"]
        line = (f"{r['size']:>9} | {py['p50_us']:>7.2f} / {py['p99_us']:<6.1f} "
                f"{cxx['p50_us']:>6.2f} / {cxx['p99_us']:<6.1f}"
                f"{py['p50_us'] - cxx['p50_us']:>+8.2f}")
        if args.plasmon_bench:
            b = r.get("plasmon_bench_get_release")
            line += f" {b['p50_us']:>6.2f} / {b['p99_us']:<6.1f}" if b else f" {'-':>14}"
        line += f" | {put['p50_us']:>7.1f} / {put['p99_us']:<7.1f}"
        if args.plasmon_bench:
            b = r.get("plasmon_bench_create_and_seal") or r.get("plasmon_bench_create_seal")
            line += f" {b['p50_us']:>6.1f} / {b['p99_us']:<7.1f}" if b else f" {'-':>14}"
        print(line)
    for o in out["get_object"]:
        g = o["get_object"]
        print(f"get_object of a {o['array_bytes']:>10}-byte numpy array: p50 {g['p50_us']:.2f} us, "
              f"p99 {g['p99_us']:.2f} us ({g['samples']} samples)")
    if args.plasmon_bench:
        print(f"plasmon-bench local: IPC floor (64 B ping-pong) p50 "
              f"{out['plasmon_bench']['ipc_floor_p50_us']:.2f} us; put beside create_and_seal "
              f"(up to 1 MiB) or create_seal (Create + write + Seal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
