//! cgroup v2 for services, so that no process of a service escapes it. Wired into the
//! supervisor by the cgroups issue (#16); until then nothing calls it.
#![allow(dead_code)] // wired in by the cgroups issue (#16)

mod limits;

#[allow(unused_imports)] // the rest of the module comes next
pub use limits::{Available, Controller, Controllers, Key, Limits};
