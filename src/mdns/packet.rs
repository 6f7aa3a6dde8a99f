//! The few DNS message shapes mDNS discovery needs (RFC 1035 §4, RFC 6762): encoding one
//! question, and decoding the answers a responder sends back — PTR, SRV, TXT, A and AAAA
//! records, names with compression pointers. Everything else is skipped by its length. Decoding
//! never trusts a length or a pointer: every read is bounds-checked, names are at most 255
//! bytes, and pointer chains are cut after [`MAX_POINTER_JUMPS`].

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
/// The top bit of a question's class asks for a unicast answer (RFC 6762 §5.4).
const QU_BIT: u16 = 0x8000;
/// Longest name (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
/// Compression pointers followed within one name before giving up (a loop).
pub const MAX_POINTER_JUMPS: usize = 32;

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketError {
    Truncated,
    BadLabel,
    NameTooLong,
    PointerLoop,
}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PacketError::Truncated => "packet ends inside a field",
            PacketError::BadLabel => "reserved label type",
            PacketError::NameTooLong => "name longer than 255 bytes",
            PacketError::PointerLoop => "compression pointers loop",
        })
    }
}

/// A record's data, for the types discovery reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    Ptr(String),
    Srv { port: u16, target: String },
    Txt(Vec<String>),
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Other(u16),
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: RData,
}

/// A decoded message: whether it is a response, and its records from every section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub response: bool,
    pub records: Vec<Record>,
}

/// A query for `name` (`a.b.local`, no trailing dot) of type `qtype`; `unicast` sets the QU bit,
/// asking responders to answer the sender directly (so the querier needs no port 5353).
pub fn query(name: &str, qtype: u16, unicast: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + name.len());
    // id 0, flags 0 (standard query), one question.
    out.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(63)];
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    let class = if unicast { CLASS_IN | QU_BIT } else { CLASS_IN };
    out.extend_from_slice(&class.to_be_bytes());
    out
}

struct Reader<'a> {
    p: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PacketError> {
        let end = self.i.checked_add(n).ok_or(PacketError::Truncated)?;
        let s = self.p.get(self.i..end).ok_or(PacketError::Truncated)?;
        self.i = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, PacketError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PacketError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name at the cursor (which moves past it, not past where pointers lead).
    fn name(&mut self) -> Result<String, PacketError> {
        let (name, end) = read_name(self.p, self.i)?;
        self.i = end;
        Ok(name)
    }
}

/// The name at `start`, and the offset just past it in the message.
fn read_name(p: &[u8], start: usize) -> Result<(String, usize), PacketError> {
    let mut name = String::new();
    let mut wire_len = 0usize;
    let mut i = start;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *p.get(i).ok_or(PacketError::Truncated)? as usize;
        match len & 0xC0 {
            0x00 if len == 0 => {
                return Ok((name, end.unwrap_or(i + 1)));
            }
            0x00 => {
                let label = p.get(i + 1..i + 1 + len).ok_or(PacketError::Truncated)?;
                wire_len += len + 1;
                if wire_len > MAX_NAME {
                    return Err(PacketError::NameTooLong);
                }
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                i += 1 + len;
            }
            0xC0 => {
                let lo = *p.get(i + 1).ok_or(PacketError::Truncated)? as usize;
                end.get_or_insert(i + 2);
                jumps += 1;
                if jumps > MAX_POINTER_JUMPS {
                    return Err(PacketError::PointerLoop);
                }
                i = ((len & 0x3F) << 8) | lo;
            }
            _ => return Err(PacketError::BadLabel),
        }
    }
}

/// Decode a message. Records of other types are kept as `Other` (their data skipped).
pub fn parse(packet: &[u8]) -> Result<Message, PacketError> {
    let mut r = Reader { p: packet, i: 0 };
    let _id = r.u16()?;
    let flags = r.u16()?;
    let qd = r.u16()?;
    let counts = [r.u16()?, r.u16()?, r.u16()?];
    for _ in 0..qd {
        r.name()?;
        r.take(4)?;
    }
    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
    let mut records = Vec::new();
    for _ in 0..total {
        let name = r.name()?;
        let rtype = r.u16()?;
        let _class = r.u16()?;
        let ttl = r.u32()?;
        let len = usize::from(r.u16()?);
        let start = r.i;
        let rdata = r.take(len)?;
        let data = match rtype {
            TYPE_PTR => RData::Ptr(read_name(packet, start)?.0),
            TYPE_SRV => {
                let b = rdata.get(..6).ok_or(PacketError::Truncated)?;
                RData::Srv {
                    port: u16::from_be_bytes([b[4], b[5]]),
                    target: read_name(packet, start + 6)?.0,
                }
            }
            TYPE_TXT => {
                let mut strings = Vec::new();
                let mut t = Reader { p: rdata, i: 0 };
                while t.i < rdata.len() {
                    let n = usize::from(t.take(1)?[0]);
                    let s = t.take(n)?;
                    if !s.is_empty() {
                        strings.push(String::from_utf8_lossy(s).into_owned());
                    }
                }
                RData::Txt(strings)
            }
            TYPE_A => {
                let b: [u8; 4] = rdata.try_into().map_err(|_| PacketError::Truncated)?;
                RData::A(Ipv4Addr::from(b))
            }
            TYPE_AAAA => {
                let b: [u8; 16] = rdata.try_into().map_err(|_| PacketError::Truncated)?;
                RData::Aaaa(Ipv6Addr::from(b))
            }
            other => RData::Other(other),
        };
        records.push(Record { name, ttl, data });
    }
    Ok(Message {
        response: flags & 0x8000 != 0,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response as a responder sends it: PTR, SRV and TXT for one instance, and an A record,
    /// with names compressed against the first.
    fn sample() -> Vec<u8> {
        let mut p = vec![0, 0, 0x84, 0, 0, 0, 0, 4, 0, 0, 0, 0];
        // PTR _gambiarra._tcp.local → gambiarra-hub-3000.<ptr to type>
        let type_at = p.len();
        for l in ["_gambiarra", "_tcp", "local"] {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&[0, 12, 0, 1, 0, 0, 0, 120]);
        let inst = b"gambiarra-hub-3000";
        p.extend_from_slice(&((inst.len() + 3) as u16).to_be_bytes());
        let inst_at = p.len();
        p.push(inst.len() as u8);
        p.extend_from_slice(inst);
        p.extend_from_slice(&[0xC0, type_at as u8]);
        // SRV <ptr inst> port 3000 target pi.local
        p.extend_from_slice(&[0xC0, inst_at as u8, 0, 33, 0x80, 1, 0, 0, 0, 120]);
        p.extend_from_slice(&(6u16 + 3 + 2).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0x0B, 0xB8]);
        let host_at = p.len();
        p.extend_from_slice(&[2, b'p', b'i', 0xC0, (type_at + 16) as u8]);
        // TXT <ptr inst> "version=0.1.0" "protocol=http"
        p.extend_from_slice(&[0xC0, inst_at as u8, 0, 16, 0x80, 1, 0, 0, 0, 120]);
        let txt: Vec<u8> = ["version=0.1.0", "protocol=http"]
            .iter()
            .flat_map(|s| std::iter::once(s.len() as u8).chain(s.bytes()))
            .collect();
        p.extend_from_slice(&(txt.len() as u16).to_be_bytes());
        p.extend_from_slice(&txt);
        // A <ptr host> 192.168.1.10
        p.extend_from_slice(&[0xC0, host_at as u8, 0, 1, 0x80, 1, 0, 0, 0, 120, 0, 4]);
        p.extend_from_slice(&[192, 168, 1, 10]);
        p
    }

    #[test]
    fn decodes_a_responders_answer() {
        let m = parse(&sample()).unwrap();
        assert!(m.response);
        let data: Vec<_> = m.records.iter().map(|r| (&r.name[..], &r.data)).collect();
        assert_eq!(
            data,
            vec![
                (
                    "_gambiarra._tcp.local",
                    &RData::Ptr("gambiarra-hub-3000._gambiarra._tcp.local".into())
                ),
                (
                    "gambiarra-hub-3000._gambiarra._tcp.local",
                    &RData::Srv {
                        port: 3000,
                        target: "pi.local".into()
                    }
                ),
                (
                    "gambiarra-hub-3000._gambiarra._tcp.local",
                    &RData::Txt(vec!["version=0.1.0".into(), "protocol=http".into()])
                ),
                ("pi.local", &RData::A(Ipv4Addr::new(192, 168, 1, 10))),
            ]
        );
        assert_eq!(m.records[0].ttl, 120);
    }

    #[test]
    fn encodes_a_question() {
        let q = query("_gambiarra._tcp.local", TYPE_PTR, true);
        assert_eq!(&q[..12], &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..23], b"\x0a_gambiarra");
        assert_eq!(&q[q.len() - 4..], &[0, 12, 0x80, 1]);
        // Round trip through the decoder: one question, no records, a query.
        let m = parse(&q).unwrap();
        assert!(!m.response && m.records.is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let p = sample();
        for cut in 0..p.len() {
            assert!(parse(&p[..cut]).is_err(), "cut at {cut} decoded");
        }
        // A pointer to itself.
        let mut looped = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xC0, 12]);
        assert_eq!(parse(&looped), Err(PacketError::PointerLoop));
        // A name longer than 255 bytes.
        let mut long = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert_eq!(parse(&long), Err(PacketError::NameTooLong));
        // Reserved label bits.
        let bad = [0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0x80];
        assert_eq!(parse(&bad), Err(PacketError::BadLabel));
        // A record count the packet does not hold.
        let mut short = sample();
        short[7] = 9;
        assert_eq!(parse(&short), Err(PacketError::Truncated));
    }
}
