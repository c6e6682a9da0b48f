//! What a server process holds at one moment (file descriptors, UDP and TCP
//! sockets, resident memory), read from /proc: the before and after figures of
//! `ferroturn bench churn`, which prove that a soak leaves nothing behind.

use std::collections::HashSet;

use serde::Serialize;

use super::stats;

/// What the server's process holds at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ServerSample {
    /// Entries in /proc/PID/fd.
    pub fds: u64,
    /// Of those, sockets.
    pub socket_fds: u64,
    /// Socket fds that are UDP sockets (listeners and relays).
    pub udp_sockets: u64,
    /// Socket fds that are TCP sockets (listeners and connections).
    pub tcp_sockets: u64,
    /// VmRSS in bytes.
    pub rss_bytes: u64,
}

impl ServerSample {
    /// Reads /proc for `pid`; `None` when the process cannot be read.
    pub fn read(pid: u32) -> Option<Self> {
        let mut fds = 0;
        let mut inodes = HashSet::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()? {
            let Ok(entry) = entry else { continue };
            fds += 1;
            if let Ok(target) = std::fs::read_link(entry.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    inodes.insert(inode);
                }
            }
        }
        let count = |tables: &[&str]| -> u64 {
            tables
                .iter()
                .map(|t| {
                    std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
                        .map(|text| count_inodes(&text, &inodes))
                        .unwrap_or(0)
                })
                .sum()
        };
        Some(Self {
            fds,
            socket_fds: inodes.len() as u64,
            udp_sockets: count(&["udp", "udp6"]),
            tcp_sockets: count(&["tcp", "tcp6"]),
            rss_bytes: stats::rss(pid)?,
        })
    }
}

/// Rows of a /proc/net/{udp,tcp}[6] table whose inode (the 10th column) is in
/// `inodes`.
fn count_inodes(table: &str, inodes: &HashSet<u64>) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(9)?.parse::<u64>().ok())
        .filter(|i| inodes.contains(i))
        .count() as u64
}

/// after − before, per figure.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SampleDiff {
    pub fds: i64,
    pub socket_fds: i64,
    pub udp_sockets: i64,
    pub tcp_sockets: i64,
    pub rss_bytes: i64,
}

impl SampleDiff {
    pub fn between(before: &ServerSample, after: &ServerSample) -> Self {
        let d = |a: u64, b: u64| a as i64 - b as i64;
        Self {
            fds: d(after.fds, before.fds),
            socket_fds: d(after.socket_fds, before.socket_fds),
            udp_sockets: d(after.udp_sockets, before.udp_sockets),
            tcp_sockets: d(after.tcp_sockets, before.tcp_sockets),
            rss_bytes: d(after.rss_bytes, before.rss_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_tables_are_matched_by_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             1: 0100007F:0D96 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0\n\
             2: 0100007F:0D97 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0\n";
        let inodes: HashSet<u64> = [4242, 99].into_iter().collect();
        assert_eq!(count_inodes(table, &inodes), 1);
    }

    #[test]
    fn own_process_sample() {
        let _s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let _t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = ServerSample::read(std::process::id()).unwrap();
        assert!(s.fds >= 2 && s.socket_fds >= 2 && s.rss_bytes > 0, "{s:?}");
        assert!(s.udp_sockets >= 1 && s.tcp_sockets >= 1, "{s:?}");
    }
}
