//! `kill -USR2 going`: going re-executes the binary installed where it was started from,
//! keeping its pid, its services, their output and its control socket; if that binary
//! cannot be executed, the old one carries on.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

fn copy_of_going(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.0.join("going");
    fs::copy(BIN, &path).unwrap();
    path
}

#[test]
fn usr2_upgrades_in_place_keeping_services_output_and_control() {
    let bin_dir = TempDir::new();
    let binary = copy_of_going(&bin_dir);
    let mut g = Going::with(Setup {
        files: vec![
            (
                "talker".into(),
                "cmd=/bin/sh -c 'while :; do echo tick; sleep 0.1; done'\n".into(),
            ),
            ("quiet".into(), "cmd=sleep 7000\nlog=null\n".into()),
        ],
        binary: Some(binary.clone()),
        ..Setup::default()
    });
    let talker = g.started("talker");
    g.rewind();
    let quiet = g.exec_of("quiet", "sleep");
    let (t_start, q_start) = (start_time(talker), start_time(quiet));
    g.next_output(&format!("talker[{talker}]"), "tick");
    // The binary is replaced as a package manager does it: a new file renamed over the old.
    fs::copy(BIN, bin_dir.0.join("going.new")).unwrap();
    fs::rename(bin_dir.0.join("going.new"), &binary).unwrap();
    assert!(fs::read_link(format!("/proc/{}/exe", g.pid()))
        .unwrap()
        .to_string_lossy()
        .ends_with("(deleted)"));
    let going = g.pid();
    let l = g.upgrade();
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    g.next_msg(&format!("talker[{talker}]: adopted"));
    assert_eq!(
        fs::read_link(format!("/proc/{going}/exe")).unwrap(),
        binary,
        "the new binary runs"
    );
    assert_eq!(g.pid(), going, "same pid: init sees nothing");
    assert_eq!(
        (start_time(talker), start_time(quiet)),
        (t_start, q_start),
        "no service restarted"
    );
    assert_eq!(running("sleep 7000"), [quiet], "no duplicate");
    // Its output still arrives, and the control socket still answers.
    g.next_output(&format!("talker[{talker}]"), "tick");
    let (code, out, _) = run(&["status", "-r", path_str(&g.dir.0.join("run")), "quiet"]);
    assert_eq!(code, 0, "{out}");
    // The services are still going's children: their exit status is known.
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(quiet, libc::SIGKILL) };
    g.next_msg(&format!("quiet[{quiet}]: killed by SIGKILL"));
    g.exec_of("quiet", "sleep");
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_binary_that_cannot_run_leaves_the_old_one_going() {
    let bin_dir = TempDir::new();
    let binary = copy_of_going(&bin_dir);
    let mut g = Going::with(Setup {
        files: vec![("quiet".into(), "cmd=sleep 7001\nlog=null\n".into())],
        binary: Some(binary.clone()),
        ..Setup::default()
    });
    let quiet = g.exec_of("quiet", "sleep");
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o644)).unwrap();
    let l = g.upgrade();
    assert!(
        l.msg.ends_with("Permission denied; carrying on"),
        "{}",
        l.msg
    );
    g.write("other", "cmd=sleep 7002\nlog=null\n");
    g.started("other");
    assert_eq!(running("sleep 7001"), [quiet]);
    assert_eq!(g.stop(), 0);
}

/// Compiles `source` (C) with the machine's cc into `dir`/`name`.
fn cc(dir: &TempDir, name: &str, source: &str, extra: &[&str]) -> std::path::PathBuf {
    let src = dir.0.join(format!("{name}.c"));
    fs::write(&src, source).unwrap();
    let out = dir.0.join(name);
    let status = std::process::Command::new("cc")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .args(extra)
        .status()
        .expect("cc, to build the stand-ins for a broken going");
    assert!(status.success());
    out
}

/// Replaces `binary` as a package manager would: a new file renamed over it.
fn install(from: &std::path::Path, binary: &std::path::Path) {
    let tmp = binary.with_extension("new");
    fs::copy(from, &tmp).unwrap();
    fs::rename(&tmp, binary).unwrap();
}

#[test]
fn a_binary_that_execs_but_cannot_run_leaves_the_old_one_going() {
    let bin_dir = TempDir::new();
    let binary = copy_of_going(&bin_dir);
    let mut g = Going::with(Setup {
        files: vec![("quiet".into(), "cmd=sleep 7003\nlog=null\n".into())],
        binary: Some(binary.clone()),
        ..Setup::default()
    });
    let quiet = g.exec_of("quiet", "sleep");
    let going = g.pid();
    // A script that exits 0, as a botched install might leave.
    let script = bin_dir.0.join("script");
    fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    // A dynamically linked binary whose library is gone: execve succeeds, the loader fails.
    cc(
        &bin_dir,
        "libgone.so",
        "int gone(void) { return 0; }\n",
        &["-shared", "-fPIC"],
    );
    let dynamic = cc(
        &bin_dir,
        "dynamic",
        "int gone(void);\nint main(void) { return gone(); }\n",
        &["-L", path_str(&bin_dir.0), "-lgone"],
    );
    fs::remove_file(bin_dir.0.join("libgone.so")).unwrap();
    for (broken, says) in [
        (&script, "said nothing and exited 0".to_string()),
        (&dynamic, "libgone.so".to_string()),
    ] {
        install(broken, &binary);
        let l = g.upgrade();
        assert!(
            l.msg
                .contains("is no going that can take over: asked with --handover-check")
                && l.msg.contains(&says)
                && l.msg.ends_with("; carrying on"),
            "{}",
            l.msg
        );
        assert_eq!(g.pid(), going);
        assert!(alive(going), "going is no zombie");
        // Still supervising: a new file starts, the old service is the same process.
        let name = format!("other{}", says.len());
        g.write(&name, "cmd=sleep 7004\nlog=null\n");
        g.started(&name);
        assert_eq!(running("sleep 7003"), [quiet]);
    }
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_new_binary_that_dies_after_taking_over_leaves_services_the_next_going_adopts() {
    let bin_dir = TempDir::new();
    let binary = copy_of_going(&bin_dir);
    let mut g = Going::with(Setup {
        files: vec![
            ("a".into(), "cmd=sleep 7005\nlog=null\n".into()),
            ("b".into(), "cmd=sleep 7006\n".into()),
        ],
        binary: Some(binary.clone()),
        ..Setup::default()
    });
    let a = g.exec_of("a", "sleep");
    g.rewind();
    let b = g.exec_of("b", "sleep");
    // It answers the check as a going would, then dies: a crash just after an upgrade.
    let liar = cc(
        &bin_dir,
        "liar",
        r#"#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--handover-check") == 0) {
        puts("going 9.9.9 handover 1 2");
        return 0;
    }
    return 3;
}
"#,
        &[],
    );
    install(&liar, &binary);
    let l = g.upgrade();
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    assert_eq!(g.wait_exit(), 3, "the liar ran in going's place and died");
    // As init would: a going started again adopts both, as the state written at the exec
    // says, and restarts neither.
    g.start_again_with(std::path::Path::new(BIN));
    g.next_msg(&format!("a[{a}]: adopted, running for"));
    g.rewind();
    g.next_msg(&format!("b[{b}]: adopted, running for"));
    assert_eq!(
        (running("sleep 7005"), running("sleep 7006")),
        (vec![a], vec![b])
    );
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_fifo_at_the_binary_path_is_refused_without_blocking() {
    let bin_dir = TempDir::new();
    let binary = copy_of_going(&bin_dir);
    let mut g = Going::with(Setup {
        files: vec![("quiet".into(), "cmd=sleep 7007\nlog=null\n".into())],
        binary: Some(binary.clone()),
        ..Setup::default()
    });
    let quiet = g.exec_of("quiet", "sleep");
    fs::remove_file(&binary).unwrap();
    let c = std::ffi::CString::new(path_str(&binary)).unwrap();
    // SAFETY: mkfifo reads a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o755) }, 0);
    let l = g.upgrade();
    assert!(
        l.msg.ends_with("is not a regular file; carrying on"),
        "{}",
        l.msg
    );
    // Still supervising, and still answering.
    g.write("other", "cmd=sleep 7008\nlog=null\n");
    g.started("other");
    assert_eq!(running("sleep 7007"), [quiet]);
    assert_eq!(cmd(&g, "status", &["quiet"]).0, 0);
    assert_eq!(g.stop(), 0);
}

/// Installs, as the new binary, a stand-in for a going whose start takes a while: built
/// in C, as a shell would change the signal mask it inherits. When asked
/// `--handover-check` (with `check`), or exec'd in going's place (with `start`), it
/// writes its pid to a file of `bin_dir` named after the step (`asked`, `running`) and
/// waits for the test to create `go-on`; then it execs the real going, `real`, with the
/// same arguments.
fn slow_going(bin_dir: &TempDir, real: &std::path::Path, check: bool, start: bool) {
    let source = format!(
        r#"#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void step(const char *name) {{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", "{dir}", name);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *f = fopen(tmp, "w");
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    rename(tmp, path);
    snprintf(path, sizeof path, "%s/go-on", "{dir}");
    while (access(path, F_OK) != 0) usleep(10000);
}}
int main(int argc, char **argv) {{
    int asked = argc > 1 && strcmp(argv[1], "--handover-check") == 0;
    if (asked ? {check} : {start}) step(asked ? "asked" : "running");
    execv("{real}", argv);
    return 127;
}}
"#,
        dir = path_str(&bin_dir.0),
        real = path_str(real),
        check = check as u8,
        start = start as u8,
    );
    let slow = cc(bin_dir, "slow", &source, &[]);
    install(&slow, &bin_dir.0.join("going"));
}

/// The pid a step of [`slow_going`] wrote, once it did.
fn step_pid(bin_dir: &TempDir, step: &str) -> i32 {
    let path = bin_dir.0.join(step);
    wait_until(&format!("the new binary's {step}"), || path.exists());
    fs::read_to_string(&path).unwrap().trim().parse().unwrap()
}

#[test]
fn signals_that_come_while_the_new_binary_starts_wait_for_its_handlers() {
    let bin_dir = TempDir::new();
    let binary = copy_of_going(&bin_dir);
    let real = bin_dir.0.join("real");
    fs::copy(BIN, &real).unwrap();
    let mut g = Going::with(Setup {
        files: vec![("quiet".into(), "cmd=sleep 7009\nlog=null\n".into())],
        binary: Some(binary),
        ..Setup::default()
    });
    let quiet = g.exec_of("quiet", "sleep");
    slow_going(&bin_dir, &real, false, true);
    let l = g.upgrade();
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    // Exec'd, not yet the new going: a SIGHUP or a SIGUSR2 now would kill a process of
    // default dispositions (init would start going again, and duplicate every service).
    assert_eq!(step_pid(&bin_dir, "running"), g.pid());
    g.signal(libc::SIGHUP);
    g.signal(libc::SIGUSR2);
    fs::write(bin_dir.0.join("go-on"), "").unwrap();
    // The new going acts on both once its handlers are in place: it reloads, and it
    // upgrades again (to the real binary, as it was started by that path).
    g.next_msg(&format!("quiet[{quiet}]: adopted"));
    let l = g.next("the second upgrade", |l| {
        l.msg.starts_with("going: upgrading: exec") || l.msg.starts_with("going: unable to upgrade")
    });
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    g.next_msg(&format!("quiet[{quiet}]: adopted"));
    assert!(alive(g.pid()), "going was not killed");
    assert_eq!(running("sleep 7009"), [quiet]);
    assert_eq!(g.stop(), 0);
}

#[test]
fn sigterm_while_the_new_binary_is_asked_stops_going_and_kills_the_check() {
    let bin_dir = TempDir::new();
    let binary = copy_of_going(&bin_dir);
    let real = bin_dir.0.join("real");
    fs::copy(BIN, &real).unwrap();
    let mut g = Going::with(Setup {
        files: vec![(
            "stubborn".into(),
            "cmd=sh -c 'trap \"\" TERM; exec sleep 7010'\nlog=null\nstop_timeout=1\n".into(),
        )],
        binary: Some(binary),
        ..Setup::default()
    });
    let stubborn = g.exec_of("stubborn", "sleep");
    slow_going(&bin_dir, &real, true, false);
    g.signal(libc::SIGUSR2);
    let check = step_pid(&bin_dir, "asked");
    g.signal(libc::SIGTERM);
    // The check is given up at once (killed with its group, so that it outlives nothing),
    // and it may answer no more: going must not exec in the middle of its shutdown,
    // which would lose the SIGTERM.
    g.next_msg("going: not upgrading: stopping");
    wait_until("the check to be killed", || !alive(check));
    fs::write(bin_dir.0.join("go-on"), "").unwrap();
    g.next_msg(&format!("stubborn[{stubborn}]: stopped"));
    assert_eq!(g.wait_exit(), 0);
    assert!(!g
        .lines
        .iter()
        .any(|l| l.msg.starts_with("going: upgrading")));
    assert!(running("sleep 7010").is_empty());
}

#[test]
fn sigterm_while_the_new_binary_starts_stops_every_service() {
    let bin_dir = TempDir::new();
    let binary = copy_of_going(&bin_dir);
    let real = bin_dir.0.join("real");
    fs::copy(BIN, &real).unwrap();
    let mut g = Going::with(Setup {
        files: vec![
            ("one".into(), "cmd=sleep 7011\nlog=null\n".into()),
            ("two".into(), "cmd=sleep 7012\n".into()),
        ],
        binary: Some(binary),
        ..Setup::default()
    });
    g.exec_of("one", "sleep");
    g.rewind();
    g.exec_of("two", "sleep");
    slow_going(&bin_dir, &real, false, true);
    let l = g.upgrade();
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    step_pid(&bin_dir, "running");
    g.signal(libc::SIGTERM);
    fs::write(bin_dir.0.join("go-on"), "").unwrap();
    // The new going takes over what was handed over before it stops: nothing is left.
    g.next_msg("going: stopping 2 services");
    assert_eq!(g.wait_exit(), 0);
    assert!(running("sleep 7011").is_empty() && running("sleep 7012").is_empty());
}

#[test]
fn a_group_being_stopped_is_handed_over_by_an_upgrade() {
    let bin_dir = TempDir::new();
    let exit = bin_dir.0.join("exit");
    let mut g = Going::with(Setup {
        files: vec![("web".into(), crate::adoption::leaky(&exit, 7013, 30))],
        binary: Some(copy_of_going(&bin_dir)),
        ..Setup::default()
    });
    let (leader, left) = crate::adoption::draining(&mut g, &exit, 7013);
    let l = g.upgrade();
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    g.next_msg(&format!(
        "web: adopted what is left of its process group {leader}, being stopped"
    ));
    g.next_msg("reload: 0 started");
    assert!(alive(left), "not killed before its time");
    // Its helper is going's child still: once it is gone, web starts again (here with
    // new settings, read meanwhile).
    g.write("web", "cmd=sleep 7014\nlog=null\n");
    g.next_msg("reload: 0 started, 0 stopped, 1 restarted");
    // SAFETY: kill has no memory effects; `left` is not reaped (going reaps it).
    unsafe { libc::kill(left, libc::SIGKILL) };
    g.exec_of("web", "sleep");
    assert!(running("sleep 7013").is_empty());
    assert_eq!(g.stop(), 0);
}

/// How many sockets the process `pid` holds: one more for each client of its control
/// socket.
fn sockets(pid: i32) -> usize {
    (fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten())
        .filter(|e| {
            fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

#[test]
fn a_command_that_waits_through_an_upgrade_is_told_to_ask_again() {
    let bin_dir = TempDir::new();
    let binary = copy_of_going(&bin_dir);
    let mut g = Going::with(Setup {
        files: vec![("web".into(), "cmd=sleep 7000\nafter=db\n".into())],
        binary: Some(binary.clone()),
        ..Setup::default()
    });
    g.next_msg("web: waiting for db");
    let rundir = g.dir.0.join("run");
    let before = sockets(g.pid());
    let waiter = spawn(
        std::process::Command::new(BIN)
            .args(["start", "-r", path_str(&rundir), "-w", "60", "web"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    // Accepted, and its request sent: it sleeps, waiting for the answer. (Accepted only,
    // it could still be writing when the exec closes its connection.)
    let stat = format!("/proc/{}/stat", waiter.id());
    wait_until("the waiter's request", || {
        let stat = fs::read_to_string(&stat).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        sockets(g.pid()) > before && state == Some('S')
    });
    let l = g.upgrade();
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    let out = waiter.wait_with_output().unwrap();
    let (code, err) = (out.status.code(), String::from_utf8_lossy(&out.stderr));
    assert_eq!(code, Some(75), "{err}");
    assert!(
        err.contains("web: still waiting for db: going is upgrading; ask again"),
        "{err}"
    );
    g.next_msg("web: waiting for db"); // the new binary's word: it took over
    assert_eq!(g.stop(), 0);
}

/// The "Max open files" line of /proc/PID/limits.
fn open_files(pid: &str) -> String {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    (limits.lines().find(|l| l.starts_with("Max open files")))
        .unwrap()
        .to_string()
}

#[test]
fn services_started_after_an_upgrade_get_the_fd_limit_going_was_started_with() {
    let bin_dir = TempDir::new();
    let binary = copy_of_going(&bin_dir);
    let mut g = Going::with(Setup {
        files: vec![("s".into(), "cmd=sleep 7031\n".into())],
        binary: Some(binary),
        ..Setup::default()
    });
    let first = g.exec_of("s", "sleep");
    assert_eq!(open_files(&first.to_string()), open_files("self"));
    let l = g.upgrade();
    assert!(l.msg.starts_with("going: upgrading: exec"), "{}", l.msg);
    g.next_msg(&format!("s[{first}]: adopted"));
    // SAFETY: kill has no memory effects; `first` is the service, a child of going.
    unsafe { libc::kill(first, libc::SIGKILL) };
    g.next_msg(&format!("s[{first}]: killed by SIGKILL"));
    let second = g.exec_of("s", "sleep");
    assert_eq!(open_files(&second.to_string()), open_files("self"));
    assert_eq!(g.stop(), 0);
}
