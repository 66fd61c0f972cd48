//! Request streams for the serving simulation: lengths from a distribution or a trace file,
//! arrivals from a Poisson process or the trace, reproducible from a seed.

use rainier_perf::Assumption;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};
use serde::Serialize;

use crate::PlanError;

pub(crate) const LOGNORMAL_SIGMA: Assumption = Assumption {
    name: "workload.lognormal_sigma",
    value: 1.0,
    why: "spread (σ of the log) of prompt and output lengths in the `lognormal` workload; chat traces such as ShareGPT have heavy-tailed, roughly log-normal lengths, σ not taken from a published fit; range 0.5-1.5",
};

/// Lengths beyond this multiple of the mean are clipped (a serving engine's max model length).
const LENGTH_CLIP: f64 = 8.0;

/// How request lengths vary around the mean prompt and output lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LengthDistribution {
    /// Every request has the mean lengths.
    Fixed,
    /// Uniform on [L/2, 3L/2] (vLLM's random dataset at range ratio 0.5).
    Uniform,
    /// Log-normal with the given means and σ = `workload.lognormal_sigma`, clipped at 8×.
    LogNormal,
}

/// One request: when it arrives (seconds from the start) and its lengths in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Request {
    pub arrival_s: f64,
    pub input_len: u64,
    pub output_len: u64,
}

/// Where the requests come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// `requests` requests with lengths drawn around the job's input and output lengths,
    /// arriving as a Poisson process at `rate_per_s` over the cluster.
    Synthetic { lengths: LengthDistribution, rate_per_s: f64, requests: u64, seed: u64 },
    /// Requests read from a trace (arrival times as recorded).
    Trace { name: String, requests: Vec<Request> },
}

impl Workload {
    /// The workload's name in reports.
    pub fn name(&self) -> String {
        match self {
            Workload::Synthetic { lengths, .. } => match lengths {
                LengthDistribution::Fixed => "fixed".into(),
                LengthDistribution::Uniform => "uniform".into(),
                LengthDistribution::LogNormal => "lognormal".into(),
            },
            Workload::Trace { name, .. } => name.clone(),
        }
    }

    /// Checks the workload's numbers (one error naming the field).
    pub(crate) fn check(&self) -> Result<(), PlanError> {
        match self {
            Workload::Synthetic { rate_per_s, requests, .. } => {
                if !(rate_per_s.is_finite() && *rate_per_s > 0.0) {
                    return Err(PlanError::Invalid(format!(
                        "--rate must be a positive number of requests per second, found {rate_per_s}"
                    )));
                }
                if *requests == 0 || *requests > 10_000_000 {
                    return Err(PlanError::Invalid(format!(
                        "--requests must be 1 to 10000000, found {requests}"
                    )));
                }
                Ok(())
            }
            Workload::Trace { name, requests } if requests.is_empty() => {
                Err(PlanError::Invalid(format!("workload trace {name} has no requests")))
            }
            Workload::Trace { .. } => Ok(()),
        }
    }

    /// The requests, sorted by arrival, given the job's mean lengths; a synthetic request
    /// longer than `max_len` tokens (the model's context) has its output cut to half of it
    /// and its prompt to the rest, as clients truncate.
    pub fn requests(&self, input_len: u64, output_len: u64, max_len: u64) -> Vec<Request> {
        match self {
            Workload::Trace { requests, .. } => {
                let mut r = requests.clone();
                r.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
                r
            }
            Workload::Synthetic { lengths, rate_per_s, requests, seed } => {
                let mut rng = StdRng::seed_from_u64(*seed);
                let gap = Exp::new(*rate_per_s).expect("a positive rate (checked)");
                let mut t = 0.0;
                (0..*requests)
                    .map(|_| {
                        t += gap.sample(&mut rng);
                        let input = draw(*lengths, input_len, &mut rng);
                        let output = draw(*lengths, output_len, &mut rng).min(max_len / 2).max(1);
                        let input = input.min(max_len.saturating_sub(output)).max(1);
                        Request { arrival_s: t, input_len: input, output_len: output }
                    })
                    .collect()
            }
        }
    }

    /// The request rate over the cluster, per second (a trace's: requests over its span).
    pub fn rate_per_s(&self) -> f64 {
        match self {
            Workload::Synthetic { rate_per_s, .. } => *rate_per_s,
            Workload::Trace { requests, .. } => {
                let first = requests.iter().map(|r| r.arrival_s).fold(f64::INFINITY, f64::min);
                let last = requests.iter().map(|r| r.arrival_s).fold(0.0, f64::max);
                if last > first {
                    (requests.len() - 1) as f64 / (last - first)
                } else {
                    f64::INFINITY
                }
            }
        }
    }
}

/// One length around `mean` (at least 1 token).
fn draw(lengths: LengthDistribution, mean: u64, rng: &mut StdRng) -> u64 {
    let m = mean.max(1) as f64;
    let x = match lengths {
        LengthDistribution::Fixed => return mean.max(1),
        LengthDistribution::Uniform => rng.gen_range(0.5 * m..=1.5 * m),
        LengthDistribution::LogNormal => {
            let sigma = LOGNORMAL_SIGMA.value;
            // The log's mean that makes the distribution's mean `m`.
            let mu = m.ln() - sigma * sigma / 2.0;
            let d = LogNormal::new(mu, sigma).expect("finite parameters");
            d.sample(rng).min(LENGTH_CLIP * m)
        }
    };
    (x.round() as u64).max(1)
}

/// Parses a trace: one request per line, `arrival_s input_len output_len` separated by
/// whitespace or commas; blank lines and `#` comments are skipped, and a first line of
/// column names (a CSV header) is allowed. Errors name the line.
pub fn parse_trace(text: &str, name: &str) -> Result<Vec<Request>, PlanError> {
    let mut requests = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> =
            line.split(|c: char| c == ',' || c.is_whitespace()).filter(|f| !f.is_empty()).collect();
        let header = requests.is_empty() && fields.iter().all(|f| f.parse::<f64>().is_err());
        if header {
            continue;
        }
        let bad = |why: String| PlanError::Invalid(format!("{name} line {}: {why}", i + 1));
        if fields.len() != 3 {
            return Err(bad(format!(
                "expected `arrival_s input_len output_len`, found {} fields",
                fields.len()
            )));
        }
        let arrival_s: f64 = fields[0]
            .parse()
            .map_err(|_| bad(format!("arrival time `{}` is not a number", fields[0])))?;
        if !(arrival_s.is_finite() && arrival_s >= 0.0) {
            return Err(bad(format!("arrival time {arrival_s} is not a time in seconds ≥ 0")));
        }
        let len = |f: &str, what: &str| -> Result<u64, PlanError> {
            match f.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(format!("{what} `{f}` is not a positive whole number of tokens"))),
            }
        };
        let input_len = len(fields[1], "input_len")?;
        let output_len = len(fields[2], "output_len")?;
        requests.push(Request { arrival_s, input_len, output_len });
    }
    if requests.is_empty() {
        return Err(PlanError::Invalid(format!(
            "{name}: no requests (expected lines of `arrival_s input_len output_len`)"
        )));
    }
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_streams_are_reproducible_and_keep_their_means() {
        for lengths in
            [LengthDistribution::Fixed, LengthDistribution::Uniform, LengthDistribution::LogNormal]
        {
            let w = Workload::Synthetic { lengths, rate_per_s: 4.0, requests: 20_000, seed: 7 };
            let a = w.requests(1000, 200, 1 << 20);
            assert_eq!(a, w.requests(1000, 200, 1 << 20));
            let short = w.requests(1000, 200, 2048);
            assert!(short.iter().all(|r| r.input_len + r.output_len <= 2048));
            let n = a.len() as f64;
            let mean_in = a.iter().map(|r| r.input_len as f64).sum::<f64>() / n;
            let mean_out = a.iter().map(|r| r.output_len as f64).sum::<f64>() / n;
            // The clip at 8× takes about 2 % off a log-normal's mean at σ = 1.
            assert!((mean_in / 1000.0 - 1.0).abs() < 0.04, "{lengths:?}: {mean_in}");
            assert!((mean_out / 200.0 - 1.0).abs() < 0.04, "{lengths:?}: {mean_out}");
            let rate = (n - 1.0) / (a[a.len() - 1].arrival_s - a[0].arrival_s);
            assert!((rate / 4.0 - 1.0).abs() < 0.03, "{rate}");
            assert!(a.windows(2).all(|p| p[0].arrival_s <= p[1].arrival_s));
        }
    }

    #[test]
    fn traces_parse_with_headers_comments_and_commas() {
        let t = "arrival_s,input_len,output_len\n0.0,100,20\n# a comment\n\n0.5 300 7  # late\n";
        let r = parse_trace(t, "t.csv").expect("trace");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], Request { arrival_s: 0.5, input_len: 300, output_len: 7 });
    }

    #[test]
    fn malformed_traces_name_the_line() {
        let cases = [
            ("0 100 20\n1 100\n", "t line 2: expected"),
            ("0 100 20\nx 100 20\n", "t line 2: arrival time `x`"),
            ("0 100 0\n", "t line 1: output_len `0`"),
            ("0 -3 5\n", "t line 1: input_len `-3`"),
            ("-1 3 5\n", "t line 1: arrival time -1"),
            ("# nothing\n\n", "t: no requests"),
        ];
        for (text, expected) in cases {
            let e = parse_trace(text, "t").expect_err(text).to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
