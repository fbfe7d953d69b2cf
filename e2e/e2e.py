#!/usr/bin/env python3
"""going end to end: the Debian package, under busybox init, logging to rsyslog,
supervising redis and nginx. Run by `make e2e` (e2e/run), as root:

    e2e.py PACKAGE.deb

boot.sh installs the package into a copy-on-write view of this machine and boots busybox
init as PID 1 of a private pid namespace, with an inittab whose respawn lines start going
and rsyslogd. This script watches from outside: processes through /proc, the services
through their unix sockets, rsyslog's files. Every wait has a deadline; no fixed sleeps.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKS = []  # (name, passed, detail)


class Failed(Exception):
    pass


def check(name, ok, detail=""):
    CHECKS.append((name, bool(ok), detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        raise Failed(name)


def wait_for(what, fn, timeout):
    """fn() until it returns something true, or Failed after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


# ---------------------------------------------------------------- processes, from outside


def status_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return None


def ns_of(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


class Machine:
    """The booted namespace, seen from this machine's /proc."""

    def __init__(self, holder):
        self.holder = holder
        self.init = None  # host pid of busybox init
        self.ns = None

    def find_init(self):
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            st = status_of(p)
            if not st or st.get("NSpid", "").split()[-1:] != ["1"] or len(st["NSpid"].split()) < 2:
                continue
            # a descendant of our holder, not some other container's init
            q = int(p)
            while q > 1:
                s = status_of(q)
                if not s:
                    break
                if q == self.holder:
                    if st.get("Name") == "init" or "busybox" in cmdline(int(p)):
                        self.init, self.ns = int(p), ns_of(p)
                        return True
                    break
                q = int(s["PPid"])
        return False

    def procs(self):
        """Every process of the namespace: (host pid, ns pid, name, cmdline)."""
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit() and ns_of(p) == self.ns:
                st = status_of(p)
                if st and st.get("State", "")[:1] != "Z":
                    out.append((int(p), int(st["NSpid"].split()[-1]), st["Name"], cmdline(int(p))))
        return out

    def named(self, name):
        return [p for p in self.procs() if p[2] == name]


def age(pid):
    """Seconds since the process started."""
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return up - start_time(pid) / os.sysconf("SC_CLK_TCK")


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except OSError:
        return None


# ---------------------------------------------------------------- the services, from outside


def ask(path, request, timeout=1.0):
    """Send a request on a unix stream socket, return everything it answers (None: refused)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk
                if request == b"PING\r\n" and data.endswith(b"\r\n"):
                    return data
    except OSError:
        return None


def ping(shared):
    return ask(f"{shared}/redis.sock", b"PING\r\n") == b"+PONG\r\n"


def page(sock):
    got = ask(sock, b"GET / HTTP/1.0\r\nHost: e2e\r\n\r\n")
    if got and got.startswith(b"HTTP/1.1 200"):
        return got.split(b"\r\n\r\n", 1)[1].decode().strip()
    return None


# ---------------------------------------------------------------- rsyslog's files

LINE = re.compile(r"^(\S+) (\w+)\.(\w+) ([^:\s]+): ?(.*)$")


def log(shared, name="daemon.log"):
    """rsyslog's lines: (time, facility, severity, tag, message)."""
    try:
        with open(f"{shared}/log/{name}") as f:
            text = f.read()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            t = datetime.fromisoformat(m[1]).timestamp()
            out.append((t, m[2], m[3], m[4], m[5]))
    return out


def going_says(shared, pattern):
    rx = re.compile(pattern)
    return [e for e in log(shared) if e[3].startswith("going[") and rx.search(e[4])]


# ---------------------------------------------------------------- the namespace's files


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def prepare(deb):
    d = tempfile.mkdtemp(prefix="going-e2e.")
    os.chmod(d, 0o755)
    for sub in ("layer", "root", "shared"):
        os.mkdir(f"{d}/{sub}")
    s = f"{d}/shared"
    for sub in ("going.d", "log", "spool", "redis", "nginx", "nginx/v1", "nginx/v2"):
        os.makedirs(f"{s}/{sub}", mode=0o755)
    shutil.copy(deb, f"{s}/going.deb")
    write(f"{s}/console.log", "")
    os.mkfifo(f"{s}/gate")
    # going comes first and rsyslogd waits at the gate, so that going starts before the
    # syslog socket exists and must connect once it appears. The shutdown line lets going
    # stop its services before init signals every process (README.Debian says the same).
    write(
        f"{s}/inittab",
        "::shutdown:/bin/sh -c '/bin/busybox killall going; "
        "while /bin/busybox pidof going >/dev/null; do /bin/busybox usleep 20000; done'\n"
        "::respawn:/usr/sbin/going -l /e2e/log.sock\n"
        "::respawn:/bin/sh /e2e/rsyslogd.sh\n",
    )
    write(
        f"{s}/rsyslogd.sh",
        "[ -e /e2e/gate.opened ] || { read _ < /e2e/gate; : > /e2e/gate.opened; }\n"
        "exec /usr/sbin/rsyslogd -n -f /e2e/rsyslog.conf -i /e2e/rsyslogd.pid\n",
    )
    write(
        f"{s}/rsyslog.conf",
        'global(workDirectory="/e2e/spool")\n'
        'module(load="imuxsock" SysSock.Use="off")\n'
        'input(type="imuxsock" Socket="/e2e/log.sock" RateLimit.Interval="0")\n'
        'template(name="e2e" type="string" string="%timegenerated:::date-rfc3339% '
        '%syslogfacility-text%.%syslogseverity-text% %syslogtag%%msg%\\n")\n'
        'daemon.* action(type="omfile" file="/e2e/log/daemon.log" template="e2e")\n'
        '*.*;daemon.none action(type="omfile" file="/e2e/log/other.log" template="e2e")\n',
    )
    write(
        f"{s}/redis.conf",
        "port 0\nunixsocket /e2e/redis.sock\nunixsocketperm 700\ndaemonize no\n"
        'save ""\nappendonly no\ndir /e2e/redis\nlogfile ""\n',
    )
    for v, workers in (("v1", 2), ("v2", 3)):
        write(f"{s}/nginx/{v}/index.html", f"served by going, {v}\n")
        write(
            f"{s}/nginx/{v}.conf",
            f"daemon off;\nuser root;\nworker_processes {workers};\npid /e2e/nginx/{v}.pid;\n"
            "error_log stderr notice;\nevents { worker_connections 64; }\n"
            "http {\n  access_log /dev/stdout;\n"
            f"  server {{ listen unix:/e2e/nginx-{v}.sock; root /e2e/nginx/{v}; }}\n}}\n",
        )
    write(f"{s}/going.d/redis", "# redis in the foreground, on a unix socket, ready once it says so over sd_notify\n"
          "cmd=/usr/bin/redis-server /e2e/redis.conf --supervised systemd\nready=notify\n")
    write(f"{s}/going.d/nginx", "cmd=/usr/sbin/nginx -e stderr -c /e2e/nginx/v1.conf\nafter=redis\n")
    write(f"{s}/going.d/crashy", "cmd=/bin/sh -c 'echo crashy is crashing; exit 3'\n")
    return d


# ---------------------------------------------------------------- the checks


def host_knows_going():
    r = subprocess.run(["dpkg-query", "-W", "going"], capture_output=True)
    return r.returncode == 0


def run(deb):
    known = host_knows_going()
    d = prepare(deb)
    s = f"{d}/shared"
    boot_log = open(f"{d}/boot.log", "w")
    holder = subprocess.Popen(
        ["unshare", "-m", "sh", f"{HERE}/boot.sh", d],
        stdout=boot_log,
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
    )
    m = Machine(holder.pid)
    try:
        steps(m, d, s, holder)
        check("this machine's own dpkg database is untouched", host_knows_going() == known)
    except Failed as e:
        print(f"\ne2e FAILED: {e}\n", flush=True)
        for name in ("boot.log", "shared/console.log", "shared/log/daemon.log", "shared/log/other.log"):
            try:
                with open(f"{d}/{name}") as f:
                    lines = f.read().splitlines()[-40:]
            except OSError:
                continue
            print(f"--- {name} (last {len(lines)} lines)")
            print("\n".join(lines))
        return 1
    finally:
        if m.init and status_of(m.init):
            os.kill(m.init, signal.SIGKILL)  # the kernel kills the whole namespace with it
        if holder.poll() is None:
            try:
                holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
        boot_log.close()
        if os.environ.get("E2E_KEEP"):
            print(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)
    return 0


def steps(m, d, s, holder):
    wait_for("busybox init to boot", lambda: m.find_init() or holder.poll() is not None, 120)
    check("the package installs (dpkg -i)", m.init, "see boot.log" if not m.init else "")
    with open(f"{s}/dpkg-L") as f:
        files = set(f.read().split())
    want = {"/usr/sbin/going", "/usr/share/man/man8/going.8.gz", "/usr/share/man/man5/going.d.5.gz",
            "/etc/going.d", "/usr/share/doc/going/README.Debian", "/usr/share/doc/going/copyright"}
    check("the package holds binary, man pages, /etc/going.d, docs", want <= files, ", ".join(sorted(want - files)))

    # going first: it runs and starts its services while rsyslogd's socket does not exist.
    wait_for("redis to answer PING", lambda: ping(s), 20)
    wait_for("nginx to serve its page", lambda: page(f"{s}/nginx-v1.sock"), 20)
    check("going runs as init's child", [p for p in m.named("going")], str(m.named("going")))
    check("redis answers PING through going", ping(s))
    check("nginx serves a page through going", page(f"{s}/nginx-v1.sock") == "served by going, v1")
    check("going started before the syslog socket existed", not os.path.exists(f"{s}/log.sock"))
    with open(f"{s}/gate", "w"):
        pass  # open the gate: init's rsyslogd.sh goes on to exec rsyslogd
    wait_for("rsyslogd's socket", lambda: os.path.exists(f"{s}/log.sock"), 20)

    page(f"{s}/nginx-v1.sock")
    nginx_master = [p for p in m.named("nginx") if "master" in p[3]]
    out = wait_for("nginx's access line in rsyslog", lambda: [e for e in log(s) if e[3] == f"nginx[{nginx_master[0][1]}]" and '"GET / HTTP/1.0" 200' in e[4]], 5)
    check("nginx's access log (its stdout) lands in rsyslog tagged nginx[PID]", out[0][1] == "daemon", out[0][4])
    console = open(f"{s}/console.log").read()
    check("before the socket existed, going wrote to init's console instead", "going[" in console and "started" in console)
    lines = console.splitlines()
    first = lambda pat: next((i for i, l in enumerate(lines) if re.search(pat, l)), None)
    ready, nginx_start = first(r"going\[\d+\]: redis\[\d+\]: ready after "), first(r"going\[\d+\]: nginx\[\d+\]: started$")
    check("redis said READY=1 over NOTIFY_SOCKET (ready=notify), and nginx (after=redis) started only then",
          ready is not None and nginx_start is not None and ready < nginx_start,
          (lines[ready] if ready is not None else "no ready line") + " / " + (lines[nginx_start] if nginx_start is not None else "no nginx start"))

    # Editing nginx's file restarts it with the new settings: a new master with 3 workers,
    # none of the old processes left.
    before = m.named("nginx")
    check("nginx: a master and 2 workers", len(before) == 3, str(before))
    write(f"{s}/going.d/nginx", "cmd=/usr/sbin/nginx -e stderr -c /e2e/nginx/v2.conf\n")
    wait_for("nginx v2 to serve", lambda: page(f"{s}/nginx-v2.sock"), 10)
    check("editing nginx's file restarts it with the new settings", page(f"{s}/nginx-v2.sock") == "served by going, v2")
    after = wait_for("3 workers", lambda: len(m.named("nginx")) == 4 and m.named("nginx"), 5)
    old_pids = {p[0] for p in before}
    check("the old nginx master and workers are gone, the new one has 3 workers",
          not old_pids & {p[0] for p in after} and not [p for p in before if status_of(p[0])], str(after))

    # kill -9 redis after it ran a while: back at once. going reconnected to syslog: its
    # events about it land in rsyslog.
    redis = wait_for("one redis-server", lambda: m.named("redis-server"), 5)
    check("one redis-server", len(redis) == 1, str(redis))
    old = redis[0]
    # A service that ran less than 5 s is a fast failure and waits 1 s; one that ran
    # longer is started again at once, which is what this measures.
    wait_for("redis to have run 5 s", lambda: age(old[0]) > 5.1, 10)
    killed_at = time.monotonic()
    os.kill(old[0], signal.SIGKILL)
    wait_for("redis to answer PING again", lambda: ping(s) and m.named("redis-server") and m.named("redis-server")[0][0] != old[0], 5)
    back = time.monotonic() - killed_at
    check("kill -9 redis: back, answering PING, within a second", back < 1.0, f"{back * 1000:.0f} ms")
    new = m.named("redis-server")[0]
    ev = wait_for(
        "going's event about redis in rsyslog",
        lambda: going_says(s, rf"^redis\[{old[1]}\]: killed by SIGKILL after"), 5)
    check("going reconnected: its events land in rsyslog, facility daemon", all(e[1] == "daemon" for e in ev), str(ev[0]))
    ev = wait_for("redis's started event", lambda: going_says(s, rf"^redis\[{new[1]}\]: started$"), 5)
    wait_for("redis ready again", lambda: going_says(s, rf"^redis\[{new[1]}\]: ready after "), 5)
    check("redis's restart restarted nothing after it: nginx runs on",
          {p[0] for p in m.named("nginx")} == {p[0] for p in after}, str(m.named("nginx")))
    check("going's own tag is going[PID]", ev[0][3] == f"going[{m.named('going')[0][1]}]", ev[0][3])
    out = wait_for("redis's output in rsyslog", lambda: [e for e in log(s) if e[3] == f"redis[{new[1]}]" and "ready to accept connections" in e[4].lower()], 5)
    check("redis's output lands in rsyslog tagged redis[PID], facility daemon", out[0][1] == "daemon", out[0][4])

    # kill -9 going: init starts it again, and it adopts redis and nginx.
    going = m.named("going")
    check("one going", len(going) == 1, str(going))
    keep = {p[0]: start_time(p[0]) for p in m.named("redis-server") + m.named("nginx")}
    mark = time.time()
    os.kill(going[0][0], signal.SIGKILL)
    wait_for("init to start going again", lambda: [p for p in m.named("going") if p[0] != going[0][0]], 5)
    new_going = m.named("going")[0]
    adopted = wait_for(
        "going to adopt redis and nginx",
        lambda: len({e[4].split("[")[0] for e in going_says(s, r"^(redis|nginx)\[\d+\]: adopted") if e[0] >= mark - 0.5}) == 2
        and going_says(s, r"^(redis|nginx)\[\d+\]: adopted"), 10)
    check("init respawned going; it adopted redis and nginx", adopted, f"going is now pid {new_going[1]} in the namespace")
    wait_for("crashy's next start under the new going", lambda: [e for e in going_says(s, r"^crashy\[\d+\]: started$") if e[0] > mark], 10)
    now = {p[0]: start_time(p[0]) for p in m.named("redis-server") + m.named("nginx")}
    check("redis and nginx neither restarted nor duplicated", now == keep, f"before {keep}, after {now}")
    restarted = [e for e in going_says(s, r"^(redis|nginx)\[\d+\]: started$") if e[0] > mark]
    check("no start of redis or nginx logged after going's restart", not restarted, str(restarted))
    check("redis still answers, nginx still serves", ping(s) and page(f"{s}/nginx-v2.sock"))
    # The admin's view, from inside: going status through the control socket.
    st = subprocess.run(["nsenter", "-t", str(m.init), "-m", "-p", "-r", "-w", "/usr/sbin/going", "status"],
                        capture_output=True, text=True)
    rows = {line.split()[0]: line.split()[1:3] for line in st.stdout.splitlines()[1:] if line.strip()}
    nginx_ns = [p for p in m.named("nginx") if "master" in p[3]][0][1]
    check("going status, run inside, shows redis ready (adopted ready) and nginx running, with their pids",
          st.returncode == 0 and rows.get("redis") == ["ready", str(new[1])]
          and rows.get("nginx") == ["running", str(nginx_ns)], st.stdout.strip() or st.stderr.strip())
    master = [p for p in m.named("nginx") if "master" in p[3]][0]
    out = wait_for("nginx's access line after the adoption", lambda: [
        e for e in log(s) if e[0] > mark and e[3] == f"nginx[{master[1]}]" and '"GET / HTTP/1.0" 200' in e[4]], 5)
    check("the new going reads the adopted nginx's output again", out, out[0][4])

    # Removing nginx's file stops the master and every worker.
    nginx = m.named("nginx")
    os.unlink(f"{s}/going.d/nginx")
    wait_for("every nginx process to end", lambda: not m.named("nginx"), 15)
    check("removing nginx's file stops it and every worker process", not [p for p in nginx if status_of(p[0])])
    check("nothing answers on nginx's socket", page(f"{s}/nginx-v2.sock") is None)

    # The crash-looper's starts follow the backoff: after failure N, the next start comes
    # 2^(N-1) s later (at most 60 s). A new going starts it afresh, so pairs are taken
    # within one going.
    def pairs():
        evs = going_says(s, r"^crashy(: failed \d+ times? in a row, next start in \d+s|\[\d+\]: started)$")
        out = []
        for a, b in zip(evs, evs[1:]):
            f = re.search(r"failed (\d+) times? in a row, next start in (\d+)s", a[4])
            if f and b[4].endswith("started") and a[3] == b[3]:  # the same going
                out.append((a[3], int(f[1]), int(f[2]), b[0] - a[0]))
        # three failures in a row of one going: N, N+1, N+2
        for i in range(len(out) - 2):
            run = out[i:i + 3]
            if len({r[0] for r in run}) == 1 and [r[1] for r in run] == list(range(run[0][1], run[0][1] + 3)):
                return [r[1:] for r in run]
        return None

    got = wait_for("three quarantines in a row of the crash-looper", pairs, 40)
    ok = all(d == min(2 ** (n - 1), 60) and d - 0.05 <= t <= d + 0.3 for n, d, t in got)
    check("the crash-looper's starts follow the backoff schedule", ok,
          ", ".join(f"failure {n}: wait {d}s, next start {t:.3f}s later" for n, d, t in got))
    runs = [e for e in log(s) if e[3].startswith("crashy[") and e[4] == "crashy is crashing"]
    check("the crash-looper's output is in rsyslog, tagged crashy[PID]", runs, f"{len(runs)} lines")

    # Stopping init: the shutdown line lets going stop everything, then init ends.
    procs = m.procs()
    os.kill(m.init, signal.SIGUSR2)  # busybox init: poweroff
    wait_for("init to end", lambda: not status_of(m.init), 30)
    left = [p for p in procs if status_of(p[0]) and start_time(p[0]) is not None and ns_of(p[0]) == m.ns]
    check("stopping init leaves no process behind", not left, str(left))
    check("going stopped its services and exited before init killed everything",
          going_says(s, r"^going: all services stopped, exiting$"))
    wait_for("the purge", lambda: holder.poll() is not None, 60)
    with open(f"{d}/boot.log") as f:
        boot = f.read()
    check("the package purges clean (dpkg --purge)", holder.returncode == 0 and "purged: nothing of going is left" in boot,
          boot.strip().splitlines()[-1])


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: e2e.py PACKAGE.deb")
    rc = run(os.path.abspath(sys.argv[1]))
    passed = sum(1 for c in CHECKS if c[1])
    print(f"\ne2e: {passed} passed, {len(CHECKS) - passed} failed")
    sys.exit(rc)


if __name__ == "__main__":
    main()
