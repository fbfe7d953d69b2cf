//! The cgroup limit keys of a service file — `memory_max`, `memory_high`,
//! `memory_swap_max`, `pids_max`, `cpu_weight`, `cpu_max`, `io_weight` — parsed and
//! validated into [`Limits`]; the file and text each becomes, the controller each needs,
//! and the check that names a controller going cannot have.
//!
//! Invariants: no system call here. A `Limits` holds only values the kernel accepts; its
//! default sets nothing and costs nothing (no file written, no controller enabled, no
//! fingerprint record). A key's value is always written as the same text ([`Key::text`]),
//! so a reload compares `Limits`, never the files; a key that goes away is written back
//! to the kernel's default, so that a limit never outlives its line.

use std::fmt;

/// A controller of cgroup v2, as `cgroup.controllers` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    Cpuset,
    Cpu,
    Io,
    Memory,
    Hugetlb,
    Pids,
    Rdma,
    Misc,
    Dmem,
}

const CONTROLLERS: [(Controller, &str); 9] = [
    (Controller::Cpuset, "cpuset"),
    (Controller::Cpu, "cpu"),
    (Controller::Io, "io"),
    (Controller::Memory, "memory"),
    (Controller::Hugetlb, "hugetlb"),
    (Controller::Pids, "pids"),
    (Controller::Rdma, "rdma"),
    (Controller::Misc, "misc"),
    (Controller::Dmem, "dmem"),
];

impl Controller {
    pub fn name(self) -> &'static str {
        CONTROLLERS[self as usize].1
    }

    pub fn by_name(name: &str) -> Option<Controller> {
        CONTROLLERS.iter().find(|c| c.1 == name).map(|c| c.0)
    }
}

/// A set of controllers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controllers(u16);

impl Controllers {
    pub const NONE: Controllers = Controllers(0);

    /// A `cgroup.controllers` or `cgroup.subtree_control` line; names going does not know
    /// (a newer kernel's) are left out.
    pub fn parse(text: &str) -> Controllers {
        (text.split_whitespace())
            .filter_map(Controller::by_name)
            .fold(Controllers::NONE, Controllers::with)
    }

    pub fn with(self, c: Controller) -> Controllers {
        Controllers(self.0 | 1 << c as u16)
    }

    pub fn contains(self, c: Controller) -> bool {
        self.0 & 1 << c as u16 != 0
    }

    pub fn union(self, other: Controllers) -> Controllers {
        Controllers(self.0 | other.0)
    }

    pub fn minus(self, other: Controllers) -> Controllers {
        Controllers(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Controller> {
        CONTROLLERS
            .iter()
            .map(|c| c.0)
            .filter(move |c| self.contains(*c))
    }

    /// What `cgroup.subtree_control` takes to enable (`+`) or disable (`-`) them all.
    pub fn subtree_text(self, sign: char) -> String {
        let words: Vec<String> = self.iter().map(|c| format!("{sign}{}", c.name())).collect();
        words.join(" ")
    }
}

/// Names, as the kernel lists them; `none` for the empty set.
impl fmt::Display for Controllers {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Controller::name).collect();
        f.write_str(&names.join(" "))
    }
}

/// A limit key of a service file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    MemoryMax,
    MemoryHigh,
    MemorySwapMax,
    PidsMax,
    CpuWeight,
    CpuMax,
    IoWeight,
}

/// Per key: its name in a service file, its file in the cgroup, the controller it needs,
/// and the text that puts the kernel's default back.
const KEYS: [(Key, &str, &str, Controller, &str); 7] = [
    (
        Key::MemoryMax,
        "memory_max",
        "memory.max",
        Controller::Memory,
        "max",
    ),
    (
        Key::MemoryHigh,
        "memory_high",
        "memory.high",
        Controller::Memory,
        "max",
    ),
    (
        Key::MemorySwapMax,
        "memory_swap_max",
        "memory.swap.max",
        Controller::Memory,
        "max",
    ),
    (
        Key::PidsMax,
        "pids_max",
        "pids.max",
        Controller::Pids,
        "max",
    ),
    (
        Key::CpuWeight,
        "cpu_weight",
        "cpu.weight",
        Controller::Cpu,
        "100",
    ),
    (
        Key::CpuMax,
        "cpu_max",
        "cpu.max",
        Controller::Cpu,
        "max 100000",
    ),
    (
        Key::IoWeight,
        "io_weight",
        "io.weight",
        Controller::Io,
        "default 100",
    ),
];

/// cpu.max: the period `50%` means (100 ms), and the kernel's bounds (kernel/sched/core.c).
const PERIOD: u64 = 100_000;
const MIN_QUOTA: u64 = 1_000;
const MAX_QUOTA: u64 = (1 << 44) - 1;
const MAX_PERIOD: u64 = 1_000_000;

impl Key {
    pub const ALL: [Key; 7] = [
        Key::MemoryMax,
        Key::MemoryHigh,
        Key::MemorySwapMax,
        Key::PidsMax,
        Key::CpuWeight,
        Key::CpuMax,
        Key::IoWeight,
    ];

    /// `memory_max`, as in a service file.
    pub fn name(self) -> &'static str {
        KEYS[self as usize].1
    }

    #[cfg(test)]
    pub fn by_name(name: &str) -> Option<Key> {
        KEYS.iter().find(|k| k.1 == name).map(|k| k.0)
    }

    /// `memory.max`, the file in the service's cgroup.
    pub fn file(self) -> &'static str {
        KEYS[self as usize].2
    }

    pub fn controller(self) -> Controller {
        KEYS[self as usize].3
    }

    /// What the file holds when the key is not set.
    pub fn default_text(self) -> &'static str {
        KEYS[self as usize].4
    }

    /// The text written to [`Key::file`] for `v`.
    pub fn text(self, v: Value) -> String {
        match (self, v) {
            (Key::CpuMax, Value::Max) => format!("max {PERIOD}"),
            (_, Value::Max) => "max".into(),
            (Key::IoWeight, Value::Num(n)) => format!("default {n}"),
            (_, Value::Num(n)) => n.to_string(),
            (_, Value::Cpu { quota, period }) => format!("{quota} {period}"),
        }
    }

    /// `v` as an admin writes it (`100M`, `50%`), for messages.
    pub fn show(self, v: Value) -> String {
        match (self, v) {
            (_, Value::Max) => "max".into(),
            (Key::MemoryMax | Key::MemoryHigh | Key::MemorySwapMax, Value::Num(n)) => size(n),
            (_, Value::Num(n)) => n.to_string(),
            (_, Value::Cpu { quota, period }) if period == PERIOD => {
                let frac = format!("{:03}", quota % 1000);
                match frac.trim_end_matches('0') {
                    "" => format!("{}%", quota / 1000),
                    f => format!("{}.{f}%", quota / 1000),
                }
            }
            (_, Value::Cpu { quota, period }) => format!("{quota} {period}"),
        }
    }

    /// Parses a value of this key, with the message a service file's line gets.
    pub fn parse(self, v: &str) -> Result<Value, String> {
        let name = self.name();
        match self {
            Key::MemoryMax | Key::MemoryHigh | Key::MemorySwapMax => {
                let bad = || format!("{name} must be a size like 512M, or max, not \"{v}\"");
                let n = match v {
                    "max" => return Ok(Value::Max),
                    _ => parse_size(v).ok_or_else(bad)?,
                };
                // The kernel counts whole pages: less than one is no memory at all, which
                // no service survives. No swap at all, though, is a common wish.
                if self != Key::MemorySwapMax && n < 4096 {
                    return Err(format!(
                        "{name} must be 4K or more (the kernel counts whole pages), not \"{v}\""
                    ));
                }
                Ok(Value::Num(n))
            }
            Key::PidsMax => match v {
                "max" => Ok(Value::Max),
                _ => (v.parse::<u64>().ok())
                    .filter(|n| (1..=i32::MAX as u64).contains(n) && digits(v))
                    .map(Value::Num)
                    .ok_or_else(|| {
                        format!(
                            "{name} must be a number of processes (1 or more), or max, not \"{v}\""
                        )
                    }),
            },
            Key::CpuWeight | Key::IoWeight => (v.parse::<u64>().ok())
                .filter(|n| (1..=10_000).contains(n) && digits(v))
                .map(Value::Num)
                .ok_or_else(|| format!("{name} must be a number from 1 to 10000, not \"{v}\"")),
            Key::CpuMax => parse_cpu_max(v),
        }
    }
}

/// A key's value: `max` (no limit), a number (bytes, processes, a weight), or a CPU
/// bandwidth (microseconds of CPU time per period).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Max,
    Num(u64),
    Cpu { quota: u64, period: u64 },
}

fn digits(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

/// `1234`, `512K`, `512M`, `2G`, `1T` (powers of 1024; the suffix in either case).
fn parse_size(v: &str) -> Option<u64> {
    let (num, shift) = match v.as_bytes().last()?.to_ascii_uppercase() {
        b'K' => (&v[..v.len() - 1], 10),
        b'M' => (&v[..v.len() - 1], 20),
        b'G' => (&v[..v.len() - 1], 30),
        b'T' => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    if !digits(num) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// A byte count with the largest suffix that divides it.
fn size(n: u64) -> String {
    let suffix = [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')]
        .into_iter()
        .find(|(shift, _)| n != 0 && n.is_multiple_of(1u64 << shift));
    match suffix {
        Some((shift, s)) => format!("{}{s}", n >> shift),
        None => n.to_string(),
    }
}

/// `max`; `50%` or `12.5%` of one CPU (over a 100 ms period); `QUOTA PERIOD` in µs.
fn parse_cpu_max(v: &str) -> Result<Value, String> {
    let bad = || {
        format!(
            "cpu_max must be a share of one CPU like 50% or 150%, QUOTA PERIOD in microseconds, or max, not \"{v}\""
        )
    };
    if v == "max" {
        return Ok(Value::Max);
    }
    let (quota, period) = if let Some(pct) = v.strip_suffix('%') {
        let (int, frac) = pct.split_once('.').unwrap_or((pct, ""));
        if !digits(int) || frac.len() > 3 || !(frac.is_empty() || digits(frac)) {
            return Err(bad());
        }
        // 1% of a 100 ms period is 1000 µs: thousandths of a percent are whole µs.
        let thousandths: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
        let quota = (int.parse::<u64>().ok())
            .and_then(|i| i.checked_mul(1000)?.checked_add(thousandths))
            .ok_or_else(bad)?;
        (quota, PERIOD)
    } else {
        let mut words = v.split_whitespace();
        let num = |w: Option<&str>| w.filter(|w| digits(w)).and_then(|w| w.parse::<u64>().ok());
        match (num(words.next()), num(words.next()), words.next()) {
            (Some(q), Some(p), None) => (q, p),
            _ => return Err(bad()),
        }
    };
    if !(MIN_QUOTA..=MAX_PERIOD).contains(&period) {
        return Err(format!(
            "cpu_max: the period must be 1000 to 1000000 microseconds, not {period}"
        ));
    }
    if !(MIN_QUOTA..=MAX_QUOTA).contains(&quota) {
        return Err(format!(
            "cpu_max: the quota must be 1000 microseconds (1% of one CPU) or more, and at most {MAX_QUOTA}, not \"{v}\""
        ));
    }
    Ok(Value::Cpu { quota, period })
}

/// The cgroup limits of one service. The default sets nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits([Option<Value>; 7]);

impl Limits {
    /// No key set.
    pub const NONE: Limits = Limits([None; 7]);

    pub fn get(&self, key: Key) -> Option<Value> {
        self.0[key as usize]
    }

    /// Sets `key` from its text in a service file; the error is the line's message.
    pub fn set(&mut self, key: Key, text: &str) -> Result<(), String> {
        self.0[key as usize] = Some(key.parse(text)?);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// The keys set, with their values.
    pub fn iter(&self) -> impl Iterator<Item = (Key, Value)> + '_ {
        Key::ALL
            .into_iter()
            .filter_map(|k| self.get(k).map(|v| (k, v)))
    }

    /// The controllers these limits need.
    pub fn controllers(&self) -> Controllers {
        (self.iter()).fold(Controllers::NONE, |c, (k, _)| c.with(k.controller()))
    }

    /// `key=value` as the admin reads it (`memory_max=100M`), for messages such as the
    /// OOM killer's; None when `key` is not set.
    pub fn show(&self, key: Key) -> Option<String> {
        self.get(key)
            .map(|v| format!("{}={}", key.name(), key.show(v)))
    }

    /// What to write, file by file, to go from `old` to `self`: the keys whose values
    /// differ, a key no longer set getting its default back. From `Limits::default()`,
    /// that is every key set.
    pub fn changes(&self, old: &Limits) -> Vec<(Key, String)> {
        (Key::ALL.into_iter())
            .filter(|k| self.get(*k) != old.get(*k))
            .map(|k| match self.get(k) {
                Some(v) => (k, k.text(v)),
                None => (k, k.default_text().to_string()),
            })
            .collect()
    }
}

/// What going can give its services: no cgroups at all (and why), or these controllers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Available {
    Off(String),
    Controllers {
        have: Controllers,
        /// Controllers the cgroup v1 hierarchy holds, and where it is mounted.
        v1: Vec<(Controller, String)>,
        /// Why going cannot have more, when it is not only the system's choice.
        note: Option<String>,
    },
}

impl Available {
    /// Whether `key` can be applied; the error names what is missing, as a service file's
    /// line gets it (`going check` shows it).
    pub fn check(&self, key: Key) -> Result<(), String> {
        let (name, c) = (key.name(), key.controller().name());
        match self {
            Available::Off(why) => Err(format!(
                "{name} needs the {c} controller of cgroup v2, and going uses no cgroups: {why}"
            )),
            Available::Controllers { have, .. } if have.contains(key.controller()) => Ok(()),
            Available::Controllers { have, v1, note } => {
                let mut why = format!("available: {have}");
                if let Some((_, at)) = v1.iter().find(|(v, _)| *v == key.controller()) {
                    why += &format!("; {c} is bound to cgroup v1 at {at}");
                }
                if let Some(note) = note {
                    why += &format!("; {note}");
                }
                Err(format!(
                    "{name} needs the {c} controller, which this system does not offer to going ({why})"
                ))
            }
        }
    }
}

impl Limits {
    /// Every key set that cannot be applied, with its message.
    pub fn check(&self, available: &Available) -> Vec<(Key, String)> {
        (self.iter())
            .filter_map(|(k, _)| available.check(k).err().map(|e| (k, e)))
            .collect()
    }
}

/// The `oom_kill` count of a `memory.events` text.
pub fn oom_kills(memory_events: &str) -> Option<u64> {
    field(memory_events, "oom_kill")
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &str, v: &str) -> Result<Value, String> {
        Key::by_name(key).unwrap().parse(v)
    }

    #[test]
    fn every_key_has_its_file_controller_and_default() {
        for (i, k) in Key::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i);
            assert_eq!(Key::by_name(k.name()), Some(k));
            assert_eq!(k.name().replace('_', "."), k.file());
        }
        assert_eq!(Key::MemorySwapMax.file(), "memory.swap.max");
        assert_eq!(Key::by_name("memory.max"), None);
        let c: Vec<&str> = Key::ALL.iter().map(|k| k.controller().name()).collect();
        assert_eq!(
            c,
            ["memory", "memory", "memory", "pids", "cpu", "cpu", "io"]
        );
    }

    #[test]
    fn sizes() {
        let n = |v| one("memory_max", v);
        assert_eq!(n("512M"), Ok(Value::Num(512 << 20)));
        assert_eq!(n("512m"), Ok(Value::Num(512 << 20)));
        assert_eq!(n("4096"), Ok(Value::Num(4096)));
        assert_eq!(n("4K"), Ok(Value::Num(4096)));
        assert_eq!(n("2G"), Ok(Value::Num(2 << 30)));
        assert_eq!(n("1T"), Ok(Value::Num(1 << 40)));
        assert_eq!(n("max"), Ok(Value::Max));
        for bad in [
            "abc",
            "",
            "M",
            "-1M",
            "+5M",
            "1.5G",
            "5MB",
            "5 M",
            "MAX",
            "20000000T",
        ] {
            assert_eq!(
                n(bad),
                Err(format!(
                    "memory_max must be a size like 512M, or max, not \"{bad}\""
                )),
                "{bad}"
            );
        }
        assert_eq!(
            n("100"),
            Err(
                "memory_max must be 4K or more (the kernel counts whole pages), not \"100\"".into()
            )
        );
        assert!(one("memory_high", "0").is_err());
        assert_eq!(one("memory_swap_max", "0"), Ok(Value::Num(0)));
        assert_eq!(
            one("memory_high", "x"),
            Err("memory_high must be a size like 512M, or max, not \"x\"".into())
        );
    }

    #[test]
    fn counts_and_weights() {
        assert_eq!(one("pids_max", "64"), Ok(Value::Num(64)));
        assert_eq!(one("pids_max", "max"), Ok(Value::Max));
        for bad in ["0", "-1", "+3", "1e3", "", "4294967296"] {
            assert_eq!(
                one("pids_max", bad),
                Err(format!(
                    "pids_max must be a number of processes (1 or more), or max, not \"{bad}\""
                ))
            );
        }
        for key in ["cpu_weight", "io_weight"] {
            assert_eq!(one(key, "1"), Ok(Value::Num(1)));
            assert_eq!(one(key, "10000"), Ok(Value::Num(10000)));
            for bad in ["0", "10001", "max", "+5", "50%"] {
                assert_eq!(
                    one(key, bad),
                    Err(format!(
                        "{key} must be a number from 1 to 10000, not \"{bad}\""
                    ))
                );
            }
        }
    }

    #[test]
    fn cpu_max() {
        let c = |v| one("cpu_max", v);
        let cpu = |quota, period| Ok(Value::Cpu { quota, period });
        assert_eq!(c("50%"), cpu(50_000, 100_000));
        assert_eq!(c("150%"), cpu(150_000, 100_000));
        assert_eq!(c("12.5%"), cpu(12_500, 100_000));
        assert_eq!(c("1%"), cpu(1_000, 100_000));
        assert_eq!(c("20000 50000"), cpu(20_000, 50_000));
        assert_eq!(c(" 20000   50000 "), cpu(20_000, 50_000));
        assert_eq!(c("max"), Ok(Value::Max));
        for bad in [
            "abc",
            "%",
            "50",
            "50 %",
            "-5%",
            "1.2345%",
            "5.%x",
            "1 2 3",
            "max 100000",
        ] {
            assert_eq!(
                c(bad),
                Err(format!("cpu_max must be a share of one CPU like 50% or 150%, QUOTA PERIOD in microseconds, or max, not \"{bad}\"")),
                "{bad}"
            );
        }
        assert!(c("0.5%")
            .unwrap_err()
            .contains("the quota must be 1000 microseconds"));
        assert!(c("999 100000").unwrap_err().contains("the quota must be"));
        assert_eq!(
            c("5000 999"),
            Err("cpu_max: the period must be 1000 to 1000000 microseconds, not 999".into())
        );
        assert!(c("5000 1000001").is_err());
        assert!(c("99999999999999999999%").is_err());
    }

    #[test]
    fn what_is_written_and_shown() {
        let mut l = Limits::default();
        for (k, v) in [
            ("memory_max", "100M"),
            ("memory_high", "max"),
            ("memory_swap_max", "0"),
            ("pids_max", "64"),
            ("cpu_weight", "200"),
            ("cpu_max", "12.5%"),
            ("io_weight", "300"),
        ] {
            l.set(Key::by_name(k).unwrap(), v).unwrap();
        }
        let files: Vec<(&str, String)> = (l.changes(&Limits::default()).into_iter())
            .map(|(k, t)| (k.file(), t))
            .collect();
        let want = [
            ("memory.max", "104857600"),
            ("memory.high", "max"),
            ("memory.swap.max", "0"),
            ("pids.max", "64"),
            ("cpu.weight", "200"),
            ("cpu.max", "12500 100000"),
            ("io.weight", "default 300"),
        ];
        assert_eq!(files, want.map(|(f, t)| (f, t.to_string())));
        assert_eq!(l.show(Key::MemoryMax).unwrap(), "memory_max=100M");
        assert_eq!(l.show(Key::CpuMax).unwrap(), "cpu_max=12.5%");
        assert_eq!(l.show(Key::MemorySwapMax).unwrap(), "memory_swap_max=0");
        let show = |k: Key, v| k.show(v);
        assert_eq!(show(Key::MemoryMax, Value::Num(1536 << 20)), "1536M");
        assert_eq!(show(Key::MemoryMax, Value::Num(4097)), "4097");
        assert_eq!(
            show(
                Key::CpuMax,
                Value::Cpu {
                    quota: 150_000,
                    period: PERIOD
                }
            ),
            "150%"
        );
        assert_eq!(
            show(
                Key::CpuMax,
                Value::Cpu {
                    quota: 1,
                    period: 7
                }
            ),
            "1 7"
        );
        assert_eq!(Key::CpuMax.text(Value::Max), "max 100000");
        assert_eq!(
            l.controllers().to_string(),
            "cpu io memory pids",
            "each controller once"
        );
    }

    #[test]
    fn the_default_costs_nothing() {
        let l = Limits::default();
        assert!(l.is_empty());
        assert!(l.controllers().is_empty());
        assert_eq!(l.changes(&Limits::default()), []);
        let off = Available::Off("no cgroup2 filesystem is mounted".into());
        assert_eq!(l.check(&off), []);
    }

    #[test]
    fn a_reload_writes_what_differs_and_undoes_what_went() {
        let mut old = Limits::default();
        old.set(Key::MemoryMax, "100M").unwrap();
        old.set(Key::CpuMax, "50%").unwrap();
        old.set(Key::IoWeight, "50").unwrap();
        let mut new = old;
        new.set(Key::MemoryMax, "200M").unwrap();
        new.0[Key::CpuMax as usize] = None;
        new.0[Key::IoWeight as usize] = None;
        new.set(Key::PidsMax, "10").unwrap();
        let ch: Vec<(&str, String)> = (new.changes(&old).into_iter())
            .map(|(k, t)| (k.file(), t))
            .collect();
        assert_eq!(
            ch,
            [
                ("memory.max", "209715200".to_string()),
                ("pids.max", "10".into()),
                ("cpu.max", "max 100000".into()),
                ("io.weight", "default 100".into()),
            ]
        );
        assert_eq!(new.changes(&new), []);
    }

    #[test]
    fn a_missing_controller_is_named() {
        let mut l = Limits::default();
        l.set(Key::MemoryMax, "100M").unwrap();
        l.set(Key::PidsMax, "10").unwrap();
        let here = Available::Controllers {
            have: Controllers::parse("hugetlb"),
            v1: vec![],
            note: None,
        };
        assert_eq!(
            l.check(&here),
            [
                (
                    Key::MemoryMax,
                    "memory_max needs the memory controller, which this system does not offer to going (available: hugetlb)".to_string()
                ),
                (
                    Key::PidsMax,
                    "pids_max needs the pids controller, which this system does not offer to going (available: hugetlb)".to_string()
                )
            ]
        );
        let hybrid = Available::Controllers {
            have: Controllers::NONE,
            v1: vec![(Controller::Memory, "/sys/fs/cgroup/memory".into())],
            note: Some("going shares /x with other processes".into()),
        };
        assert_eq!(
            hybrid.check(Key::MemoryHigh).unwrap_err(),
            "memory_high needs the memory controller, which this system does not offer to going (available: none; memory is bound to cgroup v1 at /sys/fs/cgroup/memory; going shares /x with other processes)"
        );
        let full = Available::Controllers {
            have: Controllers::parse("cpuset cpu io memory pids"),
            v1: vec![],
            note: None,
        };
        assert_eq!(l.check(&full), []);
        assert_eq!(
            Available::Off("no cgroup2 filesystem is mounted".into())
                .check(Key::CpuWeight)
                .unwrap_err(),
            "cpu_weight needs the cpu controller of cgroup v2, and going uses no cgroups: no cgroup2 filesystem is mounted"
        );
    }

    #[test]
    fn controller_sets() {
        let c = Controllers::parse("cpuset cpu io memory hugetlb pids rdma misc dmem future");
        assert_eq!(c.iter().count(), 9);
        let mp = Controllers::parse("pids memory");
        assert_eq!(mp.to_string(), "memory pids");
        assert_eq!(mp.subtree_text('+'), "+memory +pids");
        assert!(!c.minus(mp).contains(Controller::Memory));
        assert_eq!(Controllers::parse("\n").to_string(), "none");
        assert_eq!(
            mp.union(Controllers::parse("io")).subtree_text('-'),
            "-io -memory -pids"
        );
    }

    #[test]
    fn flat_keyed_files() {
        let events = "low 0\nhigh 3\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(events), Some(1));
        assert_eq!(field(events, "oom"), Some(2));
        assert_eq!(
            field("usage_usec 1234\nuser_usec 1000\n", "usage_usec"),
            Some(1234)
        );
        assert_eq!(field("populated 1\nfrozen 0\n", "populated"), Some(1));
        assert_eq!(oom_kills(""), None);
    }
}
