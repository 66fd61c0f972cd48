use std::collections::BTreeMap;

use rainier_arch::ChipParams;
use rainier_isa::{verify, Engine, Program, TensorKind, Violations};
use rainier_tensor::HostTensor;

use crate::{ExecError, Machine};

/// Why a program could not run to completion.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(#[from] Violations),
    #[error("input '{0}' is declared by the program but was not given")]
    MissingInput(String),
    #[error("'{0}' is not an input tensor of the program (inputs: {1})")]
    UnknownInput(String, String),
    #[error("input '{name}': the program declares {expected}, the file holds {found}")]
    InputMismatch { name: String, expected: String, found: String },
    #[error("line {line} (instruction #{index} {opcode}): {source}")]
    Exec { index: usize, line: u32, opcode: &'static str, source: ExecError },
    #[error("deadlock: {0}")]
    Deadlock(String),
    #[error("the program declares {declared} bytes of HBM tensors, more than {limit_name} ({limit} bytes)")]
    HbmTooLarge { declared: u64, limit: u64, limit_name: String },
}

impl RunError {
    /// `source` raised by instruction `index` of `program`.
    pub fn exec(program: &Program, index: usize, source: ExecError) -> Self {
        let opcode = program.instructions.get(index).map_or("?", |i| i.op.name());
        RunError::Exec { index, line: program.line_of(index), opcode, source }
    }
}

/// The result of a completed run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Every `output` tensor, by name.
    pub outputs: BTreeMap<String, HostTensor>,
    pub instructions_executed: u64,
    /// Instructions executed per engine, indexed by [`Engine::index`].
    pub per_engine: [u64; 5],
    /// The machine's final state (SBUF, PSUM, HBM, semaphores).
    pub machine: Machine,
}

fn describe(shape: &[usize], dtype: rainier_tensor::DType) -> String {
    let s: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("{dtype}[{}]", s.join(", "))
}

/// Host memory the functional simulator may spend on HBM tensors (it holds every value).
pub const HOST_HBM_LIMIT_BYTES: u64 = 8 << 30;

/// Checks that the program's HBM tensors fit, and returns a machine loaded with `inputs` (every
/// declared input, by name, with its declared dtype and shape). The program must be verified.
pub fn prepare(
    program: &Program,
    chip: &ChipParams,
    inputs: &BTreeMap<String, HostTensor>,
) -> Result<Machine, RunError> {
    let declared = program.hbm_bytes();
    for (limit, limit_name) in [
        (chip.hbm_bytes.value, format!("the HBM of one {} chip", chip.chip)),
        (HOST_HBM_LIMIT_BYTES, "the functional simulator's host limit".to_string()),
    ] {
        if declared > limit {
            return Err(RunError::HbmTooLarge { declared, limit, limit_name });
        }
    }
    let mut m = Machine::new(program, &chip.core);
    for (name, t) in inputs {
        let Some((i, decl)) = program.tensor(name).filter(|(_, d)| d.kind == TensorKind::Input)
        else {
            let names: Vec<&str> = program
                .tensors
                .iter()
                .filter(|t| t.kind == TensorKind::Input)
                .map(|t| t.name.as_str())
                .collect();
            return Err(RunError::UnknownInput(name.clone(), names.join(", ")));
        };
        let shape: Vec<usize> = decl.shape.iter().map(|&d| d as usize).collect();
        if t.shape != shape || t.dtype != decl.dtype {
            return Err(RunError::InputMismatch {
                name: name.clone(),
                expected: describe(&shape, decl.dtype),
                found: describe(&t.shape, t.dtype),
            });
        }
        m.hbm_mut(i).copy_from_slice(&t.data);
    }
    if let Some(missing) = program
        .tensors
        .iter()
        .find(|t| t.kind == TensorKind::Input && !inputs.contains_key(&t.name))
    {
        return Err(RunError::MissingInput(missing.name.clone()));
    }
    Ok(m)
}

/// The program's `output` tensors as they stand in `m`, by name.
pub fn outputs(program: &Program, m: &Machine) -> BTreeMap<String, HostTensor> {
    program
        .tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == TensorKind::Output)
        .map(|(i, t)| {
            let shape = t.shape.iter().map(|&d| d as usize).collect();
            (t.name.clone(), HostTensor { dtype: t.dtype, shape, data: m.hbm(i).to_vec() })
        })
        .collect()
}

/// Verifies `program` for one NeuronCore of `chip`, loads `inputs` (every declared input, by
/// name) and runs all engine streams to completion.
pub fn run(
    program: &Program,
    chip: &ChipParams,
    inputs: &BTreeMap<String, HostTensor>,
) -> Result<RunOutcome, RunError> {
    verify(program, &chip.core)?;
    let mut m = prepare(program, chip, inputs)?;
    let streams = program.streams();
    let mut heads = [0usize; 5];
    let mut per_engine = [0u64; 5];
    let mut executed = 0u64;
    loop {
        // Among engines whose next instruction's waits hold, the lowest program index issues.
        let ready = Engine::ALL
            .iter()
            .filter_map(|e| streams[e.index()].get(heads[e.index()]).map(|&i| (i, e.index())))
            .filter(|&(i, _)| {
                program.instructions[i]
                    .waits
                    .iter()
                    .all(|w| m.semaphores[w.semaphore as usize] >= w.value)
            })
            .min();
        let Some((i, e)) = ready else { break };
        let ins = &program.instructions[i];
        m.execute(&ins.op).map_err(|source| RunError::exec(program, i, source))?;
        for &s in &ins.signals {
            let v = &mut m.semaphores[s as usize];
            *v = v.saturating_add(1);
        }
        heads[e] += 1;
        per_engine[e] += 1;
        executed += 1;
    }
    let stuck: Vec<String> = Engine::ALL
        .iter()
        .filter_map(|e| {
            let &i = streams[e.index()].get(heads[e.index()])?;
            let why = program.describe_stuck(i, |s| m.semaphores[s as usize]);
            Some(format!("{e} engine {why}"))
        })
        .collect();
    if !stuck.is_empty() {
        return Err(RunError::Deadlock(stuck.join("; ")));
    }
    let outputs = outputs(program, &m);
    Ok(RunOutcome { outputs, instructions_executed: executed, per_engine, machine: m })
}
