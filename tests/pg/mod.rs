//! A throwaway PostgreSQL server for tests: started on first use, once per
//! test process, on a free loopback port with its data and socket in a
//! temporary directory, and stopped when the process exits.
//!
//! Why a real server and not a mock: the store's PostgreSQL path differs
//! in what matters (types, advisory locks, NOTIFY, isolation levels), and
//! only a server tells whether that SQL really works.
//!
//! The binaries come from `pg_config --bindir` (or
//! `/usr/lib/postgresql/*/bin`); `scripts/test.sh` installs Debian's
//! `postgresql` package when they are missing. Without them the tests fail
//! with a message saying so: a silently skipped database test is a test
//! that never runs in CI.
//!
//! `initdb` refuses to run as root, so as root every server command runs as
//! the `postgres` OS user (`runuser -u postgres --`) and the directory is
//! handed to it.
//!
//! Cleanup, in layers: an `atexit` handler stops the server (`pg_ctl stop
//! -m immediate`, else SIGKILL to the postmaster PID it started) and removes
//! the directory when the test process exits, even after failed tests; and
//! a small watchdog shell process does the same if the test process is
//! killed outright (a test timeout), so no server outlives its tests.

#![allow(dead_code)] // Each test binary uses a different part of this.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The running server of this process.
pub struct PgServer {
    /// Loopback TCP port.
    pub port: u16,
    /// Temporary directory: `data/` (cluster), the Unix socket, logs.
    dir: PathBuf,
    /// Where initdb, pg_ctl, createdb live.
    bindir: PathBuf,
    /// Run server commands as the `postgres` user (we are root).
    as_postgres: bool,
    /// The postmaster's PID, for a hard kill if `pg_ctl stop` fails.
    pid: Option<u32>,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The server, started on first call. Panics with a clear message if
/// PostgreSQL is not installed or does not start.
pub fn server() -> &'static PgServer {
    SERVER.get_or_init(|| {
        let server = PgServer::start();
        // SAFETY: `stop_at_exit` is an `extern "C" fn()` that does not
        // unwind (it catches panics) and only touches the static above.
        unsafe {
            libc::atexit(stop_at_exit);
        }
        server
    })
}

/// A new, empty database on the server; returns its `postgres://` URL.
pub fn fresh_database() -> String {
    let server = server();
    let n = DATABASES.fetch_add(1, Ordering::Relaxed);
    let name = format!("ferroturn_test_{}_{n}", std::process::id());
    let out = Command::new(server.bindir.join("createdb"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
            &name,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
    check(&out, "createdb");
    server.url(&name)
}

extern "C" fn stop_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(server) = SERVER.get() {
            server.stop();
        }
    });
}

impl PgServer {
    /// `postgres://postgres@127.0.0.1:PORT/NAME` (the cluster trusts
    /// loopback, so no password).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Where the server binaries are.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    fn start() -> PgServer {
        let bindir = find_bindir();
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let known = Command::new("id")
                .args(["-u", "postgres"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                known,
                "running as root, and initdb refuses root, but there is no `postgres` OS user to run \
                 PostgreSQL as (it comes with Debian's postgresql package; scripts/test.sh installs it)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("ferroturn-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
            .keep();
        let mut server = PgServer {
            port: 0,
            dir,
            bindir,
            as_postgres,
            pid: None,
        };
        if as_postgres {
            let out = Command::new("chown")
                .arg("postgres:")
                .arg(&server.dir)
                .output()
                .unwrap_or_else(|e| panic!("cannot run chown: {e}"));
            check(&out, "chown postgres: on the test directory");
        }
        server.spawn_watchdog();

        let data = server.dir.join("data");
        let out = server
            .pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        check(&out, "initdb");

        // A port can be taken between probing and binding: try a few.
        let mut last_error = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.pg_ctl_start() {
                Ok(()) => {
                    server.pid = read_postmaster_pid(&data);
                    return server;
                }
                Err(e) => last_error = e,
            }
        }
        server.stop();
        panic!("PostgreSQL did not start:\n{last_error}");
    }

    /// A command for a server binary, as the `postgres` user if we are
    /// root. Output is captured or discarded, never inherited: the test
    /// runner must not see a pipe kept open by the server.
    fn pg_command(&self, binary: &str) -> Command {
        let path = self.bindir.join(binary);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.stdin(Stdio::null()).current_dir(&self.dir);
        cmd
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let log = self.dir.join("server.log");
        let options = format!(
            "-k {} -c listen_addresses=127.0.0.1 -p {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=50",
            self.dir.display(),
            self.port
        );
        let out = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let server_log = std::fs::read_to_string(&log).unwrap_or_default();
        Err(format!(
            "pg_ctl start failed ({}):\n{}{}\nserver log:\n{server_log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// Stops the server and removes the directory. Safe to call twice.
    fn stop(&self) {
        let data = self.dir.join("data");
        if data.join("postmaster.pid").exists() {
            let stopped = self
                .pg_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "-t", "20", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !stopped {
                if let Some(pid) = self.pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
                    // SAFETY: kill has no memory-safety preconditions; the
                    // PID is the postmaster this process started.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// A detached shell that waits for this process to end and then stops
    /// the server and removes the directory: the fallback for a test
    /// process that is killed and so never runs its `atexit` handler.
    fn spawn_watchdog(&self) {
        let pg_ctl = self.bindir.join("pg_ctl");
        let runuser = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {runuser}'{pg_ctl}' -D '{dir}/data' -m immediate stop >/dev/null 2>&1; \
             rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            dir = self.dir.display(),
        );
        let spawned = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        // Not fatal: the atexit handler still cleans up in the normal case.
        if let Err(e) = spawned {
            eprintln!("warning: no PostgreSQL watchdog: {e}");
        }
    }
}

/// The directory of initdb/pg_ctl: `pg_config --bindir` if it has them
/// (libpq-dev's pg_config exists without the server), else the newest
/// `/usr/lib/postgresql/*/bin`.
fn find_bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| d.join("initdb").exists()) {
        return dir;
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    match candidates.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "PostgreSQL server binaries not found: `pg_config --bindir` has no initdb and there is no \
             /usr/lib/postgresql/*/bin/initdb. Install Debian's `postgresql` package \
             (scripts/test.sh does so); these tests need a real server and do not skip."
        ),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

fn read_postmaster_pid(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
