//! The back end of Rainier's NKI front ends. A front end (the `rainier` Python package runs an
//! unmodified NKI kernel's Python body) records a [`Trace`]: virtual SBUF/PSUM/HBM tensors and
//! NKI-level instructions, each with the kernel source line that issued it. [`compile`] places
//! the on-chip tensors by liveness and lowers the instructions to the NeuronCore ISA with the
//! semaphores their data dependencies need; [`run`] executes the program on the timed
//! simulator (with values, or time only) and returns outputs, device time, per-engine
//! utilisation and a Perfetto trace whose slices name the kernel source lines.
//!
//! Pure Rust: the Python binding (`rainier-py`) only converts arguments.

mod compile;
mod run;
mod trace;

pub use compile::{compile, Compiled};
pub use run::{run, EngineUse, Outcome, RunOptions};
pub use trace::{
    Access, Buffer, OpSpec, ScalarSpec, SourceRef, StageSpec, TensorSpec, Trace, TraceOp,
};

/// Why a traced kernel could not run. Every message names the kernel source line it concerns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NkiError {
    /// A malformed trace or argument (a front-end bug or bad input).
    #[error("{0}")]
    Input(String),
    /// An instruction or tensor the hardware cannot have.
    #[error("{at}: {message}")]
    Kernel { at: String, message: String },
    /// An on-chip tensor that does not fit beside those live at the same time.
    #[error("{at}: out of on-chip memory: {message}")]
    OutOfMemory { at: String, message: String },
    /// The lowered program breaks the NeuronCore's rules.
    #[error("the kernel breaks the hardware rules:\n  {0}")]
    Rules(String),
    /// The simulator failed (deadlock, bad inputs).
    #[error("{0}")]
    Run(String),
}
