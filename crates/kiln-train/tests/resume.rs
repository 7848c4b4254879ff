//! Resuming from any checkpoint reproduces the uninterrupted run exactly, for every optimizer:
//! the optimizer state (moments, momentum buffers, step counts), the schedule position, the
//! data order and the dropout masks all come back.

use kiln_core::NullSink;
use kiln_train::{BurnTrainer, OptimizerKind, Schedule, TrainConfig};

fn weights(dir: &std::path::Path) -> Vec<u8> {
    std::fs::read(dir.join("model/weights.safetensors")).expect("weights")
}

#[test]
fn resuming_from_an_earlier_checkpoint_reproduces_the_run_for_every_optimizer() {
    let data = kiln_data::synthetic::blobs(400, 5, 3, 1.5, 3);
    let parts = kiln_data::split(&data, 0.8, 0.2, 3);
    for optimizer in [
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
        OptimizerKind::Sgd,
    ] {
        let cfg = TrainConfig {
            epochs: 6,
            batch_size: 16,
            dropout: 0.1,
            lr: 0.01,
            weight_decay: 1e-3,
            optimizer,
            schedule: Schedule::Cosine { min_lr: 0.0 },
            keep_checkpoints: 10,
            ..TrainConfig::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let run = |resume: bool| {
            BurnTrainer::new(cfg.clone())
                .with_checkpoints(dir.path().join("checkpoints"))
                .resuming(resume)
                .run(
                    &parts.train,
                    Some(&parts.val),
                    &dir.path().join("model"),
                    &mut NullSink,
                )
                .expect("train")
        };
        let full = run(false);
        let want = weights(dir.path());
        // Forget everything after epoch 3, as if the process had died during epoch 4.
        for epoch in 4..=6 {
            std::fs::remove_dir_all(kiln_train::checkpoint::epoch_dir(
                &dir.path().join("checkpoints"),
                epoch,
            ))
            .expect("remove");
        }
        let resumed = run(true);
        assert_eq!(weights(dir.path()), want, "{optimizer:?}: weights differ");
        assert_eq!(resumed.best_epoch, full.best_epoch, "{optimizer:?}");
        assert_eq!(resumed.lr_trace, full.lr_trace, "{optimizer:?}");
        let losses = |o: &kiln_train::TrainOutcome| {
            o.history.iter().map(|h| h.train_loss).collect::<Vec<_>>()
        };
        assert_eq!(losses(&resumed), losses(&full), "{optimizer:?}");
    }
}

#[test]
fn a_changed_config_cannot_resume_another_runs_checkpoints() {
    let data = kiln_data::synthetic::blobs(200, 4, 2, 1.0, 4);
    let cfg = TrainConfig {
        epochs: 2,
        ..TrainConfig::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = dir.path().join("checkpoints");
    BurnTrainer::new(cfg.clone())
        .with_checkpoints(&ck)
        .run(&data, None, &dir.path().join("model"), &mut NullSink)
        .expect("train");
    let other = TrainConfig { lr: 0.5, ..cfg };
    let err = BurnTrainer::new(other)
        .with_checkpoints(&ck)
        .resuming(true)
        .run(&data, None, &dir.path().join("model"), &mut NullSink)
        .expect_err("different config");
    assert!(
        err.to_string().contains("different training config"),
        "{err}"
    );
}

#[test]
fn macro_f1_matches_a_hand_count() {
    // Class 0: tp 2, fp 1, fn 0 -> 0.8; class 1: tp 1, fp 0, fn 1 -> 2/3; class 2: tp 0 -> 0.
    let pairs = [(0, 0), (0, 0), (0, 1), (1, 1), (2, 2 + 1)];
    let f1 = kiln_train::macro_f1(&pairs).expect("f1");
    // Class 3 only as a truth label: f1 0; classes {0,1,2,3}.
    let want = (0.8 + 2.0 / 3.0 + 0.0 + 0.0) / 4.0;
    assert!((f1 - want).abs() < 1e-12, "{f1} vs {want}");
    assert_eq!(kiln_train::macro_f1(&[]), None);
    assert_eq!(kiln_train::macro_f1(&[(1, 1), (0, 0)]), Some(1.0));
}

#[test]
fn validation_f1_every_epoch_and_a_test_evaluation() {
    let data = kiln_data::synthetic::blobs(600, 4, 3, 0.8, 9);
    let parts = kiln_data::split(&data, 0.7, 0.15, 9);
    let cfg = TrainConfig {
        epochs: 4,
        ..TrainConfig::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let o = BurnTrainer::new(cfg)
        .with_test_data(parts.test.clone())
        .run(
            &parts.train,
            Some(&parts.val),
            &dir.path().join("model"),
            &mut NullSink,
        )
        .expect("train");
    assert!(
        o.history
            .iter()
            .all(|h| h.val_macro_f1.is_some_and(|f| (0.0..=1.0).contains(&f)))
    );
    let t = o.test.expect("test metrics");
    assert_eq!(t.rows, parts.test.rows());
    assert!(t.accuracy.expect("accuracy") > 0.9, "{t:?}");
    assert!(t.macro_f1.expect("f1") > 0.9, "{t:?}");
}
