//! cgroup v2 for services, so that no process of a service escapes it: where going's
//! subtree is (found from /proc, never assumed at /sys/fs/cgroup), the layout kept there,
//! and one cgroup per service — created before its first exec, known to be empty from its
//! `cgroup.events`, killed as a whole, removed once empty — with its limits
//! ([`limits`]), its OOM kills and its usage. src/supervisor/cgroups.rs keeps them for
//! the loop.
//!
//! Layout. C is the cgroup going starts in; going's subtree B is `C/NAME` (`going` unless
//! the admin names another); each service is `B/svc/SERVICE`; going itself moves to
//! `B/supervisor` once it must hand a controller down from C. A going that finds itself
//! in `…/NAME/supervisor` (it put itself there, then exec'd itself) takes `…/NAME` for B
//! and `…` for C; one in another cgroup named `supervisor` (systemd's
//! `DelegateSubgroup=supervisor`) takes that cgroup's parent for both B and C.
//!
//! Invariants: going writes the `cgroup.subtree_control` of a cgroup only when no process
//! is in it ("no internal processes"): it leaves C for `B/supervisor` first, unless C is
//! the root, which is exempt. A controller is enabled only while some service needs it,
//! and disabled again only below B (C's may be others' too). One going per B: a flock on
//! B. A service's cgroup is removed only when empty; a busy one is left for a later try.
//! Nothing here waits, sleeps or polls: emptiness is learnt from `cgroup.events`.

mod limits;

pub use limits::{Available, Controller, Controllers, Key, Limits};

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::log::Errno;
use crate::sys::{self, Dir, Pid};

/// The name of going's subtree when the admin gives none.
pub const NAME: &str = "going";
/// Why going uses no cgroups, after `-c off`.
pub const OFF: &str = "it was started with -c off";
/// going's own leaf in B.
const SUPERVISOR: &str = "supervisor";
/// The services' parent in B.
const SERVICES: &str = "svc";
/// statfs(2) magic of cgroup2 (linux/magic.h).
#[cfg(test)]
pub const CGROUP2_MAGIC: u32 = 0x6367_7270;
/// How many times the fallback kill lists a cgroup again for processes forked meanwhile.
const KILL_ROUNDS: usize = 16;
/// How deep the cgroups a service makes inside its own are followed.
const MAX_DEPTH: usize = 8;

/// A failed operation on a cgroup's file or directory: `unable to VERB PATH: strerror`.
#[derive(Debug)]
pub struct Error {
    what: String,
    path: PathBuf,
    err: io::Error,
}

impl Error {
    pub fn new(what: impl Into<String>, path: impl Into<PathBuf>, err: io::Error) -> Error {
        Error {
            what: what.into(),
            path: path.into(),
            err,
        }
    }

    pub fn errno(&self) -> Option<i32> {
        self.err.raw_os_error()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (what, path) = (&self.what, self.path.display());
        write!(f, "unable to {what} {path}: {}", Errno(&self.err))
    }
}

/// Why going uses no cgroups: the end of the start-up line `cgroups: not used: …`.
#[derive(Debug)]
pub enum NotUsed {
    /// No `0::` line in /proc/PID/cgroup: a kernel without cgroup v2.
    NoEntry,
    NotMounted,
    /// going's cgroup is not under the root the cgroup2 mount shows (another namespace).
    Outside {
        own: String,
        mount: PathBuf,
    },
    ReadOnly(PathBuf),
    /// Another going holds B.
    InUse {
        path: PathBuf,
        by: Vec<Pid>,
    },
    Unable(Error),
}

impl fmt::Display for NotUsed {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            NotUsed::NoEntry => f.write_str("this kernel has no cgroup v2"),
            NotUsed::NotMounted => f.write_str("no cgroup2 filesystem is mounted"),
            NotUsed::Outside { own, mount } => write!(
                f,
                "going's cgroup {own} is outside the cgroup2 filesystem mounted at {}",
                mount.display()
            ),
            NotUsed::ReadOnly(mount) => write!(f, "{} is mounted read-only", mount.display()),
            NotUsed::InUse { path, by } => {
                write!(f, "{} is in use by another going", path.display())?;
                match by.first() {
                    Some(pid) => write!(f, " (pid {pid})"),
                    None => Ok(()),
                }
            }
            NotUsed::Unable(e) => e.fmt(f),
        }
    }
}

/// A cgroup2 mount, from mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted (`/sys/fs/cgroup/unified` on hybrid systems).
    pub point: PathBuf,
    /// The cgroup it shows at `point` (`/` but for a bind mount, or a container's view
    /// without a cgroup namespace).
    pub root: String,
    pub read_only: bool,
}

/// The cgroup v2 path of the process, from its /proc/PID/cgroup (the `0::` line).
pub fn own_cgroup(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| p.starts_with('/'))
}

/// The cgroup2 mounts of a mountinfo text, in mount order; and the controllers bound to
/// cgroup v1, with where each is mounted.
pub fn mounts(mountinfo: &str) -> (Vec<Mount>, Vec<(Controller, String)>) {
    let (mut v2, mut v1) = (Vec::new(), Vec::new());
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL…] - TYPE SOURCE SUPER_OPTIONS
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(opts)) = (l.get(3), l.get(4), l.get(5)) else {
            continue;
        };
        let super_opts = r.get(2).copied().unwrap_or("");
        match r.first() {
            Some(&"cgroup2") => v2.push(Mount {
                point: PathBuf::from(unescape(point)),
                root: unescape(root),
                read_only: (opts.split(',').chain(super_opts.split(','))).any(|o| o == "ro"),
            }),
            Some(&"cgroup") => v1.extend(
                (super_opts.split(','))
                    // v1's blkio is v2's io.
                    .filter_map(|o| Controller::by_name(if o == "blkio" { "io" } else { o }))
                    .map(|c| (c, unescape(point))),
            ),
            _ => {}
        }
    }
    (v2, v1)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(o)) => {
                out.push(o.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where going's cgroups go, as cgroup paths (`/`, `/a/b`): see the module's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// C: the cgroup whose `cgroup.subtree_control` hands controllers down to B (B
    /// itself when systemd delegated B).
    pub top: String,
    /// B: going's subtree.
    pub base: String,
    /// Whether going is still in C, which it must leave before enabling a controller there.
    pub in_top: bool,
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

fn join(a: &str, b: &str) -> String {
    match a {
        "/" => format!("/{b}"),
        _ => format!("{a}/{b}"),
    }
}

/// The layout for a going in cgroup `own` whose subtree is named `name`.
pub fn layout(own: &str, name: &str) -> Layout {
    match own.strip_suffix("/supervisor").filter(|up| !up.is_empty()) {
        Some(up) if up.rsplit('/').next() == Some(name) => Layout {
            top: parent(up).to_string(),
            base: up.to_string(),
            in_top: false,
        },
        Some(up) => Layout {
            top: up.to_string(),
            base: up.to_string(),
            in_top: false,
        },
        None => Layout {
            top: own.to_string(),
            base: join(own, name),
            in_top: true,
        },
    }
}

/// Where the cgroup2 hierarchy is and what going would do there, found without touching
/// anything: [`Found::open`] creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The process whose cgroup this is (going, or the going `going check` asks about).
    pub pid: Pid,
    pub mount: Mount,
    /// Its cgroup, as /proc/PID/cgroup says.
    pub own: String,
    pub layout: Layout,
    /// Controllers held by cgroup v1, to say so when a key needs one.
    pub v1: Vec<(Controller, String)>,
}

/// Finds the cgroup2 hierarchy and going's place in it, for the process `pid` (going
/// itself, or for `going check` the going that runs), whose subtree is named `name`.
pub fn discover(pid: Pid, name: &str) -> Result<Found, NotUsed> {
    let read = |file: &str| {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        fs::read_to_string(&path).map_err(|e| NotUsed::Unable(Error::new("read", path, e)))
    };
    find(pid, &read("cgroup")?, &read("mountinfo")?, name)
}

/// [`discover`] on the texts of /proc/PID/cgroup and /proc/PID/mountinfo.
pub fn find(pid: Pid, proc_cgroup: &str, mountinfo: &str, name: &str) -> Result<Found, NotUsed> {
    let own = own_cgroup(proc_cgroup).ok_or(NotUsed::NoEntry)?;
    let (v2, v1) = mounts(mountinfo);
    let under = |m: &&Mount| {
        m.root == "/"
            || own == m.root
            || own
                .strip_prefix(&m.root)
                .is_some_and(|r| r.starts_with('/'))
    };
    // The last one mounted hides those before it at the same place.
    let mount = match (v2.iter().rev().find(under), v2.last()) {
        (Some(m), _) => m.clone(),
        (None, Some(m)) => {
            return Err(NotUsed::Outside {
                own: own.to_string(),
                mount: m.point.clone(),
            })
        }
        (None, None) => return Err(NotUsed::NotMounted),
    };
    Ok(Found {
        pid,
        layout: layout(own, name),
        own: own.to_string(),
        mount,
        v1,
    })
}

impl Found {
    /// The directory of cgroup `cgroup` (a path as /proc/PID/cgroup writes them).
    pub fn path(&self, cgroup: &str) -> PathBuf {
        let rel = match self.mount.root.as_str() {
            "/" => cgroup,
            root => cgroup.strip_prefix(root).unwrap_or(cgroup),
        };
        self.mount.point.join(rel.trim_start_matches('/'))
    }

    /// The controllers going could give its services (for `going check`): nothing is
    /// created or changed.
    pub fn available(&self) -> Available {
        if self.mount.read_only {
            return Available::Off(NotUsed::ReadOnly(self.mount.point.clone()).to_string());
        }
        let top = self.path(&self.layout.top);
        let must_leave = self.layout.in_top && !is_root(&top);
        offer(&top, must_leave, self.pid, &self.v1)
    }

    /// Creates B and `B/svc` (or finds them), and takes B for this going.
    pub fn open(&self) -> Result<Cgroups, NotUsed> {
        if self.mount.read_only {
            return Err(NotUsed::ReadOnly(self.mount.point.clone()));
        }
        let unable = |what: &str, path: &Path| {
            let path = path.to_path_buf();
            let what = what.to_string();
            move |e| NotUsed::Unable(Error::new(what, path, e))
        };
        let top_path = self.path(&self.layout.top);
        let base_path = self.path(&self.layout.base);
        let svc_path = base_path.join(SERVICES);
        let top = Dir::open(&top_path).map_err(unable("open", &top_path))?;
        match fs::create_dir(&base_path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(unable("create", &base_path)(e))
            }
            _ => {}
        }
        let base = Dir::open(&base_path).map_err(unable("open", &base_path))?;
        if !base.try_lock().map_err(unable("lock", &base_path))? {
            let by = base
                .metadata()
                .map(|m| sys::lock_holders(&m))
                .unwrap_or_default();
            return Err(NotUsed::InUse {
                path: base_path,
                by,
            });
        }
        mkdir(&base, SERVICES).map_err(unable("create", &svc_path))?;
        let svc = base.subdir(SERVICES).map_err(unable("open", &svc_path))?;
        let enabled = read(&svc, "cgroup.subtree_control")
            .map_err(unable("read", &svc_path.join("cgroup.subtree_control")))?;
        let top_is_root = !exists(&top, "cgroup.type");
        let in_top = self.layout.in_top;
        let available = offer(&top_path, in_top && !top_is_root, self.pid, &self.v1);
        Ok(Cgroups {
            features: Features {
                kill: exists(&svc, "cgroup.kill"),
                freeze: exists(&svc, "cgroup.freeze"),
            },
            top_is_base: top_path == base_path,
            top,
            top_path,
            base,
            base_path,
            svc,
            svc_path,
            in_top,
            top_is_root,
            enabled: Controllers::parse(&enabled),
            available,
        })
    }
}

/// The root cgroup has no `cgroup.type` (nor `cgroup.events`, `cgroup.kill`, limits).
fn is_root(dir: &Path) -> bool {
    !dir.join("cgroup.type").exists()
}

/// What C can hand down to B: its `cgroup.controllers`, if going may write its
/// `cgroup.subtree_control` — which it may not while other processes share C (unless C
/// is the root).
fn offer(top: &Path, must_leave: bool, pid: Pid, v1: &[(Controller, String)]) -> Available {
    let file = |name: &str| top.join(name);
    let have = match fs::read_to_string(file("cgroup.controllers")) {
        Ok(text) => Controllers::parse(&text),
        Err(e) => {
            return Available::Off(Error::new("read", file("cgroup.controllers"), e).to_string())
        }
    };
    let v1 = v1.to_vec();
    let subtree = file("cgroup.subtree_control");
    if let Err(e) = fs::OpenOptions::new().write(true).open(&subtree) {
        let note = Some(format!(
            "{} is not writable: {}",
            subtree.display(),
            Errno(&e)
        ));
        return Available::Controllers {
            have: Controllers::NONE,
            v1,
            note,
        };
    }
    let others: Vec<String> = match must_leave {
        true => fs::read_to_string(file("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter(|p| p.parse::<Pid>().is_ok_and(|p| p != pid))
            .map(String::from)
            .collect(),
        false => Vec::new(),
    };
    if others.is_empty() {
        return Available::Controllers {
            have,
            v1,
            note: None,
        };
    }
    let some = others
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = if others.len() > 5 { ", …" } else { "" };
    Available::Controllers {
        have: Controllers::NONE,
        v1,
        note: Some(format!(
            "going shares {} with other processes ({some}{more}), so it cannot hand controllers down",
            top.display()
        )),
    }
}

/// What the kernel offers that going uses for a fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `cgroup.kill` (Linux 5.14): the kernel kills every process, forks included.
    pub kill: bool,
    /// `cgroup.freeze` (Linux 5.2): the fallback kill freezes first, so nothing forks.
    pub freeze: bool,
}

/// going's subtree B, held (flocked) while this lives.
pub struct Cgroups {
    top: Dir,
    top_path: PathBuf,
    base: Dir,
    base_path: PathBuf,
    svc: Dir,
    svc_path: PathBuf,
    /// systemd delegated B itself: nothing above B is going's to write.
    top_is_base: bool,
    in_top: bool,
    top_is_root: bool,
    /// What the services' cgroups get (`B/svc/cgroup.subtree_control`).
    enabled: Controllers,
    available: Available,
    features: Features,
}

impl Cgroups {
    /// B, for the start-up line `cgroups: PATH`.
    pub fn path(&self) -> &Path {
        &self.base_path
    }

    /// What service files' limit keys are checked against when they are read.
    pub fn available(&self) -> &Available {
        &self.available
    }

    pub fn enabled(&self) -> Controllers {
        self.enabled
    }

    #[cfg(test)]
    pub fn features(&self) -> Features {
        self.features
    }

    /// Makes exactly `wanted` the controllers of the services' cgroups: the union of
    /// what their limits need ([`Limits::controllers`]). Enabling goes top-down (C, B,
    /// `B/svc`), after going leaves C if it must; disabling goes bottom-up and stops at B.
    pub fn set_controllers(&mut self, wanted: Controllers) -> Result<(), Error> {
        let add = wanted.minus(self.enabled);
        if let Available::Controllers { have, .. } = &self.available {
            let missing = add.minus(*have);
            if !missing.is_empty() {
                let e = io::Error::from_raw_os_error(libc::ENOTSUP);
                return Err(Error::new(
                    format!("enable {missing} below"),
                    &self.top_path,
                    e,
                ));
            }
        }
        if !add.is_empty() {
            if !self.top_is_base {
                let subtree = "cgroup.subtree_control";
                let at_top = read(&self.top, subtree)
                    .map_err(|e| Error::new("read", self.top_path.join(subtree), e))?;
                let more = add.minus(Controllers::parse(&at_top));
                if !more.is_empty() {
                    if self.in_top && !self.top_is_root {
                        self.leave_top()?;
                    }
                    subtree_write(&self.top, &self.top_path, more, '+')?;
                }
            }
            subtree_write(&self.base, &self.base_path, add, '+')?;
            subtree_write(&self.svc, &self.svc_path, add, '+')?;
            self.enabled = self.enabled.union(add);
        }
        let drop = self.enabled.minus(wanted);
        if !drop.is_empty() {
            subtree_write(&self.svc, &self.svc_path, drop, '-')?;
            self.enabled = self.enabled.minus(drop);
            subtree_write(&self.base, &self.base_path, drop, '-')?;
        }
        Ok(())
    }

    /// Moves going (all of it: it has one thread) into `B/supervisor`, so that C holds no
    /// process when a controller is enabled there.
    fn leave_top(&mut self) -> Result<(), Error> {
        let path = self.base_path.join(SUPERVISOR);
        mkdir(&self.base, SUPERVISOR).map_err(|e| Error::new("create", &path, e))?;
        let leaf = (self.base.subdir(SUPERVISOR)).map_err(|e| Error::new("open", &path, e))?;
        // "0" is the writer itself.
        write(&leaf, "cgroup.procs", "0")
            .map_err(|e| Error::new("move going into", path.join("cgroup.procs"), e))?;
        self.in_top = false;
        Ok(())
    }

    /// The cgroup of service `name`, created if it is not there. One that was there
    /// ([`Group::fresh`] false) may hold what a crashed run left: kill that first.
    pub fn group(&self, name: &str) -> Result<Group, Error> {
        let path = self.svc_path.join(name);
        if !crate::config::valid_name(name) {
            let e = io::Error::from_raw_os_error(libc::EINVAL);
            return Err(Error::new("create", path, e));
        }
        let fresh = match self.svc.mkdir(name, 0o755) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
            Err(e) => return Err(Error::new("create", path, e)),
        };
        let dir = self
            .svc
            .subdir(name)
            .map_err(|e| Error::new("open", &path, e))?;
        Group::open(dir, path, fresh, self.features)
    }

    /// The services that have a cgroup: after a restart of going, what is left of them.
    pub fn existing(&self) -> Result<Vec<String>, Error> {
        child_cgroups(&self.svc).map_err(|e| Error::new("read", &self.svc_path, e))
    }

    /// Removes service `name`'s cgroup (and any its processes made inside it). Ok(false)
    /// when something is still running there: try again once `cgroup.events` says it is
    /// empty. The caller first stops watching its `cgroup.events`.
    pub fn remove(&self, name: &str) -> Result<bool, Error> {
        if !crate::config::valid_name(name) {
            let e = io::Error::from_raw_os_error(libc::EINVAL);
            return Err(Error::new("remove", self.svc_path.join(name), e));
        }
        remove_tree(&self.svc, &self.svc_path, name, MAX_DEPTH)
    }
}

impl Cgroups {
    /// going exits, every service gone: `B/svc` is removed, and B with going's own leaf
    /// when going is not in it, as far as they are empty (a cgroup left by a service
    /// stuck in the kernel keeps them). The lock on B goes with it.
    pub fn close(self) -> Result<(), Error> {
        let gone = |r: io::Result<()>, path: PathBuf| match r {
            Err(e)
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::EBUSY | libc::ENOTEMPTY)
                ) =>
            {
                Err(Error::new("remove", path, e))
            }
            _ => Ok(()),
        };
        gone(self.base.rmdir(SERVICES), self.svc_path)?;
        if self.in_top && !self.top_is_base {
            let supervisor = self.base_path.join(SUPERVISOR);
            gone(self.base.rmdir(SUPERVISOR), supervisor)?;
            gone(self.top.rmdir(&basename(&self.base_path)), self.base_path)?;
        }
        Ok(())
    }
}

/// The last component of a cgroup's directory.
fn basename(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn subtree_write(dir: &Dir, path: &Path, set: Controllers, sign: char) -> Result<(), Error> {
    let file = "cgroup.subtree_control";
    let text = set.subtree_text(sign);
    let verb = if sign == '+' { "enable" } else { "disable" };
    write(dir, file, &text).map_err(|e| Error::new(format!("{verb} {set} in"), path.join(file), e))
}

fn remove_tree(parent: &Dir, parent_path: &Path, name: &str, depth: usize) -> Result<bool, Error> {
    let path = parent_path.join(name);
    let busy = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY));
    match parent.rmdir(name) {
        Ok(()) => return Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(true),
        Err(e) if busy(&e) && depth > 0 => {}
        Err(e) if busy(&e) => return Ok(false),
        Err(e) => return Err(Error::new("remove", path, e)),
    }
    // Busy: still populated, or holding cgroups of its own, which go first.
    let dir = parent
        .subdir(name)
        .map_err(|e| Error::new("open", &path, e))?;
    for child in child_cgroups(&dir).map_err(|e| Error::new("read", &path, e))? {
        if !remove_tree(&dir, &path, &child, depth - 1)? {
            return Ok(false);
        }
    }
    match parent.rmdir(name) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(true),
        Err(e) if busy(&e) => Ok(false),
        Err(e) => Err(Error::new("remove", path, e)),
    }
}

/// The cgroups in a cgroup: its directories (every control file's name has a dot).
fn child_cgroups(dir: &Dir) -> io::Result<Vec<String>> {
    let names = dir.names()?;
    Ok((names.into_iter())
        .filter_map(|n| n.into_string().ok())
        .filter(|n| !n.contains('.') && dir.subdir(n).is_ok())
        .collect())
}

/// How a kill went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Killed {
    /// Through `cgroup.kill`: every process, and whatever they fork, is dying.
    All,
    /// SIGKILL to each process listed; `complete` false when forks outran
    /// [`KILL_ROUNDS`] rounds: kill again later.
    Each { signalled: usize, complete: bool },
}

/// What `going status` shows of a service's cgroup: whatever its files say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// `memory.current`, bytes (memory controller).
    pub memory: Option<u64>,
    /// `usage_usec` of `cpu.stat` (always there).
    pub cpu_usec: Option<u64>,
    /// `pids.current` (pids controller): tasks, threads included.
    pub tasks: Option<u64>,
    /// The processes of `cgroup.procs`, its sub-cgroups' included (none if unreadable).
    pub pids: Vec<Pid>,
}

/// One service's cgroup, `B/svc/NAME`, held open.
///
/// Kept for every service, so kept small: its path in one allocation of its own size, what
/// only a memory limit needs boxed apart.
pub struct Group {
    path: Box<Path>,
    dir: Dir,
    /// `cgroup.events`, open for the loop to watch and for `populated`.
    events: File,
    /// `memory.events`, open while the OOM killer's kills are watched.
    memory_events: Option<Box<File>>,
    features: Features,
    fresh: bool,
    /// `oom_kill` of `memory.events` when last read; None: 0, never read.
    oom_kills: Option<Box<u64>>,
}

impl Group {
    /// Its fds are kept high (see [`sys::HIGH_FD`]): one per service costs a spawn nothing.
    fn open(dir: Dir, path: PathBuf, fresh: bool, features: Features) -> Result<Group, Error> {
        let dir = dir.high();
        let events = (dir.open_at("cgroup.events", libc::O_RDONLY, 0))
            .map_err(|e| Error::new("open", path.join("cgroup.events"), e))?;
        let events = File::from(sys::high(events.into()));
        let g = Group {
            path: path.into_boxed_path(),
            dir,
            events,
            memory_events: None,
            features,
            fresh,
            oom_kills: None,
        };
        // A fresh open reports a change until it is read: read it once, so that a watch
        // added now wakes for the next change only.
        g.populated()?;
        Ok(g)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether going created the cgroup just now (false: an earlier run left it).
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// The cgroup's directory, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn dir_fd(&self) -> RawFd {
        self.dir.fd()
    }

    /// Moves process `pid` (all its threads) into the cgroup: what an older going started
    /// without cgroups, when it is adopted.
    pub fn attach(&self, pid: Pid) -> Result<(), Error> {
        write(&self.dir, "cgroup.procs", &pid.to_string())
            .map_err(|e| Error::new(format!("move process {pid} into"), &*self.path, e))
    }

    /// `cgroup.events`, for the loop's epoll (EPOLLPRI: see [`sys::Epoll::add_priority`]).
    /// Each wake-up is cleared by reading it: [`Group::populated`].
    pub fn events_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    pub fn events_path(&self) -> PathBuf {
        self.path.join("cgroup.events")
    }

    /// Whether any process is in the cgroup or below it (zombies are not). Reading clears
    /// the watch's wake-up.
    pub fn populated(&self) -> Result<bool, Error> {
        let mut buf = [0u8; 256];
        let unable = |e| Error::new("read", self.events_path(), e);
        let n = self.events.read_at(&mut buf, 0).map_err(unable)?;
        let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
        match limits::field(text, "populated") {
            Some(p) => Ok(p != 0),
            None => Err(unable(io::Error::from(io::ErrorKind::InvalidData))),
        }
    }

    /// Every process of the service: in the cgroup and in those it made inside it.
    pub fn pids(&self) -> Result<Vec<Pid>, Error> {
        let mut out = Vec::new();
        pids_in(&self.dir, &self.path, MAX_DEPTH, &mut out)?;
        Ok(out)
    }

    /// Kills every process of the service: `cgroup.kill` where the kernel has it, else
    /// [`Group::kill_each`]. The cgroup is empty once `cgroup.events` says so.
    pub fn kill(&self) -> Result<Killed, Error> {
        if !self.features.kill {
            return self.kill_each();
        }
        write(&self.dir, "cgroup.kill", "1")
            .map_err(|e| Error::new("write", self.path.join("cgroup.kill"), e))?;
        Ok(Killed::All)
    }

    /// Sends `sig` to each process of the service, as `cgroup.procs` lists them (its own
    /// cgroups' included), but those of process group `but`: the stop signal to what is
    /// left once its leader is gone. How many were signalled; one gone meanwhile is none.
    pub fn signal_each(&self, sig: libc::c_int, but: Option<Pid>) -> Result<usize, Error> {
        let mut n = 0;
        let pids = self.pids()?.into_iter();
        for pid in pids.filter(|&p| but.is_none() || sys::process_group(p) != but) {
            match sys::kill(pid, sig) {
                Ok(()) => n += 1,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    return Err(Error::new(
                        format!("signal process {pid} of"),
                        &*self.path,
                        e,
                    ))
                }
            }
        }
        Ok(n)
    }

    /// SIGKILL to each process listed, listing again for what forked meanwhile; frozen
    /// first where the kernel can (freezing, nothing forks for long, and a pid listed is
    /// less likely to be recycled before it is signalled), thawed after, when the signals
    /// are pending.
    pub fn kill_each(&self) -> Result<Killed, Error> {
        let frozen = self.features.freeze && write(&self.dir, "cgroup.freeze", "1").is_ok();
        let killed = self.signal_rounds();
        if frozen {
            let thawed = write(&self.dir, "cgroup.freeze", "0");
            thawed.map_err(|e| Error::new("thaw", self.path.join("cgroup.freeze"), e))?;
        }
        killed
    }

    fn signal_rounds(&self) -> Result<Killed, Error> {
        let mut seen: Vec<Pid> = Vec::new();
        for _ in 0..KILL_ROUNDS {
            let pids = self.pids()?;
            let new: Vec<Pid> = pids.into_iter().filter(|p| !seen.contains(p)).collect();
            if new.is_empty() {
                return Ok(Killed::Each {
                    signalled: seen.len(),
                    complete: true,
                });
            }
            for pid in new {
                match sys::kill(pid, libc::SIGKILL) {
                    Err(e) if e.raw_os_error() != Some(libc::ESRCH) => {
                        return Err(Error::new(format!("kill process {pid} of"), &*self.path, e))
                    }
                    _ => seen.push(pid),
                }
            }
        }
        Ok(Killed::Each {
            signalled: seen.len(),
            complete: false,
        })
    }

    /// Writes the limits: from `old` to `new` (a reload: only what differs, a key that
    /// went back to its default), or with `old` None (a cgroup found, not made: every
    /// key, and the default of every other whose file is there). A fresh cgroup passes
    /// `Some(&Limits::default())`. Every failure is returned; the others are still written.
    pub fn apply(&self, old: Option<&Limits>, new: &Limits) -> Vec<Error> {
        let writes: Vec<(Key, String)> = match old {
            Some(old) => new.changes(old),
            None => (Key::ALL.into_iter())
                .map(|k| match new.get(k) {
                    Some(v) => (k, k.text(v)),
                    None => (k, k.default_text().to_string()),
                })
                .collect(),
        };
        let mut errors = Vec::new();
        for (key, text) in writes {
            let set = new.show(key);
            match write(&self.dir, key.file(), &text) {
                Ok(()) => {}
                // A default where the controller is off is already the case.
                Err(e) if set.is_none() && e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    let what = match set {
                        Some(set) => format!("set {set} in"),
                        None => format!("reset {} in", key.name()),
                    };
                    errors.push(Error::new(what, self.path.join(key.file()), e));
                }
            }
        }
        errors
    }

    /// Opens `memory.events` (the memory controller on) for the loop to watch, as
    /// `cgroup.events` is, and counts the OOM kills so far; None without the controller.
    /// Closed by [`Group::unwatch_oom`].
    pub fn watch_oom(&mut self) -> Result<Option<RawFd>, Error> {
        if self.memory_events.is_none() {
            let path = self.path.join("memory.events");
            match self.dir.open_at("memory.events", libc::O_RDONLY, 0) {
                Ok(f) => self.memory_events = Some(Box::new(File::from(sys::high(f.into())))),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                Err(e) => return Err(Error::new("open", path, e)),
            }
            self.new_oom_kills()?;
        }
        Ok(self.memory_events.as_ref().map(|f| f.as_raw_fd()))
    }

    /// Closes `memory.events`; returns its fd, for the loop to stop watching first.
    pub fn unwatch_oom(&mut self) -> Option<File> {
        self.memory_events.take().map(|f| *f)
    }

    /// How many OOM kills happened in the cgroup since the last call (0 without the
    /// memory controller), for `NAME[PID]: killed by the OOM killer (memory_max=100M)`.
    /// Reading clears the watch's wake-up.
    pub fn new_oom_kills(&mut self) -> Result<u64, Error> {
        let path = || self.path.join("memory.events");
        let text = match &self.memory_events {
            Some(f) => {
                let mut buf = [0u8; 512];
                let n = f
                    .read_at(&mut buf, 0)
                    .map_err(|e| Error::new("read", path(), e))?;
                String::from_utf8_lossy(&buf[..n]).into_owned()
            }
            None => match read(&self.dir, "memory.events") {
                Ok(text) => text,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => String::new(),
                Err(e) => return Err(Error::new("read", path(), e)),
            },
        };
        let count = limits::oom_kills(&text).unwrap_or(0);
        // A controller disabled and enabled again starts from 0.
        let new = count.saturating_sub(self.oom_kills.as_deref().map_or(0, |n| *n));
        if count != 0 || self.oom_kills.is_some() {
            self.oom_kills = Some(Box::new(count));
        }
        Ok(new)
    }

    /// Memory, CPU time and processes, from whichever files the enabled controllers give.
    pub fn usage(&self) -> Usage {
        let num = |file: &str, key: Option<&str>| {
            let text = read(&self.dir, file).ok()?;
            match key {
                Some(key) => limits::field(&text, key),
                None => text.trim().parse().ok(),
            }
        };
        Usage {
            memory: num("memory.current", None),
            cpu_usec: num("cpu.stat", Some("usage_usec")),
            tasks: num("pids.current", None),
            pids: self.pids().unwrap_or_default(),
        }
    }
}

fn pids_in(dir: &Dir, path: &Path, depth: usize, out: &mut Vec<Pid>) -> Result<(), Error> {
    let procs = (read(dir, "cgroup.procs"))
        .map_err(|e| Error::new("read", path.join("cgroup.procs"), e))?;
    out.extend(procs.lines().filter_map(|l| l.trim().parse::<Pid>().ok()));
    if depth == 0 {
        return Ok(());
    }
    for child in child_cgroups(dir).map_err(|e| Error::new("read", path, e))? {
        let sub = dir
            .subdir(&child)
            .map_err(|e| Error::new("open", path.join(&child), e))?;
        pids_in(&sub, &path.join(&child), depth - 1, out)?;
    }
    Ok(())
}

fn exists(dir: &Dir, name: &str) -> bool {
    dir.open_at(name, libc::O_PATH, 0).is_ok()
}

fn mkdir(dir: &Dir, name: &str) -> io::Result<()> {
    match dir.mkdir(name, 0o755) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
        _ => Ok(()),
    }
}

fn read(dir: &Dir, name: &str) -> io::Result<String> {
    let mut text = String::new();
    dir.open_at(name, libc::O_RDONLY, 0)?
        .read_to_string(&mut text)?;
    Ok(text)
}

/// One write(2): a cgroup file takes one value per write, and fails it whole.
fn write(dir: &Dir, name: &str, text: &str) -> io::Result<()> {
    let mut f = dir.open_at(name, libc::O_WRONLY | libc::O_TRUNC, 0)?;
    match f.write(text.as_bytes())? {
        n if n == text.len() => Ok(()),
        _ => Err(io::Error::from(io::ErrorKind::WriteZero)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// This machine's (a hybrid layout), trimmed.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PURE: &str = "\
25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    /// A container without a cgroup namespace: the host's hierarchy, from its own cgroup.
    const DOCKER: &str = "\
800 790 0:30 /docker/abc /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
";

    #[test]
    fn the_v2_line_of_proc_cgroup() {
        let hybrid = "9:name=systemd:/\n4:memory:/x/y\n0::/\n";
        assert_eq!(own_cgroup(hybrid), Some("/"));
        assert_eq!(
            own_cgroup("0::/system.slice/going.service\n"),
            Some("/system.slice/going.service")
        );
        assert_eq!(own_cgroup("0::/a:b c\n"), Some("/a:b c"));
        assert_eq!(own_cgroup("4:memory:/\n1:cpu:/\n"), None);
        assert_eq!(own_cgroup("0::\n"), None);
    }

    #[test]
    fn mountinfo_gives_the_cgroup2_mount_and_the_v1_controllers() {
        let (v2, v1) = mounts(HYBRID);
        assert_eq!(
            v2,
            [Mount {
                point: "/sys/fs/cgroup/unified".into(),
                root: "/".into(),
                read_only: false
            }]
        );
        let names: Vec<(&str, &str)> = v1.iter().map(|(c, p)| (c.name(), &p[..])).collect();
        assert_eq!(
            names,
            [
                ("cpu", "/sys/fs/cgroup/cpu"),
                ("memory", "/sys/fs/cgroup/memory"),
                ("io", "/sys/fs/cgroup/blkio"),
                ("pids", "/sys/fs/cgroup/pids")
            ]
        );
        let (v2, v1) = mounts(PURE);
        assert_eq!(v2[0].point, Path::new("/sys/fs/cgroup"));
        assert!(v1.is_empty());
        let (v2, _) = mounts(DOCKER);
        assert_eq!(
            (v2[0].root.as_str(), v2[0].read_only),
            ("/docker/abc", true)
        );
        let (v2, _) = mounts("1 2 0:1 / /mnt/my\\040cg rw shared:1 master:2 - cgroup2 none ro\n");
        assert_eq!(v2[0].point, Path::new("/mnt/my cg"));
        assert!(v2[0].read_only, "read-only by its super options");
        assert_eq!(unescape("a\\134b\\011c\\12"), "a\\b\tc\\12");
        assert_eq!(mounts("garbage\n\n1 2 3 - cgroup2\n").0, []);
    }

    fn lay(top: &str, base: &str, in_top: bool) -> Layout {
        Layout {
            top: top.into(),
            base: base.into(),
            in_top,
        }
    }

    #[test]
    fn the_layout_follows_where_going_finds_itself() {
        // Started by init in the root, by a shell in its session, as a container's PID 1.
        assert_eq!(layout("/", "going"), lay("/", "/going", true));
        assert_eq!(
            layout("/user.slice/session-1.scope", "going"),
            lay(
                "/user.slice/session-1.scope",
                "/user.slice/session-1.scope/going",
                true
            )
        );
        // Under systemd with Delegate=yes alone.
        assert_eq!(
            layout("/system.slice/going.service", "going"),
            lay(
                "/system.slice/going.service",
                "/system.slice/going.service/going",
                true
            )
        );
        // Where it moved itself, then exec'd itself (an upgrade).
        assert_eq!(
            layout("/going/supervisor", "going"),
            lay("/", "/going", false)
        );
        assert_eq!(
            layout("/system.slice/going.service/test/supervisor", "test"),
            lay(
                "/system.slice/going.service",
                "/system.slice/going.service/test",
                false
            )
        );
        // systemd's DelegateSubgroup=supervisor: the unit's cgroup is B and C.
        assert_eq!(
            layout("/system.slice/going.service/supervisor", "going"),
            lay(
                "/system.slice/going.service",
                "/system.slice/going.service",
                false
            )
        );
        // A cgroup named supervisor at the root is nobody's subgroup.
        assert_eq!(
            layout("/supervisor", "going"),
            lay("/supervisor", "/supervisor/going", true)
        );
    }

    #[test]
    fn discovery_says_where_or_why_not() {
        let f = find(7, "0::/\n", HYBRID, "going").unwrap();
        assert_eq!(
            f.path(&f.layout.base),
            Path::new("/sys/fs/cgroup/unified/going")
        );
        assert_eq!(f.path("/"), Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(f.v1.len(), 4);
        let f = find(7, "0::/system.slice/going.service\n", PURE, "going").unwrap();
        assert_eq!(
            f.path(&f.layout.base),
            Path::new("/sys/fs/cgroup/system.slice/going.service/going")
        );
        // A container without a cgroup namespace sees its own cgroup as the mount's root.
        let f = find(7, "0::/docker/abc\n", DOCKER, "going").unwrap();
        assert_eq!(f.path(&f.layout.top), Path::new("/sys/fs/cgroup"));
        assert_eq!(f.path(&f.layout.base), Path::new("/sys/fs/cgroup/going"));
        assert_eq!(
            f.open().map(|_| ()).unwrap_err().to_string(),
            "/sys/fs/cgroup is mounted read-only"
        );
        let why = |cg: &str, mi: &str| find(7, cg, mi, "going").unwrap_err().to_string();
        assert_eq!(why("0::/docker/abcd\n", DOCKER), "going's cgroup /docker/abcd is outside the cgroup2 filesystem mounted at /sys/fs/cgroup");
        assert_eq!(
            why(
                "0::/\n",
                "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
            ),
            "no cgroup2 filesystem is mounted"
        );
        assert_eq!(why("1:cpu:/\n", PURE), "this kernel has no cgroup v2");
    }

    #[test]
    fn discovery_on_this_machine() {
        let me = sys::getpid();
        let text = fs::read_to_string("/proc/self/cgroup").unwrap();
        match discover(me, NAME) {
            Ok(f) => {
                assert_eq!(Some(f.own.as_str()), own_cgroup(&text));
                assert_eq!(sys::fs_type(&f.mount.point).unwrap(), CGROUP2_MAGIC);
                assert!(f.path(&f.own).is_dir());
                eprintln!(
                    "here: cgroups: {} (available: {:?})",
                    f.path(&f.layout.base).display(),
                    f.available()
                );
            }
            Err(why) => {
                // Not vacuous: the reason must be what /proc says.
                eprintln!("here: cgroups: not used: {why}");
                let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
                match why {
                    NotUsed::NoEntry => assert_eq!(own_cgroup(&text), None),
                    NotUsed::NotMounted => assert!(mounts(&mountinfo).0.is_empty()),
                    NotUsed::Outside { .. } => assert!(!mounts(&mountinfo).0.is_empty()),
                    other => panic!("discovery reads only /proc: {other}"),
                }
            }
        }
    }

    /// A directory standing in for a cgroup hierarchy, removed on drop: files are what
    /// the kernel would show, written by the test where the kernel would change them.
    struct Scratch(PathBuf);

    fn unique(what: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{what}-{}-{n}-{nanos}", std::process::id())
    }

    impl Scratch {
        fn new() -> Scratch {
            let p = std::env::temp_dir().join(unique("going-cgroup-test"));
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }

        /// A cgroup at `rel` offering `controllers`; the root has fewer files.
        fn cgroup(&self, rel: &str, controllers: &str, root: bool) {
            let dir = self.0.join(rel);
            fs::create_dir_all(&dir).unwrap();
            let mut files = vec![
                ("cgroup.controllers", controllers),
                ("cgroup.subtree_control", ""),
                ("cgroup.procs", ""),
                ("cpu.stat", "usage_usec 0\n"),
            ];
            if !root {
                files.extend([
                    ("cgroup.type", "domain\n"),
                    ("cgroup.events", "populated 0\nfrozen 0\n"),
                    ("cgroup.kill", ""),
                    ("cgroup.freeze", "0\n"),
                ]);
            }
            for (name, text) in files {
                fs::write(dir.join(name), text).unwrap();
            }
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.0.join(rel)).unwrap()
        }

        fn write(&self, rel: &str, text: &str) {
            fs::write(self.0.join(rel), text).unwrap();
        }

        /// C at `/top`, B at `/top/going`, `B/svc` and `B/supervisor` in place.
        fn tree(&self, controllers: &str, root: bool, in_top: bool) -> Found {
            self.cgroup("top", controllers, root);
            for sub in ["top/going", "top/going/svc", "top/going/supervisor"] {
                self.cgroup(sub, "", false);
            }
            Found {
                pid: sys::getpid(),
                mount: Mount {
                    point: self.0.clone(),
                    root: "/".into(),
                    read_only: false,
                },
                own: "/top".into(),
                layout: lay("/top", "/top/going", in_top),
                v1: Vec::new(),
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const ALL: &str = "cpu io memory pids";

    #[test]
    fn controllers_are_handed_down_when_needed_and_going_leaves_c_first() {
        let s = Scratch::new();
        let mut cg = s.tree(ALL, false, true).open().unwrap();
        assert_eq!(cg.path(), s.0.join("top/going"));
        assert_eq!(
            cg.available(),
            &Available::Controllers {
                have: Controllers::parse(ALL),
                v1: vec![],
                note: None
            }
        );
        cg.set_controllers(Controllers::NONE).unwrap();
        assert_eq!(
            s.read("top/going/supervisor/cgroup.procs"),
            "",
            "no move for nothing"
        );
        assert_eq!(s.read("top/cgroup.subtree_control"), "");

        cg.set_controllers(Controllers::parse("pids memory"))
            .unwrap();
        assert_eq!(
            s.read("top/going/supervisor/cgroup.procs"),
            "0",
            "going left C"
        );
        for at in ["top", "top/going", "top/going/svc"] {
            let file = format!("{at}/cgroup.subtree_control");
            assert_eq!(s.read(&file), "+memory +pids", "{at}");
        }
        assert_eq!(cg.enabled(), Controllers::parse("memory pids"));
        // What the kernel would show now.
        s.write("top/cgroup.subtree_control", "memory pids\n");

        // No service needs pids any more: off below B, left on in C.
        cg.set_controllers(Controllers::parse("memory")).unwrap();
        assert_eq!(s.read("top/going/svc/cgroup.subtree_control"), "-pids");
        assert_eq!(s.read("top/going/cgroup.subtree_control"), "-pids");
        assert_eq!(s.read("top/cgroup.subtree_control"), "memory pids\n");

        // Back on: C has it already, so only B and svc are written.
        s.write("top/going/supervisor/cgroup.procs", "");
        cg.set_controllers(Controllers::parse("memory pids"))
            .unwrap();
        assert_eq!(s.read("top/cgroup.subtree_control"), "memory pids\n");
        assert_eq!(s.read("top/going/svc/cgroup.subtree_control"), "+pids");
        assert_eq!(s.read("top/going/supervisor/cgroup.procs"), "");

        // A controller C does not offer is refused before anything is written.
        let e = cg
            .set_controllers(Controllers::parse("memory pids hugetlb"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "unable to enable hugetlb below {}: Operation not supported",
                s.0.join("top").display()
            )
        );

        // Nothing new, nothing written.
        s.write("top/going/svc/cgroup.subtree_control", "memory pids\n");
        cg.set_controllers(Controllers::parse("pids memory"))
            .unwrap();
        assert_eq!(
            s.read("top/going/svc/cgroup.subtree_control"),
            "memory pids\n"
        );
    }

    #[test]
    fn in_the_root_or_a_delegated_subgroup_going_stays_where_it_is() {
        let s = Scratch::new();
        let mut cg = s.tree(ALL, true, true).open().unwrap();
        cg.set_controllers(Controllers::parse("cpu")).unwrap();
        assert_eq!(s.read("top/cgroup.subtree_control"), "+cpu");
        assert_eq!(
            s.read("top/going/supervisor/cgroup.procs"),
            "",
            "the root is exempt"
        );

        // DelegateSubgroup=supervisor: B is the unit's cgroup, nothing above it is written.
        let s = Scratch::new();
        s.cgroup("unit", "io memory", false);
        s.cgroup("unit/svc", "", false);
        let mut found = s.tree("", false, false);
        found.own = "/unit/supervisor".into();
        found.layout = layout(&found.own, NAME);
        let mut cg = found.open().unwrap();
        assert_eq!(cg.path(), s.0.join("unit"));
        assert_eq!(cg.available().check(Key::IoWeight), Ok(()));
        cg.set_controllers(Controllers::parse("io")).unwrap();
        assert_eq!(s.read("unit/cgroup.subtree_control"), "+io");
        assert_eq!(s.read("unit/svc/cgroup.subtree_control"), "+io");
        assert_eq!(s.read("top/cgroup.subtree_control"), "");
    }

    #[test]
    fn what_keeps_controllers_from_going_is_said() {
        let s = Scratch::new();
        let found = s.tree(ALL, false, true);
        s.write("top/cgroup.procs", &format!("1\n{}\n77\n", sys::getpid()));
        let msg = found.available().check(Key::MemoryMax).unwrap_err();
        let top = s.0.join("top");
        assert_eq!(
            msg,
            format!("memory_max needs the memory controller, which this system does not offer to going (available: none; going shares {} with other processes (1, 77), so it cannot hand controllers down)", top.display())
        );
        // The root may hold processes and hand controllers down.
        let s = Scratch::new();
        let found = s.tree(ALL, true, true);
        s.write("top/cgroup.procs", "1\n77\n");
        assert_eq!(found.available().check(Key::MemoryMax), Ok(()));
        // As may a going that already left C.
        let s = Scratch::new();
        let found = s.tree(ALL, false, false);
        s.write("top/cgroup.procs", "1\n77\n");
        assert_eq!(found.available().check(Key::PidsMax), Ok(()));
        let mut ro = found.clone();
        ro.mount.read_only = true;
        assert_eq!(
            ro.available().check(Key::PidsMax).unwrap_err(),
            format!("pids_max needs the pids controller of cgroup v2, and going uses no cgroups: {} is mounted read-only", s.0.display())
        );
    }

    #[test]
    fn one_going_per_subtree() {
        let s = Scratch::new();
        let found = s.tree(ALL, false, false);
        let held = found.open().unwrap();
        let again = found.open().map(|_| ()).unwrap_err();
        assert_eq!(
            again.to_string(),
            format!(
                "{} is in use by another going (pid {})",
                s.0.join("top/going").display(),
                sys::getpid()
            )
        );
        drop(held);
        // Released with the directory: once a child another test forked meanwhile, which
        // shares the open directory until its exec, has exec'd too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while found.open().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "released with the directory"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// A service's cgroup in a scratch tree, with the files of every limit.
    fn scratch_group(s: &Scratch) -> (Cgroups, Group) {
        let cg = s.tree(ALL, false, false).open().unwrap();
        s.cgroup("top/going/svc/web", "", false);
        for (file, text) in [
            ("memory.max", "max\n"),
            ("memory.high", "max\n"),
            ("memory.swap.max", "max\n"),
            ("pids.max", "max\n"),
            ("cpu.weight", "100\n"),
            ("cpu.max", "max 100000\n"),
            ("io.weight", "default 100\n"),
        ] {
            s.write(&format!("top/going/svc/web/{file}"), text);
        }
        let g = cg.group("web").unwrap();
        (cg, g)
    }

    fn limits(pairs: &[(&str, &str)]) -> Limits {
        let mut l = Limits::default();
        for (k, v) in pairs {
            l.set(Key::by_name(k).unwrap(), v).unwrap();
        }
        l
    }

    /// Writes `l` (from nothing set) into `g` and checks every file, as the kernel reads
    /// them back for values that are whole pages.
    fn check_writes(g: &Group, dir: &Path, l: &Limits, read_back: bool) {
        assert!(g.apply(Some(&Limits::default()), l).is_empty());
        let want = [
            ("memory_max", "memory.max", "104857600"),
            ("pids_max", "pids.max", "64"),
            ("cpu_weight", "cpu.weight", "200"),
            ("cpu_max", "cpu.max", "50000 100000"),
            ("io_weight", "io.weight", "default 300"),
        ];
        for (key, file, text) in want {
            if l.get(Key::by_name(key).unwrap()).is_none() {
                continue;
            }
            let got = fs::read_to_string(dir.join(file)).unwrap();
            let got = if read_back { got.trim_end() } else { &got[..] };
            assert_eq!(got, text, "{file}");
        }
    }

    const SOME: [(&str, &str); 5] = [
        ("memory_max", "100M"),
        ("pids_max", "64"),
        ("cpu_weight", "200"),
        ("cpu_max", "50%"),
        ("io_weight", "300"),
    ];

    #[test]
    fn limits_are_written_and_changed_in_place() {
        let s = Scratch::new();
        let (_cg, g) = scratch_group(&s);
        assert!(!g.fresh(), "the scratch made it first");
        let web = |f: &str| s.read(&format!("top/going/svc/web/{f}"));
        let l = limits(&SOME);
        check_writes(&g, g.path(), &l, false);
        assert_eq!(web("memory.high"), "max\n", "not set, not written");

        // A reload: only what differs is written; what went is put back.
        for f in [
            "memory.max",
            "pids.max",
            "cpu.weight",
            "cpu.max",
            "io.weight",
        ] {
            s.write(&format!("top/going/svc/web/{f}"), "untouched");
        }
        let l2 = limits(&[
            ("memory_max", "100M"),
            ("pids_max", "65"),
            ("cpu_max", "50%"),
            ("io_weight", "300"),
            ("memory_high", "80M"),
        ]);
        assert!(g.apply(Some(&l), &l2).is_empty());
        assert_eq!(web("memory.max"), "untouched");
        assert_eq!(web("pids.max"), "65");
        assert_eq!(web("cpu.weight"), "100");
        assert_eq!(web("cpu.max"), "untouched");
        assert_eq!(web("memory.high"), "83886080");

        // A cgroup found, not made: everything, defaults included.
        assert!(g.apply(None, &l2).is_empty());
        assert_eq!(web("cpu.max"), "50000 100000");
        assert_eq!(web("memory.swap.max"), "max");

        // A file the kernel does not have fails the key that needs it, and no other.
        fs::remove_file(g.path().join("io.weight")).unwrap();
        fs::remove_file(g.path().join("memory.swap.max")).unwrap();
        let errors = g.apply(None, &l2);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].errno(), Some(libc::ENOENT));
        assert_eq!(
            errors[0].to_string(),
            format!(
                "unable to set io_weight=300 in {}: No such file or directory",
                g.path().join("io.weight").display()
            )
        );
        assert_eq!(web("pids.max"), "65");
    }

    #[test]
    fn oom_kills_are_told_once() {
        let s = Scratch::new();
        let (_cg, mut g) = scratch_group(&s);
        assert_eq!(
            g.new_oom_kills().unwrap(),
            0,
            "no memory controller, no count"
        );
        let events = g.path().join("memory.events");
        let oom = |n: u32| format!("low 0\nhigh 0\nmax 4\noom 1\noom_kill {n}\noom_group_kill 0\n");
        fs::write(&events, oom(2)).unwrap();
        assert_eq!(g.new_oom_kills().unwrap(), 2);
        assert_eq!(g.new_oom_kills().unwrap(), 0);
        fs::write(&events, oom(3)).unwrap();
        assert_eq!(g.new_oom_kills().unwrap(), 1);
        // A cgroup left by an earlier run counts from what it had once watched.
        let mut again = _cg.group("web").unwrap();
        assert!(again.watch_oom().unwrap().is_some());
        assert_eq!(again.new_oom_kills().unwrap(), 0);
        fs::write(&events, oom(4)).unwrap();
        assert_eq!(
            again.new_oom_kills().unwrap(),
            1,
            "read through the watched file"
        );
        assert!(again.unwatch_oom().is_some());
    }

    #[test]
    fn usage_is_read_from_whatever_is_there() {
        let s = Scratch::new();
        let (_cg, g) = scratch_group(&s);
        assert_eq!(
            g.usage(),
            Usage {
                memory: None,
                cpu_usec: Some(0),
                tasks: None,
                pids: vec![]
            }
        );
        let web = g.path();
        fs::write(web.join("memory.current"), "1048576\n").unwrap();
        fs::write(web.join("cpu.stat"), "usage_usec 1234\nuser_usec 1000\n").unwrap();
        fs::write(web.join("pids.current"), "3\n").unwrap();
        fs::write(web.join("cgroup.procs"), "10\n11\n").unwrap();
        s.cgroup("top/going/svc/web/inner", "", false);
        fs::write(web.join("inner/cgroup.procs"), "12\n").unwrap();
        assert_eq!(
            g.usage(),
            Usage {
                memory: Some(1 << 20),
                cpu_usec: Some(1234),
                tasks: Some(3),
                pids: vec![10, 11, 12]
            }
        );
        assert_eq!(g.pids().unwrap(), [10, 11, 12]);
        fs::write(web.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(g.populated().unwrap());
    }

    #[test]
    fn leftovers_are_listed_and_removed_once_empty() {
        let s = Scratch::new();
        let (cg, g) = scratch_group(&s);
        s.cgroup("top/going/svc/db", "", false);
        s.cgroup("top/going/svc/db/inner", "", false);
        let mut names = cg.existing().unwrap();
        names.sort();
        assert_eq!(names, ["db", "web"]);
        assert!(cg.group("../x").is_err());
        assert!(cg.group("a.b").is_err(), "a dot names a control file");
        assert!(cg.remove("../../x").is_err());

        // Scratch directories are never empty, as a populated cgroup is never removable.
        assert!(!cg.remove("web").unwrap());
        assert!(!cg.remove("db").unwrap());
        let clear = |rel: &str| {
            for e in fs::read_dir(s.0.join(rel)).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    fs::remove_file(e.path()).unwrap();
                }
            }
        };
        clear("top/going/svc/db");
        clear("top/going/svc/db/inner");
        assert!(cg.remove("db").unwrap(), "its own cgroups first");
        assert!(!s.0.join("top/going/svc/db").exists());
        assert!(cg.remove("db").unwrap(), "gone is gone");
        drop(g);
        clear("top/going/svc/web");
        assert!(cg.remove("web").unwrap());
        assert_eq!(cg.existing().unwrap(), Vec::<String>::new());
    }

    /// A subtree of the machine's cgroup2 hierarchy owned by one test: every process in
    /// it killed and every cgroup removed on drop.
    struct RealTree {
        found: Found,
        top: PathBuf,
    }

    impl RealTree {
        fn new() -> Result<RealTree, String> {
            if sys::geteuid() != 0 {
                return Err("not root".into());
            }
            let here = discover(sys::getpid(), NAME).map_err(|e| e.to_string())?;
            if here.mount.read_only {
                return Err(format!("{} is read-only", here.mount.point.display()));
            }
            let top = join(&here.mount.root, &unique("going-unit"));
            let path = here.path(&top);
            fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let found = Found {
                layout: lay(&top, &join(&top, NAME), false),
                ..here
            };
            Ok(RealTree { found, top: path })
        }
    }

    impl Drop for RealTree {
        fn drop(&mut self) {
            // After a failed test: kill what is left, wait for the cgroup to empty (its
            // cgroup.events, with a deadline), remove the cgroups bottom-up.
            let top = Dir::open(&self.top).unwrap();
            let _ = write(&top, "cgroup.kill", "1");
            let events = top.open_at("cgroup.events", libc::O_RDONLY, 0).unwrap();
            let epoll = sys::Epoll::new().unwrap();
            epoll.add_priority(events.as_raw_fd(), 1).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let populated = || read(&top, "cgroup.events").unwrap().contains("populated 1");
            while populated() && Instant::now() < deadline {
                let _ = epoll.wait(&mut [sys::NO_EVENT; 1], 100);
                let _ = events.read_at(&mut [0; 64], 0);
            }
            fn rm(p: &Path) {
                for e in fs::read_dir(p).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        rm(&e.path());
                    }
                }
                let _ = fs::remove_dir(p);
            }
            rm(&self.top);
            assert!(!self.top.exists(), "{} left behind", self.top.display());
        }
    }

    /// Waits until the cgroup reads `want` and every watch in `tokens` has woken since,
    /// reading `cgroup.events` at each wake-up (which clears it) and draining inotify.
    /// Returns how long that took.
    fn await_populated(
        epoll: &sys::Epoll,
        inotify: &mut inotify::Inotify,
        g: &Group,
        tokens: &[u64],
        want: bool,
    ) -> Duration {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let mut woke: Vec<u64> = Vec::new();
        loop {
            if tokens.iter().all(|t| woke.contains(t)) && g.populated().unwrap() == want {
                return start.elapsed();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no wake-up with populated {want} (saw {woke:?})"
            );
            let mut events = [sys::NO_EVENT; 8];
            let n = epoll
                .wait(&mut events, left.as_millis() as i32 + 1)
                .unwrap();
            for ev in &events[..n] {
                let t = sys::token(ev);
                if t == 2 {
                    while inotify
                        .read_events(&mut [0; 1024])
                        .is_ok_and(|e| e.count() > 0)
                    {}
                } else {
                    g.populated().unwrap();
                }
                woke.push(t);
            }
        }
    }

    fn session(pid: Pid) -> Pid {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[3].parse().unwrap()
    }

    #[test]
    fn a_service_cgroup_is_watched_killed_and_removed() {
        match RealTree::new() {
            Ok(tree) => on_the_real_hierarchy(&tree),
            Err(why) => {
                eprintln!("cgroup2 hierarchy not usable here ({why}): checking a scratch directory standing in for one");
                on_a_scratch_directory();
            }
        }
    }

    fn on_the_real_hierarchy(tree: &RealTree) {
        let mut cg = tree.found.open().unwrap();
        eprintln!(
            "on the real hierarchy: {} ({:?}, {:?})",
            cg.path().display(),
            cg.features(),
            cg.available()
        );
        assert!(matches!(tree.found.open(), Err(NotUsed::InUse { .. })));
        cg.set_controllers(Controllers::NONE).unwrap();
        let web = cg.group("web").unwrap();
        assert!(web.fresh() && !web.populated().unwrap());
        assert_eq!(web.pids().unwrap(), []);

        // Both watches: epoll's EPOLLPRI on the open file, inotify's IN_MODIFY on its path.
        let epoll = sys::Epoll::new().unwrap();
        epoll.add_priority(web.events_fd(), 1).unwrap();
        let mut inotify = inotify::Inotify::init().unwrap();
        (inotify.watches())
            .add(web.events_path(), inotify::WatchMask::MODIFY)
            .unwrap();
        epoll.add(inotify.as_raw_fd(), 2).unwrap();
        let mut none = [sys::NO_EVENT; 4];
        assert_eq!(
            epoll.wait(&mut none, 0).unwrap(),
            0,
            "no wake-up before a change"
        );

        // A service whose helper leaves its session, started once it is in the cgroup.
        let mut sh = Command::new("sh")
            .args([
                "-c",
                "read x; setsid sh -c 'echo $$; exec sleep 1000' & exec sleep 1000",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let main = sh.id() as Pid;
        web.attach(main).unwrap();
        writeln!(sh.stdin.as_mut().unwrap(), "go").unwrap();
        let mut line = String::new();
        BufReader::new(sh.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let helper: Pid = line.trim().parse().unwrap();
        await_populated(&epoll, &mut inotify, &web, &[1, 2], true);
        let pids = web.pids().unwrap();
        assert!(pids.contains(&main) && pids.contains(&helper), "{pids:?}");
        assert_ne!(
            session(helper),
            session(main),
            "the helper left the session"
        );
        assert!(!cg.remove("web").unwrap(), "busy while populated");

        let killed = web.kill().unwrap();
        let took = await_populated(&epoll, &mut inotify, &web, &[1, 2], false);
        eprintln!("cgroup.kill to both watches saying empty: {took:?}");
        assert_eq!(killed == Killed::All, cg.features().kill);
        assert_eq!(sh.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(web.pids().unwrap(), [], "the helper too");
        assert!(web.usage().cpu_usec.is_some());

        // The fallback for kernels before 5.14; a process moved in as an adopted one is.
        let old = cg.group("old").unwrap();
        let mut sleep = Command::new("sleep").arg("1000").spawn().unwrap();
        old.attach(sleep.id() as Pid).unwrap();
        epoll.add_priority(old.events_fd(), 3).unwrap();
        assert!(old.populated().unwrap());
        let killed = old.kill_each().unwrap();
        assert_eq!(
            killed,
            Killed::Each {
                signalled: 1,
                complete: true
            }
        );
        let took = await_populated(&epoll, &mut inotify, &old, &[3], false);
        eprintln!("kill_each to epoll saying empty: {took:?}");
        assert_eq!(sleep.wait().unwrap().signal(), Some(libc::SIGKILL));
        if cg.features().freeze {
            assert_eq!(
                read(&old.dir, "cgroup.freeze").unwrap().trim(),
                "0",
                "thawed"
            );
        }

        let mut names = cg.existing().unwrap();
        names.sort();
        assert_eq!(names, ["old", "web"]);
        for g in [&web, &old] {
            epoll.delete(g.events_fd());
        }
        assert!(cg.remove("web").unwrap() && cg.remove("old").unwrap());
        assert!(!web.path().exists() && !old.path().exists());
    }

    fn on_a_scratch_directory() {
        let s = Scratch::new();
        let (cg, g) = scratch_group(&s);
        let mut inotify = inotify::Inotify::init().unwrap();
        (inotify.watches())
            .add(g.events_path(), inotify::WatchMask::MODIFY)
            .unwrap();
        let mut sleep = Command::new("sleep").arg("1000").spawn().unwrap();
        g.attach(sleep.id() as Pid).unwrap();
        assert_eq!(
            s.read("top/going/svc/web/cgroup.procs"),
            sleep.id().to_string()
        );
        assert_eq!(g.pids().unwrap(), [sleep.id() as Pid]);
        fs::write(g.events_path(), "populated 1\nfrozen 0\n").unwrap();
        assert!(g.populated().unwrap());
        assert!(inotify.read_events(&mut [0; 1024]).unwrap().count() > 0);
        assert_eq!(g.kill().unwrap(), Killed::All);
        assert_eq!(s.read("top/going/svc/web/cgroup.kill"), "1");
        assert_eq!(
            g.kill_each().unwrap(),
            Killed::Each {
                signalled: 1,
                complete: true
            }
        );
        assert_eq!(sleep.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(s.read("top/going/svc/web/cgroup.freeze"), "0", "thawed");
        assert!(!cg.remove("web").unwrap());
    }

    #[test]
    fn a_service_process_starts_in_its_cgroup_made_there_or_moving_itself() {
        let tree = match RealTree::new() {
            Ok(tree) => tree,
            Err(why) => return eprintln!("cgroup2 hierarchy not usable here ({why}): skipped"),
        };
        let cg = tree.found.open().unwrap();
        let web = cg.group("web").unwrap();
        // Kept high, where a child cloned sharing going's fds does not copy it: one that
        // moves itself gets a copy below the fds it keeps.
        assert!(web.dir_fd() >= sys::HIGH_FD, "{}", web.dir_fd());
        let null = (File::options().read(true).write(true))
            .open("/dev/null")
            .unwrap();
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let (paths, argv, root) = ([c("/bin/sleep")], [c("sleep"), c("1000")], c("/"));
        for made_there in [true, false] {
            let child = sys::spawn_child(&sys::Spawn {
                paths: &paths,
                argv: &argv,
                envp: &[],
                stdin: null.as_raw_fd(),
                stdout: null.as_raw_fd(),
                limits: &[],
                nice: None,
                chroot: None,
                creds: None,
                cwd: &root,
                umask: 0o022,
                ready: None,
                exec_fd: None,
                cgroup: Some((web.dir_fd(), made_there)),
            })
            .unwrap();
            // The exec-error pipe ends once the exec closed the child's end.
            let epoll = sys::Epoll::new().unwrap();
            epoll.add(child.report.as_raw_fd(), 1).unwrap();
            assert_eq!(epoll.wait(&mut [sys::NO_EVENT; 1], 10_000).unwrap(), 1);
            let n = File::from(child.report).read(&mut [0u8; 12]).unwrap();
            assert_eq!(n, 0, "exec'd (made there: {made_there})");
            let procs = read(&web.dir, "cgroup.procs").unwrap();
            assert_eq!(
                procs.trim(),
                child.pid.to_string(),
                "made there: {made_there}"
            );
            let pidfd = sys::pidfd_open(child.pid).unwrap();
            sys::kill_group(child.pid, libc::SIGKILL).unwrap();
            let epoll = sys::Epoll::new().unwrap();
            epoll.add(pidfd.as_raw_fd(), 1).unwrap();
            assert_eq!(epoll.wait(&mut [sys::NO_EVENT; 1], 10_000).unwrap(), 1);
            assert!(sys::reap_pid(child.pid).is_some());
        }
        drop(web);
        assert!(cg.remove("web").unwrap());
    }

    #[test]
    fn limits_are_written_to_a_real_cgroup_or_a_scratch_one() {
        let l = limits(&SOME);
        let tree = RealTree::new();
        let mut cg = match &tree {
            Ok(tree) => tree.found.open().unwrap(),
            Err(why) => {
                eprintln!("cgroup2 hierarchy not usable here ({why}): limits checked on a scratch directory");
                let s = Scratch::new();
                let (_cg, g) = scratch_group(&s);
                return check_writes(&g, g.path(), &l, false);
            }
        };
        let Available::Controllers { have, .. } = cg.available().clone() else {
            panic!("open, so available");
        };
        let usable = have.minus(Controllers::parse("cpuset hugetlb rdma misc dmem"));
        if usable.is_empty() {
            eprintln!(
                "no limit controller offered here (available: {have}): limits checked on a scratch directory; here a key fails naming its file"
            );
            let web = cg.group("web").unwrap();
            let errors = web.apply(Some(&Limits::default()), &l);
            assert_eq!(errors.len(), SOME.len());
            assert_eq!(
                errors[0].to_string(),
                format!(
                    "unable to set memory_max=100M in {}: No such file or directory",
                    web.path().join("memory.max").display()
                )
            );
            assert!(l.check(cg.available()).iter().any(|(k, m)| *k == Key::MemoryMax
                && m.starts_with("memory_max needs the memory controller, which this system does not offer to going")));
            drop(web);
            assert!(cg.remove("web").unwrap());
            let s = Scratch::new();
            let (_cg, g) = scratch_group(&s);
            return check_writes(&g, g.path(), &l, false);
        }
        eprintln!("limits checked on the real hierarchy with {usable}");
        let usable_keys: Vec<(&str, &str)> = (SOME.into_iter())
            .filter(|(k, _)| usable.contains(Key::by_name(k).unwrap().controller()))
            .collect();
        let l = limits(&usable_keys);
        cg.set_controllers(l.controllers()).unwrap();
        let web = cg.group("web").unwrap();
        check_writes(&web, web.path(), &l, true);
        drop(web);
        assert!(cg.remove("web").unwrap());
        cg.set_controllers(Controllers::NONE).unwrap();
    }
}
