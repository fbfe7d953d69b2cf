//! Upgrade in place: on SIGUSR2 going re-executes its binary — the one now installed at
//! the path it was started from — keeping its pid (init sees nothing), its children, their
//! output pipes, its lock and its control socket. What the new binary needs travels in one
//! environment variable: the fds to take back, and each live process's name, pid, settings
//! fingerprint and age. The new binary adopts them as a restart after `kill -9` would, but
//! they are still its children (or, for processes adopted before, watched by pidfd).
//!
//! Invariant: the fds handed over are close-on-exec again on both sides of the exec, so no
//! service inherits them; if the exec fails, the old binary carries on as before.

use std::ffi::{CString, OsString};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys::{self, Pid};

const VAR: &str = "GOING_UPGRADE";

/// A live process handed over.
pub struct Proc {
    pub name: String,
    pub pid: Pid,
    pub fingerprint: u64,
    pub age: Duration,
    /// Whether it is going's child (else it was adopted after a crash: watch its pidfd).
    pub child: bool,
    pub output: Option<OwnedFd>,
}

/// A live process to hand over: as `Proc`, with its output pipe's fd number.
pub struct Leaving {
    pub name: String,
    pub pid: Pid,
    pub fingerprint: u64,
    pub age: Duration,
    pub child: bool,
    pub output: Option<RawFd>,
}

/// What the going that exec'd this one handed over.
pub struct Handover {
    pub lock: Option<OwnedFd>,
    pub control: Option<OwnedFd>,
    pub procs: Vec<Proc>,
}

/// The handover, when this going was exec'd by an upgrade; the variable is removed.
pub fn take() -> Option<Handover> {
    let text = std::env::var(VAR).ok()?;
    // SAFETY of the call: single-threaded, nothing reads the environment meanwhile.
    std::env::remove_var(VAR);
    let mut h = Handover {
        lock: None,
        control: None,
        procs: Vec::new(),
    };
    for word in text.split(' ') {
        match word.split_once('=') {
            Some(("lock", fd)) => h.lock = fd.parse().ok().and_then(sys::inherit_fd),
            Some(("control", fd)) => h.control = fd.parse().ok().and_then(sys::inherit_fd),
            Some(("proc", p)) => {
                let f: Vec<&str> = p.split(',').collect();
                let [name, pid, fp, age, child, out] = f[..] else {
                    continue;
                };
                let (Ok(pid), Ok(fingerprint), Ok(age)) = (pid.parse(), fp.parse(), age.parse())
                else {
                    continue;
                };
                h.procs.push(Proc {
                    name: name.to_string(),
                    pid,
                    fingerprint,
                    age: Duration::from_millis(age),
                    child: child == "1",
                    output: out.parse::<RawFd>().ok().and_then(sys::inherit_fd),
                });
            }
            _ => {}
        }
    }
    Some(h)
}

/// The path going was started from (argv[0], looked up in PATH if it has no slash): the
/// binary installed there now, not the one running (/proc/self/exe is the replaced one).
pub fn own_path() -> Option<PathBuf> {
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    if argv0.as_os_str().as_bytes().contains(&b'/') {
        return Some(argv0);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(&argv0))
        .find(|p| p.is_file())
}

/// Execs `path` with the handover; returns only if that failed, with the error.
pub fn exec(path: &Path, lock: RawFd, control: RawFd, procs: &[Leaving]) -> std::io::Error {
    let mut text = format!("lock={lock} control={control}");
    for p in procs {
        let (ms, child, out) = (p.age.as_millis(), p.child as u8, p.output.unwrap_or(-1));
        text.push_str(&format!(
            " proc={},{},{},{ms},{child},{out}",
            p.name, p.pid, p.fingerprint
        ));
    }
    let fds = [lock, control]
        .into_iter()
        .chain(procs.iter().filter_map(|p| p.output));
    let fds: Vec<RawFd> = fds.collect();
    for &fd in &fds {
        sys::keep_on_exec(fd, true);
    }
    let cstr = |s: &[u8]| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = std::env::args_os().map(|a| cstr(a.as_bytes())).collect();
    let mut envp: Vec<CString> = (std::env::vars_os())
        .filter(|(k, _)| k != VAR)
        .map(|(k, v)| {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            cstr(kv.as_bytes())
        })
        .collect();
    envp.push(cstr(format!("{VAR}={text}").as_bytes()));
    let err = sys::exec(&cstr(path.as_os_str().as_bytes()), &argv, &envp);
    for &fd in &fds {
        sys::keep_on_exec(fd, false);
    }
    err
}
