//! What `going status NAME` can tell of a service's past: its last exits and its last lines
//! of output, each bounded, so that a service that crashes or talks without end costs a
//! fixed amount of going's memory.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::log::Age;

/// How many exits and lines are kept, and how many bytes of lines at most.
const EXITS: usize = 10;
const LINES: usize = 10;
const LINES_BYTES: usize = 2048;

/// One exit: when, how (`exited 3`, `unable to exec …`), after how long a run (None: it
/// never became the service).
pub struct Exit {
    pub at: Instant,
    pub how: String,
    pub ran: Option<Duration>,
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

    pub fn line(&mut self, line: &str) {
        let mut cut = line.len().min(LINES_BYTES);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        self.lines.push_back(line[..cut].to_string());
        let mut bytes: usize = self.lines.iter().map(String::len).sum();
        while self.lines.len() > LINES || bytes > LINES_BYTES {
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
            None => e.how.clone(),
        })
    }

    /// The last exits, newest first, as "3m2s ago: exited 1 after 2.0s".
    pub fn exits(&self, now: Instant) -> impl Iterator<Item = String> + '_ {
        self.exits.iter().rev().map(move |e| {
            let ago = Age(now.saturating_duration_since(e.at));
            match e.ran {
                Some(ran) => format!("{ago} ago: {} after {}", e.how, Age(ran)),
                None => format!("{ago} ago: {}", e.how),
            }
        })
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
                how: format!("exited {i}"),
                ran: Some(Duration::from_secs(1)),
            });
        }
        let now = t0 + Duration::from_secs(12);
        let exits: Vec<String> = h.exits(now).collect();
        assert_eq!(exits.len(), EXITS);
        assert_eq!(exits[0], "1.0s ago: exited 11 after 1.0s");
        assert_eq!(h.last(), "exited 11 after 1.0s");
        assert!(!h.failing());
        h.exited(Exit {
            at: now,
            how: "unable to exec /x: No such file or directory".into(),
            ran: None,
        });
        assert!(h.failing());
        for i in 0..20 {
            h.line(&format!("line {i}"));
        }
        assert_eq!(h.lines().len(), LINES);
        h.line(&"é".repeat(LINES_BYTES));
        assert_eq!(h.lines().len(), 1, "one long line pushes out the others");
        assert!(h.lines()[0].len() <= LINES_BYTES);
    }
}
