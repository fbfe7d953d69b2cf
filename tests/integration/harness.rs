//! Runs the real going binary in a temporary directory — its own CONFDIR, RUNDIR and a
//! datagram socket standing in for syslog — and waits for what it logs, always with a
//! deadline. Nothing outside the temporary directory is touched, so tests run in parallel:
//! where the cgroup2 hierarchy is writable, going runs in a cgroup of the test's own
//! (removed afterwards, with whatever is left in it), and uses cgroups there as it would
//! at its default place; elsewhere it runs with `-c off`.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_going");
/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// How long going may take to stop its services and exit after SIGTERM, unless a test
/// says why it must take longer (`Going::stop_within`): a lost SIGTERM would make it wait
/// out a service's stop_timeout.
pub const STOP: Duration = Duration::from_secs(2);

/// Tests run side by side, many at once; a test that loads the machine (a thousand
/// services, ten thousand files) or measures how quickly going answers runs alone:
/// `alone()` waits for the others and keeps new ones out until dropped. Every `Going`
/// holds a shared turn.
static LANE: std::sync::RwLock<()> = std::sync::RwLock::new(());

thread_local! {
    /// Whether this thread runs alone now (its Goings then take no turn of their own).
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The turns this thread holds: only the first waits for one, so that a test with a
    /// second Going never waits behind a test that waits to run alone.
    static TURNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The shared turn of this thread while it holds any.
    static HELD: std::cell::RefCell<Option<std::sync::RwLockReadGuard<'static, ()>>> =
        const { std::cell::RefCell::new(None) };
}

/// The machine to this test alone, until the guard is dropped.
pub struct Alone(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>);

pub fn alone() -> Alone {
    let guard = LANE.write().unwrap_or_else(|e| e.into_inner());
    ALONE.with(|a| a.set(true));
    Alone(guard)
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE.with(|a| a.set(false));
    }
}

/// A turn among the tests that run side by side, held by the thread until its last Turn
/// is dropped.
pub struct Turn;

pub fn turn() -> Turn {
    let first = TURNS.with(|t| t.replace(t.get() + 1)) == 0;
    if first && !ALONE.with(|a| a.get()) {
        let guard = LANE.read().unwrap_or_else(|e| e.into_inner());
        HELD.with(|h| *h.borrow_mut() = Some(guard));
    }
    Turn
}

impl Drop for Turn {
    fn drop(&mut self) {
        if TURNS.with(|t| t.replace(t.get() - 1)) == 1 {
            HELD.with(|h| h.borrow_mut().take());
        }
    }
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("going-test-{}-{n}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One syslog line: its priority (facility * 8 + severity) and the message after the tag.
#[derive(Clone, Debug)]
pub struct Line {
    pub pri: u8,
    pub tag: String,
    pub msg: String,
    pub at: Instant,
}

pub const ERR: u8 = 3 * 8 + 3;
pub const WARNING: u8 = 3 * 8 + 4;
pub const NOTICE: u8 = 3 * 8 + 5;
pub const INFO: u8 = 3 * 8 + 6;

/// `<PRI>TAG[PID]: MESSAGE`, as going sends it (the syslogd adds time and host).
fn parse(d: &[u8]) -> Line {
    let s = String::from_utf8_lossy(d);
    let close = s.find('>').unwrap();
    let pri = s[1..close].parse().unwrap();
    let rest = &s[close + 1..];
    let end = rest.find("]: ").unwrap();
    Line {
        pri,
        tag: rest[..end + 1].to_string(),
        msg: rest[end + 3..].to_string(),
        at: Instant::now(),
    }
}

pub struct Going {
    pub dir: TempDir,
    binary: PathBuf,
    /// Whether the binary takes this going's options (going 0.1.0's knows no `-c`).
    current: bool,
    /// More options, after those of the harness (a later `-c` wins).
    pub args: Vec<String>,
    pub child: Child,
    rx: Receiver<Line>,
    pub lines: Vec<Line>,
    /// How many of `lines` the `next_*` calls have already consumed.
    cursor: usize,
    /// The cgroup going runs in, the test's own; None where there is none to have.
    pub cgroup: Option<TestCgroup>,
    /// This test's turn among those that run side by side (see `alone`).
    _turn: Turn,
}

pub struct Setup {
    pub files: Vec<(String, String)>,
    /// Run in the child before exec of going (to give it a dirty inheritance).
    pub pre_exec: Option<fn() -> std::io::Result<()>>,
    pub env: Vec<(String, String)>,
    pub bind_log: bool,
    /// Another going binary than the one cargo built (a copy, to replace or break).
    pub binary: Option<PathBuf>,
    /// A directory prepared by the test (its conf, run, …) instead of a new empty one.
    pub dir: Option<TempDir>,
    /// CONFDIR as a symbolic link `conf -> NAME`, NAME a directory beside it.
    pub conf_link: Option<&'static str>,
    /// Whether `binary` takes this going's options: going 0.1.0's knows no `-c`.
    pub current: bool,
    /// More options for going, after those of the harness (a later `-c` wins).
    pub args: Vec<String>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            files: Vec::new(),
            pre_exec: None,
            env: Vec::new(),
            bind_log: true,
            binary: None,
            dir: None,
            conf_link: None,
            current: true,
            args: Vec::new(),
        }
    }
}

impl Going {
    pub fn start(files: &[(&str, &str)]) -> Going {
        Going::with(Setup {
            files: files
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..Setup::default()
        })
    }

    pub fn with(mut setup: Setup) -> Going {
        let turn = turn();
        let dir = setup.dir.take().unwrap_or_else(TempDir::new);
        match setup.conf_link {
            Some(to) => {
                fs::create_dir(dir.0.join(to)).unwrap();
                std::os::unix::fs::symlink(to, dir.0.join("conf")).unwrap();
            }
            None if !dir.0.join("conf").exists() => fs::create_dir(dir.0.join("conf")).unwrap(),
            None => {}
        }
        for (name, text) in &setup.files {
            fs::write(dir.0.join("conf").join(name), text).unwrap();
        }
        let (tx, rx) = channel();
        if setup.bind_log {
            let sock = UnixDatagram::bind(dir.0.join("log")).unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = sock.recv(&mut buf) {
                    if tx.send(parse(&buf[..n])).is_err() {
                        break;
                    }
                }
            });
        }
        let binary = setup.binary.clone().unwrap_or_else(|| PathBuf::from(BIN));
        let cgroup = TestCgroup::new().ok();
        let mut cmd = going_cmd(&binary, &dir.0, cgroup.as_ref(), setup.current);
        cmd.args(&setup.args);
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        if let Some(f) = setup.pre_exec {
            // SAFETY: the hooks used by the tests only make async-signal-safe calls.
            unsafe { cmd.pre_exec(f) };
        }
        let child = spawn(&mut cmd);
        Going {
            dir,
            binary,
            current: setup.current,
            args: setup.args,
            child,
            rx,
            lines: Vec::new(),
            cursor: 0,
            cgroup,
            _turn: turn,
        }
    }

    /// going on this test's directories, in this test's cgroup.
    fn command(&self) -> Command {
        let mut cmd = going_cmd(
            &self.binary,
            &self.dir.0,
            self.cgroup.as_ref(),
            self.current,
        );
        cmd.args(&self.args);
        cmd
    }

    /// The cgroup of service `name`, where going runs in a cgroup of the test's own (at
    /// its default place in it).
    pub fn service_cgroup(&self, name: &str) -> Option<PathBuf> {
        Some(self.cgroup.as_ref()?.path.join("going/svc").join(name))
    }

    /// Stops going with SIGTERM and starts a new one on the same directories, as init
    /// would; returns the old one's exit code.
    pub fn restart(&mut self) -> i32 {
        let code = self.stop();
        self.child = spawn(&mut self.command());
        code
    }

    /// Kills going with SIGKILL and starts a new one on the same directories, as init's
    /// respawn would after a crash.
    pub fn kill9_restart(&mut self) {
        self.kill9();
        self.start_again();
    }

    /// Kills going with SIGKILL, leaving its services behind.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Starts `binary` (this going's, or a copy) on the same directories from now on, the
    /// previous one being gone.
    pub fn start_again_with(&mut self, binary: &Path) {
        self.binary = binary.to_owned();
        self.current = true;
        self.start_again();
    }

    /// Starts a new going on the same directories, the previous one being gone.
    pub fn start_again(&mut self) {
        assert!(self.child.try_wait().unwrap().is_some(), "going still runs");
        self.child = spawn(&mut self.command());
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.0.join("conf")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Puts a service file in place whole, as an admin's tool should (written aside, then
    /// renamed): a loaded machine can stall a plain write past going's settle time, and
    /// going would read half a file.
    pub fn write(&self, name: &str, text: &str) {
        let aside = self.conf().join(format!(".{name}.new"));
        fs::write(&aside, text).unwrap();
        fs::rename(&aside, self.conf().join(name)).unwrap();
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.0.join("stderr")).unwrap_or_default()
    }

    /// Signals going, unless it has ended and been reaped: its pid may be another's now.
    pub fn signal(&mut self, sig: i32) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill has no memory effects; the child is not reaped yet.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// Stops going (SIGSTOP), and waits until it is stopped: a signal is delivered when
    /// the process next runs, and what the test does meanwhile would reach a going that
    /// still reads.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        let pid = self.pid();
        wait_until("going to be stopped", || {
            stat_fields(pid).first().is_some_and(|s| s == "T")
        });
    }

    /// Waits for the next line (after those already consumed) that matches; returns it.
    pub fn next(&mut self, what: &str, pred: impl Fn(&Line) -> bool) -> Line {
        let deadline = Instant::now() + DEADLINE;
        loop {
            while self.cursor < self.lines.len() {
                self.cursor += 1;
                if pred(&self.lines[self.cursor - 1]) {
                    return self.lines[self.cursor - 1].clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => self.lines.push(l),
                Err(_) => panic!(
                    "no log line {what} within {DEADLINE:?}; got:\n{}\nstderr:\n{}",
                    self.dump(),
                    self.stderr()
                ),
            }
        }
    }

    /// Sends SIGUSR2 and returns going's word on it: `going: upgrading: exec …` or `going:
    /// unable to upgrade: …`. Again when the binary was busy: a copy just written may
    /// still be open for writing in a child that another test thread forked meanwhile.
    pub fn upgrade(&mut self) -> Line {
        loop {
            self.signal(libc::SIGUSR2);
            let l = self.next("going's word on the upgrade", |l| {
                l.msg.starts_with("going: upgrading: exec")
                    || l.msg.starts_with("going: unable to upgrade")
            });
            if !l.msg.contains("Text file busy") {
                return l;
            }
        }
    }

    /// Makes the `next_*` calls search again from the first line.
    pub fn rewind(&mut self) {
        self.cursor = 0;
    }

    /// The next line whose tag is `tag` (such as `web[42]`) and whose message is `msg`.
    pub fn next_output(&mut self, tag: &str, msg: &str) -> Line {
        self.next(&format!("{tag}: {msg}"), |l| l.tag == tag && l.msg == msg)
    }

    /// The next line whose message contains `needle`.
    pub fn next_msg(&mut self, needle: &str) -> Line {
        self.next(&format!("containing {needle:?}"), |l| {
            l.msg.contains(needle)
        })
    }

    /// Waits for `name[PID]: started` and returns PID.
    pub fn started(&mut self, name: &str) -> i32 {
        let prefix = format!("{name}[");
        let l = self.next(&format!("{name} started"), |l| {
            l.msg.starts_with(&prefix) && l.msg.ends_with("]: started")
        });
        l.msg[prefix.len()..l.msg.len() - "]: started".len()]
            .parse()
            .unwrap()
    }

    /// Waits for `name` to start and exec `comm`; returns its pid. Exec'd through: the
    /// kernel names the process before it lays out its arguments and environment, which
    /// /proc shows empty until then.
    pub fn exec_of(&mut self, name: &str, comm: &str) -> i32 {
        let pid = self.started(name);
        wait_until(&format!("{name} to exec {comm}"), || {
            proc_file(pid, "comm").trim() == comm && !proc_file(pid, "cmdline").is_empty()
        });
        pid
    }

    /// Every line received until now and within `d` more, without consuming any.
    pub fn collect_for(&mut self, d: Duration) -> Vec<Line> {
        let end = Instant::now() + d;
        while let Ok(l) = self
            .rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.lines.push(l);
        }
        self.lines.clone()
    }

    pub fn dump(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("  <{}> {}\n", l.pri, l.msg))
            .collect()
    }

    /// Stops going with SIGTERM and returns its exit code.
    pub fn stop(&mut self) -> i32 {
        self.stop_within(STOP, "")
    }

    /// Stops going with SIGTERM, and fails the test unless it exits within `limit`;
    /// `why` says why a test allows more than [`STOP`].
    pub fn stop_within(&mut self, limit: Duration, why: &str) -> i32 {
        assert!(
            limit <= STOP || !why.is_empty(),
            "say why going may take longer"
        );
        self.signal(libc::SIGTERM);
        let t0 = Instant::now();
        let code = self.wait_exit();
        assert!(
            t0.elapsed() <= limit,
            "going took {:?} to exit after SIGTERM; log:\n{}",
            t0.elapsed(),
            self.dump()
        );
        code
    }

    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "going did not exit; log:\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Going {
    /// going still running at the end of a test is stopped as `stop` does, and must exit
    /// as quickly: a SIGTERM lost or a service that outstays its stop fails the test.
    fn drop(&mut self) {
        let mut slow = None;
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            let t0 = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() && t0.elapsed() < STOP {
                std::thread::sleep(Duration::from_millis(5));
            }
            if self.child.try_wait().ok().flatten().is_none() {
                slow = Some(t0.elapsed());
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Whatever a failed test left behind: every process group going started. Only then:
        // pids are recycled (pid_max may be 32768), and by the end of a test that passed a
        // group it saw may be another test's now.
        if std::thread::panicking() || slow.is_some() {
            for pid in self.lines.iter().filter_map(|l| started_pid(&l.msg)) {
                // SAFETY: kill has no memory effects; the group is one going created.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
        if let Some(took) = slow.filter(|_| !std::thread::panicking()) {
            panic!(
                "going did not exit within {took:?} after SIGTERM; log:\n{}",
                self.dump()
            );
        }
    }
}

/// A process a test started itself, stopped with SIGTERM and waited for when the test ends,
/// however it ends; only while it was not reaped yet: a reaped pid may be another test's
/// process by then (pids are recycled), and must never be signalled.
pub struct Stopped(pub Child);

impl Stopped {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill has no memory effects; the child is not reaped, its pid its own.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
}

/// The pid in `NAME[PID]: started`.
fn started_pid(msg: &str) -> Option<i32> {
    let (_, rest) = msg.split_once('[')?;
    rest.split_once("]: started")?.0.parse().ok()
}

/// Spawns `cmd`, again while its binary is busy: a copy of going that a test has just
/// written may still be open for writing in a child another test thread is forking.
pub fn spawn(cmd: &mut Command) -> Child {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            other => return other.unwrap(),
        }
    }
}

/// going on `dir`/conf and `dir`/run, logging to `dir`/log, its stderr to `dir`/stderr,
/// without cgroups (the machine's hierarchy is no test's).
pub fn going_in(binary: &Path, dir: &Path) -> Command {
    going_cmd(binary, dir, None, true)
}

/// going as [`going_in`] starts it, but in `cgroup` where it is given (going then takes
/// its default place there); `current`: the binary takes this going's options.
fn going_cmd(binary: &Path, dir: &Path, cgroup: Option<&TestCgroup>, current: bool) -> Command {
    let mut cmd = match cgroup {
        // A shell moves itself into the cgroup, then becomes going: the move waits for the
        // kernel (a grace period, some 15 ms), which a child must not do between its fork
        // and its exec, when it holds what the test's other threads have open.
        Some(cg) => {
            // The shell's exec would fail on a copy of going still open for writing in a
            // child another test thread forked: run it once first, as `spawn` waits that
            // out (once it ran, nothing can hold it open for writing any more).
            let mut probe = Command::new(binary);
            probe.arg("-V").stdout(std::process::Stdio::null());
            let _ = spawn(&mut probe).wait();
            let mut sh = Command::new("/bin/sh");
            sh.args(["-c", "echo 0 > \"$0\" && exec \"$@\""])
                .arg(cg.path.join("cgroup.procs"))
                .arg(binary);
            sh
        }
        None => Command::new(binary),
    };
    cmd.arg("-d").arg(dir.join("conf"));
    cmd.arg("-r").arg(dir.join("run"));
    cmd.arg("-l").arg(dir.join("log"));
    if cgroup.is_none() && current {
        cmd.args(["-c", "off"]);
    }
    let stderr = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr"))
        .unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    cmd
}

/// Polls a condition on the system (a /proc file, a process gone) until a deadline.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls until `f` gives a value, as `wait_until` does; returns it.
pub fn wait_until_some<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn proc_file(pid: i32, name: &str) -> String {
    let mut s = String::new();
    let _ =
        fs::File::open(format!("/proc/{pid}/{name}")).and_then(|mut f| f.read_to_string(&mut s));
    s
}

/// The field `name:` of /proc/PID/status.
pub fn status_field(pid: i32, name: &str) -> String {
    proc_file(pid, "status")
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Fields of /proc/PID/stat after the command name: index 0 is the state (field 3).
pub fn stat_fields(pid: i32) -> Vec<String> {
    let s = proc_file(pid, "stat");
    let after = s.rfind(')').map_or("", |i| &s[i + 2..]);
    after.split_whitespace().map(String::from).collect()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_fields(pid)
        .first()
        .is_some_and(|s| s != "Z" && s != "X")
}

/// Every process on the machine, with its /proc/PID/stat fields as `stat_fields` gives them.
pub fn processes() -> Vec<(i32, Vec<String>)> {
    (fs::read_dir("/proc").unwrap().flatten())
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .map(|pid| (pid, stat_fields(pid)))
        .filter(|(_, f)| f.len() > 2)
        .collect()
}

/// Pids of every live process in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let pgid = pgid.to_string();
    (processes().into_iter())
        .filter(|(_, f)| f[2] == pgid && f[0] != "Z")
        .map(|(pid, _)| pid)
        .collect()
}

/// Children of `ppid`: (pid, whether it is a zombie).
pub fn children_of(ppid: i32) -> Vec<(i32, bool)> {
    let ppid = ppid.to_string();
    (processes().into_iter())
        .filter(|(_, f)| f[1] == ppid)
        .map(|(pid, f)| (pid, f[0] == "Z"))
        .collect()
}

/// A process's start time (field 22 of /proc/PID/stat): with the pid, its identity.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid).get(19)?.parse().ok()
}

/// A process of nobody's, with its pid and start time: the very process a forged or stale
/// state file could name. `arg` is sleep's, to tell it from others'.
pub fn bystander(arg: &str) -> (Child, i32, u64) {
    let child = Command::new("sleep")
        .arg(arg)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let start = start_time(pid).unwrap();
    (child, pid, start)
}

/// Live processes whose command line is exactly `cmdline` (words joined by spaces).
pub fn running(cmdline: &str) -> Vec<i32> {
    (processes().into_iter())
        .filter(|(pid, f)| {
            f[0] != "Z" && proc_file(*pid, "cmdline").replace('\0', " ").trim_end() == cmdline
        })
        .map(|(pid, _)| pid)
        .collect()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `going COMMAND -r RUNDIR ARGS…` against `g`: exit code, stdout, stderr.
pub fn cmd(g: &Going, command: &str, args: &[&str]) -> (i32, String, String) {
    let run_dir = g.dir.0.join("run");
    let mut all = vec![command, "-r", path_str(&run_dir)];
    all.extend_from_slice(args);
    run(&all)
}

/// `going ARGS…`: exit code, stdout, stderr. Without `COLUMNS`, as the table then is the
/// same wherever the tests run.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = (Command::new(BIN).args(args).env_remove("COLUMNS"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A FIFO in the test's directory: a service blocks reading it until the test writes.
pub fn fifo(g: &Going, name: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let p = g.dir.0.join(name);
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    p
}

/// Lets the service blocked on `fifo` go on.
pub fn release(fifo: &Path) {
    fs::write(fifo, "go\n").unwrap();
}

/// The python3 the tests run: Debian's (CI installs it), else the PATH's.
pub fn python() -> &'static str {
    match Path::new("/usr/bin/python3").exists() {
        true => "/usr/bin/python3",
        false => "python3",
    }
}

/// A cgroup of one test's own on the machine's cgroup2 hierarchy, below the test process's
/// cgroup: whatever is left in it is killed, and it is removed with everything below it,
/// on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    /// A new one; Err says why there is none to have (no cgroup2 hierarchy, not root…,
    /// or GOING_TEST_CGROUPS=off in the environment: the whole suite without cgroups).
    pub fn new() -> Result<TestCgroup, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        if std::env::var_os("GOING_TEST_CGROUPS").is_some_and(|v| v == "off") {
            return Err("GOING_TEST_CGROUPS=off".into());
        }
        let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let own = (own.lines())
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("no cgroup v2 line in /proc/self/cgroup")?
            .to_string();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        // ID PARENT MAJ:MIN ROOT POINT … - cgroup2 …: a mount of its whole hierarchy.
        let point = (mountinfo.lines())
            .filter(|l| l.contains(" - cgroup2 "))
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .find(|f| f.len() > 4 && f[3] == "/")
            .map(|f| PathBuf::from(f[4]))
            .ok_or("no cgroup2 hierarchy mounted")?;
        let n = N.fetch_add(1, Ordering::SeqCst);
        let name = format!("going-test-{}-{n}", std::process::id());
        let path = point.join(own.trim_start_matches('/')).join(name);
        fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(TestCgroup { path })
    }

    /// Whether a process is in it or below it.
    pub fn populated(&self) -> bool {
        cgroup_populated(&self.path)
    }
}

/// Whether a process is in the cgroup at `path` or below it (false once it is gone).
pub fn cgroup_populated(path: &Path) -> bool {
    fs::read_to_string(path.join("cgroup.events")).is_ok_and(|e| e.contains("populated 1"))
}

/// The processes in the cgroup at `path` (not below it).
pub fn cgroup_procs(path: &Path) -> Vec<i32> {
    (fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines())
    .filter_map(|l| l.parse().ok())
    .collect()
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.path.join("cgroup.kill"), "1");
        let deadline = Instant::now() + DEADLINE;
        while self.populated() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        fn remove(dir: &Path) {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&e.path());
                }
            }
            let _ = fs::remove_dir(dir);
        }
        remove(&self.path);
        if !std::thread::panicking() {
            assert!(!self.path.exists(), "{} left behind", self.path.display());
        }
    }
}
