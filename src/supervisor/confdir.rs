//! The lock on CONFDIR: two goings given one CONFDIR and different RUNDIRs would both run
//! every service. flock(2) on the directory itself, which needs no file in it. But anyone
//! who may read the directory may take that lock first, so a lock held by processes of
//! other users alone — no going's: a going runs as root or as CONFDIR's owner — does not
//! keep going off CONFDIR: going then locks CONFDIR/.going.lock, which only CONFDIR's
//! owner can make, and which nobody else can open to lock (mode 0600). Once that file is
//! there, every going locks it too. Both are taken again when the directory at the path is
//! another one (made anew, or a symbolic link pointed elsewhere), and handed over on an
//! upgrade. Also how a lock is taken at start-up (RUNDIR's too): see [`take`].
//!
//! Invariant: two goings never both hold CONFDIR. Each that takes the directory's lock
//! then looks for the file; each that takes the file's for want of the directory's then
//! looks at the directory's holders again: of two goings racing, one sees the other.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::log::Errno;
use crate::sys::{self, Pid};

/// The lock file, for when the directory's lock is held by others than goings.
pub const FILE: &str = ".going.lock";

#[derive(Default)]
pub struct ConfLock {
    /// The directory CONFDIR was when it was last locked.
    dir: Option<File>,
    /// Whether `dir` is flocked by going (else others hold that lock).
    dir_locked: bool,
    /// CONFDIR/.going.lock, flocked: there, or made when others held the directory's lock.
    file: Option<File>,
}

impl ConfLock {
    /// The locks a going that exec'd this one handed over: the directory, flocked again
    /// (which its own lock allows; a lock others took meanwhile does not), and the file.
    pub fn handed_over(dir: Option<OwnedFd>, file: Option<OwnedFd>) -> ConfLock {
        let dir = dir.map(File::from);
        let dir_locked = dir.as_ref().is_some_and(|d| d.try_lock().is_ok());
        let file = file.map(File::from);
        ConfLock {
            dir,
            dir_locked,
            file,
        }
    }

    /// The fds to hand over on an upgrade: the directory and the file, as held.
    pub fn fds(&self) -> (Option<i32>, Option<i32>) {
        let fd = |f: &Option<File>| f.as_ref().map(|f| f.as_raw_fd());
        (fd(&self.dir), fd(&self.file))
    }

    /// Locks the directory `confdir` names now, unless that is the one already locked; Ok
    /// too when there is no directory to lock (the scan says why), with a warning to log
    /// when going holds it without keeping another going off (see [`Self::lock`]). Err
    /// names the going that holds it. `starting`: at going's start, where a lock file a
    /// dead going left is waited for (see [`take`]; the directory's lock, which anyone may
    /// hold, never is); the loop never waits.
    pub fn take(&mut self, confdir: &Path, starting: bool) -> Result<Option<String>, String> {
        let Ok(meta) = fs::metadata(confdir) else {
            // Gone: let go of it, so that its inode (and inotify's watch on it) can go too.
            *self = ConfLock::default();
            return Ok(None);
        };
        let same = |f: &File| {
            f.metadata()
                .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
        };
        if !meta.is_dir() {
            return Ok(None);
        }
        if self.dir.as_ref().is_some_and(same) && self.file_in_place() {
            if !self.dir_locked {
                // Its holders may have let go: then it is going's again, for goings that
                // look at the directory's lock alone (those before the file).
                self.dir_locked = self.dir.as_ref().is_some_and(|d| d.try_lock().is_ok());
            }
            return Ok(None);
        }
        let Some(dir) = File::open(confdir).ok().filter(same) else {
            return Ok(None); // replaced meanwhile: the next reload looks again
        };
        let taken = Self::lock(dir, confdir, &meta, starting)?;
        *self = taken.0; // the previous directory's locks are let go
        Ok(taken.1)
    }

    /// Whether the lock file held (if any) is still the one at its name: a file removed
    /// and made anew would let another going lock it.
    fn file_in_place(&self) -> bool {
        let (Some(dir), Some(file)) = (&self.dir, &self.file) else {
            return true;
        };
        let at = sys::Dir::from_file(dir).and_then(|d| d.stat_at(FILE));
        let held = file.metadata();
        matches!((at, held), (Ok(a), Ok(h)) if (a.dev(), a.ino()) == (h.dev(), h.ino()))
    }

    /// The locks on the directory `dir` (of `meta`, at `path`): its own, and the file's
    /// when the file is there or others than goings hold the directory's. A warning when
    /// the directory's lock is others' and the file cannot be had (CONFDIR read-only,
    /// say): going runs then, as other users must not keep it from running, but another
    /// going on CONFDIR would not be refused.
    fn lock(
        dir: File,
        path: &Path,
        meta: &fs::Metadata,
        starting: bool,
    ) -> Result<(ConfLock, Option<String>), String> {
        let refused =
            |who: String| format!("{} is supervised by another going{who}", path.display());
        // Never waited for: anyone may hold it (see [`holders`] for a going that died).
        let others = match dir.try_lock().is_ok() {
            true => None,
            false => match holders(meta) {
                Holders::Going(who) => return Err(refused(who)),
                Holders::Others(who) => Some(who),
            },
        };
        let dir_locked = others.is_none();
        let mut warning = None;
        let file = match lock_file(&dir, path, meta, others.is_some(), starting) {
            Ok(file) => file,
            Err(FileError::Held(who)) => return Err(refused(who)),
            Err(FileError::Unusable(why)) => {
                let p = path.display();
                warning = Some(match &others {
                    Some(who) => format!(
                        "going: {p}: its lock is held by no going but{who}, and {why}; \
                         another going given it would not be refused"
                    ),
                    None => format!(
                        "going: {p}: {why}; the directory's lock alone keeps other goings off"
                    ),
                });
                None
            }
        };
        if let (Some(who), Some(_)) = (&others, &file) {
            // A going may have taken the directory's lock since its holders let go: it
            // did not see the file then, so it is seen now.
            if let Holders::Going(who) = holders(meta) {
                return Err(refused(who));
            }
            warning = Some(format!(
                "going: {}: its lock is held by no going but{who}: {} keeps other goings off instead",
                path.display(),
                path.join(FILE).display()
            ));
        }
        let lock = ConfLock {
            dir: Some(dir),
            dir_locked,
            file,
        };
        Ok((lock, warning))
    }
}

/// Who holds a lock going was refused.
enum Holders {
    /// A going, or what could be one (a process of root's or going's user): " (pid N:
    /// its command line)".
    Going(String),
    /// Only processes of other users, named the same way (or nothing).
    Others(String),
}

/// Who holds the flock on the file of `meta`, from the process that took it, as
/// /proc/locks names it: a going holds its lock in its own process for as long as it runs
/// (an upgrade keeps the pid), so a lock is a going's only when its taker still holds it
/// and runs as root or as going's user (real and effective uid both). No other process is
/// looked at, so that this costs the same on a machine of 10,000 processes: a lock passed
/// on to another process (its taker gone, or its fd closed) is no going's. A going that
/// died leaves its lock so to the children it had just forked, until their exec: those
/// hold RUNDIR's lock too, which start-up waits for first (see [`take`]), and were they
/// still to hold this one, going would only lock the file too.
fn holders(meta: &fs::Metadata) -> Holders {
    let me = sys::geteuid();
    let may_be_going = |ruid: u32, euid: u32| [ruid, euid].iter().all(|&u| u == 0 || u == me);
    let takers = sys::lock_holders(meta);
    let held = (takers.iter()).find_map(|&p| sys::flock_holder(p, meta));
    match (held, takers.first()) {
        (Some((pid, ruid, euid)), _) if may_be_going(ruid, euid) => Holders::Going(who(pid, None)),
        (Some((pid, _, euid)), _) => Holders::Others(who(pid, Some(euid))),
        (None, Some(pid)) => Holders::Others(format!(
            " (taken by pid {pid}, held since by another process)"
        )),
        (None, None) => Holders::Others(String::new()),
    }
}

/// Why the lock file could not be used.
enum FileError {
    /// Another going holds it: " (pid N: its command line)".
    Held(String),
    /// It could not be made or opened, or is not going's own and private.
    Unusable(String),
}

/// CONFDIR/.going.lock, flocked: opened if it is there, made (mode 0600) if `make`; None
/// when it is not there and not to be made.
fn lock_file(
    dir: &File,
    path: &Path,
    meta: &fs::Metadata,
    make: bool,
    starting: bool,
) -> Result<Option<File>, FileError> {
    let file_path = path.join(FILE);
    let unusable = |why: String| FileError::Unusable(format!("{}: {why}", file_path.display()));
    if make {
        // Made only in a CONFDIR that is going's own (else the scan refuses it anyway).
        crate::config::ours(meta).map_err(|why| unusable(format!("not made: CONFDIR is {why}")))?;
    }
    let flags = libc::O_RDWR | libc::O_NONBLOCK | if make { libc::O_CREAT } else { 0 };
    let dir = sys::Dir::from_file(dir).map_err(|e| unusable(Errno(&e).to_string()))?;
    let file = match dir.open_at(FILE, flags, 0o600) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !make => return Ok(None),
        Err(e) => return Err(unusable(format!("unable to open: {}", Errno(&e)))),
    };
    let m = file
        .metadata()
        .map_err(|e| unusable(Errno(&e).to_string()))?;
    if !m.is_file() {
        return Err(unusable("not a regular file".into()));
    }
    crate::config::ours(&m).map_err(unusable)?;
    if m.mode() & 0o077 != 0 {
        // Others could open it, and lock it first.
        let why = format!(
            "readable by group or others (mode {:04o})",
            m.mode() & 0o7777
        );
        return Err(unusable(why));
    }
    if !take(&file, &file_path, starting) {
        return Err(FileError::Held(held_by(&m)));
    }
    Ok(Some(file))
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
    match sys::lock_holders(meta).into_iter().find(|&p| p != me) {
        Some(pid) => who(pid, None),
        None => String::new(),
    }
}

/// " (pid N: its command line)", or " (pid N)" when it cannot be read; with its `uid`
/// after the pid, if given.
fn who(pid: Pid, uid: Option<u32>) -> String {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = (cmdline.split(|&b| b == 0))
        .filter(|w| !w.is_empty())
        .map(crate::output::escape)
        .collect();
    let uid = uid.map_or(String::new(), |u| format!(", uid {u}"));
    match words.is_empty() {
        true => format!(" (pid {pid}{uid})"),
        false => format!(" (pid {pid}{uid}: {})", words.join(" ")),
    }
}
