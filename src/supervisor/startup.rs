//! Start-up, in the order that makes it safe: a clean process state; RUNDIR checked and
//! locked, CONFDIR locked (or both taken back from the going that exec'd this one); signal
//! handlers that only set a flag and write a byte; epoll over the signal pipe, inotify,
//! the log and the control socket; then what a previous going left, to adopt.
//!
//! Invariant: every failure here is fatal, with its sysexits code and a message naming
//! what failed on what; nothing after start-up is.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::confdir::{held_by, ConfLock};
use super::journal::Journal;
use super::source::Source;
use super::system::System;
use super::{adopt, Fatal, Options, Supervisor, CHLD, HUP, TERM, UPGRADE};
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
    sys::unblock_all_but_exits();
    let nofile = sys::nofile_limit();
    sys::raise_nofile(nofile);
    sys::become_subreaper();

    // After an upgrade RUNDIR and the locks are still held, on the fds the previous binary
    // handed over. A handover without the lock is none (a stray GOING_UPGRADE).
    let mut h = upgrade::take().unwrap_or_default();
    let upgraded = h.lock.is_some();
    let (rundir, lock, conf_lock) = dirs(&opts, &mut h)?;
    let wake = signals()?;

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
    let control = control(&sys, h.control.take())?;

    let version = env!("CARGO_PKG_VERSION");
    let msg = format_args!("going {version} started on {}", opts.confdir.display());
    sys.log.log(Level::Notice, msg);
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
        lock,
        wake,
        adopt: Some(adopted),
        journal,
        stopping: false,
        code: 0,
        waiters: Vec::new(),
    })
}

/// RUNDIR, checked, and the locks on it and CONFDIR, taken; or, after an upgrade, as the
/// previous binary handed them over.
fn dirs(opts: &Options, h: &mut upgrade::Handover) -> Result<(RunDir, File, ConfLock), Fatal> {
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
    let mut conf_lock = ConfLock::default();
    match h.confdir.take() {
        Some(fd) => conf_lock.held = Some(File::from(fd)),
        None => conf_lock
            .take(&opts.confdir, true)
            .map_err(|e| fatal(EX_TEMPFAIL, e))?,
    }
    Ok((rundir, lock, conf_lock))
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
    for (sig, flag) in [
        (libc::SIGHUP, &HUP),
        (libc::SIGTERM, &TERM),
        (libc::SIGINT, &TERM),
        (libc::SIGQUIT, &TERM),
        (libc::SIGUSR2, &UPGRADE),
    ] {
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
