//! The table's effects done for real, and the fds they leave going to watch: each child's
//! exec-error pipe until it exec'd, each service process's output pipe, each adopted
//! process's pidfd, and the signalfd on which children's ends arrive. This is the one
//! place that forks, signals, reaps and reads from processes.
//!
//! Invariants: an fd is in epoll exactly while it is in one of these registries, under the
//! token of its [`Source`]; a signal goes to a process group, and to a lone pid only when
//! that pid is a child of going not yet reaped, so a recycled pid is never signalled.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use super::source::Source;
use crate::config::{Ready, Settings};
use crate::follow::Followers;
use crate::log::{Errno, Level, Logger};
use crate::notify::{self, Notify};
use crate::output::Outputs;
use crate::rundir::RunDir;
use crate::service::{Effects, Launch, Table};
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
    /// Process groups of adopted services: their zombies are init's to reap.
    adopted: std::collections::BTreeSet<Pid>,
    /// The new binary being asked, after SIGUSR2, whether it can take over.
    pub check: Option<crate::upgrade::Check>,
    /// The sd_notify socket of `ready=notify` services.
    pub notify: Option<Notify>,
    /// Readiness pipes of `ready=fd:N` processes that have not said yet.
    ready_fds: BTreeMap<Pid, OwnedFd>,
    /// Clients following services' output (`going log -f`).
    pub followers: Followers,
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
        }
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
    pub fn child_ended(&mut self, pid: Pid, status: libc::c_int, table: &mut Table, now: Instant) {
        if let Some(Err(err)) = self.child_report(pid) {
            table.child_failed(pid, err, self);
        }
        self.unwatch_ready_fd(pid);
        self.relay_output(pid, true, table);
        table.exited(pid, Exit::from_status(status), self, now);
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
        })
        .map_err(unable("fork"))?;
        let (pid, report) = (child.pid, child.report);
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

    fn signal(&mut self, pgid: Pid, leader: bool, sig: libc::c_int) {
        // An adopted leader is not going's child: its pid could have been recycled.
        let ours = leader && !self.adopted.contains(&pgid);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

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
