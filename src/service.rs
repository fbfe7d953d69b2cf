//! The service table: each service's settings and where it is in its life — running,
//! quarantined until a deadline, or stopping — and what each event does to it: an exit, a
//! deadline, a reload, a shutdown. Nothing here makes a system call: every effect goes
//! through [`Ops`] and time comes in as `now`, so the state machine is tested without sleeps.
//!
//! Invariants: a pid in `pids` is an unreaped child, so it and its process group may be
//! signalled (a reaped pid is never signalled); every deadline of every service is in
//! `timers`, absolute on the monotonic clock, so no service's events postpone another's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::c_int;
use std::fmt;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{Parsed, Settings};
use crate::fingerprint::Fingerprint;
use crate::log::{Age, Errno, Level};
use crate::sys::{self, ChildError, Exit, Pid, Step};

/// A run shorter than this is a fast failure; a longer one resets the count.
pub const MIN_RUN: Duration = Duration::from_secs(5);
/// The longest quarantine between two starts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The effects the table asks for; the supervisor does them, the tests record them.
pub trait Ops {
    /// Starts a process; Err says what failed ("unable to fork: …").
    fn spawn(&mut self, name: &str, settings: &Settings) -> Result<Pid, String>;
    /// Keeps (Some: the settings' fingerprint) or forgets (None) that the admin stopped
    /// `name`, across restarts of going.
    fn mark_down(&mut self, name: &str, fingerprint: Option<u64>);
    /// Signals a whole process group.
    fn signal(&mut self, pgid: Pid, sig: c_int);
    fn group_alive(&mut self, pgid: Pid) -> bool;
    fn log(&mut self, level: Level, msg: fmt::Arguments);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running {
        pid: Pid,
        since: Instant,
        /// Whether the exec is known to have happened.
        execd: bool,
        /// Set when the child reported that it never reached the service's exec.
        failed: Option<ChildError>,
    },
    /// Stopped by the admin (`going stop`), until `going start` or a change of its file.
    Down,
    /// Quarantine: the next start is at `until`.
    Waiting { until: Instant },
    /// SIGTERM sent. `pid` is None once the leader is reaped while others of its group are
    /// left; `kill_at` is None once SIGKILL has been sent.
    Stopping {
        pid: Option<Pid>,
        pgid: Pid,
        since: Instant,
        kill_at: Option<Instant>,
    },
}

impl State {
    fn deadline(&self) -> Option<Instant> {
        match *self {
            State::Running { .. } | State::Down => None,
            State::Waiting { until } => Some(until),
            State::Stopping { kill_at, .. } => kill_at,
        }
    }

    fn pid(&self) -> Option<Pid> {
        self.live().map(|(pid, _)| pid)
    }

    /// The live main process and its process group.
    fn live(&self) -> Option<(Pid, Pid)> {
        match *self {
            State::Running { pid, .. } => Some((pid, pid)),
            State::Stopping {
                pid: Some(pid),
                pgid,
                ..
            } => Some((pid, pgid)),
            _ => None,
        }
    }
}

struct Service {
    settings: Box<Settings>,
    /// `settings.fingerprint()`, kept: the state file wants it at every start and exit.
    fingerprint: u64,
    state: State,
    /// Consecutive fast failures.
    fails: u32,
    /// The file is gone: once stopped, the service is dropped instead of started again.
    removed: bool,
    /// The admin stopped it: once stopped, it stays down.
    down: bool,
    /// Its file is invalid now; it runs from an earlier, valid version.
    invalid: bool,
    /// The last start failed before the service's exec (a missing binary, say).
    failing: bool,
    starts: u32,
    /// After its leftovers are stopped: when the next start is due (its quarantine).
    resume_at: Option<Instant>,
    /// The last exits, newest last: when, how, after how long (None: it never ran).
    exits: VecDeque<(Instant, String, Option<Duration>)>,
    /// The last lines of output, newest last, at most `LINES` and `LINES_BYTES` of them.
    lines: VecDeque<String>,
}

/// How much of a service's history `going status` can show.
const EXITS: usize = 10;
const LINES: usize = 10;
const LINES_BYTES: usize = 2048;

impl Service {
    fn set_settings(&mut self, settings: Box<Settings>) {
        self.fingerprint = settings.fingerprint();
        self.settings = settings;
    }

    fn new(settings: Box<Settings>, state: State) -> Box<Service> {
        Box::new(Service {
            fingerprint: settings.fingerprint(),
            settings,
            state,
            fails: 0,
            removed: false,
            down: false,
            invalid: false,
            failing: false,
            starts: 0,
            resume_at: None,
            exits: VecDeque::new(),
            lines: VecDeque::new(),
        })
    }
}

/// What the admin asks of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    Start,
    Stop,
    Restart,
    Signal(c_int),
}

/// Why an admin's request could not be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotSo {
    Unknown,
    NotRunning,
}

/// One service (or invalid file) as `going status` shows it.
pub struct View<'a> {
    pub name: &'a str,
    pub state: &'static str,
    /// The colour of the state: g(reen), y(ellow) or r(ed).
    pub class: char,
    pub pid: Option<Pid>,
    pub up: Option<Duration>,
    pub next_start: Option<Duration>,
    pub restarts: u32,
    exits: Option<&'a VecDeque<(Instant, String, Option<Duration>)>>,
    now: Instant,
    pub cmd: &'a [String],
    pub lines: Option<&'a VecDeque<String>>,
    /// The file's problems, when it is invalid.
    pub problems: &'a [String],
}

impl View<'_> {
    /// The last exits, newest first, as "3m2s ago: exited 1 after 2.0s".
    pub fn exits(&self) -> impl Iterator<Item = String> + '_ {
        (self.exits.into_iter().flatten().rev()).map(|(at, how, ran)| match ran {
            Some(ran) => format!("{} ago: {how} after {}", Age(self.now - *at), Age(*ran)),
            None => format!("{} ago: {how}", Age(self.now - *at)),
        })
    }
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

/// A live process a previous going started, found in the state file and verified.
pub struct Adoptable {
    pub pid: Pid,
    pub since: Instant,
    pub fingerprint: Fingerprint,
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

    /// What live processes came, went or changed since the last call.
    pub fn take_changes(&mut self) -> Vec<(Pid, bool)> {
        std::mem::take(&mut self.changes)
    }

    /// The live process `pid`: its service's name, its process group and its settings'
    /// fingerprint; None once it is no service's live process.
    pub fn live_entry(&self, pid: Pid) -> Option<(&str, Pid, u64)> {
        let name = self.pids.get(&pid)?;
        let svc = &self.services[name];
        let (_, pgid) = svc.state.live().filter(|(p, _)| *p == pid)?;
        Some((name, pgid, svc.fingerprint))
    }

    /// Every live service process: name, pid, process group, fingerprint of its settings.
    pub fn live(&self) -> impl Iterator<Item = (&str, Pid, Pid, u64)> {
        (self.services.iter()).filter_map(|(name, s)| {
            let (pid, pgid) = s.state.live()?;
            Some((name.as_str(), pid, pgid, s.fingerprint))
        })
    }

    /// Takes over the processes a previous going left running (`adopt`, consumed): each
    /// whose file is unchanged runs on; the others are stopped as a reload would.
    pub fn adopt(
        &mut self,
        scan: &BTreeMap<String, Parsed>,
        adopt: BTreeMap<String, Adoptable>,
        ops: &mut impl Ops,
        now: Instant,
    ) {
        for (name, a) in adopt {
            let age = Age(now.saturating_duration_since(a.since));
            let (settings, keep) = match scan.get(&name) {
                Some(Ok(s)) => (s.clone(), a.fingerprint.matches(s)),
                _ => (Box::default(), false),
            };
            let running = State::Running {
                pid: a.pid,
                since: a.since,
                execd: true,
                failed: None,
            };
            let mut svc = Service::new(settings, State::Waiting { until: now });
            svc.starts = 1;
            svc.removed = !matches!(scan.get(&name), Some(Ok(_)));
            self.services.insert(name.clone(), svc);
            self.timers.insert((now, name.clone()));
            self.set(&name, running);
            if keep {
                ops.log(
                    Level::Notice,
                    format_args!("{name}[{}]: adopted, running for {age}", a.pid),
                );
            } else {
                let why = if self.services[&name].removed {
                    "is gone or invalid"
                } else {
                    "changed"
                };
                ops.log(
                    Level::Notice,
                    format_args!(
                        "{name}[{}]: adopted, but its file {why} since it started: stopping it",
                        a.pid
                    ),
                );
                self.stop(&name, ops, now);
            }
        }
    }

    /// The earliest deadline of any service: the loop sleeps until then, or forever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|t| t.0)
    }

    /// Applies a rescan of the directory: starts new services, stops removed ones, restarts
    /// changed ones (lifting their quarantine) and leaves unchanged and invalid ones alone.
    pub fn reconcile(
        &mut self,
        scan: BTreeMap<String, Parsed>,
        unchanged: &[String],
        ops: &mut impl Ops,
        now: Instant,
    ) -> Summary {
        // `unchanged`: sorted names of files not read again, as they did not change.
        let kept = |name: &str| unchanged.binary_search_by(|n| n.as_str().cmp(name)).is_ok();
        let mut sum = Summary::default();
        let gone: Vec<String> = (self.services.iter())
            .filter(|(name, svc)| !svc.removed && !scan.contains_key(*name) && !kept(name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            sum.stopped += 1;
            self.services.get_mut(&name).unwrap().removed = true;
            self.stop(&name, ops, now);
        }
        // An unchanged invalid file stays invalid, and is counted so, without a word more.
        self.invalid.retain(|name, _| kept(name));
        sum.invalid += self.invalid.len();
        for (name, parsed) in scan {
            let settings = match parsed {
                Ok(settings) => settings,
                Err(errors) => {
                    sum.invalid += 1;
                    for e in &errors {
                        ops.log(Level::Err, format_args!("{name}: {e}"));
                    }
                    if let Some(svc) = self.services.get_mut(&name) {
                        svc.invalid = true;
                    }
                    self.invalid
                        .insert(name, errors.iter().map(|e| e.to_string()).collect());
                    continue;
                }
            };
            let Some(svc) = self.services.get_mut(&name) else {
                // Left down by the admin, and the file unchanged since: it stays down.
                let mark = self.down_marks.remove(&name);
                if mark.is_some_and(|fp| fp.matches(&settings)) {
                    ops.log(
                        Level::Notice,
                        format_args!("{name}: down, as the admin left it"),
                    );
                    let mut svc = Service::new(settings, State::Down);
                    svc.down = true;
                    self.services.insert(name, svc);
                    continue;
                }
                ops.mark_down(&name, None);
                sum.started += 1;
                self.services.insert(
                    name.clone(),
                    Service::new(settings, State::Waiting { until: now }),
                );
                self.timers.insert((now, name.clone()));
                self.start(&name, ops, now);
                continue;
            };
            svc.invalid = false;
            // A file back while its old service still stops: it starts once that is gone.
            let returned = std::mem::replace(&mut svc.removed, false);
            sum.started += returned as usize;
            if svc.settings.same_run(&settings) {
                // stop_signal and stop_timeout need no restart; the state file learns the
                // new fingerprint, so that an adoption does not take this process for one
                // of other settings.
                svc.set_settings(settings);
                if let Some(pid) = svc.state.pid() {
                    self.changes.push((pid, true));
                }
                continue;
            }
            sum.restarted += !returned as usize;
            svc.set_settings(settings);
            svc.fails = 0;
            // A changed file lifts the admin's stop.
            if std::mem::replace(&mut svc.down, false) {
                ops.mark_down(&name, None);
            }
            match svc.state {
                State::Down => self.start(&name, ops, now),
                _ => self.stop(&name, ops, now),
            }
        }
        sum
    }

    /// A child was reaped. False when it was none of the services' (an orphan).
    pub fn exited(&mut self, pid: Pid, exit: Exit, ops: &mut impl Ops, now: Instant) -> bool {
        let Some(name) = self.pids.get(&pid).cloned() else {
            return false;
        };
        let svc = self.services.get_mut(&name).unwrap();
        let state = svc.state;
        let (since, failed) = match state {
            State::Running { since, failed, .. } => (since, failed),
            State::Stopping { since, .. } => (since, None),
            State::Waiting { .. } | State::Down => unreachable!("no pid without a process"),
        };
        let ran = now.saturating_duration_since(since);
        let how = match failed {
            Some(e) => {
                let err = io::Error::from_raw_os_error(e.errno);
                format!("unable to {}: {}", Unable(&svc.settings, e), Errno(&err))
            }
            None => How(exit).to_string(),
        };
        if svc.exits.len() == EXITS {
            svc.exits.pop_front();
        }
        svc.exits
            .push_back((now, how.clone(), failed.is_none().then_some(ran)));
        svc.failing = failed.is_some();
        match state {
            State::Running { .. } if failed.is_some() => {
                ops.log(Level::Err, format_args!("{name}: {how}"));
                self.fail(&name, ops, now);
            }
            State::Running { .. } => {
                ops.log(
                    Level::Warning,
                    format_args!("{name}[{pid}]: {how} after {}", Age(ran)),
                );
                if ran >= MIN_RUN {
                    svc.fails = 0;
                } else {
                    self.fail(&name, ops, now);
                }
                let svc = self.services.get_mut(&name).unwrap();
                let resume = match svc.state {
                    State::Waiting { until } => until,
                    _ => now,
                };
                if ops.group_alive(pid) {
                    // What it started is still there: stopped first, so that the next copy
                    // does not find its port taken.
                    ops.log(
                        Level::Notice,
                        format_args!("{name}: stopping what is left of its process group"),
                    );
                    let (sig, timeout) = (svc.settings.stop_signal, svc.settings.stop_timeout);
                    svc.resume_at = Some(resume);
                    ops.signal(pid, sig);
                    ops.signal(pid, libc::SIGCONT);
                    let kill_at = Some(now + timeout);
                    self.set(
                        &name,
                        State::Stopping {
                            pid: None,
                            pgid: pid,
                            since,
                            kill_at,
                        },
                    );
                } else if resume <= now {
                    self.start(&name, ops, now);
                }
            }
            State::Stopping { pgid, kill_at, .. } => {
                ops.log(
                    Level::Info,
                    format_args!("{name}[{pid}]: stopped: {how} after {}", Age(ran)),
                );
                if kill_at.is_some() && ops.group_alive(pgid) {
                    // Others of its group still run: they get their SIGKILL at the deadline.
                    let state = State::Stopping {
                        pid: None,
                        pgid,
                        since,
                        kill_at,
                    };
                    self.set(&name, state);
                } else {
                    self.stopped(&name, ops, now);
                }
            }
            State::Waiting { .. } | State::Down => {}
        }
        true
    }

    /// The child `pid` has exec'd: it is the service now.
    pub fn exec_ok(&mut self, pid: Pid) {
        if let Some(svc) = self
            .pids
            .get(&pid)
            .and_then(|name| self.services.get_mut(name))
        {
            if let State::Running { execd, .. } = &mut svc.state {
                *execd = true;
            }
        }
    }

    /// A line the process `pid` wrote, kept for `going status`.
    pub fn output(&mut self, pid: Pid, line: &str) {
        let Some(svc) = self
            .pids
            .get(&pid)
            .and_then(|name| self.services.get_mut(name))
        else {
            return;
        };
        let mut line = line.to_string();
        if line.len() > LINES_BYTES {
            let mut cut = LINES_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        svc.lines.push_back(line);
        let mut bytes: usize = svc.lines.iter().map(String::len).sum();
        while svc.lines.len() > LINES || bytes > LINES_BYTES {
            bytes -= svc.lines.pop_front().map_or(0, |l| l.len());
        }
    }

    /// After a round of reaping: a stopping service whose group has emptied is stopped.
    pub fn check_groups(&mut self, ops: &mut impl Ops, now: Instant) {
        let services = &self.services;
        let done: Vec<String> = (self.draining.iter())
            .filter(|name| matches!(services[*name].state, State::Stopping { pid: None, pgid, .. } if !ops.group_alive(pgid)))
            .cloned()
            .collect();
        for name in done {
            self.stopped(&name, ops, now);
        }
    }

    /// The child `pid` reported that it failed before becoming the service.
    pub fn child_failed(&mut self, pid: Pid, err: ChildError) {
        if let Some(svc) = self
            .pids
            .get(&pid)
            .and_then(|name| self.services.get_mut(name))
        {
            if let State::Running { failed, .. } = &mut svc.state {
                *failed = Some(err);
            }
        }
    }

    /// Acts on every deadline that has come: quarantines that end, stops that time out.
    pub fn tick(&mut self, ops: &mut impl Ops, now: Instant) {
        while let Some((at, name)) = self.timers.first().cloned() {
            if at > now {
                break;
            }
            match self.services[&name].state {
                State::Waiting { .. } => self.start(&name, ops, now),
                State::Stopping {
                    pid, pgid, since, ..
                } => {
                    if pid.is_some() || ops.group_alive(pgid) {
                        let s = &self.services[&name].settings;
                        let sig = sys::signal_name(s.stop_signal).unwrap_or("TERM");
                        let secs = s.stop_timeout.as_secs();
                        ops.log(
                            Level::Warning,
                            format_args!(
                                "{name}: still running {secs}s after SIG{sig}, sending SIGKILL"
                            ),
                        );
                        ops.signal(pgid, libc::SIGKILL);
                    }
                    match pid {
                        Some(_) => self.set(
                            &name,
                            State::Stopping {
                                pid,
                                pgid,
                                since,
                                kill_at: None,
                            },
                        ),
                        None => self.stopped(&name, ops, now),
                    }
                }
                State::Running { .. } | State::Down => unreachable!("no deadline"),
            }
        }
    }

    /// Stops every service, as for SIGTERM to going; the table is empty once all are gone.
    pub fn shutdown(&mut self, ops: &mut impl Ops, now: Instant) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            self.services.get_mut(&name).unwrap().removed = true;
            self.stop(&name, ops, now);
        }
    }

    /// `going start|stop|restart|signal NAME`: what happened, as a line for the admin.
    pub fn admin(
        &mut self,
        name: &str,
        what: Admin,
        ops: &mut impl Ops,
        now: Instant,
    ) -> Result<String, NotSo> {
        let svc = self
            .services
            .get_mut(name)
            .filter(|s| !s.removed)
            .ok_or(NotSo::Unknown)?;
        let state = svc.state;
        if let Admin::Signal(sig) = what {
            let State::Running { pid, .. } = state else {
                return Err(NotSo::NotRunning);
            };
            ops.signal(pid, sig);
            let sig = sys::signal_name(sig).map_or(sig.to_string(), |n| format!("SIG{n}"));
            return Ok(format!("{name}: sent {sig} to process group {pid}"));
        }
        let down = matches!(what, Admin::Stop);
        if std::mem::replace(&mut svc.down, down) != down {
            ops.mark_down(name, down.then_some(svc.fingerprint));
        }
        if !down {
            svc.fails = 0; // the admin's word lifts a quarantine
        }
        let msg = match (what, state) {
            (Admin::Stop, State::Down) => "already stopped",
            (Admin::Stop, _) => {
                self.stop(name, ops, now);
                "stopping"
            }
            (Admin::Start, State::Running { .. }) => "already running",
            (Admin::Restart, State::Running { .. }) => {
                self.stop(name, ops, now);
                "restarting"
            }
            (_, State::Stopping { .. }) => "starts once stopped",
            (_, State::Waiting { .. } | State::Down) => {
                self.start(name, ops, now);
                "started"
            }
            (Admin::Signal(_), _) => unreachable!(),
        };
        Ok(format!("{name}: {msg}"))
    }

    /// Every service by name, then the invalid files that are no service, as `going
    /// status` shows them. An iterator, walked twice for the table: nothing is copied.
    pub fn views(&self, now: Instant) -> impl Iterator<Item = View<'_>> {
        let services = (self.services.iter())
            .filter(|(_, s)| !s.removed)
            .map(move |(name, s)| {
                let (state, class, pid, up) = match s.state {
                    State::Running {
                        pid,
                        since,
                        execd: true,
                        ..
                    } => ("running", 'g', Some(pid), Some(now - since)),
                    State::Running { pid, .. } => ("starting", 'y', Some(pid), None),
                    State::Waiting { .. } if s.failing => ("exec failing", 'r', None, None),
                    State::Waiting { .. } => ("quarantined", 'r', None, None),
                    State::Stopping { pid, .. } => ("stopping", 'y', pid, None),
                    State::Down => ("down", 'y', None, None),
                };
                let next_start = match s.state {
                    State::Waiting { until } => Some(until.saturating_duration_since(now)),
                    _ => None,
                };

                View {
                    name,
                    state,
                    class,
                    pid,
                    up,
                    next_start,
                    restarts: s.starts.saturating_sub(1),
                    exits: Some(&s.exits),
                    now,
                    cmd: &s.settings.cmd,
                    lines: Some(&s.lines),
                    problems: self.invalid.get(name).map_or(&[], |p| &p[..]),
                }
            });
        let invalid = (self.invalid.iter())
            .filter(|(n, _)| !self.services.contains_key(*n))
            .map(move |(name, problems)| View {
                name,
                state: "invalid file",
                class: 'r',
                pid: None,
                up: None,
                next_start: None,
                restarts: 0,
                exits: None,
                now,
                cmd: &[],
                lines: None,
                problems,
            });
        services.chain(invalid)
    }

    fn start(&mut self, name: &str, ops: &mut impl Ops, now: Instant) {
        match ops.spawn(name, &self.services[name].settings) {
            Ok(pid) => {
                ops.log(Level::Info, format_args!("{name}[{pid}]: started"));
                self.services.get_mut(name).unwrap().starts += 1;
                self.set(
                    name,
                    State::Running {
                        pid,
                        since: now,
                        execd: false,
                        failed: None,
                    },
                );
            }
            Err(e) => {
                ops.log(Level::Err, format_args!("{name}: {e}"));
                self.fail(name, ops, now);
            }
        }
    }

    /// A fast failure: quarantine, doubling each time in a row.
    fn fail(&mut self, name: &str, ops: &mut impl Ops, now: Instant) {
        let svc = self.services.get_mut(name).unwrap();
        svc.fails += 1;
        let (fails, delay) = (svc.fails, backoff(svc.fails));
        let times = if fails == 1 { "time" } else { "times" };
        ops.log(
            Level::Warning,
            format_args!(
                "{name}: failed {fails} {times} in a row, next start in {}s",
                delay.as_secs()
            ),
        );
        self.set(name, State::Waiting { until: now + delay });
    }

    /// The stop signal (SIGTERM unless set), then SIGCONT so that a stopped process can act
    /// on it, to the whole group.
    fn stop(&mut self, name: &str, ops: &mut impl Ops, now: Instant) {
        let svc = &self.services[name];
        match svc.state {
            State::Running { pid, since, .. } => {
                ops.log(Level::Notice, format_args!("{name}[{pid}]: stopping"));
                ops.signal(pid, svc.settings.stop_signal);
                ops.signal(pid, libc::SIGCONT);
                let kill_at = Some(now + svc.settings.stop_timeout);
                self.set(
                    name,
                    State::Stopping {
                        pid: Some(pid),
                        pgid: pid,
                        since,
                        kill_at,
                    },
                );
            }
            State::Waiting { .. } | State::Down => self.stopped(name, ops, now),
            State::Stopping { .. } => {}
        }
    }

    /// Nothing of the service runs any more: drop it, or start it with its new settings.
    fn stopped(&mut self, name: &str, ops: &mut impl Ops, now: Instant) {
        let svc = self.services.get_mut(name).unwrap();
        let resume = svc.resume_at.take().filter(|t| *t > now);
        if svc.removed {
            let state = self.services.remove(name).unwrap().state;
            self.unindex(name, state);
        } else if svc.down {
            self.set(name, State::Down);
        } else if let Some(until) = resume {
            self.set(name, State::Waiting { until }); // the quarantine of the crash
        } else {
            self.start(name, ops, now);
        }
    }

    /// The one place a state changes, so that `pids` and `timers` always match the states.
    fn set(&mut self, name: &str, state: State) {
        let old = std::mem::replace(&mut self.services.get_mut(name).unwrap().state, state);
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
        if let State::Stopping { pid: None, .. } = state {
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
        if let State::Stopping { pid: None, .. } = state {
            self.draining.remove(name);
        }
    }
}

/// What a child failed to do before becoming the service, after "unable to".
struct Unable<'a>(&'a Settings, ChildError);

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
        }
    }
}

/// How a process ended, as a log line says it: `exited 3`, `killed by SIGSEGV (core dumped)`.
pub struct How(pub Exit);

impl fmt::Display for How {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[derive(Default)]
    struct Fake {
        next: Pid,
        spawned: Vec<(Pid, Vec<String>)>,
        signals: Vec<(Pid, c_int)>,
        alive_groups: BTreeSet<Pid>,
        logs: Vec<String>,
        refuse: bool,
        marks: Vec<(String, Option<u64>)>,
    }

    impl Ops for Fake {
        fn spawn(&mut self, _: &str, s: &Settings) -> Result<Pid, String> {
            if self.refuse {
                return Err("unable to fork: Resource temporarily unavailable".into());
            }
            self.next += 1;
            let pid = 100 + self.next;
            self.spawned.push((pid, s.cmd.clone()));
            Ok(pid)
        }
        fn signal(&mut self, pgid: Pid, sig: c_int) {
            self.signals.push((pgid, sig));
        }
        fn mark_down(&mut self, name: &str, fingerprint: Option<u64>) {
            self.marks.push((name.to_string(), fingerprint));
        }
        fn group_alive(&mut self, pgid: Pid) -> bool {
            self.alive_groups.contains(&pgid)
        }
        fn log(&mut self, _: Level, msg: fmt::Arguments) {
            self.logs.push(msg.to_string());
        }
    }

    impl Fake {
        fn last_pid(&self) -> Pid {
            self.spawned.last().unwrap().0
        }
        fn last_log(&self) -> &str {
            self.logs.last().unwrap()
        }
    }

    fn scan(files: &[(&str, &str)]) -> BTreeMap<String, Parsed> {
        (files.iter())
            .map(|(n, text)| {
                (
                    n.to_string(),
                    crate::config::parse(Path::new(n), text.as_bytes()),
                )
            })
            .collect()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const DIED: Exit = Exit::Code(1);

    #[test]
    fn backoff_doubles_to_a_minute() {
        let d: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn fast_failures_are_quarantined_with_backoff() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        let sum = t.reconcile(scan(&[("web", "cmd=/bin/web")]), &[], &mut ops, t0);
        assert_eq!(
            sum,
            Summary {
                started: 1,
                ..Summary::default()
            }
        );
        let mut now = t0;
        for (n, delay) in [
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (5, 16),
            (6, 32),
            (7, 60),
            (8, 60),
        ] {
            now += secs(1);
            assert!(t.exited(ops.last_pid(), DIED, &mut ops, now));
            assert_eq!(
                ops.logs[ops.logs.len() - 2],
                format!("web[{}]: exited 1 after 1.0s", ops.last_pid())
            );
            let s = if n == 1 { "" } else { "s" };
            assert_eq!(
                ops.last_log(),
                format!("web: failed {n} time{s} in a row, next start in {delay}s")
            );
            assert_eq!(t.next_deadline(), Some(now + secs(delay)));
            let before = ops.spawned.len();
            t.tick(&mut ops, now + secs(delay) - Duration::from_millis(1));
            assert_eq!(ops.spawned.len(), before, "started before its deadline");
            now += secs(delay);
            t.tick(&mut ops, now);
            assert_eq!(ops.spawned.len(), before + 1);
            assert_eq!(t.next_deadline(), None);
        }
        // A run of 5 s or more resets the count and restarts at once.
        now += MIN_RUN;
        t.exited(ops.last_pid(), DIED, &mut ops, now);
        assert_eq!(ops.last_log(), format!("web[{}]: started", ops.last_pid()));
        now += secs(1);
        t.exited(ops.last_pid(), DIED, &mut ops, now);
        assert_eq!(
            ops.last_log(),
            "web: failed 1 time in a row, next start in 1s"
        );
    }

    #[test]
    fn deadlines_are_per_service() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        t.reconcile(scan(&[("a", "cmd=/a"), ("b", "cmd=/b")]), &[], &mut ops, t0);
        let (a, b) = (ops.spawned[0].0, ops.spawned[1].0);
        t.exited(a, DIED, &mut ops, t0 + Duration::from_millis(100));
        let due = t0 + Duration::from_millis(1100);
        // b crashing over and over does not push a's deadline back.
        let mut now = t0 + Duration::from_millis(200);
        let mut pid = b;
        for _ in 0..3 {
            t.exited(pid, DIED, &mut ops, now);
            assert_eq!(t.next_deadline(), Some(due));
            now += Duration::from_millis(300);
            t.tick(&mut ops, now);
            pid = ops.last_pid();
        }
        t.tick(&mut ops, due);
        assert_eq!(ops.spawned.last().unwrap().1, ["/a"]);
    }

    #[test]
    fn reload_starts_stops_restarts_and_leaves_alone() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        t.reconcile(
            scan(&[
                ("same", "cmd=/same"),
                ("gone", "cmd=/gone"),
                ("edit", "cmd=/old"),
                ("bad", "cmd=/bad"),
            ]),
            &[],
            &mut ops,
            t0,
        );
        let pid =
            |ops: &Fake, cmd: &str| ops.spawned.iter().rev().find(|s| s.1[0] == cmd).unwrap().0;
        let (same, gone, old, bad) = (
            pid(&ops, "/same"),
            pid(&ops, "/gone"),
            pid(&ops, "/old"),
            pid(&ops, "/bad"),
        );
        let now = t0 + secs(60);
        let sum = t.reconcile(
            scan(&[
                ("same", "# a comment changes nothing\ncmd=/same"),
                ("edit", "cmd=/new"),
                ("bad", "cmd=/bad\nbogus=1"),
                ("new", "cmd=/new-svc"),
            ]),
            &[],
            &mut ops,
            now,
        );
        assert_eq!(
            sum,
            Summary {
                started: 1,
                stopped: 1,
                restarted: 1,
                invalid: 1
            }
        );
        assert_eq!(
            sum.to_string(),
            "1 started, 1 stopped, 1 restarted, 1 invalid"
        );
        assert!(ops
            .logs
            .contains(&r#"bad: bad:2: unknown key "bogus""#.to_string()));
        let signalled: BTreeSet<Pid> = ops.signals.iter().map(|s| s.0).collect();
        assert_eq!(signalled, [gone, old].into());
        assert!(
            ops.signals.contains(&(gone, libc::SIGTERM))
                && ops.signals.contains(&(gone, libc::SIGCONT))
        );
        assert!(!signalled.contains(&same) && !signalled.contains(&bad));
        // The edited one starts again with its new command once the old one is gone.
        assert!(t.exited(
            old,
            Exit::Signal {
                sig: libc::SIGTERM,
                core: false
            },
            &mut ops,
            now
        ));
        assert_eq!(ops.spawned.last().unwrap().1, ["/new"]);
        // The removed one is dropped once gone.
        assert!(t.exited(gone, Exit::Code(0), &mut ops, now));
        assert_eq!(t.len(), 4);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_fixed_file_lifts_quarantine_and_an_unchanged_one_keeps_it() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        t.reconcile(scan(&[("web", "cmd=/broken")]), &[], &mut ops, t0);
        let mut now = t0;
        for _ in 0..7 {
            now += secs(1);
            t.exited(ops.last_pid(), DIED, &mut ops, now);
            now = t.next_deadline().unwrap();
            t.tick(&mut ops, now);
        }
        now += secs(1);
        t.exited(ops.last_pid(), DIED, &mut ops, now);
        assert_eq!(t.next_deadline(), Some(now + secs(60)));
        t.reconcile(scan(&[("web", "cmd=/broken")]), &[], &mut ops, now);
        assert_eq!(
            t.next_deadline(),
            Some(now + secs(60)),
            "unchanged: quarantine kept"
        );
        let before = ops.spawned.len();
        t.reconcile(scan(&[("web", "cmd=/fixed")]), &[], &mut ops, now);
        assert_eq!(ops.spawned.len(), before + 1, "changed: started at once");
        t.exited(ops.last_pid(), DIED, &mut ops, now + secs(1));
        assert_eq!(
            ops.last_log(),
            "web: failed 1 time in a row, next start in 1s"
        );
    }

    #[test]
    fn stop_escalates_to_sigkill_after_the_timeout() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
        let pid = ops.last_pid();
        t.reconcile(BTreeMap::new(), &[], &mut ops, t0);
        t.tick(
            &mut ops,
            t0 + Duration::from_secs(10) - Duration::from_millis(1),
        );
        assert!(!ops.signals.contains(&(pid, libc::SIGKILL)));
        t.tick(&mut ops, t0 + Duration::from_secs(10));
        assert_eq!(ops.signals.last(), Some(&(pid, libc::SIGKILL)));
        assert_eq!(
            ops.last_log(),
            "web: still running 10s after SIGTERM, sending SIGKILL"
        );
        assert!(!t.is_empty());
        t.exited(
            pid,
            Exit::Signal {
                sig: libc::SIGKILL,
                core: false,
            },
            &mut ops,
            t0 + Duration::from_secs(10),
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_stop_waits_for_the_rest_of_the_group() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
        let pid = ops.last_pid();
        t.shutdown(&mut ops, t0);
        ops.alive_groups.insert(pid);
        t.exited(pid, Exit::Code(0), &mut ops, t0 + secs(1));
        t.check_groups(&mut ops, t0 + secs(1));
        assert!(!t.is_empty(), "a worker of the group is still alive");
        assert_eq!(Vec::from_iter(&t.draining), ["web"]);
        ops.alive_groups.clear();
        t.check_groups(&mut ops, t0 + secs(2));
        assert!(t.is_empty());
        assert!(t.draining.is_empty());
        // Or the workers outlive the timeout: SIGKILL to the group, never to the reaped pid alone.
        t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
        let pid = ops.last_pid();
        t.shutdown(&mut ops, t0);
        ops.alive_groups.insert(pid);
        t.exited(pid, Exit::Code(0), &mut ops, t0);
        t.tick(&mut ops, t0 + Duration::from_secs(10));
        assert_eq!(ops.signals.last(), Some(&(pid, libc::SIGKILL)));
        assert!(t.is_empty());
        assert!(t.draining.is_empty());
    }

    #[test]
    fn exec_failures_and_fork_failures_are_fast_failures() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        t.reconcile(
            scan(&[("web", "cmd=/usr/sbin/nginx -g x")]),
            &[],
            &mut ops,
            t0,
        );
        let pid = ops.last_pid();
        t.child_failed(
            pid,
            ChildError {
                step: Step::Exec,
                errno: libc::ENOENT,
                arg: 0,
            },
        );
        t.exited(pid, Exit::Code(127), &mut ops, t0);
        assert_eq!(
            ops.logs[1],
            "web: unable to exec /usr/sbin/nginx: No such file or directory"
        );
        assert_eq!(
            ops.last_log(),
            "web: failed 1 time in a row, next start in 1s"
        );
        ops.refuse = true;
        t.tick(&mut ops, t0 + secs(1));
        assert_eq!(
            ops.logs[ops.logs.len() - 2],
            "web: unable to fork: Resource temporarily unavailable"
        );
        assert_eq!(t.next_deadline(), Some(t0 + secs(3)));
    }

    #[test]
    fn a_file_back_while_stopping_starts_afterwards() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
        let pid = ops.last_pid();
        assert_eq!(t.reconcile(BTreeMap::new(), &[], &mut ops, t0).stopped, 1);
        assert_eq!(
            t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0)
                .started,
            1
        );
        t.exited(pid, Exit::Code(0), &mut ops, t0);
        assert_ne!(ops.last_pid(), pid);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn stop_signal_and_timeout_are_the_services_own_and_need_no_restart() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
        let pid = ops.last_pid();
        let sum = t.reconcile(
            scan(&[("web", "cmd=/web\nstop_signal=INT\nstop_timeout=2")]),
            &[],
            &mut ops,
            t0,
        );
        assert_eq!(sum, Summary::default(), "no restart");
        assert!(ops.signals.is_empty());
        t.reconcile(BTreeMap::new(), &[], &mut ops, t0);
        assert_eq!(ops.signals, [(pid, libc::SIGINT), (pid, libc::SIGCONT)]);
        t.tick(&mut ops, t0 + secs(2));
        assert_eq!(
            ops.last_log(),
            "web: still running 2s after SIGINT, sending SIGKILL"
        );
    }

    #[test]
    fn child_failures_say_what_failed_on_what() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        let file = "cmd=/x\nchroot=/jail\ncwd=/srv\nlimit_nofile=10\nnice=5\nuser=4000000";
        t.reconcile(scan(&[("web", file)]), &[], &mut ops, t0);
        let nofile = libc::RLIMIT_NOFILE as i32;
        for (step, arg, want) in [
            (
                Step::Chroot,
                0,
                "web: unable to chroot to /jail: Permission denied",
            ),
            (
                Step::Chdir,
                0,
                "web: unable to change directory to /srv: Permission denied",
            ),
            (
                Step::Limit,
                nofile,
                "web: unable to set limit_nofile: Permission denied",
            ),
            (
                Step::Nice,
                5,
                "web: unable to set nice 5: Permission denied",
            ),
            (
                Step::Uid,
                0,
                "web: unable to set user 4000000: Permission denied",
            ),
        ] {
            let pid = ops.last_pid();
            t.child_failed(
                pid,
                ChildError {
                    step,
                    errno: libc::EACCES,
                    arg,
                },
            );
            t.exited(pid, Exit::Code(127), &mut ops, t0);
            assert_eq!(ops.logs[ops.logs.len() - 2], want);
            let due = t.next_deadline().unwrap();
            t.tick(&mut ops, due);
        }
    }

    #[test]
    fn files_not_read_again_are_left_as_they_are() {
        let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
        t.reconcile(
            scan(&[("web", "cmd=/web"), ("bad", "oops")]),
            &[],
            &mut ops,
            t0,
        );
        let unchanged = ["bad".to_string(), "web".to_string()];
        let sum = t.reconcile(scan(&[("new", "cmd=/new")]), &unchanged, &mut ops, t0);
        assert_eq!(
            sum,
            Summary {
                started: 1,
                stopped: 0,
                restarted: 0,
                invalid: 1
            }
        );
        assert!(ops.signals.is_empty(), "web was not stopped");
        let sum = t.reconcile(BTreeMap::new(), &["new".to_string()], &mut ops, t0);
        assert_eq!(
            (sum.stopped, sum.invalid),
            (1, 0),
            "web and bad are gone now"
        );
    }

    #[test]
    fn unknown_pids_are_not_services() {
        let (mut t, mut ops) = (Table::default(), Fake::default());
        assert!(!t.exited(4242, DIED, &mut ops, Instant::now()));
    }

    #[test]
    fn exits_read_as_people_say_them() {
        assert_eq!(How(Exit::Code(3)).to_string(), "exited 3");
        assert_eq!(
            How(Exit::Signal {
                sig: libc::SIGSEGV,
                core: true
            })
            .to_string(),
            "killed by SIGSEGV (core dumped)"
        );
        assert_eq!(
            How(Exit::Signal {
                sig: 40,
                core: false
            })
            .to_string(),
            "killed by signal 40"
        );
    }
}
