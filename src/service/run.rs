//! A run of a service, from its start to what follows its end: the start (once what it
//! starts after is up), its exit (restart policy, quarantine), the stop sequence, what its
//! process group left, its finish hook, then the next start, or done, or down, or gone.

use std::io;
use std::time::{Duration, Instant};

use super::{
    history, Due, Effects, Launch, Next, State, Stop, Table, To, Want, AFTER_KILL, KILL_WAIT,
    MIN_RUN,
};
use crate::config::Restart;
use crate::log::{Age, Errno, Level};
use crate::sys::{self, Exit, Pid};

use super::view::{Ended, Unable};

impl Table {
    /// Starts the service now if everything it starts after is up; else it waits for them.
    /// True when it started (or tried to).
    pub(super) fn begin(&mut self, name: &str, fx: &mut impl Effects, now: Instant) -> bool {
        match self.waits_for(name) {
            None => {
                self.start(name, fx, now);
                true
            }
            Some(dep) => {
                if self.services[name].state != State::Blocked {
                    fx.log(Level::Info, format_args!("{name}: waiting for {dep}"));
                    self.set(name, State::Blocked);
                }
                false
            }
        }
    }

    fn start(&mut self, name: &str, fx: &mut impl Effects, now: Instant) {
        let svc = &self.services[name];
        match fx.spawn(name, &svc.settings, Launch::Service) {
            Ok(pid) => {
                fx.log(Level::Info, format_args!("{name}[{pid}]: started"));
                let svc = self.svc(name);
                svc.starts += 1;
                svc.running = svc.fingerprint;
                svc.told = None;
                let ready_by = svc.settings.life().ready_timeout.map(|t| now + t);
                let state = State::Running {
                    pid,
                    since: now,
                    execd: false,
                    failed: None,
                    ready: None,
                    ready_by: ready_by.filter(|_| svc.settings.life().ready.is_some()),
                };
                self.set(name, state);
            }
            Err(e) => {
                fx.log(Level::Err, format_args!("{name}: {e}"));
                self.unable(name, e.to_string(), 126, fx, now);
            }
        }
    }

    /// A child was reaped (or an adopted process ended). False when it was none of the
    /// services' (an orphan).
    pub fn exited(&mut self, pid: Pid, exit: Exit, fx: &mut impl Effects, now: Instant) -> bool {
        let Some(name) = self.pids.get(&pid).cloned() else {
            return false;
        };
        match self.services[&name].state {
            State::Running {
                failed: Some(e), ..
            } => {
                let svc = self.svc(&name);
                let err = io::Error::from_raw_os_error(e.errno);
                let how = format!("unable to {}: {}", Unable(&svc.settings, e), Errno(&err));
                fx.log(Level::Err, format_args!("{name}: {how}"));
                svc.history.exited(history::Exit {
                    at: now,
                    how: history::How::Unable(how.as_str().into()),
                    ran: None,
                });
                // As a shell says of a command it could not run: 127 not found, 126 else.
                let code = if e.errno == libc::ENOENT { 127 } else { 126 };
                self.unable(&name, how, code, fx, now);
            }
            State::Running { since, ready, .. } => {
                let ran = now.saturating_duration_since(since);
                self.record(&name, exit, ran, now);
                let next = self.next_after(&name, pid, exit, ran, ready.is_some(), fx, now);
                if matches!(next, Next::Done { .. }) {
                    self.essential(&name, Ended(exit).to_string(), status(exit));
                }
                self.leftovers(&name, pid, since, next, fx, now);
            }
            State::Stopping { stop, due } => {
                let ran = now.saturating_duration_since(stop.since);
                self.record(&name, exit, ran, now);
                let how = Ended(exit);
                let msg = format_args!("{name}[{pid}]: stopped: {how} after {}", Age(ran));
                fx.log(Level::Info, msg);
                if fx.group_alive(&name, stop.pgid) {
                    // Others of it still run: what left its group is asked to stop now, as
                    // its group was; all get their SIGKILL at the deadline, or, sent
                    // already, a moment to be gone.
                    let due = match due {
                        Due::Kill(_) => {
                            let sig = self.services[&name].settings.stop_signal;
                            fx.signal(&name, stop.pgid, To::Strays, sig);
                            fx.signal(&name, stop.pgid, To::Strays, libc::SIGCONT);
                            due
                        }
                        Due::Look(_) => Due::Look(now + KILL_WAIT),
                    };
                    let stop = Stop { pid: None, ..stop };
                    self.set(&name, State::Stopping { stop, due });
                } else {
                    self.over(&name, stop.next, fx, now);
                }
            }
            State::Finishing { next, .. } => {
                if exit != Exit::Code(0) {
                    let how = Ended(exit);
                    fx.log(Level::Warning, format_args!("{name}: finish[{pid}]: {how}"));
                }
                // A hook's work ends with it: what it left behind (in its group, or the
                // service's cgroup) would outlive the service, unseen.
                if fx.group_alive(&name, pid) {
                    let msg = format_args!("{name}: finish[{pid}]: killing what it left");
                    fx.log(Level::Notice, msg);
                    fx.kill(&name, pid, false);
                }
                self.after(&name, next, fx, now);
            }
            _ => return false, // no live pid: not in `pids`
        }
        true
    }

    /// The service could not be started (`how`; `code` what a shell would exit with): a
    /// one-shot has failed for good, an essential service (but one restarted on failure)
    /// ends going, anything else waits out a quarantine.
    fn unable(&mut self, name: &str, how: String, code: u8, fx: &mut impl Effects, now: Instant) {
        let life = self.services[name].settings.life();
        let ends = life.restart != Restart::OnFailure && self.ends_going(name);
        if ends || life.restart == Restart::Never {
            self.essential(name, how, code);
            return self.after(name, Next::Done { ok: false }, fx, now);
        }
        self.fail(name, fx, now)
    }

    /// Whether an end of `name` that nobody asked for ends going: it is essential, still
    /// wanted up, and going is not stopping already.
    fn ends_going(&self, name: &str) -> bool {
        let svc = &self.services[name];
        let wanted = svc.want == Want::Up && !self.shutting_down && self.ended.is_none();
        wanted && svc.settings.life().essential
    }

    /// An essential service's end that its policy does not follow with a start (any end,
    /// with `restart=always`) ends going, with `code`: kept for the loop, which stops
    /// everything. Once: the first such end is what going exits with.
    fn essential(&mut self, name: &str, how: String, code: u8) {
        if self.ends_going(name) {
            let name = name.to_string();
            self.ended = Some(super::Essential { name, how, code });
        }
    }

    /// Keeps how a run ended: in the history, and for the finish hook.
    fn record(&mut self, name: &str, exit: Exit, ran: Duration, now: Instant) {
        let svc = self.svc(name);
        svc.last = Some(exit);
        (svc.history).exited(history::Exit {
            at: now,
            how: history::How::Ended(exit),
            ran: Some(ran),
        });
    }

    /// The main process `pid` of a running service ended on its own after `ran`: logged,
    /// and what follows, as its restart policy says.
    #[allow(clippy::too_many_arguments)]
    fn next_after(
        &mut self,
        name: &str,
        pid: Pid,
        exit: Exit,
        ran: Duration,
        was_ready: bool,
        fx: &mut impl Effects,
        now: Instant,
    ) -> Next {
        let life = self.services[name].settings.life();
        let (restart, waits) = (life.restart, life.ready.is_some() && !was_ready);
        // An adopted process's status is not known: a one-shot is taken to have done its
        // work (running it twice may do harm), a daemon to have failed (it is restarted).
        let ok = match exit {
            Exit::Code(c) => life.ok(c),
            Exit::Signal { .. } => false,
            Exit::Unknown => restart == Restart::Never,
        };
        let (how, ran_text) = (Ended(exit), Age(ran));
        // Essential: the end of going, not a restart, nor a quarantine to announce.
        if restart == Restart::Always && self.ends_going(name) {
            let msg = format_args!("{name}[{pid}]: {how} after {ran_text}");
            fx.log(Level::Warning, msg);
            return Next::Done { ok };
        }
        match restart {
            Restart::Never | Restart::OnFailure if ok => {
                let msg = format_args!("{name}[{pid}]: {how} after {ran_text}: done");
                fx.log(Level::Info, msg);
                return Next::Done { ok: true };
            }
            Restart::Never => {
                let msg = format_args!("{name}[{pid}]: {how} after {ran_text}: failed");
                fx.log(Level::Warning, msg);
                return Next::Done { ok: false };
            }
            _ => {}
        }
        fx.log(
            Level::Warning,
            format_args!("{name}[{pid}]: {how} after {ran_text}"),
        );
        // Gone before it was ready, it failed, however long it ran.
        if ran >= MIN_RUN && !waits {
            self.svc(name).fails = 0;
            return Next::Start(None);
        }
        Next::Start(Some(self.quarantine(name, fx, now)))
    }

    /// The main process `pid` ended: what it left in its cgroup, or its process group, is
    /// stopped first (so that the next copy does not find its port taken), then its run
    /// is over.
    fn leftovers(
        &mut self,
        name: &str,
        pid: Pid,
        since: Instant,
        next: Next,
        fx: &mut impl Effects,
        now: Instant,
    ) {
        if !fx.group_alive(name, pid) {
            return self.over(name, next, fx, now);
        }
        fx.log(
            Level::Notice,
            format_args!("{name}: stopping what its run left behind"),
        );
        let stop = Stop {
            pid: None,
            pgid: pid,
            since,
            next,
        };
        self.signal_stop(name, stop, fx, now);
    }

    /// Nothing of the run is left: the finish hook runs, if the service has one, then
    /// what follows.
    fn over(&mut self, name: &str, next: Next, fx: &mut impl Effects, now: Instant) {
        let svc = &self.services[name];
        let Some(exit) = svc.last.filter(|_| !svc.settings.life().finish.is_empty()) else {
            return self.after(name, next, fx, now);
        };
        let (code, signal) = match exit {
            Exit::Code(c) => (c, 0),
            Exit::Signal { sig, .. } => (256, sig),
            Exit::Unknown => (-1, 0),
        };
        self.svc(name).last = None;
        let launch = Launch::Finish { code, signal };
        match fx.spawn(name, &self.services[name].settings, launch) {
            Ok(pid) => {
                let due = Due::Kill(now + self.services[name].settings.stop_timeout);
                self.set(name, State::Finishing { pid, next, due });
            }
            Err(e) => {
                fx.log(Level::Err, format_args!("{name}: finish: {e}"));
                self.after(name, next, fx, now);
            }
        }
    }

    /// What follows a run, as what is wanted of the service says.
    fn after(&mut self, name: &str, next: Next, fx: &mut impl Effects, now: Instant) {
        match self.services[name].want {
            Want::Gone => {
                self.set(name, State::Idle); // unindexed, and the state file told
                let svc = self.services.remove(name).expect("a service of the table");
                fx.dropped(name);
                self.dropped(&svc.settings.life().after, fx, now);
            }
            Want::Down => self.set(name, State::Idle),
            Want::Up => match next {
                Next::Start(Some(until)) if until > now => {
                    self.set(name, State::Waiting { until }); // its quarantine
                }
                Next::Start(_) => {
                    self.begin(name, fx, now);
                }
                Next::Done { ok } => {
                    self.set(name, State::Done { ok });
                    // An essential service's end starts nothing: going stops.
                    if ok && self.ended.as_ref().is_none_or(|e| e.name != name) {
                        self.up(name, fx, now);
                    }
                }
            },
        }
    }

    /// After a round of reaping: a stopping service whose group has emptied is stopped.
    pub fn check_groups(&mut self, fx: &mut impl Effects, now: Instant) {
        let services = &self.services;
        let done: Vec<(String, Next)> = (self.draining.iter())
            .filter_map(|name| match services[name].state {
                State::Stopping { stop, .. } if !fx.group_alive(name, stop.pgid) => {
                    Some((name.clone(), stop.next))
                }
                _ => None,
            })
            .collect();
        for (name, next) in done {
            self.over(&name, next, fx, now);
        }
    }

    /// Acts on every deadline that has come: quarantines that end, readiness that did not
    /// come in time, stops and finish hooks that take too long.
    pub fn tick(&mut self, fx: &mut impl Effects, now: Instant) {
        while let Some((at, name)) = self.timers.first().cloned() {
            if at > now {
                break;
            }
            match self.services[&name].state {
                // A quarantine over while going stops (kept for what starts after it):
                // nothing starts any more.
                State::Waiting { .. } if self.services[&name].want != Want::Up => {
                    self.set(&name, State::Idle)
                }
                State::Waiting { .. } => {
                    self.begin(&name, fx, now);
                }
                State::Running { pid, since, .. } => self.not_ready(&name, pid, since, fx, now),
                State::Stopping {
                    stop,
                    due: Due::Kill(_),
                } => self.kill(&name, stop, fx, now),
                State::Finishing {
                    pid,
                    next,
                    due: Due::Kill(_),
                } => {
                    let secs = self.services[&name].settings.stop_timeout.as_secs();
                    fx.log(
                        Level::Warning,
                        format_args!(
                            "{name}: finish[{pid}] still running after {secs}s, sending SIGKILL"
                        ),
                    );
                    fx.kill(&name, pid, true);
                    let due = Due::Look(now + AFTER_KILL);
                    self.set(&name, State::Finishing { pid, next, due });
                }
                State::Stopping { .. } | State::Finishing { .. } => self.look(&name, fx, now),
                // No deadline: never in `timers` (see `set`).
                State::Blocked | State::Idle | State::Done { .. } => {
                    self.timers.remove(&(at, name));
                }
            }
        }
    }

    /// Not ready within its `ready_timeout`: stopped, and a failure (its quarantine).
    fn not_ready(
        &mut self,
        name: &str,
        pid: Pid,
        since: Instant,
        fx: &mut impl Effects,
        now: Instant,
    ) {
        let secs = self.services[name]
            .settings
            .life()
            .ready_timeout
            .unwrap_or_default();
        fx.log(
            Level::Warning,
            format_args!(
                "{name}[{pid}]: not ready after {}s: stopping it",
                secs.as_secs()
            ),
        );
        // A one-shot is not tried again: it has failed, as if it had exited so.
        let next = match self.services[name].settings.life().restart {
            Restart::Never => {
                self.essential(name, format!("not ready after {}s", secs.as_secs()), 1);
                Next::Done { ok: false }
            }
            _ => Next::Start(Some(self.quarantine(name, fx, now))),
        };
        let stop = Stop {
            pid: Some(pid),
            pgid: pid,
            since,
            next,
        };
        self.signal_stop(name, stop, fx, now);
    }

    /// A stop that timed out: SIGKILL to whatever is left (its whole cgroup, where it has
    /// one). Then its main process is looked for ([`AFTER_KILL`]), or, gone, the rest is
    /// given a moment to be gone ([`KILL_WAIT`]).
    fn kill(&mut self, name: &str, stop: Stop, fx: &mut impl Effects, now: Instant) {
        let leader = stop.pid.is_some();
        if leader || fx.group_alive(name, stop.pgid) {
            let s = &self.services[name].settings;
            let sig = sys::signal_name(s.stop_signal).unwrap_or("TERM");
            let secs = s.stop_timeout.as_secs();
            fx.log(
                Level::Warning,
                format_args!("{name}: still running {secs}s after SIG{sig}, sending SIGKILL"),
            );
            fx.kill(name, stop.pgid, leader);
        }
        let due = match stop.pid {
            Some(_) => Due::Look(now + AFTER_KILL),
            None if fx.group_alive(name, stop.pgid) => Due::Look(now + KILL_WAIT),
            None => return self.over(name, stop.next, fx, now),
        };
        self.set(name, State::Stopping { stop, due });
    }

    /// SIGKILL was sent [`AFTER_KILL`] ago, and the end of the process is still not seen:
    /// gone (its end missed), it is taken to have ended; else (stuck in the kernel, where
    /// SIGKILL waits) it is looked at again as long. Its main process gone, what is left
    /// [`KILL_WAIT`] after SIGKILL is given up on (a process stuck in the kernel): its run
    /// is over.
    fn look(&mut self, name: &str, fx: &mut impl Effects, now: Instant) {
        let state = self.services[name].state;
        let Some(pid) = state.pid() else {
            let State::Stopping { stop, .. } = state else {
                return; // never: only a stop or a finish hook has a look due
            };
            if fx.group_alive(name, stop.pgid) {
                let secs = KILL_WAIT.as_secs();
                let msg = format_args!(
                    "{name}: still not gone {secs}s after SIGKILL: going on without what is left"
                );
                fx.log(Level::Warning, msg);
            }
            return self.over(name, stop.next, fx, now);
        };
        if fx.gone(pid) {
            let msg = format_args!("{name}[{pid}]: gone, though its end was not seen");
            fx.log(Level::Warning, msg);
            self.exited(pid, Exit::Unknown, fx, now);
            return;
        }
        let secs = AFTER_KILL.as_secs();
        let msg = format_args!("{name}[{pid}]: still there {secs}s after SIGKILL");
        fx.log(Level::Warning, msg);
        let due = Due::Look(now + AFTER_KILL);
        match state {
            State::Stopping { stop, .. } => self.set(name, State::Stopping { stop, due }),
            State::Finishing { pid, next, .. } => {
                self.set(name, State::Finishing { pid, next, due })
            }
            _ => {}
        }
    }

    /// Stops every service, as for SIGTERM to going; the table is empty once all are gone.
    /// A service that others start after is stopped once they are gone.
    pub fn shutdown(&mut self, fx: &mut impl Effects, now: Instant) {
        self.shutting_down = true;
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in &names {
            self.svc(name).want = Want::Gone;
        }
        for name in names {
            if self.services.contains_key(&name) && !self.has_live_dependents(&name) {
                self.stop(&name, fx, now);
            }
        }
    }

    /// A quarantine for a fast failure: its deadline, doubling each time in a row.
    pub(super) fn quarantine(
        &mut self,
        name: &str,
        fx: &mut impl Effects,
        now: Instant,
    ) -> Instant {
        let svc = self.svc(name);
        svc.fails += 1;
        let (fails, delay) = (svc.fails, super::backoff(svc.fails));
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
    pub(super) fn stop(&mut self, name: &str, fx: &mut impl Effects, now: Instant) {
        match self.services[name].state {
            State::Running { pid, since, .. } => {
                fx.log(Level::Notice, format_args!("{name}[{pid}]: stopping"));
                let stop = Stop {
                    pid: Some(pid),
                    pgid: pid,
                    since,
                    next: Next::Start(None),
                };
                self.signal_stop(name, stop, fx, now);
            }
            State::Waiting { .. } | State::Blocked | State::Idle | State::Done { .. } => {
                self.after(name, Next::Start(None), fx, now)
            }
            // Already on its way: what is wanted of it decides what follows.
            State::Stopping { .. } | State::Finishing { .. } => {}
        }
    }

    /// The one stop sequence: the stop signal (SIGTERM unless set), then SIGCONT so that a
    /// stopped process can act on it, to the whole group (or, its leader gone, to what is
    /// left in its cgroup); SIGKILL at the deadline.
    pub(super) fn signal_stop(
        &mut self,
        name: &str,
        stop: Stop,
        fx: &mut impl Effects,
        now: Instant,
    ) {
        let s = &self.services[name].settings;
        let (sig, timeout) = (s.stop_signal, s.stop_timeout);
        let to = if stop.pid.is_some() {
            To::Group
        } else {
            To::Rest
        };
        fx.signal(name, stop.pgid, to, sig);
        fx.signal(name, stop.pgid, to, libc::SIGCONT);
        let due = Due::Kill(now + timeout);
        self.set(name, State::Stopping { stop, due });
    }
}

/// The exit status a shell would give for `exit`: the code, or 128 + the signal; 1 when
/// it is not known (a process adopted after going was killed, which init reaped).
fn status(exit: Exit) -> u8 {
    match exit {
        Exit::Code(c) => c as u8,
        Exit::Signal { sig, .. } => 128u8.wrapping_add(sig as u8),
        Exit::Unknown => 1,
    }
}
