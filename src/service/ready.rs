//! When a service counts as up: once its exec succeeded, or, with `ready=`, once it said
//! so — a line on its notification fd (s6), or `READY=1` over sd_notify (systemd). Also
//! what else a child tells: that it exec'd, that it failed before, its output lines.
//!
//! Invariant: only the service's own live main process can make it ready; a message from
//! any other process is none of its (the caller counts it as foreign).

use std::time::Instant;

use super::{Effects, Progress, State, Table, Told, Want};
use crate::config::Ready;
use crate::log::{Age, Level};
use crate::notify::Fields;
use crate::sys::{ChildError, Pid};

impl Table {
    /// The child `pid` has exec'd: it is the service now, and up unless it says when.
    pub fn exec_ok(&mut self, pid: Pid, fx: &mut impl Effects, now: Instant) {
        let Some((name, svc)) = self.by_pid_mut(pid) else {
            return;
        };
        let waits = svc.settings.life().ready.is_some();
        if let State::Running {
            execd, ready: None, ..
        } = &mut svc.state
        {
            *execd = true;
            if !waits {
                self.ready(&name, now, fx);
            }
        }
    }

    /// The child `pid` reported that it failed before becoming the service (or its finish
    /// hook: that is said now, its exit is the hook's end).
    pub fn child_failed(&mut self, pid: Pid, err: ChildError, fx: &mut impl Effects) {
        let Some((name, svc)) = self.by_pid_mut(pid) else {
            return;
        };
        match &mut svc.state {
            State::Running { failed, .. } => *failed = Some(err),
            State::Finishing { .. } => {
                let what = match err.step {
                    crate::sys::Step::Exec => format!("exec {}", svc.settings.life().finish[0]),
                    _ => super::view::Unable(&svc.settings, err).to_string(),
                };
                let e = std::io::Error::from_raw_os_error(err.errno);
                let msg = format_args!(
                    "{name}: finish: unable to {what}: {}",
                    crate::log::Errno(&e)
                );
                fx.log(Level::Err, msg);
            }
            _ => {}
        }
    }

    /// A line the process `pid` wrote, kept for `going status`.
    pub fn output(&mut self, pid: Pid, line: &str) {
        let svc = self.pids.get(&pid).and_then(|n| self.services.get_mut(n));
        if let Some(svc) = svc {
            svc.history.line(line, self.held);
        }
    }

    /// The notification fd of the service whose main process is `pid` got its line.
    pub fn fd_ready(&mut self, pid: Pid, fx: &mut impl Effects, now: Instant) {
        let Some((name, svc)) = self.by_pid_mut(pid) else {
            return;
        };
        if matches!(svc.settings.life().ready, Some(Ready::Fd(_))) && waiting(&svc.state, pid) {
            self.ready(&name, now, fx);
        }
    }

    /// An sd_notify message from a process of the group `pgid`: false when that is the
    /// group of no service that says its readiness so (the message is foreign).
    pub fn notified(&mut self, pgid: Pid, f: &Fields, fx: &mut impl Effects, now: Instant) -> bool {
        let Some((name, svc)) = self.by_pid_mut(pgid) else {
            return false;
        };
        let live = matches!(svc.state, State::Running { pid, .. } if pid == pgid);
        if !live || svc.settings.life().ready != Some(Ready::Notify) {
            return false;
        }
        let told = svc.told.get_or_insert_with(Box::<Told>::default);
        if let Some(text) = &f.status {
            told.status = (!text.is_empty()).then(|| text.as_str().into());
        }
        if f.reloading && !told.reloading {
            fx.log(Level::Info, format_args!("{name}[{pgid}]: reloading"));
        }
        told.reloading = f.reloading || (told.reloading && !f.ready);
        if f.stopping && !told.stopping {
            told.stopping = true;
            fx.log(
                Level::Info,
                format_args!("{name}[{pgid}]: stopping by itself"),
            );
        }
        if f.ready && waiting(&svc.state, pgid) {
            self.ready(&name, now, fx);
        }
        true
    }

    /// The service is up: said so when it had to say it, and those after it may start.
    fn ready(&mut self, name: &str, now: Instant, fx: &mut impl Effects) {
        let svc = self.svc(name);
        let State::Running {
            pid,
            since,
            execd,
            failed,
            ..
        } = svc.state
        else {
            return;
        };
        if svc.settings.life().ready.is_some() {
            let took = Age(now.saturating_duration_since(since));
            fx.log(
                Level::Notice,
                format_args!("{name}[{pid}]: ready after {took}"),
            );
        }
        let state = State::Running {
            pid,
            since,
            execd,
            failed,
            ready: Some(now),
            ready_by: None,
        };
        self.set(name, state);
        self.up(name, fx, now);
    }

    /// Whether a service says its readiness over sd_notify.
    pub fn uses_notify(&self) -> bool {
        (self.services.values()).any(|s| s.settings.life().ready == Some(Ready::Notify))
    }

    /// The processes of `ready=fd:N` services not ready yet, with their N: after an
    /// adoption, whose readiness pipes to find again.
    pub fn not_ready_fds(&self) -> Vec<(Pid, i32)> {
        (self.services.values())
            .filter_map(|s| match (s.state, s.settings.life().ready) {
                (
                    State::Running {
                        pid, ready: None, ..
                    },
                    Some(Ready::Fd(n)),
                ) => Some((pid, n)),
                _ => None,
            })
            .collect()
    }

    /// How far `name` is on its way up or down, for a command that waits; None when no
    /// such service is known.
    pub fn progress(&self, name: &str) -> Option<Progress> {
        let s = self.services.get(name).filter(|s| s.want != Want::Gone);
        let Some(s) = s else {
            return self
                .invalid
                .contains_key(name)
                .then(|| Progress::Failed("invalid file".into()));
        };
        Some(match s.state {
            _ if self.is_up(name) => Progress::Up,
            State::Idle => Progress::Failed("stopped".into()),
            State::Done { ok: false } | State::Waiting { .. } => Progress::Failed(s.history.last()),
            _ => Progress::Pending,
        })
    }

    /// Whether `name` is stopped (or gone), for a command that waits for a stop.
    pub fn stopped(&self, name: &str) -> bool {
        self.services.get(name).is_none_or(|s| {
            matches!(s.state, State::Idle | State::Done { .. })
                || s.want == Want::Gone && !s.state.busy()
        })
    }
}

/// Whether `state` is the run of `pid`, not ready yet.
fn waiting(state: &State, pid: Pid) -> bool {
    matches!(*state, State::Running { pid: p, ready: None, .. } if p == pid)
}
