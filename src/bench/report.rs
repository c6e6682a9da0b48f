//! Results: one [`Row`] per measurement, printed as a table or as one JSON object.
//! The JSON field names are stable (documented in docs/performance.md); a figure a
//! scenario does not produce is `null`.

use std::io::{self, Write};
use std::net::SocketAddr;

use serde::Serialize;

use super::stats::{CpuUse, Latency};

/// Version of the JSON layout.
pub const FORMAT_VERSION: u32 = 1;

/// One measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// Human name, e.g. `relay channel echo 100B`.
    pub name: String,
    /// binding, alloc, relay, latency or hold.
    pub scenario: String,
    /// channel or send (relay, latency).
    pub mode: Option<String>,
    /// echo, client or plain (relay, latency).
    pub peer: Option<String>,
    /// Payload bytes per packet (relay, latency).
    pub payload_bytes: Option<u32>,
    /// Allocations (flows) used.
    pub allocations: Option<u64>,
    /// Packets in flight per flow (relay).
    pub window: Option<u32>,
    /// Operations started: requests, cycles, packets, allocations.
    pub sent: u64,
    /// Operations completed: responses, cycles, packets echoed back.
    pub received: u64,
    /// sent − received after the drain wait.
    pub lost: u64,
    /// Error responses or failed operations.
    pub errors: u64,
    /// Measured time in seconds.
    pub duration_s: f64,
    /// Completed operations per second.
    pub rate_per_s: f64,
    /// Payload bytes echoed back per second (relay).
    pub bytes_per_s: Option<f64>,
    /// Round-trip percentiles (latency).
    pub latency: Option<Latency>,
    /// Server CPU seconds (user + system) during the measurement (--server-pid).
    pub server_cpu_s: Option<f64>,
    /// Server CPU microseconds per completed operation.
    pub server_cpu_us_per_op: Option<f64>,
    /// CPU seconds the whole machine was busy during the measurement, all CPUs
    /// (/proc/stat): server, kernel and load generator, and anything else running.
    pub machine_cpu_s: Option<f64>,
    /// Whole-machine CPU microseconds per completed operation: the figure that
    /// stays comparable when work moves into the kernel (loopback charges both
    /// ends' kernel work to the sending CPU).
    pub machine_cpu_us_per_op: Option<f64>,
    /// Server VmRSS before opening the allocations (hold).
    pub rss_before_bytes: Option<u64>,
    /// Server VmRSS with every allocation open (hold).
    pub rss_after_bytes: Option<u64>,
    /// (after − before) / allocations held (hold).
    pub rss_per_allocation_bytes: Option<f64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Cycles by kind, errors by kind, the server before and after (churn).
    pub churn: Option<super::churn::ChurnFigures>,
}

impl Row {
    /// Fills the rate and the CPU per operation from the counts.
    pub fn finish(&mut self, cpu: CpuUse) {
        self.lost = self.sent.saturating_sub(self.received);
        self.rate_per_s = if self.duration_s > 0.0 {
            self.received as f64 / self.duration_s
        } else {
            0.0
        };
        let per_op = |s: Option<f64>| {
            s.filter(|_| self.received > 0)
                .map(|s| s * 1e6 / self.received as f64)
        };
        self.server_cpu_s = cpu.server_s;
        self.server_cpu_us_per_op = per_op(cpu.server_s);
        self.machine_cpu_s = cpu.machine_s;
        self.machine_cpu_us_per_op = per_op(cpu.machine_s);
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub format: u32,
    pub scenario: String,
    pub server: String,
    pub results: Vec<Row>,
}

impl Report {
    pub fn new(scenario: &str, server: SocketAddr, results: Vec<Row>) -> Self {
        Self {
            format: FORMAT_VERSION,
            scenario: scenario.to_owned(),
            server: server.to_string(),
            results,
        }
    }

    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        writeln!(out)
    }

    pub fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "ferroturn bench {} against {}",
            self.scenario, self.server
        )?;
        let head = [
            "measurement",
            "ops/s",
            "MB/s",
            "sent",
            "received",
            "lost",
            "errors",
            "p50 µs",
            "p99 µs",
            "p999 µs",
            "srv µs/op",
            "machine µs/op",
            "RSS B/alloc",
        ];
        let mut rows: Vec<[String; 13]> = Vec::new();
        for r in &self.results {
            let opt =
                |v: Option<f64>, prec: usize| v.map_or("-".to_owned(), |v| format!("{v:.prec$}"));
            rows.push([
                r.name.clone(),
                format!("{:.0}", r.rate_per_s),
                opt(r.bytes_per_s.map(|b| b / 1e6), 1),
                r.sent.to_string(),
                r.received.to_string(),
                r.lost.to_string(),
                r.errors.to_string(),
                opt(r.latency.as_ref().map(|l| l.p50_us), 1),
                opt(r.latency.as_ref().map(|l| l.p99_us), 1),
                opt(r.latency.as_ref().map(|l| l.p999_us), 1),
                opt(r.server_cpu_us_per_op, 2),
                opt(r.machine_cpu_us_per_op, 2),
                opt(r.rss_per_allocation_bytes, 0),
            ]);
        }
        let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (w, c) in width.iter_mut().zip(row.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>, out: &mut dyn Write| -> io::Result<()> {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
                let pad = w - c.chars().count();
                if i == 0 {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                } else {
                    s.push_str("  ");
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                }
            }
            writeln!(out, "{}", s.trim_end())
        };
        line(head.to_vec(), out)?;
        for row in &rows {
            line(row.iter().map(String::as_str).collect(), out)?;
        }
        for r in &self.results {
            if let (Some(b), Some(a), None) = (r.rss_before_bytes, r.rss_after_bytes, &r.churn) {
                writeln!(
                    out,
                    "{}: server RSS {:.1} MiB before, {:.1} MiB with {} allocations",
                    r.name,
                    b as f64 / 1048576.0,
                    a as f64 / 1048576.0,
                    r.allocations.unwrap_or(0)
                )?;
            }
            if let Some(c) = &r.churn {
                super::churn::write_details(c, out)?;
            }
            if let Some(e) = &r.first_error {
                writeln!(out, "{}: first error: {e}", r.name)?;
            }
        }
        Ok(())
    }
}
