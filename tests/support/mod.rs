//! Shared helpers for the integration tests: an in-process server on loopback
//! port 0, and a UDP echo peer.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use ferroturn::net::{start, NetOptions, Running};
use ferroturn::turn::ServerConfig;
use tokio::net::UdpSocket;

pub const USER: &str = "alice";
pub const PASS: &str = "correct horse";
pub const REALM: &str = "ferroturn.test";

/// Options for a server on `listen` (port 0), with one user, and loopback peers
/// opened explicitly (the default policy denies them).
pub fn options(listen: &str) -> NetOptions {
    let mut core = ServerConfig::with_realm(REALM);
    core.allow_peers = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    NetOptions {
        listen: vec![listen.parse().unwrap()],
        threads: 2,
        core,
        users: vec![(USER.to_owned(), PASS.to_owned())],
        secrets: Vec::new(),
        max_allocations_per_user: 10,
        max_allocations: 0,
        max_relay_ports: 0,
        store: None,
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        tls: None,
        usage: None,
    }
}

pub fn server(listen: &str) -> Running {
    start(options(listen)).expect("server starts")
}

/// A UDP echo peer on `bind`, answering every datagram to its sender, for at most
/// `limit` datagrams or until the test's runtime ends.
pub async fn echo_peer(bind: &str, limit: usize) -> SocketAddr {
    let sock = UdpSocket::bind(bind).await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        for _ in 0..limit {
            match tokio::time::timeout(Duration::from_secs(30), sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) => {
                    let _ = sock.send_to(&buf[..n], from).await;
                }
                _ => return,
            }
        }
    });
    addr
}

pub const WAIT: Duration = Duration::from_secs(3);

/// The real `ferroturn` binary, started by a test and killed (by the PID the test
/// started) when dropped.
pub struct Binary {
    child: std::process::Child,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// Set when `--tls-listen` was among the arguments.
    pub tls: Option<SocketAddr>,
    /// The metrics endpoint, unless `--metrics` was among the arguments.
    pub metrics: Option<SocketAddr>,
    /// Every stderr line so far (JSON log lines), read by a thread.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log lines written so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `text`; panics with the log after `within`.
    pub fn wait_log(&self, text: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(text)) {
                return l;
            }
            if std::time::Instant::now() > deadline {
                panic!("no log line with {text:?}:\n{}", self.log().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the process this test started.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of our own child.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// Waits up to `within` for the process to exit; its status, or None.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ferroturn serve --listen 127.0.0.1:0 ARGS` with JSON logs and a metrics
/// port of its own (tests run in parallel: the default 9641 would collide), and
/// reads the bound UDP, TCP and (with `--tls-listen`) TLS addresses from its
/// "listening" log lines. Its stderr keeps being drained so it never blocks.
pub fn spawn_binary(args: &[&str]) -> Binary {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    let own_metrics = !args.contains(&"--metrics");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferroturn"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"]);
    if !args.contains(&"--log-level") {
        cmd.args(["--log-level", "info"]);
    }
    if own_metrics {
        cmd.args(["--metrics", "127.0.0.1:0"]);
    }
    // Never the machine's default admin socket: tests run in parallel.
    if !args.contains(&"--admin-socket") && !args.contains(&"--config") {
        cmd.args(["--admin-socket", "off"]);
    }
    let mut child = cmd
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferroturn starts");
    let want_tls = args.contains(&"--tls-listen");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let (mut udp, mut tcp, mut tls, mut metrics) = (None, None, None, None);
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        log.lock().unwrap().push(line.clone());
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("metrics on "))
        {
            metrics = v["fields"]["address"].as_str().and_then(|a| a.parse().ok());
        }
        let ready = |udp: &Option<SocketAddr>,
                     tcp: &Option<SocketAddr>,
                     tls: &Option<SocketAddr>,
                     m: &Option<SocketAddr>| {
            udp.is_some()
                && tcp.is_some()
                && (tls.is_some() || !want_tls)
                && (m.is_some() || !own_metrics)
        };
        if v["fields"]["message"] != "listening" && !ready(&udp, &tcp, &tls, &metrics) {
            continue;
        }
        if v["fields"]["message"] == "listening" {
            if let Some(addr) = v["fields"]["address"].as_str().and_then(|a| a.parse().ok()) {
                match v["fields"]["transport"].as_str() {
                    Some("udp") => udp = udp.or(Some(addr)),
                    Some("tcp") => tcp = tcp.or(Some(addr)),
                    Some("tls") => tls = tls.or(Some(addr)),
                    _ => {}
                }
            }
        }
        if ready(&udp, &tcp, &tls, &metrics) {
            let (Some(udp), Some(tcp)) = (udp, tcp) else {
                unreachable!()
            };
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            return Binary {
                child,
                udp,
                tcp,
                tls,
                metrics,
                log,
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "ferroturn {args:?} did not report its listeners (udp {udp:?}, tcp {tcp:?}, tls {tls:?})"
    );
}

/// GET `path` from `addr` with a real HTTP client (hyper's): status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Scrapes `/metrics` until every line of `want` appears exactly (the shards
/// publish every 250 ms); panics with the last scrape after 3 s.
pub async fn wait_for_metrics(addr: SocketAddr, want: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (_, body) = http_get(addr, "/metrics").await;
        if want.iter().all(|w| body.lines().any(|l| l == *w)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "want {want:?}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
