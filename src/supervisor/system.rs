//! The table's effects done for real, and the fds they leave going to watch: each child's
//! exec-error pipe until it exec'd, each service process's output pipe, each adopted
//! process's pidfd, and the signalfd on which children's ends arrive. This is the one
//! place that forks, signals, reaps and reads from processes.
//!
//! Invariants: an fd is in epoll exactly while it is in one of these registries, under the
//! token of its [`Source`]; a signal goes to a process group while its leader lives, to a
//! lone pid only when that pid is a child of going not yet reaped, and, the leader gone, to
//! the members of the service's cgroup where it has one, so a recycled pid or group is
//! not signalled.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use super::cgroups::Groups;
use super::source::Source;
use crate::cgroup::{Available, Killed};
use crate::config::{Ready, Settings};
use crate::follow::Followers;
use crate::log::{Errno, Level, Logger};
use crate::notify::{self, Notify};
use crate::output::Outputs;
use crate::rundir::RunDir;
use crate::service::{Effects, Launch, Table, To};
use crate::spawn::{Plan, Readiness, SpawnError};
use crate::sys::{self, ChildError, Epoll, Exit, Pid};

pub struct System {
    pub epoll: Epoll,
    pub log: Logger,
    /// /dev/null, read-write: every service's stdin, and stdout with `log=null`.
    stdio: File,
    /// going's own limit on open files as it was started, which services get back.
    pub nofile: libc::rlimit,
    /// Exec-error pipes of children that have not exec'd (or failed) yet.
    reports: BTreeMap<Pid, OwnedFd>,
    pub outputs: Outputs,
    pub rundir: RunDir,
    /// Pidfds of adopted processes, which are not going's children.
    pidfds: BTreeMap<Pid, OwnedFd>,
    /// The signalfd of SIGCHLD, in epoll: a child ended, and which one.
    #[allow(dead_code)] // held open: epoll watches it
    exits: OwnedFd,
    /// Process groups of adopted services: their zombies are init's to reap. Each is
    /// forgotten once found empty, or once its pid is a new child's.
    adopted: PidSet,
    /// The new binary being asked, after SIGUSR2, whether it can take over.
    pub check: Option<crate::upgrade::Check>,
    /// The sd_notify socket of `ready=notify` services.
    pub notify: Option<Notify>,
    /// Readiness pipes of `ready=fd:N` processes that have not said yet.
    ready_fds: BTreeMap<Pid, OwnedFd>,
    /// Clients following services' output (`going log -f`).
    pub followers: Followers,
    /// The services' cgroups, where going uses cgroups.
    pub cgroups: Option<Groups>,
    /// Why it uses none, where it does not: the end of `going uses no cgroups: …`.
    pub no_cgroups: String,
}

/// A few pids (the adopted groups: none but after a restart of going), as a plain vector:
/// a set's tree code would cost more binary than its lookups save.
#[derive(Default)]
struct PidSet(Vec<Pid>);

impl PidSet {
    fn insert(&mut self, pid: Pid) {
        if !self.contains(&pid) {
            self.0.push(pid);
        }
    }
    fn remove(&mut self, pid: &Pid) {
        self.0.retain(|p| p != pid);
    }
    fn contains(&self, pid: &Pid) -> bool {
        self.0.contains(pid)
    }
}

impl System {
    pub fn new(
        epoll: Epoll,
        log: Logger,
        stdio: File,
        nofile: libc::rlimit,
        rundir: RunDir,
        exits: OwnedFd,
    ) -> System {
        System {
            epoll,
            log,
            stdio,
            nofile,
            reports: BTreeMap::new(),
            outputs: Outputs::default(),
            rundir,
            pidfds: BTreeMap::new(),
            exits,
            adopted: Default::default(),
            check: None,
            notify: None,
            ready_fds: BTreeMap::new(),
            followers: Followers::default(),
            cgroups: None,
            no_cgroups: String::new(),
        }
    }

    /// What the cgroup limit keys of service files are checked against.
    pub fn available(&self) -> Available {
        match &self.cgroups {
            Some(g) => g.available().clone(),
            None => Available::Off(self.no_cgroups.clone()),
        }
    }

    /// Services' processes adopted (`adopted`), each made sure to be in its service's
    /// cgroup; and the services whose cgroups hold processes none of which was adopted:
    /// what an earlier going left, to stop before they start.
    pub fn adopt_cgroups(&mut self, adopted: &super::adopt::Adopted) -> Vec<String> {
        let Some(groups) = self.cgroups.as_mut() else {
            return Vec::new();
        };
        let mut said = Vec::new();
        for (name, a) in adopted {
            match groups.adopt(name, a.pid, a.drain.is_none(), &self.epoll) {
                Ok(false) => {}
                Ok(true) => said.push((
                    Level::Notice,
                    format!(
                        "{name}[{}]: moved into its cgroup, with its process group",
                        a.pid
                    ),
                )),
                Err(e) => said.push((
                    Level::Err,
                    format!("{name}: {e}; it has no cgroup until it starts again"),
                )),
            }
        }
        let leftovers = groups.leftovers(|name| adopted.contains_key(name));
        for (level, msg) in said {
            self.log.log(level, format_args!("{msg}"));
        }
        leftovers
    }

    /// After the first reading of CONFDIR: the cgroups an earlier going left for services
    /// that are no more, removed (those still holding processes are stopped first, as the
    /// services' leftovers).
    pub fn prune_cgroups(&mut self, keep: impl Fn(&str) -> bool) {
        let Some(groups) = self.cgroups.as_mut() else {
            return;
        };
        for name in groups.names_but(keep) {
            if let Err(e) = groups.remove(&name, &self.epoll) {
                self.log.log(Level::Err, format_args!("going: {e}"));
            }
        }
    }

    /// The cgroup `id` of a service told of a change: read (which clears the wake-up).
    /// What follows from it is `Table::check_groups`' to see.
    pub fn cgroup_event(&mut self, id: u32) {
        let Some(groups) = &self.cgroups else { return };
        let Some(name) = groups.by_id(id) else { return };
        if let Some(Err(e)) = groups.populated(name) {
            let msg = format_args!("{name}: {e}");
            self.log.log(Level::Err, msg);
        }
    }

    /// The `memory.events` of cgroup `id` changed: the OOM killer's kills are said, with
    /// the limits that brought them. `main` is the service's main process, if it runs.
    pub fn oom_event(&mut self, id: u32, main: impl Fn(&str) -> Option<Pid>) {
        let Some(groups) = &mut self.cgroups else {
            return;
        };
        let Some(name) = groups.by_id(id).map(String::from) else {
            return;
        };
        let (n, limits) = match groups.oom_kills(&name) {
            Ok((0, _)) => return,
            Ok(found) => found,
            Err(e) => {
                let msg = format_args!("{name}: {e}");
                return self.log.log(Level::Err, msg);
            }
        };
        let msg = oom_message(&name, main(&name), n, &limits);
        self.log.log(Level::Warning, format_args!("{msg}"));
    }

    /// The sd_notify socket, made when a service first needs it (`ready=notify`): at the
    /// abstract name of this RUNDIR, so that services adopted after a `kill -9` reach the
    /// next going; at a name the kernel picks when another process holds that one.
    pub fn ensure_notify(&mut self) {
        if self.notify.is_some() {
            return;
        }
        let name = notify::abstract_name(self.rundir.path());
        let made = match Notify::bind(&notify::Addr::Abstract(name.clone())) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                let msg = format_args!(
                    "going: NOTIFY_SOCKET @{name} is taken by another process: using a name of the kernel's"
                );
                self.log(Level::Warning, msg);
                Notify::autobind()
            }
            made => made,
        };
        self.keep_notify(made, "make");
    }

    /// The sd_notify socket a going that exec'd this one handed over, with what waits in it.
    pub fn take_notify(&mut self, fd: OwnedFd) {
        self.keep_notify(Notify::from_fd(fd, None), "take over");
    }

    /// The sd_notify socket, watched; or, made or taken over (`what`) in vain, logged.
    fn keep_notify(&mut self, notify: io::Result<Notify>, what: &str) {
        match notify {
            Ok(n) if self.watch(n.fd(), Source::Notify, "readiness is not heard") => {
                self.notify = Some(n)
            }
            Ok(_) => {}
            Err(e) => {
                let msg = format_args!("going: unable to {what} NOTIFY_SOCKET: {}", Errno(&e));
                self.log(Level::Err, msg);
            }
        }
    }

    /// Waits for the readiness line of process `pid` on `fd` (the read end of its pipe).
    pub fn watch_ready_fd(&mut self, pid: Pid, fd: OwnedFd) {
        let fd = sys::high(fd);
        if self.watch(
            fd.as_raw_fd(),
            Source::ReadyFd(pid),
            "its readiness is not seen",
        ) {
            self.ready_fds.insert(pid, fd);
        }
    }

    /// After an adoption: the readiness pipe of `pid`, not ready yet, found again at its fd
    /// `n` through /proc (a pipe the process still holds, with what it wrote meanwhile).
    /// False when it holds none there any more: it closed it, as a daemon does once it
    /// said it was ready.
    pub fn reopen_ready_fd(&mut self, pid: Pid, n: i32) -> bool {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        if self.ready_fds.contains_key(&pid) {
            return true;
        }
        let path = format!("/proc/{pid}/fd/{n}");
        let pipe = std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_fifo());
        let opened = pipe.then(|| {
            (std::fs::OpenOptions::new())
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
        });
        match opened {
            Some(Ok(f)) => {
                self.watch_ready_fd(pid, f.into());
                true
            }
            _ => false,
        }
    }

    /// The readiness pipes still waited on, for an upgrade's handover.
    pub fn ready_fds(&self) -> Vec<(Pid, i32)> {
        self.ready_fds
            .iter()
            .map(|(p, fd)| (*p, fd.as_raw_fd()))
            .collect()
    }

    fn unwatch_ready_fd(&mut self, pid: Pid) {
        if let Some(fd) = self.ready_fds.remove(&pid) {
            self.epoll.delete(fd.as_raw_fd());
        }
    }

    /// The readiness pipe of `pid` can be read: ready at its first line; a pipe closed
    /// before one is given up on, as s6 does (its `ready_timeout`, if any, still runs).
    pub fn ready_fd(&mut self, pid: Pid, table: &mut Table, now: Instant) {
        let Some(fd) = self.ready_fds.remove(&pid) else {
            return;
        };
        let pipe = File::from(fd);
        let said = notify::read_ready_fd(&pipe);
        if said == notify::FdReady::NotYet {
            self.ready_fds.insert(pid, pipe.into());
            return;
        }
        self.epoll.delete(pipe.as_raw_fd());
        drop(pipe);
        if said == notify::FdReady::Ready {
            // What it wrote before it said so is logged before what its readiness starts.
            self.relay_output(pid, false, table);
            return table.fd_ready(pid, self, now);
        }
        if let Some(live) = table.live_entry(pid) {
            let name = live.name.to_string();
            self.log(
                Level::Warning,
                format_args!(
                    "{name}[{pid}]: closed its readiness fd without a line: not waiting for it any more"
                ),
            );
        }
    }

    /// What waits on the sd_notify socket, to the services it is from.
    pub fn notified(&mut self, table: &mut Table, now: Instant) {
        let Some(mut notify) = self.notify.take() else {
            return;
        };
        let mut dropped = Vec::new();
        let done = notify.drain(
            |m| {
                if m.fields.ready {
                    self.relay_output(m.group, false, table); // as for a readiness fd
                }
                table.notified(m.group, &m.fields, self, now)
            },
            |d| dropped.push(d),
        );
        // Counted, and said at the 1st, 2nd, 4th, 8th… drop: a process that floods the
        // socket cannot flood the log.
        let total = notify.dropped.total();
        self.notify = Some(notify);
        let first = total + 1 - dropped.len() as u64;
        for (d, n) in dropped.iter().zip(first..) {
            if n.is_power_of_two() {
                let msg = format_args!("going: NOTIFY_SOCKET: {d} ({n} dropped so far)");
                self.log(Level::Info, msg);
            }
        }
        if let Err(e) = done {
            let msg = format_args!("going: unable to read NOTIFY_SOCKET: {}", Errno(&e));
            self.log(Level::Err, msg);
        }
    }

    /// Adds `fd` to epoll under `source`; a failure is logged, and its consequence said.
    fn watch(&mut self, fd: i32, source: Source, else_: &str) -> bool {
        match self.epoll.add(fd, source.token()) {
            Ok(()) => true,
            Err(e) => {
                self.log(
                    Level::Err,
                    format_args!("going: unable to watch {source:?}: {}; {else_}", Errno(&e)),
                );
                false
            }
        }
    }

    /// Watches an adopted process (not going's child) through its pidfd; false if epoll
    /// will not have it. Its process group is the pid: going started it with setsid.
    pub fn watch_adopted(&mut self, pid: Pid, pidfd: OwnedFd) -> bool {
        let source = Source::Pidfd(pid);
        if !self.watch(pidfd.as_raw_fd(), source, "it is not adopted") {
            return false;
        }
        self.pidfds.insert(pid, pidfd);
        self.adopted.insert(pid);
        true
    }

    /// Whether a process is left in the group `pgid`: a live one, for an adopted group
    /// (whose zombies are init's to reap), else any.
    fn pgroup_alive(&self, pgid: Pid) -> bool {
        match pgid {
            ..=0 => false,
            _ if self.adopted.contains(&pgid) => sys::group_has_live(pgid),
            _ => sys::group_alive(pgid),
        }
    }

    /// A process group being stopped, its leader gone, whose members are not going's
    /// children: its zombies are init's, so only live members count.
    pub fn adopt_group(&mut self, pgid: Pid) {
        self.adopted.insert(pgid);
    }

    /// Whether the process group `pgid` is an adopted service's (its members are not
    /// going's children).
    pub fn is_adopted_group(&self, pgid: Pid) -> bool {
        self.adopted.contains(&pgid)
    }

    /// Whether `pid` was adopted (watched by pidfd), not forked by this going.
    pub fn is_adopted(&self, pid: Pid) -> bool {
        self.pidfds.contains_key(&pid)
    }

    /// The adopted process `pid` ended: forget its pidfd. False if it was not watched.
    pub fn adopted_ended(&mut self, pid: Pid) -> bool {
        let Some(fd) = self.pidfds.remove(&pid) else {
            return false;
        };
        self.epoll.delete(fd.as_raw_fd());
        true
    }

    /// Reads the output pipe of the process `pid` of service `name` from now on; should
    /// epoll refuse it, what is in it is still read when the process ends.
    pub fn read_output_of(&mut self, pid: Pid, name: &str, fd: OwnedFd) {
        let fd = sys::high(fd);
        self.watch(
            fd.as_raw_fd(),
            Source::Output(pid),
            "its output is read when it exits",
        );
        self.outputs.add(pid, name, fd);
    }

    /// Relays what the process `pid` wrote, to syslog, to its service's held lines and to
    /// its followers' queues; `last` once it has exited.
    pub fn relay_output(&mut self, pid: Pid, last: bool, table: &mut Table) {
        let Some(fd) = self.outputs.fd(pid) else {
            return;
        };
        let (log, followers, epoll) = (&mut self.log, &mut self.followers, &self.epoll);
        let open = self.outputs.read(pid, last, &mut |name, line| {
            log.service_line(name, pid as u32, line.severity, &line.text);
            table.output(pid, &line.text);
            followers.line(name, &line.text, epoll);
        });
        if !open {
            self.epoll.delete(fd);
            self.outputs.close(pid);
        }
    }

    /// What the child `pid` reported on its exec-error pipe: Ok once it exec'd (end of
    /// file), the error if it failed before; the pipe is closed then. None while it has
    /// not said yet, or had no pipe.
    pub fn child_report(&mut self, pid: Pid) -> Option<Result<(), ChildError>> {
        let pipe = self.reports.remove(&pid)?;
        let mut b = [0u8; 12];
        let mut file = File::from(pipe);
        let report = match file.read(&mut b) {
            Ok(12) => ChildError::decode(b).map_or(Ok(()), Err),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.reports.insert(pid, file.into());
                return None;
            }
            _ => Ok(()),
        };
        self.epoll.delete(file.as_raw_fd());
        Some(report)
    }

    /// A child ended: what it reported, its last output, then its exit, to the table.
    /// False when the table knew no such process (an orphan, say).
    pub fn child_ended(
        &mut self,
        pid: Pid,
        status: libc::c_int,
        table: &mut Table,
        now: Instant,
    ) -> bool {
        if let Some(Err(err)) = self.child_report(pid) {
            table.child_failed(pid, err, self);
        }
        self.unwatch_ready_fd(pid);
        self.relay_output(pid, true, table);
        table.exited(pid, Exit::from_status(status), self, now)
    }
}

/// Sends `sig` to the process group `pgid`. `ours`: its leader, of the same pid, is going's
/// child not yet reaped. A group that is gone is no error.
fn signal_group(pgid: Pid, ours: bool, sig: libc::c_int) -> io::Result<()> {
    match sys::kill_group(pgid, sig) {
        // Just forked, the leader has not made its group yet: the pid exists from the fork,
        // and its signals stay blocked until just before its exec, so this one takes effect
        // then.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) && ours => sys::kill(pgid, sig),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        done => done,
    }
}

impl Effects for System {
    fn spawn(&mut self, name: &str, s: &Settings, launch: Launch) -> Result<Pid, SpawnError> {
        let ready = Readiness {
            notify: self.notify.as_ref().map(Notify::name),
        };
        let plan = Plan::new(name, s, launch, self.nofile, &ready)?;
        let unable = |what| {
            move |err| SpawnError::Unable {
                what,
                err,
                nofile: sys::nofile_limit().rlim_cur,
            }
        };
        let pipe = (s.log).then(sys::pipe).transpose();
        let pipe = pipe.map_err(unable("create the output pipe"))?;
        let ready_fd = match (launch, s.life().ready) {
            (Launch::Service, Some(Ready::Fd(n))) => {
                let (r, w) = sys::pipe().map_err(unable("create the readiness pipe"))?;
                Some((r, w, n))
            }
            _ => None,
        };
        let cgroup = match self.cgroups.as_mut() {
            Some(g) => Some(g.prepare(name, s.cgroup_limits(), &self.epoll)?),
            None => None,
        };
        let stdio = self.stdio.as_raw_fd();
        let child = sys::spawn_child(&sys::Spawn {
            paths: &plan.paths,
            argv: &plan.argv,
            envp: &plan.envp,
            stdin: stdio,
            stdout: pipe.as_ref().map_or(stdio, |p| p.1.as_raw_fd()),
            limits: &plan.limits,
            nice: s.nice,
            chroot: plan.chroot.as_ref(),
            creds: s.creds.as_ref().map(|c| sys::Creds {
                uid: c.uid,
                gid: c.gid,
                groups: &c.groups,
            }),
            cwd: &plan.cwd,
            umask: s.umask as libc::mode_t,
            ready: ready_fd.as_ref().map(|(_, w, n)| (w.as_raw_fd(), *n)),
            exec_fd: None,
            cgroup,
        })
        .map_err(unable("fork"))?;
        let (pid, report) = (child.pid, child.report);
        // The pid of an adopted group that is gone: a child of going's now, which signal()
        // may reach by its pid before it made its group.
        self.adopted.remove(&pid);
        if let Some((r, _, _)) = ready_fd {
            self.watch_ready_fd(pid, r); // the write end is the child's alone from now on
        }
        // Should epoll refuse the pipe, the failure is still read when the child is reaped.
        let _ = self
            .epoll
            .add(report.as_raw_fd(), Source::ExecReport(pid).token());
        self.reports.insert(pid, report);
        if let Some((out, _)) = pipe {
            self.read_output_of(pid, name, out);
        }
        Ok(pid)
    }

    fn signal(&mut self, name: &str, pgid: Pid, to: To, sig: libc::c_int) {
        // The leader gone, its group's id may be another's by now: the cgroup says who is
        // left. What an earlier going left (no group known) is reached that way alone.
        let but = match to {
            To::Group => None,
            To::Rest => Some(None),
            To::Strays => Some(Some(pgid)),
        };
        if let Some(but) = but {
            match self.cgroups.as_ref().and_then(|g| g.signal(name, sig, but)) {
                Some(Ok(_)) => return,
                Some(Err(e)) => return self.log(Level::Err, format_args!("{name}: {e}")),
                None if to == To::Strays => return, // none known without a cgroup
                None => {}
            }
        }
        if pgid <= 0 {
            return;
        }
        // An adopted leader is not going's child: its pid could have been recycled.
        let ours = to == To::Group && !self.adopted.contains(&pgid);
        if let Err(e) = signal_group(pgid, ours, sig) {
            let name = sys::signal_name(sig).map_or(sig.to_string(), |n| format!("SIG{n}"));
            self.log(
                Level::Err,
                format_args!(
                    "going: unable to send {name} to process group {pgid}: {}",
                    Errno(&e)
                ),
            );
        }
    }

    fn kill(&mut self, name: &str, pgid: Pid, leader: bool) {
        match self.cgroups.as_mut().and_then(|g| g.kill(name)) {
            Some(Ok(Killed::All | Killed::Each { complete: true, .. })) => return,
            Some(Ok(Killed::Each { signalled, .. })) => {
                let msg = format_args!(
                    "{name}: still forking after SIGKILL to {signalled} processes; again at the next deadline"
                );
                return self.log(Level::Warning, msg);
            }
            // The cgroup failed: its process group, at least.
            Some(Err(e)) => self.log(Level::Err, format_args!("{name}: {e}")),
            None => {}
        }
        if pgid > 0 {
            let ours = leader && !self.adopted.contains(&pgid);
            if let Err(e) = signal_group(pgid, ours, libc::SIGKILL) {
                let msg = format_args!(
                    "going: unable to send SIGKILL to process group {pgid}: {}",
                    Errno(&e)
                );
                self.log(Level::Err, msg);
            }
        }
    }

    fn group_alive(&mut self, name: &str, pgid: Pid) -> bool {
        let alive = match self.cgroups.as_ref().and_then(|g| g.populated(name)) {
            Some(Ok(populated)) => populated,
            Some(Err(e)) => {
                self.log(Level::Err, format_args!("{name}: {e}"));
                self.pgroup_alive(pgid)
            }
            None => self.pgroup_alive(pgid),
        };
        if !alive {
            self.adopted.remove(&pgid); // done with: its pid may be any process's next
        }
        alive
    }

    fn gone(&mut self, pid: Pid) -> bool {
        match self.pidfds.get(&pid) {
            // Adopted: its pidfd is readable once it ended.
            Some(fd) => sys::readable_now(fd.as_raw_fd()),
            // going's child is there until reaped, as a zombie too: then its pid is free.
            None => matches!(sys::kill(pid, 0), Err(e) if e.raw_os_error() == Some(libc::ESRCH)),
        }
    }

    fn log(&mut self, level: Level, msg: fmt::Arguments) {
        self.log.log(level, msg);
    }

    fn changed(&mut self, name: &str, settings: &Settings) {
        let Some(groups) = self.cgroups.as_mut() else {
            return;
        };
        if let Err(e) = groups.changed(name, settings.cgroup_limits(), &self.epoll) {
            self.log(Level::Err, format_args!("{name}: {e}"));
        }
    }

    fn cgroup(&mut self, name: &str) -> Option<(std::path::PathBuf, crate::cgroup::Usage)> {
        self.cgroups.as_ref()?.usage(name)
    }

    fn dropped(&mut self, name: &str) {
        let Some(groups) = self.cgroups.as_mut() else {
            return;
        };
        match groups.remove(name, &self.epoll) {
            Ok(true) => {}
            Ok(false) => {
                let msg = format_args!(
                    "{name}: its cgroup still holds processes after SIGKILL: left for a later going"
                );
                self.log(Level::Warning, msg);
            }
            Err(e) => self.log(Level::Err, format_args!("{name}: {e}")),
        }
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

/// What the OOM killer did in the cgroup of `name`: `n` kills, `main` its main process
/// (killed, if it is no more), under `limits` (`memory_max=100M`).
fn oom_message(name: &str, main: Option<Pid>, n: u64, limits: &str) -> String {
    let dead = |pid: Pid| sys::proc_identity(pid).is_none();
    match main.filter(|&p| dead(p)) {
        Some(pid) if n == 1 => format!("{name}[{pid}]: killed by the OOM killer ({limits})"),
        _ => format!("{name}: {n} of its processes killed by the OOM killer ({limits})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn an_adopted_group_is_forgotten_once_empty_or_its_pid_a_new_childs() {
        let dir = std::env::temp_dir().join(format!("going-system-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rundir = RunDir::open(&dir).unwrap();
        let null = File::options().read(true).write(true).open("/dev/null");
        let epoll = Epoll::new().unwrap();
        let log = Logger::new(None);
        let exits = sys::exits_fd().unwrap();
        let nofile = sys::nofile_limit();
        let mut sys = System::new(epoll, log, null.unwrap(), nofile, rundir, exits);
        let settings = crate::config::parse(std::path::Path::new("t"), b"cmd=/bin/true\nlog=null");
        let settings = settings.unwrap();
        // The pids the kernel gives next (others fork meanwhile: a range, tried again).
        let mut spawned = None;
        for _ in 0..10 {
            let last: Pid = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            sys.adopted.0.extend(last + 1..last + 1000);
            let pid = sys.spawn("t", &settings, Launch::Service).unwrap();
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`; the child is this test's.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if pid > last && pid < last + 1000 {
                spawned = Some(pid);
                break;
            }
        }
        let pid = spawned.expect("a pid in the range, once in ten tries");
        assert!(
            !sys.adopted.contains(&pid),
            "a new child is no adopted group"
        );
        // An empty group (the child is reaped) is forgotten when found so.
        let other = *sys
            .adopted
            .0
            .iter()
            .find(|&&p| p != pid && !sys::group_alive(p))
            .unwrap();
        assert!(!sys.group_alive("t", other));
        assert!(!sys.adopted.contains(&other));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_signal_to_a_group_not_made_yet_reaches_its_leader() {
        // A child in the test's own process group, as a new service is until its setsid.
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id() as Pid;
        assert!(sys::kill_group(pid, 0).is_err(), "no group of that id");
        signal_group(pid, false, libc::SIGTERM).unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "not ours: only the group"
        );
        signal_group(pid, true, libc::SIGTERM).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
    }
}
