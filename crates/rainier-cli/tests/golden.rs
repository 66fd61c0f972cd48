//! Golden outputs: the JSON of the main commands and a trace, byte for byte, so a refactor
//! that should not change a number provably does not. A deliberate change re-blesses them:
//! `RAINIER_BLESS=1 cargo test -p rainier-cli --test golden`, and the diff goes in the commit.
//!
//! The tool's commit (`rainier.commit`) is replaced by `"<commit>"` before comparing.

use std::path::{Path, PathBuf};
use std::process::Command;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");

fn rainier(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_rainier"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap_or_else(|e| panic!("cannot start rainier: {e}"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "rainier {args:?} failed: {stderr}");
    String::from_utf8(o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// `text` as canonical JSON with the commit masked.
fn normalized(text: &str, what: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
    if let Some(commit) = v.get_mut("rainier").and_then(|r| r.get_mut("commit")) {
        *commit = serde_json::Value::from("<commit>");
    }
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_else(|e| panic!("{what}: {e}"));
    s.push('\n');
    s
}

/// Compares `got` with `tests/golden/NAME.json`, or writes it when blessing. Returns the
/// mismatch, if any, as a one-paragraph message.
fn check(name: &str, got: &str) -> Option<String> {
    let path = Path::new(GOLDEN).join(format!("{name}.json"));
    if std::env::var_os("RAINIER_BLESS").is_some() {
        std::fs::write(&path, got).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return None;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if want == got {
        return None;
    }
    let line = want.lines().zip(got.lines()).position(|(a, b)| a != b);
    let at = line.unwrap_or_else(|| want.lines().count().min(got.lines().count()));
    Some(format!(
        "{}: differs from line {} (golden {:?}, now {:?})",
        path.display(),
        at + 1,
        want.lines().nth(at).unwrap_or("<end>"),
        got.lines().nth(at).unwrap_or("<end>")
    ))
}

#[test]
fn golden_outputs_are_unchanged() {
    let cases: &[(&str, &[&str])] = &[
        (
            "train",
            &[
                "train",
                "--model",
                "llama3-70b",
                "--chip",
                "trn2",
                "--chips",
                "1024",
                "--seq",
                "8192",
                "--global-batch",
                "1024",
                "--json",
            ],
        ),
        (
            "train-search",
            &[
                "train",
                "--model",
                "llama3-8b",
                "--chip",
                "trn1",
                "--chips",
                "64",
                "--seq",
                "4096",
                "--global-batch",
                "256",
                "--search",
                "--top",
                "3",
                "--json",
            ],
        ),
        (
            "train-h100",
            &[
                "train",
                "--model",
                "llama3-70b",
                "--chip",
                "h100",
                "--chips",
                "1024",
                "--seq",
                "8192",
                "--global-batch",
                "1024",
                "--tp",
                "8",
                "--pp",
                "4",
                "--dp",
                "32",
                "--json",
            ],
        ),
        ("serve", &["serve", "--model", "llama3-8b", "--chip", "trn2", "--chips", "1", "--json"]),
        (
            "serve-search",
            &[
                "serve",
                "--model",
                "llama3-70b",
                "--chip",
                "h100",
                "--chips",
                "8",
                "--search",
                "--json",
            ],
        ),
        ("compare", &["compare", "--json"]),
        ("compare-serve", &["compare", "--serve", "--json"]),
        ("validate", &["validate", "--json"]),
        (
            "kernel-gemm",
            &[
                "kernel", "gemm", "--m", "256", "--n", "512", "--k", "384", "--chip", "trn2",
                "--json",
            ],
        ),
        (
            "kernel-layer",
            &[
                "kernel",
                "layer",
                "--model",
                "llama3.2-1b",
                "--tp",
                "4",
                "--seq",
                "256",
                "--chip",
                "trn1",
                "--json",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, args) in cases {
        failures.extend(check(name, &normalized(&rainier(args), name)));
    }
    // A Perfetto trace of a small program.
    let dir = std::env::temp_dir().join(format!("rainier-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let trace: PathBuf = dir.join("trace.json");
    let trace_arg = trace.display().to_string();
    rainier(&[
        "sim",
        "examples/asm/matmul.asm",
        "--chip",
        "trn2",
        "--no-values",
        "--trace",
        &trace_arg,
    ]);
    let text = std::fs::read_to_string(&trace).unwrap_or_else(|e| panic!("trace: {e}"));
    failures.extend(check("trace-matmul", &normalized(&text, "trace")));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{}\nIf the change is deliberate: RAINIER_BLESS=1 cargo test -p rainier-cli --test golden",
        failures.join("\n")
    );
}
