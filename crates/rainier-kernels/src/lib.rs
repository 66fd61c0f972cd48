//! Kernel building in the spirit of NKI: a [`KernelBuilder`] hands out SBUF tiles and PSUM
//! banks with lifetimes (a clear error when a kernel does not fit), takes instructions for any
//! engine, and inserts every semaphore wait and signal from the data dependencies between them,
//! so kernels are written as plain Rust loops over tiles. The program it emits passes the
//! verifier and is free of data races by construction.
//!
//! Synchronization scheme (what [`KernelBuilder::finish`] emits):
//! - Engine `e`'s compute instructions each signal `S[e]` (`Engine::index`); engines complete in
//!   order, so "instruction n of engine e is done" is `S[e] >= n`.
//! - Each DMA signals one semaphore of a pool, round-robin, and waits for the previous transfer
//!   on its semaphore (a pool's worth of DMAs earlier), so a semaphore's transfers complete in
//!   order and "the n-th transfer on semaphore s is done" is `S[s] >= n`: a reader waits for
//!   exactly the transfer it reads, not for the later ones issued on the same semaphore (the
//!   false dependency that, until 2026-12-03, held K-blocked GEMMs up to 27 % and MXFP4 GEMMs
//!   1.4× behind MXFP8).
//! - Dependencies are tracked by byte regions of SBUF and PSUM (read-after-write,
//!   write-after-read, write-after-write), including memory reused after [`KernelBuilder::free`].
//!   An instruction does not wait for earlier instructions of its own engine (in-order), except
//!   for DMAs, whose data lands asynchronously.

mod alloc;
mod attention;
mod attention_bwd;
mod builder;
mod gemm;
/// A whole decoder layer as one program of the library kernels.
mod layer;
/// The decoder layer's backward pass as one program.
mod layer_bwd;
mod loss;
mod optim;
mod rowwise;
mod rowwise_bwd;

pub use alloc::Arena;
pub use attention::{attention, AttentionShape};
pub use attention_bwd::{attention_backward, attention_backward_chunked};
pub use builder::{KernelBuilder, KernelError, MAX_INSTRUCTIONS, SBUF_ALIGN};
pub use gemm::{dequantize_mx_host, gemm, gemm_to, quantize_mx_host};
pub use layer::{
    decoder_layer, decoder_layer_parts, Composition, LayerPart, LayerProgram, LayerShape,
};
pub use layer_bwd::{decoder_layer_backward, decoder_layer_backward_parts};
pub use loss::{cross_entropy, cross_entropy_backward};
pub use optim::{adamw, AdamW};
pub use rowwise::{
    gelu, layernorm, residual_add, rmsnorm, rope, softmax, swiglu, LAYERNORM_EPS, RMSNORM_EPS,
    ROW_CHUNK_BYTES,
};
pub use rowwise_bwd::{rmsnorm_backward, swiglu_backward};
