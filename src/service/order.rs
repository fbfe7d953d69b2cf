//! Start order (`after=`): a service starts once everything it starts after is up, and
//! when going stops, it is stopped only once everything that starts after it is gone.
//! Nothing propagates later: a dependency's restart restarts none of its dependents.
//!
//! Invariant: `dependents` is rebuilt at every reload from the files' `after=` lists, so
//! a service that nothing orders costs nothing here; a cycle never gets this far (the
//! files of a cycle are invalid, see [`cycles`]).

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Effects, State, Table, Want};
use crate::config::Restart;

impl Table {
    /// Rebuilds, after a reload, who starts after whom.
    pub(super) fn index_order(&mut self) {
        self.dependents.clear();
        for (name, s) in &self.services {
            for dep in &s.settings.life().after {
                self.dependents
                    .entry(dep.clone())
                    .or_default()
                    .push(name.clone());
            }
        }
    }

    /// The first service `name` starts after that is not up yet; None when all are.
    pub(super) fn waits_for(&self, name: &str) -> Option<String> {
        let after = &self.services[name].settings.life().after;
        after.iter().find(|dep| !self.is_up(dep)).cloned()
    }

    /// Every service `name` starts after that is not up yet, for `going status`.
    pub(super) fn waiting_for(&self, name: &str) -> Vec<&str> {
        let after = &self.services[name].settings.life().after;
        (after.iter())
            .filter(|d| !self.is_up(d))
            .map(String::as_str)
            .collect()
    }

    /// Up, as those that start after a service wait for it: running and ready (exec'd,
    /// where it does not say), or done with success; a one-shot (`restart=never`) only
    /// once done: what starts after it needs its work finished.
    pub(super) fn is_up(&self, name: &str) -> bool {
        self.services.get(name).is_some_and(|s| {
            let once = s.settings.life().restart == Restart::Never;
            s.want != Want::Gone
                && match s.state {
                    State::Running { ready, .. } => ready.is_some() && !once,
                    State::Done { ok } => ok,
                    _ => false,
                }
        })
    }

    /// `name` came up: those that wait for it, or wait out a quarantine (likely for want of
    /// it), start now if nothing else keeps them.
    pub(super) fn up(&mut self, name: &str, fx: &mut impl Effects, now: Instant) {
        let Some(dependents) = self.dependents.get(name).cloned() else {
            return;
        };
        for d in dependents {
            let Some(s) = self.services.get(&d) else {
                continue;
            };
            let waits =
                s.want == Want::Up && matches!(s.state, State::Blocked | State::Waiting { .. });
            if waits && self.waits_for(&d).is_none() {
                self.begin(&d, fx, now);
            }
        }
    }

    /// Whether a process of a service that starts after `name` is still there.
    pub(super) fn has_live_dependents(&self, name: &str) -> bool {
        (self.dependents.get(name).into_iter().flatten())
            .any(|d| self.services.get(d).is_some_and(|s| s.state.busy()))
    }

    /// A service that started `after` these is gone; while going stops, they may be
    /// stopped now.
    pub(super) fn dropped(&mut self, after: &[String], fx: &mut impl Effects, now: Instant) {
        if !self.shutting_down {
            return;
        }
        for dep in after {
            // Whatever its state (a one-shot done is still in the table); one on its way
            // out already is left to it.
            let waiting = (self.services.get(dep)).is_some_and(|s| s.want == Want::Gone);
            if waiting && !self.has_live_dependents(dep) {
                self.stop(dep, fx, now);
            }
        }
    }
}

impl Table {
    /// The files of a reload whose `after=` make a cycle, with the services they leave
    /// as they are (`unchanged`, not read again), become invalid: every file of the cycle
    /// gets the error, spelled out, at the line of its `after=`. A file not read again is
    /// taken out of `unchanged` for it. Returns the names made invalid, which the next
    /// reload must read again: the cycle may be gone by then by another file's edit.
    pub fn cycles(
        &self,
        confdir: &std::path::Path,
        files: &mut BTreeMap<String, crate::config::Parsed>,
        unchanged: &mut Vec<String>,
    ) -> Vec<String> {
        let mut graph: BTreeMap<&str, &[String]> = BTreeMap::new();
        for (name, p) in files.iter() {
            // An invalid file leaves its service running as it was: with its old `after=`.
            let current = self.services.get(name).map(|s| &s.settings);
            match (p, current) {
                (Ok(s), _) | (Err(_), Some(s)) => graph.insert(name, &s.life().after),
                (Err(_), None) => None,
            };
        }
        for name in unchanged.iter() {
            if let Some(s) = self.services.get(name) {
                graph.insert(name, &s.settings.life().after);
            }
        }
        if graph.values().all(|a| a.is_empty()) {
            return Vec::new();
        }
        let found: Vec<(String, String, usize)> = (cycles(&graph).into_iter())
            .map(|(name, spelled)| {
                let line = match files.get(name) {
                    Some(Ok(s)) => s.life().after_line,
                    _ => self
                        .services
                        .get(name)
                        .map_or(0, |s| s.settings.life().after_line),
                };
                (name.to_string(), spelled, line)
            })
            .collect();
        let mut made = Vec::new();
        for (name, spelled, line) in found {
            if files.get(&name).is_some_and(|p| p.is_err()) {
                continue; // its own errors say why it is not read
            }
            unchanged.retain(|n| *n != name);
            let error = crate::config::FileError::new(
                confdir.join(&name),
                line,
                format!("after: a cycle: {spelled}"),
            );
            files.insert(name.clone(), Err(vec![error]));
            made.push(name);
        }
        made
    }
}

/// The cycles of `after=` among `services` (each with the services it starts after):
/// every service in a cycle, with the cycle spelled out from it (`web -> db -> web`).
/// Tarjan's strongly connected components: a component of more than one service, or of
/// one that starts after itself, is a cycle.
pub fn cycles<'a>(services: &BTreeMap<&'a str, &'a [String]>) -> BTreeMap<&'a str, String> {
    // Iterative, with a stack of its own: a chain of 25,000 `after=` must not overflow
    // going's stack (init would restart it in a loop).
    let g = services;
    let next_of = |v: &'a str, i: usize| {
        (g[v].get(i..).into_iter().flatten())
            .enumerate()
            .find_map(|(k, n)| g.get_key_value(n.as_str()).map(|e| (i + k, *e.0)))
    };
    let mut index: BTreeMap<&str, (usize, usize)> = BTreeMap::new(); // (index, lowlink)
    let (mut stack, mut on_stack) = (Vec::new(), std::collections::BTreeSet::new());
    let mut found: Vec<Vec<&str>> = Vec::new();
    for &root in g.keys() {
        if index.contains_key(root) {
            continue;
        }
        // (node, where its walk of its `after` list is)
        let mut walk: Vec<(&str, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut at)) = walk.last_mut() {
            if *at == 0 && !index.contains_key(v) {
                let i = index.len();
                index.insert(v, (i, i));
                stack.push(v);
                on_stack.insert(v);
            }
            match next_of(v, *at) {
                Some((k, n)) => {
                    *at = k + 1;
                    if !index.contains_key(n) {
                        walk.push((n, 0));
                    } else if on_stack.contains(n) {
                        let low = index[n].0.min(index[v].1);
                        index.get_mut(v).unwrap().1 = low;
                    }
                }
                None => {
                    walk.pop();
                    if let Some(&(parent, _)) = walk.last() {
                        let low = index[v].1.min(index[parent].1);
                        index.get_mut(parent).unwrap().1 = low;
                    }
                    if index[v].0 == index[v].1 {
                        let mut part = Vec::new();
                        while let Some(u) = stack.pop() {
                            on_stack.remove(u);
                            part.push(u);
                            if u == v {
                                break;
                            }
                        }
                        if part.len() > 1 || g[v].iter().any(|n| n == v) {
                            found.push(part);
                        }
                    }
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for part in found {
        let members: std::collections::BTreeSet<&str> = part.iter().copied().collect();
        // One cycle spelled, and turned for each of its services; a breadth-first search
        // only for those of the component that are not on it.
        let first = spell(part[0], &members, services);
        let ring = &first[..first.len() - 1];
        let at: BTreeMap<&str, usize> = ring.iter().enumerate().map(|(i, &v)| (v, i)).collect();
        for &start in &part {
            let spelled = match at.get(start) {
                Some(&i) => shorten(ring.len() + 1, |k| ring[(i + k) % ring.len()]),
                None => {
                    let path = spell(start, &members, services);
                    shorten(path.len(), |k| path[k])
                }
            };
            out.insert(start, spelled);
        }
    }
    out
}

/// The `len` services of a cycle, `at(0)` to `at(len - 1)`, joined with ` -> `; a long
/// one is shortened in the middle, so that a ring of thousands spells no megabytes into
/// each of its files' errors.
fn shorten<'a>(len: usize, at: impl Fn(usize) -> &'a str) -> String {
    const KEEP: usize = 4;
    if len <= 3 * KEEP {
        return (0..len).map(at).collect::<Vec<_>>().join(" -> ");
    }
    let head: Vec<&str> = (0..KEEP).map(&at).collect();
    let tail: Vec<&str> = (len - KEEP..len).map(&at).collect();
    format!(
        "{} -> … ({} more) -> {}",
        head.join(" -> "),
        len - 2 * KEEP,
        tail.join(" -> ")
    )
}

/// A cycle through `start` within the component `part`: `start, …, start`.
fn spell<'a>(
    start: &'a str,
    part: &std::collections::BTreeSet<&'a str>,
    g: &BTreeMap<&'a str, &'a [String]>,
) -> Vec<&'a str> {
    // Breadth first from `start`, within the component, until an edge leads back to it.
    let mut from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for n in g[v].iter().map(String::as_str).filter(|n| part.contains(n)) {
            if n == start {
                let mut path = vec![v];
                while *path.last().unwrap() != start {
                    path.push(from[path.last().unwrap()]);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if n != start && !from.contains_key(n) {
                from.insert(n, v);
                queue.push_back(n);
            }
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&'static str, &[&str])]) -> Vec<(&'static str, Vec<String>)> {
        (edges.iter())
            .map(|(n, a)| (*n, a.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn found(edges: &[(&'static str, &[&str])]) -> Vec<(String, String)> {
        let g = graph(edges);
        let map: BTreeMap<&str, &[String]> = g.iter().map(|(n, a)| (*n, &a[..])).collect();
        let c = cycles(&map);
        c.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn cycles_are_found_and_spelled_from_each_of_their_services() {
        assert!(found(&[("web", &["db"]), ("db", &[]), ("cache", &["db", "nosuch"])]).is_empty());
        assert_eq!(
            found(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]),
            [
                ("a".into(), "a -> b -> c -> a".into()),
                ("b".into(), "b -> c -> a -> b".into()),
                ("c".into(), "c -> a -> b -> c".into()),
            ]
        );
        assert_eq!(
            found(&[("me", &["me"])]),
            [("me".into(), "me -> me".into())]
        );
        // Two cycles through one service: each spelled from each of its own.
        let two: BTreeMap<String, String> =
            found(&[("a", &["b", "c"]), ("b", &["a"]), ("c", &["a"])])
                .into_iter()
                .collect();
        assert_eq!(two["c"], "c -> a -> c");
        assert_eq!(two["b"], "b -> a -> b");
    }

    #[test]
    fn a_chain_or_a_ring_of_fifty_thousand_needs_no_deep_stack_nor_quadratic_time() {
        let n = 50_000;
        let name = |i: usize| format!("s{i}");
        let after: Vec<Vec<String>> = (0..n).map(|i| vec![name(i + 1)]).collect();
        let names: Vec<String> = (0..n).map(name).collect();
        let mut g: BTreeMap<&str, &[String]> = BTreeMap::new();
        for (i, a) in after.iter().enumerate() {
            g.insert(&names[i], &a[..]);
        }
        assert!(cycles(&g).is_empty(), "a chain");
        let back = [name(0)];
        g.insert(&names[n - 1], &back[..]);
        let ring = cycles(&g);
        assert_eq!(ring.len(), n);
        let s7 = &ring["s7"];
        assert_eq!(
            s7,
            &format!(
                "s7 -> s8 -> s9 -> s10 -> … ({} more) -> s4 -> s5 -> s6 -> s7",
                n - 7
            )
        );
    }
}
