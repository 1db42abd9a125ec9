//! Names that come from a data set (file names, class folders, labels) shown
//! as text: a terminal line, a JSON string, a CSV cell. File names are bytes on
//! Unix, and may hold invalid UTF-8 or control characters (an escape sequence
//! that rewrites the terminal, a newline that splits a record). Shown through
//! here, two different names never print the same, and nothing a data set
//! holds reaches the output raw.

use std::fmt::Write as _;
use std::path::Path;

/// `s` with `\` doubled and every control character as `\n`, `\t`, `\r` or `\u{..}`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if c.is_control() => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// True when [`escape`] would change `s`'s characters other than `\`.
pub fn needs_escape(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A path as text: valid UTF-8 as [`escape`] shows it, and each byte that is
/// not valid UTF-8 as `\xNN`, so distinct paths stay distinct.
pub fn path(p: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in p.as_os_str().as_bytes().utf8_chunks() {
            for c in chunk.valid().chars() {
                push_escaped(&mut out, c);
            }
            for b in chunk.invalid() {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        out
    }
    #[cfg(not(unix))]
    {
        escape(&p.to_string_lossy())
    }
}

/// A CSV cell (RFC 4180): quoted when it holds a comma, a quote or a line
/// break, quotes doubled; control characters escaped first.
pub fn csv_cell(s: &str) -> String {
    let s = if needs_escape(s) { escape(s) } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_invalid_bytes_are_escaped_and_distinct() {
        assert_eq!(escape("a\u{1b}[2Jb\nc\\d"), "a\\u{1b}[2Jb\\nc\\\\d");
        assert_eq!(escape("chat noir"), "chat noir");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let a = path(Path::new(std::ffi::OsStr::from_bytes(b"dir/\xffcat.jpg")));
            let b = path(Path::new(std::ffi::OsStr::from_bytes(b"dir/\xfecat.jpg")));
            assert_eq!((a.as_str(), b.as_str()), ("dir/\\xffcat.jpg", "dir/\\xfecat.jpg"));
            assert_eq!(path(Path::new("été/ok.png")), "été/ok.png");
        }
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("line\nbreak"), "line\\nbreak");
    }
}
