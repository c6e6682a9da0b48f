//! Invariants of the source tree that a test holds instead of a habit:
//! the sans-IO core never does I/O or reads a clock, and docs/architecture.md
//! names every source and test file.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file below `dir`, as paths relative to the repository root.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join(dir)];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.strip_prefix(root()).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its comments and without its `#[cfg(test)]` module
/// at the end (unit tests may use a real clock as the origin of a fake one).
fn code_of(path: &Path) -> String {
    let text = fs::read_to_string(root().join(path)).unwrap();
    let mut code = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// What the protocol core must never name: an async runtime, a socket, the
/// clock. Time is injected (`now: Instant` on every call) and sockets come from
/// the injected `RelayBinder`, which is what makes every rule testable with a
/// fake clock and the core fuzzable.
const FORBIDDEN_IN_CORE: [&str; 11] = [
    "tokio",
    "mio::",
    "socket2",
    "quinn_udp",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "UnixStream",
    "Instant::now",
    "SystemTime::now",
    "std::fs",
];

/// Files of the core that are allowed to read the real clock, and why.
/// The test kit is compiled only for tests and the fuzzer: a fake clock needs one
/// real `Instant` as its origin, since `Instant` has no other constructor.
const CLOCK_ALLOWED: [&str; 1] = ["src/turn/testing/mod.rs"];

/// The forbidden names found in `code` (comments and test modules already
/// stripped by `code_of`), one line each.
fn violations(name: &str, code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in code.lines() {
        for word in FORBIDDEN_IN_CORE {
            let allowed = word == "Instant::now" && CLOCK_ALLOWED.contains(&name);
            if !allowed && line.contains(word) {
                found.push(format!("{name}: `{word}` in: {}", line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_sans_io_core_never_touches_a_runtime_a_socket_or_the_clock() {
    let mut found = Vec::new();
    for dir in ["src/stun", "src/turn"] {
        for file in rust_files(Path::new(dir)) {
            let name = file.to_string_lossy().replace('\\', "/");
            // Unit tests (src/turn/tests/) may drive the core from a real clock.
            if name.contains("/tests/") {
                continue;
            }
            found.extend(violations(&name, &code_of(&file)));
        }
    }
    assert!(
        found.is_empty(),
        "src/stun and src/turn must stay sans-IO (no runtime, socket or clock):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scanner_sees_a_clock_read_and_a_socket_but_not_a_comment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sample.rs");
    fs::write(
        &file,
        "// Instant::now is never called\nfn f() -> Instant {\n    Instant::now()\n}\n\
         use tokio::net::UdpSocket;\n#[cfg(test)]\nmod tests { fn g() { Instant::now(); } }\n",
    )
    .unwrap();
    let code = code_of(&file);
    let found = violations("src/turn/sample.rs", &code);
    assert_eq!(found.len(), 3, "{found:?}"); // Instant::now; tokio and UdpSocket on one line
    assert!(violations("src/turn/testing/mod.rs", "let t = Instant::now();").is_empty());
}

#[test]
fn docs_architecture_names_every_source_and_test_file() {
    let doc = fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let mut missing = Vec::new();
    for dir in ["src", "tests"] {
        for file in rust_files(Path::new(dir)) {
            let name = file.to_string_lossy().replace('\\', "/");
            if !doc.contains(&name) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/architecture.md must name every file under src/ and tests/ with its purpose; missing:\n{}",
        missing.join("\n")
    );
}
