//! Shared helpers of the privileged integration tests: the root guard and a throw-away filter
//! instance whose pins are removed when it goes out of scope.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use firewall::{
    Instance, Maps, Reason, Stats, Verdict,
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

/// The pid in a name `<prefix><pid>-...`, if that process is gone.
fn dead_owner(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

fn remove_leftovers_of_dead_processes() {
    if let Ok(entries) = std::fs::read_dir(program::BPFFS) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead_owner(&name, "xdptest-")
                && let Ok(instance) = Instance::new(&name)
            {
                let _ = program::remove_pins(&instance);
            }
        }
    }
    if let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if dead_owner(name, "fwt-") {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", name])
                    .status();
            }
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
