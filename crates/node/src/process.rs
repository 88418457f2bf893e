//! Read this process's CPU time, memory, threads, open files and start time from `/proc`.
//!
//! # Design
//! Each source (`/proc/self/stat`, `/proc/self/statm`, `/proc/self/fd`) is read on its own, so
//! one that cannot be read or parsed costs only its own metrics. Parsing is split from reading
//! and never panics: content the kernel would not write is an [`ProcessError::Malformed`].

/// Where the kernel describes this process.
const STAT_PATH: &str = "/proc/self/stat";
/// Memory of this process, in pages.
const STATM_PATH: &str = "/proc/self/statm";
/// One entry per open file descriptor.
const FD_DIR: &str = "/proc/self/fd";
/// System-wide statistics, with the boot time.
const SYSTEM_STAT_PATH: &str = "/proc/stat";
/// Largest `/proc` file read, bytes: `stat` lines are well under 1 KiB; `/proc/stat` grows with
/// CPUs and interrupts, and 1 MiB covers thousands of CPUs.
const MAX_PROC_FILE_BYTES: u64 = 1024 * 1024;

/// Position of `utime` (CPU ticks in user mode) among the fields after the command name in
/// `/proc/self/stat` (field 14 in proc(5), whose fields 1 and 2 are the pid and command).
const STAT_UTIME: usize = 11;
/// Position of `stime` (ticks in kernel mode): field 15.
const STAT_STIME: usize = 12;
/// Position of `num_threads`: field 20.
const STAT_THREADS: usize = 17;
/// Position of `starttime` (ticks after boot): field 22.
const STAT_STARTTIME: usize = 19;

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What was read.
        path: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The content is not what the kernel writes.
    #[error("{path} is malformed: {detail}")]
    Malformed {
        /// What was read.
        path: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The system does not report a value this reading needs.
    #[error("sysconf({name}) gave no usable value")]
    Sysconf {
        /// The sysconf name.
        name: &'static str,
    },
}

/// CPU time, threads and start of the process, from `/proc/self/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Threads in the process.
    pub threads: u64,
    /// When the process started, seconds since the UNIX epoch.
    pub start_time_seconds: f64,
}

/// Memory of the process, from `/proc/self/statm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
}

/// Reads the CPU time, threads and start time of this process.
pub fn cpu() -> Result<CpuStats, ProcessError> {
    let ticks = sysconf(libc::_SC_CLK_TCK, "_SC_CLK_TCK")?;
    let stat = read_bounded(STAT_PATH)?;
    let system = read_bounded(SYSTEM_STAT_PATH)?;
    parse_stat(&stat, ticks, parse_boot_time(&system)?)
}

/// Reads the memory of this process.
pub fn memory() -> Result<MemoryStats, ProcessError> {
    let page = sysconf(libc::_SC_PAGESIZE, "_SC_PAGESIZE")?;
    parse_statm(&read_bounded(STATM_PATH)?, page)
}

/// Counts the open file descriptors of this process (the one used to count them included).
pub fn open_fds() -> Result<u64, ProcessError> {
    let read = |source| ProcessError::Read {
        path: FD_DIR,
        source,
    };
    let mut count = 0;
    for entry in std::fs::read_dir(FD_DIR).map_err(read)? {
        entry.map_err(read)?;
        count += 1;
    }
    Ok(count)
}

fn sysconf(name: libc::c_int, label: &'static str) -> Result<u64, ProcessError> {
    // SAFETY: sysconf has no memory preconditions; an unknown name returns -1.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or(ProcessError::Sysconf { name: label })
}

fn read_bounded(path: &'static str) -> Result<String, ProcessError> {
    use std::io::Read;
    let read = |source| ProcessError::Read { path, source };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut text = String::new();
    file.take(MAX_PROC_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(read)?;
    Ok(text)
}

fn malformed(path: &'static str, detail: impl Into<String>) -> ProcessError {
    ProcessError::Malformed {
        path,
        detail: detail.into(),
    }
}

/// Parses `/proc/self/stat` with `ticks` clock ticks per second and the boot time in seconds
/// since the UNIX epoch.
fn parse_stat(text: &str, ticks: u64, boot_time_secs: u64) -> Result<CpuStats, ProcessError> {
    // The command name is in parentheses and may itself hold spaces and parentheses: the
    // fields start after the last `)`.
    let (_, rest) = text
        .rsplit_once(')')
        .ok_or_else(|| malformed(STAT_PATH, "no `)` closing the command name"))?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |index: usize, name: &str| -> Result<u64, ProcessError> {
        let raw = fields
            .get(index)
            .ok_or_else(|| malformed(STAT_PATH, format!("no {name} field")))?;
        raw.parse()
            .map_err(|_| malformed(STAT_PATH, format!("{name} is `{raw}`, not a count")))
    };
    let ticks_f = ticks as f64;
    let cpu_ticks = field(STAT_UTIME, "utime")?.saturating_add(field(STAT_STIME, "stime")?);
    Ok(CpuStats {
        cpu_seconds: cpu_ticks as f64 / ticks_f,
        threads: field(STAT_THREADS, "num_threads")?,
        start_time_seconds: boot_time_secs as f64
            + field(STAT_STARTTIME, "starttime")? as f64 / ticks_f,
    })
}

/// Parses the `btime` line (boot time, seconds since the UNIX epoch) of `/proc/stat`.
fn parse_boot_time(text: &str) -> Result<u64, ProcessError> {
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .ok_or_else(|| malformed(SYSTEM_STAT_PATH, "no btime line"))?;
    value
        .trim()
        .parse()
        .map_err(|_| malformed(SYSTEM_STAT_PATH, format!("btime is `{value}`")))
}

/// Parses `/proc/self/statm` (sizes in pages of `page_bytes`).
fn parse_statm(text: &str, page_bytes: u64) -> Result<MemoryStats, ProcessError> {
    let mut fields = text.split_ascii_whitespace();
    let mut pages = |name: &str| -> Result<u64, ProcessError> {
        let raw = fields
            .next()
            .ok_or_else(|| malformed(STATM_PATH, format!("no {name} field")))?;
        raw.parse()
            .map_err(|_| malformed(STATM_PATH, format!("{name} is `{raw}`, not a page count")))
    };
    let size = pages("size")?;
    let resident = pages("resident")?;
    Ok(MemoryStats {
        resident_bytes: resident.saturating_mul(page_bytes),
        virtual_bytes: size.saturating_mul(page_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line, with a command name holding a space and a parenthesis.
    const STAT: &str = "4242 (node (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 \
                        7 0 1000 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17 3 0 0 0 \
                        0 0\n";

    #[test]
    fn stat_gives_cpu_time_threads_and_start_with_tricky_command_names() {
        let cpu = parse_stat(STAT, 100, 1_700_000_000).unwrap();
        assert_eq!(cpu.cpu_seconds, 3.0);
        assert_eq!(cpu.threads, 7);
        assert_eq!(cpu.start_time_seconds, 1_700_000_010.0);
    }

    #[test]
    fn malformed_stat_is_an_error_not_a_panic() {
        for text in [
            "",
            "4242 node S 1",
            "4242 (node) S 1 2 3",
            "4242 (node) S 1 4242 4242 0 -1 4194560 1234 0 0 0 x 50 0 0 20 0 7 0 1000",
        ] {
            assert!(
                matches!(
                    parse_stat(text, 100, 0),
                    Err(ProcessError::Malformed { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn statm_pages_become_bytes() {
        let memory = parse_statm("2000 300 100 10 0 500 0\n", 4096).unwrap();
        assert_eq!(memory.virtual_bytes, 2000 * 4096);
        assert_eq!(memory.resident_bytes, 300 * 4096);
        assert!(matches!(
            parse_statm("2000", 4096),
            Err(ProcessError::Malformed { .. })
        ));
        assert!(matches!(
            parse_statm("-1 2", 4096),
            Err(ProcessError::Malformed { .. })
        ));
    }

    #[test]
    fn boot_time_is_read_from_the_btime_line() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text).unwrap(), 1_700_000_000);
        assert!(parse_boot_time("cpu 1\n").is_err());
        assert!(parse_boot_time("btime soon\n").is_err());
    }

    #[test]
    fn this_process_reads_plausibly() {
        let cpu = cpu().unwrap();
        assert!(cpu.threads >= 1);
        assert!(cpu.start_time_seconds > 1_000_000_000.0);
        let memory = memory().unwrap();
        assert!(memory.resident_bytes > 0 && memory.virtual_bytes >= memory.resident_bytes);
        assert!(open_fds().unwrap() >= 3);
    }
}
