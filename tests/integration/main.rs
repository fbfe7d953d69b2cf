//! The integration tests: the real going binary in temporary directories, one module per
//! area. One test binary, so that its tests run side by side (most of their time is
//! waiting for going), with as many threads as .cargo/config.toml gives.

mod harness;

mod adoption;
mod cgroups;
mod compat;
mod container;
mod control;
mod faults;
mod going;
mod intake;
mod life;
mod links;
mod observe;
mod output;
mod rundir;
mod settings;
mod upgrade;
