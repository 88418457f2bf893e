//! Find (or mount) tracefs and read the record layout of a tracepoint from its `format` file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::TelemetryError;

/// Where tracefs is expected, newest convention first.
const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const TRACEFS_MAGIC: i64 = 0x7472_6163;
/// Longest `format` file read (they are about 1 KiB; the kfree_skb one lists every reason).
const FORMAT_BYTES_MAX: u64 = 64 * 1024;

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset in the record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// The tracefs mount, mounting it on `/sys/kernel/tracing` when none is mounted.
pub fn ensure_mounted() -> Result<PathBuf, TelemetryError> {
    for path in TRACEFS_PATHS {
        if is_tracefs(Path::new(path)) {
            return Ok(PathBuf::from(path));
        }
    }
    let target = Path::new(TRACEFS_PATHS[0]);
    let c_target =
        std::ffi::CString::new(TRACEFS_PATHS[0]).map_err(|_| TelemetryError::Tracefs {
            message: "tracefs path has a NUL byte".into(),
        })?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c_target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TelemetryError::Tracefs {
            message: format!(
                "tracefs is not mounted and mounting it on {} failed: {} (run `mount -t tracefs nodev {}` as root)",
                target.display(),
                std::io::Error::last_os_error(),
                target.display()
            ),
        });
    }
    Ok(target.to_path_buf())
}

fn is_tracefs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct it is given; the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == TRACEFS_MAGIC
    }
}

/// The fields of tracepoint `category:name`, from `<tracefs>/events/<category>/<name>/format`.
pub fn fields(
    tracefs: &Path,
    category: &str,
    name: &str,
) -> Result<HashMap<String, Field>, TelemetryError> {
    use std::io::Read;
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(FORMAT_BYTES_MAX).read_to_string(&mut text))
        .map_err(|source| TelemetryError::Read {
            path: path.clone(),
            source,
        })?;
    let fields = parse_format(&text);
    if fields.is_empty() {
        return Err(TelemetryError::Tracefs {
            message: format!("{} lists no fields", path.display()),
        });
    }
    Ok(fields)
}

/// Parses the `field:<type> <name>[N];\toffset:<o>;\tsize:<s>;...` lines of a format file.
pub fn parse_format(text: &str) -> HashMap<String, Field> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let mut parts = line.trim().split(';').map(str::trim);
        let Some(declaration) = parts.next().and_then(|p| p.strip_prefix("field:")) else {
            continue;
        };
        let mut offset = None;
        let mut size = None;
        for part in parts {
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        let name = declaration
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("");
        let name = name.split('[').next().unwrap_or("");
        if let (false, Some(offset), Some(size)) = (name.is_empty(), offset, size) {
            fields.insert(name.to_string(), Field { offset, size });
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const KFREE_SKB: &str = "name: kfree_skb\nID: 2310\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \n\
        \tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
        \tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;\n\
        \tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n\
        \tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
        \tfield:__data_loc char[] name;\toffset:56;\tsize:4;\tsigned:0;\n\
        \n\
        print fmt: \"skbaddr=%p\", REC->skbaddr\n";

    #[test]
    fn format_files_give_each_field_its_offset_and_size() {
        let fields = parse_format(KFREE_SKB);
        assert_eq!(fields["skbaddr"], Field { offset: 8, size: 8 });
        assert_eq!(
            fields["protocol"],
            Field {
                offset: 32,
                size: 2
            }
        );
        assert_eq!(
            fields["reason"],
            Field {
                offset: 36,
                size: 4
            }
        );
        assert_eq!(
            fields["saddr_v6"],
            Field {
                offset: 40,
                size: 16
            }
        );
        assert_eq!(
            fields["name"],
            Field {
                offset: 56,
                size: 4
            }
        );
        assert_eq!(fields["common_type"], Field { offset: 0, size: 2 });
    }

    #[test]
    fn garbage_lines_are_ignored() {
        assert!(parse_format("field:\nfield:int x;\toffset:zz;\tsize:4;\n\0\u{1}").is_empty());
    }
}
