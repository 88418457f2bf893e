//! Load the XDP program, attach it (native, else generic), pin its maps and link under
//! `/sys/fs/bpf/<instance>/`, replace it atomically, and detach it leaving nothing behind.
//!
//! # Design
//! The link is pinned as `link_native` or `link_generic`, so any process can tell how the filter
//! is attached. A second `attach` to the same interface loads the new program against the same
//! pinned maps (rules and counters survive) and swaps it into the existing link with
//! `bpf_link_update`: no packet meets the interface without a filter. The link's interface is
//! read from its fdinfo: an attach to another interface is refused, and a link whose interface
//! vanished is replaced by a fresh attach.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use firewall_common::{PROGRAM_NAME, map_names};

use crate::{FirewallError, Maps, Policy};

/// Root of bpffs.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Longest instance name accepted.
pub const INSTANCE_NAME_MAX: usize = 32;

/// The kernel program, built by build.rs.
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/firewall"));

/// A named filter: its pins live in `/sys/fs/bpf/<name>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    name: String,
    dir: PathBuf,
}

impl Instance {
    /// An instance name: 1 to 32 of `[a-z0-9_-]`.
    pub fn new(name: &str) -> Result<Instance, FirewallError> {
        let ok = !name.is_empty()
            && name.len() <= INSTANCE_NAME_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(FirewallError::InvalidPolicy(format!(
                "instance name {name:?} must be 1 to {INSTANCE_NAME_MAX} of a-z, 0-9, _ and -"
            )));
        }
        Ok(Instance {
            name: name.to_string(),
            dir: Path::new(BPFFS).join(name),
        })
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directory of its pins.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn link_path(&self, mode: &str) -> PathBuf {
        self.dir.join(format!("link_{mode}"))
    }

    /// The interface index the pinned link is attached to (0 when that interface is gone), from
    /// the link's fdinfo; `None` when not attached.
    pub fn attached_ifindex(&self) -> Result<Option<u32>, FirewallError> {
        let Some((_, path)) = self.attached_link() else {
            return Ok(None);
        };
        link_ifindex(&path).map(Some)
    }

    /// The attach mode (`native` or `generic`) and pinned link path, if attached.
    pub fn attached_link(&self) -> Option<(&'static str, PathBuf)> {
        ["native", "generic"]
            .into_iter()
            .map(|m| (m, self.link_path(m)))
            .find(|(_, p)| p.exists())
    }
}

/// Reads `ifindex:` from the fdinfo of the XDP link pinned at `path`.
fn link_ifindex(path: &Path) -> Result<u32, FirewallError> {
    use std::os::unix::ffi::OsStrExt;
    let io_err = |source| FirewallError::Io {
        what: format!("reading the pinned link {}", path.display()),
        source,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    /// The BPF_OBJ_GET part of `union bpf_attr`.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
    }
    let attr = ObjGet {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
    };
    const BPF_OBJ_GET: libc::c_long = 7;
    // SAFETY: `attr` is a valid BPF_OBJ_GET attribute whose pathname outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{fd}"));
    // SAFETY: `fd` was just returned by the kernel to this process and is closed once.
    unsafe { libc::close(fd as i32) };
    let fdinfo = fdinfo.map_err(io_err)?;
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("ifindex:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            io_err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no ifindex in fdinfo",
            ))
        })
}

/// Which XDP mode to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic when the driver cannot.
    Auto,
    /// Native only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// The result of an attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// Interface name.
    pub iface: String,
    /// `native` or `generic`.
    pub mode: &'static str,
    /// True when an attached program was replaced in place.
    pub replaced: bool,
}

/// Checks what loading needs: root, BTF, bpffs (mounted here if missing), memlock.
pub fn preflight() -> Result<(), FirewallError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(FirewallError::NotRoot);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(FirewallError::NoBtf);
    }
    ensure_bpffs()?;
    raise_memlock();
    Ok(())
}

fn ensure_bpffs() -> Result<(), FirewallError> {
    let path = CString::new(BPFFS).map_err(|e| FirewallError::Io {
        what: "bpffs path".into(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    // SAFETY: statfs is plain data; zeroed is a valid initial value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a writable statfs.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type == BPF_FS_MAGIC {
        return Ok(());
    }
    log::warn!("bpffs is not mounted at {BPFFS}; mounting it");
    let fstype = c"bpf";
    // SAFETY: all pointers are valid C strings; data may be null.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            path.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(FirewallError::BpffsUnavailable {
            path: BPFFS.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Lifts RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF maps to: to infinity, or, where
/// the hard limit may not be raised (no CAP_SYS_RESOURCE), to the hard limit.
pub fn raise_memlock() {
    let infinite = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `infinite` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &infinite) } == 0 {
        return;
    }
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `current` is a writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut current) } == 0 {
        current.rlim_cur = current.rlim_max;
        // SAFETY: `current` is a valid rlimit no higher than the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &current) } == 0 {
            log::debug!(
                "memlock limit raised to the hard limit {}",
                current.rlim_max
            );
            return;
        }
    }
    log::info!(
        "memlock limit left as it is ({}); kernels >= 5.11 account BPF memory to the cgroup instead",
        io::Error::last_os_error()
    );
}

/// A loaded (verified) program whose maps are pinned in its instance directory.
pub struct Loaded {
    instance: Instance,
    ebpf: Ebpf,
}

/// Loads the program, creating the instance's pinned maps or re-using existing ones. When it
/// fails, an instance this call created is removed again.
pub fn load(instance: &Instance) -> Result<Loaded, FirewallError> {
    if PROGRAM_OBJECT.is_empty() {
        return Err(FirewallError::ProgramNotBuilt);
    }
    preflight()?;
    let existed = instance.dir().exists();
    let result = load_pinned(instance);
    if result.is_err() && !existed {
        let _ = remove_pins(instance);
    }
    result
}

fn load_pinned(instance: &Instance) -> Result<Loaded, FirewallError> {
    fs::create_dir_all(instance.dir()).map_err(|source| FirewallError::Io {
        what: format!("creating {}", instance.dir().display()),
        source,
    })?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(instance.dir())
        .load(PROGRAM_OBJECT)
        .map_err(|source| FirewallError::Load {
            dir: instance.dir().to_path_buf(),
            source: Box::new(source),
        })?;
    program_mut(&mut ebpf)?
        .load()
        .map_err(|source| FirewallError::Verifier {
            source: Box::new(source),
        })?;
    Ok(Loaded {
        instance: instance.clone(),
        ebpf,
    })
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, FirewallError> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(FirewallError::ProgramNotBuilt)?;
    program
        .try_into()
        .map_err(|source| FirewallError::Verifier {
            source: Box::new(source),
        })
}

impl Loaded {
    /// The instance this program belongs to.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Instructions the verifier processed to accept the program (its complexity; the kernel
    /// refuses programs over 1,000,000), when the kernel reports it (Linux >= 5.16).
    pub fn verified_instructions(&self) -> Option<u32> {
        let program: &Xdp = self.ebpf.program(PROGRAM_NAME)?.try_into().ok()?;
        program.info().ok()?.verified_instruction_count()
    }

    /// Opens the pinned maps.
    pub fn maps(&self) -> Result<Maps, FirewallError> {
        Maps::open(&self.instance)
    }

    /// Runs the program once on `frame` with BPF_PROG_TEST_RUN; returns the XDP action.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, FirewallError> {
        Ok(self.test_run_repeat(frame, 1)?.0)
    }

    /// Runs the program `repeat` times on `frame`; returns the action and the kernel's mean
    /// time per run.
    pub fn test_run_repeat(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), FirewallError> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(FirewallError::ProgramNotBuilt)?
            .try_into()
            .map_err(|source| FirewallError::Verifier {
                source: Box::new(source),
            })?;
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        };
        let result = program
            .test_run(opts)
            .map_err(|source| FirewallError::Verifier {
                source: Box::new(source),
            })?;
        Ok((result.return_value, result.duration))
    }

    /// Attaches to `iface` (in the calling thread's network namespace) and pins the link, or,
    /// if the instance is already attached to that interface, swaps this program into its link
    /// atomically (see the module documentation for the other cases).
    pub fn attach(mut self, iface: &str, mode: AttachMode) -> Result<Attached, FirewallError> {
        let unknown = || FirewallError::UnknownInterface {
            iface: iface.to_string(),
        };
        let c_iface = CString::new(iface).map_err(|_| unknown())?;
        // SAFETY: `c_iface` is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
        if ifindex == 0 {
            return Err(unknown());
        }
        if let Some((current, path)) = self.instance.attached_link() {
            match link_ifindex(&path)? {
                linked if linked == ifindex => {
                    return self.replace(iface, current, path);
                }
                0 => {
                    // The interface the link was on is gone (its namespace deleted, say).
                    log::warn!(
                        "removing the stale link {} of a vanished interface",
                        path.display()
                    );
                    fs::remove_file(&path).map_err(|source| FirewallError::Io {
                        what: format!("removing {}", path.display()),
                        source,
                    })?;
                }
                linked => {
                    return Err(FirewallError::AttachedElsewhere {
                        instance: self.instance.name().to_string(),
                        ifindex: linked,
                    });
                }
            }
        }
        let program = program_mut(&mut self.ebpf)?;
        let (link_id, mode_name) = match mode {
            AttachMode::Native => (
                program.attach(iface, XdpMode::Driver).map_err(|source| {
                    FirewallError::AttachMode {
                        iface: iface.to_string(),
                        mode: "native",
                        source: Box::new(source),
                    }
                })?,
                "native",
            ),
            AttachMode::Generic => (
                program.attach(iface, XdpMode::Skb).map_err(|source| {
                    FirewallError::AttachMode {
                        iface: iface.to_string(),
                        mode: "generic",
                        source: Box::new(source),
                    }
                })?,
                "generic",
            ),
            AttachMode::Auto => match program.attach(iface, XdpMode::Driver) {
                Ok(id) => (id, "native"),
                Err(native) => {
                    log::warn!("native XDP on {iface} failed ({native}); trying generic mode");
                    match program.attach(iface, XdpMode::Skb) {
                        Ok(id) => (id, "generic"),
                        Err(generic) => {
                            return Err(FirewallError::Attach {
                                iface: iface.to_string(),
                                native: native.to_string(),
                                generic: generic.to_string(),
                            });
                        }
                    }
                }
            },
        };
        let link = program
            .take_link(link_id)
            .map_err(|source| FirewallError::Verifier {
                source: Box::new(source),
            })?;
        // A netlink attachment is dropped (detached) here, leaving nothing half-attached.
        let fd_link: FdLink = link.try_into().map_err(|_| FirewallError::NoXdpLink)?;
        let path = self.instance.link_path(mode_name);
        fd_link.pin(&path).map_err(|source| FirewallError::Pin {
            path,
            source: Box::new(source),
        })?;
        Ok(Attached {
            iface: iface.to_string(),
            mode: mode_name,
            replaced: false,
        })
    }

    /// Swaps this program into the pinned link at `path` (`bpf_link_update`): no packet meets
    /// the interface without a filter.
    fn replace(
        mut self,
        iface: &str,
        mode: &'static str,
        path: PathBuf,
    ) -> Result<Attached, FirewallError> {
        let link_err = |source| FirewallError::PinnedLink {
            path: path.clone(),
            source: Box::new(source),
        };
        let fd_link: FdLink = PinnedLink::from_pin(&path).map_err(link_err)?.into();
        let link = XdpLink::try_from(fd_link).map_err(link_err)?;
        program_mut(&mut self.ebpf)?
            .attach_to_link(link)
            .map_err(|source| FirewallError::Replace {
                path,
                source: Box::new(source),
            })?;
        Ok(Attached {
            iface: iface.to_string(),
            mode,
            replaced: true,
        })
    }
}

/// Loads the program, writes `policy` into its maps, and attaches it to `iface` (or replaces
/// the attached program). On failure a newly created instance is removed again.
pub fn attach(
    instance: &Instance,
    iface: &str,
    mode: AttachMode,
    policy: Option<&Policy>,
) -> Result<Attached, FirewallError> {
    if let Some(policy) = policy {
        policy.validate()?;
    }
    let existed = instance.dir().exists();
    let result = load(instance).and_then(|loaded| {
        if let Some(policy) = policy {
            loaded.maps()?.apply_policy(policy)?;
        }
        loaded.attach(iface, mode)
    });
    if result.is_err() && !existed {
        let _ = remove_pins(instance);
    }
    result
}

/// Detaches the filter (unpins its link) and removes its pinned maps. Returns false when the
/// instance was not there.
pub fn detach(instance: &Instance) -> Result<bool, FirewallError> {
    if !instance.dir().exists() {
        return Ok(false);
    }
    remove_pins(instance)?;
    Ok(true)
}

/// Removes every pin of the instance (link first, so the program detaches before its maps go).
pub fn remove_pins(instance: &Instance) -> Result<(), FirewallError> {
    let io_err = |what: String| move |source| FirewallError::Io { what, source };
    while let Some((_, path)) = instance.attached_link() {
        fs::remove_file(&path).map_err(io_err(format!("removing {}", path.display())))?;
    }
    for name in map_names::ALL {
        let path = instance.dir().join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {}", path.display()))(e)),
        }
    }
    match fs::remove_dir(instance.dir()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", instance.dir().display()))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_restricted_to_safe_path_components() {
        assert!(Instance::new("node-1_a").is_ok());
        for bad in ["", "../x", "a/b", "UPPER", &"x".repeat(33)] {
            assert!(Instance::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
