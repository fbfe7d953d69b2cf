//! The state file, RUNDIR/state: for every live service process, its name, pid, process
//! group, start time, settings fingerprint and output pipe — what a going started after
//! the previous one was killed needs to adopt the services instead of starting duplicates,
//! and to read their output again.
//!
//! Invariants: the file is replaced atomically (a temporary file, then rename). It is only
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

pub fn write<'a>(
    rundir: &Path,
    entries: impl Iterator<Item = Entry<'a>>,
    count: usize,
) -> io::Result<()> {
    let mut text = String::with_capacity(count * 64);
    for e in entries {
        let _ = writeln!(
            text,
            "{} {} {} {} {} {}",
            e.name, e.pid, e.pgid, e.start, e.fingerprint, e.pipe
        );
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
    Ok(text.lines().filter_map(parse).collect())
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
        assert_eq!(read(&dir).unwrap(), [e]);
        assert_eq!(parse("web 42 42 1234 99").unwrap().pipe, 0);
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
