//! The dynamic batcher: concurrent requests are merged, each gets its own rows back in order,
//! a full queue refuses, and shutdown leaves no thread behind.

mod common;

use common::model;
use kiln_infer::batcher::{BatchError, Batcher, BatcherConfig};
use std::sync::Arc;
use std::time::Duration;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_merged_and_answered_with_their_own_rows() {
    let m = model();
    let batcher = Arc::new(
        Batcher::spawn(
            Arc::clone(&m),
            BatcherConfig {
                max_batch: 32,
                max_delay: Duration::from_millis(20),
                queue_depth: 256,
                workers: 1,
            },
        )
        .expect("spawn"),
    );
    let mut tasks = Vec::new();
    for i in 0..100usize {
        let b = Arc::clone(&batcher);
        let rows = 1 + i % 3;
        let x: Vec<f32> = (0..rows * 3)
            .map(|j| ((i * 31 + j * 7) % 19) as f32 / 4.0 - 2.0)
            .collect();
        tasks.push(tokio::spawn(async move {
            (x.clone(), rows, b.predict(x, rows).await)
        }));
    }
    for t in tasks {
        let (x, rows, got) = t.await.expect("task");
        let got = got.expect("prediction");
        let want = m.predict(&x, rows).expect("direct");
        assert_eq!(
            got, want,
            "each request gets exactly its own rows, in order"
        );
    }
    let s = batcher.stats();
    assert_eq!(s.requests, 100);
    assert_eq!(s.rows, (0..100).map(|i| 1 + i % 3).sum::<u64>());
    assert!(
        s.executions < 100,
        "requests were merged: {} executions for 100 requests",
        s.executions
    );
    assert_eq!(s.failures, 0);
}

#[tokio::test]
async fn bad_requests_fail_alone_and_full_queues_refuse() {
    let batcher = Batcher::spawn(
        model(),
        BatcherConfig {
            max_batch: 8,
            max_delay: Duration::from_millis(1),
            queue_depth: 1,
            workers: 1,
        },
    )
    .expect("spawn");
    let err = batcher
        .predict(vec![1.0; 5], 2)
        .await
        .expect_err("wrong width");
    assert!(err.to_string().contains("5 values"), "{err}");
    assert!(batcher.predict(vec![0.0; 3], 1).await.is_ok());
    // Fill the single queue slot faster than the worker drains it: some request is refused.
    let futs: Vec<_> = (0..64)
        .map(|_| batcher.try_predict(vec![0.5; 3], 1))
        .collect();
    let results = futures_join_all(futs).await;
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(BatchError::QueueFull(1)))),
        "a full queue must refuse"
    );
    assert!(results.iter().any(|r| r.is_ok()));
}

/// Polls the futures concurrently on the current task.
async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}

#[test]
fn shutdown_joins_the_worker_and_reloading_does_not_grow_threads() {
    let before = threads();
    for _ in 0..3 {
        let b = Batcher::spawn(model(), BatcherConfig::default()).expect("spawn");
        assert_eq!(threads(), before + 1, "one worker thread while running");
        b.shutdown();
        assert_eq!(threads(), before, "no thread left after shutdown");
    }
}

fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Loading and dropping a model many times does not grow memory: dropping frees the engine.
#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads resident memory from /proc (Linux)"
)]
fn load_unload_cycles_do_not_grow_rss() {
    assert!(rss_kb().is_some(), "no VmRSS in /proc/self/status");
    let cycle = || {
        let m = model();
        m.warmup(&[1, 16], 3).expect("warmup");
        assert!(m.is_ready());
    };
    cycle();
    cycle();
    let after_two = rss_kb().expect("rss");
    for _ in 0..30 {
        cycle();
    }
    let after_many = rss_kb().expect("rss");
    assert!(
        after_many <= after_two + 2048,
        "RSS grew from {after_two} kB to {after_many} kB over 30 load/unload cycles"
    );
}

/// Graceful shutdown: after `close`, new requests are refused and the queued ones are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_refuses_new_requests_and_drains_queued_ones() {
    let batcher = Arc::new(
        Batcher::spawn(
            model(),
            BatcherConfig {
                max_batch: 64,
                max_delay: Duration::from_millis(100),
                queue_depth: 64,
                workers: 1,
            },
        )
        .expect("spawn"),
    );
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let b = Arc::clone(&batcher);
            tokio::spawn(async move { b.predict(vec![i as f32; 3], 1).await })
        })
        .collect();
    // The requests are queued behind the 100 ms batching window when `close` is called.
    tokio::time::sleep(Duration::from_millis(20)).await;
    batcher.close();
    assert!(matches!(
        batcher.predict(vec![0.0; 3], 1).await,
        Err(BatchError::Closed)
    ));
    for t in tasks {
        assert!(
            t.await.expect("task").is_ok(),
            "queued requests are answered after close"
        );
    }
    let s = batcher.stats();
    assert_eq!(s.requests, 10);
    assert!(s.total.p50_us >= s.queue.p50_us);
    match Arc::try_unwrap(batcher) {
        Ok(b) => b.shutdown(),
        Err(_) => panic!("no caller may hold the batcher any more"),
    }
}

/// Two engine threads share one queue: answers stay each request's own, and the timing that a
/// server exports per request is consistent with the batch it ran in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_answer_every_request_with_its_own_rows_and_timing() {
    let m = model();
    let batcher = Arc::new(
        Batcher::spawn(
            Arc::clone(&m),
            BatcherConfig {
                max_batch: 8,
                max_delay: Duration::from_millis(2),
                queue_depth: 512,
                workers: 2,
            },
        )
        .expect("spawn"),
    );
    let before = threads();
    let tasks: Vec<_> = (0..200usize)
        .map(|i| {
            let b = Arc::clone(&batcher);
            let x: Vec<f32> = (0..3)
                .map(|j| ((i * 13 + j * 5) % 11) as f32 - 5.0)
                .collect();
            tokio::spawn(async move { (x.clone(), b.predict_timed(x, 1).await) })
        })
        .collect();
    for t in tasks {
        let (x, got) = t.await.expect("task");
        let (preds, timing) = got.expect("prediction");
        assert_eq!(preds, m.predict(&x, 1).expect("direct"));
        assert!(
            timing.batch_rows >= 1 && timing.batch_rows <= 8,
            "{timing:?}"
        );
    }
    let s = batcher.stats();
    assert_eq!((s.requests, s.rows, s.failures), (200, 200, 0));
    drop(batcher);
    assert!(threads() <= before, "both worker threads were joined");
}
