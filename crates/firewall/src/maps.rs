//! Typed access to a filter's pinned maps: policy, allow and block rules with expiry, `why`,
//! counters, sweeping of expired entries, and the drop-event stream.

use std::{
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    time::Duration,
};

use aya::maps::{
    Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key,
};
use firewall_common::{
    AllowEntry, BanReason, BlockEntry, Config, Counter, DropEvent, Mode, Reason, STATS_LEN,
    Verdict, limits, map_names, stats_index,
};
use ipnet::IpNet;

use crate::{
    FirewallError, Instance,
    clock::{deadline_ns, now_ns},
    rules::{Policy, Rule, RuleKind, RuleSet, Why, is_host, longest_match},
};

type Trie<K, V> = LpmTrie<MapData, K, V>;

/// Handles on one instance's pinned maps.
pub struct Maps {
    config: Array<MapData, Config>,
    ports: Array<MapData, u32>,
    allow_v4: Trie<[u8; 4], AllowEntry>,
    allow_v6: Trie<[u8; 16], AllowEntry>,
    block_v4: HashMap<MapData, [u8; 4], BlockEntry>,
    block_v6: HashMap<MapData, [u8; 16], BlockEntry>,
    block_net_v4: Trie<[u8; 4], BlockEntry>,
    block_net_v6: Trie<[u8; 16], BlockEntry>,
    stats: PerCpuArray<MapData, Counter>,
    instance: Instance,
}

fn open_map<T>(dir: &Path, name: &'static str) -> Result<T, FirewallError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let path = dir.join(name);
    let open_err = |source| FirewallError::MapOpen {
        path: path.clone(),
        source: Box::new(source),
    };
    let data = MapData::from_pin(&path).map_err(open_err)?;
    let map = Map::from_map_data(data).map_err(open_err)?;
    T::try_from(map).map_err(open_err)
}

fn v4(addr: std::net::Ipv4Addr) -> [u8; 4] {
    addr.octets()
}

fn v6(addr: std::net::Ipv6Addr) -> [u8; 16] {
    addr.octets()
}

/// Counters summed over CPUs, per verdict and reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    counters: Vec<Counter>,
}

impl Stats {
    /// The counter of one (verdict, reason) pair.
    pub fn get(&self, verdict: Verdict, reason: Reason) -> Counter {
        self.counters
            .get(stats_index(verdict, reason) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Every non-zero counter.
    pub fn nonzero(&self) -> Vec<(Verdict, Reason, Counter)> {
        let mut out = Vec::new();
        for v in Verdict::ALL {
            for r in Reason::ALL {
                let c = self.get(v, r);
                if c.packets > 0 {
                    out.push((v, r, c));
                }
            }
        }
        out
    }

    /// Packets counted under a verdict, all reasons together.
    pub fn packets(&self, verdict: Verdict) -> u64 {
        Reason::ALL
            .iter()
            .map(|r| self.get(verdict, *r).packets)
            .sum()
    }

    /// The change from `earlier` to `self`, per counter.
    pub fn since(&self, earlier: &Stats) -> Stats {
        let counters = (0..STATS_LEN as usize)
            .map(|i| {
                let now = self.counters.get(i).copied().unwrap_or_default();
                let then = earlier.counters.get(i).copied().unwrap_or_default();
                Counter {
                    packets: now.packets.saturating_sub(then.packets),
                    bytes: now.bytes.saturating_sub(then.bytes),
                }
            })
            .collect();
        Stats { counters }
    }
}

impl Maps {
    /// Opens the maps pinned for `instance` by a loaded program.
    pub fn open(instance: &Instance) -> Result<Maps, FirewallError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(FirewallError::NotRoot);
        }
        let dir = instance.dir();
        if !dir.join(map_names::CONFIG).exists() {
            return Err(FirewallError::NotLoaded {
                instance: instance.name().to_string(),
                path: dir.to_path_buf(),
            });
        }
        Ok(Maps {
            config: open_map(dir, map_names::CONFIG)?,
            ports: open_map(dir, map_names::PORTS)?,
            allow_v4: open_map(dir, map_names::ALLOW_V4)?,
            allow_v6: open_map(dir, map_names::ALLOW_V6)?,
            block_v4: open_map(dir, map_names::BLOCK_V4)?,
            block_v6: open_map(dir, map_names::BLOCK_V6)?,
            block_net_v4: open_map(dir, map_names::BLOCK_NET_V4)?,
            block_net_v6: open_map(dir, map_names::BLOCK_NET_V6)?,
            stats: open_map(dir, map_names::STATS)?,
            instance: instance.clone(),
        })
    }

    /// The current CONFIG entry.
    pub fn config(&self) -> Result<Config, FirewallError> {
        self.config
            .get(&0, 0)
            .map_err(|e| FirewallError::map("read", map_names::CONFIG, e))
    }

    /// Writes the CONFIG entry.
    pub fn set_config(&mut self, config: &Config) -> Result<(), FirewallError> {
        self.config
            .set(0, config, 0)
            .map_err(|e| FirewallError::map("write", map_names::CONFIG, e))
    }

    /// Switches between enforce and monitor mode at run time.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), FirewallError> {
        let mut config = self.config()?;
        config.mode = mode as u32;
        self.set_config(&config)
    }

    /// Writes the policy: CONFIG, and the PORTS table (ports not in the policy are cleared).
    pub fn apply_policy(&mut self, policy: &Policy) -> Result<(), FirewallError> {
        policy.validate()?;
        self.set_config(&policy.config())?;
        let wanted = policy.port_flags();
        for port in 0..limits::PORTS_LEN {
            let current = self
                .ports
                .get(&port, 0)
                .map_err(|e| FirewallError::map("read", map_names::PORTS, e))?;
            let want = wanted.get(&(port as u16)).copied().unwrap_or(0);
            if current != want {
                self.ports
                    .set(port, want, 0)
                    .map_err(|e| FirewallError::map("write", map_names::PORTS, e))?;
            }
        }
        Ok(())
    }

    /// Blocks a source address or prefix until `ttl` from now (`None`: until unblocked).
    pub fn block(
        &mut self,
        net: IpNet,
        ttl: Option<Duration>,
        reason: BanReason,
    ) -> Result<(), FirewallError> {
        let entry = BlockEntry {
            expires_at_ns: deadline_ns(ttl),
            created_at_ns: now_ns(),
            reason: reason as u32,
            _pad: 0,
        };
        self.block_entry(net, &entry)
    }

    /// Writes a block entry as given (exact addresses into the hash maps, prefixes into the
    /// tries).
    pub fn block_entry(&mut self, net: IpNet, entry: &BlockEntry) -> Result<(), FirewallError> {
        let net = net.trunc();
        let result = match (net, is_host(&net)) {
            (IpNet::V4(n), true) => self.block_v4.insert(v4(n.addr()), entry, 0),
            (IpNet::V6(n), true) => self.block_v6.insert(v6(n.addr()), entry, 0),
            (IpNet::V4(n), false) => self.block_net_v4.insert(
                &Key::new(n.prefix_len().into(), v4(n.network())),
                entry,
                0,
            ),
            (IpNet::V6(n), false) => self.block_net_v6.insert(
                &Key::new(n.prefix_len().into(), v6(n.network())),
                entry,
                0,
            ),
        };
        result.map_err(|e| FirewallError::map("insert", "blocklist", e))
    }

    /// Removes a block rule; false when there was none for exactly this net.
    pub fn unblock(&mut self, net: IpNet) -> Result<bool, FirewallError> {
        let net = net.trunc();
        let result = match (net, is_host(&net)) {
            (IpNet::V4(n), true) => self.block_v4.remove(&v4(n.addr())),
            (IpNet::V6(n), true) => self.block_v6.remove(&v6(n.addr())),
            (IpNet::V4(n), false) => self
                .block_net_v4
                .remove(&Key::new(n.prefix_len().into(), v4(n.network()))),
            (IpNet::V6(n), false) => self
                .block_net_v6
                .remove(&Key::new(n.prefix_len().into(), v6(n.network()))),
        };
        absent_is_false(result, "blocklist")
    }

    /// Allowlists a source address or prefix: it skips every other check.
    pub fn allow(&mut self, net: IpNet) -> Result<(), FirewallError> {
        let net = net.trunc();
        let entry = AllowEntry {
            created_at_ns: now_ns(),
        };
        let result = match net {
            IpNet::V4(n) => {
                self.allow_v4
                    .insert(&Key::new(n.prefix_len().into(), v4(n.network())), entry, 0)
            }
            IpNet::V6(n) => {
                self.allow_v6
                    .insert(&Key::new(n.prefix_len().into(), v6(n.network())), entry, 0)
            }
        };
        result.map_err(|e| FirewallError::map("insert", "allowlist", e))
    }

    /// Removes an allow rule; false when there was none for exactly this net.
    pub fn disallow(&mut self, net: IpNet) -> Result<bool, FirewallError> {
        let net = net.trunc();
        let result = match net {
            IpNet::V4(n) => self
                .allow_v4
                .remove(&Key::new(n.prefix_len().into(), v4(n.network()))),
            IpNet::V6(n) => self
                .allow_v6
                .remove(&Key::new(n.prefix_len().into(), v6(n.network()))),
        };
        absent_is_false(result, "allowlist")
    }

    /// Every rule in the maps: allows first, then blocks.
    pub fn list(&self) -> Result<Vec<Rule>, FirewallError> {
        let allow = self
            .allow_entries()?
            .into_iter()
            .map(|(net, created_at_ns)| Rule {
                net,
                kind: RuleKind::Allow(AllowEntry { created_at_ns }),
            });
        let block = self.block_entries()?.into_iter().map(|(net, entry)| Rule {
            net,
            kind: RuleKind::Block(entry),
        });
        Ok(allow.chain(block).collect())
    }

    fn allow_entries(&self) -> Result<Vec<(IpNet, u64)>, FirewallError> {
        let read = |e| FirewallError::map("iterate", "allowlist", e);
        let mut out = Vec::new();
        for item in self.allow_v4.iter() {
            let (k, v) = item.map_err(read)?;
            out.push((net_v4(k.data(), k.prefix_len())?, v.created_at_ns));
        }
        for item in self.allow_v6.iter() {
            let (k, v) = item.map_err(read)?;
            out.push((net_v6(k.data(), k.prefix_len())?, v.created_at_ns));
        }
        Ok(out)
    }

    /// The whole rule set, as the reference model takes it.
    pub fn rule_set(&self) -> Result<RuleSet, FirewallError> {
        Ok(RuleSet {
            allow: self.allow_entries()?.into_iter().map(|(n, _)| n).collect(),
            block: self.block_entries()?,
        })
    }

    /// Every block entry: exact addresses, then prefixes.
    fn block_entries(&self) -> Result<Vec<(IpNet, BlockEntry)>, FirewallError> {
        let read = |e| FirewallError::map("iterate", "blocklist", e);
        let mut out = Vec::new();
        for item in self.block_v4.iter() {
            let (k, v) = item.map_err(read)?;
            out.push((net_v4(k, 32)?, v));
        }
        for item in self.block_v6.iter() {
            let (k, v) = item.map_err(read)?;
            out.push((net_v6(k, 128)?, v));
        }
        out.extend(self.block_prefixes()?);
        Ok(out)
    }

    /// The blocked prefixes (the tries only: `why` must not walk a million exact entries).
    fn block_prefixes(&self) -> Result<Vec<(IpNet, BlockEntry)>, FirewallError> {
        let read = |e| FirewallError::map("iterate", "blocklist", e);
        let mut out = Vec::new();
        for item in self.block_net_v4.iter() {
            let (k, v) = item.map_err(read)?;
            out.push((net_v4(k.data(), k.prefix_len())?, v));
        }
        for item in self.block_net_v6.iter() {
            let (k, v) = item.map_err(read)?;
            out.push((net_v6(k.data(), k.prefix_len())?, v));
        }
        Ok(out)
    }

    /// Loads a rule set entry by entry (exact addresses into hash maps, prefixes into tries).
    pub fn load_rule_set(&mut self, set: &RuleSet) -> Result<(), FirewallError> {
        for net in &set.allow {
            self.allow(*net)?;
        }
        for (net, entry) in &set.block {
            self.block_entry(*net, entry)?;
        }
        Ok(())
    }

    /// Which rule decides for `addr`, and until when.
    pub fn why(&self, addr: IpAddr) -> Result<Why, FirewallError> {
        let read = |e| FirewallError::map("read", "rules", e);
        let allow = self.allow_entries()?;
        let allow = longest_match(allow.iter().map(|(n, _)| (n, ())), addr).map(|(n, _)| n);
        let exact = match addr {
            IpAddr::V4(a) => lookup(self.block_v4.get(&v4(a), 0)).map_err(read)?,
            IpAddr::V6(a) => lookup(self.block_v6.get(&v6(a), 0)).map_err(read)?,
        };
        let prefixes = self.block_prefixes()?;
        let prefix = longest_match(prefixes.iter().map(|(n, e)| (n, *e)), addr);
        Ok(Why {
            addr,
            now_ns: now_ns(),
            allow,
            exact,
            prefix,
        })
    }

    /// Removes every expired block entry; returns how many.
    pub fn sweep(&mut self) -> Result<usize, FirewallError> {
        let now = now_ns();
        let expired: Vec<IpNet> = self
            .block_entries()?
            .into_iter()
            .filter(|(_, e)| !e.is_active(now))
            .map(|(n, _)| n)
            .collect();
        for net in &expired {
            self.unblock(*net)?;
        }
        Ok(expired.len())
    }

    /// Counters summed over every CPU.
    pub fn stats(&self) -> Result<Stats, FirewallError> {
        let read = |e| FirewallError::map("read", map_names::STATS, e);
        let mut counters = Vec::with_capacity(STATS_LEN as usize);
        for i in 0..STATS_LEN {
            let per_cpu = self.stats.get(&i, 0).map_err(read)?;
            let mut sum = Counter::default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
            counters.push(sum);
        }
        Ok(Stats { counters })
    }

    /// Opens the drop-event stream.
    pub fn events(&self) -> Result<Events, FirewallError> {
        Ok(Events {
            ring: open_map(self.instance.dir(), map_names::EVENTS)?,
        })
    }
}

fn lookup<V>(result: Result<V, MapError>) -> Result<Option<V>, MapError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

fn absent_is_false(result: Result<(), MapError>, map: &'static str) -> Result<bool, FirewallError> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(FirewallError::map("remove", map, e)),
    }
}

fn net_v4(data: [u8; 4], prefix: u32) -> Result<IpNet, FirewallError> {
    ipnet::Ipv4Net::new(data.into(), prefix as u8)
        .map(IpNet::V4)
        .map_err(|_| FirewallError::InvalidCidr {
            input: format!("map key {data:?}/{prefix}"),
        })
}

fn net_v6(data: [u8; 16], prefix: u32) -> Result<IpNet, FirewallError> {
    ipnet::Ipv6Net::new(data.into(), prefix as u8)
        .map(IpNet::V6)
        .map_err(|_| FirewallError::InvalidCidr {
            input: format!("map key {data:?}/{prefix}"),
        })
}

/// The drop-event stream of one instance.
pub struct Events {
    ring: RingBuf<MapData>,
}

impl Events {
    /// Waits up to `timeout` for events, then returns all that are ready.
    pub fn poll(&mut self, timeout: Duration) -> Vec<DropEvent> {
        let mut pfd = libc::pollfd {
            fd: self.ring.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        unsafe {
            libc::poll(
                &mut pfd,
                1,
                timeout.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= std::mem::size_of::<DropEvent>() {
                // SAFETY: the kernel wrote a whole DropEvent (repr(C), every bit pattern valid)
                // into this record; read_unaligned makes no alignment assumption.
                let event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const DropEvent) };
                out.push(event);
            }
        }
        out
    }
}

/// The source address of an event.
pub fn event_addr(event: &DropEvent) -> IpAddr {
    if event.family == 4 {
        IpAddr::from([event.addr[0], event.addr[1], event.addr[2], event.addr[3]])
    } else {
        IpAddr::from(event.addr)
    }
}
