//! What `going status` shows: the table of every service, everything going knows of one
//! (`going status NAME`), and all of it as one JSON document (`going status --json`),
//! with what each service costs where that is asked for. Text only: which request gets
//! which is admin.rs's business.
//!
//! Invariant: what services cost is read from /proc once per request, and only for a
//! request that shows it (`going status NAME`, the JSON, the table on a terminal wide
//! enough for it): no timer, nothing kept between requests, nothing when idle.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::exit::{NOT_RUNNING, OK, UNKNOWN};
use crate::json::Json;
use crate::log::Age;
use crate::output::escape;
use crate::service::{How, Table, View};
use crate::sys::{self, Pid};
use crate::usage::{self, Size, Usage};

/// Where the cgroup of a service is and what it says (src/cgroup.rs), None when it has none:
/// what the supervisor knows, asked only when a request shows what services cost.
pub type CgroupOf<'a> = dyn FnMut(&str) -> Option<(PathBuf, crate::cgroup::Usage)> + 'a;

/// What a service costs, and its cgroup where it has one.
#[derive(Default)]
struct Cost {
    usage: Usage,
    cgroup: Option<PathBuf>,
}

/// The version of the JSON document's layout (going(8), STATUS IN JSON): fields may be
/// added within a version; one removed, renamed or changed in meaning makes a new one.
pub const SCHEMA: u64 = 1;

/// Columns of the table left for LAST EXIT, at the least, when the cost columns are added.
const LAST_EXIT_ROOM: usize = 20;

/// The table of `going status`: name, state, pid, uptime, restarts, with PROCS, MEM and
/// CPU when `width` (the client's terminal) has room for them, and the last exit. Passes
/// over the services, widths (the cost columns' apart) then text, so that no copy of the
/// table is held.
pub fn overview(table: &Table, now: Instant, width: Option<usize>, cg: &mut CgroupOf) -> String {
    let views = || table.views(now);
    let dash = || "-".to_string();
    let cells = |v: &View, cost: Option<&Cost>| {
        let mut row = vec![
            v.name.to_string(),
            v.state.to_string(),
            v.pid.map_or_else(dash, |p| p.to_string()),
            v.up.map_or_else(dash, |u| Age(u).to_string()),
            v.restarts.to_string(),
        ];
        match cost {
            Some(Cost { usage: c, .. }) if v.group.is_some() || c.processes > 0 => row.extend([
                c.processes.to_string(),
                Size(c.memory).to_string(),
                Age(c.cpu()).to_string(),
            ]),
            Some(_) => row.extend([dash(), dash(), dash()]),
            None => {}
        }
        let last = v.exits().next();
        row.push(last.map_or_else(dash, |e| escape(e.describe(now).as_bytes())));
        row
    };
    let mut head = vec!["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST EXIT"];
    let mut width_of = head.iter().map(|h| h.len()).collect::<Vec<_>>();
    let mut rows = 1;
    for v in views() {
        rows += 1;
        for (w, cell) in width_of.iter_mut().zip(cells(&v, None)) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // The cost columns take at most 24 columns: PROCS, 6 for MEM (`999.9M`), 7 for CPU.
    let before_last: usize = width_of[..5].iter().map(|w| w + 2).sum();
    let costs = width
        .filter(|&w| before_last + 24 + LAST_EXIT_ROOM <= w)
        .map(|_| measure(views().map(|v| (v.name, v.group)), cg));
    if let Some(costs) = &costs {
        head.splice(5..5, ["PROCS", "MEM", "CPU"]);
        width_of.splice(5..5, [5, 3, 3]);
        for (v, c) in views().zip(costs) {
            let row = cells(&v, Some(c));
            for (w, cell) in width_of[5..8].iter_mut().zip(&row[5..8]) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::with_capacity(rows * (width_of.iter().sum::<usize>() + 20));
    out.push_str(&format!("{OK}\n"));
    let last = head.len() - 1;
    let mut line = |cells: Vec<String>, colour: Option<char>| {
        for (i, cell) in cells.iter().enumerate() {
            let pad = width_of[i] - cell.chars().count();
            match (i, colour) {
                (1, Some(c)) => {
                    let _ = write!(out, "\x02{c}{cell}\x03{:pad$}  ", "");
                }
                _ if i == last => out.push_str(cell),
                _ => {
                    let _ = write!(out, "{cell}{:pad$}  ", "");
                }
            }
        }
        out.push('\n');
    };
    line(head.into_iter().map(String::from).collect(), None);
    for (i, v) in views().enumerate() {
        let cost = costs.as_ref().map(|c| &c[i]);
        line(cells(&v, cost), Some(v.class));
    }
    out
}

/// What the services `of` (name, process group) cost now, in their order: those with a
/// cgroup from it, the others from one pass over /proc by their process groups; all zeros
/// for no group (nothing runs) or should /proc not be readable.
fn measure<'a>(of: impl Iterator<Item = (&'a str, Option<Pid>)>, cg: &mut CgroupOf) -> Vec<Cost> {
    let mut costs = Vec::new();
    let mut pgids = Vec::new();
    for (name, group) in of {
        let cost = match cg(name) {
            Some((path, u)) => Cost {
                usage: usage::members(&u.pids, u.memory),
                cgroup: Some(path),
            },
            None => Cost::default(),
        };
        // A service with a cgroup is not counted by its group again.
        pgids.push(if cost.cgroup.is_some() {
            0
        } else {
            group.unwrap_or(0)
        });
        costs.push(cost);
    }
    if let Ok(by_group) = usage::groups(&pgids) {
        for ((c, u), g) in costs.iter_mut().zip(by_group).zip(&pgids) {
            if *g > 1 {
                c.usage = u;
            }
        }
    }
    costs
}

/// `going status NAME…`: everything going knows of each, in `text`; the exit code.
pub fn details(
    table: &Table,
    names: &[&str],
    now: Instant,
    confdir: &Path,
    cg: &mut CgroupOf,
) -> String {
    let views = named(table, names, now);
    let costs = measure(views.iter().map(|v| of(v)), cg);
    let mut code = OK;
    let mut text = String::new();
    for (view, cost) in views.iter().zip(&costs) {
        match view {
            Ok(v) => {
                if !v.is_up() {
                    code = code.max(NOT_RUNNING);
                }
                one(&mut text, v, cost, confdir);
            }
            Err(name) => {
                code = code.max(UNKNOWN);
                let _ = writeln!(text, "!going: no such service: {name}");
            }
        }
    }
    format!("{code}\n{text}")
}

/// The name and process group of a service asked for; none for a name no service has.
fn of<'a>(v: &Result<View<'a>, &'a str>) -> (&'a str, Option<Pid>) {
    match v {
        Ok(v) => (v.name, v.group),
        Err(_) => ("", None),
    }
}

/// The services `names` asked for, each once however often it is named: a view, or the
/// name no service has.
fn named<'a>(table: &'a Table, names: &[&'a str], now: Instant) -> Vec<Result<View<'a>, &'a str>> {
    (crate::admin::unique(names).into_iter())
        .map(|name| table.view(name, now).ok_or(name))
        .collect()
}

/// One service, as `going status NAME` shows it.
fn one(out: &mut String, v: &View, cost: &Cost, confdir: &Path) {
    let _ = writeln!(out, "{}: \x02{}{}\x03", v.name, v.class, v.state);
    let mut field = |k: &str, val: String| {
        let _ = writeln!(out, "  {k:<11}{val}");
    };
    if let Some(pid) = v.pid {
        field("pid", pid.to_string());
    }
    if let Some(up) = v.up {
        field("uptime", Age(up).to_string());
    }
    if v.group.is_some() || cost.usage.processes > 0 {
        let c = &cost.usage;
        field("processes", c.processes.to_string());
        let kind = c.memory_kind.label();
        field("memory", format!("{} ({kind})", Size(c.memory)));
        field("cpu", Age(c.cpu()).to_string());
    }
    if let Some(path) = &cost.cgroup {
        field("cgroup", path.display().to_string());
    }
    let limits: Vec<String> = (crate::cgroup::Key::ALL.iter())
        .filter_map(|k| v.limits.show(*k))
        .collect();
    if !limits.is_empty() {
        field("limits", limits.join(" "));
    }
    if let Some(next) = v.next_start {
        field("next start", format!("in {}", Age(next)));
    }
    if let Some(status) = v.status {
        field("status", status.to_string());
    }
    if !v.cmd.is_empty() {
        field(
            "command",
            v.cmd.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
        );
    }
    field("file", confdir.join(v.name).display().to_string());
    field("restarts", v.restarts.to_string());
    if !v.problems.is_empty() {
        let _ = writeln!(out, "  problems in the file:");
        for p in v.problems {
            let _ = writeln!(out, "    {p}");
        }
    }
    let mut exits = v.exits().peekable();
    if exits.peek().is_some() {
        let _ = writeln!(out, "  last exits, newest first:");
        for e in exits {
            let _ = writeln!(out, "    {}", escape(e.describe(v.now).as_bytes()));
        }
    }
    let mut lines = v.lines().peekable();
    if lines.peek().is_some() {
        let _ = writeln!(out, "  last output:");
        for l in lines {
            let _ = writeln!(out, "    {l}");
        }
    }
}

/// A word of a command as it could be written back in `cmd=`: quoted when it has to be,
/// and its control characters escaped.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", escape(word.as_bytes()).replace('\'', r"'\''"))
    }
}

/// `going status --json [NAME…]`: one JSON document on one line, of every service (or
/// of those named, with the exit code `going status NAME` has), as going(8) lists its
/// fields.
pub fn json(
    table: &Table,
    names: &[&str],
    now: Instant,
    confdir: &Path,
    cg: &mut CgroupOf,
) -> String {
    let views: Vec<Result<View, &str>> = match names {
        [] => table.views(now).map(Ok).collect(),
        names => named(table, names, now),
    };
    let costs = measure(views.iter().map(|v| of(v)), cg);
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (mut code, mut unknown) = (OK, String::new());
    let mut doc = String::with_capacity(512 * views.len() + 64);
    let j = &mut Json::new(&mut doc);
    j.object().key("schema").uint(SCHEMA);
    j.key("going").str(env!("CARGO_PKG_VERSION"));
    j.key("services").array();
    for (view, cost) in views.iter().zip(&costs) {
        match view {
            Ok(v) => {
                if !names.is_empty() && !v.is_up() {
                    code = code.max(NOT_RUNNING);
                }
                service(j, v, cost, confdir, wall.as_millis() as u64);
            }
            Err(name) => {
                code = code.max(UNKNOWN);
                let _ = writeln!(unknown, "!going: no such service: {name}");
            }
        }
    }
    j.end_array().end_object();
    format!("{code}\n{doc}\n{unknown}")
}

/// One service in the JSON document; `wall`: the time now, in ms since the Unix epoch.
fn service(j: &mut Json, v: &View, cost: &Cost, confdir: &Path, wall: u64) {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    j.object().key("name").str(v.name);
    j.key("state").str(&v.state).key("up").bool(v.is_up());
    j.key("pid").opt_uint(v.pid.map(|p| p as u64));
    j.key("uptime_ms").opt_uint(v.up.map(ms));
    j.key("next_start_ms").opt_uint(v.next_start.map(ms));
    j.key("restarts").uint(v.restarts.into());
    j.key("ready")
        .opt_bool(v.ready)
        .key("status")
        .opt_str(v.status);
    j.key("command").array();
    for word in v.cmd {
        j.str(word);
    }
    j.end_array();
    let file = confdir.join(v.name);
    j.key("file")
        .bytes(std::os::unix::ffi::OsStrExt::as_bytes(file.as_os_str()));
    j.key("problems").array();
    for p in v.problems {
        j.str(p);
    }
    j.end_array().key("cgroup");
    match &cost.cgroup {
        Some(p) => j.bytes(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())),
        None => j.null(),
    };
    j.key("usage");
    match (v.group.is_some() || cost.usage.processes > 0).then_some(&cost.usage) {
        Some(c) => {
            j.object().key("processes").uint(c.processes.into());
            j.key("memory_bytes").uint(c.memory);
            j.key("memory_kind").str(c.memory_kind.label());
            j.key("cpu_ms").uint(c.cpu_ms).end_object();
        }
        None => {
            j.null();
        }
    }
    j.key("exits").array();
    for e in v.exits() {
        let ago = ms(v.now.saturating_duration_since(e.at));
        j.object().key("ago_ms").uint(ago);
        j.key("at_ms").uint(wall.saturating_sub(ago));
        j.key("ran_ms").opt_uint(e.ran.map(ms));
        j.key("how").str(&e.how.to_string());
        let (code, signal, core) = match e.how {
            How::Ended(sys::Exit::Code(c)) => (Some(c as u64), None, false),
            How::Ended(sys::Exit::Signal { sig, core }) => (None, Some(sig as u64), core),
            _ => (None, None, false),
        };
        j.key("code").opt_uint(code).key("signal").opt_uint(signal);
        j.key("core_dumped").bool(core).end_object();
    }
    j.end_array().key("lines").array();
    for line in v.lines() {
        j.str(line);
    }
    j.end_array().end_object();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_shown_as_they_could_be_written() {
        assert_eq!(quote("/usr/sbin/nginx"), "/usr/sbin/nginx");
        assert_eq!(quote("daemon off;"), "'daemon off;'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("\x1b]0;x\x07"), r"'\x1b]0;x\x07'");
    }
}
