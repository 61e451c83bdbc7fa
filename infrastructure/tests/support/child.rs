//! The child side of the crash suites: this test binary re-executed to run one test alone,
//! its stdout piped to the parent. Include it with `#[path = "support/child.rs"] mod child;`.

use std::process::{Command, Stdio};

/// This test binary, set to run only the test named `test` (exactly, with its output), with its
/// stdout piped. The caller adds the environment and spawns it.
pub fn child_test(test: &str) -> Command {
    let exe = std::env::current_exe().expect("current test binary");
    let mut child = Command::new(exe);
    child
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped());
    child
}
