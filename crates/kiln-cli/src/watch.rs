//! A watch on remote training workers (`--devices ws://…`).
//!
//! A worker that goes away mid-run normally fails burn's next tensor operation, which kiln turns
//! into an error pointing at the newest checkpoint. burn 0.22's remote client can instead wait
//! forever on a reply that will not come (seen in about one of four runs when a worker was
//! killed on loopback). This thread probes each worker's address with a TCP connect (burn's
//! server is an HTTP server, to which a connection closed without a request is nothing) every
//! [`POLL`]; once a worker has refused connections for [`GRACE`] while training still runs, it
//! records the run as failed, prints the same error as the normal path and ends the process.
//! Checkpoints are written atomically, so ending the process cannot damage one.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the workers are probed.
pub const POLL: Duration = Duration::from_secs(2);
/// How long a worker may refuse connections, while training goes on, before the process ends:
/// far longer than the normal error path takes, which fails at the next step.
pub const GRACE: Duration = Duration::from_secs(20);

/// Runs until dropped.
pub struct WorkerWatch {
    done: Arc<AtomicBool>,
}

impl WorkerWatch {
    /// Starts watching the `ws://` devices among `devices`; `None` when there are none.
    pub fn start(devices: &[String], run: &Path) -> Option<Self> {
        let workers: Vec<(String, String)> = devices
            .iter()
            .filter_map(|d| {
                d.strip_prefix("ws://")
                    .map(|a| (d.clone(), a.trim_end_matches('/').to_string()))
            })
            .collect();
        if workers.is_empty() {
            return None;
        }
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let run = run.display().to_string();
        std::thread::Builder::new()
            .name("kiln-worker-watch".into())
            .spawn(move || watch(&workers, &flag, &run))
            .ok()?;
        Some(Self { done })
    }
}

impl Drop for WorkerWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Whether something accepts TCP connections at `addr` (`host:port`).
pub fn reachable(addr: &str) -> bool {
    addr.to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    })
}

fn watch(workers: &[(String, String)], done: &AtomicBool, run: &str) {
    let mut lost: Option<(&str, Instant)> = None;
    loop {
        std::thread::sleep(POLL);
        if done.load(Ordering::Relaxed) {
            return;
        }
        let down = workers.iter().find(|(_, addr)| !reachable(addr));
        lost = match (down, lost) {
            (None, _) => None,
            (Some((url, _)), None) => Some((url, Instant::now())),
            (Some(_), Some(l)) => Some(l),
        };
        if let Some((url, since)) = lost
            && since.elapsed() >= GRACE
            && !done.load(Ordering::Relaxed)
        {
            let message = format!(
                "a training device failed: the worker at {url} has refused connections for {} s and the trainer got no error back; restart the workers and continue with `kiln train --resume {run}` from the run's newest checkpoint",
                since.elapsed().as_secs()
            );
            crate::runstate::finish(1, Some(message.clone()));
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_address_is_reachable_and_a_closed_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        assert!(reachable(&addr));
        drop(listener);
        assert!(!reachable(&addr));
        assert!(!reachable("not a host name:1"));
    }

    #[test]
    fn only_remote_devices_are_watched() {
        assert!(WorkerWatch::start(&["cpu".into(), "cpu".into()], Path::new("run")).is_none());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        assert!(WorkerWatch::start(&[url], Path::new("run")).is_some());
    }
}
