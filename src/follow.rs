//! Followers of services' output, for `going log -f`: the bounded registry of followers,
//! each a connection taken over from the control socket once its request was read, the
//! services it follows, and a bounded queue of the lines it has yet to read.
//!
//! Invariant: going never waits for a follower, and a follower costs going at most
//! [`BYTES`] + [`SLACK`] bytes of queue, for at most [`FOLLOWERS`] followers (66 kB in all).
//! Lines go to the socket as soon as the queue is full and at the end of each turn of the
//! loop, never waited for: when the socket takes no more, lines that do not fit are
//! dropped and counted, and the reader is told how many it lost (`[going: 120 lines
//! dropped]`) where they were lost, before the next line it gets. With no follower, a
//! line costs one test of an empty list.
//!
//! On the wire the stream starts as every reply does, with its exit code (`0`) on a line;
//! then every line starts with its kind, which the client strips: a space for a line of
//! output (stdout; `web: ` follows it when more than one service is followed), `!` for a
//! message of going's (stderr), and `.` for the end of the stream, `.CODE TEXT`: the
//! client prints TEXT to stderr and leaves with CODE. A stream that stops without its
//! `.` line was cut (going was killed, say). Lines of output never hold a newline or a
//! control character: they come escaped by output.rs.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use crate::sys::Epoll;

/// Followers at once; more are refused.
pub const FOLLOWERS: usize = 4;
/// Bytes of lines a follower's queue holds, beyond what its socket buffer took already:
/// 16 lines of the longest (4 kB: 1024 bytes, escaped), or some 200 of a usual 80.
pub const BYTES: usize = 16 * 1024;
/// Lines a follower's queue holds.
pub const LINES: usize = 512;
/// Room kept beyond [`BYTES`] for going's own lines (a service's file is gone, the end),
/// so that these are not lost to a queue full of output.
pub const SLACK: usize = 512;

/// The lines waiting for one follower, as they go on the wire, in one buffer: no
/// allocation per line, and its capacity (the memory held) never past BYTES + SLACK.
#[derive(Default)]
struct Queue {
    /// Whole lines, each with its `\n`; the first may have been written in part already.
    buf: Vec<u8>,
    /// How many `\n` the buffer holds.
    lines: usize,
    /// Lines dropped since the reader was last told.
    dropped: u64,
    /// Lines dropped over the follower's life.
    lost: u64,
    /// The `.` line is in: nothing more comes.
    ended: bool,
}

impl Queue {
    /// Queues a line of service `name` (`name` None: not shown); false when the queue is
    /// full or ended, and the line dropped (then counted, as lost to the reader).
    pub fn push(&mut self, name: Option<&str>, text: &str) -> bool {
        if self.ended {
            return false;
        }
        self.mark(false);
        let name = name.unwrap_or("").as_bytes();
        let sep: &[u8] = if name.is_empty() { b"" } else { b": " };
        if self.dropped > 0 || !self.append(&[b" ", name, sep, text.as_bytes(), b"\n"], false) {
            self.dropped += 1;
            self.lost += 1;
            return false;
        }
        true
    }

    /// Whether a line of `name` and `text` would be queued now, none dropped before it.
    pub fn fits(&self, name: Option<&str>, text: &str) -> bool {
        let len = 1 + name.map_or(0, |n| n.len() + 2) + text.len() + 1;
        self.dropped == 0 && self.buf.len() + len <= BYTES && self.lines < LINES
    }

    /// Nothing to write: no line queued, none dropped unsaid.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.dropped == 0
    }

    /// Queues a message of going's (for stderr), in the room kept for them.
    pub fn notice(&mut self, text: &str) -> bool {
        if self.ended {
            return false;
        }
        self.mark(true);
        self.append(&[b"!", text.as_bytes(), b"\n"], true)
    }

    /// Ends the stream: the client leaves with `code` after printing `text`. The lines
    /// queued before go first; nothing is queued after.
    pub fn end(&mut self, code: u8, text: &str) {
        if self.ended {
            return;
        }
        self.mark(true);
        let mut head = [0u8; 8];
        let n = print_into(&mut head, format_args!(".{code} "));
        if !self.append(&[&head[..n], text.as_bytes(), b"\n"], true) {
            // No room even there (notices filled it): the end goes with less said.
            self.append(&[&head[..n - 1], b"\n"], true);
        }
        self.ended = true;
    }

    /// Puts the count of dropped lines where they were dropped, when there is room.
    fn mark(&mut self, slack: bool) {
        if self.dropped == 0 {
            return;
        }
        let mut text = [0u8; 64];
        let n = self.dropped;
        let s = if n == 1 { "" } else { "s" };
        let len = print_into(&mut text, format_args!(" [going: {n} line{s} dropped]\n"));
        if self.append(&[&text[..len]], slack) {
            self.dropped = 0;
        }
    }

    /// Appends one line made of `parts` if it fits: within BYTES and LINES, or with
    /// `slack` within BYTES + SLACK. The buffer grows by doubling, never past that.
    fn append(&mut self, parts: &[&[u8]], slack: bool) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let limit = if slack { BYTES + SLACK } else { BYTES };
        let need = self.buf.len() + len;
        if need > limit || (!slack && self.lines >= LINES) {
            return false;
        }
        if need > self.buf.capacity() {
            let want = need.max(self.buf.capacity() * 2).clamp(256, BYTES + SLACK);
            self.buf.reserve_exact(want - self.buf.len());
        }
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.lines += 1;
        true
    }

    /// What is to be written now, the count of dropped lines put in first if it fits.
    pub fn pending(&mut self) -> &[u8] {
        self.mark(false);
        &self.buf
    }

    /// `n` bytes of `pending` were written.
    pub fn consume(&mut self, n: usize) {
        self.lines -= self.buf[..n].iter().filter(|&&b| b == b'\n').count();
        self.buf.drain(..n);
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            self.buf = Vec::new(); // a burst is over: its memory goes back
        }
    }

    /// Writes what is pending to `w` (a non-blocking socket) until it would block: true
    /// once all of it is written. An error is the reader gone: the caller closes.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<bool> {
        loop {
            let pending = self.pending();
            if pending.is_empty() {
                return Ok(true);
            }
            match w.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Ended, and all of it written: time to close.
    pub fn is_done(&self) -> bool {
        self.ended && self.buf.is_empty()
    }

    #[cfg(test)]
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Lines dropped over the follower's life.
    #[cfg(test)]
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

/// Formats into a stack buffer: the length written (cut short should it not fit).
fn print_into(buf: &mut [u8], args: std::fmt::Arguments) -> usize {
    let mut w = &mut buf[..];
    let _ = w.write_fmt(args); // too long: cut, and the caller's buffers fit what it writes
    let left = w.len();
    buf.len() - left
}

/// One follower: its connection and what it follows.
struct Follower {
    id: u32,
    stream: UnixStream,
    /// Its epoll token.
    token: u64,
    /// The services followed; a name leaves when its service is gone with its file.
    names: Vec<String>,
    /// Lines are shown with their service's name: more than one was asked for.
    prefix: bool,
    queue: Queue,
    /// Its socket took all it could: epoll says when it takes more.
    out: bool,
}

impl Follower {
    /// Writes what is queued, as much as the socket takes now. False once the reader left
    /// or the stream ended and is all written: the follower is to be dropped.
    fn flush(&mut self, epoll: &Epoll) -> bool {
        match self.queue.write_to(&mut self.stream) {
            Ok(_) if self.queue.is_done() => false,
            Ok(all) if all == self.out => {
                self.out = !all;
                let fd = self.stream.as_raw_fd();
                epoll.set_output(fd, self.out, self.token).is_ok()
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// Queues a line, written first what is queued if it does not fit and the socket may
    /// take more. False once the follower is to be dropped.
    fn push(&mut self, name: Option<&str>, text: &str, epoll: &Epoll) -> bool {
        if !self.out && !self.queue.fits(name, text) && !self.flush(epoll) {
            return false;
        }
        self.queue.push(name, text);
        true
    }
}

impl Drop for Follower {
    /// Whatever it sent is read before it is closed, so that it gets the end of its stream.
    fn drop(&mut self) {
        crate::control::before_close(&mut self.stream);
    }
}

/// Every follower, at most [`FOLLOWERS`].
#[derive(Default)]
pub struct Followers {
    list: Vec<Follower>,
}

impl Followers {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.list.len() >= FOLLOWERS
    }

    /// The client `id`, its connection `stream` (non-blocking, in epoll already) taken
    /// over from the control socket, follows `names` (each once) from now on, after the
    /// lines `held` (each with the name to show, if any); `token` is its epoll token from
    /// now on. The caller saw to it that there is room.
    pub fn add<'a>(
        &mut self,
        id: u32,
        stream: UnixStream,
        token: u64,
        names: &[String],
        held: impl Iterator<Item = (Option<&'a str>, &'a str)>,
        epoll: &Epoll,
    ) {
        debug_assert!(!self.is_full() && self.list.iter().all(|f| f.id != id));
        let mut f = Follower {
            id,
            stream,
            token,
            prefix: names.len() > 1,
            names: names.to_vec(),
            queue: Queue::default(),
            out: false,
        };
        // Watched under its own token from now on, for the end of its input (the reader
        // left) and, once its socket is full, for room.
        if epoll
            .set_output(f.stream.as_raw_fd(), false, token)
            .is_err()
        {
            return;
        }
        f.queue.append(&[b"0\n"], true);
        for (name, text) in held {
            if !f.push(name, text, epoll) {
                return;
            }
        }
        if f.flush(epoll) {
            self.list.push(f);
        }
    }

    /// A line of output of service `name`: to each of its followers.
    pub fn line(&mut self, name: &str, text: &str, epoll: &Epoll) {
        (self.list).retain_mut(|f| {
            let follows = f.names.iter().any(|n| n == name);
            !follows || f.push(f.prefix.then_some(name), text, epoll)
        });
    }

    /// The follower `id` woke the loop: its socket takes more, or the reader left. What
    /// it sends is never read: epoll watches it for room (while lines wait) and for
    /// hanging up, so that with no line waiting, this is the reader gone.
    pub fn woken(&mut self, id: u32, epoll: &Epoll) {
        self.list
            .retain_mut(|f| f.id != id || (f.out && f.flush(epoll)));
    }

    /// Writes what waits for each follower whose socket may take it: at the end of a
    /// turn of the loop.
    pub fn feed(&mut self, epoll: &Epoll) {
        (self.list).retain_mut(|f| f.out || f.queue.is_empty() || f.flush(epoll));
    }

    /// Every service whose `known` says no is gone with its file: its followers are told,
    /// and the streams of those who followed nothing else end (code 0).
    pub fn gone(&mut self, known: impl Fn(&str) -> bool) {
        for f in &mut self.list {
            while let Some(at) = f.names.iter().position(|n| !known(n)) {
                let name = f.names.remove(at);
                let text = format!("going: {name}: its file is gone");
                if f.names.is_empty() {
                    f.queue.end(0, &text);
                } else {
                    f.queue.notice(&text);
                }
            }
        }
    }

    /// Ends every stream with `code` and `text`, written as far as the sockets take it at
    /// once (going exits, or execs a new binary): every follower is dropped.
    pub fn end_all(&mut self, code: u8, text: &str, epoll: &Epoll) {
        for mut f in self.list.drain(..) {
            f.queue.end(code, text);
            f.flush(epoll);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// What the queue holds, as text, all of it taken.
    fn take(q: &mut Queue) -> String {
        let s = String::from_utf8(q.pending().to_vec()).unwrap();
        q.consume(s.len());
        s
    }

    #[test]
    fn lines_go_out_with_their_kind_and_name() {
        let mut q = Queue::default();
        assert!(q.push(None, "one"));
        assert!(q.push(Some("web"), "two"));
        assert!(q.notice("going: web: its file is gone"));
        assert_eq!(
            take(&mut q),
            " one\n web: two\n!going: web: its file is gone\n"
        );
        q.end(0, "going: web: its file is gone");
        assert!(!q.is_done() && q.is_ended());
        assert_eq!(take(&mut q), ".0 going: web: its file is gone\n");
        assert!(q.is_done());
        assert!(!q.push(None, "after the end") && !q.notice("nor this"));
        assert_eq!(q.pending(), b"");
    }

    #[test]
    fn a_full_queue_drops_counts_and_says_so_where_lines_were_lost() {
        let mut q = Queue::default();
        let line = "x".repeat(99); // 101 bytes on the wire
        let mut kept = 0;
        for _ in 0..1000 {
            kept += q.push(None, &line) as usize;
        }
        assert_eq!(kept, BYTES / 101);
        assert!(q.buf.len() <= BYTES && q.buf.capacity() <= BYTES + SLACK);
        assert_eq!(q.lost(), 1000 - kept as u64);
        // The reader takes a little: the count goes in after what was kept, at once.
        let first = q.pending()[..101].to_vec();
        assert_eq!(first, format!(" {line}\n").into_bytes());
        q.consume(101);
        q.consume(50); // half a line: the rest stays whole
        let rest = take(&mut q);
        assert!(rest.starts_with(&line[49..]), "{}", &rest[..60]);
        let marker = format!(" [going: {} lines dropped]\n", 1000 - kept);
        assert!(rest.ends_with(&format!("{line}\n{marker}")), "{rest:.80}");
        assert_eq!(q.lines, 0);
        // Counted from zero again; one is one line.
        assert!(q.push(None, "next"));
        assert_eq!(take(&mut q), " next\n");
        for _ in 0..=LINES {
            q.push(None, "");
        }
        assert_eq!(q.lines, LINES);
        q.consume(2);
        assert_eq!(
            q.pending().rsplit(|&b| b == b'\n').nth(1),
            Some(&b" [going: 1 line dropped]"[..])
        );
        assert_eq!(q.lost(), 1000 - kept as u64 + 1);
    }

    #[test]
    fn the_count_comes_before_the_next_line_and_the_end_after_all() {
        let mut q = Queue::default();
        while q.push(None, "old") {}
        q.push(None, "lost");
        assert!(
            q.notice("going: web: its file is gone"),
            "notices have room kept"
        );
        q.end(0, "going: web: its file is gone");
        let all = take(&mut q);
        let tail: Vec<&str> = all.lines().rev().take(4).collect();
        assert_eq!(
            tail,
            [
                ".0 going: web: its file is gone",
                "!going: web: its file is gone",
                " [going: 2 lines dropped]",
                " old"
            ]
        );
        assert!(q.is_done());
    }

    #[test]
    fn a_follower_that_never_reads_never_blocks_and_is_told_what_it_lost() {
        let (mut reader, mut writer) = UnixStream::pair().unwrap();
        writer.set_nonblocking(true).unwrap();
        let mut q = Queue::default();
        let line = "y".repeat(80);
        let n = 20_000;
        for i in 0..n {
            q.push(None, &format!("{i:05} {line}"));
            assert!(q.write_to(&mut writer).is_ok());
            assert!(q.buf.capacity() <= BYTES + SLACK);
        }
        assert!(
            q.lost() > 0,
            "the socket and the queue hold less than 1.7 MB"
        );
        // The reader reads again: everything that was kept, then the count, arrives.
        reader.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let written = q.write_to(&mut writer).unwrap();
            let mut read = false;
            loop {
                match reader.read(&mut buf) {
                    Ok(k) if k > 0 => got.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    r => panic!("{r:?}"),
                }
                read = true;
            }
            if written && !read {
                break;
            }
        }
        let got = String::from_utf8(got).unwrap();
        let lines: Vec<&str> = got.lines().collect();
        let marker = format!(" [going: {} lines dropped]", q.lost());
        assert_eq!(lines.last(), Some(&&marker[..]));
        assert_eq!(lines.len() as u64 - 1 + q.lost(), n as u64);
        // What came is in order, and with no gap but the one reported.
        let numbers: Vec<u32> = lines[..lines.len() - 1]
            .iter()
            .map(|l| l[1..6].parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(numbers[0], 0);
    }

    #[test]
    fn a_reader_gone_is_an_error() {
        let (reader, mut writer) = UnixStream::pair().unwrap();
        drop(reader);
        let mut q = Queue::default();
        q.push(None, "to nobody");
        assert!(q.write_to(&mut writer).is_err());
    }

    /// A follower `id` of `names` on one end of a socket pair: the other end, to read.
    fn add(f: &mut Followers, epoll: &Epoll, id: u32, names: &[&str]) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        epoll.add(ours.as_raw_fd(), id as u64).unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        f.add(id, ours, id as u64, &names, std::iter::empty(), epoll);
        theirs
    }

    /// What came on `s` until now.
    fn read(s: &mut UnixStream) -> String {
        crate::log::tests::drain(s)
    }

    #[test]
    fn the_registry_is_bounded_and_routes_lines_by_name() {
        let epoll = Epoll::new().unwrap();
        let mut f = Followers::default();
        let mut web = add(&mut f, &epoll, 1, &["web"]);
        let mut both = add(&mut f, &epoll, 2, &["web", "db"]);
        let mut db = add(&mut f, &epoll, 3, &["db"]);
        let mut cache = add(&mut f, &epoll, 4, &["cache"]);
        assert!(f.is_full());
        for s in [&mut web, &mut both, &mut db, &mut cache] {
            assert_eq!(read(s), "0\n", "the stream starts with its code");
        }
        f.line("web", "GET /", &epoll);
        f.line("db", "ready", &epoll);
        f.line("nobody follows", "lost", &epoll);
        f.feed(&epoll);
        assert_eq!(read(&mut web), " GET /\n");
        assert_eq!(read(&mut both), " web: GET /\n db: ready\n");
        assert_eq!(read(&mut db), " ready\n");
        assert_eq!(read(&mut cache), "");
        // A file goes: who followed only it is done, who followed more is told.
        f.gone(|name| name != "web");
        f.feed(&epoll);
        assert_eq!(read(&mut web), ".0 going: web: its file is gone\n");
        assert_eq!(read(&mut both), "!going: web: its file is gone\n");
        assert!(!f.is_full(), "a stream that ended is dropped");
        f.line("web", "after it went", &epoll);
        f.feed(&epoll);
        assert_eq!(read(&mut both), "");
        // A reader that leaves is dropped when its socket says so.
        drop(db);
        f.woken(3, &epoll);
        assert_eq!(f.list.len(), 2);
        f.end_all(0, "going: stopping", &epoll);
        assert_eq!(read(&mut both), ".0 going: stopping\n");
        assert_eq!(read(&mut cache), ".0 going: stopping\n");
        assert!(f.is_empty());
    }

    #[test]
    fn a_burst_goes_to_the_socket_not_to_the_floor() {
        // A service wrote far more than a queue holds in one read of its pipe: what the
        // socket takes is written as the queue fills, and nothing is dropped.
        let epoll = Epoll::new().unwrap();
        let mut f = Followers::default();
        let mut s = add(&mut f, &epoll, 1, &["web"]);
        for i in 0..5000 {
            f.line("web", &format!("{i}"), &epoll);
        }
        f.feed(&epoll);
        let got = read(&mut s);
        assert_eq!(got.lines().count(), 5001, "{}", &got[got.len() - 60..]);
        assert!(got.ends_with(" 4999\n"));
    }

    #[test]
    fn held_lines_beyond_the_queue_are_written_first_not_dropped() {
        let epoll = Epoll::new().unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        epoll.add(ours.as_raw_fd(), 7).unwrap();
        let mut f = Followers::default();
        let line = "h".repeat(100);
        let held = (0..1000).map(|_| (Some("web"), line.as_str()));
        let names = ["web".to_string(), "db".to_string()];
        f.add(7, ours, 7, &names, held, &epoll);
        let text = read(&mut theirs);
        assert_eq!(text.lines().count(), 1001);
        assert!(text.starts_with("0\n web: hhh"));
        assert!(!f.is_empty());
    }
}
