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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use paperclip_clip::ClipModel;
use paperclip_clip::loss::{Positives, ScaleMode, contrastive_loss, logits};
use paperclip_clip::metrics::{diagonal_ranks, embedding_variance, top_k_accuracy, transpose};
use paperclip_clip::optim::{AdamW, AdamWConfig, Schedule, clip_grad_norm, grad_norm};
use paperclip_clip::tokenizer::ClipTokenizer;

use super::checkpoints::{TrainerState, apply_retention, read_state, restore, write_checkpoint};
use super::config::{PositivesConfig, Precision, TrainConfig};
use super::data::{Batch, BatchRecipe, Prefetcher, SplitData, build_batch, open_version};
use super::error::TrainError;
use super::preflight::{
    check_captions, check_geometry, check_resume_target, check_same_settings, discard_later_steps,
    lock_run, run_fingerprint, usable_validation,
};
use super::record::{MetricLog, RunRecord};
use super::resolve::{resolve_model, resolve_vocabulary};

pub use super::report::{Quiet, StepReport, TrainObserver, TrainOptions, TrainOutcome, ValReport};

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
    /// Found while setting up, shown once training starts.
    warnings: Vec<String>,
    /// Held while the session runs, so two processes never write one run folder.
    _lock: std::fs::File,
}

/// Trains as the config sets and returns the final record; the record is kept up to date
/// on disk while the run goes, and marked failed with the error if it stops.
pub async fn train(
    options: &TrainOptions,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome, TrainError> {
    let (mut session, first_step) = set_up(options).await?;
    observer.started(&session.record, first_step);
    for warning in std::mem::take(&mut session.warnings) {
        observer.warn(&warning);
    }
    let end_step = options
        .stop_after
        .map_or(session.config.training.steps, |s| {
            s.min(session.config.training.steps)
        });

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_stop_signals(stop.clone()));
    let result = tokio::task::block_in_place(|| {
        run_steps(&mut session, (first_step, end_step), &stop, observer)
    });
    watcher.abort();
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
            session.record.status = match error {
                TrainError::Interrupted { .. } => "interrupted".into(),
                _ => "failed".into(),
            };
            session.record.error = Some(error.to_string());
            session.record.updated_at = now();
            session.record.save(&session.run_dir)?;
            Err(error)
        }
    }
}

/// Sets `stop` on SIGINT (Ctrl-C) or SIGTERM, so the loop can end with a checkpoint.
async fn watch_stop_signals(stop: Arc<AtomicBool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
    }
    stop.store(true, Ordering::Relaxed);
}

/// Returns the absolute form of a directory, so paths in run records do not depend on the working
/// directory of the process that wrote them.
fn absolute_dir(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

// NOTE: the CUDA device and bf16 on it have not been run yet; bf16 is tested on the CPU.
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
    let version_text = match (&resume_state, options.resume.as_deref()) {
        (Some(state), Some(dir)) => {
            check_resume_target(dir, state, &dataset, &version_text, options)?;
            state.dataset_version.to_string()
        }
        _ => version_text,
    };
    let version = open_version(&options.data_dir, &dataset, &version_text).await?;

    let resolved = resolve_model(&config.model)?;
    let mut model = ClipModel::random(&resolved.config, config.model.init_seed, &device)?;
    if config.training.precision == Precision::Bf16 {
        model.set_compute_dtype(candle_core::DType::BF16);
    }
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
    let mut warnings = Vec::new();
    let batch_size = config.training.batch_size;
    if train.samples.len() < batch_size {
        warnings.push(format!(
            "training.batch_size = {batch_size} exceeds the {} training samples, so each \
             batch holds some samples twice and counts the copies as negatives; lower \
             training.batch_size",
            train.samples.len()
        ));
    }
    if config.optimizer.warmup_steps > config.training.steps {
        warnings.push(format!(
            "optimizer.warmup_steps = {} exceeds training.steps = {}, so the learning rate \
             never reaches optimizer.lr",
            config.optimizer.warmup_steps, config.training.steps
        ));
    }
    if config.loss.positives == PositivesConfig::Proposal
        && train
            .samples
            .iter()
            .all(|s| s.proposal_id == train.samples[0].proposal_id)
    {
        return Err(TrainError::Data(format!(
            "loss.positives = \"proposal\" but every training sample has proposal id {}, so \
             every pair would be a positive; use positives = \"diagonal\" for this dataset",
            train.samples[0].proposal_id
        )));
    }
    check_geometry(&train, resolved.config.vision.image_size)?;
    check_captions(&train, &data.caption_field, &mut warnings)?;
    let val = usable_validation(val, &config, &mut warnings);

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

    let fingerprint = run_fingerprint(&config, &resolved.config, &vocabulary)?;
    let (record, first_step, run_dir, lock) = match (&options.resume, &resume_state) {
        (Some(dir), Some(state)) => {
            let run_dir = RunRecord::dir(&absolute_dir(&options.data_dir), &state.run_id);
            let mut record = RunRecord::load(&run_dir).map_err(|_| TrainError::Resume {
                path: dir.clone(),
                message: format!(
                    "its run {} has no record under {}; resume with the --data-dir the run \
                     used",
                    state.run_id,
                    options.data_dir.display()
                ),
            })?;
            // Nothing in the run folder changes before the lock is held.
            let lock = lock_run(&run_dir, &record.run_id)?;
            check_same_settings(dir, state, &record, &config, &fingerprint)?;
            if record.dataset_fingerprint != version.fingerprint {
                return Err(TrainError::Resume {
                    path: dir.clone(),
                    message: format!(
                        "{}@{} now has fingerprint {} but the run trained on fingerprint {}: \
                         the version was rebuilt; start a new run",
                        version.dataset,
                        version.version,
                        version.fingerprint,
                        record.dataset_fingerprint
                    ),
                });
            }
            restore(dir, &model, &mut optimizer, state, &device)?;
            discard_later_steps(&run_dir, state.step)?;
            record.status = "running".into();
            record.error = None;
            record.steps_total = config.training.steps;
            record.steps_done = state.step;
            record.resumed_from = Some(absolute_dir(dir).display().to_string());
            record.last_checkpoint = Some(absolute_dir(dir).display().to_string());
            record.best_checkpoint =
                super::checkpoints::apply_retention(&run_dir, config.checkpoints.keep_best)?
                    .map(|best| best.display().to_string());
            (record, state.step, run_dir, lock)
        }
        _ => {
            let run_id = format!(
                "train-{}-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
                std::process::id()
            );
            let run_dir = RunRecord::dir(&absolute_dir(&options.data_dir), &run_id);
            std::fs::create_dir_all(&run_dir).map_err(|source| TrainError::Io {
                path: run_dir.clone(),
                source,
            })?;
            let lock = lock_run(&run_dir, &run_id)?;
            let record = RunRecord {
                run_id,
                status: "running".into(),
                error: None,
                config_path: std::path::absolute(&options.config_path)
                    .unwrap_or_else(|_| options.config_path.clone())
                    .display()
                    .to_string(),
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
            (record, 0, run_dir, lock)
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
            warnings,
            _lock: lock,
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

/// State the step loop carries between steps.
#[derive(Default)]
struct LoopState {
    last_validation: Option<ValReport>,
    /// The step of `last_validation`.
    validated_at: Option<u64>,
    /// Embedding variances of the session's first step, the reference of the collapse check.
    first_variances: Option<(f64, f64)>,
}

fn run_steps(
    session: &mut Session,
    (first_step, end_step): (u64, u64),
    stop: &AtomicBool,
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
    let mut state = LoopState::default();
    if first_step == 0 && session.val.is_some() {
        run_validation(session, 0, &mut state, observer)?;
    }

    let mut clock = Instant::now();
    for step in first_step..end_step {
        if stop.load(Ordering::Relaxed) {
            return Err(interrupted(
                session, step, first_step, &mut state, observer,
            )?);
        }
        let batch = prefetcher.next_batch().ok_or_else(|| {
            TrainError::Data("the batch loader stopped early; see the log for the cause".into())
        })??;
        let report = train_step(session, batch, &mut state, observer)?;
        let report = StepReport {
            samples_per_sec: session.config.training.batch_size as f64
                / clock.elapsed().as_secs_f64().max(1e-9),
            ..report
        };
        observer.step(&report);
        after_step(session, &report, end_step, &mut state, observer)?;
        // Validation and checkpoint time does not count against the step rate.
        clock = Instant::now();
    }
    Ok(state.last_validation)
}

/// Logs, validates and checkpoints after a step, as the cadences set.
fn after_step(
    session: &mut Session,
    report: &StepReport,
    end_step: u64,
    state: &mut LoopState,
    observer: &mut dyn TrainObserver,
) -> Result<(), TrainError> {
    let done = report.step;
    session.record.steps_done = done;
    let last = done == end_step;
    if done.is_multiple_of(session.config.training.log_every) || last {
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

    let every = session.config.validation.every;
    let checkpoint_now = done.is_multiple_of(session.config.checkpoints.every) || last;
    // A checkpoint is always validated, so keep_best ranks every checkpoint.
    if session.val.is_some() && (done.is_multiple_of(every.max(1)) || checkpoint_now) {
        run_validation(session, done, state, observer)?;
    }
    if checkpoint_now {
        let val_loss = state
            .last_validation
            .as_ref()
            .filter(|_| state.validated_at == Some(done))
            .map(|v| v.loss);
        let dir = checkpoint(session, done, val_loss)?;
        observer.checkpointed(&dir);
    }
    Ok(())
}

fn run_validation(
    session: &mut Session,
    step: u64,
    state: &mut LoopState,
    observer: &mut dyn TrainObserver,
) -> Result<(), TrainError> {
    let report = validate(session, step)?;
    observer.validated(&report);
    state.validated_at = Some(step);
    state.last_validation = Some(report);
    Ok(())
}

/// Writes a checkpoint at the last finished step after a stop signal and returns the
/// error that ends the run.
fn interrupted(
    session: &mut Session,
    step: u64,
    first_step: u64,
    state: &mut LoopState,
    observer: &mut dyn TrainObserver,
) -> Result<TrainError, TrainError> {
    let written = session
        .record
        .last_checkpoint
        .as_ref()
        .is_some_and(|dir| dir.ends_with(&format!("step-{step:07}")));
    let checkpoint = if step > first_step && !written {
        if session.val.is_some() && state.validated_at != Some(step) {
            run_validation(session, step, state, observer)?;
        }
        let val_loss = state
            .last_validation
            .as_ref()
            .filter(|_| state.validated_at == Some(step))
            .map(|v| v.loss);
        let dir = checkpoint(session, step, val_loss)?;
        observer.checkpointed(&dir);
        Some(dir)
    } else {
        session.record.last_checkpoint.as_ref().map(PathBuf::from)
    };
    Ok(TrainError::Interrupted { step, checkpoint })
}

fn train_step(
    session: &mut Session,
    batch: Batch,
    state: &mut LoopState,
    observer: &mut dyn TrainObserver,
) -> Result<StepReport, TrainError> {
    // Messages count steps from 1, as checkpoints and metrics do.
    let step = batch.step + 1;
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
            step,
            loss: loss_value,
            keys: batch.keys.join(", "),
        });
    }
    warn_on_collapse(session, (&images, &texts), step, state, observer)?;

    let mut grads = loss.backward()?;
    let norm = match session.config.optimizer.max_grad_norm {
        Some(max_norm) => clip_grad_norm(model.params(), &mut grads, max_norm)?,
        None => grad_norm(model.params(), &grads)?,
    };
    if !norm.is_finite() {
        return Err(TrainError::NonFiniteGradient {
            step,
            norm,
            keys: batch.keys.join(", "),
        });
    }
    let lr = session.schedule.lr(batch.step);
    session.optimizer.step(model.params(), &grads, lr)?;

    let scale = paperclip_clip::loss::logit_multiplier(model.logit_scale(), session.mode)?;
    Ok(StepReport {
        step,
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

/// Warns when the batch's embeddings vary less than `training.collapse_variance` and less
/// than a tenth of what they did at the session's first step. The second condition keeps
/// a freshly initialized model, whose embeddings start close together, from warning.
fn warn_on_collapse(
    session: &Session,
    (images, texts): (&Tensor, &Tensor),
    step: u64,
    state: &mut LoopState,
    observer: &mut dyn TrainObserver,
) -> Result<(), TrainError> {
    let threshold = session.config.training.collapse_variance;
    let current = (embedding_variance(images)?, embedding_variance(texts)?);
    let first = *state.first_variances.get_or_insert(current);
    let collapsed = |now: f64, start: f64| now < threshold && now < 0.1 * start;
    if collapsed(current.0, first.0) || collapsed(current.1, first.1) {
        tracing::debug!(
            step,
            image_variance = current.0,
            text_variance = current.1,
            "embedding collapse"
        );
        observer.warn(&format!(
            "step {step}: embeddings are collapsing (variance per dimension: images {:.2e}, \
             texts {:.2e}, at the session's first step {:.2e} and {:.2e}); lower \
             optimizer.lr or check that captions differ",
            current.0, current.1, first.0, first.1
        ));
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
    if let Some(name) = first_non_finite(&session.model)? {
        return Err(TrainError::NonFiniteParameter { step, name });
    }
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

/// Returns the first parameter with a NaN or infinite element, if any.
fn first_non_finite(model: &ClipModel) -> Result<Option<String>, TrainError> {
    for (name, var) in model.params().iter() {
        let sum = var.as_tensor().sum_all()?.to_scalar::<f32>()?;
        if !sum.is_finite() {
            // An overflowing sum of finite values also lands here; check elementwise.
            let values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            if values.iter().any(|v| !v.is_finite()) {
                return Ok(Some(name.to_string()));
            }
        }
    }
    Ok(None)
}
