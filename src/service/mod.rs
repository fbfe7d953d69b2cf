//! The service table: for each service, what is wanted of it — up, down (the admin stopped
//! it) or gone (its file was removed, going is stopping) — and where it is: running,
//! waiting out a quarantine, stopping, or idle. What each event does to it — an exit, a
//! deadline, a reload, an admin's request, a shutdown — is decided here. Nothing here makes
//! a system call: every effect goes through [`Effects`] and time comes in as `now`, so the
//! state machine is tested without sleeps.
//!
//! Invariants: a pid in `pids` is the live process of exactly one service and an unreaped
//! child (or an adopted process still alive), so it and its process group may be signalled
//! (a reaped pid is never signalled); every deadline of every service is in `timers`,
//! absolute on the monotonic clock, so no service's events postpone another's; states
//! change in [`Table::set`] alone, which keeps both indexes.

mod history;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::c_int;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::config::{Parsed, Settings};
use crate::fingerprint::Fingerprint;
use crate::log::{Age, Errno, Level};
use crate::spawn::SpawnError;
use crate::sys::{self, ChildError, Exit, Pid};

pub use view::{Ended, View};

/// A run shorter than this is a fast failure; a longer one resets the count.
pub const MIN_RUN: Duration = Duration::from_secs(5);
/// The longest quarantine between two starts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The effects the table asks for; the supervisor does them, the tests record them.
pub trait Effects {
    /// Starts a process of the service.
    fn spawn(&mut self, name: &str, settings: &Settings) -> Result<Pid, SpawnError>;
    /// Keeps (Some: the settings' fingerprint) or forgets (None) that the admin stopped
    /// `name`, across restarts of going.
    fn mark_down(&mut self, name: &str, fingerprint: Option<u64>);
    /// Signals the process group `pgid`. `leader`: its leader, of the same pid, is a live
    /// process of the service, which may not have made its group yet (just forked).
    fn signal(&mut self, pgid: Pid, leader: bool, sig: c_int);
    fn group_alive(&mut self, pgid: Pid) -> bool;
    fn log(&mut self, level: Level, msg: fmt::Arguments);
}

/// What is wanted of a service (runit's want: up, down, exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Keep it running.
    Up,
    /// Stopped by the admin (`going stop`), until `going start` or a change of its file.
    Down,
    /// Its file is gone, or going is stopping: drop it once stopped.
    Gone,
}

/// Where a service is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A process runs: forked, and exec'd once `execd`; `failed` once the child reported
    /// that it never reached the service's exec.
    Running {
        pid: Pid,
        since: Instant,
        execd: bool,
        failed: Option<ChildError>,
    },
    /// The next start is at `until` (a quarantine).
    Waiting { until: Instant },
    /// The stop signal sent; `kill_at` is None once SIGKILL has been sent too.
    Stopping {
        stop: Stop,
        kill_at: Option<Instant>,
    },
    /// Nothing runs and nothing is due.
    Idle,
}

/// A stop under way, of the group `pgid`: `pid` is its leader until reaped (while others
/// of its group may be left); `since` when the process started; `resume` when the service
/// may start again if it is still wanted up then (the quarantine of a crash whose leftovers
/// are being stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stop {
    pid: Option<Pid>,
    pgid: Pid,
    since: Instant,
    resume: Option<Instant>,
}

impl State {
    fn deadline(&self) -> Option<Instant> {
        match *self {
            State::Waiting { until } => Some(until),
            State::Stopping { kill_at, .. } => kill_at,
            State::Running { .. } | State::Idle => None,
        }
    }

    /// The live main process and its process group.
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

    fn pid(&self) -> Option<Pid> {
        self.live().map(|(pid, _)| pid)
    }

    /// Stopping, its leader reaped, others of its group left: what `check_groups` watches.
    fn draining(&self) -> bool {
        matches!(
            self,
            State::Stopping {
                stop: Stop { pid: None, .. },
                ..
            }
        )
    }
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
    history: history::History,
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
            history: Default::default(),
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
}

/// A live service process, for the state file and an upgrade's handover.
pub struct Live<'a> {
    pub name: &'a str,
    pub pid: Pid,
    pub pgid: Pid,
    /// The fingerprint of the settings it runs with.
    pub fingerprint: u64,
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
    /// Invalid files of the last reload, with their problems, for `going status`.
    invalid: BTreeMap<String, Vec<String>>,
    /// Services the admin stopped before going last exited, with their fingerprints.
    pub down_marks: BTreeMap<String, Fingerprint>,
    /// Live processes that began (true) or ended (false) since `take_changes`, and live
    /// ones whose settings' fingerprint changed (true again): what the state file is told.
    changes: Vec<(Pid, bool)>,
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

    /// What live processes came, went or changed since the last call.
    pub fn take_changes(&mut self) -> Vec<(Pid, bool)> {
        std::mem::take(&mut self.changes)
    }

    /// The live process `pid`; None once it is no service's live process.
    pub fn live_entry(&self, pid: Pid) -> Option<Live<'_>> {
        let (name, svc) = self.by_pid(pid)?;
        let (_, pgid) = svc.state.live()?;
        Some(Live {
            name,
            pid,
            pgid,
            fingerprint: svc.running,
        })
    }

    /// Every live service process.
    pub fn live(&self) -> impl Iterator<Item = Live<'_>> {
        (self.services.iter()).filter_map(|(name, s)| {
            let (pid, pgid) = s.state.live()?;
            Some(Live {
                name,
                pid,
                pgid,
                fingerprint: s.running,
            })
        })
    }

    /// The service whose live process is `pid`.
    fn by_pid(&self, pid: Pid) -> Option<(&str, &Service)> {
        let name = self.pids.get(&pid)?;
        Some((name, &self.services[name]))
    }

    fn by_pid_mut(&mut self, pid: Pid) -> Option<&mut Service> {
        let name = self.pids.get(&pid)?;
        self.services.get_mut(name).map(|s| &mut **s)
    }

    fn svc(&mut self, name: &str) -> &mut Service {
        self.services.get_mut(name).expect("a service of the table")
    }

    /// Takes over the processes a previous going left running (`adopt`, consumed): each
    /// whose file is unchanged runs on; the others are stopped as a reload would.
    pub fn adopt(
        &mut self,
        scan: &BTreeMap<String, Parsed>,
        adopt: BTreeMap<String, Adoptable>,
        fx: &mut impl Effects,
        now: Instant,
    ) {
        for (name, a) in adopt {
            let age = Age(now.saturating_duration_since(a.since));
            let (settings, valid) = match scan.get(&name) {
                Some(Ok(s)) => (s.clone(), true),
                _ => (Box::default(), false),
            };
            let keep = valid && a.fingerprint.matches(&settings);
            let mut svc = Service::new(settings, if valid { Want::Up } else { Want::Gone });
            svc.starts = 1;
            // Of other settings than the file's: whatever a later state file says of it,
            // it never matches.
            svc.running = if keep { svc.fingerprint } else { 0 };
            self.services.insert(name.clone(), svc);
            let running = State::Running {
                pid: a.pid,
                since: a.since,
                execd: true,
                failed: None,
            };
            self.set(&name, running);
            if keep {
                fx.log(
                    Level::Notice,
                    format_args!("{name}[{}]: adopted, running for {age}", a.pid),
                );
                continue;
            }
            let why = if valid {
                "changed"
            } else {
                "is gone or invalid"
            };
            fx.log(
                Level::Notice,
                format_args!(
                    "{name}[{}]: adopted, but its file {why} since it started: stopping it",
                    a.pid
                ),
            );
            self.stop(&name, fx, now);
        }
    }

    /// Applies a rescan of the directory: starts new services, stops removed ones, restarts
    /// changed ones (lifting their quarantine) and leaves unchanged and invalid ones alone.
    /// `unchanged`: sorted names of files not read again, as they did not change.
    pub fn reconcile(
        &mut self,
        scan: BTreeMap<String, Parsed>,
        unchanged: &[String],
        fx: &mut impl Effects,
        now: Instant,
    ) -> Summary {
        let kept = |name: &str| unchanged.binary_search_by(|n| n.as_str().cmp(name)).is_ok();
        let mut sum = Summary::default();
        let gone: Vec<String> = (self.services.iter())
            .filter(|(name, s)| s.want != Want::Gone && !scan.contains_key(*name) && !kept(name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            sum.stopped += 1;
            self.svc(&name).want = Want::Gone;
            self.stop(&name, fx, now);
        }
        // An unchanged invalid file stays invalid, and is counted so, without a word more.
        self.invalid.retain(|name, _| kept(name));
        sum.invalid += self.invalid.len();
        for (name, parsed) in scan {
            match parsed {
                Ok(settings) => self.apply(name, settings, &mut sum, fx, now),
                Err(errors) => {
                    sum.invalid += 1;
                    for e in &errors {
                        fx.log(Level::Err, format_args!("{name}: {e}"));
                    }
                    self.invalid
                        .insert(name, errors.iter().map(|e| e.to_string()).collect());
                }
            }
        }
        sum
    }

    /// The valid file of `name` as a reload read it.
    fn apply(
        &mut self,
        name: String,
        settings: Box<Settings>,
        sum: &mut Summary,
        fx: &mut impl Effects,
        now: Instant,
    ) {
        let Some(svc) = self.services.get_mut(&name) else {
            // Left down by the admin, and the file unchanged since: it stays down.
            let mark = self.down_marks.remove(&name);
            if mark.is_some_and(|fp| fp.matches(&settings)) {
                fx.log(
                    Level::Notice,
                    format_args!("{name}: down, as the admin left it"),
                );
                self.services
                    .insert(name, Service::new(settings, Want::Down));
                return;
            }
            fx.mark_down(&name, None);
            sum.started += 1;
            self.services
                .insert(name.clone(), Service::new(settings, Want::Up));
            self.start(&name, fx, now);
            return;
        };
        // A file back while its old service still stops: it starts once that is gone.
        let returned = svc.want == Want::Gone;
        if returned {
            svc.want = Want::Up;
        }
        sum.started += returned as usize;
        if svc.settings.same_run(&settings) {
            // stop_signal and stop_timeout need no restart; the state file learns the new
            // fingerprint, so that an adoption does not take this process for one of other
            // settings.
            let running = svc.running == svc.fingerprint;
            svc.set_settings(settings);
            if running {
                svc.running = svc.fingerprint;
                if let Some(pid) = svc.state.pid() {
                    self.changes.push((pid, true));
                }
            }
            return;
        }
        sum.restarted += !returned as usize;
        svc.set_settings(settings);
        svc.fails = 0;
        // A changed file lifts the admin's stop.
        if svc.want == Want::Down {
            svc.want = Want::Up;
            fx.mark_down(&name, None);
        }
        match svc.state {
            State::Idle => self.start(&name, fx, now),
            _ => self.stop(&name, fx, now),
        }
    }

    /// A child was reaped (or an adopted process ended). False when it was none of the
    /// services' (an orphan).
    pub fn exited(&mut self, pid: Pid, exit: Exit, fx: &mut impl Effects, now: Instant) -> bool {
        let Some(name) = self.pids.get(&pid).cloned() else {
            return false;
        };
        let svc = self.svc(&name);
        let state = svc.state;
        let (since, failed) = match state {
            State::Running { since, failed, .. } => (since, failed),
            State::Stopping { stop, .. } => (stop.since, None),
            State::Waiting { .. } | State::Idle => return false, // no live pid: not indexed
        };
        let ran = now.saturating_duration_since(since);
        let how = match failed {
            Some(e) => {
                let err = io::Error::from_raw_os_error(e.errno);
                let what = view::Unable(&svc.settings, e);
                format!("unable to {what}: {}", Errno(&err))
            }
            None => Ended(exit).to_string(),
        };
        svc.history.exited(history::Exit {
            at: now,
            how: how.clone(),
            ran: failed.is_none().then_some(ran),
        });
        match state {
            State::Running { .. } if failed.is_some() => {
                fx.log(Level::Err, format_args!("{name}: {how}"));
                self.fail(&name, fx, now);
            }
            State::Running { .. } => {
                let ran_text = Age(ran);
                fx.log(
                    Level::Warning,
                    format_args!("{name}[{pid}]: {how} after {ran_text}"),
                );
                self.crashed(&name, pid, since, ran, fx, now);
            }
            State::Stopping { .. } => {
                fx.log(
                    Level::Info,
                    format_args!("{name}[{pid}]: stopped: {how} after {}", Age(ran)),
                );
                self.leader_stopped(&name, state, fx, now);
            }
            State::Waiting { .. } | State::Idle => {}
        }
        true
    }

    /// The main process of a stopping service was reaped: stopped, unless others of its
    /// group still run (they get their SIGKILL at the deadline).
    fn leader_stopped(&mut self, name: &str, state: State, fx: &mut impl Effects, now: Instant) {
        let State::Stopping { stop, kill_at } = state else {
            return;
        };
        if kill_at.is_some() && fx.group_alive(stop.pgid) {
            let stop = Stop { pid: None, ..stop };
            self.set(name, State::Stopping { stop, kill_at });
        } else {
            self.stopped(name, stop.resume, fx, now);
        }
    }

    /// The main process `pid` of a running service ended on its own after `ran`: start it
    /// again now or after its quarantine, once what it left in its group is stopped.
    fn crashed(
        &mut self,
        name: &str,
        pid: Pid,
        since: Instant,
        ran: Duration,
        fx: &mut impl Effects,
        now: Instant,
    ) {
        let resume = if ran >= MIN_RUN {
            self.svc(name).fails = 0;
            now
        } else {
            self.quarantine(name, fx, now)
        };
        if fx.group_alive(pid) {
            // What it started is still there: stopped first, so that the next copy does
            // not find its port taken.
            fx.log(
                Level::Notice,
                format_args!("{name}: stopping what is left of its process group"),
            );
            let stop = Stop {
                pid: None,
                pgid: pid,
                since,
                resume: Some(resume),
            };
            self.signal_stop(name, stop, fx, now);
        } else if resume <= now {
            self.start(name, fx, now);
        } else {
            self.set(name, State::Waiting { until: resume });
        }
    }

    /// The child `pid` has exec'd: it is the service now.
    pub fn exec_ok(&mut self, pid: Pid) {
        if let Some(svc) = self.by_pid_mut(pid) {
            if let State::Running { execd, .. } = &mut svc.state {
                *execd = true;
            }
        }
    }

    /// The child `pid` reported that it failed before becoming the service.
    pub fn child_failed(&mut self, pid: Pid, err: ChildError) {
        if let Some(svc) = self.by_pid_mut(pid) {
            if let State::Running { failed, .. } = &mut svc.state {
                *failed = Some(err);
            }
        }
    }

    /// A line the process `pid` wrote, kept for `going status`.
    pub fn output(&mut self, pid: Pid, line: &str) {
        if let Some(svc) = self.by_pid_mut(pid) {
            svc.history.line(line);
        }
    }

    /// After a round of reaping: a stopping service whose group has emptied is stopped.
    pub fn check_groups(&mut self, fx: &mut impl Effects, now: Instant) {
        let services = &self.services;
        let done: Vec<(String, Option<Instant>)> = (self.draining.iter())
            .filter_map(|name| match services[name].state {
                State::Stopping { stop, .. } if !fx.group_alive(stop.pgid) => {
                    Some((name.clone(), stop.resume))
                }
                _ => None,
            })
            .collect();
        for (name, resume) in done {
            self.stopped(&name, resume, fx, now);
        }
    }

    /// Acts on every deadline that has come: quarantines that end, stops that time out.
    pub fn tick(&mut self, fx: &mut impl Effects, now: Instant) {
        while let Some((at, name)) = self.timers.first().cloned() {
            if at > now {
                break;
            }
            match self.services[&name].state {
                State::Waiting { .. } => self.start(&name, fx, now),
                State::Stopping { stop, .. } => self.kill(&name, stop, fx, now),
                // No deadline: never in `timers` (see `set`).
                State::Running { .. } | State::Idle => {
                    self.timers.remove(&(at, name));
                }
            }
        }
    }

    /// A stop that timed out: SIGKILL to whatever is left of the group.
    fn kill(&mut self, name: &str, stop: Stop, fx: &mut impl Effects, now: Instant) {
        if stop.pid.is_some() || fx.group_alive(stop.pgid) {
            let s = &self.services[name].settings;
            let sig = sys::signal_name(s.stop_signal).unwrap_or("TERM");
            let secs = s.stop_timeout.as_secs();
            fx.log(
                Level::Warning,
                format_args!("{name}: still running {secs}s after SIG{sig}, sending SIGKILL"),
            );
            fx.signal(stop.pgid, stop.pid.is_some(), libc::SIGKILL);
        }
        match stop.pid {
            Some(_) => self.set(
                name,
                State::Stopping {
                    stop,
                    kill_at: None,
                },
            ),
            None => self.stopped(name, stop.resume, fx, now),
        }
    }

    /// Stops every service, as for SIGTERM to going; the table is empty once all are gone.
    pub fn shutdown(&mut self, fx: &mut impl Effects, now: Instant) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            self.svc(&name).want = Want::Gone;
            self.stop(&name, fx, now);
        }
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
        let state = svc.state;
        let msg = match (what, state) {
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
            (_, State::Stopping { .. }) => "starts once stopped",
            (_, State::Waiting { .. } | State::Idle) => {
                self.start(name, fx, now);
                "started"
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
        fx.signal(pid, true, sig);
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

    fn start(&mut self, name: &str, fx: &mut impl Effects, now: Instant) {
        match fx.spawn(name, &self.services[name].settings) {
            Ok(pid) => {
                fx.log(Level::Info, format_args!("{name}[{pid}]: started"));
                let svc = self.svc(name);
                svc.starts += 1;
                svc.running = svc.fingerprint;
                let state = State::Running {
                    pid,
                    since: now,
                    execd: false,
                    failed: None,
                };
                self.set(name, state);
            }
            Err(e) => {
                fx.log(Level::Err, format_args!("{name}: {e}"));
                self.fail(name, fx, now);
            }
        }
    }

    /// A fast failure: quarantine until the deadline it returns, doubling each time in a row.
    fn quarantine(&mut self, name: &str, fx: &mut impl Effects, now: Instant) -> Instant {
        let svc = self.svc(name);
        svc.fails += 1;
        let (fails, delay) = (svc.fails, backoff(svc.fails));
        let times = if fails == 1 { "time" } else { "times" };
        fx.log(
            Level::Warning,
            format_args!(
                "{name}: failed {fails} {times} in a row, next start in {}s",
                delay.as_secs()
            ),
        );
        now + delay
    }

    /// A fast failure with nothing left to stop: wait out the quarantine.
    fn fail(&mut self, name: &str, fx: &mut impl Effects, now: Instant) {
        let until = self.quarantine(name, fx, now);
        self.set(name, State::Waiting { until });
    }

    /// Stops the service as the admin, a reload or a shutdown asks.
    fn stop(&mut self, name: &str, fx: &mut impl Effects, now: Instant) {
        match self.services[name].state {
            State::Running { pid, since, .. } => {
                fx.log(Level::Notice, format_args!("{name}[{pid}]: stopping"));
                let stop = Stop {
                    pid: Some(pid),
                    pgid: pid,
                    since,
                    resume: None,
                };
                self.signal_stop(name, stop, fx, now);
            }
            State::Waiting { .. } | State::Idle => self.stopped(name, None, fx, now),
            State::Stopping { .. } => {}
        }
    }

    /// The one stop sequence: the stop signal (SIGTERM unless set), then SIGCONT so that a
    /// stopped process can act on it, to the whole group; SIGKILL at the deadline.
    fn signal_stop(&mut self, name: &str, stop: Stop, fx: &mut impl Effects, now: Instant) {
        let s = &self.services[name].settings;
        let (sig, timeout) = (s.stop_signal, s.stop_timeout);
        fx.signal(stop.pgid, stop.pid.is_some(), sig);
        fx.signal(stop.pgid, stop.pid.is_some(), libc::SIGCONT);
        let kill_at = Some(now + timeout);
        self.set(name, State::Stopping { stop, kill_at });
    }

    /// Nothing of the service runs any more: what is wanted of it decides what follows.
    fn stopped(
        &mut self,
        name: &str,
        resume: Option<Instant>,
        fx: &mut impl Effects,
        now: Instant,
    ) {
        match self.services[name].want {
            Want::Gone => {
                let svc = self.services.remove(name).expect("a service of the table");
                self.unindex(name, svc.state);
            }
            Want::Down => self.set(name, State::Idle),
            Want::Up => match resume.filter(|t| *t > now) {
                Some(until) => self.set(name, State::Waiting { until }), // its quarantine
                None => self.start(name, fx, now),
            },
        }
    }

    /// The one place a state changes, so that `pids`, `timers` and `draining` always
    /// match the states.
    fn set(&mut self, name: &str, state: State) {
        let old = std::mem::replace(&mut self.svc(name).state, state);
        if old.pid() != state.pid() {
            self.changes.extend(old.pid().map(|pid| (pid, false)));
            self.changes.extend(state.pid().map(|pid| (pid, true)));
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

#[cfg(test)]
mod tests;
