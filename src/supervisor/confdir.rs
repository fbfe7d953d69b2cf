//! The lock on CONFDIR: two goings given one CONFDIR and different RUNDIRs would both run
//! every service. flock(2) on the directory itself, taken again when the directory at the
//! path is another one (made anew, or a symbolic link pointed elsewhere), and handed over
//! on an upgrade. Also how a lock is taken at start-up (RUNDIR's too): see [`take`].

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::sys;

#[derive(Default)]
pub struct ConfLock {
    pub held: Option<File>,
}

impl ConfLock {
    /// Locks the directory `confdir` names now, unless that is the one already locked; Ok
    /// too when there is no directory to lock (the scan says why). Err names the going
    /// that holds it. `starting`: at going's start, where a lock a dead going left is
    /// waited for (see [`take`]); the loop never waits.
    pub fn take(&mut self, confdir: &Path, starting: bool) -> Result<(), String> {
        let Ok(meta) = fs::metadata(confdir) else {
            // Gone: let go of it, so that its inode (and inotify's watch on it) can go too.
            self.held = None;
            return Ok(());
        };
        let same = |f: &File| {
            f.metadata()
                .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
        };
        if self.held.as_ref().is_some_and(same) || !meta.is_dir() {
            return Ok(());
        }
        let Some(dir) = File::open(confdir).ok().filter(same) else {
            return Ok(()); // replaced meanwhile: the next reload looks again
        };
        if !take(&dir, confdir, starting) {
            return Err(format!(
                "{} is supervised by another going{}",
                confdir.display(),
                held_by(&meta)
            ));
        }
        self.held = Some(dir);
        Ok(())
    }
}

/// How long a lock left by a going that died is waited for: the children it had just
/// forked hold it until their exec, which takes a moment.
const LEFTOVER: Duration = Duration::from_secs(5);

/// Takes the flock(2) on `file` (at `path`): true when it is ours. A lock whose taker is
/// gone is held by no going but by a child it forked and that has not exec'd yet (the lock
/// is close-on-exec, and a kill -9 can come between fork and exec): it is waited for,
/// up to [`LEFTOVER`], for the close that releases it, which inotify tells.
pub fn take(file: &File, path: &Path, wait: bool) -> bool {
    if file.try_lock().is_ok() {
        return true;
    }
    if !wait {
        return false;
    }
    let held_by_the_dead = file.metadata().is_ok_and(|m| {
        let takers = sys::lock_holders(&m);
        let gone =
            |pid| matches!(sys::kill(pid, 0), Err(e) if e.raw_os_error() == Some(libc::ESRCH));
        !takers.is_empty() && takers.into_iter().all(gone)
    });
    if !held_by_the_dead {
        return false;
    }
    let Ok(mut ino) = inotify::Inotify::init() else {
        return false;
    };
    let closed = inotify::WatchMask::CLOSE_WRITE | inotify::WatchMask::CLOSE_NOWRITE;
    if ino.watches().add(path, closed).is_err() {
        return false;
    }
    let Ok(epoll) = sys::Epoll::new() else {
        return false;
    };
    if epoll.add(ino.as_raw_fd(), 0).is_err() {
        return false;
    }
    let deadline = Instant::now() + LEFTOVER;
    let mut buf = [0u8; 1024];
    loop {
        // Tried again after each close (the watch is in place before the first try).
        if file.try_lock().is_ok() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut ev = [sys::NO_EVENT];
        if left.is_zero() || epoll.wait(&mut ev, left.as_millis() as i32 + 1).is_err() {
            return false;
        }
        let _ = ino.read_events(&mut buf); // drained; what matters is the next try
    }
}

/// " (pid N: its command line)" for the process holding a lock on this file, or nothing.
pub fn held_by(meta: &fs::Metadata) -> String {
    let me = sys::getpid();
    let Some(pid) = sys::lock_holders(meta).into_iter().find(|&p| p != me) else {
        return String::new();
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = (cmdline.split(|&b| b == 0))
        .filter(|w| !w.is_empty())
        .map(crate::output::escape)
        .collect();
    match words.is_empty() {
        true => format!(" (pid {pid})"),
        false => format!(" (pid {pid}: {})", words.join(" ")),
    }
}
