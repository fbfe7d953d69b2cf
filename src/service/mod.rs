//! The service table: for each service, what is wanted of it — up, down (the admin stopped
//! it) or gone (its file was removed, going is stopping) — and where it is: running (ready
//! or not yet), waiting out a quarantine, waiting for the services it starts after,
//! stopping, running its finish hook, idle, or done (a one-shot that finished). What each
//! event does to it — an exit, a deadline, a reload, readiness, an admin's request, a
//! shutdown — is decided here. Nothing here makes a system call: every effect goes through
//! [`Effects`] and time comes in as `now`, so the state machine is tested without sleeps.
//!
//! Invariants: a pid in `pids` is the live process of exactly one service (its main
//! process, or its finish hook) and an unreaped child (or an adopted process still alive),
//! so it and its process group may be signalled (a reaped pid is never signalled); every
//! deadline of every service is in `timers`, absolute on the monotonic clock, so no
//! service's events postpone another's; states change in [`Table::set`] alone, which keeps
//! the indexes.
//!
//! The parts: `reload` (a new reading of the directory, or of what a previous going
//! left), `run` (a run of a service from its start to what follows its end), `ready`
//! (when a service counts as up), `order` (start after, stop before), `history` and `view`
//! (what `going status` shows).

pub mod history;
mod order;
mod ready;
mod reload;
mod run;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::c_int;
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::fingerprint::Fingerprint;
use crate::log::Level;
use crate::spawn::SpawnError;
use crate::sys::{self, ChildError, Pid};

pub use history::{Held, How};
pub use view::{Ended, View};

/// A run shorter than this is a fast failure; a longer one resets the count.
pub const MIN_RUN: Duration = Duration::from_secs(5);
/// The longest quarantine between two starts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long what is left of a service may take to be gone after SIGKILL (a process stuck
/// in the kernel never is) before going carries on without it.
pub const KILL_WAIT: Duration = Duration::from_secs(1);

/// What a process is started to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// The service.
    Service,
    /// Its finish hook, after an exit with this code (256: killed by a signal; -1: not
    /// known, the process was adopted) and signal (0: none).
    Finish { code: i32, signal: i32 },
}

/// The effects the table asks for; the supervisor does them, the tests record them.
pub trait Effects {
    /// Starts a process of the service.
    fn spawn(&mut self, name: &str, settings: &Settings, launch: Launch)
        -> Result<Pid, SpawnError>;
    /// Keeps (Some: the settings' fingerprint) or forgets (None) that the admin stopped
    /// `name`, across restarts of going.
    fn mark_down(&mut self, name: &str, fingerprint: Option<u64>);
    /// Signals processes of service `name`, of its process group `pgid`: see [`To`].
    fn signal(&mut self, name: &str, pgid: Pid, to: To, sig: c_int);
    /// SIGKILL to everything of service `name`: its whole cgroup where it has one, what
    /// left its process group included; else as [`Effects::signal`] sends it.
    fn kill(&mut self, name: &str, pgid: Pid, leader: bool);
    /// Whether anything of service `name` is left: a process in its cgroup where it has
    /// one, else in the process group `pgid`.
    fn group_alive(&mut self, name: &str, pgid: Pid) -> bool;
    /// Whether the process `pid`, a service's whose end the table waits for, is known to be
    /// gone: its end was missed. False while it is there, or cannot be told.
    fn gone(&mut self, pid: Pid) -> bool;
    fn log(&mut self, level: Level, msg: fmt::Arguments);
    /// The settings of `name` changed in what applies to its processes as they run (its
    /// cgroup limits).
    fn changed(&mut self, _name: &str, _settings: &Settings) {}
    /// Service `name` left the table: what was kept for it (its cgroup) goes too.
    fn dropped(&mut self, _name: &str) {}
    /// Where the cgroup of `name` is and what it says, for `going status`; None without one.
    fn cgroup(&mut self, _name: &str) -> Option<(std::path::PathBuf, crate::cgroup::Usage)> {
        None
    }
}

/// Which processes of a service a signal is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// Its process group, whose leader (of the same pid) is a live process of the service,
    /// which may not have made its group yet (just forked).
    Group,
    /// What is left of it, its leader gone: every process of its cgroup where it has one
    /// (a group whose leader is gone may be another's by now), else the process group.
    Rest,
    /// What of it left its process group (a helper that called setsid): the processes of
    /// its cgroup in other groups; none without a cgroup.
    Strays,
}

/// What is wanted of a service (runit's want: up, down, exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Keep it running (or, a one-shot, have it run once).
    Up,
    /// Stopped by the admin (`going stop`), until `going start` or a change of its file.
    Down,
    /// Its file is gone, or going is stopping: drop it once stopped.
    Gone,
}

/// What follows once nothing of a run is left, if the service is still wanted up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Start again, not before the given time (its quarantine) if any.
    Start(Option<Instant>),
    /// It is done (`restart=on-failure` after a success, `restart=never`); `ok`: it
    /// succeeded.
    Done { ok: bool },
}

/// A stop under way, of the group `pgid`: `pid` is its leader until reaped (while others
/// of its group, or of its cgroup, may be left; 0 for what an earlier going left in its
/// cgroup); `since` when the process started; `next` what follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stop {
    pid: Option<Pid>,
    pgid: Pid,
    since: Instant,
    next: Next,
}

/// What is due at the deadline of a stop or a finish hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// SIGKILL, to whatever is left of it.
    Kill(Instant),
    /// SIGKILL was sent, and the end of the process is not seen yet: a look whether it is
    /// still there (stuck in the kernel) or gone (its end missed), so that no stop waits
    /// for good. Its leader gone, the end of the wait for the rest ([`KILL_WAIT`]), which
    /// going then carries on without.
    Look(Instant),
}

impl Due {
    fn at(self) -> Instant {
        match self {
            Due::Kill(at) | Due::Look(at) => at,
        }
    }
}

/// How long after a SIGKILL a process whose end is not seen is looked for, and again.
pub const AFTER_KILL: Duration = Duration::from_secs(5);

/// Where a service is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A process runs: forked, and exec'd once `execd`; `failed` once the child reported
    /// that it never reached the service's exec. `ready` since when it is up (exec'd, or
    /// ready as its `ready=` says); `ready_by` its `ready_timeout`, while it is not.
    Running {
        pid: Pid,
        since: Instant,
        execd: bool,
        failed: Option<ChildError>,
        ready: Option<Instant>,
        ready_by: Option<Instant>,
    },
    /// The next start is at `until` (a quarantine).
    Waiting { until: Instant },
    /// Waiting for the services it starts after (`after=`) to be up.
    Blocked,
    /// The stop signal sent; what is due next, and when.
    Stopping { stop: Stop, due: Due },
    /// Its finish hook runs (process `pid`, its own group), at most until its SIGKILL.
    Finishing { pid: Pid, next: Next, due: Due },
    /// Nothing runs and nothing is due (down).
    Idle,
    /// A one-shot, or an `on-failure` service, that finished; `ok`: successfully.
    Done { ok: bool },
}

impl State {
    fn deadline(&self) -> Option<Instant> {
        match *self {
            State::Waiting { until } => Some(until),
            State::Running {
                ready: None,
                ready_by,
                ..
            } => ready_by,
            State::Stopping { due, .. } | State::Finishing { due, .. } => Some(due.at()),
            _ => None,
        }
    }

    /// The live main process of the service and its process group (not a finish hook's).
    fn live(&self) -> Option<(Pid, Pid)> {
        match *self {
            State::Running { pid, .. } => Some((pid, pid)),
            State::Stopping {
                stop:
                    Stop {
                        pid: Some(pid),
                        pgid,
                        ..
                    },
                ..
            } => Some((pid, pgid)),
            _ => None,
        }
    }

    /// The process whose exit the table waits for: the service's, or its finish hook's.
    fn pid(&self) -> Option<Pid> {
        match *self {
            State::Finishing { pid, .. } => Some(pid),
            _ => self.live().map(|(pid, _)| pid),
        }
    }

    /// Stopping, its leader reaped, others of its group (or cgroup) left: what
    /// `check_groups` watches.
    fn draining(&self) -> bool {
        matches!(
            self,
            State::Stopping {
                stop: Stop { pid: None, .. },
                ..
            }
        )
    }

    /// The process group being stopped when its leader is gone (none for what an earlier
    /// going left in a cgroup, found through it again).
    fn group(&self) -> Option<Pid> {
        match *self {
            State::Stopping {
                stop: Stop {
                    pid: None, pgid, ..
                },
                ..
            } if pgid > 0 => Some(pgid),
            _ => None,
        }
    }

    /// Whether a process of the service (or its finish hook) is still there.
    fn busy(&self) -> bool {
        matches!(
            self,
            State::Running { .. } | State::Stopping { .. } | State::Finishing { .. }
        )
    }
}

/// What a service said over sd_notify beyond `READY=1`.
#[derive(Default)]
struct Told {
    /// Its last `STATUS=` text.
    status: Option<Box<str>>,
    /// `RELOADING=1`, until its next `READY=1`.
    reloading: bool,
    /// `STOPPING=1`: it shuts down by itself.
    stopping: bool,
}

struct Service {
    settings: Box<Settings>,
    /// `settings.fingerprint()`, kept: the state file wants it at every start and exit.
    fingerprint: u64,
    /// The fingerprint of the settings the live process runs with: the file's until it
    /// changes in a way that needs a restart, so that the state file never says a process
    /// being stopped for new settings already has them.
    running: u64,
    want: Want,
    state: State,
    /// Consecutive fast failures.
    fails: u32,
    starts: u32,
    /// How its last run ended, for its finish hook.
    last: Option<sys::Exit>,
    history: history::History,
    /// None until it says anything over sd_notify.
    told: Option<Box<Told>>,
}

impl Service {
    fn new(settings: Box<Settings>, want: Want) -> Box<Service> {
        let fingerprint = settings.fingerprint();
        Box::new(Service {
            settings,
            fingerprint,
            running: fingerprint,
            want,
            state: State::Idle,
            fails: 0,
            starts: 0,
            last: None,
            history: Default::default(),
            told: None,
        })
    }

    fn set_settings(&mut self, settings: Box<Settings>) {
        self.fingerprint = settings.fingerprint();
        self.settings = settings;
    }
}

/// What the admin asks of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    Start,
    Stop,
    Restart,
}

/// Why an admin's request could not be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    NotRunning,
}

/// Where a service is, for a command that waits for it (`-w`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Up, as what starts after it waits for it.
    Up,
    /// It will not get up unless asked again: why (its last exit, or `stopped`).
    Failed(String),
    /// On its way.
    Pending,
}

/// What one reload did, for its summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub started: usize,
    pub stopped: usize,
    pub restarted: usize,
    pub invalid: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} started, {} stopped, {} restarted, {} invalid",
            self.started, self.stopped, self.restarted, self.invalid
        )
    }
}

/// A live process a previous going started, found in the state file or handed over by an
/// upgrade, and verified.
pub struct Adoptable {
    pub pid: Pid,
    pub since: Instant,
    pub fingerprint: Fingerprint,
    /// Whether it had said it was ready.
    pub ready: bool,
    /// Some for a process group being stopped whose leader was gone (`pid` is the group):
    /// when its SIGKILL is due.
    pub drain: Option<Instant>,
}

/// A process group being stopped whose leader is gone, for the state file and an
/// upgrade's handover: the service's name, the group, and when its SIGKILL is due.
pub struct Drain<'a> {
    pub name: &'a str,
    pub pgid: Pid,
    pub kill_at: Instant,
}

/// A live service process, for the state file and an upgrade's handover.
pub struct Live<'a> {
    pub name: &'a str,
    pub pid: Pid,
    pub pgid: Pid,
    /// The fingerprint of the settings it runs with.
    pub fingerprint: u64,
    /// Whether it is up (ready, where it says so).
    pub ready: bool,
}

/// What changed that the state file is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A live process began, or its settings' fingerprint changed.
    Began(Pid),
    Ended(Pid),
    /// A live process became ready.
    Ready(Pid),
    /// A one-shot finished (or no longer counts as finished): its name.
    Done(String),
    Undone(String),
    /// The process group of a service, its leader gone, is being stopped: its name.
    Draining(String),
    /// That group is done with: its pgid.
    Drained(Pid),
}

#[derive(Default)]
pub struct Table {
    /// Boxed: B-tree nodes hold eleven values each and are often half empty.
    services: BTreeMap<String, Box<Service>>,
    pids: BTreeMap<Pid, String>,
    timers: BTreeSet<(Instant, String)>,
    /// Services whose main process is gone while others of their group may still run:
    /// what `check_groups` looks at, so that a reap costs nothing per other service.
    draining: BTreeSet<String>,
    /// For each service that others start after, those others: empty unless some file
    /// says `after=`.
    dependents: BTreeMap<String, Vec<String>>,
    /// going is stopping: a service is stopped only once those after it are gone.
    shutting_down: bool,
    /// Invalid files of the last reload, with their problems, for `going status`.
    invalid: BTreeMap<String, Vec<String>>,
    /// Services the admin stopped before going last exited, with their fingerprints.
    pub down_marks: BTreeMap<String, Fingerprint>,
    /// What the state file is told next.
    changes: Vec<Change>,
    /// An essential service ended without being asked to: what going exits with.
    ended: Option<Essential>,
    /// How many lines of output are held per service (`going -n`).
    pub held: Held,
}

/// The end of an essential service (`essential=yes`) that nobody asked for, which ends
/// going: which service, how it ended, and going's exit status for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Essential {
    pub name: String,
    pub how: String,
    pub code: u8,
}

/// The quarantine after `fails` consecutive fast failures: 1 s, 2 s, 4 s, … 60 s.
pub fn backoff(fails: u32) -> Duration {
    Duration::from_secs(1 << fails.clamp(1, 7).saturating_sub(1)).min(MAX_BACKOFF)
}

impl Table {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// The earliest deadline of any service: the loop sleeps until then, or forever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|t| t.0)
    }

    /// The end of an essential service since the last call, if one ended on its own.
    pub fn essential_ended(&mut self) -> Option<Essential> {
        self.ended.take()
    }

    /// What changed among the live processes and one-shots since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Whether `name` is a service of the table (whatever is wanted of it).
    pub fn contains(&self, name: &str) -> bool {
        self.services.contains_key(name)
    }

    /// The live main process of service `name`.
    pub fn main_pid(&self, name: &str) -> Option<Pid> {
        self.services.get(name)?.state.live().map(|l| l.0)
    }

    /// The live process `pid`; None once it is no service's live process.
    pub fn live_entry(&self, pid: Pid) -> Option<Live<'_>> {
        let name = self.pids.get(&pid)?;
        let svc = &self.services[name];
        let (live, pgid) = svc.state.live()?;
        (live == pid).then(|| live_of(name, svc, pid, pgid))
    }

    /// Every live service process.
    pub fn live(&self) -> impl Iterator<Item = Live<'_>> {
        (self.services.iter()).filter_map(|(name, s)| {
            let (pid, pgid) = s.state.live()?;
            Some(live_of(name, s, pid, pgid))
        })
    }

    /// Every one-shot that finished, with the fingerprint of its settings and whether it
    /// succeeded: so that a going started after this one does not run it again.
    pub fn done(&self) -> impl Iterator<Item = (&str, u64, bool)> {
        (self.services.iter()).filter_map(|(name, s)| match s.state {
            State::Done { ok } => Some((name.as_str(), s.fingerprint, ok)),
            _ => None,
        })
    }

    /// Every process group being stopped whose leader is gone.
    pub fn drains(&self) -> impl Iterator<Item = Drain<'_>> {
        self.draining.iter().filter_map(|name| self.drain_of(name))
    }

    /// The process group of `name` being stopped, its leader gone; None if it is not.
    pub fn drain_of(&self, name: &str) -> Option<Drain<'_>> {
        let (name, svc) = self.services.get_key_value(name)?;
        match svc.state {
            State::Stopping {
                stop: Stop {
                    pid: None, pgid, ..
                },
                due: Due::Kill(kill_at),
            } if pgid > 0 => Some(Drain {
                name,
                pgid,
                kill_at,
            }),
            _ => None,
        }
    }

    fn by_pid_mut(&mut self, pid: Pid) -> Option<(String, &mut Service)> {
        let name = self.pids.get(&pid)?;
        let svc = self.services.get_mut(name)?;
        Some((name.clone(), svc))
    }

    fn svc(&mut self, name: &str) -> &mut Service {
        self.services.get_mut(name).expect("a service of the table")
    }

    /// `going start|stop|restart NAME`: what happened, as a line for the admin.
    pub fn admin(
        &mut self,
        name: &str,
        what: Admin,
        fx: &mut impl Effects,
        now: Instant,
    ) -> Result<String, Refusal> {
        let want = match what {
            Admin::Stop => Want::Down,
            Admin::Start | Admin::Restart => Want::Up,
        };
        let svc = self.known(name)?;
        if svc.want != want {
            svc.want = want;
            fx.mark_down(name, (want == Want::Down).then_some(svc.fingerprint));
        }
        if want == Want::Up {
            svc.fails = 0; // the admin's word lifts a quarantine
        }
        let msg = match (what, svc.state) {
            (Admin::Stop, State::Idle) => "already stopped",
            (Admin::Stop, _) => {
                self.stop(name, fx, now);
                "stopping"
            }
            (Admin::Start, State::Running { .. }) => "already running",
            (Admin::Restart, State::Running { .. }) => {
                self.stop(name, fx, now);
                "restarting"
            }
            (_, State::Stopping { .. } | State::Finishing { .. }) => {
                // Whatever was to follow (a quarantine, done): the admin asked for a start.
                match &mut svc.state {
                    State::Stopping { stop, .. } => stop.next = Next::Start(None),
                    State::Finishing { next, .. } => *next = Next::Start(None),
                    _ => {}
                }
                "starts once stopped"
            }
            (_, State::Blocked) => "waits for what it starts after",
            (_, State::Waiting { .. } | State::Idle | State::Done { .. }) => {
                match self.begin(name, fx, now) {
                    true => "started",
                    false => "waits for what it starts after",
                }
            }
        };
        Ok(format!("{name}: {msg}"))
    }

    /// `going signal SIG NAME`: the signal to a running service's process group.
    pub fn signal(
        &mut self,
        name: &str,
        sig: c_int,
        fx: &mut impl Effects,
    ) -> Result<String, Refusal> {
        let State::Running { pid, .. } = self.known(name)?.state else {
            return Err(Refusal::NotRunning);
        };
        fx.signal(name, pid, To::Group, sig);
        let sig = sys::signal_name(sig).map_or(sig.to_string(), |n| format!("SIG{n}"));
        Ok(format!("{name}: sent {sig} to process group {pid}"))
    }

    /// A service the admin may name: one whose file is there.
    fn known(&mut self, name: &str) -> Result<&mut Service, Refusal> {
        (self.services.get_mut(name))
            .filter(|s| s.want != Want::Gone)
            .map(|s| &mut **s)
            .ok_or(Refusal::Unknown)
    }

    /// The one place a state changes, so that `pids`, `timers` and `draining` always
    /// match the states, and the state file hears of what it keeps.
    fn set(&mut self, name: &str, state: State) {
        let old = std::mem::replace(&mut self.svc(name).state, state);
        let (was, is) = (old.live().map(|l| l.0), state.live().map(|l| l.0));
        if was != is {
            self.changes.extend(was.map(Change::Ended));
            self.changes.extend(is.map(Change::Began));
        }
        if old.group() != state.group() {
            self.changes.extend(old.group().map(Change::Drained));
            if state.draining() {
                self.changes.push(Change::Draining(name.to_string()));
            }
        }
        match (old, state) {
            (
                State::Running { ready: None, .. },
                State::Running {
                    pid,
                    ready: Some(_),
                    ..
                },
            ) => self.changes.push(Change::Ready(pid)),
            (_, State::Done { .. }) => self.changes.push(Change::Done(name.to_string())),
            (State::Done { .. }, State::Running { .. }) => {}
            (State::Done { .. }, _) => self.changes.push(Change::Undone(name.to_string())),
            _ => {}
        }
        self.unindex(name, old);
        if let Some(at) = state.deadline() {
            self.timers.insert((at, name.to_string()));
        }
        if let Some(pid) = state.pid() {
            self.pids.insert(pid, name.to_string());
        }
        if state.draining() {
            self.draining.insert(name.to_string());
        }
    }

    fn unindex(&mut self, name: &str, state: State) {
        if let Some(at) = state.deadline() {
            self.timers.remove(&(at, name.to_string()));
        }
        if let Some(pid) = state.pid() {
            self.pids.remove(&pid);
        }
        if state.draining() {
            self.draining.remove(name);
        }
    }
}

fn live_of<'a>(name: &'a str, s: &Service, pid: Pid, pgid: Pid) -> Live<'a> {
    Live {
        name,
        pid,
        pgid,
        fingerprint: s.running,
        ready: matches!(s.state, State::Running { ready: Some(_), .. }),
    }
}

#[cfg(test)]
mod life_tests;
#[cfg(test)]
mod tests;
