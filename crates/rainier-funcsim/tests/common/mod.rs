//! Shared helpers of the differential tests: tile allocation, random fills, tolerances.
#![allow(dead_code, unreachable_pub)]

use rainier_arch::{Chip, CoreParams};
use rainier_funcsim::Machine;
use rainier_isa::{Dim, Memory, Program, Tile};
use rainier_tensor::DType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn core(chip: Chip) -> CoreParams {
    chip.params().core
}

pub fn machine(chip: Chip) -> Machine {
    Machine::new(&Program::default(), &core(chip))
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Hands out non-overlapping byte ranges of SBUF or PSUM.
#[derive(Debug, Default)]
pub struct Alloc {
    pub next: [u64; 2],
}

impl Alloc {
    pub fn new() -> Self {
        Self::default()
    }

    /// A tile of `sizes` free elements; with `pad`, the outermost dim's stride is padded so the
    /// pattern is not contiguous.
    pub fn tile(
        &mut self,
        mem: Memory,
        start: u32,
        parts: u32,
        dtype: DType,
        sizes: &[u64],
        pad: u64,
    ) -> Tile {
        let esz = dtype.size_bytes() as u64;
        let slot = usize::from(mem == Memory::Psum);
        let off = self.next[slot].div_ceil(esz.max(4)) * esz.max(4);
        let mut t = Tile::new(mem, start..start + parts, off, dtype, sizes);
        if pad > 0 && t.dims.len() > 1 {
            t.dims[0].stride += pad as i64;
        }
        let (_, hi) = t.byte_range();
        self.next[slot] = hi as u64;
        t
    }
}

/// A valid engine partition range of about `want` partitions: (start, count).
pub fn partition_range(want: u32, slot: u32) -> (u32, u32) {
    match want {
        65.. => (0, want.min(128)),
        33..=64 => (64 * (slot % 2), want),
        _ => (32 * (slot % 4), want.max(1)),
    }
}

/// Fills `t` with random values from `lo..hi`, rounded to its dtype, and returns what was stored.
pub fn fill(m: &mut Machine, t: &Tile, rng: &mut StdRng, lo: f32, hi: f32) -> Vec<f64> {
    let n = t.partitions as usize * t.free_len() as usize;
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    m.write_tile(t, &v).unwrap_or_else(|e| panic!("{e}"));
    read(m, t)
}

pub fn read(m: &Machine, t: &Tile) -> Vec<f64> {
    m.read_tile(t).unwrap_or_else(|e| panic!("{e}")).into_iter().map(f64::from).collect()
}

/// Spacing of `format`'s values around `x` (one ulp), from the format's precision and range.
pub fn ulp(format: DType, x: f64) -> f64 {
    let (man, emin) = match format {
        DType::F32 => (23, -126),
        DType::Tf32 => (10, -126),
        DType::Bf16 => (7, -126),
        DType::F16 => (10, -14),
        DType::Fp8E4m3 | DType::Fp8E4m3fn => (3, -6),
        DType::Fp8E5m2 => (2, -14),
        _ => return 1.0, // integers
    };
    let e = if x == 0.0 { emin } else { (x.abs().log2().floor() as i32).max(emin) };
    2f64.powi(e - man)
}

/// Equal values, or both NaN.
pub fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

pub fn float_dtypes() -> Vec<DType> {
    vec![DType::F32, DType::Bf16, DType::F16, DType::Fp8E4m3, DType::Fp8E5m2]
}

pub fn dims_of(sizes: &[u64]) -> Vec<Dim> {
    rainier_isa::contiguous_dims(sizes)
}
