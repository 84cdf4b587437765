//! What a test expects of a pgstrata command's outcome: success, or a
//! failure with its exit status and one-line error; and what it printed.

use std::process::Output;

pub fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A failure: exit status 1, a one-line error that says `needle`.
pub fn fails_with(o: &Output, needle: &str) {
    fails_code(o, 1, needle)
}

/// A usage mistake: exit status 2, the same one-line error.
pub fn misused(o: &Output, needle: &str) {
    fails_code(o, 2, needle)
}

/// [`fails_code`], with the error the only line on stderr (no warning
/// before it).
pub fn fails_one_line(o: &Output, code: i32, needle: &str) {
    fails_code(o, code, needle);
    let e = err(o);
    assert_eq!(e.trim().lines().count(), 1, "not one line: {e}");
}

pub fn fails_code(o: &Output, code: i32, needle: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit status {code}, got {:?}:\nstdout: {}\nstderr: {e}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
    );
    assert!(e.starts_with("pgstrata: error: "), "{e}");
    assert!(e.contains(needle), "stderr lacks {needle:?}: {e}");
}

/// What a command printed on stdout.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a command printed on stderr.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
