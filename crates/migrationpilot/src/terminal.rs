//! What the command line prints, on the operator's terminal.
//!
//! A stage's output and error text, and the names and items it comes with, are written by
//! programs we do not control. Shown raw, an escape sequence in them could retitle the window,
//! clear the screen or, with `\r`, overwrite a line already shown with a forged one; so
//! everything printed for a person goes through [`escape`], which shows every control
//! character but newline and tab as `\u{…}`. JSON output escapes them its own way
//! ([`escape_json`]), and `logs --raw` is the one place that prints a stage's bytes as kept.
//!
//! Standard output may also be a pipe whose reader has left (`runs show RUN | head -1`).
//! `println!` panics then (Rust ignores `SIGPIPE`, and we keep it ignored: `run` and `serve`
//! hold sockets, and a client hanging up must not kill them). The printers here stop printing
//! quietly instead, and the command goes on to its end: a run is not cut short because its
//! reader went away.
//!
//! ```
//! use migrationpilot::terminal::escape;
//!
//! assert_eq!(escape("\u{1b}]0;pwned\u{7}done\n"), "\\u{1b}]0;pwned\\u{7}done\n");
//! assert_eq!(escape("plain\ttext"), "plain\ttext");
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// `text` safe to show on a terminal: C0 and C1 control characters and DEL shown as `\u{1b}`,
/// `\u{9b}`, `\u{7f}`…; newline and tab kept, since they only lay text out.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hidden_control) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_hidden_control(c) {
            let _ = write!(shown, "\\u{{{:x}}}", u32::from(c));
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

/// A control character a terminal would act on rather than show (`char::is_control` is
/// exactly C0, DEL and C1), other than the two that only lay text out.
fn is_hidden_control(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// Serialized JSON with DEL and the C1 controls escaped as `\u00XX`: `serde_json` escapes C0
/// but writes those as they are, and a terminal reading `\u{9b}` raw starts an escape
/// sequence. Control characters can only occur inside JSON strings, where `\u00XX` means the
/// same character, so the value read back is unchanged.
pub fn escape_json(json: String) -> String {
    if !json.chars().any(char::is_control) {
        return json;
    }
    let mut escaped = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_control() {
            let _ = write!(escaped, "\\u{:04x}", u32::from(c));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Prints one line on standard output, escaped.
pub fn print_line(line: std::fmt::Arguments<'_>) {
    let mut text = match line.as_str() {
        Some(text) => escape(text).into_owned(),
        None => escape(&line.to_string()).into_owned(),
    };
    text.push('\n');
    write_out(text.as_bytes());
}

/// Prints `text` on standard output as it is: for `logs --raw`, where the operator asked for
/// the bytes a stage wrote, and for what a program reads (a completion script).
pub fn print_raw(text: &str) {
    write_out(text.as_bytes());
}

/// Prints `value` as one line of JSON, as every `--json` does, so scripts read each command's
/// output the same way.
pub fn print_json(value: &impl serde::Serialize) {
    let Ok(json) = serde_json::to_string(value) else {
        return;
    };
    let mut line = escape_json(json);
    line.push('\n');
    write_out(line.as_bytes());
}

/// Prints one line on standard error, escaped; an error there is not reported anywhere.
pub fn eprint_line(line: std::fmt::Arguments<'_>) {
    let text = escape(&line.to_string()).into_owned();
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Set once standard output could not be written: nothing more is tried there.
static OUT_CLOSED: AtomicBool = AtomicBool::new(false);

fn write_out(bytes: &[u8]) {
    if OUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_all(bytes).and_then(|()| out.flush())
        && !OUT_CLOSED.swap(true, Ordering::Relaxed)
    {
        drop(out);
        stop_writing_out(&error);
    }
}

/// Standard output cannot be written any more: points it (and standard error when it is the
/// same pipe, as with `2>&1 | head`) at `/dev/null`. The `println!` and `eprintln!` of code
/// that does not print through this module then write into nothing instead of panicking.
fn stop_writing_out(error: &std::io::Error) {
    if error.kind() != std::io::ErrorKind::BrokenPipe {
        eprint_line(format_args!(
            "migrationpilot: standard output: {error}; nothing more is printed there"
        ));
    }
    #[cfg(unix)]
    // SAFETY: open(2), fstat(2), dup2(2) and close(2) on descriptors this process owns: the
    // null device is opened here and closed after being copied onto 1 (and 2); `fstat` writes
    // into the zeroed `stat` values it is given.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if null < 0 {
            return;
        }
        let mut out: libc::stat = std::mem::zeroed();
        let mut err: libc::stat = std::mem::zeroed();
        let shared = libc::fstat(1, &mut out) == 0
            && libc::fstat(2, &mut err) == 0
            && (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino);
        libc::dup2(null, 1);
        if shared {
            libc::dup2(null, 2);
        }
        libc::close(null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_character_but_newline_and_tab_is_shown_escaped() {
        assert_eq!(escape("\u{1b}]0;pwned\u{7}"), "\\u{1b}]0;pwned\\u{7}");
        assert_eq!(escape("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(escape("ok\rFORGED"), "ok\\u{d}FORGED");
        assert_eq!(
            escape("c1 \u{9b}31m and \u{85}"),
            "c1 \\u{9b}31m and \\u{85}"
        );
        assert_eq!(escape("del\u{7f}"), "del\\u{7f}");
        assert_eq!(escape("\0"), "\\u{0}");
        assert_eq!(escape("two\nlines\tand a tab"), "two\nlines\tand a tab");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let shown = escape(&c.to_string()).into_owned();
            if c == '\n' || c == '\t' {
                assert_eq!(shown, c.to_string());
            } else {
                assert!(!shown.chars().any(char::is_control), "{c:?}: {shown}");
            }
        }
    }

    #[test]
    fn text_without_controls_is_not_copied_and_unicode_is_kept() {
        assert!(matches!(escape("✔ load: 3 unit(s)"), Cow::Borrowed(_)));
        assert_eq!(escape("é ✔ \u{a0} \u{200b}"), "é ✔ \u{a0} \u{200b}");
    }

    #[test]
    fn json_keeps_its_value_and_loses_its_raw_controls() {
        let value = serde_json::json!({ "message": "a\u{9b}b\u{7f}c\u{1b}d\ne" });
        let json = escape_json(serde_json::to_string(&value).unwrap());
        assert!(!json.chars().any(char::is_control), "{json}");
        assert!(
            json.contains("\\u009b") && json.contains("\\u007f"),
            "{json}"
        );
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, value);
    }
}
