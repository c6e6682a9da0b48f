//! The accept loop of ferroturn's small HTTP listeners (metrics and health,
//! the credentials API): bounded open connections, a back-off when accept
//! fails (out of descriptors), and an end when the shutdown flag flips.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Accepts on `listener` until `shutdown` turns true (or its sender is gone),
/// running `serve` for each connection on a task of its own. With `max`
/// connections open, a new one is closed at accept: a scraper or an app
/// cannot make the server hold more than that.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    max: usize,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        if *shutdown.borrow() {
            return;
        }
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                // Out of descriptors and the like: back off.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            r = shutdown.changed() => {
                if r.is_err() { return; }
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= max {
            continue; // dropped: closed at once
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (open, conn) = (open.clone(), serve(stream));
        tokio::spawn(async move {
            conn.await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
