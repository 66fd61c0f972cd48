//! `rainier kernel NAME ...`: build a library kernel, time it on the simulated NeuronCore and,
//! with `--check`, run it on fresh random inputs against the f64 reference.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rainier_arch::{Chip, Generation};
use rainier_tensor::{DType, HostTensor};
use rand::Rng;
use serde_json::json;

use crate::{out, report};

/// Element types a kernel computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KernelDType {
    Bf16,
    Fp16,
    Fp8,
    Fp32,
    /// OCP MXFP8 (e4m3fn elements, e8m0 scales per 32 values; NeuronCore-v4, gemm only).
    Mxfp8,
    /// OCP MXFP4 (e2m1 elements, e8m0 scales per 32 values; NeuronCore-v4, gemm only).
    Mxfp4,
}

impl KernelDType {
    /// The element type, MX packed types included.
    fn any_dtype(self) -> DType {
        match self {
            KernelDType::Bf16 => DType::Bf16,
            KernelDType::Fp16 => DType::F16,
            // Neuron's fp8 e4m3 (the OCP e4m3fn variant exists only on NeuronCore-v4).
            KernelDType::Fp8 => DType::Fp8E4m3,
            KernelDType::Fp32 => DType::F32,
            KernelDType::Mxfp8 => DType::Fp8E4m3fnx4,
            KernelDType::Mxfp4 => DType::Fp4E2m1fnx4,
        }
    }

    /// The element type of a kernel other than gemm (which alone takes the MX types).
    fn dtype(self) -> Result<DType> {
        let d = self.any_dtype();
        if d.is_packed() {
            let name = format!("{self:?}").to_lowercase();
            bail!("--dtype {name}: MX types are for gemm only (the others compute on one value per element)");
        }
        Ok(d)
    }

    /// TensorE MACs per PE per cycle for this dtype: 1 for 16-bit, 1/4 for fp32, and for fp8
    /// 2 on NeuronCore-v3/v4 (double_row, which the gemm kernel uses for fp8) [N-arch3].
    fn peak_factor(self, generation: Generation) -> f64 {
        match self {
            KernelDType::Bf16 | KernelDType::Fp16 => 1.0,
            KernelDType::Fp32 => 0.25,
            KernelDType::Fp8 if generation >= Generation::V3 => 2.0,
            KernelDType::Fp8 => 1.0,
            // nc_matmul_mx: four values per PE per cycle [N-arch4].
            KernelDType::Mxfp8 | KernelDType::Mxfp4 => 4.0,
        }
    }
}

/// Output elements checked against the reference at most (sampled evenly beyond that).
const CHECK_SAMPLES: usize = 4096;

/// The `[rows, cols]` shape of the row-wise kernels (one row per partition).
#[derive(Debug, clap::Args)]
pub(crate) struct RowsCols {
    /// Rows (tokens), spread over the 128 partitions in blocks.
    #[arg(long)]
    pub(crate) rows: u64,
    /// Columns (features); rows longer than 8192 go in column chunks.
    #[arg(long)]
    pub(crate) cols: u64,
}

/// Options every kernel takes.
#[derive(Debug, clap::Args)]
pub(crate) struct KernelOpts {
    /// Element type of the kernel's tensors (gemm: of its inputs; the output is fp32).
    #[arg(long, value_enum, default_value = "bf16")]
    pub(crate) dtype: KernelDType,
    /// Chip to simulate: trn1, inf2, trn2, trn3.
    #[arg(long)]
    pub(crate) chip: Chip,
    /// Also run functionally on fresh random inputs and compare with f64 math.
    #[arg(long)]
    pub(crate) check: bool,
    /// Seed of --check's random inputs (default: a fresh one, printed, so a run can be
    /// replayed).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Print JSON: kernel, chip, dtype, time_ns, flops, hbm_bytes, tflops, peak_fraction,
    /// hbm_fraction, engines (and check).
    #[arg(long)]
    pub(crate) json: bool,
    /// Write a Chrome/Perfetto trace (`-`: to standard output, the report then on standard
    /// error).
    #[arg(long, value_name = "FILE.json")]
    pub(crate) trace: Option<std::path::PathBuf>,
}

/// What a kernel is: its name and shape text, its program and its nominal FLOPs.
pub(crate) struct Built {
    pub(crate) kernel: &'static str,
    pub(crate) shape: serde_json::Value,
    pub(crate) description: String,
    pub(crate) program: rainier_isa::Program,
    pub(crate) flops: f64,
}

/// A check's largest error (relative, as the kernel defines it) and its bound.
pub(crate) type CheckResult = (f64, f64);

/// Times `built` (and checks it with `check` when asked), then prints the report.
pub(crate) fn report_kernel(
    built: &Built,
    opts: &KernelOpts,
    check: impl FnOnce() -> Result<CheckResult>,
) -> Result<()> {
    report_kernel_with(built, opts, check, |_| Ok(Extra::default()))
}

/// More for a kernel's report, given its time in ps: JSON fields and text lines.
#[derive(Default)]
pub(crate) struct Extra {
    json: serde_json::Map<String, serde_json::Value>,
    lines: Vec<String>,
}

/// [`report_kernel`] with `extra` fields and lines after the timing.
fn report_kernel_with(
    built: &Built,
    opts: &KernelOpts,
    check: impl FnOnce() -> Result<CheckResult>,
    extra: impl FnOnce(u64) -> Result<Extra>,
) -> Result<()> {
    let chip = opts.chip;
    let params = chip.params();
    if opts.check {
        check_fits_host(&built.program)?; // before the (long) timing run
    }
    let report = rainier_timesim::simulate(&built.program, &params, None, opts.trace.is_some())?;
    if let Some(trace) = &opts.trace {
        crate::write_trace(trace, &built.program, &params, &report)?;
    }
    let seconds = report.time_ps as f64 * 1e-12;
    let peak = 128.0
        * 128.0
        * 2.0
        * params.core.tensor_clock_hz.value
        * opts.dtype.peak_factor(params.core.generation);
    let achieved = built.flops / seconds;
    let hbm_share = params.hbm_bytes_per_s.value / f64::from(params.cores_per_chip.value);
    let hbm_fraction = report.dma.hbm_bytes as f64 / seconds / hbm_share;
    let extra = extra(report.time_ps)?;
    let seed = opts.seed.unwrap_or_else(|| rand::thread_rng().gen());
    let check = if opts.check {
        seed_inputs(seed);
        Some(check()?)
    } else {
        None
    };
    let name = Path::new(built.kernel);
    if opts.json {
        let mut v = report::timing_json(&report, &params, name);
        let mut doc = json!({
            "kernel": built.kernel,
            "shape": built.shape,
            "chip": chip.name(),
            "dtype": format!("{:?}", opts.dtype).to_lowercase(),
            "time_ns": report.time_ns(),
            "flops": built.flops,
            "hbm_bytes": report.dma.hbm_bytes,
            "tflops": achieved / 1e12,
            "peak_fraction": achieved / peak,
            "hbm_fraction": hbm_fraction,
            "instructions": built.program.instructions.len(),
            "engines": v["engines"].take(),
            "bottleneck": v["bottleneck"].take(),
        });
        for (key, value) in extra.json {
            doc[key] = value;
        }
        if let Some((err, bound)) = check {
            doc["check"] = json!({
                "max_rel_error": err,
                "tolerance": bound,
                "passed": err <= bound,
                "seed": seed,
            });
        }
        crate::out_json("kernel", &doc)?;
    } else {
        out(&format!(
            "{} on one {chip} NeuronCore: {:.3} us, {:.2} TFLOP/s = {:.1}% of TensorE peak, HBM {:.1} GB/s = {:.1}% of one core's share ({} instructions)",
            built.description,
            report.time_ns() / 1000.0,
            achieved / 1e12,
            100.0 * achieved / peak,
            report.dma.hbm_bytes as f64 / seconds / 1e9,
            100.0 * hbm_fraction,
            built.program.instructions.len()
        ));
        out(report::timing_text(&report, &params, name)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end());
        for line in &extra.lines {
            out(line);
        }
        if let Some((err, bound)) = check {
            let verdict = if err <= bound { "passed" } else { "FAILED" };
            out(&format!("  check on fresh random inputs (--seed {seed}): max relative error {err:.2e} (tolerance {bound:.2e}): {verdict}"));
        }
    }
    if check.is_some_and(|(err, bound)| err > bound) {
        bail!("{} check failed", built.kernel);
    }
    Ok(())
}

/// Refuses a `--check` whose host memory would pass the functional simulator's limit, before
/// anything is allocated: per element of every HBM tensor, the host copy and the simulator's
/// HBM copy in its dtype, an fp32 conversion and an f64 reference value (an upper bound of what
/// the checks hold at once).
fn check_fits_host(program: &rainier_isa::Program) -> Result<()> {
    let bytes: u128 = program
        .tensors
        .iter()
        .map(|t| {
            let n: u128 = t.shape.iter().map(|&d| u128::from(d)).product();
            n * (2 * t.dtype.size_bytes() as u128 + 4 + 8)
        })
        .sum();
    let limit = u128::from(rainier_funcsim::HOST_HBM_LIMIT_BYTES);
    if bytes > limit {
        bail!(
            "--check would need about {:.1} GiB of host memory (inputs, outputs and their f64 reference), over the {} GiB limit: check a smaller shape (timing alone runs at any shape)",
            bytes as f64 / (1u64 << 30) as f64,
            limit >> 30
        );
    }
    Ok(())
}

thread_local! {
    /// The generator of --check's inputs, seeded per check (see `--seed`).
    static INPUTS: std::cell::RefCell<rand::rngs::StdRng> =
        std::cell::RefCell::new(rand::SeedableRng::seed_from_u64(0));
}

fn seed_inputs(seed: u64) {
    INPUTS.with(|r| *r.borrow_mut() = rand::SeedableRng::seed_from_u64(seed));
}

/// Random values in `lo..hi` rounded to `dtype`, from the check's seeded generator.
fn random(dtype: DType, shape: &[usize], lo: f32, hi: f32) -> HostTensor {
    let v: Vec<f32> = INPUTS.with(|r| {
        let mut rng = r.borrow_mut();
        (0..shape.iter().product()).map(|_| rng.gen_range(lo..hi)).collect()
    });
    HostTensor::from_f32(dtype, shape, &v)
}

/// The error of `got` against `want`, relative to `scale` (the magnitude the roundings scale
/// with) plus the output dtype's smallest normal: relative for normal results, absolute near
/// zero where the dtype's subnormals lose relative precision.
fn rel_error(dtype: DType, got: f64, want: f64, scale: f64) -> f64 {
    (got - want).abs() / (scale.abs() + dtype.min_normal())
}

fn positive(name: &str, v: u64, max: u64) -> Result<u64> {
    if v == 0 || v > max {
        bail!("--{name} {v}: must be between 1 and {max}");
    }
    Ok(v)
}

pub(crate) fn gemm(m: u64, n: u64, k: u64, opts: &KernelOpts) -> Result<()> {
    let (m, n, k) =
        (positive("m", m, 1 << 20)?, positive("n", n, 1 << 20)?, positive("k", k, 1 << 20)?);
    let (chip, dtype) = (opts.chip, opts.dtype.any_dtype());
    let program = rainier_kernels::gemm(chip, m, n, k, dtype)
        .with_context(|| format!("gemm {m}x{n}x{k} on {chip}"))?;
    let built = Built {
        kernel: "gemm",
        shape: json!({ "m": m, "n": n, "k": k }),
        description: format!("gemm c[{m}, {n}] = aᵀ·b, a [{k}, {m}], b [{k}, {n}] {dtype} -> f32"),
        program,
        flops: 2.0 * (m * n * k) as f64,
    };
    report_kernel(&built, opts, || {
        let (ku, mu, nu) = (k as usize, m as usize, n as usize);
        let (inputs, av, bv) = if dtype.is_packed() {
            // MX: random values quantized on the host (the kernel takes offline-quantized data).
            let values = |cols: usize| random(DType::F32, &[ku, cols], -1.0, 1.0).to_f32();
            let (a, a_scale) = rainier_kernels::quantize_mx_host(dtype, ku, mu, &values(mu));
            let (b, b_scale) = rainier_kernels::quantize_mx_host(dtype, ku, nu, &values(nu));
            let av = rainier_kernels::dequantize_mx_host(&a, &a_scale);
            let bv = rainier_kernels::dequantize_mx_host(&b, &b_scale);
            let inputs = BTreeMap::from([
                ("a".to_string(), a),
                ("b".to_string(), b),
                ("a_scale".to_string(), a_scale),
                ("b_scale".to_string(), b_scale),
            ]);
            (inputs, av, bv)
        } else {
            let (a, b) = (random(dtype, &[ku, mu], -1.0, 1.0), random(dtype, &[ku, nu], -1.0, 1.0));
            let f64s = |t: &HostTensor| t.to_f32().into_iter().map(f64::from).collect::<Vec<_>>();
            let (av, bv) = (f64s(&a), f64s(&b));
            (BTreeMap::from([("a".to_string(), a), ("b".to_string(), b)]), av, bv)
        };
        let res = rainier_funcsim::run(&built.program, &chip.params(), &inputs)?;
        let c = res.outputs["c"].to_f32();
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        let total = mu * nu;
        let mut worst = 0f64;
        for i in (0..total).step_by((total / CHECK_SAMPLES).max(1)) {
            let (mi, ni) = (i / nu, i % nu);
            let col_a: Vec<f64> = (0..ku).map(|kk| av[kk * mu + mi]).collect();
            let col_b: Vec<f64> = (0..ku).map(|kk| bv[kk * nu + ni]).collect();
            let want = rainier_reference::matmul(&col_a, &col_b, ku, 1, 1)[0];
            let scale: f64 = col_a
                .iter()
                .zip(&col_b)
                .map(|(x, y)| (x * y).abs())
                .sum::<f64>()
                .max(f64::MIN_POSITIVE);
            worst = worst.max((f64::from(c[i]) - want).abs() / scale);
        }
        // Error relative to Σ|a·b|: exact products, fp32 accumulation over K (+1 rounding per
        // product for fp32 inputs).
        Ok((worst, (k as f64 + 2.0) * 2f64.powi(-24)))
    })
}

/// Relative tolerance of the row-wise kernels: an fp32 row sum and a few roundings, plus
/// roundings of the narrow intermediates and output (six units for 16-bit types; four for
/// fp8, whose worst measured is 1.6 on rmsnorm — the fp32 bound alone always failed).
fn rowwise_tolerance(dtype: DType, cols: u64) -> f64 {
    let base = (cols as f64 + 24.0) * 2f64.powi(-24);
    match dtype.size_bytes() {
        2 => base + 3.0 * dtype.unit_roundoff() * 2.0,
        1 => base + 4.0 * dtype.unit_roundoff(),
        _ => base,
    }
}

fn rowwise_check(
    program: &rainier_isa::Program,
    chip: Chip,
    inputs: BTreeMap<String, HostTensor>,
    rows: usize,
    cols: usize,
    want_row: impl Fn(usize) -> Vec<f64>,
) -> Result<f64> {
    let res = rainier_funcsim::run(program, &chip.params(), &inputs)?;
    let y = &res.outputs["y"];
    let (dtype, y) = (y.dtype, y.to_f32());
    let mut worst = 0f64;
    for r in (0..rows).step_by((rows * cols / (CHECK_SAMPLES * 16)).max(1)) {
        for (c, want) in want_row(r).into_iter().enumerate() {
            worst = worst.max(rel_error(dtype, f64::from(y[r * cols + c]), want, want));
        }
    }
    Ok(worst)
}

pub(crate) fn rmsnorm(rows: u64, cols: u64, opts: &KernelOpts) -> Result<()> {
    let (rows, cols) = (positive("rows", rows, 1 << 24)?, positive("cols", cols, 1 << 24)?);
    let (chip, dtype) = (opts.chip, opts.dtype.dtype()?);
    let program = rainier_kernels::rmsnorm(chip, rows, cols, dtype)
        .with_context(|| format!("rmsnorm {rows}x{cols} on {chip}"))?;
    let built = Built {
        kernel: "rmsnorm",
        shape: json!({ "rows": rows, "cols": cols }),
        description: format!("rmsnorm y = x / rms(x) · w, x [{rows}, {cols}] {dtype}"),
        program,
        // x², sum, scale, weight: 4 FLOP per element.
        flops: 4.0 * (rows * cols) as f64,
    };
    report_kernel(&built, opts, || {
        let (ru, cu) = (rows as usize, cols as usize);
        let (x, w) = (random(dtype, &[ru, cu], -4.0, 4.0), random(dtype, &[cu], 0.5, 1.5));
        let (xv, wv) = (x.to_f32(), w.to_f32());
        let inputs = BTreeMap::from([("x".to_string(), x), ("w".to_string(), w)]);
        let err = rowwise_check(&built.program, chip, inputs, ru, cu, |r| {
            let row = &xv[r * cu..(r + 1) * cu];
            let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / cu as f64;
            let rstd = 1.0 / (ms + f64::from(rainier_kernels::RMSNORM_EPS)).sqrt();
            row.iter().zip(&wv).map(|(&v, &w)| f64::from(v) * rstd * f64::from(w)).collect()
        })?;
        Ok((err, rowwise_tolerance(dtype, cols)))
    })
}

pub(crate) fn softmax(rows: u64, cols: u64, opts: &KernelOpts) -> Result<()> {
    let (rows, cols) = (positive("rows", rows, 1 << 24)?, positive("cols", cols, 1 << 24)?);
    let (chip, dtype) = (opts.chip, opts.dtype.dtype()?);
    let program = rainier_kernels::softmax(chip, rows, cols, dtype)
        .with_context(|| format!("softmax {rows}x{cols} on {chip}"))?;
    let built = Built {
        kernel: "softmax",
        shape: json!({ "rows": rows, "cols": cols }),
        description: format!("softmax along rows, x [{rows}, {cols}] {dtype}"),
        program,
        // max, subtract, exp, sum, divide: 5 FLOP per element.
        flops: 5.0 * (rows * cols) as f64,
    };
    report_kernel(&built, opts, || {
        let (ru, cu) = (rows as usize, cols as usize);
        let x = random(dtype, &[ru, cu], -4.0, 4.0);
        let xv = x.to_f32();
        let err = rowwise_check(
            &built.program,
            chip,
            BTreeMap::from([("x".to_string(), x)]),
            ru,
            cu,
            |r| {
                let row: Vec<f64> =
                    xv[r * cu..(r + 1) * cu].iter().map(|&v| f64::from(v)).collect();
                let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let denom: f64 = row.iter().map(|v| (v - mx).exp()).sum();
                row.iter().map(|v| (v - mx).exp() / denom).collect()
            },
        )?;
        Ok((err, rowwise_tolerance(dtype, cols)))
    })
}

/// A kernel constructor of the `--rows --cols` family.
type BuildFn =
    fn(Chip, u64, u64, DType) -> Result<rainier_isa::Program, rainier_kernels::KernelError>;

/// The element-wise and normalization kernels that share the `--rows --cols` shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rowwise {
    Layernorm,
    Rope,
    Gelu,
    Swiglu,
    ResidualAdd,
}

pub(crate) fn rowwise(kind: Rowwise, shape: &RowsCols, opts: &KernelOpts) -> Result<()> {
    let (rows, cols) =
        (positive("rows", shape.rows, 1 << 24)?, positive("cols", shape.cols, 1 << 24)?);
    let (chip, dtype) = (opts.chip, opts.dtype.dtype()?);
    let (name, build, flops_per_elem, what): (&str, BuildFn, f64, &str) = match kind {
        Rowwise::Layernorm => {
            ("layernorm", rainier_kernels::layernorm, 8.0, "layernorm y = (x - mean) / std · w + b")
        }
        Rowwise::Gelu => ("gelu", rainier_kernels::gelu, 8.0, "gelu y = x · Φ(x)"),
        Rowwise::Rope => {
            ("rope", rainier_kernels::rope, 3.0, "rope y = x · cos + rotate_half(x) · sin")
        }
        Rowwise::Swiglu => ("swiglu", rainier_kernels::swiglu, 5.0, "swiglu y = silu(gate) · up"),
        Rowwise::ResidualAdd => {
            ("residual-add", rainier_kernels::residual_add, 1.0, "residual add y = x + residual")
        }
    };
    let program = build(chip, rows, cols, dtype)
        .with_context(|| format!("{name} {rows}x{cols} on {chip}"))?;
    let built = Built {
        kernel: name,
        shape: json!({ "rows": rows, "cols": cols }),
        description: format!("{what}, [{rows}, {cols}] {dtype}"),
        program,
        flops: flops_per_elem * (rows * cols) as f64,
    };
    report_kernel(&built, opts, || {
        let (ru, cu) = (rows as usize, cols as usize);
        let x = random(dtype, &[ru, cu], -4.0, 4.0);
        let xv: Vec<f64> = x.to_f32().into_iter().map(f64::from).collect();
        let other = random(dtype, &[ru, cu], -4.0, 4.0);
        let ov: Vec<f64> = other.to_f32().into_iter().map(f64::from).collect();
        let (w, b) = (random(dtype, &[cu], 0.5, 1.5), random(dtype, &[cu], -0.5, 0.5));
        let (wv, bv): (Vec<f64>, Vec<f64>) = (
            w.to_f32().into_iter().map(f64::from).collect(),
            b.to_f32().into_iter().map(f64::from).collect(),
        );
        let inputs: BTreeMap<String, HostTensor> = match kind {
            Rowwise::Layernorm => {
                BTreeMap::from([("x".into(), x), ("w".into(), w), ("b".into(), b)])
            }
            Rowwise::Gelu => BTreeMap::from([("x".into(), x)]),
            Rowwise::Rope => BTreeMap::from([
                ("x".into(), x),
                ("cos".into(), rope_table(dtype, ru, cu, f64::cos)),
                ("sin".into(), rope_table(dtype, ru, cu, f64::sin)),
            ]),
            Rowwise::Swiglu => BTreeMap::from([("gate".into(), x), ("up".into(), other)]),
            Rowwise::ResidualAdd => BTreeMap::from([("x".into(), x), ("residual".into(), other)]),
        };
        let res = rainier_funcsim::run(&built.program, &chip.params(), &inputs)?;
        let y: Vec<f64> = res.outputs["y"].to_f32().into_iter().map(f64::from).collect();
        // Error relative to the magnitude the roundings scale with (operands of the final sum).
        let mut worst = 0f64;
        for r in (0..ru).step_by((ru * cu / (CHECK_SAMPLES * 16)).max(1)) {
            let row = &xv[r * cu..(r + 1) * cu];
            let (mean, rstd) = {
                let mean = row.iter().sum::<f64>() / cu as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cu as f64;
                (mean, 1.0 / (var + f64::from(rainier_kernels::LAYERNORM_EPS)).sqrt())
            };
            for c in 0..cu {
                let (v, o) = (row[c], ov[r * cu + c]);
                let (want, scale) = match kind {
                    Rowwise::Layernorm => (
                        (v - mean) * rstd * wv[c] + bv[c],
                        (v.abs() + mean.abs()) * rstd * wv[c] + bv[c].abs(),
                    ),
                    Rowwise::Gelu => {
                        let g = 0.5 * v * (1.0 + libm_erf(v / 2f64.sqrt()));
                        (g, g.abs().max(1e-3 * v.abs()))
                    }
                    Rowwise::Swiglu => {
                        let s = v / (1.0 + (-v).exp()) * o;
                        (s, s.abs())
                    }
                    Rowwise::ResidualAdd => (v + o, v.abs() + o.abs()),
                    Rowwise::Rope => {
                        let (cs, sn) = (rope_angle(r, c, cu).cos(), rope_angle(r, c, cu).sin());
                        let (cs, sn) = (round(dtype, cs), round(dtype, sn));
                        let rot = if c < cu / 2 { -row[c + cu / 2] } else { row[c - cu / 2] };
                        (v * cs + rot * sn, (v * cs).abs() + (rot * sn).abs())
                    }
                };
                worst = worst.max(rel_error(dtype, y[r * cu + c], want, scale));
            }
        }
        // Roundings of the narrow intermediates and of the output: a few units; fp8 (whose
        // unit is 2^-4) 6 — swiglu's worst is 3.7 (it was 16, i.e. 1.0: it could not fail),
        // layernorm's 2 beside its row statistics; fp32 16 (the fp32 activation functions).
        let units = match (dtype.size_bytes(), kind) {
            (1, Rowwise::Layernorm) => 2.0,
            (1, _) => 6.0,
            (2, _) => 8.0,
            _ => 16.0,
        };
        let bound = units * dtype.unit_roundoff()
            + if kind == Rowwise::Layernorm { rowwise_tolerance(dtype, cols) } else { 0.0 };
        Ok((worst, bound))
    })
}

/// The rotary angle of position `r`, column `c` (each frequency twice, as Hugging Face lays
/// out `cos`/`sin`), base 10000.
fn rope_angle(r: usize, c: usize, cols: usize) -> f64 {
    let i = c % (cols / 2);
    r as f64 * 10000f64.powf(-((2 * i) as f64) / cols as f64)
}

fn round(dtype: DType, v: f64) -> f64 {
    f64::from(dtype.round(v as f32))
}

fn rope_table(dtype: DType, rows: usize, cols: usize, f: fn(f64) -> f64) -> HostTensor {
    let v: Vec<f32> =
        (0..rows * cols).map(|i| f(rope_angle(i / cols, i % cols, cols)) as f32).collect();
    HostTensor::from_f32(dtype, &[rows, cols], &v)
}

/// erf by Simpson's rule on exp(-t²) (accurate to ~1e-12 here; independent of the simulator's).
fn libm_erf(x: f64) -> f64 {
    let n = 2000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

pub(crate) fn adamw(params: u64, opts: &KernelOpts) -> Result<()> {
    let params = positive("params", params, 1 << 34)?;
    if opts.dtype != KernelDType::Fp32 && opts.dtype != KernelDType::Bf16 {
        bail!("adamw keeps fp32 parameters and moments; --dtype must be fp32 (or the default)");
    }
    let chip = opts.chip;
    let hp = rainier_kernels::AdamW::default();
    let program = rainier_kernels::adamw(chip, params, &hp)
        .with_context(|| format!("adamw over {params} parameters on {chip}"))?;
    let built = Built {
        kernel: "adamw",
        shape: json!({ "params": params }),
        description: format!("adamw step over {params} fp32 parameters (lr {}, betas ({}, {}), eps {}, weight decay {})", hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay),
        program,
        // 2 (m) + 3 (v) + 3 (update) + 3 (p): 11 FLOP per parameter.
        flops: 11.0 * params as f64,
    };
    report_kernel(&built, opts, || {
        let n = params as usize;
        let gen = |lo, hi| random(DType::F32, &[n], lo, hi);
        let (p, g, m, v) = (gen(-1.0, 1.0), gen(-1.0, 1.0), gen(-0.1, 0.1), gen(0.0, 0.01));
        let f = |t: &HostTensor| t.to_f32().into_iter().map(f64::from).collect::<Vec<f64>>();
        let (pv, gv, mv, vv) = (f(&p), f(&g), f(&m), f(&v));
        let inputs =
            BTreeMap::from([("p".into(), p), ("g".into(), g), ("m".into(), m), ("v".into(), v)]);
        let res = rainier_funcsim::run(&built.program, &chip.params(), &inputs)?;
        let po = f(&res.outputs["p_out"]);
        let (b1, b2, lr, eps, wd) = (
            f64::from(hp.beta1),
            f64::from(hp.beta2),
            f64::from(hp.lr),
            f64::from(hp.eps),
            f64::from(hp.weight_decay),
        );
        let (bc1, bc2) = (1.0 - b1.powi(hp.step as i32), 1.0 - b2.powi(hp.step as i32));
        let mut worst = 0f64;
        for i in (0..n).step_by((n / (CHECK_SAMPLES * 16)).max(1)) {
            let m_new = b1 * mv[i] + (1.0 - b1) * gv[i];
            let v_new = b2 * vv[i] + (1.0 - b2) * gv[i] * gv[i];
            let upd = lr / bc1 * m_new / ((v_new / bc2).sqrt() + eps);
            let want = pv[i] * (1.0 - lr * wd) - upd;
            // Relative to the magnitudes entering the final difference.
            worst =
                worst.max((po[i] - want).abs() / (pv[i].abs() + upd.abs()).max(f64::MIN_POSITIVE));
        }
        Ok((worst, 16.0 * 2f64.powi(-24)))
    })
}

/// The shape flags of `attention`.
#[derive(Debug, clap::Args)]
pub(crate) struct AttentionArgs {
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: u64,
    #[arg(long)]
    pub(crate) heads: u64,
    /// K/V heads (grouped-query attention); defaults to --heads.
    #[arg(long)]
    pub(crate) kv_heads: Option<u64>,
    /// Sequence length (a multiple of 128).
    #[arg(long)]
    pub(crate) seq: u64,
    /// Head dimension (at most 128).
    #[arg(long)]
    pub(crate) head_dim: u64,
    /// Causal mask.
    #[arg(long)]
    pub(crate) causal: bool,
}

impl AttentionArgs {
    fn shape(&self) -> Result<rainier_kernels::AttentionShape> {
        Ok(rainier_kernels::AttentionShape {
            batch: positive("batch", self.batch, 1 << 16)?,
            heads: positive("heads", self.heads, 1 << 12)?,
            kv_heads: positive("kv-heads", self.kv_heads.unwrap_or(self.heads), 1 << 12)?,
            seq: positive("seq", self.seq, 1 << 20)?,
            head_dim: positive("head-dim", self.head_dim, 128)?,
            causal: self.causal,
        })
    }
}

/// The JSON shape and the one-line description of an attention kernel run.
fn attention_built(
    kernel: &'static str,
    pass: &str,
    shape: &rainier_kernels::AttentionShape,
    dtype: DType,
    program: rainier_isa::Program,
    flops: f64,
) -> Built {
    Built {
        kernel,
        shape: json!({ "batch": shape.batch, "heads": shape.heads, "kv_heads": shape.kv_heads, "seq": shape.seq, "head_dim": shape.head_dim, "causal": shape.causal }),
        description: format!(
            "attention {pass}, {} x {} heads ({} kv), seq {}, head dim {}{}, {dtype}",
            shape.batch,
            shape.heads,
            shape.kv_heads,
            shape.seq,
            shape.head_dim,
            if shape.causal { ", causal" } else { "" }
        ),
        program,
        flops,
    }
}

pub(crate) fn attention(a: &AttentionArgs, opts: &KernelOpts) -> Result<()> {
    let shape = a.shape()?;
    let (chip, dtype) = (opts.chip, opts.dtype.dtype()?);
    let program = rainier_kernels::attention(chip, &shape, dtype)
        .with_context(|| format!("attention on {chip}"))?;
    let built = attention_built("attention", "forward", &shape, dtype, program, shape.flops());
    report_kernel(&built, opts, || {
        let (nh, nkv) =
            ((shape.batch * shape.heads) as usize, (shape.batch * shape.kv_heads) as usize);
        let (seq, d) = (shape.seq as usize, shape.head_dim as usize);
        let (q, k, v) = (
            random(dtype, &[nh, d, seq], -1.0, 1.0),
            random(dtype, &[nkv, d, seq], -1.0, 1.0),
            random(dtype, &[nkv, seq, d], -1.0, 1.0),
        );
        let f = |t: &HostTensor| t.to_f32().into_iter().map(f64::from).collect::<Vec<f64>>();
        let (qv, kv, vv) = (f(&q), f(&k), f(&v));
        let inputs = BTreeMap::from([("q".into(), q), ("k".into(), k), ("v".into(), v)]);
        let res = rainier_funcsim::run(&built.program, &chip.params(), &inputs)?;
        let o = f(&res.outputs["o"]);
        let group = (shape.heads / shape.kv_heads) as usize;
        let heads = shape.heads as usize;
        let vmax = vv.iter().fold(0f64, |m, x| m.max(x.abs())).max(f64::MIN_POSITIVE);
        let mut worst = 0f64;
        // A sample of query rows of every head, against plain f64 attention.
        for h in 0..nh {
            let hk = (h / heads) * shape.kv_heads as usize + (h % heads) / group;
            for i in (0..seq).step_by((seq / 16).max(1)) {
                let keys = if shape.causal { i + 1 } else { seq };
                let sc: Vec<f64> = (0..keys)
                    .map(|j| {
                        (0..d)
                            .map(|c| qv[(h * d + c) * seq + i] * kv[(hk * d + c) * seq + j])
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let mx = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let total: f64 = w.iter().sum();
                for c in 0..d {
                    let want =
                        (0..keys).map(|j| w[j] * vv[(hk * seq + j) * d + c]).sum::<f64>() / total;
                    worst = worst.max((o[(h * seq + i) * d + c] - want).abs() / vmax);
                }
            }
        }
        // Relative to max|v|: bf16 p and output roundings, or fp32 sums.
        let bound = if dtype.size_bytes() <= 2 {
            12.0 * dtype.unit_roundoff()
        } else {
            128.0 * dtype.unit_roundoff()
        };
        Ok((worst, bound))
    })
}

/// `rainier kernel attention-bwd`: the flash-attention backward kernel; `--check` runs it on
/// random inputs (o and lse from the f64 forward) against f64 gradients.
pub(crate) fn attention_bwd(a: &AttentionArgs, opts: &KernelOpts) -> Result<()> {
    let shape = a.shape()?;
    let (chip, dtype) = (opts.chip, opts.dtype.dtype()?);
    let program = rainier_kernels::attention_backward(chip, &shape, dtype)
        .with_context(|| format!("attention-bwd on {chip}"))?;
    // Five matmuls per score (s, dp, dv, dk, dq) against the forward's two.
    let built =
        attention_built("attention-bwd", "backward", &shape, dtype, program, 2.5 * shape.flops());
    report_kernel(&built, opts, || {
        let (nh, nkv) =
            ((shape.batch * shape.heads) as usize, (shape.batch * shape.kv_heads) as usize);
        let (seq, d) = (shape.seq as usize, shape.head_dim as usize);
        let (q, k, v, dout) = (
            random(dtype, &[nh, d, seq], -1.0, 1.0),
            random(dtype, &[nkv, d, seq], -1.0, 1.0),
            random(dtype, &[nkv, d, seq], -1.0, 1.0),
            random(dtype, &[nh, d, seq], -1.0, 1.0),
        );
        let f = |t: &HostTensor| t.to_f32().into_iter().map(f64::from).collect::<Vec<f64>>();
        let [o, lse, dq, dk, dv] = rainier_reference::attention_backward(
            &f(&q),
            &f(&k),
            &f(&v),
            &f(&dout),
            shape.heads as usize,
            shape.kv_heads as usize,
            nh,
            seq,
            d,
            shape.causal,
        );
        let to32 = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let inputs = BTreeMap::from([
            ("q".into(), q),
            ("k".into(), k),
            ("v".into(), v),
            ("dout".into(), dout),
            ("o".into(), HostTensor::from_f32(dtype, &[nh, d, seq], &to32(&o))),
            ("lse".into(), HostTensor::from_f32(DType::F32, &[nh, seq], &to32(&lse))),
        ]);
        let res = rainier_funcsim::run(&built.program, &chip.params(), &inputs)?;
        // Per output, relative to its largest magnitude: bf16 p, ds and outputs, or fp32 sums.
        let mut worst = 0f64;
        for (name, want) in [("dq", &dq), ("dk", &dk), ("dv", &dv)] {
            let got = f(&res.outputs[name]);
            let max = want.iter().fold(0f64, |m, x| m.max(x.abs())).max(f64::MIN_POSITIVE);
            for (g, w) in got.iter().zip(want.iter()) {
                worst = worst.max((g - w).abs() / max);
            }
        }
        let bound =
            if dtype.size_bytes() <= 2 { 8.0 * dtype.unit_roundoff() } else { 2f64.powi(-14) };
        Ok((worst, bound))
    })
}

pub(crate) fn cross_entropy(
    rows: u64,
    vocab: u64,
    backward: bool,
    opts: &KernelOpts,
) -> Result<()> {
    let (rows, vocab) =
        (positive("rows", rows, 1 << 24)?, positive("vocab", vocab, (1 << 24) - 1)?);
    let (chip, dtype) = (opts.chip, opts.dtype.dtype()?);
    let build = if backward {
        rainier_kernels::cross_entropy_backward
    } else {
        rainier_kernels::cross_entropy
    };
    let program = build(chip, rows, vocab, dtype)
        .with_context(|| format!("cross-entropy {rows}x{vocab} on {chip}"))?;
    let built = Built {
        kernel: if backward { "cross-entropy-backward" } else { "cross-entropy" },
        shape: json!({ "rows": rows, "vocab": vocab }),
        description: format!(
            "cross-entropy {}, logits [{rows}, {vocab}] {dtype}",
            if backward { "backward" } else { "forward" }
        ),
        program,
        // forward: max, subtract, exp, sum, target pick; backward: subtract, exp, subtract.
        flops: if backward { 3.0 } else { 5.0 } * (rows * vocab) as f64,
    };
    report_kernel(&built, opts, || {
        let (ru, vu) = (rows as usize, vocab as usize);
        let logits = random(dtype, &[ru, vu], -8.0, 8.0);
        let mut rng = rand::thread_rng();
        let t: Vec<f32> = (0..ru).map(|_| rng.gen_range(0..vu) as f32).collect();
        let target = HostTensor::from_f32(DType::I32, &[ru], &t);
        let xv: Vec<f64> = logits.to_f32().into_iter().map(f64::from).collect();
        let lse: Vec<f64> = (0..ru)
            .map(|i| {
                let row = &xv[i * vu..(i + 1) * vu];
                let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln()
            })
            .collect();
        let mut inputs =
            BTreeMap::from([("logits".to_string(), logits), ("target".to_string(), target)]);
        let tol_abs = (vocab as f64 + 16.0) * 2f64.powi(-24);
        if backward {
            let lse32: Vec<f32> = lse.iter().map(|&v| v as f32).collect();
            inputs.insert("lse".into(), HostTensor::from_f32(DType::F32, &[ru], &lse32));
            let res = rainier_funcsim::run(&built.program, &chip.params(), &inputs)?;
            let g = res.outputs["grad"].to_f32();
            let mut worst = 0f64;
            for i in (0..ru).step_by((ru * vu / (CHECK_SAMPLES * 16)).max(1)) {
                for j in 0..vu {
                    let sm = (xv[i * vu + j] - lse[i]).exp();
                    let want = sm - if j == t[i] as usize { 1.0 } else { 0.0 };
                    // Relative to the magnitude of the softmax term (and of the -1 at the target).
                    let scale = sm + if j == t[i] as usize { 1.0 } else { 0.0 };
                    worst = worst.max(
                        (f64::from(g[i * vu + j]) - want).abs() / scale.max(f64::MIN_POSITIVE),
                    );
                }
            }
            Ok((worst, 2.0 * dtype.unit_roundoff() + 4.0 * tol_abs + 16.0 * 2f64.powi(-24)))
        } else {
            let res = rainier_funcsim::run(&built.program, &chip.params(), &inputs)?;
            let loss = res.outputs["loss"].to_f32();
            let mut worst = 0f64;
            for i in 0..ru {
                let want = lse[i] - xv[i * vu + t[i] as usize];
                // Relative to |lse| + |target logit|, the magnitudes of the final difference.
                let scale = lse[i].abs() + xv[i * vu + t[i] as usize].abs();
                worst = worst.max((f64::from(loss[i]) - want).abs() / scale.max(1.0));
            }
            Ok((worst, tol_abs + 8.0 * 2f64.powi(-24)))
        }
    })
}

/// The shape of `kernel layer`: one tensor-parallel rank of a dense model's decoder layer.
#[derive(Debug, clap::Args)]
pub(crate) struct LayerArgs {
    /// Model: a preset name, a config.json file or a Hugging Face snapshot directory (dense
    /// Llama-style layers: rmsnorm, rope, grouped-query attention, SwiGLU).
    #[arg(long)]
    pub(crate) model: String,
    /// Tensor-parallel degree: the rank holds heads/tp query heads, kv_heads/tp key/value
    /// heads (at least one) and ffn/tp of the MLP.
    #[arg(long, default_value_t = 1)]
    pub(crate) tp: u64,
    /// Sequences in the micro-batch.
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: u64,
    /// Tokens per sequence (a multiple of 128).
    #[arg(long)]
    pub(crate) seq: u64,
    /// Run the norms and residual adds on all tokens instead of 1/tp of them (sequence
    /// parallelism, as the planner assumes under TP, is the default).
    #[arg(long)]
    pub(crate) no_sequence_parallel: bool,
    /// The layer's backward pass instead (from what the forward keeps: input and weight
    /// gradients of every GEMM, attention, SwiGLU and rmsnorm backward, rope with -sin, and
    /// the TensorE transposes between them).
    #[arg(long)]
    pub(crate) backward: bool,
}

impl LayerArgs {
    fn shape(&self) -> Result<rainier_kernels::LayerShape> {
        let model = crate::plan::load_model(&self.model)?;
        if model.moe.is_some() || model.mla.is_some() || model.layer_groups.len() > 1 {
            bail!("--model {}: layer programs are built for dense Llama-style layers (uniform, no MoE or MLA)", self.model);
        }
        let llama_like = model.mlp == rainier_model::Mlp::SwiGlu
            && model.norm == rainier_model::Norm::RmsNorm
            && model.positions == rainier_model::Positions::Rope;
        if !llama_like {
            bail!(
                "--model {}: layer programs are built for rmsnorm, rope and SwiGLU layers",
                self.model
            );
        }
        let extras = model.qk_norm
            || model.qkv_bias
            || model.linear_bias
            || model.attention_sinks
            || model.sliding_window.is_some()
            || model.attention_chunk.is_some();
        if extras {
            bail!("--model {}: layer programs have no q/k norms, biases, attention sinks or windowed attention", self.model);
        }
        let tp = positive("tp", self.tp, 1 << 12)?;
        let split = |what: &str, n: u64| {
            if n % tp == 0 {
                Ok(n / tp)
            } else {
                Err(anyhow::anyhow!("--tp {tp} does not divide the model's {what} ({n})"))
            }
        };
        Ok(rainier_kernels::LayerShape {
            batch: positive("batch", self.batch, 1 << 16)?,
            seq: positive("seq", self.seq, 1 << 20)?,
            hidden: model.hidden,
            heads: split("heads", model.heads)?,
            kv_heads: model.kv_heads.div_ceil(tp).max(1),
            head_dim: model.head_dim,
            ffn: split("ffn", model.ffn)?,
            sequence_parallel: if self.no_sequence_parallel { 1 } else { tp },
        })
    }
}

/// Each part's first start and last end (ps), from a recorded timing run.
fn part_spans(
    layer: &rainier_kernels::LayerProgram,
    params: &rainier_arch::ChipParams,
) -> Result<Vec<(&'static str, f64, f64)>> {
    let report = rainier_timesim::simulate(&layer.program, params, None, true)?;
    let mut spans: Vec<(&'static str, f64, f64)> =
        layer.parts.iter().map(|p| (p.name, f64::INFINITY, 0.0)).collect();
    let part_of = |i: usize| layer.parts.partition_point(|p| p.instructions.end <= i);
    for s in &report.slices {
        if let Some(span) = spans.get_mut(part_of(s.instruction)) {
            span.1 = span.1.min(s.start_ps as f64);
            span.2 = span.2.max((s.start_ps + s.duration_ps) as f64);
        }
    }
    Ok(spans)
}

/// `kernel layer`: the decoder layer as one program, and the same kernels in series.
pub(crate) fn layer(a: &LayerArgs, opts: &KernelOpts) -> Result<()> {
    use rainier_kernels::Composition;
    if opts.check {
        bail!("--check: the layer program is checked against f64 math by the rainier-kernels tests (tests/layer.rs), not here");
    }
    let shape = a.shape()?;
    let (chip, dtype) = (opts.chip, opts.dtype.dtype()?);
    let pass = if a.backward { "backward" } else { "forward" };
    let build = |c: Composition| {
        if a.backward {
            rainier_kernels::decoder_layer_backward_parts(chip, &shape, dtype, c)
        } else {
            rainier_kernels::decoder_layer_parts(chip, &shape, dtype, c)
        }
        .with_context(|| format!("decoder layer {pass} of {} on {chip}", a.model))
    };
    let layer = build(Composition::Overlapped)?;
    let built = Built {
        kernel: "layer",
        shape: json!({ "model": a.model, "tp": a.tp, "batch": shape.batch, "seq": shape.seq,
            "hidden": shape.hidden, "heads": shape.heads, "kv_heads": shape.kv_heads,
            "head_dim": shape.head_dim, "ffn": shape.ffn, "pass": pass }),
        description: format!(
            "decoder layer {pass} of {} at TP {}, {} x {} tokens ({} heads, {} kv, ffn {}), {dtype}",
            a.model, a.tp, shape.batch, shape.seq, shape.heads, shape.kv_heads, shape.ffn
        ),
        program: layer.program.clone(),
        flops: if a.backward { shape.backward_flops() } else { shape.flops() },
    };
    report_kernel_with(
        &built,
        opts,
        || bail!("--check is refused above"),
        |overlapped| {
            let params = chip.params();
            let serial = build(Composition::Serial)?.program;
            let serial = rainier_timesim::simulate(&serial, &params, None, false)?.time_ps;
            let saved = 1.0 - overlapped as f64 / serial as f64;
            let spans = part_spans(&layer, &params)?;
            let mut extra = Extra::default();
            extra.json.insert("serial_time_ns".into(), json!(serial as f64 / 1000.0));
            extra.json.insert("overlap_saving".into(), json!(saved));
            let parts: Vec<serde_json::Value> = spans
            .iter()
            .map(|(name, start, end)| json!({ "kernel": name, "start_ns": start / 1e3, "end_ns": end / 1e3 }))
            .collect();
            extra.json.insert("kernels".into(), json!(parts));
            extra.lines.push(format!(
                "  {:<20} {:>11} {:>11} {:>11}",
                "kernel", "start (us)", "end (us)", "adds (us)"
            ));
            let mut reached = 0f64;
            for (name, start, end) in &spans {
                // How far this kernel moves the layer's end (kernels overlap their neighbours).
                let adds = (end - reached).max(0.0);
                reached = reached.max(*end);
                extra.lines.push(format!(
                    "  {name:<20} {:>11.1} {:>11.1} {:>11.1}",
                    start / 1e6,
                    end / 1e6,
                    adds / 1e6
                ));
            }
            extra.lines.push(format!(
                "  the same kernels one after another: {:.3} us; overlapping them saves {:.1}%",
                serial as f64 / 1e6,
                100.0 * saved
            ));
            Ok(extra)
        },
    )
}
