//! Functional simulator of one NeuronCore: computes the numbers the hardware would, with no
//! notion of time. Deterministic: the same program and inputs give the same bytes.
//!
//! - [`Machine`] holds SBUF, PSUM, the program's HBM tensors and the semaphore file, and
//!   executes one instruction's semantics at a time ([`Machine::execute`]).
//! - [`run`] verifies a program, loads its inputs, runs every engine's in-order stream under
//!   the semaphores (an instruction issues once its waits hold; among ready engine heads the
//!   lowest program index goes first) and returns the output tensors. A program that stops
//!   with instructions left waiting is a deadlock error naming each stuck engine.
//!
//! Numerical contract (per-dtype conversions: `rainier-tensor`):
//! - Vector/Scalar/GpSimd arithmetic is IEEE fp32 with round to nearest even; results are
//!   rounded once to the destination dtype.
//! - ScalarE functions (exp, tanh, gelu, ...) are evaluated in f64 and rounded once to fp32.
//!   The hardware uses undisclosed piecewise polynomials, so its results may differ from ours by
//!   its own approximation error (unknown; not modelled).
//! - `nc_matmul`: see [`matmul`].
//! - Integer tensors enter fp32 arithmetic as values (exact below 2^24).

mod machine;
pub mod matmul;
mod run;

pub use machine::{ExecError, Machine};
pub use run::{outputs, prepare, run, RunError, RunOutcome, HOST_HBM_LIMIT_BYTES};
