//! Upgrade in place: on SIGUSR2 going re-executes its binary — the one now installed at
//! the path it was started from — keeping its pid (init sees nothing), its children, their
//! output pipes, its lock, RUNDIR, CONFDIR's lock and its control socket. What the new
//! binary needs travels in one environment variable: a version, the fds to take back, and
//! each live process's name, pid, settings fingerprint and age (and each process group
//! being stopped whose leader is gone). The new binary adopts them
//! as a restart after `kill -9` would, but they are still its children (or, for processes
//! adopted before, watched by pidfd).
//!
//! A binary that execs but then cannot run (a library missing, a script, a crash at
//! start-up) would leave going's pid dead and its services unsupervised, so the binary is
//! first run in a child with `--handover-check`: only a going that answers that it reads
//! this handover's version is exec'd, and it is the very file that answered (held open
//! since). RUNDIR/state is written just before the exec, so that even a new binary that
//! dies after taking over leaves services that the next going adopts.
//!
//! Invariant: the fds handed over are close-on-exec again on both sides of the exec, so no
//! service inherits them; if the check or the exec fails, going carries on as before.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fingerprint::Fingerprint;
use crate::sys::{self, Pid};

const VAR: &str = "GOING_UPGRADE";
/// The handover format this going writes; it reads this one and going 0.1.0's (1).
pub const VERSION: u32 = 2;
/// The flag that makes a going say which handovers it reads, and exit.
pub const CHECK_FLAG: &str = "--handover-check";
/// How long the new binary has to answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to `--handover-check`.
pub fn check_answer() -> String {
    format!("going {} handover 1 {VERSION}\n", env!("CARGO_PKG_VERSION"))
}

/// A live process handed over, with its output pipe: an fd number on the way out, an
/// owned fd once taken back.
pub struct Proc<Fd> {
    pub name: String,
    pub pid: Pid,
    pub fingerprint: Fingerprint,
    pub age: Duration,
    /// Whether it is going's child (else it was adopted after a crash: watch its pidfd).
    pub child: bool,
    pub output: Option<Fd>,
}

/// A live process to hand over.
pub type Leaving = Proc<RawFd>;

/// What the going that exec'd this one handed over.
#[derive(Default)]
pub struct Handover {
    pub lock: Option<OwnedFd>,
    pub control: Option<OwnedFd>,
    pub rundir: Option<OwnedFd>,
    pub confdir: Option<OwnedFd>,
    /// CONFDIR/.going.lock, when it was locked.
    pub conflock: Option<OwnedFd>,
    /// The sd_notify socket, with what services sent meanwhile.
    pub notify: Option<OwnedFd>,
    pub procs: Vec<Proc<OwnedFd>>,
    /// Processes that had said they were ready.
    pub ready: Vec<Pid>,
    /// The readiness pipes of processes that had not yet (`ready=fd:N`).
    pub ready_fds: Vec<(Pid, OwnedFd)>,
    /// One-shots that had finished: fingerprint of their settings, and success.
    pub done: std::collections::BTreeMap<String, (Fingerprint, bool)>,
    /// Process groups being stopped whose leaders were gone, and whether their members
    /// are going's children.
    pub groups: Vec<(crate::state::Group, bool)>,
}

/// The handover, when this going was exec'd by an upgrade; the variable is removed.
pub fn take() -> Option<Handover> {
    let text = std::env::var(VAR).ok()?;
    // SAFETY of the call: single-threaded, nothing reads the environment meanwhile.
    std::env::remove_var(VAR);
    Some(parse(&text, sys::inherit_fd))
}

/// Reads the handover text; `fd` takes over an fd number. Unknown words are skipped, so
/// that a later going can add some.
fn parse(text: &str, mut fd: impl FnMut(RawFd) -> Option<OwnedFd>) -> Handover {
    let mut h = Handover::default();
    let mut version = 1;
    let mut take = |v: &str| v.parse().ok().and_then(&mut fd);
    for word in text.split(' ') {
        match word.split_once('=') {
            Some(("v", v)) => version = v.parse().unwrap_or(0),
            Some(("lock", v)) => h.lock = take(v),
            Some(("control", v)) => h.control = take(v),
            Some(("rundir", v)) => h.rundir = take(v),
            Some(("confdir", v)) => h.confdir = take(v),
            Some(("conflock", v)) => h.conflock = take(v),
            Some(("notify", v)) => h.notify = take(v),
            Some(("ready", v)) => h.ready.extend(v.parse::<Pid>().ok()),
            Some(("readyfd", v)) => {
                let Some((pid, fd)) = v.split_once(',') else {
                    continue;
                };
                if let (Ok(pid), Some(fd)) = (pid.parse(), take(fd)) {
                    h.ready_fds.push((pid, fd));
                }
            }
            Some(("done", v)) => {
                let f: Vec<&str> = v.split(',').collect();
                if let [name, fp, ok @ ("0" | "1")] = f[..] {
                    if let Ok(fp) = fp.parse() {
                        h.done
                            .insert(name.to_string(), (Fingerprint::V2(fp), ok == "1"));
                    }
                }
            }
            Some(("group", g)) => {
                let f: Vec<&str> = g.split(',').collect();
                let [name, pgid, kill_at, child @ ("0" | "1")] = f[..] else {
                    continue;
                };
                if let (Ok(pgid), Ok(kill_at)) = (pgid.parse(), kill_at.parse()) {
                    let name = name.to_string();
                    let g = crate::state::Group {
                        name,
                        pgid,
                        kill_at,
                    };
                    h.groups.push((g, child == "1"));
                }
            }
            Some(("proc", p)) => {
                let f: Vec<&str> = p.split(',').collect();
                let [name, pid, fp, age, child, out] = f[..] else {
                    continue;
                };
                let (Ok(pid), Ok(fp), Ok(age)) = (pid.parse(), fp.parse(), age.parse()) else {
                    continue;
                };
                h.procs.push(Proc {
                    name: name.to_string(),
                    pid,
                    fingerprint: match version {
                        1 => Fingerprint::V1(fp),
                        _ => Fingerprint::V2(fp),
                    },
                    age: Duration::from_millis(age),
                    child: child == "1",
                    output: take(out),
                });
            }
            _ => {}
        }
    }
    h
}

/// What a going hands over besides the processes and their output pipes.
pub struct Kept {
    pub lock: RawFd,
    pub control: RawFd,
    pub rundir: RawFd,
    pub confdir: Option<RawFd>,
    pub conflock: Option<RawFd>,
    pub notify: Option<RawFd>,
    /// Pids of the processes that said they were ready.
    pub ready: Vec<Pid>,
    /// Readiness pipes still waited on: pid, fd.
    pub ready_fds: Vec<(Pid, RawFd)>,
    /// Finished one-shots: name, fingerprint, success.
    pub done: Vec<(String, u64, bool)>,
    /// Process groups being stopped whose leaders are gone (when their SIGKILL is due, in
    /// the monotonic clock's milliseconds), and whether their members are going's children.
    pub groups: Vec<(crate::state::Group, bool)>,
}

fn format(kept: &Kept, procs: &[Leaving]) -> String {
    let mut text = format!(
        "v={VERSION} lock={} control={} rundir={}",
        kept.lock, kept.control, kept.rundir
    );
    if let Some(fd) = kept.confdir {
        text.push_str(&format!(" confdir={fd}"));
    }
    if let Some(fd) = kept.conflock {
        text.push_str(&format!(" conflock={fd}"));
    }
    if let Some(fd) = kept.notify {
        text.push_str(&format!(" notify={fd}"));
    }
    for pid in &kept.ready {
        text.push_str(&format!(" ready={pid}"));
    }
    for (pid, fd) in &kept.ready_fds {
        text.push_str(&format!(" readyfd={pid},{fd}"));
    }
    for (name, fp, ok) in &kept.done {
        text.push_str(&format!(" done={name},{fp},{}", *ok as u8));
    }
    for (g, child) in &kept.groups {
        let (name, pgid, at) = (&g.name, g.pgid, g.kill_at);
        text.push_str(&format!(" group={name},{pgid},{at},{}", *child as u8));
    }
    for p in procs {
        let (ms, child, out) = (p.age.as_millis(), p.child as u8, p.output.unwrap_or(-1));
        let fp = match p.fingerprint {
            Fingerprint::V1(fp) | Fingerprint::V2(fp) => fp,
        };
        debug_assert!(matches!(p.fingerprint, Fingerprint::V2(_)));
        text.push_str(&format!(
            " proc={},{},{fp},{ms},{child},{out}",
            p.name, p.pid
        ));
    }
    text
}

/// The path going was started from (argv[0], looked up in PATH if it has no slash): the
/// binary installed there now, not the one running (/proc/self/exe is the replaced one).
pub fn own_path() -> Option<PathBuf> {
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    if argv0.as_os_str().as_bytes().contains(&b'/') {
        return Some(argv0);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(&argv0))
        .find(|p| p.is_file())
}

fn cstr(s: &[u8]) -> CString {
    CString::new(s).unwrap_or_default()
}

/// going's own environment without a handover variable, as the new binary gets it.
fn environment() -> Vec<CString> {
    (std::env::vars_os())
        .filter(|(k, _)| k != VAR)
        .map(|(k, v)| {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            cstr(kv.as_bytes())
        })
        .collect()
}

/// A new binary being asked whether it can take over.
pub struct Check {
    pub pid: Pid,
    pub path: PathBuf,
    /// The binary that is asked, held open: the same file is exec'd, whatever is installed
    /// at `path` meanwhile.
    binary: File,
    script: bool,
    answer: File,
    report: File,
    /// When it must have answered; None once it was given up on (its end is no answer).
    deadline: Option<Instant>,
}

/// Runs `path --handover-check` in a child, its output into a pipe; Err says what failed.
pub fn start_check(path: PathBuf, nofile: libc::rlimit, now: Instant) -> Result<Check, String> {
    // Without waiting: a FIFO put at the path would block the open until a writer came.
    let binary = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| format!("open {}: {}", path.display(), crate::log::Errno(&e)))?;
    match binary.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(format!("{} is not a regular file", path.display())),
        Err(e) => return Err(format!("{}: {}", path.display(), crate::log::Errno(&e))),
    }
    // A script is run by its path: its interpreter could not open a close-on-exec fd.
    let mut magic = [0u8; 2];
    let script = (&binary).read(&mut magic).is_ok_and(|n| n == 2) && &magic == b"#!";
    let exe = exec_path(&binary, &path, script);
    let (answer, w) =
        sys::pipe().map_err(|e| format!("create a pipe: {}", crate::log::Errno(&e)))?;
    let null = File::options()
        .read(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {}", crate::log::Errno(&e)))?;
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let argv = [cstr(argv0.as_bytes()), cstr(CHECK_FLAG.as_bytes())];
    let root = cstr(b"/");
    let (pid, report) = sys::spawn(&sys::Spawn {
        paths: std::slice::from_ref(&exe),
        argv: &argv,
        envp: &environment(),
        stdin: null.as_raw_fd(),
        stdout: w.as_raw_fd(),
        limits: &[(libc::RLIMIT_NOFILE as i32, nofile)],
        nice: None,
        chroot: None,
        creds: None,
        cwd: &root,
        umask: 0o022,
        ready: None,
        exec_fd: Some(binary.as_raw_fd()),
        cgroup: None,
    })
    .map_err(|e| format!("fork: {}", crate::log::Errno(&e)))?;
    Ok(Check {
        pid,
        path,
        binary,
        script,
        answer: answer.into(),
        report: report.into(),
        deadline: Some(now + CHECK_TIMEOUT),
    })
}

/// Where the held-open binary is exec'd from: through /proc, so that it is that file; its
/// path where /proc is missing, or for a script.
fn exec_path(binary: &File, path: &Path, script: bool) -> CString {
    let via = format!("/proc/self/fd/{}", binary.as_raw_fd());
    if !script && Path::new(&via).exists() {
        cstr(via.as_bytes())
    } else {
        cstr(path.as_os_str().as_bytes())
    }
}

impl Check {
    /// When it must have answered, until it is given up on.
    pub fn due(&self) -> Option<Instant> {
        self.deadline
    }

    /// Its time is up: killed (with its process group, it runs in a session of its own),
    /// and what to say of it.
    pub fn give_up(&mut self) -> String {
        let killed = match self.kill() {
            None => String::new(),
            Some(e) => format!(" (and could not be killed: {})", crate::log::Errno(&e)),
        };
        format!(
            "{} did not answer within {}s{killed}; carrying on",
            self.path.display(),
            CHECK_TIMEOUT.as_secs()
        )
    }

    /// going is stopping: the check is killed (with its process group), and its end is no
    /// answer. What to add to the message saying so: nothing, or why it could not be.
    pub fn abandon(&mut self) -> String {
        match self.kill() {
            None => String::new(),
            Some(e) => format!(
                " ({} could not be killed: {})",
                self.path.display(),
                crate::log::Errno(&e)
            ),
        }
    }

    /// SIGKILL to its process group, whose end is then no answer; the error, if any.
    fn kill(&mut self) -> Option<std::io::Error> {
        self.deadline = None;
        match sys::kill_group(self.pid, libc::SIGKILL) {
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Some(e),
            _ => None,
        }
    }

    /// The checked binary ended with `status`: Ok when it said it reads this handover,
    /// else what it did instead.
    pub fn verdict(&self, status: libc::c_int) -> Result<String, String> {
        let mut report = [0u8; 12];
        if let Ok(12) = (&self.report).read(&mut report) {
            if let Some(e) = sys::ChildError::decode(report) {
                let err = std::io::Error::from_raw_os_error(e.errno);
                return Err(format!(
                    "exec {}: {}",
                    self.path.display(),
                    crate::log::Errno(&err)
                ));
            }
        }
        let mut out = Vec::new();
        // What it wrote before it ended is all there is; a read error leaves it empty.
        let _ = (&self.answer).take(256).read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        let first = text.lines().next().unwrap_or("").trim();
        let words: Vec<&str> = first.split(' ').collect();
        let speaks = matches!(words[..], ["going", _, "handover", ..])
            && words[3..].contains(&VERSION.to_string().as_str());
        if status == 0 && speaks {
            return Ok(first.to_string());
        }
        let ended = match sys::Exit::from_status(status) {
            sys::Exit::Code(c) => format!("exited {c}"),
            exit => format!("was {}", crate::service::Ended(exit)),
        };
        let said = match first {
            "" => "nothing".to_string(),
            s => format!("\"{}\"", crate::output::escape(s.as_bytes())),
        };
        Err(format!(
            "{} is no going that can take over: asked with {CHECK_FLAG}, it said {said} and {ended}",
            self.path.display()
        ))
    }

    /// Execs the checked binary with the handover; returns only if that failed.
    pub fn exec(self, kept: &Kept, procs: &[Leaving]) -> std::io::Error {
        let text = format(kept, procs);
        let fds = [kept.lock, kept.control, kept.rundir]
            .into_iter()
            .chain(kept.confdir)
            .chain(kept.conflock)
            .chain(kept.notify)
            .chain(kept.ready_fds.iter().map(|r| r.1))
            .chain(procs.iter().filter_map(|p| p.output));
        let fds: Vec<RawFd> = fds.collect();
        for &fd in &fds {
            sys::keep_on_exec(fd, true);
        }
        let argv: Vec<CString> = std::env::args_os().map(|a| cstr(a.as_bytes())).collect();
        let mut envp = environment();
        envp.push(cstr(format!("{VAR}={text}").as_bytes()));
        let err = sys::exec(
            &exec_path(&self.binary, &self.path, self.script),
            &argv,
            &envp,
        );
        for &fd in &fds {
            sys::keep_on_exec(fd, false);
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handovers_of_both_versions_are_read() {
        let kept = Kept {
            lock: 3,
            control: 4,
            rundir: 5,
            confdir: Some(6),
            conflock: Some(8),
            notify: None,
            ready: vec![42],
            ready_fds: vec![],
            done: vec![("setup".into(), 77, true)],
            groups: vec![(
                crate::state::Group {
                    name: "old".into(),
                    pgid: 40,
                    kill_at: 123456,
                },
                true,
            )],
        };
        let procs = [Leaving {
            name: "web".into(),
            pid: 42,
            fingerprint: Fingerprint::V2(99),
            age: Duration::from_millis(1500),
            child: true,
            output: Some(7),
        }];
        let text = format(&kept, &procs);
        assert_eq!(
            text,
            "v=2 lock=3 control=4 rundir=5 confdir=6 conflock=8 ready=42 done=setup,77,1 group=old,40,123456,1 proc=web,42,99,1500,1,7"
        );
        let mut seen = Vec::new();
        // Any fd number is "open" here; they are only counted, never closed.
        let h = parse(&text, |fd| {
            seen.push(fd);
            None
        });
        assert_eq!(seen, [3, 4, 5, 6, 8, 7]);
        assert_eq!(h.procs[0].fingerprint, Fingerprint::V2(99));
        assert_eq!(
            (h.ready, h.done["setup"]),
            (vec![42], (Fingerprint::V2(77), true))
        );
        assert_eq!(h.procs[0].age, Duration::from_millis(1500));
        assert_eq!(h.groups, kept.groups);
        // What going 0.1.0 hands over: no version, version 1 fingerprints.
        let old = parse("lock=3 control=4 proc=web,42,99,10,1,-1 junk", |_| None);
        assert_eq!(old.procs.len(), 1);
        assert_eq!(old.procs[0].fingerprint, Fingerprint::V1(99));
    }

    #[test]
    fn the_check_answer_names_this_version() {
        let a = check_answer();
        assert!(
            a.starts_with("going ") && a.ends_with(" handover 1 2\n"),
            "{a}"
        );
    }
}
