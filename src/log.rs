//! Where going's messages go: syslog (daemon facility, ident `going`, with pid) over a
//! non-blocking datagram socket, or standard error with `-f`.
//!
//! Invariant: logging never blocks and never fails. When syslogd is slow (its queue full:
//! only 10 datagrams by default where systemd has not raised it) messages wait in a bounded
//! queue, flushed when the loop sees the socket writable; past that bound, and whenever
//! there is no syslogd at all, they go to stderr. A connection that went stale (syslogd
//! restarted) is made anew at the next message, on the same socket so that its fd, known
//! to epoll, never changes.
//!
//! Standard error is written the same way, through [`Stderr`]: never a write that can wait
//! (a pipe nobody reads, a terminal on ^S), lines waiting in a queue of the same bounds,
//! lines past it dropped, counted, and reported once it moves again. The open file
//! description of fd 2 is shared with whoever started going (a shell, init), so its
//! flags are never changed.
//!
//! A message is `<PRI>TAG[PID]: TEXT`: RFC 3164 without the timestamp and hostname, which
//! the local syslogd adds on receipt (rsyslog ignores a sent timestamp by default). The
//! syslog crate gives the facility and severities; its formatter would bring the `time`
//! crate (41 kB, 4% of VmPeak) and parse a format description for every message.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use syslog::{Facility, Severity};

use crate::sys::{self, Epoll};

/// How much may wait for a slow syslogd, and for a slow standard error: past either
/// bound, going's own messages go to stderr (from syslog) or are dropped (from stderr),
/// and services' lines are dropped; drops are counted and reported.
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
    /// Lines of services' output dropped while syslogd was not keeping up.
    dropped: Dropped,
    /// Whether epoll watches the syslog socket for output.
    syslog_watched: bool,
    stderr: Stderr,
}

#[derive(PartialEq, Eq)]
enum Sent {
    Yes,
    Later,
    Never,
}

impl Logger {
    pub fn new(path: Option<PathBuf>) -> Logger {
        Logger::with_stderr(path, 2)
    }

    /// A logger whose standard error is `fd`.
    fn with_stderr(path: Option<PathBuf>, fd: RawFd) -> Logger {
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
            dropped: Dropped::default(),
            syslog_watched: false,
            stderr: Stderr::open(fd),
        }
    }

    /// Adds the syslog socket to epoll, not yet watched for anything, so that its fd is
    /// known from the start; `want_output` says when to watch it. Err: epoll refused it.
    pub fn watch(&mut self, epoll: &Epoll, token: u64) -> io::Result<()> {
        match &self.sock {
            Some(s) => epoll.add_for_output(s.as_raw_fd(), false, token),
            None => Ok(()),
        }
    }

    /// Watches for output the fds that messages wait for, and only those: the syslog
    /// socket, and standard error where it can make a writer wait. Called once per turn
    /// of the loop; a change epoll refuses is tried again at the next.
    pub fn want_output(&mut self, epoll: &Epoll, token: u64) {
        let want = !self.queue.is_empty();
        if let Some(s) = self.sock.as_ref().filter(|_| want != self.syslog_watched) {
            if epoll.set_output(s.as_raw_fd(), want, token).is_ok() {
                self.syslog_watched = want;
            }
        }
        self.stderr.want_output(epoll, token);
    }

    /// going's own message. Control characters are escaped, as in services' lines: a
    /// message may quote a file (a command's path, say).
    pub fn log(&mut self, level: Level, msg: fmt::Arguments) {
        let severity = match level {
            Level::Err => Severity::LOG_ERR,
            Level::Warning => Severity::LOG_WARNING,
            Level::Notice => Severity::LOG_NOTICE,
            Level::Info => Severity::LOG_INFO,
        } as u8;
        let text = crate::output::escape(msg.to_string().as_bytes());
        if self.put(None, severity, &text) != Sent::Yes {
            self.stderr_line(None, format!("going[{}]: {text}\n", self.pid));
        }
    }

    /// A line of a service's output, tagged with its name and pid. Dropped, and counted,
    /// when syslogd is not keeping up.
    pub fn service_line(&mut self, name: &str, pid: u32, severity: u8, text: &str) {
        match self.put(Some((name, pid)), severity, text) {
            Sent::Yes => {}
            Sent::Never => self.stderr_line(Some(name), format!("{name}[{pid}]: {text}\n")),
            Sent::Later => self.dropped.add(Some(name)),
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

    /// Sends what waits, as far as syslogd and stderr take it now; once all is sent, says
    /// how many lines were dropped meanwhile.
    pub fn flush(&mut self) {
        while let Some((buf, start)) = self.queue.pop_front() {
            self.queued_bytes -= buf.len();
            match self.send(&buf) {
                Sent::Yes => {}
                Sent::Later => {
                    self.queued_bytes += buf.len();
                    self.queue.push_front((buf, start));
                    break;
                }
                Sent::Never => {
                    let line = format!("going[{}]: {}\n", self.pid, Lossy(&buf[start..]));
                    self.stderr_line(None, line);
                }
            }
        }
        self.stderr.write_waiting();
        if self.queue.is_empty() {
            let report = self.dropped.report("syslog");
            self.warn(report);
        }
        self.stderr_report();
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

    /// A line for stderr, of going (`who` None) or of a service; then, should stderr have
    /// moved again after dropping lines, how many.
    fn stderr_line(&mut self, who: Option<&str>, line: String) {
        self.stderr.line(who, line.into_bytes());
        self.stderr_report();
    }

    fn stderr_report(&mut self) {
        if self.stderr.moved_after_drops() {
            let report = self.stderr.dropped.report("standard error");
            self.warn(report);
        }
    }

    fn warn(&mut self, report: Vec<String>) {
        for msg in report {
            self.log(Level::Warning, format_args!("{msg}"));
        }
    }
}

impl Drop for Logger {
    /// On the way out nothing waits any more: what syslogd does not take goes to stderr,
    /// and what stderr does not take now is lost.
    fn drop(&mut self) {
        self.flush();
        for (buf, start) in std::mem::take(&mut self.queue) {
            let line = format!("going[{}]: {}\n", self.pid, Lossy(&buf[start..]));
            self.stderr.line(None, line.into_bytes());
        }
    }
}

/// Bytes as text, invalid UTF-8 replaced.
struct Lossy<'a>(&'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}

/// Lines dropped while a destination was not keeping up, per service (None: going's own
/// messages), in the order they were first dropped.
#[derive(Default)]
struct Dropped(Vec<(Option<String>, u64)>);

impl Dropped {
    fn add(&mut self, who: Option<&str>) {
        match self.0.iter_mut().find(|d| d.0.as_deref() == who) {
            Some(d) => d.1 += 1,
            None => self.0.push((who.map(String::from), 1)),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The warnings that say what was dropped because `whom` was not keeping up; the
    /// counts start again from zero.
    fn report(&mut self, whom: &str) -> Vec<String> {
        let plural =
            |n: u64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        (std::mem::take(&mut self.0).into_iter())
            .map(|(who, n)| match who {
                Some(name) => format!(
                    "{name}: {n} {} of output dropped: {whom} was not keeping up",
                    plural(n, "line", "lines")
                ),
                None => format!(
                    "going: {n} {} dropped: {whom} was not keeping up",
                    plural(n, "message", "messages")
                ),
            })
            .collect()
    }
}

/// Standard error, written without ever waiting.
struct Stderr {
    how: How,
    /// Lines waiting for stderr to take them, with whose they are (None: going's).
    queue: VecDeque<(Vec<u8>, Option<String>)>,
    queued_bytes: usize,
    /// How much of the first waiting line is written already.
    sent: usize,
    dropped: Dropped,
    /// Whether the last write went through: drops are reported only once one does.
    moving: bool,
    /// Whether epoll watches stderr for output. It is added only while lines wait: a
    /// pipe without a reader is always ready with an error, and would wake the loop
    /// for ever.
    watched: bool,
}

/// Where standard error goes, and so how it is written without waiting.
enum How {
    /// A regular file or a block device, which never makes a writer wait: fd 2 as it is.
    Plain(RawFd),
    /// A socket: fd 2, with MSG_DONTWAIT on each send.
    Socket(RawFd),
    /// A pipe, FIFO or terminal: a non-blocking open file description of its own,
    /// opened through /proc/self/fd/2 (close-on-exec, and not a controlling terminal).
    Own(File),
    /// The same where /proc gives none (not mounted, not ours to open, a FIFO without a
    /// reader yet): fd 2, written only when poll(2) says it takes a line now, at most
    /// PIPE_BUF bytes at a time, which a pipe then takes without waiting.
    Polled(RawFd),
}

/// Writes `line` to standard error if it goes without waiting, else drops it: for the last
/// word of a going that could not start, which must exit (and be started again by init)
/// even when nobody reads its stderr.
pub fn last_word(line: &str) {
    // Dropped or not, going exits next: nothing to do about a failure.
    let _ = Stderr::open(2).how.write(line.as_bytes());
}

impl Stderr {
    fn open(fd: RawFd) -> Stderr {
        let how = match sys::fd_type(fd) {
            Ok(libc::S_IFREG | libc::S_IFBLK) | Err(_) => How::Plain(fd),
            Ok(libc::S_IFSOCK) => How::Socket(fd),
            Ok(_) => File::options()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(format!("/proc/self/fd/{fd}"))
                .map_or(How::Polled(fd), How::Own),
        };
        Stderr {
            how,
            queue: VecDeque::new(),
            queued_bytes: 0,
            sent: 0,
            dropped: Dropped::default(),
            moving: true,
            watched: false,
        }
    }

    /// Whether stderr took lines again after some were dropped: time to say how many.
    fn moved_after_drops(&self) -> bool {
        self.moving && self.queue.is_empty() && !self.dropped.is_empty()
    }

    /// Writes `line` now or queues it behind those waiting; past the queue's bounds, or
    /// should stderr fail (no reader left), it is dropped and counted. Lines waiting on
    /// an fd that epoll would not watch go when the next one comes.
    fn line(&mut self, who: Option<&str>, line: Vec<u8>) {
        self.write_waiting();
        if self.queue.is_empty() {
            let written = self.how.write(&line);
            self.moving = written.is_ok();
            match written {
                Ok(n) if n == line.len() => return,
                Ok(n) => self.sent = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return self.dropped.add(who),
            }
        } else if self.queue.len() >= QUEUE || self.queued_bytes + line.len() > QUEUE_BYTES {
            return self.dropped.add(who);
        }
        self.queued_bytes += line.len();
        self.queue.push_back((line, who.map(String::from)));
    }

    /// Writes what waits, as far as stderr takes it now.
    fn write_waiting(&mut self) {
        while let Some((line, _)) = self.queue.front() {
            let len = line.len();
            let written = self.how.write(&line[self.sent..]);
            self.moving = written.is_ok();
            match written {
                Ok(n) if self.sent + n < len => self.sent += n,
                Ok(_) => {
                    self.sent = 0;
                    self.queued_bytes -= len;
                    self.queue.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // Gone (no reader left, a terminal hung up): what waits is lost.
                    for (_, who) in std::mem::take(&mut self.queue) {
                        self.dropped.add(who.as_deref());
                    }
                    (self.sent, self.queued_bytes) = (0, 0);
                }
            }
        }
    }

    /// Adds stderr to epoll, for output, while lines wait; takes it out once none do.
    fn want_output(&mut self, epoll: &Epoll, token: u64) {
        let want = !self.queue.is_empty();
        if want == self.watched {
            return;
        }
        let fd = match &self.how {
            How::Plain(fd) | How::Socket(fd) | How::Polled(fd) => *fd,
            How::Own(f) => f.as_raw_fd(),
        };
        if want {
            // Refused (a file epoll cannot watch, which makes no writer wait anyway, or no
            // memory): tried again at the next turn of the loop.
            self.watched = epoll.add_for_output(fd, true, token).is_ok();
        } else {
            epoll.delete(fd);
            self.watched = false;
        }
    }
}

impl How {
    /// One write that does not wait: what was written, or WouldBlock.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let r = match self {
                How::Plain(fd) => sys::write(*fd, buf),
                How::Socket(fd) => sys::send_now(*fd, buf),
                How::Own(f) => f.write(buf),
                How::Polled(fd) => match sys::writable_now(*fd) {
                    Ok(true) => sys::write(*fd, &buf[..buf.len().min(libc::PIPE_BUF)]),
                    Ok(false) => Err(io::ErrorKind::WouldBlock.into()),
                    Err(e) => Err(e),
                },
            };
            return match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(0) if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
                r => r,
            };
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
pub(crate) mod tests {
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

    /// Everything that can be read from `r` now.
    pub(crate) fn drain(r: &mut impl io::Read) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).unwrap()
    }

    /// The file status flags of our fd `fd`, from /proc (octal there).
    fn status_flags(fd: RawFd) -> i32 {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
        i32::from_str_radix(flags.trim(), 8).unwrap()
    }

    #[test]
    fn a_stderr_nobody_reads_never_blocks_and_drops_are_counted_and_reported() {
        use std::os::unix::net::UnixStream;
        let pipe = || {
            let (r, w) = sys::pipe().unwrap(); // the write end blocks, as fd 2 may
            (Box::new(File::from(r)) as Box<dyn io::Read>, w)
        };
        let socket = || {
            let (r, w) = UnixStream::pair().unwrap();
            r.set_nonblocking(true).unwrap();
            (Box::new(r) as Box<dyn io::Read>, w.into())
        };
        for kind in ["pipe", "pipe, polled", "socket"] {
            let (mut r, w): (_, std::os::fd::OwnedFd) = match kind {
                "socket" => socket(),
                _ => pipe(),
            };
            let mut log = Logger::with_stderr(None, w.as_raw_fd());
            match (&log.stderr.how, kind) {
                (How::Own(_), "pipe") | (How::Socket(_), "socket") => {}
                (How::Own(_), "pipe, polled") => log.stderr.how = How::Polled(w.as_raw_fd()),
                _ => panic!("{kind}: not the expected way to write"),
            }
            let text = "x".repeat(100);
            for _ in 0..5000 {
                log.service_line("web", 42, 6, &text);
            }
            log.log(Level::Err, format_args!("going's own"));
            assert_eq!(status_flags(w.as_raw_fd()) & libc::O_NONBLOCK, 0, "{kind}");
            assert!(log.stderr.queue.len() <= QUEUE, "{kind}");
            assert!(log.stderr.queued_bytes <= QUEUE_BYTES, "{kind}");
            // Read, and let the queue go as the loop would: then the report.
            let mut got = drain(&mut r);
            while !log.stderr.queue.is_empty() {
                log.flush();
                got += &drain(&mut r);
            }
            got += &drain(&mut r);
            let lines = got.lines().filter(|l| l.starts_with("web[42]: x")).count();
            let dropped = format!(
                "going[{}]: web: {} lines of output dropped: standard error was not keeping up",
                log.pid,
                5000 - lines
            );
            assert!(lines < 5000 && got.contains(&dropped), "{kind}: {dropped}");
            let own = "going: 1 message dropped: standard error was not keeping up";
            assert!(got.contains(own), "{kind}");
            // Counts start again from zero.
            log.log(Level::Info, format_args!("after"));
            assert_eq!(drain(&mut r), format!("going[{}]: after\n", log.pid));
        }
    }

    /// Waits, for at most five seconds, until the pipe written to by `fd` has no reader.
    fn no_reader(fd: i32) {
        let mut p = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, 5000) };
        assert!(n == 1 && p.revents & libc::POLLERR != 0, "a reader still");
    }

    #[test]
    fn a_stderr_without_a_reader_drops_until_it_has_one_again() {
        let (r, w) = sys::pipe().unwrap();
        let mut log = Logger::with_stderr(None, w.as_raw_fd());
        drop(r);
        // A test forking beside this one holds a copy of the read end until its exec.
        no_reader(w.as_raw_fd());
        log.log(Level::Err, format_args!("lost"));
        log.log(Level::Err, format_args!("lost too"));
        assert!(
            log.stderr.queue.is_empty(),
            "nothing waits for a pipe without a reader"
        );
        // A reader again (a new one, through /proc): the next line goes, then the count.
        let mut r = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", w.as_raw_fd()))
            .unwrap();
        log.log(Level::Err, format_args!("back"));
        assert_eq!(
            drain(&mut r),
            format!(
                "going[{0}]: back\ngoing[{0}]: going: 2 messages dropped: standard error was not keeping up\n",
                log.pid
            )
        );
    }

    #[test]
    fn messages_quoting_a_file_are_escaped() {
        let (r, w) = sys::pipe().unwrap();
        let mut log = Logger::with_stderr(None, w.as_raw_fd());
        log.log(
            Level::Err,
            format_args!("unknown key \"\x1b[2J\x1b]0;pwned\x07\""),
        );
        assert_eq!(
            drain(&mut File::from(r)),
            format!(
                "going[{}]: unknown key \"\\x1b[2J\\x1b]0;pwned\\x07\"\n",
                log.pid
            )
        );
    }

    #[test]
    fn errno_text() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(Errno(&e).to_string(), "No such file or directory");
    }
}
