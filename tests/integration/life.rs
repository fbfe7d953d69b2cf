//! A service's whole life: readiness (a notification fd, sd_notify), start order, one-shots,
//! restart policies, finish hooks, and commands that wait for them.

use std::fs;
use std::os::linux::net::SocketAddrExt;
use std::path::Path;

use crate::harness::*;

/// The STATE column of `going status` for `name`.
fn state(g: &Going, name: &str) -> String {
    let (_, out, _) = cmd(g, "status", &[]);
    (out.lines())
        .find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix("  ")?.trim_start();
            // Up to the PID column: two spaces end a state (`waiting for db` has single).
            Some(rest.split("  ").next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("{name} not in status:\n{out}"))
}

/// The index in `g.lines` of the first line for which `pred` holds.
fn index(g: &Going, what: &str, pred: impl Fn(&Line) -> bool) -> usize {
    (g.lines.iter())
        .position(pred)
        .unwrap_or_else(|| panic!("no line {what}:\n{}", g.dump()))
}

#[test]
fn a_line_on_the_notification_fd_makes_a_service_ready_and_starts_what_is_after_it() {
    let mut g = Going::start(&[]);
    let go = fifo(&g, "go");
    g.write(
        "db",
        &format!(
            "cmd=/bin/sh -c 'read x < {}; echo ready >&3; exec sleep 1000'\nready=fd:3\n",
            go.display()
        ),
    );
    g.write("web", "cmd=sleep 1000\nafter=db\n");
    let db = g.started("db");
    g.next_msg("web: waiting for db");
    assert_eq!(state(&g, "db"), "starting");
    assert_eq!(state(&g, "web"), "waiting for db");
    release(&go);
    g.next_msg(&format!("db[{db}]: ready after "));
    g.started("web");
    assert_eq!(state(&g, "db"), "ready");
    wait_until("web to exec", || state(&g, "web") == "running");
}

const NOTIFY_CLIENT: &str = r#"
import os, signal, socket, sys
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(addr)
s.send(b"STATUS=warming up")
open(sys.argv[1]).read()
s.send(b"READY=1\nSTATUS=serving 3 clients")
signal.pause()
"#;

#[test]
fn ready_over_sd_notify_from_the_service_and_never_from_outside() {
    let mut g = Going::start(&[]);
    let go = fifo(&g, "go");
    let script = g.dir.0.join("client.py");
    fs::write(&script, NOTIFY_CLIENT).unwrap();
    let run = |s: &Path| format!("{} {} {}", python(), s.display(), go.display());
    g.write("pg", &format!("cmd={}\nready=notify\n", run(&script)));
    g.write("app", "cmd=sleep 1000\nafter=pg\n");
    let pg = g.started("pg");
    wait_until("pg's STATUS=", || {
        cmd(&g, "status", &["pg"])
            .1
            .contains("status     warming up")
    });
    // A forged READY=1, from a process of no service: dropped, counted, said.
    let (_, _, _) = cmd(&g, "status", &["pg"]);
    let rundir = fs::canonicalize(g.dir.0.join("run")).unwrap();
    let forger = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let name = format!("going{}/notify", rundir.display());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    forger.send_to_addr(b"READY=1", &addr).unwrap();
    let me = std::process::id();
    g.next_msg(&format!(
        "going: NOTIFY_SOCKET: a message from pid {me} (uid 0): not from a process of a service that listens (1 dropped so far)"
    ));
    assert_eq!(state(&g, "pg"), "starting");
    assert_eq!(state(&g, "app"), "waiting for pg");
    release(&go);
    g.next_msg(&format!("pg[{pg}]: ready after "));
    g.started("app");
    let (code, out, _) = cmd(&g, "status", &["pg"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("pg: ready\n"), "{out}");
    assert!(out.contains("status     serving 3 clients"), "{out}");
}

/// A service that says when it is up and when it is told to stop, in its own lines.
fn talker(after: &str) -> String {
    format!(
        "cmd=/bin/sh -c 'echo up; echo >&3; trap \"echo down; exit 0\" TERM; while :; do sleep 1 & wait; done'\nready=fd:3\n{after}"
    )
}

#[test]
fn services_start_in_order_and_stop_in_the_reverse_order() {
    let mut g = Going::start(&[
        ("db", &talker("")),
        ("app", &talker("after=db\n")),
        ("web", &talker("after=app\n")),
    ]);
    for name in ["db", "app", "web"] {
        g.next_msg(&format!("{name}["));
    }
    let said = |g: &Going, name: &str, what: &'static str| {
        let prefix = format!("{name}[");
        index(g, &format!("{name}: {what}"), move |l| {
            l.tag.starts_with(&prefix) && l.msg == what
        })
    };
    wait_until_lines(&mut g, |g| {
        g.lines.iter().filter(|l| l.msg == "up").count() == 3
    });
    let ups = ["db", "app", "web"].map(|n| said(&g, n, "up"));
    assert!(ups[0] < ups[1] && ups[1] < ups[2], "{}", g.dump());
    assert_eq!(g.stop(), 0);
    wait_until_lines(&mut g, |g| {
        g.lines.iter().filter(|l| l.msg == "down").count() == 3
    });
    let downs = ["web", "app", "db"].map(|n| said(&g, n, "down"));
    assert!(downs[0] < downs[1] && downs[1] < downs[2], "{}", g.dump());
}

/// Collects lines until `cond` holds of them, for at most DEADLINE.
fn wait_until_lines(g: &mut Going, cond: impl Fn(&Going) -> bool) {
    let end = std::time::Instant::now() + DEADLINE;
    while !cond(g) {
        assert!(std::time::Instant::now() < end, "{}", g.dump());
        g.collect_for(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_one_shot_runs_before_the_service_that_needs_it_and_once() {
    let mut g = Going::start(&[]);
    let mark = g.dir.0.join("migrated");
    g.write(
        "migrate",
        &format!(
            "cmd=/bin/sh -c 'echo migrating; touch {}'\nrestart=never\n",
            mark.display()
        ),
    );
    g.write(
        "web",
        &format!(
            "cmd=/bin/sh -c 'test -e {} && exec sleep 1000'\nafter=migrate\n",
            mark.display()
        ),
    );
    let m = g.started("migrate");
    g.next_msg(&format!("migrate[{m}]: exited 0 after "));
    let web = g.exec_of("web", "sleep");
    assert!(alive(web));
    assert_eq!(state(&g, "migrate"), "done");
    let (code, _, _) = cmd(&g, "status", &["migrate", "web"]);
    assert_eq!(code, 0, "a one-shot done is where it should be");
    // A reload runs nothing again; `going start` does.
    g.signal(libc::SIGHUP);
    g.next_msg("reload: 0 started");
    let (code, out, _) = cmd(&g, "start", &["migrate"]);
    assert_eq!((code, out.as_str()), (0, "migrate: started\n"));
    g.started("migrate");
}

#[test]
fn a_failed_one_shot_is_not_retried_and_what_is_after_it_waits() {
    let mut g = Going::start(&[
        ("setup", "cmd=/bin/sh -c 'exit 3'\nrestart=never\n"),
        ("web", "cmd=sleep 1000\nafter=setup\n"),
    ]);
    let s = g.started("setup");
    g.next_msg(&format!("setup[{s}]: exited 3 after "));
    assert_eq!(state(&g, "setup"), "failed");
    assert_eq!(state(&g, "web"), "waiting for setup");
    let (code, _, _) = cmd(&g, "status", &["setup"]);
    assert_eq!(code, 3, "not where it should be");
}

#[test]
fn on_failure_restarts_failures_only() {
    let mut g = Going::start(&[]);
    let flag = g.dir.0.join("again");
    g.write(
        "job",
        &format!(
            "cmd=/bin/sh -c 'test -e {0} && exit 4; touch {0}; exit 1'\nrestart=on-failure\nok_exit=4\n",
            flag.display()
        ),
    );
    let first = g.started("job");
    g.next_msg(&format!("job[{first}]: exited 1 after"));
    g.next_msg("job: failed 1 time in a row, next start in 1s");
    let second = g.started("job");
    g.next_msg(&format!("job[{second}]: exited 4 after "));
    assert!(g.lines.last().unwrap().msg.ends_with(": done"));
    assert_eq!(state(&g, "job"), "done");
}

#[test]
fn the_finish_hook_gets_the_exit_and_runs_before_the_next_start() {
    let mut g = Going::start(&[(
        "web",
        "cmd=/bin/sh -c 'exec sleep 1000'\nfinish=/bin/sh -c 'echo finish \"$1\" \"$2\" \"$GOING_SERVICE\"' finish\n",
    )]);
    let web = g.exec_of("web", "sleep");
    // SAFETY: kill has no memory effects; web is a live process of this test's going.
    unsafe { libc::kill(web, libc::SIGKILL) };
    let l = g.next("the finish hook's line", |l| l.msg.starts_with("finish "));
    assert_eq!(l.msg, "finish 256 9 web");
    let hook = index(&g, "the hook's line", |l| l.msg.starts_with("finish "));
    let next = g.started("web");
    let restart = index(&g, "the next start", |l| {
        l.msg == format!("web[{next}]: started")
    });
    assert!(hook < restart, "{}", g.dump());
}

#[test]
fn a_cycle_is_an_error_in_every_file_of_it_and_the_rest_runs() {
    let mut g = Going::start(&[
        ("a", "cmd=sleep 1000\nafter=b\n"),
        ("b", "cmd=sleep 1000\nafter=a\n"),
        ("c", "cmd=sleep 1000\n"),
    ]);
    let conf = g.conf();
    for (name, spelled) in [("a", "a -> b -> a"), ("b", "b -> a -> b")] {
        let path = conf.join(name);
        g.rewind();
        g.next_msg(&format!(
            "{name}: {}:2: after: a cycle: {spelled}",
            path.display()
        ));
    }
    g.started("c");
    g.next_msg("reload: 1 started, 0 stopped, 0 restarted, 2 invalid");
    let (code, _, err) = run(&["check", "-d", path_str(&conf)]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "{}:2: after: a cycle: a -> b -> a",
            conf.join("a").display()
        )),
        "{err}"
    );
    // An edit of b alone breaks the cycle: a, which the cycle made invalid, is read again
    // with it, though no event named it.
    g.write("b", "cmd=sleep 1000\n");
    g.started("b");
    g.started("a");
}

#[test]
fn commands_that_wait_say_when_services_are_up_failed_or_late() {
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    let go = fifo(&g, "go");
    // Held still while both files land, so that they make one reload.
    g.pause();
    g.write(
        "db",
        &format!(
            "cmd=/bin/sh -c 'read x < {}; echo >&3; exec sleep 1000'\nready=fd:3\n",
            go.display()
        ),
    );
    g.write("bad", "cmd=/nonexistent/bad\n");
    g.signal(libc::SIGCONT);
    // After the one reload: db started, bad failed.
    g.started("db");
    g.rewind();
    g.next_msg("bad: failed 1 time in a row");
    // Not ready within the time given: 75 (EX_TEMPFAIL), saying where it is.
    let (code, out, err) = cmd(&g, "restart", &["-w", "1", "db"]);
    assert_eq!(code, 75, "{out}{err}");
    assert!(err.contains("db: still starting after 1s"), "{err}");
    // Ready in time: 0.
    let waiter = std::thread::spawn({
        let rundir = g.dir.0.join("run");
        move || run(&["start", "-r", path_str(&rundir), "-w", "10", "db"])
    });
    release(&go);
    let (code, out, err) = waiter.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("db: up after"), "{out}");
    // Failed: 1, saying why.
    let (code, out, err) = cmd(&g, "start", &["-w", "5", "bad"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("bad: failed: unable to exec /nonexistent/bad"),
        "{err}"
    );
    // Stopped: 0 once gone.
    let (code, out, err) = cmd(&g, "stop", &["-w", "5", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("db: stopped after"), "{out}");
    // A service named like a number is never taken for the time.
    let (code, _, err) = cmd(&g, "start", &["-w", "10"]);
    assert_eq!(code, 64, "{err}");
}

#[test]
fn readiness_and_done_one_shots_survive_kill_9_and_usr2() {
    let mut g = Going::start(&[]);
    let go = fifo(&g, "go");
    g.write("setup", "cmd=/bin/true\nrestart=never\n");
    g.write(
        "db",
        &format!(
            "cmd=/bin/sh -c 'read x < {}; echo >&3; exec sleep 1000'\nready=fd:3\n",
            go.display()
        ),
    );
    g.write("app", "cmd=sleep 1000\nafter=db setup\n");
    let setup = g.started("setup");
    g.next_msg(&format!("setup[{setup}]: exited 0"));
    // Written once the loop is done with the exit: a kill before then runs it again.
    let state_file = g.dir.0.join("run/state");
    wait_until("the state file to keep setup done", || {
        fs::read_to_string(&state_file).is_ok_and(|s| s.contains("\n+done setup "))
    });
    g.rewind();
    let db = g.started("db");
    g.rewind();
    g.next_msg("app: waiting for db");
    // Not ready yet when going is killed: the next going waits for it again, on the same
    // pipe, and runs the one-shot that was done no more.
    // Killed at once, maybe between a fork and its exec: the child holds going's locks for
    // that moment, and the next going waits for them.
    g.kill9_restart();
    g.next_msg(&format!("db[{db}]: adopted, running for "));
    assert!(g.lines.last().unwrap().msg.ends_with(", not ready yet"));
    wait_until("app to wait for db", || {
        state(&g, "app") == "waiting for db"
    });
    assert_eq!(state(&g, "setup"), "done");
    release(&go);
    g.next_msg(&format!("db[{db}]: ready after "));
    let app = g.started("app");
    // Ready before the upgrade, ready after it.
    let l = g.upgrade();
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    g.next_msg(&format!("app[{app}]: adopted, running for "));
    wait_until("db ready again", || state(&g, "db") == "ready");
    assert_eq!(state(&g, "setup"), "done");
    assert!(
        !g.lines.iter().any(|l| l.msg.starts_with("setup[")
            && l.msg.ends_with("started")
            && !l.msg.contains(&setup.to_string())),
        "the one-shot ran again:\n{}",
        g.dump()
    );
}
