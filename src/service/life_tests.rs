//! The rules of a service's whole life — readiness, start order, restart policy, finish
//! hooks — one test each, on synthetic time with recorded effects.

use super::tests::{scan, secs, Fake};
use super::*;
use crate::notify::Fields;
use crate::sys::Exit;
use std::path::Path;

const TERM: c_int = libc::SIGTERM;
const KILL: c_int = libc::SIGKILL;

/// A table with `files` read, as going's first reload; also the clock.
fn table(files: &[(&str, &str)], fx: &mut Fake) -> (Table, Instant) {
    let (mut t, t0) = (Table::default(), Instant::now());
    t.reconcile(scan(files), &[], fx, t0);
    (t, t0)
}

/// The pid the service `name` runs as.
fn pid_of(t: &Table, name: &str) -> Pid {
    match t.services[name].state {
        State::Running { pid, .. } => pid,
        s => panic!("{name} is not running: {s:?}"),
    }
}

/// Every pid started with `argv[0]` == `cmd`.
fn spawned(fx: &Fake, cmd: &str) -> Vec<Pid> {
    (fx.spawned.iter())
        .filter(|(_, argv)| argv[0] == cmd)
        .map(|(pid, _)| *pid)
        .collect()
}

fn state(t: &Table, name: &str, now: Instant) -> String {
    t.view(name, now).unwrap().state
}

fn ready_msg() -> Fields {
    Fields {
        ready: true,
        ..Fields::default()
    }
}

#[test]
fn without_ready_a_service_is_up_once_it_execd() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(
        &[("db", "cmd=/bin/db"), ("web", "cmd=/bin/web\nafter=db")],
        &mut fx,
    );
    assert_eq!(spawned(&fx, "/bin/web"), [], "web waits for db");
    assert_eq!(state(&t, "web", t0), "waiting for db");
    assert!(fx.logs.contains(&"web: waiting for db".to_string()));
    assert_eq!(state(&t, "db", t0), "starting", "forked, not exec'd yet");
    t.exec_ok(pid_of(&t, "db"), &mut fx, t0);
    assert_eq!(state(&t, "db", t0), "running");
    assert_eq!(spawned(&fx, "/bin/web").len(), 1);
    assert!(
        !fx.logs.iter().any(|l| l.contains("ready after")),
        "said only with ready="
    );
}

#[test]
fn a_line_on_the_notification_fd_makes_it_ready() {
    let mut fx = Fake::default();
    let files = [
        ("db", "cmd=/bin/db\nready=fd:3"),
        ("web", "cmd=/bin/web\nafter=db"),
    ];
    let (mut t, t0) = table(&files, &mut fx);
    let db = pid_of(&t, "db");
    t.exec_ok(db, &mut fx, t0);
    assert_eq!(state(&t, "db", t0), "starting", "exec'd is not ready");
    assert_eq!(spawned(&fx, "/bin/web"), []);
    t.fd_ready(db, &mut fx, t0 + Duration::from_millis(1200));
    assert!(fx.logs.contains(&format!("db[{db}]: ready after 1.2s")));
    assert_eq!(state(&t, "db", t0), "ready");
    assert_eq!(spawned(&fx, "/bin/web").len(), 1);
    // Said again, it is no news.
    let n = fx.logs.len();
    t.fd_ready(db, &mut fx, t0 + secs(2));
    assert_eq!(fx.logs.len(), n);
}

#[test]
fn ready_over_sd_notify_from_the_service_alone() {
    let mut fx = Fake::default();
    let files = [
        ("pg", "cmd=/bin/pg\nready=notify"),
        ("plain", "cmd=/bin/plain"),
    ];
    let (mut t, t0) = table(&files, &mut fx);
    let (pg, plain) = (pid_of(&t, "pg"), pid_of(&t, "plain"));
    // The group of no service, and that of a service that does not use sd_notify: foreign.
    assert!(!t.notified(4242, &ready_msg(), &mut fx, t0));
    assert!(!t.notified(plain, &ready_msg(), &mut fx, t0));
    assert_eq!(state(&t, "pg", t0), "starting");
    let status = Fields {
        status: Some("recovering".into()),
        ..Fields::default()
    };
    assert!(t.notified(pg, &status, &mut fx, t0));
    assert_eq!(t.view("pg", t0).unwrap().status, Some("recovering"));
    assert_eq!(state(&t, "pg", t0), "starting");
    assert!(t.notified(pg, &ready_msg(), &mut fx, t0 + secs(3)));
    assert_eq!(state(&t, "pg", t0), "ready");
    assert!(fx.logs.contains(&format!("pg[{pg}]: ready after 3.0s")));
    // Reloading and stopping are noted, once each.
    let reloading = Fields {
        reloading: true,
        ..Fields::default()
    };
    t.notified(pg, &reloading, &mut fx, t0 + secs(4));
    t.notified(pg, &reloading, &mut fx, t0 + secs(4));
    let said = |fx: &Fake, what: &str| fx.logs.iter().filter(|l| l.ends_with(what)).count();
    assert_eq!(said(&fx, "]: reloading"), 1);
    let stopping = Fields {
        stopping: true,
        ..Fields::default()
    };
    t.notified(pg, &stopping, &mut fx, t0 + secs(5));
    assert_eq!(said(&fx, "]: stopping by itself"), 1);
}

#[test]
fn not_ready_in_time_is_stopped_and_a_failure() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(
        &[("db", "cmd=/bin/db\nready=fd:3\nready_timeout=2")],
        &mut fx,
    );
    let db = pid_of(&t, "db");
    t.exec_ok(db, &mut fx, t0);
    assert_eq!(t.next_deadline(), Some(t0 + secs(2)));
    t.tick(&mut fx, t0 + secs(2));
    assert!(fx
        .logs
        .contains(&format!("db[{db}]: not ready after 2s: stopping it")));
    assert_eq!(
        fx.last_log(),
        format!("db: failed 1 time in a row, next start in 1s")
    );
    assert_eq!(fx.signals[..2], [(db, TERM), (db, libc::SIGCONT)]);
    t.exited(
        db,
        Exit::Signal {
            sig: TERM,
            core: false,
        },
        &mut fx,
        t0 + secs(2),
    );
    assert_eq!(spawned(&fx, "/bin/db"), [db], "waits out its quarantine");
    t.tick(&mut fx, t0 + secs(3));
    assert_eq!(spawned(&fx, "/bin/db").len(), 2);
}

#[test]
fn a_service_that_ends_before_it_was_ready_failed_however_long_it_ran() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(&[("db", "cmd=/bin/db\nready=notify")], &mut fx);
    let db = pid_of(&t, "db");
    t.exited(db, Exit::Code(0), &mut fx, t0 + secs(60));
    assert_eq!(
        fx.last_log(),
        "db: failed 1 time in a row, next start in 1s"
    );
    // Ready, the same run ends a success after MIN_RUN: restarted at once.
    t.tick(&mut fx, t0 + secs(61));
    let db = pid_of(&t, "db");
    t.notified(db, &ready_msg(), &mut fx, t0 + secs(61));
    t.exited(db, Exit::Code(0), &mut fx, t0 + secs(120));
    assert_eq!(fx.last_log(), format!("db[{}]: started", fx.last_pid()));
}

#[test]
fn a_missing_dependency_is_waited_for_until_its_file_comes() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(&[("web", "cmd=/bin/web\nafter=db cache")], &mut fx);
    assert_eq!(state(&t, "web", t0), "waiting for db, cache");
    let files = [
        ("web", "cmd=/bin/web\nafter=db cache"),
        ("db", "cmd=/bin/db"),
        ("cache", "cmd=/bin/cache"),
    ];
    t.reconcile(scan(&files), &[], &mut fx, t0);
    assert_eq!(state(&t, "web", t0), "waiting for db, cache");
    t.exec_ok(pid_of(&t, "db"), &mut fx, t0);
    assert_eq!(state(&t, "web", t0), "waiting for cache");
    t.exec_ok(pid_of(&t, "cache"), &mut fx, t0);
    assert_eq!(spawned(&fx, "/bin/web").len(), 1);
}

#[test]
fn a_dependency_restarting_restarts_none_of_its_dependents() {
    let mut fx = Fake::default();
    let files = [("db", "cmd=/bin/db"), ("web", "cmd=/bin/web\nafter=db")];
    let (mut t, t0) = table(&files, &mut fx);
    t.exec_ok(pid_of(&t, "db"), &mut fx, t0);
    let web = pid_of(&t, "web");
    t.exited(pid_of(&t, "db"), Exit::Code(1), &mut fx, t0 + secs(10));
    t.exec_ok(pid_of(&t, "db"), &mut fx, t0 + secs(10));
    assert_eq!(pid_of(&t, "web"), web);
    assert!(fx.signals.is_empty());
}

#[test]
fn a_quarantined_dependent_starts_as_soon_as_its_dependency_is_up() {
    let mut fx = Fake::default();
    let files = [
        ("db", "cmd=/bin/db\nready=fd:3"),
        ("web", "cmd=/bin/web\nafter=db"),
    ];
    let (mut t, t0) = table(&files, &mut fx);
    let ms = |n| t0 + Duration::from_millis(n);
    t.fd_ready(pid_of(&t, "db"), &mut fx, ms(6000));
    // db goes down (restarted at once: it ran long), and web fails fast for want of it:
    // quarantined for a second.
    t.exited(pid_of(&t, "db"), DIED, &mut fx, ms(7000));
    t.exited(pid_of(&t, "web"), DIED, &mut fx, ms(8000));
    assert_eq!(t.next_deadline(), Some(ms(9000)));
    assert_eq!(state(&t, "web", t0), "quarantined");
    let before = spawned(&fx, "/bin/web").len();
    t.fd_ready(pid_of(&t, "db"), &mut fx, ms(8500));
    assert_eq!(
        spawned(&fx, "/bin/web").len(),
        before + 1,
        "started at once"
    );
}

const DIED: Exit = Exit::Code(1);

#[test]
fn going_stops_dependents_before_what_they_start_after() {
    let mut fx = Fake::default();
    let files = [
        ("db", "cmd=/bin/db"),
        ("app", "cmd=/bin/app\nafter=db"),
        ("web", "cmd=/bin/web\nafter=app"),
        ("cron", "cmd=/bin/cron"),
    ];
    let (mut t, t0) = table(&files, &mut fx);
    for name in ["db", "app", "web", "cron"] {
        t.exec_ok(pid_of(&t, name), &mut fx, t0);
    }
    let pids: BTreeMap<&str, Pid> = ["db", "app", "web", "cron"]
        .map(|n| (n, pid_of(&t, n)))
        .into();
    let termed = |fx: &Fake| -> Vec<Pid> {
        (fx.signals.iter())
            .filter(|s| s.1 == TERM)
            .map(|s| s.0)
            .collect()
    };
    t.shutdown(&mut fx, t0);
    // What nothing orders stops at once; the rest from the top.
    let mut expect = vec![pids["cron"], pids["web"]];
    expect.sort();
    let mut got = termed(&fx);
    got.sort();
    assert_eq!(got, expect);
    t.exited(
        pids["web"],
        Exit::Signal {
            sig: TERM,
            core: false,
        },
        &mut fx,
        t0,
    );
    assert_eq!(termed(&fx).last(), Some(&pids["app"]));
    assert_eq!(termed(&fx).len(), 3);
    t.exited(
        pids["app"],
        Exit::Signal {
            sig: TERM,
            core: false,
        },
        &mut fx,
        t0,
    );
    assert_eq!(termed(&fx).last(), Some(&pids["db"]));
    t.exited(pids["db"], Exit::Code(0), &mut fx, t0);
    t.exited(pids["cron"], Exit::Code(0), &mut fx, t0);
    assert!(t.is_empty());
}

#[test]
fn a_finished_one_shot_leaves_the_table_when_going_stops() {
    let mut fx = Fake::default();
    let files = [
        ("setup", "cmd=/bin/setup\nrestart=never"),
        ("web", "cmd=/bin/web\nafter=setup"),
    ];
    let (mut t, t0) = table(&files, &mut fx);
    t.exited(pid_of(&t, "setup"), Exit::Code(0), &mut fx, t0);
    let web = pid_of(&t, "web");
    t.shutdown(&mut fx, t0);
    t.exited(web, Exit::Code(0), &mut fx, t0);
    assert!(t.is_empty());
}

#[test]
fn a_one_shot_runs_before_what_starts_after_it_and_only_once() {
    let mut fx = Fake::default();
    let files = [
        ("migrate", "cmd=/bin/migrate\nrestart=never"),
        ("web", "cmd=/bin/web\nafter=migrate"),
    ];
    let (mut t, t0) = table(&files, &mut fx);
    let m = pid_of(&t, "migrate");
    t.exec_ok(m, &mut fx, t0);
    assert_eq!(spawned(&fx, "/bin/web"), [], "running is not done");
    assert_eq!(state(&t, "web", t0), "waiting for migrate");
    t.exited(m, Exit::Code(0), &mut fx, t0 + secs(1));
    assert_eq!(
        fx.logs[fx.logs.len() - 2],
        format!("migrate[{m}]: exited 0 after 1.0s: done")
    );
    assert_eq!(state(&t, "migrate", t0), "done");
    assert_eq!(spawned(&fx, "/bin/web").len(), 1);
    assert_eq!(spawned(&fx, "/bin/migrate"), [m], "not run again");
    // A reload of unchanged files runs nothing again.
    t.reconcile(scan(&files), &[], &mut fx, t0 + secs(2));
    assert_eq!(spawned(&fx, "/bin/migrate"), [m]);
    // `going start` runs it again.
    t.admin("migrate", Admin::Start, &mut fx, t0 + secs(3))
        .unwrap();
    assert_eq!(spawned(&fx, "/bin/migrate").len(), 2);
}

#[test]
fn a_failed_one_shot_is_shown_not_retried_and_holds_back_what_is_after_it() {
    let mut fx = Fake::default();
    let files = [
        ("migrate", "cmd=/bin/migrate\nrestart=never"),
        ("web", "cmd=/bin/web\nafter=migrate"),
    ];
    let (mut t, t0) = table(&files, &mut fx);
    let m = pid_of(&t, "migrate");
    t.exited(m, Exit::Code(2), &mut fx, t0 + secs(1));
    assert_eq!(
        fx.last_log(),
        format!("migrate[{m}]: exited 2 after 1.0s: failed")
    );
    assert_eq!(state(&t, "migrate", t0), "failed");
    assert_eq!(t.next_deadline(), None, "no retry");
    assert_eq!(spawned(&fx, "/bin/web"), []);
    // Its file changed (fixed): run again, and web after it.
    let fixed = [
        ("migrate", "cmd=/bin/migrate --fixed\nrestart=never"),
        ("web", "cmd=/bin/web\nafter=migrate"),
    ];
    t.reconcile(scan(&fixed), &[], &mut fx, t0 + secs(2));
    let m = pid_of(&t, "migrate");
    t.exited(m, Exit::Code(0), &mut fx, t0 + secs(3));
    assert_eq!(spawned(&fx, "/bin/web").len(), 1);
}

#[test]
fn on_failure_a_success_or_a_listed_exit_is_done() {
    let mut fx = Fake::default();
    let file = "cmd=/bin/job\nrestart=on-failure\nok_exit=3 4";
    let (mut t, t0) = table(&[("job", file)], &mut fx);
    // A failure is restarted as always (quarantined when fast).
    t.exited(pid_of(&t, "job"), Exit::Code(1), &mut fx, t0 + secs(10));
    assert_eq!(spawned(&fx, "/bin/job").len(), 2);
    t.exited(
        pid_of(&t, "job"),
        Exit::Signal {
            sig: KILL,
            core: false,
        },
        &mut fx,
        t0 + secs(20),
    );
    assert_eq!(spawned(&fx, "/bin/job").len(), 3);
    t.exited(pid_of(&t, "job"), Exit::Code(3), &mut fx, t0 + secs(30));
    assert_eq!(state(&t, "job", t0), "done");
    assert_eq!(t.next_deadline(), None);
    t.admin("job", Admin::Restart, &mut fx, t0 + secs(31))
        .unwrap();
    t.exited(pid_of(&t, "job"), Exit::Code(0), &mut fx, t0 + secs(32));
    assert_eq!(state(&t, "job", t0), "done");
    assert_eq!(spawned(&fx, "/bin/job").len(), 4);
}

#[test]
fn the_finish_hook_runs_after_each_exit_before_the_next_start() {
    let mut fx = Fake::default();
    let file = "cmd=/bin/web\nfinish=/bin/notify-admin web";
    let (mut t, t0) = table(&[("web", file)], &mut fx);
    let web = pid_of(&t, "web");
    t.exited(web, Exit::Code(7), &mut fx, t0 + secs(10));
    let (hook, argv) = fx.spawned.last().unwrap().clone();
    assert_eq!(argv, ["/bin/notify-admin", "web", "7", "0"]);
    assert_eq!(
        spawned(&fx, "/bin/web"),
        [web],
        "not before the hook is done"
    );
    assert_eq!(state(&t, "web", t0), "finishing");
    t.exited(hook, Exit::Code(1), &mut fx, t0 + secs(11));
    assert_eq!(
        fx.logs[fx.logs.len() - 2],
        format!("web: finish[{hook}]: exited 1")
    );
    assert_eq!(
        spawned(&fx, "/bin/web").len(),
        2,
        "its failure changes nothing"
    );
    // Killed by a signal: 256 and the signal.
    let web = pid_of(&t, "web");
    t.admin("web", Admin::Stop, &mut fx, t0 + secs(20)).unwrap();
    t.exited(
        web,
        Exit::Signal {
            sig: TERM,
            core: false,
        },
        &mut fx,
        t0 + secs(20),
    );
    assert_eq!(fx.spawned.last().unwrap().1[2..], ["256", "15"]);
}

#[test]
fn a_finish_hook_that_takes_too_long_is_killed_with_its_group() {
    let mut fx = Fake::default();
    let file = "cmd=/bin/web\nfinish=/bin/slow\nstop_timeout=3";
    let (mut t, t0) = table(&[("web", file)], &mut fx);
    t.exited(pid_of(&t, "web"), Exit::Code(1), &mut fx, t0 + secs(10));
    let hook = fx.last_pid();
    assert_eq!(t.next_deadline(), Some(t0 + secs(13)));
    t.tick(&mut fx, t0 + secs(13));
    assert_eq!(fx.signals.last(), Some(&(hook, KILL)));
    assert_eq!(
        fx.last_log(),
        format!("web: finish[{hook}] still running after 3s, sending SIGKILL")
    );
    t.exited(
        hook,
        Exit::Signal {
            sig: KILL,
            core: false,
        },
        &mut fx,
        t0 + secs(13),
    );
    assert_eq!(spawned(&fx, "/bin/web").len(), 2);
}

#[test]
fn a_finish_hook_that_cannot_start_is_logged_and_changes_nothing() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(&[("web", "cmd=/bin/web\nfinish=/bin/gone")], &mut fx);
    let web = pid_of(&t, "web");
    fx.refuse = true;
    t.exited(web, Exit::Code(1), &mut fx, t0 + secs(10));
    assert!(
        fx.logs
            .iter()
            .any(|l| l.starts_with("web: finish: unable to fork")),
        "{:?}",
        fx.logs
    );
}

#[test]
fn lifecycle_settings_apply_without_a_restart_but_ready_needs_one() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(&[("web", "cmd=/bin/web")], &mut fx);
    let web = pid_of(&t, "web");
    let changed =
        "cmd=/bin/web\nafter=db\nready_timeout=5\nrestart=on-failure\nok_exit=2\nfinish=/bin/f";
    let sum = t.reconcile(scan(&[("web", changed)]), &[], &mut fx, t0);
    assert_eq!(sum.restarted, 0);
    assert!(fx.signals.is_empty());
    assert_eq!(pid_of(&t, "web"), web);
    let sum = t.reconcile(
        scan(&[("web", "cmd=/bin/web\nready=fd:3")]),
        &[],
        &mut fx,
        t0,
    );
    assert_eq!(sum.restarted, 1);
    assert_eq!(fx.signals[0], (web, TERM));
}

#[test]
fn a_cycle_is_an_error_in_every_file_of_it_and_nowhere_else() {
    let t = Table::default();
    let mut files = scan(&[
        ("a", "cmd=/bin/a\nafter=b"),
        ("b", "cmd=/bin/b\n\nafter=c"),
        ("c", "cmd=/bin/c\nafter=a"),
        ("d", "cmd=/bin/d\nafter=a"),
        ("self", "cmd=/bin/s\nafter=self"),
    ]);
    let mut unchanged = Vec::new();
    t.cycles(Path::new("/etc/going.d"), &mut files, &mut unchanged);
    let error = |n: &str| match &files[n] {
        Err(e) => e.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        Ok(_) => vec![],
    };
    assert_eq!(
        error("a"),
        ["/etc/going.d/a:2: after: a cycle: a -> b -> c -> a"]
    );
    assert_eq!(
        error("b"),
        ["/etc/going.d/b:3: after: a cycle: b -> c -> a -> b"]
    );
    assert_eq!(
        error("c"),
        ["/etc/going.d/c:2: after: a cycle: c -> a -> b -> c"]
    );
    assert_eq!(
        error("self"),
        ["/etc/going.d/self:2: after: a cycle: self -> self"]
    );
    assert!(files["d"].is_ok(), "after a cycle is no part of it");
}

#[test]
fn an_adopted_service_keeps_its_readiness_and_a_done_one_shot_stays_done() {
    let (mut t, mut fx, t0) = (Table::default(), Fake::default(), Instant::now());
    let files = scan(&[
        ("db", "cmd=/bin/db\nready=fd:3\nready_timeout=10"),
        ("pg", "cmd=/bin/pg\nready=notify"),
        ("setup", "cmd=/bin/setup\nrestart=never"),
        ("web", "cmd=/bin/web\nafter=db setup"),
    ]);
    let fp = |n: &str| match &files[n] {
        Ok(s) => crate::fingerprint::Fingerprint::V2(crate::fingerprint::of(s)),
        Err(_) => unreachable!(),
    };
    let since = t0 - secs(60);
    let adopt = BTreeMap::from([
        (
            "db".to_string(),
            Adoptable {
                pid: 50,
                since,
                fingerprint: fp("db"),
                ready: false,
                drain: None,
            },
        ),
        (
            "pg".to_string(),
            Adoptable {
                pid: 51,
                since,
                fingerprint: fp("pg"),
                ready: true,
                drain: None,
            },
        ),
    ]);
    let done = BTreeMap::from([("setup".to_string(), (fp("setup"), true))]);
    t.adopt(&files, adopt, done, &[], &mut fx, t0);
    assert!(fx
        .logs
        .contains(&"db[50]: adopted, running for 1m0s, not ready yet".to_string()));
    assert_eq!(state(&t, "db", t0), "starting");
    assert_eq!(state(&t, "pg", t0), "ready");
    assert_eq!(state(&t, "setup", t0), "done");
    // Its ready_timeout counts again from the adoption.
    assert_eq!(t.next_deadline(), Some(t0 + secs(10)));
    t.reconcile(files, &[], &mut fx, t0);
    assert!(spawned(&fx, "/bin/setup").is_empty(), "not run again");
    assert_eq!(state(&t, "web", t0), "waiting for db");
    t.fd_ready(50, &mut fx, t0 + secs(1));
    assert_eq!(spawned(&fx, "/bin/web").len(), 1);
}

#[test]
fn an_essential_services_own_end_ends_going_with_its_status() {
    let ended = |file: &str, exit: Exit| {
        let mut fx = Fake::default();
        let (mut t, t0) = table(&[("app", file)], &mut fx);
        t.exec_ok(pid_of(&t, "app"), &mut fx, t0);
        t.exited(pid_of(&t, "app"), exit, &mut fx, t0 + secs(10));
        t.essential_ended().map(|e| (e.code, e.how))
    };
    let killed = Exit::Signal {
        sig: KILL,
        core: false,
    };
    let always = "cmd=/bin/app\nessential=yes";
    assert_eq!(ended(always, Exit::Code(3)), Some((3, "exited 3".into())));
    assert_eq!(ended(always, Exit::Code(0)), Some((0, "exited 0".into())));
    assert_eq!(
        ended(always, killed),
        Some((137, "killed by SIGKILL".into()))
    );
    let on_failure = "cmd=/bin/app\nessential=yes\nrestart=on-failure";
    assert_eq!(ended(on_failure, Exit::Code(0)).map(|e| e.0), Some(0));
    assert_eq!(
        ended(on_failure, Exit::Code(1)),
        None,
        "restarted: not its end"
    );
    let once = "cmd=/bin/app\nessential=yes\nrestart=never";
    assert_eq!(ended(once, Exit::Code(2)).map(|e| e.0), Some(2));
    assert_eq!(ended("cmd=/bin/app", Exit::Code(3)), None, "not essential");
}

#[test]
fn an_essential_service_stopped_on_request_ends_nothing_and_one_that_cannot_run_does() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(&[("app", "cmd=/bin/app\nessential=yes")], &mut fx);
    let app = pid_of(&t, "app");
    t.exec_ok(app, &mut fx, t0);
    t.admin("app", Admin::Restart, &mut fx, t0).unwrap();
    t.exited(
        app,
        Exit::Signal {
            sig: TERM,
            core: false,
        },
        &mut fx,
        t0,
    );
    assert_eq!(t.essential_ended(), None, "the admin asked for it");
    let app = pid_of(&t, "app");
    let missing = crate::sys::ChildError {
        step: crate::sys::Step::Exec,
        errno: libc::ENOENT,
        arg: 0,
    };
    t.child_failed(app, missing, &mut fx);
    t.exited(app, Exit::Code(127), &mut fx, t0);
    let e = t.essential_ended().unwrap();
    assert_eq!((e.name.as_str(), e.code), ("app", 127));
    assert!(e.how.starts_with("unable to exec /bin/app"), "{}", e.how);
}

#[test]
fn an_essential_service_that_ends_is_not_started_again_nor_quarantined() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(&[("app", "cmd=/bin/app\nessential=yes")], &mut fx);
    let app = pid_of(&t, "app");
    t.exec_ok(app, &mut fx, t0);
    t.exited(app, Exit::Code(3), &mut fx, t0 + secs(10));
    assert_eq!(
        spawned(&fx, "/bin/app"),
        [app],
        "no new copy before going stops"
    );
    assert_eq!(fx.last_log(), format!("app[{app}]: exited 3 after 10s"));
    assert_eq!(t.essential_ended().map(|e| e.code), Some(3));
}

#[test]
fn an_essential_service_that_cannot_be_started_ends_going_and_a_one_shot_fails_for_good() {
    let mut fx = Fake::default();
    fx.refuse = true;
    let (mut t, t0) = table(
        &[
            ("app", "cmd=/bin/app\nessential=yes"),
            ("once", "cmd=/bin/once\nrestart=never"),
        ],
        &mut fx,
    );
    let e = t.essential_ended().unwrap();
    assert_eq!((e.name.as_str(), e.code), ("app", 126));
    assert_eq!(state(&t, "once", t0), "failed");
    assert_eq!(t.next_deadline(), None, "nothing retried");
}

#[test]
fn an_after_edited_away_lets_a_waiting_service_start_at_once() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(&[("web", "cmd=/bin/web\nafter=db")], &mut fx);
    assert_eq!(state(&t, "web", t0), "waiting for db");
    t.reconcile(scan(&[("web", "cmd=/bin/web")]), &[], &mut fx, t0);
    assert_eq!(
        spawned(&fx, "/bin/web").len(),
        1,
        "no restart needed, started"
    );
}

#[test]
fn a_one_shot_not_ready_in_time_has_failed_for_good() {
    let mut fx = Fake::default();
    let once = "cmd=/bin/m\nrestart=never\nready=fd:3\nready_timeout=2";
    let (mut t, t0) = table(&[("m", once), ("web", "cmd=/bin/web\nafter=m")], &mut fx);
    let m = pid_of(&t, "m");
    t.tick(&mut fx, t0 + secs(2));
    assert!(
        !fx.logs.iter().any(|l| l.contains("next start")),
        "no quarantine"
    );
    t.exited(
        m,
        Exit::Signal {
            sig: TERM,
            core: false,
        },
        &mut fx,
        t0 + secs(2),
    );
    assert_eq!(state(&t, "m", t0 + secs(3)), "failed");
    t.tick(&mut fx, t0 + secs(100));
    assert_eq!(spawned(&fx, "/bin/m"), [m], "not run again");
    assert_eq!(spawned(&fx, "/bin/web"), [], "what is after it waits");
}

#[test]
fn a_quarantine_that_ends_while_going_stops_starts_nothing() {
    let mut fx = Fake::default();
    let files = [("db", "cmd=/bin/db"), ("web", "cmd=/bin/web\nafter=db")];
    let (mut t, t0) = table(&files, &mut fx);
    t.exec_ok(pid_of(&t, "db"), &mut fx, t0);
    let web = pid_of(&t, "web");
    t.exited(pid_of(&t, "db"), DIED, &mut fx, t0 + secs(1));
    assert_eq!(state(&t, "db", t0 + secs(1)), "quarantined");
    fx.alive_groups.insert(web);
    t.shutdown(&mut fx, t0 + secs(1));
    t.tick(&mut fx, t0 + secs(3));
    assert_eq!(spawned(&fx, "/bin/db").len(), 1, "db not started again");
    fx.alive_groups.remove(&web);
    t.exited(
        web,
        Exit::Signal {
            sig: TERM,
            core: false,
        },
        &mut fx,
        t0 + secs(3),
    );
    assert!(t.is_empty(), "all gone: {:?}", t.services.keys());
}

#[test]
fn a_start_asked_for_while_a_service_stops_follows_the_stop_at_once() {
    let mut fx = Fake::default();
    let once = "cmd=/bin/m\nrestart=never\nfinish=/bin/f";
    let (mut t, t0) = table(&[("m", once)], &mut fx);
    t.exited(pid_of(&t, "m"), Exit::Code(0), &mut fx, t0 + secs(1));
    let f = fx.last_pid();
    let said = t.admin("m", Admin::Start, &mut fx, t0 + secs(1)).unwrap();
    assert_eq!(said, "m: starts once stopped");
    t.exited(f, Exit::Code(0), &mut fx, t0 + secs(2));
    assert_eq!(spawned(&fx, "/bin/m").len(), 2, "run again, as asked");
}

#[test]
fn a_cycle_through_a_file_made_invalid_is_found_with_its_running_settings() {
    let mut fx = Fake::default();
    let (mut t, _) = table(&[("a", "cmd=/bin/a\nafter=b")], &mut fx);
    let mut files = scan(&[("a", "bad line"), ("b", "cmd=/bin/b\nafter=a")]);
    let made = t.cycles(Path::new("/c"), &mut files, &mut Vec::new());
    assert_eq!(made, ["b"], "a keeps its own error");
    assert!(matches!(&files["b"], Err(e) if e[0].to_string().contains("b -> a -> b")));
    assert!(matches!(&files["a"], Err(e) if !e[0].to_string().contains("cycle")));
    t.reconcile(files, &[], &mut fx, Instant::now());
}

#[test]
fn an_edit_of_a_done_one_shot_that_needs_no_run_keeps_it_done_under_its_new_print() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(&[("m", "cmd=/bin/m\nrestart=never")], &mut fx);
    t.exited(pid_of(&t, "m"), Exit::Code(0), &mut fx, t0);
    t.take_changes();
    t.reconcile(
        scan(&[("m", "cmd=/bin/m\nrestart=never\nstop_timeout=3")]),
        &[],
        &mut fx,
        t0,
    );
    assert_eq!(t.take_changes(), [Change::Done("m".into())]);
    assert_eq!(
        t.done().map(|d| d.1).collect::<Vec<_>>(),
        [t.services["m"].fingerprint]
    );
}

#[test]
fn what_a_finish_hook_leaves_in_its_group_is_killed_when_it_ends() {
    let mut fx = Fake::default();
    let (mut t, t0) = table(&[("web", "cmd=/bin/web\nfinish=/bin/f")], &mut fx);
    t.exited(pid_of(&t, "web"), Exit::Code(1), &mut fx, t0 + secs(10));
    let f = fx.last_pid();
    assert_eq!(spawned(&fx, "/bin/f"), [f]);
    fx.alive_groups.insert(f);
    t.exited(f, Exit::Code(0), &mut fx, t0 + secs(11));
    assert!(fx.signals.contains(&(f, KILL)), "{:?}", fx.signals);
    assert!(fx
        .logs
        .contains(&format!("web: finish[{f}]: killing what it left")));
    assert_eq!(
        spawned(&fx, "/bin/web").len(),
        2,
        "and the service starts again"
    );
}

#[test]
fn adoption_keeps_an_unchanged_service_and_stops_a_changed_or_removed_one() {
    let (mut t, mut fx, t0) = (Table::default(), Fake::default(), Instant::now());
    let files = scan(&[("same", "cmd=/bin/same"), ("edited", "cmd=/bin/new")]);
    let old = scan(&[("x", "cmd=/bin/old")]);
    let fp = |p: &crate::config::Parsed| match p {
        Ok(s) => crate::fingerprint::Fingerprint::V2(crate::fingerprint::of(s)),
        Err(_) => unreachable!(),
    };
    let one = |pid, fingerprint| Adoptable {
        pid,
        since: t0 - secs(60),
        fingerprint,
        ready: false,
        drain: None,
    };
    let adopt = BTreeMap::from([
        ("same".to_string(), one(60, fp(&files["same"]))),
        ("edited".to_string(), one(61, fp(&old["x"]))),
        ("removed".to_string(), one(62, fp(&old["x"]))),
    ]);
    t.adopt(&files, adopt, BTreeMap::new(), &[], &mut fx, t0);
    assert!(
        fx.logs
            .contains(&"same[60]: adopted, running for 1m0s".to_string()),
        "{:?}",
        fx.logs
    );
    assert_eq!(pid_of(&t, "same"), 60);
    assert!(fx.signals.contains(&(61, TERM)) && fx.signals.contains(&(62, TERM)));
    assert!(
        !fx.signals.iter().any(|s| s.0 == 60),
        "the unchanged one runs on"
    );
    assert!(fx.spawned.is_empty(), "nothing started twice");
}
