//! Kernel building in the spirit of NKI: a [`KernelBuilder`] hands out SBUF tiles and PSUM
//! banks with lifetimes (a clear error when a kernel does not fit), takes instructions for any
//! engine, and inserts every semaphore wait and signal from the data dependencies between them,
//! so kernels are written as plain Rust loops over tiles. The program it emits passes the
//! verifier and is free of data races by construction.
//!
//! Synchronization scheme (what [`KernelBuilder::finish`] emits):
//! - Engine `e`'s compute instructions each signal `S[e]` (`Engine::index`); engines complete in
//!   order, so "instruction n of engine e is done" is `S[e] >= n`.
//! - Each DMA signals one semaphore of a pool, round-robin. Transfers may land out of order, so
//!   a wait for a DMA waits for every transfer issued on its semaphore so far.
//! - Dependencies are tracked by byte regions of SBUF and PSUM (read-after-write,
//!   write-after-read, write-after-write), including memory reused after [`KernelBuilder::free`].
//!   An instruction does not wait for earlier instructions of its own engine (in-order), except
//!   for DMAs, whose data lands asynchronously.

mod alloc;
mod attention;
mod attention_bwd;
mod builder;
mod gemm;
mod layer;
mod loss;
mod optim;
mod rowwise;

pub use alloc::Arena;
pub use attention::{attention, AttentionShape};
pub use attention_bwd::{attention_backward, attention_backward_chunked};
pub use builder::{KernelBuilder, KernelError, MAX_INSTRUCTIONS, SBUF_ALIGN};
pub use gemm::{dequantize_mx_host, gemm, gemm_to, quantize_mx_host};
pub use layer::{decoder_layer, Composition, LayerShape};
pub use loss::{cross_entropy, cross_entropy_backward};
pub use optim::{adamw, AdamW};
pub use rowwise::{
    gelu, layernorm, residual_add, rmsnorm, rope, softmax, swiglu, LAYERNORM_EPS, RMSNORM_EPS,
    ROW_CHUNK_BYTES,
};
