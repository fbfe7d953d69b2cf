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
mod cgroups;
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
    /// The name of going's cgroup subtree; None: no cgroups (`-c off`).
    pub cgroup: Option<String>,
}

/// A start-up failure: the message and the sysexits code to leave with.
pub struct Fatal {
    pub code: u8,
    pub msg: String,
}

/// A walk over every child is due: set after a SIGCHLD (read from the signalfd, where
/// SIGCHLD, blocked, always goes) and after an upgrade's exec.
static CHLD: AtomicBool = AtomicBool::new(false);
static HUP: AtomicBool = AtomicBool::new(false);
static TERM: AtomicBool = AtomicBool::new(false);
static UPGRADE: AtomicBool = AtomicBool::new(false);

/// The signals going acts on through a handler, and the flag each sets. They are blocked
/// across an upgrade's exec, until the new binary's handlers are in place (see
/// `finish_upgrade`). SIGCHLD has no handler: it stays blocked, for the signalfd.
static HANDLED: [(libc::c_int, &AtomicBool); 5] = [
    (libc::SIGHUP, &HUP),
    (libc::SIGTERM, &TERM),
    (libc::SIGINT, &TERM),
    (libc::SIGQUIT, &TERM),
    (libc::SIGUSR2, &UPGRADE),
];

/// A file or the directory unreadable for want of fds or memory: another try after this.
const RETRY: Duration = Duration::from_secs(1);

/// What a scan of CONFDIR gives a reload: the files read, the names of those unchanged
/// (not read again), and every problem of every invalid file.
type Scanned = (
    std::collections::BTreeMap<String, config::Parsed>,
    Vec<String>,
    Vec<String>,
);

pub struct Supervisor {
    confdir: PathBuf,
    table: Table,
    sys: System,
    watch: Watch,
    control: Control,
    conf_lock: ConfLock,
    /// Why CONFDIR's lock was last refused, while it is: said once, tried again.
    refused: Option<String>,
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
    /// The exit status of the new binary being asked (an upgrade's check), once reaped:
    /// acted on after every other child ended is reaped.
    answered: Option<libc::c_int>,
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
        sup.upgrade_if_asked(now);
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
                    if !(self.table).exited(pid, Exit::Unknown, &mut self.sys, now) {
                        self.not_taken_over(pid);
                    }
                    self.table.check_groups(&mut self.sys, now);
                }
            }
            Some(Source::Exits) => self.reap_exits(now),
            Some(Source::Notify) => self.sys.notified(&mut self.table, now),
            Some(Source::ReadyFd(pid)) => self.sys.ready_fd(pid, &mut self.table, now),
            Some(Source::Cgroup(id)) => {
                self.sys.cgroup_event(id);
                self.table.check_groups(&mut self.sys, now);
            }
            Some(Source::Oom(id)) => {
                let table = &self.table;
                self.sys.oom_event(id, |name| table.main_pid(name));
            }
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

    /// A child ended with `status`: a service's process, or an orphan. The upgrade's
    /// check's answer is kept for `reap`, which acts on it once every other child is
    /// reaped: an upgrade hands over only processes that are still there.
    fn ended(&mut self, pid: sys::Pid, status: libc::c_int, now: Instant) {
        if self.sys.check.as_ref().is_some_and(|c| c.pid == pid) {
            self.answered = Some(status);
        } else if !self.sys.child_ended(pid, status, &mut self.table, now) {
            self.not_taken_over(pid);
        }
    }

    /// Reaps every child that ended and was not reaped yet (its SIGCHLD swallowed by
    /// another's): after a SIGCHLD, and after an upgrade's exec. A walk over all children;
    /// then the upgrade's check's answer, if it came.
    fn reap(&mut self, now: Instant) {
        if !CHLD.swap(false, Ordering::SeqCst) {
            return;
        }
        while let Some((pid, status)) = sys::reap() {
            self.ended(pid, status, now);
        }
        self.table.check_groups(&mut self.sys, now);
        if let Some(status) = self.answered.take() {
            self.finish_upgrade(status);
        }
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
        if self.adopt.is_some() {
            // Not taken over yet, what a previous going left would be left behind, and
            // started a second time by the next going: taken over now, with the files
            // as they are (as far as they can be read), and stopped with the rest.
            let files = self.read_confdir(false).map(|s| s.0).unwrap_or_default();
            self.take_over(&files);
        }
        if let Some(check) = self.sys.check.as_mut() {
            // No exec while stopping, and no check left behind when going exits.
            let msg = check.abandon();
            let msg = format_args!("going: not upgrading: stopping{msg}");
            self.sys.log.log(Level::Notice, msg);
        }
        let n = self.table.len();
        self.sys
            .log
            .log(Level::Notice, format_args!("going: stopping {n} services"));
        self.table.shutdown(&mut self.sys, now);
    }

    /// SIGTERM (INT, QUIT): stop everything; SIGHUP: reload. (SIGUSR2: `upgrade_if_asked`.)
    fn on_signals(&mut self, now: Instant) {
        if TERM.swap(false, Ordering::SeqCst) && !self.stopping {
            self.stop_all(now);
        }
        if HUP.swap(false, Ordering::SeqCst) {
            self.watch.request(now);
        }
    }

    /// SIGUSR2: an upgrade, unless going stops. What a previous going left is handed over
    /// only once taken over: until then the upgrade waits for the reload that is due, or,
    /// none being due (CONFDIR cannot be read), is refused.
    fn upgrade_if_asked(&mut self, now: Instant) {
        if self.stopping || !UPGRADE.load(Ordering::SeqCst) {
            return;
        }
        if self.adopt.is_some() && self.watch.due().is_some() {
            return;
        }
        UPGRADE.store(false, Ordering::SeqCst);
        if self.adopt.is_some() {
            let msg = "going: unable to upgrade: what the previous going left is not taken over yet (CONFDIR unread); carrying on";
            return self.sys.log.log(Level::Err, format_args!("{msg}"));
        }
        self.start_upgrade(now);
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
        let (files, mut unchanged, problems) = self.read_confdir(full)?;
        let (sys, table) = (&mut self.sys, &mut self.table);
        let notify = |p: &config::Parsed| {
            p.as_ref()
                .is_ok_and(|s| s.life().ready == Some(config::Ready::Notify))
        };
        if files.values().any(notify) || table.uses_notify() {
            sys.ensure_notify();
        }
        let adopting = self.adopt.is_some();
        self.take_over(&files);
        unchanged.sort_unstable();
        let (sys, table) = (&mut self.sys, &mut self.table);
        let sum = table.reconcile(files, &unchanged, sys, Instant::now());
        if adopting {
            // What an earlier going left for services there are no more, and empty.
            sys.prune_cgroups(|name| table.contains(name));
        }
        sys.log.log(Level::Notice, format_args!("reload: {sum}"));
        Ok((sum, problems))
    }

    /// CONFDIR, locked and scanned: the files read (valid or not), the names of those not
    /// read again as unchanged, and every problem of every invalid file. Err says why
    /// nothing could be read; it is logged, and a retry set when one may help.
    fn read_confdir(&mut self, full: bool) -> Result<Scanned, String> {
        if self.watch.begin_reload() || full {
            self.watch.stamps.clear();
        }
        let (sys, table) = (&mut self.sys, &mut self.table);
        match self.conf_lock.take(&self.confdir, false) {
            Ok(warning) => {
                if let Some(w) = warning {
                    sys.log.log(Level::Warning, format_args!("{w}"));
                }
                self.refused = None;
            }
            Err(e) => {
                // Tried again until the other going lets go (or CONFDIR changes), and
                // said once.
                self.watch.retry(Instant::now() + RETRY);
                let msg = format!("{e}; {} services left as they are", table.len());
                if self.refused.as_ref() != Some(&msg) {
                    sys.log.log(Level::Err, format_args!("reload: {msg}"));
                    self.refused = Some(msg.clone());
                }
                return Err(msg);
            }
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
        for name in table.cycles(&self.confdir, &mut files, &mut unchanged) {
            self.watch.reread(&name);
        }
        if files
            .values()
            .any(|p| p.as_ref().is_ok_and(|s| s.cgroup.is_some()))
        {
            config::check_limits(&self.confdir, &mut files, &sys.available());
        }
        let problems = files.values().filter_map(|p| p.as_ref().err()).flatten();
        if problems.clone().any(|e| e.is_transient()) {
            self.watch.retry(Instant::now() + RETRY);
        }
        let problems = problems.map(|e| e.to_string()).collect();
        Ok((files, unchanged, problems))
    }

    /// What a previous going left, taken over once CONFDIR was read (`files`): the table
    /// decides, file by file, which of its processes run on.
    fn take_over(&mut self, files: &std::collections::BTreeMap<String, config::Parsed>) {
        let Some((adopt, done)) = self.adopt.take() else {
            return;
        };
        let (sys, table) = (&mut self.sys, &mut self.table);
        let leftovers = sys.adopt_cgroups(&adopt);
        table.adopt(files, adopt, done, &leftovers, sys, Instant::now());
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

    /// An end the table did not know of: an orphan's, or that of a process a previous
    /// going left that is not taken over yet (CONFDIR not read). That one is taken over
    /// no more: its service starts anew once its file is read.
    fn not_taken_over(&mut self, pid: sys::Pid) {
        let Some((adopt, _)) = self.adopt.as_mut() else {
            return;
        };
        let Some(name) = (adopt.iter()).find_map(|(n, a)| (a.pid == pid).then(|| n.clone())) else {
            return;
        };
        adopt.remove(&name);
        let msg = format_args!("{name}[{pid}]: ended before going could take it over");
        self.sys.log.log(Level::Notice, msg);
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
            return; // killed when its time was up or going began to stop, and said so then
        };
        let said = match check.verdict(status) {
            Ok(said) => said,
            Err(e) => {
                let msg = format_args!("going: unable to upgrade: {e}; carrying on");
                return self.sys.log.log(Level::Err, msg);
            }
        };
        // From here a signal waits, blocked, for the new binary's handlers: its default
        // action would end going. One that came before and is not acted on yet would be
        // lost with this binary's flags: a SIGTERM is acted on here instead, and the
        // upgrade given up.
        let sigs: Vec<libc::c_int> = HANDLED.iter().map(|h| h.0).collect();
        let mask = sys::block_signals(&sigs);
        if self.stopping || TERM.load(Ordering::SeqCst) {
            sys::set_signal_mask(mask);
            let msg = format_args!("going: not upgrading: stopping");
            return self.sys.log.log(Level::Notice, msg);
        }
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
        // Commands that wait lose their connection with the exec: told so, not left to
        // guess from an end without a word.
        let (table, control, epoll, now) = (
            &self.table,
            &mut self.control,
            &self.sys.epoll,
            Instant::now(),
        );
        for (id, wait) in std::mem::take(&mut self.waiters) {
            let reply = wait.cut(table, now, "going is upgrading; ask again");
            control.reply(id, reply, epoll, Source::Client(id).token());
        }
        let (confdir, conflock) = self.conf_lock.fds();
        let kept = upgrade::Kept {
            lock: self.lock.as_raw_fd(),
            control: self.control.fd(),
            rundir: self.sys.rundir.dir().fd(),
            confdir,
            conflock,
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
            groups: self.drains(),
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
        // SIGCHLD is not blocked across the exec: blocked, it would hang a shell script
        // that runs a command before it execs going. Its default action ignores it, and
        // the new binary looks for ended children anyway; so does this one if the exec
        // fails.
        sys::unblock_signals(&[libc::SIGCHLD]);
        // The fd limit going started with, not the one it raised: the new binary takes
        // what it finds for the original, which its services get.
        let nofile = self.sys.nofile;
        if let Err(e) = sys::set_nofile(nofile) {
            let msg = format_args!(
                "going: unable to restore the fd limit before exec: {}",
                Errno(&e)
            );
            self.sys.log.log(Level::Warning, msg);
        }
        let err = check.exec(&kept, &procs);
        sys::raise_nofile(nofile);
        sys::set_signal_mask(mask);
        CHLD.store(true, Ordering::SeqCst);
        let msg = format_args!(
            "going: unable to upgrade: exec {}: {}; carrying on",
            path.display(),
            Errno(&err)
        );
        self.sys.log.log(Level::Err, msg);
    }

    /// The process groups being stopped whose leaders are gone, for an upgrade's handover:
    /// when each one's SIGKILL is due, and whether its members are going's children.
    fn drains(&self) -> Vec<(state::Group, bool)> {
        let (now, clock) = (Instant::now(), sys::monotonic_ms());
        (self.table.drains())
            .map(|d| {
                let g = state::Group {
                    name: d.name.to_string(),
                    pgid: d.pgid,
                    kill_at: sys::deadline_ms(d.kill_at, now, clock),
                };
                (g, !self.sys.is_adopted_group(d.pgid))
            })
            .collect()
    }

    /// Every service stopped after SIGTERM: nothing is left to adopt, nor to ask.
    fn exit(mut self) {
        let msg = format_args!("going: all services stopped, exiting");
        self.sys.log.log(Level::Notice, msg);
        let text = "going: all services stopped, exiting";
        (self.sys.followers).end_all(0, text, &self.sys.epoll);
        if let Some(Err(e)) = self.sys.cgroups.take().map(|g| g.close()) {
            self.sys.log.log(Level::Err, format_args!("going: {e}"));
        }
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
