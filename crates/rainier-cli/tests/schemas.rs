//! The JSON Schemas under `schemas/`: generated from the Rust types (`schemars`), kept current
//! (re-blessed with `RAINIER_BLESS=1 cargo test -p rainier-cli --test schemas`), and every
//! golden output, the catalog, a site and serving reports valid against its schema, so a field the
//! printing code adds or renames without its type fails here.

use std::path::Path;
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn schema_text(schema: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[test]
fn the_committed_schemas_are_current() {
    let dir = Path::new(ROOT).join("schemas");
    let bless = std::env::var_os("RAINIER_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, schema) in rainier_cli::output_schemas() {
        let path = dir.join(format!("{name}.schema.json"));
        let text = schema_text(&schema);
        if bless {
            std::fs::create_dir_all(&dir).expect("schemas/");
            std::fs::write(&path, &text).expect("write a schema");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.display().to_string());
        }
        // Each is a valid JSON Schema.
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(
        stale.is_empty(),
        "stale schemas (re-bless with RAINIER_BLESS=1 and commit the diff): {stale:?}"
    );
}

fn check(name: &str, what: &str, output: &serde_json::Value) {
    let schemas = rainier_cli::output_schemas();
    let (_, schema) = schemas.iter().find(|(n, _)| *n == name).expect("a schema of that name");
    let validator = jsonschema::validator_for(schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(output)
        .take(5)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{what} does not match schemas/{name}.schema.json: {errors:#?}");
    assert_eq!(output["schema"]["name"], format!("rainier.{name}"), "{what}");
}

#[test]
fn every_golden_output_matches_its_schema() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (file, name) in [
        ("train.json", "train"),
        ("train-h100.json", "train"),
        ("train-search.json", "train-search"),
        ("serve.json", "serve"),
        ("serve-search.json", "serve-search"),
        ("compare.json", "compare"),
        ("compare-serve.json", "compare-serve"),
        ("validate.json", "validate"),
    ] {
        let text = std::fs::read_to_string(golden.join(file)).expect("a golden output");
        let output: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        check(name, file, &output);
    }
}

#[test]
fn the_catalog_site_and_serve_reports_match_their_schemas() {
    for (args, name) in [
        (&["chips", "--json"][..], "catalog"),
        (&["site", "--power-mw", "50", "--chip", "h100", "--json"][..], "site"),
        (
            &["serve", "--model", "llama3-70b", "--chip", "h100", "--chips", "16", "--json"][..],
            "serve",
        ),
        (
            &[
                "serve",
                "--model",
                "llama3-70b",
                "--chip",
                "h100",
                "--chips",
                "16",
                "--disaggregate",
                "--slo-tpot-ms",
                "60",
                "--json",
            ][..],
            "serve-disaggregated",
        ),
        (
            &[
                "serve",
                "--model",
                "llama3-8b",
                "--chip",
                "trn2",
                "--chips",
                "1",
                "--json",
                "--workload",
                "lognormal",
                "--rate",
                "2",
                "--requests",
                "200",
            ][..],
            "serve",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rainier"))
            .args(args)
            .current_dir(ROOT)
            .output()
            .expect("rainier runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let output: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        check(name, &format!("rainier {}", args.join(" ")), &output);
    }
}

/// The schemas are closed: a field the types do not have, at the top or nested, is an error.
#[test]
fn a_field_the_types_lack_fails_the_schema() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/train.json");
    let output: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden).expect("golden")).expect("JSON");
    let schemas = rainier_cli::output_schemas();
    let (_, schema) = schemas.iter().find(|(n, _)| *n == "train").expect("train");
    let validator = jsonschema::validator_for(schema).expect("a valid schema");
    assert!(validator.is_valid(&output));
    for pointer in ["", "/plan", "/breakdown_s", "/economics"] {
        let mut bad = output.clone();
        let target = bad.pointer_mut(pointer).expect("an object");
        target.as_object_mut().expect("object").insert("bogus".into(), 1.into());
        assert!(!validator.is_valid(&bad), "an unknown field at `{pointer}` passed");
    }
    let mut wrong_type = output.clone();
    wrong_type["step_time_s"] = "fast".into();
    assert!(!validator.is_valid(&wrong_type));
    let mut missing = output;
    missing.as_object_mut().expect("object").remove("tokens_per_s");
    assert!(!validator.is_valid(&missing));
}
