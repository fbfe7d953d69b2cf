//! The state file, RUNDIR/state: for every live service process, its name, pid, process
//! group, start time, settings fingerprint and output pipe — what a going started after
//! the previous one was killed needs to adopt the services instead of starting duplicates,
//! and to read their output again.
//!
//! The file is a snapshot — a header line `going-state 2 BOOT_ID`, then the live processes,
//! one line each — followed by the changes since, appended: a line like the snapshot's for
//! a process that started (or whose settings' fingerprint changed), `-PID` for one that
//! ended. Reading replays them in order. So a respawn among 10,000 services appends one
//! line instead of rewriting 600 kB; the snapshot is rewritten once the changes outnumber
//! the live processes. Lines of other kinds start with `+` or `-` and a word: readiness
//! (`+ready PID`), one-shots that finished (`+done NAME FP OK`, `-done NAME`) and process
//! groups being stopped after their leader ended (`+group NAME PGID KILL_AT`, `-group
//! PGID`). A file without the header is going 0.1.0's: its fingerprints are of
//! version 1, and it names no boot. A header of a later version is believed for its boot,
//! and the lines of shapes this going knows are read; the others are skipped.
//!
//! Invariants: a snapshot replaces the file atomically; changes are appended with one
//! write(2), so that a killed going leaves all or none of them; after a failed append the
//! next save is a snapshot. A pid and a start time name a process within one boot only, so
//! a file of another boot adopts nothing; a line that cannot be read costs that line alone.
//! Entry lines keep 0.1.0's shape, so that even that release, run again after a newer
//! one, adopts (and, their fingerprints differing, restarts) instead of duplicating.

use std::fmt::Write as _;
use std::io;

use crate::fingerprint::Fingerprint;
use crate::rundir::{RunDir, READ_MAX};
use crate::sys::Pid;

const FILE: &str = "state";
const HEADER: &str = "going-state";
/// The version this going writes.
const VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub pid: Pid,
    pub pgid: Pid,
    /// Start time of the process, in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start: u64,
    pub fingerprint: Fingerprint,
    /// The inode of its output pipe (0: none), to find that pipe again in /proc.
    pub pipe: u64,
    /// Whether it had said it was ready (a line `+ready PID` of its own).
    pub ready: bool,
}

/// A process group being stopped whose leader is gone (others of it were left): the
/// service's name, the group, and when its SIGKILL is due, in milliseconds of the
/// monotonic clock (which a pid and a boot id leave as meaningful as they are).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub pgid: Pid,
    pub kill_at: u64,
}

/// A change to append: a process that started (or whose entry changed), one that became
/// ready, one that ended; a one-shot that finished (with its settings' fingerprint and
/// whether it succeeded), or no longer counts as finished; a group left by its leader
/// that is being stopped, and one that is gone.
pub enum Change {
    Live(Entry),
    Ready(Pid),
    Ended(Pid),
    Done { name: String, fp: u64, ok: bool },
    Undone(String),
    Draining(Group),
    Drained(Pid),
}

fn line(text: &mut String, e: &Entry) {
    let fp = match e.fingerprint {
        Fingerprint::V2(fp) => fp,
        Fingerprint::V1(_) => unreachable!("going writes version 2 only"),
    };
    let _ = writeln!(
        text,
        "{} {} {} {} {fp} {}",
        e.name, e.pid, e.pgid, e.start, e.pipe
    );
    if e.ready {
        let _ = writeln!(text, "+ready {}", e.pid);
    }
}

/// The lines of one change. Lines other than entries start with `+` or `-` and a word:
/// going 0.1.0, which knows none of them, skips them, and still adopts the entries.
fn change(text: &mut String, c: &Change) {
    let _ = match c {
        Change::Live(e) => return line(text, e),
        Change::Ready(pid) => writeln!(text, "+ready {pid}"),
        Change::Ended(pid) => writeln!(text, "-{pid}"),
        Change::Done { name, fp, ok } => writeln!(text, "+done {name} {fp} {}", *ok as u8),
        Change::Undone(name) => writeln!(text, "-done {name}"),
        Change::Draining(g) => writeln!(text, "+group {} {} {}", g.name, g.pgid, g.kill_at),
        Change::Drained(pgid) => writeln!(text, "-group {pgid}"),
    };
}

/// A snapshot: the file replaced by these entries alone, stamped with this boot.
pub fn write(
    rundir: &RunDir,
    boot: Option<&str>,
    entries: impl Iterator<Item = Change>,
    count: usize,
) -> io::Result<()> {
    let mut text = String::with_capacity(count * 64 + 64);
    let _ = writeln!(text, "{HEADER} {VERSION} {}", boot.unwrap_or("-"));
    for c in entries {
        change(&mut text, &c);
    }
    rundir.replace(FILE, text.as_bytes())
}

/// Appends changes to the file; NotFound when it is not there (the caller then writes a
/// snapshot: appending to nothing would lose the live processes before these).
pub fn append(rundir: &RunDir, changes: impl Iterator<Item = Change>) -> io::Result<()> {
    let mut text = String::new();
    for c in changes {
        change(&mut text, &c);
    }
    rundir.append(FILE, text.as_bytes())
}

/// After a clean stop nothing is left to adopt.
pub fn remove(rundir: &RunDir) -> io::Result<()> {
    rundir.remove(FILE)
}

/// What the state file holds: the live processes it leaves, and a message for each line
/// that could not be read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    pub entries: Vec<Entry>,
    /// One-shots that had finished: fingerprint of their settings, and success.
    pub done: std::collections::BTreeMap<String, (Fingerprint, bool)>,
    /// Groups being stopped whose leaders were gone.
    pub groups: Vec<Group>,
    pub problems: Vec<String>,
}

/// The entries of the state file; none when there is no file. Err when it is not to be
/// believed as a whole (not a regular file of going's own, another boot's), with the
/// reason.
pub fn read(rundir: &RunDir, boot: Option<&str>) -> Result<Read, String> {
    let path = rundir.path().join(FILE);
    let bytes = match rundir.read(FILE, READ_MAX) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(Read::default()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!("{}: a symbolic link", path.display()))
        }
        Err(e) => return Err(format!("{}: {}", path.display(), crate::log::Errno(&e))),
    };
    replay(&bytes, boot).map_err(|why| format!("{}: {why}", path.display()))
}

/// The live processes the snapshot and changes of `bytes` leave, the last entry of each
/// pid winning; in the order they were last written. A header of a version this going
/// does not know costs nothing but its fingerprints: the lines of shapes it knows are
/// read (an entry's process is verified by /proc all the same, and a fingerprint of
/// another encoding matches nothing, so the worst is a restart), the others skipped.
fn replay(bytes: &[u8], boot: Option<&str>) -> Result<Read, String> {
    let mut r = Replay {
        version: 1,
        ..Replay::default()
    };
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for (seq, raw) in body.split(|&b| b == b'\n').enumerate() {
        let l = std::str::from_utf8(raw).unwrap_or("\u{fffd}");
        if let Some((v, theirs)) = header(l).filter(|_| seq == 0) {
            r.version = v.max(VERSION); // a header's fingerprints are never 0.1.0's
            if v != VERSION {
                let msg =
                    format!("format {v} is not this going's ({VERSION}): reading what it can");
                r.out.problems.push(msg);
            }
            match (theirs, boot) {
                (Some(theirs), Some(ours)) if theirs != ours => {
                    return Err("written during another boot".into())
                }
                _ => {}
            }
            continue;
        }
        let understood = match l.strip_prefix('-').map(|p| p.parse::<Pid>()) {
            Some(Ok(pid)) => {
                r.live.remove(&pid);
                true
            }
            Some(Err(_)) => r.mark(b'-', &l[1..]),
            None if l.starts_with('+') => r.mark(b'+', &l[1..]),
            None => match parse(l, r.version) {
                Some(e) => {
                    r.out.done.remove(&e.name);
                    r.live.insert(e.pid, (seq, e));
                    true
                }
                None => false,
            },
        };
        if !understood {
            let shown = crate::output::escape(&raw[..raw.len().min(80)]);
            (r.out.problems).push(format!("line {}: not understood: \"{shown}\"", seq + 1));
        }
    }
    let Replay {
        live,
        groups,
        mut out,
        ..
    } = r;
    let mut entries: Vec<_> = live.into_values().collect();
    entries.sort_by_key(|(seq, _)| *seq);
    out.entries = entries.into_iter().map(|(_, e)| e).collect();
    out.groups = groups.into_values().collect();
    Ok(out)
}

/// What the lines read so far leave.
#[derive(Default)]
struct Replay {
    version: u32,
    /// Live processes by pid, with the number of the line that last said so.
    live: std::collections::BTreeMap<Pid, (usize, Entry)>,
    groups: std::collections::BTreeMap<Pid, Group>,
    out: Read,
}

impl Replay {
    /// A line of a mark, after its `+` or `-` (`sign`): `+ready PID`, `+done NAME FP OK`,
    /// `-done NAME`, `+group NAME PGID KILL_AT`, `-group PGID`; false when it is none.
    fn mark(&mut self, sign: u8, rest: &str) -> bool {
        let w: Vec<&str> = rest.split(' ').collect();
        let fp = |v: &str| match self.version {
            1 => v.parse().ok().map(Fingerprint::V1),
            _ => v.parse().ok().map(Fingerprint::V2),
        };
        let pid = |v: &str| v.parse::<Pid>().ok().filter(|p| *p > 1);
        let name = |n: &&str| crate::config::valid_name(n);
        match (sign, &w[..]) {
            (b'+', ["ready", p]) => {
                // Of a process ended since: nothing to say.
                if let Some((_, e)) = pid(p).and_then(|p| self.live.get_mut(&p)) {
                    e.ready = true;
                }
            }
            (b'+', ["done", n, f, ok @ ("0" | "1")]) if name(n) => {
                let Some(f) = fp(f) else {
                    return false;
                };
                self.out.done.insert(n.to_string(), (f, *ok == "1"));
            }
            (b'-', ["done", n]) if name(n) => {
                self.out.done.remove(*n);
            }
            (b'+', ["group", n, g, at]) if name(n) => {
                let (Some(pgid), Ok(kill_at)) = (pid(g), at.parse()) else {
                    return false;
                };
                let name = n.to_string();
                (self.groups).insert(
                    pgid,
                    Group {
                        name,
                        pgid,
                        kill_at,
                    },
                );
            }
            (b'-', ["group", g]) => match pid(g) {
                Some(pgid) => {
                    self.groups.remove(&pgid);
                }
                None => return false,
            },
            _ => return false,
        }
        true
    }
}

/// The version and boot id (None: `-`) of a header line `going-state VERSION BOOT_ID`
/// (words a later version adds after it are its own). None for any other line, such as
/// an entry of going 0.1.0's for a service named `going-state`: its third word is a
/// process group, a decimal number, which no boot id is.
fn header(line: &str) -> Option<(u32, Option<&str>)> {
    let mut w = line.split(' ');
    if w.next() != Some(HEADER) {
        return None;
    }
    let version = w.next()?.parse().ok()?;
    let boot = w
        .next()
        .filter(|b| !b.is_empty() && !b.bytes().all(|c| c.is_ascii_digit()))?;
    Some((version, (boot != "-").then_some(boot)))
}

fn parse(line: &str, version: u32) -> Option<Entry> {
    let mut w = line.split(' ');
    let entry = Entry {
        name: w
            .next()
            .filter(|n| crate::config::valid_name(n))?
            .to_string(),
        pid: w.next()?.parse().ok().filter(|p| *p > 1)?,
        pgid: w.next()?.parse().ok().filter(|p| *p > 1)?,
        start: w.next()?.parse().ok()?,
        fingerprint: match (version, w.next()?.parse().ok()?) {
            (1, fp) => Fingerprint::V1(fp),
            (_, fp) => Fingerprint::V2(fp),
        },
        // absent in files written by going 0.1.0 before output was reattached
        pipe: w.next().map_or(Some(0), |p| p.parse().ok())?,
        ready: false,
    };
    w.next().is_none().then_some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, pid: Pid, fp: u64) -> Entry {
        Entry {
            name: name.into(),
            pid,
            pgid: pid,
            start: 1234,
            fingerprint: Fingerprint::V2(fp),
            pipe: 7,
            ready: false,
        }
    }

    #[test]
    fn written_then_read_and_junk_costs_its_line_only() {
        let dir = std::env::temp_dir().join(format!("going-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rd = RunDir::open(&dir).unwrap();
        let e = entry("web", 42, 99);
        write(&rd, Some("b1"), std::iter::once(Change::Live(e.clone())), 1).unwrap();
        assert_eq!(
            read(&rd, Some("b1")).unwrap().entries,
            std::slice::from_ref(&e)
        );
        // Changes appended: one ends, one starts, the first's settings change.
        let other = entry("db", 50, 99);
        let changed = entry("web", 42, 100);
        let changes = [
            Change::Live(other.clone()),
            Change::Ended(50),
            Change::Live(other.clone()),
            Change::Live(changed.clone()),
            Change::Ended(7777),
        ];
        append(&rd, changes.into_iter()).unwrap();
        assert_eq!(
            read(&rd, Some("b1")).unwrap().entries,
            [other.clone(), changed]
        );
        append(&rd, std::iter::once(Change::Ended(42))).unwrap();
        assert_eq!(
            read(&rd, Some("b1")).unwrap().entries,
            std::slice::from_ref(&other)
        );
        // Another boot: the pids name other processes now.
        let err = read(&rd, Some("b2")).unwrap_err();
        assert!(err.ends_with("written during another boot"), "{err}");
        // Nothing to append to: the caller must write a snapshot.
        remove(&rd).unwrap();
        assert_eq!(read(&rd, None).unwrap(), Read::default());
        let err = append(&rd, std::iter::once(Change::Ended(42))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn readiness_and_finished_one_shots_are_kept() {
        let r = replay(
            b"going-state 2 b\nweb 42 42 1 1 7\n+ready 42\ndb 50 50 1 1 0\n\
              +done setup 77 1\n+done broken 78 0\n+ready 9999\n-done broken\n",
            Some("b"),
        )
        .unwrap();
        let ready: Vec<(Pid, bool)> = r.entries.iter().map(|e| (e.pid, e.ready)).collect();
        assert_eq!(ready, [(42, true), (50, false)]);
        assert_eq!(
            r.done.into_iter().collect::<Vec<_>>(),
            [("setup".to_string(), (Fingerprint::V2(77), true))]
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        // A one-shot that runs again no longer counts as finished.
        let r = replay(
            b"going-state 2 b\n+done setup 77 1\nsetup 60 60 1 77 0\n",
            None,
        )
        .unwrap();
        assert!(r.done.is_empty());
    }

    #[test]
    fn groups_left_by_their_leader_are_kept_until_gone() {
        let g = |name: &str, pgid, kill_at| Group {
            name: name.into(),
            pgid,
            kill_at,
        };
        let mut text = String::from("going-state 2 b\nweb 42 42 1 1 7\n");
        for c in [
            Change::Ended(42),
            Change::Draining(g("web", 42, 9000)),
            Change::Draining(g("db", 50, 8000)),
            Change::Drained(50),
        ] {
            change(&mut text, &c);
        }
        let r = replay(text.as_bytes(), Some("b")).unwrap();
        assert!(r.entries.is_empty());
        assert_eq!(r.groups, [g("web", 42, 9000)]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        for junk in [
            "+group web 42",
            "+group ../x 42 1",
            "+group web 1 1",
            "-group x",
        ] {
            let r = replay(format!("going-state 2 b\n{junk}\n").as_bytes(), None).unwrap();
            assert_eq!(r.problems.len(), 1, "{junk}");
        }
    }

    #[test]
    fn a_bad_line_or_byte_costs_that_line_only() {
        let r = replay(
            b"going-state 2 b\nweb 42 42 1 1 7\n\xff\xfe\ndb 50 50 1 1 0\nweb 43 x\n-",
            Some("b"),
        )
        .unwrap();
        assert_eq!(
            r.entries.iter().map(|e| e.pid).collect::<Vec<_>>(),
            [42, 50]
        );
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(r.problems[0].starts_with("line 3: not understood"));
        for junk in [
            "",
            "web 42",
            "../x 42 42 1 1",
            "web 1 1 1 1",
            "web 42 42 1 1 7 extra",
            "web 42 42 1 1 x",
            "web x 42 1 1",
        ] {
            assert_eq!(parse(junk, 2), None, "{junk:?}");
        }
    }

    #[test]
    fn a_later_format_is_read_as_far_as_known_and_its_boot_believed() {
        let r = replay(
            b"going-state 3 b more words\nweb 42 42 1 7 0\n+new thing\n~other\n",
            Some("b"),
        )
        .unwrap();
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.entries[0].fingerprint, Fingerprint::V2(7));
        assert!(r.problems[0].starts_with("format 3 is not this going's (2)"));
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        let err = replay(b"going-state 3 b\nweb 42 42 1 7 0\n", Some("c")).unwrap_err();
        assert_eq!(err, "written during another boot");
    }

    #[test]
    fn a_service_named_going_state_is_no_header() {
        // going 0.1.0 wrote no header: its first line may be an entry of that service.
        let r = replay(b"going-state 42 42 1234 99 7\nweb 50 50 1 5\n", Some("b")).unwrap();
        let names: Vec<&str> = r.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["going-state", "web"]);
        assert_eq!(r.entries[0].fingerprint, Fingerprint::V1(99));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(header("going-state 2 -"), Some((2, None)));
        assert_eq!(header("going-state 2 5e0c-a1"), Some((2, Some("5e0c-a1"))));
        assert_eq!(header("going-state 2 42 1 5"), None);
        assert_eq!(header("going-state x b"), None);
    }

    #[test]
    fn a_file_of_going_0_1_0_is_read_with_its_fingerprints() {
        let r = replay(b"web 42 42 1234 99 7\ndb 50 50 1 5\n", Some("b")).unwrap();
        assert_eq!(r.entries[0].fingerprint, Fingerprint::V1(99));
        assert_eq!(
            (r.entries[1].fingerprint, r.entries[1].pipe),
            (Fingerprint::V1(5), 0)
        );
        assert!(r.problems.is_empty());
    }
}
