//! The network's bans written into the pinned XDP blocklist.

use std::time::Duration;

use firewall::BanReason;
use firewall::Maps;
use firewall::clock::now_ns;
use ipnet::IpNet;
use p2p::KernelFilter;

/// The kernel blocklist and allowlist of one filter instance.
pub struct XdpBlocklist {
    maps: Maps,
}

impl XdpBlocklist {
    /// Wraps the maps of an attached (or pinned) filter.
    pub fn new(maps: Maps) -> XdpBlocklist {
        XdpBlocklist { maps }
    }
}

impl KernelFilter for XdpBlocklist {
    /// Writes the block, unless the operator already blocked exactly this net for longer.
    fn block(&mut self, net: IpNet, ttl: Duration, reason: BanReason) -> Result<(), String> {
        let now = now_ns();
        let until = now.saturating_add(ttl.as_nanos() as u64);
        let why = self.maps.why(net.addr()).map_err(|e| e.to_string())?;
        let existing = match (why.exact, why.prefix) {
            (Some(entry), _) if p2p::is_host(&net) => Some(entry),
            (_, Some((prefix, entry))) if prefix == net.trunc() => Some(entry),
            _ => None,
        };
        if let Some(entry) = existing
            && entry.is_active(now)
            && (entry.expires_at_ns == 0 || entry.expires_at_ns >= until)
        {
            return Ok(());
        }
        self.maps
            .block(net, Some(ttl), reason)
            .map_err(|e| e.to_string())
    }

    /// Removes the block unless an operator wrote it.
    fn unblock(&mut self, net: IpNet) -> Result<(), String> {
        let why = self.maps.why(net.addr()).map_err(|e| e.to_string())?;
        let reason = match (why.exact, why.prefix) {
            (Some(entry), _) if p2p::is_host(&net) => Some(entry.reason),
            (_, Some((prefix, entry))) if prefix == net.trunc() => Some(entry.reason),
            _ => None,
        };
        if reason.is_some_and(|r| r != BanReason::Manual as u32) {
            self.maps.unblock(net).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn allow(&mut self, net: IpNet) -> Result<(), String> {
        self.maps.allow(net).map_err(|e| e.to_string())
    }
}
