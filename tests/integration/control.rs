//! The commands that talk to a running going over RUNDIR/control, and the control socket's
//! defences: who may use it, and clients that say nothing, say too much or say garbage.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;

fn rundir(g: &Going) -> PathBuf {
    g.dir.0.join("run")
}

fn wait_for_socket(g: &Going) {
    let sock = rundir(g).join("control");
    wait_until("the control socket", || sock.exists());
}

#[test]
fn status_shows_the_table_and_after_a_crash_the_exit_and_last_lines() {
    let mut g = Going::start(&[
        (
            "web",
            "cmd=/bin/sh -c 'echo listening on 8080; exec sleep 1000'\n",
        ),
        (
            "crashy",
            "cmd=/bin/sh -c 'echo starting up; echo \"<3>cannot open db\" >&2; exit 3'\n",
        ),
        ("typo", "cmd=/bin/true\nbogus=1\n"),
    ]);
    g.next_msg("crashy: failed 1 time in a row");
    g.rewind();
    let web = g.started("web");
    wait_until("web's line", || {
        g.lines.iter().any(|l| l.msg == "listening on 8080") || {
            g.collect_for(std::time::Duration::from_millis(20));
            false
        }
    });
    let (code, out, err) = cmd(&g, "status", &[]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("STATE")
            && lines[0].ends_with("LAST EXIT"),
        "{out}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("web")[1..3], ["running", &web.to_string()]);
    assert!(
        ["quarantined", "starting", "running"].contains(&row("crashy")[1]),
        "{out}"
    );
    assert_eq!(row("typo")[1..3], ["invalid", "file"]);
    assert!(
        !out.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );

    let (code, out, _) = cmd(&g, "status", &["crashy"]);
    assert_eq!(code, 3, "crashy is not running: {out}");
    assert!(out.contains("exited 3 after"), "{out}");
    assert!(
        out.contains("    starting up\n") && out.contains("    cannot open db\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("file       {}", g.conf().join("crashy").display())),
        "{out}"
    );
    let (code, out, _) = cmd(&g, "status", &["web"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("web: running\n") && out.contains("    listening on 8080\n"),
        "{out}"
    );
    assert!(
        out.contains("command    /bin/sh -c 'echo listening on 8080; exec sleep 1000'"),
        "{out}"
    );
    let (code, out, _) = cmd(&g, "status", &["typo"]);
    assert_eq!(code, 3);
    assert!(
        out.contains(&format!(
            "{}:2: unknown key \"bogus\"",
            g.conf().join("typo").display()
        )),
        "{out}"
    );
    let (code, _, err) = cmd(&g, "status", &["web", "nosuch"]);
    assert_eq!(code, 4);
    assert_eq!(err, "going: no such service: nosuch\n");
}

#[test]
fn stop_keeps_a_service_down_until_start_across_restarts_of_going() {
    let mut g = Going::start(&[("web", "cmd=sleep 1000\n"), ("db", "cmd=sleep 1000\n")]);
    g.next_msg("reload: 2 started");
    g.rewind();
    let web = g.started("web");
    let (code, out, _) = cmd(&g, "stop", &["web"]);
    assert_eq!((code, out.as_str()), (0, "web: stopping\n"));
    wait_until("web to be gone", || group_members(web).is_empty());
    let (code, out, _) = cmd(&g, "status", &["web"]);
    assert_eq!(code, 3);
    assert!(out.starts_with("web: down\n"), "{out}");
    assert_eq!(cmd(&g, "stop", &["web"]).1, "web: already stopped\n");
    // Down survives a restart of going on the same RUNDIR.
    assert_eq!(g.restart(), 0);
    g.started("db");
    g.rewind();
    g.next_msg("web: down, as the admin left it");
    let (code, out, _) = cmd(&g, "start", &["web"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("web: started"), "{out}");
    g.started("web");
    assert!(!rundir(&g).join("down/web").exists());
}

#[test]
fn a_changed_file_lifts_the_stop_and_restart_lifts_a_quarantine() {
    let mut g = Going::start(&[
        ("web", "cmd=sleep 1000\n"),
        ("crashy", "cmd=/bin/sh -c 'exit 1'\n"),
    ]);
    let web = g.started("web");
    cmd(&g, "stop", &["web"]);
    wait_until("web to be gone", || group_members(web).is_empty());
    g.write("web", "cmd=sleep 999\n");
    g.started("web");
    assert!(!rundir(&g).join("down/web").exists());
    // Crashy fails on its own meanwhile: on a loaded machine it may have failed twice
    // before web was started again.
    g.rewind();
    g.next_msg("crashy: failed 2 times in a row, next start in 2s");
    let (code, out, _) = cmd(&g, "restart", &["crashy"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "crashy: started\n"),
        "a quarantined service starts at once"
    );
    g.next_msg("crashy: failed 1 time in a row, next start in 1s");
}

#[test]
fn restart_and_signal_reach_the_service() {
    let mut g = Going::start(&[(
        "web",
        "cmd=/bin/sh -c 'trap \"echo reloading config\" HUP; echo ready; while :; do sleep 0.1; done'\n",
    )]);
    let web = g.started("web");
    g.next_output(&format!("web[{web}]"), "ready");
    let (code, out, _) = cmd(&g, "signal", &["HUP", "web"]);
    assert_eq!(
        (code, out),
        (0, format!("web: sent SIGHUP to process group {web}\n"))
    );
    g.next_output(&format!("web[{web}]"), "reloading config");
    let (code, out, _) = cmd(&g, "restart", &["web"]);
    assert_eq!((code, out.as_str()), (0, "web: restarting\n"));
    g.next_msg(&format!("web[{web}]: stopped: killed by SIGTERM"));
    let again = g.started("web");
    assert_ne!(again, web);
    cmd(&g, "stop", &["web"]);
    g.next_msg(&format!("web[{again}]: stopped"));
    let (code, _, err) = cmd(&g, "signal", &["USR1", "web"]);
    assert_eq!((code, err.as_str()), (3, "web: not running\n"));
    let (code, _, err) = cmd(&g, "restart", &["nosuch"]);
    assert_eq!(
        (code, err.as_str()),
        (4, "going: no such service: nosuch\n")
    );
}

#[test]
fn reload_waits_and_prints_what_changed_and_every_problem() {
    let mut g = Going::start(&[("web", "cmd=sleep 1000\n")]);
    g.next_msg("reload: 1 started");
    wait_for_socket(&g);
    let (code, out, err) = cmd(&g, "reload", &[]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            0,
            "reload: 0 started, 0 stopped, 0 restarted, 0 invalid\n",
            ""
        )
    );
    // Hold going still, so the command, not inotify, does this reload.
    g.pause();
    fs::write(g.conf().join("typo"), "cmd=sleep 1000\nusr=www-data\n").unwrap();
    fs::write(g.conf().join("new"), "cmd=sleep 1000\n").unwrap();
    // The request is in going's socket before it moves again (what `going reload` sends,
    // read as it gets it: code, text, `!` lines for stderr).
    let mut client = UnixStream::connect(rundir(&g).join("control")).unwrap();
    client.write_all(b"reload\n").unwrap();
    g.signal(libc::SIGCONT);
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    let typo = g.conf().join("typo");
    assert_eq!(
        reply,
        format!(
            "1\nreload: 1 started, 0 stopped, 0 restarted, 1 invalid\n!{}:2: unknown key \"usr\"\n",
            typo.display()
        )
    );
}

#[test]
fn unreachable_going_and_usage_errors() {
    let dir = TempDir::new();
    let (code, _, err) = run(&["status", "-r", path_str(&dir.0)]);
    assert_eq!(code, 69);
    assert_eq!(
        err,
        format!(
            "going: unable to reach going at {}: No such file or directory\n",
            dir.0.join("control").display()
        )
    );
    for bad in [
        &["stop"][..],
        &["signal", "HUP"],
        &["signal", "NOPE", "web"],
        &["reload", "x"],
        &["start", "../x"],
    ] {
        let (code, _, err) = run(bad);
        assert_eq!(code, 64, "{bad:?}: {err}");
    }
}

#[test]
fn silent_slow_and_garbage_clients_cost_nothing() {
    let mut g = Going::start(&[("web", "cmd=sleep 1000\n")]);
    g.next_msg("reload: 1 started");
    wait_for_socket(&g);
    let sock = rundir(&g).join("control");
    // One says nothing, one sends garbage, one sends a request without end, one never reads.
    let mut silent = UnixStream::connect(&sock).unwrap();
    let mut garbage = UnixStream::connect(&sock).unwrap();
    garbage.write_all(b"\xff\xfe rm -rf /\n").unwrap();
    let mut endless = UnixStream::connect(&sock).unwrap();
    let _ = endless.write_all(&vec![b'a'; 8192]);
    let mut sleepy = UnixStream::connect(&sock).unwrap();
    sleepy.write_all(b"status\n").unwrap();
    // Meanwhile another admin is served at once.
    let (code, out, _) = cmd(&g, "status", &[]);
    assert_eq!(code, 0);
    assert!(out.contains("web"), "{out}");
    let mut reply = String::new();
    garbage.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "64\n!going: not a request going understands\n");
    let mut reply = String::new();
    endless.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("64\n"), "{reply}");
    // The silent one is dropped when its time is up.
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut said = Vec::new();
    silent.read_to_end(&mut said).unwrap(); // read(2) again after a signal, as this does
    assert_eq!(said, b"");
    drop(sleepy);
    assert!(alive(g.pid()));
}

#[test]
fn silent_clients_never_keep_a_new_one_out() {
    let mut g = Going::start(&[("web", "cmd=sleep 1000\n")]);
    g.next_msg("reload: 1 started");
    wait_for_socket(&g);
    let sock = rundir(&g).join("control");
    // More silent clients than going serves at once (16).
    let silent: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let t0 = std::time::Instant::now();
    let (code, out, err) = cmd(&g, "status", &[]);
    let took = t0.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("web"), "{out}");
    assert!(
        took < std::time::Duration::from_secs(3),
        "served after {took:?}: it waited for the silent ones to time out"
    );
    // The oldest silent ones made room (20 + 1 for 16 slots), the others are still there.
    for (i, mut s) in silent.into_iter().enumerate() {
        if i < 5 {
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            let mut said = Vec::new();
            s.read_to_end(&mut said).unwrap();
            assert_eq!(said, b"", "silent client {i}");
        } else {
            s.set_nonblocking(true).unwrap();
            let e = s.read(&mut [0u8; 16]).unwrap_err();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::WouldBlock,
                "silent client {i}"
            );
        }
    }
}

#[test]
fn clients_that_are_all_being_answered_make_new_ones_wait_not_fail() {
    let line = "x".repeat(200);
    let web = format!(
        "cmd=/bin/sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do echo {line}; done; exec sleep 1000'\n"
    );
    let mut g = Going::start(&[("web", &web)]);
    let pid = g.started("web");
    g.next_output(&format!("web[{pid}]"), &line);
    wait_for_socket(&g);
    let sock = rundir(&g).join("control");
    // 16 clients ask for a reply larger than a socket takes (300 times web's details
    // with its last output), and do not read it: every slot is busy answering. Going
    // is held still meanwhile, so that it sees them and the newcomer all at once.
    let request = format!("status{}\n", " web".repeat(300));
    g.pause();
    let busy: Vec<UnixStream> = (0..16)
        .map(|_| {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    let mut newcomer = UnixStream::connect(&sock).unwrap();
    newcomer.write_all(b"status\n").unwrap();
    g.signal(libc::SIGCONT);
    // Every busy client is being answered (going has been through the newcomer's
    // connection by then), and then goes away without reading the rest.
    for mut s in busy {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.read_exact(&mut [0u8; 2]).unwrap();
    }
    // The newcomer was not refused: it is answered once slots are free.
    newcomer.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reply = String::new();
    newcomer.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("0\nNAME") && reply.contains("\nweb "),
        "{reply:?}"
    );
}

#[test]
fn a_request_followed_by_end_of_file_is_answered() {
    use std::net::Shutdown;
    let mut g = Going::start(&[("web", "cmd=sleep 1000\n")]);
    g.exec_of("web", "sleep");
    wait_for_socket(&g);
    let sock = rundir(&g).join("control");
    // As `nc -N` and socat do: the request, then shutdown(SHUT_WR). Many times over, as
    // going may read the request and the end of file in one go, or apart.
    for i in 0..500 {
        let request: &[u8] = if i % 2 == 0 {
            b"status web\n"
        } else {
            b"status web"
        };
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(request).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("0\nweb: ") && reply.contains("  command    sleep 1000\n"),
            "round {i}, {request:?}: {reply:?}"
        );
    }
    // A client that says nothing and shuts down gets nothing, and costs nothing.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut said = Vec::new();
    s.read_to_end(&mut said).unwrap();
    assert_eq!(said, b"");
    assert_eq!(cmd(&g, "status", &["web"]).0, 0);
}

/// For `pre_exec`: become uid and gid 65534 (nobody), with no other group.
fn nobody() -> std::io::Result<()> {
    // SAFETY: setgroups, setgid and setuid are async-signal-safe.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(65534) != 0
            || libc::setuid(65534) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
#[ignore = "needs root"]
fn only_root_or_goings_own_user_may_control_it() {
    let mut g = Going::start(&[("web", "cmd=sleep 1000\n")]);
    g.next_msg("reload: 1 started");
    wait_for_socket(&g);
    let run_dir = rundir(&g);
    let as_nobody = || {
        let mut c = Command::new(BIN);
        c.args(["status", "-r", path_str(&run_dir)]);
        // SAFETY: `nobody` only makes async-signal-safe calls.
        unsafe { c.pre_exec(nobody) };
        c.output().unwrap()
    };
    // RUNDIR's mode (0700) keeps others out, and they are told so (EX_NOPERM).
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(77));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "going: unable to reach going at {}: Permission denied\n",
            run_dir.join("control").display()
        )
    );
    // …and were it open to all, the peer's credentials still would.
    fs::set_permissions(run_dir.join("control"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&g.dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(77));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "going: permission denied: uid 65534 may not control going\n"
    );
}

#[test]
#[ignore = "needs root"]
fn a_control_socket_someone_else_serves_is_not_believed() {
    // A going of nobody's, on a RUNDIR nobody owns, where root's commands would look.
    let dir = TempDir::new();
    let (conf, run_dir) = (dir.0.join("conf"), dir.0.join("run"));
    for d in [&conf, &run_dir] {
        fs::create_dir(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let mut theirs = going_in(std::path::Path::new(BIN), &dir.0);
    // SAFETY: `nobody` only makes async-signal-safe calls.
    unsafe { theirs.pre_exec(nobody) };
    // Should the test fail half-way, nobody's going still stops.
    let mut theirs = Stopped(theirs.spawn().unwrap());
    let sock = run_dir.join("control");
    wait_until("nobody's control socket", || {
        UnixStream::connect(&sock).is_ok()
    });
    let (code, out, err) = run(&["start", "-r", path_str(&run_dir), "web"]);
    assert_eq!((code, out.as_str()), (78, ""), "{err}");
    assert_eq!(
        err,
        format!(
            "going: unable to trust {}: its server runs as uid 65534, neither root nor uid 0\n",
            sock.display()
        )
    );
    // nobody's own commands believe it.
    let mut c = Command::new(BIN);
    c.args(["status", "-r", path_str(&run_dir)]);
    // SAFETY: `nobody` only makes async-signal-safe calls.
    unsafe { c.pre_exec(nobody) };
    let mine = c.output().unwrap();
    assert_eq!(mine.status.code(), Some(0), "{mine:?}");
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(theirs.0.id() as i32, libc::SIGTERM) };
    assert_eq!(theirs.0.wait().unwrap().code(), Some(0));
}

#[test]
fn a_stop_right_after_a_start_is_not_lost() {
    // Restarted twice in quick succession, the second stop can come before the new copy
    // has made its process group: it must still reach it, or the copy would run on until
    // its stop_timeout and going's own stop take 10 s (the harness allows 2).
    let mut g = Going::start(&[("s", "cmd=sleep 1000\nlog=null\n")]);
    g.exec_of("s", "sleep");
    for _ in 0..30 {
        for _ in 0..2 {
            let (code, out, err) = cmd(&g, "restart", &["s"]);
            assert_eq!(code, 0, "{out}{err}");
        }
    }
    assert_eq!(g.stop(), 0);
    g.rewind();
    assert!(
        !g.lines.iter().any(|l| l.msg.contains("sending SIGKILL")),
        "{}",
        g.dump()
    );
}

#[test]
fn a_command_that_waits_is_answered_after_its_client_shuts_down_its_side_and_forgotten_if_it_left()
{
    use std::net::Shutdown;
    let mut g = Going::start(&[]);
    let go = fifo(&g, "go");
    g.write(
        "slow",
        &format!(
            "cmd=/bin/sh -c 'read x < {}; echo >&3; exec sleep 1000'\nready=fd:3\n",
            go.display()
        ),
    );
    g.started("slow");
    let restarts = |g: &Going| {
        let (_, out, _) = cmd(g, "status", &["slow"]);
        let n = (out.lines()).find_map(|l| l.trim().strip_prefix("restarts"));
        n.unwrap_or_else(|| panic!("{out}")).trim().to_string()
    };
    // A restart that waits, interrupted (^C) while slow is not up yet: done once, and
    // the client forgotten, never taken to ask again.
    let run = rundir(&g);
    let mut waiting = Stopped(spawn(Command::new(BIN).args([
        "restart",
        "-w",
        "30",
        "-r",
        path_str(&run),
        "slow",
    ])));
    wait_until("the restart", || restarts(&g) == "1");
    // SAFETY: kill has no memory effects; the client is not reaped yet.
    unsafe { libc::kill(waiting.pid(), libc::SIGINT) };
    waiting.0.wait().unwrap();
    assert_eq!((restarts(&g), restarts(&g)), ("1".into(), "1".into()));
    // As `nc -N` does: the request, then shutdown(SHUT_WR); the answer still comes, once
    // slow is up.
    let mut s = UnixStream::connect(run.join("control")).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"start wait=30 slow").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(restarts(&g), "1");
    release(&go);
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("0\nslow: already running\nslow: up after "),
        "{reply:?}"
    );
}
