//! What a previous going left running, found again: after a `kill -9` (from RUNDIR/state,
//! each process verified by pid and start time) or after an upgrade (from the handover of
//! the going that exec'd this one). Either way each process is watched from now on — an
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

/// How an adopted process is known to end.
enum Watched {
    /// Still going's child (handed over by an upgrade): reaped as any child.
    Child,
    /// Not going's child: its pidfd says when it ends.
    Pidfd(OwnedFd),
}

/// Takes one process into `out`, watched as `how`, its output read from `output` on.
#[allow(clippy::too_many_arguments)]
fn take(
    out: &mut Adopted,
    sys: &mut System,
    name: String,
    pid: Pid,
    fingerprint: Fingerprint,
    age: Duration,
    how: Watched,
    output: Option<OwnedFd>,
    now: Instant,
) {
    if let Watched::Pidfd(fd) = how {
        if !sys.watch_adopted(pid, fd) {
            return;
        }
    }
    if let Some(fd) = output {
        sys.read_output_of(pid, &name, fd);
    }
    let since = now.checked_sub(age).unwrap_or(now);
    let a = Adoptable {
        pid,
        since,
        fingerprint,
    };
    out.insert(name, a);
}

/// What RUNDIR/state says a killed going left running, as far as it still runs.
pub fn from_state(sys: &mut System, journal: &mut Journal, now: Instant) -> Adopted {
    let entries = match state::read(&sys.rundir, journal.boot()) {
        Ok(read) => {
            let path = sys.rundir.path().join("state");
            for p in read.problems {
                sys.log
                    .log(Level::Err, format_args!("going: {}: {p}", path.display()));
            }
            read.entries
        }
        Err(why) => {
            let msg = format_args!("going: not adopting anything: {why}");
            sys.log.log(Level::Err, msg);
            return Adopted::new();
        }
    };
    let mut out = Adopted::new();
    let mut pipes = None; // pipefs's device, learnt once
    for e in entries {
        let Ok(pidfd) = sys::pidfd_open(e.pid) else {
            continue; // gone
        };
        if sys::proc_identity(e.pid) != Some((e.pgid, e.start)) || out.contains_key(&e.name) {
            sys.log.log(
                Level::Info,
                format_args!(
                    "{}: pid {} is no longer the process going started",
                    e.name, e.pid
                ),
            );
            continue;
        }
        journal.knows(e.pid, e.start);
        let output = match e.pipe {
            0 => None,
            ino => (*pipes.get_or_insert_with(output::pipe_dev))
                .and_then(|dev| output::reopen(e.pid, dev, ino)),
        };
        let age = sys::age(e.start).unwrap_or_default();
        let how = Watched::Pidfd(pidfd);
        take(
            &mut out,
            sys,
            e.name,
            e.pid,
            e.fingerprint,
            age,
            how,
            output,
            now,
        );
    }
    out
}

/// The processes a going that exec'd this one handed over: its children (now ours, with
/// their output pipes) and those it had adopted itself (watched by pidfd).
pub fn from_handover(sys: &mut System, h: Handover, now: Instant) -> Adopted {
    let mut out = Adopted::new();
    for p in h.procs {
        let how = match p.child {
            true => Watched::Child,
            false => match sys::pidfd_open(p.pid) {
                Ok(fd) => Watched::Pidfd(fd),
                Err(_) => continue, // gone
            },
        };
        take(
            &mut out,
            sys,
            p.name,
            p.pid,
            p.fingerprint,
            p.age,
            how,
            p.output,
            now,
        );
    }
    out
}

/// The services the admin left stopped, from RUNDIR/down: name and settings fingerprint
/// (`v2 FP`, or going 0.1.0's bare `FP`).
pub fn down_marks(sys: &System) -> BTreeMap<String, Fingerprint> {
    let Some(down) = sys.rundir.existing_subdir("down") else {
        return BTreeMap::new();
    };
    (down.names().unwrap_or_default().into_iter())
        .filter_map(|name| {
            let bytes = down.read(&name, 64).ok()??;
            let text = std::str::from_utf8(&bytes).ok()?.trim();
            let fp = match text.strip_prefix("v2 ") {
                Some(fp) => Fingerprint::V2(fp.parse().ok()?),
                None => Fingerprint::V1(text.parse().ok()?),
            };
            Some((name, fp))
        })
        .collect()
}
