#!/usr/bin/env python3
"""`make bench`: seed 100,000 users, start the service and the rewards stub on loopback,
drive each scenario with wrk (32 connections, fixed duration), twice, and write the
figures into BENCHMARKS.md between its result markers. The cached GetProfile over gRPC
runs under h2load (nghttp2-client) with the same connection count, one call in flight
per connection, and is compared with the same run's cached HTTP GET.

Environment: BENCH_SECONDS (per scenario run, default 10), BENCH_USERS (default 100000),
BENCH_RUNS (default 2). Only loopback addresses are ever targeted.
"""

import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "profile-api")
OUT = os.path.join(ROOT, "bench-out")
LUA = os.path.join(ROOT, "bench", "load.lua")
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
USERS = int(os.environ.get("BENCH_USERS", "100000"))
RUNS = int(os.environ.get("BENCH_RUNS", "2"))
SPREAD = min(10_000, USERS)
CONNS, THREADS = 32, 2
SECRET = "benchmark-secret-not-for-production-0123456789"
REWARDS_TIMEOUT_MS = 250

# The stack's own ceiling, measured in the same run: a bare warp server answering a
# prepared 1 KB JSON body (../shared/perf-ref), built once into target/perf-ref.
PERF_REF = os.path.join(os.path.dirname(ROOT), "shared", "perf-ref")
PERF_REF_TARGET = os.path.join(ROOT, "target", "perf-ref")
REFERENCE = "reference-json"

# scenario -> (min ratio to the reference's 1 KB JSON in the same run, max p99 in ms)
TARGETS = {
    "healthz": (0.85, 1000.0),
    "get-cached": (0.80, 1000.0),
    "get-spread": (0.70, 1000.0),
    "get-uncached": (0.08, 10.0),
    "patch": (0.06, 15.0),
    "patch-one-user": (0.04, 1000.0),
    "rewards-down": (0.65, REWARDS_TIMEOUT_MS + 5.0),
    "mixed": (0.35, 1000.0),
}

procs = []


def log(msg):
    print(f"[bench] {msg}", flush=True)


def ensure_wrk():
    if shutil.which("wrk"):
        return
    log("installing wrk (Debian package)")
    if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"]).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def ensure_h2load():
    if shutil.which("h2load"):
        return
    log("installing h2load (Debian package nghttp2-client)")
    if subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"]).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], check=True)


def h2load_grpc(port, token_file, seconds=SECONDS):
    """Unary GetProfile calls: a gRPC frame of the empty request (flag 0, length 0).

    h2load sees HTTP statuses only (a gRPC error is a 200 with a grpc-status trailer), so
    a run whose answers carry no profile bytes is refused as errors rather than reported
    as speed."""
    body = os.path.join(OUT, "grpc-get-request.bin")
    with open(body, "wb") as f:
        f.write(b"\x00\x00\x00\x00\x00")
    token = open(token_file).read().split()[0]
    log_file = os.path.join(OUT, "h2load-grpc.log")
    cmd = ["h2load", f"-c{CONNS}", f"-t{THREADS}", "-m1", "-D", str(seconds), "-d", body,
           "-H", "content-type: application/grpc", "-H", "te: trailers",
           "-H", f"authorization: Bearer {token}", "--log-file", log_file,
           f"http://127.0.0.1:{port}/profile.v1.ProfileService/GetProfile"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored", r.stdout)
    secs = re.search(r"finished in ([\d.]+)(m?s)", r.stdout)
    data = re.search(r"traffic: .*?\(\d+\) total, .*?\(\d+\) headers .*?, ([\d.]+)(\w*)B \((\d+)\) data",
                     r.stdout)
    if not done or not secs:
        sys.exit(f"h2load printed no result:\n{r.stdout}\n{r.stderr}")
    elapsed = float(secs.group(1)) / (1000 if secs.group(2) == "ms" else 1)
    succeeded, failed, errored = int(done.group(3)), int(done.group(4)), int(done.group(5))
    lat = sorted(int(line.split()[2]) for line in open(log_file) if line.strip())
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else float("nan")
    data_bytes = int(data.group(3)) if data else 0
    # A profile answer is hundreds of bytes; an error answer has no data frame at all.
    bad = failed + errored + (succeeded if succeeded and data_bytes / succeeded < 100 else 0)
    return {"rps": succeeded / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "non2xx": bad, "socket_errors": 0}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, args, ready_prefix):
    out = open(os.path.join(OUT, f"{name}.out"), "w")
    err = open(os.path.join(OUT, f"{name}.err"), "w")
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    p = subprocess.Popen([BIN, *args], stdout=out, stderr=err, env=env, cwd=OUT)
    procs.append(p)
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(os.path.join(OUT, f"{name}.out")) as f:
            if any(line.startswith(ready_prefix) for line in f):
                return p
        if p.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"{name} did not start; see bench-out/{name}.err")


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def peak_rss_mb(p):
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wrk(port, mode, tokens=None, route="/user/profile", seconds=SECONDS):
    env = dict(os.environ, MODE=mode, ROUTE=route)
    if tokens:
        env["TOKENS"] = tokens
    cmd = ["wrk", f"-t{THREADS}", f"-c{CONNS}", f"-d{seconds}s", "--timeout", "5s", "-s", LUA,
           f"http://127.0.0.1:{port}"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    m = re.search(r"^RESULT (\{.*\})$", r.stdout, re.M)
    if not m:
        sys.exit(f"wrk printed no result:\n{r.stdout}\n{r.stderr}")
    d = json.loads(m.group(1))
    d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
    d["p50_ms"] = d["p50_us"] / 1000
    d["p99_ms"] = d["p99_us"] / 1000
    return d


def build_reference():
    """The bare warp server of ../shared/perf-ref, or None when that folder is absent."""
    if not os.path.isdir(PERF_REF):
        log("../shared/perf-ref not found: no reference figures in this run")
        return None
    log("building the reference server (../shared/perf-ref)")
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=PERF_REF, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=PERF_REF_TARGET))
    return os.path.join(PERF_REF_TARGET, "release", "warp-hello")


def write_tokens(path, users):
    with open(path, "w") as f:
        f.write("\n".join(users))
        f.write("\n")


def main():
    ensure_wrk()
    ensure_h2load()
    ref_bin = build_reference()
    log("building release")
    subprocess.run(["cargo", "build", "--release", "-p", "profile-api"], cwd=ROOT, check=True)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    dbs = ["--main-db", "main.db", "--profiles-db", "profiles.db"]

    log(f"seeding {USERS} users x 10 orders")
    t0 = time.perf_counter()
    subprocess.run([BIN, "seed", "--users", str(USERS), "--orders-per-user", "10", *dbs], cwd=OUT, check=True,
                   stdout=subprocess.DEVNULL)
    seed_s = time.perf_counter() - t0
    log(f"seeded in {seed_s:.2f}s")

    r = subprocess.run([BIN, "token", "--user", "1", "--count", str(USERS), "--ttl-s", "86400",
                        "--jwt-secret", SECRET], capture_output=True, text=True, check=True)
    all_tokens = r.stdout.split()
    rng = random.Random(42)
    write_tokens(os.path.join(OUT, "tokens-all.txt"), all_tokens)
    write_tokens(os.path.join(OUT, "tokens-spread.txt"), rng.sample(all_tokens, SPREAD))
    write_tokens(os.path.join(OUT, "tokens-one.txt"), all_tokens[:1])
    tok = {k: os.path.join(OUT, f"tokens-{k}.txt") for k in ("all", "spread", "one")}

    stub_port, hang_port = free_port(), free_port()
    start("stub", ["rewards-stub", "--listen", f"127.0.0.1:{stub_port}"], "rewards stub listening")
    start("stub-hang", ["rewards-stub", "--listen", f"127.0.0.1:{hang_port}", "--mode", "hang"],
          "rewards stub listening")

    def serve(name, rewards_port, *extra):
        port = free_port()
        p = start(name, ["serve", "--listen", f"127.0.0.1:{port}", "--jwt-secret", SECRET, *dbs,
                         "--rewards-url", f"http://127.0.0.1:{rewards_port}",
                         "--rewards-timeout-ms", str(REWARDS_TIMEOUT_MS), *extra],
                  "profile-api listening")
        return p, port

    ref_port = None
    if ref_bin:
        ref_port = free_port()
        p = subprocess.Popen([ref_bin, f"127.0.0.1:{ref_port}"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        procs.append(p)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", ref_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)

    grpc_port = free_port()
    main_p, main_port = serve("server", stub_port, "--grpc-listen", f"127.0.0.1:{grpc_port}")
    unc_p, unc_port = serve("server-uncached", stub_port, "--profile-cache-ttl-s", "0",
                            "--rewards-cache-ttl-s", "3600")
    down_p, down_port = serve("server-rewards-down", hang_port)

    log("warming caches")
    wrk(main_port, "get", tok["spread"], seconds=5)
    wrk(unc_port, "get", tok["all"], seconds=15)
    wrk(down_port, "get", tok["spread"], seconds=5)

    results = []  # (run, scenario, dict)
    rss = {}
    for run in range(1, RUNS + 1):
        log(f"run {run}/{RUNS}")
        plan = []
        if ref_port:
            plan += [("reference-healthz", ref_port, "plain", None, "/healthz"),
                     (REFERENCE, ref_port, "get", tok["one"], "/user/profile")]
        plan += [
            ("healthz", main_port, "plain", None, "/healthz"),
            ("get-cached", main_port, "get", tok["one"], "/user/profile"),
            ("get-spread", main_port, "get", tok["spread"], "/user/profile"),
            ("get-uncached", unc_port, "get", tok["all"], "/user/profile"),
            ("patch", main_port, "patch", tok["all"], "/user/profile"),
            ("patch-one-user", main_port, "patch", tok["one"], "/user/profile"),
            ("rewards-down", down_port, "get", tok["spread"], "/user/profile"),
            ("mixed", main_port, "mixed", tok["spread"], "/user/profile"),
        ]
        cached = next(i for i, step in enumerate(plan) if step[0] == "get-cached")
        plan.insert(cached + 1, ("grpc-get-cached", grpc_port, "grpc", tok["one"], None))
        for name, port, mode, tokens, route in plan:
            d = h2load_grpc(port, tokens) if mode == "grpc" else wrk(port, mode, tokens, route)
            results.append((run, name, d))
            log(f"  {name:13} {d['rps']:9.0f} req/s  p50 {d['p50_ms']:.2f} ms  p99 {d['p99_ms']:.2f} ms"
                f"  non-2xx {d['non2xx']}  socket errors {d['socket_errors']}")
            if name == "get-spread":
                rss["after get-spread (main server)"] = peak_rss_mb(main_p)
            if name == "get-uncached":
                rss["after get-uncached (cache-off server)"] = peak_rss_mb(unc_p)
    rss["rewards-down server"] = peak_rss_mb(down_p)
    locked = sum(open(os.path.join(OUT, f)).read().count("database is locked")
                 for f in os.listdir(OUT) if f.endswith(".err"))
    stop_all()
    write_report(results, rss, seed_s, locked)


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, {platform.system()} {platform.release()}"


def write_report(results, rss, seed_s, locked):
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    healthz = {run: d["rps"] for run, name, d in results if name == "healthz"}
    reference = {run: d["rps"] for run, name, d in results if name == REFERENCE}
    lines = [
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}, "
        f"git {rev}{' (with uncommitted changes)' if dirty else ''}.",
        f"wrk, {CONNS} connections, {THREADS} threads, {SECONDS} s per run, {RUNS} runs per scenario; "
        f"load generator and server share the machine. Rewards timeout {REWARDS_TIMEOUT_MS} ms.",
        "Ratios: to the same run's bare warp reference answering a 1 KB JSON body "
        "(`../shared/perf-ref`), and to the service's own `/healthz`.",
        "",
        "| scenario | run | req/s | vs reference | vs /healthz | p50 ms | p99 ms | non-2xx | target (ratio, p99) | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdict = {}
    for run, name, d in results:
        base = reference.get(run)
        ratio = d["rps"] / base if base else float("nan")
        vs_healthz = d["rps"] / healthz[run]
        target = TARGETS.get(name) if base else None
        if target:
            ok = ratio >= target[0] and d["p99_ms"] <= target[1] and d["non2xx"] == 0 and d["socket_errors"] == 0
            verdict[name] = verdict.get(name, True) and ok
            tcell = f"≥ {target[0]:.2f}" + (f", ≤ {target[1]:g} ms" if target[1] < 1000 else "")
            mcell = "yes" if ok else "**no**"
        else:
            tcell, mcell = "—", ""
        lines.append(f"| {name} | {run} | {d['rps']:.0f} | {ratio:.2f} | {vs_healthz:.2f} | {d['p50_ms']:.2f} | {d['p99_ms']:.2f} | "
                     f"{d['non2xx'] + d['socket_errors']} | {tcell} | {mcell} |")
    lines += ["", f"Seeding {USERS:,} users and {USERS * 10:,} orders: {seed_s:.2f} s (target ≤ 20 s: "
              f"{'met' if seed_s <= 20 else '**missed**'}).", ""]
    for k, v in rss.items():
        lines.append(f"- Peak RSS {k}: {v:.0f} MB")
    lines.append(f"- `database is locked` in server logs: {locked}")
    for run in sorted(healthz):
        by = {name: d for r, name, d in results if r == run}
        if "grpc-get-cached" in by and "get-cached" in by:
            g = by["grpc-get-cached"]["rps"] / by["get-cached"]["rps"]
            lines.append(f"- Run {run}: cached GetProfile over gRPC (h2load) = {g:.2f} x the cached HTTP GET "
                         f"(wrk) (target ≥ 0.80: {'met' if g >= 0.80 else '**missed**'})")
    lines.append("")
    lines.append("Targets met in every run: " + ", ".join(
        f"{k} {'yes' if v else '**no**'}" for k, v in verdict.items()) + ".")
    block = "\n".join(lines)

    path = os.path.join(ROOT, "BENCHMARKS.md")
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = open(path).read() if os.path.exists(path) else f"# Benchmarks\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1] if end in rest else ""
    with open(path, "w") as f:
        f.write(f"{before}{start}\n{block}\n{end}{after}")
    print(block)


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
