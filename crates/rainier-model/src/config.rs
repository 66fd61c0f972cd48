//! Hugging Face `config.json` → [`Model`].

use serde_json::{Map, Value};

use crate::ParamCount;

/// The `model_type` values [`Model::from_config_json`] understands.
pub const SUPPORTED_MODEL_TYPES: [&str; 5] = ["gpt2", "llama", "mistral", "mixtral", "qwen2"];

/// Built-in presets: `(name, config.json as shipped)`. GPT-3 175B is not on the Hub; its file
/// uses the GPT-2 config format with the paper's shape.
pub const PRESETS: [(&str, &str); 9] = [
    ("llama2-7b", include_str!("../presets/llama2-7b.json")),
    ("llama2-13b", include_str!("../presets/llama2-13b.json")),
    ("llama2-70b", include_str!("../presets/llama2-70b.json")),
    ("llama3-8b", include_str!("../presets/llama3-8b.json")),
    ("llama3-70b", include_str!("../presets/llama3-70b.json")),
    ("llama3.1-405b", include_str!("../presets/llama3.1-405b.json")),
    ("mixtral-8x7b", include_str!("../presets/mixtral-8x7b.json")),
    ("gpt3-175b", include_str!("../presets/gpt3-175b.json")),
    ("gpt2-124m", include_str!("../presets/gpt2-124m.json")),
];

/// The MLP of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mlp {
    /// `down(gelu(up(x)))` (GPT-2/3).
    Gelu,
    /// `down(silu(gate(x)) · up(x))` (Llama, Mistral, Qwen2, Mixtral experts).
    SwiGlu,
}

/// The normalization of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    LayerNorm,
    RmsNorm,
}

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// A learned `max_positions × hidden` table (GPT-2).
    Learned,
    /// Rotary embeddings on q and k (no parameters).
    Rope,
}

/// Mixture of experts: every layer's MLP is `experts` MLPs, each token routed to `top_k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moe {
    pub experts: u64,
    pub top_k: u64,
}

/// A decoder-only transformer, as the planners need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Preset name or the config file's path.
    pub name: String,
    pub model_type: String,
    pub hidden: u64,
    pub layers: u64,
    /// Query heads.
    pub heads: u64,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: u64,
    pub head_dim: u64,
    /// MLP inner size (per expert for MoE).
    pub ffn: u64,
    pub vocab: u64,
    pub max_positions: u64,
    pub tied_embeddings: bool,
    pub mlp: Mlp,
    pub norm: Norm,
    pub positions: Positions,
    /// Biases on q, k, v (Qwen2, GPT-2).
    pub qkv_bias: bool,
    /// Biases on every other linear layer too (GPT-2).
    pub linear_bias: bool,
    /// Each query attends to at most this many keys (Mistral).
    pub sliding_window: Option<u64>,
    pub moe: Option<Moe>,
}

/// Why a model could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("{file}: not valid JSON: {message}")]
    Json { file: String, message: String },
    #[error("{file}: field `{field}` {problem}")]
    Field { file: String, field: String, problem: String },
    #[error("{file}: model_type `{found}` is not supported (supported: {})", SUPPORTED_MODEL_TYPES.join(", "))]
    UnknownType { file: String, found: String },
    #[error("unknown model `{0}`: give a config.json path or a preset ({list})", list = preset_names())]
    UnknownPreset(String),
}

impl ModelError {
    /// The same error with control characters in every quoted string escaped (`\n`, `\u{1b}`).
    fn escaped(self) -> ModelError {
        let esc = |s: String| -> String {
            s.chars()
                .map(
                    |c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() },
                )
                .collect()
        };
        match self {
            ModelError::Json { file, message } => {
                ModelError::Json { file: esc(file), message: esc(message) }
            }
            ModelError::Field { file, field, problem } => {
                ModelError::Field { file: esc(file), field: esc(field), problem: esc(problem) }
            }
            ModelError::UnknownType { file, found } => {
                ModelError::UnknownType { file: esc(file), found: esc(found) }
            }
            ModelError::UnknownPreset(name) => ModelError::UnknownPreset(esc(name)),
        }
    }
}

fn preset_names() -> String {
    PRESETS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// Field access with errors that name the file and the field.
struct Fields<'a> {
    file: &'a str,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn error(&self, field: &str, problem: impl Into<String>) -> ModelError {
        ModelError::Field { file: self.file.into(), field: field.into(), problem: problem.into() }
    }

    /// A present, non-null value.
    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn positive_or(&self, field: &str, default: Option<u64>) -> Result<u64, ModelError> {
        match self.get(field) {
            None => default.ok_or_else(|| self.error(field, "is missing")),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(n),
                _ => Err(self.error(field, format!("must be a positive integer, found {v}"))),
            },
        }
    }

    fn positive(&self, field: &str) -> Result<u64, ModelError> {
        self.positive_or(field, None)
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool, ModelError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(field, format!("must be true or false, found {v}"))),
        }
    }

    fn str_or<'v>(&'v self, field: &str, default: &'v str) -> Result<&'v str, ModelError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => {
                v.as_str().ok_or_else(|| self.error(field, format!("must be a string, found {v}")))
            }
        }
    }
}

impl Model {
    /// A built-in preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Model, ModelError> {
        let (_, text) = PRESETS
            .iter()
            .find(|(preset, _)| *preset == name)
            .ok_or_else(|| ModelError::UnknownPreset(name.into()))?;
        let mut model = Model::from_config_json(text, &format!("preset {name}"))?;
        model.name = name.into();
        Ok(model)
    }

    /// Reads a Hugging Face `config.json`; `file` names it in errors, which quote the file's
    /// text with control characters escaped (one line, nothing that drives a terminal).
    pub fn from_config_json(text: &str, file: &str) -> Result<Model, ModelError> {
        Self::parse_config_json(text, file).map_err(ModelError::escaped)
    }

    fn parse_config_json(text: &str, file: &str) -> Result<Model, ModelError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ModelError::Json { file: file.into(), message: e.to_string() })?;
        let map = value.as_object().ok_or_else(|| ModelError::Json {
            file: file.into(),
            message: "the top level is not an object".into(),
        })?;
        let f = Fields { file, map };
        let model_type = match f.get("model_type") {
            None => return Err(f.error("model_type", "is missing")),
            Some(v) => v
                .as_str()
                .ok_or_else(|| f.error("model_type", format!("must be a string, found {v}")))?,
        };
        let model = match model_type {
            "gpt2" => Self::gpt2(&f)?,
            "llama" | "mistral" | "mixtral" | "qwen2" => Self::llama_like(&f, model_type)?,
            other => {
                return Err(ModelError::UnknownType { file: file.into(), found: other.into() })
            }
        };
        model.check(&f)?;
        Ok(Model { name: file.into(), ..model })
    }

    fn gpt2(f: &Fields<'_>) -> Result<Model, ModelError> {
        let hidden = f.positive("n_embd")?;
        let heads = f.positive("n_head")?;
        let activation = f.str_or("activation_function", "gelu_new")?;
        if !activation.starts_with("gelu") {
            return Err(f.error(
                "activation_function",
                format!("`{activation}` is not modelled (gelu, gelu_new, gelu_fast, gelu_pytorch_tanh are)"),
            ));
        }
        Ok(Model {
            name: String::new(),
            model_type: "gpt2".into(),
            hidden,
            layers: f.positive("n_layer")?,
            heads,
            kv_heads: heads,
            head_dim: hidden / heads,
            ffn: f.positive_or("n_inner", Some(4 * hidden))?,
            vocab: f.positive("vocab_size")?,
            max_positions: f.positive("n_positions")?,
            // GPT2LMHeadModel always ties the LM head to the token embedding.
            tied_embeddings: f.bool_or("tie_word_embeddings", true)?,
            mlp: Mlp::Gelu,
            norm: Norm::LayerNorm,
            positions: Positions::Learned,
            qkv_bias: true,
            linear_bias: true,
            sliding_window: None,
            moe: None,
        })
    }

    fn llama_like(f: &Fields<'_>, model_type: &str) -> Result<Model, ModelError> {
        let hidden = f.positive("hidden_size")?;
        let heads = f.positive("num_attention_heads")?;
        let activation = f.str_or("hidden_act", "silu")?;
        if activation != "silu" && activation != "swish" {
            return Err(f.error(
                "hidden_act",
                format!("`{activation}` is not modelled for {model_type} (silu is)"),
            ));
        }
        let moe = if model_type == "mixtral" {
            Some(Moe {
                experts: f.positive("num_local_experts")?,
                top_k: f.positive("num_experts_per_tok")?,
            })
        } else {
            None
        };
        // Mistral and Mixtral use `sliding_window` when set; Qwen2 only with `use_sliding_window`.
        let window_on = match model_type {
            "mistral" | "mixtral" => true,
            "qwen2" => f.bool_or("use_sliding_window", false)?,
            _ => false,
        };
        let sliding_window = if window_on && f.get("sliding_window").is_some() {
            Some(f.positive("sliding_window")?)
        } else {
            None
        };
        Ok(Model {
            name: String::new(),
            model_type: model_type.into(),
            hidden,
            layers: f.positive("num_hidden_layers")?,
            heads,
            kv_heads: f.positive_or("num_key_value_heads", Some(heads))?,
            head_dim: f.positive_or("head_dim", Some(hidden / heads))?,
            ffn: f.positive("intermediate_size")?,
            vocab: f.positive("vocab_size")?,
            max_positions: f.positive_or("max_position_embeddings", Some(4096))?,
            tied_embeddings: f.bool_or("tie_word_embeddings", false)?,
            mlp: Mlp::SwiGlu,
            norm: Norm::RmsNorm,
            positions: Positions::Rope,
            qkv_bias: model_type == "qwen2" || f.bool_or("attention_bias", false)?,
            linear_bias: false,
            sliding_window,
            moe,
        })
    }

    fn check(&self, f: &Fields<'_>) -> Result<(), ModelError> {
        let (heads_field, kv_field, hidden_field) = if self.model_type == "gpt2" {
            ("n_head", "n_head", "n_embd")
        } else {
            ("num_attention_heads", "num_key_value_heads", "hidden_size")
        };
        if self.model_type == "gpt2" && self.hidden % self.heads != 0 {
            return Err(f.error(
                heads_field,
                format!("({}) must divide {hidden_field} ({})", self.heads, self.hidden),
            ));
        }
        if self.head_dim == 0 {
            return Err(f.error(
                heads_field,
                format!("({}) exceeds {hidden_field} ({})", self.heads, self.hidden),
            ));
        }
        if self.heads % self.kv_heads != 0 {
            return Err(f.error(
                kv_field,
                format!("({}) must divide {heads_field} ({})", self.kv_heads, self.heads),
            ));
        }
        if let Some(moe) = self.moe {
            if moe.top_k > moe.experts {
                return Err(f.error(
                    "num_experts_per_tok",
                    format!("({}) exceeds num_local_experts ({})", moe.top_k, moe.experts),
                ));
            }
        }
        // Every size below 2^24 and the model below 2^50 parameters keeps every count this
        // crate and the planners compute (tokens × widths, parameters × bytes) inside u64.
        const MAX_DIM: u64 = 1 << 24;
        let gpt2 = self.model_type == "gpt2";
        let name =
            |gpt2_name: &'static str, hf_name: &'static str| if gpt2 { gpt2_name } else { hf_name };
        let mut sizes = vec![
            (hidden_field, self.hidden),
            (name("n_layer", "num_hidden_layers"), self.layers),
            (heads_field, self.heads),
            (kv_field, self.kv_heads),
            ("vocab_size", self.vocab),
            (name("n_inner", "intermediate_size"), self.ffn),
            (name("n_embd", "head_dim"), self.head_dim),
            (name("n_positions", "max_position_embeddings"), self.max_positions),
        ];
        if let Some(moe) = self.moe {
            sizes.push(("num_local_experts", moe.experts));
        }
        for (field, value) in sizes {
            if value > MAX_DIM {
                return Err(
                    f.error(field, format!("({value}) is absurdly large (limit {MAX_DIM})"))
                );
            }
        }
        let experts = self.moe.map_or(1.0, |m| m.experts as f64);
        let (h, layers) = (self.hidden as f64, self.layers as f64);
        let approx_params = layers
            * (2.0 * h * (self.attention_width() + self.kv_width()) as f64
                + experts * 3.0 * h * self.ffn as f64)
            + 2.0 * self.vocab as f64 * h;
        const MAX_PARAMS: f64 = (1u64 << 50) as f64;
        if approx_params > MAX_PARAMS {
            return Err(f.error(
                hidden_field,
                format!("and the other sizes give ~{approx_params:.2e} parameters, absurdly many (limit 2^50)"),
            ));
        }
        Ok(())
    }

    /// Width of the attention (query heads × head dim); equals `hidden` for most models.
    pub fn attention_width(&self) -> u64 {
        self.heads * self.head_dim
    }

    /// Width of the key or the value projection.
    pub fn kv_width(&self) -> u64 {
        self.kv_heads * self.head_dim
    }

    /// MLP weight matrices per expert: 3 for SwiGLU (gate, up, down), 2 for GELU.
    pub fn mlp_matrices(&self) -> u64 {
        match self.mlp {
            Mlp::SwiGlu => 3,
            Mlp::Gelu => 2,
        }
    }

    /// Parameter counts.
    pub fn params(&self) -> ParamCount {
        let h = self.hidden;
        let attention = h * self.attention_width() * 2 + h * self.kv_width() * 2;
        let attention_bias =
            if self.qkv_bias { self.attention_width() + 2 * self.kv_width() } else { 0 }
                + if self.linear_bias { h } else { 0 };
        let expert =
            self.mlp_matrices() * h * self.ffn + if self.linear_bias { self.ffn + h } else { 0 };
        let norm = match self.norm {
            Norm::LayerNorm => 2 * h,
            Norm::RmsNorm => h,
        };
        let (experts, active, router) = match self.moe {
            Some(moe) => (moe.experts, moe.top_k, h * moe.experts),
            None => (1, 1, 0),
        };
        let shared = attention + attention_bias + 2 * norm + router;
        ParamCount {
            embedding: self.vocab * h,
            positions: match self.positions {
                Positions::Learned => self.max_positions * h,
                Positions::Rope => 0,
            },
            per_layer: shared + experts * expert,
            per_layer_active: shared + active * expert,
            lm_head: if self.tied_embeddings { 0 } else { self.vocab * h },
            final_norm: norm,
        }
    }

    /// Parameters that take part in a matmul for one token: every layer's active weights and
    /// the LM head (tied or not), not the embedding lookup. This is the `N` of `6·N`.
    pub fn matmul_params_active(&self) -> u64 {
        let p = self.params();
        p.per_layer_active * self.layers + self.vocab * self.hidden + p.final_norm
    }

    /// Keys one query attends to, averaged over a sequence of `seq` tokens: `seq/2` for causal
    /// attention, less with a sliding window of `w`: `w − w²/(2·seq)`.
    pub fn mean_context(&self, seq: u64) -> f64 {
        let s = seq as f64;
        match self.sliding_window {
            Some(w) if w < seq => {
                let w = w as f64;
                w - w * w / (2.0 * s)
            }
            _ => s / 2.0,
        }
    }

    /// Model FLOPs per trained token: `6·N + 12·L·d·c`, with `N` from
    /// [`Model::matmul_params_active`], `d` the attention width and `c` the
    /// [mean context](Model::mean_context). Without a window `c = s/2`, which is the usual
    /// `6·N + 6·L·d·s` (causal attention counted once).
    pub fn model_flops_per_token(&self, seq: u64) -> f64 {
        6.0 * self.matmul_params_active() as f64
            + 12.0 * (self.layers * self.attention_width()) as f64 * self.mean_context(seq)
    }
}
