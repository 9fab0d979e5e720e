#!/usr/bin/env python3
"""The report of one bench/run: the HTTP comparison (results.json from
bench/harness.py), the criterion micro-benchmarks (criterion.txt) and, if it
ran, the memory bench (memory.jsonl), checked against the targets of issue 6.

    python3 bench/report.py bench/out/<run>

Every number printed comes from those files; nothing is assumed.
"""

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import render, saturated  # noqa: E402

UNITS = {"ps": 1e-6, "ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}


def criterion(path):
    """{bench name: (low, median estimate, high) in µs} from criterion's output."""
    out, name = {}, None
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        m = re.match(r"^(\S+/\S+)", line)
        if m and not line.startswith(("Benchmarking", "Testing", "Found", "Gnuplot", "Warning")):
            name = m.group(1)
        t = re.search(r"time:\s+\[([\d.]+) (\S+) ([\d.]+) (\S+) ([\d.]+) (\S+)\]", line)
        if t and name:
            v = [float(t.group(i)) * UNITS[t.group(i + 1)] for i in (1, 3, 5)]
            out[name] = tuple(v)
    return out


def verdict(ok):
    return "met" if ok else "**missed**"


def main():
    run = Path(sys.argv[1])
    s = json.loads((run / "results.json").read_text())
    crit = criterion(run / "criterion.txt")
    mem = []
    if (run / "memory.jsonl").exists():
        mem = [json.loads(l) for l in (run / "memory.jsonl").read_text().splitlines() if l.startswith("{")]

    L = [render(s)]
    if crit:
        L.append("### Micro-benchmarks (criterion, `cargo bench --bench decide`)\n")
        idle = run / "criterion-idle.txt"
        if idle.exists():
            L.append(idle.read_text().strip().replace("bench/run: ", "Before criterion: ") + ".\n")
        L.append("| benchmark | time (median estimate) | 95% interval |")
        L.append("|---|---:|---:|")
        for k, (lo, mid, hi) in crit.items():
            L.append(f"| {k} | {mid:.3f} µs | {lo:.3f} – {hi:.3f} µs |")
        L.append("")
    if mem:
        L.append("### Memory with many numbers tracked (`bench/memory`)\n")
        base = mem[0]
        L.append(f"Policy bench/smsguard.toml: store.capacity {base['store_capacity']:,}, "
                 f"store.block_capacity {base['block_capacity']:,}, numbers.cache {base['numbers_cache']:,}; "
                 f"RSS before the first send {base['rss_bytes'] / 2**20:.1f} MB.\n")
        L.append("| distinct numbers | RSS | peak RSS | counters | backoffs | blocks | offences | evicted while live | classifier cache | allowed / shadowed / rejected | time | within bounds |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
        for m in mem[1:]:
            L.append(f"| {m['checkpoint']:,} | {m['rss_bytes'] / 2**20:.0f} MB | {m['peak_rss_bytes'] / 2**20:.0f} MB | "
                     f"{m['counters']:,} | {m['backoffs']:,} | {m['blocks']:,} | {m['offences']:,} | "
                     f"{m['evicted_live']:,} | {m['classifier_cached']:,} | "
                     f"{m['allowed']:,} / {m['shadowed']:,} / {m['rejected']:,} | {m['seconds']:.0f} s | "
                     f"{'yes' if m['within_bounds'] else 'NO'} |")
        L.append("")

    # Targets of issue 6.
    T = []
    a = s["workloads"].get("allowed", {})
    g, n, r = a.get("guard"), a.get("nginx"), a.get("ratios")
    if g and n and r:
        x = r["guard/nginx"]
        T.append(("guarded-send throughput ≥ nginx proxy_pass (aim 1.2×)",
                  f"guard/nginx {x:.2f} ({g['closed']['rps']:,.0f} vs {n['closed']['rps']:,.0f} req/s)",
                  verdict(x >= 1.0) + ("" if x >= 1.0 else f" by {100 * (1 - x):.0f}%")))
        for rate in s["rates"]:
            k = f"{rate}/s"
            if k in g and k in n and g[k]["cpu_us_per_req"] is not None:
                gc, nc = g[k]["cpu_us_per_req"], n[k]["cpu_us_per_req"]
                T.append((f"CPU per guarded send ≤ nginx per proxied request ({k})",
                          f"{gc:.1f} vs {nc:.1f} µs", verdict(gc <= nc) + ("" if gc <= nc else f" by {gc / nc:.1f}×")))
        gc, nc = g["closed"]["cpu_us_per_req"], n["closed"]["cpu_us_per_req"]
        T.append(("CPU per guarded send ≤ nginx (c=32, saturated)", f"{gc:.1f} vs {nc:.1f} µs",
                  verdict(gc <= nc) + ("" if gc <= nc else f" by {gc / nc:.1f}×")))
        k = f"{s['rates'][0]}/s"
        if f"added p50 {k} guard" in r:
            ga, na = r[f"added p50 {k} guard"], r[f"added p50 {k} nginx"]
            sat = " (guard saturated at this rate)" if saturated(g[k], s["rates"][0]) else ""
            T.append((f"added p50 at {k} ≤ nginx's", f"{ga:+.0f} vs {na:+.0f} µs{sat}",
                      verdict(ga <= na) + ("" if ga <= na else f" by {ga - na:.0f} µs")))
    for w, ws in s["workloads"].items():
        gg = ws.get("guard")
        if gg and gg["closed"]["rss_kb_first"]:
            mb = gg["closed"]["rss_kb_first"] / 1024
            T.append((f"RSS < 20 MB after the c=32 run ({w})",
                      f"{mb:.1f} MB after {gg['closed']['guard_sends_at_first']:,} requests",
                      verdict(mb < 20) + ("" if mb < 20 else f" by {mb - 20:.0f} MB")))
    one_m = next((m for m in mem[1:] if m["checkpoint"] == 1_000_000), None)
    if one_m:
        mb = one_m["rss_bytes"] / 2**20
        T.append(("RSS < 300 MB with 1M numbers tracked", f"{mb:.0f} MB",
                  verdict(mb < 300) + ("" if mb < 300 else f" by {mb / 300:.1f}×")))
    if len(mem) > 2:
        last = mem[-1]
        T.append((f"a flood of {last['checkpoint']:,} numbers stays within store bounds",
                  f"counters {last['counters']:,}, backoffs {last['backoffs']:,}, RSS {last['rss_bytes'] / 2**20:.0f} MB",
                  verdict(all(m["within_bounds"] for m in mem[1:]))))
    for key, label, limit in (("decide/seen_number_allowed", "decision, seen number < 1 µs", 1.0),
                              ("decide/new_number", "decision, new number < 5 µs", 5.0)):
        if key in crit:
            v = crit[key][1]
            T.append((label, f"{v:.2f} µs", verdict(v < limit) + ("" if v < limit else f" by {v / limit:.1f}×")))
    L.append("### Targets (issue 6)\n")
    L.append("| target | measured | |")
    L.append("|---|---|---|")
    for t in T:
        L.append(f"| {t[0]} | {t[1]} | {t[2]} |")
    print("\n".join(L))


if __name__ == "__main__":
    main()
