//! Property test of the dynamic batcher, in its own test binary: it starts batcher threads,
//! which would disturb the thread counting in `batcher.rs` if both ran in one process.

mod common;

use common::model;
use kiln_infer::batcher::{Batcher, BatcherConfig};
use std::sync::Arc;
use std::time::Duration;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Whatever the request sizes, batch limit and worker count, every request gets exactly its
    /// own rows back, in order, even when requests are split across and merged into batches.
    #[test]
    fn every_request_gets_its_own_rows_in_order(
        sizes in proptest::collection::vec(1usize..40, 1..40),
        max_batch in 1usize..48,
        workers in 1usize..4,
        seed in 0u32..1000,
    ) {
        let m = model();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let batcher = Arc::new(
                Batcher::spawn(
                    Arc::clone(&m),
                    BatcherConfig {
                        max_batch,
                        max_delay: Duration::from_millis(1),
                        queue_depth: 1024,
                        workers,
                    },
                )
                .expect("spawn"),
            );
            let mut tasks = Vec::new();
            for (i, &rows) in sizes.iter().enumerate() {
                let b = Arc::clone(&batcher);
                let x: Vec<f32> = (0..rows * 3)
                    .map(|j| (((i as u32 * 131 + j as u32 * 17 + seed) % 23) as f32) / 5.0 - 2.0)
                    .collect();
                tasks.push(tokio::spawn(async move { (x.clone(), rows, b.predict(x, rows).await) }));
            }
            for t in tasks {
                let (x, rows, got) = t.await.expect("task");
                let got = got.expect("prediction");
                let want = m.predict(&x, rows).expect("direct");
                assert_eq!(got, want);
            }
        });
    }
}
