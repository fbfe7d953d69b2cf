//! The table's effects done for real, and the fds they leave going to watch: each child's
//! exec-error pipe until it exec'd, each service process's output pipe, each adopted
//! process's pidfd. This is the one place that forks, signals and reads from processes.
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
use crate::config::Settings;
use crate::log::{Errno, Level, Logger};
use crate::output::Outputs;
use crate::rundir::RunDir;
use crate::service::{Effects, Table};
use crate::spawn::{Plan, SpawnError};
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
    /// Process groups of adopted services: their zombies are init's to reap.
    adopted: std::collections::BTreeSet<Pid>,
    /// The new binary being asked, after SIGUSR2, whether it can take over.
    pub check: Option<crate::upgrade::Check>,
}

impl System {
    pub fn new(
        epoll: Epoll,
        log: Logger,
        stdio: File,
        nofile: libc::rlimit,
        rundir: RunDir,
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
            adopted: Default::default(),
            check: None,
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
        self.watch(
            fd.as_raw_fd(),
            Source::Output(pid),
            "its output is read when it exits",
        );
        self.outputs.add(pid, name, fd);
    }

    /// Relays what the process `pid` wrote, to syslog and to its service's last lines;
    /// `last` once it has exited.
    pub fn relay_output(&mut self, pid: Pid, last: bool, table: &mut Table) {
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
            table.child_failed(pid, err);
        }
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
    fn spawn(&mut self, name: &str, s: &Settings) -> Result<Pid, SpawnError> {
        let plan = Plan::new(s, self.nofile)?;
        let nofile = || sys::nofile_limit().rlim_cur;
        let pipe = (s.log)
            .then(sys::pipe)
            .transpose()
            .map_err(|err| SpawnError::Unable {
                what: "create the output pipe",
                err,
                nofile: nofile(),
            })?;
        let stdio = self.stdio.as_raw_fd();
        let (pid, report) = sys::spawn(&sys::Spawn {
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
        })
        .map_err(|err| SpawnError::Unable {
            what: "fork",
            err,
            nofile: nofile(),
        })?;
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
