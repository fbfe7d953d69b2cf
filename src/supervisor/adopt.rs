//! What a previous going left running, found again: after a `kill -9` (from RUNDIR/state,
//! each process verified by pid and start time) or after an upgrade (from the handover of
//! the going that exec'd this one); and the process groups it was stopping whose leaders
//! were gone. Either way each process is watched from now on — an
//! adopted one by its pidfd, a handed-over child as a child — and its output read again;
//! the table then decides, file by file, which run on.
//!
//! Invariant: a process is adopted only if it is the one that was started: the pidfd is
//! opened before its identity is checked, so a pid recycled meanwhile fails the check, and
//! the state file is believed only as src/state.rs says.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::journal::Journal;
use super::system::System;
use crate::fingerprint::Fingerprint;
use crate::log::Level;
use crate::output;
use crate::service::Adoptable;
use crate::state;
use crate::sys::{self, Pid};
use crate::upgrade::Handover;

pub type Adopted = BTreeMap<String, Adoptable>;

/// One-shots a previous going saw finish: fingerprint of their settings, and success.
pub type Done = BTreeMap<String, (Fingerprint, bool)>;

/// How an adopted process is known to end.
enum Watched {
    /// Still going's child (handed over by an upgrade): reaped as any child.
    Child,
    /// Not going's child: its pidfd says when it ends.
    Pidfd(OwnedFd),
}

/// One process to take: its name, pid, fingerprint, age and readiness, how its end is
/// known and its output pipe.
struct Taken {
    name: String,
    pid: Pid,
    fingerprint: Fingerprint,
    age: Duration,
    ready: bool,
    how: Watched,
    output: Option<OwnedFd>,
}

/// Takes one process into `out`, watched as it says, its output read from now on.
fn take(out: &mut Adopted, sys: &mut System, t: Taken, now: Instant) {
    let Taken {
        name,
        pid,
        fingerprint,
        age,
        ready,
        how,
        output,
    } = t;
    match how {
        Watched::Pidfd(fd) => {
            if !sys.watch_adopted(pid, sys::high(fd)) {
                return;
            }
        }
        Watched::Child => {}
    }
    if let Some(fd) = output {
        sys.read_output_of(pid, &name, fd);
    }
    let since = now.checked_sub(age).unwrap_or(now);
    let a = Adoptable {
        pid,
        since,
        fingerprint,
        ready,
        drain: None,
    };
    out.insert(name, a);
}

/// Takes a process group being stopped whose leader is gone into `out`, unless a process
/// of the service is taken already (its next run: the group's SIGKILL is then not due
/// any more to anyone going knows of) or nothing is left of the group. `ours`: its
/// members are going's children (handed over by an upgrade), else they are watched as
/// an adopted group's (their zombies are init's).
fn take_group(out: &mut Adopted, sys: &mut System, g: state::Group, ours: bool, now: Instant) {
    let left = match ours {
        true => sys::group_alive(g.pgid),
        false => sys::group_has_live(g.pgid),
    };
    // A live process of the group's number would be a new group's leader: ours is gone.
    if out.contains_key(&g.name) || !left || sys::proc_identity(g.pgid).is_some() {
        return;
    }
    if !ours {
        sys.adopt_group(g.pgid);
    }
    let a = Adoptable {
        pid: g.pgid,
        since: now,
        fingerprint: Fingerprint::V2(0),
        ready: false,
        drain: Some(sys::deadline_at(g.kill_at, now, sys::monotonic_ms())),
    };
    out.insert(g.name, a);
}

/// What RUNDIR/state says a killed going left running, as far as it still runs, and the
/// one-shots it saw finish.
pub fn from_state(sys: &mut System, journal: &mut Journal, now: Instant) -> (Adopted, Done) {
    let (entries, done, groups) = match state::read(&sys.rundir, journal.boot()) {
        Ok(read) => {
            let path = sys.rundir.path().join("state");
            for p in read.problems {
                let msg = format_args!("going: {}: {p}", path.display());
                sys.log.log(Level::Err, msg);
            }
            (read.entries, read.done, read.groups)
        }
        Err(why) => {
            let msg = format_args!("going: not adopting anything: {why}");
            sys.log.log(Level::Err, msg);
            return (Adopted::new(), Done::new());
        }
    };
    let mut out = Adopted::new();
    let mut pipes = None; // pipefs's device, learnt once
    for e in entries {
        let Ok(pidfd) = sys::pidfd_open(e.pid) else {
            continue; // gone
        };
        if sys::proc_identity(e.pid) != Some((e.pgid, e.start)) || out.contains_key(&e.name) {
            let (name, pid) = (&e.name, e.pid);
            let msg = format_args!("{name}: pid {pid} is no longer the process going started");
            sys.log.log(Level::Info, msg);
            continue;
        }
        journal.knows(e.pid, e.start);
        let output = match e.pipe {
            0 => None,
            ino => (*pipes.get_or_insert_with(output::pipe_dev))
                .and_then(|dev| output::reopen(e.pid, dev, ino)),
        };
        let t = Taken {
            age: sys::age(e.start).unwrap_or_default(),
            name: e.name,
            pid: e.pid,
            fingerprint: e.fingerprint,
            ready: e.ready,
            how: Watched::Pidfd(pidfd),
            output,
        };
        take(&mut out, sys, t, now);
    }
    for g in groups {
        take_group(&mut out, sys, g, false, now);
    }
    (out, done)
}

/// The processes a going that exec'd this one handed over: its children (now ours, with
/// their output pipes and readiness pipes) and those it had adopted itself (watched by
/// pidfd); and the one-shots it saw finish.
pub fn from_handover(sys: &mut System, h: Handover, now: Instant) -> (Adopted, Done) {
    let mut out = Adopted::new();
    for (pid, fd) in h.ready_fds {
        sys.watch_ready_fd(pid, fd);
    }
    for p in h.procs {
        let how = match p.child {
            true => Watched::Child,
            false => match sys::pidfd_open(p.pid) {
                Ok(fd) => Watched::Pidfd(fd),
                Err(_) => continue, // gone
            },
        };
        let t = Taken {
            ready: h.ready.contains(&p.pid),
            name: p.name,
            pid: p.pid,
            fingerprint: p.fingerprint,
            age: p.age,
            how,
            output: p.output,
        };
        take(&mut out, sys, t, now);
    }
    for (g, ours) in h.groups {
        take_group(&mut out, sys, g, ours, now);
    }
    (out, h.done)
}

/// The services the admin left stopped, from RUNDIR/down: name and settings fingerprint
/// (`v2 FP`, or going 0.1.0's bare `FP`; a later `vN FP` is read as `v2`, which at worst
/// matches nothing, as for the state file).
pub fn down_marks(sys: &System) -> BTreeMap<String, Fingerprint> {
    let Some(down) = sys.rundir.existing_subdir("down") else {
        return BTreeMap::new();
    };
    (down.names().unwrap_or_default().into_iter())
        .filter_map(|name| {
            let bytes = down.read(&name, 64).ok()??;
            let text = std::str::from_utf8(&bytes).ok()?.trim();
            let versioned = text.strip_prefix('v').and_then(|t| t.split_once(' '));
            let fp = match versioned.filter(|(v, _)| v.parse::<u32>().is_ok_and(|v| v >= 2)) {
                Some((_, fp)) => Fingerprint::V2(fp.parse().ok()?),
                None => Fingerprint::V1(text.parse().ok()?),
            };
            Some((name, fp))
        })
        .collect()
}
