//! `kill -USR2 going`: going re-executes the binary installed where it was started from,
//! keeping its pid, its services, their output and its control socket; if that binary
//! cannot be executed, the old one carries on.

mod harness;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use harness::*;

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
    g.signal(libc::SIGUSR2);
    g.next_msg("going: upgrading: exec");
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
    g.signal(libc::SIGUSR2);
    let l = g.next_msg("going: unable to upgrade");
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
