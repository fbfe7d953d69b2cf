//! A new reading of the directory applied to the table — new files start, removed ones
//! stop, changed ones restart (or not, for settings that apply without one) — and, at
//! start-up, what a previous going left: its processes and its finished one-shots.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Adoptable, Change, Due, Effects, Next, Service, State, Stop, Summary, Table, Want};
use crate::config::{Parsed, Restart, Settings};
use crate::fingerprint::Fingerprint;
use crate::log::{Age, Level};

impl Table {
    /// Takes over what a previous going left: the processes (`adopt`) — each whose file is
    /// unchanged runs on, the others are stopped as a reload would — the one-shots that
    /// had finished (`done`: name, fingerprint, success), which are not run again, and the
    /// services whose cgroups hold processes none of which was adopted (`leftovers`: what
    /// a run left, or a run whose main process is gone), which are stopped before they
    /// start.
    pub fn adopt(
        &mut self,
        scan: &BTreeMap<String, Parsed>,
        adopt: BTreeMap<String, Adoptable>,
        done: BTreeMap<String, (Fingerprint, bool)>,
        leftovers: &[String],
        fx: &mut impl Effects,
        now: Instant,
    ) {
        for (name, (fp, ok)) in done {
            if let Some(Ok(s)) = scan.get(&name).filter(|_| !adopt.contains_key(&name)) {
                if fp.matches(s) && s.life().restart != Restart::Always {
                    let mut svc = Service::new(s.clone(), Want::Up);
                    svc.starts = 1;
                    self.services.insert(name.clone(), svc);
                    self.set(&name, State::Done { ok });
                }
            }
        }
        for (name, a) in adopt {
            self.adopt_one(name, a, scan, fx, now);
        }
        for name in leftovers {
            self.stop_leftovers(name, scan, fx, now);
        }
    }

    /// What an earlier going left in the cgroup of `name`, with no main process known: it is
    /// stopped as what a run leaves is, then the service starts (or stays done, or down,
    /// or goes, as its file and the admin say).
    fn stop_leftovers(
        &mut self,
        name: &str,
        scan: &BTreeMap<String, Parsed>,
        fx: &mut impl Effects,
        now: Instant,
    ) {
        let next = match self.services.get(name).map(|s| s.state) {
            Some(State::Done { ok }) => Next::Done { ok },
            Some(_) => return, // adopted: its own run, stopped as any
            None => Next::Start(None),
        };
        if !self.services.contains_key(name) {
            let (settings, want) = match scan.get(name) {
                Some(Ok(s)) => {
                    // Left down by the admin, and the file unchanged since: it stays down.
                    let mark = self.down_marks.remove(name);
                    if mark.is_some_and(|fp| fp.matches(s)) {
                        (s.clone(), Want::Down)
                    } else {
                        fx.mark_down(name, None);
                        (s.clone(), Want::Up)
                    }
                }
                _ => (Box::default(), Want::Gone),
            };
            self.services
                .insert(name.to_string(), Service::new(settings, want));
        }
        let msg = format_args!("{name}: stopping what an earlier going left in its cgroup");
        fx.log(Level::Notice, msg);
        let stop = Stop {
            pid: None,
            pgid: 0,
            since: now,
            next,
        };
        self.signal_stop(name, stop, fx, now);
    }

    fn adopt_one(
        &mut self,
        name: String,
        a: Adoptable,
        scan: &BTreeMap<String, Parsed>,
        fx: &mut impl Effects,
        now: Instant,
    ) {
        let age = Age(now.saturating_duration_since(a.since));
        let (settings, valid) = match scan.get(&name) {
            Some(Ok(s)) => (s.clone(), true),
            _ => (Box::default(), false),
        };
        // Stopped by the admin, and killed (or upgraded) before it had stopped: the stop
        // goes on, unless the file changed since, which lifts it.
        let mark = if valid {
            self.down_marks.remove(&name)
        } else {
            None
        };
        let down = mark.is_some_and(|fp| fp.matches(&settings));
        if mark.is_some() && !down {
            fx.mark_down(&name, None);
        }
        let keep = valid && !down && a.fingerprint.matches(&settings);
        let waits = settings.life().ready.is_some() && !a.ready;
        let ready_by = settings.life().ready_timeout.map(|t| now + t);
        let want = match (valid, down) {
            (false, _) => Want::Gone,
            (true, true) => Want::Down,
            (true, false) => Want::Up,
        };
        let mut svc = Service::new(settings, want);
        svc.starts = 1;
        // Of other settings than the file's: whatever a later state file says of it, it
        // never matches.
        svc.running = if keep { svc.fingerprint } else { 0 };
        self.services.insert(name.clone(), svc);
        if let Some(kill_at) = a.drain {
            // What its last run left, still being stopped: its SIGKILL stays due as it
            // was, and the service starts again (or not, as wanted) once it is gone.
            let pgid = a.pid;
            let msg = format_args!(
                "{name}: adopted what is left of its process group {pgid}, being stopped"
            );
            fx.log(Level::Notice, msg);
            let stop = Stop {
                pid: None,
                pgid,
                since: now,
                next: Next::Start(None),
            };
            let due = Due::Kill(kill_at);
            return self.set(&name, State::Stopping { stop, due });
        }
        let running = State::Running {
            pid: a.pid,
            since: a.since,
            execd: true,
            failed: None,
            // Ready when it was, or, not ready yet, waited for again.
            ready: (!waits).then_some(a.since),
            ready_by: ready_by.filter(|_| waits),
        };
        self.set(&name, running);
        if keep {
            // Its limits, as the file says them, are what its cgroup is known to hold.
            fx.changed(&name, &self.services[&name].settings);
            let how = if waits { ", not ready yet" } else { "" };
            fx.log(
                Level::Notice,
                format_args!("{name}[{}]: adopted, running for {age}{how}", a.pid),
            );
            return;
        }
        let pid = a.pid;
        let msg = match (valid, down) {
            (true, true) => format!("{name}[{pid}]: adopted, still stopping as the admin asked"),
            (true, false) => {
                format!("{name}[{pid}]: adopted, but its file changed since it started: stopping it")
            }
            (false, _) => format!(
                "{name}[{pid}]: adopted, but its file is gone or invalid since it started: stopping it"
            ),
        };
        fx.log(Level::Notice, format_args!("{msg}"));
        self.stop(&name, fx, now);
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
        let mut new = Vec::new();
        for (name, parsed) in scan {
            match parsed {
                Ok(settings) => new.extend(self.apply(name, settings, &mut sum, fx, now)),
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
        self.index_order();
        // Started once every file is read: each waits for what it starts after, in any order.
        for name in new {
            self.begin(&name, fx, now);
        }
        // An `after=` edited (which needs no restart) may have dropped what one waited for.
        let free: Vec<String> = (self.services.iter())
            .filter(|(_, s)| s.want == Want::Up && s.state == State::Blocked)
            .filter(|(name, _)| self.waits_for(name).is_none())
            .map(|(name, _)| name.clone())
            .collect();
        for name in free {
            self.begin(&name, fx, now);
        }
        sum
    }

    /// The valid file of `name` as a reload read it; Some(name) when it is to start.
    fn apply(
        &mut self,
        name: String,
        settings: Box<Settings>,
        sum: &mut Summary,
        fx: &mut impl Effects,
        now: Instant,
    ) -> Option<String> {
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
                return None;
            }
            fx.mark_down(&name, None);
            sum.started += 1;
            self.services
                .insert(name.clone(), Service::new(settings, Want::Up));
            return Some(name);
        };
        // A file back while its old service still stops: it starts once that is gone.
        let returned = svc.want == Want::Gone;
        if returned {
            svc.want = Want::Up;
        }
        sum.started += returned as usize;
        if svc.settings.same_run(&settings) {
            // What applies without a restart; the state file learns the new fingerprint,
            // so that an adoption does not take this process for one of other settings,
            // and so does the admin's stop, which a restart of going would take for lifted.
            let running = svc.running == svc.fingerprint;
            let limits = svc.settings.cgroup_limits() != settings.cgroup_limits();
            let old = svc.fingerprint;
            svc.set_settings(settings);
            if limits {
                fx.changed(&name, &svc.settings);
            }
            if svc.want == Want::Down && svc.fingerprint != old {
                fx.mark_down(&name, Some(svc.fingerprint));
            }
            if matches!(svc.state, State::Done { .. }) {
                // A one-shot done stays done: the state file keeps it under the new print.
                self.changes.push(Change::Done(name));
                return None;
            }
            if running {
                svc.running = svc.fingerprint;
                if let Some((pid, _)) = svc.state.live() {
                    self.changes.push(Change::Began(pid));
                }
            }
            return None;
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
            State::Idle | State::Done { .. } | State::Blocked => Some(name),
            _ => {
                self.stop(&name, fx, now);
                None
            }
        }
    }
}
