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
