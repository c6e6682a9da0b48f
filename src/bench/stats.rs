//! Measurement helpers: a fixed-size latency histogram, the server's CPU time and
//! RSS from /proc, and the file-descriptor limit.
// The one place of its folder with FFI (system calls libc has no safe
// wrapper for); every block says why it is sound.
#![allow(unsafe_code)]

use std::time::Duration;

use serde::Serialize;

/// Sub-buckets per power of two: 64 gives under 1.6 % relative error.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;

/// A log-linear histogram of nanosecond values (like HdrHistogram, coarser): a
/// fixed array, so recording never allocates.
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; 64 * SUB].into_boxed_slice(),
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = exp - SUB_BITS;
        let mantissa = (v >> shift) as usize & (SUB - 1);
        ((shift + 1) as usize) * SUB + mantissa
    }

    /// The largest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let shift = (i / SUB - 1) as u32;
        let mantissa = (i % SUB) as u64;
        (((SUB as u64) | mantissa) << shift) + ((1u64 << shift) - 1)
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Adds another histogram's samples to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), in nanoseconds (bucket upper bound).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> Option<Latency> {
        if self.total == 0 {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            samples: self.total,
            min_us: us(self.min),
            p50_us: us(self.quantile(0.5)),
            p99_us: us(self.quantile(0.99)),
            p999_us: us(self.quantile(0.999)),
            max_us: us(self.max),
            mean_us: self.sum as f64 / self.total as f64 / 1000.0,
        })
    }
}

/// Round-trip time percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// utime + stime of a process, all threads, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the man page, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks() as f64,
    ))
}

/// VmRSS of a process in bytes, from /proc/PID/status.
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Clock ticks per second of /proc's CPU times (USER_HZ).
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// CPU time the whole machine spent busy, all CPUs together, from the `cpu` line
/// of /proc/stat: user + nice + system + irq + softirq, i.e. everything but idle,
/// iowait and steal (guest time is already inside user and nice).
///
/// On loopback the kernel does the receiving end's protocol work in the sender's
/// system call (and softirq), charged to whichever process and CPU sends; a
/// server's own utime + stime therefore moves when work moves between kernel and
/// user space (batching, GSO, an in-kernel fast path) without the total changing.
/// The machine's busy time counts server, kernel and load generator alike.
pub fn machine_busy_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    machine_busy_ticks(&stat).map(|t| Duration::from_secs_f64(t as f64 / clock_ticks() as f64))
}

/// The busy ticks of the aggregate `cpu` line of a /proc/stat text.
fn machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal guest guest_nice
    let at = |i: usize| f.get(i).copied();
    Some(at(0)? + at(1)? + at(2)? + at(5).unwrap_or(0) + at(6).unwrap_or(0))
}

/// CPU seconds used during one measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    /// The server process (utime + stime of all its threads), with --server-pid.
    pub server_s: Option<f64>,
    /// The whole machine, all CPUs (see [`machine_busy_time`]).
    pub machine_s: Option<f64>,
}

/// CPU time of the server, and of the whole machine, across one measurement.
pub struct CpuMeter {
    pid: Option<u32>,
    start: Option<Duration>,
    machine_start: Option<Duration>,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            start: pid.and_then(cpu_time),
            machine_start: machine_busy_time(),
        }
    }

    /// CPU seconds since `start`: the server's (with a PID) and the machine's.
    pub fn stop(&self) -> CpuUse {
        let machine_s = machine_busy_time()
            .zip(self.machine_start)
            .map(|(end, start)| end.saturating_sub(start).as_secs_f64());
        let server_s = self
            .pid
            .and_then(cpu_time)
            .zip(self.start)
            .map(|(end, start)| end.saturating_sub(start).as_secs_f64());
        CpuUse {
            server_s,
            machine_s,
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (hold opens 10,000 sockets).
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.02, "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.count(), 100_000);
        for v in [0u64, 1, 63, 64, 65, 1000, 1 << 40, u64::MAX / 2] {
            let i = Histogram::index(v);
            assert!(Histogram::upper(i) >= v, "{v}");
            if i > 0 {
                assert!(Histogram::upper(i - 1) < v, "{v}");
            }
        }
    }

    #[test]
    fn machine_busy_time_counts_all_but_idle_iowait_and_steal() {
        let stat = "cpu  100 20 30 5000 40 6 7 800 9 1\n\
                    cpu0 50 10 15 2500 20 3 3 400 0 0\n\
                    intr 12345\n";
        // user 100 + nice 20 + system 30 + irq 6 + softirq 7.
        assert_eq!(machine_busy_ticks(stat), Some(163));
        // Old kernels end the line after softirq.
        assert_eq!(machine_busy_ticks("cpu  1 2 3 4 5 6 7\n"), Some(19));
        assert_eq!(machine_busy_ticks("cpu  1 2\n"), None);
        assert_eq!(machine_busy_ticks("cpu  1 x 3 4\n"), None);
        assert_eq!(machine_busy_ticks("intr 5\n"), None);
    }

    #[test]
    fn a_meter_reads_the_machine_without_a_pid() {
        let m = CpuMeter::start(None);
        // Burn a little CPU so that at least the counters are read twice.
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let u = m.stop();
        assert_eq!(u.server_s, None);
        assert!(u.machine_s.is_some_and(|s| s >= 0.0), "{u:?}");
    }

    #[test]
    fn own_process_readings() {
        let pid = std::process::id();
        assert!(rss(pid).unwrap() > 0);
        assert!(cpu_time(pid).is_some());
    }
}
