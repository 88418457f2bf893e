//! Encode bans and offence records for the store, and read them back.
//!
//! # Layout
//! - `Column::Bans`: one record per active ban, key = [`key`] of its target, value = the
//!   ban's fields ([`BanRecord`]).
//! - `Column::Peers`: one offence record per target, same key, value = [`OffenceRecord`].
//!
//! A key is a tag byte ([`TAG_PEER`], [`TAG_NET_V4`], [`TAG_NET_V6`]) then the peer id's
//! multihash bytes, or the net's address bytes (network order) and prefix length. Only keys that
//! start with these tags are read, so other records in the same columns are left alone. Values use
//! the project's canonical codec ([`types::codec`]); every field is bounded and checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use firewall_common::BanReason;
use ipnet::IpNet;
use libp2p::PeerId;
use storage::{Column, Store, StoreError};
use types::codec::{Decode, DecodeError, Encode, Reader, put_bytes, put_len};

use super::offences::OffenceRecord;
use super::{Ban, BanTarget, MAX_DETAIL_BYTES, MAX_LIST_LEN, Source};

/// Key tag of a peer target: followed by the peer id's bytes.
const TAG_PEER: u8 = 1;
/// Key tag of an IPv4 net: followed by 4 address bytes and the prefix length.
const TAG_NET_V4: u8 = 2;
/// Key tag of an IPv6 net: followed by 16 address bytes and the prefix length.
const TAG_NET_V6: u8 = 3;
/// Every tag, in key order.
const TAGS: [u8; 3] = [TAG_PEER, TAG_NET_V4, TAG_NET_V6];

/// Longest peer id in bytes: a multihash with a 64-byte digest and its two varint headers.
const MAX_PEER_ID_BYTES: usize = 80;

/// Entries read per store scan while loading.
const SCAN_PAGE: usize = 1024;

/// The store key of `target`.
pub(super) fn key(target: &BanTarget) -> Vec<u8> {
    let mut out = Vec::new();
    match target {
        BanTarget::Peer(peer) => {
            out.push(TAG_PEER);
            out.extend_from_slice(&peer.to_bytes());
        }
        BanTarget::Address(IpNet::V4(net)) => {
            out.push(TAG_NET_V4);
            out.extend_from_slice(&net.addr().octets());
            out.push(net.prefix_len());
        }
        BanTarget::Address(IpNet::V6(net)) => {
            out.push(TAG_NET_V6);
            out.extend_from_slice(&net.addr().octets());
            out.push(net.prefix_len());
        }
    }
    out
}

/// A peer id from its bytes, which must be its canonical encoding (one id, one key).
fn peer_id(raw: &[u8]) -> Result<PeerId, DecodeError> {
    let peer = PeerId::from_bytes(raw).map_err(|_| DecodeError::Invalid {
        what: "peer id",
        reason: "not a peer id multihash",
    })?;
    if peer.to_bytes() != raw {
        return Err(DecodeError::Invalid {
            what: "peer id",
            reason: "not in canonical form",
        });
    }
    Ok(peer)
}

/// The target whose [`key`] is `bytes`; refuses anything [`key`] would not have written.
fn target_from_key(bytes: &[u8]) -> Result<BanTarget, DecodeError> {
    if bytes.len() > 1 + MAX_PEER_ID_BYTES {
        return Err(DecodeError::Oversized {
            what: "ban target key",
            len: bytes.len(),
            max: 1 + MAX_PEER_ID_BYTES,
        });
    }
    let mut r = Reader::new(bytes);
    let target = match r.u8()? {
        TAG_PEER => BanTarget::Peer(peer_id(r.take(r.remaining())?)?),
        TAG_NET_V4 => BanTarget::Address(net(
            IpAddr::from(r.array::<4>()?),
            r.u8()?,
            "ban target key",
        )?),
        TAG_NET_V6 => BanTarget::Address(net(
            IpAddr::from(r.array::<16>()?),
            r.u8()?,
            "ban target key",
        )?),
        tag => {
            return Err(DecodeError::InvalidTag {
                what: "ban target key",
                tag,
            });
        }
    };
    r.finish()?;
    Ok(target)
}

/// The net `addr/prefix`, which must be valid and truncated (host bits zero).
fn net(addr: IpAddr, prefix: u8, what: &'static str) -> Result<IpNet, DecodeError> {
    let net = IpNet::new(addr, prefix).map_err(|_| DecodeError::Invalid {
        what,
        reason: "prefix length too long",
    })?;
    if net.trunc() != net {
        return Err(DecodeError::Invalid {
            what,
            reason: "host bits set",
        });
    }
    Ok(net)
}

/// An [`IpNet`] in a record: family byte (4 or 6), address bytes, prefix length.
struct NetField(IpNet);

impl Encode for NetField {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self.0 {
            IpNet::V4(net) => {
                out.push(4);
                out.extend_from_slice(&net.addr().octets());
                out.push(net.prefix_len());
            }
            IpNet::V6(net) => {
                out.push(6);
                out.extend_from_slice(&net.addr().octets());
                out.push(net.prefix_len());
            }
        }
    }
}

impl Decode for NetField {
    const MAX_BYTES: usize = 1 + 16 + 1;
    const NAME: &'static str = "net";

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let addr = match r.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
            tag => return Err(DecodeError::InvalidTag { what: "net", tag }),
        };
        Ok(NetField(net(addr, r.u8()?, "net")?))
    }
}

/// Smallest encoding of a [`NetField`], bytes.
const MIN_NET_BYTES: usize = 1 + 4 + 1;

/// The value of a ban: every field of [`Ban`] but its target, which is the key.
struct BanRecord {
    reason: BanReason,
    source: Source,
    since_ms: u64,
    until_ms: u64,
    offence: u32,
    addresses: Vec<IpNet>,
    detail: String,
}

impl Encode for BanRecord {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.reason as u32).to_be_bytes());
        out.push(self.source.code());
        self.since_ms.encode_to(out);
        self.until_ms.encode_to(out);
        self.offence.encode_to(out);
        put_len(out, self.addresses.len());
        for net in &self.addresses {
            NetField(*net).encode_to(out);
        }
        put_bytes(out, self.detail.as_bytes());
    }
}

impl Decode for BanRecord {
    const MAX_BYTES: usize =
        4 + 1 + 8 + 8 + 4 + 4 + MAX_LIST_LEN * NetField::MAX_BYTES + 4 + MAX_DETAIL_BYTES;
    const NAME: &'static str = "ban record";

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let reason = BanReason::from_code(r.u32()?).ok_or(DecodeError::Invalid {
            what: "ban reason",
            reason: "unknown code",
        })?;
        let tag = r.u8()?;
        let source = Source::from_code(tag).ok_or(DecodeError::InvalidTag {
            what: "ban source",
            tag,
        })?;
        let since_ms = r.u64()?;
        let until_ms = r.u64()?;
        let offence = r.u32()?;
        if offence == 0 {
            return Err(DecodeError::Invalid {
                what: "ban record",
                reason: "offence 0 (the first is 1)",
            });
        }
        if until_ms < since_ms {
            return Err(DecodeError::Invalid {
                what: "ban record",
                reason: "ends before it begins",
            });
        }
        let addresses = r
            .list::<NetField>("ban addresses", MAX_LIST_LEN, MIN_NET_BYTES)?
            .into_iter()
            .map(|field| field.0)
            .collect();
        let detail =
            String::from_utf8(r.bytes("ban detail", MAX_DETAIL_BYTES)?.to_vec()).map_err(|_| {
                DecodeError::InvalidText {
                    what: "ban detail",
                    reason: "not UTF-8",
                }
            })?;
        Ok(BanRecord {
            reason,
            source,
            since_ms,
            until_ms,
            offence,
            addresses,
            detail,
        })
    }
}

/// The stored value of `ban` (its key is [`key`] of its target).
pub(super) fn encode_ban(ban: &Ban) -> Vec<u8> {
    BanRecord {
        reason: ban.reason,
        source: ban.source,
        since_ms: ban.since_ms,
        until_ms: ban.until_ms,
        offence: ban.offence,
        addresses: ban.addresses.clone(),
        detail: ban.detail.clone(),
    }
    .to_bytes()
}

/// The ban stored as `value` under `key`.
pub(super) fn decode_ban(key: &[u8], value: &[u8]) -> Result<Ban, DecodeError> {
    let target = target_from_key(key)?;
    let record = BanRecord::from_bytes(value)?;
    Ok(Ban {
        target,
        addresses: record.addresses,
        reason: record.reason,
        source: record.source,
        since_ms: record.since_ms,
        until_ms: record.until_ms,
        offence: record.offence,
        detail: record.detail,
    })
}

/// One banned peer in an offence record: its id and when it was banned.
struct PeerField(PeerId, u64);

impl Encode for PeerField {
    fn encode_to(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.0.to_bytes());
        self.1.encode_to(out);
    }
}

impl Decode for PeerField {
    const MAX_BYTES: usize = 4 + MAX_PEER_ID_BYTES + 8;
    const NAME: &'static str = "banned peer";

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let peer = peer_id(r.bytes("peer id", MAX_PEER_ID_BYTES)?)?;
        Ok(PeerField(peer, r.u64()?))
    }
}

impl Encode for OffenceRecord {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.count.encode_to(out);
        self.last_ms.encode_to(out);
        put_len(out, self.peers.len());
        for &(peer, at) in &self.peers {
            PeerField(peer, at).encode_to(out);
        }
    }
}

impl Decode for OffenceRecord {
    const MAX_BYTES: usize = 4 + 8 + 4 + MAX_LIST_LEN * PeerField::MAX_BYTES;
    const NAME: &'static str = "offence record";

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.u32()?;
        let last_ms = r.u64()?;
        let peers = r
            .list::<PeerField>("banned peers", MAX_LIST_LEN, 4 + 8)?
            .into_iter()
            .map(|PeerField(peer, at)| (peer, at))
            .collect();
        Ok(OffenceRecord {
            count,
            last_ms,
            peers,
        })
    }
}

/// The offence record stored as `value` under `key`, with its target.
pub(super) fn decode_offences(
    key: &[u8],
    value: &[u8],
) -> Result<(BanTarget, OffenceRecord), DecodeError> {
    Ok((target_from_key(key)?, OffenceRecord::from_bytes(value)?))
}

/// Calls `visit` with every entry of `col` whose key starts with one of this module's tags, in
/// key order, reading [`SCAN_PAGE`] entries at a time.
pub(super) fn for_each(
    store: &dyn Store,
    col: Column,
    mut visit: impl FnMut(&[u8], &[u8]),
) -> Result<(), StoreError> {
    for tag in TAGS {
        let mut start = vec![tag];
        'pages: loop {
            let page = store.scan(col, &start, SCAN_PAGE)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            let mut next = last.clone();
            next.push(0);
            for (key, value) in &page {
                if key.first() != Some(&tag) {
                    break 'pages;
                }
                visit(key, value);
            }
            if page.len() < SCAN_PAGE {
                break;
            }
            start = next;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::testing::peer;
    use storage::{MemStore, WriteBatch};

    fn sample_ban(target: BanTarget) -> Ban {
        Ban {
            target,
            addresses: vec![
                "203.0.113.9/32".parse().expect("net"),
                "2001:db8::/48".parse().expect("net"),
            ],
            reason: BanReason::InvalidSignature,
            source: Source::Consensus,
            since_ms: 1_000,
            until_ms: 601_000,
            offence: 2,
            detail: "score -57.0 after 6 reports: invalid_signature x6 from gossip".into(),
        }
    }

    #[test]
    fn bans_round_trip_for_every_kind_of_target() {
        for target in [
            BanTarget::Peer(peer(7)),
            BanTarget::Address("198.51.100.0/24".parse().expect("net")),
            BanTarget::Address("2001:db8::1/128".parse().expect("net")),
        ] {
            let ban = sample_ban(target);
            let (k, v) = (key(&target), encode_ban(&ban));
            assert_eq!(decode_ban(&k, &v), Ok(ban));
        }
    }

    #[test]
    fn offence_records_round_trip() {
        let record = OffenceRecord {
            count: 3,
            last_ms: 99,
            peers: vec![(peer(1), 5), (peer(2), 6)],
        };
        let target = BanTarget::Address("192.0.2.1/32".parse().expect("net"));
        assert_eq!(
            decode_offences(&key(&target), &record.to_bytes()),
            Ok((target, record))
        );
    }

    #[test]
    fn malformed_keys_and_values_are_refused() {
        let good = encode_ban(&sample_ban(BanTarget::Peer(peer(1))));
        let peer_key = key(&BanTarget::Peer(peer(1)));
        assert!(decode_ban(&[9, 1, 2], &good).is_err(), "unknown tag");
        assert!(decode_ban(&[TAG_NET_V4, 10, 0, 0, 1, 33], &good).is_err());
        assert!(decode_ban(&[TAG_NET_V4, 10, 0, 0, 1, 24], &good).is_err());
        assert!(decode_ban(&[TAG_PEER, 0x12, 0x20, 1], &good).is_err());
        assert!(decode_ban(&peer_key, &good[..good.len() - 1]).is_err());
        let mut unknown_reason = good.clone();
        unknown_reason[..4].copy_from_slice(&99u32.to_be_bytes());
        assert!(decode_ban(&peer_key, &unknown_reason).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_ban(&peer_key, &trailing).is_err());
    }

    #[test]
    fn for_each_reads_only_tagged_keys_across_pages() {
        let store = MemStore::new();
        let mut batch = WriteBatch::new();
        batch.put(Column::Bans, vec![0, 1], b"other".to_vec());
        batch.put(Column::Bans, vec![9, 1], b"other".to_vec());
        for n in 0..(SCAN_PAGE as u32 + 5) {
            batch.put(Column::Bans, key(&BanTarget::Peer(peer(n))), Vec::new());
        }
        batch.put(
            Column::Bans,
            key(&BanTarget::Address("10.0.0.0/8".parse().expect("net"))),
            Vec::new(),
        );
        store.write(batch).expect("memory store");
        let mut seen = 0;
        for_each(&store, Column::Bans, |key, _| {
            assert!(TAGS.contains(&key[0]));
            seen += 1;
        })
        .expect("memory store");
        assert_eq!(seen, SCAN_PAGE + 5 + 1);
    }
}
