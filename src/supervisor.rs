//! The supervisor: one thread, one epoll loop, absolute deadlines. It owns going's fds —
//! the lock on RUNDIR, the signal wake-up pipe, inotify, and the exec-error pipe of every
//! child that has not exec'd yet — turns signals, inotify events and due deadlines into
//! calls on the service table, and carries out the table's effects.
//!
//! Invariants: signals are only flags plus a byte on a pipe; the pipe is drained before the
//! flags are read, so none is lost. The loop sleeps until the earliest deadline, or forever:
//! an idle going makes no system call. Only start-up errors end it; inside the loop every
//! failure is logged and becomes a retry.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::admin::{self, Handled};
use crate::config::{self, Settings};
use crate::control::{self, Control};
use crate::fingerprint::Fingerprint;
use crate::log::{Errno, Level, Logger};
use crate::output::{self, Outputs};
use crate::rundir::RunDir;
use crate::service::{Adoptable, Ops, Summary, Table};
use crate::state;
use crate::sys::{self, ChildError, Epoll, Exit, Pid};
use crate::watch::Watch;

pub struct Options {
    pub confdir: PathBuf,
    pub rundir: PathBuf,
    /// The syslog socket; None logs to stderr.
    pub syslog: Option<PathBuf>,
}

/// A start-up failure: the message and the sysexits code to leave with.
pub struct Fatal {
    pub code: u8,
    pub msg: String,
}

pub const EX_OSERR: u8 = 71;
pub const EX_CANTCREAT: u8 = 73;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_CONFIG: u8 = 78;

static CHLD: AtomicBool = AtomicBool::new(false);
static HUP: AtomicBool = AtomicBool::new(false);
static TERM: AtomicBool = AtomicBool::new(false);
static UPGRADE: AtomicBool = AtomicBool::new(false);

const SIGNALS: u64 = 1;
const INOTIFY: u64 = 2;
const SYSLOG: u64 = 3;
const CONTROL: u64 = 4;
/// Token of a child's exec-error pipe: this bit plus the pid.
const CHILD: u64 = 1 << 32;
/// Token of a service process's output pipe: this bit plus the pid.
const OUTPUT: u64 = 2 << 32;
/// Token of a control client: this bit plus its id.
const CLIENT: u64 = 3 << 32;
/// Token of an adopted process's pidfd: this bit plus the pid.
const PIDFD: u64 = 4 << 32;

/// The table's effects, done for real.
struct Real {
    epoll: Epoll,
    log: Logger,
    stdio: File,
    nofile: libc::rlimit,
    /// Exec-error pipes of children that have not exec'd (or failed) yet.
    pending: BTreeMap<Pid, OwnedFd>,
    outputs: Outputs,
    rundir: RunDir,
    /// This boot's id, stamped on the state file.
    boot: Option<String>,
    /// The new binary being asked, after SIGUSR2, whether it can take over.
    check: Option<crate::upgrade::Check>,
    /// Pidfds of adopted processes, which are not going's children.
    pidfds: BTreeMap<Pid, OwnedFd>,
    /// Process groups of adopted services: their zombies are init's to reap.
    adopted: std::collections::BTreeSet<Pid>,
    /// Start times of live service processes, for the state file.
    starts: BTreeMap<Pid, u64>,
    /// The last failure to write the state file, logged once.
    state_error: Option<String>,
    /// Changes appended to RUNDIR/state since its last snapshot; None: the next write is a
    /// snapshot (at start, and after a failed write).
    journal: Option<usize>,
    /// Live processes whose start time could not be read yet.
    unread: Vec<Pid>,
}

impl Ops for Real {
    fn spawn(&mut self, name: &str, s: &Settings) -> Result<Pid, String> {
        let nul = |what: &str| format!("unable to start: {what} contains a NUL character");
        let cstr = |v: &str, what: &str| CString::new(v).map_err(|_| nul(what));
        let word = &s.cmd[0];
        let paths = if word.contains('/') {
            vec![cstr(word, "cmd")?]
        } else {
            (config::PATH.split(':'))
                .map(|dir| cstr(&format!("{dir}/{word}"), "cmd"))
                .collect::<Result<_, _>>()?
        };
        let argv = (s.cmd.iter())
            .map(|w| cstr(w, "cmd"))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = environment(s)?;
        let envp = (envp.iter())
            .map(|(k, v)| cstr(&format!("{k}={v}"), k))
            .collect::<Result<Vec<_>, _>>()?;
        let mut limits = vec![(libc::RLIMIT_NOFILE as i32, self.nofile)];
        limits.extend(s.limits.iter().map(|&(r, soft, hard)| {
            (
                r,
                libc::rlimit {
                    rlim_cur: soft as _,
                    rlim_max: hard as _,
                },
            )
        }));
        let path = |p: &std::path::Path, what| cstr(p.to_str().unwrap_or_default(), what);
        let chroot = s.chroot.as_deref().map(|p| path(p, "chroot")).transpose()?;
        let cwd = path(&s.cwd, "cwd")?;
        let pipe = (s.log)
            .then(sys::output_pipe)
            .transpose()
            .map_err(|e| self.unable("create the output pipe", e))?;
        let (pid, report) = sys::spawn(&sys::Spawn {
            paths: &paths,
            argv: &argv,
            envp: &envp,
            stdin: self.stdio.as_raw_fd(),
            stdout: pipe
                .as_ref()
                .map_or(self.stdio.as_raw_fd(), |p| p.1.as_raw_fd()),
            limits: &limits,
            nice: s.nice,
            chroot: chroot.as_ref(),
            creds: s.creds.as_ref().map(|c| sys::Creds {
                uid: c.uid,
                gid: c.gid,
                groups: &c.groups,
            }),
            cwd: &cwd,
            umask: s.umask as libc::mode_t,
        })
        .map_err(|e| self.unable("fork", e))?;
        // Should epoll refuse the pipe, the failure is still read when the child is reaped.
        let _ = self.epoll.add(report.as_raw_fd(), CHILD | pid as u64);
        self.pending.insert(pid, report);
        if let Some((out, _)) = pipe {
            self.watch_output(pid, name, out);
        }
        Ok(pid)
    }

    fn signal(&mut self, pgid: Pid, sig: libc::c_int) {
        let _ = sys::kill_group(pgid, sig);
    }

    fn group_alive(&mut self, pgid: Pid) -> bool {
        if self.adopted.contains(&pgid) {
            sys::group_has_live(pgid)
        } else {
            sys::group_alive(pgid)
        }
    }

    fn log(&mut self, level: Level, msg: fmt::Arguments) {
        self.log.log(level, msg);
    }

    fn mark_down(&mut self, name: &str, fingerprint: Option<u64>) {
        let done = match fingerprint {
            Some(fp) => self
                .rundir
                .subdir("down")
                .map_err(|e| e.to_string())
                .and_then(|down| {
                    (down.replace(name, format!("v2 {fp}\n").as_bytes()))
                        .map_err(|e| format!("{}: {}", down.path().join(name).display(), Errno(&e)))
                }),
            // No mark without the directory: nothing to forget.
            None => self.rundir.existing_subdir("down").map_or(Ok(()), |down| {
                (down.remove(name))
                    .map_err(|e| format!("{}: {}", down.path().join(name).display(), Errno(&e)))
            }),
        };
        if let Err(e) = done {
            self.log(
                Level::Err,
                format_args!("{name}: unable to record whether it is down: {e}"),
            );
        }
    }
}

impl Real {
    /// A start that failed before the fork, in words that say what ran out.
    fn unable(&self, what: &str, e: io::Error) -> String {
        match e.raw_os_error() {
            Some(libc::EMFILE) => format!(
                "unable to {what}: going has used up its file descriptors (limit {})",
                sys::nofile_limit().rlim_cur
            ),
            Some(libc::ENFILE) => {
                format!("unable to {what}: the system has run out of file descriptors")
            }
            _ => format!("unable to {what}: {}", Errno(&e)),
        }
    }

    /// Watches an adopted process (not going's child) through its pidfd; false if epoll
    /// will not have it. Its process group is the pid: going started it with setsid.
    fn watch_adopted(&mut self, pid: Pid, pidfd: OwnedFd) -> bool {
        if self
            .epoll
            .add(pidfd.as_raw_fd(), PIDFD | pid as u64)
            .is_err()
        {
            return false;
        }
        self.pidfds.insert(pid, pidfd);
        self.adopted.insert(pid);
        true
    }

    /// Reads the output pipe of the process `pid` of service `name` from now on; should
    /// epoll refuse it, what is in it is still read when the process ends.
    fn watch_output(&mut self, pid: Pid, name: &str, fd: OwnedFd) {
        let _ = self.epoll.add(fd.as_raw_fd(), OUTPUT | pid as u64);
        self.outputs.add(pid, name, fd);
    }

    /// Relays what the process `pid` wrote, to syslog and to its service's last lines;
    /// `last` once it has exited.
    fn read_output(&mut self, pid: Pid, last: bool, table: &mut Table) {
        let Some(fd) = self.outputs.fd(pid) else {
            return;
        };
        let log = &mut self.log;
        let open = self.outputs.read(pid, last, &mut |name, line| {
            log.service_line(name, pid as u32, line.severity, &line.text);
            table.output(pid, &line.text);
        });
        if !open {
            self.epoll.delete(fd);
            self.outputs.close(pid);
        }
    }

    /// What the child `pid` reported on its exec-error pipe: Ok once it exec'd (end of
    /// file), the error if it failed before; the pipe is closed then. None while it has
    /// not said yet, or had no pipe.
    fn child_report(&mut self, pid: Pid) -> Option<Result<(), ChildError>> {
        let pipe = self.pending.remove(&pid)?;
        let mut b = [0u8; 12];
        let mut file = File::from(pipe);
        let report = match file.read(&mut b) {
            Ok(12) => ChildError::decode(b).map_or(Ok(()), Err),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.pending.insert(pid, file.into());
                return None;
            }
            _ => Ok(()),
        };
        self.epoll.delete(file.as_raw_fd());
        Some(report)
    }
}

/// Rescans CONFDIR and applies it: the summary and every problem of every invalid file.
/// The first one that can read CONFDIR also takes over what a previous going left.
fn reload(
    table: &mut Table,
    real: &mut Real,
    watch: &mut Watch,
    confdir: &Path,
    conf_lock: &mut ConfLock,
    adopt: &mut Option<BTreeMap<String, Adoptable>>,
    full: bool,
) -> Result<(Summary, Vec<String>), String> {
    if watch.reloading() || full {
        watch.stamps.clear();
    }
    if let Err(e) = conf_lock.take(confdir) {
        let msg = format!("{e}; {} services left as they are", table.len());
        real.log(Level::Err, format_args!("reload: {msg}"));
        return Err(msg);
    }
    // A file or the directory unreadable for want of fds or memory: another try soon.
    let retry = Instant::now() + std::time::Duration::from_secs(1);
    match watch.scan(confdir, |level, msg| real.log(level, msg)) {
        Ok(config::Scan {
            files: scan,
            mut unchanged,
            ..
        }) => {
            if scan
                .values()
                .filter_map(|p| p.as_ref().err())
                .flatten()
                .any(|e| e.transient)
            {
                watch.retry(retry);
            }
            let problems = (scan.values())
                .filter_map(|p| p.as_ref().err())
                .flatten()
                .map(|e| e.to_string())
                .collect();
            if let Some(adopt) = adopt.take() {
                table.adopt(&scan, adopt, real, Instant::now());
            }
            unchanged.sort_unstable();
            let sum = table.reconcile(scan, &unchanged, real, Instant::now());
            real.log(Level::Notice, format_args!("reload: {sum}"));
            Ok((sum, problems))
        }
        Err((e, transient)) => {
            if transient {
                watch.retry(retry);
            }
            let msg = format!("{e}; {} services left as they are", table.len());
            real.log(Level::Err, format_args!("reload: {msg}"));
            Err(msg)
        }
    }
}

/// What a previous going left running, from RUNDIR/state, each process verified by pid
/// and start time, its pidfd (opened before the check, so that a pid recycled meanwhile
/// fails it) watched from now on.
fn adoptable(real: &mut Real, now: Instant) -> BTreeMap<String, Adoptable> {
    let entries = match state::read(&real.rundir, real.boot.as_deref()) {
        Ok(read) => {
            let path = real.rundir.path().join("state");
            for p in read.problems {
                real.log(Level::Err, format_args!("going: {}: {p}", path.display()));
            }
            read.entries
        }
        Err(why) => {
            real.log(
                Level::Err,
                format_args!("going: not adopting anything: {why}"),
            );
            return BTreeMap::new();
        }
    };
    let mut out = BTreeMap::new();
    let mut pipes = None; // pipefs's device, learnt once
    for e in entries {
        let Ok(pidfd) = sys::pidfd_open(e.pid) else {
            continue;
        }; // gone
        if sys::proc_identity(e.pid) != Some((e.pgid, e.start)) || out.contains_key(&e.name) {
            real.log(
                Level::Info,
                format_args!(
                    "{}: pid {} is no longer the process going started",
                    e.name, e.pid
                ),
            );
            continue;
        }
        let age = sys::age(e.start).unwrap_or_default();
        if !real.watch_adopted(e.pid, pidfd) {
            continue;
        }
        real.starts.insert(e.pid, e.start);
        if e.pipe != 0 {
            let dev = *pipes.get_or_insert_with(output::pipe_dev);
            if let Some(fd) = dev.and_then(|dev| output::reopen(e.pid, dev, e.pipe)) {
                real.watch_output(e.pid, &e.name, fd);
            }
        }
        let since = now.checked_sub(age).unwrap_or(now);
        out.insert(
            e.name,
            Adoptable {
                pid: e.pid,
                since,
                fingerprint: e.fingerprint,
            },
        );
    }
    out
}

/// The processes a going that exec'd this one handed over: its children (now ours, with
/// their output pipes) and those it had adopted itself (watched by pidfd).
fn take_over(
    real: &mut Real,
    h: crate::upgrade::Handover,
    now: Instant,
) -> BTreeMap<String, Adoptable> {
    let mut out = BTreeMap::new();
    for p in h.procs {
        if !p.child && !sys::pidfd_open(p.pid).is_ok_and(|fd| real.watch_adopted(p.pid, fd)) {
            continue;
        }
        if let Some(fd) = p.output {
            real.watch_output(p.pid, &p.name, fd);
        }
        let since = now.checked_sub(p.age).unwrap_or(now);
        out.insert(
            p.name,
            Adoptable {
                pid: p.pid,
                since,
                fingerprint: p.fingerprint,
            },
        );
    }
    out
}

/// SIGUSR2: ask the binary installed where going was started from whether it can take
/// over; `finish_upgrade` execs it once it said so.
fn start_upgrade(real: &mut Real, now: Instant) {
    if real.check.is_some() {
        real.log(
            Level::Notice,
            format_args!("going: already upgrading: the new binary has not answered yet"),
        );
        return;
    }
    let Some(path) = crate::upgrade::own_path() else {
        real.log(
            Level::Err,
            format_args!("going: unable to upgrade: cannot tell where going was started from"),
        );
        return;
    };
    match crate::upgrade::start_check(path, real.nofile, now) {
        Ok(check) => real.check = Some(check),
        Err(e) => real.log(
            Level::Err,
            format_args!("going: unable to upgrade: {e}; carrying on"),
        ),
    }
}

/// The new binary answered (it ended with `status`): exec it, handing over all that runs. Returns only if that failed; going then
/// carries on as it was.
fn finish_upgrade(
    table: &mut Table,
    real: &mut Real,
    status: libc::c_int,
    kept: &crate::upgrade::Kept,
) {
    let Some(check) = real.check.take().filter(|c| !c.timed_out) else {
        return; // killed after its time was up, and said so then
    };
    let said = match check.verdict(status) {
        Ok(said) => said,
        Err(e) => {
            real.log(
                Level::Err,
                format_args!("going: unable to upgrade: {e}; carrying on"),
            );
            return;
        }
    };
    let procs: Vec<_> = (table.live())
        .map(|(name, pid, _, fp)| {
            let age = (real.starts.get(&pid).copied())
                .or_else(|| sys::proc_identity(pid).map(|p| p.1))
                .and_then(sys::age)
                .unwrap_or_default();
            crate::upgrade::Leaving {
                name: name.to_string(),
                pid,
                fingerprint: fp,
                age,
                child: !real.pidfds.contains_key(&pid),
                output: real.outputs.fd(pid),
            }
        })
        .collect();
    // Should the new binary die after taking over, the next going adopts from this.
    save_state(table, real, true);
    let path = check.path.clone();
    real.log(
        Level::Notice,
        format_args!(
            "going: upgrading: exec {} ({said}) with {} services",
            path.display(),
            procs.len()
        ),
    );
    real.log.flush();
    let err = check.exec(kept, &procs);
    real.log(
        Level::Err,
        format_args!(
            "going: unable to upgrade: exec {}: {}; carrying on",
            path.display(),
            Errno(&err)
        ),
    );
}

/// Tells RUNDIR/state what live processes came, went or changed: appended, or as a new
/// snapshot when the changes since the last one outnumber the live processes, or the last
/// write failed; `snapshot` asks for one now. A failure (RUNDIR full or read-only) is
/// logged once.
fn save_state(table: &mut Table, real: &mut Real, snapshot: bool) {
    let mut changes = table.take_changes();
    if changes.is_empty() && !snapshot {
        return;
    }
    if snapshot {
        real.journal = None;
    }
    // Start times are read once per process, and forgotten with it. One that could not be
    // read (out of fds, say) is tried again at the next change: until then its process is
    // missing from the file.
    changes.extend(real.unread.drain(..).map(|pid| (pid, true)));
    for &(pid, live) in &changes {
        if !live {
            real.starts.remove(&pid);
        } else if table.live_entry(pid).is_some() && !real.starts.contains_key(&pid) {
            match sys::proc_identity(pid) {
                Some((_, start)) => {
                    real.starts.insert(pid, start);
                }
                None => real.unread.push(pid),
            }
        }
    }
    let (starts, outputs) = (&real.starts, &real.outputs);
    let entry = |pid: Pid| {
        let (name, pgid, fingerprint) = table.live_entry(pid)?;
        Some(state::Entry {
            name: name.into(),
            pid,
            pgid,
            start: *starts.get(&pid)?,
            fingerprint: Fingerprint::V2(fingerprint),
            pipe: outputs.ino(pid),
        })
    };
    let snapshot = || {
        let entries = table.live().filter_map(|(_, pid, ..)| entry(pid));
        state::write(&real.rundir, real.boot.as_deref(), entries, table.len()).map(|()| 0)
    };
    let appended = real.journal.map(|n| n + changes.len());
    let done = match appended.filter(|&n| n <= 2 * table.len() + 64) {
        Some(n) => {
            let changes = changes.iter().filter_map(|&(pid, live)| match live {
                true => entry(pid).map(state::Change::Live),
                false => Some(state::Change::Ended(pid)),
            });
            match state::append(&real.rundir, changes) {
                Ok(()) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::NotFound => snapshot(),
                Err(e) => Err(e),
            }
        }
        None => snapshot(),
    };
    real.journal = done.as_ref().ok().copied();
    match done.map(|_| ()) {
        Ok(()) if real.state_error.take().is_some() => {
            let path = real.rundir.path().join("state");
            real.log(
                Level::Notice,
                format_args!("going: {} is written again", path.display()),
            );
        }
        Ok(()) => {}
        Err(e) => {
            let msg = format!(
                "unable to write {}: {}",
                real.rundir.path().join("state").display(),
                Errno(&e)
            );
            if real.state_error.as_ref() != Some(&msg) {
                real.log(
                    Level::Err,
                    format_args!("going: {msg}; a restart of going would not adopt the services"),
                );
                real.state_error = Some(msg);
            }
        }
    }
}

/// The services the admin left stopped, from RUNDIR/down: name and settings fingerprint
/// (`v2 FP`, or going 0.1.0's bare `FP`).
fn down_marks(rundir: &RunDir) -> BTreeMap<String, Fingerprint> {
    let Some(down) = rundir.existing_subdir("down") else {
        return BTreeMap::new();
    };
    (down.names().unwrap_or_default().into_iter())
        .filter_map(|name| {
            let bytes = down.read(&name, 64).ok()??;
            let text = std::str::from_utf8(&bytes).ok()?.trim();
            let fp = match text.strip_prefix("v2 ") {
                Some(fp) => Fingerprint::V2(fp.parse().ok()?),
                None => Fingerprint::V1(text.parse().ok()?),
            };
            Some((name, fp))
        })
        .collect()
}

/// A service's environment: `PATH`, the user's `HOME`, `USER` and `LOGNAME`, the
/// `env_file` (read now, at each start), then `env=`; a later value of a name wins.
fn environment(s: &Settings) -> Result<Vec<(String, String)>, String> {
    let mut env = vec![("PATH".to_string(), config::PATH.to_string())];
    env.extend(s.user_env.iter().cloned());
    if let Some(file) = &s.env_file {
        env.extend(config::read_env_file(file).map_err(|e| format!("env_file {e}"))?);
    }
    env.extend(s.env.iter().cloned());
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        match out.iter_mut().find(|e| e.0 == k) {
            Some(e) => e.1 = v,
            None => out.push((k, v)),
        }
    }
    Ok(out)
}

/// The lock on CONFDIR: two goings given one CONFDIR and different RUNDIRs would both run
/// every service. flock(2) on the directory itself, taken again when the directory at the
/// path is another one (made anew, or a symbolic link pointed elsewhere).
#[derive(Default)]
struct ConfLock {
    held: Option<File>,
}

impl ConfLock {
    /// Locks the directory `confdir` names now, unless that is the one already locked; Ok
    /// too when there is no directory to lock (the scan says why).
    fn take(&mut self, confdir: &Path) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = fs::metadata(confdir) else {
            // Gone: let go of it, so that its inode (and inotify's watch on it) can go too.
            self.held = None;
            return Ok(());
        };
        let same = |f: &File| {
            f.metadata()
                .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
        };
        if self.held.as_ref().is_some_and(same) || !meta.is_dir() {
            return Ok(());
        }
        let Some(dir) = File::open(confdir).ok().filter(same) else {
            return Ok(()); // replaced meanwhile: the next reload looks again
        };
        if dir.try_lock().is_err() {
            return Err(format!(
                "{} is supervised by another going{}",
                confdir.display(),
                held_by(&meta)
            ));
        }
        self.held = Some(dir);
        Ok(())
    }
}

/// " (pid N: its command line)" for the process holding a lock on this file, or nothing.
fn held_by(meta: &fs::Metadata) -> String {
    let Some(pid) = sys::lock_holders(meta)
        .into_iter()
        .find(|&p| p != sys::getpid())
    else {
        return String::new();
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = (cmdline.split(|&b| b == 0))
        .filter(|w| !w.is_empty())
        .map(output::escape)
        .collect();
    match words.is_empty() {
        true => format!(" (pid {pid})"),
        false => format!(" (pid {pid}: {})", words.join(" ")),
    }
}

fn fatal(code: u8, msg: String) -> Fatal {
    Fatal { code, msg }
}

pub fn run(opts: Options) -> Result<(), Fatal> {
    sys::sanitize_fds();
    sys::unblock_all();
    let nofile = sys::nofile_limit();
    sys::raise_nofile(nofile);
    sys::become_subreaper();

    let unable =
        |code, what: &str, e: io::Error| fatal(code, format!("unable to {what}: {}", Errno(&e)));
    // After an upgrade RUNDIR and the locks are still held, on the fds the previous binary
    // handed over.
    let mut handed = crate::upgrade::take();
    let rundir = match handed.as_mut().and_then(|h| h.rundir.take()) {
        Some(fd) => RunDir::from_dir(sys::Dir::from_fd(fd), &opts.rundir),
        None => RunDir::open(&opts.rundir),
    }
    .map_err(|e| match e.is_unsafe() {
        true => fatal(EX_CONFIG, e.to_string()),
        false => fatal(EX_CANTCREAT, e.to_string()),
    })?;
    let lock_path = rundir.path().join("lock");
    let lock = match handed.as_mut().and_then(|h| h.lock.take()) {
        Some(fd) => File::from(fd),
        None => {
            let lock = (rundir.lock_file("lock"))
                .map_err(|e| unable(EX_CANTCREAT, &format!("open {}", lock_path.display()), e))?;
            if lock.try_lock().is_err() {
                let who = lock.metadata().map(|m| held_by(&m)).unwrap_or_default();
                return Err(fatal(
                    EX_TEMPFAIL,
                    format!(
                        "{} is in use by another going{who} ({} is locked)",
                        rundir.path().display(),
                        lock_path.display()
                    ),
                ));
            }
            lock
        }
    };
    let mut conf_lock = ConfLock::default();
    match handed.as_mut().and_then(|h| h.confdir.take()) {
        Some(fd) => conf_lock.held = Some(File::from(fd)),
        None => conf_lock
            .take(&opts.confdir)
            .map_err(|e| fatal(EX_TEMPFAIL, e))?,
    }

    let os = |what: &str, e: io::Error| unable(EX_OSERR, what, e);
    let (wake, wake_w) = UnixStream::pair().map_err(|e| os("create the signal pipe", e))?;
    wake.set_nonblocking(true)
        .map_err(|e| os("create the signal pipe", e))?;
    for (sig, flag) in [
        (libc::SIGCHLD, &CHLD),
        (libc::SIGHUP, &HUP),
        (libc::SIGTERM, &TERM),
        (libc::SIGINT, &TERM),
        (libc::SIGQUIT, &TERM),
        (libc::SIGUSR2, &UPGRADE),
    ] {
        // The flag first: by the time the byte wakes the loop, the flag is set.
        signal_hook::flag::register(sig, flag).map_err(|e| os("set a signal handler", e))?;
        let w = wake_w
            .try_clone()
            .map_err(|e| os("set a signal handler", e))?;
        signal_hook::low_level::pipe::register(sig, w)
            .map_err(|e| os("set a signal handler", e))?;
    }
    drop(wake_w);

    let stdio = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| os("open /dev/null", e))?;
    let epoll = Epoll::new().map_err(|e| os("create an epoll instance", e))?;
    let mut watch =
        crate::watch::Watch::new(&opts.confdir).map_err(|e| os("initialise inotify", e))?;
    epoll
        .add(wake.as_raw_fd(), SIGNALS)
        .map_err(|e| os("watch the signal pipe", e))?;
    epoll
        .add(watch.fd(), INOTIFY)
        .map_err(|e| os("watch inotify", e))?;

    let mut real = Real {
        epoll,
        log: Logger::new(opts.syslog),
        stdio,
        nofile,
        pending: BTreeMap::new(),
        outputs: Outputs::default(),
        rundir,
        boot: sys::boot_id(),
        check: None,
        pidfds: BTreeMap::new(),
        adopted: Default::default(),
        starts: BTreeMap::new(),
        state_error: None,
        journal: None,
        unread: Vec::new(),
    };
    (real.log)
        .watch(&real.epoll, SYSLOG)
        .map_err(|e| os("watch the syslog socket", e))?;
    let mut table = Table::default();
    table.down_marks = down_marks(&real.rundir);
    let control_path = real.rundir.path().join("control");
    let inherited = handed.as_mut().and_then(|h| h.control.take());
    // Created with mode 0600 from the start, in RUNDIR as it was checked.
    let umask = sys::set_umask(0o177);
    let bound = Control::bind(&real.rundir.socket_path("control"), inherited);
    sys::set_umask(umask);
    let mut control = bound.map_err(|e| {
        unable(
            EX_CANTCREAT,
            &format!("create {}", control_path.display()),
            e,
        )
    })?;
    real.epoll
        .add(control.fd(), CONTROL)
        .map_err(|e| os("watch the control socket", e))?;
    real.log(
        Level::Notice,
        format_args!(
            "going {} started on {}",
            env!("CARGO_PKG_VERSION"),
            opts.confdir.display()
        ),
    );
    watch.request(Instant::now());
    let mut adopt = Some(match handed {
        Some(h) => take_over(&mut real, h, Instant::now()),
        None => adoptable(&mut real, Instant::now()),
    });
    // A SIGCHLD that came while an upgrade exec'd this binary is lost: look anyway.
    CHLD.store(true, Ordering::SeqCst);

    let mut events = [sys::NO_EVENT; 64];
    let mut stopping = false;
    loop {
        let now = Instant::now();
        let due = [
            table.next_deadline(),
            watch.due().filter(|_| !stopping),
            control.next_deadline(),
            real.check
                .as_ref()
                .filter(|c| !c.timed_out)
                .map(|c| c.deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = due.map_or(-1, |d| {
            let ns = d.saturating_duration_since(now).as_nanos();
            ns.div_ceil(1_000_000).min(i32::MAX as u128) as i32
        });
        let n = match real.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) => {
                real.log(
                    Level::Err,
                    format_args!("going: epoll_wait failed: {}", Errno(&e)),
                );
                0
            }
        };
        let now = Instant::now();
        for ev in &events[..n] {
            match sys::token(ev) {
                SIGNALS => while (&wake).read(&mut [0u8; 64]).is_ok_and(|n| n > 0) {},
                INOTIFY => watch.read(now),
                SYSLOG => real.log.flush(),
                CONTROL => control.accept(&real.epoll, |id| CLIENT | id as u64, now),
                t if t & PIDFD == PIDFD => {
                    // An adopted process ended; init, its parent now, reaps it.
                    let pid = (t & !PIDFD) as Pid;
                    if let Some(fd) = real.pidfds.remove(&pid) {
                        real.epoll.delete(fd.as_raw_fd());
                        real.read_output(pid, true, &mut table);
                        table.exited(pid, Exit::Unknown, &mut real, now);
                        table.check_groups(&mut real, now);
                    }
                }
                t if t & CLIENT == CLIENT => {
                    let id = (t & !CLIENT) as u32;
                    let control::Event::Request(id, line) =
                        control.ready(id, &real.epoll, CLIENT | id as u64)
                    else {
                        continue;
                    };
                    let reply =
                        match admin::handle(&line, &mut table, &mut real, now, &opts.confdir) {
                            Handled::Reply(text) => text,
                            Handled::Reload if stopping => {
                                format!("{}\n!going: stopping\n", control::FAILED)
                            }
                            Handled::Reload => admin::reload_reply(reload(
                                &mut table,
                                &mut real,
                                &mut watch,
                                &opts.confdir,
                                &mut conf_lock,
                                &mut adopt,
                                true, // every problem of every file, for the admin
                            )),
                        };
                    control.reply(id, reply, &real.epoll, CLIENT | id as u64);
                }
                t if t & OUTPUT == OUTPUT => {
                    real.read_output((t & !OUTPUT) as Pid, false, &mut table)
                }
                t => {
                    let pid = (t & !CHILD) as Pid;
                    match real.child_report(pid) {
                        Some(Ok(())) => table.exec_ok(pid),
                        Some(Err(err)) => table.child_failed(pid, err),
                        None => {}
                    }
                }
            }
        }
        if CHLD.swap(false, Ordering::SeqCst) {
            // SIGCHLDs merge: reap until nothing is left, services or not.
            while let Some((pid, status)) = sys::reap() {
                if real.check.as_ref().is_some_and(|c| c.pid == pid) {
                    let kept = crate::upgrade::Kept {
                        lock: lock.as_raw_fd(),
                        control: control.fd(),
                        rundir: real.rundir.dir().fd(),
                        confdir: conf_lock.held.as_ref().map(|f| f.as_raw_fd()),
                    };
                    finish_upgrade(&mut table, &mut real, status, &kept);
                    continue;
                }
                if let Some(Err(err)) = real.child_report(pid) {
                    table.child_failed(pid, err);
                }
                real.read_output(pid, true, &mut table);
                table.exited(pid, Exit::from_status(status), &mut real, now);
            }
            table.check_groups(&mut real, now);
        }
        if TERM.swap(false, Ordering::SeqCst) && !stopping {
            stopping = true;
            real.log(
                Level::Notice,
                format_args!("going: stopping {} services", table.len()),
            );
            table.shutdown(&mut real, now);
        }
        if HUP.swap(false, Ordering::SeqCst) {
            watch.request(now);
        }
        if UPGRADE.swap(false, Ordering::SeqCst) && !stopping {
            start_upgrade(&mut real, now);
        }
        if real
            .check
            .as_ref()
            .is_some_and(|c| c.deadline <= now && !c.timed_out)
        {
            let check = real.check.as_mut().unwrap();
            check.timed_out = true;
            let (pid, path) = (check.pid, check.path.clone());
            real.log(
                Level::Err,
                format_args!(
                    "going: unable to upgrade: {} did not answer within {}s; carrying on",
                    path.display(),
                    crate::upgrade::CHECK_TIMEOUT.as_secs()
                ),
            );
            real.signal(pid, libc::SIGKILL);
        }
        if !stopping && watch.due().is_some_and(|d| d <= now) {
            let _ = reload(
                &mut table,
                &mut real,
                &mut watch,
                &opts.confdir,
                &mut conf_lock,
                &mut adopt,
                false,
            );
        }
        table.tick(&mut real, Instant::now());
        control.expire(Instant::now(), &real.epoll, CONTROL);
        save_state(&mut table, &mut real, false);
        real.log.want_output(&real.epoll, SYSLOG);
        if stopping && table.is_empty() {
            real.log(
                Level::Notice,
                format_args!("going: all services stopped, exiting"),
            );
            for (what, done) in [
                ("control", real.rundir.remove("control")),
                ("state", state::remove(&real.rundir)),
            ] {
                if let Err(e) = done {
                    let path = real.rundir.path().join(what);
                    real.log(
                        Level::Err,
                        format_args!("going: unable to remove {}: {}", path.display(), Errno(&e)),
                    );
                }
            }
            drop(lock);
            return Ok(());
        }
    }
}
