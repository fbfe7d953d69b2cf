//! going killed with SIGKILL and started again, as init's respawn does: the services it
//! left are adopted — neither duplicated nor restarted — unless their files changed; a
//! forged state file adopts and kills nothing; what a crashed service leaves in its process
//! group is stopped before it starts again.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

/// Three services; `base` keeps their command lines apart from other tests running at once.
fn services(base: u32) -> [(&'static str, String); 3] {
    [
        ("a", format!("sleep {base}")),
        ("b", format!("sleep {}", base + 1)),
        ("c", format!("sleep {}", base + 2)),
    ]
}

fn start_three(base: u32) -> (Going, Vec<(i32, u64)>) {
    let files: Vec<(String, String)> = services(base)
        .iter()
        .map(|(n, c)| (n.to_string(), format!("cmd={c}\nlog=null\n")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut g = Going::start(&refs);
    let mut ids = Vec::new();
    for (name, _) in services(base) {
        g.rewind();
        let pid = g.exec_of(name, "sleep");
        ids.push((pid, start_time(pid).unwrap()));
    }
    g.next_msg("reload: 3 started");
    wait_until("the state file", || {
        fs::read_to_string(g.dir.0.join("run/state"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("going-state ") && !l.starts_with('+'))
            .count()
            == 3
    });
    (g, ids)
}

#[test]
fn after_kill_9_every_service_is_adopted_not_duplicated_nor_restarted() {
    let (mut g, ids) = start_three(2000);
    g.kill9_restart();
    for ((name, cmd), (pid, start)) in services(2000).iter().zip(&ids) {
        let l = g.next_msg(&format!("{name}[{pid}]: adopted, running for"));
        assert_eq!(l.pri, NOTICE);
        g.rewind();
        assert_eq!(
            running(cmd),
            [*pid],
            "{name}: one process, the same one\n{}",
            g.dump()
        );
        assert_eq!(start_time(*pid), Some(*start), "{name}: not restarted");
    }
    g.next_msg("reload: 0 started, 0 stopped, 0 restarted, 0 invalid");
    let (code, out, _) = run(&["status", "-r", path_str(&g.dir.0.join("run")), "a"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("pid        {}", ids[0].0)), "{out}");
    // An adopted service that exits is restarted, as if going had started it.
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(ids[0].0, libc::SIGKILL) };
    g.next_msg(&format!(
        "a[{}]: exited (status unknown: adopted, not going's child)",
        ids[0].0
    ));
    let again = g.exec_of("a", "sleep");
    assert_ne!(again, ids[0].0);
    assert_eq!(running("sleep 2000"), [again], "{}", g.dump());
    // And going stops adopted services like its own.
    assert_eq!(g.stop(), 0);
    for (_, cmd) in services(2000) {
        assert!(running(&cmd).is_empty(), "{cmd} left behind");
    }
}

#[test]
fn a_file_changed_or_removed_meanwhile_stops_the_adopted_copy() {
    let (mut g, ids) = start_three(3000);
    g.kill9();
    g.write("a", "cmd=sleep 2999\nlog=null\n");
    fs::remove_file(g.conf().join("b")).unwrap();
    g.start_again();
    g.next_msg(&format!(
        "a[{}]: adopted, but its file changed since it started: stopping it",
        ids[0].0
    ));
    g.rewind();
    g.next_msg(&format!(
        "b[{}]: adopted, but its file is gone or invalid since it started: stopping it",
        ids[1].0
    ));
    let new_a = g.exec_of("a", "sleep");
    wait_until("the old a and b to be gone", || {
        running("sleep 3000").is_empty() && running("sleep 3001").is_empty()
    });
    assert_eq!(running("sleep 2999"), [new_a]);
    assert_eq!(running("sleep 3002"), [ids[2].0], "c is untouched");
}

#[test]
fn a_forged_or_stale_state_file_adopts_and_kills_nothing() {
    let (mut bystander, pid, start) = bystander("4003");
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    let state = g.dir.0.join("run/state");
    let forge = |text: String, mode: u32| {
        fs::write(&state, text).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(mode)).unwrap();
    };
    // A wrong start time: the pid is someone else's now.
    g.kill9();
    forge(format!("a {pid} {pid} {} 1\n", start + 1), 0o600);
    g.write("a", "cmd=sleep 4004\nlog=null\n");
    g.start_again();
    g.next_msg(&format!(
        "a: pid {pid} is no longer the process going started"
    ));
    g.started("a");
    assert_eq!(g.stop(), 0);
    // The right start time, but a state file others may write: not believed at all.
    forge(format!("a {pid} {pid} {start} 1\n"), 0o666);
    g.start_again();
    let l = g.next_msg("going: not adopting anything");
    assert!(
        l.msg.contains("writable by group or others (mode 0666)"),
        "{}",
        l.msg
    );
    g.started("a");
    assert!(alive(pid), "the bystander was not touched");
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn an_adopted_service_output_is_read_again_and_a_write_while_no_going_ran_kills_it() {
    // It writes only when told to (SIGUSR1), so that each step is deterministic.
    let mut g = Going::start(&[(
        "talker",
        "cmd=/bin/sh -c 'trap \"echo ping\" USR1; echo hello; while :; do sleep 2601 & wait; done'\n",
    )]);
    let pid = g.started("talker");
    g.next_output(&format!("talker[{pid}]"), "hello");
    wait_until("the state file", || {
        fs::read_to_string(g.dir.0.join("run/state"))
            .unwrap_or_default()
            .contains("talker")
    });
    g.kill9_restart();
    g.next_msg(&format!("talker[{pid}]: adopted"));
    // The new going found the pipe in /proc and reads it: lines go on, same process.
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    g.next_output(&format!("talker[{pid}]"), "ping");
    // Written while no going runs: nobody reads the pipe, so sh dies of SIGPIPE, and the
    // next going starts it afresh.
    g.kill9();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    wait_until("the talker to die of SIGPIPE", || !alive(pid));
    g.start_again();
    let again = g.started("talker");
    assert_ne!(again, pid);
    g.next_output(&format!("talker[{again}]"), "hello");
    assert_eq!(g.stop(), 0);
    for left in running("sleep 2601") {
        // SAFETY: as above; the first talker's sleep, orphaned when it died.
        unsafe { libc::kill(left, libc::SIGKILL) };
    }
}

#[test]
fn what_a_crashed_service_left_in_its_group_is_stopped_before_it_starts_again() {
    let mut g = Going::start(&[]);
    // It ends when the test says so: the helper is looked for first.
    let gate = fifo(&g, "gate");
    let script = format!("sleep 5004 & read x < {}; exit 1", path_str(&gate));
    g.write("leaky", &format!("cmd=/bin/sh -c '{script}'\nlog=null\n"));
    let first = g.started("leaky");
    // The helper of this first run: in its process group.
    let mut helper = 0;
    wait_until("the helper", || {
        let of_first = (running("sleep 5004").into_iter())
            .find(|p| stat_fields(*p).get(2) == Some(&first.to_string()));
        helper = of_first.unwrap_or(0);
        helper != 0
    });
    release(&gate);
    g.next_msg(&format!("leaky[{first}]: exited 1"));
    g.next_msg("leaky: stopping what its run left behind");
    g.started("leaky");
    assert!(
        !alive(helper),
        "the old helper is gone before the next start"
    );
    wait_until("one helper", || running("sleep 5004").len() == 1);
}

#[test]
fn a_setting_changed_without_a_restart_is_adopted_as_it_is_after_kill_9() {
    let mut g = Going::start(&[("calm", "cmd=sleep 2701\nlog=null\n")]);
    let pid = g.exec_of("calm", "sleep");
    let state = g.dir.0.join("run/state");
    wait_until("the state file", || {
        fs::read_to_string(&state)
            .unwrap_or_default()
            .contains("calm")
    });
    // stop_timeout applies without a restart; the state file must learn the new
    // fingerprint, or the next going would take the process for one of other settings.
    g.write("calm", "cmd=sleep 2701\nlog=null\nstop_timeout=3\n");
    g.next_msg("reload: 0 started, 0 stopped, 0 restarted, 0 invalid");
    wait_until("the changed entry appended", || {
        let text = fs::read_to_string(&state).unwrap_or_default();
        text.matches(&format!("calm {pid} ")).count() == 2
    });
    g.kill9_restart();
    g.next_msg(&format!("calm[{pid}]: adopted, running for"));
    g.next_msg("reload: 0 started, 0 stopped, 0 restarted, 0 invalid");
    assert_eq!(running("sleep 2701"), [pid], "{}", g.dump());
    assert_eq!(g.stop(), 0);
}

#[test]
fn the_state_file_stays_small_over_many_restarts_and_adoption_finds_the_last_pid() {
    let mut g = Going::start(&[("busy", "cmd=sleep 2801\nlog=null\n")]);
    let mut pid = g.exec_of("busy", "sleep");
    let run_dir = g.dir.0.join("run");
    // Each restart appends an end and a start; past 2 × services + 64 changes the file
    // is written again as a snapshot.
    for _ in 0..50 {
        let (code, out, err) = run(&["restart", "-r", path_str(&run_dir), "busy"]);
        assert_eq!(code, 0, "{out}{err}");
        g.next_msg(&format!("busy[{pid}]: stopped"));
        pid = g.exec_of("busy", "sleep");
    }
    let state = run_dir.join("state");
    wait_until("the last start in the state file", || {
        fs::read_to_string(&state)
            .unwrap_or_default()
            .contains(&format!("busy {pid} "))
    });
    let lines = fs::read_to_string(&state).unwrap().lines().count();
    // A snapshot (header, entry, its readiness) and at most 2 × 1 + 64 changes after it.
    assert!(lines <= 69, "{lines} lines: never compacted");
    g.kill9_restart();
    g.next_msg(&format!("busy[{pid}]: adopted, running for"));
    assert_eq!(running("sleep 2801"), [pid]);
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_state_file_of_another_boot_adopts_and_kills_nothing() {
    // A bystander with the very pid and start time the file names: after a reboot, pids
    // and start times repeat, so only the boot id tells this process from a service.
    let (mut bystander, pid, start) = bystander("4013");
    let mut g = Going::start(&[]);
    g.next_msg("reload: 0 started");
    g.kill9();
    let state = g.dir.0.join("run/state");
    fs::write(
        &state,
        format!("going-state 2 00000000-0000-0000-0000-000000000000\na {pid} {pid} {start} 1 0\n"),
    )
    .unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o600)).unwrap();
    g.write("a", "cmd=sleep 4014\nlog=null\n");
    g.start_again();
    let l = g.next_msg("going: not adopting anything");
    assert!(l.msg.ends_with("written during another boot"), "{}", l.msg);
    g.started("a");
    assert!(alive(pid), "the bystander was not touched");
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn a_clean_stop_leaves_nothing_to_adopt_and_a_bad_line_costs_that_line_only() {
    let (mut g, ids) = start_three(2900);
    let state = g.dir.0.join("run/state");
    g.kill9();
    // A byte that is no text and a line that is no entry, among the good ones.
    let text = fs::read(&state).unwrap();
    let nl = text.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut forged = text[..nl].to_vec();
    forged.extend_from_slice(b"\xff\xfe\x1b[2J\nnonsense here\n");
    forged.extend_from_slice(&text[nl..]);
    fs::write(&state, forged).unwrap();
    g.start_again();
    for ((name, _), (pid, _)) in services(2900).iter().zip(&ids) {
        g.next_msg(&format!("{name}[{pid}]: adopted, running for"));
        g.rewind();
    }
    let l = g.next_msg("line 2: not understood");
    assert!(l.msg.contains("\\xff\\xfe\\x1b[2J"), "escaped: {}", l.msg);
    g.next_msg("line 3: not understood: \"nonsense here\"");
    assert_eq!(g.stop(), 0);
    assert!(!state.exists(), "a clean stop leaves no state to adopt");
    for (_, cmd) in services(2900) {
        assert!(running(&cmd).is_empty());
    }
}

#[test]
fn a_state_file_of_a_later_format_or_of_a_service_named_going_state_still_adopts() {
    let mut g = Going::start(&[
        ("going-state", "cmd=sleep 4021\nlog=null\n"),
        ("web", "cmd=sleep 4022\nlog=null\n"),
    ]);
    let first = g.exec_of("going-state", "sleep");
    g.rewind();
    let web = g.exec_of("web", "sleep");
    let state = g.dir.0.join("run/state");
    wait_until("the state file", || {
        let text = fs::read_to_string(&state).unwrap_or_default();
        text.contains(&format!("going-state {first} ")) && text.contains(&format!("web {web} "))
    });
    // A later going wrote it (then this one was put back, and the later one killed): the
    // lines of known shape are read, nothing is started twice.
    g.kill9();
    let text = fs::read_to_string(&state).unwrap();
    let later = text.replacen("going-state 2 ", "going-state 3 ", 1);
    assert_ne!(later, text);
    fs::write(&state, format!("{later}+a-line-of-the-future 1\n")).unwrap();
    g.start_again();
    g.next_msg("format 3 is not this going's (2): reading what it can");
    g.next_msg(&format!("going-state[{first}]: adopted, running for"));
    g.rewind();
    g.next_msg(&format!("web[{web}]: adopted, running for"));
    assert_eq!(running("sleep 4021"), [first]);
    assert_eq!(running("sleep 4022"), [web]);
    // going 0.1.0's file has no header: a first line of a service named going-state is
    // an entry (of a version 1 fingerprint, so the process is replaced, not duplicated).
    g.kill9();
    // web is not in that file: ended here, or it would outlive the test (and be a second
    // sleep 4022 to the next run of it).
    // SAFETY: kill has no memory effects; web is this test's service, reparented to init.
    assert_eq!(unsafe { libc::kill(web, libc::SIGKILL) }, 0);
    let start = start_time(first).unwrap();
    fs::write(&state, format!("going-state {first} {first} {start} 1\n")).unwrap();
    g.start_again();
    g.next_msg(&format!(
        "going-state[{first}]: adopted, but its file changed since it started: stopping it"
    ));
    let again = g.exec_of("going-state", "sleep");
    wait_until("the old copy to go", || running("sleep 4021") == [again]);
    assert!(
        !g.lines
            .iter()
            .any(|l| l.msg.contains("not adopting anything")),
        "{}",
        g.dump()
    );
    assert_eq!(g.stop(), 0);
}

/// `start_three`, then going killed and started again while its CONFDIR is not there: it
/// cannot take over what the killed one left until it can read the files.
fn killed_then_started_without_confdir(base: u32) -> (Going, Vec<(i32, u64)>) {
    let (mut g, ids) = start_three(base);
    g.kill9();
    fs::rename(g.conf(), g.dir.0.join("away")).unwrap();
    g.start_again();
    g.next_msg("going 0.1.0 started");
    g.next_msg("reload: unable to read");
    (g, ids)
}

#[test]
fn sigterm_before_confdir_is_read_stops_what_the_killed_going_left() {
    let (mut g, ids) = killed_then_started_without_confdir(3100);
    // Left running, they would be started a second time by the next going.
    assert_eq!(g.stop(), 0);
    for (pid, _) in &ids {
        g.rewind();
        g.next_msg(&format!(
            "[{pid}]: adopted, but its file is gone or invalid"
        ));
    }
    g.next_msg("going: stopping 3 services");
    for (_, cmd) in services(3100) {
        assert!(running(&cmd).is_empty(), "{cmd} left behind");
    }
}

#[test]
fn a_process_that_ends_before_it_is_taken_over_is_started_anew() {
    let (mut g, ids) = killed_then_started_without_confdir(3200);
    let (a, _) = ids[0];
    // SAFETY: kill has no memory effects; a is a service process of this test.
    unsafe { libc::kill(a, libc::SIGKILL) };
    g.next_msg(&format!("a[{a}]: ended before going could take it over"));
    // An upgrade would hand over only what was taken over: it waits for CONFDIR.
    let l = g.upgrade();
    assert!(
        l.msg
            .contains("what the previous going left is not taken over yet"),
        "{}",
        l.msg
    );
    fs::rename(g.dir.0.join("away"), g.conf()).unwrap();
    g.signal(libc::SIGHUP);
    let again = g.exec_of("a", "sleep");
    assert_ne!(again, a);
    g.rewind();
    g.next_msg(&format!("b[{}]: adopted, running for", ids[1].0));
    assert_eq!(running("sleep 3200"), [again]);
    assert_eq!(running("sleep 3201"), [ids[1].0]);
    // Nothing waits for a process that is gone: going stops at once.
    assert_eq!(g.stop(), 0);
    for (_, cmd) in services(3200) {
        assert!(running(&cmd).is_empty(), "{cmd} left behind");
    }
}

#[test]
fn a_stop_under_way_goes_on_after_an_upgrade_or_kill_9() {
    let bin_dir = TempDir::new();
    let binary = bin_dir.0.join("going");
    fs::copy(BIN, &binary).unwrap();
    let done = bin_dir.0.join("done");
    // It takes its time to stop: until the test says so.
    let slow = format!(
        "cmd=sh -c 'trap \"while [ ! -e {} ]; do sleep 0.01; done; exit 0\" TERM; sleep 3301 & wait'\nlog=null\n",
        path_str(&done)
    );
    let mut g = Going::with(Setup {
        files: vec![("web".into(), slow)],
        binary: Some(binary),
        ..Setup::default()
    });
    // Its trap is set once its sleep runs (a TERM before that could be taken by the
    // trap of the shell forking it, and the sleep outlive the stop).
    let trapped = |pid: i32| {
        group_members(pid)
            .into_iter()
            .any(|p| proc_file(p, "cmdline") == "sleep\x003301\x00")
    };
    for how in ["an upgrade", "kill -9"] {
        let pid = g.started("web");
        wait_until("its trap", || trapped(pid));
        let (code, out, _) = cmd(&g, "stop", &["web"]);
        assert_eq!((code, out.as_str()), (0, "web: stopping\n"), "{how}");
        wait_until("the TERM to reach it", || !trapped(pid));
        if how == "kill -9" {
            g.kill9_restart();
        } else {
            let l = g.upgrade();
            assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
        }
        g.next_msg(&format!(
            "web[{pid}]: adopted, still stopping as the admin asked"
        ));
        fs::write(&done, "").unwrap();
        g.next_msg(&format!("web[{pid}]: stopped"));
        // Down, as the admin left it, and still so for the next going.
        let (_, out, _) = cmd(&g, "status", &["web"]);
        assert!(out.contains("down"), "{how}: {out}");
        assert!(g.dir.0.join("run/down/web").exists(), "{how}");
        fs::remove_file(&done).unwrap();
        assert_eq!(cmd(&g, "start", &["web"]).0, 0);
    }
    let pid = g.started("web");
    wait_until("its trap", || trapped(pid));
    fs::write(&done, "").unwrap();
    assert_eq!(g.stop(), 0);
}

/// A service whose main process leaves a helper that ignores SIGTERM, and exits once
/// `exit` exists: what is left of its group is then stopped, for its stop_timeout.
pub fn leaky(exit: &std::path::Path, helper: u32, stop_timeout: u32) -> String {
    format!(
        "cmd=sh -c '(trap \"\" TERM; exec sleep {helper}) & while [ ! -e {} ]; do sleep 0.01; done; exit 1'\nlog=null\nstop_timeout={stop_timeout}\n",
        path_str(exit)
    )
}

/// Starts `leaky` as web, makes it exit, and waits until going stops what it left and has
/// told the state file so: the leader's pid (its group) and its helper's.
pub fn draining(g: &mut Going, exit: &std::path::Path, helper: u32) -> (i32, i32) {
    let leader = g.started("web");
    let cmdline = format!("sleep {helper}");
    wait_until("the helper", || running(&cmdline).len() == 1);
    let left = running(&cmdline)[0];
    fs::write(exit, "").unwrap();
    g.next_msg("web: stopping what its run left behind");
    wait_until("the group in the state file", || {
        fs::read_to_string(g.dir.0.join("run/state"))
            .unwrap_or_default()
            .contains(&format!("+group web {leader} "))
    });
    (leader, left)
}

#[test]
fn a_group_being_stopped_is_taken_over_after_kill_9_and_killed_when_due() {
    let tmp = TempDir::new();
    let exit = tmp.0.join("exit");
    let mut g = Going::start(&[("web", &leaky(&exit, 3401, 2))]);
    let (leader, left) = draining(&mut g, &exit, 3401);
    g.kill9_restart();
    g.next_msg(&format!(
        "web: adopted what is left of its process group {leader}, being stopped"
    ));
    fs::remove_file(&exit).unwrap();
    // Its SIGKILL comes when it was due; only then does web start again.
    g.next_msg("web: still running 2s after SIGTERM, sending SIGKILL");
    wait_until("the helper to be killed", || !alive(left));
    g.started("web");
    wait_until("the new helper", || running("sleep 3401").len() == 1);
    let helper = running("sleep 3401")[0];
    assert_ne!(helper, left);
    // Stopped at once: its helper too ignores SIGTERM.
    g.signal(libc::SIGTERM);
    // SAFETY: kill has no memory effects; the helper is not reaped (going reaps it).
    unsafe { libc::kill(helper, libc::SIGKILL) };
    assert_eq!(g.wait_exit(), 0);
}
