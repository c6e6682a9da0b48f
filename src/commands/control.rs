//! `ferroturn sessions`, `ferroturn reload` and `ferroturn drain`: clients of a
//! running server's admin socket (see [`crate::ops::admin_socket`]).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::cli::{AdminArgs, DrainArgs, SessionsCommand};
use crate::config::{Config, DEFAULT_ADMIN_SOCKET};
use crate::ops::admin_socket::{self, Request};

/// How long a command waits for the server's answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `--socket`, else `admin.socket` of `--config`, else the default path.
fn socket_path(args: &AdminArgs) -> Result<PathBuf, String> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    if let Some(c) = &args.config {
        let config = Config::load(c).map_err(|e| e.to_string())?;
        return config.admin.socket.ok_or_else(|| {
            format!(
                "{}: admin.socket is \"\" (no admin socket); set it and restart the server",
                c.display()
            )
        });
    }
    Ok(PathBuf::from(DEFAULT_ADMIN_SOCKET))
}

/// Sends `request`; an `"ok": false` answer becomes an error with its message.
fn call(args: &AdminArgs, request: &Request) -> Result<Value, String> {
    let path = socket_path(args)?;
    let answer = admin_socket::call(&path, request, TIMEOUT)?;
    if answer["ok"] == Value::Bool(true) {
        Ok(answer)
    } else {
        Err(answer["error"]
            .as_str()
            .unwrap_or("the server refused the request")
            .to_owned())
    }
}

fn out(text: &str) -> Result<(), String> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .map_err(|e| format!("stdout: {e}"))
}

pub fn sessions(command: &SessionsCommand) -> Result<(), String> {
    match command {
        SessionsCommand::List { admin, json } => {
            let answer = call(admin, &Request::Sessions)?;
            let list = answer["sessions"].as_array().cloned().unwrap_or_default();
            if *json {
                let mut text = String::new();
                for s in &list {
                    text.push_str(&s.to_string());
                    text.push('\n');
                }
                return out(&text);
            }
            out(&table(&list))
        }
        SessionsCommand::Kill { admin, user, id } => {
            let answer = call(
                admin,
                &Request::Kill {
                    user: user.clone(),
                    id: *id,
                },
            )?;
            let n = answer["killed"].as_u64().unwrap_or(0);
            if n == 0 {
                return Err(match (user, id) {
                    (Some(u), _) => format!("no allocation of user {u:?}"),
                    (_, Some(i)) => format!("no allocation with ID {i}"),
                    _ => "no allocation matched".into(),
                });
            }
            out(&format!("killed {n} allocation(s)\n"))
        }
    }
}

/// The BUDGET cell: the user's bytes this period of the limit, `EXHAUSTED`
/// when used up, or `-` without byte budgets.
fn budget(s: &Value) -> String {
    match (s["budget_used"].as_u64(), s["budget_limit"].as_u64()) {
        (Some(used), Some(limit)) if used >= limit => format!("{used}B/{limit}B EXHAUSTED"),
        (Some(used), Some(limit)) => format!("{used}B/{limit}B"),
        _ => "-".into(),
    }
}

/// A readable table of sessions.
fn table(list: &[Value]) -> String {
    let now = u64::try_from(crate::time::unix_now()).unwrap_or(0);
    let mut rows = vec![[
        "ID".to_owned(),
        "USER".into(),
        "TRANSPORT".into(),
        "CLIENT".into(),
        "RELAYED".into(),
        "AGE".into(),
        "EXPIRES".into(),
        "PERMS".into(),
        "CHANNELS".into(),
        "TO-PEER".into(),
        "TO-CLIENT".into(),
        "BUDGET".into(),
    ]];
    for s in list {
        let relays: Vec<String> = s["relays"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let num = |k: &str| s[k].as_u64().unwrap_or(0);
        let text = |k: &str| s[k].as_str().unwrap_or("").to_owned();
        rows.push([
            num("id").to_string(),
            text("user"),
            text("transport"),
            text("client"),
            relays.join(","),
            format!("{}s", now.saturating_sub(num("start_unix"))),
            format!("{}s", num("expires_in")),
            num("permissions").to_string(),
            num("channels").to_string(),
            format!("{}B/{}p", num("to_peer_bytes"), num("to_peer_packets")),
            format!("{}B/{}p", num("to_client_bytes"), num("to_client_packets")),
            budget(s),
        ]);
    }
    let mut widths = [0usize; 12];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text.push_str(&format!("{} allocation(s)\n", list.len()));
    text
}

pub fn reload(args: &AdminArgs) -> Result<(), String> {
    let answer = call(args, &Request::Reload)?;
    let restart: Vec<&str> = answer["needs_restart"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if restart.is_empty() {
        out("configuration reloaded\n")
    } else {
        out(&format!(
            "configuration reloaded; changed but only applied after a restart: {}\n",
            restart.join(", ")
        ))
    }
}

pub fn drain(args: &DrainArgs) -> Result<(), String> {
    if args.cancel {
        let answer = call(&args.admin, &Request::Resume)?;
        return out(&format!(
            "drain cancelled: new allocations are accepted again ({} held)\n",
            answer["allocations"].as_u64().unwrap_or(0)
        ));
    }
    let answer = call(
        &args.admin,
        &Request::Drain {
            deadline_secs: args.deadline.map(|d| d.as_secs().max(1)),
        },
    )?;
    out(&format!(
        "draining: {} allocation(s) left; the server exits when none is left or in {}s\n",
        answer["allocations"].as_u64().unwrap_or(0),
        answer["deadline_secs"].as_u64().unwrap_or(0),
    ))
}
