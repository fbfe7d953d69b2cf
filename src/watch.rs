//! Noticing changes to CONFDIR: inotify watches, and the settle delay that turns a burst of
//! events (a `cp` of ten files, an editor's save) into one reload.
//!
//! What is watched follows from where CONFDIR and its service files lead: CONFDIR itself,
//! or while it is missing the directory where it would appear; and only where a symbolic
//! link is on the way, the directory holding each link (to see it re-pointed) and, for a
//! service file that is a link, the directory holding its target (to see it written or
//! replaced). One watch per directory, however many names in it matter. The way is
//! followed again at the reload after anything on it changed (and at a SIGHUP), and the
//! watches moved to match. A plain CONFDIR of plain files costs its one watch and nothing
//! more: its parent is not watched, as every file created in /etc would wake going.
//!
//! Invariant: any event that can change what CONFDIR holds, or where a link in the way
//! leads, sets a due time; the loop rescans then, so merged or overflowed events lose
//! nothing. A watch is in place before what it covers is read, or what was read is looked
//! at again once it is: a change is either in the scan or an event.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::config::{self, valid_name};
use crate::log::{Errno, Level};

/// Quiet time after the last event before a reload: programs that drop files in a burst
/// (cp, tar, a deployment's renames) do so far faster; an admin's one file waits no more.
const SETTLE: Duration = Duration::from_millis(1);
/// The longest a burst of events, or a file created and still being written, postpones it.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// Symbolic links followed in one path before giving up, as the kernel's ELOOP.
const MAX_LINKS: usize = 40;
/// How often the way to CONFDIR is looked at again when it changed while being watched.
const MAX_LOOKS: usize = 4;

/// Every watch: the directory moved or deleted changes every path through it. The path
/// watched is physical (no link in it), and a watch is never put on anything else.
const SELF: WatchMask = WatchMask::DELETE_SELF
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::DONT_FOLLOW);

/// Why a name in a watched directory matters. Ordered: each kind's events include those
/// of the kinds before it, so a name that matters twice matters as the greater.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// It does not exist, or is no directory where one is needed: it may appear.
    Missing,
    /// A symbolic link on the way: re-pointed by renaming another over it (as deployment
    /// tools do), by unlink and symlink, or removed.
    Link,
    /// A file going reads: also written in place, or its mode or owner changed.
    File,
}

impl Kind {
    fn mask(self) -> WatchMask {
        match self {
            Kind::Missing => WatchMask::CREATE | WatchMask::MOVED_TO,
            Kind::Link => Kind::Missing.mask() | WatchMask::DELETE | WatchMask::MOVED_FROM,
            Kind::File => Kind::Link.mask() | WatchMask::CLOSE_WRITE | WatchMask::ATTRIB,
        }
    }
}

/// A name in a directory whose change changes where a path leads.
type Hop = (PathBuf, OsString, Kind);

/// What one directory is watched for. (Vectors, not maps: a few entries each, and less
/// code than another map type.)
#[derive(Debug, Default)]
struct Want {
    /// CONFDIR itself: every service name in it is a file going reads.
    conf: bool,
    /// The other names in it that matter, each once.
    names: Vec<(OsString, Kind)>,
}

impl Want {
    fn mask(&self) -> WatchMask {
        let conf = self.conf.then_some(Kind::File);
        let kinds = self.names.iter().map(|n| n.1).chain(conf);
        kinds.fold(SELF, |m, k| m | k.mask())
    }

    /// Whether a name is on the way somewhere (not merely a service file in CONFDIR), and
    /// how it matters, if it does.
    fn kind(&self, name: &OsStr) -> (bool, Option<Kind>) {
        let on_way = self.names.iter().find(|n| n.0 == name).map(|n| n.1);
        let service = self.conf && name.to_str().is_some_and(valid_name);
        (on_way.is_some(), on_way.max(service.then_some(Kind::File)))
    }

    /// Notes that `name` matters as `kind`, or as the greater if it already did.
    fn note(&mut self, name: OsString, kind: Kind) {
        match self.names.iter_mut().find(|n| n.0 == name) {
            Some(n) => n.1 = n.1.max(kind),
            None => self.names.push((name, kind)),
        }
    }
}

/// The directories to watch, by physical path, each once: CONFDIR first, so that it is
/// the one watched when the limit allows only one.
type Plan = Vec<(PathBuf, Want)>;

fn want(plan: &mut Plan, dir: PathBuf) -> &mut Want {
    let i = match plan.iter().position(|p| p.0 == dir) {
        Some(i) => i,
        None => {
            plan.push((dir, Want::default()));
            plan.len() - 1
        }
    };
    &mut plan[i].1
}

struct Held {
    /// The directory's physical path.
    path: PathBuf,
    wd: WatchDescriptor,
    want: Want,
}

pub struct Watch {
    inotify: Inotify,
    /// CONFDIR made absolute: followed from `/` one name at a time.
    path: PathBuf,
    /// The watches, one per directory.
    dirs: Vec<Held>,
    /// The names in CONFDIR that were symbolic links at the last scan, sorted.
    links: Vec<String>,
    /// Whether the way to CONFDIR or through its links may have changed since it was
    /// last followed: an event on a name on the way, a watched directory gone. Else a
    /// reload follows nothing again, and a plain CONFDIR costs no more than its scan.
    stale: bool,
    /// Events were lost (the queue overflowed): a watch may have followed its directory
    /// away unseen, so every watch is placed afresh.
    lost: bool,
    /// Some directory could not be watched (the limit on watches, most likely): said once,
    /// not again until every watch could be placed.
    unwatched: bool,
    /// Files created in this burst and not yet closed after writing, by watch and name.
    writing: Vec<(i32, OsString)>,
    burst: Option<Instant>,
    due: Option<Instant>,
    /// Whether the next reload reads every file (SIGHUP, start-up, a retry), or only
    /// those whose stamps changed (inotify).
    full: bool,
    /// The service files in CONFDIR that events named since the last scan: a scan reads
    /// only those. None when some event said more than that (a link on the way, a
    /// directory gone, events lost): the scan looks at every file's stamp then.
    dirty: Option<std::collections::BTreeSet<String>>,
    /// How each file looked when last read.
    pub stamps: BTreeMap<String, config::Stamp>,
    buf: Vec<u8>,
}

impl Watch {
    /// Nothing is watched until the first [`Watch::scan`], which the first reload makes.
    pub fn new(dir: &Path) -> io::Result<Watch> {
        Ok(Watch {
            inotify: Inotify::init()?,
            path: std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()),
            dirs: Vec::new(),
            links: Vec::new(),
            stale: true,
            lost: false,
            unwatched: false,
            writing: Vec::new(),
            burst: None,
            due: None,
            full: true,
            dirty: Some(Default::default()),
            stamps: Default::default(),
            buf: vec![0; 4096],
        })
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

    /// The reload is happening: forget the burst. True when every file is to be read: the
    /// stamps are then forgotten.
    pub fn begin_reload(&mut self) -> bool {
        let full = std::mem::replace(&mut self.full, false);
        if full {
            self.stamps.clear();
        }
        self.due = None;
        self.burst = None;
        self.writing.clear();
        full
    }

    /// `name` is read again at the next reload, whatever its stamp says: a file a cycle of
    /// `after=` made invalid, as the cycle may be gone by then through another file's
    /// edit. A reload of the files events named reads it too.
    pub fn reread(&mut self, name: &str) {
        self.stamps.remove(name);
        if let Some(dirty) = &mut self.dirty {
            dirty.insert(name.to_string());
        }
    }

    /// Scans `dir`, the CONFDIR this watch was made for, with the stamps: the way to it
    /// watched before, and the way to each service file that is a link after (then looked
    /// at again). `log` hears of a directory that cannot be watched.
    pub fn scan(
        &mut self,
        dir: &Path,
        mut log: impl FnMut(Level, fmt::Arguments),
    ) -> Result<config::Scan, config::DirError> {
        // A reload that reads every file (its stamps forgotten: SIGHUP, `going reload`),
        // or one after a watch could not be placed, also follows the way again.
        let mut failed = Vec::new();
        let dirty = self.dirty.replace(Default::default());
        let only = dirty.filter(|_| !self.stale && !self.unwatched && !self.stamps.is_empty());
        if only.is_none()
            && (std::mem::take(&mut self.stale) || self.unwatched || self.stamps.is_empty())
        {
            // A watch just placed: the way may have changed before it was, so look again.
            let settled = (0..MAX_LOOKS).any(|_| !self.apply(self.plan(), &mut failed));
            self.stale = !settled;
        }
        // Only the files events named, where nothing else changed: one added to a
        // thousand costs one read, not a thousand stamps.
        let mut scan = match only {
            Some(names) => config::scan_names(dir, &names, &mut self.stamps, &self.links),
            None => config::scan(dir, Some(&mut self.stamps)),
        };
        if let Ok(scan) = &mut scan {
            scan.links.sort_unstable();
            if scan.links != self.links {
                self.links = scan.links.clone();
                // A target read before its directory was watched may have changed since:
                // its stamp says so.
                if self.apply(self.plan(), &mut failed)
                    && (self.links.iter())
                        .any(|n| config::stamp(&dir.join(n)) != self.stamps.get(n).copied())
                {
                    self.due = Some(Instant::now());
                    self.dirty = None; // the names are the links': every stamp is looked at
                }
            }
            // A file read without a stamp (a dangling link, a transient error) is in no
            // later list of names: the next reload looks at every stamp again, or the
            // file would be taken for removed.
            if scan.files.keys().any(|n| !self.stamps.contains_key(n)) {
                self.dirty = None;
            }
        } else {
            // The names seen are not applied: the next reload reads every stamp.
            self.dirty = None;
        }
        if let (Some((path, e)), false) = (failed.first(), self.unwatched) {
            let why = match e.raw_os_error() {
                Some(libc::ENOSPC) => {
                    "inotify watch limit reached (fs.inotify.max_user_watches)".to_string()
                }
                _ => Errno(e).to_string(),
            };
            log(
                Level::Warning,
                format_args!(
                    "going: unable to watch {}: {why}; a change there takes a SIGHUP",
                    path.display()
                ),
            );
        }
        self.unwatched = !failed.is_empty();
        scan
    }

    /// Where CONFDIR and the links in it (as of the last scan) lead: the directories to
    /// watch and what for.
    fn plan(&self) -> Plan {
        let mut hops = Vec::new();
        let mut plan = Plan::new();
        let root = PathBuf::from(if self.path.has_root() { "/" } else { "." });
        match walk(root, &self.path, Kind::Missing, &mut hops) {
            Some((conf, true)) => {
                want(&mut plan, conf.clone()).conf = true;
                for name in &self.links {
                    if let Some((file, _)) =
                        walk(conf.clone(), Path::new(name), Kind::File, &mut hops)
                    {
                        if let (Some(dir), Some(name)) = (file.parent(), file.file_name()) {
                            hops.push((dir.to_owned(), name.to_owned(), Kind::File));
                        }
                    }
                }
            }
            // Not a directory: what would fix it is a directory in its place.
            Some((other, false)) => {
                if let (Some(dir), Some(name)) = (other.parent(), other.file_name()) {
                    hops.push((dir.to_owned(), name.to_owned(), Kind::Missing));
                }
            }
            None => {}
        }
        for (dir, name, kind) in hops {
            want(&mut plan, dir).note(name, kind);
        }
        plan
    }

    /// Makes the watches those of `plan`, one per directory; `failed` gets the directories
    /// that could not be watched. True when a watch was added or widened, or a directory
    /// was gone by then: what was looked at before may have changed unseen.
    fn apply(&mut self, plan: Plan, failed: &mut Vec<(PathBuf, io::Error)>) -> bool {
        failed.clear();
        let lost = std::mem::take(&mut self.lost);
        // Those no longer wanted go first, and give back their share of the limit.
        for held in std::mem::take(&mut self.dirs) {
            if !lost && plan.iter().any(|p| p.0 == held.path) {
                self.dirs.push(held);
            } else {
                self.unwatch(held.wd);
            }
        }
        let mut again = false;
        for (path, want) in plan {
            let mask = want.mask();
            let i = self.dirs.iter().position(|h| h.path == path);
            if let Some(held) = i.map(|i| &mut self.dirs[i]) {
                if held.want.mask() == mask {
                    held.want = want;
                    continue;
                }
            }
            let old = i.map(|i| self.dirs.swap_remove(i));
            // Over a watch of the same directory, the kernel changes its mask and gives the
            // same descriptor back.
            match self.inotify.watches().add(&path, mask) {
                Ok(wd) => {
                    again = true;
                    if let Some(old) = old.filter(|old| old.wd != wd) {
                        self.unwatch(old.wd);
                    }
                    self.dirs.push(Held { path, wd, want });
                }
                Err(e) => {
                    if let Some(old) = old {
                        self.unwatch(old.wd);
                    }
                    if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) {
                        // Removed or replaced since it was followed: follow it again.
                        (again, self.stale) = (true, true);
                    } else {
                        failed.push((path, e));
                    }
                }
            }
        }
        again
    }

    fn unwatch(&mut self, wd: WatchDescriptor) {
        // It fails only when the kernel dropped the watch already (its directory deleted,
        // IN_IGNORED on its way): nothing is left to undo.
        let _ = self.inotify.watches().remove(wd);
    }

    /// Reads every pending event and moves the due time accordingly.
    pub fn read(&mut self, now: Instant) {
        let mut changed = false;
        // Watches whose directory is gone from where it was: (id, still in the kernel).
        let mut gone: Vec<(i32, bool)> = Vec::new();
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let events = match self.inotify.read_events(&mut buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: drained
            };
            let mut any = false;
            for ev in events {
                any = true;
                changed |= self.note(ev.wd.get_watch_descriptor_id(), ev.mask, ev.name, &mut gone);
            }
            if !any {
                break;
            }
        }
        self.buf = buf;
        for (id, held_by_kernel) in gone {
            let i = (self.dirs.iter()).position(|h| h.wd.get_watch_descriptor_id() == id);
            if let Some(held) = i.map(|i| self.dirs.swap_remove(i)) {
                if held_by_kernel {
                    self.unwatch(held.wd);
                }
            }
        }
        if changed {
            let burst = *self.burst.get_or_insert(now);
            self.due = Some(settle(burst, now, !self.writing.is_empty()));
        }
    }

    /// One event on the watch `id`: whether it may change what CONFDIR holds.
    fn note(
        &mut self,
        id: i32,
        mask: EventMask,
        name: Option<&OsStr>,
        gone: &mut Vec<(i32, bool)>,
    ) -> bool {
        if mask.contains(EventMask::Q_OVERFLOW) {
            (self.lost, self.stale, self.dirty) = (true, true, None);
            return true;
        }
        let Some(held) = (self.dirs.iter()).find(|h| h.wd.get_watch_descriptor_id() == id) else {
            return false; // a watch given up already
        };
        if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED) {
            // A watch follows its directory to a new name, which is not the way resolved;
            // a deleted one the kernel drops. The reload finds the way.
            gone.push((id, mask.contains(EventMask::MOVE_SELF)));
            (self.stale, self.dirty) = (true, None);
            return true;
        }
        let Some(name) = name else {
            return false;
        };
        let (on_way, Some(kind)) = held.want.kind(name) else {
            return false;
        };
        self.stale |= on_way;
        let service = (held.want.conf && !on_way)
            .then(|| name.to_str())
            .flatten()
            .filter(|n| valid_name(n));
        match (&mut self.dirty, service) {
            (Some(dirty), Some(name)) => drop(dirty.insert(name.to_string())),
            _ => self.dirty = None,
        }
        if mask == EventMask::CREATE && kind == Kind::File {
            self.writing.push((id, name.to_owned()));
        } else {
            self.writing
                .retain(|(i, n)| (*i, n.as_os_str()) != (id, name));
        }
        true
    }
}

/// When a burst of events that began at `burst` is settled, seen at `now`: after
/// [`SETTLE`] of quiet, or once a file created in it is closed after writing; never later
/// than [`MAX_DELAY`] after the burst began.
fn settle(burst: Instant, now: Instant, writing: bool) -> Instant {
    let quiet = if writing {
        burst + MAX_DELAY
    } else {
        now + SETTLE
    };
    quiet.min(burst + MAX_DELAY)
}

/// Follows `path` from the directory `at` as the kernel would, one name at a time, and
/// notes in `hops` each name whose change would change where it leads: every symbolic
/// link on the way, and where it stops short, the name missing (as `last` if it was the
/// last one) or not a directory. Where it leads: a physical path, and whether that is a
/// directory; None when it stops short (or at more than [`MAX_LINKS`] links).
fn walk(mut at: PathBuf, path: &Path, last: Kind, hops: &mut Vec<Hop>) -> Option<(PathBuf, bool)> {
    let mut todo = Vec::new();
    push(&mut todo, &mut at, path);
    let (mut links, mut is_dir) = (0, true);
    while let Some(name) = todo.pop() {
        if name == ".." {
            // Physical, as the kernel: the parent of where a link led.
            at.pop();
            is_dir = true;
            continue;
        }
        let next = at.join(&name);
        let Ok(meta) = fs::symlink_metadata(&next) else {
            let kind = if todo.is_empty() { last } else { Kind::Missing };
            hops.push((at, name, kind));
            return None;
        };
        if meta.file_type().is_symlink() {
            hops.push((at.clone(), name, Kind::Link));
            links += 1;
            let target = fs::read_link(&next).ok().filter(|_| links <= MAX_LINKS)?;
            push(&mut todo, &mut at, &target);
        } else if meta.is_dir() || todo.is_empty() {
            is_dir = meta.is_dir();
            at = next;
        } else {
            hops.push((at, name, Kind::Missing));
            return None;
        }
    }
    Some((at, is_dir))
}

/// Puts the names of `path` on `todo`, its first name on top; an absolute path starts
/// again from `/`.
fn push(todo: &mut Vec<OsString>, at: &mut PathBuf, path: &Path) {
    if path.has_root() {
        *at = PathBuf::from("/");
    }
    for c in path.components().rev() {
        match c {
            Component::Normal(name) => todo.push(name.to_owned()),
            Component::ParentDir => todo.push(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_settles_after_quiet_or_a_closed_write_and_never_after_a_second() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(settle(t0, t0, false), t0 + SETTLE);
        // Each event pushes the reload back by the settle time…
        assert_eq!(settle(t0, t0 + ms(3), false), t0 + ms(3) + SETTLE);
        // …but a steady stream never further than a second after it began.
        assert_eq!(settle(t0, t0 + ms(999), false), t0 + MAX_DELAY);
        // A file still being written waits for its close, up to the same second.
        assert_eq!(settle(t0, t0 + ms(1), true), t0 + MAX_DELAY);
    }
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A fresh directory with no link on the way to it (the temp dir may be one).
    fn tree(name: &str) -> PathBuf {
        let tmp = fs::canonicalize(std::env::temp_dir()).unwrap();
        let root = tmp.join(format!("going-watch-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        root
    }

    fn dir(p: PathBuf) -> PathBuf {
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn file(p: PathBuf, text: &str) {
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// Names, as paths relative to the test's root, and why each matters.
    type Names = Vec<(String, Kind)>;

    fn hops(at: &Path, path: &str, last: Kind) -> (Option<(PathBuf, bool)>, Names) {
        let mut hops = Vec::new();
        let end = walk(at.to_owned(), Path::new(path), last, &mut hops);
        let shown = (hops.into_iter())
            .map(|(d, n, k)| {
                let d = d.strip_prefix(at).unwrap().join(n);
                (d.to_string_lossy().into_owned(), k)
            })
            .collect();
        (end, shown)
    }

    #[test]
    fn walk_notes_each_link_and_where_it_stops() {
        let root = tree("walk");
        dir(root.join("a"));
        file(root.join("a/f"), "");
        symlink("a", root.join("l1")).unwrap();
        symlink(root.join("l1"), root.join("l2")).unwrap();
        symlink("nowhere/x", root.join("dangling")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        dir(root.join("deep/in"));
        dir(root.join("deep/a"));
        file(root.join("deep/a/f"), "");
        symlink("deep/in", root.join("down")).unwrap();
        use Kind::*;

        // A plain path: nothing to note.
        assert_eq!(
            hops(&root, "a/f", File),
            (Some((root.join("a/f"), false)), vec![])
        );
        assert_eq!(
            hops(&root, "a", Missing),
            (Some((root.join("a"), true)), vec![])
        );
        // A chain, relative then absolute.
        let (end, noted) = hops(&root, "l2/f", File);
        assert_eq!(end, Some((root.join("a/f"), false)));
        assert_eq!(noted, [("l2".into(), Link), ("l1".into(), Link)]);
        // Missing at the end (a file that may appear) or on the way (a directory).
        assert_eq!(
            hops(&root, "l1/g", File),
            (None, vec![("l1".into(), Link), ("a/g".into(), File)])
        );
        assert_eq!(
            hops(&root, "dangling", File),
            (
                None,
                vec![("dangling".into(), Link), ("nowhere".into(), Missing)]
            )
        );
        // A file where a directory is needed.
        assert_eq!(
            hops(&root, "a/f/x", File),
            (None, vec![("a/f".into(), Missing)])
        );
        // `..` after a link is the parent of where the link led, as the kernel has it.
        assert_eq!(
            hops(&root, "down/../a/f", File).0,
            Some((root.join("deep/a/f"), false))
        );
        // A loop ends, its link noted.
        let (end, noted) = hops(&root, "loop", File);
        assert_eq!(end, None);
        assert!(noted.iter().all(|n| *n == ("loop".into(), Link)));
        fs::remove_dir_all(&root).unwrap();
    }

    /// Each directory watched: its path relative to `root`, whether it is CONFDIR, and the
    /// other names in it that matter.
    fn watched(w: &Watch, root: &Path) -> Vec<(String, bool, Names)> {
        let mut all: Vec<_> = (w.dirs.iter())
            .map(|h| {
                let mut names: Names = (h.want.names.iter())
                    .map(|(n, k)| (n.to_string_lossy().into_owned(), *k))
                    .collect();
                names.sort();
                let d = h.path.strip_prefix(root).unwrap();
                (d.to_string_lossy().into_owned(), h.want.conf, names)
            })
            .collect();
        all.sort();
        all
    }

    /// Reads events until `dir` is no longer watched, for at most five seconds.
    fn gone(w: &mut Watch, dir: &Path) {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            w.read(Instant::now());
            if !w.dirs.iter().any(|h| h.path == dir) {
                return;
            }
            assert!(Instant::now() < deadline, "{dir:?} still watched");
            let mut fd = libc::pollfd {
                fd: w.inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut fd, 1, 100) };
        }
    }

    fn scan(w: &mut Watch, conf: &Path) -> Vec<String> {
        let mut said = Vec::new();
        w.begin_reload();
        let scan = w.scan(conf, |_, m| said.push(m.to_string())).unwrap();
        assert_eq!(said, Vec::<String>::new());
        let mut names: Vec<String> = scan.files.into_keys().chain(scan.unchanged).collect();
        names.sort();
        names
    }

    #[test]
    fn a_plain_confdir_of_plain_files_is_one_watch() {
        let root = tree("plain");
        let conf = dir(root.join("conf"));
        file(conf.join("web"), "cmd=/bin/web\n");
        let mut w = Watch::new(&conf).unwrap();
        assert_eq!(scan(&mut w, &conf), ["web"]);
        assert_eq!(watched(&w, &root), [("conf".into(), true, vec![])]);
        // A change of a plain file is no change of the way: nothing is followed again.
        file(conf.join("web"), "cmd=/bin/web2\n");
        w.read(Instant::now());
        assert!(w.due().is_some() && !w.stale);
        assert_eq!(scan(&mut w, &conf), ["web"]);
        // Gone: the directory where it would come back, for that name only.
        fs::remove_dir_all(&conf).unwrap();
        // The kernel tells of a directory's end once the last reference to it goes, which
        // a busy machine may delay: wait for it as going would, on its next event.
        gone(&mut w, &conf);
        assert!(w.due().is_some());
        w.begin_reload();
        assert!(w.scan(&conf, |_, _| {}).is_err());
        assert_eq!(
            watched(&w, &root),
            [(String::new(), false, vec![("conf".into(), Kind::Missing)])]
        );
        dir(conf.clone());
        w.read(Instant::now());
        assert!(w.due().is_some());
        assert_eq!(scan(&mut w, &conf), Vec::<String>::new());
        assert_eq!(watched(&w, &root), [("conf".into(), true, vec![])]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn links_are_watched_one_directory_each_and_re_pointed() {
        let root = tree("links");
        let (a, b, srv) = (
            dir(root.join("a")),
            dir(root.join("b")),
            dir(root.join("srv")),
        );
        file(srv.join("web.conf"), "cmd=/bin/web\n");
        file(srv.join("db.conf"), "cmd=/bin/db\n");
        symlink("../srv/web.conf", a.join("web")).unwrap();
        symlink(srv.join("db.conf"), a.join("db")).unwrap();
        file(a.join("plain"), "cmd=/bin/plain\n");
        file(b.join("other"), "cmd=/bin/other\n");
        symlink("a", root.join("conf")).unwrap();
        let conf = root.join("conf");
        let mut w = Watch::new(&conf).unwrap();
        assert_eq!(scan(&mut w, &conf), ["db", "plain", "web"]);
        use Kind::*;
        let link = |n: &str| (n.to_string(), Link);
        assert_eq!(
            watched(&w, &root),
            [
                (String::new(), false, vec![link("conf")]),
                ("a".into(), true, vec![link("db"), link("web")]),
                (
                    "srv".into(),
                    false,
                    vec![("db.conf".into(), File), ("web.conf".into(), File)]
                ),
            ]
        );
        // The target edited: due.
        file(srv.join("web.conf"), "cmd=/bin/web2\n");
        w.read(Instant::now());
        assert!(w.due().is_some());
        // Re-pointed as deployment tools do: b is watched, a and the targets no more.
        scan(&mut w, &conf);
        assert_eq!(w.due(), None);
        symlink("b", root.join("conf.tmp")).unwrap();
        fs::rename(root.join("conf.tmp"), &conf).unwrap();
        w.read(Instant::now());
        assert!(w.due().is_some());
        assert_eq!(scan(&mut w, &conf), ["other"]);
        assert_eq!(
            watched(&w, &root),
            [
                (String::new(), false, vec![link("conf")]),
                ("b".into(), true, vec![])
            ]
        );
        // Events of the directories let go wake nothing.
        file(srv.join("web.conf"), "cmd=/bin/web3\n");
        file(a.join("plain"), "cmd=/bin/plain2\n");
        w.read(Instant::now());
        assert_eq!(w.due(), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
