//! Where going's messages go: syslog (daemon facility, ident `going`, with pid) over a
//! non-blocking datagram socket, or stderr with `-f`.
//!
//! Invariant: logging never blocks and never fails. When syslogd is slow (its queue full:
//! only 10 datagrams by default where systemd has not raised it) messages wait in a bounded
//! queue, flushed when the loop sees the socket writable; past that bound, and whenever
//! there is no syslogd at all, they go to stderr. A connection that went stale (syslogd
//! restarted) is made anew at the next message, on the same socket so that its fd, known
//! to epoll, never changes.
//!
//! A message is `<PRI>TAG[PID]: TEXT`: RFC 3164 without the timestamp and hostname, which
//! the local syslogd adds on receipt (rsyslog ignores a sent timestamp by default). The
//! syslog crate gives the facility and severities; its formatter would bring the `time`
//! crate (41 kB, 4% of VmPeak) and parse a format description for every message.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use syslog::{Facility, Severity};

/// How much may wait for a slow syslogd: past either bound, going's own messages go to
/// stderr and services' lines are dropped (and counted).
const QUEUE: usize = 256;
const QUEUE_BYTES: usize = 32 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Err,
    Warning,
    Notice,
    Info,
}

pub struct Logger {
    /// The syslog socket's path; None logs to stderr only.
    path: Option<PathBuf>,
    sock: Option<UnixDatagram>,
    connected: bool,
    pid: u32,
    /// Formatted datagrams waiting for syslogd, with where the bare message starts.
    queue: VecDeque<(Vec<u8>, usize)>,
    queued_bytes: usize,
    /// Lines of services' output dropped while syslogd was not keeping up, per service.
    dropped: Vec<(String, u64)>,
}

#[derive(PartialEq, Eq)]
enum Sent {
    Yes,
    Later,
    Never,
}

impl Logger {
    pub fn new(path: Option<PathBuf>) -> Logger {
        let sock = path.as_ref().and_then(|_| UnixDatagram::unbound().ok());
        if let Some(s) = &sock {
            let _ = s.set_nonblocking(true);
        }
        Logger {
            path,
            sock,
            connected: false,
            pid: crate::sys::getpid() as u32,
            queue: VecDeque::new(),
            queued_bytes: 0,
            dropped: Vec::new(),
        }
    }

    /// The syslog socket, for the loop to learn when a waiting message can go.
    pub fn fd(&self) -> Option<RawFd> {
        self.sock.as_ref().map(|s| s.as_raw_fd())
    }

    /// Whether messages wait for the socket to become writable.
    pub fn waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// going's own message.
    pub fn log(&mut self, level: Level, msg: fmt::Arguments) {
        let severity = match level {
            Level::Err => Severity::LOG_ERR,
            Level::Warning => Severity::LOG_WARNING,
            Level::Notice => Severity::LOG_NOTICE,
            Level::Info => Severity::LOG_INFO,
        } as u8;
        let text = msg.to_string();
        if self.put(None, severity, &text) != Sent::Yes {
            self.stderr(format_args!("{text}"));
        }
    }

    /// A line of a service's output, tagged with its name and pid. Dropped, and counted,
    /// when syslogd is not keeping up.
    pub fn service_line(&mut self, name: &str, pid: u32, severity: u8, text: &str) {
        match self.put(Some((name, pid)), severity, text) {
            Sent::Yes => {}
            Sent::Never => {
                let _ = io::stderr().write_all(format!("{name}[{pid}]: {text}\n").as_bytes());
            }
            Sent::Later => match self.dropped.iter_mut().find(|d| d.0 == name) {
                Some(d) => d.1 += 1,
                None => self.dropped.push((name.to_string(), 1)),
            },
        }
    }

    /// Sends or queues a message: Yes when done, Later when the queue is full, Never when
    /// there is no syslogd to send to.
    fn put(&mut self, tag: Option<(&str, u32)>, severity: u8, text: &str) -> Sent {
        if self.sock.is_none() {
            return Sent::Never;
        }
        let (name, pid) = tag.unwrap_or(("going", self.pid));
        let pri = Facility::LOG_DAEMON as u8 | (severity & 7);
        let mut buf = Vec::with_capacity(text.len() + name.len() + 16);
        let _ = write!(buf, "<{pri}>{name}[{pid}]: ");
        let start = buf.len();
        buf.extend_from_slice(text.as_bytes());
        if self.queue.is_empty() {
            match self.send(&buf) {
                Sent::Later => {}
                done => return done,
            }
        }
        if self.queue.len() >= QUEUE || self.queued_bytes + buf.len() > QUEUE_BYTES {
            return Sent::Later;
        }
        self.queued_bytes += buf.len();
        self.queue.push_back((buf, start));
        Sent::Yes
    }

    /// Sends what waits, as far as syslogd takes it now; once all is sent, says how many
    /// lines of output were dropped meanwhile.
    pub fn flush(&mut self) {
        while let Some((buf, start)) = self.queue.pop_front() {
            self.queued_bytes -= buf.len();
            match self.send(&buf) {
                Sent::Yes => {}
                Sent::Later => {
                    self.queued_bytes += buf.len();
                    self.queue.push_front((buf, start));
                    return;
                }
                Sent::Never => {
                    self.stderr(format_args!("{}", String::from_utf8_lossy(&buf[start..])))
                }
            }
        }
        for (name, n) in std::mem::take(&mut self.dropped) {
            let lines = if n == 1 { "line" } else { "lines" };
            self.log(
                Level::Warning,
                format_args!("{name}: {n} {lines} of output dropped: syslog was not keeping up"),
            );
        }
    }

    fn send(&mut self, buf: &[u8]) -> Sent {
        let (Some(sock), Some(path)) = (&self.sock, &self.path) else {
            return Sent::Never;
        };
        // A second try only after connecting anew: the first may hit a stale connection.
        for _ in 0..2 {
            if !self.connected {
                self.connected = sock.connect(path).is_ok();
                if !self.connected {
                    return Sent::Never;
                }
            }
            match sock.send(buf) {
                Ok(_) => return Sent::Yes,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Later,
                Err(_) => self.connected = false,
            }
        }
        Sent::Never
    }

    /// One write per line: stderr is unbuffered, and a line must not interleave with others.
    fn stderr(&self, msg: fmt::Arguments) {
        let line = format!("going[{}]: {}\n", self.pid, msg);
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

impl Drop for Logger {
    /// On the way out nothing waits any more: what syslogd does not take goes to stderr.
    fn drop(&mut self) {
        self.flush();
        for (buf, start) in std::mem::take(&mut self.queue) {
            self.stderr(format_args!("{}", String::from_utf8_lossy(&buf[start..])));
        }
    }
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
