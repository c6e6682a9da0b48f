//! Shared helpers for the integration tests: an in-process server on loopback
//! port 0, a UDP echo peer, a TURN client of the test user, the real binary
//! (as a server or a one-shot CLI run), and `eventually` for everything that
//! becomes true a moment later.
#![allow(dead_code)]

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferroturn::client::{Allocation, Client};
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
        max_allocations_per_ip: 0,
        max_allocations: 0,
        max_relay_ports: 0,
        store: None,
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        tls: None,
        usage: None,
        connections: Default::default(),
        api: None,
        cluster: Default::default(),
        nat_discovery: None,
        offload: Default::default(),
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

/// How long `eventually` and `poll_until` sleep between two checks.
const POLL: Duration = Duration::from_millis(20);

/// Calls `check` until it returns `Ok` or `within` has passed, sleeping between
/// tries: the `Ok` value, or the last `Err` once the time is up. For waits whose
/// timeout is an answer rather than a failure; see `eventually` for the others.
pub fn poll_until<T, E>(within: Duration, mut check: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let started = Instant::now();
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(last) if started.elapsed() >= within => return Err(last),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Calls `check` until it returns `Ok`, and returns that value; panics naming
/// `what`, with the last error `check` returned (what it saw instead), when it
/// is still not `Ok` after `within`. For synchronous callers.
#[track_caller]
pub fn eventually<T, E: Display>(
    within: Duration,
    what: &str,
    check: impl FnMut() -> Result<T, E>,
) -> T {
    match poll_until(within, check) {
        Ok(v) => v,
        Err(last) => timed_out(what, within, &last),
    }
}

/// `eventually` for async checks: an async closure (or a closure returning a
/// future), awaited until it returns `Ok`, sleeping on the runtime between tries.
pub async fn eventually_async<T, E: Display>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let started = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if started.elapsed() >= within => timed_out(what, within, &last),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

#[track_caller]
fn timed_out(what: &str, within: Duration, last: &dyn Display) -> ! {
    panic!("{what}: not within {within:?}; last seen:\n{last}")
}

/// How a test client reaches a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A server under test, in-process or the real binary: where it listens.
pub trait Listeners {
    fn listener(&self, transport: Transport) -> SocketAddr;
}

impl Listeners for Running {
    fn listener(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Udp => self.udp[0],
            Transport::Tcp => self.tcp[0],
        }
    }
}

impl Listeners for Binary {
    fn listener(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
        }
    }
}

/// A TURN client (`ferroturn::client`) of `srv` over `transport`, with `user`'s
/// long-term credentials; nothing allocated yet.
pub async fn turn_client_as(
    srv: &impl Listeners,
    transport: Transport,
    user: &str,
    password: &str,
) -> Client {
    let addr = srv.listener(transport);
    let c = match transport {
        Transport::Udp => Client::udp(addr).await,
        Transport::Tcp => Client::tcp(addr).await,
    };
    c.unwrap_or_else(|e| panic!("a {transport:?} client of {addr}: {e}"))
        .credentials(user, password)
}

/// A TURN client of `srv` over `transport` as the test user (`USER`, `PASS`).
pub async fn turn_client(srv: &impl Listeners, transport: Transport) -> Client {
    turn_client_as(srv, transport, USER, PASS).await
}

/// A TURN client of `srv` as the test user, with an allocation: the client and
/// what the Allocate granted.
pub async fn allocated_client(srv: &impl Listeners, transport: Transport) -> (Client, Allocation) {
    let mut c = turn_client(srv, transport).await;
    let a = c.allocate().await.unwrap();
    (c, a)
}

/// What one run of the `ferroturn` CLI left: its exit status and both streams.
#[derive(Debug)]
pub struct CliOutput {
    pub args: Vec<String>,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing both streams, unless the run exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code(),
            Some(0),
            "ferroturn {:?}\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `ferroturn ARGS` (the binary under test) to completion, with `stdin`
/// written to its standard input, or with none (it reads end of file). It never
/// sees a store or a REST secret from the environment (`FERROTURN_DB` and
/// `FERROTURN_AUTH_SECRET` are removed).
pub fn ferroturn_cli(args: &[&str], stdin: Option<&str>) -> CliOutput {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_ferroturn"))
        .args(args)
        .env_remove("FERROTURN_DB")
        .env_remove("FERROTURN_AUTH_SECRET")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("ferroturn {args:?} does not start: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        match pipe.write_all(input.as_bytes()) {
            // A run that exits without reading its input is judged by its output.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.expect("write stdin"),
        }
    }
    let out = child.wait_with_output().expect("wait for ferroturn");
    let text = |bytes: Vec<u8>, stream: &str| {
        String::from_utf8(bytes)
            .unwrap_or_else(|e| panic!("ferroturn {args:?} wrote non-UTF-8 on {stream}: {e}"))
    };
    CliOutput {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        status: out.status,
        stdout: text(out.stdout, "stdout"),
        stderr: text(out.stderr, "stderr"),
    }
}

/// `ferroturn_cli` from async code, on the blocking pool (the runtime's own
/// threads go on serving, e.g. an echo peer).
pub async fn ferroturn_cli_async(args: &[&str], stdin: Option<&str>) -> CliOutput {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let stdin = stdin.map(str::to_owned);
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ferroturn_cli(&args, stdin.as_deref())
    });
    match run.await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("ferroturn CLI task: {e}"),
    }
}

/// The real `ferroturn` binary, started by a test and killed (by the PID the test
/// started) when dropped.
pub struct Binary {
    child: std::process::Child,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// Set when `--tls-listen` was among the arguments.
    pub tls: Option<SocketAddr>,
    /// Set when `--dtls-listen` was among the arguments.
    pub dtls: Option<SocketAddr>,
    /// The metrics endpoint, unless `--metrics` was among the arguments.
    pub metrics: Option<SocketAddr>,
    /// The credentials API, when `--api-listen` was among the arguments.
    pub api: Option<SocketAddr>,
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
    #[track_caller]
    pub fn wait_log(&self, text: &str, within: Duration) -> String {
        eventually(within, &format!("a log line with {text:?}"), || {
            let log = self.log();
            log.iter()
                .find(|l| l.contains(text))
                .cloned()
                .ok_or_else(|| log.join("\n"))
        })
    }

    /// Sends `signal` to the process this test started.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of our own child.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// Waits up to `within` for the process to exit; its status, or None.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        poll_until(within, || self.child.try_wait().unwrap().ok_or(())).ok()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`spawn_binary`] serving TLS on a free loopback port with `cert` and `key`,
/// realm `realm` and one static `user` ("name:password"), plus `extra` flags.
pub fn spawn_tls_binary(
    cert: &std::path::Path,
    key: &std::path::Path,
    realm: &str,
    user: &str,
    extra: &[&str],
) -> Binary {
    let mut args = vec![
        "--tls-listen",
        "127.0.0.1:0",
        "--cert",
        cert.to_str().expect("a UTF-8 path"),
        "--key",
        key.to_str().expect("a UTF-8 path"),
        "--realm",
        realm,
        "--user",
        user,
    ];
    args.extend_from_slice(extra);
    spawn_binary(&args)
}

/// [`spawn_binary`] as a target for `ferroturn bench`, plus `extra` flags: user
/// `bench:bench`, loopback peers open, one shard, and no per-address caps, since
/// every bench client is 127.0.0.1 and starts with a 401 (the per-address
/// allocation cap and the per-source limit on unauthenticated answers would
/// refuse most of them).
pub fn spawn_bench_target(max_allocations_per_user: &str, extra: &[&str]) -> Binary {
    let mut args = vec![
        "--user",
        "bench:bench",
        "--allow-peer",
        "127.0.0.0/8",
        "--max-allocations-per-user",
        max_allocations_per_user,
        "--max-allocations-per-ip",
        "0",
        "--unauthenticated-per-second",
        "0",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    spawn_binary(&args)
}

/// A number in a JSON object, or a panic naming the missing key.
pub fn json_u64(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// A signed number in a JSON object, or a panic naming the missing key.
pub fn json_i64(v: &serde_json::Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// A floating-point number in a JSON object, or a panic naming the missing key.
pub fn json_f64(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Starts `ferroturn serve --listen 127.0.0.1:0 ARGS` with JSON logs and a metrics
/// port of its own (tests run in parallel: the default 9641 would collide), and
/// reads the bound UDP, TCP and (with `--tls-listen`) TLS addresses from its
/// "listening" log lines. Its stderr keeps being drained so it never blocks.
pub fn spawn_binary(args: &[&str]) -> Binary {
    spawn_binary_in(None, args)
}

/// [`spawn_binary`] inside the network namespace `netns` (`ip netns exec`,
/// which execs, so the PID is the server's), when given; without `--listen`
/// among `args` it listens on 127.0.0.1 port 0, whatever a `--config` says.
pub fn spawn_binary_in(netns: Option<&str>, args: &[&str]) -> Binary {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let own_metrics = !args.contains(&"--metrics");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_ferroturn")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_ferroturn")),
    };
    cmd.args(["serve", "--log-format", "json"]);
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
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
        // `serve` reads these as --db and --auth-secret: not from the
        // developer's shell.
        .env_remove("FERROTURN_DB")
        .env_remove("FERROTURN_AUTH_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferroturn starts");
    let want_tls = args.contains(&"--tls-listen");
    let want_api = args.contains(&"--api-listen");
    let want_dtls = args.contains(&"--dtls-listen");
    let mut dtls = None;
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let (mut udp, mut tcp, mut tls, mut metrics, mut api) = (None, None, None, None, None);
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
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("credentials API on "))
        {
            api = v["fields"]["address"].as_str().and_then(|a| a.parse().ok());
        }
        let ready = |udp: &Option<SocketAddr>,
                     tcp: &Option<SocketAddr>,
                     tls: &Option<SocketAddr>,
                     m: &Option<SocketAddr>,
                     dtls: &Option<SocketAddr>| {
            udp.is_some()
                && tcp.is_some()
                && (tls.is_some() || !want_tls)
                && (m.is_some() || !own_metrics)
                && (api.is_some() || !want_api)
                && (dtls.is_some() || !want_dtls)
        };
        if v["fields"]["message"] != "listening" && !ready(&udp, &tcp, &tls, &metrics, &dtls) {
            continue;
        }
        if v["fields"]["message"] == "listening" {
            if let Some(addr) = v["fields"]["address"].as_str().and_then(|a| a.parse().ok()) {
                match v["fields"]["transport"].as_str() {
                    Some("udp") => udp = udp.or(Some(addr)),
                    Some("tcp") => tcp = tcp.or(Some(addr)),
                    Some("tls") => tls = tls.or(Some(addr)),
                    Some("dtls") => dtls = dtls.or(Some(addr)),
                    _ => {}
                }
            }
        }
        if ready(&udp, &tcp, &tls, &metrics, &dtls) {
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
                dtls,
                metrics,
                api,
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

/// What [`http_request`] got back.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl HttpAnswer {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, or a panic showing it.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// `METHOD path` to `addr` with `headers` and an optional `body`, with a real
/// HTTP client (hyper's), on a connection of its own.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpAnswer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    http_request_on(stream, addr, method, path, headers, body).await
}

/// [`http_request`] over an already connected stream (plain TCP or TLS).
pub async fn http_request_on<S>(
    stream: S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpAnswer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.unwrap_or_default().to_owned(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    HttpAnswer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// The value of one series (name with its labels, as Prometheus writes them) in a
/// scrape, if present.
pub fn metric_value(scrape: &str, series: &str) -> Option<u64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    })
}

/// Scrapes `/metrics` until every line of `want` appears exactly (the shards
/// publish every 250 ms); panics with the last scrape after 3 s.
pub async fn wait_for_metrics(addr: SocketAddr, want: &[&str]) {
    let what = format!("metrics {want:?}");
    eventually_async(Duration::from_secs(3), &what, async || {
        let (_, body) = http_get(addr, "/metrics").await;
        if want.iter().all(|w| body.lines().any(|l| l == *w)) {
            Ok(())
        } else {
            Err(body)
        }
    })
    .await
}

/// Waits until GET `path` answers 200 (`/readyz`: once every shard serves its
/// listeners); panics naming the path and the last status after `within`.
pub async fn wait_http_200(addr: SocketAddr, path: &str, within: Duration) {
    let what = format!("{path} answering 200");
    eventually_async(within, &what, async || match http_get(addr, path).await {
        (200, _) => Ok(()),
        (status, body) => Err(format!("{status} {body}")),
    })
    .await
}

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files
/// into a temporary directory that lives as long as this value.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl Pki {
    /// A `[tls]` serving this certificate on 127.0.0.1 port 0: 2 s
    /// handshakes, not shared with plain TCP, no DTLS.
    pub fn tls_config(&self) -> ferroturn::config::TlsConfig {
        ferroturn::config::TlsConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            cert: self.cert.clone(),
            key: self.key.clone(),
            handshake_timeout: Duration::from_secs(2),
            shared: false,
            dtls_listen: Vec::new(),
        }
    }
}

pub fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Pki {
        der: ck.cert.der().clone(),
        _dir: dir,
        cert,
        key,
    }
}

/// One of coturn's client tools (Debian package `coturn`, installed by
/// `scripts/test.sh`). Panics, rather than skipping, when it is missing: a
/// silently skipped interop test proves nothing.
pub fn coturn_tool(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    panic!("{name} not found: install Debian's `coturn` package (scripts/test.sh does)");
}

/// A child process killed (by its PID, which the test started) when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `turnutils_peer` (a UDP echo peer) on a free loopback port: the process and
/// the port.
pub fn turnutils_peer() -> (Proc, u16) {
    use std::process::{Command, Stdio};
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(coturn_tool("turnutils_peer"))
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer starts");
    std::thread::sleep(Duration::from_millis(200));
    (Proc(child), port)
}

/// Runs `turnutils_uclient ARGS`, which must succeed, and checks its report:
/// "Total lost packets 0". Returns its stdout and stderr, for more checks.
pub fn turnutils_uclient(args: &[&str]) -> String {
    let out = std::process::Command::new(coturn_tool("turnutils_uclient"))
        .args(args)
        .output()
        .expect("turnutils_uclient runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "uclient {args:?} failed:\n{text}");
    let lost = text
        .lines()
        .find_map(|l| l.split("Total lost packets ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no loss report from uclient {args:?}:\n{text}"));
    assert_eq!(lost, "0", "uclient {args:?} lost packets:\n{text}");
    text
}

/// The last `KEY<number>` in a uclient report (`tot_send_msgs=`,
/// `tot_recv_msgs=`).
pub fn uclient_total(text: &str, key: &str) -> u64 {
    text.lines()
        .rev()
        .find_map(|l| l.split(key).nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}
