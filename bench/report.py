#!/usr/bin/env python3
"""The report of one bench/run: the HTTP comparison (results.json from
bench/harness.py), the criterion micro-benchmarks (criterion.txt) and, if it
ran, the memory bench (memory.jsonl), checked against the targets of issue 23
(and, below them, the earlier targets of issue 13, kept to compare runs).

    python3 bench/report.py bench/out/<run>

Every number printed comes from those files; nothing is assumed.
"""

import json
import re
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, render, saturated  # noqa: E402

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
             "scripts (EVALSHA) / send | Redis commands / send, all | Redis µs in scripts / send | "
             "Redis CPU µs / send (/proc) | commands / send (≥ 0.005) | judged on Redis / fallback |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|")
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
            L.append(f"| {label} | 0 | - | - | - | - | - | - | - | - | - |")
            continue
        ps = wk["per_send"]
        su = "-" if ps.get("script_usec") is None else f"{ps['script_usec']:.1f}"
        rcpu = "-" if ps.get("redis_cpu_us") is None else f"{ps['redis_cpu_us']:.1f}"
        stages = ", ".join(f"{'none (allowed)' if k == 'none' else k}: {v:,}"
                           for k, v in sorted(wk["by_stage"].items(), key=lambda kv: -kv[1]))
        top = ", ".join(f"{k.upper()} {v / wk['judged']:.2f}" for k, v in wk["commands"].items()
                        if v / wk["judged"] >= 0.005)
        L.append(f"| {label} | {wk['judged']:,} | {stages} | **{ps['round_trips']:.4f}** | {ps['calls']:.4f} | "
                 f"{ps['scripts']:.2f} | {ps['commands']:.1f} | "
                 f"{su} | {rcpu} | {top or '-'} | "
                 f"{wk['store_shared']:,} / {wk['store_fallback']:,}"
                 + (f"; {wk['errors']:,} link errors" if wk["errors"] else "") + " |")
    notes = []
    a = ws_all.get("allowed", {}).get("redis_work", {}).get("closed")
    if a and a["judged"]:
        x = a["commands"].get("xadd", 0) / a["judged"]
        notes.append(f"(a): {a['per_send']['round_trips']:.3f} round trips per send (expected ~1: one script "
                     f"running the send's backoff step, each limit counter, each budget window and the fleet log's "
                     f"tail, src/store/redis_batch.rs: {a['per_send']['scripts']:.2f} scripts per send)"
                     + (f", of which ~{a['per_send']['round_trips'] - 1:.3f} are the batched XADDs ({x:.2f} per send) "
                        "of the fleet log of forwarded sends (src/store/fleet.rs, off the request path)" if x else "")
                     + (f"; Redis spends {a['per_send']['script_usec']:.0f} µs per send executing the scripts "
                        f"(commandstats) and {ws_all['allowed']['guard+redis']['closed']['redis_cpu_us_per_req']:.0f} µs "
                        "of CPU in all (/proc, with its network I/O)" if a["per_send"].get("script_usec") else ""))
    b = ws_all.get("blocked", {}).get("redis_work", {}).get("closed")
    if b and b["judged"]:
        notes.append(f"(b): {b['per_send']['round_trips']:.3f} round trips per send, of which "
                     f"{b['per_send']['set']:.3f} per send are scripts writing (SET) the send's shadow fake to Redis "
                     "so other replicas answer a GET of its sid (src/pipeline/shadow.rs, written in the background, off the "
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


def by(x, limit, unit="", ratio=False, nd=0):
    """How far a measured value is past its limit."""
    if ratio:
        return f" by {x / limit:.2f}×" if limit else ""
    return f" by {x - limit:,.{nd}f}{unit}"


def targets(s, mem):
    """The targets of issue 13: (target, measured, verdict) rows."""
    T = []
    rates = [f"{r}/s" for r in s["rates"]]
    names = {"allowed": "allowed sends", "shadowed": "shadowed sends", "get": "GET passthrough"}
    for w, label in names.items():
        ws = s["workloads"].get(w)
        if not ws:
            T.append((f"{label}: (all targets)", "not measured (workload not run)", "-"))
            continue
        g, n, r = ws.get("guard"), ws.get("nginx"), ws.get("ratios", {})
        if not g or not n:
            T.append((f"{label}: (all targets)", "not measured (guard or nginx missing)", "-"))
            continue
        x = r["guard/nginx"]
        T.append((f"{label}: throughput ≥ 1.0× nginx (c=32)",
                  f"{x:.2f}× ({g['closed']['rps']:,.0f} vs {n['closed']['rps']:,.0f} req/s; per round "
                  f"{', '.join(f'{v:.2f}' for v in r['guard/nginx per round'])})",
                  verdict(x >= 1.0) + ("" if x >= 1.0 else f" by {100 * (1 - x):.0f}%")))
        gc, nc = g["closed"]["cpu_us_per_req"], n["closed"]["cpu_us_per_req"]
        T.append((f"{label}: proxy CPU per request ≤ nginx's (c=32)", f"{gc:.1f} vs {nc:.1f} µs",
                  verdict(gc <= nc) + ("" if gc <= nc else by(gc, nc, ratio=True))))
        for k in rates:
            if k not in g or k not in n or g[k]["cpu_us_per_req"] is None:
                T.append((f"{label}: proxy CPU per request ≤ nginx's ({k})", "not measured", "-"))
                continue
            gc, nc = g[k]["cpu_us_per_req"], n[k]["cpu_us_per_req"]
            sat = [t for t, v in (("guard", g), ("nginx", n)) if saturated(v[k], int(k[:-2]))]
            T.append((f"{label}: proxy CPU per request ≤ nginx's ({k})",
                      f"{gc:.1f} vs {nc:.1f} µs" + (f" ({' and '.join(sat)} saturated)" if sat else ""),
                      verdict(gc <= nc) + ("" if gc <= nc else by(gc, nc, ratio=True))))
        k = rates[0]
        for p in ("p50", "p99"):
            key = f"added {p} {k} guard"
            if key not in r or f"added {p} {k} nginx" not in r:
                T.append((f"{label}: added {p} at {k} ≤ nginx's", "not measured", "-"))
                continue
            ga, na = r[key], r[f"added {p} {k} nginx"]
            sat = [t for t, v in (("guard", g), ("nginx", n)) if saturated(v[k], int(k[:-2]))]
            T.append((f"{label}: added {p} at {k} ≤ nginx's",
                      f"{ga:+,.0f} vs {na:+,.0f} µs over direct ({g[k][f'{p}_us']:,.0f} vs {n[k][f'{p}_us']:,.0f} µs)"
                      + (f" ({' and '.join(sat)} saturated)" if sat else ""),
                      verdict(ga <= na) + ("" if ga <= na else by(ga, na, " µs"))))
    first = next((ws["guard"] for ws in s["workloads"].values()
                  if ws.get("guard", {}).get("rss_kb_idle_start")), None)
    if first:
        mb = first["rss_kb_idle_start"] / 1024
        w0 = next(w for w, ws in s["workloads"].items() if ws.get("guard") is first)
        T.append(("RSS < 20 MB idle (guard started, before its first request)",
                  f"{mb:.1f} MB (before the {w0} workload)", verdict(mb < 20) + ("" if mb < 20 else by(mb, 20, " MB", nd=1))))
    else:
        T.append(("RSS < 20 MB idle (guard started, before its first request)", "not measured", "-"))
    gg = s["workloads"].get("get", {}).get("guard")
    if gg and gg.get("rss_kb_end"):
        mb = gg["rss_kb_end"] / 1024
        seen = s.get("sent_to_guard", {}).get("get", {}).get("guard")
        T.append(("RSS < 20 MB after the GET workload",
                  f"{mb:.1f} MB" + (f" after {seen:,} GETs" if seen else ""),
                  verdict(mb < 20) + ("" if mb < 20 else by(mb, 20, " MB", nd=1))))
    else:
        T.append(("RSS < 20 MB after the GET workload", "not measured (get workload not run)", "-"))
    one_m = next((m for m in mem[1:] if m["checkpoint"] == 1_000_000), None)
    if one_m:
        mb = one_m["rss_bytes"] / 2**20
        per = one_m.get("rss_over_baseline", one_m["rss_bytes"] - mem[0]["rss_bytes"]) / one_m["checkpoint"]
        T.append(("≤ 100 bytes resident per tracked number",
                  f"{per:,.0f} bytes ((RSS at 1M − RSS before the first send) / 1M: "
                  f"{mb:.1f} − {mem[0]['rss_bytes'] / 2**20:.1f} MB)",
                  verdict(per <= 100) + ("" if per <= 100 else by(per, 100, ratio=True))))
        T.append(("RSS < 120 MB with 1M numbers tracked", f"{mb:.0f} MB",
                  verdict(mb < 120) + ("" if mb < 120 else by(mb, 120, " MB"))))
    else:
        why = "not measured (bench/run --memory)" if not mem else "not measured (no 1,000,000 checkpoint in memory.jsonl)"
        T.append(("≤ 100 bytes resident per tracked number", why, "-"))
        T.append(("RSS < 120 MB with 1M numbers tracked", why, "-"))
    return T


# ---------------------------------------------------------------- issue 23

# The policy stages of config.example.toml a bench policy is checked for (the
# tables that turn a stage on; `limit` is the [[limit]] list).
STAGES = ("geo", "numbers", "backoff", "limit", "adaptive", "budget", "balance")
# The guarded workloads of issue 23 and what the report calls them.
W23 = {"allowed": "allowed sends", "shadowed": "shadowed sends", "blocked": "blocked sends",
       "get": "GET passthrough"}


def adaptive_tables(m):
    """A memory.jsonl checkpoint's adaptive tables (pending confirmations,
    sender pairs, conversion counts), or "-" where it has none of them."""
    keys = ("pending", "pairs", "conversions")
    if not any(k in m for k in keys):
        return "-"
    return " / ".join("-" if m.get(k) is None else f"{m[k]:,}" for k in keys)


def policy_check(run):
    """Which of config.example.toml's stages the run's guard policy holds.
    The run's directory keeps the policy the guard ran (smsguard-guard.toml:
    bench/smsguard.toml plus the harness's [admin]); the example is read
    from this checkout. Returns (adaptive on: True/False/None, sentence)."""
    path = run / "smsguard-guard.toml"
    example_path = ROOT / "config.example.toml"
    if not path.exists():
        return None, ("Policy: not checked (the run's directory has no smsguard-guard.toml, the policy the "
                      "guard ran).")
    try:
        bench = tomllib.loads(path.read_text())
        example = tomllib.loads(example_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        return None, f"Policy: not checked ({e})."

    def names(conf):
        return [str(x.get("name", "?")) for x in conf.get("limit", [])]

    def stage(conf, k):
        return f"limits ({', '.join(names(conf))})" if k == "limit" else k

    wanted = [k for k in STAGES if k in example]
    have = [k for k in wanted if k in bench]
    lacks = [k for k in wanted if k not in bench]
    adaptive = "adaptive" in bench
    text = (f"Policy: the guard ran {path.name} (bench/smsguard.toml as the harness wrote it into the run's "
            f"directory); of config.example.toml's stages ({', '.join(stage(example, k) for k in wanted)}) it has "
            f"{', '.join(stage(bench, k) for k in have) or 'none'}: "
            + ("**[adaptive] is on**" if adaptive else "**[adaptive] is off: these are not the example policy's "
               "figures, and the table below gives no verdict**")
            + (f"; not in it: {', '.join(lacks)}" if lacks else "")
            + ". bench/memory (with --memory) judges with bench/smsguard.toml itself, the same policy.")
    missing = [x for x in names(example) if x not in names(bench)]
    if missing:
        text += f" The example's limits {', '.join(missing)} are not in the bench policy."
    return adaptive, text


def logging_text(s):
    """Lines each proxy's log got per answer, per workload (warm-ups included)."""
    parts = []
    for w in W23:
        lg = s.get("logs", {}).get(w, {})
        got = []
        for t, name in (("nginx", "nginx"), ("guard", "smsguard")):
            x = lg.get(t)
            if x and "lines" in x and x.get("answers"):
                got.append(f"{name} {x['lines'] / x['answers']:.2f}")
        if got:
            parts.append(f"{w} {', '.join(got)}")
    if not parts:
        return "Logging: no log counts in results.json."
    return ("Log lines per answer (both proxies log to a file: nginx its access log, smsguard its decision "
            "log at info, a line per send, none per GET): " + "; ".join(parts) + ".")


def short_of(x, target, strict=False):
    """How far a throughput ratio x is below its target, and what it needs."""
    need = f"needs {'> ' if strict else ''}+{100 * (target / x - 1):.0f}% throughput" if x > 0 else "no throughput"
    return f"**missed** by {target - x:.2f}× ({need})"


def over(x, limit, unit, nd=1):
    """How far a cost x is past its limit."""
    return f"**missed** by {x / limit:.2f}× ({x - limit:,.{nd}f}{unit} over)"


def targets_23(s, mem, adaptive, scaling):
    """The targets of issue 23: (target, measured, verdict) rows. A figure
    that was not measured gets "not measured" and the reason, no verdict."""
    T = []
    W = s["workloads"]
    why_no_verdict = {True: None, False: "no verdict: the policy has no [adaptive]",
                      None: "no verdict: the policy was not checked"}[adaptive]

    def row(target, measured, verdict):
        T.append((target, measured, why_no_verdict or verdict))

    def errors(ts):
        c = ts["closed"]
        e = c["non_2xx"] + c["socket_errors"]
        return f"; {e:,} errors/non-2xx" if e else ""

    def per_round(ws, peer):
        xs = ws.get("ratios", {}).get(f"guard/{peer} per round")
        return f"; per round {', '.join(f'{v:.2f}' for v in xs)}" if xs and len(xs) > 1 else ""

    # Throughput against nginx, CPU per request (allowed), and the nginx + Lua guard.
    for w, label in W23.items():
        ws = W.get(w)
        goal = 1.0 if w == "allowed" else 1.1
        t_nginx = f"{label}: throughput ≥ {goal:.1f}× nginx (c=32)"
        t_lua = f"{label}: throughput > nginx+lua's (c=32)"
        if not ws or "guard" not in ws:
            why = f"not measured (workload {w} not run: WORKLOADS)"
            T.append((t_nginx, why, "-"))
            if w == "allowed":
                T.append(("allowed sends: proxy CPU per request ≤ nginx's (c=32)", why, "-"))
            T.append((t_lua, why, "-"))
            continue
        g = ws["guard"]
        gr = g["closed"]["rps"]
        n = ws.get("nginx")
        if n and n["closed"]["rps"]:
            x = gr / n["closed"]["rps"]
            row(t_nginx, f"{x:.2f}× ({gr:,.0f} vs {n['closed']['rps']:,.0f} req/s{per_round(ws, 'nginx')}"
                f"{errors(g)})", "met" if x >= goal else short_of(x, goal))
            if w == "allowed":
                gc, nc = g["closed"]["cpu_us_per_req"], n["closed"]["cpu_us_per_req"]
                if gc is None or nc is None:
                    T.append(("allowed sends: proxy CPU per request ≤ nginx's (c=32)", "not measured", "-"))
                else:
                    row("allowed sends: proxy CPU per request ≤ nginx's (c=32)",
                        f"{gc:.1f} vs {nc:.1f} µs", "met" if gc <= nc else over(gc, nc, " µs"))
        else:
            T.append((t_nginx, "not measured (no nginx figure)", "-"))
            if w == "allowed":
                T.append(("allowed sends: proxy CPU per request ≤ nginx's (c=32)", "not measured (no nginx figure)", "-"))
        lua = ws.get("nginx+lua")
        if lua and lua["closed"]["rps"]:
            x = gr / lua["closed"]["rps"]
            row(t_lua, f"{x:.2f}× ({gr:,.0f} vs {lua['closed']['rps']:,.0f} req/s{per_round(ws, 'nginx+lua')})",
                "met" if x > 1.0 else short_of(x, 1.0, strict=True))
        else:
            T.append((t_lua, "not measured (no nginx+lua figure)", "-"))

    # Memory per tracked number (bench/memory, with --memory).
    t_mem = "memory ≤ 100 bytes per tracked number, adaptive tables included (bench/memory, 1M numbers)"
    one_m = next((m for m in mem[1:] if m["checkpoint"] == 1_000_000), None)
    if one_m:
        per = one_m.get("rss_over_baseline", one_m["rss_bytes"] - mem[0]["rss_bytes"]) / one_m["checkpoint"]
        row(t_mem, f"{per:,.0f} bytes ((RSS at 1M − RSS before the first send) / 1M: "
            f"{one_m['rss_bytes'] / 2**20:.1f} − {mem[0]['rss_bytes'] / 2**20:.1f} MiB); adaptive tables at 1M "
            f"(pending / sender pairs / conversions): {adaptive_tables(one_m)}",
            "met" if per <= 100 else over(per, 100, " bytes", nd=0))
    else:
        T.append((t_mem, "not measured (bench/run --memory)" if not mem
                  else "not measured (no 1,000,000 checkpoint in memory.jsonl)", "-"))

    # Redis: the work per judged send, from the guard+redis closed-loop runs.
    R = s.get("redis")
    redis_ws = ("allowed", "shadowed", "blocked")
    t_core = "one Redis core judges ≥ 30,000 sends/s (allowed sends)"
    t_ratio = "allowed sends: smsguard-redis ≥ 0.7× smsguard (memory store), c=32"
    if not R:
        why = "not measured (no smsguard-redis in this run: REDIS=0, or no guarded workload)"
        T.append(("Redis CPU ≤ 30 µs, ≤ 1 script and ≤ 1 round trip per judged send", why, "-"))
        T.append((t_core, why, "-"))
        T.append((t_ratio, why, "-"))
    else:
        for w in redis_ws:
            label = W23[w]
            if w not in W:
                T.append((f"{label}: Redis CPU, scripts and round trips per judged send",
                          f"not measured (workload {w} not run: WORKLOADS)", "-"))
                continue
            rw = W[w].get("redis_work", {}).get("closed")
            if not rw or not rw.get("judged"):
                T.append((f"{label}: Redis CPU, scripts and round trips per judged send",
                          "not measured (no judged sends counted on smsguard-redis)", "-"))
                continue
            ps, j = rw["per_send"], rw["judged"]
            cpu = ps.get("redis_cpu_us")
            t_cpu = f"{label}: Redis CPU ≤ 30 µs per judged send"
            if cpu is None:
                T.append((t_cpu, "not measured (results.json predates Redis CPU per judged send)", "-"))
            else:
                row(t_cpu, f"{cpu:.1f} µs ({rw['redis_cpu_s']:.2f} s of redis-server CPU for {j:,} judged sends, "
                    "c=32 runs)", "met" if cpu <= 30 else over(cpu, 30, " µs"))
            for k, what, t in (("scripts", "scripts (EVALSHA)", "≤ 1 script per judged send"),
                               ("round_trips", "round trips", "≤ 1 Redis round trip per judged send")):
                x = ps[k]
                ok = round(x, 2) <= 1.0
                row(f"{label}: {t}", f"{x:.3f} {what} per send ({rw['scripts_run' if k == 'scripts' else k]:,} "
                    f"for {j:,} judged sends)", "met" if ok else over(x, 1, f" {what}", nd=2))
        a = W.get("allowed", {})
        rw = a.get("redis_work", {}).get("closed")
        cpu = (rw or {}).get("per_send", {}).get("redis_cpu_us")
        if not rw or not rw.get("judged"):
            T.append((t_core, "not measured (allowed sends not run on smsguard-redis)", "-"))
        elif cpu is None:
            T.append((t_core, "not measured (results.json predates Redis CPU per judged send)", "-"))
        elif not rw["redis_cpu_s"]:
            T.append((t_core, "not measured (redis-server used no CPU tick in these runs)", "-"))
        else:
            rate = 1e6 / cpu
            c = a["guard+redis"]["closed"]
            busy = c.get("redis_cpu_busy")
            row(t_core, f"{rate:,.0f} sends/s, derived: 1 s ÷ {cpu:.1f} µs of Redis CPU per judged send "
                f"(measured at {c['rps']:,.0f} req/s with redis-server "
                + (f"{100 * busy:.0f}% of a core busy" if busy is not None else "busy ?")
                + ", not saturated: Redis's own limit was not driven)",
                "met" if rate >= 30_000 else f"**missed** by {30_000 / rate:.2f}× ({30_000 - rate:,.0f} sends/s short)")
        g, gr = a.get("guard"), a.get("guard+redis")
        if g and gr and g["closed"]["rps"]:
            x = gr["closed"]["rps"] / g["closed"]["rps"]
            cb = gr["closed"].get("client_side_cpu_busy")
            rounds = a.get("ratios", {}).get("redis/guard per round")
            cond = ("Redis shares CPU 0 with the load generator and the mock"
                    + (f" (the three kept CPU 0 {100 * cb:.0f}% busy)" if cb is not None else "")
                    + ", not a core of its own as the target says")
            measured = (f"{x:.2f}× ({gr['closed']['rps']:,.0f} vs {g['closed']['rps']:,.0f} req/s"
                        + (f"; per round {', '.join(f'{v:.2f}' for v in rounds)}" if rounds and len(rounds) > 1 else "")
                        + f"{errors(gr)}); {cond}")
            row(t_ratio, measured, "met" if x >= 0.7 else
                short_of(x, 0.7) + " with Redis on the generator's core; on a core of its own: not measured")
        else:
            T.append((t_ratio, "not measured (allowed sends not run on both smsguard and smsguard-redis)", "-"))
    t_cluster = "a 3-master Redis Cluster judges ≥ 2.5× one master"
    one = next((r for r in scaling if r.get("masters") == 1), None)
    three = next((r for r in scaling if r.get("masters") == 3), None)
    if not (one and three):
        T.append((t_cluster, "not measured (no redis-scaling.jsonl with both runs: REDIS=0, or "
                  "cargo bench --bench redis_memory failed; see redis-scaling.log)", "-"))
    else:
        x = three["sends_per_busiest_core_second"] / one["sends_per_busiest_core_second"]
        nodes = " / ".join(f"{c:.1f}" for c in three["redis_cpu_us_per_send_per_node"])
        row(t_cluster, f"{x:.2f}×, derived from CPU: the busiest master judges "
            f"{three['sends_per_busiest_core_second']:,.0f} sends per second of its CPU, one Redis "
            f"{one['sends_per_busiest_core_second']:,.0f} (Redis CPU per send: one Redis "
            f"{one['redis_cpu_us_per_send']:.1f} µs; the masters {nodes} µs, {three['scripts_per_send']:.2f} scripts "
            f"per send there). `cargo bench --bench redis_memory`, {one['numbers']:,} new numbers each, the load "
            "in the bench's process on the same 2 CPUs as every node: CPU per send, not throughput, is compared",
            "met" if x >= 2.5 else short_of(x, 2.5))
    return T


def targets_23_section(s, mem, run, scaling):
    adaptive, policy = policy_check(run)
    L = ["### Targets (issue 23)\n"]
    L.append(f"All from this run of bench/run: {s['rounds']} round(s), closed loop wrk -t1 -c32 for "
             f"{s['closed_seconds']} s per measurement; smsguard (`guard`, default workers) and each peer alone on "
             "CPU 1, the load generator and the mock on CPU 0 (and the Redis of smsguard-redis there too); ratios "
             "are of medians over the rounds. Machine not idle before "
             f"{s['not_idle_before']} of {s['measurements']} measurements; other processes used "
             f"{100 * (s['other_cpu_share_median'] or 0):.0f}% (median), {100 * s['other_cpu_share_max']:.0f}% (max) "
             "of one CPU during them"
             + (". **Fewer than 3 rounds: a check that the bench runs, not figures to act on.**"
                if s["rounds"] < 3 else "."))
    L.append(policy)
    L.append(logging_text(s) + "\n")
    L.append("| target (issue 23) | measured | |")
    L.append("|---|---|---|")
    for t in targets_23(s, mem, adaptive, scaling):
        L.append(f"| {t[0]} | {t[1]} | {t[2]} |")
    L.append("")
    L.append("Met or missed by the figure of this run; \"by N×\" is the figure over its limit, \"by 0.NN×\" a "
             "ratio's shortfall (and the throughput gain it needs). Scripts and round trips per judged send are "
             "compared at two decimals, and count Redis's background work (the mirror of shared blocks each "
             "near_cache, the batched XADDs of the fleet log, shadow fakes written for other replicas); Redis CPU "
             "is redis-server's utime + stime from /proc over the c=32 runs of smsguard-redis, with its network "
             "I/O. Blocked sends (`blocked`) are sends under an admin block (prefix:8=+16462001, action shadow) "
             "that nginx and nginx+lua forward (nginx+lua answers a number's 6th+ send in the hour itself).\n")
    return L


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
        L.append("| distinct numbers | RSS | peak RSS | counters | backoffs | blocks | offences | "
                 "adaptive: pending / sender pairs / conversions | evicted while live | classifier cache | "
                 "allowed / shadowed / rejected | time | within bounds |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
        for m in mem[1:]:
            L.append(f"| {m['checkpoint']:,} | {m['rss_bytes'] / 2**20:.0f} MB | {m['peak_rss_bytes'] / 2**20:.0f} MB | "
                     f"{m['counters']:,} | {m['backoffs']:,} | {m['blocks']:,} | {m['offences']:,} | "
                     f"{adaptive_tables(m)} | "
                     f"{m['evicted_live']:,} | {m['classifier_cached']:,} | "
                     f"{m['allowed']:,} / {m['shadowed']:,} / {m['rejected']:,} | {m['seconds']:.0f} s | "
                     f"{'yes' if m['within_bounds'] else 'NO'} |")
        L.append("")

    # Targets of issue 13 (resolved), kept to compare with earlier runs;
    # then those of issue 23, last, where bench/run's output ends.
    L.append("### Targets (issue 13, resolved: kept to compare with earlier runs)\n")
    L.append("smsguard (`guard`: defaults, decision log at info to a file) against nginx proxy_pass (access log "
             "on, to a file), both on CPU 1 alone; medians over the rounds of this run. \"Added\" latency is over "
             "`direct` (no proxy); a \"saturated\" fixed-rate run fell behind its rate, so its latency is queueing.\n")
    L.append("| target | measured | |")
    L.append("|---|---|---|")
    for t in targets(s, mem):
        L.append(f"| {t[0]} | {t[1]} | {t[2]} |")
    L.append("")
    scaling = []
    if (run / "redis-scaling.jsonl").exists():
        scaling = [json.loads(l) for l in (run / "redis-scaling.jsonl").read_text().splitlines()
                   if l.startswith("{")]
    L += targets_23_section(s, mem, run, scaling)
    print("\n".join(L))


if __name__ == "__main__":
    main()
