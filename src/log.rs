//! Where going's messages go: syslog (daemon facility, ident `going`, with pid) over a
//! non-blocking datagram socket, or stderr with `-f`.
//!
//! Invariant: logging never blocks and never fails. A message syslog cannot take right now
//! (no socket, syslogd down, its buffer full) goes to stderr instead, and a connection that
//! went stale (syslogd restarted) is made anew at the next message — the syslog crate only
//! formats here, since it neither reconnects nor sends without blocking.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use syslog::{Facility, Formatter3164, LogFormat, Severity};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Err,
    Warning,
    Notice,
    Info,
}

pub struct Logger {
    /// The syslog socket; None logs to stderr only.
    socket: Option<PathBuf>,
    conn: Option<UnixDatagram>,
    format: Formatter3164,
    buf: Vec<u8>,
}

impl Logger {
    pub fn new(socket: Option<PathBuf>) -> Logger {
        Logger {
            socket,
            conn: None,
            format: Formatter3164 {
                facility: Facility::LOG_DAEMON,
                hostname: None,
                process: "going".into(),
                pid: crate::sys::getpid() as u32,
            },
            buf: Vec::new(),
        }
    }

    pub fn log(&mut self, level: Level, msg: fmt::Arguments) {
        if self.send(level, msg) {
            return;
        }
        let _ = writeln!(io::stderr(), "going[{}]: {}", self.format.pid, msg);
    }

    /// Sends to syslog; false when the message has to go elsewhere.
    fn send(&mut self, level: Level, msg: fmt::Arguments) -> bool {
        let Some(path) = &self.socket else {
            return false;
        };
        let severity = match level {
            Level::Err => Severity::LOG_ERR,
            Level::Warning => Severity::LOG_WARNING,
            Level::Notice => Severity::LOG_NOTICE,
            Level::Info => Severity::LOG_INFO,
        };
        self.buf.clear();
        if self.format.format(&mut self.buf, severity, msg).is_err() {
            return false;
        }
        // A second try only after reconnecting: the first send may hit a stale connection.
        for _ in 0..2 {
            if self.conn.is_none() {
                self.conn = connect(path).ok();
            }
            let Some(conn) = &self.conn else { return false };
            match conn.send(&self.buf) {
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => self.conn = None,
            }
        }
        false
    }
}

fn connect(path: &PathBuf) -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(path)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// An OS error as `strerror` says it, without std's " (os error N)" suffix, for messages
/// like `unable to exec /usr/sbin/nginx: No such file or directory`.
pub struct Errno<'a>(pub &'a io::Error);

impl fmt::Display for Errno<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let s = self.0.to_string();
        f.write_str(s.rfind(" (os error ").map_or(&s[..], |i| &s[..i]))
    }
}

/// A duration as people read it in a log: `45ms`, `2.1s`, `42s`, `5m3s`, `3h2m`, `2d3h`.
pub struct Age(pub std::time::Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let ms = self.0.as_millis();
        let s = self.0.as_secs();
        match s {
            _ if ms < 1000 => write!(f, "{ms}ms"),
            0..=9 => write!(f, "{}.{}s", s, (ms % 1000) / 100),
            10..=59 => write!(f, "{s}s"),
            60..=3599 => write!(f, "{}m{}s", s / 60, s % 60),
            3600..=86399 => write!(f, "{}h{}m", s / 3600, s % 3600 / 60),
            _ => write!(f, "{}d{}h", s / 86400, s % 86400 / 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ages() {
        let a = |ms| Age(Duration::from_millis(ms)).to_string();
        assert_eq!(a(45), "45ms");
        assert_eq!(a(2100), "2.1s");
        assert_eq!(a(42_000), "42s");
        assert_eq!(a(303_000), "5m3s");
        assert_eq!(a((3 * 3600 + 2 * 60 + 5) * 1000), "3h2m");
        assert_eq!(a((2 * 86400 + 3 * 3600) * 1000), "2d3h");
    }

    #[test]
    fn errno_text() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(Errno(&e).to_string(), "No such file or directory");
    }
}
