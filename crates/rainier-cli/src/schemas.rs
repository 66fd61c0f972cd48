//! JSON Schemas of the outputs, generated from the Rust types that make them (`schemars`) and
//! committed under `schemas/` (a test keeps them current and checks the golden outputs
//! against them). The printing code assembles some outputs as JSON values (a report with its
//! `bands` or `versus` added); the types here say what it adds, and the golden check catches
//! a drift between the two.

use schemars::JsonSchema;
use serde::Serialize;

use crate::versus::{Bands, Versus};

/// Every JSON output: `schema` and `rainier`, then the command's own fields.
#[derive(Serialize, JsonSchema)]
struct Output<T> {
    /// The output's schema: `rainier.NAME` and its version (bumped when a field is renamed,
    /// removed or changes meaning).
    schema: SchemaTag,
    /// The tool that wrote it.
    rainier: Tool,
    #[serde(flatten)]
    body: T,
}

#[derive(Serialize, JsonSchema)]
struct SchemaTag {
    name: String,
    version: u32,
}

#[derive(Serialize, JsonSchema)]
struct Tool {
    /// The crate version.
    version: String,
    /// The git commit it was built from.
    commit: String,
}

/// A prediction and its p10–p90 bands from the validation errors of its family.
#[derive(Serialize, JsonSchema)]
struct WithBands<R, B> {
    #[serde(flatten)]
    report: R,
    bands: B,
}

/// A comparison and its verdict against the baseline chip (or why there is none).
#[derive(Serialize, JsonSchema)]
struct WithVersus<R> {
    #[serde(flatten)]
    report: R,
    #[serde(skip_serializing_if = "Option::is_none")]
    versus: Option<Versus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    versus_error: Option<String>,
}

/// The validation report and the published command cases run beside it.
#[derive(Serialize, JsonSchema)]
struct WithCommands<R, C> {
    #[serde(flatten)]
    report: R,
    commands: C,
}

fn schema<T: JsonSchema>(name: &str) -> serde_json::Value {
    let mut schema = schemars::schema_for!(Output<T>);
    schema.insert("title".into(), format!("rainier.{name}").into());
    schema.insert(
        "description".into(),
        format!("`rainier {}` --json, schema version {}", command_of(name), crate::SCHEMA_VERSION)
            .into(),
    );
    let mut value = schema.to_value();
    closed(&mut value);
    value
}

/// Every object schema with named properties and no rule for others refuses others, so a
/// field an output has and its type lacks is an error, not a pass.
fn closed(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), false.into());
            }
            map.values_mut().for_each(closed);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(closed),
        _ => {}
    }
}

fn command_of(name: &str) -> String {
    match name {
        "train-search" => "train --search".into(),
        "serve-search" => "serve --search".into(),
        "serve-disaggregated" => "serve --disaggregate".into(),
        "compare-serve" => "compare --serve".into(),
        "catalog" => "chips".into(),
        other => other.into(),
    }
}

/// `(output name, its JSON Schema)` for every output made from typed reports.
pub fn output_schemas() -> Vec<(&'static str, serde_json::Value)> {
    use rainier_plan::{
        CompareReport, DisaggregatedReport, SearchReport, ServeCompareReport, ServeReport,
        TrainReport,
    };
    vec![
        ("train", schema::<WithBands<TrainReport, Bands>>("train")),
        ("train-search", schema::<WithBands<SearchReport, Bands>>("train-search")),
        ("serve", schema::<WithBands<ServeReport, Vec<Bands>>>("serve")),
        ("serve-search", schema::<WithBands<ServeReport, Vec<Bands>>>("serve-search")),
        ("serve-disaggregated", schema::<DisaggregatedReport>("serve-disaggregated")),
        ("compare", schema::<WithVersus<CompareReport>>("compare")),
        ("compare-serve", schema::<WithVersus<ServeCompareReport>>("compare-serve")),
        ("catalog", schema::<rainier_hw::Catalog>("catalog")),
        ("site", schema::<crate::site::SiteReport>("site")),
        (
            "validate",
            schema::<WithCommands<rainier_plan::ValidationReport, crate::cases::CasesReport>>(
                "validate",
            ),
        ),
    ]
}
