//! Service files: which names count as services, how a file is read without ever blocking
//! (regular files on ordinary filesystems only, at most 64 KiB), and how its `key=value`
//! lines become [`Settings`].
//!
//! Invariant: a file either yields complete, valid `Settings` or every problem found in it,
//! each as `PATH:LINE: message`; nothing is silently dropped. A message quotes the file's
//! text with its control characters escaped, so that no file can drive the terminal of
//! `going check` or forge a log line. New keys are one row of [`KEYS`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::{Available, Key as LimitKey, Limits};

/// Files larger than this are refused: a service file is a few lines.
pub const MAX_FILE: u64 = 64 * 1024;

/// Where a first word without `/` is looked up; also the services' `PATH`.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a valid service file says. Two files with equal `Settings` run the same service,
/// so a reload compares these, not the bytes (a new comment restarts nothing). Names of
/// users and groups are resolved when the file is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The command split into words; never empty.
    pub cmd: Vec<String>,
    /// Who the service runs as; None: as going (root).
    pub creds: Option<Creds>,
    /// `HOME`, `USER` and `LOGNAME` from the user's entry.
    pub user_env: UserEnv,
    /// `env=` in file order; a later one wins.
    pub env: Vec<(String, String)>,
    /// Read at each start, so that secrets can live in a root-only file.
    pub env_file: Option<PathBuf>,
    pub cwd: PathBuf,
    pub chroot: Option<PathBuf>,
    pub umask: u32,
    pub nice: Option<i32>,
    /// (resource, soft, hard), in file order.
    pub limits: Vec<(i32, u64, u64)>,
    /// Whether the service's stdout and stderr go to syslog (`log=syslog`) or /dev/null.
    pub log: bool,
    /// These two only matter when the service is stopped: a change applies without a restart.
    pub stop_signal: i32,
    pub stop_timeout: Duration,
    /// Readiness, order, restart policy and finish hook: None when the file sets none of
    /// their keys, so that a service without them pays one pointer.
    pub life: Option<Box<Life>>,
    /// The cgroup limits (`memory_max`, `cpu_max`, …): None when the file sets none, so
    /// that a service without them pays one pointer. They apply without a restart.
    pub cgroup: Option<Box<CgroupLimits>>,
}

/// The cgroup limit keys of a file, and the line of each, for the error that names a
/// controller going cannot have (the lines are no setting: no part of the fingerprint,
/// nor of what needs a restart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub limits: Limits,
    pub lines: [usize; 7],
}

/// How a service says that it is ready (`ready=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// s6's notification fd: a line written to fd N.
    Fd(i32),
    /// systemd's sd_notify: `READY=1` to the socket in NOTIFY_SOCKET.
    Notify,
}

/// When a service that exited is started again (`restart=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    #[default]
    Always,
    /// Not after a successful exit (0 or an `ok_exit` code): it is done.
    OnFailure,
    /// A one-shot: it runs once, and its exit, whatever it is, is final.
    Never,
}

/// The keys most services do not set: readiness, start order, restart policy, finish
/// hook, essential, passed environment. Their defaults are 0.1.0's behaviour: up once
/// exec'd, no order, always restarted, PATH only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Life {
    pub ready: Option<Ready>,
    pub ready_timeout: Option<Duration>,
    /// Services that must be up before this one starts.
    pub after: Vec<String>,
    /// The line of the first `after=`, for the error of a cycle (not a setting: no part of
    /// the fingerprint, nor of what needs a restart).
    pub after_line: usize,
    pub restart: Restart,
    /// Exit codes that count as success besides 0.
    pub ok_exit: Vec<u8>,
    /// A command run after each exit, with the exit code and signal appended.
    pub finish: Vec<String>,
    /// Its end that nobody asked for ends going (`essential=yes`), with its status.
    pub essential: bool,
    /// Variables of going's own environment the service gets (`pass_env=`).
    pub pass_env: Option<PassEnv>,
}

/// What `pass_env=` passes of going's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassEnv {
    /// These names (one that is not set is skipped).
    Names(Vec<String>),
    /// All of it but going's own variables (`pass_env=*`).
    All,
}

impl Life {
    /// Whether `code` is a successful exit.
    pub fn ok(&self, code: i32) -> bool {
        code == 0 || (0..=255).contains(&code) && self.ok_exit.contains(&(code as u8))
    }
}

/// The defaults of a service without any lifecycle key.
static NO_LIFE: Life = Life {
    ready: None,
    ready_timeout: None,
    after: Vec::new(),
    after_line: 0,
    restart: Restart::Always,
    ok_exit: Vec::new(),
    finish: Vec::new(),
    essential: false,
    pass_env: None,
};

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            cmd: Vec::new(),
            creds: None,
            user_env: UserEnv::default(),
            env: Vec::new(),
            env_file: None,
            cwd: PathBuf::from("/"),
            chroot: None,
            umask: 0o022,
            nice: None,
            limits: Vec::new(),
            log: true,
            stop_signal: libc::SIGTERM,
            stop_timeout: Duration::from_secs(10),
            life: None,
            cgroup: None,
        }
    }
}

impl Settings {
    /// The settings' fingerprint (see [`crate::fingerprint`]): whether a file changed
    /// while going was not looking.
    pub fn fingerprint(&self) -> u64 {
        crate::fingerprint::of(self)
    }

    /// Whether the two differ in nothing that needs a restart: how the service is stopped,
    /// its order, its restart policy, its finish hook, how long its readiness may take and
    /// its cgroup limits (changed in place) apply to the process running; how it says it is
    /// ready does not.
    pub fn same_run(&self, other: &Settings) -> bool {
        let with_ours = Settings {
            stop_signal: self.stop_signal,
            stop_timeout: self.stop_timeout,
            life: self.life.clone(),
            cgroup: self.cgroup.clone(),
            ..other.clone()
        };
        let (a, b) = (self.life(), other.life());
        *self == with_ours && a.ready == b.ready && a.pass_env == b.pass_env
    }

    /// The lifecycle keys, their defaults where the file sets none.
    pub fn life(&self) -> &Life {
        self.life.as_deref().unwrap_or(&NO_LIFE)
    }

    fn life_mut(&mut self) -> &mut Life {
        self.life.get_or_insert_with(Box::default)
    }

    /// The cgroup limits, none where the file sets none.
    pub fn cgroup_limits(&self) -> &Limits {
        self.cgroup.as_ref().map_or(&Limits::NONE, |c| &c.limits)
    }
}

/// A user's `HOME`, `USER` and `LOGNAME`, shared by every service that runs as that user
/// (a hundred files saying `user=www` hold one copy: some 300 bytes each less).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserEnv(Option<std::rc::Rc<[(String, String)]>>);

thread_local! {
    /// The last user's environment made: the next file naming the same user shares it.
    static LAST_USER_ENV: std::cell::RefCell<UserEnv> = Default::default();
}

impl UserEnv {
    pub fn new(vars: Vec<(String, String)>) -> UserEnv {
        LAST_USER_ENV.with(|last| {
            let mut last = last.borrow_mut();
            if last[..] != vars[..] {
                *last = UserEnv(Some(vars.into()));
            }
            last.clone()
        })
    }
}

impl std::ops::Deref for UserEnv {
    type Target = [(String, String)];
    fn deref(&self) -> &[(String, String)] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl fmt::Debug for UserEnv {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self[..].fmt(f)
    }
}

/// The identity of a service: uid (None: going's own), primary gid, all its groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub uid: Option<u32>,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The `limit_*` keys and the resources they set.
pub const LIMITS: [(&str, i32); 8] = [
    ("limit_nofile", libc::RLIMIT_NOFILE as i32),
    ("limit_nproc", libc::RLIMIT_NPROC as i32),
    ("limit_core", libc::RLIMIT_CORE as i32),
    ("limit_memlock", libc::RLIMIT_MEMLOCK as i32),
    ("limit_as", libc::RLIMIT_AS as i32),
    ("limit_stack", libc::RLIMIT_STACK as i32),
    ("limit_cpu", libc::RLIMIT_CPU as i32),
    ("limit_fsize", libc::RLIMIT_FSIZE as i32),
];

/// (uid_t)-1 and (gid_t)-1: "no change" to setuid(2) and setgid(2), never an identity.
const NO_ID: u32 = u32::MAX;

/// The signals `stop_signal` accepts.
const STOP_SIGNALS: [(&str, i32); 7] = [
    ("TERM", libc::SIGTERM),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("HUP", libc::SIGHUP),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("KILL", libc::SIGKILL),
];

/// A file being parsed: the settings so far, and what `user=` and `group=` resolved to
/// (they combine once the whole file is read).
#[derive(Default)]
struct Draft {
    s: Settings,
    /// The user's entry if it has one, its uid, and whether it was given by name.
    user: Option<(Option<crate::sys::Passwd>, u32, bool)>,
    group: Option<u32>,
}

impl Draft {
    fn finish(mut self) -> Settings {
        self.s.creds = match (self.user, self.group) {
            (None, None) => None,
            // Only a group: going's uid with that group alone.
            (None, Some(gid)) => Some(Creds {
                uid: None,
                gid,
                groups: vec![gid],
            }),
            (Some((pw, uid, by_name)), group) => {
                // A uid without an entry and without group= runs with the gid of the same number.
                let gid = group.or(pw.as_ref().map(|p| p.gid)).unwrap_or(uid);
                // A user given by name gets its groups as initgroups(3) would; a bare uid none.
                let groups = match &pw {
                    Some(p) if by_name => crate::sys::group_list(&p.name, gid),
                    _ => vec![gid],
                };
                Some(Creds {
                    uid: Some(uid),
                    gid,
                    groups,
                })
            }
        };
        self.s
    }
}
/// Why a file or a directory could not be read: a system call's error, or a refusal.
#[derive(Debug)]
pub enum ReadError {
    /// `unable to VERB: strerror`.
    Io { verb: &'static str, err: io::Error },
    /// Why it is refused: not a regular file, too large, others may write it…
    Refused(String),
}

impl ReadError {
    /// Whether it was for want of a resource (fds, memory): worth another try soon.
    pub fn is_transient(&self) -> bool {
        let ReadError::Io { err, .. } = self else {
            return false;
        };
        matches!(
            err.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
        )
    }

    fn io(verb: &'static str) -> impl Fn(io::Error) -> ReadError {
        move |err| ReadError::Io { verb, err }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ReadError::Io { verb, err } => {
                write!(f, "unable to {verb}: {}", crate::log::Errno(err))
            }
            ReadError::Refused(why) => f.write_str(why),
        }
    }
}

/// Why CONFDIR as a whole is not read.
#[derive(Debug)]
pub struct DirError {
    pub dir: PathBuf,
    pub err: ReadError,
}

impl DirError {
    pub fn is_transient(&self) -> bool {
        self.err.is_transient()
    }
}

impl fmt::Display for DirError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let dir = self.dir.display();
        match &self.err {
            ReadError::Io { err, .. } => {
                write!(f, "unable to read {dir}: {}", crate::log::Errno(err))
            }
            ReadError::Refused(why) => write!(f, "{dir} is {why}: refused"),
        }
    }
}

/// One problem in a service file. `line` 0 means the file as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    pub line: usize,
    pub msg: String,
    /// The file could not be read for want of a resource (fds, memory).
    transient: bool,
}

impl FileError {
    /// A problem found in a file once it was read (a cycle among files, say).
    pub fn new(path: PathBuf, line: usize, msg: String) -> FileError {
        FileError {
            path,
            line,
            msg,
            transient: false,
        }
    }

    /// Worth another try soon: the file could not be read for want of a resource.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// The one way a problem in a file is told (`going check`, the log, `going status` and
/// `reload`): control characters in its text (an unknown key, a value, the path) are
/// escaped as `\xNN`, as in services' output.
impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        use std::os::unix::ffi::OsStrExt;
        let path = crate::output::escape(self.path.as_os_str().as_bytes());
        let msg = crate::output::escape(self.msg.as_bytes());
        match self.line {
            0 => write!(f, "{path}: {msg}"),
            n => write!(f, "{path}:{n}: {msg}"),
        }
    }
}

/// Boxed: a reload holds one per file in a map, whose nodes would otherwise be mostly
/// empty slots of this size.
pub type Parsed = Result<Box<Settings>, Vec<FileError>>;

/// A key of the file format: whether it may repeat, and how its value lands in the draft.
struct Key {
    name: &'static str,
    repeat: bool,
    required: bool,
    apply: fn(&mut Draft, &str) -> Result<(), String>,
}

const fn key(name: &'static str, apply: fn(&mut Draft, &str) -> Result<(), String>) -> Key {
    Key {
        name,
        repeat: false,
        required: false,
        apply,
    }
}

const KEYS: &[Key] = &[
    Key {
        required: true,
        ..key("cmd", |d, v| {
            d.s.cmd = split_words(v)?;
            // `cmd=""` or `cmd=' '` would pass here and fail at every start.
            match d.s.cmd.first() {
                None => Err("cmd is empty".into()),
                Some(w) if w.is_empty() => {
                    Err("cmd names no program: its first word is empty".into())
                }
                Some(w) if w.trim().is_empty() => {
                    Err("cmd names no program: its first word is blank".into())
                }
                Some(_) => Ok(()),
            }
        })
    },
    key("user", |d, v| {
        let lookup = |name: Option<&str>, uid| {
            crate::sys::passwd(name, uid)
                .map_err(|e| format!("unable to look up user \"{v}\": {}", crate::log::Errno(&e)))
        };
        let (pw, uid, by_name) = match v.parse::<u32>() {
            Ok(uid) => (lookup(None, uid)?, uid, false),
            Err(_) => {
                let pw = lookup(Some(v), 0)?.ok_or_else(|| format!("no such user \"{v}\""))?;
                let uid = pw.uid;
                (Some(pw), uid, true)
            }
        };
        if uid == NO_ID {
            return Err(format!(
                "user \"{v}\": uid {NO_ID} cannot be set: setuid(2) takes it for \"no change\""
            ));
        }
        if let Some(p) = &pw {
            d.s.user_env = UserEnv::new(vec![
                ("HOME".into(), p.home.clone()),
                ("USER".into(), p.name.clone()),
                ("LOGNAME".into(), p.name.clone()),
            ]);
        }
        d.user = Some((pw, uid, by_name));
        Ok(())
    }),
    key("group", |d, v| {
        let gid = match v.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => crate::sys::group_id(v)
                .map_err(|e| format!("unable to look up group \"{v}\": {}", crate::log::Errno(&e)))?
                .ok_or_else(|| format!("no such group \"{v}\""))?,
        };
        if gid == NO_ID {
            return Err(format!(
                "group \"{v}\": gid {NO_ID} cannot be set: setgid(2) takes it for \"no change\""
            ));
        }
        d.group = Some(gid);
        Ok(())
    }),
    Key {
        repeat: true,
        ..key("env", |d, v| {
            let (k, val) = v.split_once('=').ok_or("env needs KEY=VALUE")?;
            d.s.env.push(env_var(k, val.trim())?);
            Ok(())
        })
    },
    key("env_file", |d, v| {
        d.s.env_file = Some(absolute("env_file", v)?);
        Ok(())
    }),
    key("cwd", |d, v| {
        d.s.cwd = absolute("cwd", v)?;
        Ok(())
    }),
    key("chroot", |d, v| {
        d.s.chroot = Some(absolute("chroot", v)?);
        Ok(())
    }),
    key("umask", |d, v| {
        d.s.umask = u32::from_str_radix(v, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| format!("umask must be octal, 000 to 777, not \"{v}\""))?;
        Ok(())
    }),
    key("nice", |d, v| {
        let n = v.parse::<i32>().ok().filter(|n| (-20..=19).contains(n));
        d.s.nice =
            Some(n.ok_or_else(|| format!("nice must be a number from -20 to 19, not \"{v}\""))?);
        Ok(())
    }),
    key("limit_nofile", |d, v| limit(d, 0, v)),
    key("limit_nproc", |d, v| limit(d, 1, v)),
    key("limit_core", |d, v| limit(d, 2, v)),
    key("limit_memlock", |d, v| limit(d, 3, v)),
    key("limit_as", |d, v| limit(d, 4, v)),
    key("limit_stack", |d, v| limit(d, 5, v)),
    key("limit_cpu", |d, v| limit(d, 6, v)),
    key("limit_fsize", |d, v| limit(d, 7, v)),
    key("log", |d, v| {
        d.s.log = match v {
            "syslog" => true,
            "null" => false,
            _ => return Err(format!("log must be syslog or null, not \"{v}\"")),
        };
        Ok(())
    }),
    key("stop_signal", |d, v| {
        let name = v.strip_prefix("SIG").unwrap_or(v);
        let sig = STOP_SIGNALS.iter().find(|s| s.0 == name);
        d.s.stop_signal = sig
            .ok_or_else(|| {
                format!("stop_signal must be TERM, INT, QUIT, HUP, USR1, USR2 or KILL, not \"{v}\"")
            })?
            .1;
        Ok(())
    }),
    key("stop_timeout", |d, v| {
        let secs = v.parse::<u64>().ok().filter(|s| *s <= 86400);
        d.s.stop_timeout = Duration::from_secs(secs.ok_or_else(|| {
            format!("stop_timeout must be whole seconds, 0 to 86400, not \"{v}\"")
        })?);
        Ok(())
    }),
    key("ready", |d, v| {
        let fd = v
            .strip_prefix("fd:")
            .map(|n| n.parse::<i32>().ok().filter(|n| (3..=1023).contains(n)));
        d.s.life_mut().ready = Some(match (v, fd) {
            ("notify", _) => Ready::Notify,
            (_, Some(Some(n))) => Ready::Fd(n),
            _ => {
                return Err(format!(
                    "ready must be notify or fd:N with N from 3 to 1023, not \"{v}\""
                ))
            }
        });
        Ok(())
    }),
    key("ready_timeout", |d, v| {
        let secs = v.parse::<u64>().ok().filter(|s| (1..=86400).contains(s));
        let secs = secs.ok_or_else(|| {
            format!("ready_timeout must be whole seconds, 1 to 86400, not \"{v}\"")
        })?;
        d.s.life_mut().ready_timeout = Some(Duration::from_secs(secs));
        Ok(())
    }),
    Key {
        repeat: true,
        ..key("after", |d, v| {
            let names = v.split_whitespace();
            if let Some(bad) = names.clone().find(|n| !valid_name(n)) {
                return Err(format!("after: \"{bad}\" is not a service name"));
            }
            let after = &mut d.s.life_mut().after;
            for name in names.map(String::from) {
                if !after.contains(&name) {
                    after.push(name);
                }
            }
            if after.is_empty() {
                return Err("after needs at least one NAME".into());
            }
            Ok(())
        })
    },
    key("restart", |d, v| {
        d.s.life_mut().restart = match v {
            "always" => Restart::Always,
            "on-failure" => Restart::OnFailure,
            "never" => Restart::Never,
            _ => {
                return Err(format!(
                    "restart must be always, on-failure or never, not \"{v}\""
                ))
            }
        };
        Ok(())
    }),
    key("ok_exit", |d, v| {
        let codes: Option<Vec<u8>> = v.split_whitespace().map(|c| c.parse().ok()).collect();
        let codes = (codes.filter(|c| !c.is_empty()))
            .ok_or_else(|| format!("ok_exit must be exit codes from 0 to 255, not \"{v}\""))?;
        d.s.life_mut().ok_exit = codes;
        Ok(())
    }),
    key("essential", |d, v| {
        d.s.life_mut().essential = match v {
            "yes" => true,
            "no" => false,
            _ => return Err(format!("essential must be yes or no, not \"{v}\"")),
        };
        Ok(())
    }),
    Key {
        repeat: true,
        ..key("pass_env", |d, v| {
            let life = d.s.life_mut();
            if v == "*" {
                life.pass_env = Some(PassEnv::All);
                return Ok(());
            }
            let mut names = Vec::new();
            for name in v.split_whitespace() {
                let name = env_var(name, "")?.0;
                if goings_own(&name) {
                    return Err(format!(
                        "pass_env: {name} is going's own, not the service's"
                    ));
                }
                names.push(name);
            }
            if names.is_empty() {
                return Err("pass_env needs NAME... or *".into());
            }
            match &mut life.pass_env {
                Some(PassEnv::All) => {}
                Some(PassEnv::Names(have)) => {
                    for name in names {
                        if !have.contains(&name) {
                            have.push(name);
                        }
                    }
                }
                None => life.pass_env = Some(PassEnv::Names(names)),
            }
            Ok(())
        })
    },
    key("memory_max", |d, v| cgroup_limit(d, LimitKey::MemoryMax, v)),
    key("memory_high", |d, v| {
        cgroup_limit(d, LimitKey::MemoryHigh, v)
    }),
    key("memory_swap_max", |d, v| {
        cgroup_limit(d, LimitKey::MemorySwapMax, v)
    }),
    key("pids_max", |d, v| cgroup_limit(d, LimitKey::PidsMax, v)),
    key("cpu_weight", |d, v| cgroup_limit(d, LimitKey::CpuWeight, v)),
    key("cpu_max", |d, v| cgroup_limit(d, LimitKey::CpuMax, v)),
    key("io_weight", |d, v| cgroup_limit(d, LimitKey::IoWeight, v)),
    key("finish", |d, v| {
        let words = split_words(v).map_err(|e| e.replace(" in cmd", " in finish"))?;
        if words.first().is_none_or(|w| w.trim().is_empty()) {
            return Err("finish names no program".into());
        }
        d.s.life_mut().finish = words;
        Ok(())
    }),
];

/// A cgroup limit key: its value checked as the kernel will take it (whether going can
/// apply it at all is checked once the whole directory is read: [`check_limits`]).
fn cgroup_limit(d: &mut Draft, key: LimitKey, v: &str) -> Result<(), String> {
    let c = d.s.cgroup.get_or_insert_with(Box::default);
    c.limits.set(key, v)
}

/// The cgroup limit keys of the files read that going cannot apply, as each file's errors
/// (`PATH:LINE: memory_max needs the memory controller, …`): such a file is invalid, as a
/// file with a bad value is, so that a limit is never silently not there.
pub fn check_limits(dir: &Path, files: &mut BTreeMap<String, Parsed>, available: &Available) {
    for (name, parsed) in files.iter_mut() {
        let Ok(s) = parsed else { continue };
        let Some(c) = &s.cgroup else { continue };
        let errors: Vec<FileError> = (c.limits.check(available).into_iter())
            .map(|(k, msg)| FileError::new(dir.join(name), c.lines[k as usize], msg))
            .collect();
        if !errors.is_empty() {
            *parsed = Err(errors);
        }
    }
}

/// `SOFT[:HARD]` or `unlimited`: one value sets both.
fn limit(d: &mut Draft, which: usize, v: &str) -> Result<(), String> {
    let (key, resource) = LIMITS[which];
    let num = |s: &str| match s.trim() {
        "unlimited" | "infinity" => Some(libc::RLIM_INFINITY),
        n => n.parse::<u64>().ok(),
    };
    let (soft, hard) = match v.split_once(':') {
        Some((s, h)) => (num(s), num(h)),
        None => (num(v), num(v)),
    };
    match (soft, hard) {
        (Some(s), Some(h)) if s <= h => {
            d.s.limits.push((resource, s, h));
            Ok(())
        }
        (Some(_), Some(_)) => Err(format!("{key}: the soft limit is above the hard one")),
        _ => Err(format!(
            "{key} must be SOFT[:HARD] or unlimited, not \"{v}\""
        )),
    }
}

fn absolute(key: &str, v: &str) -> Result<PathBuf, String> {
    if v.starts_with('/') {
        Ok(PathBuf::from(v))
    } else {
        Err(format!("{key} must be an absolute path, not \"{v}\""))
    }
}

/// An environment variable: the name is letters, digits and `_`, not starting with a digit.
/// Whether `k` is a variable of going's own, which `pass_env` never passes: its own
/// (`GOING_*`), and what a service manager above going set for going itself (sd_notify,
/// socket activation, watchdog, journal, credentials).
pub fn goings_own(k: &str) -> bool {
    const OWN: &[&str] = &[
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
        "INVOCATION_ID",
        "MANAGERPID",
        "SYSTEMD_EXEC_PID",
        "CREDENTIALS_DIRECTORY",
    ];
    k.starts_with("GOING_") || k.starts_with("LISTEN_") || OWN.contains(&k)
}

/// Whether `k` is a name `env=` takes: letters, digits and `_`, not starting with a digit.
pub fn env_name(k: &str) -> bool {
    let valid = k
        .bytes()
        .enumerate()
        .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
    !k.is_empty() && valid
}

fn env_var(k: &str, v: &str) -> Result<(String, String), String> {
    let k = k.trim();
    if !env_name(k) {
        return Err(format!("invalid environment variable name \"{k}\""));
    }
    if v.contains('\0') {
        return Err(format!("{k}: value contains a NUL character"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Reads an `env_file`: `KEY=VALUE` lines, blank lines and `#` comments skipped, spaces
/// around key and value trimmed. Errors read `PATH:LINE: message`, escaped as a service
/// file's are.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let at = |line: usize, msg: String| {
        let e = FileError {
            path: path.to_owned(),
            line,
            msg,
            transient: false,
        };
        e.to_string()
    };
    let bytes = read_bounded(path).map_err(|e| at(0, e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| at(0, "invalid UTF-8".into()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| at(i + 1, "expected KEY=VALUE".into()))?;
        out.push(env_var(k, v.trim()).map_err(|msg| at(i + 1, msg))?);
    }
    Ok(out)
}

/// Service names: letters, digits, `_`, `-` and `@`, 1 to 64 of them. Everything else in
/// the directory (editor backups, `.dpkg-new`, `name.disabled`) is not a service.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'@')
}

/// What a file looked like when it was last read, hashed: device, inode, size, times,
/// mode and owner of the file (and, for a symbolic link, of the link itself). A file that
/// still looks so still says the same. (A hash, and a map type going has anyway: a scan of
/// 1000 files keeps 1000 of these.)
pub type Stamp = u64;

pub fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let link = fs::symlink_metadata(path).ok()?;
    let m = if link.file_type().is_symlink() {
        fs::metadata(path).ok()?
    } else {
        link.clone()
    };
    let fields = [
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime() as u64,
        m.mtime_nsec() as u64,
        m.ctime() as u64,
        m.ctime_nsec() as u64,
        (m.mode() as u64) << 32 | m.uid() as u64,
        link.ino(),
        link.ctime_nsec() as u64 ^ (link.ctime() as u64) << 30,
    ];
    let hash = (fields.iter()).fold(crate::fingerprint::Fnv::default(), |h, v| {
        h.bytes(&v.to_le_bytes())
    });
    Some(hash.0)
}

/// A scan of the directory: the files read, and (with stamps) the names of those that did
/// not change since the last scan, which were not read again; and the names that are
/// symbolic links, read or not, whose targets the watch follows.
pub struct Scan {
    pub files: BTreeMap<String, Parsed>,
    pub unchanged: Vec<String>,
    pub links: Vec<String>,
}

/// The files `names` of `dir` alone (what inotify said changed), the others taken as the
/// `stamps` of the last scan say: unchanged, and links if they were (`links`). A name no
/// longer there is in neither list: removed. Reads as many files as changed, not as many
/// as `dir` holds.
pub fn scan_names(
    dir: &Path,
    names: &std::collections::BTreeSet<String>,
    stamps: &mut BTreeMap<String, Stamp>,
    links: &[String],
) -> Result<Scan, DirError> {
    let dir_error = |err| DirError {
        dir: dir.to_owned(),
        err,
    };
    let meta = fs::metadata(dir).map_err(|e| {
        dir_error(ReadError::Io {
            verb: "read",
            err: e,
        })
    })?;
    trusted(&meta).map_err(|why| dir_error(ReadError::Refused(why)))?;
    let others = |n: &&String| !names.contains(*n);
    let mut out = Scan {
        files: BTreeMap::new(),
        unchanged: stamps.keys().filter(others).cloned().collect(),
        links: links.iter().filter(others).cloned().collect(),
    };
    for name in names {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                stamps.remove(name);
                continue;
            }
            Ok(m) if m.file_type().is_symlink() => out.links.push(name.clone()),
            _ => {}
        }
        // Read, whatever its stamp says: an event named it, and two writes within one tick
        // of a coarse clock leave the same stamp (a kernel before 6.13: 4 ms at HZ=250).
        let now = stamp(&path);
        let parsed = read(&path);
        let transient = parsed
            .as_ref()
            .err()
            .is_some_and(|e| e.iter().any(FileError::is_transient));
        match (now, transient) {
            (Some(st), false) => stamps.insert(name.clone(), st),
            _ => stamps.remove(name),
        };
        out.files.insert(name.clone(), parsed);
    }
    Ok(out)
}

/// Every service file in `dir`, by name. With `stamps` (kept from the previous scan, and
/// updated), a file that looks as it did is not read again. Err says why the directory as
/// a whole is not read (unreadable, or not safe).
pub fn scan(
    dir: &Path,
    mut stamps: Option<&mut BTreeMap<String, Stamp>>,
) -> Result<Scan, DirError> {
    let dir_error = |err| DirError {
        dir: dir.to_owned(),
        err,
    };
    let unable = |e| {
        dir_error(ReadError::Io {
            verb: "read",
            err: e,
        })
    };
    let meta = fs::metadata(dir).map_err(unable)?;
    trusted(&meta).map_err(|why| dir_error(ReadError::Refused(why)))?;
    let mut out = Scan {
        files: BTreeMap::new(),
        unchanged: Vec::new(),
        links: Vec::new(),
    };
    let mut fresh = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(unable)? {
        let entry = entry.map_err(unable)?;
        let Some(name) = entry
            .file_name()
            .to_str()
            .filter(|n| valid_name(n))
            .map(String::from)
        else {
            continue;
        };
        // The type readdir gave: no system call where the filesystem tells it.
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            out.links.push(name.clone());
        }
        let path = entry.path();
        let now = stamps.as_ref().and_then(|_| stamp(&path));
        if let (Some(st), Some(old)) = (now, stamps.as_ref().and_then(|s| s.get(&name))) {
            if st == *old {
                fresh.insert(name.clone(), st);
                out.unchanged.push(name);
                continue;
            }
        }
        let parsed = read(&path);
        let transient = parsed
            .as_ref()
            .err()
            .is_some_and(|e| e.iter().any(FileError::is_transient));
        if let (Some(st), false) = (now, transient) {
            fresh.insert(name.clone(), st);
        }
        out.files.insert(name, parsed);
    }
    if let Some(stamps) = stamps.as_mut() {
        **stamps = fresh;
    }
    Ok(out)
}

/// As sshd's StrictModes: what going runs must be nobody else's to change — a file others
/// may write is a way to run anything as going's user. Owned by root or by going's user
/// (the same for a going run as root; a going run as another user, as in a container
/// image, takes the image's root-owned files too), and writable by neither group nor
/// others. Err says why not.
pub fn trusted(meta: &fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = crate::sys::geteuid();
    if meta.uid() != 0 && meta.uid() != me {
        let root = if me == 0 { "" } else { "root or " };
        return Err(format!(
            "owned by uid {}, not by {root}going's uid {me}",
            meta.uid()
        ));
    }
    not_writable(meta)
}

fn not_writable(meta: &fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    match meta.mode() & 0o022 {
        0 => Ok(()),
        _ => Err(format!(
            "writable by group or others (mode {:04o})",
            meta.mode() & 0o7777
        )),
    }
}

/// Owned by going's user and writable by nobody else: RUNDIR, where going writes.
pub fn ours(meta: &fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = crate::sys::geteuid();
    if meta.uid() != me {
        return Err(format!(
            "owned by uid {}, not by going's uid {me}",
            meta.uid()
        ));
    }
    not_writable(meta)
}

/// Reads and parses one service file.
pub fn read(path: &Path) -> Parsed {
    match read_bounded(path) {
        Ok(bytes) => parse(path, &bytes),
        Err(e) => Err(vec![FileError {
            path: path.to_owned(),
            line: 0,
            transient: e.is_transient(),
            msg: e.to_string(),
        }]),
    }
}

/// Pseudo filesystems (statfs magic, linux/magic.h and the kernel's sources), whose
/// "regular files" are the kernel's interfaces: a read may consume what it reads
/// (/proc/kmsg, an rpc_pipefs pipe) or act. A service file or an env_file there is
/// a mistake or a trap, never read.
const PSEUDO_FS: [(u32, &str); 21] = [
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x6265_6570, "configfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0xcafe_4a11, "bpf"),
    (0xde5e_81e4, "efivarfs"),
    (0x6165_676c, "pstore"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x4341_5d53, "smackfs"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6573_5543, "fusectl"),
    (0x6759_6969, "rpc_pipefs"),
    (0x6e73_6673, "nsfs"),
    (0x0765_5821, "resctrl"),
    (0x1980_0202, "mqueue"),
    (0x0a64_7361, "functionfs"),
    (0xabba_1974, "xenfs"),
];

/// Reads a small file without ever blocking: the type is checked before opening (a FIFO
/// or device is never opened) and again on the open file, and so is the filesystem (a
/// file on /proc or /sys is never read); more than 64 KiB is an error.
fn read_bounded(path: &Path) -> Result<Vec<u8>, ReadError> {
    let too_large = || ReadError::Refused(format!("larger than {} KiB", MAX_FILE / 1024));
    let check = |meta: &fs::Metadata| {
        if !meta.is_file() {
            Err(ReadError::Refused("not a regular file".into()))
        } else if meta.len() > MAX_FILE {
            Err(too_large())
        } else {
            Ok(())
        }
    };
    let ordinary = |fs: io::Result<u32>| {
        let fs = fs.map_err(ReadError::io("statfs"))?;
        match PSEUDO_FS.iter().find(|p| p.0 == fs) {
            Some((_, name)) => Err(ReadError::Refused(format!(
                "on a pseudo filesystem ({name}): refused"
            ))),
            None => Ok(()),
        }
    };
    check(&fs::metadata(path).map_err(ReadError::io("stat"))?)?;
    ordinary(crate::sys::fs_type(path))?;
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::io("open"))?;
    // Checked on the open file: what was read is what was checked.
    let meta = file.metadata().map_err(ReadError::io("stat"))?;
    check(&meta)?;
    ordinary(crate::sys::fd_fs_type(file.as_raw_fd()))?;
    trusted(&meta).map_err(|why| ReadError::Refused(format!("{why}: refused")))?;
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::io("read"))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Parses the bytes of a service file; `path` is only used in the errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Parsed {
    parse_as(path, bytes, crate::sys::geteuid(), crate::sys::getegid())
}

/// [`parse`], for a going that runs as `uid` and `gid`.
fn parse_as(path: &Path, bytes: &[u8], uid: u32, gid: u32) -> Parsed {
    let mut r = Reading::default();
    // Without the final newline, so that it does not count as one more (empty) line.
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut lines = 0;
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        lines = i + 1;
        if let Err(msg) = r.line(lines, raw.strip_suffix(b"\r").unwrap_or(raw)) {
            r.errors.push((lines, msg));
        }
    }
    for key in KEYS
        .iter()
        .filter(|k| k.required && !r.unreadable && !r.seen.iter().any(|s| s.0 == k.name))
    {
        r.errors
            .push((lines.max(1), format!("missing {}=", key.name)));
    }
    if let Some(life) = r.draft.s.life.as_mut() {
        life.after_line = (r.seen.iter()).find(|k| k.0 == "after").map_or(0, |k| k.1);
    }
    if uid != 0 {
        r.unprivileged(uid, gid);
    }
    if let Some(c) = r.draft.s.cgroup.as_mut() {
        for (key, line) in LimitKey::ALL.into_iter().zip(c.lines.iter_mut()) {
            *line = (r.seen.iter())
                .find(|k| k.0 == key.name())
                .map_or(0, |k| k.1);
        }
    }
    if r.errors.is_empty() {
        return Ok(Box::new(r.draft.finish()));
    }
    let error = |(line, msg)| FileError {
        path: path.to_owned(),
        line,
        msg,
        transient: false,
    };
    Err(r.errors.into_iter().map(error).collect())
}

impl Reading {
    /// For a going that is not root (`uid`, `gid`): a key only root could apply is an
    /// error at its line, saying so, rather than a service that fails at each start. A
    /// `user=` or `group=` that is going's own is no change, and is dropped.
    fn unprivileged(&mut self, uid: u32, gid: u32) {
        let d = &mut self.draft;
        let mut errors = Vec::new();
        let needs =
            |what: String| format!("{what} needs going to run as root (it runs as uid {uid})");
        if let Some((pw, u, by_name)) = &d.user {
            let name = match (pw, by_name) {
                (Some(p), true) => p.name.clone(),
                _ => u.to_string(),
            };
            let primary = pw.as_ref().map_or(gid, |p| p.gid);
            if *u != uid {
                errors.push(("user", needs(format!("user={name}"))));
            } else if d.group.is_none() && primary != gid {
                let what = format!("user={name} with its group {primary}, not going's {gid},");
                errors.push(("user", needs(what)));
            }
        }
        if let Some(g) = d.group.filter(|&g| g != gid) {
            errors.push(("group", needs(format!("group={g}"))));
        }
        if d.s.chroot.is_some() {
            errors.push(("chroot", needs("chroot".into())));
        }
        let nice = crate::sys::nice_now();
        if let Some(n) = d.s.nice.filter(|&n| n < nice) {
            errors.push(("nice", needs(format!("nice={n}, below going's {nice},"))));
        }
        for &(res, _, hard) in &d.s.limits {
            let going = crate::sys::hard_limit(res);
            if let Some((key, _)) = LIMITS.iter().find(|l| l.1 == res).filter(|_| hard > going) {
                errors.push((
                    key,
                    needs(format!("{key} above going's hard limit ({going})")),
                ));
            }
        }
        if errors.is_empty() {
            // Going's own ids (HOME, USER and LOGNAME stay): nothing to set, and
            // setgroups(2) would be refused.
            (d.user, d.group) = (None, None);
        }
        for (key, msg) in errors {
            let line = (self.seen.iter()).find(|k| k.0 == key).map_or(0, |k| k.1);
            self.errors.push((line, msg));
        }
    }
}

/// A file being parsed: the draft, which key was first on which line, and what is wrong.
#[derive(Default)]
struct Reading {
    draft: Draft,
    /// A handful, so a list (a map costs code size).
    seen: Vec<(&'static str, usize)>,
    /// A line that is no key=value at all may have been the missing key: no second report.
    unreadable: bool,
    errors: Vec<(usize, String)>,
}

impl Reading {
    /// Line `n` of the file, its line end taken off.
    fn line(&mut self, n: usize, raw: &[u8]) -> Result<(), String> {
        let Ok(text) = std::str::from_utf8(raw) else {
            self.unreadable = true;
            return Err("invalid UTF-8".into());
        };
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            return Ok(());
        }
        let Some((key, value)) = text.split_once('=') else {
            self.unreadable = true;
            return Err(format!("expected key=value, found \"{text}\""));
        };
        let (key, value) = (key.trim(), value.trim());
        let spec = (KEYS.iter().find(|k| k.name == key))
            .ok_or_else(|| format!("unknown key \"{key}\""))?;
        match self.seen.iter().find(|k| k.0 == spec.name).map(|k| k.1) {
            Some(first) if !spec.repeat => {
                return Err(format!("repeated key \"{key}\" (first on line {first})"))
            }
            Some(_) => {}
            None => self.seen.push((spec.name, n)),
        }
        (spec.apply)(&mut self.draft, value)
    }
}

/// Splits a command into words as a simple shell would, without running one: whitespace
/// separates words, `'…'` is literal, `"…"` allows `\"` and `\\`, a backslash outside
/// quotes escapes the next character. No expansion of any kind.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                continue;
            }
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => word.push(c),
                    None => return Err("unbalanced ' in cmd".into()),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => word.push(c),
                        Some(c) => {
                            word.push('\\');
                            word.push(c);
                        }
                        None => return Err("unbalanced \" in cmd".into()),
                    },
                    Some(c) => word.push(c),
                    None => return Err("unbalanced \" in cmd".into()),
                }
            },
            '\\' => match chars.next() {
                Some(c) => word.push(c),
                None => return Err("cmd ends with a lone backslash".into()),
            },
            '\0' => return Err("cmd contains a NUL character".into()),
            c => word.push(c),
        }
        in_word = true;
    }
    if in_word {
        words.push(word);
    }
    if words.iter().any(|w| w.contains('\0')) {
        return Err("cmd contains a NUL character".into());
    }
    Ok(words)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn p(text: &str) -> Result<Box<Settings>, Vec<String>> {
        parse(Path::new("d/web"), text.as_bytes())
            .map_err(|v| v.iter().map(|e| e.to_string()).collect())
    }

    fn words(s: &str) -> Vec<String> {
        split_words(s).unwrap()
    }

    #[test]
    fn names() {
        for ok in ["web", "a", "getty@tty1", "my_svc-2", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".web.swp",
            "web~",
            "web.dpkg-new",
            "web.disabled",
            "a b",
            "wéb",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn key_value_lines() {
        let s = p("# comment\n\n  cmd  =  /bin/sleep 10  \r\n").unwrap();
        assert_eq!(s.cmd, ["/bin/sleep", "10"]);
        assert_eq!(p("cmd=/bin/true").unwrap().cmd, ["/bin/true"]);
        assert_eq!(p("cmd=a=b").unwrap().cmd, ["a=b"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(
            p("cmd=/bin/x\ncmdd=y\n").unwrap_err(),
            [r#"d/web:2: unknown key "cmdd""#]
        );
        assert_eq!(
            p("cmd=/bin/x\nnonsense\n").unwrap_err(),
            [r#"d/web:2: expected key=value, found "nonsense""#]
        );
        assert_eq!(
            p("cmd=/bin/x\ncmd=/bin/y\n").unwrap_err(),
            [r#"d/web:2: repeated key "cmd" (first on line 1)"#]
        );
        assert_eq!(p("# nothing\n").unwrap_err(), ["d/web:1: missing cmd="]);
        assert_eq!(p("").unwrap_err(), ["d/web:1: missing cmd="]);
        assert_eq!(p("cmd=\n").unwrap_err(), ["d/web:1: cmd is empty"]);
        assert_eq!(p("cmd=  \t \n").unwrap_err(), ["d/web:1: cmd is empty"]);
        assert_eq!(
            p("cmd='oops\n").unwrap_err(),
            ["d/web:1: unbalanced ' in cmd"]
        );
        assert_eq!(
            p("=x\ncmd=/bin/x").unwrap_err(),
            [r#"d/web:1: unknown key """#]
        );
        let bad = parse(Path::new("d/web"), b"cmd=/bin/x\n# \xff\n").unwrap_err();
        assert_eq!(bad[0].to_string(), "d/web:2: invalid UTF-8");
    }

    #[test]
    fn all_errors_are_reported() {
        let e = p("a=1\nb=2\ncmd='\n").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        let e = p("a=1\nb=2\n").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(e[2], "d/web:2: missing cmd=");
    }

    #[test]
    fn a_command_names_a_program() {
        let empty = ["d/web:1: cmd names no program: its first word is empty"];
        for cmd in [r#"cmd="""#, "cmd=''", "cmd='' ''", r#"cmd="" /bin/true"#] {
            assert_eq!(p(cmd).unwrap_err(), empty, "{cmd}");
        }
        let blank = ["d/web:1: cmd names no program: its first word is blank"];
        for cmd in ["cmd=' '", "cmd=\"\t\" ' '", r"cmd=\  /bin/true"] {
            assert_eq!(p(cmd).unwrap_err(), blank, "{cmd}");
        }
        // Empty arguments are fine.
        assert_eq!(
            p("cmd=/bin/echo '' ' '").unwrap().cmd,
            ["/bin/echo", "", " "]
        );
    }

    #[test]
    fn minus_one_is_no_uid_nor_gid() {
        assert_eq!(
            p("cmd=/x\nuser=4294967295\n").unwrap_err(),
            [
                r#"d/web:2: user "4294967295": uid 4294967295 cannot be set: setuid(2) takes it for "no change""#
            ]
        );
        assert_eq!(
            p("cmd=/x\ngroup=4294967295\n").unwrap_err(),
            [
                r#"d/web:2: group "4294967295": gid 4294967295 cannot be set: setgid(2) takes it for "no change""#
            ]
        );
        // One below is an identity like any other.
        let c = p("cmd=/x\nuser=4294967294\ngroup=4294967294")
            .unwrap()
            .creds
            .unwrap();
        assert_eq!((c.uid, c.gid), (Some(4294967294), 4294967294));
    }

    #[test]
    fn users_and_groups_resolve_when_read() {
        let s = p("cmd=/x\nuser=root\n").unwrap();
        let c = s.creds.unwrap();
        assert_eq!((c.uid, c.gid), (Some(0), 0));
        assert!(c.groups.contains(&0));
        assert!(s.user_env.contains(&("USER".into(), "root".into())));
        assert!(s.user_env.contains(&("HOME".into(), "/root".into())));
        // A bare uid: its entry's gid and environment, but no supplementary groups.
        let c = p("cmd=/x\nuser=0\ngroup=12345").unwrap().creds.unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (Some(0), 12345, vec![12345]));
        // A uid with no entry at all: the gid of the same number, no HOME.
        let s = p("cmd=/x\nuser=4000000\n").unwrap();
        assert_eq!(s.creds.unwrap().gid, 4000000);
        assert!(s.user_env.is_empty());
        // Only a group: going's uid.
        let c = p("cmd=/x\ngroup=root\n").unwrap().creds.unwrap();
        assert_eq!((c.uid, c.gid), (None, 0));
        assert_eq!(
            p("cmd=/x\nuser=ngnix\n").unwrap_err(),
            [r#"d/web:2: no such user "ngnix""#]
        );
        assert_eq!(
            p("cmd=/x\ngroup=nosuchgroupx\n").unwrap_err(),
            [r#"d/web:2: no such group "nosuchgroupx""#]
        );
    }

    #[test]
    fn environment_paths_and_numbers() {
        let s = p("cmd=/x\nenv=A=1\nenv = B = two words \nenv=A=3\nenv_file=/etc/x.env\ncwd=/srv\nchroot=/jail").unwrap();
        assert_eq!(
            s.env,
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("A".into(), "3".into())
            ]
        );
        assert_eq!(s.env_file.as_deref(), Some(Path::new("/etc/x.env")));
        assert_eq!(
            (s.cwd.as_path(), s.chroot.as_deref()),
            (Path::new("/srv"), Some(Path::new("/jail")))
        );
        let s = p("cmd=/x\numask=027\nnice=-5\nlimit_nofile=1024:4096\nlimit_core=unlimited\nlimit_cpu=10").unwrap();
        assert_eq!((s.umask, s.nice), (0o027, Some(-5)));
        let inf = libc::RLIM_INFINITY;
        let nofile = libc::RLIMIT_NOFILE as i32;
        assert_eq!(s.limits[0], (nofile, 1024, 4096));
        assert_eq!(s.limits[1], (libc::RLIMIT_CORE as i32, inf, inf));
        assert_eq!(s.limits[2], (libc::RLIMIT_CPU as i32, 10, 10));
        let s = p("cmd=/x\nstop_signal=SIGINT\nstop_timeout=3").unwrap();
        assert_eq!(
            (s.stop_signal, s.stop_timeout),
            (libc::SIGINT, Duration::from_secs(3))
        );
        let d = Settings::default();
        assert_eq!(
            (d.cwd.as_path(), d.umask, d.stop_signal),
            (Path::new("/"), 0o022, libc::SIGTERM)
        );
        assert_eq!(d.stop_timeout, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_name_their_line() {
        let bad = |line: &str| p(&format!("cmd=/x\n{line}\n")).unwrap_err()[0].clone();
        assert_eq!(
            bad("env=1A=x"),
            r#"d/web:2: invalid environment variable name "1A""#
        );
        assert_eq!(
            bad("env=A-B=x"),
            r#"d/web:2: invalid environment variable name "A-B""#
        );
        assert_eq!(bad("env=novalue"), "d/web:2: env needs KEY=VALUE");
        assert_eq!(
            bad("env_file=x.env"),
            r#"d/web:2: env_file must be an absolute path, not "x.env""#
        );
        assert_eq!(
            bad("cwd=srv"),
            r#"d/web:2: cwd must be an absolute path, not "srv""#
        );
        assert_eq!(
            bad("umask=999"),
            r#"d/web:2: umask must be octal, 000 to 777, not "999""#
        );
        assert_eq!(
            bad("nice=20"),
            r#"d/web:2: nice must be a number from -20 to 19, not "20""#
        );
        assert_eq!(
            bad("limit_nofile=5:3"),
            "d/web:2: limit_nofile: the soft limit is above the hard one"
        );
        assert_eq!(
            bad("limit_as=lots"),
            r#"d/web:2: limit_as must be SOFT[:HARD] or unlimited, not "lots""#
        );
        assert!(bad("stop_signal=STOP").starts_with("d/web:2: stop_signal must be TERM, INT"));
        assert!(bad("stop_timeout=-1").starts_with("d/web:2: stop_timeout must be whole seconds"));
        assert_eq!(
            bad("user=root\nuser=root"),
            r#"d/web:3: repeated key "user" (first on line 2)"#
        );
    }

    #[test]
    fn pass_env_names_variables_and_never_goings_own() {
        let e = |text: &str| p(text).unwrap_err()[0].clone();
        assert_eq!(
            e("cmd=/x\npass_env=A NOTIFY_SOCKET"),
            "d/web:2: pass_env: NOTIFY_SOCKET is going's own, not the service's"
        );
        assert_eq!(
            e("cmd=/x\npass_env=A-B"),
            "d/web:2: invalid environment variable name \"A-B\""
        );
        let s = p("cmd=/x\npass_env=A B\npass_env=B C").unwrap();
        assert_eq!(
            s.life().pass_env,
            Some(PassEnv::Names(vec!["A".into(), "B".into(), "C".into()]))
        );
        assert_eq!(
            p("cmd=/x\npass_env=*").unwrap().life().pass_env,
            Some(PassEnv::All)
        );
    }

    #[test]
    fn a_going_that_is_not_root_refuses_what_only_root_can_do_and_drops_its_own_ids() {
        let errors = |text: &str| match parse_as(Path::new("d/web"), text.as_bytes(), 1000, 1000) {
            Ok(_) => vec![],
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        };
        let needs = |line, what: &str| {
            format!("d/web:{line}: {what} needs going to run as root (it runs as uid 1000)")
        };
        assert_eq!(
            errors("cmd=/x\nuser=0\ngroup=0\nchroot=/srv\nnice=-5"),
            [
                needs(2, "user=0"),
                needs(3, "group=0"),
                needs(4, "chroot"),
                needs(5, "nice=-5, below going's 0,")
            ]
        );
        let too_many = format!(
            "cmd=/x\nlimit_nofile=1:{}",
            crate::sys::hard_limit(libc::RLIMIT_NOFILE as i32) + 1
        );
        assert_eq!(
            errors(&too_many)[0],
            needs(
                2,
                &format!(
                    "limit_nofile above going's hard limit ({})",
                    crate::sys::hard_limit(libc::RLIMIT_NOFILE as i32)
                )
            )
        );
        let own = parse_as(
            Path::new("d/web"),
            b"cmd=/x\nuser=1000\ngroup=1000\nnice=5",
            1000,
            1000,
        )
        .unwrap();
        assert_eq!(own.creds, None, "going's own ids: nothing to set");
        assert_eq!(own.nice, Some(5));
    }

    #[test]
    fn only_stop_settings_apply_without_a_restart() {
        let a = p("cmd=/x").unwrap();
        assert!(a.same_run(&p("cmd=/x\nstop_signal=INT\nstop_timeout=1").unwrap()));
        assert!(!a.same_run(&p("cmd=/x\numask=077").unwrap()));
        assert!(!a.same_run(&p("cmd=/x\nenv=A=1").unwrap()));
    }

    #[test]
    fn a_file_that_did_not_change_is_not_read_again() {
        let dir = std::env::temp_dir().join(format!("going-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), "cmd=/a").unwrap();
        std::fs::write(dir.join("b"), "cmd=/b").unwrap();
        let mut stamps = BTreeMap::new();
        let first = scan(&dir, Some(&mut stamps)).unwrap();
        assert_eq!((first.files.len(), first.unchanged.len()), (2, 0));
        std::fs::write(dir.join("b"), "cmd=/b2").unwrap();
        let second = scan(&dir, Some(&mut stamps)).unwrap();
        assert_eq!(second.unchanged, ["a"]);
        assert_eq!(second.files["b"].as_ref().unwrap().cmd, ["/b2"]);
        assert_eq!(
            scan(&dir, None).unwrap().files.len(),
            2,
            "without stamps, all are read"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_files() {
        let dir = std::env::temp_dir().join(format!("going-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("env");
        std::fs::write(&f, "# secrets\n\nTOKEN = abc=def\n  DEBUG=1\n").unwrap();
        assert_eq!(
            read_env_file(&f).unwrap(),
            [
                ("TOKEN".into(), "abc=def".into()),
                ("DEBUG".into(), "1".into())
            ]
        );
        std::fs::write(&f, "OK=1\nnonsense\n").unwrap();
        assert_eq!(
            read_env_file(&f).unwrap_err(),
            format!("{}:2: expected KEY=VALUE", f.display())
        );
        let missing = dir.join("missing");
        assert_eq!(
            read_env_file(&missing).unwrap_err(),
            format!(
                "{}: unable to stat: No such file or directory",
                missing.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_on_pseudo_filesystems_are_not_read() {
        // /proc/self/status is a regular file, root's and not writable by others: only
        // its filesystem keeps it from being read.
        let refused = |p: &str| format!("{p}: on a pseudo filesystem (proc): refused");
        let e = read(Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].to_string(), refused("/proc/self/status"));
        assert_eq!(
            read_env_file(Path::new("/proc/self/status")).unwrap_err(),
            refused("/proc/self/status")
        );
        let e = read(Path::new("/sys/kernel/uevent_seqnum")).unwrap_err();
        assert!(e[0].msg.ends_with("(sysfs): refused"), "{e:?}");
    }

    /// A deterministic xorshift stream: the same cases on every run.
    pub(crate) fn random_bytes(seed: &mut u64, alphabet: &[u8], max: usize) -> Vec<u8> {
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let len = (next() % max as u64) as usize;
        (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect()
    }

    #[test]
    fn any_bytes_give_settings_or_errors_naming_file_and_line() {
        let alphabet = b"cmd=user=env=limit_nofile=stop_signal=log=nice= \t\r\n\n#'\"\\=:0123456789/abc\0\xff\xc3\xa9";
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let bytes = random_bytes(&mut seed, alphabet, 200);
            match parse(Path::new("d/web"), &bytes) {
                Ok(s) => {
                    assert!(!s.cmd[0].trim().is_empty() && s.cmd.iter().all(|w| !w.contains('\0')))
                }
                Err(errors) => {
                    assert!(!errors.is_empty());
                    for e in errors {
                        let text = e.to_string();
                        assert!(
                            text.starts_with("d/web:") && e.line >= 1,
                            "{text:?} from {bytes:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn shell_like_words() {
        assert_eq!(
            words(r#"/usr/sbin/nginx -g 'daemon off;'"#),
            ["/usr/sbin/nginx", "-g", "daemon off;"]
        );
        assert_eq!(words(r#"a "b \"c\" \\ \d" e"#), ["a", r#"b "c" \ \d"#, "e"]);
        assert_eq!(words(r"a\ b \'c"), ["a b", "'c"]);
        assert_eq!(words("x '' \"\""), ["x", "", ""]);
        assert_eq!(words("x$HOME *"), ["x$HOME", "*"]);
        assert_eq!(words("  a\t b  "), ["a", "b"]);
        assert_eq!(words("a'b'\"c\"d"), ["abcd"]);
        assert!(split_words("a \"b").is_err());
        assert!(split_words("a\\").is_err());
    }
}
