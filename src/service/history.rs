//! What `going status NAME` and `going log` can tell of a service's past: its last exits
//! and its last lines of output, each bounded, so that a service that crashes or talks
//! without end costs a fixed amount of going's memory.
//!
//! Invariant: a service holds at most [`EXITS`] exits, and at most `held` lines of output
//! (going's `-n`, [`Held`]) of at most [`LINE_BYTES`] bytes each on average: a line that
//! would not fit pushes out the oldest ones.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::view::Ended;
use crate::log::Age;
use crate::sys;

/// How many exits are kept.
const EXITS: usize = 10;
/// The bytes of held lines allowed per held line: 10 lines, 2000 bytes.
pub const LINE_BYTES: usize = 200;

/// How many lines of output going holds per service (`going -n LINES`): 10 unless told,
/// at most [`Held::MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held(pub usize);

impl Held {
    pub const MAX: usize = 1000;

    fn bytes(self) -> usize {
        self.0 * LINE_BYTES
    }
}

impl Default for Held {
    fn default() -> Held {
        Held(10)
    }
}

/// One exit: when, how, after how long a run (None: it never became the service).
pub struct Exit {
    pub at: Instant,
    pub how: How,
    pub ran: Option<Duration>,
}

/// How a run ended.
pub enum How {
    /// The process ended: `exited 3`, `killed by SIGSEGV (core dumped)`.
    Ended(sys::Exit),
    /// It failed before the service's exec: `unable to exec …: No such file or directory`.
    Unable(Box<str>),
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            How::Ended(exit) => Ended(*exit).fmt(f),
            How::Unable(why) => f.write_str(why),
        }
    }
}

impl Exit {
    /// As `going status` says it: "3m2s ago: exited 1 after 2.0s".
    pub fn describe(&self, now: Instant) -> String {
        let ago = Age(now.saturating_duration_since(self.at));
        match self.ran {
            Some(ran) => format!("{ago} ago: {} after {}", self.how, Age(ran)),
            None => format!("{ago} ago: {}", self.how),
        }
    }
}

#[derive(Default)]
pub struct History {
    /// Newest last.
    exits: VecDeque<Exit>,
    /// Newest last.
    lines: VecDeque<String>,
}

impl History {
    pub fn exited(&mut self, exit: Exit) {
        if self.exits.len() == EXITS {
            self.exits.pop_front();
        }
        self.exits.push_back(exit);
    }

    /// Whether the last start failed before the service's exec (a missing binary, say).
    pub fn failing(&self) -> bool {
        self.exits.back().is_some_and(|e| e.ran.is_none())
    }

    /// Keeps `line`, as `held` lines are kept.
    pub fn line(&mut self, line: &str, held: Held) {
        if held.0 == 0 {
            return;
        }
        let mut cut = line.len().min(held.bytes());
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        self.lines.push_back(line[..cut].to_string());
        let mut bytes: usize = self.lines.iter().map(String::len).sum();
        while self.lines.len() > held.0 || bytes > held.bytes() {
            bytes -= self.lines.pop_front().map_or(0, |l| l.len());
        }
    }

    pub fn lines(&self) -> &VecDeque<String> {
        &self.lines
    }

    /// How the last run ended (`exited 1 after 2.0s`, `unable to exec …`).
    pub fn last(&self) -> String {
        self.exits.back().map_or_else(String::new, |e| match e.ran {
            Some(ran) => format!("{} after {}", e.how, Age(ran)),
            None => e.how.to_string(),
        })
    }

    /// The last exits, newest first.
    pub fn exits(&self) -> impl Iterator<Item = &Exit> {
        self.exits.iter().rev()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_newest_first() {
        let (mut h, t0) = (History::default(), Instant::now());
        for i in 0..12 {
            h.exited(Exit {
                at: t0 + Duration::from_secs(i),
                how: How::Ended(sys::Exit::Code(i as i32)),
                ran: Some(Duration::from_secs(1)),
            });
        }
        let now = t0 + Duration::from_secs(12);
        let exits: Vec<String> = h.exits().map(|e| e.describe(now)).collect();
        assert_eq!(exits.len(), EXITS);
        assert_eq!(exits[0], "1.0s ago: exited 11 after 1.0s");
        assert_eq!(h.last(), "exited 11 after 1.0s");
        assert!(!h.failing());
        h.exited(Exit {
            at: now,
            how: How::Unable("unable to exec /x: No such file or directory".into()),
            ran: None,
        });
        assert!(h.failing());
        assert_eq!(h.last(), "unable to exec /x: No such file or directory");
        let held = Held::default();
        for i in 0..20 {
            h.line(&format!("line {i}"), held);
        }
        assert_eq!(h.lines().len(), 10);
        assert_eq!(h.lines()[0], "line 10");
        h.line(&"é".repeat(held.bytes()), held);
        assert_eq!(h.lines().len(), 1, "one long line pushes out the others");
        assert!(h.lines()[0].len() <= held.bytes() && held.bytes() == 2000);
    }

    #[test]
    fn held_lines_are_a_setting() {
        let mut h = History::default();
        for i in 0..50 {
            h.line(&format!("line {i}"), Held(30));
        }
        assert_eq!(h.lines().len(), 30);
        assert_eq!(h.lines()[0], "line 20");
        let mut none = History::default();
        none.line("said", Held(0));
        assert!(none.lines().is_empty());
        // One held line may be as long as a line of output gets (1024 bytes, escaped
        // up to four times that), cut to its share of bytes.
        let mut one = History::default();
        one.line(&"x".repeat(4096), Held(1));
        assert_eq!(one.lines()[0].len(), LINE_BYTES);
    }
}
