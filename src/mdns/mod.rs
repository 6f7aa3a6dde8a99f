//! Zero-config discovery on the LAN (mDNS / DNS-SD, RFC 6762/6763).
//!
//! * Advertising (`serve --mdns`, feature `mdns`): [`Advertisement`] registers
//!   `gambiarra-hub-{port}._gambiarra._tcp.local` with libmdns, TXT `version` and `protocol`;
//!   dropping it withdraws the service (a goodbye with TTL 0).
//! * Browsing (`gambiarra discover`, and the CLI when no hub is given): [`browse`] sends one
//!   PTR question for `_gambiarra._tcp.local` with the unicast-response bit from an ephemeral
//!   port, so it can run beside a responder on the same machine and needs no privileges, and
//!   collects the answers for a while. A hub's address is the one its answer came from: it is
//!   reachable by construction, which the A records a responder lists are not always.

// The querier serves `discover` (feature `client`) and the advertisement `serve --mdns`
// (feature `mdns`): a build without one of them leaves the other half unused.
#![cfg_attr(not(all(feature = "client", feature = "mdns")), allow(dead_code))]

pub mod packet;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use packet::{RData, TYPE_PTR};

/// The DNS-SD service type of a hub.
pub(crate) const SERVICE_TYPE: &str = "_gambiarra._tcp.local";
/// The multicast group and port of mDNS over IPv4.
pub(crate) const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
pub(crate) const MDNS_PORT: u16 = 5353;
/// How long [`browse`] listens by default.
pub(crate) const BROWSE_WAIT: Duration = Duration::from_millis(800);
/// Largest datagram read.
const MAX_PACKET: usize = 9000;

/// The instance name a hub on `port` advertises.
pub(crate) fn instance_name(port: u16) -> String {
    format!("gambiarra-hub-{port}")
}

/// A hub found on the network.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct FoundHub {
    /// `gambiarra-hub-3000._gambiarra._tcp.local`.
    pub(crate) instance: String,
    /// The host it names (`pi.local`), if it said.
    pub(crate) host: Option<String>,
    /// Where its answer came from.
    pub(crate) addr: IpAddr,
    pub(crate) port: u16,
    /// From TXT.
    pub(crate) version: Option<String>,
    /// `http` or `https`, from TXT (`http` if absent).
    pub(crate) protocol: String,
}

impl FoundHub {
    /// The hub's base URL.
    pub(crate) fn url(&self) -> String {
        match self.addr {
            IpAddr::V6(a) => format!("{}://[{a}]:{}", self.protocol, self.port),
            IpAddr::V4(a) => format!("{}://{a}:{}", self.protocol, self.port),
        }
    }
}

/// What one answer tells about hubs: instances (PTR), their ports and hosts (SRV) and TXT.
#[derive(Default)]
struct Seen {
    instances: Vec<String>,
    srv: BTreeMap<String, (u16, String)>,
    txt: BTreeMap<String, Vec<String>>,
}

/// The hubs in one decoded answer from `from`.
pub(crate) fn hubs_in(message: &packet::Message, from: IpAddr) -> Vec<FoundHub> {
    let mut seen = Seen::default();
    for r in &message.records {
        match &r.data {
            RData::Ptr(instance) if r.name.eq_ignore_ascii_case(SERVICE_TYPE) && r.ttl > 0 => {
                seen.instances.push(instance.clone())
            }
            RData::Srv { port, target } => {
                seen.srv
                    .insert(r.name.to_ascii_lowercase(), (*port, target.clone()));
            }
            RData::Txt(strings) => {
                seen.txt
                    .insert(r.name.to_ascii_lowercase(), strings.clone());
            }
            _ => {}
        }
    }
    seen.instances
        .iter()
        .filter_map(|instance| {
            let key = instance.to_ascii_lowercase();
            let (port, host) = seen.srv.get(&key)?.clone();
            let txt = seen.txt.get(&key);
            let value = |k: &str| {
                txt?.iter()
                    .find_map(|s| s.strip_prefix(k)?.strip_prefix('='))
                    .map(str::to_string)
            };
            Some(FoundHub {
                instance: instance.clone(),
                host: (!host.is_empty()).then_some(host),
                addr: from,
                port,
                version: value("version"),
                protocol: value("protocol")
                    .filter(|p| p == "https")
                    .unwrap_or_else(|| "http".into()),
            })
        })
        .collect()
}

/// Ask the network for hubs and collect answers for `wait`. Each hub once (by instance and
/// address), sorted by URL.
pub(crate) async fn browse(wait: Duration) -> io::Result<Vec<FoundHub>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(255)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket.into())?;
    let question = packet::query(SERVICE_TYPE, TYPE_PTR, true);
    let group = SocketAddr::from((MDNS_GROUP, MDNS_PORT));
    socket.send_to(&question, group).await?;
    let mut found: Vec<FoundHub> = Vec::new();
    let mut buf = vec![0u8; MAX_PACKET];
    let deadline = tokio::time::Instant::now() + wait;
    // Ask again half-way, in case the first question was lost (UDP, busy Wi-Fi).
    let mut resend = Some(tokio::time::Instant::now() + wait / 2);
    loop {
        let until = resend.map_or(deadline, |r| r.min(deadline));
        match tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                let Ok(message) = packet::parse(&buf[..n]) else {
                    continue;
                };
                if !message.response {
                    continue;
                }
                for hub in hubs_in(&message, from.ip()) {
                    if !found
                        .iter()
                        .any(|f| f.instance == hub.instance && f.addr == hub.addr)
                    {
                        found.push(hub);
                    }
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) if resend.take().is_some() => {
                socket.send_to(&question, group).await?;
            }
            Err(_) => break,
        }
    }
    found.sort_by_key(FoundHub::url);
    Ok(found)
}

/// A hub advertised on the LAN until [`Advertisement::withdraw`] (or drop, which may not get
/// the goodbye out).
#[cfg(feature = "mdns")]
pub(crate) struct Advertisement {
    service: libmdns::Service,
    responder: libmdns::Responder,
    /// `gambiarra-hub-3000._gambiarra._tcp.local`.
    pub(crate) name: String,
}

#[cfg(feature = "mdns")]
impl Advertisement {
    /// Advertise a hub on `port` (`https` when it serves TLS). Must be called inside a tokio
    /// runtime; the responder runs on it.
    pub(crate) fn start(port: u16, https: bool) -> io::Result<Advertisement> {
        let responder = libmdns::Responder::spawn(&tokio::runtime::Handle::current())?;
        let version = format!("version={}", env!("CARGO_PKG_VERSION"));
        let protocol = if https {
            "protocol=https"
        } else {
            "protocol=http"
        };
        let instance = instance_name(port);
        let service = responder.register("_gambiarra._tcp", &instance, port, &[&version, protocol]);
        Ok(Advertisement {
            service,
            responder,
            name: format!("{instance}.{SERVICE_TYPE}"),
        })
    }
}

#[cfg(feature = "mdns")]
impl Advertisement {
    /// Withdraw the service: its goodbye (TTL 0) is queued when the service goes, and the
    /// responder is stopped only after it had time to send it (stopping it at once would drop
    /// the queued packet).
    pub(crate) async fn withdraw(self) {
        drop(self.service);
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(self.responder);
    }
}

/// This machine's host name, as mDNS names it (`pi.local`).
pub(crate) fn local_hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let short = name.split('.').next().unwrap_or(&name).to_string();
    format!("{short}.local")
}

#[cfg(test)]
mod tests {
    use super::packet::{Message, RData, Record};
    use super::*;

    fn rec(name: &str, ttl: u32, data: RData) -> Record {
        Record {
            name: name.into(),
            ttl,
            data,
        }
    }

    #[test]
    fn hubs_from_records() {
        let inst = "gambiarra-hub-3000._gambiarra._tcp.local";
        let m = Message {
            response: true,
            records: vec![
                rec(SERVICE_TYPE, 120, RData::Ptr(inst.into())),
                rec(
                    inst,
                    120,
                    RData::Srv {
                        port: 3000,
                        target: "pi.local".into(),
                    },
                ),
                rec(
                    inst,
                    120,
                    RData::Txt(vec!["version=0.1.0".into(), "protocol=https".into()]),
                ),
                // Another service type on the same responder is not a hub.
                rec(
                    "_http._tcp.local",
                    120,
                    RData::Ptr("web._http._tcp.local".into()),
                ),
            ],
        };
        let from: IpAddr = "192.168.1.10".parse().unwrap();
        let hubs = hubs_in(&m, from);
        assert_eq!(hubs.len(), 1);
        assert_eq!(hubs[0].url(), "https://192.168.1.10:3000");
        assert_eq!(hubs[0].host.as_deref(), Some("pi.local"));
        assert_eq!(hubs[0].version.as_deref(), Some("0.1.0"));
        // A goodbye (TTL 0) is not a hub; a PTR without its SRV is not usable.
        let mut bye = m.clone();
        bye.records[0].ttl = 0;
        assert!(hubs_in(&bye, from).is_empty());
        let mut no_srv = m.clone();
        no_srv.records.remove(1);
        assert!(hubs_in(&no_srv, from).is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(instance_name(3000), "gambiarra-hub-3000");
        assert!(local_hostname().ends_with(".local"));
        let v6 = FoundHub {
            instance: "x".into(),
            host: None,
            addr: "fe80::1".parse().unwrap(),
            port: 1,
            version: None,
            protocol: "http".into(),
        };
        assert_eq!(v6.url(), "http://[fe80::1]:1");
    }
}
