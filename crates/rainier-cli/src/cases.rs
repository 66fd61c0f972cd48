//! The command-form validation cases (`data/validation-commands.json`): published measurements,
//! each stated as a `rainier` command, the JSON field it predicts and the measured value with
//! its source. `rainier validate` runs them in process at the published plan and, for
//! training, also in search mode (the best plan found against the published throughput), and
//! reports the error per family.

use anyhow::{anyhow, Result};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Cli, Command};

const CASES: &str = include_str!("../data/validation-commands.json");

/// The Hugging Face configs the cases name as `@models/NAME.json`.
const MODELS: &[(&str, &str)] = &[
    ("gpt3-175b.json", include_str!("../data/models/gpt3-175b.json")),
    ("gpt3-46b-nemo.json", include_str!("../data/models/gpt3-46b-nemo.json")),
    ("llama2-13b.json", include_str!("../data/models/llama2-13b.json")),
    ("llama3-70b.json", include_str!("../data/models/llama3-70b.json")),
    ("llama3-8b.json", include_str!("../data/models/llama3-8b.json")),
    ("llama3.1-405b-asympp.json", include_str!("../data/models/llama3.1-405b-asympp.json")),
    ("llama3.1-405b.json", include_str!("../data/models/llama3.1-405b.json")),
    ("llama3.1-70b.json", include_str!("../data/models/llama3.1-70b.json")),
    ("llama3.1-8b.json", include_str!("../data/models/llama3.1-8b.json")),
    ("qwen3-32b.json", include_str!("../data/models/qwen3-32b.json")),
];

/// The prefix that names a validation model in `--model`.
pub(crate) const MODEL_PREFIX: &str = "@models/";

/// The config.json text of `@models/NAME.json`, or `None` for another name.
pub(crate) fn model_config(name: &str) -> Option<Result<&'static str>> {
    let file = name.strip_prefix(MODEL_PREFIX)?;
    Some(MODELS.iter().find(|(n, _)| *n == file).map(|(_, text)| *text).ok_or_else(|| {
        let known: Vec<&str> = MODELS.iter().map(|(n, _)| *n).collect();
        anyhow!("{name}: no such validation model (known: {})", known.join(", "))
    }))
}

#[derive(Debug, Deserialize)]
struct Dataset {
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
struct Case {
    id: String,
    args: Vec<String>,
    field: String,
    measured: f64,
    #[serde(default)]
    scale: Option<f64>,
    source: String,
    grade: String,
    category: String,
    /// A coefficient is fitted on this case: it is reported, and left out of its family's
    /// statistics.
    #[serde(default)]
    fitted: bool,
}

/// One case's prediction at the published plan (and, for training, by a plan search).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct CaseResult {
    pub id: String,
    pub family: &'static str,
    pub field: String,
    pub measured: f64,
    pub grade: String,
    pub source: String,
    /// A coefficient is fitted on this case (not in the family statistics).
    pub fitted: bool,
    /// The command, as in the dataset.
    pub command: String,
    pub predicted: Option<f64>,
    pub error: Option<f64>,
    /// Why the command gave no prediction (a plan that does not fit, an error).
    pub failure: Option<String>,
    /// Training: the best plan a search finds on the same chips, and its error.
    pub search: Option<SearchResult>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct SearchResult {
    pub predicted: Option<f64>,
    pub error: Option<f64>,
    pub plan: Option<String>,
    pub failure: Option<String>,
}

/// Median and maximum |error| of one family at the published plans.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct FamilySummary {
    pub family: &'static str,
    pub cases: usize,
    /// Cases a coefficient is fitted on, left out of the statistics.
    pub fitted: usize,
    pub failed: usize,
    pub median_abs_error: Option<f64>,
    pub max_abs_error: Option<f64>,
    /// Search mode (training families): the same over the best plans found.
    pub search_median_abs_error: Option<f64>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct CasesReport {
    pub cases: Vec<CaseResult>,
    pub families: Vec<FamilySummary>,
}

/// The families the targets are stated for, in report order.
pub(crate) const FAMILIES: [&str; 6] = [
    "Trainium training",
    "Trainium/Inferentia serving TTFT",
    "Trainium/Inferentia serving TPOT",
    "NVIDIA training",
    "NVIDIA serving",
    "TPU training",
];

fn family(case: &Case) -> &'static str {
    let serve = case.args.first().is_some_and(|a| a == "serve");
    match case.category.chars().next() {
        Some('a') => FAMILIES[0],
        Some('b') if case.field == "ttft_ms" => FAMILIES[1],
        Some('b') => FAMILIES[2],
        Some('d') => FAMILIES[5],
        _ if serve => FAMILIES[4],
        _ => FAMILIES[3],
    }
}

/// Runs `rainier ARGS --json` in process and returns its JSON.
fn run_json(args: &[String]) -> Result<Value> {
    let argv = std::iter::once("rainier".to_string())
        .chain(args.iter().cloned())
        .chain(std::iter::once("--json".to_string()));
    let cli = Cli::try_parse_from(argv).map_err(|e| anyhow!("{}", e.to_string().trim()))?;
    match cli.command {
        Command::Train(a) => match crate::plan::train_output(&a)? {
            crate::plan::TrainOutput::Plan(r) => Ok(serde_json::to_value(r)?),
            crate::plan::TrainOutput::Search(r) => Ok(serde_json::to_value(r)?),
        },
        Command::Serve(a) => Ok(serde_json::to_value(crate::serve::report(&a)?)?),
        _ => Err(anyhow!("only train and serve commands are validation cases")),
    }
}

/// `a.b.c` of a JSON value, as a number.
fn field(v: &Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// The plan flags a search chooses itself.
const PLAN_FLAGS: [&str; 10] = [
    "--tp",
    "--pp",
    "--dp",
    "--cp",
    "--ep",
    "--vpp",
    "--micro-batch",
    "--recompute",
    "--zero",
    "--placement",
];

fn search_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if PLAN_FLAGS.contains(&a.as_str()) {
            it.next();
        } else {
            out.push(a.clone());
        }
    }
    out.push("--search".into());
    out
}

fn one_line(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    s.split_once("; more").map_or(s.clone(), |(head, _)| head.to_string())
}

fn evaluate(case: &Case, search: bool) -> CaseResult {
    let scale = case.scale.unwrap_or(1.0);
    let predict = |args: &[String]| -> (Option<f64>, Option<Value>, Option<String>) {
        match run_json(args) {
            Ok(v) => match field(&v, &case.field) {
                Some(x) => (Some(x * scale), Some(v), None),
                None => (None, None, Some(format!("no numeric field {}", case.field))),
            },
            Err(e) => (None, None, Some(one_line(&e))),
        }
    };
    let error = |p: Option<f64>| p.map(|p| p / case.measured - 1.0);
    let (predicted, _, failure) = predict(&case.args);
    let search = (search && case.args.first().is_some_and(|a| a == "train")).then(|| {
        let (p, v, failure) = predict(&search_args(&case.args));
        let plan = v.and_then(|v| {
            let p = v.get("plan")?;
            let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(1);
            Some(format!(
                "tp {} pp {} dp {} cp {} mb {}",
                n("tp"),
                n("pp"),
                n("dp"),
                n("cp"),
                n("micro_batch")
            ))
        });
        SearchResult { predicted: p, error: error(p), plan, failure }
    });
    CaseResult {
        id: case.id.clone(),
        family: family(case),
        field: case.field.clone(),
        measured: case.measured,
        grade: case.grade.clone(),
        source: case.source.clone(),
        fitted: case.fitted,
        command: format!("rainier {}", case.args.join(" ")),
        predicted,
        error: error(predicted),
        failure,
        search,
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Every case; `search` also runs the training cases in search mode.
/// `neuron_costs`: a `--neuron-costs` value for the Trainium training cases (which then skip
/// the search: simulating every shape a search tries takes minutes).
pub(crate) fn run(search: bool, neuron_costs: Option<&str>) -> Result<CasesReport> {
    let dataset: Dataset = serde_json::from_str(CASES)?;
    let cases: Vec<CaseResult> = dataset
        .cases
        .iter()
        .map(|c| match neuron_costs.filter(|_| family(c) == FAMILIES[0]) {
            Some(costs) => {
                let mut args = c.args.clone();
                args.extend(["--neuron-costs".to_string(), costs.to_string()]);
                evaluate(&Case { args, ..c.clone() }, false)
            }
            None => evaluate(c, search),
        })
        .collect();
    let families = FAMILIES
        .iter()
        .map(|&family| {
            let all = cases.iter().filter(|c| c.family == family);
            let fitted = all.clone().filter(|c| c.fitted).count();
            let of: Vec<&CaseResult> = all.filter(|c| !c.fitted).collect();
            let abs: Vec<f64> = of.iter().filter_map(|c| c.error).map(f64::abs).collect();
            let searched: Vec<f64> = of
                .iter()
                .filter_map(|c| c.search.as_ref().and_then(|s| s.error))
                .map(f64::abs)
                .collect();
            FamilySummary {
                family,
                cases: of.len(),
                fitted,
                failed: of.iter().filter(|c| c.error.is_none()).count(),
                max_abs_error: abs.iter().copied().reduce(f64::max),
                median_abs_error: median(abs),
                search_median_abs_error: median(searched),
            }
        })
        .collect();
    Ok(CasesReport { cases, families })
}

/// The report as text: one line per case, then one per family.
pub(crate) fn text(r: &CasesReport) -> String {
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:+.1}%", 100.0 * x));
    let mut s = format!(
        "published commands ({} cases: shared/validation/public-points-2.json)\n{:<56} {:<30} {:>10} {:>10} {:>8} {:>9}\n",
        r.cases.len(),
        "case",
        "field",
        "measured",
        "predicted",
        "error",
        "search"
    );
    for c in &r.cases {
        let predicted = c.predicted.map_or("-".to_string(), |p| format!("{p:.4}"));
        let search = c.search.as_ref().map_or(String::new(), |s| pct(s.error));
        let mut why = c.failure.as_ref().map_or(String::new(), |f| format!("  [{f}]"));
        if c.fitted {
            why += "  (fitted)";
        }
        if let Some(f) = c.search.as_ref().and_then(|s| s.failure.as_ref()) {
            why += &format!("  [search: {f}]");
        }
        s += &format!(
            "{:<56} {:<30} {:>10.4} {:>10} {:>8} {:>9}{why}\n",
            c.id,
            c.field,
            c.measured,
            predicted,
            pct(c.error),
            search,
        );
    }
    s += "\nper family (targets: median <= 10 %, none beyond 25 %)\n";
    for f in &r.families {
        let abs = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.1} %", 100.0 * x));
        s += &format!(
            "  {:<34} {:>2} cases{}, {} without a prediction: median {}, max {}{}\n",
            f.family,
            f.cases,
            if f.fitted > 0 { format!(" (+{} fitted)", f.fitted) } else { String::new() },
            f.failed,
            abs(f.median_abs_error),
            abs(f.max_abs_error),
            f.search_median_abs_error
                .map_or(String::new(), |m| format!("; search mode median {:.1} %", 100.0 * m))
        );
    }
    s
}
