//! Services in cgroups (cgroup v2): whatever a service forks stays its own. A helper that
//! leaves its session is stopped with its service by `going stop`, by the removal of its
//! file, by going's shutdown, after a `kill -9` of going and after an upgrade; what a run
//! leaves is stopped before the next; the finish hook runs in the service's cgroup; an
//! idle going still makes no system call; the limit keys fail clearly where their
//! controllers are not there. Each test runs going in a cgroup of its own on the machine's
//! hierarchy (see harness.rs), removed afterwards; where there is none to have, it says
//! why it skips.

use std::fs;
use std::time::Duration;

use crate::harness::*;

/// going on `files`, in a cgroup of the test's own; None (said) where there is none.
fn going(files: &[(&str, &str)]) -> Option<Going> {
    going_with(Setup {
        files: files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
        ..Setup::default()
    })
}

fn going_with(setup: Setup) -> Option<Going> {
    if let Err(why) = TestCgroup::new() {
        eprintln!("skipped: no cgroup2 hierarchy of the test's own here: {why}");
        return None;
    }
    let g = Going::with(setup);
    assert!(g.cgroup.is_some(), "the test's cgroup, made a moment ago");
    Some(g)
}

/// A service whose helper (`sleep N+1`) leaves its session, as a daemon's would: out of
/// reach of the service's process group. Its main process is `sleep N`.
fn leaky(n: u32) -> String {
    format!(
        "cmd=/bin/sh -c 'setsid sleep {} & exec sleep {n}'\nstop_timeout=1\nlog=null\n",
        n + 1
    )
}

/// The session of process `pid`.
fn session(pid: i32) -> String {
    stat_fields(pid).get(3).cloned().unwrap_or_default()
}

/// The main process and the helper of a `leaky(n)` service, once both run; the helper in
/// a session of its own, both in the service's cgroup.
fn main_and_helper(g: &mut Going, name: &str, n: u32) -> (i32, i32) {
    let main = g.exec_of(name, "sleep");
    let mut helper = 0;
    wait_until("the helper", || {
        helper = running(&format!("sleep {}", n + 1))
            .first()
            .copied()
            .unwrap_or(0);
        helper != 0 && session(helper) == helper.to_string()
    });
    assert_ne!(
        session(helper),
        session(main),
        "the helper left the session"
    );
    let cg = g.service_cgroup(name).unwrap();
    let procs = cgroup_procs(&cg);
    assert!(
        procs.contains(&main) && procs.contains(&helper),
        "{procs:?} in {}",
        cg.display()
    );
    (main, helper)
}

#[test]
#[ignore = "needs root"]
fn going_stop_stops_a_helper_that_left_the_session() {
    let Some(mut g) = going(&[("web", &leaky(6100))]) else {
        return;
    };
    let (main, helper) = main_and_helper(&mut g, "web", 6100);
    let (code, out, err) = cmd(&g, "stop", &["-w", "10", "web"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!alive(main) && !alive(helper), "nothing of web is left");
    // Its leader gone, the helper had the stop signal through the cgroup, and took it.
    g.next_msg(&format!("web[{main}]: stopped: killed by SIGTERM"));
    assert!(!cgroup_populated(&g.service_cgroup("web").unwrap()));
    assert_eq!(g.stop(), 0);
}

#[test]
#[ignore = "needs root"]
fn a_removed_file_stops_all_of_its_service_and_its_cgroup_goes() {
    let Some(mut g) = going(&[("web", &leaky(6200))]) else {
        return;
    };
    let (main, helper) = main_and_helper(&mut g, "web", 6200);
    fs::remove_file(g.conf().join("web")).unwrap();
    g.next_msg("reload: 0 started, 1 stopped");
    let cg = g.service_cgroup("web").unwrap();
    wait_until("web's cgroup to be removed", || !cg.exists());
    assert!(!alive(main) && !alive(helper));
    assert_eq!(g.stop(), 0);
}

#[test]
#[ignore = "needs root"]
fn going_stops_helpers_that_left_the_session_when_it_stops() {
    let Some(mut g) = going(&[("web", &leaky(6300)), ("db", &leaky(6310))]) else {
        return;
    };
    let (web, web_helper) = main_and_helper(&mut g, "web", 6300);
    g.rewind();
    let (db, db_helper) = main_and_helper(&mut g, "db", 6310);
    // stop_timeout=1 of both, then cgroup.kill: within the harness's 2 s.
    assert_eq!(g.stop(), 0);
    for pid in [web, web_helper, db, db_helper] {
        assert!(!alive(pid), "{pid} outlived going");
    }
    let tree = g.cgroup.as_ref().unwrap().path.join("going");
    assert!(!tree.exists(), "going removed its cgroups as it exited");
}

#[test]
#[ignore = "needs root"]
fn after_kill_9_the_helper_is_still_the_services_and_stops_with_it() {
    let Some(mut g) = going(&[("web", &leaky(6400))]) else {
        return;
    };
    let (main, helper) = main_and_helper(&mut g, "web", 6400);
    g.kill9_restart();
    g.next_msg(&format!("web[{main}]: adopted, running for"));
    let (code, out, err) = cmd(&g, "stop", &["-w", "10", "web"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !alive(main) && !alive(helper),
        "the helper went with its service"
    );
    assert_eq!(g.stop(), 0);
}

#[test]
#[ignore = "needs root"]
fn what_a_service_left_while_going_was_down_is_stopped_before_it_starts_again() {
    let Some(mut g) = going(&[("web", &leaky(6500))]) else {
        return;
    };
    let (main, helper) = main_and_helper(&mut g, "web", 6500);
    g.kill9();
    // The main process ends while no going watches: its helper is all the state file
    // does not know of.
    // SAFETY: kill has no memory effects; the pid is web's, alive (checked above).
    unsafe { libc::kill(main, libc::SIGKILL) };
    wait_until("web's main process to end", || !alive(main));
    g.start_again();
    g.next_msg("web: stopping what an earlier going left in its cgroup");
    g.started("web");
    assert!(
        !alive(helper),
        "the old helper is gone before the next start"
    );
    assert_eq!(g.stop(), 0);
}

#[test]
#[ignore = "needs root"]
fn what_a_run_left_outside_its_process_group_is_stopped_before_the_next() {
    let Some(mut g) = going(&[]) else {
        return;
    };
    // The first run ends once the test has seen its helper, however loaded the machine.
    let go = fifo(&g, "go");
    g.write(
        "leaky",
        &format!(
            "cmd=/bin/sh -c 'setsid sleep 6601 & read x < {}; exit 1'\nlog=null\n",
            go.display()
        ),
    );
    let first = g.started("leaky");
    let mut helper = 0;
    wait_until("the helper", || {
        helper = running("sleep 6601").first().copied().unwrap_or(0);
        helper != 0 && session(helper) == helper.to_string()
    });
    release(&go);
    g.next_msg(&format!("leaky[{first}]: exited 1"));
    g.next_msg("leaky: stopping what its run left behind");
    g.started("leaky");
    assert!(
        !alive(helper),
        "the old helper is gone before the next start"
    );
    assert_eq!(g.stop(), 0);
}

#[test]
#[ignore = "needs root"]
fn an_upgrade_keeps_the_services_cgroups() {
    let bin_dir = TempDir::new();
    let binary = bin_dir.0.join("going");
    fs::copy(BIN, &binary).unwrap();
    let Some(mut g) = going_with(Setup {
        files: vec![("web".into(), leaky(6700))],
        binary: Some(binary),
        ..Setup::default()
    }) else {
        return;
    };
    let (main, helper) = main_and_helper(&mut g, "web", 6700);
    let l = g.upgrade();
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    g.next_msg(&format!("web[{main}]: adopted, running for"));
    let (code, out, err) = cmd(&g, "stop", &["-w", "10", "web"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!alive(main) && !alive(helper));
    assert_eq!(g.stop(), 0);
}

#[test]
#[ignore = "needs root"]
fn what_going_ran_without_cgroups_is_moved_into_them_when_adopted() {
    let Some(mut g) = going_with(Setup {
        files: vec![(
            "web".into(),
            "cmd=/bin/sh -c 'sleep 6801 & exec sleep 6800'\nlog=null\n".into(),
        )],
        args: vec!["-c".into(), "off".into()],
        ..Setup::default()
    }) else {
        return;
    };
    g.next_msg("cgroups: off (-c off)");
    let main = g.exec_of("web", "sleep");
    let mut child = 0;
    wait_until("its child", || {
        child = running("sleep 6801").first().copied().unwrap_or(0);
        child != 0
    });
    g.kill9();
    g.args.clear();
    g.start_again();
    g.next_msg(&format!(
        "web[{main}]: moved into its cgroup, with its process group"
    ));
    let procs = cgroup_procs(&g.service_cgroup("web").unwrap());
    assert!(procs.contains(&main) && procs.contains(&child), "{procs:?}");
    assert_eq!(g.stop(), 0);
    assert!(!alive(main) && !alive(child));
}

#[test]
#[ignore = "needs root"]
fn the_finish_hook_runs_in_the_services_cgroup_and_status_shows_it() {
    let Some(mut g) = going(&[]) else {
        return;
    };
    let out = g.dir.0.join("finish-cgroup");
    g.write(
        "web",
        &format!(
            "cmd=/bin/sh -c 'setsid sleep 6901 & exec sleep 6900'\n\
             finish=/bin/sh -c 'cat /proc/self/cgroup > {}'\nstop_timeout=1\nlog=null\n",
            out.display()
        ),
    );
    let (main, _) = main_and_helper(&mut g, "web", 6900);
    let (code, text, _) = cmd(&g, "status", &["web"]);
    assert_eq!(code, 0, "{text}");
    let cg = g.service_cgroup("web").unwrap();
    assert!(
        text.contains(&format!("  cgroup     {}\n", cg.display())),
        "{text}"
    );
    assert!(text.contains("  processes  2\n"), "{text}");
    assert!(text.contains("  cpu        "), "{text}");
    assert!(text.contains("  memory     "), "{text}");
    // SAFETY: kill has no memory effects; the pid is web's, alive (checked above).
    unsafe { libc::kill(main, libc::SIGTERM) };
    g.next_msg("web: stopping what its run left behind");
    wait_until("the finish hook's word", || {
        fs::read_to_string(&out).is_ok_and(|t| t.ends_with("/going/svc/web\n"))
    });
    assert_eq!(g.stop(), 0);
}

#[test]
#[ignore = "needs root"]
fn an_idle_going_with_cgroups_makes_no_system_call() {
    let Some(mut g) = going(&[("web", &leaky(6050)), ("db", "cmd=sleep 6060\nlog=null\n")]) else {
        return;
    };
    main_and_helper(&mut g, "web", 6050);
    g.rewind();
    g.exec_of("db", "sleep");
    g.next_msg("reload: 2 started");
    let switches = |pid: i32| -> u64 {
        ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"]
            .iter()
            .map(|f| status_field(pid, f).parse::<u64>().unwrap())
            .sum()
    };
    // Absence can only be seen over a while: a going that polled its cgroups (or anything)
    // at least once a second would wake in every second. The events of the services'
    // starts may still be on their way (the kernel tells of a cgroup's change from a
    // work queue, late on a loaded machine): the first quiet second of a few will do.
    let quiet = (0..5).any(|_| {
        let before = switches(g.pid());
        std::thread::sleep(Duration::from_secs(1));
        switches(g.pid()) == before
    });
    assert!(
        quiet,
        "going woke in each of 5 seconds while idle\n{}",
        g.dump()
    );
    assert_eq!(g.stop(), 0);
}

#[test]
#[ignore = "needs root"]
fn a_limit_is_written_where_its_controller_is_there_and_refused_where_not() {
    let Some(mut g) = going(&[("web", "cmd=sleep 6070\nlog=null\nmemory_max=100M\n")]) else {
        return;
    };
    let tree = g.cgroup.as_ref().unwrap().path.clone();
    let offered = fs::read_to_string(tree.join("cgroup.controllers")).unwrap();
    let conf = g.conf();
    // going check asks about the going that runs on CONFDIR: once it has read it, it does.
    g.next_msg("reload: ");
    let (code, _, err) = run(&["check", "-d", path_str(&conf)]);
    if offered.split_whitespace().any(|c| c == "memory") {
        eprintln!("the memory controller is there: memory.max checked in web's cgroup");
        assert_eq!(code, 0, "{err}");
        g.rewind();
        g.exec_of("web", "sleep");
        let file = g.service_cgroup("web").unwrap().join("memory.max");
        assert_eq!(fs::read_to_string(file).unwrap(), "104857600\n");
    } else {
        eprintln!("no memory controller here (offered: {offered:?}): the key is refused");
        let want = format!(
            "{}:3: memory_max needs the memory controller, which this system does not offer to going (available: none",
            conf.join("web").display()
        );
        assert_eq!(code, 1);
        assert!(err.starts_with(&want), "{err}");
        g.rewind();
        g.next_msg(&want);
        g.next_msg("reload: 0 started, 0 stopped, 0 restarted, 1 invalid");
    }
    // Without cgroups at all (going check asks about the going that runs, if one does),
    // the key says so.
    assert_eq!(g.stop(), 0);
    let (code, _, err) = run(&["check", "-c", "off", "-d", path_str(&conf)]);
    assert_eq!(code, 1);
    assert!(
        err.contains("memory_max needs the memory controller of cgroup v2, and going uses no cgroups: it was started with -c off"),
        "{err}"
    );
}
