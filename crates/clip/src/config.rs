//! Model geometry: the sizes of both towers and of the joint embedding space.
//!
//! A [`ClipConfig`] comes from one of three places: a built-in preset (`vit-b-16`,
//! `vit-b-32`, `vit-l-14`, the OpenAI checkpoints' geometries), a Hugging Face
//! `config.json` (`text_config`, `vision_config`, `projection_dim`), or an open_clip model
//! config (`embed_dim`, `vision_cfg`, `text_cfg`). Whatever the source, [`ClipConfig::validate`]
//! has accepted it before a model is built: every width divides into its heads and every
//! image size into its patches.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ClipError;

/// The non-linearity inside each transformer MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, used by every OpenAI CLIP checkpoint.
    QuickGelu,
    /// The exact GELU, `x * Φ(x)`, used by most open_clip models trained from scratch.
    Gelu,
}

impl Activation {
    fn parse(name: &str, source: &str) -> Result<Self, ClipError> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            other => Err(ClipError::Config {
                source_name: source.to_string(),
                message: format!(
                    "hidden_act {other:?} is not supported; use \"quick_gelu\" or \"gelu\""
                ),
            }),
        }
    }

    /// The name Hugging Face uses in `hidden_act`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::QuickGelu => "quick_gelu",
            Self::Gelu => "gelu",
        }
    }
}

/// The text transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// Number of token ids (49,408 for the CLIP BPE vocabulary).
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// Width of the MLP's inner layer.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Context length: the most tokens one caption can have (77 for CLIP).
    pub max_position_embeddings: usize,
    /// End-of-text id. The value 2 selects Hugging Face's legacy rule, pooling at the
    /// largest id of each row, which is where the end-of-text token of the CLIP vocabulary is.
    pub eos_token_id: u32,
    /// MLP non-linearity.
    pub hidden_act: Activation,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
}

/// The vision transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Residual stream width.
    pub hidden_size: usize,
    /// Width of the MLP's inner layer.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Side of the square input image in pixels.
    pub image_size: usize,
    /// Side of one square patch in pixels.
    pub patch_size: usize,
    /// MLP non-linearity.
    pub hidden_act: Activation,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches per image side.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Positions in the sequence: one per patch plus the class token.
    pub fn num_positions(&self) -> usize {
        self.grid_size() * self.grid_size() + 1
    }
}

/// Both towers and the joint space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// Text tower.
    pub text: TextConfig,
    /// Vision tower.
    pub vision: VisionConfig,
    /// Width of the joint embedding space both projections map into.
    pub projection_dim: usize,
    /// Initial value of the stored (log-space) temperature parameter; 2.6592 = ln(1/0.07).
    pub logit_scale_init: f64,
}

/// The names [`ClipConfig::preset`] accepts.
pub const PRESETS: [&str; 3] = ["vit-b-16", "vit-b-32", "vit-l-14"];

impl ClipConfig {
    /// One of the OpenAI geometries by name: `vit-b-16`, `vit-b-32` or `vit-l-14`.
    pub fn preset(name: &str) -> Result<Self, ClipError> {
        let (vision_width, vision_layers, patch, text_width, projection) = match name {
            "vit-b-16" => (768, 12, 16, 512, 512),
            "vit-b-32" => (768, 12, 32, 512, 512),
            "vit-l-14" => (1024, 24, 14, 768, 768),
            other => {
                return Err(ClipError::UnknownPreset {
                    name: other.to_string(),
                    known: PRESETS.join(", "),
                });
            }
        };
        Ok(Self {
            text: TextConfig {
                vocab_size: 49_408,
                hidden_size: text_width,
                intermediate_size: text_width * 4,
                num_hidden_layers: 12,
                num_attention_heads: text_width / 64,
                max_position_embeddings: 77,
                eos_token_id: 2,
                hidden_act: Activation::QuickGelu,
                layer_norm_eps: 1e-5,
            },
            vision: VisionConfig {
                hidden_size: vision_width,
                intermediate_size: vision_width * 4,
                num_hidden_layers: vision_layers,
                num_attention_heads: vision_width / 64,
                image_size: 224,
                patch_size: patch,
                hidden_act: Activation::QuickGelu,
                layer_norm_eps: 1e-5,
            },
            projection_dim: projection,
            logit_scale_init: 2.6592,
        })
    }

    /// Reads a Hugging Face `config.json` or an open_clip model config, telling them apart by
    /// their keys (`text_config` versus `text_cfg`).
    pub fn from_json_file(path: &Path) -> Result<Self, ClipError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ClipError::Io {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|err| ClipError::Config {
            source_name: source.clone(),
            message: format!("not valid JSON: {err}"),
        })?;
        Self::from_json_value(&value, &source)
    }

    /// Like [`ClipConfig::from_json_file`], on a parsed value; `source` names it in errors.
    pub fn from_json_value(value: &Value, source: &str) -> Result<Self, ClipError> {
        let config = if value.get("text_config").is_some() {
            hf::parse(value, source)?
        } else if value.get("text_cfg").is_some() {
            open_clip::parse(value, source)?
        } else {
            return Err(ClipError::Config {
                source_name: source.to_string(),
                message: "neither a Hugging Face CLIP config (no \"text_config\") nor an \
                          open_clip model config (no \"text_cfg\")"
                    .to_string(),
            });
        };
        config.validate(source)?;
        Ok(config)
    }

    /// Checks that the sizes fit together; `source` names the config in errors.
    pub fn validate(&self, source: &str) -> Result<(), ClipError> {
        let fail = |message: String| {
            Err(ClipError::Config {
                source_name: source.to_string(),
                message,
            })
        };
        let text = &self.text;
        let vision = &self.vision;
        if text.num_attention_heads == 0
            || !text.hidden_size.is_multiple_of(text.num_attention_heads)
        {
            return fail(format!(
                "text hidden_size {} is not a multiple of num_attention_heads {}",
                text.hidden_size, text.num_attention_heads
            ));
        }
        if vision.num_attention_heads == 0
            || !vision
                .hidden_size
                .is_multiple_of(vision.num_attention_heads)
        {
            return fail(format!(
                "vision hidden_size {} is not a multiple of num_attention_heads {}",
                vision.hidden_size, vision.num_attention_heads
            ));
        }
        if vision.patch_size == 0 || !vision.image_size.is_multiple_of(vision.patch_size) {
            return fail(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                vision.image_size, vision.patch_size
            ));
        }
        let sizes = [
            text.vocab_size,
            text.hidden_size,
            text.intermediate_size,
            text.max_position_embeddings,
            vision.hidden_size,
            vision.intermediate_size,
            self.projection_dim,
        ];
        if sizes.contains(&0) {
            return fail("every size must be at least 1".to_string());
        }
        Ok(())
    }

    /// The Hugging Face `config.json` for this geometry, so `transformers.CLIPModel` loads a
    /// checkpoint written next to it.
    pub fn to_hf_json(&self) -> Value {
        serde_json::json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init,
            "torch_dtype": "float32",
            "text_config": {
                "model_type": "clip_text_model",
                "vocab_size": self.text.vocab_size,
                "hidden_size": self.text.hidden_size,
                "intermediate_size": self.text.intermediate_size,
                "num_hidden_layers": self.text.num_hidden_layers,
                "num_attention_heads": self.text.num_attention_heads,
                "max_position_embeddings": self.text.max_position_embeddings,
                "hidden_act": self.text.hidden_act.hf_name(),
                "layer_norm_eps": self.text.layer_norm_eps,
                "projection_dim": self.projection_dim,
                "eos_token_id": self.text.eos_token_id,
                "bos_token_id": 49406,
                "pad_token_id": 1,
            },
            "vision_config": {
                "model_type": "clip_vision_model",
                "hidden_size": self.vision.hidden_size,
                "intermediate_size": self.vision.intermediate_size,
                "num_hidden_layers": self.vision.num_hidden_layers,
                "num_attention_heads": self.vision.num_attention_heads,
                "image_size": self.vision.image_size,
                "patch_size": self.vision.patch_size,
                "num_channels": 3,
                "hidden_act": self.vision.hidden_act.hf_name(),
                "layer_norm_eps": self.vision.layer_norm_eps,
                "projection_dim": self.projection_dim,
            },
        })
    }
}

/// Small helpers to read typed fields with errors that name the field.
mod fields {
    use serde_json::Value;

    use crate::error::ClipError;

    pub fn usize_or(
        value: &Value,
        key: &str,
        default: Option<usize>,
        source: &str,
    ) -> Result<usize, ClipError> {
        match value.get(key) {
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| ClipError::Config {
                    source_name: source.to_string(),
                    message: format!("\"{key}\" must be a non-negative integer, found {v}"),
                }),
            None => default.ok_or_else(|| ClipError::Config {
                source_name: source.to_string(),
                message: format!("\"{key}\" is missing"),
            }),
        }
    }

    pub fn f64_or(value: &Value, key: &str, default: f64) -> f64 {
        value.get(key).and_then(Value::as_f64).unwrap_or(default)
    }

    pub fn str_or<'a>(value: &'a Value, key: &str, default: &'a str) -> &'a str {
        value.get(key).and_then(Value::as_str).unwrap_or(default)
    }
}

/// Hugging Face `CLIPConfig` JSON. Missing keys take `transformers`' defaults.
mod hf {
    use serde_json::Value;

    use super::fields::{f64_or, str_or, usize_or};
    use super::{Activation, ClipConfig, TextConfig, VisionConfig};
    use crate::error::ClipError;

    pub fn parse(value: &Value, source: &str) -> Result<ClipConfig, ClipError> {
        let text = &value["text_config"];
        let vision = value.get("vision_config").unwrap_or(&Value::Null);
        let hidden = usize_or(text, "hidden_size", Some(512), source)?;
        let vision_hidden = usize_or(vision, "hidden_size", Some(768), source)?;
        Ok(ClipConfig {
            text: TextConfig {
                vocab_size: usize_or(text, "vocab_size", Some(49_408), source)?,
                hidden_size: hidden,
                intermediate_size: usize_or(text, "intermediate_size", Some(2048), source)?,
                num_hidden_layers: usize_or(text, "num_hidden_layers", Some(12), source)?,
                num_attention_heads: usize_or(text, "num_attention_heads", Some(8), source)?,
                max_position_embeddings: usize_or(
                    text,
                    "max_position_embeddings",
                    Some(77),
                    source,
                )?,
                eos_token_id: usize_or(text, "eos_token_id", Some(2), source)? as u32,
                hidden_act: Activation::parse(str_or(text, "hidden_act", "quick_gelu"), source)?,
                layer_norm_eps: f64_or(text, "layer_norm_eps", 1e-5),
            },
            vision: VisionConfig {
                hidden_size: vision_hidden,
                intermediate_size: usize_or(vision, "intermediate_size", Some(3072), source)?,
                num_hidden_layers: usize_or(vision, "num_hidden_layers", Some(12), source)?,
                num_attention_heads: usize_or(vision, "num_attention_heads", Some(12), source)?,
                image_size: usize_or(vision, "image_size", Some(224), source)?,
                patch_size: usize_or(vision, "patch_size", Some(32), source)?,
                hidden_act: Activation::parse(str_or(vision, "hidden_act", "quick_gelu"), source)?,
                layer_norm_eps: f64_or(vision, "layer_norm_eps", 1e-5),
            },
            projection_dim: usize_or(value, "projection_dim", Some(512), source)?,
            logit_scale_init: f64_or(value, "logit_scale_init_value", 2.6592),
        })
    }
}

/// open_clip model configs (`open_clip/model_configs/*.json`).
mod open_clip {
    use serde_json::Value;

    use super::fields::usize_or;
    use super::{Activation, ClipConfig, TextConfig, VisionConfig};
    use crate::error::ClipError;

    pub fn parse(value: &Value, source: &str) -> Result<ClipConfig, ClipError> {
        let text = &value["text_cfg"];
        let vision = value.get("vision_cfg").unwrap_or(&Value::Null);
        reject_unsupported(vision, source)?;

        let text_width = usize_or(text, "width", Some(512), source)?;
        let vision_width = usize_or(vision, "width", Some(768), source)?;
        let head_width = usize_or(vision, "head_width", Some(64), source)?;
        let mlp_ratio = vision
            .get("mlp_ratio")
            .and_then(Value::as_f64)
            .unwrap_or(4.0);
        // open_clip builds the OpenAI architecture with QuickGELU only when asked to; the
        // `-quickgelu` config files and the OpenAI weights set it.
        let activation = if value.get("quick_gelu").and_then(Value::as_bool) == Some(true) {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        };
        Ok(ClipConfig {
            text: TextConfig {
                vocab_size: usize_or(text, "vocab_size", Some(49_408), source)?,
                hidden_size: text_width,
                intermediate_size: text_width * 4,
                num_hidden_layers: usize_or(text, "layers", Some(12), source)?,
                num_attention_heads: usize_or(text, "heads", Some(8), source)?,
                max_position_embeddings: usize_or(text, "context_length", Some(77), source)?,
                eos_token_id: 2,
                hidden_act: activation,
                layer_norm_eps: 1e-5,
            },
            vision: VisionConfig {
                hidden_size: vision_width,
                intermediate_size: (vision_width as f64 * mlp_ratio) as usize,
                num_hidden_layers: usize_or(vision, "layers", Some(12), source)?,
                num_attention_heads: vision_width / head_width.max(1),
                image_size: usize_or(vision, "image_size", Some(224), source)?,
                patch_size: usize_or(vision, "patch_size", Some(16), source)?,
                hidden_act: activation,
                layer_norm_eps: 1e-5,
            },
            projection_dim: usize_or(value, "embed_dim", None, source)?,
            logit_scale_init: 2.6592,
        })
    }

    /// open_clip towers this model cannot represent (timm backbones, attentional pooling,
    /// non-CLS pooling) are refused instead of silently built as plain ViTs.
    fn reject_unsupported(vision: &Value, source: &str) -> Result<(), ClipError> {
        for key in ["timm_model_name", "attentional_pool", "global_average_pool"] {
            let set = match vision.get(key) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => false,
                Some(Value::String(s)) => !s.is_empty(),
                Some(_) => true,
            };
            if set {
                return Err(ClipError::Config {
                    source_name: source.to_string(),
                    message: format!(
                        "vision_cfg.{key} is set; only the OpenAI ViT layout (class-token \
                         pooling) is supported"
                    ),
                });
            }
        }
        Ok(())
    }
}
