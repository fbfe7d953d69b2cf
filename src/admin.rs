//! What the control socket's requests do: `status`, `start`, `stop`, `restart` and
//! `signal` on the service table, and the text of the replies. `reload` is left to the
//! supervisor, which owns the directory watch.
//!
//! A reply is the exit code on the first line, then the text; `!` starts a line for stderr,
//! and `\x02` + colour letter … `\x03` marks a state for the client to colour or strip.

use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

use crate::exit::{EX_USAGE, FAILED, NOT_RUNNING, OK, UNKNOWN};
use crate::log::Age;
use crate::output::escape;
use crate::service::{Admin, Effects, Progress, Refusal, Summary, Table, View};
use crate::sys;

/// What becomes of a request.
pub enum Answer {
    /// The reply, ready.
    Now(String),
    /// A reload, which the supervisor does (it owns the directory watch); the reply is
    /// its result ([`reload_reply`]).
    AfterReload,
    /// A command that waits (`-w`): the reply once the services got where they were sent,
    /// or the time is up ([`Wait::answer`]).
    Wait(Wait),
}

/// Where a command that waits sends its services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    Up,
    Stopped,
}

/// A command that waits: what it did already, which services, to where, until when.
pub struct Wait {
    /// The lines of what was done (`web: started`), and their code.
    pub done: String,
    pub code: u8,
    pub names: Vec<String>,
    pub goal: Goal,
    pub since: Instant,
    pub until: Instant,
}

impl Wait {
    /// The reply, once every service got there or failed, or once the time is up; None
    /// while it waits. Codes: 0 all got there; 1 one failed (or is not known); 75 one did
    /// not get there in time.
    pub fn answer(&self, table: &Table, now: Instant) -> Option<String> {
        let (mut text, mut code) = (self.done.clone(), self.code);
        for name in &self.names {
            let p = table.progress(name);
            let reached = match self.goal {
                Goal::Up => p == Some(Progress::Up),
                Goal::Stopped => table.stopped(name),
            };
            let secs = self.until.saturating_duration_since(self.since).as_secs();
            match p {
                _ if reached => {
                    let word = match self.goal {
                        Goal::Up => "up",
                        Goal::Stopped => "stopped",
                    };
                    let took = Age(now.saturating_duration_since(self.since));
                    let _ = writeln!(text, "{name}: {word} after {took}");
                }
                None => {}
                Some(Progress::Failed(why)) if self.goal == Goal::Up => {
                    code = code.max(FAILED);
                    let _ = writeln!(text, "!{name}: failed: {why}");
                }
                _ if now >= self.until => {
                    code = code.max(crate::exit::EX_TEMPFAIL);
                    let state = table.view(name, now).map_or_else(String::new, |v| v.state);
                    let _ = writeln!(text, "!{name}: still {state} after {secs}s");
                }
                _ => return None,
            }
        }
        Some(format!("{code}\n{text}"))
    }
}

pub fn handle(
    line: &str,
    table: &mut Table,
    fx: &mut impl Effects,
    now: Instant,
    confdir: &Path,
) -> Answer {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    // `wait=SECONDS` after the command: no service name has a `=`.
    let wait = match words.get(1).and_then(|w| w.strip_prefix("wait=")) {
        Some(secs) => match secs.parse::<u64>().ok().filter(|s| (1..=86400).contains(s)) {
            Some(secs) => Some(std::time::Duration::from_secs(secs)),
            None => {
                return Answer::Now(format!(
                    "{EX_USAGE}\n!going: wait needs whole seconds, 1 to 86400\n"
                ))
            }
        },
        None => None,
    };
    if wait.is_some() {
        words.remove(1);
    }
    let act = |what| move |t: &mut Table, name: &str, fx: &mut _| t.admin(name, what, fx, now);
    let goal = match words.first() {
        Some(&"start" | &"restart") => Goal::Up,
        _ => Goal::Stopped,
    };
    let reply = match words.as_slice() {
        ["status", names @ ..] => status(table, names, now, confdir),
        ["reload"] => return Answer::AfterReload,
        ["start", names @ ..] if !names.is_empty() => each(table, names, fx, act(Admin::Start)),
        ["stop", names @ ..] if !names.is_empty() => each(table, names, fx, act(Admin::Stop)),
        ["restart", names @ ..] if !names.is_empty() => each(table, names, fx, act(Admin::Restart)),
        ["signal", sig, names @ ..] if !names.is_empty() => match sys::signal_number(sig) {
            Some(sig) => each(table, names, fx, |t, name, fx| t.signal(name, sig, fx)),
            None => format!("{EX_USAGE}\n!going: unknown signal {sig}\n"),
        },
        _ => format!("{EX_USAGE}\n!going: not a request going understands\n"),
    };
    let waits = matches!(words.first(), Some(&"start" | &"stop" | &"restart"));
    match wait.filter(|_| waits) {
        None if wait.is_some() => Answer::Now(format!(
            "{EX_USAGE}\n!going: only start, stop and restart wait\n"
        )),
        None => Answer::Now(reply),
        Some(secs) => {
            let (code, done) = reply.split_once('\n').unwrap_or((&reply, ""));
            let code = code.parse().unwrap_or(FAILED);
            let mut names: Vec<String> = words[1..].iter().map(|n| n.to_string()).collect();
            names.dedup();
            // Those it could do nothing for (unknown) are said already.
            names.retain(|n| table.progress(n).is_some());
            Answer::Wait(Wait {
                done: done.to_string(),
                code,
                names,
                goal,
                since: now,
                until: now + secs,
            })
        }
    }
}

/// The reply to `reload`: its summary and every problem of every invalid file.
pub fn reload_reply(result: Result<(Summary, Vec<String>), String>) -> String {
    match result {
        Ok((sum, problems)) => {
            let code = if sum.invalid > 0 { FAILED } else { OK };
            let mut out = format!("{code}\nreload: {sum}\n");
            for p in problems {
                let _ = writeln!(out, "!{p}");
            }
            out
        }
        Err(e) => format!("{FAILED}\n!going: {e}\n"),
    }
}

/// Does `what` to each named service: a line each, and the worst code.
fn each<F: Effects>(
    table: &mut Table,
    names: &[&str],
    fx: &mut F,
    what: impl Fn(&mut Table, &str, &mut F) -> Result<String, Refusal>,
) -> String {
    let mut code = OK;
    let mut text = String::new();
    for name in names {
        match what(table, name, fx) {
            Ok(msg) => {
                let _ = writeln!(text, "{msg}");
            }
            Err(Refusal::NotRunning) => {
                code = code.max(NOT_RUNNING);
                let _ = writeln!(text, "!{name}: not running");
            }
            Err(Refusal::Unknown) => {
                code = code.max(UNKNOWN);
                let _ = writeln!(text, "!going: no such service: {name}");
            }
        }
    }
    format!("{code}\n{text}")
}

fn status(table: &Table, names: &[&str], now: Instant, confdir: &Path) -> String {
    if names.is_empty() {
        return overview(|| table.views(now));
    }
    let mut code = OK;
    let mut text = String::new();
    let mut asked = std::collections::BTreeSet::new();
    // Each once, however often it is named: a request is bounded, so is its reply.
    for name in names.iter().filter(|n| asked.insert(**n)) {
        match table.view(name, now) {
            Some(v) => {
                if !v.is_up() {
                    code = code.max(NOT_RUNNING);
                }
                details(&mut text, &v, confdir);
            }
            None => {
                code = code.max(UNKNOWN);
                let _ = writeln!(text, "!going: no such service: {name}");
            }
        }
    }
    format!("{code}\n{text}")
}

fn state(v: &View) -> String {
    format!("\x02{}{}\x03", v.class, v.state)
}

/// The table of `going status`: name, state, pid, uptime, restarts, last exit. Two passes
/// over the services, widths then text, so that no copy of the table is ever held.
fn overview<'a, I: Iterator<Item = View<'a>>>(views: impl Fn() -> I) -> String {
    let dash = || "-".to_string();
    let cells = |v: &View| {
        [
            v.name.to_string(),
            v.state.to_string(),
            v.pid.map_or_else(dash, |p| p.to_string()),
            v.up.map_or_else(dash, |u| Age(u).to_string()),
            v.restarts.to_string(),
            v.exits().next().map_or_else(dash, |e| escape(e.as_bytes())),
        ]
    };
    let head = ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST EXIT"].map(String::from);
    let mut width = head.clone().map(|h| h.len());
    let mut rows = 1;
    for v in views() {
        rows += 1;
        for (w, cell) in width.iter_mut().zip(cells(&v)) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::with_capacity(rows * (width.iter().sum::<usize>() + 20));
    out.push_str(&format!("{OK}\n"));
    let mut line = |cells: [String; 6], colour: Option<char>| {
        for (i, cell) in cells.iter().enumerate() {
            let pad = width[i] - cell.chars().count();
            match (i, colour) {
                (1, Some(c)) => {
                    let _ = write!(out, "\x02{c}{cell}\x03{:pad$}  ", "");
                }
                (5, _) => out.push_str(cell),
                _ => {
                    let _ = write!(out, "{cell}{:pad$}  ", "");
                }
            }
        }
        out.push('\n');
    };
    line(head, None);
    for v in views() {
        line(cells(&v), Some(v.class));
    }
    out
}

/// `going status NAME`: everything going knows of one service.
fn details(out: &mut String, v: &View, confdir: &Path) {
    let _ = writeln!(out, "{}: {}", v.name, state(v));
    let mut field = |k: &str, val: String| {
        let _ = writeln!(out, "  {k:<11}{val}");
    };
    if let Some(pid) = v.pid {
        field("pid", pid.to_string());
    }
    if let Some(up) = v.up {
        field("uptime", Age(up).to_string());
    }
    if let Some(next) = v.next_start {
        field("next start", format!("in {}", Age(next)));
    }
    if let Some(status) = v.status {
        field("status", status.to_string());
    }
    if !v.cmd.is_empty() {
        field(
            "command",
            v.cmd.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
        );
    }
    field("file", confdir.join(v.name).display().to_string());
    field("restarts", v.restarts.to_string());
    if !v.problems.is_empty() {
        let _ = writeln!(out, "  problems in the file:");
        for p in v.problems {
            let _ = writeln!(out, "    {p}");
        }
    }
    let mut exits = v.exits().peekable();
    if exits.peek().is_some() {
        let _ = writeln!(out, "  last exits, newest first:");
        for e in exits {
            let _ = writeln!(out, "    {}", escape(e.as_bytes()));
        }
    }
    let mut lines = v.lines().peekable();
    if lines.peek().is_some() {
        let _ = writeln!(out, "  last output:");
        for l in lines {
            let _ = writeln!(out, "    {l}");
        }
    }
}

/// A word of a command as it could be written back in `cmd=`: quoted when it has to be,
/// and its control characters escaped.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", escape(word.as_bytes()).replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::log::Level;
    use crate::spawn::SpawnError;
    use std::fmt;

    /// Effects that start pid 4242 and remember the signals sent.
    #[derive(Default)]
    struct Null(Vec<(sys::Pid, libc::c_int)>);

    impl Effects for Null {
        fn spawn(
            &mut self,
            _: &str,
            _: &Settings,
            _: crate::service::Launch,
        ) -> Result<sys::Pid, SpawnError> {
            Ok(4242)
        }
        fn mark_down(&mut self, _: &str, _: Option<u64>) {}
        fn signal(&mut self, pgid: sys::Pid, _: bool, sig: libc::c_int) {
            self.0.push((pgid, sig));
        }
        fn group_alive(&mut self, _: sys::Pid) -> bool {
            false
        }
        fn gone(&mut self, _: sys::Pid) -> bool {
            false
        }
        fn log(&mut self, _: Level, _: fmt::Arguments) {}
    }

    fn table(fx: &mut Null, now: Instant) -> Table {
        let mut table = Table::default();
        let scan = [("web", &b"cmd=/x"[..]), ("bad", b"cmd=/x\nbogus=1")]
            .map(|(n, t)| (n.to_string(), crate::config::parse(Path::new(n), t)))
            .into();
        table.reconcile(scan, &[], fx, now);
        table
    }

    fn reply(line: &str, t: &mut Table, fx: &mut Null, now: Instant) -> String {
        match handle(line, t, fx, now, Path::new("/d")) {
            Answer::Now(reply) => reply,
            Answer::AfterReload => "reload".into(),
            Answer::Wait(w) => w.answer(t, now).unwrap_or_else(|| "waits".into()),
        }
    }

    #[test]
    fn requests_do_what_they_say_and_answer_with_a_code() {
        let (mut fx, now) = (Null::default(), Instant::now());
        let mut t = table(&mut fx, now);
        let mut r = |line: &str, t: &mut Table| reply(line, t, &mut fx, now);
        assert_eq!(r("reload", &mut t), "reload");
        assert_eq!(
            r("signal HUP web", &mut t),
            "0\nweb: sent SIGHUP to process group 4242\n"
        );
        assert_eq!(
            r("signal BOGUS web", &mut t),
            "64\n!going: unknown signal BOGUS\n"
        );
        assert_eq!(
            r("start web nosuch", &mut t),
            "4\nweb: already running\n!going: no such service: nosuch\n"
        );
        assert_eq!(r("stop web", &mut t), "0\nweb: stopping\n");
        assert_eq!(r("signal USR1 web", &mut t), "3\n!web: not running\n");
        assert_eq!(r("start web", &mut t), "0\nweb: starts once stopped\n");
        assert_eq!(
            r("stop", &mut t),
            "64\n!going: not a request going understands\n"
        );
        let status = r("status web web bad", &mut t);
        assert!(
            status.starts_with("3\nweb: \x02ystopping\x03\n"),
            "{status}"
        );
        assert_eq!(
            status.matches("web: ").count(),
            1,
            "asked twice, told once: {status}"
        );
        assert!(status.contains("bad: \x02rinvalid file\x03\n"), "{status}");
        assert!(
            status.contains("    bad:2: unknown key \"bogus\""),
            "{status}"
        );
        let table = r("status", &mut t);
        assert!(table.starts_with("0\nNAME"), "{table}");
        assert_eq!(
            fx.0,
            [
                (4242, libc::SIGHUP),
                (4242, libc::SIGTERM),
                (4242, libc::SIGCONT)
            ]
        );
    }

    #[test]
    fn any_request_gets_a_reply_with_an_exit_code() {
        let (mut fx, now) = (Null::default(), Instant::now());
        let mut table = table(&mut fx, now);
        let words = b"status start stop restart signal reload HUP KILL 9 web nosuch \t\xff\x00";
        let mut seed = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let bytes = crate::config::tests::random_bytes(&mut seed, words, 60);
            let line = String::from_utf8_lossy(&bytes);
            let reply = reply(&line, &mut table, &mut fx, now);
            let code = reply.lines().next().unwrap_or("");
            assert!(
                reply == "reload" || code.parse::<u8>().is_ok(),
                "{line:?} got {reply:?}"
            );
        }
    }

    #[test]
    fn commands_are_shown_as_they_could_be_written() {
        assert_eq!(super::quote("/usr/sbin/nginx"), "/usr/sbin/nginx");
        assert_eq!(super::quote("daemon off;"), "'daemon off;'");
        assert_eq!(super::quote("it's"), r"'it'\''s'");
        assert_eq!(super::quote(""), "''");
        assert_eq!(super::quote("\x1b]0;x\x07"), r"'\x1b]0;x\x07'");
    }
}
