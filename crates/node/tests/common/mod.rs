//! Shared by the node's privileged integration tests.

/// True when the test can run. Without root it says why; under CI (`CI=true`) a privileged
/// test that cannot run fails instead of skipping.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let why = format!("{test} needs root (XDP attach, network namespaces): run the suite as root");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; under CI=true a privileged test that cannot run is a failure");
    }
    eprintln!("SKIPPED: {why}");
    false
}
