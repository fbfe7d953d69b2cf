//! How the table shows a service to people: the state in words and colour for `going
//! status` (and its JSON), how a process ended and what a child failed to do, in the
//! words of the log. Presentation only: nothing here changes a service.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Service, State, Table, Want};
use crate::config::Settings;
use crate::sys::{self, ChildError, Exit, Pid, Step};

/// One service (or invalid file) as `going status` shows it.
pub struct View<'a> {
    pub name: &'a str,
    /// `running`, `ready`, `starting`, `waiting for db`, `done`, … as going(8) lists them.
    pub state: String,
    /// The colour of the state: g(reen), y(ellow) or r(ed).
    pub class: char,
    pub pid: Option<Pid>,
    /// The process group of what runs of it now (its main process, what a stop left of
    /// its group, its finish hook): what its cost is measured over.
    pub group: Option<Pid>,
    pub up: Option<Duration>,
    pub next_start: Option<Duration>,
    pub restarts: u32,
    history: Option<&'a super::history::History>,
    pub now: Instant,
    pub cmd: &'a [String],
    /// The file's problems, when it is invalid.
    pub problems: &'a [String],
    /// What it last said over sd_notify with `STATUS=`.
    pub status: Option<&'a str>,
    /// Whether its running process said it is ready; None when it has no `ready=` or no
    /// process runs.
    pub ready: Option<bool>,
    /// Its cgroup limits.
    pub limits: &'a crate::cgroup::Limits,
}

impl View<'_> {
    /// Whether it is where it should be: running (ready), or a one-shot done; what
    /// `going status NAME` exits 0 for.
    pub fn is_up(&self) -> bool {
        matches!(self.state.as_str(), "running" | "ready" | "done")
    }
}

impl<'a> View<'a> {
    /// The last exits, newest first.
    pub fn exits(&self) -> impl Iterator<Item = &super::history::Exit> + '_ {
        self.history.into_iter().flat_map(|h| h.exits())
    }

    /// The lines of output held, oldest first.
    pub fn lines(&self) -> impl ExactSizeIterator<Item = &'a str> + 'a {
        static NONE: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        (self.history.map_or(&NONE, |h| h.lines()).iter()).map(String::as_str)
    }
}

impl Table {
    /// Every service by name, then the invalid files that are no service, as `going
    /// status` shows them. An iterator, walked twice for the table: nothing is copied.
    pub fn views(&self, now: Instant) -> impl Iterator<Item = View<'_>> {
        let services = (self.services.iter())
            .filter(|(_, s)| s.want != Want::Gone)
            .map(move |(name, s)| self.service_view(name, s, now));
        let invalid = (self.invalid.iter())
            .filter(|(n, _)| !self.services.contains_key(*n))
            .map(move |(name, problems)| invalid_view(name, problems, now));
        services.chain(invalid)
    }

    /// Whether `name` is a service or an invalid file (a service being stopped as its
    /// file is gone still is, until it stopped): what `going log -f` follows.
    pub fn knows(&self, name: &str) -> bool {
        self.services.contains_key(name) || self.invalid.contains_key(name)
    }

    /// The service or invalid file `name`, as `going status NAME` shows it.
    pub fn view(&self, name: &str, now: Instant) -> Option<View<'_>> {
        match self.services.get_key_value(name) {
            Some((name, s)) if s.want != Want::Gone => Some(self.service_view(name, s, now)),
            _ => (self.invalid.get_key_value(name)).map(|(n, p)| invalid_view(n, p, now)),
        }
    }

    fn service_view<'a>(&'a self, name: &'a str, s: &'a Service, now: Instant) -> View<'a> {
        let says = s.settings.life().ready.is_some();
        let (state, class, pid, up) = match s.state {
            State::Running {
                pid,
                since,
                ready: Some(_),
                ..
            } => {
                let word = if says { "ready" } else { "running" };
                (word.to_string(), 'g', Some(pid), Some(now - since))
            }
            State::Running { pid, .. } => ("starting".into(), 'y', Some(pid), None),
            State::Waiting { .. } if s.history.failing() => {
                ("exec failing".into(), 'r', None, None)
            }
            State::Waiting { .. } => ("quarantined".into(), 'r', None, None),
            State::Blocked => {
                let deps = self.waiting_for(name).join(", ");
                (format!("waiting for {deps}"), 'y', None, None)
            }
            State::Stopping { stop, .. } => ("stopping".into(), 'y', stop.pid, None),
            State::Finishing { pid, .. } => ("finishing".into(), 'y', Some(pid), None),
            State::Idle => ("down".into(), 'y', None, None),
            State::Done { ok: true } => ("done".into(), 'g', None, None),
            State::Done { ok: false } => ("failed".into(), 'r', None, None),
        };
        let next_start = match s.state {
            State::Waiting { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        };
        let group = match s.state {
            State::Stopping { stop, .. } => Some(stop.pgid),
            _ => s.state.pid(),
        };
        let ready = match s.state {
            State::Running { ready, .. } if says => Some(ready.is_some()),
            _ => None,
        };
        View {
            name,
            state,
            class,
            pid,
            group,
            up,
            next_start,
            restarts: s.starts.saturating_sub(1),
            history: Some(&s.history),
            now,
            cmd: &s.settings.cmd,
            problems: self.invalid.get(name).map_or(&[], |p| &p[..]),
            status: s.told.as_ref().and_then(|t| t.status.as_deref()),
            ready,
            limits: s.settings.cgroup_limits(),
        }
    }
}

/// A file that never was valid: no service, only its problems.
fn invalid_view<'a>(name: &'a str, problems: &'a [String], now: Instant) -> View<'a> {
    View {
        name,
        state: "invalid file".into(),
        class: 'r',
        pid: None,
        group: None,
        up: None,
        next_start: None,
        restarts: 0,
        history: None,
        now,
        cmd: &[],
        problems,
        status: None,
        ready: None,
        limits: &crate::cgroup::Limits::NONE,
    }
}

/// What a child failed to do before becoming the service, after "unable to".
pub(super) struct Unable<'a>(pub &'a Settings, pub ChildError);

impl fmt::Display for Unable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (s, e) = (self.0, self.1);
        match e.step {
            Step::Session => f.write_str("create a session"),
            Step::Stdio => f.write_str("open /dev/null as stdio"),
            Step::Limit => match crate::config::LIMITS.iter().find(|l| l.1 == e.arg) {
                Some((key, _)) if s.limits.iter().any(|l| l.0 == e.arg) => write!(f, "set {key}"),
                _ => f.write_str("restore going's original limit on open files"),
            },
            Step::Nice => write!(f, "set nice {}", e.arg),
            Step::Chroot => write!(
                f,
                "chroot to {}",
                s.chroot.as_deref().unwrap_or(Path::new("?")).display()
            ),
            Step::Groups => f.write_str("set the supplementary groups"),
            Step::Gid => write!(f, "set group {}", s.creds.as_ref().map_or(0, |c| c.gid)),
            Step::Uid => write!(
                f,
                "set user {}",
                s.creds.as_ref().and_then(|c| c.uid).unwrap_or(0)
            ),
            Step::Chdir => write!(f, "change directory to {}", s.cwd.display()),
            Step::Exec => write!(f, "exec {}", s.cmd[0]),
            Step::ReadyFd => write!(f, "put the readiness pipe at fd {}", e.arg),
            Step::Cgroup => f.write_str("move into its cgroup"),
        }
    }
}

/// How a process ended, as a log line says it: `exited 3`, `killed by SIGSEGV (core dumped)`.
pub struct Ended(pub Exit);

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0 {
            Exit::Code(c) => write!(f, "exited {c}"),
            Exit::Unknown => f.write_str("exited (status unknown: adopted, not going's child)"),
            Exit::Signal { sig, core } => {
                match sys::signal_name(sig) {
                    Some(n) => write!(f, "killed by SIG{n}")?,
                    None => write!(f, "killed by signal {sig}")?,
                }
                if core {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}
