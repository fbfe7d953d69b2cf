//! The commands that talk to a running going: `status`, `start`, `stop`, `restart`,
//! `signal` and `reload`. One request over RUNDIR/control, the reply printed; states are
//! coloured only when stdout is a terminal and NO_COLOR is not set.
//!
//! Invariant: only a going run by root or by the caller's own user is believed. A socket
//! someone else put in RUNDIR could print anything and exit 0: its server's credentials
//! (SO_PEERCRED) are checked before the request is sent.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::exit::{EX_CONFIG, EX_NOPERM, EX_UNAVAILABLE};
use crate::log::Errno;
use crate::sys;

/// Sends `request` (one line of words) to the going on `rundir` and prints its reply;
/// `wait`: the seconds going may take to answer a command that waits.
pub fn run(rundir: &Path, request: &str, wait: Option<u64>) -> ExitCode {
    let path = rundir.join("control");
    let mut s = match connect(&path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let reply = (|| {
        // Generous: a reload of thousands of files takes a while; going itself never waits.
        let wait = Duration::from_secs(wait.map_or(60, |w| w + 60));
        s.set_read_timeout(Some(wait))?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(format!("{request}\n").as_bytes())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok::<_, std::io::Error>(reply)
    })();
    match reply {
        Ok(r) if !r.is_empty() => print(&r),
        Ok(_) => {
            eprintln!("going: no reply from going at {}", path.display());
            ExitCode::from(EX_UNAVAILABLE)
        }
        Err(e) => {
            let path = path.display();
            eprintln!("going: unable to reach going at {path}: {}", Errno(&e));
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
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
