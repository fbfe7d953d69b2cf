//! The command line, getopt style: `going [-d CONFDIR] [-r RUNDIR] [-l SOCKET | -f]
//! [-n LINES] [-c NAME|off]` supervises, `going check [-d CONFDIR] [-c NAME|off]` checks
//! the service files, the other commands make a request to a running going (client.rs).
//! Exit codes follow sysexits(3): 64 for a usage error.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config;
use crate::exit::EX_USAGE;
use crate::service::Held;
use crate::supervisor::{self, Options};

/// The options of `going` itself (getopt's spec), also read back from a running going's
/// command line by `going check`.
const SUPERVISE: &str = "d:r:l:fn:c:hV";

const USAGE: &str = "\
usage: going [-d CONFDIR] [-r RUNDIR] [-l SOCKET | -f] [-n LINES] [-c NAME|off]
       going check [-d CONFDIR] [-c NAME|off]
       going status [-r RUNDIR] [-j] [NAME...]
       going log [-r RUNDIR] [-f] [-n LINES] NAME...
       going start|stop|restart [-r RUNDIR] [-w SECONDS] NAME...
       going signal [-r RUNDIR] SIGNAL NAME...
       going reload [-r RUNDIR]
       going -h | -V

  -d CONFDIR  service files (default /etc/going.d)
  -r RUNDIR   run-time state and lock (default /run/going; not root:
              $XDG_RUNTIME_DIR/going, else /tmp/going-UID)
  -l SOCKET   syslog socket (default /dev/log)
  -f          log to stderr instead of syslog;  log -f: follow new lines
  -n LINES    lines of output held per service (default 10, at most 1000);
              log -n: show the last LINES of them
  -c NAME     going's cgroup subtree (default going);  -c off: no cgroups
  -j, --json  status as one JSON document
  -w SECONDS  wait until the services are up (ready) or stopped, SECONDS at most
  -h, --help  this help;  -V, --version  the version
";

/// RUNDIR without `-r`: /run/going for root. A going that is not root cannot write there:
/// its user's runtime directory, or a directory of its own in /tmp, which RunDir refuses
/// unless it is the user's own and private (another user may have made it first).
fn default_rundir() -> PathBuf {
    let uid = crate::sys::geteuid();
    if uid == 0 {
        return PathBuf::from("/run/going");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("going"),
        _ => PathBuf::from(format!("/tmp/going-{uid}")),
    }
}

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
/// next); `--` or the first operand ends the options. Returns the options and operands.
fn getopt(args: &[String], spec: &str) -> Result<(Opts, Vec<String>), String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--" => return Ok((Opts(out), it.cloned().collect())),
            "--help" => out.push(('h', None)),
            "--version" => out.push(('V', None)),
            "--json" if spec.contains('j') => out.push(('j', None)),
            a if a.starts_with("--") => return Err(format!("unknown option {a}")),
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
            _ => {
                let operands = std::iter::once(arg).chain(it).cloned().collect();
                return Ok((Opts(out), operands));
            }
        }
    }
    Ok((Opts(out), Vec::new()))
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    let Some(args) = args
        .into_iter()
        .map(|a| a.into_string().ok())
        .collect::<Option<Vec<String>>>()
    else {
        return usage("arguments must be valid UTF-8");
    };
    // A going that exec'd this binary on SIGUSR2 asks first whether it can take over.
    if args == [crate::upgrade::CHECK_FLAG] {
        print!("{}", crate::upgrade::check_answer());
        return ExitCode::SUCCESS;
    }
    let (command, rest) = match args.first().map(String::as_str) {
        Some(c) if !c.starts_with('-') => (c, &args[1..]),
        _ => ("", &args[..]),
    };
    let spec = match command {
        "" => SUPERVISE,
        "check" => "d:c:h",
        "start" | "stop" | "restart" => "r:w:h",
        "status" => "r:jh",
        "log" => "r:fn:h",
        "signal" | "reload" => "r:h",
        other => return usage(&format!("unknown command \"{other}\"")),
    };
    let (opts, operands) = match getopt(rest, spec) {
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
    let rundir = opts.get('r').map_or_else(default_rundir, PathBuf::from);
    if !matches!(command, "" | "check") {
        let wait = match opts.get('w').map(seconds).transpose() {
            Ok(w) => w,
            Err(e) => return usage(&e),
        };
        let lines = match opts
            .get('n')
            .map(|n| number(n, "-n", usize::MAX))
            .transpose()
        {
            Ok(n) => n,
            Err(e) => return usage(&e),
        };
        let mut words = Vec::new();
        words.extend(wait.map(|w| format!("wait={w}")));
        words.extend(opts.has('j').then(|| "format=json".to_string()));
        words.extend(lines.map(|n| format!("lines={n}")));
        words.extend(opts.has('f').then(|| "follow=1".to_string()));
        // The table shows what services cost where the terminal has room for it.
        if command == "status" && operands.is_empty() && words.is_empty() {
            words.extend(crate::client::columns().map(|c| format!("width={c}")));
        }
        return match request(command, &words, &operands) {
            Ok(req) if command == "log" => crate::client::log(&rundir, &req, opts.has('f')),
            Ok(req) => crate::client::run(&rundir, &req, wait),
            Err(e) => usage(&e),
        };
    }
    if let Some(extra) = operands.first() {
        return usage(&format!("unexpected argument \"{extra}\""));
    }
    let confdir = PathBuf::from(opts.get('d').unwrap_or("/etc/going.d"));
    let cgroup = match cgroup_name(opts.get('c')) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    match command {
        "check" => check(&confdir, cgroup.as_deref()),
        _ => supervise(&opts, confdir, rundir, cgroup),
    }
}

/// The NAME of `-c`: going's cgroup subtree, `going` unless given; None for `off`.
fn cgroup_name(arg: Option<&str>) -> Result<Option<String>, String> {
    match arg {
        Some("off") => Ok(None),
        None => Ok(Some(crate::cgroup::NAME.to_string())),
        Some(name) if config::valid_name(name) && name != "supervisor" => {
            Ok(Some(name.to_string()))
        }
        Some(name) => Err(format!(
            "-c takes off, or a NAME of letters, digits, _, - and @, not \"{name}\""
        )),
    }
}

/// `going`: supervises until stopped; a failure to start is said, and its code returned.
fn supervise(opts: &Opts, confdir: PathBuf, rundir: PathBuf, cgroup: Option<String>) -> ExitCode {
    if opts.has('f') && opts.has('l') {
        return usage("-f and -l exclude each other");
    }
    let syslog = (!opts.has('f')).then(|| PathBuf::from(opts.get('l').unwrap_or("/dev/log")));
    let held = match opts
        .get('n')
        .map(|n| number(n, "-n", Held::MAX))
        .transpose()
    {
        Ok(n) => n.map_or_else(Held::default, Held),
        Err(e) => return usage(&e),
    };
    match supervisor::run(Options {
        confdir,
        rundir,
        syslog,
        held,
        cgroup,
    }) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            crate::log::last_word(&format!("going: {}\n", f.msg));
            ExitCode::from(f.code)
        }
    }
}

/// The SECONDS of `-w`: whole, 1 to 86400.
fn seconds(v: &str) -> Result<u64, String> {
    (v.parse::<u64>().ok())
        .filter(|s| (1..=86400).contains(s))
        .ok_or(format!("-w takes whole seconds, 1 to 86400, not \"{v}\""))
}

/// The argument of `option`: a whole number, 0 to `max`.
fn number(v: &str, option: &str, max: usize) -> Result<usize, String> {
    (v.parse::<usize>().ok())
        .filter(|n| *n <= max)
        .ok_or(match max {
            usize::MAX => format!("{option} takes a whole number, not \"{v}\""),
            _ => format!("{option} takes a whole number, 0 to {max}, not \"{v}\""),
        })
}

/// The request line for a command to a running going, checked here so that a typo is a
/// usage error before anything is sent: the command, its `key=value` option words, the
/// operands.
fn request(command: &str, options: &[String], operands: &[String]) -> Result<String, String> {
    let names = match (command, operands) {
        ("reload", []) => return Ok("reload".into()),
        ("reload", [extra, ..]) => return Err(format!("unexpected argument \"{extra}\"")),
        ("status", names) => names,
        ("signal", [sig, names @ ..]) if !names.is_empty() => {
            crate::sys::signal_number(sig).ok_or(format!("unknown signal \"{sig}\""))?;
            names
        }
        ("signal", _) => return Err("signal needs a signal and at least one NAME".into()),
        (_, []) => return Err(format!("{command} needs at least one NAME")),
        (_, names) => names,
    };
    if let Some(bad) = names.iter().find(|n| !config::valid_name(n)) {
        return Err(format!("\"{bad}\" is not a service name"));
    }
    Ok(std::iter::once(command)
        .chain(options.iter().map(String::as_str))
        .chain(operands.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" "))
}

fn usage(msg: &str) -> ExitCode {
    eprint!("going: {msg}\n{USAGE}");
    ExitCode::from(EX_USAGE)
}

/// `going check`: every problem as `PATH:LINE: message` on stderr, a summary on stdout;
/// 0 when every service file is valid, 1 otherwise. Cgroup limit keys are checked against
/// what the going that runs on CONFDIR has, or else what one started here would have.
fn check(dir: &std::path::Path, cgroup: Option<&str>) -> ExitCode {
    let mut scan = match config::scan(dir, None) {
        Ok(s) => s.files,
        Err(e) => {
            eprintln!("going: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::service::Table::default().cycles(dir, &mut scan, &mut Vec::new());
    if scan
        .values()
        .any(|p| p.as_ref().is_ok_and(|s| s.cgroup.is_some()))
    {
        config::check_limits(dir, &mut scan, &available(dir, cgroup));
    }
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

/// The controllers the going that holds CONFDIR's lock can give its services (as its own
/// `-c` says), or, when none does, a going started here with `cgroup` (`-c`).
fn available(dir: &std::path::Path, cgroup: Option<&str>) -> crate::cgroup::Available {
    let running = std::fs::metadata(dir)
        .ok()
        .and_then(|m| crate::sys::lock_holders(&m).first().copied());
    // The running going's own -c, from its command line.
    let theirs = running.and_then(|pid| {
        let line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<String> = (line.split(|&b| b == 0))
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .skip(1)
            .filter(|a| !a.is_empty())
            .collect();
        let (opts, _) = getopt(&args, SUPERVISE).ok()?;
        cgroup_name(opts.get('c')).ok()
    });
    let name = match theirs.unwrap_or_else(|| cgroup.map(String::from)) {
        Some(name) => name,
        None => return crate::cgroup::Available::Off(crate::cgroup::OFF.into()),
    };
    let pid = running.unwrap_or_else(crate::sys::getpid);
    match crate::cgroup::discover(pid, &name) {
        Ok(found) => found.available(),
        Err(why) => crate::cgroup::Available::Off(why.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(args: &[&str], spec: &str) -> Result<Vec<(char, Option<String>)>, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        getopt(&args, spec).map(|o| o.0 .0)
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
        assert!(g(&["-:"], "d:").is_err());
        let args: Vec<String> = ["-r", "/run", "web", "-x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (opts, operands) = getopt(&args, "r:").unwrap();
        assert_eq!(
            (opts.get('r'), operands),
            (Some("/run"), vec!["web".to_string(), "-x".into()])
        );
    }

    #[test]
    fn requests_are_checked_before_they_are_sent() {
        let r = |c: &str, ops: &[&str]| {
            request(
                c,
                &[],
                &ops.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(r("status", &[]).unwrap(), "status");
        assert_eq!(
            r("signal", &["HUP", "web", "db"]).unwrap(),
            "signal HUP web db"
        );
        assert!(r("signal", &["BOGUS", "web"]).is_err());
        assert!(r("signal", &["HUP"]).is_err());
        assert!(r("stop", &[]).is_err());
        assert!(r("stop", &["../etc"]).is_err());
        assert!(r("reload", &["x"]).is_err());
        let ops = ["10".to_string()];
        let wait = ["wait=5".to_string()];
        assert_eq!(request("start", &wait, &ops).unwrap(), "start wait=5 10");
        assert!(seconds("0").is_err() && seconds("1.5").is_err() && seconds("10").is_ok());
        assert!(r("log", &[]).is_err());
        assert_eq!(r("log", &["web", "db"]).unwrap(), "log web db");
        assert_eq!(number("1000", "-n", 1000), Ok(1000));
        assert!(number("1001", "-n", 1000).is_err() && number("-1", "-n", 9).is_err());
    }
}
