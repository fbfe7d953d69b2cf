//! going's own JSON writer, for `going status --json`: objects, arrays, keys, strings,
//! unsigned integers, booleans and null, appended to a `String` as they are called. No
//! floats: durations are integer milliseconds (`uptime_ms`) and sizes integer bytes,
//! which are exact and leave float formatting out of the binary.
//!
//! Invariant: whatever is asked, the text written is valid UTF-8 with every string escaped
//! as RFC 8259 wants; a well-nested sequence of calls (a key before each value in an
//! object) is one valid JSON document, its commas put in by the writer. Control
//! characters (C0, DEL and C1) are written as `\uXXXX` (or `\n`, `\t` …), so none reaches
//! a terminal raw. Bytes that are not UTF-8 ([`Json::bytes`]) are written as the text
//! `\xNN`, as going writes them in syslog and in `going status`: the same line reads the
//! same everywhere, and the byte's value is kept, where U+FFFD would lose it (the price:
//! a service that prints the four characters `\xff` looks the same as one that prints
//! the byte, as in syslog).

use std::fmt::Write;

const HEX: &[u8; 16] = b"0123456789abcdef";

pub struct Json<'a> {
    out: &'a mut String,
    /// A value ended at this level: the next one needs a comma first.
    comma: bool,
    /// A key was written: its value comes next, with no comma.
    keyed: bool,
    /// What is open, innermost in bit 0: 1 for an object, 0 for an array. Read only by
    /// debug assertions, which catch a value without a key in an object (and the like).
    nest: u64,
    depth: u32,
}

impl<'a> Json<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut String) -> Json<'a> {
        Json {
            out,
            comma: false,
            keyed: false,
            nest: 0,
            depth: 0,
        }
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.nest & 1 == 1
    }

    /// What comes before any value: a comma after a sibling, nothing after a key.
    fn value(&mut self) {
        debug_assert!(
            self.keyed || !self.in_object(),
            "a value in an object needs a key"
        );
        debug_assert!(self.depth > 0 || !self.comma, "one value at the top");
        if self.keyed {
            self.keyed = false;
        } else if self.comma {
            self.out.push(',');
        }
    }

    fn open(&mut self, c: char, object: bool) -> &mut Self {
        self.value();
        debug_assert!(self.depth < 64, "nested too deep");
        self.out.push(c);
        self.nest = self.nest << 1 | object as u64;
        self.depth += 1;
        self.comma = false;
        self
    }

    fn close(&mut self, c: char, object: bool) -> &mut Self {
        debug_assert!(self.depth > 0 && self.in_object() == object && !self.keyed);
        self.out.push(c);
        self.nest >>= 1;
        self.depth -= 1;
        self.comma = true;
        self
    }

    pub fn object(&mut self) -> &mut Self {
        self.open('{', true)
    }

    pub fn end_object(&mut self) -> &mut Self {
        self.close('}', true)
    }

    pub fn array(&mut self) -> &mut Self {
        self.open('[', false)
    }

    pub fn end_array(&mut self) -> &mut Self {
        self.close(']', false)
    }

    /// The key of the next value in an object.
    pub fn key(&mut self, k: &str) -> &mut Self {
        debug_assert!(self.in_object() && !self.keyed, "a key outside an object");
        if self.comma {
            self.out.push(',');
        }
        self.quoted(k);
        self.out.push(':');
        self.keyed = true;
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.value();
        self.quoted(s);
        self.comma = true;
        self
    }

    /// A string of bytes that may not be UTF-8: what is not is written as `\xNN` text.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.value();
        self.out.push('"');
        for chunk in b.utf8_chunks() {
            self.escaped(chunk.valid());
            for &byte in chunk.invalid() {
                // The text \xNN: its backslash is escaped like any other.
                self.out.push_str("\\\\x");
                self.hex2(byte);
            }
        }
        self.out.push('"');
        self.comma = true;
        self
    }

    pub fn uint(&mut self, n: u64) -> &mut Self {
        self.value();
        let _ = write!(self.out, "{n}"); // a String takes any write
        self.comma = true;
        self
    }

    /// A string, or null for None (a text not said).
    pub fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.str(s),
            None => self.null(),
        }
    }

    /// A boolean, or null for None (a question that does not apply).
    pub fn opt_bool(&mut self, b: Option<bool>) -> &mut Self {
        match b {
            Some(b) => self.bool(b),
            None => self.null(),
        }
    }

    /// A number, or null for None (a pid that is not there, say).
    pub fn opt_uint(&mut self, n: Option<u64>) -> &mut Self {
        match n {
            Some(n) => self.uint(n),
            None => self.null(),
        }
    }

    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.literal(if b { "true" } else { "false" })
    }

    pub fn null(&mut self) -> &mut Self {
        self.literal("null")
    }

    fn literal(&mut self, s: &str) -> &mut Self {
        self.value();
        self.out.push_str(s);
        self.comma = true;
        self
    }

    fn quoted(&mut self, s: &str) {
        self.out.push('"');
        self.escaped(s);
        self.out.push('"');
    }

    /// `s` as the inside of a JSON string: runs that need no escape are copied whole.
    fn escaped(&mut self, s: &str) {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let short = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\u{8}' => "\\b",
                '\u{c}' => "\\f",
                // C0, DEL and C1: legal raw in JSON but for C0, and none belongs on a terminal.
                _ if c.is_control() => "",
                _ => continue,
            };
            self.out.push_str(&s[start..i]);
            if short.is_empty() {
                self.out.push_str("\\u00");
                self.hex2(c as u8); // every control character is below U+0100
            } else {
                self.out.push_str(short);
            }
            start = i + c.len_utf8();
        }
        self.out.push_str(&s[start..]);
    }

    fn hex2(&mut self, b: u8) {
        self.out.push(HEX[(b >> 4) as usize] as char);
        self.out.push(HEX[(b & 15) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    fn doc(f: impl FnOnce(&mut Json)) -> String {
        let mut s = String::new();
        f(&mut Json::new(&mut s));
        s
    }

    #[test]
    fn commas_keys_and_nesting_are_the_writers_business() {
        let s = doc(|j| {
            j.object().key("version").uint(1).key("services").array();
            for (name, pid) in [("web", Some(42)), ("db", None)] {
                j.object().key("name").str(name).key("pid").opt_uint(pid);
                j.key("exits").array().end_array();
                j.key("usage").object().end_object().end_object();
            }
            j.end_array().key("ok").bool(true).key("no").bool(false);
            j.key("s")
                .opt_str(None)
                .key("t")
                .opt_str(Some("x"))
                .key("b")
                .opt_bool(None);
            j.key("nested").array().array().end_array();
            j.array()
                .uint(1)
                .null()
                .end_array()
                .end_array()
                .end_object();
        });
        assert_eq!(
            s,
            r#"{"version":1,"services":[{"name":"web","pid":42,"exits":[],"usage":{}},{"name":"db","pid":null,"exits":[],"usage":{}}],"ok":true,"no":false,"s":null,"t":"x","b":null,"nested":[[],[1,null]]}"#
        );
    }

    #[test]
    fn the_writer_appends() {
        let mut s = String::from("0\n");
        Json::new(&mut s).array().str("a").end_array();
        assert_eq!(s, "0\n[\"a\"]");
    }

    #[test]
    fn strings_are_escaped() {
        let s = doc(|j| {
            j.array()
                .str("\"q\" \\ / \n\r\t\x08\x0c \x00\x01\x1b[2J \x7f \u{85}\u{9b} é€😀 \u{2028}");
            j.end_array();
        });
        assert_eq!(
            s,
            r#"["\"q\" \\ / \n\r\t\b\f \u0000\u0001\u001b[2J \u007f \u0085\u009b é€😀 "#
                .to_string()
                + "\u{2028}\"]"
        );
        // Keys too.
        assert_eq!(
            doc(|j| {
                j.object().key("a\"\n").null().end_object();
            }),
            r#"{"a\"\n":null}"#
        );
    }

    #[test]
    fn invalid_utf8_is_written_as_backslash_x_text() {
        let s = doc(|j| {
            j.array().bytes(b"caf\xc3\xa9 \xff\xc3 \x1b \xed\xa0\x80\\");
            j.end_array();
        });
        assert_eq!(s, r#"["café \\xff\\xc3 \u001b \\xed\\xa0\\x80\\"]"#);
    }

    #[test]
    fn integers_at_their_limits() {
        let s = doc(|j| {
            j.array().uint(0).uint(u64::MAX).opt_uint(None);
            j.end_array();
        });
        assert_eq!(s, "[0,18446744073709551615,null]");
    }

    /// What `bytes` should make of `b`, decoded: valid UTF-8 as it is, each invalid byte
    /// as the four characters `\xNN`.
    fn expected(b: &[u8]) -> String {
        let mut s = String::new();
        for chunk in b.utf8_chunks() {
            s.push_str(chunk.valid());
            for byte in chunk.invalid() {
                s.push_str(&format!("\\x{byte:02x}"));
            }
        }
        s
    }

    /// Random strings of quotes, backslashes, controls, multi-byte and broken UTF-8,
    /// through the writer and back out of python3's json module, which is strict about
    /// raw control characters and never accepts invalid UTF-8. No python3 is a failure,
    /// not a pass: CI has it.
    #[test]
    fn python_reads_back_what_was_written() {
        let atoms: [&[u8]; 24] = [
            b"a",
            b"Z",
            b" ",
            b"\"",
            b"\\",
            b"/",
            b"\n",
            b"\r",
            b"\t",
            b"\x00",
            b"\x01",
            b"\x1b",
            b"\x1f",
            b"\x7f",
            "é".as_bytes(),
            "€".as_bytes(),
            "😀".as_bytes(),
            "\u{85}".as_bytes(),
            "\u{2028}".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\\u0041",
        ];
        let indexes: Vec<u8> = (0..atoms.len() as u8).collect();
        let mut seed = 0x51f1_5eed_0bad_cafe;
        let cases: Vec<Vec<u8>> = (0..2000)
            .map(|_| {
                crate::config::tests::random_bytes(&mut seed, &indexes, 40)
                    .iter()
                    .flat_map(|&i| atoms[i as usize].iter().copied())
                    .collect()
            })
            .collect();
        let mut text = String::new();
        let mut j = Json::new(&mut text);
        j.object().key("ints").array();
        j.uint(u64::MAX).opt_bool(Some(false)).uint(0).end_array();
        j.key("cases").array();
        for (i, c) in cases.iter().enumerate() {
            j.object().key("b").bytes(c);
            let valid = String::from_utf8_lossy(c);
            j.key("s").str(&valid).key("i").uint(i as u64).end_object();
        }
        j.end_array()
            .key("t")
            .bool(true)
            .key("n")
            .null()
            .end_object();

        let script = r#"
import json, sys
d = json.loads(sys.stdin.buffer.read())
assert d["ints"] == [18446744073709551615, False, 0], d["ints"]
assert d["t"] is True and d["n"] is None
for c in d["cases"]:
    print(c["i"], c["b"].encode("utf-8").hex(), c["s"].encode("utf-8").hex())
"#;
        let mut py = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed to check the JSON (CI has it)");
        py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = py.wait_with_output().unwrap();
        assert!(out.status.success(), "python3 refused the JSON");
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        let got = String::from_utf8(out.stdout).unwrap();
        let mut n = 0;
        for (line, c) in got.lines().zip(&cases) {
            let want = format!(
                "{n} {} {}",
                hex(&expected(c)),
                hex(&String::from_utf8_lossy(c))
            );
            assert_eq!(line, want, "case {n}: {c:?}");
            n += 1;
        }
        assert_eq!(n, cases.len());
    }
}
