//! Collectives on the catalog's topologies.

use proptest::prelude::*;
use rainier_hw::Catalog;
use rainier_perf::{CollectiveKind as K, Datacenter, Group, Topology};

fn topology(chip: &str, ranks_per_chip: u32) -> Topology {
    let catalog = Catalog::built_in();
    Topology::new(catalog.chip(chip).expect("chip"), ranks_per_chip, &Datacenter::default())
}

const GB: f64 = 1e9;

/// 8×H100 NCCL ring all-reduce: bus bandwidth ≈ 0.8 × 450 GB/s (hardware-catalog §4).
#[test]
fn nvlink_all_reduce_runs_a_ring_at_nccl_bus_bandwidth() {
    let t = topology("h100", 1);
    let node = Group { size: 8, stride: 1 };
    let ar = t.seconds(K::AllReduce, GB, node, 1.0);
    let expected = 2.0 * 7.0 / 8.0 * GB / (450e9 * 0.8);
    // Within 2 %: the ring's 14 latency steps and the base latency.
    assert!((ar / expected - 1.0).abs() < 0.02, "{ar} vs {expected}");
    assert!(t.describe(K::AllReduce, GB, node).starts_with("ring ×8"));
    let rs = t.seconds(K::ReduceScatter, GB, node, 1.0);
    assert!(ar > 1.9 * rs && ar < 2.1 * rs);
}

/// Small messages go to latency-optimal algorithms, as NCCL's tuner and Neuron's Mesh do.
#[test]
fn small_messages_pick_latency_bound_algorithms() {
    let t = topology("h100", 1);
    let node = Group { size: 8, stride: 1 };
    let small = t.describe(K::AllReduce, 4096.0, node);
    assert!(!small.starts_with("ring"), "{small}");
    // Cheaper than a ring's 14 steps would be.
    let ring_latency = 14.0 * 3.4e-6;
    assert!(t.seconds(K::AllReduce, 4096.0, node, 1.0) < ring_latency + 8.4e-6);
    let wide = Group { size: 1024, stride: 8 };
    assert!(!t.describe(K::AllReduce, 65536.0, wide).contains("ring"));
}

#[test]
fn groups_spanning_nodes_run_hierarchically_and_cost_more() {
    let t = topology("h100", 1);
    let one = t.seconds(K::AllReduce, GB, Group { size: 8, stride: 1 }, 1.0);
    let two = t.seconds(K::AllReduce, GB, Group { size: 16, stride: 1 }, 1.0);
    assert!(two > one);
    let text = t.describe(K::AllReduce, GB, Group { size: 16, stride: 1 });
    assert!(text.contains("scale-up") && text.contains("fat tree"), "{text}");
    // Across nodes only: a DP group one GPU per node uses the NIC, 400 Gb/s × 0.73.
    let dp = t.seconds(K::ReduceScatter, GB, Group { size: 64, stride: 8 }, 1.0);
    let expected = 63.0 / 64.0 * GB / (50e9 * 0.73);
    // Within 5 %: 63 ring steps of network latency.
    assert!((dp / expected - 1.0).abs() < 0.05, "{dp} vs {expected}");
}

/// On the Trn2 4×4 torus a group along one dimension has half the links of one spanning two.
#[test]
fn torus_groups_use_the_links_of_the_dimensions_they_span() {
    let t = topology("trn2", 4);
    let bytes = 256.0 * 1024.0 * 1024.0;
    let row = t.seconds(K::ReduceScatter, bytes, Group { size: 16, stride: 1 }, 1.0);
    let plane = t.seconds(K::ReduceScatter, bytes, Group { size: 64, stride: 1 }, 1.0);
    // Per rank: 15/16 of the buffer at half the bandwidth vs 63/64 at all of it.
    let ratio = row / plane;
    assert!(ratio > 1.7 && ratio < 2.0, "{ratio}");
    // A column (stride 4 chips) is as good as a row.
    let column = t.seconds(K::ReduceScatter, bytes, Group { size: 4, stride: 16 }, 1.0);
    let row4 = t.seconds(K::ReduceScatter, bytes, Group { size: 4, stride: 4 }, 1.0);
    assert!((column / row4 - 1.0).abs() < 1e-9);
}

#[test]
fn ultraserver_ring_is_slower_than_the_instance_torus() {
    let t = topology("trn2u", 4);
    let bytes = 64e6;
    let inside = t.seconds(K::AllGather, bytes, Group { size: 4, stride: 4 }, 1.0);
    let across = t.seconds(K::AllGather, bytes, Group { size: 4, stride: 64 }, 1.0);
    let efa = t.seconds(K::AllGather, bytes, Group { size: 4, stride: 256 }, 1.0);
    assert!(inside < across && across < efa, "{inside} {across} {efa}");
    assert!(t.describe(K::AllGather, bytes, Group { size: 4, stride: 64 }).contains("UltraServer"));
}

#[test]
fn a_million_chips_cost_arithmetic_and_oversubscription_slows_them() {
    let dc = Datacenter {
        building_chips: 65_536,
        building_oversubscription: 1.0,
        ..Datacenter::default()
    };
    let catalog = Catalog::built_in();
    let chip = catalog.chip("trn2").expect("trn2");
    let flat = Topology::new(chip, 4, &dc);
    let over = Topology::new(chip, 4, &Datacenter { building_oversubscription: 8.0, ..dc });
    let group = Group { size: 1 << 18, stride: 16 };
    let (a, b) =
        (flat.seconds(K::AllReduce, GB, group, 1.0), over.seconds(K::AllReduce, GB, group, 1.0));
    assert!(a.is_finite() && b > a, "{a} {b}");
    // Inside one building the oversubscription does not matter.
    let small = Group { size: 1 << 10, stride: 16 };
    assert_eq!(
        flat.seconds(K::AllReduce, GB, small, 1.0),
        over.seconds(K::AllReduce, GB, small, 1.0)
    );
    assert!(flat.describe(K::AllReduce, GB, group).contains("between buildings"));
}

#[test]
fn inferentia2_cannot_reach_past_its_ring() {
    let t = topology("inf2", 2);
    assert!(t.seconds(K::AllReduce, 1e6, Group { size: 24, stride: 1 }, 1.0).is_finite());
    assert!(t.seconds(K::AllReduce, 1e6, Group { size: 26, stride: 1 }, 1.0).is_infinite());
    assert_eq!(t.seconds(K::AllReduce, 1e6, Group { size: 1, stride: 1 }, 1.0), 0.0);
}

#[test]
fn all_to_all_on_a_ring_pays_for_its_hops() {
    let ring = topology("inf2", 1);
    let bytes = 16e6;
    let per_byte = |n| ring.seconds(K::AllToAll, bytes, Group { size: n, stride: 1 }, 1.0);
    // 4 chips: about a switch's cost; 12 chips: bytes travel 3× further.
    assert!(per_byte(12) > 2.5 * per_byte(4), "{} {}", per_byte(12), per_byte(4));
}

#[test]
fn concurrent_traffic_slows_only_the_shared_links() {
    let t = topology("h100", 1);
    let node = Group { size: 8, stride: 1 };
    assert!(
        t.seconds(K::ReduceScatter, GB, node, 0.5)
            > 1.9 * t.seconds(K::ReduceScatter, GB, node, 1.0) - 1e-3
    );
    let nic = Group { size: 16, stride: 8 };
    assert_eq!(
        t.seconds(K::ReduceScatter, GB, nic, 0.5),
        t.seconds(K::ReduceScatter, GB, nic, 1.0)
    );
}

/// A group straddling node boundaries leaves a partial node whose members carry more.
#[test]
fn straddling_groups_pay_contention() {
    let t = topology("gb200", 1);
    // 72-GPU NVL72 domains: a 96-rank group fills one domain and a third of the next.
    let aligned = t.seconds(K::ReduceScatter, GB, Group { size: 144, stride: 1 }, 1.0);
    let straddling = t.seconds(K::ReduceScatter, GB, Group { size: 96, stride: 1 }, 1.0);
    assert!(straddling > aligned, "{straddling} {aligned}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn costs_grow_with_bytes(
        chip in prop::sample::select(vec!["trn1", "trn2", "trn2u", "trn3", "trn3-144", "h100", "b200", "gb200", "tpu-v5e", "tpu-v5p", "tpu-v7"]),
        log_bytes in 10u32..34,
        size in 2u64..300_000,
        log_stride in 0u32..8,
        kind in prop::sample::select(vec![K::AllReduce, K::AllGather, K::ReduceScatter, K::AllToAll, K::SendRecv]),
    ) {
        let t = topology(chip, 1);
        let bytes = f64::from(1u32 << (log_bytes - 10)) * 1024.0;
        let g = Group { size, stride: 1 << log_stride };
        let base = t.seconds(kind, bytes, g, 1.0);
        prop_assert!(base.is_finite() && base > 0.0);
        prop_assert!(t.seconds(kind, 2.0 * bytes, g, 1.0) > base);
    }

    /// On switched domains of powers of two, groups of powers of two never straddle and a
    /// larger group never costs less. (Straddling groups may, see
    /// `straddling_groups_pay_contention`; on a torus a larger group may span more
    /// dimensions and so more links.)
    #[test]
    fn aligned_costs_grow_with_group_size(
        chip in prop::sample::select(vec!["a100", "h100", "h200", "b200", "trn3"]),
        log_bytes in 10u32..34,
        log_size in 1u32..20,
        log_stride in 0u32..8,
        kind in prop::sample::select(vec![K::AllReduce, K::AllGather, K::ReduceScatter, K::AllToAll]),
    ) {
        let t = topology(chip, 1);
        let bytes = f64::from(1u32 << (log_bytes - 10)) * 1024.0;
        let g = Group { size: 1 << log_size, stride: 1 << log_stride };
        let base = t.seconds(kind, bytes, g, 1.0);
        let bigger = Group { size: g.size * 2, ..g };
        prop_assert!(t.seconds(kind, bytes, bigger, 1.0) >= base, "{} < {}", t.seconds(kind, bytes, bigger, 1.0), base);
    }
}

/// Neuron runs its ring collectives one direction per Hamiltonian cycle: across chips of a
/// NeuronLink torus or ring a bandwidth-bound all-reduce takes twice what the same links give
/// bidirectional rings (the chip as a GPU), between the NeuronCores of one chip nothing
/// changes, and scale-out is untouched.
#[test]
fn neuron_rings_drive_half_their_links() {
    let catalog = Catalog::built_in();
    let as_gpu = |name: &str, ranks| {
        let mut chip = catalog.chip(name).expect("chip").clone();
        chip.family = rainier_hw::Family::Gpu;
        Topology::new(&chip, ranks, &Datacenter::default())
    };
    let big = 512.0 * 1024.0 * 1024.0;
    for (chip, ranks, size) in [("trn1", 2, 32), ("inf2", 2, 24), ("trn2", 4, 64)] {
        let group = Group { size, stride: 1 };
        let neuron = topology(chip, ranks).seconds(K::AllReduce, big, group, 1.0);
        let bidirectional = as_gpu(chip, ranks).seconds(K::AllReduce, big, group, 1.0);
        let ratio = neuron / bidirectional;
        assert!(ratio > 1.9 && ratio < 2.01, "{chip}: {ratio}");
    }
    let one_chip = Group { size: 4, stride: 1 };
    let (n, g) = (topology("trn2", 4), as_gpu("trn2", 4));
    assert_eq!(
        n.seconds(K::AllReduce, big, one_chip, 1.0),
        g.seconds(K::AllReduce, big, one_chip, 1.0)
    );
    // DP across instances: only its scale-up part moves.
    let dp = Group { size: 4096, stride: 64 };
    let (tn, tg) = (n.seconds(K::AllReduce, big, dp, 1.0), g.seconds(K::AllReduce, big, dp, 1.0));
    assert!(tn >= tg && tn < 1.5 * tg, "{tn} vs {tg}");
    // A switched Neuron fabric (trn3) keeps its full bandwidth.
    let t3 = topology("trn3", 4).seconds(K::AllReduce, big, Group { size: 64, stride: 1 }, 1.0);
    let g3 = as_gpu("trn3", 4).seconds(K::AllReduce, big, Group { size: 64, stride: 1 }, 1.0);
    assert_eq!(t3, g3);
}
