//! The training loop: batches from [`super::data`], the CLIP model and AdamW from
//! `paperclip-clip`, validation, checkpoints and the run record.
//!
//! A step: forward both towers, contrastive loss, stop on a non-finite loss (naming the
//! step and the batch's samples), backward, optional gradient clipping, AdamW with the
//! scheduled learning rate. Validation runs at step 0 (the starting model) and every
//! `validation.every` steps; checkpoints every `checkpoints.every` steps and after the
//! last one. A resumed run continues at the checkpoint's step with the same batches,
//! augmentations and captions the uninterrupted run would have used.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use paperclip_clip::ClipModel;
use paperclip_clip::loss::{Positives, ScaleMode, contrastive_loss, logits};
use paperclip_clip::metrics::{diagonal_ranks, embedding_variance, top_k_accuracy, transpose};
use paperclip_clip::optim::{AdamW, AdamWConfig, Schedule, clip_grad_norm, grad_norm};
use paperclip_clip::tokenizer::ClipTokenizer;

use super::checkpoints::{TrainerState, apply_retention, read_state, restore, write_checkpoint};
use super::config::{PositivesConfig, TrainConfig};
use super::data::{Batch, BatchRecipe, Prefetcher, SplitData, build_batch, open_version};
use super::error::TrainError;
use super::record::{MetricLog, RunRecord};
use super::resolve::{resolve_model, resolve_vocabulary};

/// What to train and where.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Data directory holding datasets and training runs.
    pub data_dir: PathBuf,
    /// The config file (recorded in the run record).
    pub config_path: PathBuf,
    /// The parsed config.
    pub config: TrainConfig,
    /// Continue from this checkpoint folder instead of starting a new run.
    pub resume: Option<PathBuf>,
    /// Stop after this step even when the config asks for more (the run stays resumable).
    pub stop_after: Option<u64>,
}

/// One training step's numbers.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Steps completed, this one included.
    pub step: u64,
    /// Steps in the whole run.
    pub total_steps: u64,
    /// Loss of the batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The logit multiplier after the step.
    pub logit_scale: f64,
    /// Image–caption pairs per second over this step, data wait included.
    pub samples_per_sec: f64,
}

/// One validation's numbers.
#[derive(Debug, Clone)]
pub struct ValReport {
    /// Steps completed when it ran.
    pub step: u64,
    /// Mean loss over the validation batches.
    pub loss: f64,
    /// `(name, value)` pairs such as `top5_text_to_image`.
    pub metrics: Vec<(String, f64)>,
}

/// Receives progress; the CLI draws it, tests record it.
pub trait TrainObserver {
    /// The run is set up and about to take its first step.
    fn started(&mut self, record: &RunRecord, first_step: u64) {
        let _ = (record, first_step);
    }
    /// A step finished.
    fn step(&mut self, report: &StepReport) {
        let _ = report;
    }
    /// A validation finished.
    fn validated(&mut self, report: &ValReport) {
        let _ = report;
    }
    /// A checkpoint was written.
    fn checkpointed(&mut self, dir: &Path) {
        let _ = dir;
    }
    /// Something the user should know, such as a collapse warning.
    fn warn(&mut self, message: &str) {
        let _ = message;
    }
}

/// An observer that ignores everything.
pub struct Quiet;
impl TrainObserver for Quiet {}

/// How the run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The final run record.
    pub record: RunRecord,
    /// The run folder.
    pub run_dir: PathBuf,
    /// The last validation, if any.
    pub last_validation: Option<ValReport>,
}

/// Everything a running session holds.
struct Session {
    config: TrainConfig,
    device: Device,
    model: ClipModel,
    optimizer: AdamW,
    schedule: Schedule,
    tokenizer: Arc<ClipTokenizer>,
    train: Arc<SplitData>,
    val: Option<SplitData>,
    run_dir: PathBuf,
    record: RunRecord,
    metrics: MetricLog,
    mode: ScaleMode,
}

/// Trains as the config says and returns the final record; the record is kept up to date
/// on disk while the run goes, and marked failed with the error if it stops.
pub async fn train(
    options: &TrainOptions,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome, TrainError> {
    let (mut session, first_step) = set_up(options).await?;
    observer.started(&session.record, first_step);
    let batch_size = session.config.training.batch_size;
    let samples = session.train.samples.len();
    if samples < batch_size {
        observer.warn(&format!(
            "training.batch_size = {batch_size} exceeds the {samples} training samples, so              each batch holds some samples twice and counts their copies as negatives;              lower training.batch_size"
        ));
    }
    let end_step = options
        .stop_after
        .map_or(session.config.training.steps, |s| {
            s.min(session.config.training.steps)
        });

    let result =
        tokio::task::block_in_place(|| run_steps(&mut session, first_step, end_step, observer));
    match result {
        Ok(last_validation) => {
            session.record.status = if end_step >= session.config.training.steps {
                "finished".into()
            } else {
                "stopped".into()
            };
            session.record.updated_at = now();
            session.record.save(&session.run_dir)?;
            Ok(TrainOutcome {
                record: session.record,
                run_dir: session.run_dir,
                last_validation,
            })
        }
        Err(error) => {
            session.record.status = "failed".into();
            session.record.error = Some(error.to_string());
            session.record.updated_at = now();
            session.record.save(&session.run_dir)?;
            Err(error)
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

// TODO: bf16 compute with fp32 master weights on CUDA; every device trains in fp32 now.
fn select_device(name: &str) -> Result<Device, TrainError> {
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                TrainError::Data(format!(
                    "training.device = {other:?} is not a device; use \"cpu\", \"cuda\" or \"cuda:N\""
                ))
            })?,
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(TrainError::Data(format!(
            "training.device = {name:?} but this build has no CUDA support; rebuild with \
             `cargo build --release --features cuda` (needs the CUDA toolkit) or use \"cpu\""
        )));
    }
    Ok(Device::new_cuda(ordinal)?)
}

async fn set_up(options: &TrainOptions) -> Result<(Session, u64), TrainError> {
    let config = options.config.clone();
    let device = select_device(&config.training.device)?;

    let (dataset, version_text) = config.dataset_and_version();
    let resume_state = options.resume.as_deref().map(read_state).transpose()?;
    let version_text = match &resume_state {
        Some(state) => state.dataset_version.to_string(),
        None => version_text,
    };
    let version = open_version(&options.data_dir, &dataset, &version_text).await?;

    let resolved = resolve_model(&config.model)?;
    let model = ClipModel::random(&resolved.config, config.model.init_seed, &device)?;
    if let Some(weights) = &resolved.weights {
        let unused = model.load_weights(weights)?;
        if !unused.is_empty() {
            tracing::debug!(
                ?unused,
                "tensors in the weights file that the model does not use"
            );
        }
    }
    let vocabulary = resolve_vocabulary(&config.model, resolved.weights.as_deref())?;
    let tokenizer = Arc::new(super::resolve::load_tokenizer(&vocabulary)?);
    if tokenizer.vocab_size() > resolved.config.text.vocab_size {
        return Err(TrainError::Data(format!(
            "the vocabulary {} has {} tokens but the model's text tower takes {}; use a model \
             config with vocab_size {}",
            vocabulary.display(),
            tokenizer.vocab_size(),
            resolved.config.text.vocab_size,
            tokenizer.vocab_size()
        )));
    }

    let data = &config.data;
    let train = Arc::new(SplitData::load(
        &options.data_dir,
        &version,
        &data.train_split,
        &data.caption_field,
        data.decoded_cache_mib,
        config.training.resize_px,
    )?);
    let val = if config.validation.every > 0 && !data.val_split.is_empty() {
        Some(SplitData::load(
            &options.data_dir,
            &version,
            &data.val_split,
            &data.caption_field,
            data.decoded_cache_mib,
            config.training.resize_px,
        )?)
    } else {
        None
    };

    let o = &config.optimizer;
    let mut optimizer = AdamW::new(
        model.params(),
        AdamWConfig {
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
        },
    )?;
    let schedule = Schedule {
        peak_lr: o.lr,
        warmup_steps: o.warmup_steps,
        total_steps: config.training.steps,
        decay: o.schedule,
    };

    let fingerprint = config.fingerprint();
    let (record, first_step, run_dir) = match (&options.resume, &resume_state) {
        (Some(dir), Some(state)) => {
            if state.config_fingerprint != fingerprint {
                return Err(TrainError::Resume {
                    path: dir.clone(),
                    message: "the config differs from the one the run started with in a \
                              setting that changes what a step computes (only training.steps, \
                              log, validation, checkpoint and loader settings may change); \
                              start a new run instead"
                        .into(),
                });
            }
            restore(dir, &model, &mut optimizer, state, &device)?;
            let run_dir = super::record::RunRecord::dir(&options.data_dir, &state.run_id);
            let mut record = RunRecord::load(&run_dir)?;
            record.status = "running".into();
            record.error = None;
            record.steps_total = config.training.steps;
            record.resumed_from = Some(dir.display().to_string());
            (record, state.step, run_dir)
        }
        _ => {
            let run_id = format!(
                "train-{}-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
                std::process::id()
            );
            let run_dir = RunRecord::dir(&options.data_dir, &run_id);
            let record = RunRecord {
                run_id,
                status: "running".into(),
                error: None,
                config_path: options.config_path.display().to_string(),
                config_json: serde_json::to_string(&config).unwrap_or_default(),
                config_fingerprint: fingerprint,
                dataset: version.dataset.clone(),
                dataset_version: version.version,
                dataset_fingerprint: version.fingerprint.clone(),
                code_version: crate::pipeline::stages::CODE_VERSION.to_string(),
                model_config: resolved.config_source.clone(),
                initial_weights: resolved.weights.as_ref().map(|p| p.display().to_string()),
                parameters: model.params().element_count() as u64,
                device: config.training.device.clone(),
                train_samples: train.samples.len() as u64,
                val_samples: val.as_ref().map_or(0, |v| v.samples.len() as u64),
                steps_done: 0,
                steps_total: config.training.steps,
                started_at: now(),
                updated_at: now(),
                resumed_from: None,
                last_checkpoint: None,
                best_checkpoint: None,
            };
            (record, 0, run_dir)
        }
    };
    record.save(&run_dir)?;
    let metrics = MetricLog::open(&run_dir, &record.run_id)?;
    let mode = config.loss.temperature;

    Ok((
        Session {
            config,
            device,
            model,
            optimizer,
            schedule,
            tokenizer,
            train,
            val,
            run_dir,
            record,
            metrics,
            mode,
        },
        first_step,
    ))
}

fn train_recipe(session: &Session) -> BatchRecipe {
    let c = &session.config;
    BatchRecipe {
        batch_size: c.training.batch_size,
        seed: c.training.seed,
        augment: c.training.augment,
        crop_px: session.model.config().vision.image_size,
        chunk_words: c.data.chunk_words,
        context_length: session.model.config().text.max_position_embeddings,
    }
}

fn run_steps(
    session: &mut Session,
    first_step: u64,
    end_step: u64,
    observer: &mut dyn TrainObserver,
) -> Result<Option<ValReport>, TrainError> {
    let prefetcher = Prefetcher::start(
        session.train.clone(),
        session.tokenizer.clone(),
        train_recipe(session),
        (first_step, end_step),
        session.config.data.loader_threads,
        2,
    )?;
    let mut last_validation = None;
    let mut last_val_loss = None;
    let validate_every = session.config.validation.every;

    if first_step == 0 && validate_every > 0 && session.val.is_some() {
        let report = validate(session, 0)?;
        observer.validated(&report);
        last_val_loss = Some(report.loss);
        last_validation = Some(report);
    }

    let mut clock = Instant::now();
    for step in first_step..end_step {
        let batch = prefetcher.next_batch().ok_or_else(|| {
            TrainError::Data("the batch loader stopped early; see the log for the cause".into())
        })??;
        let report = train_step(session, batch, observer)?;
        let elapsed_secs = clock.elapsed().as_secs_f64();
        let report = StepReport {
            samples_per_sec: session.config.training.batch_size as f64 / elapsed_secs.max(1e-9),
            ..report
        };
        observer.step(&report);
        let done = step + 1;
        session.record.steps_done = done;

        if done % session.config.training.log_every.max(1) == 0 || done == end_step {
            session.metrics.log(
                done,
                "train",
                &[
                    ("loss", report.loss),
                    ("lr", report.lr),
                    ("grad_norm", report.grad_norm),
                    ("logit_scale", report.logit_scale),
                    ("samples_per_sec", report.samples_per_sec),
                ],
            )?;
        }
        let validate_now =
            validate_every > 0 && done % validate_every == 0 && session.val.is_some();
        if validate_now {
            let report = validate(session, done)?;
            observer.validated(&report);
            last_val_loss = Some(report.loss);
            last_validation = Some(report);
        }
        if done % session.config.checkpoints.every == 0 || done == end_step {
            let val_loss = if validate_now { last_val_loss } else { None };
            let dir = checkpoint(session, done, val_loss)?;
            observer.checkpointed(&dir);
        }
        // Validation and checkpoint time does not count against the step rate.
        clock = Instant::now();
    }
    Ok(last_validation)
}

fn train_step(
    session: &mut Session,
    batch: Batch,
    observer: &mut dyn TrainObserver,
) -> Result<StepReport, TrainError> {
    let (pixels, ids) = batch_tensors(session, &batch)?;
    let model = &session.model;
    let images = model.image_features(&pixels)?;
    let texts = model.text_features(&ids)?;
    let positives = match session.config.loss.positives {
        PositivesConfig::Diagonal => Positives::Diagonal,
        PositivesConfig::Proposal => Positives::SameGroup(batch.groups.clone()),
    };
    let loss = contrastive_loss(
        &images,
        &texts,
        model.logit_scale(),
        session.mode,
        &positives,
    )?;
    let loss_value = f64::from(loss.to_scalar::<f32>()?);
    if !loss_value.is_finite() {
        return Err(TrainError::NonFiniteLoss {
            step: batch.step,
            loss: loss_value,
            keys: batch.keys.join(", "),
        });
    }
    warn_on_collapse(session, &images, &texts, batch.step, observer)?;

    let mut grads = loss.backward()?;
    let norm = match session.config.optimizer.max_grad_norm {
        Some(max_norm) => clip_grad_norm(model.params(), &mut grads, max_norm)?,
        None => grad_norm(model.params(), &grads)?,
    };
    let lr = session.schedule.lr(batch.step);
    session.optimizer.step(model.params(), &grads, lr)?;

    let scale = paperclip_clip::loss::logit_multiplier(model.logit_scale(), session.mode)?;
    Ok(StepReport {
        step: batch.step + 1,
        total_steps: session.config.training.steps,
        loss: loss_value,
        lr,
        grad_norm: norm,
        logit_scale: f64::from(scale.to_scalar::<f32>()?),
        samples_per_sec: 0.0,
    })
}

fn batch_tensors(session: &Session, batch: &Batch) -> Result<(Tensor, Tensor), TrainError> {
    let size = session.model.config().vision.image_size;
    let context = session.model.config().text.max_position_embeddings;
    let n = batch.keys.len();
    let pixels = Tensor::from_slice(&batch.pixels, (n, 3, size, size), &session.device)?;
    let ids = Tensor::from_slice(&batch.ids, (n, context), &session.device)?;
    Ok((pixels, ids))
}

fn warn_on_collapse(
    session: &Session,
    images: &Tensor,
    texts: &Tensor,
    step: u64,
    observer: &mut dyn TrainObserver,
) -> Result<(), TrainError> {
    let threshold = session.config.training.collapse_variance;
    let image_variance = embedding_variance(images)?;
    let text_variance = embedding_variance(texts)?;
    if image_variance < threshold || text_variance < threshold {
        let message = format!(
            "step {step}: embeddings are collapsing (variance per dimension: images \
             {image_variance:.2e}, texts {text_variance:.2e}, warning below {threshold:.0e}); \
             lower optimizer.lr or check that captions differ"
        );
        tracing::warn!(step, image_variance, text_variance, "embedding collapse");
        observer.warn(&message);
    }
    Ok(())
}

/// Loss and in-batch retrieval over the validation split, in fixed batches.
fn validate(session: &mut Session, step: u64) -> Result<ValReport, TrainError> {
    let Some(val) = &session.val else {
        return Err(TrainError::Data("validation has no split".into()));
    };
    let c = &session.config;
    let batch_size = c.validation.batch_size.min(val.samples.len());
    let recipe = BatchRecipe {
        batch_size,
        augment: c.validation.augment,
        ..train_recipe(session)
    };
    let mut batches = (val.samples.len() / batch_size).max(1);
    if let Some(max) = c.validation.max_batches {
        batches = batches.min(max.max(1));
    }

    let ks: Vec<usize> = [1, 5, 10, 20]
        .into_iter()
        .filter(|&k| k < batch_size)
        .collect();
    let mut loss_sum = 0.0;
    let mut sums = vec![(0.0, 0.0); ks.len()];
    for b in 0..batches {
        let indices: Vec<usize> = (b * batch_size..(b + 1) * batch_size).collect();
        let batch = build_batch(val, &session.tokenizer, &recipe, &indices, b as u64, "val")?;
        let (pixels, ids) = batch_tensors(session, &batch)?;
        let images = session.model.image_features(&pixels)?.detach();
        let texts = session.model.text_features(&ids)?.detach();
        let scale = session.model.logit_scale().detach();
        let loss = contrastive_loss(&images, &texts, &scale, session.mode, &Positives::Diagonal)?;
        loss_sum += f64::from(loss.to_scalar::<f32>()?);

        let per_image = logits(&images, &texts, &scale, session.mode)?.to_vec2::<f32>()?;
        let image_to_text = diagonal_ranks(&per_image);
        let text_to_image = diagonal_ranks(&transpose(&per_image));
        for (sum, &k) in sums.iter_mut().zip(&ks) {
            sum.0 += top_k_accuracy(&text_to_image, k);
            sum.1 += top_k_accuracy(&image_to_text, k);
        }
    }

    let n = batches as f64;
    let mut metrics = vec![("loss".to_string(), loss_sum / n)];
    for (sum, k) in sums.iter().zip(&ks) {
        metrics.push((format!("top{k}_text_to_image"), sum.0 / n));
        metrics.push((format!("top{k}_image_to_text"), sum.1 / n));
    }
    metrics.push(("batch_size".to_string(), batch_size as f64));
    metrics.push(("batches".to_string(), n));
    let pairs: Vec<(&str, f64)> = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    session.metrics.log(step, "val", &pairs)?;
    Ok(ValReport {
        step,
        loss: loss_sum / n,
        metrics,
    })
}

fn checkpoint(
    session: &mut Session,
    step: u64,
    val_loss: Option<f64>,
) -> Result<PathBuf, TrainError> {
    let state = TrainerState {
        run_id: session.record.run_id.clone(),
        step,
        optimizer_steps: session.optimizer.steps_taken(),
        seed: session.config.training.seed,
        config_fingerprint: session.record.config_fingerprint.clone(),
        dataset: session.record.dataset.clone(),
        dataset_version: session.record.dataset_version,
        val_loss,
    };
    let dir = write_checkpoint(&session.run_dir, &session.model, &session.optimizer, &state)?;
    let best = apply_retention(&session.run_dir, session.config.checkpoints.keep_best)?;
    session.record.last_checkpoint = Some(dir.display().to_string());
    session.record.best_checkpoint = best.map(|p| p.display().to_string());
    session.record.updated_at = now();
    session.record.save(&session.run_dir)?;
    Ok(dir)
}
