//! Ethernet II frames.

use std::fmt;
use std::ops::Range;

use super::DropReason;

const DST: Range<usize> = 0..6;
const SRC: Range<usize> = 6..12;
const ETHERTYPE: Range<usize> = 12..14;
pub const HEADER_LEN: usize = 14;

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The EtherTypes this path cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtherType {
    Ipv4,
    Ipv6,
    Arp,
    /// 802.1Q or 802.1ad.
    Vlan,
    Other(u16),
}

impl EtherType {
    fn from_u16(v: u16) -> EtherType {
        match v {
            0x0800 => EtherType::Ipv4,
            0x86dd => EtherType::Ipv6,
            0x0806 => EtherType::Arp,
            0x8100 | 0x88a8 => EtherType::Vlan,
            o => EtherType::Other(o),
        }
    }

    fn to_u16(self) -> u16 {
        match self {
            EtherType::Ipv4 => 0x0800,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::Other(o) => o,
        }
    }
}

/// A view of an Ethernet frame; after `new_checked` no accessor panics.
#[derive(Debug)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    pub fn new_checked(buf: T) -> Result<Frame<T>, DropReason> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(DropReason::TruncatedEthernet);
        }
        Ok(Frame { buf })
    }

    pub fn dst(&self) -> MacAddr {
        MacAddr(self.buf.as_ref()[DST].try_into().expect("6-byte range"))
    }

    pub fn src(&self) -> MacAddr {
        MacAddr(self.buf.as_ref()[SRC].try_into().expect("6-byte range"))
    }

    pub fn ethertype(&self) -> EtherType {
        let b = &self.buf.as_ref()[ETHERTYPE];
        EtherType::from_u16(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

/// A parsed Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: EtherType,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Repr {
        Repr {
            dst: f.dst(),
            src: f.src(),
            ethertype: f.ethertype(),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into `buf[..14]`.
    ///
    /// # Panics
    /// If `buf` is shorter than 14 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[DST].copy_from_slice(&self.dst.0);
        buf[SRC].copy_from_slice(&self.src.0);
        buf[ETHERTYPE].copy_from_slice(&self.ethertype.to_u16().to_be_bytes());
    }
}
