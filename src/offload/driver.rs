//! Which kernel driver an interface has, asked the way `ethtool -i` asks
//! (the `ETHTOOL_GDRVINFO` ioctl): the fast path must not attach in native
//! mode to a veth. A veth's native `XDP_TX` hands the frame to the other end
//! of the pair, which takes it only when that end runs an XDP program of its
//! own (NAPI from GRO alone is not enough: the kernel queues the frames but
//! never kicks the other end's poll); otherwise it drops them and counts
//! `xdp_tx_errors`, so every channel would go dark while the attach itself
//! succeeds. Generic mode on a veth relays correctly; `native-on-veth` is
//! the operator's word that the other end is ready.
//!
//! Unsafe code: one ioctl with the kernel's structs (no maintained crate
//! offers GDRVINFO without a netlink stack and an async runtime of its own).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `ETHTOOL_GDRVINFO` (linux/ethtool.h).
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// The driver behind interface `name` ("veth", "virtio_net", "mlx5_core",
/// ...), or `None` when the kernel does not say (no such interface, a name
/// too long for an `ifreq`, no ethtool support).
pub fn driver_of(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return None;
    }
    // SAFETY: socket(2) with constant arguments; the result is checked and
    // owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a socket this function just opened and nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: both are plain C structs for which all-zero bytes are valid.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: SIOCETHTOOL with an ifreq naming the interface (NUL-terminated:
    // shorter than IFNAMSIZ, zeroed) whose data pointer points at a live
    // ethtool_drvinfo of the kernel's layout, which the kernel fills.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc != 0 {
        return None;
    }
    CStr::from_bytes_until_nul(&info.driver)
        .ok()
        .map(|d| d.to_string_lossy().into_owned())
        .filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::driver_of;

    #[test]
    fn loopback_has_no_driver_name_or_says_so_and_bad_names_are_none() {
        // `lo` answers GDRVINFO on some kernels and not on others; either
        // way it is not a veth.
        assert_ne!(driver_of("lo").as_deref(), Some("veth"));
        assert_eq!(driver_of(""), None);
        assert_eq!(driver_of("a-name-far-too-long-for-ifreq"), None);
        assert_eq!(driver_of("no-such-if0"), None);
        assert_eq!(driver_of("bad\0name"), None);
    }
}
