#!/usr/bin/env python3
"""The HTTP comparison of bench/run: smsguard against nginx proxy_pass and
against no proxy at all, on 127.0.0.1, in one run. Start it with bench/run
(which installs and builds what it needs); this file assumes both are done.

    python3 bench/harness.py --loadgen PATH [--rounds 5] [--out DIR]

Layout (2 CPUs):
  CPU 0: the mock Twilio (nginx, `return 201`), the load generator
  CPU 1: the proxy under test, alone: nginx (1 worker) or smsguard (1 worker)

Targets, interleaved in rounds (order rotated every round):
  direct   client -> mock                 (the floor: no proxy)
  nginx    client -> nginx proxy_pass -> mock (upstream keepalive 64)
  guard    client -> smsguard -> mock     (bench/smsguard.toml, log level warn)
  guard+info (allowed sends, closed loop only) smsguard with SMSGUARD_LOG=info
           and stderr to /dev/null: the cost of one decision event per send

Per target, workload and round:
  closed   wrk -t1 -c32 for --closed seconds: throughput; proxy CPU per request
           at saturation; proxy RSS after the run
  R/s      loadgen (benches/loadgen.rs) at a fixed rate for --fixed seconds,
           32 connections: p50/p99 latency; proxy CPU per request
Before each measurement the harness waits until the machine is idle (CPU
idle > 90% over --idle seconds, at most --idle-timeout) and records whether it
was, and how much CPU processes other than ours used during the measurement.

Every figure in the report is computed from this run's measurements; raw
results go to OUT/raw.jsonl, the summary to OUT/results.json and
OUT/results.md.
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MOCK_PORT, PROXY_PORT, GUARD_PORT, GUARD_INFO_PORT, STATUS_PORT = 18081, 18082, 18083, 18084, 18089
CLIENT_CPU, PROXY_CPU = "0", "1"
TICK = os.sysconf("SC_CLK_TCK")
WORKLOADS = ["allowed", "shadowed", "get"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- processes

def cpu_seconds(pids):
    """utime + stime of the given processes (all their threads), seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICK


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy():
    """(busy, total) CPU seconds of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return (total - idle) / TICK, total / TICK


def wait_idle(window, timeout):
    """Waits until the machine's CPU idle > 90% over `window` seconds.
    Returns (was_idle, idle_fraction_of_last_window, seconds_waited)."""
    start = time.monotonic()
    frac = 0.0
    while True:
        b0, t0 = machine_busy()
        time.sleep(window)
        b1, t1 = machine_busy()
        frac = 1.0 - (b1 - b0) / max(t1 - t0, 1e-9)
        waited = time.monotonic() - start
        if frac > 0.90:
            return True, frac, waited
        if waited >= timeout:
            return False, frac, waited


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port, proc, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: {what} exited with {proc.returncode} before listening on {port}")
        if port_open(port):
            return
        time.sleep(0.05)
    sys.exit(f"bench: {what} did not listen on 127.0.0.1:{port} within {timeout}s")


class Servers:
    """Everything this harness started, stopped by PID at the end."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, cpu, port, env=None, stderr=subprocess.DEVNULL):
        full = ["taskset", "-c", cpu] + argv
        p = subprocess.Popen(full, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                             start_new_session=True)
        self.procs.append((name, p))
        wait_port(port, p, name)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = [(n, q) for n, q in self.procs if q is not p]

    def stop_all(self):
        for _, p in reversed(list(self.procs)):
            self.stop(p)


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def mock_requests():
    """Requests the mock has served (nginx stub_status), not counting this one."""
    with urllib.request.urlopen(f"http://127.0.0.1:{STATUS_PORT}/status", timeout=5) as r:
        text = r.read().decode()
    return int(text.splitlines()[2].split()[2])


# ---------------------------------------------------------------- load

def run_wrk(port, workload, offset, seconds):
    argv = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c32", f"-d{seconds}s", "--latency",
            "-s", str(BENCH / "wrk/send.lua"), f"http://127.0.0.1:{port}", "--", workload,
            str(offset)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    out = r.stdout
    if r.returncode != 0:
        sys.exit(f"bench: wrk failed ({r.returncode}): {r.stderr}{out}")

    def grab(pattern, conv=float, default=0):
        m = re.search(pattern, out)
        return conv(m.group(1)) if m else default

    def lat_us(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]

    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {
        "requests": grab(r"(\d+) requests in", int),
        "rps": grab(r"Requests/sec:\s+([\d.]+)"),
        "non_2xx": grab(r"Non-2xx or 3xx responses: (\d+)", int),
        "socket_errors": errors,
        "p50_us": lat_us("50"),
        "p99_us": lat_us("99"),
    }


def run_loadgen(loadgen, port, workload, offset, rate, seconds):
    argv = ["taskset", "-c", CLIENT_CPU, loadgen, "--addr", f"127.0.0.1:{port}", "--workload",
            workload, "--rate", str(rate), "--duration", str(seconds), "--connections", "32",
            "--offset", str(offset)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        sys.exit(f"bench: loadgen failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)


def client_cpu():
    ru = os.times()
    return ru.children_user + ru.children_system


def measure(kind, fn, proxy_pids):
    """Runs one measurement and accounts for the CPU of everything around it."""
    m0 = mock_requests()
    c0 = cpu_seconds(proxy_pids) if proxy_pids else 0.0
    k0 = cpu_seconds(MOCK_PIDS)
    l0 = client_cpu()
    b0, _ = machine_busy()
    t0 = time.monotonic()
    res = fn()
    wall = time.monotonic() - t0
    b1, _ = machine_busy()
    res["wall_s"] = wall
    res["proxy_cpu_s"] = (cpu_seconds(proxy_pids) - c0) if proxy_pids else None
    res["mock_cpu_s"] = cpu_seconds(MOCK_PIDS) - k0
    res["client_cpu_s"] = client_cpu() - l0
    ours = (res["proxy_cpu_s"] or 0) + res["mock_cpu_s"] + res["client_cpu_s"]
    res["other_cpu_s"] = max(0.0, (b1 - b0) - ours)
    res["mock_requests"] = mock_requests() - m0 - 1
    return res


# ---------------------------------------------------------------- summary

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--smsguard", default=str(ROOT / "target/release/smsguard"))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 5)))
    ap.add_argument("--closed", type=int, default=int(os.environ.get("CLOSED_SECONDS", 3)))
    ap.add_argument("--fixed", type=int, default=int(os.environ.get("FIXED_SECONDS", 3)))
    ap.add_argument("--rates", default=os.environ.get("RATES", "5000,15000"))
    ap.add_argument("--idle", type=float, default=0.5)
    ap.add_argument("--idle-timeout", type=float, default=5.0)
    ap.add_argument("--no-info", action="store_true", help="skip the guard+info variant")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rates = [int(x) for x in a.rates.split(",")]
    workloads = a.workloads.split(",")

    out = Path(a.out or BENCH / "out" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")).resolve()
    (out / "tmp").mkdir(parents=True, exist_ok=True)
    raw = open(out / "raw.jsonl", "w")
    for port in (MOCK_PORT, PROXY_PORT, GUARD_PORT, GUARD_INFO_PORT, STATUS_PORT):
        if port_open(port):
            sys.exit(f"bench: 127.0.0.1:{port} is already in use; stop what listens there first")
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs at least 2 CPUs (proxy alone on CPU 1, client and mock on CPU 0)")

    for name in ("mock", "proxy"):
        text = (BENCH / f"nginx/{name}.conf").read_text().replace("@RUN@", str(out))
        (out / f"{name}.conf").write_text(text)
    guard_conf = BENCH / "smsguard.toml"
    info_conf = out / "smsguard-info.toml"
    info_conf.write_text(guard_conf.read_text().replace(
        f'addr = "127.0.0.1:{GUARD_PORT}"', f'addr = "127.0.0.1:{GUARD_INFO_PORT}"'))

    machine = {
        "nproc": os.cpu_count(),
        "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                           if l.startswith("model name")), "?"),
        "kernel": os.uname().release,
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
                .splitlines() or ["?"])[0],
        "commit": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                 capture_output=True, text=True).stdout.strip() or "?",
    }
    log(f"machine: {machine}")
    log(f"output: {out}")

    servers = Servers()
    global MOCK_PIDS
    started_at = time.monotonic()
    try:
        mock = servers.start("mock nginx", ["nginx", "-e", str(out / "mock-error.log"), "-p",
                                            str(out), "-c", str(out / "mock.conf")],
                             CLIENT_CPU, MOCK_PORT, stderr=open(out / "mock-stderr.log", "w"))
        wait_port(STATUS_PORT, mock, "mock status")
        time.sleep(0.3)
        MOCK_PIDS = [mock.pid] + children(mock.pid)
        proxy = servers.start("nginx proxy", ["nginx", "-e", str(out / "proxy-error.log"), "-p",
                                              str(out), "-c", str(out / "proxy.conf")],
                              PROXY_CPU, PROXY_PORT, stderr=open(out / "proxy-stderr.log", "w"))
        time.sleep(0.3)
        nginx_workers = children(proxy.pid)
        if len(nginx_workers) != 1:
            sys.exit(f"bench: expected one nginx proxy worker, found {nginx_workers}")
        nginx_pids = [proxy.pid] + nginx_workers

        def start_guard(info):
            env = dict(os.environ)
            env.pop("SMSGUARD_LOG", None)
            # listen.workers is in the policy; the env makes sure of one worker
            # thread whatever version of `serve` reads it.
            env["TOKIO_WORKER_THREADS"] = "1"
            if info:
                env["SMSGUARD_LOG"] = "info"
                conf, port, err = info_conf, GUARD_INFO_PORT, subprocess.DEVNULL
            else:
                conf, port = guard_conf, GUARD_PORT
                err = open(out / "guard-stderr.log", "a")
            return servers.start("smsguard" + (" (info)" if info else ""),
                                 [a.smsguard, "serve", "--config", str(conf)],
                                 PROXY_CPU, port, env=env, stderr=err)

        results = []
        offset = {w: 0 for w in WORKLOADS}
        sent_to_guard = {}

        for w in workloads:
            guard = start_guard(False)
            targets = {"direct": (MOCK_PORT, None), "nginx": (PROXY_PORT, nginx_pids),
                       "guard": (GUARD_PORT, [guard.pid])}
            info = None
            if w == "allowed" and not a.no_info:
                info = start_guard(True)
                targets["guard+info"] = (GUARD_INFO_PORT, [info.pid])
            rss_idle = {"guard": status_kb(guard.pid, "VmRSS:"),
                        "nginx": status_kb(nginx_workers[0], "VmRSS:")}
            sent_to_guard[w] = {t: 0 for t in targets if t.startswith("guard")}
            log(f"workload {w}: warm-up (1 s per target)")
            for t, (port, _) in targets.items():
                r = run_wrk(port, w, offset[w], 1)
                offset[w] += r["requests"] + 1000
                if t in sent_to_guard[w]:
                    sent_to_guard[w][t] += r["requests"]
            names = list(targets)
            for rnd in range(a.rounds):
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for t in order:
                    port, pids = targets[t]
                    kinds = [("closed", None)] + [(f"{r}/s", r) for r in rates]
                    if t == "guard+info":
                        kinds = kinds[:1]  # closed loop only: the cost of logging
                    for kind, rate in kinds:
                        idle, idle_frac, waited = wait_idle(a.idle, a.idle_timeout)
                        if rate is None:
                            res = measure(kind, lambda: run_wrk(port, w, offset[w], a.closed), pids)
                            n = res["requests"]
                        else:
                            res = measure(kind, lambda: run_loadgen(a.loadgen, port, w, offset[w],
                                                                    rate, a.fixed), pids)
                            n = res["scheduled"]
                        offset[w] += n + 1000
                        if t in sent_to_guard[w]:
                            sent_to_guard[w][t] += n
                        res.update(workload=w, target=t, kind=kind, round=rnd + 1,
                                   idle_before=idle, idle_fraction=round(idle_frac, 3),
                                   idle_waited_s=round(waited, 2))
                        if pids:
                            res["rss_kb"] = status_kb(pids[-1], "VmRSS:")
                            res["pss_kb_all"] = sum(pss_kb(p) for p in pids)
                            res["guard_sends_so_far"] = sent_to_guard[w].get(t)
                        raw.write(json.dumps(res) + "\n")
                        raw.flush()
                        results.append(res)
                        done = res.get("requests", res.get("completed"))
                        rate_s = res.get("rps") or res.get("achieved_rate")
                        cpu = res["proxy_cpu_s"]
                        log(f"{w:8} r{rnd + 1} {t:10} {kind:8} {fmt(rate_s, 0):>9} req/s"
                            + (f"  proxy cpu {1e6 * cpu / max(done, 1):6.1f} us/req" if cpu is not None else "")
                            + (f"  p50 {res['service_us']['p50']:.0f} us p99 {res['service_us']['p99']:.0f} us"
                               if rate else "")
                            + ("" if idle else f"  (machine not idle: {idle_frac:.0%} idle)"))
            # Idle RSS at the start, and after everything of this workload.
            results.append({"workload": w, "target": "guard", "kind": "rss_start",
                            "rss_kb": rss_idle["guard"]})
            results.append({"workload": w, "target": "nginx", "kind": "rss_start",
                            "rss_kb": rss_idle["nginx"]})
            servers.stop(guard)
            if info is not None:
                servers.stop(info)
    finally:
        servers.stop_all()
    elapsed = time.monotonic() - started_at
    summary = summarize(results, machine, a, rates, workloads, sent_to_guard, elapsed)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    md = render(summary)
    (out / "results.md").write_text(md)
    print(md)
    log(f"wrote {out}/results.md, results.json, raw.jsonl ({elapsed:.0f} s)")


MOCK_PIDS = []


def summarize(results, machine, a, rates, workloads, sent_to_guard, elapsed):
    def sel(w, t, kind):
        return [r for r in results if r["workload"] == w and r["target"] == t and r["kind"] == kind]

    s = {"machine": machine, "elapsed_s": round(elapsed), "rounds": a.rounds,
         "closed_seconds": a.closed, "fixed_seconds": a.fixed, "rates": rates,
         "sent_to_guard": sent_to_guard, "workloads": {}}
    measurements = [r for r in results if "idle_before" in r]
    s["not_idle_before"] = sum(1 for r in measurements if not r["idle_before"])
    s["measurements"] = len(measurements)
    s["other_cpu_share_max"] = max((r["other_cpu_s"] / r["wall_s"] for r in measurements), default=0)
    s["other_cpu_share_median"] = med([r["other_cpu_s"] / r["wall_s"] for r in measurements])
    for w in workloads:
        ws = {}
        targets = sorted({r["target"] for r in results if r["workload"] == w and "idle_before" in r},
                         key=["direct", "nginx", "guard", "guard+info"].index)
        for t in targets:
            c = sel(w, t, "closed")
            ts = {"closed": {
                "rps": med([r["rps"] for r in c]),
                "rps_all": [round(r["rps"]) for r in c],
                "cpu_us_per_req": med([1e6 * r["proxy_cpu_s"] / max(r["requests"], 1) for r in c])
                if c and c[0]["proxy_cpu_s"] is not None else None,
                "proxy_cpu_busy": med([r["proxy_cpu_s"] / r["wall_s"] for r in c])
                if c and c[0]["proxy_cpu_s"] is not None else None,
                "client_side_cpu_busy": med([(r["mock_cpu_s"] + r["client_cpu_s"]) / r["wall_s"] for r in c]),
                "non_2xx": sum(r["non_2xx"] for r in c),
                "socket_errors": sum(r["socket_errors"] for r in c),
                "requests": sum(r["requests"] for r in c),
                "reached_mock": sum(r["mock_requests"] for r in c),
                "rss_kb_first": c[0].get("rss_kb") if c else None,
                "rss_kb_last": c[-1].get("rss_kb") if c else None,
                "pss_kb_first": c[0].get("pss_kb_all") if c else None,
                "guard_sends_at_first": c[0].get("guard_sends_so_far") if c else None,
                "guard_sends_at_last": c[-1].get("guard_sends_so_far") if c else None,
            }}
            start = [r for r in results if r["workload"] == w and r["target"] == t and r["kind"] == "rss_start"]
            ts["rss_kb_idle_start"] = start[0]["rss_kb"] if start else None
            for rate in rates:
                f = sel(w, t, f"{rate}/s")
                if not f:
                    continue
                ts[f"{rate}/s"] = {
                    "achieved": med([r["achieved_rate"] for r in f]),
                    "p50_us": med([r["service_us"]["p50"] for r in f]),
                    "p99_us": med([r["service_us"]["p99"] for r in f]),
                    "p999_us": med([r["service_us"]["p999"] for r in f]),
                    "corrected_p50_us": med([r["corrected_us"]["p50"] for r in f]),
                    "corrected_p99_us": med([r["corrected_us"]["p99"] for r in f]),
                    "late_over_1ms": sum(r["late_over_1ms"] for r in f),
                    "cpu_us_per_req": med([1e6 * r["proxy_cpu_s"] / max(r["completed"], 1) for r in f])
                    if f[0]["proxy_cpu_s"] is not None else None,
                    "errors": sum(r["errors"] + r["other_status"] for r in f),
                    "completed": sum(r["completed"] for r in f),
                    "from_mock": sum(r["from_mock"] for r in f),
                    "reached_mock": sum(r["mock_requests"] for r in f),
                }
            ws[t] = ts
        # Ratios and added latency.
        d, n, g = ws.get("direct"), ws.get("nginx"), ws.get("guard")
        if d and n and g:
            per_round = {}
            for t in ("nginx", "guard"):
                per_round[t] = {r["round"]: r["rps"] for r in sel(w, t, "closed")}
            direct_r = {r["round"]: r["rps"] for r in sel(w, "direct", "closed")}
            ratios = {
                "guard/direct": g["closed"]["rps"] / d["closed"]["rps"],
                "nginx/direct": n["closed"]["rps"] / d["closed"]["rps"],
                "guard/nginx": g["closed"]["rps"] / n["closed"]["rps"],
                "guard/nginx per round": [round(per_round["guard"][k] / per_round["nginx"][k], 3)
                                          for k in sorted(per_round["guard"]) if k in per_round["nginx"]],
                "guard/direct per round": [round(per_round["guard"][k] / direct_r[k], 3)
                                           for k in sorted(per_round["guard"]) if k in direct_r],
            }
            for rate in rates:
                key = f"{rate}/s"
                if key in d and key in n and key in g:
                    for t, v in (("nginx", n), ("guard", g)):
                        ratios[f"added p50 {key} {t}"] = v[key]["p50_us"] - d[key]["p50_us"]
                        ratios[f"added p99 {key} {t}"] = v[key]["p99_us"] - d[key]["p99_us"]
            ws["ratios"] = ratios
        s["workloads"][w] = ws
    return s


def saturated(f, rate):
    """A fixed-rate run the target could not keep up with: its latencies
    are queueing, not service."""
    return f["achieved"] < 0.98 * rate or f["late_over_1ms"] > 0.05 * f["completed"]


def render(s):
    m = s["machine"]
    L = []
    L.append("## smsguard vs nginx proxy_pass (bench/run)\n")
    L.append(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}; {m['nginx']}; "
             f"{m['wrk'].split(' Copyright')[0]}; smsguard at {m.get('commit', '?')}.")
    L.append(f"Rounds: {s['rounds']} (medians below); closed loop: wrk -t1 -c32, {s['closed_seconds']} s; "
             f"fixed rate: loadgen, 32 connections, {s['fixed_seconds']} s at {', '.join(str(r) for r in s['rates'])} req/s. "
             f"Proxy alone on CPU 1; wrk/loadgen and the mock (nginx `return`) on CPU 0. Run took {s['elapsed_s']} s.")
    L.append("Latency is the loadgen's service time (request written -> answer read), median over rounds; "
             "'saturated': the target fell behind the fixed rate (achieved < 98%, or > 5% of requests sent > 1 ms late because all 32 connections were busy).")
    L.append(f"Machine not idle before {s['not_idle_before']} of {s['measurements']} measurements; "
             f"CPU used by other processes during measurements: median {100 * (s['other_cpu_share_median'] or 0):.0f}%, "
             f"max {100 * s['other_cpu_share_max']:.0f}% of one CPU.\n")
    names = {"allowed": "allowed sends (distinct US numbers, full policy, forwarded)",
             "shadowed": "shadowed sends (+99899394…, geo block, answered by the guard)",
             "get": "GET Message (not a send, streamed through)"}
    for w, ws in s["workloads"].items():
        L.append(f"### {names.get(w, w)}\n")
        rates = [k for k in ws.get("guard", {}) if k.endswith("/s")]
        head = "| target | req/s (c=32) | proxy CPU busy | proxy CPU µs/req (c=32) |"
        sep = "|---|---:|---:|---:|"
        for r in rates:
            head += f" {r}: p50 / p99 µs | {r}: CPU µs/req |"
            sep += "---:|---:|"
        head += " RSS after 1st c=32 run |"
        sep += "---:|"
        L.append(head)
        L.append(sep)
        for t, ts in ws.items():
            if t == "ratios":
                continue
            c = ts["closed"]
            busy = "-" if c["proxy_cpu_busy"] is None else f"{100 * c['proxy_cpu_busy']:.0f}%"
            row = f"| {t} | {fmt(c['rps'], 0)} | {busy} | {fmt(c['cpu_us_per_req'])} |"
            for r in rates:
                f = ts.get(r)
                if f:
                    sat = " (saturated)" if saturated(f, int(r[:-2])) else ""
                    row += f" {fmt(f['p50_us'], 0)} / {fmt(f['p99_us'], 0)}{sat} | {fmt(f['cpu_us_per_req'])} |"
                else:
                    row += " - | - |"
            rss = c["rss_kb_first"]
            row += f" {'-' if rss is None else f'{rss / 1024:.1f} MB'} |"
            L.append(row)
        r = ws.get("ratios")
        if r:
            L.append("")
            L.append(f"Throughput: guard/direct **{r['guard/direct']:.2f}**, nginx/direct {r['nginx/direct']:.2f}, "
                     f"guard/nginx **{r['guard/nginx']:.2f}** (per round: {', '.join(f'{x:.2f}' for x in r['guard/nginx per round'])}).")
            added = [f"{k.split()[2]} {k.split()[3]} {v:+.0f} µs" for k, v in r.items()
                     if k.startswith("added p50")]
            added99 = [f"{k.split()[2]} {k.split()[3]} {v:+.0f} µs" for k, v in r.items()
                       if k.startswith("added p99")]
            L.append(f"Added latency over direct, p50: {', '.join(added)}; p99: {', '.join(added99)}.")
        g = ws.get("guard", {})
        checks = []
        for t, ts in ws.items():
            if t == "ratios":
                continue
            c = ts["closed"]
            fm = [(k, v) for k, v in ts.items() if k.endswith("/s")]
            errs = c["non_2xx"] + c["socket_errors"] + sum(v["errors"] for _, v in fm)
            reached = c["reached_mock"] + sum(v["reached_mock"] for _, v in fm)
            total = c["requests"] + sum(v["completed"] for _, v in fm)
            late = sum(v["late_over_1ms"] for _, v in fm)
            checks.append(f"{t}: {fmt(total)} answers, {fmt(errs)} errors/non-2xx, "
                          f"{fmt(reached)} reached the mock, {fmt(late)} fixed-rate requests sent >1 ms late")
        L.append("Checks: " + "; ".join(checks) + ".")
        if g:
            c = g["closed"]
            L.append(f"Guard RSS: {fmt((g['rss_kb_idle_start'] or 0) / 1024)} MB at start, "
                     f"{fmt((c['rss_kb_first'] or 0) / 1024)} MB after the first c=32 run "
                     f"({fmt(c['guard_sends_at_first'])} requests seen), "
                     f"{fmt((c['rss_kb_last'] or 0) / 1024)} MB after the last ({fmt(c['guard_sends_at_last'])} requests seen).\n")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
