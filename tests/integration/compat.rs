//! This going takes over what the previous release started, as an upgrade does: after
//! `kill -9` and a start of the new binary (init's respawn after a package upgrade), and
//! by `kill -USR2` onto the new binary. Nothing is restarted: the settings fingerprints
//! of going 0.1.0 are understood, so are its state file, its down marks and its handover.
//! going 0.1.0 is built here from its source in this repository's history.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::*;

/// The commit that was released as going 0.1.0.
const RELEASE_0_1_0: &str = "7dded192584d7d68e5d7b8c7f1629538c264d73d";

/// going 0.1.0's binary, built once (and kept in target/previous for later runs).
fn previous() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("target/previous-0.1.0");
        let bin = dir.join("target/debug/going");
        if bin.exists() {
            return bin;
        }
        let src = dir.join("src");
        let _ = fs::remove_dir_all(&src);
        fs::create_dir_all(&src).unwrap();
        let archive = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["archive", "--format=tar", RELEASE_0_1_0])
            .output()
            .expect("git, to take going 0.1.0's source from the history");
        assert!(
            archive.status.success(),
            "going 0.1.0's source (commit {RELEASE_0_1_0}) is not in this checkout: {}",
            String::from_utf8_lossy(&archive.stderr)
        );
        let mut tar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&src)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &archive.stdout).unwrap();
        drop(tar.stdin.take());
        assert!(tar.wait().unwrap().success());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let build = |offline: bool| {
            let mut c = Command::new(&cargo);
            c.args(["build", "--locked", "--quiet", "--manifest-path"])
                .arg(src.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(dir.join("target"))
                .env_remove("RUSTFLAGS");
            if offline {
                c.arg("--offline");
            }
            c.status().is_ok_and(|s| s.success())
        };
        // The crates are those of this release (its Cargo.lock): in the cache already.
        assert!(build(true) || build(false), "going 0.1.0 did not build");
        bin
    })
}

/// Two services, one of which sets most keys, and a third that the admin stopped.
fn files(base: u32) -> Vec<(String, String)> {
    [
        ("plain", format!("cmd=sleep {base}\nlog=null\n")),
        (
            "full",
            format!(
                "cmd=/bin/sh -c 'exec sleep {}'\nenv=A=1\nenv=B=two words\ncwd=/tmp\n\
                 umask=027\nnice=1\nlimit_core=0\nstop_signal=INT\nstop_timeout=3\n",
                base + 1
            ),
        ),
        ("down", format!("cmd=sleep {}\nlog=null\n", base + 2)),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

/// going 0.1.0 running `files(base)`, every service exec'd, `down` stopped by its own
/// command; the pids of the other two.
fn old_going(base: u32, binary: PathBuf) -> (Going, i32, i32) {
    let mut g = Going::with(Setup {
        files: files(base),
        binary: Some(binary),
        current: false,
        ..Setup::default()
    });
    let plain = g.exec_of("plain", "sleep");
    g.rewind();
    let full = g.exec_of("full", "sleep");
    g.rewind();
    g.exec_of("down", "sleep");
    let run_dir = g.dir.0.join("run");
    let stop = Command::new(previous())
        .args(["stop", "-r", path_str(&run_dir), "down"])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{stop:?}");
    g.next_msg("down[");
    wait_until("0.1.0's state file with both", || {
        let state = fs::read_to_string(run_dir.join("state")).unwrap_or_default();
        [plain, full]
            .iter()
            .all(|p| state.contains(&format!(" {p} {p} ")))
    });
    (g, plain, full)
}

/// What the new going must have said: both adopted, `down` left down, nothing started.
fn taken_over(g: &mut Going, plain: i32, full: i32) {
    g.next_msg(&format!("plain[{plain}]: adopted, running for"));
    g.rewind();
    g.next_msg(&format!("full[{full}]: adopted, running for"));
    g.rewind();
    g.next_msg("down: down, as the admin left it");
    let reload = g.next_msg("reload: ");
    assert_eq!(
        reload.msg,
        "reload: 0 started, 0 stopped, 0 restarted, 0 invalid",
        "{}",
        g.dump()
    );
}

#[test]
fn a_killed_going_0_1_0_is_taken_over_without_a_restart() {
    let (mut g, plain, full) = old_going(9101, previous().to_owned());
    let starts = (start_time(plain), start_time(full));
    g.kill9();
    g.start_again_with(Path::new(BIN));
    taken_over(&mut g, plain, full);
    assert_eq!((start_time(plain), start_time(full)), starts);
    assert_eq!(running("sleep 9101"), [plain]);
    assert_eq!(running("sleep 9102"), [full]);
    assert!(running("sleep 9103").is_empty(), "down stays down");
    // The state file is this going's now, and still adopts.
    let state = g.dir.0.join("run/state");
    wait_until("a state file of format 2", || {
        fs::read_to_string(&state).is_ok_and(|s| s.starts_with("going-state 2 "))
    });
    g.kill9_restart();
    taken_over(&mut g, plain, full);
    assert_eq!(g.stop(), 0);
}

#[test]
fn usr2_onto_this_going_from_going_0_1_0_restarts_nothing() {
    let bin_dir = TempDir::new();
    let binary = bin_dir.0.join("going");
    fs::copy(previous(), &binary).unwrap();
    let (mut g, plain, full) = old_going(9111, binary.clone());
    let starts = (start_time(plain), start_time(full));
    let going = g.pid();
    // The new binary installed where the old one was started from, as a package would.
    let new = bin_dir.0.join("going.new");
    fs::copy(BIN, &new).unwrap();
    fs::rename(&new, &binary).unwrap();
    // going 0.1.0 execs without asking; the new binary takes over its version 1 handover.
    // A thread of this test process that forked while the copy was open for writing holds
    // it until its exec: 0.1.0 says so and carries on, and is asked again.
    loop {
        g.signal(libc::SIGUSR2);
        g.next_msg("going: upgrading: exec");
        let l = g.next("the new binary or 0.1.0's failure", |l| {
            l.msg.starts_with("going: unable to upgrade") || l.msg.contains(" started on ")
        });
        if !l.msg.contains("Text file busy") {
            break;
        }
    }
    g.next_msg(&format!("plain[{plain}]: adopted, running for"));
    g.rewind();
    g.next_msg(&format!("full[{full}]: adopted, running for"));
    assert_eq!(g.pid(), going, "the same pid: init sees nothing");
    assert_eq!((start_time(plain), start_time(full)), starts);
    assert_eq!(running("sleep 9111"), [plain]);
    assert_eq!(running("sleep 9112"), [full]);
    // Still going's children: their exits are read, and the new one answers commands.
    let (code, out, _) = run(&["status", "-r", path_str(&g.dir.0.join("run")), "full"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(g.stop(), 0);
}

#[test]
fn this_client_asks_going_0_1_0_only_what_it_understands() {
    let (g, _, _) = old_going(9121, previous().to_owned());
    let rundir = g.dir.0.join("run");
    let client = |args: &[&str], columns: &str| {
        let out = Command::new(BIN)
            .arg(args[0])
            .args(["-r", path_str(&rundir)])
            .args(&args[1..])
            .env("COLUMNS", columns)
            .output()
            .unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (out.status.code(), text(out.stdout), text(out.stderr))
    };
    // The table on a wide terminal asks for the cost columns (`width=`), which 0.1.0 takes
    // for a name: asked again without, it shows its table.
    let (code, out, err) = client(&["status"], "200");
    assert_eq!((code, err.as_str()), (Some(0), ""), "{out}");
    assert!(
        out.starts_with("NAME ") && out.contains("\nplain "),
        "{out}"
    );
    // What 0.1.0 has no answer for is said so, not taken for a usage error or a name.
    let older = format!(
        "going: the going at {} is older than this command and does not know it: upgrade it (kill -USR2)\n",
        rundir.join("control").display()
    );
    for args in [
        &["log", "plain"][..],
        &["status", "--json"],
        &["log", "-f", "full"],
    ] {
        let (code, out, err) = client(args, "80");
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (Some(69), "", older.as_str()),
            "{args:?}"
        );
    }
}
