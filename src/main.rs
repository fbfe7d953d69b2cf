//! going, a small process supervisor: `main` hands the arguments to the command line and
//! leaves with the exit code it gets back.

mod admin;
mod cgroup;
mod cli;
mod client;
mod config;
mod control;
mod exit;
mod fingerprint;
mod follow;
mod json;
mod log;
mod notify;
mod output;
mod rundir;
mod service;
mod spawn;
mod state;
mod status;
mod supervisor;
mod sys;
mod upgrade;
mod usage;
mod watch;

fn main() -> std::process::ExitCode {
    cli::main(std::env::args_os().skip(1).collect())
}
