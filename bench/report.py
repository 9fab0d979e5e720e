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


def redis_section(s):
    """The "Redis store" table: guard+redis (smsguard-redis) against guard
    (memory store) and nginx, and the Redis work per judged send."""
    R = s.get("redis")
    ws_all = {w: ws for w, ws in s["workloads"].items() if "guard+redis" in ws}
    if not R or not ws_all:
        return []
    L = ["### Redis store (smsguard-redis vs smsguard vs nginx)\n"]
    L.append(f"smsguard-redis (target `guard+redis`) is bench/smsguard.toml plus `[store] redis = \"{R['url']}\"`, "
             "generated at run time (other store settings at their defaults: prefix `smsguard:`, timeout 50 ms, "
             "near_cache 1 s, on_error local); smsguard (`guard`) is the same policy on the memory store. Both have an "
             "admin listener the harness reads /metrics from between measurements. "
             f"{R['version'].split(' sha=')[0]} runs with `--save \"\" --appendonly no` on 127.0.0.1:{R['port']}, "
             f"**pinned to CPU {R['cpu']}: Redis shares the load generator's (and the mock's) core**; the proxy keeps "
             "CPU 1 alone. Redis is emptied (FLUSHALL) before each workload, when both guards start afresh; the "
             "workloads never repeat a number, so neither variant trips a limit (bench/smsguard.toml's number, "
             "prefix and IP limits are never reached; global, adaptive and budget floors are raised) and both judge "
             "every send through every stage. Ratios are of medians over the rounds of this run.\n")
    rate0 = f"{s['rates'][0]}/s" if s.get("rates") else None
    names = {"nginx": "nginx", "guard": "smsguard", "guard+redis": "smsguard-redis"}
    L.append(f"| workload | target | req/s (c=32) | ÷ nginx | ÷ smsguard | proxy CPU µs/req (c=32) | "
             f"proxy CPU µs/req at {rate0 or '-'} | Redis CPU µs/req (c=32) | proxy CPU 1 busy | CPU 0 busy (generator, mock, Redis) |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w, ws in ws_all.items():
        n, g = ws.get("nginx"), ws.get("guard")
        for t in ("nginx", "guard", "guard+redis"):
            ts = ws.get(t)
            if not ts:
                continue
            c = ts["closed"]
            rn = c["rps"] / n["closed"]["rps"] if n and t != "nginx" else None
            rg = c["rps"] / g["closed"]["rps"] if g and t == "guard+redis" else None
            f0 = ts.get(rate0) if rate0 else None
            at0 = "-"
            if f0 and f0["cpu_us_per_req"] is not None:
                at0 = f"{f0['cpu_us_per_req']:.1f}" + (" (saturated)" if saturated(f0, s["rates"][0]) else "")
            pb = "-" if c["proxy_cpu_busy"] is None else f"{100 * c['proxy_cpu_busy']:.0f}%"
            cb = "-" if c["client_side_cpu_busy"] is None else f"{100 * c['client_side_cpu_busy']:.0f}%"
            rc = c.get("redis_cpu_us_per_req")
            bold = "**" if t == "guard+redis" else ""
            L.append(f"| {w} | {names[t]} | {bold}{c['rps']:,.0f}{bold} | {'-' if rn is None else f'{rn:.2f}'} | "
                     f"{'-' if rg is None else f'{bold}{rg:.2f}{bold}'} | {c['cpu_us_per_req']:.1f} | {at0} | "
                     f"{'-' if rc is None else f'{rc:.1f}'} | {pb} | {cb} |")
    per_round = []
    for w, ws in ws_all.items():
        r = ws.get("ratios", {})
        if "redis/guard per round" in r:
            per_round.append(f"{w} {', '.join(f'{x:.2f}' for x in r['redis/guard per round'])}")
    if per_round:
        L.append("")
        L.append("smsguard-redis ÷ smsguard per round: " + "; ".join(per_round) + ". "
                 "When CPU 0 is near 100% busy for smsguard-redis, its closed-loop rate is bounded by that core "
                 "(Redis with the generator), not by the proxy: read it as a lower bound, and compare the proxy's own "
                 "CPU per request at the fixed rate.\n")

    L.append("Redis work per judged send (smsguard-redis, closed-loop runs summed over the rounds): judged sends from "
             "the guard's `smsguard_sends_total`; round trips and calls from its `smsguard_redis_total` (a pipeline "
             "is one round trip); commands from redis-server's `INFO` (`total_commands_processed`, which counts the "
             "commands run inside scripts too, and `commandstats`), our own INFO calls taken out. Background work "
             "(e.g. mirroring the shared blocks every near_cache) is included: it is what a replica costs Redis.\n")
    L.append("| case | judged sends | stopped by (stage: sends) | Redis round trips / send | link calls / send | "
             "scripts (EVALSHA) / send | Redis commands / send, all | Redis µs in scripts / send | commands / send (≥ 0.005) | judged on Redis / fallback |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---|---|")
    cases = []
    if "allowed" in ws_all:
        cases.append(("(a) new numbers (allowed: every send to a number never seen)", ws_all["allowed"]["redis_work"]["closed"]))
    if "blocked" in ws_all:
        cases.append(("(b) already-blocked key (prefix:8 block set by the admin API, action shadow)",
                      ws_all["blocked"]["redis_work"]["closed"]))
    pr = R.get("probe_reject")
    if pr and pr.get("work"):
        cases.append(("(b′) already-blocked key, block action reject (one probe run, no fake made)", pr["work"]))
    if "shadowed" in ws_all:
        cases.append(("geo-blocked (+99899394…, UZ: stopped before the store)", ws_all["shadowed"]["redis_work"]["closed"]))
    for label, wk in cases:
        if not wk or not wk["judged"]:
            L.append(f"| {label} | 0 | - | - | - | - | - | - | - | - |")
            continue
        ps = wk["per_send"]
        su = "-" if ps.get("script_usec") is None else f"{ps['script_usec']:.1f}"
        stages = ", ".join(f"{'none (allowed)' if k == 'none' else k}: {v:,}"
                           for k, v in sorted(wk["by_stage"].items(), key=lambda kv: -kv[1]))
        top = ", ".join(f"{k.upper()} {v / wk['judged']:.2f}" for k, v in wk["commands"].items()
                        if v / wk["judged"] >= 0.005)
        L.append(f"| {label} | {wk['judged']:,} | {stages} | **{ps['round_trips']:.4f}** | {ps['calls']:.4f} | "
                 f"{ps['scripts']:.2f} | {ps['commands']:.1f} | "
                 f"{su} | {top or '-'} | "
                 f"{wk['store_shared']:,} / {wk['store_fallback']:,}"
                 + (f"; {wk['errors']:,} link errors" if wk["errors"] else "") + " |")
    notes = []
    a = ws_all.get("allowed", {}).get("redis_work", {}).get("closed")
    if a and a["judged"]:
        x = a["commands"].get("xadd", 0) / a["judged"]
        notes.append(f"(a): {a['per_send']['round_trips']:.3f} round trips per send (expected ~1: one pipeline "
                     f"of {a['per_send']['scripts']:.1f} scripts, backoff, each limit counter and each budget window)"
                     + (f", of which ~{a['per_send']['round_trips'] - 1:.3f} are the batched XADDs ({x:.2f} per send) "
                        "of the fleet log of forwarded sends (src/store/fleet.rs, off the request path)" if x else "")
                     + (f"; Redis spends {a['per_send']['script_usec']:.0f} µs per send executing the scripts "
                        f"(commandstats) and {ws_all['allowed']['guard+redis']['closed']['redis_cpu_us_per_req']:.0f} µs "
                        "of CPU in all (/proc, with its network I/O)" if a["per_send"].get("script_usec") else ""))
    b = ws_all.get("blocked", {}).get("redis_work", {}).get("closed")
    if b and b["judged"]:
        notes.append(f"(b): {b['per_send']['round_trips']:.3f} round trips per send, of which "
                     f"{b['per_send']['set']:.3f} per send are scripts writing (SET) the send's shadow fake to Redis "
                     "so other replicas answer a GET of its sid (src/shadow.rs, written in the background, off the "
                     "request path); judging the send reads the block from the local mirror")
    if pr and pr.get("work") and pr["work"]["judged"]:
        w2 = pr["work"]
        notes.append(f"(b′): {w2['per_send']['round_trips']:.4f} round trips per send "
                     f"({w2['round_trips']:,} in {w2['seconds']:.1f} s over {w2['judged']:,} rejected sends at "
                     f"{pr['rps']:,.0f} req/s: the block mirror only), i.e. judging a send to a blocked key costs no "
                     "round trip")
    if R.get("used_memory_end"):
        notes.append(f"Redis used_memory at the end: {R['used_memory_end'] / 2**20:.1f} MB")
    if notes:
        L.append("")
        L.append("; ".join(notes) + ".\n")
    return L


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
    L += redis_section(s)
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
