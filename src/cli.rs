//! The command line, getopt style: `going [-d CONFDIR] [-r RUNDIR] [-l SOCKET | -f]`
//! supervises, `going check [-d CONFDIR]` checks the service files. Exit codes follow
//! sysexits(3): 64 for a usage error.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config;
use crate::supervisor::{self, Options};

pub const EX_USAGE: u8 = 64;

const USAGE: &str = "\
usage: going [-d CONFDIR] [-r RUNDIR] [-l SOCKET | -f]
       going check [-d CONFDIR]
       going -h | -V

  -d CONFDIR  service files (default /etc/going.d)
  -r RUNDIR   run-time state and lock (default /run/going)
  -l SOCKET   syslog socket (default /dev/log)
  -f          log to stderr instead of syslog
  -h, --help  this help;  -V, --version  the version
";

/// Parsed options: each option letter once, with its argument if it takes one.
struct Opts(Vec<(char, Option<String>)>);

impl Opts {
    fn get(&self, c: char) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|o| o.0 == c)
            .and_then(|o| o.1.as_deref())
    }
    fn has(&self, c: char) -> bool {
        self.0.iter().any(|o| o.0 == c)
    }
}

/// getopt(3): `spec` lists the letters, a `:` after one takes an argument (attached or
/// next); `--` ends the options. Operands are refused: no command here takes any.
fn getopt(args: &[String], spec: &str) -> Result<Opts, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--" => {
                if let Some(extra) = it.next() {
                    return Err(format!("unexpected argument \"{extra}\""));
                }
            }
            "--help" => out.push(('h', None)),
            "--version" => out.push(('V', None)),
            a if a.starts_with('-') && a.len() > 1 => {
                let letters = a[1..].char_indices();
                for (i, c) in letters {
                    let Some(at) = spec.find(c).filter(|_| c != ':') else {
                        return Err(format!("unknown option -{c}"));
                    };
                    if !spec[at + 1..].starts_with(':') {
                        out.push((c, None));
                        continue;
                    }
                    let rest = &a[1 + i + c.len_utf8()..];
                    let value = if !rest.is_empty() {
                        rest.to_string()
                    } else {
                        it.next()
                            .cloned()
                            .ok_or(format!("option -{c} needs an argument"))?
                    };
                    out.push((c, Some(value)));
                    break;
                }
            }
            a => return Err(format!("unexpected argument \"{a}\"")),
        }
    }
    Ok(Opts(out))
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    let Some(args) = args
        .into_iter()
        .map(|a| a.into_string().ok())
        .collect::<Option<Vec<String>>>()
    else {
        return usage("arguments must be valid UTF-8");
    };
    let (command, rest) = match args.first().map(String::as_str) {
        Some(c) if !c.starts_with('-') => (c, &args[1..]),
        _ => ("", &args[..]),
    };
    let spec = match command {
        "" => "d:r:l:fhV",
        "check" => "d:h",
        other => return usage(&format!("unknown command \"{other}\"")),
    };
    let opts = match getopt(rest, spec) {
        Ok(o) => o,
        Err(e) => return usage(&e),
    };
    if opts.has('h') {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if opts.has('V') {
        println!("going {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let confdir = PathBuf::from(opts.get('d').unwrap_or("/etc/going.d"));
    if command == "check" {
        return check(&confdir);
    }
    if opts.has('f') && opts.has('l') {
        return usage("-f and -l exclude each other");
    }
    let syslog = (!opts.has('f')).then(|| PathBuf::from(opts.get('l').unwrap_or("/dev/log")));
    let rundir = PathBuf::from(opts.get('r').unwrap_or("/run/going"));
    match supervisor::run(Options {
        confdir,
        rundir,
        syslog,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("going: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprint!("going: {msg}\n{USAGE}");
    ExitCode::from(EX_USAGE)
}

/// `going check`: every problem as `PATH:LINE: message` on stderr, a summary on stdout;
/// 0 when every service file is valid, 1 otherwise.
fn check(dir: &std::path::Path) -> ExitCode {
    let scan = match config::scan(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "going: unable to read {}: {}",
                dir.display(),
                crate::log::Errno(&e)
            );
            return ExitCode::FAILURE;
        }
    };
    let mut invalid = 0;
    for errors in scan.values().filter_map(|p| p.as_ref().err()) {
        invalid += 1;
        for e in errors {
            eprintln!("{e}");
        }
    }
    println!(
        "{}: {} services, {} invalid",
        dir.display(),
        scan.len(),
        invalid
    );
    if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(args: &[&str], spec: &str) -> Result<Vec<(char, Option<String>)>, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        getopt(&args, spec).map(|o| o.0)
    }

    #[test]
    fn getopt_style() {
        let spec = "d:r:l:fhV";
        assert_eq!(
            g(&["-d", "x", "-ry"], spec).unwrap(),
            [('d', Some("x".into())), ('r', Some("y".into()))]
        );
        assert_eq!(
            g(&["-fd", "x"], spec).unwrap(),
            [('f', None), ('d', Some("x".into()))]
        );
        assert_eq!(
            g(&["-fdx"], spec).unwrap(),
            [('f', None), ('d', Some("x".into()))]
        );
        assert_eq!(g(&["--help", "--"], spec).unwrap(), [('h', None)]);
        assert_eq!(g(&["-d", "-f"], spec).unwrap(), [('d', Some("-f".into()))]);
        assert!(g(&["-x"], spec).is_err());
        assert!(g(&["-d"], spec).is_err());
        assert!(g(&["extra"], spec).is_err());
        assert!(g(&["-:"], "d:").is_err());
    }
}
