use std::collections::{BTreeMap, VecDeque};

use rainier_arch::ChipParams;
use rainier_funcsim::{Machine, RunError};
use rainier_isa::{verify, Access, DmaOperand, Engine, Memory, Op, Program, Tile};
use rainier_tensor::HostTensor;

use crate::cost::cost;

/// Why a timing run failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeError {
    /// Invalid program, bad inputs, or an execution failure in the value model.
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("deadlock at {time_ns:.3} ns: {detail}")]
    Deadlock { time_ns: f64, detail: String },
}

/// A timeline row: an engine queue or a DMA engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Track {
    Engine(Engine),
    /// DMA engine (hardware queue) `0..16`.
    Dma(u32),
}

/// One instruction's (or DMA piece's) time on a track.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub track: Track,
    pub start_ps: u64,
    pub duration_ps: u64,
    /// Instruction index in program order.
    pub instruction: usize,
    /// Engine cycles (engine tracks) or bytes moved (DMA tracks).
    pub amount: u64,
}

/// Time accounting of one engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub instructions: u64,
    /// Time the engine spent issuing its instructions.
    pub busy_ps: u64,
    /// Time its next instruction waited for semaphores after the engine was free.
    pub semaphore_stall_ps: u64,
    /// Time its next instruction waited, with semaphores satisfied, for earlier results of its
    /// own engine or for a PSUM bank held by another engine.
    pub resource_stall_ps: u64,
}

/// DMA accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DmaStats {
    pub transfers: u64,
    /// Bytes the DMA engines moved.
    pub bytes: u64,
    /// Bytes read from or written to HBM (an HBM -> HBM copy counts twice, SBUF -> SBUF not).
    pub hbm_bytes: u64,
    /// Time during which at least one transfer was moving data (union of each transfer's span
    /// from its first piece starting to its last piece finishing).
    pub busy_ps: u64,
    /// Busy time per DMA engine.
    pub per_engine_busy_ps: Vec<u64>,
}

/// The result of a timing run.
#[derive(Debug, Clone)]
pub struct Report {
    /// When the last instruction or transfer completed.
    pub time_ps: u64,
    pub instructions_executed: u64,
    /// Indexed by [`Engine::index`].
    pub engines: [EngineStats; 5],
    pub dma: DmaStats,
    /// Every slice, in start order, when requested.
    pub slices: Vec<Slice>,
    /// Output tensors (with values only).
    pub outputs: BTreeMap<String, HostTensor>,
    /// Final machine state (with values only).
    pub machine: Option<Machine>,
}

impl Report {
    pub fn time_ns(&self) -> f64 {
        self.time_ps as f64 / 1000.0
    }
}

/// A byte box of on-chip memory: partitions `[p0, p1)`, bytes `[b0, b1)` within each.
#[derive(Debug, Clone, Copy)]
struct Region {
    psum: bool,
    /// Partitions `[p0, p1)` (at most 128).
    p0: u8,
    p1: u8,
    /// Byte range within each partition (verified tiles lie within 256 KiB).
    b0: i32,
    b1: i32,
}

impl Region {
    fn of(t: &Tile) -> Self {
        let (b0, b1) = t.byte_range();
        let byte = |b: i128| b.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32;
        let part = |p: u32| p.min(255) as u8;
        Region {
            psum: t.memory == Memory::Psum,
            p0: part(t.start_partition),
            p1: part(t.start_partition + t.partitions),
            b0: byte(b0),
            b1: byte(b1),
        }
    }

    fn overlaps(&self, o: &Region) -> bool {
        self.psum == o.psum && self.p0 < o.p1 && o.p0 < self.p1 && self.b0 < o.b1 && o.b0 < self.b1
    }
}

/// A transfer as the DMA engines see it: the SBUF partitions it spans (each DMA engine serves
/// a fixed group of them) and the bytes and descriptors per partition.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    p0: u32,
    p1: u32,
    bytes_per_partition: u64,
    elements_per_partition: u64,
    descriptors_per_partition: u64,
    /// How many sides are HBM: the bytes use the core's HBM share once per side (an
    /// HBM -> HBM copy reads and writes it).
    hbm_sides: u64,
    /// A hardware DMA transpose: its bytes move at `dma_transpose_rate_fraction` of a copy's.
    transpose: bool,
}

/// DMA queues per (DMA engine, issuing engine).
const QUEUES: usize = rainier_isa::DMA_QUEUES as usize;

/// Most tiles one instruction touches (`activation`: src, scale, bias, dst, reduce).
const MAX_TILES: usize = 6;

/// What the scheduler needs of an instruction, computed when it reaches the head of its
/// engine's queue (so memory stays proportional to what is live, not to the program).
#[derive(Debug, Clone, Copy)]
struct Plan {
    issue_ps: u64,
    latency_ps: u64,
    cycles: u64,
    /// LoadStationary time and the stationary tile's identity (matmul only).
    load_stationary: Option<(u64, Region, u64)>,
    /// Tiles touched: reads first, then writes.
    regions: [Region; MAX_TILES],
    reads: u8,
    tiles: u8,
    /// Bit mask of PSUM banks touched.
    banks: u8,
    transfer: Option<Transfer>,
}

impl Plan {
    fn reads(&self) -> &[Region] {
        &self.regions[..usize::from(self.reads)]
    }

    fn writes(&self) -> &[Region] {
        &self.regions[usize::from(self.reads)..usize::from(self.tiles)]
    }
}

fn ps_from_cycles(cycles: u64, hz: f64) -> u64 {
    (cycles as f64 * 1e12 / hz).round() as u64
}

fn engine_hz(chip: &ChipParams, e: Engine) -> f64 {
    let c = &chip.core;
    match e {
        Engine::Tensor => c.tensor_clock_hz.value,
        Engine::Vector => c.vector_clock_hz.value,
        Engine::Scalar => c.scalar_clock_hz.value,
        // The Sync sequencer has no published clock; it triggers DMAs at the GpSimd/Scalar
        // clock (assumption).
        Engine::GpSimd | Engine::Sync => c.gpsimd_clock_hz.value,
    }
}

/// Cycles from an instruction's issue slot ending to its result being usable.
fn completion_latency(core: &rainier_arch::CoreParams, e: Engine) -> u32 {
    match e {
        Engine::Vector => core.timing.vector_completion_latency_cycles.value,
        _ => core.timing.completion_latency_cycles.value,
    }
}

/// Contiguous elements at the inner end of a pattern.
fn contiguous_run(dims: &[rainier_isa::Dim]) -> u64 {
    let mut run = 1u64;
    for d in dims.iter().rev() {
        if d.stride != run as i64 && d.size > 1 {
            break;
        }
        run = run.saturating_mul(d.size);
    }
    run.max(1)
}

fn transfer(program: &Program, dst: &DmaOperand, src: &DmaOperand) -> Option<Transfer> {
    let esize = |o: &DmaOperand| match o {
        DmaOperand::Tile(t) => t.dtype.size_bytes() as u64,
        DmaOperand::Hbm(h) => {
            program.tensors.get(h.tensor).map_or(4, |t| t.dtype.size_bytes() as u64)
        }
    };
    let run = |o: &DmaOperand| match o {
        DmaOperand::Tile(t) => contiguous_run(&t.dims),
        DmaOperand::Hbm(h) => contiguous_run(&h.dims),
    };
    let hbm_sides =
        u64::from(matches!(dst, DmaOperand::Hbm(_))) + u64::from(matches!(src, DmaOperand::Hbm(_)));
    // The SBUF side decides which engines serve the transfer (dst for SBUF -> SBUF).
    let t = match (dst, src) {
        (DmaOperand::Tile(t), _) | (_, DmaOperand::Tile(t)) => t,
        (DmaOperand::Hbm(_), DmaOperand::Hbm(h)) => {
            // HBM -> HBM: the source's outer rows are spread over the engines as if they were
            // partitions (at most 128), each row's elements in descriptors of the common run.
            let total = rainier_isa::pattern_len(&h.dims);
            let rows = h.dims.first().map_or(1, |d| d.size).clamp(1, 128);
            let per = total.div_ceil(rows);
            let run = run(dst).min(run(src)).min(per).max(1);
            return Some(Transfer {
                p0: 0,
                p1: rows as u32,
                bytes_per_partition: per * esize(dst).max(esize(src)),
                elements_per_partition: per,
                descriptors_per_partition: per.div_ceil(run),
                hbm_sides,
                transpose: false,
            });
        }
    };
    let free = t.free_len();
    let run = run(dst).min(run(src)).min(free).max(1);
    Some(Transfer {
        p0: t.start_partition,
        p1: t.start_partition + t.partitions,
        bytes_per_partition: free * esize(dst).max(esize(src)),
        elements_per_partition: free,
        descriptors_per_partition: free.div_ceil(run),
        hbm_sides,
        transpose: false,
    })
}

/// A `dma_transpose`: the engines serving dst's partitions write each dst row as one run
/// (the transpose itself is the DMA hardware's, priced by its rate fraction).
fn transpose_transfer(dst: &Tile) -> Transfer {
    let free = dst.free_len();
    Transfer {
        p0: dst.start_partition,
        p1: dst.start_partition + dst.partitions,
        bytes_per_partition: free * dst.dtype.size_bytes() as u64,
        elements_per_partition: free,
        descriptors_per_partition: 1,
        hbm_sides: 0,
        transpose: true,
    }
}

fn plan(chip: &ChipParams, program: &Program, index: usize) -> Plan {
    let core = &chip.core;
    let ins = &program.instructions[index];
    let hz = engine_hz(chip, ins.engine);
    let c = cost(&ins.op, ins.engine, core);
    let bank_bytes = i128::from(core.psum_bank_bytes().max(1));
    let empty = Region { psum: false, p0: 0, p1: 0, b0: 0, b1: 0 };
    let mut regions = [empty; MAX_TILES];
    let (mut tiles, mut reads, mut banks) = (0u8, None, 0u8);
    ins.op.for_each_tile(|t, access| {
        if t.memory == Memory::Psum {
            let (b0, b1) = t.byte_range();
            for b in (b0 / bank_bytes)..=((b1 - 1).max(b0) / bank_bytes) {
                banks |= 1u8 << (b.clamp(0, 7) as u8);
            }
        }
        // Sources come first. PSUM accumulation by TensorE is pipelined: a write, not a read
        // dependency.
        if access != Access::Read && reads.is_none() {
            reads = Some(tiles);
        }
        if usize::from(tiles) < MAX_TILES {
            regions[usize::from(tiles)] = Region::of(t);
            tiles += 1;
        }
    });
    let load_stationary = match &ins.op {
        Op::Matmul { stationary, double_row, .. } => {
            let key = (stationary.dtype as u64) << 56
                | u64::from(*double_row) << 55
                | stationary.free_len();
            Some((ps_from_cycles(c.load_stationary_cycles, hz), Region::of(stationary), key))
        }
        Op::MatmulMx { stationary, stationary_scale, .. } => {
            // The scales load with the data: a different scale tile is a new LoadStationary.
            let scale_at = stationary_scale.offset_bytes & 0xff_ffff;
            let key = (stationary.dtype as u64) << 56 | scale_at << 16 | stationary.free_len();
            Some((ps_from_cycles(c.load_stationary_cycles, hz), Region::of(stationary), key))
        }
        _ => None,
    };
    Plan {
        issue_ps: ps_from_cycles(c.cycles, hz),
        latency_ps: ps_from_cycles(u64::from(completion_latency(core, ins.engine)), hz),
        cycles: c.cycles,
        load_stationary,
        regions,
        reads: reads.unwrap_or(tiles),
        tiles,
        banks,
        transfer: match &ins.op {
            Op::DmaCopy { dst, src, .. } => transfer(program, dst, src),
            Op::DmaTranspose { dst, .. } => Some(transpose_transfer(dst)),
            // Each indexed row is its own descriptor run.
            Op::DmaIndirect { dst, src, .. } => transfer(program, dst, src).map(|mut t| {
                t.descriptors_per_partition = t.descriptors_per_partition.max(1);
                t
            }),
            _ => None,
        },
    }
}

/// The spans a DMA engine's byte rate is reserved for, in time order (disjoint). A transfer
/// takes the first gap of its length at or after its start, so a transfer committed later but
/// starting earlier (another queue) is not held behind one that waits on its own queue.
#[derive(Debug, Default, Clone)]
struct Slots(VecDeque<(u64, u64)>);

impl Slots {
    /// Reserves `len` from `at` on; returns the end. Spans ending before `now` (no later
    /// transfer can start before it: instructions commit in start order) are dropped.
    fn reserve(&mut self, now: u64, at: u64, len: u64) -> u64 {
        while self.0.front().is_some_and(|&(_, e)| e <= now) {
            self.0.pop_front();
        }
        let mut begin = at;
        let mut index = self.0.len();
        for (k, &(a, e)) in self.0.iter().enumerate() {
            if e <= begin {
                continue;
            }
            if a >= begin + len {
                index = k;
                break;
            }
            begin = begin.max(e);
        }
        self.0.insert(index, (begin, begin + len));
        begin + len
    }
}

/// Completion times of one semaphore's increments, sorted.
#[derive(Debug, Default, Clone)]
struct SemHistory(Vec<u64>);

impl SemHistory {
    fn add(&mut self, t: u64) {
        // Completions mostly arrive in time order: append, else insert in place.
        if self.0.last().is_none_or(|&l| l <= t) {
            self.0.push(t);
        } else {
            let at = self.0.partition_point(|&x| x <= t);
            self.0.insert(at, t);
        }
    }

    /// When the semaphore reached `value`, if it has.
    fn reached(&self, value: u32) -> Option<u64> {
        if value == 0 {
            Some(0)
        } else {
            self.0.get(value as usize - 1).copied()
        }
    }
}

/// An instruction of an engine still in its pipeline: what it writes and when that lands.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    region: Region,
    done_ps: u64,
}

/// An engine head that can issue: when, and what held it back.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    start_ps: u64,
    index: usize,
    /// When the engine finished its previous instruction.
    engine_free_ps: u64,
    /// When its semaphore waits were satisfied.
    sem_ready_ps: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct BankState {
    owner: usize,
    busy_until: u64,
}

/// Runs `program` on one NeuronCore of `chip`. With `inputs` the instructions also compute
/// values (every declared input must be given); without, only time is modelled. `record` keeps
/// every slice for a trace.
pub fn simulate(
    program: &Program,
    chip: &ChipParams,
    inputs: Option<&BTreeMap<String, HostTensor>>,
    record: bool,
) -> Result<Report, TimeError> {
    verify(program, &chip.core).map_err(RunError::from)?;
    run(program, chip, inputs, record)
}

/// [`simulate`] for a program whose synchronization is race-free by construction (the
/// kernel builder's: its tests run the full verifier on its kernels): the hardware rules are
/// checked, the data-race analysis (most of the time of a large program's run) is skipped.
pub fn simulate_built(
    program: &Program,
    chip: &ChipParams,
    inputs: Option<&BTreeMap<String, HostTensor>>,
    record: bool,
) -> Result<Report, TimeError> {
    rainier_isa::verify_rules(program, &chip.core).map_err(RunError::from)?;
    run(program, chip, inputs, record)
}

fn run(
    program: &Program,
    chip: &ChipParams,
    inputs: Option<&BTreeMap<String, HostTensor>>,
    record: bool,
) -> Result<Report, TimeError> {
    let mut machine = match inputs {
        Some(inputs) => Some(rainier_funcsim::prepare(program, chip, inputs)?),
        None => None,
    };
    // The plan of each engine's head instruction.
    let mut head_plans: [Option<Plan>; 5] = Default::default();
    let streams = program.streams();
    let tp = &chip.core.timing;
    let dma_engines = chip.core.dma_engines.value as usize;
    let dma_latency_ps = (tp.dma_fixed_latency_ns.value * 1000.0).round() as u64;
    let per_engine = tp.dma_partitions_per_engine.value.max(1);
    // Integer rates (bytes per microsecond) keep the per-piece arithmetic exact and cheap.
    let engine_bytes_per_us = ((tp.dma_engine_bytes_per_ns.value * 1000.0).round() as u64).max(1);
    let transpose_bytes_per_us =
        ((tp.dma_engine_bytes_per_ns.value * tp.dma_transpose_rate_fraction.value * 1000.0).round()
            as u64)
            .max(1);
    let queue_elements_per_us =
        ((tp.dma_queue_elements_per_ns.value * 1000.0).round() as u64).max(1);
    let hbm_bytes_per_us =
        ((chip.hbm_bytes_per_s.value / f64::from(chip.cores_per_chip.value) / 1e6).round() as u64)
            .max(1);
    let descriptor_ps = (tp.dma_descriptor_ns.value * 1000.0).round() as u64;

    let mut heads = [0usize; 5];
    let mut engine_free = [0u64; 5];
    let mut in_flight: [Vec<InFlight>; 5] = Default::default();
    let mut sems: Vec<SemHistory> =
        vec![SemHistory::default(); chip.core.semaphores.value as usize];
    let mut banks = [BankState::default(); 8];
    // Per (DMA engine, issuing engine, queue): when its last transfer finishes; per DMA
    // engine: the spans its byte rate is reserved for.
    let mut queue_free = vec![0u64; dma_engines * Engine::ALL.len() * QUEUES];
    let mut engine_slots: Vec<Slots> = vec![Slots::default(); dma_engines];
    let mut hbm_free = 0u64;
    let mut stationary: Option<(Region, u64)> = None;
    let mut last_matmul_end = u64::MAX;
    let mut last_matmul_issue = 0u64;
    let mut stats: [EngineStats; 5] = Default::default();
    let mut dma = DmaStats { per_engine_busy_ps: vec![0; dma_engines], ..DmaStats::default() };
    let mut dma_intervals: Vec<(u64, u64)> = Vec::new();
    let mut slices = Vec::new();
    let mut end = 0u64;
    let mut executed = 0u64;

    // Each engine head's earliest start, cached until something it depends on changes.
    // `None`: stale; `Some(None)`: blocked on a semaphore.
    let mut cached: [Option<Option<Candidate>>; 5] = [None; 5];
    loop {
        // The engine head that can start earliest goes next (ties: program order). Later
        // scheduling never moves an earlier start, so committing it is safe.
        let mut best: Option<Candidate> = None;
        for (e, stream) in streams.iter().enumerate() {
            if cached[e].is_none() {
                cached[e] = Some(stream.get(heads[e]).and_then(|&i| {
                    let p = head_plans[e].get_or_insert_with(|| plan(chip, program, i));
                    let mut sem_ready = 0u64;
                    for w in &program.instructions[i].waits {
                        sem_ready = sem_ready.max(sems[w.semaphore as usize].reached(w.value)?);
                    }
                    let mut start = engine_free[e].max(sem_ready);
                    for f in &in_flight[e] {
                        if f.done_ps > start && p.reads().iter().any(|r| r.overlaps(&f.region)) {
                            start = f.done_ps;
                        }
                    }
                    if p.banks != 0 {
                        for (b, bank) in banks.iter().enumerate() {
                            if p.banks & (1 << b) != 0 && bank.owner != e && bank.busy_until > start
                            {
                                start = bank.busy_until;
                            }
                        }
                    }
                    Some(Candidate {
                        start_ps: start,
                        index: i,
                        engine_free_ps: engine_free[e],
                        sem_ready_ps: sem_ready,
                    })
                }));
            }
            if let Some(Some(c)) = cached[e] {
                if best.is_none_or(|b| (c.start_ps, c.index) < (b.start_ps, b.index)) {
                    best = Some(c);
                }
            }
        }
        let Some(Candidate {
            start_ps: start,
            index: i,
            engine_free_ps: free,
            sem_ready_ps: sem_ready,
        }) = best
        else {
            break;
        };
        let e = program.instructions[i].engine.index();
        let Some(p) = head_plans[e].take() else { break };
        let ins = &program.instructions[i];
        // Background weight load: hidden behind the previous matmul when back to back.
        let mut issue = p.issue_ps;
        if let Some((ls_ps, region, key)) = p.load_stationary {
            let same = stationary.is_some_and(|(r, k)| {
                k == key && r.p0 == region.p0 && r.p1 == region.p1 && r.b0 == region.b0
            });
            if !same {
                let hidden = if start == last_matmul_end { last_matmul_issue } else { 0 };
                issue += ls_ps.saturating_sub(hidden);
                stationary = Some((region, key));
            }
        }
        let done = start + issue + p.latency_ps;
        let st = &mut stats[e];
        st.instructions += 1;
        st.busy_ps += issue;
        st.semaphore_stall_ps += sem_ready.saturating_sub(free);
        st.resource_stall_ps += start - free.max(sem_ready);
        engine_free[e] = start + issue;
        if p.load_stationary.is_some() {
            last_matmul_end = start + issue;
            last_matmul_issue = issue;
        }
        in_flight[e].retain(|f| f.done_ps > start);
        for w in p.writes() {
            in_flight[e].push(InFlight { region: *w, done_ps: done });
        }
        for (b, bank) in banks.iter_mut().enumerate() {
            if p.banks & (1 << b) != 0 {
                if bank.owner != e {
                    bank.owner = e;
                }
                bank.busy_until = bank.busy_until.max(done);
            }
        }
        if record {
            slices.push(Slice {
                track: Track::Engine(Engine::ALL[e]),
                start_ps: start,
                duration_ps: issue,
                instruction: i,
                amount: p.cycles,
            });
        }
        let mut complete = done;
        if let Some(tr) = p.transfer {
            let queue = ins.op.dma_queue().unwrap_or(0).min(QUEUES as u8 - 1);
            let data_start = start + issue + dma_latency_ps;
            dma.transfers += 1;
            let mut first_start = u64::MAX;
            let mut part = tr.p0;
            while part < tr.p1 {
                // Partitions [part, next) are served by one DMA engine.
                let next = ((part / per_engine) + 1) * per_engine;
                let parts = u64::from(next.min(tr.p1) - part);
                let q = ((part / per_engine) % dma_engines as u32) as usize;
                let bytes = parts * tr.bytes_per_partition;
                let elements = parts * tr.elements_per_partition;
                // A transfer runs on its queue of this DMA engine (the issuing engine's queue
                // `queue`), in order behind the queue's earlier transfers; a queue moves at most
                // its element rate, and the queues of one DMA engine share its byte rate.
                let lane = (q * Engine::ALL.len() + e) * QUEUES + usize::from(queue);
                let s = data_start.max(queue_free[lane]);
                let rate = if tr.transpose { transpose_bytes_per_us } else { engine_bytes_per_us };
                let byte_time = bytes * 1_000_000 / rate;
                let slot_end = engine_slots[q].reserve(start, s, byte_time);
                let mut finish = (s
                    + elements * 1_000_000 / queue_elements_per_us
                    + parts * tr.descriptors_per_partition * descriptor_ps)
                    .max(slot_end);
                if tr.hbm_sides > 0 {
                    hbm_free =
                        s.max(hbm_free) + tr.hbm_sides * bytes * 1_000_000 / hbm_bytes_per_us;
                    finish = finish.max(hbm_free);
                }
                queue_free[lane] = finish;
                dma.bytes += bytes;
                dma.hbm_bytes += tr.hbm_sides * bytes;
                dma.per_engine_busy_ps[q] += byte_time;
                first_start = first_start.min(s);
                complete = complete.max(finish);
                if record {
                    slices.push(Slice {
                        track: Track::Dma(q as u32),
                        start_ps: s,
                        duration_ps: finish - s,
                        instruction: i,
                        amount: bytes,
                    });
                }
                part = next;
            }
            dma_intervals.push((first_start, complete));
        }
        for &s in &ins.signals {
            sems[s as usize].add(complete);
        }
        if let Some(m) = machine.as_mut() {
            m.execute(&ins.op).map_err(|source| RunError::exec(program, i, source))?;
        }
        end = end.max(complete);
        heads[e] += 1;
        executed += 1;
        // Invalidate this engine's head and every head that waits on a semaphore this
        // instruction signals or touches a PSUM bank it used.
        cached[e] = None;
        for (o, stream) in streams.iter().enumerate() {
            let Some(&j) = stream.get(heads[o]) else { continue };
            let head_banks = head_plans[o].as_ref().map_or(0xff, |h| h.banks);
            let waits_on_signal =
                program.instructions[j].waits.iter().any(|w| ins.signals.contains(&w.semaphore));
            if waits_on_signal || head_banks & p.banks != 0 {
                cached[o] = None;
            }
        }
    }

    let stuck: Vec<String> = Engine::ALL
        .iter()
        .filter_map(|eng| {
            let e = eng.index();
            let &i = streams[e].get(heads[e])?;
            let why = program.describe_stuck(i, |s| sems[s as usize].0.len() as u32);
            let cycle = (engine_free[e] as f64 * engine_hz(chip, *eng) / 1e12).round() as u64;
            Some(format!("{eng} engine (free since cycle {cycle}) {why}"))
        })
        .collect();
    if !stuck.is_empty() {
        return Err(TimeError::Deadlock { time_ns: end as f64 / 1000.0, detail: stuck.join("; ") });
    }

    dma_intervals.sort_unstable();
    let mut covered_until = 0u64;
    for (s, f) in dma_intervals {
        let s = s.max(covered_until);
        if f > s {
            dma.busy_ps += f - s;
            covered_until = f;
        }
    }
    slices.sort_by_key(|s| (s.start_ps, s.track, s.instruction));
    if let Some(m) = machine.as_mut() {
        for (v, h) in m.semaphores.iter_mut().zip(&sems) {
            *v = h.0.len() as u32;
        }
    }
    let outputs = match &machine {
        Some(m) => rainier_funcsim::outputs(program, m),
        None => BTreeMap::new(),
    };
    Ok(Report {
        time_ps: end,
        instructions_executed: executed,
        engines: stats,
        dma,
        slices,
        outputs,
        machine,
    })
}
