#!/usr/bin/env python3
"""The HTTP comparison of bench/run: smsguard against nginx proxy_pass,
HAProxy, the nginx + Lua guard a user would build instead, and no proxy at
all, on 127.0.0.1, in one run. Start it with bench/run (which installs and
builds what it needs); this file assumes both are done.

    python3 bench/harness.py --loadgen PATH [--rounds 5] [--out DIR]
                             [--workloads allowed,shadowed,blocked,get] [--no-redis]
                             [--no-quiet] [--no-two-core]

Knobs also read from the environment (bench/run passes it on): ROUNDS,
CLOSED_SECONDS, FIXED_SECONDS (each measurement, default 3), RATES
(default 5000,15000), WORKLOADS, REDIS=0 (no guard+redis), REDIS_FIXED=0
(guard+redis closed-loop only), TWO_CORE=0 (no two-core section).

Every proxy runs its defaults and logs each request to a file in the run's
directory, as it would be deployed (issue 13):
  nginx        access log on, default `combined` format (OUT/proxy-access.log)
  haproxy      `option httplog`, `log stdout format raw`, stdout to a file
               (OUT/haproxy-access.log)
  nginx+lua    access log on (OUT/lua-access.log)
  smsguard     listen.workers at its default (0: one per CPU it may run on:
               pinned to one CPU, it runs one), log.level "info" (one decision
               event per send), stderr to a file (OUT/guard-stderr.log, ...);
               SMSGUARD_LOG and TOKIO_WORKER_THREADS are removed from its
               environment so the policy decides
The report counts the lines each log got per workload against the requests
answered (warm-ups included).

Layout (2 CPUs):
  CPU 0: the mock Twilio (nginx, `return 201`), the load generator, and the
         redis-server of the guard+redis variant (so Redis shares the
         generator's core, not the proxy's)
  CPU 1: the proxy under test, alone: nginx (1 worker), haproxy (nbthread 1),
         nginx+lua (1 worker) or smsguard (taskset: one CPU, so one worker)

Targets, interleaved in rounds (order rotated every round):
  direct   client -> mock                 (the floor: no proxy)
  nginx    client -> nginx proxy_pass -> mock (bench/nginx/proxy.conf:
           1 worker, upstream keepalive 64)
  haproxy  client -> haproxy -> mock      (bench/haproxy/proxy.cfg: mode http,
           nbthread 1, keep-alive both sides, http-reuse always, server pool)
  nginx+lua client -> nginx + Lua -> mock (bench/nginx/lua.conf: the DIY guard:
           sends to +99899394... and the 6th+ send to a number within the
           hour (lua_shared_dict) answered with a fake Message, the rest
           proxied; GETs proxied)
  guard    client -> smsguard -> mock     (bench/smsguard.toml)
  guard-quiet (allowed sends, closed loop only) the same policy at log.level
           "warn": what the decision log costs
  guard+redis (guarded sends only: allowed, shadowed, blocked) smsguard with
           the same policy plus `[store] redis = ...`: its state shared in a
           redis-server the harness starts (127.0.0.1, free port, no
           persistence, its own directory, stopped by PID); emptied
           (FLUSHALL) before each workload, when both guards start afresh
  guard and guard+redis get an admin listener (`[admin]`, bearer token in
  $SMSGUARD_BENCH_ADMIN_TOKEN, random per run): the harness reads their
  /metrics around each measurement (judged sends, Redis calls and round
  trips, log lines dropped) and sets the blocks of the `blocked` workload
  through /api/blocks. nginx, haproxy and nginx+lua know nothing of those
  blocks: they forward `blocked` sends (nginx+lua answers a number itself
  once it has had 5 sends in the hour: the workload cycles 1,000 numbers).

Workloads (bench/wrk/send.lua; fixed-rate runs need benches/loadgen.rs to
know the workload, so `blocked` is measured closed-loop only):
  allowed  distinct valid US numbers, every stage runs, forwarded
  shadowed +99899394... (UZ), stopped by geo (never reaches the store)
  blocked  +16462001000..999 (US), stopped by an admin block on
           prefix:8=+16462001 (set on each guard before its warm-up)
  get      GET of one Message (not a send)
After the rounds of `blocked`, one probe on guard+redis alone: the same kind
of sends into a block with action reject (no shadow fake to share), to tell
the Redis work of judging a blocked send from that of sharing its fake.

Per target, workload and round (the order of targets rotated every round):
  closed   wrk -t1 -c32 for --closed seconds: throughput; proxy CPU per request
           at saturation; proxy RSS after the run
  R/s      loadgen (benches/loadgen.rs) at a fixed rate for --fixed seconds,
           32 connections: p50/p99 latency; proxy CPU per request
Before each measurement the harness waits until the machine is idle (CPU
idle > 90% over --idle seconds, at most --idle-timeout) and records whether it
was, and how much CPU processes other than ours used during the measurement.

Two cores, after the one-core rounds (allowed and get, closed loop only, the
same number of rounds, interleaved): nginx with worker_processes 2
(127.0.0.1:18091) against smsguard with listen.workers = 2 (18092), each
unpinned (taskset 0-1), logging as above; the mock and wrk stay on CPU 0, so
the proxy shares that core with them.

Every figure in the report is computed from this run's measurements; raw
results go to OUT/raw.jsonl, the summary to OUT/results.json and
OUT/results.md.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MOCK_PORT, PROXY_PORT, GUARD_PORT, GUARD_QUIET_PORT, STATUS_PORT = 18081, 18082, 18083, 18084, 18089
GUARD_REDIS_PORT, GUARD_ADMIN_PORT, GUARD_REDIS_ADMIN_PORT = 18085, 18086, 18087
HAPROXY_PORT, LUA_PORT = 18088, 18090
# The two-core section: nginx with 2 workers, smsguard with 2 workers.
PROXY2_PORT, GUARD2_PORT = 18091, 18092
CLIENT_CPU, PROXY_CPU, BOTH_CPUS = "0", "1", "0-1"
TICK = os.sysconf("SC_CLK_TCK")
WORKLOADS = ["allowed", "shadowed", "blocked", "get"]
TARGETS = ["direct", "nginx", "haproxy", "nginx+lua", "guard", "guard-quiet", "guard+redis"]
# The peers smsguard is compared with, each logging every request.
PEERS = ["nginx", "haproxy", "nginx+lua"]
TWO_CORE_TARGETS = ["nginx-2cpu", "guard-2cpu"]
TWO_CORE_WORKLOADS = ["allowed", "get"]
# Each target's per-request log, in the run's directory.
LOGS = {"nginx": "proxy-access.log", "haproxy": "haproxy-access.log", "nginx+lua": "lua-access.log",
        "guard": "guard-stderr.log", "guard-quiet": "guard-quiet-stderr.log",
        "guard+redis": "guard-redis-stderr.log", "nginx-2cpu": "proxy2-access.log",
        "guard-2cpu": "guard-2cpu-stderr.log"}
GUARD_PORTS = {"guard": GUARD_PORT, "guard-quiet": GUARD_QUIET_PORT, "guard+redis": GUARD_REDIS_PORT,
               "guard-2cpu": GUARD2_PORT}
NGINX_MODULES = ["/usr/lib/nginx/modules/ndk_http_module.so",
                 "/usr/lib/nginx/modules/ngx_http_lua_module.so"]
# Workloads benches/loadgen.rs knows (fixed-rate runs); the others run closed-loop only.
LOADGEN_WORKLOADS = {"allowed", "shadowed", "get"}
# Guarded sends: the workloads the guard+redis variant is measured on.
REDIS_WORKLOADS = {"allowed", "shadowed", "blocked"}
ADMIN_TOKEN_ENV = "SMSGUARD_BENCH_ADMIN_TOKEN"
# The `blocked` workload's numbers (+16462001000..999, bench/wrk/send.lua)
# under a block set by hand; the action is the policy's default (shadow).
BLOCK = {"key": "prefix:8", "value": "+16462001", "duration": "1h"}
# The probe after it: `blocked_reject` (+16462002...) under a rejecting block.
BLOCK_REJECT = {"key": "prefix:8", "value": "+16462002", "duration": "1h", "action": "reject"}


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


def start_mock(servers, out):
    """The mock Twilio (nginx `return`, bench/nginx/mock.conf) on CPU 0,
    its config and error log in `out`: the layout of bench/profile and
    bench/ab."""
    (out / "mock.conf").write_text((BENCH / "nginx/mock.conf").read_text().replace("@RUN@", str(out)))
    return servers.start("mock nginx", ["nginx", "-e", str(out / "mock-error.log"), "-p", str(out),
                                        "-c", str(out / "mock.conf")], CLIENT_CPU, MOCK_PORT)


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

    def start(self, name, argv, cpu, port, env=None, stderr=subprocess.DEVNULL,
              stdout=subprocess.DEVNULL):
        full = ["taskset", "-c", cpu] + argv
        p = subprocess.Popen(full, env=env, stdout=stdout, stderr=stderr,
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


def threads(pid):
    """{thread name: how many} of a process, from /proc (tokio's runtime
    workers are `tokio-rt-worker`; a single-threaded runtime runs on the
    main thread)."""
    names = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        names[name] = names.get(name, 0) + 1
    return dict(sorted(names.items()))


def log_size(path):
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_lines(path, start):
    """(lines, bytes) written to a log file since it was `start` bytes long."""
    lines = size = 0
    try:
        with open(path, "rb") as f:
            f.seek(start)
            while True:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                lines += chunk.count(b"\n")
                size += len(chunk)
    except OSError:
        pass
    return lines, size


def mock_requests():
    """Requests the mock has served (nginx stub_status), not counting this one."""
    with urllib.request.urlopen(f"http://127.0.0.1:{STATUS_PORT}/status", timeout=5) as r:
        text = r.read().decode()
    return int(text.splitlines()[2].split()[2])


def free_port():
    """A port free on 127.0.0.1 now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- redis, admin

def redis_cli(port, *args, timeout=30):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 or r.stdout.startswith(("ERR", "Could not connect")):
        sys.exit(f"bench: redis-cli {' '.join(args)} failed: {r.stderr}{r.stdout}")
    return r.stdout


def redis_info(port):
    """Counters of our redis-server: total_commands_processed, used_memory
    and the calls of each command (INFO commandstats, which counts the
    commands scripts run too, each under its own name)."""
    text = redis_cli(port, "INFO", "stats", "commandstats", "memory")
    info = {"commands": {}, "usec": {}}
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
        if m:
            info["commands"][m.group(1)] = int(m.group(2))
            info["usec"][m.group(1)] = int(m.group(3))
            continue
        for field in ("total_commands_processed", "used_memory", "keyspace_hits", "keyspace_misses"):
            if line.startswith(field + ":"):
                info[field] = int(line.split(":", 1)[1])
    return info


def admin(port, token, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def guard_metrics(port, token):
    """The counters of a guard's /metrics this harness reads."""
    status, text = admin(port, token, "GET", "/metrics")
    if status != 200:
        sys.exit(f"bench: GET /metrics on 127.0.0.1:{port}: {status} {text[:200]}")
    m = {"judged": 0, "by_stage": {}, "by_action": {}}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', name))
        if name.startswith("smsguard_sends_total{"):
            m["judged"] += int(v)
            stage = labels.get("stage", "?")
            m["by_stage"][stage] = m["by_stage"].get(stage, 0) + int(v)
            action = labels.get("action", "?")
            m["by_action"][action] = m["by_action"].get(action, 0) + int(v)
        elif name.startswith("smsguard_redis_total{"):
            m["redis_" + labels.get("what", "?")] = int(v)
        elif name.startswith("smsguard_store_sends_total{"):
            m["store_" + labels.get("judged", "?")] = int(v)
        elif name.startswith("smsguard_log_lines_dropped"):
            m["log_dropped"] = int(v)
    return m


def snapshot(admin_port, token, redis_port):
    s = {"guard": guard_metrics(admin_port, token)}
    if redis_port:
        s["redis"] = redis_info(redis_port)
    return s


def counts_delta(before, after):
    """What one guard (and its Redis) did between two snapshots."""
    def sub(a, b):
        out = {}
        for k, v in b.items():
            if isinstance(v, dict):
                out[k] = {kk: vv - a.get(k, {}).get(kk, 0) for kk, vv in v.items()
                          if vv - a.get(k, {}).get(kk, 0)}
            else:
                out[k] = v - a.get(k, 0)
        return out
    d = {"guard": sub(before["guard"], after["guard"])}
    if "redis" in after:
        r = sub(before["redis"], after["redis"])
        # The INFO that took `before` is counted in the delta (the one that
        # took `after` is not yet): it is ours, not the guard's work.
        ours = r["commands"].pop("info", 0)
        r["usec"].pop("info", None)
        r["total_commands_processed"] -= ours
        r["used_memory_after"] = after["redis"].get("used_memory")
        d["redis"] = r
    return d


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
    r0 = cpu_seconds(REDIS_PIDS)
    l0 = client_cpu()
    b0, _ = machine_busy()
    t0 = time.monotonic()
    res = fn()
    wall = time.monotonic() - t0
    b1, _ = machine_busy()
    res["wall_s"] = wall
    res["proxy_cpu_s"] = (cpu_seconds(proxy_pids) - c0) if proxy_pids else None
    res["mock_cpu_s"] = cpu_seconds(MOCK_PIDS) - k0
    res["redis_cpu_s"] = cpu_seconds(REDIS_PIDS) - r0
    res["client_cpu_s"] = client_cpu() - l0
    ours = ((res["proxy_cpu_s"] or 0) + res["mock_cpu_s"] + res["redis_cpu_s"]
            + res["client_cpu_s"])
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


def guard_configs(out, redis_url, two_core):
    """The guards' policies, generated from bench/smsguard.toml so the policy
    is written once: guard = it plus an admin listener; guard-quiet = it on
    another port (no admin) at log.level "warn"; guard+redis = guard's, on
    another port, with its own admin port and `redis = ...` in [store];
    guard-2cpu = it on another port with listen.workers = 2. Returns
    {target: path}."""
    base = (BENCH / "smsguard.toml").read_text()
    listen = f'addr = "127.0.0.1:{GUARD_PORT}"'
    if base.count(listen) != 1:
        sys.exit(f"bench: bench/smsguard.toml must hold `{listen}` once ([listen])")
    if re.search(r"(?m)^\[admin\]", base):
        sys.exit("bench: bench/smsguard.toml must not have an [admin] section: the harness adds its own")
    if re.search(r"(?m)^\s*workers\s*=", base):
        sys.exit("bench: bench/smsguard.toml must not set listen.workers: bench/run measures the default")
    level = re.compile(r'(?m)^level\s*=\s*"info".*$')
    if len(level.findall(base)) != 1:
        sys.exit('bench: bench/smsguard.toml must hold `level = "info"` once ([log]): the default, measured')

    def with_admin(text, port):
        return (text.rstrip("\n") + "\n\n# bench: added by bench/harness.py (metrics, /api/blocks)\n"
                f'[admin]\naddr = "127.0.0.1:{port}"\ntoken_env = "{ADMIN_TOKEN_ENV}"\n')

    def on_port(port):
        return base.replace(listen, f'addr = "127.0.0.1:{port}"')

    confs = {
        "guard": with_admin(base, GUARD_ADMIN_PORT),
        "guard-quiet": level.sub('level = "warn"              # bench: guard-quiet, set by bench/harness.py',
                                 on_port(GUARD_QUIET_PORT)),
    }
    if two_core:
        confs["guard-2cpu"] = re.sub(
            rf'(?m)^(addr = "127.0.0.1:{GUARD2_PORT}".*)$',
            lambda m: m.group(1) + "\nworkers = 2                 # bench: the two-core section, set by bench/harness.py",
            on_port(GUARD2_PORT), count=1)
    if redis_url:
        text = on_port(GUARD_REDIS_PORT)
        line = (f'redis = "{redis_url}"   # bench: added by bench/harness.py '
                f'(its own redis-server, CPU {CLIENT_CPU})')
        if re.search(r"(?m)^\s*redis(_cluster)?\s*=", text):
            sys.exit("bench: bench/smsguard.toml must not name a Redis: the harness adds its own")
        if re.search(r"(?m)^\[store\]\s*(#.*)?$", text):
            text = re.sub(r"(?m)^(\[store\]\s*(#.*)?)$", lambda m: m.group(1) + "\n" + line, text, count=1)
        else:
            text = text.rstrip("\n") + f"\n\n[store]\n{line}\n"
        confs["guard+redis"] = with_admin(text, GUARD_REDIS_ADMIN_PORT)
    paths = {}
    for t, text in confs.items():
        path = out / ("smsguard-" + t.replace("+", "-") + ".toml")
        path.write_text(text)
        paths[t] = path
    return paths


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
    ap.add_argument("--no-quiet", action="store_true", help="skip the guard-quiet variant")
    ap.add_argument("--no-redis", action="store_true", default=os.environ.get("REDIS") == "0",
                    help="skip the guard+redis variant (also REDIS=0)")
    ap.add_argument("--redis-fixed", action="store_true", default=os.environ.get("REDIS_FIXED", "1") != "0",
                    help="fixed-rate runs for guard+redis too (default; REDIS_FIXED=0: closed loop only)")
    ap.add_argument("--no-two-core", action="store_true", default=os.environ.get("TWO_CORE") == "0",
                    help="skip the two-core section (also TWO_CORE=0)")
    ap.add_argument("--workloads", default=os.environ.get("WORKLOADS", ",".join(WORKLOADS)))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rates = [int(x) for x in a.rates.split(",")]
    workloads = a.workloads.split(",")
    for w in workloads:
        if w not in WORKLOADS:
            sys.exit(f"bench: unknown workload {w!r}: expected some of {','.join(WORKLOADS)}")
    two_core = [w for w in TWO_CORE_WORKLOADS if w in workloads] if not a.no_two_core else []

    out = Path(a.out or BENCH / "out" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")).resolve()
    (out / "tmp").mkdir(parents=True, exist_ok=True)
    raw = open(out / "raw.jsonl", "w")
    free = shutil.disk_usage(out).free
    if free < 5 * 2**30:
        log(f"warning: {free / 2**30:.1f} GB free under {out}: every proxy logs each request there "
            "(a full run writes a few GB)")
    ports = [MOCK_PORT, PROXY_PORT, GUARD_PORT, GUARD_QUIET_PORT, STATUS_PORT, GUARD_ADMIN_PORT,
             HAPROXY_PORT, LUA_PORT]
    if not a.no_redis:
        ports += [GUARD_REDIS_PORT, GUARD_REDIS_ADMIN_PORT]
    if two_core:
        ports += [PROXY2_PORT, GUARD2_PORT]
    for port in ports:
        if port_open(port):
            sys.exit(f"bench: 127.0.0.1:{port} is already in use; stop what listens there first")
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs at least 2 CPUs (proxy alone on CPU 1, client and mock on CPU 0)")
    if not shutil.which("haproxy"):
        sys.exit("bench: haproxy not found (Debian: apt-get install haproxy)")
    for module in NGINX_MODULES:
        if not Path(module).exists():
            sys.exit(f"bench: {module} not found (Debian: apt-get install libnginx-mod-http-lua)")
    use_redis = not a.no_redis and any(w in REDIS_WORKLOADS for w in workloads)
    if use_redis:
        for tool in ("redis-server", "redis-cli"):
            if not shutil.which(tool):
                sys.exit(f"bench: {tool} not found (Debian: apt-get install redis-server redis-tools), "
                         "or skip the Redis variant with --no-redis")
    redis_port = free_port() if use_redis else None
    redis_url = f"redis://127.0.0.1:{redis_port}/0" if use_redis else None
    token = secrets.token_hex(16)

    def template(src, dst, **subst):
        text = src.read_text().replace("@RUN@", str(out))
        for k, v in subst.items():
            text = text.replace(f"@{k}@", str(v))
        left = re.search(r"@[A-Z]+@", text)
        if left:
            sys.exit(f"bench: {src}: placeholder {left.group(0)} not filled in")
        dst.write_text(text)
        return dst

    template(BENCH / "nginx/mock.conf", out / "mock.conf")
    template(BENCH / "nginx/proxy.conf", out / "proxy.conf", NAME="proxy", PORT=PROXY_PORT, WORKERS=1)
    template(BENCH / "nginx/proxy.conf", out / "proxy2.conf", NAME="proxy2", PORT=PROXY2_PORT, WORKERS=2)
    template(BENCH / "nginx/lua.conf", out / "lua.conf")
    template(BENCH / "haproxy/proxy.cfg", out / "haproxy.cfg")
    for conf in ("mock.conf", "proxy.conf", "proxy2.conf", "lua.conf"):
        r = subprocess.run(["nginx", "-t", "-q", "-e", str(out / "nginx-t.log"), "-p", str(out),
                            "-c", str(out / conf)], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bench: nginx -t -c {out / conf} failed: {r.stdout}{r.stderr}")
    r = subprocess.run(["haproxy", "-c", "-q", "-f", str(out / "haproxy.cfg")], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench: haproxy -c -f {out / 'haproxy.cfg'} failed: {r.stdout}{r.stderr}")
    confs = guard_configs(out, redis_url, bool(two_core))
    for t, path in confs.items():
        r = subprocess.run([a.smsguard, "check", "--config", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bench: smsguard check --config {path} failed: {r.stdout}{r.stderr}")

    def first_line(argv, stream="stdout"):
        r = subprocess.run(argv, capture_output=True, text=True)
        return (getattr(r, stream).strip().splitlines() or ["?"])[0]

    machine = {
        "nproc": os.cpu_count(),
        "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                           if l.startswith("model name")), "?"),
        "kernel": os.uname().release,
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "nginx_lua": first_line(["dpkg-query", "-W", "-f", "${Package} ${Version}",
                                 "libnginx-mod-http-lua"]) if shutil.which("dpkg-query") else "?",
        "haproxy": first_line(["haproxy", "-v"]),
        "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
                .splitlines() or ["?"])[0],
        "commit": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                 capture_output=True, text=True).stdout.strip() or "?",
    }
    if use_redis:
        machine["redis"] = subprocess.run(["redis-server", "--version"], capture_output=True,
                                          text=True).stdout.strip()
    log(f"machine: {machine}")
    log(f"output: {out}")

    servers = Servers()
    global MOCK_PIDS, REDIS_PIDS
    started_at = time.monotonic()
    results = []
    offset = {w: 0 for w in WORKLOADS + ["blocked_reject"]}
    sent_to_guard = {}
    # Per workload and target: requests answered (warm-ups included), the
    # lines its log got meanwhile, and (guards with an admin) lines dropped.
    logs = {}
    guard_threads = {}
    redis_meta = None
    try:
        mock = servers.start("mock nginx", ["nginx", "-e", str(out / "mock-error.log"), "-p",
                                            str(out), "-c", str(out / "mock.conf")],
                             CLIENT_CPU, MOCK_PORT, stderr=open(out / "mock-stderr.log", "w"))
        wait_port(STATUS_PORT, mock, "mock status")
        time.sleep(0.3)
        MOCK_PIDS = [mock.pid] + children(mock.pid)

        def start_nginx(name, conf, cpu, port, workers):
            p = servers.start(name, ["nginx", "-e", str(out / f"{conf}-error.log"), "-p",
                                     str(out), "-c", str(out / f"{conf}.conf")],
                              cpu, port, stderr=open(out / f"{conf}-stderr.log", "w"))
            time.sleep(0.3)
            kids = children(p.pid)
            if len(kids) != workers:
                sys.exit(f"bench: expected {workers} {name} worker(s), found {kids}")
            return [p.pid] + kids

        nginx_pids = start_nginx("nginx proxy", "proxy", PROXY_CPU, PROXY_PORT, 1)
        lua_pids = start_nginx("nginx+lua", "lua", PROXY_CPU, LUA_PORT, 1)
        haproxy = servers.start("haproxy", ["haproxy", "-db", "-f", str(out / "haproxy.cfg")],
                                PROXY_CPU, HAPROXY_PORT, stdout=open(out / LOGS["haproxy"], "a"),
                                stderr=open(out / "haproxy-stderr.log", "w"))
        haproxy_pids = [haproxy.pid]
        if use_redis:
            (out / "redis").mkdir(exist_ok=True)
            redis = servers.start("redis-server", [
                "redis-server", "--bind", "127.0.0.1", "--port", str(redis_port),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", str(out / "redis"), "--logfile", str(out / "redis.log"),
                "--pidfile", str(out / "redis" / "redis.pid")],
                CLIENT_CPU, redis_port)
            REDIS_PIDS = [redis.pid]
            redis_meta = {"port": redis_port, "cpu": CLIENT_CPU, "version": machine["redis"],
                          "url": redis_url, "probe": None}
            log(f"redis-server on 127.0.0.1:{redis_port} (pid {redis.pid}, CPU {CLIENT_CPU})")

        def start_guard(t):
            env = dict(os.environ)
            # The policy decides the log level and the workers: nothing in
            # the environment overrides it.
            env.pop("SMSGUARD_LOG", None)
            env.pop("TOKIO_WORKER_THREADS", None)
            env[ADMIN_TOKEN_ENV] = token
            cpu = BOTH_CPUS if t == "guard-2cpu" else PROXY_CPU
            p = servers.start("smsguard" + t[5:], [a.smsguard, "serve", "--config", str(confs[t])],
                              cpu, GUARD_PORTS[t], env=env, stderr=open(out / LOGS[t], "a"))
            if t in ADMIN_PORTS:
                wait_port(ADMIN_PORTS[t], p, f"smsguard{t[5:]} admin")
            guard_threads.setdefault(t, {"cpus": cpu, "names": threads(p.pid)})
            return p

        def set_block(t, block):
            status, body = admin(ADMIN_PORTS[t], token, "POST", "/api/blocks", block)
            if status != 201:
                sys.exit(f"bench: POST /api/blocks {block} on {t}: {status} {body}")

        def snap(t):
            if t not in ADMIN_PORTS:
                return None
            return snapshot(ADMIN_PORTS[t], token, redis_port if t == "guard+redis" else None)

        # warm_up and run_round send workload w; what they count is booked
        # under `key` (w, or w@2cpu for the two-core section).
        def warm_up(w, targets, key):
            log(f"workload {key}: warm-up (1 s per target)")
            for t, (port, _) in targets.items():
                r = run_wrk(port, w, offset[w], 1)
                offset[w] += r["requests"] + 1000
                if t in sent_to_guard[key]:
                    sent_to_guard[key][t] += r["requests"]
                logs[key][t]["answers"] += r["requests"]

        def run_round(w, rnd, targets, kinds_of, key, section=None):
            names = list(targets)
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for t in order:
                port, pids = targets[t]
                for kind, rate in kinds_of(t):
                    idle, idle_frac, waited = wait_idle(a.idle, a.idle_timeout)
                    before = snap(t)
                    if rate is None:
                        res = measure(kind, lambda: run_wrk(port, w, offset[w], a.closed), pids)
                        n = res["requests"]
                        logs[key][t]["answers"] += res["requests"]
                    else:
                        res = measure(kind, lambda: run_loadgen(a.loadgen, port, w, offset[w],
                                                                rate, a.fixed), pids)
                        n = res["scheduled"]
                        logs[key][t]["answers"] += res["completed"]
                    if before is not None:
                        res["counts"] = counts_delta(before, snap(t))
                    offset[w] += n + 1000
                    if t in sent_to_guard[key]:
                        sent_to_guard[key][t] += n
                    res.update(workload=w, target=t, kind=kind, round=rnd + 1,
                               idle_before=idle, idle_fraction=round(idle_frac, 3),
                               idle_waited_s=round(waited, 2))
                    if section:
                        res["section"] = section
                    if pids:
                        res["rss_kb"] = status_kb(pids[-1], "VmRSS:")
                        res["pss_kb_all"] = sum(pss_kb(p) for p in pids)
                        res["guard_sends_so_far"] = sent_to_guard[key].get(t)
                    raw.write(json.dumps(res) + "\n")
                    raw.flush()
                    results.append(res)
                    done = res.get("requests", res.get("completed"))
                    rate_s = res.get("rps") or res.get("achieved_rate")
                    cpu = res["proxy_cpu_s"]
                    extra = ""
                    c = res.get("counts", {})
                    if "redis" in c and c["guard"].get("judged"):
                        j = c["guard"]["judged"]
                        extra = (f"  redis: {c['guard'].get('redis_round_trips', 0) / j:.3f} rt/send, "
                                 f"{c['redis']['total_commands_processed'] / j:.1f} cmd/send")
                    log(f"{w:8} r{rnd + 1} {t:11} {kind:8} {fmt(rate_s, 0):>9} req/s"
                        + (f"  proxy cpu {1e6 * cpu / max(done, 1):6.1f} us/req" if cpu is not None else "")
                        + (f"  p50 {res['service_us']['p50']:.0f} us p99 {res['service_us']['p99']:.0f} us"
                           if rate else "")
                        + extra
                        + ("" if idle else f"  (machine not idle: {idle_frac:.0%} idle)"))

        def start_logs(w, targets):
            logs[w] = {t: {"answers": 0, "start": log_size(out / LOGS[t]) if t in LOGS else None}
                       for t in targets}

        def end_logs(w, dropped):
            """After the workload (its guards stopped, so their log writers
            have written out what was queued)."""
            for t, lg in logs[w].items():
                start = lg.pop("start")
                if start is not None:
                    lg["file"] = LOGS[t]
                    lg["lines"], lg["bytes"] = log_lines(out / LOGS[t], start)
                if t in dropped:
                    lg["dropped"] = dropped[t]

        for w in workloads:
            redis_here = use_redis and w in REDIS_WORKLOADS
            if redis_here:
                # Both guards start afresh for each workload: so does Redis.
                redis_cli(redis_port, "FLUSHALL")
            names = ["direct", "nginx", "haproxy", "nginx+lua", "guard"]
            if w == "allowed" and not a.no_quiet:
                names.append("guard-quiet")
            if redis_here:
                names.append("guard+redis")
            start_logs(w, names)
            guards = {t: start_guard(t) for t in names if t.startswith("guard")}
            targets = {"direct": (MOCK_PORT, None), "nginx": (PROXY_PORT, nginx_pids),
                       "haproxy": (HAPROXY_PORT, haproxy_pids), "nginx+lua": (LUA_PORT, lua_pids)}
            for t, p in guards.items():
                targets[t] = (GUARD_PORTS[t], [p.pid])
            if w == "blocked":
                for t in guards:
                    if t in ADMIN_PORTS:
                        set_block(t, BLOCK)
                time.sleep(1.5)  # past one mirror of the shared blocks (store.near_cache 1s)
            rss_idle = {t: status_kb(pids[-1], "VmRSS:") for t, (_, pids) in targets.items() if pids}
            sent_to_guard[w] = {t: 0 for t in targets if t.startswith("guard")}
            warm_up(w, targets, w)

            def kinds_of(t):
                kinds = [("closed", None)]
                if w in LOADGEN_WORKLOADS:
                    kinds += [(f"{r}/s", r) for r in rates]
                if t == "guard-quiet" or (t == "guard+redis" and not a.redis_fixed):
                    kinds = kinds[:1]  # closed loop only
                return kinds

            for rnd in range(a.rounds):
                run_round(w, rnd, targets, kinds_of, w)
            if w == "blocked" and "guard+redis" in guards:
                # Judging a blocked send vs sharing its shadow fake: the same
                # sends into a rejecting block make no fake.
                set_block("guard+redis", BLOCK_REJECT)
                time.sleep(1.5)
                port, pids = targets["guard+redis"]
                r = run_wrk(port, "blocked_reject", offset["blocked_reject"], 1)  # warm-up
                logs[w]["guard+redis"]["answers"] += r["requests"]
                offset["blocked_reject"] += 100000
                idle, idle_frac, _ = wait_idle(a.idle, a.idle_timeout)
                before = snap("guard+redis")
                res = measure("closed", lambda: run_wrk(port, "blocked_reject",
                                                        offset["blocked_reject"], a.closed), pids)
                res["counts"] = counts_delta(before, snap("guard+redis"))
                logs[w]["guard+redis"]["answers"] += res["requests"]
                res.update(workload="blocked_reject", target="guard+redis", kind="probe",
                           idle_before=idle, idle_fraction=round(idle_frac, 3))
                raw.write(json.dumps(res) + "\n")
                raw.flush()
                redis_meta["probe"] = res
                c = res["counts"]
                j = max(c["guard"].get("judged", 0), 1)
                log(f"blocked_reject probe on guard+redis: {fmt(res['rps'], 0)} req/s, "
                    f"{res['non_2xx']} non-2xx (rejected), "
                    f"{c['guard'].get('redis_round_trips', 0) / j:.4f} redis round trips/send")
            # Idle RSS at the start, and after everything of this workload.
            for t, kb in rss_idle.items():
                results.append({"workload": w, "target": t, "kind": "rss_start", "rss_kb": kb})
            for t, (_, pids) in targets.items():
                if pids:
                    results.append({"workload": w, "target": t, "kind": "rss_end",
                                    "rss_kb": status_kb(pids[-1], "VmRSS:")})
            dropped = {t: guard_metrics(ADMIN_PORTS[t], token).get("log_dropped", 0)
                       for t in guards if t in ADMIN_PORTS}
            for p in guards.values():
                servers.stop(p)
            end_logs(w, dropped)
        if use_redis:
            redis_meta["used_memory_end"] = redis_info(redis_port).get("used_memory")

        if two_core:
            # Two cores: the proxies unpinned (both CPUs), the mock and the
            # load generator still on CPU 0, so they share that core.
            log(f"two cores: nginx (2 workers) and smsguard (workers = 2) on CPUs {BOTH_CPUS}")
            nginx2_pids = start_nginx("nginx proxy 2-CPU", "proxy2", BOTH_CPUS, PROXY2_PORT, 2)
            for w in two_core:
                key = w + "@2cpu"
                start_logs(key, TWO_CORE_TARGETS)
                g2 = start_guard("guard-2cpu")
                targets = {"nginx-2cpu": (PROXY2_PORT, nginx2_pids), "guard-2cpu": (GUARD2_PORT, [g2.pid])}
                sent_to_guard[key] = {"guard-2cpu": 0}
                warm_up(w, targets, key)
                for rnd in range(a.rounds):
                    run_round(w, rnd, targets, lambda t: [("closed", None)], key, section="two-core")
                servers.stop(g2)
                end_logs(key, {})
    finally:
        servers.stop_all()
    elapsed = time.monotonic() - started_at
    summary = summarize(results, machine, a, rates, workloads, sent_to_guard, elapsed, redis_meta,
                        logs, guard_threads)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    md = render(summary)
    (out / "results.md").write_text(md)
    print(md)
    log(f"wrote {out}/results.md, results.json, raw.jsonl ({elapsed:.0f} s)")


ADMIN_PORTS = {"guard": GUARD_ADMIN_PORT, "guard+redis": GUARD_REDIS_ADMIN_PORT}


MOCK_PIDS = []
REDIS_PIDS = []  # the redis-server of guard+redis, on CPU 0 (empty: not started)


def redis_work(runs):
    """Redis work per judged send over some guard+redis measurements (their
    `counts`, summed): judged sends from the guard's smsguard_sends_total;
    calls and round trips from its smsguard_redis_total; commands from
    redis-server's INFO (all of them, and the scripts run: EVALSHA)."""
    runs = [r for r in runs if "counts" in r and "redis" in r["counts"]]
    if not runs:
        return None
    g = lambda k: sum(r["counts"]["guard"].get(k, 0) for r in runs)  # noqa: E731
    judged = g("judged")
    cmds = {}
    for r in runs:
        for k, v in r["counts"]["redis"]["commands"].items():
            cmds[k] = cmds.get(k, 0) + v
    total = sum(r["counts"]["redis"]["total_commands_processed"] for r in runs)
    usec = {}
    for r in runs:
        for k, v in r["counts"]["redis"].get("usec", {}).items():
            usec[k] = usec.get(k, 0) + v
    scripts = sum(v for k, v in cmds.items() if k in ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall"))
    by_stage = {}
    for r in runs:
        for k, v in r["counts"]["guard"].get("by_stage", {}).items():
            by_stage[k] = by_stage.get(k, 0) + v
    per = (lambda n: n / judged) if judged else (lambda n: None)
    # redis-server's CPU (/proc: utime + stime, its network I/O included)
    # over the same measurements, background work included.
    redis_cpu_s = sum(r.get("redis_cpu_s", 0) for r in runs)
    return {
        "measurements": len(runs),
        "requests": sum(r.get("requests", r.get("completed", 0)) for r in runs),
        "judged": judged,
        "by_stage": by_stage,
        "store_shared": g("store_shared"),
        "store_fallback": g("store_fallback"),
        "calls": g("redis_calls"),
        "round_trips": g("redis_round_trips"),
        "errors": g("redis_errors") + g("redis_timeouts") + g("redis_fast_failures"),
        "script_loads": g("redis_script_loads"),
        "commands_total": total,
        "scripts_run": scripts,
        "commands": dict(sorted(cmds.items(), key=lambda kv: -kv[1])),
        "redis_cpu_s": redis_cpu_s,
        "per_send": {"redis_cpu_us": per(1e6 * redis_cpu_s),
                     "round_trips": per(g("redis_round_trips")), "calls": per(g("redis_calls")),
                     "commands": per(total), "scripts": per(scripts),
                     "set": per(cmds.get("set", 0)),
                     # commandstats times a script's EVALSHA including the
                     # commands it runs (those are timed again on their own)
                     "script_usec": per(sum(usec.get(k, 0) for k in ("evalsha", "eval", "evalsha_ro", "eval_ro")))},
        "seconds": sum(r["wall_s"] for r in runs),
    }


def summarize(results, machine, a, rates, workloads, sent_to_guard, elapsed, redis_meta=None,
              logs=None, guard_threads=None):
    def sel(w, t, kind, section=None):
        return [r for r in results if r["workload"] == w and r["target"] == t and r["kind"] == kind
                and r.get("section") == section]

    def closed_summary(t, c):
        return {
            "rps": med([r["rps"] for r in c]),
            "rps_all": [round(r["rps"]) for r in c],
            "cpu_us_per_req": med([1e6 * r["proxy_cpu_s"] / max(r["requests"], 1) for r in c])
            if c and c[0]["proxy_cpu_s"] is not None else None,
            "proxy_cpu_busy": med([r["proxy_cpu_s"] / r["wall_s"] for r in c])
            if c and c[0]["proxy_cpu_s"] is not None else None,
            "client_side_cpu_busy": med([(r["mock_cpu_s"] + r["client_cpu_s"] + r.get("redis_cpu_s", 0))
                                         / r["wall_s"] for r in c]),
            "redis_cpu_us_per_req": med([1e6 * r["redis_cpu_s"] / max(r["requests"], 1) for r in c])
            if t == "guard+redis" and c else None,
            "redis_cpu_busy": med([r["redis_cpu_s"] / r["wall_s"] for r in c])
            if t == "guard+redis" and c else None,
            "non_2xx": sum(r["non_2xx"] for r in c),
            "socket_errors": sum(r["socket_errors"] for r in c),
            "requests": sum(r["requests"] for r in c),
            "reached_mock": sum(r["mock_requests"] for r in c),
            "rss_kb_first": c[0].get("rss_kb") if c else None,
            "rss_kb_last": c[-1].get("rss_kb") if c else None,
            "pss_kb_first": c[0].get("pss_kb_all") if c else None,
            "guard_sends_at_first": c[0].get("guard_sends_so_far") if c else None,
            "guard_sends_at_last": c[-1].get("guard_sends_so_far") if c else None,
        }

    def per_round(w, t, section=None):
        return {r["round"]: r["rps"] for r in sel(w, t, "closed", section)}

    def round_ratios(num, den):
        return [round(num[k] / den[k], 3) for k in sorted(num) if k in den]

    s = {"machine": machine, "elapsed_s": round(elapsed), "rounds": a.rounds,
         "closed_seconds": a.closed, "fixed_seconds": a.fixed, "rates": rates,
         "sent_to_guard": sent_to_guard, "workloads": {}, "logs": logs or {},
         "guard_threads": guard_threads or {}}
    measurements = [r for r in results if "idle_before" in r]
    s["not_idle_before"] = sum(1 for r in measurements if not r["idle_before"])
    s["measurements"] = len(measurements)
    s["other_cpu_share_max"] = max((r["other_cpu_s"] / r["wall_s"] for r in measurements), default=0)
    s["other_cpu_share_median"] = med([r["other_cpu_s"] / r["wall_s"] for r in measurements])
    for w in workloads:
        ws = {}
        targets = sorted({r["target"] for r in results if r["workload"] == w and "idle_before" in r
                          and not r.get("section")}, key=TARGETS.index)
        for t in targets:
            ts = {"closed": closed_summary(t, sel(w, t, "closed"))}
            for edge in ("rss_start", "rss_end"):
                found = sel(w, t, edge)
                ts[f"rss_kb_{edge[4:]}"] = found[0]["rss_kb"] if found else None
            ts["rss_kb_idle_start"] = ts.pop("rss_kb_start")
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
                    "redis_cpu_us_per_req": med([1e6 * r["redis_cpu_s"] / max(r["completed"], 1) for r in f])
                    if t == "guard+redis" else None,
                    "errors": sum(r["errors"] + r["other_status"] for r in f),
                    "completed": sum(r["completed"] for r in f),
                    "from_mock": sum(r["from_mock"] for r in f),
                    "reached_mock": sum(r["mock_requests"] for r in f),
                }
            ws[t] = ts
        # Ratios and added latency.
        d, g = ws.get("direct"), ws.get("guard")
        if d and g:
            rounds = {t: per_round(w, t) for t in ws}
            ratios = {
                "guard/direct": g["closed"]["rps"] / d["closed"]["rps"],
                "guard/direct per round": round_ratios(rounds["guard"], rounds["direct"]),
            }
            for t in PEERS + ["guard-quiet"]:
                if t in ws:
                    ratios[f"{t}/direct"] = ws[t]["closed"]["rps"] / d["closed"]["rps"]
                    ratios[f"guard/{t}"] = g["closed"]["rps"] / ws[t]["closed"]["rps"]
                    ratios[f"guard/{t} per round"] = round_ratios(rounds["guard"], rounds[t])
            for rate in rates:
                key = f"{rate}/s"
                if key not in d:
                    continue
                for t in PEERS + ["guard", "guard+redis"]:
                    if key in ws.get(t, {}):
                        ratios[f"added p50 {key} {t}"] = ws[t][key]["p50_us"] - d[key]["p50_us"]
                        ratios[f"added p99 {key} {t}"] = ws[t][key]["p99_us"] - d[key]["p99_us"]
            gr, n = ws.get("guard+redis"), ws.get("nginx")
            if gr:
                ratios["redis/guard"] = gr["closed"]["rps"] / g["closed"]["rps"]
                ratios["redis/guard per round"] = round_ratios(rounds["guard+redis"], rounds["guard"])
                if n:
                    ratios["redis/nginx"] = gr["closed"]["rps"] / n["closed"]["rps"]
                    ratios["redis/nginx per round"] = round_ratios(rounds["guard+redis"], rounds["nginx"])
            ws["ratios"] = ratios
        if "guard+redis" in ws:
            ws["redis_work"] = {
                "closed": redis_work(sel(w, "guard+redis", "closed")),
                "all": redis_work([r for r in results if r["workload"] == w
                                   and r["target"] == "guard+redis" and "idle_before" in r]),
            }
        s["workloads"][w] = ws
    two = {}
    for w in workloads:
        ws = {}
        for t in TWO_CORE_TARGETS:
            c = sel(w, t, "closed", "two-core")
            if c:
                ws[t] = {"closed": closed_summary(t, c)}
        if len(ws) == len(TWO_CORE_TARGETS):
            n2, g2 = ws["nginx-2cpu"]["closed"], ws["guard-2cpu"]["closed"]
            ws["ratios"] = {
                "guard/nginx": g2["rps"] / n2["rps"],
                "guard/nginx per round": round_ratios(per_round(w, "guard-2cpu", "two-core"),
                                                      per_round(w, "nginx-2cpu", "two-core")),
            }
            one = s["workloads"].get(w, {})
            for t1, t2 in (("nginx", "nginx-2cpu"), ("guard", "guard-2cpu")):
                if t1 in one:
                    ws["ratios"][f"{t2}/{t1}"] = ws[t2]["closed"]["rps"] / one[t1]["closed"]["rps"]
        if ws:
            two[w] = ws
    s["two_core"] = two
    if redis_meta:
        probe = redis_meta.pop("probe", None)
        s["redis"] = dict(redis_meta)
        if probe:
            s["redis"]["probe_reject"] = {"rps": probe["rps"], "non_2xx": probe["non_2xx"],
                                          "work": redis_work([probe])}
    return s


def saturated(f, rate):
    """A fixed-rate run the target could not keep up with: its latencies
    are queueing, not service."""
    return f["achieved"] < 0.98 * rate or f["late_over_1ms"] > 0.05 * f["completed"]


def logs_each(t, w):
    """Whether target t writes a log line per request of workload w."""
    if t in ("guard-quiet", "direct"):
        return False
    return w != "get" or not t.startswith("guard")


def per_round_text(xs):
    return ", ".join(f"{x:.2f}" for x in xs)


def render(s):
    m = s["machine"]
    L = []
    L.append("## smsguard vs nginx, HAProxy and nginx + Lua (bench/run)\n")
    L.append(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}; {m['nginx']}"
             + (f" ({m['nginx_lua']})" if m.get("nginx_lua") else "")
             + (f"; {m['haproxy']}" if m.get("haproxy") else "")
             + f"; {m['wrk'].split(' Copyright')[0]}; smsguard at {m.get('commit', '?')}.")
    L.append(f"Rounds: {s['rounds']} (medians below); closed loop: wrk -t1 -c32, {s['closed_seconds']} s; "
             f"fixed rate: loadgen, 32 connections, {s['fixed_seconds']} s at {', '.join(str(r) for r in s['rates'])} req/s. "
             f"Proxy alone on CPU 1; wrk/loadgen and the mock (nginx `return`) on CPU 0"
             + (f", and the Redis of guard+redis ({s['redis']['version'].split(' sha=')[0]}, 127.0.0.1:{s['redis']['port']}): "
                "it shares the generator's core" if s.get("redis") else "")
             + f". Run took {s['elapsed_s']} s.")
    def thread_text(t):
        th = s.get("guard_threads", {}).get(t)
        if not th:
            return ""
        names = th["names"]
        return (f"{sum(names.values())} threads: " + ", ".join(f"{v} {k}" for k, v in names.items()))

    th = thread_text("guard")
    L.append("Every proxy runs its defaults and logs each request to a file in the run's directory: "
             "**nginx** proxy_pass (1 worker, upstream keepalive, access log on, `combined`); "
             "**haproxy** (mode http, nbthread 1, keep-alive both sides, http-reuse always, "
             "`option httplog` to stdout, a file); "
             "**nginx+lua**, the guard a user would build instead (the nginx proxy plus `access_by_lua_block`: "
             "sends to +99899394… and a number's 6th+ send within the hour (`lua_shared_dict`) answered with a fake "
             "Message, the rest proxied; access log on); "
             "**guard**: smsguard, bench/smsguard.toml, `listen.workers` at its default (pinned to one CPU: "
             + (th or "one worker")
             + ") and `log.level = \"info\"` (one decision event per send), stderr to a file; "
             "**guard-quiet**: the same at `log.level = \"warn\"` (allowed sends, closed loop: what the decision "
             "log costs).")
    if s.get("redis"):
        L.append("guard+redis is smsguard with the policy of guard plus `[store] redis = ...` "
                 "(bench/smsguard.toml, generated at run time); see the Redis store section of the report.")
    L.append("Latency is the loadgen's service time (request written -> answer read), median over rounds; "
             "'saturated': the target fell behind the fixed rate (achieved < 98%, or > 5% of requests sent > 1 ms late because all 32 connections were busy).")
    L.append(f"Machine not idle before {s['not_idle_before']} of {s['measurements']} measurements; "
             f"CPU used by other processes during measurements: median {100 * (s['other_cpu_share_median'] or 0):.0f}%, "
             f"max {100 * s['other_cpu_share_max']:.0f}% of one CPU.\n")
    names = {"allowed": "allowed sends (distinct US numbers, full policy, forwarded)",
             "shadowed": "shadowed sends (+99899394…, geo block, answered by the guard)",
             "blocked": "blocked sends (+16462001…, US, under an admin block on prefix:8=+16462001, answered by the guard)",
             "get": "GET Message (not a send, streamed through)"}
    logs = s.get("logs", {})
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
            if t not in TARGETS:
                continue
            c = ts["closed"]
            busy = "-" if c["proxy_cpu_busy"] is None else f"{100 * c['proxy_cpu_busy']:.0f}%"
            bold = "**" if t == "guard" else ""
            row = f"| {bold}{t}{bold} | {bold}{fmt(c['rps'], 0)}{bold} | {busy} | {fmt(c['cpu_us_per_req'])} |"
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
            parts = [f"guard/direct **{r['guard/direct']:.2f}**"]
            parts += [f"{t}/direct {r[f'{t}/direct']:.2f}" for t in PEERS if f"{t}/direct" in r]
            L.append("Throughput: " + ", ".join(parts) + ".")
            parts = [f"guard/{t} **{r[f'guard/{t}']:.2f}** (per round: {per_round_text(r[f'guard/{t} per round'])})"
                     for t in PEERS + ["guard-quiet"] if f"guard/{t}" in r]
            if "redis/guard" in r:
                parts.append(f"guard+redis/guard **{r['redis/guard']:.2f}** (per round: "
                             f"{per_round_text(r['redis/guard per round'])})"
                             + (f", guard+redis/nginx {r['redis/nginx']:.2f}" if "redis/nginx" in r else ""))
            if parts:
                L.append("Ratios of medians: " + "; ".join(parts) + ".")
            if "guard/guard-quiet" in r:
                x = r["guard/guard-quiet"]
                L.append(f"The decision log: guard (info, a line per send) against guard-quiet (warn, none): "
                         f"{100 * (x - 1):+.0f}% throughput at c=32 "
                         f"({fmt(ws['guard']['closed']['rps'], 0)} vs {fmt(ws['guard-quiet']['closed']['rps'], 0)} req/s); "
                         f"proxy CPU {fmt(ws['guard']['closed']['cpu_us_per_req'])} vs "
                         f"{fmt(ws['guard-quiet']['closed']['cpu_us_per_req'])} µs/req.")
            added = [f"{k.split()[2]} {k.split()[3]} {v:+.0f} µs" for k, v in r.items()
                     if k.startswith("added p50")]
            added99 = [f"{k.split()[2]} {k.split()[3]} {v:+.0f} µs" for k, v in r.items()
                       if k.startswith("added p99")]
            if added:
                L.append(f"Added latency over direct, p50: {', '.join(added)}; p99: {', '.join(added99)}.")
        g = ws.get("guard", {})
        checks = []
        for t, ts in ws.items():
            if t not in TARGETS:
                continue
            c = ts["closed"]
            fm = [(k, v) for k, v in ts.items() if k.endswith("/s")]
            errs = c["non_2xx"] + c["socket_errors"] + sum(v["errors"] for _, v in fm)
            reached = c["reached_mock"] + sum(v["reached_mock"] for _, v in fm)
            total = c["requests"] + sum(v["completed"] for _, v in fm)
            late = sum(v["late_over_1ms"] for _, v in fm)
            text = (f"{t}: {fmt(total)} answers, {fmt(errs)} errors/non-2xx, "
                    f"{fmt(reached)} reached the mock, {fmt(late)} fixed-rate requests sent >1 ms late")
            lg = logs.get(w, {}).get(t)
            if lg and "lines" in lg:
                text += (f", log {lg['file']}: {fmt(lg['lines'])} lines ({lg['bytes'] / 2**20:.1f} MB) for "
                         f"{fmt(lg['answers'])} answers with the warm-up"
                         + (f", {fmt(lg['dropped'])} dropped" if "dropped" in lg else "")
                         + (" **(no log lines)**" if not lg["lines"] and logs_each(t, w) else ""))
            checks.append(text)
        L.append("Checks: " + "; ".join(checks) + ".")
        if "guard" in ws and w == "get":
            L.append("smsguard's log has a line per decision (a send), none per GET it streams through; "
                     "nginx, haproxy and nginx+lua log every request.")
        if w == "allowed":
            fwd = []
            for t in ("nginx+lua", "guard", "guard+redis"):
                if t in ws:
                    fm = [v for k, v in ws[t].items() if k.endswith("/s")]
                    reached = ws[t]["closed"]["reached_mock"] + sum(v["reached_mock"] for v in fm)
                    total = ws[t]["closed"]["requests"] + sum(v["completed"] for v in fm)
                    fwd.append(f"{t} {fmt(reached)} for {fmt(total)} answers")
            L.append("Allowed sends that reached the mock (all of them should, give or take the requests in flight "
                     "when a measurement ends): " + ", ".join(fwd) + ".")
        if w == "shadowed":
            never = [f"{t} {fmt(ws[t]['closed']['reached_mock'] + sum(v['reached_mock'] for k, v in ws[t].items() if k.endswith('/s')))}"
                     for t in ("guard", "guard+redis", "nginx+lua") if t in ws]
            L.append("Shadowed sends that reached the mock (must be 0): " + ", ".join(never) + ".")
        if w == "blocked" and "nginx+lua" in ws:
            c = ws["nginx+lua"]["closed"]
            L.append(f"nginx+lua knows nothing of the admin block: it forwards a number's first 5 sends in the hour "
                     f"and answers the rest itself (the workload cycles 1,000 numbers): "
                     f"{fmt(c['reached_mock'])} of {fmt(c['requests'])} measured sends reached the mock.")
        if g:
            c = g["closed"]
            L.append(f"Guard RSS: {fmt((g['rss_kb_idle_start'] or 0) / 1024)} MB at start, "
                     f"{fmt((c['rss_kb_first'] or 0) / 1024)} MB after the first c=32 run "
                     f"({fmt(c['guard_sends_at_first'])} requests seen), "
                     f"{fmt((c['rss_kb_last'] or 0) / 1024)} MB after the last ({fmt(c['guard_sends_at_last'])} requests seen)"
                     + (f", {fmt(g['rss_kb_end'] / 1024)} MB at the end of the workload" if g.get("rss_kb_end") else "")
                     + ".\n")
    two = s.get("two_core")
    if two:
        L.append("### Two cores (nginx worker_processes 2 vs smsguard listen.workers = 2)\n")
        t2 = thread_text("guard-2cpu")
        L.append("After the one-core rounds: nginx (the same proxy.conf, 2 workers, access log on) and smsguard "
                 "(bench/smsguard.toml with `workers = 2`"
                 + (f"; {t2}" if t2 else "")
                 + ", decision log at info to a file) each **unpinned on both CPUs (taskset 0-1), while the mock and "
                 "wrk stay on CPU 0: the proxy shares CPU 0 with the load generator and the mock**, so these are "
                 f"not two free cores. Closed loop only (wrk -t1 -c32, {s['closed_seconds']} s), {s['rounds']} "
                 "interleaved round(s); proxy CPU busy is in CPUs (100% = one CPU).\n")
        L.append("| workload | target | req/s (c=32) | per round | proxy CPU busy | proxy CPU µs/req | "
                 "CPU used by mock + wrk | ÷ the same on one core | errors/non-2xx | reached the mock |")
        L.append("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for w, ws in two.items():
            r = ws.get("ratios", {})
            for t in TWO_CORE_TARGETS:
                if t not in ws:
                    continue
                c = ws[t]["closed"]
                one = r.get(f"{t}/{t.split('-')[0]}")
                busy = "-" if c["proxy_cpu_busy"] is None else f"{100 * c['proxy_cpu_busy']:.0f}%"
                L.append(f"| {w} | {t} | {fmt(c['rps'], 0)} | {', '.join(f'{x:,}' for x in c['rps_all'])} | {busy} | "
                         f"{fmt(c['cpu_us_per_req'])} | {100 * c['client_side_cpu_busy']:.0f}% | "
                         f"{'-' if one is None else f'{one:.2f}'} | {fmt(c['non_2xx'] + c['socket_errors'])} | "
                         f"{fmt(c['reached_mock'])} |")
        L.append("")
        lines = []
        for w, ws in two.items():
            r = ws.get("ratios")
            if r:
                lines.append(f"{w} **{r['guard/nginx']:.2f}** (per round: {per_round_text(r['guard/nginx per round'])})")
        if lines:
            L.append("guard/nginx on two cores: " + "; ".join(lines) + ".")
        checks = []
        for w in two:
            for t, lg in logs.get(w + "@2cpu", {}).items():
                if "lines" in lg:
                    checks.append(f"{w} {t}: log {lg['file']} {fmt(lg['lines'])} lines for {fmt(lg['answers'])} answers"
                                  + (" **(no log lines)**" if not lg["lines"] and logs_each(t, w) else ""))
        if checks:
            L.append("Logs: " + "; ".join(checks) + ".\n")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
