//! Discrete-event timing model of one NeuronCore: how long a program takes, which engine is the
//! bottleneck and why, as the Neuron profiler shows on a device.
//!
//! The model ([`simulate`]):
//! - Five in-order instruction queues (Sync, Tensor, Vector, Scalar, GpSimd), each in its own
//!   clock domain. An instruction starts when its engine is free, its semaphore waits hold, the
//!   results it reads from earlier instructions of the same engine have completed, and the PSUM
//!   banks it touches are not in use by another engine. It occupies its engine for its issue
//!   interval (the published cost formulas, [`TimingParams`](rainier_arch::TimingParams)) and
//!   completes `completion_latency_cycles` later; semaphore increments land at completion.
//! - TensorE: LoadStationary when the stationary tile changes, hidden behind the previous matmul
//!   when they run back to back (background, fast weight load); PSUM accumulation into one bank
//!   is pipelined.
//! - DMA: a `dma_copy` costs its issuing engine a trigger; its data starts moving
//!   `dma_fixed_latency_ns` later on the DMA engines that serve its SBUF partitions (8 each),
//!   each a FIFO queue at its practical bandwidth plus a per-descriptor cost, all sharing the
//!   core's share of HBM bandwidth.
//! - With values, each instruction's semantics run at its start (`rainier-funcsim`), so memory
//!   ends bit-identical to the functional simulator for any correctly synchronized program.
//!
//! Time is kept in integer picoseconds, so results are exact and deterministic.

mod cost;
mod sim;
mod trace;

pub use sim::{simulate, simulate_built, DmaStats, EngineStats, Report, Slice, TimeError, Track};
pub use trace::{chrome_trace, write_chrome_trace, write_chrome_trace_mapped};
