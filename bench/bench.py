#!/usr/bin/env python3
"""make bench: measures a supervisor on the same tiny service, the numbers of issue 6.

Each service is a shell script that appends "NAME PID TIME" to a log and execs sleep:
the log line is when the service really started. Every metric is measured from outside,
from /proc and that log, and everything started is cleaned up by pid.

Today the script knows going; runit, daemontools, s6 and supervisord are to be added as
further Supervisor classes with the same methods (setup, start, add, stop, pids).
Usage: bench/bench.py [GOING_BINARY]   (writes bench/results.md and bench/results.json)
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE = """#!/bin/sh
echo "$1 $$ $(date +%s.%N)" >> "$2"
exec sleep 100000
"""
CRASHER = """#!/bin/sh
echo "$1 $$ $(date +%s.%N)" >> "$2"
exit 1
"""


def wait_for(what, cond, timeout=60.0, step=0.002):
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(what)


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1]
    return None


def pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def ctx_switches(pid):
    return int(status(pid, "voluntary_ctxt_switches")) + int(status(pid, "nonvoluntary_ctxt_switches"))


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class Going:
    name = "going"

    def __init__(self, binary, root):
        self.binary = os.path.abspath(binary)
        self.root = root
        self.conf = os.path.join(root, "conf")
        self.run = os.path.join(root, "run")
        self.proc = None

    def version(self):
        return subprocess.run([self.binary, "-V"], capture_output=True, text=True).stdout.strip()

    def setup(self, services):
        """services: {name: command line}."""
        shutil.rmtree(self.conf, ignore_errors=True)
        os.makedirs(self.conf)
        for name, cmd in services.items():
            self.add(name, cmd)

    def add(self, name, cmd):
        # Written aside, then renamed in: one inotify event, a complete file.
        tmp = os.path.join(self.root, f".{name}.new")
        with open(tmp, "w") as f:
            f.write(f"cmd={cmd}\nlog=null\n")
        os.rename(tmp, os.path.join(self.conf, name))

    def start(self):
        self.proc = subprocess.Popen([self.binary, "-f", "-d", self.conf, "-r", self.run],
                                     stderr=subprocess.DEVNULL)

    def supervisor_pids(self):
        return [self.proc.pid] if self.proc and alive(self.proc.pid) else []

    def top(self):
        return self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def kill9_and_restart(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.start()


class Bench:
    def __init__(self, sup, root):
        self.sup = sup
        self.root = root
        self.log = os.path.join(root, "starts.log")
        self.script = os.path.join(root, "svc.sh")
        self.crasher = os.path.join(root, "crash.sh")
        for path, text in ((self.script, SERVICE), (self.crasher, CRASHER)):
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        self.started = []  # every service pid ever seen, for the clean-up

    def starts(self):
        """[(name, pid, time)] from the log."""
        out = []
        try:
            with open(self.log) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 3:
                        out.append((parts[0], int(parts[1]), float(parts[2])))
        except OSError:
            pass
        return out

    def services(self, n, prefix="s"):
        return {f"{prefix}{i}": f"{self.script} {prefix}{i} {self.log}" for i in range(n)}

    def fresh(self):
        if os.path.exists(self.log):
            os.remove(self.log)

    def cleanup(self):
        for _, pid, _ in self.starts():
            self.started.append(pid)
        for pid in self.started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def memory_and_start(self, n):
        self.fresh()
        self.sup.setup(self.services(n))
        t0 = time.time()
        self.sup.start()
        wait_for(f"{n} services to start", lambda: len({s[0] for s in self.starts()}) >= n)
        start_s = time.time() - t0
        time.sleep(1)
        pids = self.sup.supervisor_pids()
        result = {
            "n": n,
            "start_s": round(start_s, 3),
            "pss_kb": sum(pss_kb(p) for p in pids),
            "rss_kb": sum(int(status(p, "VmRSS")) for p in pids),
            "processes": len(pids),
            "vmpeak_kb": int(status(self.sup.top(), "VmPeak")),
        }
        return result

    def floor(self, runs=50):
        """The service alone: from fork to its log line, with no supervisor in between."""
        times = []
        for i in range(runs):
            seen = len(self.starts())
            t0 = time.time()
            p = subprocess.Popen([self.script, f"floor{i}", self.log])
            line = wait_for("the direct start", lambda: next(
                (s for s in self.starts()[seen:] if s[0] == f"floor{i}"), None))
            times.append((line[2] - t0) * 1000)
            p.kill()
            p.wait()
        return round(statistics.median(times), 2)

    def teardown(self):
        pids = [p for _, p, _ in self.starts()]
        t0 = time.time()
        self.sup.stop()
        wait_for("every service gone", lambda: not any(alive(p) for p in pids))
        return round(time.time() - t0, 3), sum(alive(p) for p in pids)

    def respawn(self, kills=50):
        # Only a run of 5 s counts as a success that restarts at once.
        time.sleep(5.5)
        latencies = []
        names = sorted({s[0] for s in self.starts()})[:kills]
        for name in names:
            pid = [s for s in self.starts() if s[0] == name][-1][1]
            seen = len(self.starts())
            t0 = time.time()
            os.kill(pid, signal.SIGKILL)
            line = wait_for("the respawn", lambda: next(
                (s for s in self.starts()[seen:] if s[0] == name), None))
            latencies.append((line[2] - t0) * 1000)
        latencies.sort()
        return {
            "p50_ms": round(statistics.median(latencies), 2),
            "p90_ms": round(latencies[int(len(latencies) * 0.9) - 1], 2),
            "max_ms": round(latencies[-1], 2),
            "kills": len(latencies),
        }

    def idle(self, seconds=20):
        pids = self.sup.supervisor_pids()
        cpu0 = sum(cpu_ticks(p) for p in pids)
        ctx0 = sum(ctx_switches(p) for p in pids)
        time.sleep(seconds)
        return {
            "seconds": seconds,
            "cpu_ms": (sum(cpu_ticks(p) for p in pids) - cpu0) * 10,
            "wakeups": sum(ctx_switches(p) for p in pids) - ctx0,
        }

    def add_one(self):
        seen = len(self.starts())
        t0 = time.time()
        self.sup.add("added", f"{self.script} added {self.log}")
        line = wait_for("the added service", lambda: next(
            (s for s in self.starts()[seen:] if s[0] == "added"), None))
        return round((line[2] - t0) * 1000, 2)

    def crash_loop(self, seconds=30):
        self.fresh()
        self.sup.setup({"crasher": f"{self.crasher} crasher {self.log}"})
        self.sup.start()
        wait_for("the first start", lambda: self.starts())
        pids = self.sup.supervisor_pids()
        cpu0 = sum(cpu_ticks(p) for p in pids)
        time.sleep(seconds)
        cpu = (sum(cpu_ticks(p) for p in pids) - cpu0) * 10
        starts = len(self.starts())
        self.sup.stop()
        return {"seconds": seconds, "starts": starts, "cpu_ms": cpu}

    def kill9(self, n=10):
        self.fresh()
        self.sup.setup(self.services(n))
        self.sup.start()
        wait_for("the services", lambda: len(self.starts()) >= n)
        time.sleep(1)
        before = {s[0]: s[1] for s in self.starts()}
        self.sup.kill9_and_restart()
        time.sleep(3)
        running = {}
        for name, pid, _ in self.starts():
            if alive(pid):
                running.setdefault(name, []).append(pid)
        self.sup.stop()
        duplicated = sum(len(p) - 1 for p in running.values() if len(p) > 1)
        restarted = sum(1 for name, p in running.items() if before.get(name) not in p)
        return {"n": n, "running": len(running), "duplicated": duplicated, "restarted": restarted}


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "target", "going")
    root = tempfile.mkdtemp(prefix="going-bench-")
    sup = Going(binary, os.path.join(root, "going"))
    os.makedirs(sup.root)
    b = Bench(sup, sup.root)
    results = {"supervisor": sup.name, "version": sup.version(), "memory": []}
    try:
        results["floor_ms"] = b.floor()
        for n in (1, 100):
            m = b.memory_and_start(n)
            if n == 100:
                results["respawn"] = b.respawn()
                results["idle"] = b.idle()
            results["memory"].append(m)
            b.teardown()
        m = b.memory_and_start(1000)
        results["add_one_ms"] = b.add_one()
        results["memory"].append(m)
        results["teardown_1000_s"], results["left_behind"] = b.teardown()
        results["crash_loop"] = b.crash_loop()
        results["kill9"] = b.kill9()
    finally:
        b.cleanup()
        if sup.proc and sup.proc.poll() is None:
            sup.proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    mem = {m["n"]: m for m in results["memory"]}
    rows = [
        ("memory, PSS of all supervisor processes, N=100 / 1000",
         f"{mem[100]['pss_kb']} / {mem[1000]['pss_kb']} kB"),
        ("VmPeak of the top process, N=1 / 100 / 1000",
         f"{mem[1]['vmpeak_kb']} / {mem[100]['vmpeak_kb']} / {mem[1000]['vmpeak_kb']} kB"),
        ("supervisor processes, N=100", str(mem[100]["processes"])),
        ("respawn after kill -9, p50 / p90 / max (N=100, 50 kills)",
         f"{results['respawn']['p50_ms']} / {results['respawn']['p90_ms']} / {results['respawn']['max_ms']} ms"),
        ("the service started directly, to its log line (the floor), p50", f"{results['floor_ms']} ms"),
        ("start 100 / 1000 services", f"{mem[100]['start_s']} / {mem[1000]['start_s']} s"),
        ("add a service to 1000 running", f"{results['add_one_ms']} ms"),
        ("wake-ups in 20 s idle (N=100), CPU", f"{results['idle']['wakeups']}, {results['idle']['cpu_ms']} ms"),
        ("crash-looper starts in 30 s, supervisor CPU",
         f"{results['crash_loop']['starts']}, {results['crash_loop']['cpu_ms']} ms"),
        ("teardown of 1000, processes left behind",
         f"{results['teardown_1000_s']} s, {results['left_behind']}"),
        ("kill -9 of the supervisor (N=10), then restart: running / duplicated / restarted",
         f"{results['kill9']['running']} / {results['kill9']['duplicated']} / {results['kill9']['restarted']}"),
    ]
    table = f"| | {results['version']} |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
