//! The NeuronCore instruction set, in the NKI vocabulary: what each instruction means, never when
//! it runs (time lives in the timing model).
//!
//! - [`Program`]: HBM tensor declarations and one instruction listing; each engine executes the
//!   subsequence of instructions that name it, in order, synchronized only by semaphores.
//! - [`parse`] / `Display`: the text assembly format (`docs/assembly.md`); printing then parsing
//!   gives the same program back.
//! - [`verify`]: every rule the hardware enforces (partition ranges and alignment, SBUF/PSUM
//!   bounds, engine-to-memory permissions, shapes, dtype pairings), all violations at once.
//! - [`OPCODES`]: the instruction table that `docs/isa.md` is generated from.

mod parse;
mod print;
mod races;
mod table;
mod types;
mod verify;

pub use parse::{parse, ParseError};
pub use table::{isa_markdown, opcode, OpcodeInfo, OPCODES};
pub use types::*;
pub use verify::{verify, verify_rules, Violation, Violations};
