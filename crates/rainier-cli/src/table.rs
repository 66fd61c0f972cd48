//! `rainier kernel table --chip C`: writes the op-cost table the planners read
//! (`tables/CHIP.csv`) and the raw runs beside it (`tables/CHIP.runs.json`), from the sweep in
//! `rainier-tables`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rainier_arch::{Chip, ChipParams};
use rainier_hw::Catalog;

/// Writes the tables of `chip` (a built-in NeuronCore chip, a built-in catalog what-if chip
/// such as `trn4`, or `all`) to `dir`.
pub(crate) fn write_named(chip: &str, dir: &Path) -> Result<()> {
    let catalog = Catalog::built_in();
    let what_if = |name: &str| -> Result<ChipParams> {
        catalog.chip(name)?.neuron_params().map_err(|m| anyhow!("chip `{name}`: {m}"))
    };
    if chip == "all" {
        let mut built_in = Vec::new();
        for c in Chip::ALL {
            built_in.push(write(c.name(), &c.params(), dir, None)?);
        }
        // The what-if keys digest the tables just written, not the ones compiled in.
        let tables: [&str; 4] = std::array::from_fn(|i| built_in[i].as_str());
        for (name, _, _) in rainier_tables::COMMITTED_WHAT_IFS {
            write(name, &what_if(name)?, dir, Some(tables))?;
        }
        return Ok(());
    }
    if let Ok(c) = chip.parse::<Chip>() {
        return write(c.name(), &c.params(), dir, None).map(|_| ());
    }
    if rainier_tables::COMMITTED_WHAT_IFS.iter().any(|w| w.0 == chip) {
        let tables = Chip::ALL.map(rainier_tables::committed);
        return write(chip, &what_if(chip)?, dir, Some(tables)).map(|_| ());
    }
    bail!("unknown chip `{chip}` for `kernel table` (trn1, inf2, trn2, trn3, trn4 or all)")
}

/// Writes `DIR/NAME.csv` and `DIR/NAME.runs.json` and returns the CSV; for a what-if chip also
/// `DIR/NAME.key`, the cache key of its parameters over the built-in tables `key_over`.
fn write(
    name: &str,
    params: &ChipParams,
    dir: &Path,
    key_over: Option<[&str; 4]>,
) -> Result<String> {
    let bar = crate::progress_bar("timing the kernel sweep");
    let (csv, runs) = rainier_tables::generate(name, params, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let csv_path = dir.join(format!("{name}.csv"));
    let runs_path = dir.join(format!("{name}.runs.json"));
    if let Some(tables) = key_over {
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&key_path, rainier_tables::cache_key_over(params, tables) + "\n")
            .with_context(|| format!("cannot write {}", key_path.display()))?;
    }
    std::fs::write(&csv_path, &csv)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    std::fs::write(&runs_path, runs)
        .with_context(|| format!("cannot write {}", runs_path.display()))?;
    crate::out(&format!("wrote {} and {}", csv_path.display(), runs_path.display()));
    Ok(csv)
}
