//! The admin socket: a Unix domain socket, mode 0600, through which the
//! `ferroturn sessions`, `reload` and `drain` commands talk to a running server.
//!
//! Local only by construction (no TCP), and only for the server's own user (and
//! root) by its file mode. One request per connection: a JSON object on one line,
//! answered by one JSON object on one line, so that `socat` works as a client as
//! well as the CLI does.

use std::io::{self, BufRead, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::config::DEFAULT_ADMIN_SOCKET;

/// What a client may ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Allocations, as a JSON array of sessions.
    Sessions,
    /// End allocations by user or ID.
    Kill {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Re-read the configuration.
    Reload,
    /// Start draining; `deadline_secs` defaults to the server's drain.deadline.
    Drain {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_secs: Option<u64>,
    },
    /// Stop draining: accept new allocations again.
    Resume,
    /// Allocations held and whether the server drains.
    Status,
}

/// A request and where its answer goes.
pub type Call = (Request, oneshot::Sender<serde_json::Value>);

/// The bound socket; the file is removed when this is dropped.
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn err(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("admin.socket {}: {what}", path.display()))
}

/// Binds the admin socket at `path` with mode 0600. A live socket there means
/// another server: that is an error, never a takeover. A stale one (nobody
/// answers) is replaced. When the *default* path's directory does not exist
/// (no systemd `RuntimeDirectory`, a developer's machine), the server runs
/// without an admin socket and says so; a configured path must work.
pub fn bind(path: Option<&Path>) -> io::Result<Option<AdminSocket>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let is_default = path == Path::new(DEFAULT_ADMIN_SOCKET);
    match path.parent() {
        Some(dir) if !dir.is_dir() => {
            if is_default {
                tracing::info!(
                    path = %path.display(),
                    "no admin socket: its directory does not exist (set admin.socket to enable `ferroturn sessions`, `reload` and `drain`)"
                );
                return Ok(None);
            }
            return Err(err(
                path,
                format!("directory {} does not exist", dir.display()),
            ));
        }
        _ => {}
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(err(path, "exists and is not a socket; not replacing it"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(path, "another ferroturn is serving this admin socket"));
        }
        std::fs::remove_file(path).map_err(|e| err(path, e))?;
    }
    // Created with mode 0600 from the start (umask), not chmod-ed after: no
    // moment in which another user could connect. Bound here, before the shard
    // threads exist, as umask is process-wide.
    let listener = crate::net::sockets::unix_listener_owner_only(path).map_err(|e| err(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(path, e))?;
    listener.set_nonblocking(true)?;
    tracing::info!(path = %path.display(), "admin socket");
    Ok(Some(AdminSocket {
        listener: UnixListener::from_std(listener)?,
        path: path.to_owned(),
    }))
}

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// A client must send its request within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections and forwards each request to `calls`, answering with
/// what comes back. Runs until the socket is dropped.
pub async fn serve(socket: &AdminSocket, calls: mpsc::Sender<Call>) {
    loop {
        let Ok((stream, _)) = socket.listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            let mut rd = tokio::io::BufReader::new(rd.take(MAX_REQUEST as u64));
            let read = tokio::time::timeout(REQUEST_TIMEOUT, rd.read_line(&mut line)).await;
            let answer = match read {
                Ok(Ok(n)) if n > 0 => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        let (tx, rx) = oneshot::channel();
                        if calls.send((req, tx)).await.is_err() {
                            error_answer("the server is shutting down")
                        } else {
                            rx.await
                                .unwrap_or_else(|_| error_answer("the server is shutting down"))
                        }
                    }
                    Err(e) => error_answer(&format!("bad request: {e}")),
                },
                _ => error_answer("no request line received"),
            };
            let mut out = answer.to_string();
            out.push('\n');
            let _ = wr.write_all(out.as_bytes()).await;
        });
    }
}

/// `{"ok": false, "error": ...}`
pub fn error_answer(message: &str) -> serde_json::Value {
    serde_json::json!({ "ok": false, "error": message })
}

/// Sends one request to the server at `path` and returns its answer. Errors
/// say which socket could not be reached and what to check.
pub fn call(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the admin socket {}: {e} (is `ferroturn serve` running with this admin.socket, and are you its user?)",
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("admin socket {}: {e}", path.display()))?;
    let mut answer = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| format!("admin socket {}: no answer: {e}", path.display()))?;
    serde_json::from_str(&answer)
        .map_err(|e| format!("admin socket {}: unreadable answer: {e}", path.display()))
}
