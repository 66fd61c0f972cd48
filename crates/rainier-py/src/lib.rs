//! `rainier._native`: the Python binding of `rainier-nki` and of the `rainier` command (the
//! planners). It converts arguments and results and nothing else; the NKI front ends and the
//! planner API (`rainier.plan`) live in the `rainier` Python package.

use std::collections::BTreeMap;
use std::str::FromStr;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rainier_arch::{Chip, ChipParams};
use rainier_nki::{NkiError, Outcome, RunOptions, Trace};
use rainier_tensor::{DType, HostTensor};

/// A finished simulation, kept for its outputs, summary and trace.
#[pyclass(frozen, module = "rainier._native")]
struct NativeRun {
    outcome: Outcome,
    chip: ChipParams,
    files: Vec<String>,
}

#[pymethods]
impl NativeRun {
    /// The report as a JSON string (time, engines, DMA, memory).
    fn summary_json(&self) -> String {
        self.outcome.summary(&self.chip).to_string()
    }

    /// Simulated device time in nanoseconds.
    #[getter]
    fn time_ns(&self) -> f64 {
        self.outcome.time_ns()
    }

    /// Output tensors: `[(name, dtype, shape, bytes)]`.
    fn outputs<'py>(
        &self,
        py: Python<'py>,
    ) -> Vec<(String, String, Vec<usize>, Bound<'py, PyBytes>)> {
        self.outcome
            .outputs
            .iter()
            .map(|(n, t)| {
                (n.clone(), t.dtype.name().to_string(), t.shape.clone(), PyBytes::new(py, &t.data))
            })
            .collect()
    }

    /// The Chrome/Perfetto trace as a JSON string (the run must have been recorded).
    fn trace_json(&self, py: Python<'_>) -> String {
        py.detach(|| self.outcome.chrome_trace_text(&self.chip, &self.files))
    }

    /// The lowered NeuronCore program in Rainier's assembly.
    fn program_text(&self) -> String {
        self.outcome.compiled.program.to_string()
    }
}

fn error(e: NkiError) -> PyErr {
    match e {
        NkiError::Input(m) => PyValueError::new_err(m),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// Runs `f` with the GIL released. A panic is a Rainier bug: it reaches Python as an
/// exception instead of aborting the interpreter.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> PyResult<T> {
    py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))).map_err(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        PyRuntimeError::new_err(format!("internal error in Rainier (please report): {what}"))
    })
}

/// Compiles and runs a traced kernel. `inputs`: `[(name, dtype, shape, bytes)]`.
#[pyfunction]
#[pyo3(signature = (trace_json, chip, inputs, values, record))]
fn run_trace(
    py: Python<'_>,
    trace_json: &str,
    chip: &str,
    inputs: Vec<(String, String, Vec<usize>, Vec<u8>)>,
    values: bool,
    record: bool,
) -> PyResult<NativeRun> {
    let chip = Chip::from_str(chip).map_err(|e| PyValueError::new_err(e.to_string()))?.params();
    let trace: Trace = serde_json::from_str(trace_json)
        .map_err(|e| PyValueError::new_err(format!("malformed kernel trace: {e}")))?;
    let mut host = BTreeMap::new();
    for (name, dtype, shape, data) in inputs {
        let dtype = DType::from_str(&dtype).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let want = shape.iter().product::<usize>() * dtype.size_bytes();
        if data.len() != want {
            return Err(PyValueError::new_err(format!(
                "input '{name}': {} bytes for {dtype}{shape:?} ({want} expected)",
                data.len()
            )));
        }
        host.insert(name, HostTensor { dtype, shape, data });
    }
    let options = RunOptions { values, record };
    let outcome =
        detached(py, || rainier_nki::run(&trace, &chip, &host, options))?.map_err(error)?;
    Ok(NativeRun { outcome, chip, files: trace.files })
}

/// The NeuronCore figures the front end needs, from `rainier-arch` (the one place hardware
/// numbers live): `(partitions, sbuf_bytes_per_partition, psum_bytes_per_partition)`.
#[pyfunction]
fn core_params(chip: &str) -> PyResult<(u32, u32, u32)> {
    let c = Chip::from_str(chip).map_err(|e| PyValueError::new_err(e.to_string()))?.params().core;
    Ok((c.partitions.value, c.sbuf_bytes_per_partition.value, c.psum_bytes_per_partition.value))
}

/// Runs one `rainier` command line in process, the GIL released: `(True, what it prints)` or
/// `(False, its error as the JSON object `--json` reports: kind, field, message)`.
#[pyfunction]
fn run_command(py: Python<'_>, args: Vec<String>) -> PyResult<(bool, String)> {
    let result = detached(py, || rainier_cli::run_captured(&args))?;
    Ok(match result {
        Ok(text) => (true, text),
        Err(e) => {
            let error =
                serde_json::json!({ "kind": e.kind, "field": e.field, "message": e.message });
            (false, error.to_string())
        }
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_trace, m)?)?;
    m.add_function(wrap_pyfunction!(run_command, m)?)?;
    m.add_function(wrap_pyfunction!(core_params, m)?)?;
    m.add_class::<NativeRun>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
