//! What a test expects of a pgstrata command's outcome: success, or a
//! failure with its exit status and one-line error.

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
