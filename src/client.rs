//! The commands that talk to a running going: `status`, `log`, `start`, `stop`,
//! `restart`, `signal` and `reload`. One request over RUNDIR/control, the reply printed;
//! states are coloured only when stdout is a terminal and NO_COLOR is not set. `log -f`
//! prints its stream as it comes, until going ends it or the user does (Ctrl-C).
//!
//! Invariant: only a going run by root or by the caller's own user is believed. A socket
//! someone else put in RUNDIR could print anything and exit 0: its server's credentials
//! (SO_PEERCRED) are checked before the request is sent.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::exit::{EX_CONFIG, EX_NOPERM, EX_UNAVAILABLE, FAILED, OK};
use crate::log::Errno;
use crate::sys;

/// Sends `request` (one line of words) to the going on `rundir` and prints its reply;
/// `wait`: the seconds going may take to answer a command that waits.
pub fn run(rundir: &Path, request: &str, wait: Option<u64>) -> ExitCode {
    let reply = match exchange(rundir, request, wait) {
        // A going older than the `width=` of `status` takes it for a name: asked again
        // without, it shows its table.
        Ok(r) if r.starts_with("4\n!going: no such service: width=") => {
            let plain: Vec<&str> = (request.split(' '))
                .filter(|w| !w.starts_with("width="))
                .collect();
            exchange(rundir, &plain.join(" "), wait)
        }
        reply => reply,
    };
    match reply {
        Ok(r) if from_older_going(&r, request) => older(rundir),
        Ok(r) => print(&r),
        Err(code) => code,
    }
}

/// Whether `reply` is that of a going older than `request`: it did not understand it, or
/// took one of its options for a service's name.
fn from_older_going(reply: &str, request: &str) -> bool {
    // Lines compared whole: a substring search would bring its own code (1 kB).
    let unknown = |w: &str| {
        reply
            .lines()
            .any(|l| l.strip_prefix("!going: no such service: ") == Some(w))
    };
    reply == NOT_UNDERSTOOD || request.split(' ').any(|w| w.contains('=') && unknown(w))
}

/// What a going older than the request answers it with.
const NOT_UNDERSTOOD: &str = "64\n!going: not a request going understands\n";

/// Says that the going on `rundir` is older than this command.
fn older(rundir: &Path) -> ExitCode {
    let path = rundir.join("control");
    eprintln!(
        "going: the going at {} is older than this command and does not know it: upgrade it (kill -USR2)",
        path.display()
    );
    ExitCode::from(EX_UNAVAILABLE)
}

/// The width of the terminal the table is for: `COLUMNS` if set, as in ps(1), else that
/// of standard output if it is a terminal; None otherwise.
pub fn columns() -> Option<usize> {
    let env = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
    env.filter(|c| *c > 0)
        .or_else(|| sys::terminal_columns(std::io::stdout().as_raw_fd()))
}

/// Connects to the going on `rundir` and sends it `request`; `read`: how long its answer
/// may take (None: for ever). Err: the code to exit with, once the reason is said.
fn send(rundir: &Path, request: &str, read: Option<Duration>) -> Result<UnixStream, ExitCode> {
    let path = rundir.join("control");
    let s = connect(&path)?;
    let sent = (|| {
        s.set_read_timeout(read)?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        (&s).write_all(format!("{request}\n").as_bytes())
    })();
    sent.map(|()| s).map_err(|e| unreachable(rundir, e))
}

fn unreachable(rundir: &Path, e: std::io::Error) -> ExitCode {
    let path = rundir.join("control");
    eprintln!(
        "going: unable to reach going at {}: {}",
        path.display(),
        Errno(&e)
    );
    ExitCode::from(EX_UNAVAILABLE)
}

fn no_reply(rundir: &Path) -> ExitCode {
    eprintln!(
        "going: no reply from going at {}",
        rundir.join("control").display()
    );
    ExitCode::from(EX_UNAVAILABLE)
}

/// One request and its reply, whole; Err: the code to exit with, once the reason is said.
fn exchange(rundir: &Path, request: &str, wait: Option<u64>) -> Result<String, ExitCode> {
    // Generous: a reload of thousands of files takes a while; going itself never waits.
    let wait = Duration::from_secs(wait.map_or(60, |w| w + 60));
    let mut s = send(rundir, request, Some(wait))?;
    let mut reply = String::new();
    match s.read_to_string(&mut reply) {
        Ok(_) if !reply.is_empty() => Ok(reply),
        Ok(_) => Err(no_reply(rundir)),
        Err(e) => Err(unreachable(rundir, e)),
    }
}

/// `going log`: sends `request` and prints the reply line by line as it comes: its code
/// first, then lines of output (after a space) to stdout, going's messages (after `!`)
/// to stderr, until the end of the reply or, following, the stream's `.CODE TEXT` line.
pub fn log(rundir: &Path, request: &str, follow: bool) -> ExitCode {
    // Following, nothing may come for days: going never waits for the reader anyway.
    let s = match send(
        rundir,
        request,
        (!follow).then_some(Duration::from_secs(60)),
    ) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut from = BufReader::with_capacity(64 * 1024, s);
    // What goes to stdout, written as it comes, in as few writes as the socket gave it.
    let mut out = Vec::new();
    let put = |out: &mut Vec<u8>| {
        let done = std::io::stdout().lock().write_all(out);
        out.clear();
        done
    };
    let mut code = None;
    let mut line = Vec::new();
    let end = loop {
        line.clear();
        match from.read_until(b'\n', &mut line) {
            Ok(_) if line.pop() == Some(b'\n') => {}
            Ok(_) => break None, // the end, or a stream cut in the middle of a line
            Err(e) => return unreachable(rundir, e),
        }
        let text = String::from_utf8_lossy(&line);
        let written = match (code, text.split_at(text.len().min(1))) {
            (None, _) => {
                code = text.trim().parse::<u8>().ok().or(Some(EX_UNAVAILABLE));
                Ok(())
            }
            (Some(64), ("!", msg)) if format!("64\n!{msg}\n") == NOT_UNDERSTOOD => {
                return older(rundir);
            }
            (_, (".", end)) => break Some(end.to_string()),
            (_, ("!", msg)) => put(&mut out).and_then(|_| writeln!(std::io::stderr(), "{msg}")),
            (_, (" ", l)) => writeln!(out, "{l}"),
            _ => writeln!(out, "{text}"),
        };
        let written = written.and_then(|_| match from.buffer().is_empty() {
            true => put(&mut out),
            false => Ok(()),
        });
        if let Err(e) = written {
            return output_failed(e);
        }
    };
    if let Err(e) = put(&mut out) {
        return output_failed(e);
    }
    match (end, code) {
        // `.CODE TEXT`: the stream's end, as going says it.
        (Some(end), _) => {
            let (code, text) = end.split_once(' ').unwrap_or((&end, ""));
            if !text.is_empty() {
                eprintln!("{text}");
            }
            ExitCode::from(code.parse::<u8>().unwrap_or(EX_UNAVAILABLE))
        }
        (None, None) => no_reply(rundir),
        (None, Some(OK)) if follow => {
            let path = rundir.join("control");
            eprintln!("going: the stream from going at {} was cut", path.display());
            ExitCode::from(EX_UNAVAILABLE)
        }
        (None, Some(code)) => ExitCode::from(code),
    }
}

/// Standard output failed: a reader that left (`going log -f web | head`) ends the
/// command quietly, anything else is said.
fn output_failed(e: std::io::Error) -> ExitCode {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return ExitCode::from(OK);
    }
    eprintln!("going: unable to write to standard output: {}", Errno(&e));
    ExitCode::from(FAILED)
}

/// Connects to the control socket at `path`, and believes it only if root or the caller's
/// own user serves it; Err: the code to exit with, once the reason is said.
fn connect(path: &Path) -> Result<UnixStream, ExitCode> {
    let s = UnixStream::connect(path).map_err(|e| {
        let path = path.display();
        eprintln!("going: unable to reach going at {path}: {}", Errno(&e));
        // RUNDIR is 0700: another user is told so, not that going is down.
        let denied = matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM));
        ExitCode::from(if denied { EX_NOPERM } else { EX_UNAVAILABLE })
    })?;
    let me = sys::geteuid();
    match sys::peer_uid(s.as_raw_fd()) {
        Ok(uid) if uid == 0 || uid == me => Ok(s),
        Ok(uid) => {
            let path = path.display();
            eprintln!(
                "going: unable to trust {path}: its server runs as uid {uid}, neither root nor uid {me}"
            );
            Err(ExitCode::from(EX_CONFIG))
        }
        Err(e) => {
            let path = path.display();
            eprintln!("going: unable to tell who serves {path}: {}", Errno(&e));
            Err(ExitCode::from(EX_UNAVAILABLE))
        }
    }
}

/// Prints a reply: its text to stdout, `!` lines to stderr; its first line is the code.
fn print(reply: &str) -> ExitCode {
    let (code, body) = reply.split_once('\n').unwrap_or((reply, ""));
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (mut out, mut err) = (String::new(), String::new());
    for line in body.lines() {
        match line.strip_prefix('!') {
            Some(l) => err.push_str(&paint(l, false)),
            None => out.push_str(&paint(line, colour)),
        }
    }
    // Nothing to do about a reader that went away: the exit code still tells.
    let _ = std::io::stdout().write_all(out.as_bytes());
    let _ = std::io::stderr().write_all(err.as_bytes());
    ExitCode::from(code.trim().parse::<u8>().unwrap_or(EX_UNAVAILABLE))
}

/// A line with its state marks (`\x02` colour-letter … `\x03`) coloured, or stripped.
fn paint(line: &str, colour: bool) -> String {
    let mut out = String::with_capacity(line.len() + 1);
    let mut rest = line;
    while let Some(at) = rest.find('\x02') {
        out.push_str(&rest[..at]);
        let marked = &rest[at + 1..];
        let end = marked.find('\x03').unwrap_or(marked.len());
        let (class, text) =
            marked[..end].split_at(marked[..end].chars().next().map_or(0, char::len_utf8));
        if colour {
            let code = match class {
                "g" => "32",
                "y" => "33",
                _ => "31",
            };
            out.push_str(&format!("\x1b[{code}m{text}\x1b[0m"));
        } else {
            out.push_str(text);
        }
        rest = marked.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::paint;

    #[test]
    fn states_are_coloured_or_plain() {
        assert_eq!(
            paint("web  \x02grunning\x03  42", false),
            "web  running  42\n"
        );
        assert_eq!(
            paint("web: \x02rquarantined\x03", true),
            "web: \x1b[31mquarantined\x1b[0m\n"
        );
    }
}
