//! The state file, RUNDIR/state: for every live service process, its name, pid, process
//! group, start time, settings fingerprint and output pipe — what a going started after
//! the previous one was killed needs to adopt the services instead of starting duplicates,
//! and to read their output again.
//!
//! The file is a snapshot of the live processes, one line each, followed by the changes
//! since, appended: a line like the snapshot's for a process that started (or whose
//! settings' fingerprint changed), `-PID` for one that ended. Reading replays them in
//! order. So a respawn among 10,000 services appends one line instead of rewriting
//! 600 kB; the snapshot is rewritten once the changes outnumber the live processes.
//!
//! Invariants: a snapshot replaces the file atomically (a temporary file, then rename);
//! changes are appended with one write(2), so that a killed going leaves all or none of
//! them; after a failed append the next save is a snapshot. The file is only
//! believed when RUNDIR and the file belong to going's uid and nobody else may write them,
//! and an entry only when the process's start time still matches: a forged or stale file
//! cannot make going adopt, or kill, a process it did not start.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::sys::{self, Pid};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: std::borrow::Cow<'a, str>,
    pub pid: Pid,
    pub pgid: Pid,
    /// Start time of the process, in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start: u64,
    pub fingerprint: u64,
    /// The inode of its output pipe (0: none), to find that pipe again in /proc.
    pub pipe: u64,
}

/// Whether `path` belongs to going's uid and only it may write it.
pub fn trusted(path: &Path) -> Result<(), String> {
    let meta = fs::symlink_metadata(path)
        .map_err(|e| format!("{}: {}", path.display(), crate::log::Errno(&e)))?;
    if meta.uid() != sys::geteuid() {
        return Err(format!(
            "{} belongs to uid {}, not going's",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} may be written by others (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// A change to append: a process that started (or whose entry changed), or one that ended.
pub enum Change<'a> {
    Live(Entry<'a>),
    Ended(Pid),
}

fn line(text: &mut String, e: &Entry) {
    let _ = writeln!(
        text,
        "{} {} {} {} {} {}",
        e.name, e.pid, e.pgid, e.start, e.fingerprint, e.pipe
    );
}

/// A snapshot: the file replaced by these entries alone.
pub fn write<'a>(
    rundir: &Path,
    entries: impl Iterator<Item = Entry<'a>>,
    count: usize,
) -> io::Result<()> {
    let mut text = String::with_capacity(count * 64);
    for e in entries {
        line(&mut text, &e);
    }
    let tmp = rundir.join(".state.new");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    io::Write::write_all(&mut f, text.as_bytes())?;
    fs::rename(&tmp, rundir.join("state"))
}

/// Appends changes to the file; NotFound when it is not there (the caller then writes a
/// snapshot: appending to nothing would lose the live processes before these).
pub fn append<'a>(rundir: &Path, changes: impl Iterator<Item = Change<'a>>) -> io::Result<()> {
    let mut text = String::new();
    for c in changes {
        match c {
            Change::Live(e) => line(&mut text, &e),
            Change::Ended(pid) => {
                let _ = writeln!(text, "-{pid}");
            }
        }
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(rundir.join("state"))?;
    match io::Write::write(&mut f, text.as_bytes())? {
        n if n == text.len() => Ok(()),
        _ => Err(io::Error::from_raw_os_error(libc::ENOSPC)), // a torn line: snapshot next
    }
}

/// The entries of the state file; none when there is no file. Err when it is not to be
/// believed (its owner or mode), with the reason.
pub fn read(rundir: &Path) -> Result<Vec<Entry<'static>>, String> {
    let path = rundir.join("state");
    if !path.exists() {
        return Ok(Vec::new());
    }
    trusted(rundir)?;
    trusted(&path)?;
    let text = fs::read_to_string(&path)
        .map_err(|e| format!("{}: {}", path.display(), crate::log::Errno(&e)))?;
    Ok(replay(&text))
}

/// The live processes the snapshot and changes of `text` leave, the last entry of each
/// pid winning; in the order they were last written.
fn replay(text: &str) -> Vec<Entry<'static>> {
    let mut live = std::collections::BTreeMap::new();
    for (seq, l) in text.lines().enumerate() {
        if let Some(pid) = l.strip_prefix('-') {
            if let Ok(pid) = pid.parse::<Pid>() {
                live.remove(&pid);
            }
        } else if let Some(e) = parse(l) {
            live.insert(e.pid, (seq, e));
        }
    }
    let mut out: Vec<_> = live.into_values().collect();
    out.sort_by_key(|(seq, _)| *seq);
    out.into_iter().map(|(_, e)| e).collect()
}

fn parse(line: &str) -> Option<Entry<'static>> {
    let mut w = line.split(' ');
    let entry = Entry {
        name: w
            .next()
            .filter(|n| crate::config::valid_name(n))?
            .to_string()
            .into(),
        pid: w.next()?.parse().ok().filter(|p| *p > 1)?,
        pgid: w.next()?.parse().ok().filter(|p| *p > 1)?,
        start: w.next()?.parse().ok()?,
        fingerprint: w.next()?.parse().ok()?,
        // absent in files written by going 0.1.0 before output was reattached
        pipe: w.next().map_or(Some(0), |p| p.parse().ok())?,
    };
    w.next().is_none().then_some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_read_and_junk_ignored() {
        let dir = std::env::temp_dir().join(format!("going-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let e = Entry {
            name: "web".into(),
            pid: 42,
            pgid: 42,
            start: 1234,
            fingerprint: 99,
            pipe: 7,
        };
        write(&dir, std::iter::once(e.clone()), 1).unwrap();
        assert_eq!(read(&dir).unwrap(), std::slice::from_ref(&e));
        assert_eq!(parse("web 42 42 1234 99").unwrap().pipe, 0);
        // Changes appended: one ends, one starts, the first's settings change.
        let other = Entry {
            name: "db".into(),
            pid: 50,
            ..e.clone()
        };
        let changed = Entry {
            fingerprint: 100,
            ..e.clone()
        };
        let changes = [
            Change::Live(other.clone()),
            Change::Ended(50),
            Change::Live(other.clone()),
            Change::Live(changed.clone()),
            Change::Ended(7777),
        ];
        append(&dir, changes.into_iter()).unwrap();
        assert_eq!(read(&dir).unwrap(), [other.clone(), changed]);
        append(&dir, std::iter::once(Change::Ended(42))).unwrap();
        assert_eq!(read(&dir).unwrap(), [other]);
        // Nothing to append to: the caller must write a snapshot.
        fs::remove_file(dir.join("state")).unwrap();
        let err = append(&dir, std::iter::once(Change::Ended(42))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        write(&dir, std::iter::once(e.clone()), 1).unwrap();
        // A torn line (going killed in the middle of a snapshot's write is impossible, but a
        // full disk may cut an append) costs that line only.
        assert_eq!(
            replay("web 42 42 1 1 7\n-4\ndb 50 50 1 1\n-"),
            replay("web 42 42 1 1 7\ndb 50 50 1 1\n")
        );
        for junk in [
            "",
            "web 42",
            "../x 42 42 1 1",
            "web 1 1 1 1",
            "web 42 42 1 1 7 extra",
            "web 42 42 1 1 x",
            "web x 42 1 1",
        ] {
            assert_eq!(parse(junk), None, "{junk:?}");
        }
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert!(read(&dir).unwrap_err().contains("may be written by others"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
