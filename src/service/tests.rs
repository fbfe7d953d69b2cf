//! The service table's rules, one test each, on synthetic time with recorded effects.

use super::*;
use crate::config::Parsed;
use crate::sys::{Exit, Step};
use std::io;
use std::path::Path;

#[derive(Default)]
pub(super) struct Fake {
    next: Pid,
    pub spawned: Vec<(Pid, Vec<String>)>,
    pub signals: Vec<(Pid, c_int)>,
    /// Signals to what left a process group (of that group).
    pub strays: Vec<(Pid, c_int)>,
    pub alive_groups: BTreeSet<Pid>,
    pub logs: Vec<String>,
    pub refuse: bool,
    marks: Vec<(String, Option<u64>)>,
    /// Processes whose end the table was never told of.
    pub gone: BTreeSet<Pid>,
}

impl Effects for Fake {
    fn spawn(&mut self, _: &str, s: &Settings, launch: Launch) -> Result<Pid, SpawnError> {
        if self.refuse {
            return Err(SpawnError::Unable {
                what: "fork",
                err: io::Error::from_raw_os_error(libc::EAGAIN),
                nofile: 1024,
            });
        }
        self.next += 1;
        let pid = 100 + self.next;
        let argv = match launch {
            Launch::Service => s.cmd.clone(),
            Launch::Finish { code, signal } => {
                let mut words = s.life().finish.clone();
                words.extend([code.to_string(), signal.to_string()]);
                words
            }
        };
        self.spawned.push((pid, argv));
        Ok(pid)
    }
    fn signal(&mut self, _: &str, pgid: Pid, to: To, sig: c_int) {
        if to == To::Strays {
            return self.strays.push((pgid, sig));
        }
        self.signals.push((pgid, sig));
    }
    fn kill(&mut self, _: &str, pgid: Pid, _: bool) {
        self.signals.push((pgid, libc::SIGKILL));
    }
    fn mark_down(&mut self, name: &str, fingerprint: Option<u64>) {
        self.marks.push((name.to_string(), fingerprint));
    }
    fn group_alive(&mut self, _: &str, pgid: Pid) -> bool {
        self.alive_groups.contains(&pgid)
    }
    fn gone(&mut self, pid: Pid) -> bool {
        self.gone.contains(&pid)
    }
    fn log(&mut self, _: Level, msg: fmt::Arguments) {
        self.logs.push(msg.to_string());
    }
}

impl Fake {
    pub fn last_pid(&self) -> Pid {
        self.spawned.last().unwrap().0
    }
    pub fn last_log(&self) -> &str {
        self.logs.last().unwrap()
    }
}

pub(super) fn scan(files: &[(&str, &str)]) -> BTreeMap<String, Parsed> {
    (files.iter())
        .map(|(n, text)| {
            (
                n.to_string(),
                crate::config::parse(Path::new(n), text.as_bytes()),
            )
        })
        .collect()
}

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const DIED: Exit = Exit::Code(1);

#[test]
fn backoff_doubles_to_a_minute() {
    let d: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(d, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
}

#[test]
fn fast_failures_are_quarantined_with_backoff() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    let sum = t.reconcile(scan(&[("web", "cmd=/bin/web")]), &[], &mut ops, t0);
    assert_eq!(
        sum,
        Summary {
            started: 1,
            ..Summary::default()
        }
    );
    let mut now = t0;
    for (n, delay) in [
        (1, 1),
        (2, 2),
        (3, 4),
        (4, 8),
        (5, 16),
        (6, 32),
        (7, 60),
        (8, 60),
    ] {
        now += secs(1);
        assert!(t.exited(ops.last_pid(), DIED, &mut ops, now));
        assert_eq!(
            ops.logs[ops.logs.len() - 2],
            format!("web[{}]: exited 1 after 1.0s", ops.last_pid())
        );
        let s = if n == 1 { "" } else { "s" };
        assert_eq!(
            ops.last_log(),
            format!("web: failed {n} time{s} in a row, next start in {delay}s")
        );
        assert_eq!(t.next_deadline(), Some(now + secs(delay)));
        let before = ops.spawned.len();
        t.tick(&mut ops, now + secs(delay) - Duration::from_millis(1));
        assert_eq!(ops.spawned.len(), before, "started before its deadline");
        now += secs(delay);
        t.tick(&mut ops, now);
        assert_eq!(ops.spawned.len(), before + 1);
        assert_eq!(t.next_deadline(), None);
    }
    // A run of 5 s or more resets the count and restarts at once.
    now += MIN_RUN;
    t.exited(ops.last_pid(), DIED, &mut ops, now);
    assert_eq!(ops.last_log(), format!("web[{}]: started", ops.last_pid()));
    now += secs(1);
    t.exited(ops.last_pid(), DIED, &mut ops, now);
    assert_eq!(
        ops.last_log(),
        "web: failed 1 time in a row, next start in 1s"
    );
}

#[test]
fn deadlines_are_per_service() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(scan(&[("a", "cmd=/a"), ("b", "cmd=/b")]), &[], &mut ops, t0);
    let (a, b) = (ops.spawned[0].0, ops.spawned[1].0);
    t.exited(a, DIED, &mut ops, t0 + Duration::from_millis(100));
    let due = t0 + Duration::from_millis(1100);
    // b crashing over and over does not push a's deadline back.
    let mut now = t0 + Duration::from_millis(200);
    let mut pid = b;
    for _ in 0..3 {
        t.exited(pid, DIED, &mut ops, now);
        assert_eq!(t.next_deadline(), Some(due));
        now += Duration::from_millis(300);
        t.tick(&mut ops, now);
        pid = ops.last_pid();
    }
    t.tick(&mut ops, due);
    assert_eq!(ops.spawned.last().unwrap().1, ["/a"]);
}

#[test]
fn reload_starts_stops_restarts_and_leaves_alone() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(
        scan(&[
            ("same", "cmd=/same"),
            ("gone", "cmd=/gone"),
            ("edit", "cmd=/old"),
            ("bad", "cmd=/bad"),
        ]),
        &[],
        &mut ops,
        t0,
    );
    let pid = |ops: &Fake, cmd: &str| ops.spawned.iter().rev().find(|s| s.1[0] == cmd).unwrap().0;
    let (same, gone, old, bad) = (
        pid(&ops, "/same"),
        pid(&ops, "/gone"),
        pid(&ops, "/old"),
        pid(&ops, "/bad"),
    );
    let now = t0 + secs(60);
    let sum = t.reconcile(
        scan(&[
            ("same", "# a comment changes nothing\ncmd=/same"),
            ("edit", "cmd=/new"),
            ("bad", "cmd=/bad\nbogus=1"),
            ("new", "cmd=/new-svc"),
        ]),
        &[],
        &mut ops,
        now,
    );
    assert_eq!(
        sum,
        Summary {
            started: 1,
            stopped: 1,
            restarted: 1,
            invalid: 1
        }
    );
    assert_eq!(
        sum.to_string(),
        "1 started, 1 stopped, 1 restarted, 1 invalid"
    );
    assert!(ops
        .logs
        .contains(&r#"bad: bad:2: unknown key "bogus""#.to_string()));
    let signalled: BTreeSet<Pid> = ops.signals.iter().map(|s| s.0).collect();
    assert_eq!(signalled, [gone, old].into());
    assert!(
        ops.signals.contains(&(gone, libc::SIGTERM))
            && ops.signals.contains(&(gone, libc::SIGCONT))
    );
    assert!(!signalled.contains(&same) && !signalled.contains(&bad));
    // The edited one starts again with its new command once the old one is gone.
    assert!(t.exited(
        old,
        Exit::Signal {
            sig: libc::SIGTERM,
            core: false
        },
        &mut ops,
        now
    ));
    assert_eq!(ops.spawned.last().unwrap().1, ["/new"]);
    // The removed one is dropped once gone.
    assert!(t.exited(gone, Exit::Code(0), &mut ops, now));
    assert_eq!(t.len(), 4);
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn a_fixed_file_lifts_quarantine_and_an_unchanged_one_keeps_it() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(scan(&[("web", "cmd=/broken")]), &[], &mut ops, t0);
    let mut now = t0;
    for _ in 0..7 {
        now += secs(1);
        t.exited(ops.last_pid(), DIED, &mut ops, now);
        now = t.next_deadline().unwrap();
        t.tick(&mut ops, now);
    }
    now += secs(1);
    t.exited(ops.last_pid(), DIED, &mut ops, now);
    assert_eq!(t.next_deadline(), Some(now + secs(60)));
    t.reconcile(scan(&[("web", "cmd=/broken")]), &[], &mut ops, now);
    assert_eq!(
        t.next_deadline(),
        Some(now + secs(60)),
        "unchanged: quarantine kept"
    );
    let before = ops.spawned.len();
    t.reconcile(scan(&[("web", "cmd=/fixed")]), &[], &mut ops, now);
    assert_eq!(ops.spawned.len(), before + 1, "changed: started at once");
    t.exited(ops.last_pid(), DIED, &mut ops, now + secs(1));
    assert_eq!(
        ops.last_log(),
        "web: failed 1 time in a row, next start in 1s"
    );
}

#[test]
fn stop_escalates_to_sigkill_after_the_timeout() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
    let pid = ops.last_pid();
    t.reconcile(BTreeMap::new(), &[], &mut ops, t0);
    t.tick(
        &mut ops,
        t0 + Duration::from_secs(10) - Duration::from_millis(1),
    );
    assert!(!ops.signals.contains(&(pid, libc::SIGKILL)));
    t.tick(&mut ops, t0 + Duration::from_secs(10));
    assert_eq!(ops.signals.last(), Some(&(pid, libc::SIGKILL)));
    assert_eq!(
        ops.last_log(),
        "web: still running 10s after SIGTERM, sending SIGKILL"
    );
    assert!(!t.is_empty());
    t.exited(
        pid,
        Exit::Signal {
            sig: libc::SIGKILL,
            core: false,
        },
        &mut ops,
        t0 + Duration::from_secs(10),
    );
    assert!(t.is_empty());
}

#[test]
fn a_stop_whose_end_is_never_seen_is_looked_for_after_sigkill() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
    let pid = ops.last_pid();
    t.shutdown(&mut ops, t0);
    let killed = t0 + secs(10);
    t.tick(&mut ops, killed);
    assert_eq!(ops.signals.last(), Some(&(pid, libc::SIGKILL)));
    // Still a deadline after SIGKILL: stuck in the kernel, the process is looked at again.
    assert_eq!(t.next_deadline(), Some(killed + AFTER_KILL));
    t.tick(&mut ops, killed + AFTER_KILL);
    assert_eq!(
        ops.last_log(),
        format!("web[{pid}]: still there 5s after SIGKILL")
    );
    assert_eq!(t.next_deadline(), Some(killed + AFTER_KILL * 2));
    // Gone, its end missed: taken to have ended, and going can exit.
    ops.gone.insert(pid);
    t.tick(&mut ops, killed + AFTER_KILL * 2);
    assert!(ops
        .logs
        .contains(&format!("web[{pid}]: gone, though its end was not seen")));
    assert!(t.is_empty());
    assert_eq!(t.next_deadline(), None);
    // A finish hook too.
    t.reconcile(
        scan(&[("job", "cmd=/job\nfinish=/tidy")]),
        &[],
        &mut ops,
        t0,
    );
    let job = ops.last_pid();
    t.exited(job, DIED, &mut ops, t0 + secs(60));
    let hook = ops.last_pid();
    assert_ne!(hook, job);
    t.tick(&mut ops, t0 + secs(70));
    assert_eq!(ops.signals.last(), Some(&(hook, libc::SIGKILL)));
    ops.gone.insert(hook);
    t.tick(&mut ops, t0 + secs(70) + AFTER_KILL);
    assert!(ops
        .logs
        .contains(&format!("job[{hook}]: gone, though its end was not seen")));
    assert!(!t.pids.contains_key(&hook));
}

#[test]
fn a_group_left_by_its_leader_is_told_to_the_state_file_and_adopted_as_stopping() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    let files = scan(&[("web", "cmd=/web\nstop_timeout=3")]);
    t.reconcile(files.clone(), &[], &mut ops, t0);
    let pid = ops.last_pid();
    ops.alive_groups.insert(pid);
    t.take_changes();
    t.exited(pid, DIED, &mut ops, t0 + secs(60));
    let draining = [Change::Ended(pid), Change::Draining("web".into())];
    assert_eq!(t.take_changes(), draining);
    let d = t.drains().next().unwrap();
    assert_eq!((d.name, d.pgid, d.kill_at), ("web", pid, t0 + secs(63)));
    // A going started after this one was killed (or upgraded) takes the group over as it
    // was: its SIGKILL still due, the service started again once it is gone.
    let (mut t, mut ops) = (Table::default(), Fake::default());
    ops.alive_groups.insert(77);
    let adopt = BTreeMap::from([(
        "web".to_string(),
        Adoptable {
            pid: 77,
            since: t0,
            fingerprint: crate::fingerprint::Fingerprint::V2(0),
            ready: false,
            drain: Some(t0 + secs(2)),
        },
    )]);
    t.adopt(&files, adopt, BTreeMap::new(), &[], &mut ops, t0);
    t.reconcile(files, &[], &mut ops, t0);
    assert!(
        ops.spawned.is_empty(),
        "not started while its group is left"
    );
    assert_eq!(t.take_changes(), [Change::Draining("web".into())]);
    assert_eq!(t.next_deadline(), Some(t0 + secs(2)));
    t.tick(&mut ops, t0 + secs(2));
    assert_eq!(ops.signals.last(), Some(&(77, libc::SIGKILL)));
    assert!(ops.spawned.is_empty(), "killed, and a moment to be gone");
    ops.alive_groups.remove(&77);
    t.check_groups(&mut ops, t0 + secs(2));
    assert_eq!(ops.spawned.len(), 1, "started once the group is gone");
    assert!(t.take_changes().contains(&Change::Drained(77)));
}

#[test]
fn a_stop_waits_for_the_rest_of_the_group() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
    let pid = ops.last_pid();
    t.shutdown(&mut ops, t0);
    ops.alive_groups.insert(pid);
    t.exited(pid, Exit::Code(0), &mut ops, t0 + secs(1));
    t.check_groups(&mut ops, t0 + secs(1));
    assert!(!t.is_empty(), "a worker of the group is still alive");
    assert_eq!(Vec::from_iter(&t.draining), ["web"]);
    ops.alive_groups.clear();
    t.check_groups(&mut ops, t0 + secs(2));
    assert!(t.is_empty());
    assert!(t.draining.is_empty());
    // Or the workers outlive the timeout: SIGKILL to the group, never to the reaped pid alone.
    t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
    let pid = ops.last_pid();
    t.shutdown(&mut ops, t0);
    ops.alive_groups.insert(pid);
    t.exited(pid, Exit::Code(0), &mut ops, t0);
    t.tick(&mut ops, t0 + Duration::from_secs(10));
    assert_eq!(ops.signals.last(), Some(&(pid, libc::SIGKILL)));
    assert!(!t.is_empty(), "what was killed has a moment to be gone");
    ops.alive_groups.clear();
    t.check_groups(&mut ops, t0 + secs(10));
    assert!(t.is_empty());
    assert!(t.draining.is_empty());
    // Or something of it never goes (a process stuck in the kernel): going carries on.
    t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
    let pid = ops.last_pid();
    t.shutdown(&mut ops, t0);
    ops.alive_groups.insert(pid);
    t.exited(pid, Exit::Code(0), &mut ops, t0);
    t.tick(&mut ops, t0 + secs(10));
    assert_eq!(ops.signals.last(), Some(&(pid, libc::SIGKILL)));
    t.tick(&mut ops, t0 + secs(10) + super::KILL_WAIT);
    assert_eq!(
        ops.last_log(),
        "web: still not gone 1s after SIGKILL: going on without what is left"
    );
    assert!(t.is_empty());
}

#[test]
fn what_left_the_group_is_asked_to_stop_once_the_leader_is_gone() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(
        scan(&[("web", "cmd=/web\nstop_signal=INT")]),
        &[],
        &mut ops,
        t0,
    );
    let pid = ops.last_pid();
    t.admin("web", Admin::Stop, &mut ops, t0).unwrap();
    assert_eq!(ops.signals, [(pid, libc::SIGINT), (pid, libc::SIGCONT)]);
    assert_eq!(ops.strays, []);
    // Its leader went at once; a helper that left its group (in its cgroup) did not.
    ops.alive_groups.insert(pid);
    t.exited(pid, Exit::Code(0), &mut ops, t0 + secs(1));
    assert_eq!(ops.strays, [(pid, libc::SIGINT), (pid, libc::SIGCONT)]);
    ops.alive_groups.clear();
    t.check_groups(&mut ops, t0 + secs(1));
    assert_eq!(t.view("web", t0).unwrap().state, "down");
}

#[test]
fn a_stop_waits_for_what_its_leader_leaves_even_after_sigkill() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
    let pid = ops.last_pid();
    t.shutdown(&mut ops, t0);
    t.tick(&mut ops, t0 + secs(10));
    assert_eq!(ops.signals.last(), Some(&(pid, libc::SIGKILL)));
    // The leader reaped, a helper of its cgroup not yet: the service is not stopped.
    ops.alive_groups.insert(pid);
    t.exited(
        pid,
        Exit::Signal {
            sig: libc::SIGKILL,
            core: false,
        },
        &mut ops,
        t0 + secs(10),
    );
    assert!(!t.is_empty());
    assert_eq!(ops.strays, [], "killed already: nothing more to ask");
    assert_eq!(Vec::from_iter(&t.draining), ["web"]);
    ops.alive_groups.clear();
    t.check_groups(&mut ops, t0 + secs(10));
    assert!(t.is_empty());
}

#[test]
fn exec_failures_and_fork_failures_are_fast_failures() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(
        scan(&[("web", "cmd=/usr/sbin/nginx -g x")]),
        &[],
        &mut ops,
        t0,
    );
    let pid = ops.last_pid();
    t.child_failed(
        pid,
        ChildError {
            step: Step::Exec,
            errno: libc::ENOENT,
            arg: 0,
        },
        &mut ops,
    );
    t.exited(pid, Exit::Code(127), &mut ops, t0);
    assert_eq!(
        ops.logs[1],
        "web: unable to exec /usr/sbin/nginx: No such file or directory"
    );
    assert_eq!(
        ops.last_log(),
        "web: failed 1 time in a row, next start in 1s"
    );
    ops.refuse = true;
    t.tick(&mut ops, t0 + secs(1));
    assert_eq!(
        ops.logs[ops.logs.len() - 2],
        "web: unable to fork: Resource temporarily unavailable"
    );
    assert_eq!(t.next_deadline(), Some(t0 + secs(3)));
}

#[test]
fn a_file_back_while_stopping_starts_afterwards() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
    let pid = ops.last_pid();
    assert_eq!(t.reconcile(BTreeMap::new(), &[], &mut ops, t0).stopped, 1);
    assert_eq!(
        t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0)
            .started,
        1
    );
    t.exited(pid, Exit::Code(0), &mut ops, t0);
    assert_ne!(ops.last_pid(), pid);
    assert_eq!(t.len(), 1);
}

#[test]
fn stop_signal_and_timeout_are_the_services_own_and_need_no_restart() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
    let pid = ops.last_pid();
    let sum = t.reconcile(
        scan(&[("web", "cmd=/web\nstop_signal=INT\nstop_timeout=2")]),
        &[],
        &mut ops,
        t0,
    );
    assert_eq!(sum, Summary::default(), "no restart");
    assert!(ops.signals.is_empty());
    t.reconcile(BTreeMap::new(), &[], &mut ops, t0);
    assert_eq!(ops.signals, [(pid, libc::SIGINT), (pid, libc::SIGCONT)]);
    t.tick(&mut ops, t0 + secs(2));
    assert_eq!(
        ops.last_log(),
        "web: still running 2s after SIGINT, sending SIGKILL"
    );
}

#[test]
fn a_change_that_needs_no_restart_moves_the_admins_stop_mark_along() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(scan(&[("web", "cmd=/web")]), &[], &mut ops, t0);
    t.admin("web", Admin::Stop, &mut ops, t0).unwrap();
    let before = ops.marks.last().cloned().unwrap();
    assert!(before.1.is_some());
    let edited = scan(&[("web", "cmd=/web\nstop_timeout=3")]);
    let fp = edited["web"].as_ref().unwrap().fingerprint();
    t.reconcile(edited, &[], &mut ops, t0);
    // The mark holds the fingerprint of the file as it is now: a going started after
    // this one was killed keeps it down.
    assert_eq!(ops.marks.last(), Some(&("web".to_string(), Some(fp))));
    assert_ne!(before.1, Some(fp));
}

#[test]
fn child_failures_say_what_failed_on_what() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    let file = "cmd=/x\nchroot=/jail\ncwd=/srv\nlimit_nofile=10\nnice=5\nuser=4000000";
    t.reconcile(scan(&[("web", file)]), &[], &mut ops, t0);
    let nofile = libc::RLIMIT_NOFILE as i32;
    for (step, arg, want) in [
        (
            Step::Chroot,
            0,
            "web: unable to chroot to /jail: Permission denied",
        ),
        (
            Step::Chdir,
            0,
            "web: unable to change directory to /srv: Permission denied",
        ),
        (
            Step::Limit,
            nofile,
            "web: unable to set limit_nofile: Permission denied",
        ),
        (
            Step::Nice,
            5,
            "web: unable to set nice 5: Permission denied",
        ),
        (
            Step::Uid,
            0,
            "web: unable to set user 4000000: Permission denied",
        ),
    ] {
        let pid = ops.last_pid();
        t.child_failed(
            pid,
            ChildError {
                step,
                errno: libc::EACCES,
                arg,
            },
            &mut ops,
        );
        t.exited(pid, Exit::Code(127), &mut ops, t0);
        assert_eq!(ops.logs[ops.logs.len() - 2], want);
        let due = t.next_deadline().unwrap();
        t.tick(&mut ops, due);
    }
}

#[test]
fn files_not_read_again_are_left_as_they_are() {
    let (mut t, mut ops, t0) = (Table::default(), Fake::default(), Instant::now());
    t.reconcile(
        scan(&[("web", "cmd=/web"), ("bad", "oops")]),
        &[],
        &mut ops,
        t0,
    );
    let unchanged = ["bad".to_string(), "web".to_string()];
    let sum = t.reconcile(scan(&[("new", "cmd=/new")]), &unchanged, &mut ops, t0);
    assert_eq!(
        sum,
        Summary {
            started: 1,
            stopped: 0,
            restarted: 0,
            invalid: 1
        }
    );
    assert!(ops.signals.is_empty(), "web was not stopped");
    let sum = t.reconcile(BTreeMap::new(), &["new".to_string()], &mut ops, t0);
    assert_eq!(
        (sum.stopped, sum.invalid),
        (1, 0),
        "web and bad are gone now"
    );
}

#[test]
fn unknown_pids_are_not_services() {
    let (mut t, mut ops) = (Table::default(), Fake::default());
    assert!(!t.exited(4242, DIED, &mut ops, Instant::now()));
}

#[test]
fn exits_read_as_people_say_them() {
    assert_eq!(Ended(Exit::Code(3)).to_string(), "exited 3");
    assert_eq!(
        Ended(Exit::Signal {
            sig: libc::SIGSEGV,
            core: true
        })
        .to_string(),
        "killed by SIGSEGV (core dumped)"
    );
    assert_eq!(
        Ended(Exit::Signal {
            sig: 40,
            core: false
        })
        .to_string(),
        "killed by signal 40"
    );
}
