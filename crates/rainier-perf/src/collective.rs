//! Collective costs: latency plus bandwidth on one level of a two-level network.
//!
//! A ring collective over `n` ranks moves `(n−1)/n` of the buffer per rank for all-gather and
//! reduce-scatter and twice that for all-reduce, at the fabric's effective per-rank
//! bandwidth, in `n−1` (or `2(n−1)`) steps; NCCL and the Neuron runtime switch to tree or
//! recursive-halving algorithms for many ranks, so the step count is capped at
//! `2⌈log2 n⌉` per phase. A base latency per collective is added.

use rainier_hw::Chip;

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

/// What a collective does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectiveKind {
    AllReduce,
    AllGather,
    ReduceScatter,
    /// One point-to-point transfer (pipeline stages).
    SendRecv,
}

/// One level of the network as one rank sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fabric {
    /// Effective bytes/s per rank, one direction.
    pub bytes_per_s: f64,
    /// Latency of one algorithm step, seconds.
    pub step_latency_s: f64,
}

impl Fabric {
    /// The scale-up fabric (NVLink, NeuronLink, ICI) shared by a chip's ranks.
    pub fn scale_up(chip: &Chip, ranks_per_chip: u32) -> Fabric {
        Fabric {
            bytes_per_s: chip.node.scale_up_bytes_per_s_per_dir.value * SCALE_UP_EFF.value
                / f64::from(ranks_per_chip.max(1)),
            step_latency_s: chip.node.scale_up_latency_s.value,
        }
    }

    /// The scale-out network (InfiniBand, EFA, DCN) shared by a chip's ranks. Zero
    /// bandwidth where the chip has none (Inferentia2).
    pub fn scale_out(chip: &Chip, ranks_per_chip: u32) -> Fabric {
        Fabric {
            bytes_per_s: chip.node.scale_out_bits_per_s.value / 8.0 * SCALE_OUT_EFF.value
                / f64::from(ranks_per_chip.max(1)),
            step_latency_s: chip.node.scale_out_latency_s.value,
        }
    }
}

/// A collective over `ranks` ranks on a buffer of `bytes` per rank (the reduced buffer, the
/// gathered output, the scattered input, or the message).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Collective {
    pub kind: CollectiveKind,
    pub bytes: f64,
    pub ranks: u64,
}

impl Collective {
    /// Seconds on `fabric`; 0 for a group of one, infinite on a fabric without bandwidth.
    pub fn seconds(&self, fabric: &Fabric) -> f64 {
        let n = self.ranks;
        if n <= 1 || self.bytes <= 0.0 {
            return 0.0;
        }
        let share = (n - 1) as f64 / n as f64;
        let steps_per_phase =
            (n - 1).min(2 * u64::from(n.ilog2() + u32::from(!n.is_power_of_two()))) as f64;
        let (wire, steps) = match self.kind {
            CollectiveKind::AllReduce => (2.0 * share * self.bytes, 2.0 * steps_per_phase),
            CollectiveKind::AllGather | CollectiveKind::ReduceScatter => {
                (share * self.bytes, steps_per_phase)
            }
            CollectiveKind::SendRecv => (self.bytes, 1.0),
        };
        if fabric.bytes_per_s <= 0.0 {
            return f64::INFINITY;
        }
        BASE_LATENCY_S.value + steps * fabric.step_latency_s + wire / fabric.bytes_per_s
    }
}
