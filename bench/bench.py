#!/usr/bin/env python3
"""make bench: measures a supervisor on the same tiny service, the numbers of issue 6.

Each service is a shell script that appends "NAME PID TIME" to a log and execs sleep:
the log line is when the service really started. Every metric is measured from outside,
from /proc and that log, and everything started is cleaned up by pid.

Today the script knows going; runit, daemontools, s6 and supervisord are to be added as
further Supervisor classes with the same methods (setup, start, add, stop, pids).
Usage: bench/bench.py [--only NAME] [GOING_BINARY]   (writes bench/results.md and .json)
"""

import json
import os
import resource
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


def nofile(pid):
    """The soft RLIMIT_NOFILE of a process."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class Supervisor:
    """What every supervisor has: its top process, started by `start` from `command`."""

    proc = None

    def start(self):
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def top(self):
        return self.proc.pid

    def kill9_and_restart(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.start()


class OneProcess(Supervisor):
    """going and supervisord: one process supervises them all; SIGTERM stops everything."""

    def supervisor_pids(self):
        return [self.proc.pid] if self.proc and alive(self.proc.pid) else []

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


class Going(OneProcess):
    name = "going"

    def __init__(self, binary, root):
        self.binary = os.path.abspath(binary)
        self.root = root
        self.conf = os.path.join(root, "conf")
        self.run = os.path.join(root, "run")
        self.proc = None

    def version(self):
        return subprocess.run([self.binary, "-V"], capture_output=True, text=True).stdout.strip()

    def setup(self, services, log="null"):
        """services: {name: command line}."""
        shutil.rmtree(self.conf, ignore_errors=True)
        os.makedirs(self.conf)
        for name, cmd in services.items():
            self.add(name, cmd, log)

    def add(self, name, cmd, log="null"):
        # Written aside, then renamed in: one inotify event, a complete file.
        tmp = os.path.join(self.root, f".{name}.new")
        with open(tmp, "w") as f:
            f.write(f"cmd={cmd}\nlog={log}\n")
        os.rename(tmp, os.path.join(self.conf, name))

    def command(self):
        return [self.binary, "-f", "-d", self.conf, "-r", self.run]


class ServiceDirs(Supervisor):
    """runit, daemontools and s6: a scan directory holding a directory per service, each
    with a `run` script, and a supervisor process per service."""

    def __init__(self, root):
        self.root = root
        self.scan = os.path.join(root, "scan")
        self.proc = None

    def setup(self, services):
        shutil.rmtree(self.scan, ignore_errors=True)
        os.makedirs(self.scan)
        for name, cmd in services.items():
            self.add(name, cmd, rescan=False)

    def add(self, name, cmd, rescan=True):
        # Built aside, then renamed in: the scanner never sees half a directory.
        tmp = os.path.join(self.root, f".{name}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        with open(os.path.join(tmp, "run"), "w") as f:
            f.write(f"#!/bin/sh\nexec {cmd}\n")
        os.chmod(os.path.join(tmp, "run"), 0o755)
        os.rename(tmp, os.path.join(self.scan, name))
        if rescan:
            self.rescan()

    def rescan(self):
        pass

    def supervisor_pids(self):
        if not self.proc or not alive(self.proc.pid):
            return []
        return [self.proc.pid] + [p for p in children(self.proc.pid) if alive(p)]


def children(ppid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def dpkg_version(package):
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
    return f"{package} {r.stdout.strip()}"


class Runit(ServiceDirs):
    name = "runit"

    def version(self):
        return dpkg_version("runit")

    def command(self):
        return ["runsvdir", "-P", self.scan]

    def stop(self):
        # runsvdir on SIGHUP: TERM to every runsv, which stops its service, and exit.
        supervisors = self.supervisor_pids()
        self.proc.send_signal(signal.SIGHUP)
        self.proc.wait(timeout=60)
        wait_for("every runsv gone", lambda: not any(alive(p) for p in supervisors))


class Daemontools(ServiceDirs):
    name = "daemontools"

    def version(self):
        return dpkg_version("daemontools")

    def command(self):
        return ["svscan", self.scan]

    def stop(self):
        supervisors = self.supervisor_pids()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        dirs = [os.path.join(self.scan, d) for d in os.listdir(self.scan)]
        for i in range(0, len(dirs), 200):
            subprocess.run(["svc", "-dx"] + dirs[i:i + 200], stderr=subprocess.DEVNULL)
        wait_for("every supervise gone", lambda: not any(alive(p) for p in supervisors))


class S6(ServiceDirs):
    name = "s6"

    def version(self):
        return dpkg_version("s6")

    def command(self):
        # Room for 1000 services and one more (the default cap is 1000 in all).
        return ["s6-svscan", "-c", "2000", self.scan]

    def rescan(self):
        subprocess.run(["s6-svscanctl", "-a", self.scan])

    def stop(self):
        supervisors = self.supervisor_pids()
        subprocess.run(["s6-svscanctl", "-t", self.scan])
        self.proc.wait(timeout=60)
        wait_for("every s6-supervise gone", lambda: not any(alive(p) for p in supervisors))


class Supervisord(OneProcess):
    name = "supervisord"

    def __init__(self, root):
        self.root = root
        self.confd = os.path.join(root, "conf.d")
        self.conf = os.path.join(root, "supervisord.conf")
        self.proc = None

    def version(self):
        return dpkg_version("supervisor")

    def setup(self, services):
        shutil.rmtree(self.confd, ignore_errors=True)
        os.makedirs(self.confd)
        with open(self.conf, "w") as f:
            f.write(f"""[supervisord]
nodaemon=true
logfile={self.root}/supervisord.log
pidfile={self.root}/supervisord.pid
[unix_http_server]
file={self.root}/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{self.root}/supervisor.sock
[include]
files = {self.confd}/*.conf
""")
        for name, cmd in services.items():
            self.add(name, cmd, update=False)

    def add(self, name, cmd, update=True):
        with open(os.path.join(self.confd, f"{name}.conf"), "w") as f:
            f.write(f"[program:{name}]\ncommand={cmd}\nautorestart=true\n")
        if update:
            subprocess.run(["supervisorctl", "-c", self.conf, "update"], stdout=subprocess.DEVNULL)

    def command(self):
        return ["supervisord", "-c", self.conf]


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
        self._lines, self._offset = [], 0  # what starts() has read of the log
        self.started = []  # every service pid ever seen, for the clean-up
        self.orphans = []  # supervisor processes a stop did not reach

    def starts(self):
        """[(name, pid, time)] from the log, read incrementally: at 10,000 services a full
        re-read every 2 ms would take a core from the supervisor being measured."""
        try:
            with open(self.log) as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return self._lines
        whole = chunk[:chunk.rfind("\n") + 1]  # a line being written waits for its end
        for line in whole.splitlines():
            parts = line.split()
            if len(parts) == 3:
                self._lines.append((parts[0], int(parts[1]), float(parts[2])))
        self._offset += len(whole.encode())
        return self._lines

    def services(self, n, prefix="s"):
        return {f"{prefix}{i}": f"{self.script} {prefix}{i} {self.log}" for i in range(n)}

    def fresh(self):
        for _, pid, _ in self.starts():
            self.started.append(pid)  # still cleaned up at the end
        if os.path.exists(self.log):
            os.remove(self.log)
        self._lines, self._offset = [], 0

    def cleanup(self):
        for _, pid, _ in self.starts():
            self.started.append(pid)
        # Supervisors first, so that they restart nothing that is killed after them.
        for pid in self.orphans + self.started:
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

    def start_floor(self, n=1000):
        """n services spawned directly from a loop (posix_spawn), to their log lines: what
        starting them costs with no supervisor, the floor of "start 1000"."""
        self.fresh()
        t0 = time.time()
        pids = [os.posix_spawn(self.script, [self.script, f"direct{i}", self.log], {"PATH": os.defpath})
                for i in range(n)]
        wait_for("the direct starts", lambda: len(self.starts()) >= n)
        took = time.time() - t0
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)
        return round(took, 3)

    def teardown(self):
        pids = [p for _, p, _ in self.starts()]
        t0 = time.time()
        self.sup.stop()
        wait_for("every service gone", lambda: not any(alive(p) for p in pids))
        return round(time.time() - t0, 3), sum(alive(p) for p in pids)

    def respawn(self, kills=50, spread=False):
        """Kills `kills` services one at a time, each once its predecessor is back: the first
        names in order, or (`spread`) names spread evenly over all of them, early and late
        starters alike."""
        # Only a run of 5 s counts as a success that restarts at once.
        time.sleep(5.5)
        latencies = []
        names = sorted({s[0] for s in self.starts()})
        names = names[::max(1, len(names) // kills)][:kills] if spread else names[:kills]
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

    def add_one(self, times=5):
        """One file dropped into the directory of 1000, to the new service's log line: the
        median of `times` such adds, each a new service, apart enough to be separate."""
        took = []
        for i in range(times):
            name = f"added{i}"
            seen = len(self.starts())
            t0 = time.time()
            self.sup.add(name, f"{self.script} {name} {self.log}")
            line = wait_for("the added service", lambda: next(
                (s for s in self.starts()[seen:] if s[0] == name), None))
            took.append((line[2] - t0) * 1000)
            time.sleep(0.3)
        return round(statistics.median(took), 2)

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

    def big(self, n=10000):
        """going alone: n services, each with its output pipe (log=syslog, the default), going
        started with a soft fd limit of 1024: it must raise its own, and only its own. First
        the floor: the same n scripts spawned from a loop, with nothing else running."""
        start_floor_s = self.start_floor(n)
        self.fresh()
        self.sup.setup(self.services(n), log="syslog")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        low = min(1024, hard)
        t0 = time.time()
        self.sup.proc = subprocess.Popen(
            self.sup.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)))
        wait_for(f"{n} services to start", lambda: len({s[0] for s in self.starts()}) >= n, timeout=600)
        start_s = time.time() - t0
        time.sleep(1)
        top = self.sup.top()
        service = self.starts()[0][1]
        result = {
            "n": n,
            "start_s": round(start_s, 3),
            "running": sum(alive(p) for _, p, _ in self.starts()),
            "pss_kb": pss_kb(top),
            "vmpeak_kb": int(status(top, "VmPeak")),
            "fds": len(os.listdir(f"/proc/{top}/fd")),
            "service_nofile": nofile(service),
            "nofile_given": low,
            "start_floor_s": start_floor_s,
        }
        result["respawn"] = self.respawn(kills=20, spread=True)
        result["teardown_s"], result["left_behind"] = self.teardown()
        return result

    def kill9(self, n=10):
        self.fresh()
        self.sup.setup(self.services(n))
        self.sup.start()
        wait_for("the services", lambda: len(self.starts()) >= n)
        time.sleep(1)
        before = {s[0]: s[1] for s in self.starts()}
        old_supervisors = [p for p in self.sup.supervisor_pids() if p != self.sup.top()]
        self.sup.kill9_and_restart()
        time.sleep(3)
        running = {}
        for name, pid, _ in self.starts():
            if alive(pid):
                running.setdefault(name, []).append(pid)
        self.sup.stop()
        time.sleep(1)
        # What the stop did not reach: orphaned per-service supervisors and their services.
        left = [p for p in old_supervisors + [pid for _, pid, _ in self.starts()] if alive(p)]
        self.orphans.extend(left)
        duplicated = sum(len(p) - 1 for p in running.values() if len(p) > 1)
        restarted = sum(1 for name, p in running.items() if before.get(name) not in p)
        return {"n": n, "running": len(running), "duplicated": duplicated, "restarted": restarted,
                "left_behind": len(left)}


def run_one(sup):
    b = Bench(sup, sup.root)
    results = {"supervisor": sup.name, "version": sup.version(), "memory": []}
    try:
        results["floor_ms"] = b.floor()
        results["start_floor_s"] = b.start_floor()
        for n in (1, 100):
            m = b.memory_and_start(n)
            if n == 100:
                results["respawn"] = b.respawn()
                results["idle"] = b.idle()
            results["memory"].append(m)
            b.teardown()
        m = b.memory_and_start(1000)
        try:
            results["add_one_ms"] = b.add_one()
        except TimeoutError:
            results["add_one_ms"] = None  # svscan and runsvdir take 1000 services at most
        results["memory"].append(m)
        results["teardown_1000_s"], results["left_behind"] = b.teardown()
        results["crash_loop"] = b.crash_loop()
        results["kill9"] = b.kill9()
        if sup.name == "going":  # the peers stop at 500 (supervisord's fds) or 1000
            results["big"] = b.big()
    finally:
        b.cleanup()
        for p in sup.supervisor_pids():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return results


ROWS = [
    ("memory, PSS of all supervisor processes, N=100 / 1000",
     lambda r, m: f"{m[100]['pss_kb']} / {m[1000]['pss_kb']} kB"),
    ("RSS of all supervisor processes, N=100 / 1000",
     lambda r, m: f"{m[100]['rss_kb']} / {m[1000]['rss_kb']} kB"),
    ("VmPeak of the top process, N=1 / 100 / 1000",
     lambda r, m: f"{m[1]['vmpeak_kb']} / {m[100]['vmpeak_kb']} / {m[1000]['vmpeak_kb']} kB"),
    ("supervisor processes, N=100", lambda r, m: str(m[100]["processes"])),
    ("respawn after kill -9, p50 / p90 / max (N=100, 50 kills)",
     lambda r, m: f"{r['respawn']['p50_ms']} / {r['respawn']['p90_ms']} / {r['respawn']['max_ms']} ms"),
    ("the service started directly, to its log line (the floor), p50", lambda r, m: f"{r['floor_ms']} ms"),
    ("start 100 / 1000 services", lambda r, m: f"{m[100]['start_s']} / {m[1000]['start_s']} s"),
    ("the 1000 services started directly from a loop (the floor)", lambda r, m: f"{r['start_floor_s']} s"),
    ("add a service to 1000 running (median of 5 adds)",
     lambda r, m: "cannot (1000 max)" if r["add_one_ms"] is None else f"{r['add_one_ms']} ms"),
    ("wake-ups in 20 s idle (N=100), CPU", lambda r, m: f"{r['idle']['wakeups']}, {r['idle']['cpu_ms']} ms"),
    ("crash-looper starts in 30 s, supervisor CPU",
     lambda r, m: f"{r['crash_loop']['starts']}, {r['crash_loop']['cpu_ms']} ms"),
    ("teardown of 1000, processes left behind", lambda r, m: f"{r['teardown_1000_s']} s, {r['left_behind']}"),
    ("kill -9 of the top supervisor (N=10), restart, stop: running / duplicated / restarted / left behind",
     lambda r, m: f"{r['kill9']['running']} / {r['kill9']['duplicated']} / {r['kill9']['restarted']}"
                  f" / {r['kill9'].get('left_behind', '-')}"),
    ("10,000 services with output pipes: running, start, VmPeak / PSS, fds, respawn p50, teardown",
     lambda r, m: f"{r['big']['running']}, {r['big']['start_s']} s, {r['big']['vmpeak_kb']} /"
                  f" {r['big']['pss_kb']} kB, {r['big']['fds']}, {r['big']['respawn']['p50_ms']} ms,"
                  f" {r['big']['teardown_s']} s"),
    ("10,000: soft fd limit going was given / a service has",
     lambda r, m: f"{r['big']['nofile_given']} / {r['big']['service_nofile']}"),
    ("10,000: the same scripts started directly from a loop (the floor); start / floor",
     lambda r, m: f"{r['big']['start_floor_s']} s; {r['big']['start_s'] / r['big']['start_floor_s']:.2f}×"),
    ("respawn p50 at N=100 / N=10,000 (20 kills, spread over the 10,000); ratio",
     lambda r, m: f"{r['respawn']['p50_ms']} / {r['big']['respawn']['p50_ms']} ms;"
                  f" {r['big']['respawn']['p50_ms'] / r['respawn']['p50_ms']:.2f}×"),
]


def main():
    args = sys.argv[1:]
    only = None
    if "--only" in args:  # measure one supervisor again, keeping the others' results
        i = args.index("--only")
        only = args[i + 1]
        del args[i:i + 2]
    binary = args[0] if args else os.path.join(HERE, "..", "target", "going")
    root = tempfile.mkdtemp(prefix="going-bench-")
    candidates = [(Going, "going"), (Daemontools, "svscan"), (Runit, "runsvdir"), (S6, "s6-svscan"),
                  (Supervisord, "supervisord")]
    all_results = []
    if only:
        with open(os.path.join(HERE, "results.json")) as f:
            all_results = [r for r in json.load(f) if r["supervisor"] != only]
        candidates = [c for c in candidates if c[0].name == only]
    try:
        for cls, program in candidates:
            if cls is not Going and shutil.which(program) is None:
                print(f"{cls.name}: not installed, left out (apt-get install it to compare)", file=sys.stderr)
                continue
            dir_ = os.path.join(root, cls.name)
            os.makedirs(dir_)
            sup = Going(binary, dir_) if cls is Going else cls(dir_)
            print(f"measuring {sup.version()} ...", file=sys.stderr)
            try:
                all_results.append(run_one(sup))
            except Exception as e:  # one peer failing does not spoil the others' numbers
                print(f"{sup.name}: {e!r}", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    order = ["going", "daemontools", "runit", "s6", "supervisord"]
    all_results.sort(key=lambda r: order.index(r["supervisor"]))
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(all_results, f, indent=2)
    head = "| | " + " | ".join(r["version"] for r in all_results) + " |\n"
    head += "|---" * (len(all_results) + 1) + "|\n"
    body = ""
    for label, cell in ROWS:
        cells = []
        for r in all_results:
            try:
                cells.append(cell(r, {m["n"]: m for m in r["memory"]}))
            except (KeyError, IndexError):
                cells.append("-")
        body += f"| {label} | " + " | ".join(cells) + " |\n"
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(head + body)
    print(head + body)


if __name__ == "__main__":
    main()
