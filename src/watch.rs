//! Noticing changes to CONFDIR: an inotify watch on the directory — while it is missing, a
//! watch on its parent instead, to see it come back — and the settle delay that turns a
//! burst of events (a `cp` of ten files, an editor's save) into one reload. The parent is
//! not watched while CONFDIR exists: every file created in /etc would wake going.
//!
//! Invariant: any event that can change what the directory holds sets a due time; the
//! loop rescans the whole directory then, so merged or overflowed events lose nothing.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::config::valid_name;

/// Quiet time after the last event before a reload.
const SETTLE: Duration = Duration::from_millis(5);
/// The longest a burst of events, or a file created and still being written, postpones it.
const MAX_DELAY: Duration = Duration::from_secs(1);

pub struct Watch {
    inotify: Inotify,
    dir: PathBuf,
    name: OsString,
    dir_wd: Option<WatchDescriptor>,
    parent_wd: Option<WatchDescriptor>,
    /// Service files created in this burst and not yet closed after writing.
    writing: Vec<OsString>,
    burst: Option<Instant>,
    due: Option<Instant>,
    /// Whether the next reload reads every file (SIGHUP, start-up, a retry), or only
    /// those whose stamps changed (inotify).
    full: bool,
    /// How each file looked when last read.
    pub stamps: std::collections::BTreeMap<String, crate::config::Stamp>,
    buf: Vec<u8>,
}

impl Watch {
    pub fn new(dir: &Path) -> io::Result<Watch> {
        let inotify = Inotify::init()?;
        let mut w = Watch {
            inotify,
            dir: dir.to_owned(),
            name: dir.file_name().unwrap_or(OsStr::new("")).to_owned(),
            dir_wd: None,
            parent_wd: None,
            writing: Vec::new(),
            burst: None,
            due: None,
            full: true,
            stamps: Default::default(),
            buf: vec![0; 4096],
        };
        w.rewatch();
        Ok(w)
    }

    pub fn fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }

    /// When the next reload is due, if one is.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// A reload at once, of every file (SIGHUP, start-up).
    pub fn request(&mut self, now: Instant) {
        self.due = Some(now);
        self.full = true;
    }

    /// A reload of every file at `at` at the latest (a retry after a transient failure).
    pub fn retry(&mut self, at: Instant) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
        self.full = true;
    }

    /// The reload is happening: forget the burst, and watch the directory again if needed.
    /// True when every file is to be read: the stamps are then forgotten.
    pub fn reloading(&mut self) -> bool {
        let full = std::mem::replace(&mut self.full, false);
        if full {
            self.stamps.clear();
        }
        self.due = None;
        self.burst = None;
        self.writing.clear();
        self.rewatch();
        full
    }

    fn rewatch(&mut self) {
        if self.dir_wd.is_none() {
            let mask = WatchMask::CLOSE_WRITE
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM
                | WatchMask::MOVED_TO
                | WatchMask::ATTRIB
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF
                | WatchMask::ONLYDIR;
            self.dir_wd = self.inotify.watches().add(&self.dir, mask).ok();
        }
        match (&self.dir_wd, self.parent_wd.take()) {
            (Some(_), Some(wd)) => {
                let _ = self.inotify.watches().remove(wd);
            }
            (Some(_), None) => {}
            (None, Some(wd)) => self.parent_wd = Some(wd),
            (None, None) => {
                let parent = match self.dir.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                let mask = WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::ONLYDIR;
                self.parent_wd = self.inotify.watches().add(parent, mask).ok();
                // It may have come back before the parent was watched.
                if self.parent_wd.is_some() && self.dir.is_dir() {
                    self.rewatch();
                }
            }
        }
    }

    /// Reads every pending event and moves the due time accordingly.
    pub fn read(&mut self, now: Instant) {
        let mut changed = false;
        let (mut moved_away, mut gone) = (false, false);
        loop {
            let events = match self.inotify.read_events(&mut self.buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: drained
            };
            let mut any = false;
            for ev in events {
                any = true;
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    changed = true;
                    continue;
                }
                let on_dir = self.dir_wd.as_ref() == Some(&ev.wd);
                if Some(&ev.wd) == self.parent_wd.as_ref() {
                    // The directory itself appeared (again).
                    changed |= ev.name.is_some_and(|n| n == self.name.as_os_str());
                } else if on_dir
                    && ev.mask.intersects(
                        EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED,
                    )
                {
                    moved_away |= ev.mask.contains(EventMask::MOVE_SELF);
                    gone |= ev.mask.contains(EventMask::IGNORED);
                    changed = true;
                } else if let Some(name) = ev.name.filter(|n| n.to_str().is_some_and(valid_name)) {
                    changed = true;
                    if ev.mask == EventMask::CREATE {
                        self.writing.push(name.to_owned());
                    } else {
                        self.writing.retain(|w| w != name);
                    }
                }
            }
            if !any {
                break;
            }
        }
        if gone {
            self.dir_wd = None; // deleted: the kernel dropped the watch
        } else if moved_away {
            // The watch follows the directory to its new name; that is no longer CONFDIR.
            if let Some(wd) = self.dir_wd.take() {
                let _ = self.inotify.watches().remove(wd);
            }
        }
        if gone || moved_away {
            self.rewatch();
        }
        if changed {
            let burst = *self.burst.get_or_insert(now);
            let quiet = if self.writing.is_empty() {
                now + SETTLE
            } else {
                burst + MAX_DELAY
            };
            self.due = Some(quiet.min(burst + MAX_DELAY));
        }
    }
}
