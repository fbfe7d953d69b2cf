//! What the control socket's requests do: `status`, `log`, `start`, `stop`, `restart`
//! and `signal` on the service table, and the text of the replies (status.rs writes
//! what `status` shows). `reload` is left to the supervisor, which owns the directory
//! watch, and so is the stream of `log -f`.
//!
//! A request is a command, then its options as `key=value` words (no service name has a
//! `=`), then names. A reply is the exit code on the first line, then the text; `!`
//! starts a line for stderr, and `\x02` + colour letter … `\x03` marks a state for the
//! client to colour or strip. In a reply to `log`, every other line starts with a space
//! (a line of output follows it) and a stream of `log follow=1` ends with a `.` line
//! (follow.rs).

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::exit::{EX_USAGE, FAILED, NOT_RUNNING, OK, UNKNOWN};
use crate::log::Age;
use crate::service::{Admin, Effects, Progress, Refusal, Summary, Table};
use crate::{status, sys};

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
    /// `log -f`: the reply is a stream, held lines then new ones, until the client
    /// leaves or the services' files go.
    Follow(Follow),
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

/// `log -f`: which services, each once, and how many of their held lines first.
pub struct Follow {
    pub names: Vec<String>,
    pub lines: usize,
}

impl Wait {
    /// The reply, once every service got there or failed, or once the time is up; None
    /// while it waits. Codes: 0 all got there; 1 one failed (or is not known); 75 one did
    /// not get there in time.
    pub fn answer(&self, table: &Table, now: Instant) -> Option<String> {
        self.answer_or_cut(table, now, None)
    }

    /// The answer now, whatever is still to come: going is about to replace itself
    /// (`why`), and the connection does not survive it.
    pub fn cut(&self, table: &Table, now: Instant, why: &str) -> String {
        (self.answer_or_cut(table, now, Some(why))).expect("an answer for each service")
    }

    fn answer_or_cut(&self, table: &Table, now: Instant, cut: Option<&str>) -> Option<String> {
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
                // Its file removed, or going stopping: it will not get up.
                None => {
                    code = code.max(FAILED);
                    let _ = writeln!(text, "!{name}: failed: gone");
                }
                Some(Progress::Failed(why)) if self.goal == Goal::Up => {
                    code = code.max(FAILED);
                    let _ = writeln!(text, "!{name}: failed: {why}");
                }
                _ if now >= self.until || cut.is_some() => {
                    code = code.max(crate::exit::EX_TEMPFAIL);
                    let state = table.view(name, now).map_or_else(String::new, |v| v.state);
                    match cut {
                        Some(why) => {
                            let _ = writeln!(text, "!{name}: still {state}: {why}");
                        }
                        None => {
                            let _ = writeln!(text, "!{name}: still {state} after {secs}s");
                        }
                    }
                }
                _ => return None,
            }
        }
        Some(format!("{code}\n{text}"))
    }
}

/// The options of a request, from its `key=value` words.
#[derive(Default)]
struct Options {
    /// `wait=SECONDS` (start, stop, restart).
    wait: Option<Duration>,
    /// `format=json` (status).
    json: bool,
    /// `width=COLUMNS` of the client's terminal (status): room for the cost columns?
    width: Option<usize>,
    /// `lines=N` (log): how many of the held lines; all of them unless said.
    lines: Option<usize>,
    /// `follow=1` (log).
    follow: bool,
}

/// Takes the option words after the command out of `words`, checked.
fn options(words: &mut Vec<&str>) -> Result<Options, String> {
    let command = words.first().copied().unwrap_or("");
    let mut o = Options::default();
    while let Some((key, value)) = words.get(1).and_then(|w| w.split_once('=')) {
        let number = |max: usize| value.parse::<usize>().ok().filter(|n| *n <= max);
        let takes = match (command, key) {
            ("start" | "stop" | "restart", "wait") => {
                let secs = number(86400).filter(|s| *s >= 1);
                let secs = secs.ok_or("wait needs whole seconds, 1 to 86400")?;
                o.wait = Some(Duration::from_secs(secs as u64));
                true
            }
            (_, "wait") => return Err("only start, stop and restart wait".into()),
            ("status", "format") => {
                o.json = value == "json";
                o.json
            }
            ("status", "width") => {
                o.width = number(100_000);
                o.width.is_some()
            }
            ("log", "lines") => {
                o.lines = number(usize::MAX);
                o.lines.is_some()
            }
            ("log", "follow") => {
                o.follow = value == "1";
                o.follow
            }
            _ => false,
        };
        if !takes {
            return Err(format!("{command} takes no option {}", words[1]));
        }
        words.remove(1);
    }
    Ok(o)
}

pub fn handle(
    line: &str,
    table: &mut Table,
    fx: &mut impl Effects,
    now: Instant,
    confdir: &Path,
) -> Answer {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let opts = match options(&mut words) {
        Ok(o) => o,
        Err(e) => return Answer::Now(format!("{EX_USAGE}\n!going: {e}\n")),
    };
    let act = |what| move |t: &mut Table, name: &str, fx: &mut _| t.admin(name, what, fx, now);
    let goal = match words.first() {
        Some(&"start" | &"restart") => Goal::Up,
        _ => Goal::Stopped,
    };
    let reply = match words.as_slice() {
        ["status", names @ ..] if opts.json => {
            status::json(table, names, now, confdir, &mut |n| fx.cgroup(n))
        }
        ["status"] => status::overview(table, now, opts.width, &mut |n| fx.cgroup(n)),
        ["status", names @ ..] => {
            status::details(table, names, now, confdir, &mut |n| fx.cgroup(n))
        }
        ["log", names @ ..] if !names.is_empty() => {
            let lines = opts.lines.unwrap_or(usize::MAX);
            return log(table, names, lines, opts.follow, now);
        }
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
    let Some(secs) = opts.wait else {
        return Answer::Now(reply);
    };
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

/// `log NAME…`: the last `lines` held lines of each, each line after a space (and the
/// service's name, when several are asked for). With `follow`, a stream of what comes
/// next, unless a name is unknown: then nothing is followed.
fn log(table: &Table, names: &[&str], lines: usize, follow: bool, now: Instant) -> Answer {
    let unique = unique(names);
    let unknown: Vec<&str> = (unique.iter().copied())
        .filter(|n| table.view(n, now).is_none())
        .collect();
    let mut text = String::new();
    for name in &unknown {
        let _ = writeln!(text, "!going: no such service: {name}");
    }
    if follow && unknown.is_empty() {
        let names = unique.iter().map(|n| n.to_string()).collect();
        return Answer::Follow(Follow { names, lines });
    }
    if follow {
        return Answer::Now(format!("{UNKNOWN}\n{text}"));
    }
    let mut out = String::new();
    for (name, line) in held(table, &unique, lines, now) {
        let _ = writeln!(out, " {}{line}", Prefix(name));
    }
    let code = if unknown.is_empty() { OK } else { UNKNOWN };
    Answer::Now(format!("{code}\n{out}{text}"))
}

/// `names` each once, in the order first named: a request is bounded, so is its reply.
pub fn unique<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut unique: Vec<&str> = Vec::with_capacity(names.len());
    for n in names {
        if !unique.contains(n) {
            unique.push(n);
        }
    }
    unique
}

/// The last `lines` held lines of each of the services `names`, service by service, with
/// the name to show before each (None for a single service).
pub fn held<'a>(
    table: &'a Table,
    names: &'a [&'a str],
    lines: usize,
    now: Instant,
) -> impl Iterator<Item = (Option<&'a str>, &'a str)> + 'a {
    let several = names.len() > 1;
    (names.iter()).flat_map(move |name| {
        let view = table.view(name, now);
        let held = view.as_ref().map(|v| v.lines());
        let skip = held.as_ref().map_or(0, |h| h.len().saturating_sub(lines));
        let name = several.then(|| view.as_ref().map_or("", |v| v.name));
        held.into_iter()
            .flatten()
            .skip(skip)
            .map(move |l| (name, l))
    })
}

/// `web: ` before a line of several services' output; nothing for a single service's.
pub struct Prefix<'a>(pub Option<&'a str>);

impl std::fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.0 {
            Some(name) => write!(f, "{name}: "),
            None => Ok(()),
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
        fn signal(&mut self, _: &str, pgid: sys::Pid, _: crate::service::To, sig: libc::c_int) {
            self.0.push((pgid, sig));
        }
        fn kill(&mut self, _: &str, pgid: sys::Pid, _: bool) {
            self.0.push((pgid, libc::SIGKILL));
        }
        fn group_alive(&mut self, _: &str, _: sys::Pid) -> bool {
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
            Answer::Follow(f) => format!("follows {} after {}", f.names.join(" "), f.lines),
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
    fn options_go_with_their_commands() {
        let (mut fx, now) = (Null::default(), Instant::now());
        let mut t = table(&mut fx, now);
        let mut r = |line: &str, t: &mut Table| reply(line, t, &mut fx, now);
        let usage = |e: &str| format!("64\n!going: {e}\n");
        assert_eq!(
            r("start wait=0 web", &mut t),
            usage("wait needs whole seconds, 1 to 86400")
        );
        assert_eq!(
            r("status wait=5", &mut t),
            usage("only start, stop and restart wait")
        );
        assert_eq!(
            r("status format=xml", &mut t),
            usage("status takes no option format=xml")
        );
        assert_eq!(
            r("log lines=x web", &mut t),
            usage("log takes no option lines=x")
        );
        assert_eq!(
            r("stop width=80 web", &mut t),
            usage("stop takes no option width=80")
        );
        let json = r("status format=json web nosuch", &mut t);
        assert!(json.starts_with("4\n{\"schema\":1,"), "{json}");
        assert!(
            json.ends_with("}\n!going: no such service: nosuch\n"),
            "{json}"
        );
        // Room for the cost columns, or not.
        assert!(r("status width=200", &mut t).contains("  PROCS  MEM  CPU  LAST EXIT\n"));
        assert!(!r("status width=60", &mut t).contains("PROCS"));
    }

    #[test]
    fn log_gives_the_held_lines_and_follow_the_names_to_follow() {
        let (mut fx, now) = (Null::default(), Instant::now());
        let mut t = table(&mut fx, now);
        for l in ["one", "two", "!three"] {
            t.output(4242, l);
        }
        let mut r = |line: &str, t: &mut Table| reply(line, t, &mut fx, now);
        assert_eq!(r("log web", &mut t), "0\n one\n two\n !three\n");
        assert_eq!(r("log lines=1 web", &mut t), "0\n !three\n");
        assert_eq!(r("log lines=0 web", &mut t), "0\n");
        assert_eq!(
            r("log lines=2 web bad web nosuch", &mut t),
            "4\n web: two\n web: !three\n!going: no such service: nosuch\n"
        );
        assert_eq!(
            r("log web follow=1", &mut t),
            "4\n web: one\n web: two\n web: !three\n!going: no such service: follow=1\n",
            "options come before the names"
        );
        assert_eq!(
            r("log follow=1 web bad web", &mut t),
            "follows web bad after 18446744073709551615"
        );
        assert_eq!(r("log follow=1 lines=5 web", &mut t), "follows web after 5");
        assert_eq!(
            r("log follow=1 web nosuch", &mut t),
            "4\n!going: no such service: nosuch\n",
            "all or nothing is followed"
        );
        assert_eq!(
            r("log", &mut t),
            "64\n!going: not a request going understands\n"
        );
    }

    #[test]
    fn any_request_gets_a_reply_with_an_exit_code() {
        let (mut fx, now) = (Null::default(), Instant::now());
        let mut table = table(&mut fx, now);
        let words = b"status start stop restart signal reload log HUP KILL 9 web nosuch \
            wait=5 width=80 format=json lines=3 follow=1 \t\xff\x00";
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
}
