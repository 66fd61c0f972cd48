//! Collectives on a topology: the levels of a cluster's network as data, groups of ranks
//! mapped onto them, and the cost of each collective with the algorithm a library would pick.
//!
//! A [`Topology`] lists network levels from the inside out: the scale-up domain (NVSwitch,
//! NeuronLink torus, ICI torus), an optional second scale-up level (the Trn2 UltraServer's Z
//! ring), the scale-out fat tree inside a building, then the links between buildings and
//! between sites, each with a bandwidth per chip, a per-step latency and a shape. Ranks are
//! numbered chip by chip (`ranks_per_chip` consecutive ranks per chip), chips domain by
//! domain, so a parallel group is `size` ranks `stride` apart and its members fall into
//! domains by arithmetic alone: a plan over a million chips costs what one over a thousand
//! does.
//!
//! Costs are latency–bandwidth (α–β) per algorithm step. Per level the cheapest of the
//! algorithms real libraries switch between is taken, as NCCL's tuner and the Neuron runtime
//! do by message size: ring (bandwidth-optimal, `f−1` steps), recursive halving-doubling
//! (`log2 f` steps, longer hops on a torus), one-shot mesh (1 step, congested), and for
//! all-reduce a tree. Groups spanning several levels run hierarchically (reduce-scatter from
//! the inside out on a shrinking buffer, all-gather back), which is what NCCL, the Neuron
//! runtime and XLA do across nodes. On a torus a group uses the links of the dimensions it
//! spans (dimension-ordered rings); all ranks of a chip run their own collective at the same
//! time and share the chip's links.

use rainier_hw::{Chip, Family, Shape};

use crate::Assumption;

pub(crate) const SCALE_UP_EFF: Assumption = Assumption {
    name: "net.scale_up_eff",
    value: 0.8,
    why: "hardware-catalog §7 efficiency prior: NVLink ring ≈ 0.8 of per-dir (8×H100 NCCL busbw ~370 of 450 GB/s); applied to every scale-up fabric",
};
pub(crate) const SCALE_OUT_EFF: Assumption = Assumption {
    name: "net.scale_out_eff",
    value: 0.73,
    why: "hardware-catalog §4/§7: 4×p5en inter-node all-reduce ≈ 36.5 of 50 GB/s per GPU; applied to every NIC",
};
pub(crate) const BASE_LATENCY_S: Assumption = Assumption {
    name: "net.base_latency_s",
    value: 8.4e-6,
    why: "NCCL tuning model base latency of a Simple-protocol ring collective (hardware-catalog §5 [doc NCCL-T]); assumed for Neuron and TPU runtimes too",
};
pub(crate) const MESH_EFF: Assumption = Assumption {
    name: "net.mesh_eff",
    value: 0.5,
    why: "one-shot (mesh) collectives congest the receivers' links; Neuron uses them below ~1 MB only (hardware-catalog §5 [doc NX-coll]), which a half-rate bandwidth term reproduces",
};
pub(crate) const HALVING_DOUBLING_EFF: Assumption = Assumption {
    name: "net.halving_doubling_eff",
    value: 0.9,
    why: "recursive halving-doubling sends half the remaining buffer per step without a ring's chunk pipelining; a 10 % bandwidth loss puts the crossover to ring at ~45 MB on 8×H100 and ~50 MB on a Trn2 instance, near Neuron's published RDH→KangaRing switch at 56 MB (hardware-catalog §5 [doc NX-coll])",
};
/// The share of a NeuronLink ring or torus that a Neuron reduce-scatter, all-gather or
/// all-reduce drives.
pub(crate) const NEURON_RING_LINK_SHARE: Assumption = Assumption {
    name: "neuron.ring_link_share",
    value: 0.5,
    why: "Neuron runs a ring collective on each edge-disjoint Hamiltonian cycle of the fabric (two on the 16-chip 4x4 torus [R-intra], one on the Inf2 ring), read as one direction per cycle: each chip drives half of its links' per-direction bandwidth (1.0 would be bidirectional rings). Inferred, not documented: the long transformers-neuronx prefills (inf2 llama3-70b TP24 2048 tokens, trn1 llama3-70b TP32 4x2048) need it, their collectives being most of the step; checked on the other Neuron points. Range 0.5-1.0",
};
/// The most of the scale-up links that other parallel groups' traffic may take from an
/// overlapped data-parallel reduction.
pub const SCALE_UP_MAX_SHARED: Assumption = Assumption {
    name: "net.scale_up_max_shared",
    value: 0.9,
    why: "TP/CP traffic never leaves an overlapped DP reduction less than 10 % of the scale-up links (link arbitration interleaves them); no public figure",
};
pub(crate) const BUILDING_CHIPS: Assumption = Assumption {
    name: "dc.building_chips",
    value: 65_536.0,
    why: "chips under one non-blocking fat tree (a building); Project Rainier ran ~500k Trn2 in ~7 active buildings at launch (neuron-arch §9 [3p W-register]) ≈ 70k per building",
};
pub(crate) const BUILDING_OVERSUBSCRIPTION: Assumption = Assumption {
    name: "dc.building_oversubscription",
    value: 4.0,
    why: "oversubscription of the links between buildings of a campus; no public figure (set with --building-oversubscription)",
};
pub(crate) const SITE_CHIPS: Assumption = Assumption {
    name: "dc.site_chips",
    value: 1_048_576.0,
    why: "chips on one campus (Rainier's Indiana site: ~30 buildings planned, neuron-arch §9); beyond, sites are joined by long-haul links",
};
pub(crate) const SITE_OVERSUBSCRIPTION: Assumption = Assumption {
    name: "dc.site_oversubscription",
    value: 16.0,
    why: "oversubscription of long-haul links between sites; no public figure (set with --site-oversubscription)",
};
pub(crate) const BUILDING_LATENCY_S: Assumption = Assumption {
    name: "dc.building_latency_s",
    value: 10e-6,
    why: "extra per-step latency between buildings (more switch tiers and ~1 km of fibre); no public figure",
};
pub(crate) const SITE_LATENCY_S: Assumption = Assumption {
    name: "dc.site_latency_s",
    value: 1e-3,
    why: "per-step latency between sites ~100–200 km apart (fibre at 5 µs/km plus routers); no public figure",
};

/// What a collective does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectiveKind {
    AllReduce,
    AllGather,
    ReduceScatter,
    /// Every rank sends a distinct `1/n` of its buffer to every other (MoE dispatch).
    AllToAll,
    /// One point-to-point transfer to the next member (pipeline stages, ring attention).
    SendRecv,
}

/// Datacenter levels above the scale-out fat tree (defaults: named assumptions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Datacenter {
    pub building_chips: u64,
    pub building_oversubscription: f64,
    pub site_chips: u64,
    pub site_oversubscription: f64,
}

impl Default for Datacenter {
    fn default() -> Datacenter {
        Datacenter {
            building_chips: BUILDING_CHIPS.value as u64,
            building_oversubscription: BUILDING_OVERSUBSCRIPTION.value,
            site_chips: SITE_CHIPS.value as u64,
            site_oversubscription: SITE_OVERSUBSCRIPTION.value,
        }
    }
}

/// One level of the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    pub name: String,
    /// Chips in one domain of this level (`u64::MAX` for the outermost).
    pub domain_chips: u64,
    pub shape: Shape,
    /// Effective bytes/s per chip on this level's links, one direction (efficiency and
    /// oversubscription applied).
    pub bytes_per_s: f64,
    /// Latency of one algorithm step, seconds.
    pub latency_s: f64,
    /// NVLink, NeuronLink or ICI (shared with tensor-parallel traffic), not a NIC.
    pub scale_up: bool,
    /// The share of `bytes_per_s` a reduce-scatter, all-gather or all-reduce drives (Neuron's
    /// one-direction rings on a NeuronLink ring or torus: [`NEURON_RING_LINK_SHARE`]).
    pub ring_link_share: f64,
}

/// `size` ranks, `stride` apart in rank order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub size: u64,
    pub stride: u64,
}

/// The part of a group inside one level: `factor` members per domain of this level for each
/// member of the level below, carrying `1/share` of the buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    level: usize,
    factor: u64,
    /// Members of the group inside one domain of the level below (the buffer divisor after
    /// the inner levels' reduce-scatter).
    inner: u64,
    /// Chips between consecutive members at this level, and the chips they span.
    chip_stride: u64,
    chips: u64,
}

/// The cluster's network as one rank sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub levels: Vec<Level>,
    pub ranks_per_chip: u64,
}

impl Topology {
    /// The levels of `chip`'s network for a cluster of any size, with `ranks_per_chip`.
    pub fn new(chip: &Chip, ranks_per_chip: u32, dc: &Datacenter) -> Topology {
        let node = &chip.node;
        let ring_link_share = |shape: &Shape| match (chip.family, shape) {
            (Family::Neuron, Shape::Ring | Shape::Torus(_)) => NEURON_RING_LINK_SHARE.value,
            _ => 1.0,
        };
        let mut levels = vec![Level {
            name: format!("{} scale-up", node.name),
            domain_chips: u64::from(node.scale_up_domain_chips),
            shape: node.scale_up_shape.clone(),
            bytes_per_s: node.scale_up_bytes_per_s_per_dir.value * SCALE_UP_EFF.value,
            latency_s: node.scale_up_latency_s.value,
            scale_up: true,
            ring_link_share: ring_link_share(&node.scale_up_shape),
        }];
        if let Some(ultra) = &node.ultra {
            levels.push(Level {
                name: ultra.name.clone(),
                domain_chips: u64::from(ultra.chips),
                shape: ultra.shape.clone(),
                bytes_per_s: ultra.bytes_per_s_per_dir.value * SCALE_UP_EFF.value,
                latency_s: ultra.latency_s.value,
                scale_up: true,
                ring_link_share: ring_link_share(&ultra.shape),
            });
        }
        let nic = node.scale_out_bits_per_s.value / 8.0 * SCALE_OUT_EFF.value;
        if nic > 0.0 {
            let inner = levels.last().map_or(1, |l| l.domain_chips);
            let latency = node.scale_out_latency_s.value;
            let building = dc.building_chips.max(inner);
            let site = dc.site_chips.max(building);
            for (name, domain, oversubscription, extra) in [
                ("scale-out fat tree (one building)", building, 1.0, 0.0),
                ("between buildings", site, dc.building_oversubscription, BUILDING_LATENCY_S.value),
                ("between sites", u64::MAX, dc.site_oversubscription, SITE_LATENCY_S.value),
            ] {
                levels.push(Level {
                    name: name.into(),
                    domain_chips: domain,
                    shape: Shape::Switch,
                    bytes_per_s: nic / oversubscription.max(1.0),
                    latency_s: latency + extra,
                    scale_up: false,
                    ring_link_share: 1.0,
                });
            }
        }
        Topology { levels, ranks_per_chip: u64::from(ranks_per_chip.max(1)) }
    }

    /// Ranks in one domain of the scale-up level (chip count × ranks per chip).
    pub fn scale_up_ranks(&self) -> u64 {
        self.levels[0].domain_chips.saturating_mul(self.ranks_per_chip)
    }

    /// Ranks in one domain of the outermost scale-up level (a Trn2 UltraServer's four
    /// instances joined by NeuronLink, an NVL72 rack): the largest group that TP, EP or CP
    /// can span without leaving scale-up links.
    pub fn scale_up_fabric_ranks(&self) -> u64 {
        let chips = self.levels.iter().filter(|l| l.scale_up).map(|l| l.domain_chips).max();
        chips.unwrap_or(1).saturating_mul(self.ranks_per_chip)
    }

    /// Where the members of `group` sit: one span per level the group crosses, innermost
    /// first. `None` if the group does not fit in the network (no scale-out).
    fn spans(&self, group: Group) -> Option<([Span; 8], usize)> {
        let mut spans = [Span { level: 0, factor: 1, inner: 1, chip_stride: 1, chips: 1 }; 8];
        let mut count = 0;
        let (n, stride, rpc) = (group.size, group.stride.max(1), self.ranks_per_chip);
        let mut below = 1u64;
        for (k, level) in self.levels.iter().enumerate() {
            let domain_ranks = level.domain_chips.saturating_mul(rpc);
            let members = if domain_ranks <= stride { 1 } else { (domain_ranks / stride).min(n) };
            if members > below {
                let (chip_stride, chips) = match k {
                    0 if stride >= rpc => (stride / rpc, members),
                    0 => (1, (members * stride).div_ceil(rpc)),
                    _ => (1, 0),
                };
                // A group that straddles a domain boundary leaves a partial domain whose few
                // members carry a larger share of the buffer to the next level.
                let partial = members % below;
                spans[count] = Span {
                    level: k,
                    factor: members.div_ceil(below),
                    inner: if partial == 0 { below } else { partial.min(below) },
                    chip_stride,
                    chips,
                };
                count += 1;
                below = members;
            }
            if below >= n {
                return Some((spans, count));
            }
        }
        None
    }

    /// Seconds for `kind` over `group` on a buffer of `bytes` per rank (the reduced buffer,
    /// the gathered output, the scattered input, the all-to-all input or the message), with
    /// `scale_up_free` of the scale-up links' bandwidth available (the rest is taken by
    /// collectives running at the same time). 0 for a group of one; infinite where the
    /// network cannot reach (no scale-out).
    pub fn seconds(
        &self,
        kind: CollectiveKind,
        bytes: f64,
        group: Group,
        scale_up_free: f64,
    ) -> f64 {
        self.cost(kind, bytes, group, scale_up_free, &mut |_, _, _| {})
    }

    /// The algorithm chosen on each level: `"ring ×8 on NVSwitch, tree ×16 on EFA"`.
    pub fn describe(&self, kind: CollectiveKind, bytes: f64, group: Group) -> String {
        let mut parts = Vec::new();
        self.cost(kind, bytes, group, 1.0, &mut |algorithm, factor, level| {
            parts.push(format!("{algorithm} ×{factor} on {}", self.levels[level].name))
        });
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    fn cost(
        &self,
        kind: CollectiveKind,
        bytes: f64,
        group: Group,
        scale_up_free: f64,
        report: &mut dyn FnMut(&'static str, u64, usize),
    ) -> f64 {
        if group.size <= 1 || bytes <= 0.0 {
            return 0.0;
        }
        let Some((spans, count)) = self.spans(group) else { return f64::INFINITY };
        let spans = &spans[..count];
        let free = scale_up_free.clamp(0.05, 1.0);
        let bandwidth = |span: &Span| {
            let level = &self.levels[span.level];
            let share = if level.scale_up { free } else { 1.0 };
            level.bytes_per_s * dims_fraction(&level.shape, span) * share
                / self.ranks_per_chip as f64
        };
        let total = match kind {
            CollectiveKind::SendRecv => {
                // A message to the next member crosses every level the group spans somewhere
                // along it; the slowest hop sets the pace (ring attention, pipeline stages).
                // On a torus or ring one neighbour link carries it.
                spans
                    .iter()
                    .map(|span| {
                        let level = &self.levels[span.level];
                        let share = if level.scale_up { free } else { 1.0 };
                        let links = match &level.shape {
                            Shape::Switch => 1.0,
                            Shape::Ring => 2.0,
                            Shape::Torus(dims) => 2.0 * dims.len() as f64,
                        };
                        let link = level.bytes_per_s * share / links / self.ranks_per_chip as f64;
                        report("send/recv", span.factor, span.level);
                        level.latency_s + bytes / link.max(1e-9)
                    })
                    .fold(0.0, f64::max)
            }
            CollectiveKind::AllToAll => {
                // The traffic leaving each level's domain crosses that level's links; the
                // slowest level bounds the exchange, pipelined over log2 n rounds of latency.
                let n = group.size as f64;
                let mut slowest: f64 = 0.0;
                for span in spans {
                    let leaving = 1.0 - span.inner as f64 / n;
                    let level = &self.levels[span.level];
                    let t = leaving * bytes * torus_penalty(&level.shape, span) / bandwidth(span);
                    slowest = slowest.max(t);
                    report("all-to-all", span.factor, span.level);
                }
                let outer = &self.levels[spans[count - 1].level];
                slowest + (group.size as f64).log2().ceil() * outer.latency_s
            }
            CollectiveKind::AllReduce
            | CollectiveKind::AllGather
            | CollectiveKind::ReduceScatter => {
                // Hierarchical: each level works on the buffer left by the levels inside it.
                spans
                    .iter()
                    .map(|span| {
                        let level = &self.levels[span.level];
                        let b = bytes / span.inner as f64;
                        // Members on one chip do not use its links (`chips` is 1 only then).
                        let share = if span.chips == 1 { 1.0 } else { level.ring_link_share };
                        let link = bandwidth(span) * share;
                        let (t, algorithm) = phase(kind, b, span, level, link);
                        report(algorithm, span.factor, span.level);
                        t
                    })
                    .sum()
            }
        };
        BASE_LATENCY_S.value + total
    }
}

/// The share of a chip's links at this level a group can use: all of them on a switch or a
/// ring, those of the dimensions it spans on a torus.
fn dims_fraction(shape: &Shape, span: &Span) -> f64 {
    let Shape::Torus(dims) = shape else { return 1.0 };
    if span.level != 0 && span.chips == 0 {
        return 1.0;
    }
    let (stride, chips) = (span.chip_stride.max(1), span.chips.max(2));
    let mut inner = 1u64;
    let mut used = 0;
    for &d in dims {
        let outer = inner * u64::from(d);
        if stride < outer && stride * (chips - 1) >= inner {
            used += 1;
        }
        inner = outer;
    }
    used.max(1) as f64 / dims.len() as f64
}

/// How much longer an all-to-all takes on this shape than on a switch: a ring of `a` chips
/// carries each byte `a/4` hops on average in each direction.
fn torus_penalty(shape: &Shape, span: &Span) -> f64 {
    match shape {
        Shape::Switch => 1.0,
        Shape::Ring => (span.factor as f64 / 4.0).max(1.0),
        Shape::Torus(dims) => {
            let side = dims.iter().copied().max().unwrap_or(1).min(span.factor as u32);
            (f64::from(side) / 4.0).max(1.0)
        }
    }
}

/// One level of a hierarchical reduce-scatter, all-gather or all-reduce on `bytes` per rank:
/// the cheapest algorithm and its name.
fn phase(
    kind: CollectiveKind,
    bytes: f64,
    span: &Span,
    level: &Level,
    bandwidth: f64,
) -> (f64, &'static str) {
    let f = span.factor as f64;
    let alpha = level.latency_s;
    let wire = (f - 1.0) / f * bytes / bandwidth;
    let log_steps = f.log2().ceil();
    // Halving-doubling exchanges with partners up to f/2 away: several hops on a ring or torus.
    let hops = match &level.shape {
        Shape::Switch => 1.0,
        Shape::Ring | Shape::Torus(_) => (f.sqrt() / 2.0).max(1.0),
    };
    let half: [(f64, &'static str); 3] = [
        ((f - 1.0) * alpha + wire, "ring"),
        (log_steps * alpha * hops + wire / HALVING_DOUBLING_EFF.value, "halving-doubling"),
        (alpha * hops + wire / MESH_EFF.value, "mesh"),
    ];
    let best = |options: &[(f64, &'static str)]| {
        options.iter().copied().fold((f64::INFINITY, "ring"), |a, b| if b.0 < a.0 { b } else { a })
    };
    match kind {
        CollectiveKind::AllReduce => {
            let (t, name) = best(&half);
            // Reduce-scatter then all-gather with the same algorithm, or a (double binary)
            // tree: 2·log2 f steps, the whole buffer up and down.
            let tree = 2.0 * log_steps * alpha * hops + 2.0 * bytes / bandwidth;
            best(&[(2.0 * t, name), (tree, "tree")])
        }
        _ => best(&half),
    }
}
