//! Start-up, in the order that makes it safe: a clean process state; RUNDIR checked and
//! locked, CONFDIR locked (or both taken back from the going that exec'd this one); signal
//! handlers that only set a flag and write a byte; epoll over the signal pipe, inotify,
//! the log and the control socket; going's cgroup subtree, where it uses cgroups, with the
//! services' cgroups a previous going left; then what that going left, to adopt.
//!
//! Invariant: every failure here is fatal, with its sysexits code and a message naming
//! what failed on what; nothing after start-up is.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::cgroups::Groups;
use super::confdir::{held_by, ConfLock};
use super::journal::Journal;
use super::source::Source;
use super::system::System;
use super::{adopt, Fatal, Options, Supervisor, CHLD, HANDLED};
use crate::control::Control;
use crate::exit::{EX_CANTCREAT, EX_CONFIG, EX_OSERR, EX_TEMPFAIL};
use crate::log::{Errno, Level, Logger};
use crate::rundir::RunDir;
use crate::service::Table;
use crate::sys::{self, Epoll};
use crate::upgrade;
use crate::watch::Watch;

fn fatal(code: u8, msg: String) -> Fatal {
    Fatal { code, msg }
}

fn unable(code: u8, what: &str, e: io::Error) -> Fatal {
    fatal(code, format!("unable to {what}: {}", Errno(&e)))
}

fn os(what: &str, e: io::Error) -> Fatal {
    unable(EX_OSERR, what, e)
}

pub fn start(opts: Options) -> Result<Supervisor, Fatal> {
    sys::sanitize_fds();
    let nofile = sys::nofile_limit();
    sys::raise_nofile(nofile);
    sys::become_subreaper();

    // After an upgrade RUNDIR and the locks are still held, on the fds the previous binary
    // handed over. A handover without the lock is none (a stray GOING_UPGRADE).
    let mut h = upgrade::take().unwrap_or_default();
    let upgraded = h.lock.is_some();
    let (rundir, lock) = dirs(&opts, &mut h)?;
    // Only now is the mask emptied: an upgrade blocks the signals going acts on across
    // its exec, so that one that comes meanwhile waits for these handlers instead of
    // killing going with its default action. SIGCHLD is blocked from here on, for the
    // signalfd; one that came before is found by the walk over every child below.
    let wake = signals()?;
    sys::unblock_all_but_exits();

    let stdio = (File::options().read(true).write(true).open("/dev/null"))
        .map_err(|e| os("open /dev/null", e))?;
    let epoll = Epoll::new().map_err(|e| os("create an epoll instance", e))?;
    let mut watch = Watch::new(&opts.confdir).map_err(|e| os("initialise inotify", e))?;
    (epoll.add(wake.as_raw_fd(), Source::Signals.token()))
        .map_err(|e| os("watch the signal pipe", e))?;
    (epoll.add(watch.fd(), Source::Inotify.token())).map_err(|e| os("watch inotify", e))?;
    let exits = sys::exits_fd().map_err(|e| os("create a signalfd", e))?;
    (epoll.add(exits.as_raw_fd(), Source::Exits.token()))
        .map_err(|e| os("watch the signalfd", e))?;
    let mut sys = System::new(
        epoll,
        Logger::new(opts.syslog),
        stdio,
        nofile,
        rundir,
        exits,
    );
    (sys.log.watch(&sys.epoll, Source::Log.token()))
        .map_err(|e| os("watch the syslog socket", e))?;
    let conf_lock = conf_lock(&opts.confdir, &mut h, &mut sys)?;
    let control = control(&sys, h.control.take())?;
    let cgroups = cgroups(&mut sys, opts.cgroup.as_deref());

    let version = env!("CARGO_PKG_VERSION");
    let msg = format_args!(
        "going {version} started on {}; cgroups: {cgroups}",
        opts.confdir.display()
    );
    sys.log.log(Level::Notice, msg);
    if let Some(groups) = sys.cgroups.as_mut() {
        for e in groups.found(&sys.epoll) {
            sys.log.log(Level::Err, format_args!("going: {e}"));
        }
    }
    watch.request(Instant::now());
    let mut table = Table::default();
    table.held = opts.held;
    table.down_marks = adopt::down_marks(&sys);
    let mut journal = Journal::new(sys::boot_id());
    if let Some(fd) = h.notify.take() {
        sys.take_notify(fd);
    }
    let adopted = match upgraded {
        true => adopt::from_handover(&mut sys, h, Instant::now()),
        false => adopt::from_state(&mut sys, &mut journal, Instant::now()),
    };
    // A SIGCHLD that came while an upgrade exec'd this binary is lost: look anyway.
    CHLD.store(true, Ordering::SeqCst);
    Ok(Supervisor {
        confdir: opts.confdir,
        table,
        sys,
        watch,
        control,
        conf_lock,
        refused: None,
        lock,
        wake,
        adopt: Some(adopted),
        journal,
        stopping: false,
        code: 0,
        waiters: Vec::new(),
        answered: None,
    })
}

/// going's cgroup subtree `name` (None: `-c off`), found and taken for `sys`; the end of
/// the start-up line: where it is, or why going uses no cgroups. Not finding one is no
/// failure: going then stops services by their process groups alone.
fn cgroups(sys: &mut System, name: Option<&str>) -> String {
    let Some(name) = name else {
        sys.no_cgroups = crate::cgroup::OFF.into();
        return "off (-c off)".into();
    };
    let found = crate::cgroup::discover(sys::getpid(), name).and_then(|f| f.open());
    match found {
        Ok(tree) => {
            let groups = Groups::new(tree);
            let path = groups.path().display().to_string();
            sys.cgroups = Some(groups);
            path
        }
        Err(why) => {
            sys.no_cgroups = why.to_string();
            format!("not used: {why}")
        }
    }
}

/// RUNDIR, checked, and its lock, taken; or, after an upgrade, as the previous binary
/// handed them over.
fn dirs(opts: &Options, h: &mut upgrade::Handover) -> Result<(RunDir, File), Fatal> {
    let rundir = match h.rundir.take() {
        Some(fd) => RunDir::from_dir(sys::Dir::from_fd(fd), &opts.rundir),
        None => RunDir::open(&opts.rundir),
    }
    .map_err(|e| match e.is_unsafe() {
        true => fatal(EX_CONFIG, e.to_string()),
        false => fatal(EX_CANTCREAT, e.to_string()),
    })?;
    let lock = match h.lock.take() {
        Some(fd) => File::from(fd),
        None => lock(&rundir)?,
    };
    Ok((rundir, lock))
}

/// CONFDIR's lock, taken (a warning logged when it is held without keeping another going
/// off); or, after an upgrade, as the previous binary handed it over.
fn conf_lock(
    confdir: &std::path::Path,
    h: &mut upgrade::Handover,
    sys: &mut System,
) -> Result<ConfLock, Fatal> {
    if h.confdir.is_some() || h.conflock.is_some() {
        return Ok(ConfLock::handed_over(h.confdir.take(), h.conflock.take()));
    }
    let mut conf_lock = ConfLock::default();
    let warning = (conf_lock.take(confdir, true)).map_err(|e| fatal(EX_TEMPFAIL, e))?;
    if let Some(w) = warning {
        sys.log.log(Level::Warning, format_args!("{w}"));
    }
    Ok(conf_lock)
}

/// RUNDIR's lock, taken; refused, with the other going named, when it is held.
fn lock(rundir: &RunDir) -> Result<File, Fatal> {
    let path = rundir.path().join("lock");
    let lock = (rundir.lock_file("lock"))
        .map_err(|e| unable(EX_CANTCREAT, &format!("open {}", path.display()), e))?;
    if !super::confdir::take(&lock, &path, true) {
        let who = lock.metadata().map(|m| held_by(&m)).unwrap_or_default();
        let dir = rundir.path().display();
        let msg = format!(
            "{dir} is in use by another going{who} ({} is locked)",
            path.display()
        );
        return Err(fatal(EX_TEMPFAIL, msg));
    }
    Ok(lock)
}

/// The handlers of the signals going acts on, and the read end of the pipe they write to.
fn signals() -> Result<UnixStream, Fatal> {
    let (wake, wake_w) = UnixStream::pair().map_err(|e| os("create the signal pipe", e))?;
    wake.set_nonblocking(true)
        .map_err(|e| os("create the signal pipe", e))?;
    for &(sig, flag) in &HANDLED {
        // The flag first: by the time the byte wakes the loop, the flag is set.
        signal_hook::flag::register(sig, flag).map_err(|e| os("set a signal handler", e))?;
        let w = (wake_w.try_clone()).map_err(|e| os("set a signal handler", e))?;
        signal_hook::low_level::pipe::register(sig, w)
            .map_err(|e| os("set a signal handler", e))?;
    }
    Ok(wake)
}

/// The control socket: the one handed over, or RUNDIR/control made anew (mode 0600 from
/// the start, in RUNDIR as it was checked).
fn control(sys: &System, inherited: Option<std::os::fd::OwnedFd>) -> Result<Control, Fatal> {
    let path = sys.rundir.path().join("control");
    let umask = sys::set_umask(0o177);
    let bound = Control::bind(&sys.rundir.socket_path("control"), inherited);
    sys::set_umask(umask);
    let control =
        bound.map_err(|e| unable(EX_CANTCREAT, &format!("create {}", path.display()), e))?;
    (sys.epoll.add(control.fd(), Source::Control.token()))
        .map_err(|e| os("watch the control socket", e))?;
    Ok(control)
}
