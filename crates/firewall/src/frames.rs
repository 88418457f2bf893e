//! Build Ethernet frames byte by byte: for kernel tests, the differential test, benchmarks and
//! the attacker tool. Checksums are filled in, so frames that pass the filter are also valid
//! for the kernel stack.

use std::net::IpAddr;

/// TCP flag bits.
pub mod tcp_flags {
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// The transport part of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP datagram.
    Udp {
        src_port: u16,
        dst_port: u16,
        payload: Vec<u8>,
    },
    /// TCP segment (header without options).
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    /// ICMP or ICMPv6 echo request.
    Echo { payload: Vec<u8> },
    /// Any protocol number with raw bytes.
    Raw { protocol: u8, bytes: Vec<u8> },
}

/// A packet to build: link layer options, IP header options, transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// VLAN tags, outermost first: (TPID, TCI). 0x88a8 for 802.1ad, 0x8100 for 802.1Q.
    pub vlans: Vec<(u16, u16)>,
    /// Source address; its family picks IPv4 or IPv6.
    pub src: IpAddr,
    /// Destination address; must be the same family as `src`.
    pub dst: IpAddr,
    /// IPv4 options (padded to a multiple of 4 bytes by the builder).
    pub ipv4_options: Vec<u8>,
    /// IPv6 extension headers before the transport (type, body after the two-byte head;
    /// padded to a multiple of 8 bytes). Use 44 for a fragment header body of 6 bytes.
    pub ipv6_ext: Vec<(u8, Vec<u8>)>,
    /// IPv4 fragment: (offset in 8-byte units, more fragments).
    pub ipv4_fragment: Option<(u16, bool)>,
    /// The transport layer.
    pub transport: Transport,
}

impl Packet {
    /// A UDP packet with defaults for everything else.
    pub fn udp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, payload: &[u8]) -> Packet {
        Packet::with(
            src,
            dst,
            Transport::Udp {
                src_port,
                dst_port,
                payload: payload.to_vec(),
            },
        )
    }

    /// A TCP packet with defaults for everything else.
    pub fn tcp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, flags: u8) -> Packet {
        Packet::with(
            src,
            dst,
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
                payload: Vec::new(),
            },
        )
    }

    /// A packet with this transport and defaults for everything else.
    pub fn with(src: IpAddr, dst: IpAddr, transport: Transport) -> Packet {
        Packet {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            vlans: Vec::new(),
            src,
            dst,
            ipv4_options: Vec::new(),
            ipv6_ext: Vec::new(),
            ipv4_fragment: None,
            transport,
        }
    }

    /// The frame bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (tpid, tci) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        let v6 = self.src.is_ipv6();
        f.extend_from_slice(&(if v6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
        let (protocol, l4) = self.transport_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut opts = self.ipv4_options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0);
                }
                let hlen = 20 + opts.len();
                let total = (hlen + l4.len()) as u16;
                let (off, more) = self.ipv4_fragment.unwrap_or((0, false));
                let frag = (off & 0x1fff) | if more { 0x2000 } else { 0 };
                let mut h = vec![
                    0x40 | (hlen / 4) as u8,
                    0,
                    (total >> 8) as u8,
                    total as u8,
                    0,
                    1,
                    (frag >> 8) as u8,
                    frag as u8,
                    64,
                    protocol,
                    0,
                    0,
                ];
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h.extend_from_slice(&opts);
                let sum = checksum(&h, 0);
                h[10..12].copy_from_slice(&sum.to_be_bytes());
                f.extend_from_slice(&h);
                f.extend_from_slice(&l4);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ext = Vec::new();
                let mut next_types: Vec<u8> = self.ipv6_ext.iter().map(|(t, _)| *t).collect();
                next_types.push(protocol);
                for (i, (_, body)) in self.ipv6_ext.iter().enumerate() {
                    let mut hdr = vec![next_types[i + 1], 0];
                    hdr.extend_from_slice(body);
                    while !hdr.len().is_multiple_of(8) {
                        hdr.push(0);
                    }
                    if self.ipv6_ext[i].0 != 44 {
                        hdr[1] = (hdr.len() / 8 - 1) as u8;
                    }
                    ext.extend_from_slice(&hdr);
                }
                let payload_len = (ext.len() + l4.len()) as u16;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&payload_len.to_be_bytes());
                f.push(next_types[0]);
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&ext);
                f.extend_from_slice(&l4);
            }
            _ => {}
        }
        f
    }

    fn pseudo_header_sum(&self, protocol: u8, len: usize) -> u32 {
        let mut p = Vec::with_capacity(40);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&[0, protocol]);
                p.extend_from_slice(&(len as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&(len as u32).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0, protocol]);
            }
            _ => {}
        }
        sum_words(&p, 0)
    }

    fn transport_bytes(&self) -> (u8, Vec<u8>) {
        match &self.transport {
            Transport::Udp {
                src_port,
                dst_port,
                payload,
            } => {
                let len = 8 + payload.len();
                let mut b = Vec::with_capacity(len);
                b.extend_from_slice(&src_port.to_be_bytes());
                b.extend_from_slice(&dst_port.to_be_bytes());
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                let mut sum = checksum(&b, self.pseudo_header_sum(17, len));
                if sum == 0 {
                    sum = 0xffff;
                }
                b[6..8].copy_from_slice(&sum.to_be_bytes());
                (17, b)
            }
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
                payload,
            } => {
                let mut b = Vec::with_capacity(20 + payload.len());
                b.extend_from_slice(&src_port.to_be_bytes());
                b.extend_from_slice(&dst_port.to_be_bytes());
                b.extend_from_slice(&1u32.to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes());
                b.extend_from_slice(&[0x50, *flags, 0xff, 0xff, 0, 0, 0, 0]);
                b.extend_from_slice(payload);
                let sum = checksum(&b, self.pseudo_header_sum(6, b.len()));
                b[16..18].copy_from_slice(&sum.to_be_bytes());
                (6, b)
            }
            Transport::Echo { payload } => {
                let v6 = self.src.is_ipv6();
                let mut b = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0, 1, 0, 1];
                b.extend_from_slice(payload);
                let protocol = if v6 { 58 } else { 1 };
                let seed = if v6 {
                    self.pseudo_header_sum(58, b.len())
                } else {
                    0
                };
                let sum = checksum(&b, seed);
                b[2..4].copy_from_slice(&sum.to_be_bytes());
                (protocol, b)
            }
            Transport::Raw { protocol, bytes } => (*protocol, bytes.clone()),
        }
    }
}

fn sum_words(bytes: &[u8], mut sum: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// The Internet checksum (RFC 1071) of `bytes`, starting from a partial sum.
pub fn checksum(bytes: &[u8], seed: u32) -> u16 {
    let mut sum = sum_words(bytes, seed);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A QUIC v1 long-header Initial of `len` bytes of UDP payload (header, then zero padding).
pub fn quic_initial(len: usize) -> Vec<u8> {
    let mut p = vec![0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
    p.resize(len.max(p.len()), 0);
    p.truncate(len);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_ipv4_header_matches_rfc_1071_example() {
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h, 0), 0xb861);
    }

    #[test]
    fn built_frames_have_consistent_lengths() {
        let p = Packet::udp(
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            1,
            2,
            b"hello",
        );
        let f = p.build();
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 33);
        let mut p6 = Packet::udp(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            1,
            2,
            b"x",
        );
        p6.ipv6_ext = vec![(0, vec![1, 4, 0, 0, 0, 0])];
        p6.vlans = vec![(0x88a8, 1), (0x8100, 2)];
        let f = p6.build();
        assert_eq!(f.len(), 14 + 8 + 40 + 8 + 9);
        assert_eq!(u16::from_be_bytes([f[22 + 4], f[22 + 5]]), 17);
    }
}
