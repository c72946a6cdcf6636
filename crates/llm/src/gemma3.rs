//! Gemma 3 decoder over quantized GGUF weights, computed with candle.
//!
//! The computation follows llama.cpp's `gemma3` graph, which is the reference the greedy
//! parity test compares against:
//! - input embeddings are scaled by `sqrt(hidden)`;
//! - each block is `x += post_attn_norm(attn(attn_norm(x)))`, then
//!   `x += post_ffw_norm(ffn(ffn_norm(x)))`; the GGUF norm weights already hold Gemma's
//!   `1 + w`, so every norm is a plain RMS norm;
//! - attention normalizes queries and keys per head (RMS), applies NeoX-style rotary
//!   embeddings and scales queries by `1/sqrt(head_dim)`; keys and values are shared by
//!   query groups (grouped-query attention);
//! - the feed-forward is `down(gelu_tanh(gate(x)) * up(x))`;
//! - five of every six layers are local: they see only the last `sliding_window` positions
//!   and use rotary base 10,000; the others are global with the file's rotary base.
//!
//! Invariants: one sequence at a time; [`Gemma3::forward`] appends to the key/value cache
//! at the position it is given, so callers feed positions in order and call
//! [`Gemma3::clear`] before a new sequence. Masks use absolute positions, so a batch of
//! several tokens can follow an earlier prefill (forced tokens of the grammar do this).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};

use crate::error::ModelError;

/// Rotary base of the local (sliding-window) layers; llama.cpp fixes it for Gemma 3.
const LOCAL_ROPE_BASE: f32 = 10_000.0;

/// Every `SWA_PATTERN`-th layer is global, the others local.
const SWA_PATTERN: usize = 6;

/// Hyper-parameters read from the `gemma3.*` metadata keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3Config {
    /// Width of the residual stream (`embedding_length`).
    pub hidden: usize,
    /// Number of decoder blocks (`block_count`).
    pub layers: usize,
    /// Query heads (`attention.head_count`).
    pub heads: usize,
    /// Key/value heads (`attention.head_count_kv`).
    pub kv_heads: usize,
    /// Width of one head (`attention.key_length`).
    pub head_dim: usize,
    /// RMS norm epsilon (`attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// Rotary base of the global layers (`rope.freq_base`).
    pub rope_base: f32,
    /// Linear rotary scaling of the global layers (`rope.scaling.factor`, 1 when absent).
    pub rope_scale: f32,
    /// Window of the local layers (`attention.sliding_window`).
    pub sliding_window: usize,
    /// Maximum sequence length the model was trained for (`context_length`).
    pub context_length: usize,
}

impl Gemma3Config {
    fn from_metadata(
        metadata: &std::collections::HashMap<String, gguf_file::Value>,
    ) -> Result<Self, ModelError> {
        let arch = metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "gemma3" {
            return Err(ModelError::UnsupportedArchitecture { found: arch });
        }
        let int = |key: &'static str| -> Result<usize, ModelError> {
            let full = format!("gemma3.{key}");
            let value = metadata
                .get(&full)
                .ok_or(ModelError::MissingKey { key: full.clone() })?;
            value
                .to_u64()
                .or_else(|_| value.to_u32().map(u64::from))
                .map(|v| v as usize)
                .map_err(|_| ModelError::MissingKey { key: full })
        };
        let float = |key: &'static str, default: Option<f32>| -> Result<f32, ModelError> {
            let full = format!("gemma3.{key}");
            match metadata.get(&full) {
                Some(v) => v.to_f32().map_err(|_| ModelError::MissingKey { key: full }),
                None => default.ok_or(ModelError::MissingKey { key: full }),
            }
        };
        Ok(Self {
            hidden: int("embedding_length")?,
            layers: int("block_count")?,
            heads: int("attention.head_count")?,
            kv_heads: int("attention.head_count_kv")?,
            head_dim: int("attention.key_length")?,
            rms_eps: float("attention.layer_norm_rms_epsilon", Some(1e-6))?,
            rope_base: float("rope.freq_base", Some(1_000_000.0))?,
            rope_scale: float("rope.scaling.factor", Some(1.0))?,
            sliding_window: int("attention.sliding_window")?,
            context_length: int("context_length")?,
        })
    }

    fn is_local(&self, layer: usize) -> bool {
        layer % SWA_PATTERN < SWA_PATTERN - 1
    }
}

/// Cosine and sine tables of one rotary base, `[positions, head_dim / 2]`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(
        base: f32,
        scale: f32,
        head_dim: usize,
        positions: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let inv_freq: Vec<f32> = (0..head_dim / 2)
            .map(|i| 1.0 / base.powf(2.0 * i as f32 / head_dim as f32) / scale)
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), device)?;
        let t = Tensor::arange(0u32, positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = t.broadcast_mul(&inv_freq)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// Rotates `x` (`[1, heads, seq, head_dim]`) for positions `start..start + seq`.
    fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor, ModelError> {
        let seq = x.dim(2)?;
        let cos = self.cos.narrow(0, start, seq)?;
        let sin = self.sin.narrow(0, start, seq)?;
        Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?)
    }
}

/// Quantized weights are padded along the input width to a multiple of this, the
/// super-block width of candle's tiled x86 kernels (AVX-512 VNNI and AMX). Without the
/// padding, a 640-wide input (Gemma 3 270M) falls back to a per-block dot product.
const TILED_WIDTH: usize = 256;

/// `x @ w^T` with a quantized `w`, padding `x` with zeros to the weight's padded width.
struct Linear {
    weight: QMatMul,
    pad: usize,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        if self.pad == 0 {
            return Ok(self.weight.forward(x)?);
        }
        let x = x.pad_with_zeros(candle_core::D::Minus1, 0, self.pad)?;
        Ok(self.weight.forward(&x)?)
    }
}

struct Block {
    attn_norm: Tensor,
    /// Query, key and value projections stacked into one weight, in that order.
    qkv: Linear,
    o: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    /// Gate and up projections stacked into one weight, in that order.
    gate_up: Linear,
    down: Linear,
    post_ffw_norm: Tensor,
    local: bool,
    cache: KvCache,
}

/// Keys and values of one layer, `[1, kv_heads, positions, head_dim]`. The buffers are
/// kept across sequences and grow in steps of [`KvCache::GROW_BY`] positions.
#[derive(Default)]
struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

impl KvCache {
    const GROW_BY: usize = 512;

    fn reset(&mut self) {
        self.len = 0;
    }

    /// Appends `k` and `v` (`[1, kv_heads, seq, head_dim]`) and returns everything
    /// cached so far.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let seq = k.dim(2)?;
        let needed = self.len + seq;
        for buffer in [&mut self.k, &mut self.v] {
            let capacity = buffer.as_ref().map_or(0, |b| b.dim(2).unwrap_or(0));
            if capacity < needed {
                let mut shape = k.dims().to_vec();
                shape[2] = needed.div_ceil(Self::GROW_BY) * Self::GROW_BY;
                let grown = Tensor::zeros(shape, k.dtype(), k.device())?;
                if let Some(old) = buffer.as_ref().filter(|_| self.len > 0) {
                    grown.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
                *buffer = Some(grown);
            }
        }
        let (k_all, v_all) = (self.k.as_ref().unwrap(), self.v.as_ref().unwrap());
        k_all.slice_set(k, 2, self.len)?;
        v_all.slice_set(v, 2, self.len)?;
        self.len = needed;
        Ok((k_all.narrow(2, 0, needed)?, v_all.narrow(2, 0, needed)?))
    }
}

/// A loaded Gemma 3 model with its key/value cache.
pub struct Gemma3 {
    config: Gemma3Config,
    /// Embedding rows; wider than `hidden` when shared with the padded head.
    embedding: Arc<QTensor>,
    /// Output projection rows, `[vocab, hidden + head_pad]`: `output.weight`, or the
    /// embedding when the two are tied (Gemma 3), padded like every [`Linear`].
    head: Arc<QTensor>,
    head_pad: usize,
    lm_head: QMatMul,
    blocks: Vec<Block>,
    final_norm: Tensor,
    rope_local: Rope,
    rope_global: Rope,
    max_positions: usize,
    position: usize,
    device: Device,
}

impl Gemma3 {
    /// Loads the weights of a GGUF file. `max_positions` bounds the sequence length and
    /// sizes the rotary tables and caches; it is clamped to the model's context length.
    pub fn load(path: &Path, max_positions: usize, device: &Device) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|source| ModelError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| ModelError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let config = Gemma3Config::from_metadata(&content.metadata)?;
        let max_positions = max_positions.min(config.context_length);
        let mut weights = Weights {
            content: &content,
            reader: &mut reader,
            device,
            path,
        };

        // Gemma 3 ties the output projection to the embedding: one padded copy serves both.
        let tied = !content.tensor_infos.contains_key("output.weight");
        let head_name = if tied {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        let (head, head_pad) = weights.padded(head_name)?;
        let head = Arc::new(head);
        let embedding = if tied {
            head.clone()
        } else {
            Arc::new(weights.quantized("token_embd.weight")?)
        };
        let lm_head = QMatMul::from_arc(head.clone())?;
        let final_norm = weights.dense("output_norm.weight")?;
        let blocks = (0..config.layers)
            .map(|i| weights.block(i, config.is_local(i)))
            .collect::<Result<Vec<_>, _>>()?;

        let rope_local = Rope::new(LOCAL_ROPE_BASE, 1.0, config.head_dim, max_positions, device)?;
        let rope_global = Rope::new(
            config.rope_base,
            config.rope_scale,
            config.head_dim,
            max_positions,
            device,
        )?;
        Ok(Self {
            config,
            embedding,
            head,
            head_pad,
            lm_head,
            blocks,
            final_norm,
            rope_local,
            rope_global,
            max_positions,
            position: 0,
            device: device.clone(),
        })
    }

    /// Returns the hyper-parameters read from the file.
    pub fn config(&self) -> &Gemma3Config {
        &self.config
    }

    /// Returns the maximum sequence length this instance accepts (prompt plus output).
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Number of positions already in the cache.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Forgets the cached sequence.
    pub fn clear(&mut self) {
        for block in &mut self.blocks {
            block.cache.reset();
        }
        self.position = 0;
    }

    /// Runs `tokens` at the next positions and returns the final-norm hidden state of
    /// the last one, `[hidden]`. Feed it to [`Gemma3::logits`] or
    /// [`Gemma3::logits_for`].
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Tensor, ModelError> {
        let seq = tokens.len();
        let start = self.position;
        if seq == 0 {
            return Err(ModelError::EmptyInput);
        }
        if start + seq > self.max_positions {
            return Err(ModelError::TooLong {
                positions: start + seq,
                max: self.max_positions,
            });
        }

        let ids = Tensor::new(tokens, &self.device)?;
        let scale = (self.config.hidden as f64).sqrt();
        let rows = self.embedding.embedding(&ids)?;
        let rows = rows.narrow(1, 0, self.config.hidden)?;
        let mut x = (rows * scale)?.unsqueeze(0)?;
        for block in &mut self.blocks {
            let rope = if block.local {
                &self.rope_local
            } else {
                &self.rope_global
            };
            x = block.forward(&x, start, rope, &self.config)?;
        }
        self.position += seq;

        let last = x.narrow(1, seq - 1, 1)?.flatten_all()?;
        Ok(candle_nn::ops::rms_norm(
            &last,
            &self.final_norm,
            self.config.rms_eps,
        )?)
    }

    /// Logits over the whole vocabulary for a hidden state from [`Gemma3::forward`].
    pub fn logits(&self, hidden: &Tensor) -> Result<Vec<f32>, ModelError> {
        let hidden = self.pad_hidden(hidden)?;
        let logits = self.lm_head.forward(&hidden.unsqueeze(0)?)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Logits of the listed tokens only, in the order given: the dot products with their
    /// output rows. Cheaper than [`Gemma3::logits`] when few tokens are allowed.
    pub fn logits_for(&self, hidden: &Tensor, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        let ids = Tensor::new(ids, &self.device)?;
        let rows = self.head.embedding(&ids)?;
        let logits = rows.matmul(&self.pad_hidden(hidden)?.unsqueeze(1)?)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }

    fn pad_hidden(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        Ok(hidden.pad_with_zeros(0, 0, self.head_pad)?)
    }
}

impl Block {
    fn forward(
        &mut self,
        x: &Tensor,
        start: usize,
        rope: &Rope,
        config: &Gemma3Config,
    ) -> Result<Tensor, ModelError> {
        let eps = config.rms_eps;
        let h = candle_nn::ops::rms_norm(x, &self.attn_norm, eps)?;
        let h = self.attention(&h, start, rope, config)?;
        let x = (x + candle_nn::ops::rms_norm(&h, &self.post_attn_norm, eps)?)?;

        let h = candle_nn::ops::rms_norm(&x, &self.ffn_norm, eps)?;
        let gate_up = self.gate_up.forward(&h)?;
        let width = gate_up.dim(2)? / 2;
        let gate = gate_up.narrow(2, 0, width)?.gelu()?;
        let h = self
            .down
            .forward(&(gate * gate_up.narrow(2, width, width)?)?)?;
        Ok((x + candle_nn::ops::rms_norm(&h, &self.post_ffw_norm, eps)?)?)
    }

    fn attention(
        &mut self,
        x: &Tensor,
        start: usize,
        rope: &Rope,
        config: &Gemma3Config,
    ) -> Result<Tensor, ModelError> {
        let seq = x.dim(1)?;
        let (heads, kv_heads, head_dim) = (config.heads, config.kv_heads, config.head_dim);
        let groups = heads / kv_heads;

        let split = |t: Tensor, n: usize, norm: &Tensor| -> Result<Tensor, ModelError> {
            let t = t.reshape((1, seq, n, head_dim))?;
            let t = candle_nn::ops::rms_norm(&t, norm, config.rms_eps)?;
            Ok(t.transpose(1, 2)?.contiguous()?)
        };
        let qkv = self.qkv.forward(x)?;
        let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
        let q = split(qkv.narrow(2, 0, q_width)?, heads, &self.q_norm)?;
        let k = split(qkv.narrow(2, q_width, kv_width)?, kv_heads, &self.k_norm)?;
        let v = qkv
            .narrow(2, q_width + kv_width, kv_width)?
            .reshape((1, seq, kv_heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = (rope.apply(&q, start)? * (1.0 / (head_dim as f64).sqrt()))?;
        let k = rope.apply(&k, start)?;
        let (k, v) = self.cache.append(&k, &v)?;

        // Keys a local layer can still see: the oldest query needs positions after
        // `start + 1 - window`.
        let first_key = if self.local {
            (start + 1).saturating_sub(config.sliding_window)
        } else {
            0
        };
        let keys = start + seq - first_key;
        let k = k.narrow(2, first_key, keys)?;
        let v = v.narrow(2, first_key, keys)?;

        // Query heads sharing a key head are stacked along the rows: [1, kv, groups*seq, d].
        let q = q.reshape((1, kv_heads, groups * seq, head_dim))?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(mask) = self.mask(seq, start, first_key, groups, config, x.device())? {
            scores = scores.broadcast_add(&mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(&v.contiguous()?)?
            .reshape((1, heads, seq, head_dim))?
            .transpose(1, 2)?
            .reshape((1, seq, heads * head_dim))?;
        self.o.forward(&out)
    }

    /// Additive mask `[groups * seq, keys]` with `-inf` where a query must not look:
    /// later positions, and for local layers positions a full window or more behind.
    /// `None` when nothing is masked (one query with every key visible).
    fn mask(
        &self,
        seq: usize,
        start: usize,
        first_key: usize,
        groups: usize,
        config: &Gemma3Config,
        device: &Device,
    ) -> Result<Option<Tensor>, ModelError> {
        if seq == 1 {
            return Ok(None);
        }
        let keys = start + seq - first_key;
        let mut rows = Vec::with_capacity(seq * keys);
        for i in 0..seq {
            let query = start + i;
            for j in 0..keys {
                let key = first_key + j;
                let hidden = key > query || (self.local && query - key >= config.sliding_window);
                rows.push(if hidden { f32::NEG_INFINITY } else { 0.0 });
            }
        }
        let mask = Tensor::from_vec(rows, (seq, keys), device)?;
        Ok(Some(mask.repeat((groups, 1))?))
    }
}

/// Appends `pad` zero columns to a Q8_0 `[n, k]` weight by copying its blocks: exact, and
/// much faster than a dequantize and requantize round trip for a large vocabulary.
fn pad_q8_0(weight: &QTensor, pad: usize, device: &Device) -> Result<QTensor, ModelError> {
    let (n, k) = weight.shape().dims2()?;
    let block_bytes = GgmlDType::Q8_0.type_size();
    let block_values = GgmlDType::Q8_0.block_size();
    let row_bytes = k / block_values * block_bytes;
    let padded_row_bytes = (k + pad) / block_values * block_bytes;
    let data = weight.data()?;
    let mut padded = vec![0u8; n * padded_row_bytes];
    for (src, dst) in data
        .chunks_exact(row_bytes)
        .zip(padded.chunks_exact_mut(padded_row_bytes))
    {
        dst[..row_bytes].copy_from_slice(src);
    }
    let storage = QStorage::from_data(std::borrow::Cow::Owned(padded), device, GgmlDType::Q8_0)?;
    Ok(QTensor::new(storage, (n, k + pad))?)
}

/// Reads named tensors out of an open GGUF file.
struct Weights<'a, R> {
    content: &'a gguf_file::Content,
    reader: &'a mut R,
    device: &'a Device,
    path: &'a Path,
}

impl<R: std::io::Read + std::io::Seek> Weights<'_, R> {
    fn quantized(&mut self, name: &str) -> Result<QTensor, ModelError> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(ModelError::MissingTensor {
                name: name.to_string(),
                path: self.path.to_path_buf(),
            });
        }
        self.content
            .tensor(self.reader, name, self.device)
            .map_err(|e| ModelError::Read {
                path: self.path.to_path_buf(),
                detail: format!("tensor {name}: {e}"),
            })
    }

    fn dense(&mut self, name: &str) -> Result<Tensor, ModelError> {
        Ok(self.quantized(name)?.dequantize(self.device)?)
    }

    /// Reads the weight `name` for `x @ w^T` in the form [`Weights::padded`] describes.
    fn matmul(&mut self, name: &str) -> Result<Linear, ModelError> {
        let (weight, pad) = self.padded(name)?;
        Ok(Linear {
            weight: QMatMul::from_qtensor(weight)?,
            pad,
        })
    }

    /// Reads several `[n_i, k]` weights stacked into one `[sum n_i, k]` weight, so one
    /// matrix product serves them all. Rows of every GGML type are whole blocks, so
    /// stacking copies bytes. Weights of different types are first converted to Q8_0.
    fn stacked(&mut self, names: &[&str]) -> Result<Linear, ModelError> {
        let mut parts = names
            .iter()
            .map(|name| self.padded(name))
            .collect::<Result<Vec<_>, _>>()?;
        let dtype = parts[0].0.dtype();
        if parts.iter().any(|(w, _)| w.dtype() != dtype) {
            for (weight, _) in &mut parts {
                if weight.dtype() != GgmlDType::Q8_0 {
                    *weight = QTensor::quantize(&weight.dequantize(self.device)?, GgmlDType::Q8_0)?;
                }
            }
        }
        let (k, pad) = (parts[0].0.shape().dims2()?.1, parts[0].1);
        let mut rows = 0;
        let mut bytes = Vec::new();
        for (weight, part_pad) in &parts {
            let (n, part_k) = weight.shape().dims2()?;
            if part_k != k || *part_pad != pad {
                return Err(ModelError::Read {
                    path: self.path.to_path_buf(),
                    detail: format!("{names:?} have different input widths"),
                });
            }
            rows += n;
            bytes.extend_from_slice(&weight.data()?);
        }
        let dtype = parts[0].0.dtype();
        let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), self.device, dtype)?;
        Ok(Linear {
            weight: QMatMul::from_qtensor(QTensor::new(storage, (rows, k))?)?,
            pad,
        })
    }

    /// Reads a quantized `[n, k]` weight in a form candle's fast kernels take, and returns
    /// it with the number of zero columns added:
    /// - Q5_0 and Q5_1 become Q8_0, whose dot products are vectorized. The 5-bit ones are
    ///   scalar in candle: prefill of Gemma 3 270M ran about 5x slower with them. Q8_0 is
    ///   finer than both, so each weight only moves to the nearest Q8_0 step of its block;
    /// - a `k` that is not a multiple of [`TILED_WIDTH`] is padded with zero columns, and
    ///   a padded Q8_0 weight keeps its values exactly.
    fn padded(&mut self, name: &str) -> Result<(QTensor, usize), ModelError> {
        let weight = self.quantized(name)?;
        let k = weight.shape().dims2()?.1;
        let pad = k.next_multiple_of(TILED_WIDTH) - k;
        match weight.dtype() {
            GgmlDType::Q8_0 if pad > 0 => Ok((pad_q8_0(&weight, pad, self.device)?, pad)),
            GgmlDType::Q5_0 | GgmlDType::Q5_1 => {
                let dense = weight.dequantize(self.device)?.pad_with_zeros(1, 0, pad)?;
                Ok((QTensor::quantize(&dense, GgmlDType::Q8_0)?, pad))
            }
            _ => Ok((weight, 0)),
        }
    }

    fn block(&mut self, i: usize, local: bool) -> Result<Block, ModelError> {
        let p = |suffix: &str| format!("blk.{i}.{suffix}.weight");
        Ok(Block {
            attn_norm: self.dense(&p("attn_norm"))?,
            qkv: self.stacked(&[&p("attn_q"), &p("attn_k"), &p("attn_v")])?,
            o: self.matmul(&p("attn_output"))?,
            q_norm: self.dense(&p("attn_q_norm"))?,
            k_norm: self.dense(&p("attn_k_norm"))?,
            post_attn_norm: self.dense(&p("post_attention_norm"))?,
            ffn_norm: self.dense(&p("ffn_norm"))?,
            gate_up: self.stacked(&[&p("ffn_gate"), &p("ffn_up")])?,
            down: self.matmul(&p("ffn_down"))?,
            post_ffw_norm: self.dense(&p("post_ffw_norm"))?,
            local,
            cache: KvCache::default(),
        })
    }
}
