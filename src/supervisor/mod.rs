//! The supervisor: one thread, one epoll loop, absolute deadlines. Each turn waits for the
//! earliest deadline or an event, hands each event to the part that owns its source, then
//! takes the named steps in order: reap, signals, a reload when one is due, deadlines,
//! held clients (commands that wait, followers of output), the state file.
//!
//! Invariants: signals are only flags plus a byte on a pipe; the pipe is drained before the
//! flags are read, so none is lost. The loop sleeps until the earliest deadline, or forever:
//! an idle going makes no system call. Only start-up errors end it; inside the loop every
//! failure is logged and becomes a retry.

mod adopt;
mod confdir;
mod journal;
mod source;
mod startup;
mod system;

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::admin::{self, Answer};
use crate::config;
use crate::control::{self, Control};
use crate::exit::{EX_TEMPFAIL, FAILED};
use crate::follow::FOLLOWERS;
use crate::log::{Errno, Level};
use crate::service::{Summary, Table};
use crate::state;
use crate::sys::{self, Exit};
use crate::upgrade;
use crate::watch::Watch;
use adopt::Adopted;
use confdir::ConfLock;
use journal::Journal;
use source::Source;
use system::System;

pub struct Options {
    pub confdir: PathBuf,
    pub rundir: PathBuf,
    /// The syslog socket; None logs to stderr.
    pub syslog: Option<PathBuf>,
    /// How many lines of output are held per service (`-n`).
    pub held: crate::service::Held,
}

/// A start-up failure: the message and the sysexits code to leave with.
pub struct Fatal {
    pub code: u8,
    pub msg: String,
}

static CHLD: AtomicBool = AtomicBool::new(false);
static HUP: AtomicBool = AtomicBool::new(false);
static TERM: AtomicBool = AtomicBool::new(false);
static UPGRADE: AtomicBool = AtomicBool::new(false);

/// A file or the directory unreadable for want of fds or memory: another try after this.
const RETRY: Duration = Duration::from_secs(1);

pub struct Supervisor {
    confdir: PathBuf,
    table: Table,
    sys: System,
    watch: Watch,
    control: Control,
    conf_lock: ConfLock,
    /// RUNDIR's lock, held while going runs, and handed over on an upgrade.
    lock: File,
    /// The read end of the signal handlers' self-pipe.
    wake: UnixStream,
    /// What a previous going left running, and the one-shots it saw finish: taken over by
    /// the first reload that reads CONFDIR, which says which of them run on.
    adopt: Option<(Adopted, adopt::Done)>,
    journal: Journal,
    stopping: bool,
    /// What going exits with once every service is stopped: 0, or an essential service's
    /// status.
    code: u8,
    /// Commands that wait (`-w`) for services to get somewhere: the client, and what.
    waiters: Vec<(u32, admin::Wait)>,
}

/// Supervises until stopped; Ok(going's exit status) once every service is gone.
pub fn run(opts: Options) -> Result<u8, Fatal> {
    let mut sup = startup::start(opts)?;
    let mut events = [sys::NO_EVENT; 64];
    loop {
        let n = sup.wait(&mut events);
        let now = Instant::now();
        for ev in &events[..n] {
            sup.dispatch(sys::token(ev), now);
        }
        sup.reap(now);
        sup.on_essential_end(now);
        sup.on_signals(now);
        sup.reload_if_due(now);
        sup.on_deadlines(Instant::now());
        sup.answer_waiters(Instant::now());
        sup.feed_followers();
        sup.save_state(false);
        if sup.stopping && sup.table.is_empty() {
            let code = sup.code;
            sup.exit();
            return Ok(code);
        }
    }
}

impl Supervisor {
    /// Waits for events until the earliest deadline, or forever.
    fn wait(&mut self, events: &mut [sys::Event]) -> usize {
        let now = Instant::now();
        let due = [
            self.table.next_deadline(),
            self.watch.due().filter(|_| !self.stopping),
            self.control.next_deadline(),
            self.sys.check.as_ref().and_then(|c| c.due()),
            self.waiters.iter().map(|w| w.1.until).min(),
        ];
        let timeout = due.into_iter().flatten().min().map_or(-1, |d| {
            let ns = d.saturating_duration_since(now).as_nanos();
            ns.div_ceil(1_000_000).min(i32::MAX as u128) as i32
        });
        match self.sys.epoll.wait(events, timeout) {
            Ok(n) => n,
            Err(e) => {
                let msg = format_args!("going: epoll_wait failed: {}", Errno(&e));
                self.sys.log.log(Level::Err, msg);
                0
            }
        }
    }

    /// One event, to the part that owns its source.
    fn dispatch(&mut self, token: u64, now: Instant) {
        match Source::from_token(token) {
            Some(Source::Signals) => {
                while (&self.wake).read(&mut [0u8; 64]).is_ok_and(|n| n > 0) {}
            }
            Some(Source::Inotify) => self.watch.read(now),
            Some(Source::Log) => self.sys.log.flush(),
            Some(Source::Control) => {
                let epoll = &self.sys.epoll;
                self.control
                    .accept(epoll, |id| Source::Client(id).token(), now)
            }
            Some(Source::Client(id)) => self.client(id, now),
            Some(Source::Follower(id)) => self.sys.followers.woken(id, &self.sys.epoll),
            Some(Source::Output(pid)) => self.sys.relay_output(pid, false, &mut self.table),
            Some(Source::ExecReport(pid)) => match self.sys.child_report(pid) {
                Some(Ok(())) => self.table.exec_ok(pid, &mut self.sys, now),
                Some(Err(err)) => self.table.child_failed(pid, err, &mut self.sys),
                None => {}
            },
            Some(Source::Pidfd(pid)) => {
                // An adopted process ended; init, its parent now, reaps it.
                if self.sys.adopted_ended(pid) {
                    self.sys.relay_output(pid, true, &mut self.table);
                    self.table.exited(pid, Exit::Unknown, &mut self.sys, now);
                    self.table.check_groups(&mut self.sys, now);
                }
            }
            Some(Source::Exits) => self.reap_exits(now),
            Some(Source::Notify) => self.sys.notified(&mut self.table, now),
            Some(Source::ReadyFd(pid)) => self.sys.ready_fd(pid, &mut self.table, now),
            None => {
                let msg = format_args!("going: an event going does not know ({token:#x})");
                self.sys.log.log(Level::Err, msg);
            }
        }
    }

    /// A control client can be read or written: its request, answered.
    fn client(&mut self, id: u32, now: Instant) {
        let token = Source::Client(id).token();
        let line = match self.control.ready(id, &self.sys.epoll, token) {
            control::Event::Request(_, line) => line,
            control::Event::Gone(id) => {
                // A command that waited, interrupted (^C): there is no one to answer.
                self.waiters.retain(|w| w.0 != id);
                return;
            }
            control::Event::Nothing => return,
        };
        let answer = admin::handle(&line, &mut self.table, &mut self.sys, now, &self.confdir);
        let reply = match answer {
            Answer::Now(text) => text,
            Answer::AfterReload if self.stopping => format!("{FAILED}\n!going: stopping\n"),
            // Every problem of every file, for the admin.
            Answer::AfterReload => admin::reload_reply(self.reload(true)),
            Answer::Wait(wait) => match wait.answer(&self.table, now) {
                Some(reply) => reply,
                None => {
                    // The client waits as long, and a moment more for the answer.
                    let until = wait.until + Duration::from_secs(1);
                    self.control.hold(id, until);
                    self.waiters.push((id, wait));
                    return;
                }
            },
            Answer::Follow(f) if !self.sys.followers.is_full() => {
                return self.follow(id, f, now);
            }
            Answer::Follow(_) => {
                format!("{EX_TEMPFAIL}\n!going: {FOLLOWERS} followers already: try again later\n")
            }
        };
        self.control.reply(id, reply, &self.sys.epoll, token);
    }

    /// `log -f`: the client `id` is sent the held lines of the services, then their new
    /// lines as they come, for as long as it stays: its connection is the follower's.
    fn follow(&mut self, id: u32, f: admin::Follow, now: Instant) {
        let Some(stream) = self.control.take(id) else {
            return;
        };
        let names: Vec<&str> = f.names.iter().map(String::as_str).collect();
        let held = admin::held(&self.table, &names, f.lines, now);
        let token = Source::Follower(id).token();
        let (followers, epoll) = (&mut self.sys.followers, &self.sys.epoll);
        followers.add(id, stream, token, &f.names, held, epoll);
    }

    /// Followers: those whose services are gone with their files are told so (not while
    /// going stops: every service goes then, and the streams end as going exits), and
    /// what waits for each is written, but to a socket that is full. Nothing to do
    /// (nothing done) while none follows.
    fn feed_followers(&mut self) {
        if self.sys.followers.is_empty() {
            return;
        }
        if !self.stopping {
            let table = &self.table;
            self.sys.followers.gone(|name| table.knows(name));
        }
        self.sys.followers.feed(&self.sys.epoll);
    }

    /// Commands that wait: answered once their services got there, failed, or the time is
    /// up. Nothing to do (nothing done) while none waits.
    fn answer_waiters(&mut self, now: Instant) {
        if self.waiters.is_empty() {
            return;
        }
        let (table, control, epoll) = (&self.table, &mut self.control, &self.sys.epoll);
        self.waiters
            .retain(|(id, wait)| match wait.answer(table, now) {
                Some(reply) => {
                    control.reply(*id, reply, epoll, Source::Client(*id).token());
                    false
                }
                None => true,
            });
    }

    /// SIGCHLD: the child it names is reaped alone and restarted, at the same cost with
    /// 10,000 children as with 10. A SIGCHLD pending swallows the next ones, so every
    /// child is looked at once after that, in this turn (`reap`): off the way of the
    /// restart, and with no wake-up of its own.
    fn reap_exits(&mut self, now: Instant) {
        let mut pids = Vec::new();
        sys::read_exits(&mut pids);
        for pid in pids {
            if let Some(status) = sys::reap_pid(pid) {
                self.ended(pid, status, now);
            }
        }
        self.table.check_groups(&mut self.sys, now);
        CHLD.store(true, Ordering::SeqCst);
    }

    /// A child ended with `status`: the upgrade's check, or a service's process or orphan.
    fn ended(&mut self, pid: sys::Pid, status: libc::c_int, now: Instant) {
        if self.sys.check.as_ref().is_some_and(|c| c.pid == pid) {
            self.finish_upgrade(status);
        } else {
            self.sys.child_ended(pid, status, &mut self.table, now);
        }
    }

    /// Reaps every child that ended and was not reaped yet (its SIGCHLD swallowed by
    /// another's): after a SIGCHLD, and after an upgrade's exec. A walk over all children.
    fn reap(&mut self, now: Instant) {
        if !CHLD.swap(false, Ordering::SeqCst) {
            return;
        }
        while let Some((pid, status)) = sys::reap() {
            self.ended(pid, status, now);
        }
        self.table.check_groups(&mut self.sys, now);
    }

    /// An essential service ended on its own: going stops everything, and exits with its
    /// status, as tini does with its one child.
    fn on_essential_end(&mut self, now: Instant) {
        let Some(e) = self.table.essential_ended() else {
            return;
        };
        if self.stopping {
            return;
        }
        let msg = format_args!(
            "going: {} is essential and {}: stopping every service, then exiting {}",
            e.name, e.how, e.code
        );
        self.sys.log.log(Level::Err, msg);
        self.code = e.code;
        self.stop_all(now);
    }

    /// Stops every service (dependents first); going exits once all are gone.
    fn stop_all(&mut self, now: Instant) {
        self.stopping = true;
        let n = self.table.len();
        self.sys
            .log
            .log(Level::Notice, format_args!("going: stopping {n} services"));
        self.table.shutdown(&mut self.sys, now);
    }

    /// SIGTERM (INT, QUIT): stop everything; SIGHUP: reload; SIGUSR2: upgrade.
    fn on_signals(&mut self, now: Instant) {
        if TERM.swap(false, Ordering::SeqCst) && !self.stopping {
            self.stop_all(now);
        }
        if HUP.swap(false, Ordering::SeqCst) {
            self.watch.request(now);
        }
        if UPGRADE.swap(false, Ordering::SeqCst) && !self.stopping {
            self.start_upgrade(now);
        }
    }

    fn reload_if_due(&mut self, now: Instant) {
        if !self.stopping && self.watch.due().is_some_and(|d| d <= now) {
            // Logged, with every problem; a failure to read CONFDIR changes nothing.
            let _ = self.reload(false);
        }
    }

    /// Rescans CONFDIR and applies it: the summary and every problem of every invalid file.
    /// The first one that can read CONFDIR also takes over what a previous going left.
    fn reload(&mut self, full: bool) -> Result<(Summary, Vec<String>), String> {
        if self.watch.begin_reload() || full {
            self.watch.stamps.clear();
        }
        let (sys, table) = (&mut self.sys, &mut self.table);
        if let Err(e) = self.conf_lock.take(&self.confdir, false) {
            let msg = format!("{e}; {} services left as they are", table.len());
            sys.log.log(Level::Err, format_args!("reload: {msg}"));
            return Err(msg);
        }
        let scan = match self
            .watch
            .scan(&self.confdir, |level, msg| sys.log.log(level, msg))
        {
            Ok(scan) => scan,
            Err(e) => {
                if e.is_transient() {
                    self.watch.retry(Instant::now() + RETRY);
                }
                let msg = format!("{e}; {} services left as they are", table.len());
                sys.log.log(Level::Err, format_args!("reload: {msg}"));
                return Err(msg);
            }
        };
        let config::Scan {
            mut files,
            mut unchanged,
            ..
        } = scan;
        table.cycles(&self.confdir, &mut files, &mut unchanged);
        let problems = files.values().filter_map(|p| p.as_ref().err()).flatten();
        if problems.clone().any(|e| e.is_transient()) {
            self.watch.retry(Instant::now() + RETRY);
        }
        let problems = problems.map(|e| e.to_string()).collect();
        let notify = |p: &config::Parsed| {
            p.as_ref()
                .is_ok_and(|s| s.life().ready == Some(config::Ready::Notify))
        };
        if files.values().any(notify) || table.uses_notify() {
            sys.ensure_notify();
        }
        if let Some((adopt, done)) = self.adopt.take() {
            table.adopt(&files, adopt, done, sys, Instant::now());
            for (pid, n) in table.not_ready_fds() {
                if !sys.reopen_ready_fd(pid, n) {
                    let msg = format_args!(
                        "going: pid {pid} holds no readiness pipe at fd {n}: taken for ready"
                    );
                    sys.log.log(Level::Notice, msg);
                    table.fd_ready(pid, sys, Instant::now());
                }
            }
        }
        unchanged.sort_unstable();
        let sum = table.reconcile(files, &unchanged, sys, Instant::now());
        sys.log.log(Level::Notice, format_args!("reload: {sum}"));
        Ok((sum, problems))
    }

    /// Quarantines that end and stops that time out; clients whose time is up; a new
    /// binary that did not answer in time; messages that can go now.
    fn on_deadlines(&mut self, now: Instant) {
        self.table.tick(&mut self.sys, now);
        let listener = Source::Control.token();
        self.control.expire(now, &self.sys.epoll, listener);
        if let Some(check) = self
            .sys
            .check
            .as_mut()
            .filter(|c| c.due().is_some_and(|d| d <= now))
        {
            let msg = check.give_up();
            self.sys
                .log
                .log(Level::Err, format_args!("going: unable to upgrade: {msg}"));
        }
        self.sys
            .log
            .want_output(&self.sys.epoll, Source::Log.token());
    }

    /// Tells RUNDIR/state what changed; `snapshot` writes it all anew.
    fn save_state(&mut self, snapshot: bool) {
        let s = &mut self.sys;
        let start_of = |pid| sys::proc_identity(pid).map(|(_, start)| start);
        (self.journal).save(
            &mut self.table,
            &s.rundir,
            &s.outputs,
            &mut s.log,
            snapshot,
            start_of,
        );
    }

    /// SIGUSR2: ask the binary installed where going was started from whether it can take
    /// over; `finish_upgrade` execs it once it said so.
    fn start_upgrade(&mut self, now: Instant) {
        let log = |s: &mut System, msg: std::fmt::Arguments| s.log.log(Level::Err, msg);
        if self.sys.check.is_some() {
            let msg = "going: already upgrading: the new binary has not answered yet";
            self.sys.log.log(Level::Notice, format_args!("{msg}"));
            return;
        }
        let Some(path) = upgrade::own_path() else {
            let msg = "cannot tell where going was started from";
            return log(
                &mut self.sys,
                format_args!("going: unable to upgrade: {msg}"),
            );
        };
        match upgrade::start_check(path, self.sys.nofile, now) {
            Ok(check) => self.sys.check = Some(check),
            Err(e) => log(
                &mut self.sys,
                format_args!("going: unable to upgrade: {e}; carrying on"),
            ),
        }
    }

    /// The new binary answered (it ended with `status`): exec it, handing over all that
    /// runs. Returns only if that failed; going then carries on as it was.
    fn finish_upgrade(&mut self, status: libc::c_int) {
        let Some(check) = self.sys.check.take().filter(|c| c.due().is_some()) else {
            return; // killed when its time was up, and said so then
        };
        let said = match check.verdict(status) {
            Ok(said) => said,
            Err(e) => {
                let msg = format_args!("going: unable to upgrade: {e}; carrying on");
                return self.sys.log.log(Level::Err, msg);
            }
        };
        let (sys, journal) = (&self.sys, &self.journal);
        let procs: Vec<upgrade::Leaving> = (self.table.live())
            .map(|l| upgrade::Leaving {
                name: l.name.to_string(),
                pid: l.pid,
                fingerprint: crate::fingerprint::Fingerprint::V2(l.fingerprint),
                age: (journal.start_of(l.pid))
                    .or_else(|| sys::proc_identity(l.pid).map(|p| p.1))
                    .and_then(sys::age)
                    .unwrap_or_default(),
                child: !sys.is_adopted(l.pid),
                output: sys.outputs.fd(l.pid),
            })
            .collect();
        // Should the new binary die after taking over, the next going adopts from this.
        self.save_state(true);
        let kept = upgrade::Kept {
            lock: self.lock.as_raw_fd(),
            control: self.control.fd(),
            rundir: self.sys.rundir.dir().fd(),
            confdir: self.conf_lock.held.as_ref().map(|f| f.as_raw_fd()),
            notify: self.sys.notify.as_ref().map(|n| n.fd()),
            ready: self
                .table
                .live()
                .filter(|l| l.ready)
                .map(|l| l.pid)
                .collect(),
            ready_fds: self.sys.ready_fds(),
            done: (self.table.done())
                .map(|(name, fp, ok)| (name.to_string(), fp, ok))
                .collect(),
        };
        let path = check.path.clone();
        let n = procs.len();
        let msg = format_args!(
            "going: upgrading: exec {} ({said}) with {n} services",
            path.display()
        );
        self.sys.log.log(Level::Notice, msg);
        self.sys.log.flush();
        let text = "going: upgrading to a new binary: follow again";
        (self.sys.followers).end_all(EX_TEMPFAIL, text, &self.sys.epoll);
        let err = check.exec(&kept, &procs);
        let msg = format_args!(
            "going: unable to upgrade: exec {}: {}; carrying on",
            path.display(),
            Errno(&err)
        );
        self.sys.log.log(Level::Err, msg);
    }

    /// Every service stopped after SIGTERM: nothing is left to adopt, nor to ask.
    fn exit(mut self) {
        let msg = format_args!("going: all services stopped, exiting");
        self.sys.log.log(Level::Notice, msg);
        let text = "going: all services stopped, exiting";
        (self.sys.followers).end_all(0, text, &self.sys.epoll);
        let rundir = &self.sys.rundir;
        for (what, done) in [
            ("control", rundir.remove("control")),
            ("state", state::remove(rundir)),
        ] {
            if let Err(e) = done {
                let path = rundir.path().join(what);
                let msg = format_args!("going: unable to remove {}: {}", path.display(), Errno(&e));
                self.sys.log.log(Level::Err, msg);
            }
        }
    }
}
