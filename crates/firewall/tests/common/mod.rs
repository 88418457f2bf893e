//! Shared helpers of the privileged integration tests: the root guard and a throw-away filter
//! instance whose pins are removed when it goes out of scope.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use firewall::{
    Instance, Maps, Reason, Stats, Verdict, netns,
    program::{self, Loaded},
};

/// True when the test can run. Without root it says why loudly; under CI (`CI=true`) a
/// privileged test that cannot run fails instead of skipping.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let why = format!(
        "{test} needs root (BPF_PROG_TEST_RUN, XDP attach, network namespaces): run the suite as root"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; under CI=true a privileged test that cannot run is a failure");
    }
    eprintln!("SKIPPED: {why}");
    false
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique instance name for this test process: `xdptest-<pid>-<n>-<tag>`. The first call also
/// removes what killed test processes left behind (pins `xdptest-<pid>-*`, namespaces
/// `fwt-<pid>-*`, where no process `<pid>` runs any more).
pub fn instance_name(tag: &str) -> String {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(remove_leftovers_of_dead_processes);
    format!(
        "xdptest-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

fn remove_leftovers_of_dead_processes() {
    for prefix in ["xdptest-", "fwt-"] {
        if let Err(e) = netns::remove_leftovers(prefix) {
            eprintln!("removing what killed test runs left ({prefix}*): {e}");
        }
    }
}

/// A loaded (not attached) filter with its own pinned maps, removed on drop.
pub struct TestFilter {
    pub loaded: Loaded,
    pub maps: Maps,
}

impl TestFilter {
    pub fn new(tag: &str) -> TestFilter {
        let instance = Instance::new(&instance_name(tag)).expect("valid instance name");
        let loaded = program::load(&instance).expect("loading the XDP program");
        let maps = loaded.maps().expect("opening the pinned maps");
        TestFilter { loaded, maps }
    }

    /// Runs the program on `frame`; returns the XDP action and the (verdict, reason) counter
    /// that moved, asserting that exactly one packet was counted with the frame's length.
    pub fn run(&self, frame: &[u8]) -> (u32, Verdict, Reason) {
        let before = self.maps.stats().expect("reading stats");
        let action = self.loaded.test_run(frame).expect("BPF_PROG_TEST_RUN");
        let after = self.maps.stats().expect("reading stats");
        let (verdict, reason) = one_count(&after.since(&before), frame.len() as u64);
        (action, verdict, reason)
    }
}

/// The single (verdict, reason) counter in `delta`, which must hold one packet of `bytes`.
pub fn one_count(delta: &Stats, bytes: u64) -> (Verdict, Reason) {
    let moved = delta.nonzero();
    assert_eq!(
        moved.len(),
        1,
        "expected exactly one counter to move, got {moved:?}"
    );
    let (verdict, reason, counter) = moved[0];
    assert_eq!(
        counter.packets, 1,
        "{verdict:?}/{reason:?} counted {counter:?}"
    );
    assert_eq!(counter.bytes, bytes, "{verdict:?}/{reason:?} bytes");
    (verdict, reason)
}

impl Drop for TestFilter {
    fn drop(&mut self) {
        let _ = program::remove_pins(self.loaded.instance());
    }
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
