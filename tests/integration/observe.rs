//! Seeing what services do: the lines going holds (`going log`), following them as they
//! come (`going log -f`), everything `going status` knows as JSON, and what each service
//! costs.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Instant;

use crate::harness::*;

/// `going log -f ARGS…` against `g`, its lines read as they come: (stderr?, line).
struct Follower {
    child: Stopped,
    rx: Receiver<(bool, String)>,
    seen: Vec<(bool, String)>,
}

impl Follower {
    fn start(g: &Going, args: &[&str]) -> Follower {
        let rundir = g.dir.0.join("run");
        let mut child = spawn(
            Command::new(BIN)
                .args(["log", "-f", "-r", path_str(&rundir)])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (is_err, pipe) in [
            (false, Box::new(out) as Box<dyn Read + Send>),
            (true, Box::new(err)),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            });
        }
        Follower {
            child: Stopped(child),
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the line `want` on stdout (`err`: on stderr), or takes it from `seen`,
    /// which keeps what came and was not expected yet: lines of stdout and stderr come
    /// through pipes of their own, in no order between them.
    fn expect(&mut self, err: bool, want: &str) {
        if let Some(at) = self.seen.iter().position(|l| l.0 == err && l.1 == want) {
            self.seen.remove(at);
            return;
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.0 == err && l.1 == want => return,
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "the follower never printed {want:?}; it did:\n{:?}",
                    self.seen
                ),
            }
        }
    }

    /// Its exit code, once it left by itself.
    fn exit(mut self) -> i32 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.child.0.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the follower did not leave");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// A service that says when it starts and when it is told to stop, with its pid.
fn talker(name: &str) -> String {
    format!(
        "cmd=/bin/sh -c 'echo \"{name} $$ up\"; trap \"echo {name} $$ down; exit 0\" TERM; while :; do sleep 1 & wait; done'\n"
    )
}

/// The last line going holds for `name`, if any.
fn last_held(g: &Going, name: &str) -> String {
    cmd(g, "log", &["-n", "1", name]).1
}

#[test]
fn log_shows_the_lines_going_holds_as_many_as_it_is_told() {
    let g = Going::with(Setup {
        files: vec![
            (
                "talk".into(),
                "cmd=/bin/sh -c 'seq 1 40; exec sleep 1000'\n".into(),
            ),
            ("quiet".into(), "cmd=sleep 1000\n".into()),
        ],
        args: vec!["-n".into(), "30".into()],
        ..Setup::default()
    });
    wait_until("talk's 40 lines", || last_held(&g, "talk") == "40\n");
    let (code, out, err) = cmd(&g, "log", &["talk"]);
    let want: String = (11..=40).map(|i| format!("{i}\n")).collect();
    assert_eq!((code, out, err), (0, want, String::new()));
    // Several: each line with its service's name, each service once.
    let (code, out, _) = cmd(&g, "log", &["-n", "2", "talk", "quiet", "talk"]);
    assert_eq!((code, out.as_str()), (0, "talk: 39\ntalk: 40\n"));
    // `going status NAME` shows the same lines.
    let (_, status, _) = cmd(&g, "status", &["talk"]);
    assert!(status.contains("  last output:\n    11\n"), "{status}");
    let (code, out, err) = cmd(&g, "log", &["talk", "nosuch"]);
    assert_eq!(code, 4, "{out}");
    assert_eq!(err, "going: no such service: nosuch\n");
    assert_eq!(cmd(&g, "log", &[]).0, 64);
    let (code, _, err) = run(&["-n", "1001", "-d", "/nonexistent"]);
    assert_eq!(code, 64);
    assert!(
        err.starts_with("going: -n takes a whole number, 0 to 1000, not \"1001\"\n"),
        "{err}"
    );
}

#[test]
fn follow_sees_new_lines_across_restarts_for_two_services_until_their_files_go() {
    let mut g = Going::start(&[]);
    g.write("a", &talker("a"));
    g.write("b", &talker("b"));
    let a = g.started("a");
    g.rewind();
    let b = g.started("b");
    wait_until("a's and b's first lines", || {
        last_held(&g, "a") == format!("a {a} up\n") && last_held(&g, "b") == format!("b {b} up\n")
    });
    let mut both = Follower::start(&g, &["a", "b"]);
    both.expect(false, &format!("a: a {a} up"));
    both.expect(false, &format!("b: b {b} up"));
    // One service alone: no name before its lines.
    let mut one = Follower::start(&g, &["-n", "1", "a"]);
    one.expect(false, &format!("a {a} up"));
    assert_eq!(cmd(&g, "restart", &["-w", "10", "a"]).0, 0);
    let a2 = g.started("a");
    both.expect(false, &format!("a: a {a} down"));
    both.expect(false, &format!("a: a {a2} up"));
    one.expect(false, &format!("a {a} down"));
    one.expect(false, &format!("a {a2} up"));
    assert!(one.seen.is_empty(), "{:?}", one.seen);
    // b's file goes: who follows b and a is told, and follows a still.
    std::fs::remove_file(g.conf().join("b")).unwrap();
    both.expect(false, &format!("b: b {b} down"));
    both.expect(true, "going: b: its file is gone");
    assert_eq!(cmd(&g, "restart", &["a"]).0, 0);
    let a3 = g.started("a");
    both.expect(false, &format!("a: a {a3} up"));
    // a's goes: the streams end, after its last words, and the followers leave with 0.
    std::fs::remove_file(g.conf().join("a")).unwrap();
    both.expect(false, &format!("a: a {a3} down"));
    one.expect(false, &format!("a {a3} down"));
    both.expect(true, "going: a: its file is gone");
    one.expect(true, "going: a: its file is gone");
    assert_eq!((both.exit(), one.exit()), (0, 0));
}

#[test]
fn followers_are_bounded_and_leave_on_ctrl_c_and_when_going_stops() {
    let mut g = Going::start(&[("a", &talker("a"))]);
    let a = g.started("a");
    wait_until("a's first line", || {
        last_held(&g, "a") == format!("a {a} up\n")
    });
    let mut four: Vec<Follower> = (0..4).map(|_| Follower::start(&g, &["a"])).collect();
    for f in &mut four {
        f.expect(false, &format!("a {a} up"));
    }
    let (code, _, err) = cmd(&g, "log", &["-f", "a"]);
    assert_eq!(code, 75);
    assert_eq!(err, "going: 4 followers already: try again later\n");
    // ^C: going lets it go, and another may follow.
    // SAFETY: kill has no memory effects; the follower is not reaped.
    unsafe { libc::kill(four[0].child.pid(), libc::SIGINT) };
    four.remove(0);
    let mut fifth = None;
    wait_until("a place for another follower", || {
        let f = Follower::start(&g, &["a"]);
        match f.rx.recv_timeout(DEADLINE) {
            Ok((false, l)) if l == format!("a {a} up") => {
                fifth = Some(f);
                true
            }
            _ => false,
        }
    });
    four.push(fifth.unwrap());
    assert_eq!(cmd(&g, "status", &[]).0, 0, "status still answers");
    // going stops: the followers see the services' last words, then leave with 0.
    assert_eq!(g.stop(), 0);
    for mut f in four {
        f.expect(false, &format!("a {a} down"));
        f.expect(true, "going: all services stopped, exiting");
        assert_eq!(f.exit(), 0);
    }
}

#[test]
fn a_follower_that_never_reads_does_not_slow_going_and_is_told_what_it_lost() {
    // A flood of output through going and syslog loads the machine: other tests, which
    // wait on conditions that race with their services, would see it.
    let _alone = alone();
    let mut g = Going::start(&[("victim", "cmd=sleep 1000\n")]);
    let go = fifo(&g, "go");
    // Lines of 7 bytes on the wire, on average: more than a socket buffer holds, three
    // times over (212992 bytes by default; what /proc says here).
    let wmem = std::fs::read_to_string("/proc/sys/net/core/wmem_default");
    let wmem: u64 = wmem.map_or(212_992, |w| w.trim().parse().unwrap_or(212_992));
    let n = 100_000.max(wmem / 2);
    g.write(
        "flood",
        &format!(
            "cmd=/bin/sh -c 'read x < {}; seq 1 {n}; exec sleep 1000'\n",
            go.display()
        ),
    );
    g.started("flood");
    // Started before flood, or with it in going's first reload (flood first then).
    g.rewind();
    let victim = g.exec_of("victim", "sleep");
    // A follower that reads the first line of the reply, then nothing until the end.
    let mut stuck = UnixStream::connect(g.dir.0.join("run/control")).unwrap();
    stuck.set_read_timeout(Some(DEADLINE)).unwrap();
    stuck.write_all(b"log follow=1 lines=0 flood\n").unwrap();
    let mut code = [0u8; 2];
    stuck.read_exact(&mut code).unwrap();
    assert_eq!(&code, b"0\n");
    release(&go);
    // Meanwhile going restarts what dies at once, and answers. (Its syslog may be full
    // of the flood: what it says goes to stderr then, so the table tells.)
    // SAFETY: kill has no memory effects; the pid is victim's, checked running above.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    wait_until("victim to run again", || {
        let (code, out, _) = cmd(&g, "status", &["victim"]);
        let pid = (out.lines()).find_map(|l| l.trim().strip_prefix("pid"));
        code == 0 && pid.is_some_and(|p| p.trim() != victim.to_string())
    });
    let (code, out, _) = cmd(&g, "status", &[]);
    assert_eq!(code, 0, "{out}");
    wait_until("the whole flood read by going", || {
        last_held(&g, "flood") == format!("{n}\n")
    });
    // The follower reads again: what was kept, in order, then how many lines it lost.
    let mut lines = BufReader::new(&stuck).lines().map(|l| l.unwrap());
    let (mut got, mut dropped) = (0, None);
    for line in lines.by_ref() {
        if let Some(rest) = line.strip_prefix(" [going: ") {
            let count = rest.strip_suffix(" lines dropped]").expect(&line);
            dropped = Some(count.parse::<u64>().unwrap());
            break;
        }
        got += 1;
        assert_eq!(line, format!(" {got}"), "lines come in order, none missing");
    }
    let dropped = dropped.expect("told how many lines were lost");
    assert!(got > 0 && dropped > 0, "{got} read, {dropped} dropped");
    assert_eq!(got + dropped, n, "each line read or counted as dropped");
}

/// `going status --json ARGS…` through python3's json module (a strict parser): each
/// service's fields as `NAME.KEY=VALUE` lines, VALUE in JSON; the exit code and stderr.
fn json(g: &Going, args: &[&str]) -> (i32, Vec<String>, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = cmd(g, "status", &all);
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    let flat = r#"
import json, sys
d = json.load(sys.stdin)
assert d["schema"] == 1 and isinstance(d["going"], str)
for s in d["services"]:
    for k, v in s.items():
        print(f"{s['name']}.{k}={json.dumps(v, ensure_ascii=False, separators=(',', ':'))}")
"#;
    let mut py = Command::new(python())
        .args(["-c", flat])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(out.as_bytes()).unwrap();
    let parsed = py.wait_with_output().unwrap();
    assert!(parsed.status.success(), "python3 refused: {out}");
    let lines = String::from_utf8(parsed.stdout).unwrap();
    (code, lines.lines().map(String::from).collect(), err)
}

/// The table's rows, name, state, pid and restarts: cells split where two spaces or
/// more are.
fn table(g: &Going) -> Vec<Vec<String>> {
    let (_, out, _) = cmd(g, "status", &[]);
    (out.lines().skip(1))
        .map(|l| {
            let cells = l.split("  ").map(str::trim).filter(|c| !c.is_empty());
            let cells: Vec<String> = cells.map(String::from).collect();
            vec![
                cells[0].clone(),
                cells[1].clone(),
                cells[2].clone(),
                cells[4].clone(),
            ]
        })
        .collect()
}

#[test]
fn status_json_holds_what_the_table_shows() {
    let mut g = Going::start(&[]);
    g.write("up", "cmd=sleep 1000\n");
    g.write("crashy", "cmd=/bin/sh -c 'echo oops; exit 3'\n");
    g.write("down", "cmd=sleep 1000\n");
    g.write("typo", "cmd=sleep 1000\nbogus=1\n");
    // Output with quotes, backslashes, a tab, an escape sequence and bytes not UTF-8.
    g.write(
        "tricky",
        "cmd=/bin/sh -c 'printf \"\\\"q\\\" \\\\\\\\ \\t \\033[2J \\377\\376 \\303\\251\\n\"; exec sleep 1000'\n",
    );
    g.write(
        "ready",
        "cmd=/bin/sh -c 'echo >&3; exec sleep 1000'\nready=fd:3\n",
    );
    let up = g.exec_of("up", "sleep");
    g.rewind();
    g.exec_of("down", "sleep");
    assert_eq!(cmd(&g, "stop", &["-w", "10", "down"]).0, 0);
    g.next_msg("crashy: failed");
    wait_until("tricky's line", || !last_held(&g, "tricky").is_empty());
    wait_until("ready to be ready", || cmd(&g, "status", &["ready"]).0 == 0);
    // The table as it was just before and just after the JSON: crashy may have been
    // started again in between, then they are taken again.
    let (mut rows, mut flat) = (Vec::new(), Vec::new());
    wait_until("a table that holds still around the JSON", || {
        rows = table(&g);
        let (code, lines, err) = json(&g, &[]);
        assert_eq!((code, err.as_str()), (0, ""));
        flat = lines;
        rows == table(&g)
    });
    let has = |line: &str| {
        assert!(
            flat.iter().any(|l| l == line),
            "no {line} in:\n{}",
            flat.join("\n")
        )
    };
    // What the table shows, the JSON says.
    assert_eq!(rows.len(), 6);
    for row in rows {
        let name = &row[0];
        has(&format!("{name}.state=\"{}\"", row[1]));
        let pid = if row[2] == "-" { "null" } else { &row[2] };
        has(&format!("{name}.pid={pid}"));
        has(&format!("{name}.restarts={}", row[3]));
    }
    has(&format!("up.pid={up}"));
    has("up.up=true");
    has("up.command=[\"sleep\",\"1000\"]");
    has("up.ready=null");
    has("ready.state=\"ready\"");
    has("ready.ready=true");
    has("down.state=\"down\"");
    has("down.up=false");
    has("down.usage=null");
    has("crashy.state=\"quarantined\"");
    assert!(flat.iter().any(|l| l.starts_with("crashy.lines=[\"oops\"")));
    has("typo.state=\"invalid file\"");
    let conf = g.conf();
    has(&format!(
        "typo.problems=[\"{}:2: unknown key \\\"bogus\\\"\"]",
        conf.join("typo").display()
    ));
    has(&format!("typo.file=\"{}\"", conf.join("typo").display()));
    // As going(8) says: a control character or a byte that is not UTF-8 is `\xNN`
    // text, escaped again as JSON wants (`\\x1b`); a tab is JSON's `\t`.
    has(r#"tricky.lines=["\"q\" \\ \t \\x1b[2J \\xff\\xfe é"]"#);
    let exits = flat
        .iter()
        .find(|l| l.starts_with("crashy.exits="))
        .unwrap();
    assert!(
        exits.contains("\"how\":\"exited 3\",\"code\":3,\"signal\":null,\"core_dumped\":false"),
        "{exits}"
    );
    // Named, with the code `going status NAME` has; one unknown is said.
    let (code, flat, err) = json(&g, &["up", "nosuch", "up"]);
    assert_eq!(
        (code, err.as_str()),
        (4, "going: no such service: nosuch\n")
    );
    assert_eq!(
        flat.iter()
            .filter(|l| l.ends_with(".state=\"running\""))
            .count(),
        1
    );
    assert_eq!(json(&g, &["down"]).0, 3);
    let (code, out, _) = cmd(&g, "status", &["-j"]);
    let check = Command::new(python())
        .args(["-m", "json.tool"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut p| {
            p.stdin.take().unwrap().write_all(out.as_bytes())?;
            p.wait()
        })
        .unwrap();
    assert!(code == 0 && check.success(), "{out}");
}

#[test]
fn what_services_cost_is_plausible_and_shown_where_asked() {
    // Half a second of a core burnt, 50 MB held: alone, as for a flood.
    let _alone = alone();
    let mut g = Going::start(&[]);
    let py = python();
    g.write(
        "mem",
        &format!("cmd={py} -c \"x = b'x' * (50 << 20); print('held', flush=True); import time; time.sleep(1000)\"\n"),
    );
    g.write(
        "burn",
        &format!("cmd={py} -c \"import time; [0 for _ in iter(lambda: time.process_time() < 0.5, False)]; print('burnt', flush=True); time.sleep(1000)\"\n"),
    );
    g.write("three", "cmd=/bin/sh -c 'sleep 1000 & sleep 1000 & wait'\n");
    g.started("three");
    wait_until("mem to hold 50 MB", || last_held(&g, "mem") == "held\n");
    wait_until("burn to burn 0.5 s", || last_held(&g, "burn") == "burnt\n");
    let (_, flat, _) = json(&g, &[]);
    let field = |key: &str| -> u64 {
        let line = (flat.iter())
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}:\n{}", flat.join("\n")));
        let v: String = line
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == ',')
            .collect();
        v.split(',').next().unwrap().parse().unwrap()
    };
    let usage = |name: &str, what: &str| {
        let line = flat
            .iter()
            .find(|l| l.starts_with(&format!("{name}.usage=")))
            .unwrap();
        let at = line
            .find(&format!("\"{what}\":"))
            .unwrap_or_else(|| panic!("{line}"));
        let digits: String = line[at + what.len() + 3..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u64>().unwrap()
    };
    let mb = 1 << 20;
    assert!(
        (50 * mb..500 * mb).contains(&usage("mem", "memory_bytes")),
        "{flat:?}"
    );
    assert!(usage("mem", "cpu_ms") < 5000, "{flat:?}");
    assert!((400..60_000).contains(&usage("burn", "cpu_ms")), "{flat:?}");
    assert!(usage("burn", "memory_bytes") > 0);
    assert_eq!(usage("three", "processes"), 3);
    assert_eq!(usage("mem", "processes"), 1);
    assert!(field("three.uptime_ms") < 60_000);
    // `going status NAME` says it too.
    let (_, out, _) = cmd(&g, "status", &["mem"]);
    let memory = (out.lines())
        .find_map(|l| l.trim().strip_prefix("memory"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(memory.trim().ends_with("M (rss)"), "{out}");
    assert!(out.contains("  processes  1\n"), "{out}");
    // The table has the columns where the terminal is wide enough, as COLUMNS says.
    let rundir = g.dir.0.join("run");
    let table = |columns: &str| {
        let out = Command::new(BIN)
            .args(["status", "-r", path_str(&rundir)])
            .env("COLUMNS", columns)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let wide = table("200");
    let head: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head[4..8], ["RESTARTS", "PROCS", "MEM", "CPU"], "{wide}");
    let row = wide.lines().find(|l| l.starts_with("three ")).unwrap();
    assert!(row.split_whitespace().nth(5) == Some("3"), "{wide}");
    assert!(!table("60").contains("PROCS"));
}
