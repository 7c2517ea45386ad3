//! Generic netlink, just enough to ask the kernel's `netdev` family what a device's XDP can
//! do (`NETDEV_CMD_DEV_GET`: xdp-features, xdp-rx-metadata-features), for `porto doctor`:
//! the zero-copy and hardware-timestamp questions no other interface answers.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
const NETDEV_A_DEV_XDP_RX_METADATA_FEATURES: u16 = 5;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const HDR: usize = 16 + 4;

/// What a device's driver says its XDP supports (`enum netdev_xdp_act`,
/// `enum netdev_xdp_rx_metadata`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct XdpFeatures {
    /// Native (driver) XDP.
    pub basic: bool,
    /// XDP_REDIRECT (what steering to an AF_XDP socket uses).
    pub redirect: bool,
    /// AF_XDP zero-copy.
    pub zero_copy: bool,
    /// Multi-buffer receive.
    pub rx_sg: bool,
    /// `bpf_xdp_metadata_rx_timestamp`: the NIC's receive timestamp.
    pub rx_timestamp: bool,
}

/// One request: nlmsghdr, genlmsghdr (`cmd`, version 1), then `attrs` (type, payload).
fn request(family: u16, cmd: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; HDR];
    for (ty, payload) in attrs {
        let len = 4 + payload.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let total = m.len() as u32;
    m[..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&family.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    m[16] = cmd;
    m[17] = 1;
    m
}

/// The attributes of the first message of a reply (untrusted: every length checked), or
/// the kernel's error.
fn attrs(reply: &[u8]) -> io::Result<Vec<(u16, &[u8])>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply");
    let len = u32::from_ne_bytes(reply.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let msg = reply.get(..len).ok_or_else(bad)?;
    let ty = u16::from_ne_bytes(msg.get(4..6).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    if ty == NLMSG_ERROR {
        let code = i32::from_ne_bytes(msg.get(16..20).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        return Err(io::Error::from_raw_os_error(code.checked_neg().ok_or_else(bad)?));
    }
    let mut out = Vec::new();
    let mut rest = msg.get(HDR..).ok_or_else(bad)?;
    while rest.len() >= 4 {
        let alen = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let aty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if alen < 4 || alen > rest.len() {
            return Err(bad());
        }
        out.push((aty, &rest[4..alen]));
        rest = rest.get(alen.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(out)
}

fn u64_of(payload: &[u8]) -> u64 {
    match payload.len() {
        4 => u64::from(u32::from_ne_bytes(payload.try_into().expect("4 bytes"))),
        8 => u64::from_ne_bytes(payload.try_into().expect("8 bytes")),
        _ => 0,
    }
}

/// Sends `req` on a fresh generic-netlink socket and returns the reply's first message.
fn transact(req: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_GENERIC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
    // SAFETY: `tv` is a live timeval of the size passed.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    // SAFETY: `req` is a live buffer of the length passed; the kernel is the default
    // destination of an unbound netlink socket.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// What device `ifindex`'s XDP supports; `ENOENT`-like errors where the kernel has no
/// `netdev` family (before 6.3).
pub(crate) fn xdp_features(ifindex: u32) -> io::Result<XdpFeatures> {
    let mut buf = [0u8; 8192];
    let req = request(
        GENL_ID_CTRL,
        CTRL_CMD_GETFAMILY,
        &[(CTRL_ATTR_FAMILY_NAME, b"netdev\0")],
    );
    let n = transact(&req, &mut buf)?;
    let family = attrs(&buf[..n])?
        .into_iter()
        .find(|a| a.0 == CTRL_ATTR_FAMILY_ID && a.1.len() >= 2)
        .map(|a| u16::from_ne_bytes([a.1[0], a.1[1]]))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no netdev netlink family"))?;
    let req = request(
        family,
        NETDEV_CMD_DEV_GET,
        &[(NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes())],
    );
    let n = transact(&req, &mut buf)?;
    let mut f = XdpFeatures::default();
    for (ty, payload) in attrs(&buf[..n])? {
        let v = u64_of(payload);
        match ty {
            NETDEV_A_DEV_XDP_FEATURES => {
                f.basic = v & 1 != 0;
                f.redirect = v & 2 != 0;
                f.zero_copy = v & 8 != 0;
                f.rx_sg = v & 32 != 0;
            }
            NETDEV_A_DEV_XDP_RX_METADATA_FEATURES => f.rx_timestamp = v & 1 != 0,
            _ => {}
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_answers_and_malformed_replies_are_refused() {
        // lo has native XDP? No: generic only — the kernel answers with its features all the same.
        let f = xdp_features(1).expect("the kernel's netdev family answers for lo");
        assert!(!f.zero_copy, "lo has no AF_XDP zero-copy: {f:?}");
        for bad in [&[][..], &[8, 0, 0, 0][..], &[255, 0, 0, 0, 0, 0, 0, 0][..]] {
            assert!(attrs(bad).is_err());
        }
        let mut truncated = request(0x20, 1, &[(1, &[1, 2, 3, 4])]);
        truncated[HDR] = 200; // an attribute longer than the message
        assert!(attrs(&truncated).is_err());
    }
}
