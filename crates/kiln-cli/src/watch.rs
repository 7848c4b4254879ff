//! A watch on remote training workers (`--devices ws://…`).
//!
//! A worker that goes away mid-run normally fails burn's next tensor operation, which kiln turns
//! into an error pointing at the newest checkpoint. burn 0.22's remote client can instead wait
//! forever on a reply that will not come (seen in about one of four runs when a worker was
//! killed on loopback). This thread probes each worker's address with a TCP connect (burn's
//! server is an HTTP server, to which a connection closed without a request is nothing) every
//! [`POLL`]; once a worker has refused connections for [`GRACE`] while training still runs, it
//! records the run as failed, prints the same error as the normal path and ends the process.
//! It also ends a run that makes no progress at all (no training event) for [`stall_limit`]
//! while every worker is up: a resumed run was seen (2 runs in 16 on loopback) to wait
//! forever inside burn's remote client with both workers healthy. Either way the user gets an
//! error that says to restart the workers and resume. Checkpoints are written atomically, so
//! ending the process cannot damage one.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the workers are probed.
pub const POLL: Duration = Duration::from_secs(2);
/// How long a worker may refuse connections, while training goes on, before the process ends:
/// far longer than the normal error path takes, which fails at the next step.
pub const GRACE: Duration = Duration::from_secs(20);

/// The default of [`stall_limit`]: generous, since one step of a large model on remote
/// machines can take minutes.
pub const STALL_DEFAULT: Duration = Duration::from_secs(600);

/// How long a run on remote workers may go without a training event before it is ended:
/// `KILN_WORKER_STALL_SECS`, else [`STALL_DEFAULT`].
pub fn stall_limit() -> Duration {
    let value = std::env::var("KILN_WORKER_STALL_SECS").ok();
    let limit = parse_stall(value.as_deref());
    if let Some(v) = value.filter(|_| limit == STALL_DEFAULT)
        && v.trim().parse::<u64>().ok() != Some(STALL_DEFAULT.as_secs())
    {
        tracing::warn!(target: "kiln", "KILN_WORKER_STALL_SECS={v:?} is not a positive number of seconds; using {} s", STALL_DEFAULT.as_secs());
    }
    limit
}

fn parse_stall(value: Option<&str>) -> Duration {
    value
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(STALL_DEFAULT, Duration::from_secs)
}

/// Milliseconds since [`EPOCH`] at the last training event.
static LAST_BEAT_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Records that training made progress (called for every event the trainer emits).
pub fn beat() {
    LAST_BEAT_MS.store(now_ms(), Ordering::Relaxed);
}

fn since_beat() -> Duration {
    Duration::from_millis(now_ms().saturating_sub(LAST_BEAT_MS.load(Ordering::Relaxed)))
}

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
        let stall = stall_limit();
        beat();
        std::thread::Builder::new()
            .name("kiln-worker-watch".into())
            .spawn(move || watch(&workers, &flag, &run, stall))
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

fn fail(message: String) -> ! {
    crate::runstate::finish(1, Some(message.clone()));
    eprintln!("error: {message}");
    std::process::exit(1);
}

fn watch(workers: &[(String, String)], done: &AtomicBool, run: &str, stall: Duration) {
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
            fail(format!(
                "a training device failed: the worker at {url} has refused connections for {} s and the trainer got no error back; restart the workers and continue with `kiln train --resume {run}` from the run's newest checkpoint",
                since.elapsed().as_secs()
            ));
        }
        if lost.is_none() && since_beat() >= stall && !done.load(Ordering::Relaxed) {
            fail(format!(
                "a training device failed: no training step finished for {} s although every worker accepts connections (burn's remote client is waiting on a reply that does not come); restart the workers and continue with `kiln train --resume {run}` from the run's newest checkpoint (KILN_WORKER_STALL_SECS sets this limit)",
                since_beat().as_secs()
            ));
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
    fn beats_reset_the_stall_clock() {
        beat();
        assert!(since_beat() < Duration::from_secs(5));
        assert_eq!(parse_stall(Some(" 30 ")), Duration::from_secs(30));
        for bad in [None, Some("0"), Some("soon"), Some("-5")] {
            assert_eq!(parse_stall(bad), STALL_DEFAULT, "{bad:?}");
        }
    }

    #[test]
    fn only_remote_devices_are_watched() {
        assert!(WorkerWatch::start(&["cpu".into(), "cpu".into()], Path::new("run")).is_none());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        assert!(WorkerWatch::start(&[url], Path::new("run")).is_some());
    }
}
