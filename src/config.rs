//! Service files: which names count as services, how a file is read without ever blocking
//! (regular files only, at most 64 KiB), and how its `key=value` lines become [`Settings`].
//!
//! Invariant: a file either yields complete, valid `Settings` or every problem found in it,
//! each as `PATH:LINE: message`; nothing is silently dropped. New keys are one row of
//! [`KEYS`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Files larger than this are refused: a service file is a few lines.
pub const MAX_FILE: u64 = 64 * 1024;

/// Where a first word without `/` is looked up; also the services' `PATH`.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a valid service file says. Two files with equal `Settings` run the same service,
/// so a reload compares these, not the bytes (a new comment restarts nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The command split into words; never empty.
    pub cmd: Vec<String>,
}

/// One problem in a service file. `line` 0 means the file as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.path.display(), self.msg),
            n => write!(f, "{}:{}: {}", self.path.display(), n, self.msg),
        }
    }
}

pub type Parsed = Result<Settings, Vec<FileError>>;

/// A key of the file format: whether it may repeat, and how its value lands in Settings.
struct Key {
    name: &'static str,
    repeat: bool,
    required: bool,
    apply: fn(&mut Settings, &str) -> Result<(), String>,
}

const KEYS: &[Key] = &[Key {
    name: "cmd",
    repeat: false,
    required: true,
    apply: |s, v| {
        s.cmd = split_words(v)?;
        if s.cmd.is_empty() {
            return Err("cmd is empty".into());
        }
        Ok(())
    },
}];

/// Service names: letters, digits, `_`, `-` and `@`, 1 to 64 of them. Everything else in
/// the directory (editor backups, `.dpkg-new`, `name.disabled`) is not a service.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'@')
}

/// Every service file in `dir`, by name. Err only when the directory itself is unreadable.
pub fn scan(dir: &Path) -> io::Result<BTreeMap<String, Parsed>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry
            .file_name()
            .to_str()
            .filter(|n| valid_name(n))
            .map(String::from)
        else {
            continue;
        };
        let parsed = read(&entry.path());
        out.insert(name, parsed);
    }
    Ok(out)
}

/// Reads and parses one service file without ever blocking: the type is checked before
/// opening (a FIFO or device is never opened) and again on the open file.
pub fn read(path: &Path) -> Parsed {
    let whole = |msg: String| {
        vec![FileError {
            path: path.to_owned(),
            line: 0,
            msg,
        }]
    };
    let check = |meta: &fs::Metadata| {
        if !meta.is_file() {
            Err(whole("not a regular file".into()))
        } else if meta.len() > MAX_FILE {
            Err(whole(format!("larger than {} KiB", MAX_FILE / 1024)))
        } else {
            Ok(())
        }
    };
    let unable =
        |verb: &str, e: io::Error| whole(format!("unable to {verb}: {}", crate::log::Errno(&e)));
    check(&fs::metadata(path).map_err(|e| unable("stat", e))?)?;
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| unable("open", e))?;
    check(&file.metadata().map_err(|e| unable("stat", e))?)?;
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unable("read", e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(whole(format!("larger than {} KiB", MAX_FILE / 1024)));
    }
    parse(path, &bytes)
}

/// Parses the bytes of a service file; `path` is only used in the errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Parsed {
    let mut settings = Settings::default();
    let mut errors = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut err = |line: usize, msg: String| {
        errors.push(FileError {
            path: path.to_owned(),
            line,
            msg,
        })
    };
    let mut lines = 0;
    // A line that is no key=value at all may have been the missing key: no second report.
    let mut unreadable = false;
    // Without the final newline, so that it does not count as one more (empty) line.
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        lines = n;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(text) = std::str::from_utf8(raw) else {
            err(n, "invalid UTF-8".into());
            unreadable = true;
            continue;
        };
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let Some((key, value)) = text.split_once('=') else {
            err(n, format!("expected key=value, found \"{text}\""));
            unreadable = true;
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let Some(spec) = KEYS.iter().find(|k| k.name == key) else {
            err(n, format!("unknown key \"{key}\""));
            continue;
        };
        if let Some(first) = seen.get(spec.name).filter(|_| !spec.repeat) {
            err(n, format!("repeated key \"{key}\" (first on line {first})"));
            continue;
        }
        seen.entry(spec.name).or_insert(n);
        if let Err(msg) = (spec.apply)(&mut settings, value) {
            err(n, msg);
        }
    }
    for key in KEYS
        .iter()
        .filter(|k| k.required && !unreadable && !seen.contains_key(k.name))
    {
        err(lines.max(1), format!("missing {}=", key.name));
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

/// Splits a command into words as a simple shell would, without running one: whitespace
/// separates words, `'…'` is literal, `"…"` allows `\"` and `\\`, a backslash outside
/// quotes escapes the next character. No expansion of any kind.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                continue;
            }
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => word.push(c),
                    None => return Err("unbalanced ' in cmd".into()),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => word.push(c),
                        Some(c) => {
                            word.push('\\');
                            word.push(c);
                        }
                        None => return Err("unbalanced \" in cmd".into()),
                    },
                    Some(c) => word.push(c),
                    None => return Err("unbalanced \" in cmd".into()),
                }
            },
            '\\' => match chars.next() {
                Some(c) => word.push(c),
                None => return Err("cmd ends with a lone backslash".into()),
            },
            '\0' => return Err("cmd contains a NUL character".into()),
            c => word.push(c),
        }
        in_word = true;
    }
    if in_word {
        words.push(word);
    }
    if words.iter().any(|w| w.contains('\0')) {
        return Err("cmd contains a NUL character".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Settings, Vec<String>> {
        parse(Path::new("d/web"), text.as_bytes())
            .map_err(|v| v.iter().map(|e| e.to_string()).collect())
    }

    fn words(s: &str) -> Vec<String> {
        split_words(s).unwrap()
    }

    #[test]
    fn names() {
        for ok in ["web", "a", "getty@tty1", "my_svc-2", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".web.swp",
            "web~",
            "web.dpkg-new",
            "web.disabled",
            "a b",
            "wéb",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn key_value_lines() {
        let s = p("# comment\n\n  cmd  =  /bin/sleep 10  \r\n").unwrap();
        assert_eq!(s.cmd, ["/bin/sleep", "10"]);
        assert_eq!(p("cmd=/bin/true").unwrap().cmd, ["/bin/true"]);
        assert_eq!(p("cmd=a=b").unwrap().cmd, ["a=b"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(
            p("cmd=/bin/x\ncmdd=y\n").unwrap_err(),
            [r#"d/web:2: unknown key "cmdd""#]
        );
        assert_eq!(
            p("cmd=/bin/x\nnonsense\n").unwrap_err(),
            [r#"d/web:2: expected key=value, found "nonsense""#]
        );
        assert_eq!(
            p("cmd=/bin/x\ncmd=/bin/y\n").unwrap_err(),
            [r#"d/web:2: repeated key "cmd" (first on line 1)"#]
        );
        assert_eq!(p("# nothing\n").unwrap_err(), ["d/web:1: missing cmd="]);
        assert_eq!(p("").unwrap_err(), ["d/web:1: missing cmd="]);
        assert_eq!(p("cmd=\n").unwrap_err(), ["d/web:1: cmd is empty"]);
        assert_eq!(
            p("cmd='oops\n").unwrap_err(),
            ["d/web:1: unbalanced ' in cmd"]
        );
        assert_eq!(
            p("=x\ncmd=/bin/x").unwrap_err(),
            [r#"d/web:1: unknown key """#]
        );
        let bad = parse(Path::new("d/web"), b"cmd=/bin/x\n# \xff\n").unwrap_err();
        assert_eq!(bad[0].to_string(), "d/web:2: invalid UTF-8");
    }

    #[test]
    fn all_errors_are_reported() {
        let e = p("a=1\nb=2\ncmd='\n").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        let e = p("a=1\nb=2\n").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(e[2], "d/web:2: missing cmd=");
    }

    #[test]
    fn shell_like_words() {
        assert_eq!(
            words(r#"/usr/sbin/nginx -g 'daemon off;'"#),
            ["/usr/sbin/nginx", "-g", "daemon off;"]
        );
        assert_eq!(words(r#"a "b \"c\" \\ \d" e"#), ["a", r#"b "c" \ \d"#, "e"]);
        assert_eq!(words(r"a\ b \'c"), ["a b", "'c"]);
        assert_eq!(words("x '' \"\""), ["x", "", ""]);
        assert_eq!(words("x$HOME *"), ["x$HOME", "*"]);
        assert_eq!(words("  a\t b  "), ["a", "b"]);
        assert_eq!(words("a'b'\"c\"d"), ["abcd"]);
        assert!(split_words("a \"b").is_err());
        assert!(split_words("a\\").is_err());
    }
}
