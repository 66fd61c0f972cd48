//! Data types and host tensors.
//!
//! [`DType`] is every element type a NeuronCore stores or computes with, with exact, bit-level
//! conversions to and from fp32 (the internal arithmetic type of the Vector, Scalar and GpSimd
//! engines and of DMA casts). [`HostTensor`] is a dense row-major tensor on the host, read and
//! written as NumPy `.npy` files by [`npy`].
//!
//! Rounding contract (the hardware's where documented, otherwise a named assumption):
//! - fp32 -> bf16, fp16, tf32, fp8: round to nearest, ties to even.
//! - fp16 overflow becomes ±inf (IEEE); bf16 and tf32 keep fp32's range.
//! - fp8 follows the OCP FP8 spec v1.0 in *saturating* mode: a finite value or infinity beyond
//!   the largest finite magnitude becomes ±max (assumption: the Neuron docs do not say which mode
//!   DMA and engine casts use); NaN stays NaN.
//! - fp32 -> int32/uint8: round to nearest even, saturate to the integer range, NaN -> 0
//!   (assumption, undocumented).

mod dtype;
pub mod npy;

pub use dtype::{e8m0, mx_scale_byte, DType, UnknownDType};

/// A dense, row-major (C order) tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Little-endian element bytes, `shape.product() * dtype.size_bytes()` long.
    pub data: Vec<u8>,
}

impl HostTensor {
    /// A tensor of `shape` whose elements are `values` rounded to `dtype`.
    ///
    /// # Panics
    /// If `values.len()` is not the product of `shape` (a caller bug, not bad input).
    pub fn from_f32(dtype: DType, shape: &[usize], values: &[f32]) -> Self {
        assert_eq!(values.len(), shape.iter().product::<usize>(), "values do not match shape");
        let size = dtype.size_bytes();
        let mut data = vec![0u8; values.len() * size];
        for (chunk, &v) in data.chunks_exact_mut(size).zip(values) {
            dtype.store(v, chunk);
        }
        Self { dtype, shape: shape.to_vec(), data }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as fp32 values (exact for every float dtype; ints beyond 2^24 round).
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.chunks_exact(self.dtype.size_bytes()).map(|b| self.dtype.load(b)).collect()
    }
}
