use std::fmt;
use std::str::FromStr;

/// An element type of SBUF, PSUM or HBM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// bfloat16: 8 exponent bits, 7 mantissa bits.
    Bf16,
    /// IEEE binary16.
    F16,
    /// TensorFloat-32: fp32 storage whose mantissa is rounded to 10 bits when read by TensorE.
    Tf32,
    /// Neuron's legacy fp8 e4m3 (NeuronCore-v2/v3): IEEE-like, exponent 1111 is Inf/NaN,
    /// largest finite 240.
    Fp8E4m3,
    /// OCP fp8 e4m3fn (NeuronCore-v4): no infinities, only S.1111.111 is NaN, largest finite 448.
    Fp8E4m3fn,
    /// OCP fp8 e5m2: IEEE-like, largest finite 57344.
    Fp8E5m2,
    I32,
    U8,
    I8,
    I16,
    U16,
    U32,
    /// Four OCP fp8 e5m2 values packed in 32 bits (element `q` in byte `q`): the data of an
    /// MXFP8 tile on NeuronCore-v4 (`nl.float8_e5m2_x4`); the four lie along the contraction.
    Fp8E5m2x4,
    /// Four OCP fp8 e4m3fn values packed in 32 bits (`nl.float8_e4m3fn_x4`).
    Fp8E4m3fnx4,
    /// Four OCP fp4 e2m1fn values packed in 16 bits (element `q` in nibble `q`, low nibble
    /// first): MXFP4 data (`nl.float4_e2m1fn_x4`).
    Fp4E2m1fnx4,
}

/// An unknown data-type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype '{0}' (known: f32, bf16, f16, tf32, fp8e4m3, fp8e4m3fn, fp8e5m2, i32, u8, i8, i16, u16, u32, fp8e5m2x4, fp8e4m3fnx4, fp4e2m1fnx4)")]
pub struct UnknownDType(pub String);

/// Bit layout of an 8-bit float.
struct Minifloat {
    man_bits: i32,
    bias: i32,
    /// Largest finite magnitude.
    max: f32,
    /// IEEE-like: the all-ones exponent encodes Inf (mantissa 0) and NaN.
    ieee_specials: bool,
}

const E4M3: Minifloat = Minifloat { man_bits: 3, bias: 7, max: 240.0, ieee_specials: true };
const E4M3FN: Minifloat = Minifloat { man_bits: 3, bias: 7, max: 448.0, ieee_specials: false };
const E5M2: Minifloat = Minifloat { man_bits: 2, bias: 15, max: 57344.0, ieee_specials: true };

impl Minifloat {
    fn exp_mask(&self) -> u8 {
        (0x7f >> self.man_bits) << self.man_bits
    }

    fn decode(&self, b: u8) -> f32 {
        let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
        let man = i32::from(b & ((1 << self.man_bits) - 1));
        let exp = i32::from((b & self.exp_mask()) >> self.man_bits);
        let exp_all_ones = (b & self.exp_mask()) == self.exp_mask();
        if self.ieee_specials && exp_all_ones {
            return if man == 0 { sign * f32::INFINITY } else { f32::NAN };
        }
        if !self.ieee_specials && exp_all_ones && man == (1 << self.man_bits) - 1 {
            return f32::NAN;
        }
        let scale = |e: i32| 2f32.powi(e);
        if exp == 0 {
            sign * man as f32 * scale(1 - self.bias - self.man_bits)
        } else {
            sign * (1.0 + man as f32 * scale(-self.man_bits)) * scale(exp - self.bias)
        }
    }

    fn encode(&self, x: f32) -> u8 {
        let sign: u8 = if x.is_sign_negative() { 0x80 } else { 0 };
        if x.is_nan() {
            return 0x7f | sign; // exponent and mantissa all ones: NaN in all three formats
        }
        let emin = 1 - self.bias;
        let a = x.abs();
        // Quantum of the binade of `a` (subnormals share the smallest normal binade's quantum).
        let e = if a == 0.0 { emin } else { ((a.to_bits() >> 23) as i32 - 127).max(emin) };
        let q = 2f32.powi(e - self.man_bits);
        let r = ((a / q).round_ties_even() * q).min(self.max);
        if r == 0.0 {
            return sign;
        }
        let er = (r.to_bits() >> 23) as i32 - 127;
        if er < emin {
            return sign | (r / 2f32.powi(emin - self.man_bits)) as u8;
        }
        let man = ((r / 2f32.powi(er) - 1.0) * 2f32.powi(self.man_bits)) as u8;
        sign | (((er + self.bias) as u8) << self.man_bits) | man
    }
}

/// The eight magnitudes of OCP fp4 e2m1 (bias 1, one mantissa bit, no Inf or NaN), by code.
const E2M1_MAGNITUDES: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

fn e2m1_decode(nibble: u8) -> f32 {
    let m = E2M1_MAGNITUDES[usize::from(nibble & 7)];
    if nibble & 8 != 0 {
        -m
    } else {
        m
    }
}

/// Rounds to the nearest e2m1 value, ties to the even code, saturating at ±6; NaN becomes
/// +6 (e2m1 has no NaN; the OCP spec leaves the conversion to the implementation: assumption).
fn e2m1_encode(x: f32) -> u8 {
    if x.is_nan() {
        return 7;
    }
    let sign = if x.is_sign_negative() { 8 } else { 0 };
    let a = x.abs();
    let mut best = 0u8;
    for code in 1..8u8 {
        let (dc, db) = (
            (E2M1_MAGNITUDES[code as usize] - a).abs(),
            (E2M1_MAGNITUDES[best as usize] - a).abs(),
        );
        if dc < db || (dc == db && code % 2 == 0) {
            best = code;
        }
    }
    sign | best
}

/// The value of an OCP e8m0 scale byte, `2^(byte − 127)`; 255 is NaN [OCP MX v1.0].
pub fn e8m0(byte: u8) -> f32 {
    match byte {
        255 => f32::NAN,
        0 => f32::from_bits(0x0040_0000), // 2^-127, an fp32 subnormal
        _ => f32::from_bits(u32::from(byte) << 23),
    }
}

/// The e8m0 scale byte NeuronCore-v4's `quantize_mx` gives a group of values: the block scale
/// `X = 2^(⌊log2 amax⌋ − (E_max − 1))` [N-isa `quantize_mx`] clamped to bytes 0..=254; an
/// all-zero group gets 0 (2^-127), a group with NaN or Inf 255 (NaN; assumption).
pub fn mx_scale_byte(group: impl IntoIterator<Item = f32>, emax: i32) -> u8 {
    let mut amax = 0f32;
    for v in group {
        if !v.is_finite() {
            return 255;
        }
        amax = amax.max(v.abs());
    }
    if amax == 0.0 {
        return 0;
    }
    let bits = amax.to_bits();
    let biased = (bits >> 23) as i32;
    // ⌊log2 amax⌋, subnormals from their leading bit.
    let log2 = if biased > 0 { biased - 127 } else { (31 - bits.leading_zeros() as i32) - 149 };
    (log2 - (emax - 1) + 127).clamp(0, 254) as u8
}

/// Rounds fp32 to nearest, ties to even, keeping `keep` mantissa bits; Inf and NaN pass through.
fn round_mantissa(x: f32, keep: u32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let drop = 23 - keep;
    let b = x.to_bits();
    let lsb = (b >> drop) & 1;
    let half = (1u32 << (drop - 1)) - 1;
    f32::from_bits((b + half + lsb) & !((1u32 << drop) - 1))
}

fn f32_to_int(x: f32, lo: f32, hi: f32) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        f64::from(x.round_ties_even().clamp(lo, hi))
    }
}

impl DType {
    /// Every dtype, in a fixed order.
    pub const ALL: [DType; 16] = [
        DType::F32,
        DType::Bf16,
        DType::F16,
        DType::Tf32,
        DType::Fp8E4m3,
        DType::Fp8E4m3fn,
        DType::Fp8E5m2,
        DType::I32,
        DType::U8,
        DType::I8,
        DType::I16,
        DType::U16,
        DType::U32,
        DType::Fp8E5m2x4,
        DType::Fp8E4m3fnx4,
        DType::Fp4E2m1fnx4,
    ];

    /// The assembly name.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
            DType::Tf32 => "tf32",
            DType::Fp8E4m3 => "fp8e4m3",
            DType::Fp8E4m3fn => "fp8e4m3fn",
            DType::Fp8E5m2 => "fp8e5m2",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::Fp8E5m2x4 => "fp8e5m2x4",
            DType::Fp8E4m3fnx4 => "fp8e4m3fnx4",
            DType::Fp4E2m1fnx4 => "fp4e2m1fnx4",
        }
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::Tf32 | DType::I32 | DType::U32 => 4,
            DType::Fp8E5m2x4 | DType::Fp8E4m3fnx4 => 4,
            DType::Bf16 | DType::F16 | DType::I16 | DType::U16 | DType::Fp4E2m1fnx4 => 2,
            DType::Fp8E4m3 | DType::Fp8E4m3fn | DType::Fp8E5m2 | DType::U8 | DType::I8 => 1,
        }
    }

    /// Whether this is a floating-point type (one value per element; the packed MX types are
    /// neither float nor int).
    pub fn is_float(self) -> bool {
        !self.is_int() && !self.is_packed()
    }

    /// Whether this is one of the 4-packed MX data types.
    pub fn is_packed(self) -> bool {
        matches!(self, DType::Fp8E5m2x4 | DType::Fp8E4m3fnx4 | DType::Fp4E2m1fnx4)
    }

    /// The largest unbiased exponent of a packed type's elements (`E_max` of the OCP MX spec:
    /// e5m2 15, e4m3fn 8, e2m1 2).
    pub fn packed_max_exponent(self) -> Option<i32> {
        match self {
            DType::Fp8E5m2x4 => Some(15),
            DType::Fp8E4m3fnx4 => Some(8),
            DType::Fp4E2m1fnx4 => Some(2),
            _ => None,
        }
    }

    /// The four values of one packed element (`size_bytes()` little-endian bytes), element
    /// `q` first along the contraction.
    ///
    /// # Panics
    /// If `self` is not a packed type.
    pub fn unpack_x4(self, b: &[u8]) -> [f32; 4] {
        match self {
            DType::Fp8E5m2x4 => std::array::from_fn(|q| DType::Fp8E5m2.load(&b[q..q + 1])),
            DType::Fp8E4m3fnx4 => std::array::from_fn(|q| DType::Fp8E4m3fn.load(&b[q..q + 1])),
            DType::Fp4E2m1fnx4 => std::array::from_fn(|q| e2m1_decode(b[q / 2] >> (4 * (q % 2)))),
            _ => panic!("unpack_x4 of the unpacked dtype {self}"),
        }
    }

    /// Packs four values, each rounded to nearest even and saturated as its element format
    /// does, into one packed element.
    ///
    /// # Panics
    /// If `self` is not a packed type.
    pub fn pack_x4(self, v: [f32; 4], out: &mut [u8]) {
        match self {
            DType::Fp8E5m2x4 => (0..4).for_each(|q| out[q] = E5M2.encode(v[q])),
            DType::Fp8E4m3fnx4 => (0..4).for_each(|q| out[q] = E4M3FN.encode(v[q])),
            DType::Fp4E2m1fnx4 => {
                out[0] = e2m1_encode(v[0]) | e2m1_encode(v[1]) << 4;
                out[1] = e2m1_encode(v[2]) | e2m1_encode(v[3]) << 4;
            }
            _ => panic!("pack_x4 into the unpacked dtype {self}"),
        }
    }

    /// Whether this is an integer type.
    pub fn is_int(self) -> bool {
        matches!(self, DType::I32 | DType::U8 | DType::I8 | DType::I16 | DType::U16 | DType::U32)
    }

    /// The range of an integer type (None for floats).
    pub fn int_range(self) -> Option<(i64, i64)> {
        match self {
            DType::I32 => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
            DType::U8 => Some((0, 255)),
            DType::I8 => Some((-128, 127)),
            DType::I16 => Some((i64::from(i16::MIN), i64::from(i16::MAX))),
            DType::U16 => Some((0, i64::from(u16::MAX))),
            DType::U32 => Some((0, i64::from(u32::MAX))),
            _ => None,
        }
    }

    /// Whether this is one of the 8-bit float types.
    pub fn is_fp8(self) -> bool {
        matches!(self, DType::Fp8E4m3 | DType::Fp8E4m3fn | DType::Fp8E5m2)
    }

    /// The smallest positive normal value of a float type (below it values are subnormal and
    /// their relative precision falls off: error bounds turn absolute there); 1 for integers.
    pub fn min_normal(self) -> f64 {
        match self {
            DType::F32 | DType::Tf32 | DType::Bf16 => 2f64.powi(-126),
            DType::F16 | DType::Fp8E5m2 | DType::Fp8E5m2x4 => 2f64.powi(-14),
            DType::Fp8E4m3 | DType::Fp8E4m3fn | DType::Fp8E4m3fnx4 => 2f64.powi(-6),
            DType::Fp4E2m1fnx4 => 1.0,
            DType::I32 | DType::U8 | DType::I8 | DType::I16 | DType::U16 | DType::U32 => 1.0,
        }
    }

    /// Unit roundoff (half an ulp at 1.0) of a float type; 0.5 for integers (round to nearest).
    pub fn unit_roundoff(self) -> f64 {
        let man_bits = match self {
            DType::F32 => 23,
            DType::Bf16 => 7,
            DType::F16 | DType::Tf32 => 10,
            DType::Fp8E4m3 | DType::Fp8E4m3fn => 3,
            DType::Fp8E5m2 | DType::Fp8E5m2x4 => 2,
            DType::Fp8E4m3fnx4 => 3,
            DType::Fp4E2m1fnx4 => 1,
            DType::I32 | DType::U8 | DType::I8 | DType::I16 | DType::U16 | DType::U32 => {
                return 0.5
            }
        };
        2f64.powi(-man_bits - 1)
    }

    /// Reads one element (little-endian, `size_bytes()` long) as fp32. Exact for every float
    /// dtype; int32 values beyond 2^24 round to nearest even as any int -> fp32 conversion does.
    /// A packed MX element reads as its bits' unsigned integer (the verifier keeps packed
    /// tiles out of arithmetic; [`DType::unpack_x4`] gives its four values).
    #[inline]
    pub fn load(self, b: &[u8]) -> f32 {
        match self {
            DType::F32 | DType::Tf32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DType::Bf16 => half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            DType::F16 => half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            DType::Fp8E4m3 | DType::Fp8E4m3fn | DType::Fp8E5m2 => self.fp8_table()[b[0] as usize],
            DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            DType::U8 => f32::from(b[0]),
            DType::I8 => f32::from(b[0] as i8),
            DType::I16 => f32::from(i16::from_le_bytes([b[0], b[1]])),
            DType::U16 => f32::from(u16::from_le_bytes([b[0], b[1]])),
            DType::U32 | DType::Fp8E5m2x4 | DType::Fp8E4m3fnx4 => {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32
            }
            DType::Fp4E2m1fnx4 => f32::from(u16::from_le_bytes([b[0], b[1]])),
        }
    }

    /// Writes `v` rounded to this dtype (see the crate's rounding contract) into `out`.
    #[inline]
    pub fn store(self, v: f32, out: &mut [u8]) {
        match self {
            DType::F32 => out[..4].copy_from_slice(&v.to_le_bytes()),
            DType::Tf32 => out[..4].copy_from_slice(&round_mantissa(v, 10).to_le_bytes()),
            DType::Bf16 => {
                out[..2].copy_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes())
            }
            DType::F16 => out[..2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes()),
            DType::Fp8E4m3 => out[0] = E4M3.encode(v),
            DType::Fp8E4m3fn => out[0] = E4M3FN.encode(v),
            DType::Fp8E5m2 => out[0] = E5M2.encode(v),
            DType::I32 => {
                let i = f32_to_int(v, i32::MIN as f32, i32::MAX as f32);
                // `i32::MAX as f32` is 2^31, one past the range: saturate in f64.
                let i = i.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32;
                out[..4].copy_from_slice(&i.to_le_bytes());
            }
            DType::U8 => out[0] = f32_to_int(v, 0.0, 255.0) as u8,
            DType::I8 => out[0] = f32_to_int(v, -128.0, 127.0) as i8 as u8,
            DType::I16 => {
                out[..2].copy_from_slice(&(f32_to_int(v, -32768.0, 32767.0) as i16).to_le_bytes())
            }
            DType::U16 => {
                out[..2].copy_from_slice(&(f32_to_int(v, 0.0, 65535.0) as u16).to_le_bytes())
            }
            DType::U32 | DType::Fp8E5m2x4 | DType::Fp8E4m3fnx4 => {
                let i = f32_to_int(v, 0.0, u32::MAX as f32).clamp(0.0, f64::from(u32::MAX));
                out[..4].copy_from_slice(&(i as u32).to_le_bytes());
            }
            DType::Fp4E2m1fnx4 => {
                out[..2].copy_from_slice(&(f32_to_int(v, 0.0, 65535.0) as u16).to_le_bytes())
            }
        }
    }

    /// Writes an exact integer (from int32 arithmetic, e.g. `iota`): exact for int32 and, when
    /// in range, uint8 (saturating otherwise); floats get the value rounded via fp32.
    #[inline]
    pub fn store_i64(self, v: i64, out: &mut [u8]) {
        match self {
            DType::I32 => {
                let i = v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
                out[..4].copy_from_slice(&i.to_le_bytes());
            }
            DType::U8 => out[0] = v.clamp(0, 255) as u8,
            DType::I8 => out[0] = v.clamp(-128, 127) as i8 as u8,
            DType::I16 => out[..2].copy_from_slice(&(v.clamp(-32768, 32767) as i16).to_le_bytes()),
            DType::U16 => out[..2].copy_from_slice(&(v.clamp(0, 65535) as u16).to_le_bytes()),
            DType::U32 => {
                out[..4].copy_from_slice(&(v.clamp(0, i64::from(u32::MAX)) as u32).to_le_bytes())
            }
            _ => self.store(v as f32, out),
        }
    }

    /// Decodes contiguous little-endian elements, appending their fp32 values to `out`
    /// (the same values as [`DType::load`], one tight loop per dtype).
    pub fn decode_into(self, bytes: &[u8], out: &mut Vec<f32>) {
        let n = bytes.len() / self.size_bytes();
        out.reserve(n);
        match self {
            DType::F32 | DType::Tf32 => out.extend(
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            // bf16 is the upper half of an fp32: widening is exact and needs no rounding.
            DType::Bf16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
            ),
            _ => out.extend(bytes.chunks_exact(self.size_bytes()).map(|b| self.load(b))),
        }
    }

    /// Encodes `values` rounded to this dtype into contiguous little-endian `bytes`
    /// (the same bytes as [`DType::store`]).
    pub fn encode_into(self, values: &[f32], bytes: &mut [u8]) {
        match self {
            DType::F32 => {
                for (b, v) in bytes.chunks_exact_mut(4).zip(values) {
                    b.copy_from_slice(&v.to_le_bytes());
                }
            }
            _ => {
                for (b, &v) in bytes.chunks_exact_mut(self.size_bytes()).zip(values) {
                    self.store(v, b);
                }
            }
        }
    }

    /// Rounds an fp32 value to this dtype and back: the value a store followed by a load yields.
    pub fn round(self, v: f32) -> f32 {
        let mut b = [0u8; 4];
        self.store(v, &mut b);
        self.load(&b)
    }

    fn fp8_table(self) -> &'static [f32; 256] {
        use std::sync::OnceLock;
        static TABLES: [OnceLock<[f32; 256]>; 3] =
            [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let (i, fmt) = match self {
            DType::Fp8E4m3 => (0, &E4M3),
            DType::Fp8E4m3fn => (1, &E4M3FN),
            _ => (2, &E5M2),
        };
        TABLES[i].get_or_init(|| std::array::from_fn(|b| fmt.decode(b as u8)))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let alias = match s {
            "fp32" | "float32" => Some(DType::F32),
            "bfloat16" => Some(DType::Bf16),
            "fp16" | "float16" => Some(DType::F16),
            "int32" => Some(DType::I32),
            "uint8" => Some(DType::U8),
            "int8" => Some(DType::I8),
            "int16" => Some(DType::I16),
            "uint16" => Some(DType::U16),
            "uint32" => Some(DType::U32),
            "float8_e5m2_x4" => Some(DType::Fp8E5m2x4),
            "float8_e4m3fn_x4" => Some(DType::Fp8E4m3fnx4),
            "float4_e2m1fn_x4" => Some(DType::Fp4E2m1fnx4),
            _ => None,
        };
        alias
            .or_else(|| DType::ALL.into_iter().find(|d| d.name() == s))
            .ok_or_else(|| UnknownDType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits8(d: DType, v: f32) -> u8 {
        let mut b = [0u8; 1];
        d.store(v, &mut b);
        b[0]
    }

    /// Bit patterns from the OCP FP8 spec v1.0 tables and the IEEE-like legacy e4m3.
    #[test]
    fn fp8_known_bit_patterns() {
        assert_eq!(DType::Fp8E4m3fn.load(&[0x7e]), 448.0);
        assert!(DType::Fp8E4m3fn.load(&[0x7f]).is_nan());
        assert!(DType::Fp8E4m3fn.load(&[0x78]).is_finite()); // 256: no Inf in e4m3fn
        assert_eq!(DType::Fp8E4m3fn.load(&[0x01]), 2f32.powi(-9)); // smallest subnormal
        assert_eq!(DType::Fp8E4m3.load(&[0x77]), 240.0);
        assert_eq!(DType::Fp8E4m3.load(&[0x78]), f32::INFINITY);
        assert_eq!(DType::Fp8E5m2.load(&[0x7b]), 57344.0);
        assert_eq!(DType::Fp8E5m2.load(&[0x7c]), f32::INFINITY);
        assert_eq!(DType::Fp8E5m2.load(&[0x01]), 2f32.powi(-16));
        assert_eq!(DType::Fp8E5m2.load(&[0xc0]), -2.0);
        // Saturating conversion.
        assert_eq!(bits8(DType::Fp8E4m3fn, 1e6), 0x7e);
        assert_eq!(bits8(DType::Fp8E4m3fn, f32::NEG_INFINITY), 0xfe);
        assert_eq!(bits8(DType::Fp8E4m3, 1000.0), 0x77);
        assert_eq!(bits8(DType::Fp8E5m2, 1e9), 0x7b);
        // Ties to even: 1.0625 is halfway between 1.0 (0x38) and 1.125 (0x39) in e4m3fn.
        assert_eq!(bits8(DType::Fp8E4m3fn, 1.0625), 0x38);
        assert_eq!(bits8(DType::Fp8E4m3fn, 1.1875), 0x3a);
        assert_eq!(bits8(DType::Fp8E4m3fn, -0.0), 0x80);
    }

    #[test]
    fn bf16_tf32_f16_rounding_bit_patterns() {
        let mut b = [0u8; 4];
        // 1 + 2^-8 is a bf16 tie between 1.0 and 1 + 2^-7: even is 1.0 (0x3f80).
        DType::Bf16.store(1.0 + 2f32.powi(-8), &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3f80);
        DType::Bf16.store(1.0 + 3.0 * 2f32.powi(-8), &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3f82);
        DType::Tf32.store(1.0 + 2f32.powi(-11), &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x3f80_0000);
        DType::Tf32.store(1.0 + 3.0 * 2f32.powi(-11), &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x3f80_4000);
        DType::F16.store(70000.0, &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x7c00); // overflow -> +inf
        DType::I32.store(2.5, &mut b);
        assert_eq!(i32::from_le_bytes(b), 2);
        DType::I32.store(3e10, &mut b);
        assert_eq!(i32::from_le_bytes(b), i32::MAX);
        DType::U8.store(-3.0, &mut b);
        assert_eq!(b[0], 0);
    }

    fn max_finite(d: DType) -> f32 {
        match d {
            DType::Fp8E4m3 => 240.0,
            DType::Fp8E4m3fn => 448.0,
            _ => 57344.0,
        }
    }

    /// Every fp8 bit pattern decodes and re-encodes to itself (NaNs to a NaN, infinities saturate).
    #[test]
    fn fp8_every_pattern_round_trips() {
        for d in [DType::Fp8E4m3, DType::Fp8E4m3fn, DType::Fp8E5m2] {
            for b in 0..=255u8 {
                let v = d.load(&[b]);
                let back = bits8(d, v);
                if v.is_nan() {
                    assert!(d.load(&[back]).is_nan());
                } else if v.is_infinite() {
                    assert_eq!(d.load(&[back]), v.signum() * max_finite(d)); // saturating
                } else {
                    assert_eq!(back, b, "{d} pattern {b:#04x} = {v}");
                }
            }
        }
    }

    /// Independent check of round-to-nearest-even: the stored value is a representable value
    /// nearest to the input, found by scanning every finite fp8 value.
    fn nearest_by_scan(d: DType, v: f32) -> f32 {
        let mut best = f32::NAN;
        let mut best_bits = 0u8;
        for b in 0..=255u8 {
            let c = d.load(&[b]);
            if !c.is_finite() {
                continue;
            }
            let (dc, db) = ((c - v).abs(), (best - v).abs());
            let even = b & 1 == 0;
            if best.is_nan() || dc < db || (dc == db && even && best_bits & 1 == 1) {
                best = c;
                best_bits = b;
            }
        }
        best
    }

    proptest! {
        #[test]
        fn fp8_rounds_to_nearest_even(v in -600.0f32..600.0) {
            for d in [DType::Fp8E4m3, DType::Fp8E4m3fn, DType::Fp8E5m2] {
                let got = d.round(v);
                let want = nearest_by_scan(d, v);
                prop_assert_eq!(got.abs(), want.abs(), "{} of {}", d, v);
            }
        }

        #[test]
        fn bf16_matches_truncation_bounds(v in proptest::num::f32::NORMAL) {
            let r = DType::Bf16.round(v);
            let down = f32::from_bits(v.to_bits() & 0xffff_0000);
            let up = f32::from_bits((v.to_bits() & 0xffff_0000) + 0x1_0000);
            prop_assert!(r == down || r == up || r.is_infinite());
            prop_assert!((r - v).abs() <= (down - v).abs().min((up - v).abs()) || r.is_infinite());
        }
    }

    #[test]
    fn slice_codecs_match_scalar_codecs() {
        let vals: Vec<f32> = (0..300)
            .map(|i| (i as f32 - 150.0) * 0.37 + f32::from(i as u8 % 3 == 0) * 1e-3)
            .collect();
        for d in DType::ALL {
            let mut bytes = vec![0u8; vals.len() * d.size_bytes()];
            d.encode_into(&vals, &mut bytes);
            let mut one = vec![0u8; d.size_bytes()];
            let mut decoded = Vec::new();
            d.decode_into(&bytes, &mut decoded);
            for (i, &v) in vals.iter().enumerate() {
                d.store(v, &mut one);
                assert_eq!(&bytes[i * d.size_bytes()..(i + 1) * d.size_bytes()], &one[..], "{d}");
                assert_eq!(decoded[i].to_bits(), d.load(&one).to_bits(), "{d}");
            }
        }
    }

    /// The OCP MX v1.0 element formats: every e2m1 code, and packing order.
    #[test]
    fn packed_mx_elements() {
        let fp4 = DType::Fp4E2m1fnx4;
        let codes = [0x10u8, 0x32]; // nibbles 0, 1, 2, 3 in element order
        assert_eq!(fp4.unpack_x4(&codes), [0.0, 0.5, 1.0, 1.5]);
        assert_eq!(fp4.unpack_x4(&[0xf7, 0x9c]), [6.0, -6.0, -2.0, -0.5]);
        let mut b = [0u8; 2];
        // Ties to the even code: 0.25 -> 0, 1.25 -> 1.0, 2.5 -> 2, 3.5 -> 4, 5 -> 4; saturation.
        fp4.pack_x4([0.25, 1.25, 2.5, 3.5], &mut b);
        assert_eq!(fp4.unpack_x4(&b), [0.0, 1.0, 2.0, 4.0]);
        fp4.pack_x4([5.0, 100.0, -0.75, -0.7], &mut b);
        assert_eq!(fp4.unpack_x4(&b), [4.0, 6.0, -1.0, -0.5]);
        let mut w = [0u8; 4];
        DType::Fp8E4m3fnx4.pack_x4([1.0, -2.0, 448.0, 1e6], &mut w);
        assert_eq!(w, [0x38, 0xc0, 0x7e, 0x7e]);
        assert_eq!(DType::Fp8E4m3fnx4.unpack_x4(&w), [1.0, -2.0, 448.0, 448.0]);
        DType::Fp8E5m2x4.pack_x4([1.0, -2.0, 57344.0, 0.0], &mut w);
        assert_eq!(DType::Fp8E5m2x4.unpack_x4(&w), [1.0, -2.0, 57344.0, 0.0]);
        for d in [DType::Fp8E5m2x4, DType::Fp8E4m3fnx4, DType::Fp4E2m1fnx4] {
            assert!(d.is_packed() && !d.is_float() && !d.is_int());
        }
    }

    /// Every e2m1 pattern decodes and re-encodes to itself.
    #[test]
    fn fp4_every_pattern_round_trips() {
        for code in 0..16u8 {
            let v = e2m1_decode(code);
            let back = e2m1_encode(v);
            assert!(back == code || (v == 0.0 && back & 7 == 0), "{code:#x}");
        }
    }

    #[test]
    fn names_parse() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>(), Ok(d));
        }
        assert_eq!("float32".parse::<DType>(), Ok(DType::F32));
        assert!("f64".parse::<DType>().is_err());
    }
}
