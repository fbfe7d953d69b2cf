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
