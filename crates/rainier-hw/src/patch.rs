//! Catalog patches: a chip made from a catalog chip with named figures changed, each changed
//! figure graded [`Grade::WhatIf`](crate::Grade::WhatIf) so every report can say so.
//!
//! A patch names a base chip, the figures to set (dotted names as `rainier chips --chip`
//! lists them: `hbm_bytes_per_s`, `node.scale_up_bytes_per_s_per_dir`, `peak_flops.fp8`, or a
//! NeuronCore parameter as `neuron_core.tensor_clock_hz`) and optionally a new name. With a
//! new name the base stays and the patched copy is added (a Neuron copy keeps reading the
//! base's NeuronCore, its own figures set on top); without one the base itself changes.

use serde_json::{Map, Value};

use crate::{Catalog, Chip, HwError};

/// A chip built from `chip` with `set` applied, named `name` (the base's name if `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub chip: String,
    pub name: Option<String>,
    /// Dotted figure name and its new value, in order.
    pub set: Vec<(String, Value)>,
    /// Where the patch was written, for errors and sources (`--patch`, `scenario.toml`).
    pub origin: String,
}

impl Patch {
    /// Parses the command-line form `CHIP:KEY=VALUE[,KEY=VALUE...]`, where the key `as` names
    /// the new chip: `trn2:hbm_bytes_per_s=5.8e12,as=trn2-2xbw`.
    pub fn parse(spec: &str, origin: &str) -> Result<Patch, String> {
        let (chip, changes) = spec.split_once(':').ok_or_else(|| {
            format!("patch `{spec}` must be CHIP:KEY=VALUE[,KEY=VALUE...] (e.g. trn2:hbm_bytes_per_s=5.8e12,as=trn2-2xbw)")
        })?;
        let mut patch =
            Patch { chip: chip.trim().into(), name: None, set: vec![], origin: origin.into() };
        for change in changes.split(',') {
            let (key, value) = change
                .split_once('=')
                .ok_or_else(|| format!("patch `{spec}`: `{change}` is not KEY=VALUE"))?;
            let (key, value) = (key.trim(), value.trim());
            if key == "as" {
                patch.name = Some(value.into());
                continue;
            }
            // Numbers stay numbers; anything else is a string (a framework, a stack name).
            let value = value
                .parse::<f64>()
                .ok()
                .and_then(|v| serde_json::Number::from_f64(v).map(Value::Number))
                .unwrap_or_else(|| Value::String(value.into()));
            patch.set.push((key.into(), value));
        }
        if patch.set.is_empty() {
            return Err(format!("patch `{spec}` sets nothing"));
        }
        Ok(patch)
    }

    /// The command-line form of this patch ([`Patch::parse`] reads it back).
    pub fn spec(&self) -> String {
        let mut parts: Vec<String> =
            self.set.iter().map(|(k, v)| format!("{k}={}", Patch::value_text(v))).collect();
        if let Some(name) = &self.name {
            parts.push(format!("as={name}"));
        }
        format!("{}:{}", self.chip, parts.join(","))
    }

    /// A set value as people write it: `5.8e12`, `2.5`, `nxd`.
    pub fn value_text(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => match n.as_f64() {
                Some(v) if v != 0.0 && !(1e-3..1e6).contains(&v.abs()) => format!("{v:e}"),
                Some(v) => format!("{v}"),
                None => n.to_string(),
            },
            other => other.to_string(),
        }
    }
}

impl Catalog {
    /// This catalog with `patch` applied: the patched chip added (a new name) or in place of
    /// its base. Unknown chips and figures are errors naming the nearest valid name.
    pub fn with_patch(mut self, patch: &Patch) -> Result<Catalog, HwError> {
        let base = self.chip(&patch.chip)?.clone();
        let invalid = |message: String| HwError::Invalid {
            file: patch.origin.clone(),
            chip: patch.chip.clone(),
            message,
        };
        let mut entry = serde_json::to_value(&base).map_err(|e| invalid(e.to_string()))?;
        let mut changed = Vec::new();
        for (key, value) in &patch.set {
            set_figure(&mut entry, key, value, &base, &patch.origin).map_err(invalid)?;
            changed.push(key.as_str());
        }
        let name = patch.name.clone().unwrap_or_else(|| base.name.clone());
        let object = entry.as_object_mut().expect("a chip serializes as an object");
        if name != base.name {
            if self.chips.iter().any(|c| c.name == name) {
                return Err(invalid(format!("`as = {name}` names a chip already in the catalog")));
            }
            object.insert("name".into(), Value::String(name.clone()));
            if base.family == crate::Family::Neuron {
                object.insert("tables".into(), Value::String(base.table_name().into()));
            }
        }
        object.insert(
            "display".into(),
            Value::String(format!("{} (what-if: {})", base.display, changed.join(", "))),
        );
        let chip: Chip = serde_json::from_value(entry).map_err(|e| invalid(e.to_string()))?;
        chip.check().map_err(|m| HwError::Invalid {
            file: patch.origin.clone(),
            chip: name.clone(),
            message: m,
        })?;
        match self.chips.iter_mut().find(|c| c.name == name) {
            Some(existing) => *existing = chip,
            None => self.chips.push(chip),
        }
        Ok(self)
    }
}

/// Sets the dotted figure `key` of a chip's JSON `entry` to `value`: a sourced figure gets the
/// value, a what-if grade and a source saying what it replaced; a plain field is replaced.
fn set_figure(
    entry: &mut Value,
    key: &str,
    value: &Value,
    base: &Chip,
    origin: &str,
) -> Result<(), String> {
    let unknown = || {
        // A NeuronCore parameter named without its prefix.
        let core = base.neuron_params().ok().filter(|p| p.clone().set(key, 1.0).is_ok());
        if core.is_some() {
            return format!("`{key}` is a NeuronCore parameter: set it as `neuron_core.{key}`");
        }
        let known = leaf_names(&serde_json::to_value(base).unwrap_or_default());
        let nearest = known
            .iter()
            .map(|k| (strsim::jaro_winkler(key, k), k))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .filter(|(score, _)| *score > 0.7)
            .map(|(_, k)| format!("; did you mean `{k}`?"))
            .unwrap_or_default();
        format!(
            "no figure `{key}` to set{nearest} (`rainier chips --chip {}` lists them)",
            base.name
        )
    };
    // NeuronCore parameters are one flat map of `rainier arch` names (`timing.min_ii_cycles`).
    let (parents, leaf) = match (key.strip_prefix("neuron_core."), key.rsplit_once('.')) {
        (Some(param), _) => (vec!["neuron_core"], param),
        (None, Some((parents, leaf))) => (parents.split('.').collect::<Vec<_>>(), leaf),
        (None, None) => (vec![], key),
    };
    let mut node = entry;
    for part in &parents {
        // `neuron_core` may be absent (a built-in chip has no NeuronCore overrides).
        if *part == "neuron_core" && node.get(part).is_none() {
            node.as_object_mut()
                .ok_or_else(unknown)?
                .insert((*part).into(), Value::Object(Map::new()));
        }
        node = node.get_mut(*part).filter(|n| n.is_object()).ok_or_else(unknown)?;
    }
    let sourced = |old: Option<&Value>| {
        let was = old.map_or("unset".to_string(), |v| format!("was {}", Patch::value_text(v)));
        let number =
            value.as_f64().ok_or_else(|| format!("`{key}` takes a number, not {value}"))?;
        Ok::<Value, String>(serde_json::json!({
            "value": number,
            "source": format!("what-if ({origin}): {key} = {} on {}, {was}", Patch::value_text(value), base.name),
            "grade": "what-if",
        }))
    };
    let in_core = parents.first() == Some(&"neuron_core");
    let object = node.as_object_mut().ok_or_else(unknown)?;
    match object.get(leaf) {
        Some(Value::Object(figure)) if figure.contains_key("value") => {
            let new = sourced(figure.get("value"))?;
            object.insert(leaf.into(), new);
        }
        None if in_core && parents.len() == 1 => {
            let new = sourced(None)?;
            object.insert(leaf.into(), new);
        }
        Some(Value::Number(old)) if old.is_u64() => {
            // A count (cores, chips): a whole non-negative number.
            let count = value
                .as_f64()
                .filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v <= u32::MAX as f64)
                .ok_or_else(|| format!("`{key}` is a count: a whole number, not {value}"))?;
            object.insert(leaf.into(), Value::from(count as u64));
        }
        Some(Value::Number(_) | Value::String(_) | Value::Bool(_)) => {
            if leaf == "name" {
                return Err("set the new chip's name with `as`, not `name`".into());
            }
            object.insert(leaf.into(), value.clone());
        }
        _ => return Err(unknown()),
    }
    Ok(())
}

/// Every settable dotted name of a chip's JSON (sourced figures and plain fields).
fn leaf_names(entry: &Value) -> Vec<String> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
        let Value::Object(map) = value else { return };
        for (k, v) in map {
            let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                Value::Object(inner) if inner.contains_key("value") => out.push(name),
                Value::Object(_) => walk(&name, v, out),
                Value::Number(_) | Value::String(_) | Value::Bool(_) => out.push(name),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk("", entry, &mut out);
    out
}

impl Chip {
    /// The figures a user changed to ask "what if" (catalog overrides and patches), with
    /// their values: what every report about this chip names.
    pub fn what_if_figures(&self) -> Vec<(String, f64)> {
        let mut figures: Vec<(String, f64)> = self
            .figures()
            .into_iter()
            .filter(|(_, f)| f.grade == crate::Grade::WhatIf)
            .map(|(name, f)| (name.to_string(), f.value))
            .collect();
        figures.extend(
            self.neuron_core
                .iter()
                .filter(|(_, f)| f.grade == crate::Grade::WhatIf)
                .map(|(name, f)| (format!("neuron_core.{name}"), f.value)),
        );
        figures
    }
}
