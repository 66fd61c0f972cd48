//! Scenario files: a planner command's flags as TOML (`rainier run FILE`, `--scenario FILE`)
//! and the file a command line means (`--dump-scenario`).
//!
//! A scenario names its command (`command = "train"`), then sets one key per flag (the flag's
//! long name, with `-` or `_`), and adds what-if chips as `[[patch]]` tables (`chip`, `as`,
//! `set`). The file's flags go right after the command, before the command line's own, and a
//! flag given twice keeps its last value: flags on the command line override the file.
//! Relative paths in a scenario are relative to the current directory, as on a command line.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The commands a scenario can hold.
pub(crate) const COMMANDS: &[&str] = &["train", "serve", "compare", "site"];

/// Flags that are about the scenario, not part of it.
const OWN_FLAGS: &[&str] = &["scenario", "dump_scenario", "help", "version"];

/// `cmd` with every scenario command taking a repeated flag's last value (so the command
/// line overrides a scenario's flags) instead of refusing it.
pub(crate) fn overriding(mut cmd: Command) -> Command {
    for name in COMMANDS {
        cmd = cmd.mut_subcommand(name, |sub| sub.args_override_self(true));
    }
    cmd
}

/// `argv` with `rainier run FILE` or `rainier COMMAND --scenario FILE` replaced by the
/// command and the file's flags, followed by the rest of the command line.
pub(crate) fn expand(argv: Vec<OsString>, cmd: &Command) -> Result<Vec<OsString>> {
    let command = argv.get(1).and_then(|a| a.to_str()).unwrap_or_default().to_string();
    if command == "run" {
        let Some(file) = argv.get(2).filter(|f| !f.to_string_lossy().starts_with('-')) else {
            return Ok(argv); // `rainier run --help`, or a usage error clap reports
        };
        let nested = argv[3..].iter().any(|a| a.to_string_lossy().starts_with("--scenario"));
        if nested {
            bail!("rainier run FILE takes its flags from FILE: drop --scenario (one scenario per command)");
        }
        let (command, flags) = read(Path::new(file), None, cmd)?;
        let mut out = vec![argv[0].clone(), command.into()];
        out.extend(flags);
        out.extend(argv[3..].iter().cloned());
        return Ok(out);
    }
    if !COMMANDS.contains(&command.as_str()) {
        return Ok(argv);
    }
    let mut rest = Vec::new();
    let mut file = None;
    let mut args = argv[2..].iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--scenario" {
            let path = args.next().ok_or_else(|| anyhow!("--scenario needs a FILE.toml"))?;
            file = Some(path.clone());
        } else if let Some(path) = text.strip_prefix("--scenario=") {
            file = Some(path.into());
        } else {
            rest.push(arg.clone());
        }
    }
    let Some(file) = file else { return Ok(argv) };
    let (_, flags) = read(Path::new(&file), Some(&command), cmd)?;
    let mut out = vec![argv[0].clone(), command.into()];
    out.extend(flags);
    out.extend(rest);
    Ok(out)
}

/// Where in a file a span starts: `FILE:LINE:COLUMN`.
struct Located<'a> {
    file: &'a str,
    text: &'a str,
}

impl Located<'_> {
    fn at(&self, span: std::ops::Range<usize>, message: impl std::fmt::Display) -> anyhow::Error {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        anyhow!("{}:{line}:{column}: {message}", self.file)
    }
}

/// The command a scenario file names and its flags as command-line arguments; `expected` is
/// the command it is given to (`--scenario`), which a `command` key must match.
fn read(path: &Path, expected: Option<&str>, root: &Command) -> Result<(String, Vec<OsString>)> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read scenario {display}: {e}"))?;
    let at = Located { file: &display, text: &text };
    let table = DeTable::parse(&text).map_err(|e| {
        let message = e.message().trim().to_string();
        match e.span() {
            Some(span) => at.at(span, message),
            None => anyhow!("{display}: {message}"),
        }
    })?;
    let table = table.get_ref();
    let named = table.iter().find(|(k, _)| k.get_ref() == "command");
    let command = match (named, expected) {
        (Some((_, value)), expected) => {
            let DeValue::String(name) = value.get_ref() else {
                return Err(at.at(
                    value.span(),
                    "`command` must be a string: train, serve, compare or site",
                ));
            };
            if let Some(expected) = expected.filter(|e| *e != name.as_ref()) {
                return Err(at.at(
                    value.span(),
                    format!("this scenario is for `rainier {name}`, not `rainier {expected}`"),
                ));
            }
            if !COMMANDS.contains(&name.as_ref()) {
                return Err(at.at(
                    value.span(),
                    format!(
                        "`command = \"{name}\"`: a scenario holds one of {}",
                        COMMANDS.join(", ")
                    ),
                ));
            }
            name.to_string()
        }
        (None, Some(expected)) => expected.to_string(),
        (None, None) => bail!(
            "{display}: no `command` key (`command = \"train\"`: one of {})",
            COMMANDS.join(", ")
        ),
    };
    let sub = root.find_subcommand(&command).expect("every scenario command is a subcommand");
    let mut flags = Vec::new();
    for (key, value) in table.iter() {
        let name = key.get_ref().as_ref();
        if name == "command" {
            continue;
        }
        if name == "patch" {
            let catalog = table.iter().find_map(|(k, v)| match v.get_ref() {
                DeValue::String(path) if k.get_ref() == "catalog" => Some(path.to_string()),
                _ => None,
            });
            for spec in patches(value, &at, catalog.as_deref())? {
                flags.push("--patch".into());
                flags.push(spec.into());
            }
            continue;
        }
        let arg = find_arg(sub, name).ok_or_else(|| {
            let nearest = nearest(name, sub.get_arguments().filter_map(Arg::get_long));
            at.at(key.span(), format!("unknown key `{name}` for `rainier {command}`{nearest}"))
        })?;
        flags.extend(arg_flags(arg, name, value, &at)?);
    }
    Ok((command, flags))
}

/// The scenario argument of `sub` a key names (`global-batch` or `global_batch`).
fn find_arg<'a>(sub: &'a Command, key: &str) -> Option<&'a Arg> {
    let long = key.replace('_', "-");
    sub.get_arguments()
        .filter(|a| !OWN_FLAGS.contains(&a.get_id().as_str()))
        .find(|a| a.get_long() == Some(long.as_str()))
}

/// `; did you mean `x`?` for the candidate closest to `name`, if any is close.
fn nearest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score > 0.75)
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// The command-line arguments of one scenario key, each value checked by the flag's parser.
fn arg_flags(
    arg: &Arg,
    key: &str,
    value: &Spanned<DeValue>,
    at: &Located,
) -> Result<Vec<OsString>> {
    let long = format!("--{}", arg.get_long().unwrap_or(key));
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match value.get_ref() {
            DeValue::Boolean(true) => Ok(vec![long.into()]),
            DeValue::Boolean(false) => Ok(vec![]),
            _ => Err(at.at(value.span(), format!("`{key}` is a switch: true or false"))),
        };
    }
    let values: Vec<(String, std::ops::Range<usize>)> = match value.get_ref() {
        DeValue::Array(items) => items
            .iter()
            .map(|item| Ok((scalar(item, key, at)?, item.span())))
            .collect::<Result<_>>()?,
        _ => vec![(scalar(value, key, at)?, value.span())],
    };
    // The flag alone, with its value parser, checks each value where the file has it.
    let alone = Command::new("scenario")
        .no_binary_name(true)
        .arg(Arg::new("value").long("value").value_parser(arg.get_value_parser().clone()));
    for (v, span) in &values {
        let argv = [OsString::from("--value"), OsString::from(v)];
        alone.clone().try_get_matches_from(argv).map_err(|e| {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let message = first.trim_start_matches("error: ").replace(" for '--value <value>'", "");
            at.at(span.clone(), format!("`{key}`: {message}"))
        })?;
    }
    let appends = matches!(arg.get_action(), ArgAction::Append);
    Ok(match (values.len(), arg.get_value_delimiter()) {
        (1, _) => vec![long.into(), values[0].0.clone().into()],
        (_, Some(delimiter)) => {
            let joined: Vec<String> = values.into_iter().map(|(v, _)| v).collect();
            vec![long.into(), joined.join(&delimiter.to_string()).into()]
        }
        _ if appends => {
            values.into_iter().flat_map(|(v, _)| [long.clone().into(), v.into()]).collect()
        }
        _ => return Err(at.at(value.span(), format!("`{key}` takes one value, not a list"))),
    })
}

/// A string, number or boolean as the command line writes it.
fn scalar(value: &Spanned<DeValue>, key: &str, at: &Located) -> Result<String> {
    Ok(match value.get_ref() {
        DeValue::String(s) => s.to_string(),
        DeValue::Integer(i) if i.radix() == 10 => i.as_str().replace('_', ""),
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .map_err(|e| at.at(value.span(), format!("`{key}`: {e}")))?
            .to_string(),
        DeValue::Float(f) => f.as_str().replace('_', ""),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(_) | DeValue::Array(_) | DeValue::Table(_) => {
            return Err(at.at(value.span(), format!("`{key}` takes a string or a number")))
        }
    })
}

/// `[[patch]]` tables (`chip`, `as`, `set`) as `--patch` specs, each checked against the
/// built-in catalog extended by the scenario's `catalog` file (`file`), where it names a chip
/// there.
fn patches(value: &Spanned<DeValue>, at: &Located, file: Option<&str>) -> Result<Vec<String>> {
    let DeValue::Array(tables) = value.get_ref() else {
        return Err(at.at(value.span(), "`patch` is a list of tables: [[patch]] chip = \"trn2\", as = \"trn2-2xbw\", set = { hbm_bytes_per_s = 5.8e12 }"));
    };
    let mut specs = Vec::new();
    for table in tables {
        let DeValue::Table(entries) = table.get_ref() else {
            return Err(at.at(table.span(), "each patch is a table with `chip`, `as` and `set`"));
        };
        let (mut chip, mut name, mut set) = (None, None, Vec::new());
        for (key, v) in entries.iter() {
            match (key.get_ref().as_ref(), v.get_ref()) {
                ("chip", DeValue::String(s)) => chip = Some(s.to_string()),
                ("as", DeValue::String(s)) => name = Some(s.to_string()),
                ("set", DeValue::Table(figures)) => flatten("", figures, &mut set, at)?,
                (k @ ("chip" | "as" | "set"), _) => {
                    let wants = if k == "set" { "a table of figures" } else { "a string" };
                    return Err(at.at(v.span(), format!("patch `{k}` takes {wants}")));
                }
                (k, _) => {
                    let nearest = nearest(k, ["chip", "as", "set"].into_iter());
                    return Err(at.at(key.span(), format!("unknown patch key `{k}`{nearest}")));
                }
            }
        }
        let chip = chip
            .ok_or_else(|| at.at(table.span(), "a patch needs `chip`, the chip it starts from"))?;
        if set.is_empty() {
            return Err(at.at(table.span(), "a patch needs `set`, the figures it changes"));
        }
        let spec = rainier_hw::Patch {
            chip,
            name,
            set: set.into_iter().map(|(k, v, _)| (k, v)).collect(),
            origin: at.file.to_string(),
        }
        .spec();
        specs.push((spec, table.span()));
    }
    // Applied in order to the built-in catalog: a typo or a range slip points at its table.
    let mut catalog = rainier_hw::Catalog::built_in();
    // The scenario's own catalog file, where it can be read (its errors are the load's).
    if let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) {
        if let Ok(extended) = catalog.clone().with_overrides(&text, file.unwrap_or_default()) {
            catalog = extended;
        }
    }
    for (spec, span) in &specs {
        let patch = rainier_hw::Patch::parse(spec, at.file).map_err(|m| at.at(span.clone(), m))?;
        match catalog.clone().with_patch(&patch) {
            Ok(patched) => catalog = patched,
            // A chip of a --catalog file is checked when the catalog is loaded.
            Err(rainier_hw::HwError::UnknownChip { .. }) => {}
            Err(rainier_hw::HwError::Invalid { chip, message, .. }) => {
                return Err(at.at(span.clone(), format!("patch of `{chip}`: {message}")))
            }
            Err(e) => return Err(at.at(span.clone(), e)),
        }
    }
    Ok(specs.into_iter().map(|(spec, _)| spec).collect())
}

/// A patch's `set` table as dotted names (`neuron_core.tensor_clock_hz`), nested or quoted.
fn flatten(
    prefix: &str,
    table: &DeTable,
    out: &mut Vec<(String, serde_json::Value, std::ops::Range<usize>)>,
    at: &Located,
) -> Result<()> {
    for (key, v) in table.iter() {
        let name = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        let json = match v.get_ref() {
            DeValue::Table(inner) => {
                flatten(&name, inner, out, at)?;
                continue;
            }
            DeValue::String(s) => serde_json::Value::String(s.to_string()),
            _ => {
                let text = scalar(v, &name, at)?;
                let number = text.parse::<f64>().ok().and_then(serde_json::Number::from_f64);
                number.map(serde_json::Value::Number).ok_or_else(|| {
                    at.at(v.span(), format!("`{name}` takes a number or a string"))
                })?
            }
        };
        out.push((name, json, v.span()));
    }
    Ok(())
}

/// The scenario a parsed command line means, when it asks for one (`--dump-scenario`): its
/// command and every flag given (defaults left out), as TOML that `rainier run` reads back.
pub(crate) fn dump(root: &Command, matches: &ArgMatches) -> Option<String> {
    let (command, m) = matches.subcommand()?;
    if !COMMANDS.contains(&command) || !m.get_flag("dump_scenario") {
        return None;
    }
    let sub = root.find_subcommand(command)?;
    let mut out = format!(
        "# A Rainier scenario: `rainier run FILE` runs it; flags after FILE override it.\ncommand = \"{command}\"\n"
    );
    let mut patches = Vec::new();
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        if OWN_FLAGS.contains(&id) || m.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            out.push_str(&format!("{long} = true\n"));
            continue;
        }
        let raw: Vec<String> = m
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if id == "patch" {
            patches.extend(raw);
            continue;
        }
        let values: Vec<String> = raw.iter().map(|v| toml_scalar(v)).collect();
        match values.as_slice() {
            [one] => out.push_str(&format!("{long} = {one}\n")),
            many => out.push_str(&format!("{long} = [{}]\n", many.join(", "))),
        }
    }
    for spec in patches {
        let Ok(patch) = rainier_hw::Patch::parse(&spec, "--patch") else { continue };
        out.push_str(&format!("\n[[patch]]\nchip = {}\n", toml_scalar(&patch.chip)));
        if let Some(name) = &patch.name {
            out.push_str(&format!("as = {}\n", toml_scalar(name)));
        }
        let set: Vec<String> = patch
            .set
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => toml_scalar(s),
                    other => rainier_hw::Patch::value_text(other),
                };
                format!("{} = {value}", toml_scalar(k))
            })
            .collect();
        out.push_str(&format!("set = {{ {} }}\n", set.join(", ")));
    }
    Some(out)
}

/// A command-line value as a TOML value: a number where TOML reads it back as the same text,
/// else a string.
fn toml_scalar(v: &str) -> String {
    let bare = number_text(v);
    let reads_back = toml::from_str::<toml::Table>(&format!("x = {bare}"))
        .is_ok_and(|t| matches!(t.get("x"), Some(toml::Value::Integer(_) | toml::Value::Float(_))));
    if reads_back {
        bare
    } else {
        toml::Value::String(v.to_string()).to_string()
    }
}

/// `v` written as a TOML number if it looks like one (`5.` as `5.0`), else unchanged.
fn number_text(v: &str) -> String {
    let leading_zero = v.len() > 1 && v.starts_with('0') && !v[1..].starts_with(['.', 'e', 'E']);
    let numeric = !v.is_empty()
        && !leading_zero
        && v.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && v.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-');
    if numeric && (v.parse::<i64>().is_ok() || v.parse::<f64>().is_ok_and(f64::is_finite)) {
        // TOML floats need a digit after the point ("1." is not TOML).
        if v.ends_with('.') {
            return format!("{v}0");
        }
    }
    v.to_string()
}

/// The scenario flags of `train`, `serve`, `compare` and `site`, declared for `--help`:
/// [`expand`] replaces `--scenario` before parsing and [`dump`] reads `--dump-scenario` from
/// the matches.
#[derive(Debug, Clone, Default, clap::Args)]
#[allow(dead_code)]
pub(crate) struct ScenarioArgs {
    /// Read this command's flags from a scenario file (TOML: `command`, one key per flag,
    /// `[[patch]]` tables for what-if chips); flags on the command line override the file's.
    #[arg(long, value_name = "FILE.toml")]
    scenario: Option<std::path::PathBuf>,
    /// Print the scenario this command line means (TOML for `rainier run`) instead of
    /// running it.
    #[arg(long)]
    dump_scenario: bool,
}
