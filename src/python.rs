//! How Python writes values, for the forms Phoenix gives them: a
//! non-string session id or `user.id` is `str(value).strip()` (contract
//! rule 2; `docs/FORMAT.md`), a `metadata` attribute is read as
//! `json.loads` reads it, and a non-string input or output value is
//! `json.dumps(value)` with the mime type `application/json`.
//!
//! Python's `repr` of a string escapes the characters it does not print,
//! which it looks up in its Unicode tables; here control, separator,
//! format, private-use and non-characters are escaped, while a code point
//! not yet assigned in Unicode is written as it is (Python escapes it).
//! A lone surrogate escape in `metadata` (`"\ud83d"` without its pair),
//! which Python keeps in its string, is read as U+FFFD: a Rust string is
//! UTF-8, and so is what Phoenix's database keeps.
//! `tests/python_forms.rs` compares these with Python itself.

use std::fmt::{self, Write};

/// Python's `str.strip()` without arguments: whitespace as `str.isspace`
/// has it, Unicode's `White_Space` and the separators U+001C to U+001F.
pub(crate) fn strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// A buffer on the stack for one formatted float (Rust's shortest form
/// of an `f64` is at most 24 bytes).
struct Small {
    buf: [u8; 40],
    len: usize,
}

impl Small {
    fn new() -> Self {
        Small {
            buf: [0; 40],
            len: 0,
        }
    }

    fn text(&self) -> Result<&str, fmt::Error> {
        std::str::from_utf8(self.buf.get(..self.len).ok_or(fmt::Error)?).map_err(|_| fmt::Error)
    }
}

/// Where two shortest forms of `x` are equally near it, Python (David
/// Gay's `dtoa`) takes the one whose last digit is even, Rust the upper
/// one: 2111468483381879.25 is `2111468483381879.2` in Python and
/// `2111468483381879.3` in Rust. Given Rust's form `text` of a finite `x`,
/// returns Python's in `out` when they differ.
fn tie_to_even<'a>(text: &str, x: f64, out: &'a mut Small) -> Option<&'a str> {
    let (mantissa, exp) = match text.find('e') {
        Some(i) => (text.get(..i)?, text.get(i..)?),
        None => (text, ""),
    };
    // An integer in fixed notation (`12345.0`) is exact: no tie.
    if mantissa.ends_with(".0") {
        return None;
    }
    let last = *mantissa.as_bytes().last()?;
    if !matches!(last, b'1' | b'3' | b'5' | b'7' | b'9') {
        return None;
    }
    // A tie needs `x`'s exact decimal digits to be at most 18 (the 17 of
    // a shortest form and a 5). `m / 2^k` (m odd) has exactly the digits
    // of `m * 5^k`, over 18 once `k` > 27; an integer with that few
    // significant digits is below 10^40 (`m` < 2^53 has at most 22 fives).
    // Most doubles fail this at once, before the exact check below.
    if (x * 134_217_728.0).fract() != 0.0 || x.abs() >= 1e40 {
        return None;
    }
    let head = mantissa.get(..mantissa.len() - 1)?;
    // The lower form must also read back as `x`...
    let mut lower = Small::new();
    write!(lower, "{head}{}{exp}", char::from(last - 1)).ok()?;
    if lower.text().ok()?.parse::<f64>().ok() != Some(x) {
        return None;
    }
    // ... and `x` must lie exactly halfway: its exact decimal digits are
    // the lower form's with a 5 after them.
    let mut half = String::with_capacity(mantissa.len() + 2);
    half.push_str(head);
    half.push(char::from(last - 1));
    if !half.contains('.') {
        half.push('.');
    }
    half.push('5');
    let exp10: i32 = match exp.strip_prefix('e') {
        Some(e) => e.parse().ok()?,
        None => 0,
    };
    if scientific(&half, exp10)? != scientific(&format!("{:.1100e}", x.abs()), 0)? {
        return None;
    }
    *out = lower;
    out.text().ok()
}

/// The significant digits (without trailing zeros) and the decimal
/// exponent of a number written as `[-]int.frac` or `[-]d.ddde±n`, times
/// ten to `exp10`.
fn scientific(text: &str, exp10: i32) -> Option<(String, i32)> {
    let text = text.trim_start_matches('-');
    let (mantissa, exp10) = match text.split_once('e') {
        Some((m, e)) => (m, exp10.checked_add(e.parse().ok()?)?),
        None => (text, exp10),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).collect();
    let first = digits.find(|c| c != '0')?;
    let exp = i32::try_from(int.len()).ok()? - 1 - i32::try_from(first).ok()? + exp10;
    Some((digits.get(first..)?.trim_end_matches('0').to_owned(), exp))
}

impl Write for Small {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `repr(x)` of a Python float (`json` is false) or `json.dumps(x)`
/// (`json` true, which writes `NaN` and `Infinity`).
///
/// Rust's `Debug` form already has Python's digits (the shortest that
/// read back the same) and its switch to an exponent below 1e-4 and from
/// 1e16 on; Python writes the exponent with a sign and at least two
/// digits (`1e+16`, `1.5e-07`).
pub(crate) fn write_float(w: &mut impl Write, x: f64, json: bool) -> fmt::Result {
    if x.is_nan() {
        return w.write_str(if json { "NaN" } else { "nan" });
    }
    if x.is_infinite() {
        let s = match (json, x > 0.0) {
            (true, true) => "Infinity",
            (true, false) => "-Infinity",
            (false, true) => "inf",
            (false, false) => "-inf",
        };
        return w.write_str(s);
    }
    let mut small = Small::new();
    write!(small, "{x:?}")?;
    let mut tied = Small::new();
    let text = match tie_to_even(small.text()?, x, &mut tied) {
        Some(t) => t,
        None => small.text()?,
    };
    match text.split_once('e') {
        None => w.write_str(text),
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            w.write_str(mantissa)?;
            w.write_char('e')?;
            w.write_char(sign)?;
            if digits.len() < 2 {
                w.write_char('0')?;
            }
            w.write_str(digits)
        }
    }
}

/// `repr(s)` of a Python string: single quotes, or double quotes when it
/// holds a single quote and no double quote; backslash escapes for the
/// quote, backslashes and what Python does not print.
pub(crate) fn write_repr(w: &mut impl Write, s: &str) -> fmt::Result {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    w.write_char(quote)?;
    for c in s.chars() {
        match c {
            '\\' => w.write_str("\\\\")?,
            '\t' => w.write_str("\\t")?,
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            c if c == quote => {
                w.write_char('\\')?;
                w.write_char(c)?;
            }
            ' '..='~' => w.write_char(c)?,
            c if u32::from(c) >= 0x80 && printable(c) => w.write_char(c)?,
            c => match u32::from(c) {
                n @ ..=0xff => write!(w, "\\x{n:02x}")?,
                n @ ..=0xffff => write!(w, "\\u{n:04x}")?,
                n => write!(w, "\\U{n:08x}")?,
            },
        }
    }
    w.write_char(quote)
}

/// Whether Python's `str.isprintable` holds for a non-ASCII character:
/// not a control (Cc), separator (Zs, Zl, Zp), format (Cf), private-use
/// (Co) or non-character (Cn) code point. Other unassigned code points
/// (Cn too) are taken as printable: that takes Unicode's tables.
fn printable(c: char) -> bool {
    let n = u32::from(c);
    let format = matches!(
        n,
        0xad | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x890..=0x891
            | 0x8e2
            | 0x180e
            | 0x200b..=0x200f
            | 0x202a..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
    );
    let private = matches!(n, 0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd);
    let non_character = matches!(n, 0xfdd0..=0xfdef) || n & 0xfffe == 0xfffe;
    !(c.is_control() || c.is_whitespace() || format || private || non_character)
}

/// `json.dumps(s)` of a Python string with its defaults (`ensure_ascii`):
/// everything outside printable ASCII as `\uXXXX`, in surrogate pairs
/// past the BMP.
pub(crate) fn write_json_str(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            '\u{8}' => w.write_str("\\b")?,
            '\u{c}' => w.write_str("\\f")?,
            ' '..='~' => w.write_char(c)?,
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
    }
    w.write_char('"')
}

/// Nesting deeper than this makes a `metadata` text unreadable. Python's
/// own parser reads deeper, to about 990 levels (its recursion limit):
/// a text nested between the two gives Python an id and the engine none.
/// Reading a value nested `d` deep costs up to `d` passes over it, so the
/// bound is kept low.
const MAX_DEPTH: usize = 128;

/// The most digits Python reads in an integer (see `Reader::number`).
const MAX_INT_DIGITS: usize = 4300;

/// A JSON text read as Python's `json.loads` reads it: standard JSON plus
/// `NaN`, `Infinity` and `-Infinity`, which `json.dumps` writes by default.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.at += 1)
    }

    fn word(&mut self, w: &str) -> Option<()> {
        self.text
            .get(self.at..)?
            .starts_with(w)
            .then(|| self.at += w.len())
    }

    /// Reads the items of a list or an object, the reader at its opening
    /// bracket: `item` reads each one; commas between, `close` at the end.
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.at += 1;
        self.ws();
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            if self.eat(b',').is_none() {
                return self.eat(close);
            }
            self.ws();
        }
    }

    /// Reads one `"key": value` member; returns the key's text (quotes
    /// included) and the value's.
    fn member(&mut self, depth: usize) -> Option<(&'a str, &'a str)> {
        let from = self.at;
        self.string()?;
        let key = self.text.get(from..self.at)?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some((key, self.value(depth)?))
    }

    /// Skips one value, checking it; returns its text.
    fn value(&mut self, depth: usize) -> Option<&'a str> {
        let start = self.at;
        match self.peek()? {
            b'{' | b'[' if depth >= MAX_DEPTH => return None,
            b'{' => self.items(b'}', |r| r.member(depth + 1).map(drop))?,
            b'[' => self.items(b']', |r| r.value(depth + 1).map(drop))?,
            b'"' => self.string()?,
            b't' => self.word("true")?,
            b'f' => self.word("false")?,
            b'n' => self.word("null")?,
            b'N' => self.word("NaN")?,
            b'I' => self.word("Infinity")?,
            b'-' if self.text.get(self.at..)?.starts_with("-Infinity") => {
                self.at += "-Infinity".len();
            }
            _ => self.number()?,
        }
        self.text.get(start..self.at)
    }

    /// Skips a string, checking its escapes; control characters may not
    /// appear raw (Python's strict mode, its default).
    fn string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.text.get(self.at + 1..self.at + 5)?;
                            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                                return None;
                            }
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                ..0x20 => return None,
                _ => self.at += 1,
            }
        }
    }

    /// Skips a number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let digits = |r: &mut Self| {
            let from = r.at;
            while r.peek().is_some_and(|b| b.is_ascii_digit()) {
                r.at += 1;
            }
            (r.at > from).then_some(())
        };
        let _ = self.eat(b'-');
        let int_from = self.at;
        if self.eat(b'0').is_none() {
            digits(self)?;
        }
        let int_digits = self.at - int_from;
        let mut integer = true;
        if self.eat(b'.').is_some() {
            integer = false;
            digits(self)?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            digits(self)?;
        }
        // Python refuses to read an integer of more digits than this
        // (`sys.get_int_max_str_digits()`, 4300 by default since 3.11):
        // `json.loads` then fails on the whole text.
        (!integer || int_digits <= MAX_INT_DIGITS).then_some(())
    }
}

/// The members of a JSON object's text, each key (as written, quotes
/// included) with its value's text, if the whole text reads as
/// `json.loads` reads it and is an object.
fn members(text: &str) -> Option<Vec<(&str, &str)>> {
    let mut r = Reader { text, at: 0 };
    r.ws();
    if r.peek()? != b'{' {
        return None;
    }
    let mut out = Vec::new();
    r.items(b'}', |r| {
        out.push(r.member(1)?);
        Some(())
    })?;
    r.ws();
    (r.at == text.len()).then_some(out)
}

/// The string a JSON string's text (quotes included) stands for; a lone
/// surrogate escape becomes U+FFFD.
fn unquote(quoted: &str) -> Option<String> {
    let inner = quoted.get(1..quoted.len().checked_sub(1)?)?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    let hex4 = |chars: &mut std::str::Chars<'_>| -> Option<u32> {
        let h: String = chars.by_ref().take(4).collect();
        u32::from_str_radix(&h, 16).ok()
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hi = hex4(&mut chars)?;
                let c = if (0xd800..0xdc00).contains(&hi) {
                    // A high surrogate: a low one may follow as `\uXXXX`.
                    let rest = chars.as_str();
                    let lo = rest
                        .strip_prefix("\\u")
                        .and_then(|r| r.get(..4))
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .filter(|lo| (0xdc00..0xe000).contains(lo));
                    match lo {
                        Some(lo) => {
                            chars = rest.get(6..)?.chars();
                            char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                        }
                        None => None,
                    }
                } else {
                    char::from_u32(hi)
                };
                out.push(c.unwrap_or('\u{fffd}'));
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// A `String` that takes no more than `limit` bytes: a write past it fails.
struct Bounded<'a> {
    out: &'a mut String,
    limit: usize,
    /// A write failed for the limit.
    over: bool,
}

impl Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.out.len() + s.len() > self.limit {
            self.over = true;
            return Err(fmt::Error);
        }
        self.out.push_str(s);
        Ok(())
    }
}

/// Python's `repr()` of what `json.loads` makes of one value's text (as
/// `str()` writes a value inside a list or dict; at the top, the same for
/// all but strings and `null`). `None` past the writer's limit.
fn write_loaded(w: &mut Bounded<'_>, text: &str) -> Option<()> {
    write_next(w, &mut Reader { text, at: 0 })
}

/// [`write_loaded`] of the value at the reader, which it moves past. A
/// list is written as it is read, in one pass however deep; a dict's
/// members are found first (its repeated keys), one pass per level.
fn write_next(w: &mut Bounded<'_>, r: &mut Reader<'_>) -> Option<()> {
    if r.peek()? == b'[' {
        w.write_str("[").ok()?;
        let mut first = true;
        r.items(b']', |r| {
            if !first {
                w.write_str(", ").ok()?;
            }
            first = false;
            write_next(w, r)
        })?;
        return w.write_str("]").ok();
    }
    let text = r.value(1)?;
    let first = text.as_bytes().first().copied()?;
    match first {
        b'"' => write_repr(w, &unquote(text)?).ok()?,
        b'n' => w.write_str("None").ok()?,
        b't' => w.write_str("True").ok()?,
        b'f' => w.write_str("False").ok()?,
        b'N' => w.write_str("nan").ok()?,
        b'I' => w.write_str("inf").ok()?,
        b'-' if text == "-Infinity" => w.write_str("-inf").ok()?,
        b'{' => {
            // Python's dict keeps a key where it first appears, with the
            // value it last has.
            let mut pairs: Vec<(String, &str)> = Vec::new();
            let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
            for (k, v) in members(text)? {
                let k = unquote(k)?;
                match at.get(&k) {
                    Some(&i) => {
                        if let Some(pair) = pairs.get_mut(i) {
                            pair.1 = v;
                        }
                    }
                    None => {
                        at.insert(k.clone(), pairs.len());
                        pairs.push((k, v));
                    }
                }
            }
            w.write_str("{").ok()?;
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    w.write_str(", ").ok()?;
                }
                write_repr(w, k).ok()?;
                w.write_str(": ").ok()?;
                write_loaded(w, v)?;
            }
            w.write_str("}").ok()?;
        }
        _ if text.contains(['.', 'e', 'E']) => write_float(w, text.parse().ok()?, false).ok()?,
        // An integer: Python's are exact at any length; `-0` is `0`.
        _ if text == "-0" => w.write_str("0").ok()?,
        _ => w.write_str(text).ok()?,
    }
    Some(())
}

/// A `metadata` attribute's top-level members, if its text is a JSON
/// object as Python's `json.loads` reads it.
pub(crate) struct Metadata<'a> {
    members: Vec<(&'a str, &'a str)>,
}

/// An id (a session id, `user.id`, a `metadata` field) that comes to more
/// than the limit it was resolved against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLong {
    /// Its length in bytes, stripped, when it was a string; `None` for a
    /// value that was not written out as text past the limit.
    pub(crate) bytes: Option<usize>,
}

impl TooLong {
    /// The rejection reason for an id named `what` over `limit`.
    pub(crate) fn reason(&self, what: &str, limit: usize) -> String {
        match self.bytes {
            Some(n) => format!("{what} is {n} bytes, more than {limit}"),
            None => format!("{what} comes to more than {limit} bytes as text"),
        }
    }
}

impl<'a> Metadata<'a> {
    /// Reads `text`; `None` when Python could not load it as an object.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        members(text).map(|members| Metadata { members })
    }

    /// `str(json.loads(text)[field]).strip()`: none when the field is
    /// missing, `null` or empty; `Err` past `limit` bytes, found without
    /// writing out more than the limit (a string field, at most as long
    /// as the text, is written whole and stripped first).
    pub(crate) fn field(&self, field: &str, limit: usize) -> Result<Option<String>, TooLong> {
        // The last of repeated keys wins, as in Python's dict.
        let value = self.members.iter().rev().find_map(|(k, v)| {
            let plain = k.get(1..k.len() - 1).filter(|inner| !inner.contains('\\'));
            let matches = match plain {
                Some(inner) => inner == field,
                None => unquote(k).is_some_and(|k| k == field),
            };
            matches.then_some(*v)
        });
        let Some(value) = value else {
            return Ok(None);
        };
        let text = match value.as_bytes().first() {
            Some(b'"') => match unquote(value) {
                Some(s) => s,
                None => return Ok(None),
            },
            Some(b'n') => return Ok(None),
            _ => {
                // No other value's text starts or ends with whitespace.
                let mut out = String::new();
                let mut w = Bounded {
                    out: &mut out,
                    limit,
                    over: false,
                };
                let written = write_loaded(&mut w, value);
                return match (written, w.over) {
                    (_, true) => Err(TooLong { bytes: None }),
                    (Some(()), false) => Ok(Some(out)),
                    (None, false) => Ok(None),
                };
            }
        };
        let id = strip(&text);
        if id.len() > limit {
            return Err(TooLong {
                bytes: Some(id.len()),
            });
        }
        Ok((!id.is_empty()).then(|| id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(x: f64, json: bool) -> String {
        let mut s = String::new();
        write_float(&mut s, x, json).unwrap_or_default();
        s
    }

    fn repr(s: &str) -> String {
        let mut out = String::new();
        write_repr(&mut out, s).unwrap_or_default();
        out
    }

    #[test]
    fn floats_are_written_as_python_writes_them() {
        for (x, want) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(float(x, false), want, "{x:?}");
        }
        // Ties between two shortest forms go to the even digit (exactly
        // 2111468483381879.25 and -1138781620059053.25).
        assert_eq!(
            float(8_445_873_933_527_517.0 / 4.0, false),
            "2111468483381879.2"
        );
        assert_eq!(
            float(-4_555_126_480_236_213.0 / 4.0, false),
            "-1138781620059053.2"
        );
        assert_eq!(float(2_111_468_483_381_879.5, false), "2111468483381879.5");
        assert_eq!(float(f64::NAN, true), "NaN");
        assert_eq!(float(f64::INFINITY, true), "Infinity");
        assert_eq!(float(1e16, true), "1e+16");
    }

    #[test]
    fn strings_are_quoted_as_python_quotes_them() {
        assert_eq!(repr("a"), "'a'");
        assert_eq!(repr("it's"), r#""it's""#);
        assert_eq!(repr(r#"it's "x""#), r#"'it\'s "x"'"#);
        assert_eq!(repr("a\\b\n\t\u{1}\u{7f}"), r"'a\\b\n\t\x01\x7f'");
        assert_eq!(
            repr("é\u{a0}\u{200b}\u{e000}\u{1f600}\u{e0001}"),
            "'é\\xa0\\u200b\\ue000\u{1f600}\\U000e0001'"
        );
        assert_eq!(strip("\u{1c} a\u{3000}\u{1f}"), "a");
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// Any text, mostly of JSON's characters, reads without a panic,
        /// and a field found within a limit is within it.
        #[test]
        fn any_metadata_text_reads_without_a_panic(
            text in proptest::prop_oneof![
                r#"[\[\]{}",:0-9eE.+\-NaIfityrulsb \\u/"]{0,120}"#,
                r#"[\[\]{}",:0-9eE.+\-NaIfityrulsb \\u/"]{0,60}"#
                    .prop_map(|v| format!(r#"{{"a": {v}}}"#)),
                r#"(\[|[0-9]{1,3}|-?[0-9]\.[0-9]e[0-9]{1,3}|"[ab\\]{0,3}"|NaN|-Infinity|true|null|,|\]|\{"b":|\}){1,12}"#
                    .prop_map(|v| format!(r#"{{"a": {v}}}"#)),
            ],
            limit in 0usize..40,
        ) {
            if let Some(m) = Metadata::parse(&text) {
                for field in ["a", "b", ""] {
                    if let Ok(Some(id)) = m.field(field, limit) {
                        proptest::prop_assert!(id.len() <= limit);
                    }
                }
            }
            let mut out = String::new();
            let _ = write_repr(&mut out, &text);
            let _ = write_json_str(&mut out, &text);
        }
    }

    #[test]
    fn metadata_is_read_as_python_reads_json() {
        let field = |text: &str, f: &str| {
            Metadata::parse(text).and_then(|m| m.field(f, usize::MAX).ok().flatten())
        };
        assert_eq!(field(r#"{"a": " x\n"}"#, "a").as_deref(), Some("x"));
        assert_eq!(field(r#"{"a": " "}"#, "a"), None);
        assert_eq!(field(r#" {"a": 1, "a": 2} "#, "a").as_deref(), Some("2"));
        assert_eq!(field(r#"{"a": null}"#, "a"), None);
        assert_eq!(field(r#"{"a": -0}"#, "a").as_deref(), Some("0"));
        assert_eq!(
            field(r#"{"a": 123456789012345678901234567890}"#, "a").as_deref(),
            Some("123456789012345678901234567890")
        );
        assert_eq!(field(r#"{"a": 1E400}"#, "a").as_deref(), Some("inf"));
        assert_eq!(
            field(r#"{"b": NaN, "a": [1, "x", null, true, -Infinity]}"#, "a").as_deref(),
            Some("[1, 'x', None, True, -inf]")
        );
        assert_eq!(
            field(r#"{"a": {"k": 1, "j": [], "k": {}}}"#, "a").as_deref(),
            Some("{'k': {}, 'j': []}")
        );
        assert_eq!(
            field(r#"{"\u0061": "\ud83d\ude00\n"}"#, "a").as_deref(),
            Some("\u{1f600}")
        );
        // Python reads integers of at most 4300 digits, anywhere.
        let long = |n: usize| format!(r#"{{"a": "x", "b": -{}}}"#, "1".repeat(n));
        assert_eq!(field(&long(4300), "a").as_deref(), Some("x"));
        assert_eq!(field(&long(4301), "a"), None);
        let float = format!(r#"{{"a": {}.5}}"#, "1".repeat(5000));
        assert_eq!(field(&float, "a").as_deref(), Some("inf"));
        // Not JSON as Python reads it, or not an object: no field.
        for bad in [
            r#"{"a": "x""#,
            r#"{"a": "x"} x"#,
            r#"{"a": 01}"#,
            r#"{"a": "tab	"}"#,
            r#"{"a": nan}"#,
            r#"["a"]"#,
            r#"{'a': 1}"#,
            "",
        ] {
            assert_eq!(field(bad, "a"), None, "{bad}");
        }
        let deep = format!(r#"{{"a": 1, "b": {}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(field(&deep, "a"), None);
    }
}
