//! Read member offsets of kernel structs and the values of kernel enums from BTF.
//!
//! # Design
//! Only what the telemetry needs: the type section is indexed once (the start of every type),
//! and lookups decode the few types they visit. A member path such as `__sk_common.skc_net.net`
//! descends through anonymous structs and unions the way C does. Bitfield members are refused:
//! the programs read whole bytes.

use std::path::Path;

use super::TelemetryError;

/// Where the running kernel publishes its BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
const MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;
const TYPE_HEADER: usize = 12;
/// Anonymous members nested deeper than this are not searched (the kernel's go 3 deep).
const ANONYMOUS_DEPTH_MAX: u32 = 8;
/// Typedef/qualifier chains longer than this are refused as malformed (a loop).
const ALIAS_CHAIN_MAX: u32 = 32;

mod kind {
    pub const INT: u32 = 1;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// Parsed BTF: the raw bytes and where each type starts.
pub struct Btf {
    data: Vec<u8>,
    /// Byte offset of each type's header, by type id (id 0, `void`, has none).
    types: Vec<usize>,
    strings: std::ops::Range<usize>,
}

/// One decoded type header.
#[derive(Clone, Copy)]
struct TypeHeader {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
    /// Where the kind-specific data after the header starts.
    extra: usize,
}

impl Btf {
    /// Reads and indexes the running kernel's BTF.
    pub fn from_kernel() -> Result<Btf, TelemetryError> {
        Btf::from_file(Path::new(KERNEL_BTF))
    }

    /// Reads and indexes a BTF file.
    pub fn from_file(path: &Path) -> Result<Btf, TelemetryError> {
        let data = std::fs::read(path).map_err(|source| TelemetryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Btf::parse(data)
    }

    /// Indexes BTF bytes (little-endian, as on every host this runs on).
    pub fn parse(data: Vec<u8>) -> Result<Btf, TelemetryError> {
        let malformed = |what: &str| TelemetryError::Btf(format!("malformed BTF: {what}"));
        if data.len() < HEADER_MIN || u16_at(&data, 0) != Some(MAGIC) {
            return Err(malformed("no BTF header (wrong magic or too short)"));
        }
        let field = |at: usize| u32_at(&data, at).map(|v| v as usize);
        let (hdr_len, type_off, type_len, str_off, str_len) = (
            field(4).ok_or_else(|| malformed("header"))?,
            field(8).ok_or_else(|| malformed("header"))?,
            field(12).ok_or_else(|| malformed("header"))?,
            field(16).ok_or_else(|| malformed("header"))?,
            field(20).ok_or_else(|| malformed("header"))?,
        );
        if hdr_len < HEADER_MIN || hdr_len > data.len() {
            return Err(malformed("header length"));
        }
        let type_start = hdr_len
            .checked_add(type_off)
            .ok_or_else(|| malformed("type section"))?;
        let type_end = type_start
            .checked_add(type_len)
            .ok_or_else(|| malformed("type section"))?;
        let str_start = hdr_len
            .checked_add(str_off)
            .ok_or_else(|| malformed("string section"))?;
        let str_end = str_start
            .checked_add(str_len)
            .ok_or_else(|| malformed("string section"))?;
        if type_end > data.len() || str_end > data.len() {
            return Err(malformed("a section ends past the end of the data"));
        }
        let mut btf = Btf {
            data,
            types: vec![0],
            strings: str_start..str_end,
        };
        let mut at = type_start;
        while at < type_end {
            let header = btf
                .header_at(at)
                .ok_or_else(|| malformed("truncated type"))?;
            let extra_len = match header.kind {
                kind::INT | kind::VAR | kind::DECL_TAG => 4,
                kind::ARRAY => 12,
                kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * header.vlen,
                kind::ENUM | kind::FUNC_PROTO => 8 * header.vlen,
                0 | 20.. => return Err(malformed(&format!("unknown kind {}", header.kind))),
                _ => 0,
            };
            btf.types.push(at);
            at = header.extra + extra_len;
        }
        if at != type_end {
            return Err(malformed(
                "the last type crosses the end of the type section",
            ));
        }
        Ok(btf)
    }

    fn header_at(&self, at: usize) -> Option<TypeHeader> {
        let info = u32_at(&self.data, at + 4)?;
        Some(TypeHeader {
            name_off: u32_at(&self.data, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(&self.data, at + 8)?,
            extra: at + TYPE_HEADER,
        })
    }

    fn header(&self, id: u32) -> Option<TypeHeader> {
        let at = *self.types.get(id as usize).filter(|_| id != 0)?;
        self.header_at(at)
    }

    fn name(&self, offset: u32) -> &str {
        let start = self.strings.start + offset as usize;
        if start >= self.strings.end {
            return "";
        }
        let bytes = &self.data[start..self.strings.end];
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
    }

    /// Ids of the types of `kind` named `name`.
    fn find(&self, name: &str, kinds: &[u32]) -> Option<u32> {
        (1..self.types.len() as u32).find(|id| {
            self.header(*id)
                .is_some_and(|h| kinds.contains(&h.kind) && self.name(h.name_off) == name)
        })
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<TypeHeader> {
        for _ in 0..ALIAS_CHAIN_MAX {
            let header = self.header(id)?;
            match header.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = header.size_or_type
                }
                _ => return Some(header),
            }
        }
        None
    }

    /// Byte offset of `path` (members separated by dots) inside `struct name`.
    pub fn offset_of(&self, name: &str, path: &str) -> Result<u32, TelemetryError> {
        let no_member = || TelemetryError::BtfMember {
            name: name.to_string(),
            path: path.to_string(),
        };
        let id = self
            .find(name, &[kind::STRUCT, kind::UNION])
            .ok_or_else(|| TelemetryError::BtfType {
                name: name.to_string(),
            })?;
        let mut header = self.header(id).ok_or_else(no_member)?;
        let mut bits = 0u32;
        for segment in path.split('.') {
            let (offset, member_type) = self.member(header, segment, 0).ok_or_else(no_member)?;
            bits = bits.checked_add(offset).ok_or_else(no_member)?;
            header = match self.resolve(member_type) {
                Some(h) => h,
                None => return Err(no_member()),
            };
        }
        if !bits.is_multiple_of(8) {
            return Err(no_member());
        }
        Ok(bits / 8)
    }

    /// Finds member `name` of a struct or union, descending into anonymous members; returns
    /// its bit offset and type id.
    fn member(&self, parent: TypeHeader, name: &str, depth: u32) -> Option<(u32, u32)> {
        if !matches!(parent.kind, kind::STRUCT | kind::UNION) || depth > ANONYMOUS_DEPTH_MAX {
            return None;
        }
        for i in 0..parent.vlen {
            let at = parent.extra + 12 * i;
            let name_off = u32_at(&self.data, at)?;
            let member_type = u32_at(&self.data, at + 4)?;
            let raw = u32_at(&self.data, at + 8)?;
            let (bit_offset, bitfield) = if parent.kind_flag {
                (raw & 0x00ff_ffff, raw >> 24 != 0)
            } else {
                (raw, false)
            };
            let member_name = self.name(name_off);
            if member_name == name {
                return (!bitfield).then_some((bit_offset, member_type));
            }
            if member_name.is_empty() {
                let inner = self.resolve(member_type)?;
                if let Some((offset, found)) = self.member(inner, name, depth + 1) {
                    return Some((bit_offset.checked_add(offset)?, found));
                }
            }
        }
        None
    }

    /// Every value of `enum name`, with its name (signed or unsigned as the enum says).
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, i128)>, TelemetryError> {
        let id = self
            .find(name, &[kind::ENUM, kind::ENUM64])
            .ok_or_else(|| TelemetryError::BtfType {
                name: name.to_string(),
            })?;
        let header = self.header(id).ok_or_else(|| TelemetryError::BtfType {
            name: name.to_string(),
        })?;
        let stride = if header.kind == kind::ENUM { 8 } else { 12 };
        let truncated = || TelemetryError::Btf(format!("malformed BTF: enum {name} is truncated"));
        (0..header.vlen)
            .map(|i| {
                let at = header.extra + stride * i;
                let value_name = self.name(u32_at(&self.data, at).ok_or_else(truncated)?);
                let low = u32_at(&self.data, at + 4).ok_or_else(truncated)?;
                let value = if header.kind == kind::ENUM {
                    if header.kind_flag {
                        i128::from(low as i32)
                    } else {
                        i128::from(low)
                    }
                } else {
                    let high = u32_at(&self.data, at + 8).ok_or_else(truncated)?;
                    let bits = (u64::from(high) << 32) | u64::from(low);
                    if header.kind_flag {
                        i128::from(bits as i64)
                    } else {
                        i128::from(bits)
                    }
                };
                Ok((value_name.to_string(), value))
            })
            .collect()
    }
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF bytes: `types` is the type section, `strings` the string section.
    fn btf(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(types);
        out.extend_from_slice(strings);
        out
    }

    fn ty(name_off: u32, kind: u32, vlen: u32, kind_flag: bool, size_or_type: u32) -> Vec<u8> {
        let info = (kind << 24) | vlen | if kind_flag { 1 << 31 } else { 0 };
        [name_off, info, size_or_type]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn words(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// `struct outer { int a; union { struct { int pad; int deep; }; }; struct inner named; }`
    /// with `struct inner { int x; int y; }`, `typedef struct inner inner_t`, and
    /// `enum colour { RED = 2, BLUE = -1 }` (signed).
    fn sample() -> Btf {
        // Strings: 0 "", 1 "int", 5 "outer", 11 "a", 13 "deep", 18 "inner", 24 "x", 26 "y",
        // 28 "named", 34 "colour", 41 "RED", 45 "BLUE", 50 "pad", 54 "inner_t"
        let strings =
            b"\0int\0outer\0a\0deep\0inner\0x\0y\0named\0colour\0RED\0BLUE\0pad\0inner_t\0";
        let mut types = Vec::new();
        // 1: int
        types.extend(ty(1, kind::INT, 0, false, 4));
        types.extend(words(&[32]));
        // 2: anonymous struct { int pad @0; int deep @32 }
        types.extend(ty(0, kind::STRUCT, 2, false, 8));
        types.extend(words(&[50, 1, 0, 13, 1, 32]));
        // 3: anonymous union { struct 2 @0 }
        types.extend(ty(0, kind::UNION, 1, false, 8));
        types.extend(words(&[0, 2, 0]));
        // 4: struct inner { int x @0; int y @32 }
        types.extend(ty(18, kind::STRUCT, 2, false, 8));
        types.extend(words(&[24, 1, 0, 26, 1, 32]));
        // 5: typedef inner_t -> 4
        types.extend(ty(54, kind::TYPEDEF, 0, false, 4));
        // 6: struct outer { int a @0; union 3 @64; inner_t named @128 }
        types.extend(ty(5, kind::STRUCT, 3, false, 24));
        types.extend(words(&[11, 1, 0, 0, 3, 64, 28, 5, 128]));
        // 7: enum colour (signed) { RED = 2, BLUE = -1 }
        types.extend(ty(34, kind::ENUM, 2, true, 4));
        types.extend(words(&[41, 2, 45, u32::MAX]));
        Btf::parse(btf(&types, strings)).expect("sample BTF parses")
    }

    #[test]
    fn offsets_descend_through_anonymous_members_and_typedefs() {
        let btf = sample();
        assert_eq!(btf.offset_of("outer", "a").unwrap(), 0);
        assert_eq!(btf.offset_of("outer", "deep").unwrap(), 12);
        assert_eq!(btf.offset_of("outer", "named.y").unwrap(), 20);
        assert_eq!(btf.offset_of("inner", "y").unwrap(), 4);
    }

    #[test]
    fn missing_types_and_members_are_named_in_the_error() {
        let btf = sample();
        let e = btf.offset_of("outer", "named.z").unwrap_err().to_string();
        assert!(e.contains("outer") && e.contains("named.z"), "{e}");
        let e = btf.offset_of("nowhere", "a").unwrap_err().to_string();
        assert!(e.contains("nowhere"), "{e}");
    }

    #[test]
    fn enum_values_keep_their_names_and_signs() {
        let values = sample().enum_values("colour").unwrap();
        assert_eq!(
            values,
            vec![("RED".to_string(), 2), ("BLUE".to_string(), -1)]
        );
    }

    #[test]
    fn member_offsets_that_overflow_are_an_error_not_a_panic() {
        let strings = b"\0int\0outer\0deep\0";
        let mut types = Vec::new();
        types.extend(ty(1, kind::INT, 0, false, 4));
        types.extend(words(&[32]));
        // 2: anonymous struct { int deep @32 }
        types.extend(ty(0, kind::STRUCT, 1, false, 8));
        types.extend(words(&[11, 1, 32]));
        // 3: struct outer { struct 2 @ (u32::MAX - 7) }
        types.extend(ty(5, kind::STRUCT, 1, false, 8));
        types.extend(words(&[0, 2, u32::MAX - 7]));
        let btf = Btf::parse(btf(&types, strings)).unwrap();
        assert!(btf.offset_of("outer", "deep").is_err());
    }

    #[test]
    fn malformed_btf_is_refused_not_panicked_on() {
        assert!(Btf::parse(vec![0; 10]).is_err());
        assert!(Btf::parse(btf(&ty(0, 31, 0, false, 0), b"\0")).is_err());
        let mut truncated = ty(1, kind::STRUCT, 5, false, 8);
        truncated.extend(words(&[0, 0]));
        assert!(Btf::parse(btf(&truncated, b"\0")).is_err());
    }

    #[test]
    fn the_running_kernel_describes_every_member_the_programs_read() {
        let Ok(btf) = Btf::from_kernel() else {
            println!("SKIPPED: {KERNEL_BTF} is not readable on this machine");
            return;
        };
        for (name, path) in [
            ("sk_buff", "head"),
            ("sk_buff", "data"),
            ("sk_buff", "network_header"),
            ("sk_buff", "protocol"),
            ("sk_buff", "dev"),
            ("sk_buff", "sk"),
            ("net_device", "nd_net.net"),
            ("sock", "__sk_common.skc_net.net"),
            ("sock", "__sk_common.skc_num"),
            ("net", "ns.inum"),
        ] {
            btf.offset_of(name, path)
                .unwrap_or_else(|e| panic!("{name}.{path}: {e}"));
        }
        let reasons = btf.enum_values("skb_drop_reason").unwrap();
        assert!(
            reasons
                .iter()
                .any(|(n, _)| n == "SKB_DROP_REASON_NO_SOCKET")
        );
    }
}
