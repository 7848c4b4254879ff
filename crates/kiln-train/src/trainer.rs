use crate::net::{NamedTensor, Net};
use crate::{BURN_VERSION, TrainConfig, TrainError};
use burn::module::Module;
use burn::nn::loss::{CrossEntropyLossConfig, MseLoss, Reduction};
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_core::{
    Dataset, Event, EventSink, ModelMetadata, ModelSpec, Normalization, Reference, Targets, Task,
    TrainedModel, Trainer,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The seed of epoch `epoch`'s data order (and, salted, its dropout masks): a pure function of
/// the run's seed and the epoch, so that a resumed run draws exactly what the original would.
fn epoch_seed(seed: u64, epoch: usize, salt: u64) -> u64 {
    // SplitMix64 finaliser over (seed, epoch, salt).
    let mut z = seed
        .wrapping_add((epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(salt);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const ORDER_SALT: u64 = 0x006f_7264_6572;
const DROPOUT_SALT: u64 = 0x6472_6f70;

/// Metrics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (classification).
    pub train_accuracy: Option<f64>,
    /// Validation loss.
    pub val_loss: Option<f64>,
    /// Validation accuracy.
    pub val_accuracy: Option<f64>,
    /// Validation macro-averaged F1 (classification): the mean over classes of each class's F1.
    #[serde(default)]
    pub val_macro_f1: Option<f64>,
    /// Learning rate.
    pub lr: f64,
    /// Wall time of the epoch.
    pub seconds: f64,
}

/// What a training run produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The written artifact.
    pub model: TrainedModel,
    /// Per-epoch metrics.
    pub history: Vec<EpochMetrics>,
    /// The epoch whose weights were kept (lowest validation loss, or the last without
    /// validation data).
    pub best_epoch: usize,
    /// Total wall time.
    pub seconds: f64,
    /// Training rows processed per second.
    pub samples_per_second: f64,
    /// The learning rate of every optimizer step.
    pub lr_trace: Vec<f64>,
    /// The epoch after which early stopping ended the run.
    pub stopped_early: Option<usize>,
    /// The kept model on the held-out test set, when one was given.
    pub test: Option<EvalMetrics>,
    /// Per-class precision/recall/F1 and the confusion matrix of the kept model (in f32, as
    /// exported) on the test set when one was given, else on the validation set; classifiers
    /// only. [`TrainOutcome::evaluation_set`] names the set.
    pub evaluation: Option<kiln_core::metrics::ClassificationReport>,
    /// `"test"` or `"validation"`: the rows [`TrainOutcome::evaluation`] was measured on.
    pub evaluation_set: Option<&'static str>,
    /// The execution strategy that ran (single device, or multi-device with its replicas).
    pub strategy: String,
    /// One record per optimizer step, when `log_steps` is set.
    pub steps: Vec<StepMetrics>,
}

/// Metrics of one optimizer step (recorded with `log_steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// 1-based optimizer step over the whole run.
    pub step: usize,
    /// Mean training loss over the step's rows.
    pub loss: f64,
    /// Learning rate of the step.
    pub lr: f64,
}

/// Trains declarative models with burn on the flex CPU backend.
#[derive(Debug, Clone, Default)]
pub struct BurnTrainer {
    config: TrainConfig,
    checkpoints: Option<PathBuf>,
    resume: bool,
    test: Option<Dataset>,
}

impl Trainer for BurnTrainer {
    type Error = TrainError;

    fn train(
        &self,
        train: &Dataset,
        val: Option<&Dataset>,
        out_dir: &Path,
        events: &mut dyn EventSink,
    ) -> Result<TrainedModel, TrainError> {
        self.run(train, val, out_dir, events).map(|o| o.model)
    }
}

/// Targets in training form: class indices, or standardised regression values.
enum Labels {
    Classes(Vec<i64>),
    Values(Vec<f32>),
}

/// A batch's targets as tensors.
enum Y {
    Classes(Tensor<1, Int>),
    Values(Tensor<2>),
}

struct Batches {
    x: Vec<f32>,
    y: Labels,
    f: usize,
}

impl Batches {
    fn new(
        data: &Dataset,
        norm: Option<&Normalization>,
        target_norm: Option<&Normalization>,
    ) -> Result<Self, TrainError> {
        let mut x = data.features.clone();
        if let Some(n) = norm {
            n.apply(&mut x);
        }
        let y = match &data.targets {
            Some(Targets::Classes { indices, .. }) => {
                Labels::Classes(indices.iter().map(|&i| i as i64).collect())
            }
            Some(Targets::Values(v)) => {
                let mut v = v.clone();
                if let Some(t) = target_norm {
                    t.apply(&mut v);
                }
                Labels::Values(v)
            }
            None => return Err(TrainError::Data("the data has no target column".into())),
        };
        Ok(Self {
            x,
            y,
            f: data.n_features(),
        })
    }

    fn len(&self) -> usize {
        match &self.y {
            Labels::Classes(v) => v.len(),
            Labels::Values(v) => v.len(),
        }
    }

    /// The rows `idx` as tensors; features in `dtype`, or the device's default float type.
    fn gather(
        &self,
        idx: &[usize],
        device: &Device,
        dtype: Option<burn::tensor::DType>,
    ) -> (Tensor<2>, Y) {
        let mut xb = Vec::with_capacity(idx.len() * self.f);
        for &i in idx {
            xb.extend_from_slice(&self.x[i * self.f..(i + 1) * self.f]);
        }
        let mut opts = burn::tensor::TensorCreationOptions::new(device.clone());
        if let Some(d) = dtype {
            opts = opts.with_dtype(d);
        }
        let x = Tensor::from_data(TensorData::new(xb, [idx.len(), self.f]), opts);
        let y = match &self.y {
            Labels::Classes(v) => Y::Classes(Tensor::from_data(
                TensorData::new(idx.iter().map(|&i| v[i]).collect::<Vec<_>>(), [idx.len()]),
                device,
            )),
            Labels::Values(v) => Y::Values(Tensor::from_data(
                TensorData::new(
                    idx.iter().map(|&i| v[i]).collect::<Vec<_>>(),
                    [idx.len(), 1],
                ),
                device,
            )),
        };
        (x, y)
    }
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

/// The batch loss (cross-entropy for classes, MSE for values) and, for classes, the number of
/// correct predictions.
fn loss_and_hits(
    logits: Tensor<2>,
    y: Y,
    ce: &burn::nn::loss::CrossEntropyLoss,
) -> (Tensor<1>, Option<i64>) {
    match y {
        Y::Classes(y) => {
            let pred = logits.clone().argmax(1).flatten::<1>(0, 1);
            let hits = pred.equal(y.clone()).int().sum().into_scalar::<i64>();
            (ce.forward(logits, y), Some(hits))
        }
        Y::Values(y) => (MseLoss::new().forward(logits, y, Reduction::Mean), None),
    }
}

/// Loss, accuracy and macro-F1 of a model on a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Rows evaluated.
    pub rows: usize,
    /// Mean loss (cross-entropy, or MSE on the standardised target).
    pub loss: f64,
    /// Accuracy (classification).
    pub accuracy: Option<f64>,
    /// Macro-averaged F1 over the classes that occur in the labels or the predictions
    /// (classification).
    pub macro_f1: Option<f64>,
}

/// Macro-F1 from (predicted, true) class pairs.
pub fn macro_f1(pairs: &[(i64, i64)]) -> Option<f64> {
    (!pairs.is_empty())
        .then(|| kiln_core::metrics::ClassificationReport::from_indices(pairs, None).macro_f1)
}

/// Mean loss, accuracy and macro-F1 (classification) of `net` on `data`, in batches, without
/// gradients.
fn evaluate(
    net: &Net,
    data: &Batches,
    batch_size: usize,
    device: &Device,
    dtype: Option<burn::tensor::DType>,
) -> EvalMetrics {
    evaluate_with_pairs(net, data, batch_size, device, dtype).0
}

/// [`evaluate`], also returning the (predicted, true) class pairs of a classifier.
fn evaluate_with_pairs(
    net: &Net,
    data: &Batches,
    batch_size: usize,
    device: &Device,
    dtype: Option<burn::tensor::DType>,
) -> (EvalMetrics, Vec<(i64, i64)>) {
    let n = data.len();
    let ce = CrossEntropyLossConfig::new().init(device);
    let (mut loss_sum, mut hits) = (0f64, None::<i64>);
    let mut pairs = Vec::new();
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(batch_size.max(256)) {
        let (x, y) = data.gather(chunk, device, dtype);
        let logits = net.forward(x);
        if let (Y::Classes(_), Labels::Classes(truth)) = (&y, &data.y) {
            let pred = logits.clone().argmax(1).flatten::<1>(0, 1).to_data();
            if let Ok(pred) = pred.convert::<i64>().try_into_vec::<i64>() {
                pairs.extend(pred.into_iter().zip(chunk.iter().map(|&i| truth[i])));
            }
        }
        let (loss, h) = loss_and_hits(logits, y, &ce);
        if let Some(h) = h {
            hits = Some(hits.unwrap_or(0) + h);
        }
        loss_sum += scalar(loss) * chunk.len() as f64;
    }
    let metrics = EvalMetrics {
        rows: n,
        loss: loss_sum / n.max(1) as f64,
        accuracy: hits.map(|h| h as f64 / n.max(1) as f64),
        macro_f1: macro_f1(&pairs),
    };
    (metrics, pairs)
}

impl BurnTrainer {
    /// A trainer for this configuration.
    pub fn new(config: TrainConfig) -> Self {
        Self {
            config,
            checkpoints: None,
            resume: false,
            test: None,
        }
    }

    /// Evaluates the kept model on this held-out set once training ends
    /// ([`TrainOutcome::test`]). It plays no part in choosing the best epoch.
    pub fn with_test_data(mut self, test: Dataset) -> Self {
        self.test = Some(test);
        self
    }

    /// Writes checkpoints under `dir` (every `checkpoint_every` epochs, keeping
    /// `keep_checkpoints`, plus `dir/best`).
    pub fn with_checkpoints(mut self, dir: impl Into<PathBuf>) -> Self {
        self.checkpoints = Some(dir.into());
        self
    }

    /// Continues from the newest good checkpoint under the checkpoint directory instead of
    /// starting afresh. The result equals that of an uninterrupted run with the same config.
    pub fn resuming(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Trains and writes the artifact into `out_dir`, returning it with the epoch history.
    pub fn run(
        &self,
        train: &Dataset,
        val: Option<&Dataset>,
        out_dir: &Path,
        events: &mut dyn EventSink,
    ) -> Result<TrainOutcome, TrainError> {
        let cfg = &self.config;
        cfg.validate()?;
        let start = Instant::now();
        events.emit(Event::StageStarted {
            stage: "train".into(),
        });
        let classes: Vec<String> = match cfg.task {
            Task::Classification => {
                let classes = train
                    .class_names()
                    .ok_or_else(|| TrainError::Data("the training data has no class labels; kiln trains classifiers from a target column (use --task regression for numeric targets)".into()))?
                    .to_vec();
                if classes.len() < 2 {
                    return Err(TrainError::Data(format!(
                        "the target column has {} distinct value(s); a classifier needs at least 2",
                        classes.len()
                    )));
                }
                classes
            }
            Task::Regression => {
                if !matches!(train.targets, Some(Targets::Values(_))) {
                    return Err(TrainError::Data(
                        "regression needs numeric targets; load the data as a regression data set"
                            .into(),
                    ));
                }
                Vec::new()
            }
        };
        if train.rows() == 0 {
            return Err(TrainError::Data("the training data has no rows".into()));
        }
        // Class indices are positions in a set's own class list: a validation set that lacks
        // one of the training classes numbers the others differently, so it is remapped onto
        // the training classes (or refused when it has a class training never saw).
        let val_aligned = val
            .map(|v| align_classes("validation", &classes, v))
            .transpose()?;
        let val = val_aligned.as_deref();
        if let Some(v) = val
            && v.n_features() != train.n_features()
        {
            return Err(TrainError::Data(format!(
                "validation data has {} features, training data has {}",
                v.n_features(),
                train.n_features()
            )));
        }
        let mut spec = match cfg.arch {
            crate::Arch::Mlp => ModelSpec::mlp(
                train.n_features(),
                &cfg.hidden,
                classes.len().max(1),
                cfg.dropout,
            ),
            crate::Arch::Cnn => {
                let cells: usize = cfg.input_shape.iter().product();
                if cells != train.n_features() {
                    return Err(TrainError::Data(format!(
                        "input shape {:?} holds {cells} values but the data has {} features per row; give --input-shape whose product is the feature count (e.g. 1,8,8 for 64)",
                        cfg.input_shape,
                        train.n_features()
                    )));
                }
                ModelSpec::cnn(
                    &cfg.input_shape,
                    &cfg.channels,
                    &cfg.hidden,
                    classes.len().max(1),
                    cfg.dropout,
                )
                .map_err(|e| TrainError::Config(e.to_string()))?
            }
        };
        spec.task = cfg.task;
        let mut spec = spec.with_activation(cfg.activation);
        spec.task = cfg.task;
        let norm = cfg.standardize.then(|| kiln_data::fit_normalization(train));
        // Regression targets are standardised too, so the loss is well scaled whatever the units;
        // the export adds the inverse transform to the graph.
        let target_norm = match &train.targets {
            Some(Targets::Values(v)) => Some(fit_target_normalization(v)),
            _ => None,
        };
        let train_b = Batches::new(train, norm.as_ref(), target_norm.as_ref())?;
        let val_b = val
            .filter(|v| v.rows() > 0)
            .map(|v| Batches::new(v, norm.as_ref(), target_norm.as_ref()))
            .transpose()?;

        let mut device = Device::flex().autodiff();
        set_precision(&mut device, "cpu", cfg.precision)?;
        let mut replicas = parse_devices(&cfg.devices)?;
        // GPU devices train in the same precision (remote workers keep their own settings).
        let is_gpu =
            |name: &str| name.trim().starts_with("cuda") || name.trim().starts_with("wgpu");
        for (replica, name) in replicas.iter_mut().zip(&cfg.devices) {
            if is_gpu(name) {
                set_precision(replica, name.trim(), cfg.precision)?;
            }
        }
        let gpus: Vec<Device> = replicas
            .iter()
            .zip(&cfg.devices)
            .filter(|(_, name)| is_gpu(name))
            .map(|(d, _)| d.clone())
            .collect();
        // Devices other than the local CPU always take the replica path, even alone: the model
        // lives there, and validation and checkpoints read a copy brought back to the CPU.
        let off_cpu = cfg
            .devices
            .iter()
            .any(|d| !matches!(d.trim(), "cpu" | "flex"));
        let use_replicas = replicas.len() > 1 || off_cpu;
        let remote = cfg.devices.iter().any(|d| d.trim().starts_with("ws://"));
        // burn's DDP where burn has an all-reduce: two or more different CUDA devices
        // (`validate` refuses `--strategy ddp` anywhere else).
        let ddp = cfg!(feature = "cuda") && cfg.uses_ddp();
        #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_mut))]
        let mut strategy = if ddp {
            format!(
                "ddp: {} replicas ({}), one optimizer each, gradients all-reduced (summed) across the devices (burn DistributedContext, NCCL)",
                replicas.len(),
                cfg.devices.join(",")
            )
        } else if replicas.len() > 1 {
            format!(
                "multi-device: {} replicas ({}), gradients summed on the first (burn step_multi)",
                replicas.len(),
                cfg.devices.join(",")
            )
        } else {
            format!("single-device ({})", cfg.devices.join(","))
        };
        // The adapters the GPU devices really opened, as burn names them.
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        for (replica, name) in replicas.iter().zip(&cfg.devices) {
            if let Some(id) = replica.identity().filter(|_| is_gpu(name)) {
                strategy.push_str(&format!("; {} = {}", name.trim(), id.name));
            }
        }
        device.seed(cfg.seed);
        let mut net = Net::init(&spec, &device);
        // burn initialises parameters lazily, on first use; draw them now, from the run's seed,
        // so that they are the same whichever devices train (and whenever first used).
        net.named_weights().map_err(TrainError::Burn)?;
        let l2 = (cfg.weight_decay > 0.0)
            .then(|| burn::optim::decay::WeightDecayConfig::new(cfg.weight_decay as f32));
        let mut optim = match cfg.optimizer {
            crate::OptimizerKind::Adam => AdamConfig::new().with_weight_decay(l2).init(),
            crate::OptimizerKind::Adamw => burn::optim::AdamWConfig::new()
                .with_weight_decay(cfg.weight_decay as f32)
                .init(),
            crate::OptimizerKind::Sgd => {
                // Dampening 0, as in PyTorch's SGD (burn's default is 0.1).
                let momentum = (cfg.momentum > 0.0).then(|| {
                    burn::optim::momentum::MomentumConfig::new()
                        .with_momentum(cfg.momentum)
                        .with_dampening(0.0)
                });
                burn::optim::SgdConfig::new()
                    .with_weight_decay(l2)
                    .with_momentum(momentum)
                    .init()
            }
        };
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        let mut order: Vec<usize>;
        let mut history = Vec::with_capacity(cfg.epochs);
        let mut steps: Vec<StepMetrics> = Vec::new();
        let mut best: Option<(f64, usize, Vec<NamedTensor>)> = None;
        let config_sha256 = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(
                serde_json::to_vec(cfg).unwrap_or_default(),
            ))
        };
        // One optimizer step per group of `grad_accum` micro-batches.
        let group_rows = cfg.batch_size * cfg.grad_accum.max(1);
        let steps_per_epoch = train.rows().div_ceil(group_rows) as u64;

        let total_steps = steps_per_epoch as usize * cfg.epochs;
        let (mut global_step, mut lr_trace, mut last_lr) =
            (0usize, Vec::with_capacity(total_steps), cfg.lr);
        // Early stopping state: the best value of the watched metric and epochs since.
        let (mut watched_best, mut since_best) = (None::<f64>, 0usize);
        let mut stopped_early = None;
        let mut start_epoch = 1;
        let ckpt_root = self.checkpoints.clone();
        if self.resume {
            let root = ckpt_root.as_ref().ok_or_else(|| {
                TrainError::Config("resuming needs the run's checkpoint directory".into())
            })?;
            let (ck, skipped) = crate::checkpoint::latest_good(root)?;
            for s in skipped {
                events.emit(Event::Message {
                    level: kiln_core::Level::Warn,
                    text: format!("skipping a damaged checkpoint: {s}"),
                });
            }
            if ck.state.config_sha256 != config_sha256 {
                return Err(TrainError::Checkpoint(format!(
                    "{} was written by a run with a different training config; resume with that run's own config.toml (kiln train --resume <run dir> reads it)",
                    ck.dir.display()
                )));
            }
            let ids: std::collections::HashMap<String, u64> = ck
                .weights
                .iter()
                .map(|(t, id)| (t.name.clone(), *id))
                .collect();
            let tensors: Vec<NamedTensor> = ck.weights.iter().map(|(t, _)| t.clone()).collect();
            net = Net::init(&spec, &device).with_weights_and_ids(&tensors, &ids, &device);
            optim = optim
                .from_bytes(burn::tensor::Bytes::from_bytes_vec(ck.optimizer.clone()))
                .map_err(|e| {
                    TrainError::Checkpoint(format!(
                        "{} cannot be read by burn: {e:?}",
                        ck.dir.join("optimizer.bpk").display()
                    ))
                })?;
            history = ck.state.history;
            steps = ck.state.steps;
            lr_trace = ck.state.lr_trace;
            global_step = ck.state.global_step;
            last_lr = lr_trace.last().copied().unwrap_or(cfg.lr);
            best = Some((ck.state.best_score, ck.state.best_epoch, ck.best));
            watched_best = ck.state.watched_best;
            since_best = ck.state.since_best;
            stopped_early = ck.state.stopped_early;
            start_epoch = ck.state.epoch + 1;
            events.emit(Event::Message {
                level: kiln_core::Level::Info,
                text: format!(
                    "resuming from {} (epoch {} of {} done)",
                    ck.dir.display(),
                    ck.state.epoch,
                    cfg.epochs
                ),
            });
        }
        let resumed_epochs = start_epoch - 1;
        // With replicas, the model lives on the first of them (the gradients are gathered
        // there); validation and checkpoints read a copy brought back to the local CPU.
        if use_replicas {
            // burn initialises parameters lazily: read them here so that they take this run's
            // seeded values on the local device instead of being drawn on the remote one.
            // Rebuilding the network there keeps its parameters tracked for autodiff.
            let (tensors, ids): (Vec<NamedTensor>, Vec<u64>) = net
                .named_weights_with_ids()
                .map_err(TrainError::Burn)?
                .into_iter()
                .unzip();
            let ids: std::collections::HashMap<String, u64> = tensors
                .iter()
                .map(|t| t.name.clone())
                .zip(ids)
                .filter(|(_, id)| *id != 0)
                .collect();
            net = Net::init(&spec, &replicas[0]).with_weights_and_ids(&tensors, &ids, &replicas[0]);
        }
        #[cfg(feature = "cuda")]
        let mut ddp_state = ddp.then(|| ddp::Ddp::start(&net, &optim, &replicas));
        let last_epoch = if stopped_early.is_some() {
            0
        } else {
            cfg.epochs
        };
        for epoch in start_epoch..=last_epoch {
            let t0 = Instant::now();
            // The data order and the dropout masks depend only on (seed, epoch).
            let mut rng =
                rand::rngs::StdRng::seed_from_u64(epoch_seed(cfg.seed, epoch, ORDER_SALT));
            order = (0..train.rows()).collect();
            order.shuffle(&mut rng);
            device.seed(epoch_seed(cfg.seed, epoch, DROPOUT_SALT));
            // Dropout masks drawn on a GPU come from that device's generator.
            for gpu in &gpus {
                gpu.seed(epoch_seed(cfg.seed, epoch, DROPOUT_SALT));
            }
            let (mut loss_sum, mut hits) = (0f64, None::<i64>);
            for (step, group) in order.chunks(group_rows).enumerate() {
                let loss_before = loss_sum;
                // Gradient accumulation: burn sums the micro-batches' gradients, so each
                // micro-batch loss is divided by their number. With equal micro-batches this is
                // exactly the gradient of the mean loss over the whole group, i.e. one step of
                // batch K·B.
                let lr =
                    cfg.schedule
                        .lr(cfg.lr, global_step, total_steps, steps_per_epoch as usize);
                if use_replicas {
                    // burn's multi-device strategy: the batch is split across the devices,
                    // each replica computes the gradient of its shard's loss (weighted by the
                    // shard's share, so that the sum is the whole batch's mean gradient), and
                    // the optimizer gathers and sums them on one device (`step_multi`). DDP
                    // (`mod ddp`) splits the batch the same way.
                    let shard_rows = group.len().div_ceil(replicas.len());
                    // A remote worker that goes away fails burn's tensor operations with a
                    // panic; it becomes an error that points at the last checkpoint.
                    let mut multi_step = || {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let mut multi = burn::optim::MultiGradientsParams::default();
                            let (mut l, mut hh) = (0f64, None::<i64>);
                            for (shard, dev) in group.chunks(shard_rows).zip(&replicas) {
                                let replica = net.clone().fork(dev);
                                let (x, y) = train_b.gather(shard, dev, None);
                                let (loss, h) = loss_and_hits(replica.forward(x), y, &loss_fn);
                                if let Some(h) = h {
                                    hh = Some(hh.unwrap_or(0) + h);
                                }
                                l += scalar(loss.clone()) * shard.len() as f64;
                                let scaled =
                                    loss.mul_scalar(shard.len() as f32 / group.len() as f32);
                                multi.grads.push((
                                    GradientsParams::from_grads(scaled.backward(), &replica),
                                    dev.clone(),
                                ));
                            }
                            let stepped = optim.step_multi(lr, net.clone(), multi);
                            (stepped, l, hh)
                        }))
                    };
                    // With DDP (CUDA), each device steps its own replica instead.
                    #[cfg(feature = "cuda")]
                    let step_result = match ddp_state.as_mut() {
                        Some(d) => d
                            .step(group, lr, &train_b)
                            .map(|(l, hh)| (d.model().0.clone(), l, hh)),
                        None => multi_step(),
                    };
                    #[cfg(not(feature = "cuda"))]
                    let step_result = multi_step();
                    let (stepped, l, hh) = step_result.map_err(|p| {
                        let why = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown failure".into());
                        let restart = if remote { "restart the workers and " } else { "" };
                        TrainError::Device(format!(
                            "a training device failed during epoch {epoch} ({why}); {restart}continue with `kiln train --resume <run dir>` from the run's newest checkpoint"
                        ))
                    })?;
                    loss_sum += l;
                    if let Some(h) = hh {
                        hits = Some(hits.unwrap_or(0) + h);
                    }
                    lr_trace.push(lr);
                    last_lr = lr;
                    global_step += 1;
                    if cfg.log_steps {
                        steps.push(StepMetrics {
                            epoch,
                            step: global_step,
                            loss: (loss_sum - loss_before) / group.len() as f64,
                            lr,
                        });
                    }
                    net = stepped;
                    events.emit(Event::Progress {
                        stage: "train".into(),
                        done: (epoch as u64 - 1) * steps_per_epoch + step as u64 + 1,
                        total: Some(steps_per_epoch * cfg.epochs as u64),
                        unit: "batch".into(),
                    });
                    continue;
                }
                let micro: Vec<&[usize]> = group.chunks(cfg.batch_size).collect();
                let parts = micro.len();
                let mut acc = GradientsAccumulator::<Net>::new();
                for chunk in micro {
                    let (x, y) = train_b.gather(chunk, &device, None);
                    let (loss, h) = loss_and_hits(net.forward(x), y, &loss_fn);
                    if let Some(h) = h {
                        hits = Some(hits.unwrap_or(0) + h);
                    }
                    loss_sum += scalar(loss.clone()) * chunk.len() as f64;
                    let scaled = if parts > 1 {
                        loss.div_scalar(parts as f32)
                    } else {
                        loss
                    };
                    acc.accumulate(&net, GradientsParams::from_grads(scaled.backward(), &net));
                }
                let grads = acc.grads();
                lr_trace.push(lr);
                last_lr = lr;
                global_step += 1;
                if cfg.log_steps {
                    steps.push(StepMetrics {
                        epoch,
                        step: global_step,
                        loss: (loss_sum - loss_before) / group.len() as f64,
                        lr,
                    });
                }
                net = optim.step(lr, net, grads);
                events.emit(Event::Progress {
                    stage: "train".into(),
                    done: (epoch as u64 - 1) * steps_per_epoch + step as u64 + 1,
                    total: Some(steps_per_epoch * cfg.epochs as u64),
                    unit: "batch".into(),
                });
            }
            // With DDP, the optimizer state that checkpoints save is replica 0's.
            #[cfg(feature = "cuda")]
            if let Some(d) = &ddp_state {
                optim = d.model().1.clone();
            }
            let train_loss = loss_sum / train.rows() as f64;
            if !train_loss.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    loss: train_loss,
                });
            }
            let plain = if use_replicas {
                net.valid().to_device(&plain_device())
            } else {
                net.valid()
            };
            let (val_loss, val_acc, val_f1) = match &val_b {
                Some(v) => {
                    let e = evaluate(&plain, v, cfg.batch_size, &plain_device(), None);
                    (Some(e.loss), e.accuracy, e.macro_f1)
                }
                None => (None, None, None),
            };
            let m = EpochMetrics {
                epoch,
                train_loss,
                train_accuracy: hits.map(|h| h as f64 / train.rows() as f64),
                val_loss,
                val_accuracy: val_acc,
                val_macro_f1: val_f1,
                lr: last_lr,
                seconds: t0.elapsed().as_secs_f64(),
            };
            events.emit(Event::Epoch {
                epoch,
                epochs: cfg.epochs,
                train_loss: m.train_loss,
                train_accuracy: m.train_accuracy,
                val_loss: m.val_loss,
                val_accuracy: m.val_accuracy,
                lr: m.lr,
                seconds: m.seconds,
            });
            // Keep the weights of the best epoch: by `best_metric` when set, else by the
            // early-stopping metric, else by validation loss (the last epoch when there is no
            // validation data). Scores are minimised; a maximised metric is negated.
            let score_of = |metric: &str, maximize: bool| {
                let value = match metric {
                    "val_loss" => m.val_loss,
                    "val_accuracy" => m.val_accuracy,
                    "val_macro_f1" => m.val_macro_f1,
                    "train_accuracy" => m.train_accuracy,
                    _ => Some(m.train_loss),
                };
                value.map(|v| if maximize { -v } else { v })
            };
            let score = match (&cfg.best_metric, &cfg.early_stopping) {
                (Some(b), _) => score_of(b, crate::config::maximized(b, None)),
                (None, Some(e)) => score_of(&e.metric, e.maximize()),
                (None, None) => score_of("val_loss", false),
            };
            let watched = cfg
                .early_stopping
                .as_ref()
                .and_then(|e| score_of(&e.metric, e.maximize()));
            // Only a strictly better score replaces the best epoch: of epochs tied on a
            // discrete metric, the first is kept (as Keras and Lightning checkpoints do). Ties
            // broken by the lower validation loss instead were tried against scikit-learn
            // (docs/TRAINING.md): better on wine, worse on iris, so the convention stays.
            let better = match (score, best.as_ref()) {
                (_, None) => true,
                (Some(s), Some((b, _, _))) => s < *b,
                (None, Some(_)) => true,
            };
            if better {
                best = Some((
                    score.unwrap_or(0.0),
                    epoch,
                    plain.named_weights().map_err(TrainError::Burn)?,
                ));
            }
            history.push(m);
            let mut stop_now = false;
            if let (Some(e), Some(s)) = (&cfg.early_stopping, watched) {
                let improved = watched_best.is_none_or(|b| s < b - e.min_delta);
                if improved {
                    watched_best = Some(s);
                    since_best = 0;
                } else {
                    since_best += 1;
                    if since_best >= e.patience {
                        stopped_early = Some(epoch);
                        events.emit(Event::Message {
                            level: kiln_core::Level::Info,
                            text: format!("early stopping after epoch {epoch}: {} has not improved by more than {} for {} epochs", e.metric, e.min_delta, e.patience),
                        });
                        stop_now = true;
                    }
                }
            }
            if let Some(root) = ckpt_root.as_ref().filter(|_| cfg.checkpoint_every > 0) {
                let periodic = epoch % cfg.checkpoint_every == 0 || epoch == cfg.epochs || stop_now;
                if periodic || better {
                    let weights: Vec<(NamedTensor, u64)> = plain
                        .named_weights()
                        .map_err(TrainError::Burn)?
                        .into_iter()
                        .zip(net.param_ids())
                        .collect();
                    let optimizer = optim
                        .into_bytes()
                        .map_err(|e| {
                            TrainError::Checkpoint(format!("saving the optimizer: {e:?}"))
                        })?
                        .to_vec();
                    let (best_score, best_epoch, best_weights) = best
                        .as_ref()
                        .ok_or_else(|| TrainError::Config("no best epoch".into()))?;
                    let state = crate::checkpoint::CheckpointState {
                        format_version: crate::checkpoint::CHECKPOINT_FORMAT,
                        epoch,
                        global_step,
                        history: history.clone(),
                        steps: steps.clone(),
                        lr_trace: lr_trace.clone(),
                        best_score: *best_score,
                        best_epoch: *best_epoch,
                        watched_best,
                        since_best,
                        stopped_early,
                        config_sha256: config_sha256.clone(),
                        files: Default::default(),
                    };
                    if better {
                        crate::checkpoint::write(
                            &root.join("best"),
                            state.clone(),
                            &weights,
                            best_weights,
                            &optimizer,
                        )?;
                    }
                    if periodic {
                        crate::checkpoint::write(
                            &crate::checkpoint::epoch_dir(root, epoch),
                            state,
                            &weights,
                            best_weights,
                            &optimizer,
                        )?;
                        crate::checkpoint::prune(root, cfg.keep_checkpoints);
                    }
                }
            }
            if stop_now {
                break;
            }
        }
        let (_, best_epoch, weights) =
            best.ok_or_else(|| TrainError::Config("no epoch ran".into()))?;
        let samples_per_second =
            (train.rows() * (history.len() - resumed_epochs.min(history.len()))) as f64
                / start.elapsed().as_secs_f64().max(1e-9);

        // Reference rows: burn's own outputs for sample rows, so export can verify itself.
        let plain_dev = plain_device();
        let final_net = Net::init(&spec, &plain_dev).with_weights(&weights, &plain_dev);
        let sample_src = val.filter(|v| v.rows() > 0).unwrap_or(train);
        let n_ref = sample_src.rows().min(64);
        // The held-out test set, evaluated once with the kept weights.
        let test_aligned = self
            .test
            .as_ref()
            .map(|t| align_classes("test", &classes, t))
            .transpose()?;
        let test = match test_aligned.as_deref() {
            Some(t) if t.rows() > 0 => {
                if t.n_features() != train.n_features() {
                    return Err(TrainError::Data(format!(
                        "test data has {} features, training data has {}",
                        t.n_features(),
                        train.n_features()
                    )));
                }
                let tb = Batches::new(t, norm.as_ref(), target_norm.as_ref())?;
                // The kept weights in f32, as exported.
                Some(evaluate_with_pairs(
                    &final_net,
                    &tb,
                    cfg.batch_size,
                    &plain_dev,
                    Some(burn::tensor::DType::F32),
                ))
            }
            _ => None,
        };
        let (test, test_pairs) = match test {
            Some((m, p)) => (Some(m), Some(p)),
            None => (None, None),
        };
        // The class report: test rows when given, else validation rows.
        let (eval_pairs, evaluation_set) = match (test_pairs, &val_b) {
            (Some(p), _) => (Some(p), Some("test")),
            (None, Some(v)) => {
                let (_, p) = evaluate_with_pairs(
                    &final_net,
                    v,
                    cfg.batch_size,
                    &plain_dev,
                    Some(burn::tensor::DType::F32),
                );
                (Some(p), Some("validation"))
            }
            (None, None) => (None, None),
        };
        let evaluation = match (cfg.task, eval_pairs) {
            (Task::Classification, Some(p)) => Some(
                kiln_core::metrics::ClassificationReport::from_indices(&p, Some(&classes)),
            ),
            _ => None,
        };
        let evaluation_set = evaluation.as_ref().and(evaluation_set);
        let reference = reference_outputs(
            &final_net,
            sample_src,
            n_ref,
            norm.as_ref(),
            target_norm.as_ref(),
            cfg.task,
            &plain_dev,
        )?;

        // The whole artifact is built in a temporary directory and swapped in, so a crash or a
        // failed write never leaves new weights beside an old spec (or half a directory).
        let mut built = None;
        kiln_core::fsutil::replace_dir_atomic::<TrainError>(out_dir, |dir| {
            let weights_bytes = serialize_weights(&weights)?;
            kiln_core::fsutil::write_atomic(&dir.join("weights.safetensors"), &weights_bytes)?;
            use sha2::Digest;
            let metadata = ModelMetadata {
                task: cfg.task,
                class_names: classes,
                target_normalization: target_norm,
                feature_names: train.feature_names.clone(),
                target: cfg.target.clone(),
                normalization: norm,
                kiln_version: kiln_core::KILN_VERSION.into(),
                burn_version: BURN_VERSION.into(),
                created_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                training: serde_json::to_value(cfg).unwrap_or_default(),
                weights_sha256: hex::encode(sha2::Sha256::digest(&weights_bytes)),
            };
            let model = TrainedModel {
                dir: dir.to_path_buf(),
                spec,
                metadata,
                reference: Some(reference),
            };
            model.save_json_parts()?;
            built = Some(model);
            Ok(())
        })?;
        let mut model =
            built.ok_or_else(|| TrainError::Config("the model directory was not built".into()))?;
        model.dir = out_dir.to_path_buf();
        let seconds = start.elapsed().as_secs_f64();
        events.emit(Event::StageFinished {
            stage: "train".into(),
            seconds,
        });
        Ok(TrainOutcome {
            model,
            history,
            best_epoch,
            seconds,
            samples_per_second,
            lr_trace,
            stopped_early,
            test,
            evaluation,
            evaluation_set,
            strategy,
            steps,
        })
    }
}

/// Sets the flex device's float type for training. burn fixes a device's default types once
/// per process, so a second run in the same process with another precision is refused.
fn set_precision(
    device: &mut Device,
    name: &str,
    precision: crate::Precision,
) -> Result<(), TrainError> {
    use burn::tensor::FloatDType;
    let want = match precision {
        crate::Precision::F32 => FloatDType::F32,
        crate::Precision::Bf16 => FloatDType::BF16,
        crate::Precision::F16 => {
            return Err(TrainError::Config(
                "precision f16 is refused; use bf16 (see TrainConfig::precision)".into(),
            ));
        }
    };
    if want != FloatDType::F32 && !device.supports_dtype(want) {
        return Err(TrainError::Config(format!(
            "device {name} does not support {want:?}; use --precision f32"
        )));
    }
    if device.settings().float_dtype == want {
        return Ok(());
    }
    device.configure(want).map_err(|e| {
        TrainError::Config(format!(
            "cannot train in {want:?}: the device's float type is already {:?} in this process ({e:?}); burn fixes it once per process, so train with another precision in a new process",
            device.settings().float_dtype
        ))
    })
}

/// The training devices named by `--devices`. This build trains on burn's flex CPU backend;
/// other device kinds are refused with what they would need.
fn parse_devices(names: &[String]) -> Result<Vec<Device>, TrainError> {
    if names.is_empty() {
        return Err(TrainError::Config(
            "devices is empty; use cpu, or cpu,cpu for two replicas".into(),
        ));
    }
    names
        .iter()
        .map(|n| match crate::config::device_error(n) {
            #[cfg(feature = "cuda")]
            None if crate::config::cuda_index(n).is_some() => {
                let index = crate::config::cuda_index(n).unwrap_or(0);
                let device = Device::cuda(index);
                // A CUDA device that cannot start is an error, never a silent CPU run.
                device.sync().map_err(|e| {
                    TrainError::Config(format!(
                        "device cuda:{index} is not usable ({e:?}); check the NVIDIA driver with nvidia-smi, or train on cpu"
                    ))
                })?;
                Ok(device.autodiff())
            }
            #[cfg(feature = "wgpu")]
            None if n.trim().starts_with("wgpu") => wgpu_device(n.trim()),
            #[cfg(feature = "distributed")]
            None if n.trim().starts_with("ws://") => crate::distributed::connect(n.trim()),
            None => Ok(Device::flex().autodiff()),
            Some(e) => Err(TrainError::Config(e)),
        })
        .collect()
}

/// The adapter that a `wgpu` device name selects: `wgpu` (wgpu's own choice, which
/// `CUBECL_WGPU_DEFAULT_DEVICE` overrides), `wgpu:N` (the Nth discrete GPU) or `wgpu:cpu` (a
/// software adapter, e.g. Mesa's lavapipe).
#[cfg(feature = "wgpu")]
pub(crate) fn wgpu_kind(name: &str) -> Option<burn::tensor::DeviceKind> {
    use burn::tensor::DeviceKind;
    match name.trim() {
        "wgpu" => Some(DeviceKind::DefaultDevice),
        "wgpu:cpu" => Some(DeviceKind::Cpu),
        other => other
            .strip_prefix("wgpu:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(DeviceKind::DiscreteGpu),
    }
}

/// Opens a wgpu device once per process (burn registers each adapter's runtime once) and
/// checks it with a sync, so that a machine without a usable adapter gets an error, never a
/// silent CPU run.
#[cfg(feature = "wgpu")]
fn wgpu_device(name: &str) -> Result<Device, TrainError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static OPENED: OnceLock<Mutex<HashMap<String, Device>>> = OnceLock::new();
    let kind = wgpu_kind(name)
        .ok_or_else(|| TrainError::Config(format!("unknown wgpu device {name:?}")))?;
    let mut opened = OPENED
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| TrainError::Device("the wgpu device table is poisoned".into()))?;
    if let Some(device) = opened.get(name) {
        return Ok(device.clone().autodiff());
    }
    let unusable = |why: String| {
        TrainError::Config(format!(
            "device {name} is not usable ({why}); check the GPU driver (vulkaninfo lists the adapters), or train on cpu"
        ))
    };
    let mut options = Device::wgpu_options().device_kind(kind.clone());
    // Software adapters (Mesa's lavapipe, SwiftShader) are Vulkan drivers; pinning the API keeps
    // wgpu from also probing OpenGL, whose EGL setup prints errors on headless machines.
    if kind == burn::tensor::DeviceKind::Cpu && cfg!(not(target_os = "macos")) {
        options = options.graphics_api(burn::tensor::wgpu::WgpuBackend::Vulkan);
    }
    let device = options.init().map_err(|e| unusable(e.to_string()))?;
    device.sync().map_err(|e| unusable(format!("{e:?}")))?;
    opened.insert(name.to_string(), device.clone());
    Ok(device.autodiff())
}

pub(crate) fn plain_device() -> Device {
    Device::flex()
}

/// Mean and standard deviation of regression targets (std 1 for a constant target).
fn fit_target_normalization(v: &[f32]) -> Normalization {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    Normalization {
        mean: vec![mean as f32],
        std: vec![if std < 1e-12 { 1.0 } else { std as f32 }],
    }
}

/// burn's outputs for the first `n` rows, as the exported graph must reproduce them:
/// probabilities for classifiers, de-standardised values for regressors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reference_outputs(
    net: &Net,
    data: &Dataset,
    n: usize,
    norm: Option<&Normalization>,
    target_norm: Option<&Normalization>,
    task: Task,
    device: &Device,
) -> Result<Reference, TrainError> {
    let idx: Vec<usize> = (0..n).collect();
    let raw = data.select(&idx);
    let mut x = raw.features.clone();
    if let Some(nm) = norm {
        nm.apply(&mut x);
    }
    let f = raw.n_features();
    // In f32 whatever the training precision: the exported model computes in f32.
    let opts = burn::tensor::TensorCreationOptions::new(device.clone())
        .with_dtype(burn::tensor::DType::F32);
    let logits = net.forward(Tensor::from_data(TensorData::new(x, [n, f]), opts));
    let out = match (task, target_norm) {
        (Task::Classification, _) => burn::tensor::activation::softmax(logits, 1),
        // The same arithmetic as the exported graph: y * std + mean.
        (Task::Regression, Some(t)) => logits.mul_scalar(t.std[0]).add_scalar(t.mean[0]),
        (Task::Regression, None) => logits,
    };
    let flat = out
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| TrainError::Burn(format!("{e:?}")))?;
    let c = flat.len() / n.max(1);
    Ok(Reference {
        inputs: (0..n).map(|i| raw.row(i).to_vec()).collect(),
        outputs: (0..n).map(|i| flat[i * c..(i + 1) * c].to_vec()).collect(),
    })
}

pub(crate) fn serialize_weights(weights: &[NamedTensor]) -> Result<Vec<u8>, TrainError> {
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "kiln-burn-layout".to_string());
    crate::checkpoint::safetensors_bytes(weights, meta)
}

/// burn's distributed data parallel (DDP) inside kiln's epoch loop, for CUDA devices: burn
/// 0.22 implements the gradient all-reduce (NCCL) for CUDA only.
///
/// Each device holds a replica of the model whose parameters are marked distributed (what
/// burn's `Learner::grad_sharded` does) and an optimizer of its own. Every step, each device
/// computes the gradient of its shard of the batch in its own thread; during the backward pass
/// burn all-reduces (sums) each parameter's gradient across the devices, so every replica then
/// takes the same optimizer step and the replicas stay equal. Each shard's loss is weighted by
/// its share of the batch, so the sum is the gradient of the whole batch's mean loss, as in the
/// `multi` strategy. Replica 0 stands for the model (validation, checkpoints, the artifact).
#[cfg(feature = "cuda")]
mod ddp {
    use super::{Batches, Net, loss_and_hits, scalar};
    use burn::module::{Module, ModuleMapper, Param};
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::GradientsParams;
    use burn::optim::ModuleOptimizer;
    use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
    use burn::tensor::{Device, Tensor};

    /// Marks every parameter for gradient all-reduce.
    struct Sharded;

    impl ModuleMapper for Sharded {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = param.consume();
            let tensor = tensor.set_distributed(id);
            Param::from_mapped_value(id, tensor, mapper)
        }
    }

    /// What one device's thread gives back: its replica and optimizer after the step, the
    /// summed loss over its rows and its correct predictions.
    type Stepped = (Net, ModuleOptimizer, f64, Option<i64>);

    pub(super) struct Ddp {
        nets: Vec<Net>,
        optims: Vec<ModuleOptimizer>,
        devices: Vec<Device>,
        // Declared last, so dropped last: closes burn's communication server.
        _context: DistributedContext,
    }

    impl Ddp {
        /// Starts burn's communication server for `devices` and places a replica of `net`
        /// (and a copy of `optim`, fresh or resumed) on each.
        pub(super) fn start(net: &Net, optim: &ModuleOptimizer, devices: &[Device]) -> Self {
            let context = DistributedContext::init(
                devices.to_vec(),
                DistributedConfig {
                    all_reduce_op: ReduceOperation::Sum,
                },
            );
            Self {
                nets: devices
                    .iter()
                    .map(|d| net.clone().fork(d).map(&mut Sharded))
                    .collect(),
                optims: vec![optim.clone(); devices.len()],
                devices: devices.to_vec(),
                _context: context,
            }
        }

        /// The model (replica 0) and its optimizer.
        pub(super) fn model(&self) -> (&Net, &ModuleOptimizer) {
            (&self.nets[0], &self.optims[0])
        }

        /// One optimizer step over the rows `group`: the summed loss over its rows and the
        /// correct predictions, or the panic that ended a device's thread.
        pub(super) fn step(
            &mut self,
            group: &[usize],
            lr: f64,
            train: &Batches,
        ) -> Result<(f64, Option<i64>), Box<dyn std::any::Any + Send>> {
            let n = self.devices.len();
            let shard_rows = group.len().div_ceil(n);
            let total = group.len() as f32;
            let nets = std::mem::take(&mut self.nets);
            let optims = std::mem::take(&mut self.optims);
            let results: Vec<std::thread::Result<Stepped>> = std::thread::scope(|s| {
                let handles: Vec<_> = nets
                    .into_iter()
                    .zip(optims)
                    .zip(&self.devices)
                    .enumerate()
                    .map(|(i, ((net, optim), device))| {
                        let start = (i * shard_rows).min(group.len());
                        let shard = &group[start..(start + shard_rows).min(group.len())];
                        s.spawn(move || {
                            // Every device must join each all-reduce: one left without rows
                            // (a last batch smaller than the device count) computes a zero-
                            // weighted loss on one row, contributing nothing.
                            let (rows, weight) = if shard.is_empty() {
                                (&group[..1], 0.0)
                            } else {
                                (shard, shard.len() as f32 / total)
                            };
                            let loss_fn = CrossEntropyLossConfig::new().init(device);
                            let (x, y) = train.gather(rows, device, None);
                            let (loss, hits) = loss_and_hits(net.forward(x), y, &loss_fn);
                            let sum = scalar(loss.clone()) * shard.len() as f64;
                            let grads = GradientsParams::from_grads(
                                loss.mul_scalar(weight).backward(),
                                &net,
                            );
                            let mut optim = optim;
                            let net = optim.step(lr, net, grads);
                            (net, optim, sum, hits.filter(|_| !shard.is_empty()))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join()).collect()
            });
            let (mut loss, mut hits) = (0f64, None::<i64>);
            for r in results {
                let (net, optim, l, h) = r?;
                self.nets.push(net);
                self.optims.push(optim);
                loss += l;
                if let Some(h) = h {
                    hits = Some(hits.unwrap_or(0) + h);
                }
            }
            Ok((loss, hits))
        }
    }
}

/// `set`'s class indices renumbered onto the training classes `classes` (unchanged when its
/// class list already is `classes`, or for regression); an error naming the first class that
/// training never saw.
pub(crate) fn align_classes<'a>(
    what: &str,
    classes: &[String],
    set: &'a Dataset,
) -> Result<std::borrow::Cow<'a, Dataset>, TrainError> {
    let Some(Targets::Classes { indices, names }) = &set.targets else {
        return Ok(std::borrow::Cow::Borrowed(set));
    };
    if classes.is_empty() || names.as_slice() == classes {
        return Ok(std::borrow::Cow::Borrowed(set));
    }
    let map: Vec<u32> = names
        .iter()
        .map(|n| {
            classes.iter().position(|c| c == n).map(|i| i as u32).ok_or_else(|| {
                TrainError::Data(format!(
                    "the {what} data has class {n:?}, which the training data does not have (training classes: {}); a model cannot predict a class it never saw",
                    classes.join(", ")
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let indices = indices
        .iter()
        .map(|&i| {
            map.get(i as usize).copied().ok_or_else(|| {
                TrainError::Data(format!(
                    "the {what} data has class index {i}, past its {} class names",
                    names.len()
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut aligned = set.clone();
    aligned.targets = Some(Targets::Classes {
        indices,
        names: classes.to_vec(),
    });
    Ok(std::borrow::Cow::Owned(aligned))
}

#[cfg(test)]
mod align_tests {
    use super::*;

    fn set(indices: Vec<u32>, names: &[&str]) -> Dataset {
        Dataset {
            feature_names: vec!["x".into()],
            features: vec![0.0; indices.len()],
            targets: Some(Targets::Classes {
                indices,
                names: names.iter().map(|n| n.to_string()).collect(),
            }),
        }
    }

    #[test]
    fn a_validation_set_missing_a_class_is_renumbered_onto_the_training_classes() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|n| n.to_string()).collect();
        // Validation has only b and c, which it numbers 0 and 1.
        let val = set(vec![0, 1, 1, 0], &["b", "c"]);
        let aligned = align_classes("validation", &classes, &val).expect("aligned");
        let Some(Targets::Classes { indices, names }) = &aligned.targets else {
            panic!("classes");
        };
        assert_eq!(indices, &[1, 2, 2, 1]);
        assert_eq!(names, &classes);
        // The same list is borrowed as is; an unseen class is an error naming it.
        let same = set(vec![2, 0], &["a", "b", "c"]);
        assert!(matches!(
            align_classes("validation", &classes, &same),
            Ok(std::borrow::Cow::Borrowed(_))
        ));
        let err = align_classes("test", &classes, &set(vec![0], &["d"])).expect_err("unseen");
        assert!(err.to_string().contains("\"d\""), "{err}");
    }
}
