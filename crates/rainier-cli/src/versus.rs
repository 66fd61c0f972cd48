//! `compare --baseline`: every chip's tokens per dollar and speed per chip as a ratio to a
//! baseline chip, with a band from how wrong the model has been on that kind of chip.
//!
//! The band: `rainier validate`'s published measurements (the committed dataset and the
//! command cases) give, per family (Trainium training, NVIDIA training, ...), the model's
//! errors as rates, `e = predicted rate / measured rate − 1` (latencies inverted). A chip's
//! true rate is its predicted rate over `1 + e`, so a ratio `X` of a chip to the baseline is
//! truly `X · (1 + e_baseline) / (1 + e_chip)`; over every pair of the two families' errors
//! that gives a distribution whose 10th, 50th and 90th percentiles (nearest rank) are the
//! band. Tokens per dollar also carry each price's uncertainty: an assumed price's catalog
//! range, or the basis conversion ratio's (`rainier_plan::price_range`), as the true price
//! over the one used, on a grid of 9 values across the range. It is deterministic for the same
//! build. The two chips' errors are taken as independent, which overstates the band of two
//! chips of one family (their errors are likely correlated: the same stack, the same
//! calibration); the baseline against itself is exactly 1.

use std::collections::BTreeMap;

use anyhow::Result;
use rainier_hw::{Catalog, Family};
use serde::Serialize;

use crate::cases::FAMILIES;

/// The model's rate errors on published measurements, by family.
pub(crate) struct Errors(BTreeMap<&'static str, Vec<f64>>);

/// The family whose errors apply to a chip of `family`: its training family, or for serving
/// its decode (TPOT) family, which sets the cost per output token.
pub(crate) fn family_for(family: Family, serving: bool) -> Option<&'static str> {
    family_of(family, !serving, "tpot_ms")
}

fn family_of(family: Family, training: bool, metric: &str) -> Option<&'static str> {
    Some(match (family, training) {
        (Family::Neuron, true) => FAMILIES[0],
        (Family::Neuron, false) if metric.starts_with("ttft") => FAMILIES[1],
        (Family::Neuron, false) => FAMILIES[2],
        (Family::Gpu, true) => FAMILIES[3],
        (Family::Gpu, false) => FAMILIES[4],
        (Family::Tpu, true) => FAMILIES[5],
        (Family::Tpu, false) => return None,
    })
}

/// `predicted / measured − 1` of a field as an error of a rate: latencies (`_ms`) inverted.
fn rate_error(field: &str, error: f64) -> f64 {
    if field.ends_with("_ms") {
        1.0 / (1.0 + error) - 1.0
    } else {
        error
    }
}

impl Errors {
    /// The validation's errors (dataset points and command cases, without searches), run once
    /// per process: they depend on the built-in data only, and a Python session asks often.
    pub(crate) fn measure() -> Result<&'static Errors> {
        static ERRORS: std::sync::OnceLock<Errors> = std::sync::OnceLock::new();
        if let Some(errors) = ERRORS.get() {
            return Ok(errors);
        }
        let errors = Errors::run()?;
        Ok(ERRORS.get_or_init(|| errors))
    }

    fn run() -> Result<Errors> {
        let catalog = Catalog::built_in();
        let mut by: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        let report = rainier_plan::validate().map_err(anyhow::Error::msg)?;
        for p in &report.points {
            let Ok(chip) = catalog.chip(&p.chip) else { continue };
            if let Some(f) = family_of(chip.family, p.kind == "training", &p.metric) {
                by.entry(f).or_default().push(rate_error(&p.metric, p.error));
            }
        }
        // A case a coefficient is fitted on says nothing about the error.
        for c in crate::cases::run(false, None)?.cases.into_iter().filter(|c| !c.fitted) {
            if let Some(e) = c.error {
                by.entry(c.family).or_default().push(rate_error(&c.field, e));
            }
        }
        Ok(Errors(by))
    }

    fn of(&self, family: Option<&'static str>) -> &[f64] {
        family.and_then(|f| self.0.get(f)).map_or(&[], Vec::as_slice)
    }
}

/// A ratio to the baseline: the model's value and its band.
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
pub(crate) struct Band {
    pub point: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

/// True price over the price used, across a price's range (1 without one).
fn price_factors(range: Option<(f64, f64)>, used: f64) -> Vec<f64> {
    match range {
        Some((lo, hi)) => (0..9).map(|i| (lo + (hi - lo) * f64::from(i) / 8.0) / used).collect(),
        None => vec![1.0],
    }
}

impl Band {
    /// `point` moved by every pair of errors and of price factors (chip, baseline); `None`
    /// when either family has no errors.
    fn of(point: f64, chip: &[f64], baseline: &[f64], prices: (&[f64], &[f64])) -> Option<Band> {
        if chip.is_empty() || baseline.is_empty() || !point.is_finite() {
            return None;
        }
        let errors =
            chip.iter().flat_map(|ec| baseline.iter().map(move |eb| (1.0 + eb) / (1.0 + ec)));
        let mut v: Vec<f64> = errors
            .flat_map(|e| {
                prices
                    .0
                    .iter()
                    .flat_map(move |fc| prices.1.iter().map(move |fb| point * e * fb / fc))
            })
            .collect();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(Band { point, p10: at(0.1), p50: at(0.5), p90: at(0.9) })
    }

    fn includes_parity(&self) -> bool {
        self.p10 <= 1.0 && self.p90 >= 1.0
    }

    fn text(&self) -> String {
        format!("{:.2}× ({:.2}–{:.2})", self.point, self.p10, self.p90)
    }
}

/// One chip against the baseline.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct VersusRow {
    pub chip: String,
    /// The validation family whose errors band this chip, and how many errors it has.
    pub family: Option<&'static str>,
    pub errors: usize,
    /// Tokens per dollar over the baseline's (> 1: cheaper per token).
    pub tokens_per_usd: Option<Band>,
    /// Tokens per second per chip over the baseline's.
    pub speed_per_chip: Option<Band>,
    /// The tokens-per-dollar band contains 1: no clear winner.
    pub includes_parity: Option<bool>,
    pub price_grade: String,
    /// `[low, high]` of the price, where it is uncertain (in the tokens-per-dollar band).
    pub price_range_usd: Option<(f64, f64)>,
}

/// Every chip against the baseline.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct Versus {
    pub baseline: String,
    pub baseline_family: Option<&'static str>,
    pub baseline_errors: usize,
    pub band: &'static str,
    pub rows: Vec<VersusRow>,
}

/// What one chip's row needs: its name, family, cost per token, rate per chip and price grade.
pub(crate) struct Outcome<'a> {
    pub chip: &'a str,
    pub family: Family,
    pub usd_per_million_tokens: f64,
    pub tokens_per_s_per_chip: f64,
    pub price_grade: &'a str,
    /// The price per chip-hour used and its `[low, high]` where uncertain.
    pub usd_per_chip_hour: f64,
    pub price_range: Option<(f64, f64)>,
}

const BAND: &str = "p10-p90 of the ratio moved by every pair of the two families' validation errors (rates) and, for tokens per dollar, of the two prices across their ranges (assumed prices, basis conversions)";

/// The rows of `outcomes` against `baseline` (one of them).
pub(crate) fn versus(
    outcomes: &[Outcome],
    baseline: &Outcome,
    errors: &Errors,
    serving: bool,
) -> Versus {
    let base_family = family_for(baseline.family, serving);
    let base_errors = errors.of(base_family);
    let base_prices = price_factors(baseline.price_range, baseline.usd_per_chip_hour);
    let rows = outcomes
        .iter()
        .map(|o| {
            let family = family_for(o.family, serving);
            let chip_errors = errors.of(family);
            let per_usd = baseline.usd_per_million_tokens / o.usd_per_million_tokens;
            let speed = o.tokens_per_s_per_chip / baseline.tokens_per_s_per_chip;
            // The baseline against itself is exactly 1 (its errors and price cancel).
            let chip_prices = price_factors(o.price_range, o.usd_per_chip_hour);
            let band = |x: f64, prices: (&[f64], &[f64])| match o.chip == baseline.chip {
                true => Some(Band { point: x, p10: x, p50: x, p90: x }),
                false => Band::of(x, chip_errors, base_errors, prices),
            };
            let tokens_per_usd = band(per_usd, (&chip_prices, &base_prices));
            VersusRow {
                chip: o.chip.to_string(),
                family,
                errors: chip_errors.len(),
                tokens_per_usd,
                speed_per_chip: band(speed, (&[1.0], &[1.0])),
                includes_parity: tokens_per_usd.map(|b| b.includes_parity()),
                price_grade: o.price_grade.to_string(),
                price_range_usd: o.price_range,
            }
        })
        .collect();
    Versus {
        baseline: baseline.chip.to_string(),
        baseline_family: base_family,
        baseline_errors: base_errors.len(),
        band: BAND,
        rows,
    }
}

/// The verdict: one line for the Trainium/Inferentia chips, one on what the bands are.
pub(crate) fn verdict(v: &Versus, what: &str) -> String {
    let neuron: Vec<String> = v
        .rows
        .iter()
        .filter(|r| r.family.is_some_and(|f| f.starts_with("Trainium")) && r.chip != v.baseline)
        .filter_map(|r| {
            let b = r.tokens_per_usd?;
            let mark = match r.price_grade.as_str() {
                "assumed" => ", price assumed",
                "derived" => ", price converted between bases",
                _ => "",
            };
            let parity = if b.includes_parity() { ", band includes 1" } else { "" };
            Some(format!("{} {}{mark}{parity}", r.chip, b.text()))
        })
        .collect();
    format!(
        "{what} tokens per dollar vs {}: {}\n  bands: p10-p90 from the model's published-measurement errors ({} on {}, {} on {}) and the ranges of assumed or converted prices\n\n",
        v.baseline,
        if neuron.is_empty() { "no Trainium chip compared".to_string() } else { neuron.join("; ") },
        v.rows.iter().find(|r| r.family.is_some_and(|f| f.starts_with("Trainium"))).map_or(0, |r| r.errors),
        v.rows.iter().find_map(|r| r.family.filter(|f| f.starts_with("Trainium"))).unwrap_or("Trainium"),
        v.baseline_errors,
        v.baseline_family.unwrap_or("the baseline's family"),
    )
}

/// The table of every chip against the baseline.
pub(crate) fn table(v: &Versus) -> String {
    let mut s = format!(
        "\n\nversus {} (ratio, p10-p90 band; {} errors of {}): the band is where the measured ratio would fall given the model's past errors, so a family predicted biased (e.g. too fast) has its band off the point\n  {:<9} {:<22} {:<22} {:<46} {}\n",
        v.baseline,
        v.baseline_errors,
        v.baseline_family.unwrap_or("no family"),
        "chip",
        "tokens per $",
        "tokens/s per chip",
        "band from",
        "price"
    );
    for r in &v.rows {
        let band = |b: Option<Band>| b.map_or("— (no errors)".to_string(), |b| b.text());
        s += &format!(
            "  {:<9} {:<22} {:<22} {:<46} {}\n",
            r.chip,
            band(r.tokens_per_usd),
            band(r.speed_per_chip),
            format!("{} ({} errors)", r.family.unwrap_or("no validation family"), r.errors),
            r.price_grade
        );
    }
    s
}

/// `x` to four significant digits (no exponent below 10^9).
fn significant(x: f64) -> String {
    let digits = if x == 0.0 { 0 } else { 3 - x.abs().log10().floor() as i32 };
    match digits {
        d if d < -5 => format!("{x:.3e}"),
        d if d <= 0 => format!("{x:.0}"),
        d => format!("{x:.*}", d as usize),
    }
}

/// One prediction's band: where the measured value would fall given the model's errors on
/// its family (a rate measured as `predicted / (1 + e)`, a time or a cost per unit of work as
/// `predicted · (1 + e)`), and for costs the price across its range.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct Bands {
    pub family: Option<&'static str>,
    pub errors: usize,
    pub band: &'static str,
    #[serde(flatten)]
    pub values: BTreeMap<&'static str, Band>,
}

/// What a [`Bands`] value is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Quantity {
    /// Work per time (tokens/s): measured = predicted / (1 + e).
    Rate,
    /// Time (or energy) for a fixed work: measured = predicted · (1 + e).
    Time,
    /// Dollars per unit of work: a time, times the price's uncertainty.
    Cost,
}

const SINGLE_BAND: &str = "p10-p50-p90 of the measured value the model's rate errors on published measurements of this family imply (and, for costs, the price across its range)";

impl Bands {
    /// Bands of `values` (name, point, quantity) from `family`'s errors; `price` the price
    /// used and its range, for costs.
    pub(crate) fn of(
        errors: &Errors,
        family: Option<&'static str>,
        values: &[(&'static str, f64, Quantity)],
        price: (f64, Option<(f64, f64)>),
    ) -> Bands {
        let e = errors.of(family);
        let prices = price_factors(price.1, price.0);
        let values = values
            .iter()
            .filter(|_| !e.is_empty())
            .filter(|(_, point, _)| point.is_finite())
            .map(|&(name, point, quantity)| {
                let factors: &[f64] = match quantity {
                    Quantity::Cost => &prices,
                    _ => &[1.0],
                };
                let mut v: Vec<f64> = e
                    .iter()
                    .flat_map(|&err| {
                        factors.iter().map(move |f| match quantity {
                            Quantity::Rate => point / (1.0 + err),
                            Quantity::Time | Quantity::Cost => point * (1.0 + err) * f,
                        })
                    })
                    .collect();
                v.sort_by(f64::total_cmp);
                let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
                (name, Band { point, p10: at(0.1), p50: at(0.5), p90: at(0.9) })
            })
            .collect();
        Bands { family, errors: e.len(), band: SINGLE_BAND, values }
    }

    /// One line for the text reports.
    pub(crate) fn line(&self) -> String {
        if self.values.is_empty() {
            return "bands: none (no published measurement of this family is validated)".into();
        }
        let parts: Vec<String> = self
            .values
            .iter()
            .map(|(name, b)| format!("{name} {}–{}", significant(b.p10), significant(b.p90)))
            .collect();
        format!(
            "bands (p10-p90 from {} errors of {} on published measurements): {}",
            self.errors,
            self.family.unwrap_or("no family"),
            parts.join(", ")
        )
    }
}
