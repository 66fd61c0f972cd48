//! Hugging Face `config.json` → [`Model`].

use serde_json::{Map, Value};

use crate::ParamCount;

/// The `model_type` values [`Model::from_config_json`] understands (`llama4` reads the
/// `text_config` inside a Llama 4 config; `llama4_text` is that part on its own).
pub const SUPPORTED_MODEL_TYPES: [&str; 12] = [
    "deepseek_v2",
    "deepseek_v3",
    "gpt2",
    "gpt_oss",
    "llama",
    "llama4",
    "llama4_text",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "qwen3_moe",
];

/// Built-in presets: `(name, config.json as shipped)`. GPT-3 175B is not on the Hub; its file
/// uses the GPT-2 config format with the paper's shape.
pub const PRESETS: [(&str, &str); 17] = [
    ("llama2-7b", include_str!("../presets/llama2-7b.json")),
    ("llama2-13b", include_str!("../presets/llama2-13b.json")),
    ("llama2-70b", include_str!("../presets/llama2-70b.json")),
    ("llama3-8b", include_str!("../presets/llama3-8b.json")),
    ("llama3-70b", include_str!("../presets/llama3-70b.json")),
    ("llama3.2-1b", include_str!("../presets/llama3.2-1b.json")),
    ("llama3.1-405b", include_str!("../presets/llama3.1-405b.json")),
    ("mixtral-8x7b", include_str!("../presets/mixtral-8x7b.json")),
    ("gpt3-175b", include_str!("../presets/gpt3-175b.json")),
    ("gpt2-124m", include_str!("../presets/gpt2-124m.json")),
    ("qwen3-32b", include_str!("../presets/qwen3-32b.json")),
    ("qwen3-235b-a22b", include_str!("../presets/qwen3-235b-a22b.json")),
    ("deepseek-v3", include_str!("../presets/deepseek-v3.json")),
    ("llama4-scout", include_str!("../presets/llama4-scout.json")),
    ("llama4-maverick", include_str!("../presets/llama4-maverick.json")),
    ("gpt-oss-20b", include_str!("../presets/gpt-oss-20b.json")),
    ("gpt-oss-120b", include_str!("../presets/gpt-oss-120b.json")),
];

/// The MLP of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mlp {
    /// `down(gelu(up(x)))` (GPT-2/3).
    Gelu,
    /// `down(silu(gate(x)) · up(x))` (Llama, Mistral, Qwen, DeepSeek, GPT-OSS experts).
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

/// Mixture of experts: a MoE layer's MLP is `experts` routed MLPs of width `expert_ffn`, each
/// token sent to `top_k` of them, plus shared experts every token passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moe {
    pub experts: u64,
    pub top_k: u64,
    /// Inner width of one routed expert.
    pub expert_ffn: u64,
    /// Total inner width of the shared experts (0 without; DeepSeek's `n_shared_experts ×
    /// moe_intermediate_size`, Llama 4's one expert of `intermediate_size`).
    pub shared_ffn: u64,
    /// Biases on the router and the experts' projections (GPT-OSS).
    pub bias: bool,
    /// Group-limited routing: a token's experts come from at most this many of the expert
    /// groups (DeepSeek's `topk_group` of `n_group`, deployed one group per node so a token
    /// crosses the network to at most this many nodes).
    pub max_groups: Option<u64>,
}

/// Multi-head latent attention (DeepSeek-V2/V3): queries through an optional low-rank
/// bottleneck, keys and values expanded from one latent of `kv_lora_rank` per token plus a
/// decoupled rope key of `qk_rope_dim` shared by the heads. The latent and the rope key are
/// what the KV cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mla {
    /// Query bottleneck (`None`: a full `hidden × heads·(nope + rope)` projection).
    pub q_lora_rank: Option<u64>,
    pub kv_lora_rank: u64,
    pub qk_nope_dim: u64,
    pub qk_rope_dim: u64,
    /// Value width per head.
    pub v_dim: u64,
}

/// A run of layers of the same kind: `count` layers with the model's MoE MLP (`moe`) or its
/// dense one, with its local attention (sliding window or chunk, `local`) or full attention.
/// A model's groups are in order of first appearance and their counts sum to its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerGroup {
    pub count: u64,
    pub moe: bool,
    pub local: bool,
}

/// A decoder-only transformer, as the planners need it.
///
/// Layers may differ (DeepSeek's first dense layers, Llama 4's interleaved MoE and chunked
/// layers, GPT-OSS's alternating windows): [`Model::layer_groups`] says how many of each kind
/// there are and [`Model::variants`] gives each kind as a uniform model of its own, which is
/// what the per-layer methods ([`Model::layer_ops`] and the like) describe.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Preset name or the config file's path.
    pub name: String,
    pub model_type: String,
    pub hidden: u64,
    pub layers: u64,
    /// Query heads.
    pub heads: u64,
    /// Key/value heads (grouped-query attention when fewer than `heads`; `heads` with MLA).
    pub kv_heads: u64,
    /// Query and key width per head (`qk_nope + qk_rope` with MLA).
    pub head_dim: u64,
    /// Inner width of the dense MLP (`intermediate_size`; Llama 4's `intermediate_size_mlp`).
    pub ffn: u64,
    pub vocab: u64,
    pub max_positions: u64,
    pub tied_embeddings: bool,
    pub mlp: Mlp,
    pub norm: Norm,
    pub positions: Positions,
    /// Biases on q, k, v (Qwen2, GPT-2, GPT-OSS).
    pub qkv_bias: bool,
    /// Biases on every other linear layer too (GPT-2).
    pub linear_bias: bool,
    /// RMSNorm weights on each head's q and k (Qwen3).
    pub qk_norm: bool,
    /// A learned softmax sink per head (GPT-OSS).
    pub attention_sinks: bool,
    /// Local layers' queries attend to at most this many keys (Mistral, GPT-OSS).
    pub sliding_window: Option<u64>,
    /// Local layers' queries attend within their block of this many tokens (Llama 4).
    pub attention_chunk: Option<u64>,
    /// The MLP of the MoE layers (the MLP of every layer for Mixtral-style models).
    pub moe: Option<Moe>,
    pub mla: Option<Mla>,
    /// Which layers are MoE and which are local.
    pub layer_groups: Vec<LayerGroup>,
    /// Multi-token-prediction modules (DeepSeek-V3's `num_nextn_predict_layers`): counted in
    /// [`ParamCount::mtp`], not in the model's size, and not planned.
    pub mtp_layers: u64,
    /// `quantization_config.quant_method` of the checkpoint as shipped (`fp8`, `mxfp4`).
    pub quantization: Option<String>,
}

/// Every size below 2^24 and the model below 2^50 parameters keeps every count this crate and
/// the planners compute (tokens × widths, parameters × bytes) inside u64.
const MAX_DIM: u64 = 1 << 24;

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

    /// The layer count, checked before anything is sized by it.
    fn layers(&self, field: &str) -> Result<u64, ModelError> {
        let layers = self.positive(field)?;
        if layers > MAX_DIM {
            return Err(
                self.error(field, format!("({layers}) is absurdly large (limit {MAX_DIM})"))
            );
        }
        Ok(layers)
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool, ModelError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(field, format!("must be true or false, found {v}"))),
        }
    }

    /// A field that may be absent or null: `None`, else a positive integer.
    fn positive_opt(&self, field: &str) -> Result<Option<u64>, ModelError> {
        match self.get(field) {
            None => Ok(None),
            Some(_) => self.positive(field).map(Some),
        }
    }

    /// A non-negative integer, `default` when absent.
    fn count_or(&self, field: &str, default: u64) -> Result<u64, ModelError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| {
                self.error(field, format!("must be a non-negative integer, found {v}"))
            }),
        }
    }

    /// A list of layer indices below `layers` as one flag per layer (`None` when absent).
    fn layer_list(&self, field: &str, layers: u64) -> Result<Option<Vec<bool>>, ModelError> {
        let Some(v) = self.get(field) else { return Ok(None) };
        let items = v.as_array().ok_or_else(|| {
            self.error(field, format!("must be a list of layer indices, found {v}"))
        })?;
        let mut listed = vec![false; layers as usize];
        for item in items {
            match item.as_u64() {
                Some(i) if i < layers => listed[i as usize] = true,
                _ => {
                    return Err(self.error(
                        field,
                        format!(
                            "holds {item}, not a layer index below num_hidden_layers ({layers})"
                        ),
                    ))
                }
            }
        }
        Ok(Some(listed))
    }

    /// A list of `layers` flags, 0 or 1 (absent: `None`).
    fn layer_flags(&self, field: &str, layers: u64) -> Result<Option<Vec<bool>>, ModelError> {
        let Some(v) = self.get(field) else { return Ok(None) };
        let bad = || self.error(field, format!("must be {layers} flags (0 or 1), one per layer"));
        let items = v.as_array().ok_or_else(bad)?;
        if items.len() as u64 != layers {
            return Err(bad());
        }
        items
            .iter()
            .map(|item| match item.as_u64() {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// `layer_types` (`sliding_attention`, `chunked_attention` or `full_attention` per
    /// layer) as local-or-not flags, `None` when absent.
    fn layer_types(&self, layers: u64) -> Result<Option<Vec<bool>>, ModelError> {
        let Some(v) = self.get("layer_types") else { return Ok(None) };
        let items = v.as_array().filter(|a| a.len() as u64 == layers).ok_or_else(|| {
            self.error("layer_types", format!("must list {layers} layer types, one per layer"))
        })?;
        items
            .iter()
            .map(|item| match item.as_str() {
                Some("sliding_attention" | "chunked_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(self.error(
                    "layer_types",
                    format!("holds {item} (sliding_attention, chunked_attention and full_attention are modelled)"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Checks `rope_scaling` names a known scheme (none changes the cost; an unknown one
    /// means a config this crate does not understand).
    fn rope_scaling(&self) -> Result<(), ModelError> {
        let Some(v) = self.get("rope_scaling") else { return Ok(()) };
        let kind = v
            .as_object()
            .and_then(|o| o.get("rope_type").or_else(|| o.get("type")))
            .and_then(Value::as_str);
        const KNOWN: [&str; 9] = [
            "default",
            "linear",
            "dynamic",
            "yarn",
            "longrope",
            "llama3",
            "su",
            "mrope",
            "deepseek_yarn",
        ];
        match kind {
            Some(k) if KNOWN.contains(&k) => Ok(()),
            Some(k) => Err(self.error(
                "rope_scaling",
                format!("type `{k}` is unknown (known: {})", KNOWN.join(", ")),
            )),
            None => Err(self.error("rope_scaling", format!("has no rope_type: {v}"))),
        }
    }

    /// `quantization_config.quant_method`, if any.
    fn quantization(&self) -> Result<Option<String>, ModelError> {
        let Some(v) = self.get("quantization_config") else { return Ok(None) };
        match v.get("quant_method").and_then(Value::as_str) {
            Some(method) => Ok(Some(method.into())),
            None => Err(self.error("quantization_config", "has no quant_method string")),
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

/// Groups `(moe, local)` per layer into [`LayerGroup`]s, in order of first appearance.
fn group_layers(kinds: impl Iterator<Item = (bool, bool)>) -> Vec<LayerGroup> {
    let mut groups: Vec<LayerGroup> = Vec::new();
    for (moe, local) in kinds {
        match groups.iter_mut().find(|g| g.moe == moe && g.local == local) {
            Some(g) => g.count += 1,
            None => groups.push(LayerGroup { count: 1, moe, local }),
        }
    }
    groups
}

/// Field names of one family, for errors.
struct FieldNames {
    hidden: &'static str,
    layers: &'static str,
    heads: &'static str,
    kv_heads: &'static str,
    ffn: &'static str,
    experts: &'static str,
    expert_ffn: &'static str,
    positions: &'static str,
}

impl FieldNames {
    fn of(model_type: &str) -> FieldNames {
        let hf = FieldNames {
            hidden: "hidden_size",
            layers: "num_hidden_layers",
            heads: "num_attention_heads",
            kv_heads: "num_key_value_heads",
            ffn: "intermediate_size",
            experts: "num_local_experts",
            expert_ffn: "intermediate_size",
            positions: "max_position_embeddings",
        };
        match model_type {
            "gpt2" => FieldNames {
                hidden: "n_embd",
                layers: "n_layer",
                heads: "n_head",
                kv_heads: "n_head",
                ffn: "n_inner",
                positions: "n_positions",
                ..hf
            },
            "qwen3_moe" => {
                FieldNames { experts: "num_experts", expert_ffn: "moe_intermediate_size", ..hf }
            }
            "deepseek_v2" | "deepseek_v3" => FieldNames {
                kv_heads: "num_attention_heads",
                experts: "n_routed_experts",
                expert_ffn: "moe_intermediate_size",
                ..hf
            },
            "llama4_text" => FieldNames { ffn: "intermediate_size_mlp", ..hf },
            _ => hf,
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
        let top = Fields { file, map };
        // A Llama 4 config wraps the language model's in `text_config` (beside the vision
        // tower's, which the planners do not model).
        let f = if Self::model_type(&top)? == "llama4" {
            match top.get("text_config") {
                Some(Value::Object(inner)) => Fields { file, map: inner },
                Some(v) => {
                    return Err(top.error("text_config", format!("must be an object, found {v}")))
                }
                None => return Err(top.error("text_config", "is missing")),
            }
        } else {
            top
        };
        let model_type = match Self::model_type(&f)? {
            "llama4" => "llama4_text",
            other => other,
        };
        let mut model = match model_type {
            "gpt2" => Self::gpt2(&f)?,
            "deepseek_v2" | "deepseek_v3" => Self::deepseek(&f, model_type)?,
            "llama" | "mistral" | "mixtral" | "qwen2" | "qwen3" | "qwen3_moe" | "gpt_oss"
            | "llama4_text" => Self::llama_like(&f, model_type)?,
            other => {
                return Err(ModelError::UnknownType { file: file.into(), found: other.into() })
            }
        };
        f.rope_scaling()?;
        model.quantization = f.quantization()?;
        model.check(&f)?;
        Ok(Model { name: file.into(), ..model })
    }

    fn model_type<'v>(f: &'v Fields<'_>) -> Result<&'v str, ModelError> {
        match f.get("model_type") {
            None => Err(f.error("model_type", "is missing")),
            Some(v) => v
                .as_str()
                .ok_or_else(|| f.error("model_type", format!("must be a string, found {v}"))),
        }
    }

    /// The fields every family without them takes as defaults.
    fn base(model_type: &str, hidden: u64, layers: u64, heads: u64) -> Model {
        Model {
            name: String::new(),
            model_type: model_type.into(),
            hidden,
            layers,
            heads,
            kv_heads: heads,
            head_dim: hidden / heads,
            ffn: hidden.saturating_mul(4),
            vocab: 0,
            max_positions: 0,
            tied_embeddings: false,
            mlp: Mlp::SwiGlu,
            norm: Norm::RmsNorm,
            positions: Positions::Rope,
            qkv_bias: false,
            linear_bias: false,
            qk_norm: false,
            attention_sinks: false,
            sliding_window: None,
            attention_chunk: None,
            moe: None,
            mla: None,
            layer_groups: vec![LayerGroup { count: layers, moe: false, local: false }],
            mtp_layers: 0,
            quantization: None,
        }
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
            ffn: f.positive_or("n_inner", Some(hidden.saturating_mul(4)))?,
            vocab: f.positive("vocab_size")?,
            max_positions: f.positive("n_positions")?,
            // GPT2LMHeadModel always ties the LM head to the token embedding.
            tied_embeddings: f.bool_or("tie_word_embeddings", true)?,
            mlp: Mlp::Gelu,
            norm: Norm::LayerNorm,
            positions: Positions::Learned,
            qkv_bias: true,
            linear_bias: true,
            ..Self::base("gpt2", hidden, f.positive("n_layer")?, heads)
        })
    }

    /// The SiLU-gated families: Llama, Mistral, Mixtral, Qwen2/3 (dense and MoE), GPT-OSS and
    /// Llama 4's text model.
    fn llama_like(f: &Fields<'_>, model_type: &str) -> Result<Model, ModelError> {
        let hidden = f.positive("hidden_size")?;
        let heads = f.positive("num_attention_heads")?;
        let layers = f.layers("num_hidden_layers")?;
        let activation = f.str_or("hidden_act", "silu")?;
        if activation != "silu" && activation != "swish" {
            return Err(f.error(
                "hidden_act",
                format!("`{activation}` is not modelled for {model_type} (silu is)"),
            ));
        }
        let mut m = Self::base(model_type, hidden, layers, heads);
        m.kv_heads = f.positive_or("num_key_value_heads", Some(heads))?;
        m.head_dim = f.positive_or("head_dim", Some(hidden / heads))?;
        m.ffn = f.positive("intermediate_size")?;
        m.vocab = f.positive("vocab_size")?;
        m.max_positions = f.positive_or("max_position_embeddings", Some(4096))?;
        m.tied_embeddings = f.bool_or("tie_word_embeddings", false)?;
        // Qwen2 biases q, k, v always; `attention_bias` biases q, k, v and o (Llama, GPT-OSS).
        let attention_bias = f.bool_or("attention_bias", false)?;
        m.qkv_bias = model_type == "qwen2" || attention_bias;
        m.linear_bias = false;
        let index = || 0..layers;
        let mut moe_layers = vec![false; layers as usize];
        let mut local = vec![false; layers as usize];
        match model_type {
            "mixtral" | "gpt_oss" => {
                m.moe = Some(Moe {
                    experts: f.positive("num_local_experts")?,
                    top_k: f.positive("num_experts_per_tok")?,
                    expert_ffn: m.ffn,
                    shared_ffn: 0,
                    bias: model_type == "gpt_oss",
                    max_groups: None,
                });
                moe_layers.fill(true);
            }
            "qwen3_moe" => {
                let experts = f.count_or("num_experts", 0)?;
                if experts > 0 {
                    m.moe = Some(Moe {
                        experts,
                        top_k: f.positive("num_experts_per_tok")?,
                        expert_ffn: f.positive("moe_intermediate_size")?,
                        shared_ffn: 0,
                        bias: false,
                        max_groups: None,
                    });
                    let step = f.positive_or("decoder_sparse_step", Some(1))?;
                    let dense = f.layer_list("mlp_only_layers", layers)?;
                    for i in index() {
                        let listed = dense.as_ref().is_some_and(|d| d[i as usize]);
                        moe_layers[i as usize] = !listed && (i + 1) % step == 0;
                    }
                }
            }
            "llama4_text" => {
                let expert_ffn = m.ffn;
                m.ffn = f.positive_or("intermediate_size_mlp", Some(expert_ffn))?;
                m.moe = Some(Moe {
                    experts: f.positive("num_local_experts")?,
                    top_k: f.positive("num_experts_per_tok")?,
                    expert_ffn,
                    // One shared expert of the routed experts' width (Llama4TextMoe).
                    shared_ffn: expert_ffn,
                    bias: false,
                    max_groups: None,
                });
                // Llama4TextConfig: `moe_layers` or every `interleave_moe_layer_step`-th.
                let step = f.positive_or("interleave_moe_layer_step", Some(1))?;
                moe_layers = match f.layer_list("moe_layers", layers)? {
                    Some(listed) => listed,
                    None => index().map(|i| (i + 1) % step == 0).collect(),
                };
                // Rope layers attend within their chunk; every fourth (NoPE) layer sees all.
                m.attention_chunk = f.positive_opt("attention_chunk_size")?;
                if m.attention_chunk.is_some() {
                    local = match f.layer_flags("no_rope_layers", layers)? {
                        Some(flags) => flags,
                        None => {
                            let interval = f.positive_or("no_rope_layer_interval", Some(4))?;
                            index().map(|i| (i + 1) % interval != 0).collect()
                        }
                    };
                }
            }
            _ => {}
        }
        m.qk_norm = matches!(model_type, "qwen3" | "qwen3_moe");
        m.attention_sinks = model_type == "gpt_oss";
        // Sliding windows: Mistral and Mixtral when set, GPT-OSS per `layer_types`, Qwen only
        // with `use_sliding_window` (on the layers from `max_window_layers` on).
        let window_on = match model_type {
            "mistral" | "mixtral" | "gpt_oss" => true,
            "qwen2" | "qwen3" | "qwen3_moe" => f.bool_or("use_sliding_window", false)?,
            _ => false,
        };
        if window_on && f.get("sliding_window").is_some() {
            m.sliding_window = Some(f.positive("sliding_window")?);
            local = match f.layer_types(layers)? {
                Some(types) => types,
                None if model_type.starts_with("qwen") => {
                    let first = f.count_or("max_window_layers", 28)?;
                    index().map(|i| i >= first).collect()
                }
                None => vec![true; layers as usize],
            };
        }
        m.layer_groups = group_layers(moe_layers.into_iter().zip(local));
        Ok(m)
    }

    /// DeepSeek-V2/V3: multi-head latent attention, shared plus fine-grained routed experts
    /// after `first_k_dense_replace` dense layers, multi-token-prediction modules.
    fn deepseek(f: &Fields<'_>, model_type: &str) -> Result<Model, ModelError> {
        let hidden = f.positive("hidden_size")?;
        let heads = f.positive("num_attention_heads")?;
        let layers = f.layers("num_hidden_layers")?;
        let activation = f.str_or("hidden_act", "silu")?;
        if activation != "silu" {
            return Err(f.error(
                "hidden_act",
                format!("`{activation}` is not modelled for {model_type} (silu is)"),
            ));
        }
        let mla = Mla {
            q_lora_rank: f.positive_opt("q_lora_rank")?,
            kv_lora_rank: f.positive("kv_lora_rank")?,
            qk_nope_dim: f.positive("qk_nope_head_dim")?,
            qk_rope_dim: f.positive("qk_rope_head_dim")?,
            v_dim: f.positive("v_head_dim")?,
        };
        let mut m = Self::base(model_type, hidden, layers, heads);
        m.head_dim = mla.qk_nope_dim.saturating_add(mla.qk_rope_dim);
        m.mla = Some(mla);
        m.ffn = f.positive("intermediate_size")?;
        m.vocab = f.positive("vocab_size")?;
        m.max_positions = f.positive_or("max_position_embeddings", Some(4096))?;
        m.tied_embeddings = f.bool_or("tie_word_embeddings", false)?;
        m.qkv_bias = f.bool_or("attention_bias", false)?;
        m.mtp_layers = f.count_or("num_nextn_predict_layers", 0)?;
        let mut moe_layers = vec![false; layers as usize];
        if let Some(experts) = f.positive_opt("n_routed_experts")? {
            let expert_ffn = f.positive("moe_intermediate_size")?;
            m.moe = Some(Moe {
                experts,
                top_k: f.positive("num_experts_per_tok")?,
                expert_ffn,
                shared_ffn: f.count_or("n_shared_experts", 0)?.saturating_mul(expert_ffn),
                bias: false,
                max_groups: Self::group_limit(f, experts)?,
            });
            let first_dense = f.count_or("first_k_dense_replace", 0)?;
            let every = f.positive_or("moe_layer_freq", Some(1))?;
            for i in 0..layers {
                moe_layers[i as usize] = i >= first_dense && i % every == 0;
            }
        }
        m.layer_groups = group_layers(moe_layers.into_iter().map(|moe| (moe, false)));
        Ok(m)
    }

    /// DeepSeek's group-limited routing (`topk_method` `group_limited_greedy` or
    /// `noaux_tc`): `topk_group` of `n_group` expert groups per token.
    fn group_limit(f: &Fields<'_>, experts: u64) -> Result<Option<u64>, ModelError> {
        let method = f.str_or("topk_method", "greedy")?;
        if !matches!(method, "group_limited_greedy" | "noaux_tc") {
            return Ok(None);
        }
        let groups = f.positive_or("n_group", Some(1))?;
        let per_token = f.positive_or("topk_group", Some(groups))?;
        if per_token > groups {
            return Err(f.error("topk_group", format!("({per_token}) exceeds n_group ({groups})")));
        }
        if experts % groups != 0 {
            return Err(
                f.error("n_group", format!("({groups}) must divide n_routed_experts ({experts})"))
            );
        }
        Ok((per_token < groups).then_some(per_token))
    }

    fn check(&self, f: &Fields<'_>) -> Result<(), ModelError> {
        let names = FieldNames::of(&self.model_type);
        if self.model_type == "gpt2" && self.hidden % self.heads != 0 {
            return Err(f.error(
                names.heads,
                format!("({}) must divide {} ({})", self.heads, names.hidden, self.hidden),
            ));
        }
        if self.head_dim == 0 {
            return Err(f.error(
                names.heads,
                format!("({}) exceeds {} ({})", self.heads, names.hidden, self.hidden),
            ));
        }
        if self.heads % self.kv_heads != 0 {
            return Err(f.error(
                names.kv_heads,
                format!("({}) must divide {} ({})", self.kv_heads, names.heads, self.heads),
            ));
        }
        if let Some(moe) = self.moe {
            if moe.top_k > moe.experts {
                return Err(f.error(
                    "num_experts_per_tok",
                    format!("({}) exceeds {} ({})", moe.top_k, names.experts, moe.experts),
                ));
            }
        }
        let mut sizes = vec![
            (names.hidden, self.hidden),
            (names.layers, self.layers),
            (names.heads, self.heads),
            (names.kv_heads, self.kv_heads),
            ("vocab_size", self.vocab),
            (names.ffn, self.ffn),
            (if self.model_type == "gpt2" { "n_embd" } else { "head_dim" }, self.head_dim),
            (names.positions, self.max_positions),
            ("num_nextn_predict_layers", self.mtp_layers),
        ];
        if let Some(moe) = self.moe {
            sizes.extend([
                (names.experts, moe.experts),
                (names.expert_ffn, moe.expert_ffn),
                ("n_shared_experts", moe.shared_ffn / moe.expert_ffn.max(1)),
            ]);
        }
        if let Some(mla) = self.mla {
            sizes.extend([
                ("q_lora_rank", mla.q_lora_rank.unwrap_or(1)),
                ("kv_lora_rank", mla.kv_lora_rank),
                ("qk_nope_head_dim", mla.qk_nope_dim),
                ("qk_rope_head_dim", mla.qk_rope_dim),
                ("v_head_dim", mla.v_dim),
            ]);
        }
        for (field, value) in sizes {
            if value > MAX_DIM {
                return Err(
                    f.error(field, format!("({value}) is absurdly large (limit {MAX_DIM})"))
                );
            }
        }
        let approx_params = self.approx_params();
        const MAX_PARAMS: f64 = (1u64 << 50) as f64;
        if approx_params > MAX_PARAMS {
            return Err(f.error(
                names.hidden,
                format!("and the other sizes give ~{approx_params:.2e} parameters, absurdly many (limit 2^50)"),
            ));
        }
        Ok(())
    }

    /// The parameter count in floating point (no overflow), for the size check.
    fn approx_params(&self) -> f64 {
        let h = self.hidden as f64;
        let attention = h * (2 * self.attention_width() + 2 * self.kv_width()) as f64
            + self.mla.map_or(0.0, |a| {
                let q = a.q_lora_rank.unwrap_or(0) as f64;
                let heads = self.heads as f64;
                (h + heads * self.head_dim as f64) * q
                    + (h + heads * (a.qk_nope_dim + a.v_dim) as f64) * a.kv_lora_rank as f64
            });
        let dense = 3.0 * h * self.ffn as f64;
        let moe = self.moe.map_or(0.0, |m| {
            3.0 * h * (m.experts as f64 * m.expert_ffn as f64 + m.shared_ffn as f64)
        });
        (self.layers + self.mtp_layers) as f64 * (attention + dense + moe + 2.0 * h * h)
            + 2.0 * self.vocab as f64 * h
    }

    /// Width of the queries (heads × head dim); equals `hidden` for most models.
    pub fn attention_width(&self) -> u64 {
        self.heads * self.head_dim
    }

    /// Width of the key projection (and of the value one without MLA).
    pub fn kv_width(&self) -> u64 {
        self.kv_heads * self.head_dim
    }

    /// Value width per head (`head_dim`, MLA's `v_head_dim`).
    pub fn v_head_dim(&self) -> u64 {
        self.mla.map_or(self.head_dim, |a| a.v_dim)
    }

    /// MLP weight matrices per expert: 3 for SwiGLU (gate, up, down), 2 for GELU.
    pub fn mlp_matrices(&self) -> u64 {
        match self.mlp {
            Mlp::SwiGlu => 3,
            Mlp::Gelu => 2,
        }
    }

    /// Layers with the MoE MLP.
    pub fn moe_layers(&self) -> u64 {
        self.layer_groups.iter().filter(|g| g.moe).map(|g| g.count).sum()
    }

    /// Each kind of layer as a uniform model of `count` layers of that kind: `(count, model)`
    /// in the order of [`Model::layer_groups`]. A uniform model is its own single variant.
    pub fn variants(&self) -> Vec<(u64, Model)> {
        if self.layer_groups.len() == 1 {
            return vec![(self.layers, self.clone())];
        }
        self.layer_groups
            .iter()
            .map(|g| {
                let variant = Model {
                    layers: g.count,
                    moe: if g.moe { self.moe } else { None },
                    sliding_window: if g.local { self.sliding_window } else { None },
                    attention_chunk: if g.local { self.attention_chunk } else { None },
                    layer_groups: vec![LayerGroup { count: g.count, ..*g }],
                    ..self.clone()
                };
                (g.count, variant)
            })
            .collect()
    }

    /// Parameters of one layer as the top-level fields describe it (a uniform model's or a
    /// variant's): `(stored, active for one token, routed experts)`.
    fn layer_params(&self) -> (u64, u64, u64) {
        let h = self.hidden;
        let q_out = self.attention_width();
        let v_out = self.kv_heads * self.v_head_dim();
        let attention = match self.mla {
            None => {
                h * q_out + h * self.kv_width() + h * v_out + self.heads * self.v_head_dim() * h
            }
            Some(a) => {
                let q = match a.q_lora_rank {
                    // q_a, its norm, q_b.
                    Some(r) => h * r + r + r * q_out,
                    None => h * q_out,
                };
                // kv_a (latent and rope key), its norm, kv_b (k_nope and v per head), o.
                let kv = h * (a.kv_lora_rank + a.qk_rope_dim)
                    + a.kv_lora_rank
                    + a.kv_lora_rank * self.heads * (a.qk_nope_dim + a.v_dim);
                q + kv + self.heads * a.v_dim * h
            }
        };
        // `attention_bias` biases o as well as q, k, v; Qwen2's biases are on q, k, v only.
        let out_bias = self.linear_bias || (self.qkv_bias && self.model_type != "qwen2");
        let attention_bias = if self.qkv_bias { q_out + self.kv_width() + v_out } else { 0 }
            + if out_bias { h } else { 0 };
        let head_extras = if self.qk_norm { 2 * self.head_dim } else { 0 }
            + if self.attention_sinks { self.heads } else { 0 };
        let norm = match self.norm {
            Norm::LayerNorm => 2 * h,
            Norm::RmsNorm => h,
        };
        let mlp_bias = |ffn: u64| if self.linear_bias { ffn + h } else { 0 };
        let dense_mlp = |ffn: u64| self.mlp_matrices() * h * ffn + mlp_bias(ffn);
        let shared = attention + attention_bias + head_extras + 2 * norm;
        match self.moe {
            None => {
                let layer = shared + dense_mlp(self.ffn);
                (layer, layer, 0)
            }
            Some(moe) => {
                let bias =
                    |ffn: u64| if moe.bias { (self.mlp_matrices() - 1) * ffn + h } else { 0 };
                let expert = dense_mlp(moe.expert_ffn) + bias(moe.expert_ffn);
                let router = h * moe.experts + if moe.bias { moe.experts } else { 0 };
                let shared_experts = if moe.shared_ffn > 0 { dense_mlp(moe.shared_ffn) } else { 0 };
                let common = shared + router + shared_experts;
                let routed = moe.experts * expert;
                (common + routed, common + moe.top_k * expert, routed)
            }
        }
    }

    /// Parameter counts.
    pub fn params(&self) -> ParamCount {
        let h = self.hidden;
        let (mut layers, mut active, mut experts) = (0, 0, 0);
        let mut add = |count: u64, (stored, used, routed): (u64, u64, u64)| {
            layers += count * stored;
            active += count * used;
            experts += count * routed;
        };
        // A uniform model is its own variant: no copy (planners call this per plan).
        if self.layer_groups.len() == 1 {
            add(self.layers, self.layer_params());
        } else {
            for (count, variant) in self.variants() {
                add(count, variant.layer_params());
            }
        }
        let norm = match self.norm {
            Norm::LayerNorm => 2 * h,
            Norm::RmsNorm => h,
        };
        // A DeepSeek MTP module: embedding and head norms, the `2h → h` projection, one MoE
        // layer and its head's norm (the embedding and LM head are the model's).
        let mtp = if self.mtp_layers > 0 {
            self.mtp_layers * (3 * norm + 2 * h * h + self.layer_params().0)
        } else {
            0
        };
        ParamCount {
            embedding: self.vocab * h,
            positions: match self.positions {
                Positions::Learned => self.max_positions * h,
                Positions::Rope => 0,
            },
            layers,
            layers_active: active,
            experts,
            lm_head: if self.tied_embeddings { 0 } else { self.vocab * h },
            final_norm: norm,
            mtp,
        }
    }

    /// Parameters that take part in a matmul for one token: every layer's active weights and
    /// the LM head (tied or not), not the embedding lookup. This is the `N` of `6·N`.
    pub fn matmul_params_active(&self) -> u64 {
        let p = self.params();
        p.layers_active + self.vocab * self.hidden + p.final_norm
    }

    /// Keys one query attends to, averaged over a sequence of `seq` tokens and over a
    /// uniform model's layers: `seq/2` for causal attention, less with a sliding window of
    /// `w` (`w − w²/(2·seq)`) or within chunks of `c` (`Σ chunk²/2` over the chunks, over
    /// `seq`).
    pub fn mean_context(&self, seq: u64) -> f64 {
        let s = seq as f64;
        match (self.sliding_window, self.attention_chunk) {
            (Some(w), _) if w < seq => {
                let w = w as f64;
                w - w * w / (2.0 * s)
            }
            (_, Some(c)) if c < seq => {
                let (full, rest) = ((seq / c) as f64, (seq % c) as f64);
                (full * (c * c) as f64 + rest * rest) / (2.0 * s)
            }
            _ => s / 2.0,
        }
    }

    /// Model FLOPs per trained token: `6·N + 6·Σ_layers heads·(d_qk + d_v)·c`, with `N` from
    /// [`Model::matmul_params_active`] and `c` each layer's
    /// [mean context](Model::mean_context). Without MLA this is `6·N + 12·L·d·c`, and without
    /// a window `c = s/2`: the usual `6·N + 6·L·d·s` (causal attention counted once).
    pub fn model_flops_per_token(&self, seq: u64) -> f64 {
        let attention: f64 = self
            .variants()
            .iter()
            .map(|(count, v)| match v.mla {
                None => 12.0 * (count * v.attention_width()) as f64 * v.mean_context(seq),
                Some(a) => {
                    6.0 * (count * v.heads * (v.head_dim + a.v_dim)) as f64 * v.mean_context(seq)
                }
            })
            .sum();
        6.0 * self.matmul_params_active() as f64 + attention
    }
}
