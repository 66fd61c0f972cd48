use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use rainier_arch::{Chip, ChipParams};
use rainier_isa::{
    pattern_extent, verify_rules, Access, ActFunc, AluOp, DmaOperand, Engine, HbmAccess,
    Instruction, Memory, Op, Program, ScalarOperand, ScalarStage, SemWait, TensorDecl, TensorKind,
    Tile, Violations,
};
use rainier_tensor::DType;

use crate::alloc::Arena;

/// Alignment of SBUF allocations within a partition (assumption: NKI's `sbuf_min_align` value
/// is not public; 64 B keeps every dtype and DMA descriptor aligned).
pub const SBUF_ALIGN: u64 = 64;
/// Most instructions a kernel may have (each costs a few hundred bytes of host memory; gemm
/// 8192³ needs 134k).
pub const MAX_INSTRUCTIONS: usize = 4_000_000;
/// Semaphores reserved for the engines' completion counters (`S[0..5]`, by `Engine::index`).
const ENGINE_SEMAPHORES: u32 = 5;
/// DMA queues the library kernels' transfers rotate through (per issuing engine).
const KERNEL_DMA_QUEUES: u8 = 4;

/// Why a kernel could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    #[error("kernel does not fit in SBUF: a tile of {requested} bytes per partition is needed but the largest free block is {largest} of {capacity} bytes ({chip})")]
    OutOfSbuf { requested: u64, largest: u64, capacity: u64, chip: Chip },
    #[error("kernel does not fit in PSUM: {requested} bytes per partition are needed but the largest free run of banks is {largest} of {capacity} bytes ({chip})")]
    OutOfPsum { requested: u64, largest: u64, capacity: u64, chip: Chip },
    #[error("free of a tile that is not allocated: {0}")]
    BadFree(String),
    #[error("tensor '{0}' is declared twice")]
    DuplicateTensor(String),
    #[error("invalid shape for {what}: {detail}")]
    Shape { what: String, detail: String },
    #[error("kernel is too large to build: more than {limit} instructions (shrink the shape)")]
    TooLarge { limit: usize },
    #[error("the emitted program breaks the hardware rules (a kernel bug): {0}")]
    Invalid(#[from] Violations),
}

/// The memory an access touches, for dependency tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Space {
    Sbuf,
    Psum,
    Hbm(usize),
}

impl Space {
    /// Its slot in [`KernelBuilder::records`]: SBUF, PSUM, then the HBM tensors in order.
    fn slot(self) -> usize {
        match self {
            Space::Sbuf => 0,
            Space::Psum => 1,
            Space::Hbm(t) => 2 + t,
        }
    }
}

/// A box of memory: partitions `[p0, p1)` (HBM: 0..1) and bytes `[b0, b1)` (HBM: elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Region {
    space: Space,
    p0: u32,
    p1: u32,
    b0: i128,
    b1: i128,
}

impl Region {
    fn of_tile(t: &Tile) -> Self {
        let (b0, b1) = t.byte_range();
        let space = if t.memory == Memory::Sbuf { Space::Sbuf } else { Space::Psum };
        Region { space, p0: t.start_partition, p1: t.start_partition + t.partitions, b0, b1 }
    }

    fn of_hbm(h: &HbmAccess) -> Self {
        let (lo, hi) = pattern_extent(&h.dims);
        let base = i128::from(h.offset);
        Region {
            space: Space::Hbm(h.tensor),
            p0: 0,
            p1: 1,
            b0: base + i128::from(lo),
            b1: base + i128::from(hi) + 1,
        }
    }

    fn overlaps(&self, o: &Region) -> bool {
        self.space == o.space
            && self.p0 < o.p1
            && o.p0 < self.p1
            && self.b0 < o.b1
            && o.b0 < self.b1
    }

    fn covers(&self, o: &Region) -> bool {
        self.space == o.space
            && self.p0 <= o.p0
            && o.p1 <= self.p1
            && self.b0 <= o.b0
            && o.b1 <= self.b1
    }
}

/// How a later instruction learns that an earlier one is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Token {
    /// The `n`-th compute instruction of an engine (`S[engine] >= n`).
    Engine(Engine, u32),
    /// The `n`-th DMA that signals pool semaphore `s` (`S[s] >= n`: a semaphore's transfers
    /// complete in order).
    Dma(u32, u32),
}

/// An access still relevant to later dependencies.
#[derive(Debug, Clone, Copy)]
struct Record {
    region: Region,
    token: Token,
}

/// The outstanding accesses of one memory space. A read conflicts only with writes; a write
/// with both, so reads of never-written memory (weights in HBM) cost nothing to track. Reads
/// are kept one per (region, reader): a later read of the same region by the same in-order
/// engine (or on the same DMA semaphore, whose waits cover every transfer issued on it)
/// stands for the earlier ones, so a tile read by thousands of matmuls is one record.
#[derive(Debug)]
struct SpaceRecords {
    writes: RecordSet,
    reads: RecordSet,
    /// The read record of each (region, reader).
    read_ids: HashMap<(Region, Reader), usize>,
}

/// Bytes (HBM: elements) per page of a [`RecordSet`]'s index.
const PAGE: i128 = 1024;
/// Records spanning more pages than this are kept in one list every query scans.
const MAX_PAGES: i128 = 64;

/// Records indexed by the pages of their byte range, so a query looks only at the records
/// whose pages it shares (a kernel keeps thousands of tiles live; scanning them all per
/// instruction made long attention kernels quadratic to build).
#[derive(Debug, Default)]
struct RecordSet {
    slots: Vec<Option<Record>>,
    free: Vec<usize>,
    pages: HashMap<i128, Vec<usize>>,
    wide: Vec<usize>,
}

impl RecordSet {
    fn pages_of(r: &Region) -> Option<std::ops::RangeInclusive<i128>> {
        let (first, last) = (r.b0.div_euclid(PAGE), (r.b1 - 1).div_euclid(PAGE));
        (last - first < MAX_PAGES).then_some(first..=last)
    }

    fn insert(&mut self, rec: Record) -> usize {
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id] = Some(rec);
                id
            }
            None => {
                self.slots.push(Some(rec));
                self.slots.len() - 1
            }
        };
        match Self::pages_of(&rec.region) {
            Some(pages) => pages.for_each(|p| self.pages.entry(p).or_default().push(id)),
            None => self.wide.push(id),
        }
        id
    }

    /// Ids of the records that may overlap `a` (each at most once; a superset).
    fn candidates(&self, a: &Region) -> Vec<usize> {
        let mut ids: Vec<usize> = self.wide.clone();
        match Self::pages_of(a) {
            // One page: its ids are distinct, and none is wide (a record is on pages or wide).
            Some(pages) if pages.start() == pages.end() => {
                if let Some(v) = self.pages.get(pages.start()) {
                    ids.extend_from_slice(v);
                }
                return ids;
            }
            Some(pages) => {
                for p in pages {
                    if let Some(v) = self.pages.get(&p) {
                        ids.extend_from_slice(v);
                    }
                }
            }
            None => {
                return self.slots.iter().enumerate().filter_map(|(i, s)| s.map(|_| i)).collect()
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn overlapping<'a>(&'a self, a: &'a Region) -> impl Iterator<Item = &'a Record> + 'a {
        self.candidates(a)
            .into_iter()
            .filter_map(move |i| self.slots[i].as_ref().filter(|r| r.region.overlaps(a)))
    }

    fn get_mut(&mut self, id: usize) -> Option<&mut Record> {
        self.slots.get_mut(id).and_then(Option::as_mut)
    }

    /// Removes the records `a` covers; returns them.
    fn remove_covered(&mut self, a: &Region) -> Vec<Record> {
        let mut removed = Vec::new();
        for id in self.candidates(a) {
            let Some(rec) = self.slots[id].filter(|r| a.covers(&r.region)) else { continue };
            self.slots[id] = None;
            self.free.push(id);
            match Self::pages_of(&rec.region) {
                Some(pages) => {
                    for p in pages {
                        if let Some(v) = self.pages.get_mut(&p) {
                            v.retain(|&i| i != id);
                            if v.is_empty() {
                                self.pages.remove(&p);
                            }
                        }
                    }
                }
                None => self.wide.retain(|&i| i != id),
            }
            removed.push(rec);
        }
        removed
    }
}

/// Who read a region, for [`SpaceRecords::reads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Reader {
    Engine(Engine),
    Dma(u32),
}

impl Token {
    fn reader(self) -> Reader {
        match self {
            Token::Engine(e, _) => Reader::Engine(e),
            Token::Dma(s, _) => Reader::Dma(s),
        }
    }
}

/// Builds one NeuronCore program. See the crate docs for the synchronization scheme.
#[derive(Debug)]
pub struct KernelBuilder {
    chip: ChipParams,
    tensors: Vec<TensorDecl>,
    instructions: Vec<Instruction>,
    sbuf: Arena,
    psum: Arena,
    /// Live allocations: (memory, offset, bytes per partition).
    live: Vec<(Memory, u64, u64)>,
    /// Outstanding accesses per memory space, at [`Space::slot`] (created on first use).
    records: Vec<Option<SpaceRecords>>,
    /// Compute instructions issued per engine.
    engine_counts: [u32; 5],
    /// DMAs issued per pool semaphore (index = semaphore - ENGINE_SEMAPHORES).
    dma_issued: Vec<u32>,
    next_dma: usize,
    next_queue: u8,
    /// Waits for everything issued before the last [`KernelBuilder::fence`], and which engines
    /// have not yet taken them (in-order engines need them on their first instruction only).
    fence_waits: Vec<SemWait>,
    fence_pending: [bool; 5],
}

impl KernelBuilder {
    /// An empty kernel for one NeuronCore of `chip`.
    pub fn new(chip: impl Into<ChipParams>) -> Self {
        let chip: ChipParams = chip.into();
        let core = &chip.core;
        let pool = core.semaphores.value.saturating_sub(ENGINE_SEMAPHORES).max(1) as usize;
        KernelBuilder {
            sbuf: Arena::new(u64::from(core.sbuf_bytes_per_partition.value)),
            psum: Arena::new(u64::from(core.psum_bytes_per_partition.value)),
            chip,
            tensors: Vec::new(),
            instructions: Vec::new(),
            live: Vec::new(),
            records: Vec::new(),
            engine_counts: [0; 5],
            dma_issued: vec![0; pool],
            next_dma: 0,
            next_queue: 0,
            fence_waits: Vec::new(),
            fence_pending: [false; 5],
        }
    }

    /// The chip's parameters.
    pub fn chip(&self) -> &ChipParams {
        &self.chip
    }

    fn declare(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[u64],
        kind: TensorKind,
    ) -> Result<usize, KernelError> {
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(KernelError::DuplicateTensor(name.to_string()));
        }
        if shape.is_empty() || shape.contains(&0) {
            return Err(KernelError::Shape {
                what: format!("tensor '{name}'"),
                detail: format!("{shape:?} has an empty dimension"),
            });
        }
        self.tensors.push(TensorDecl {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            kind,
        });
        Ok(self.tensors.len() - 1)
    }

    /// Declares an HBM input tensor; returns its index.
    pub fn input(&mut self, name: &str, dtype: DType, shape: &[u64]) -> Result<usize, KernelError> {
        self.declare(name, dtype, shape, TensorKind::Input)
    }

    /// Declares an HBM output tensor; returns its index.
    pub fn output(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[u64],
    ) -> Result<usize, KernelError> {
        self.declare(name, dtype, shape, TensorKind::Output)
    }

    /// Declares an HBM scratch tensor (device-only, starts as zeros); returns its index.
    pub fn scratch(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[u64],
    ) -> Result<usize, KernelError> {
        self.declare(name, dtype, shape, TensorKind::Scratch)
    }

    /// The 2-D block `[rows, cols]` of a rank-2 HBM tensor.
    pub fn block(
        &self,
        tensor: usize,
        rows: std::ops::Range<u64>,
        cols: std::ops::Range<u64>,
    ) -> HbmAccess {
        let width = self.tensors.get(tensor).and_then(|t| t.shape.get(1)).copied().unwrap_or(1);
        HbmAccess {
            tensor,
            offset: rows.start * width + cols.start,
            dims: vec![
                rainier_isa::Dim {
                    stride: width as i64,
                    size: rows.end.saturating_sub(rows.start),
                },
                rainier_isa::Dim { stride: 1, size: cols.end.saturating_sub(cols.start) },
            ],
        }
    }

    /// An SBUF tile of `partitions` x `sizes` elements of `dtype`, live until [`Self::free`].
    pub fn sbuf(
        &mut self,
        partitions: u32,
        dtype: DType,
        sizes: &[u64],
    ) -> Result<Tile, KernelError> {
        self.alloc(Memory::Sbuf, partitions, dtype, sizes)
    }

    /// A PSUM tile (whole banks: an accumulation group), live until [`Self::free`].
    pub fn psum(
        &mut self,
        partitions: u32,
        dtype: DType,
        sizes: &[u64],
    ) -> Result<Tile, KernelError> {
        self.alloc(Memory::Psum, partitions, dtype, sizes)
    }

    fn alloc(
        &mut self,
        memory: Memory,
        partitions: u32,
        dtype: DType,
        sizes: &[u64],
    ) -> Result<Tile, KernelError> {
        // Every kernel allocates tiles as it loops, so this stops an oversized build early.
        if self.instructions.len() > MAX_INSTRUCTIONS {
            return Err(KernelError::TooLarge { limit: MAX_INSTRUCTIONS });
        }
        let parts = self.chip.core.partitions.value;
        let elems = sizes.iter().try_fold(1u64, |a, &s| a.checked_mul(s)).unwrap_or(u64::MAX);
        if partitions == 0 || partitions > parts || elems == 0 {
            return Err(KernelError::Shape {
                what: "tile".into(),
                detail: format!("{partitions} partitions x {sizes:?} (1..={parts} partitions, non-empty free size)"),
            });
        }
        let bytes = elems.saturating_mul(dtype.size_bytes() as u64);
        let chip = self.chip.chip;
        let (arena, align) = match memory {
            Memory::Sbuf => (&mut self.sbuf, SBUF_ALIGN),
            Memory::Psum => (&mut self.psum, u64::from(self.chip.core.psum_bank_bytes())),
        };
        // PSUM is handed out in whole banks.
        let bytes = if memory == Memory::Psum { bytes.div_ceil(align) * align } else { bytes };
        let offset = arena.alloc(bytes, align).ok_or_else(|| {
            let (requested, largest, capacity) = (bytes, arena.largest(), arena.capacity());
            match memory {
                Memory::Sbuf => KernelError::OutOfSbuf { requested, largest, capacity, chip },
                Memory::Psum => KernelError::OutOfPsum { requested, largest, capacity, chip },
            }
        })?;
        self.live.push((memory, offset, bytes));
        Ok(Tile::new(memory, 0..partitions, offset, dtype, sizes))
    }

    /// Ends a tile's lifetime; its memory may be handed out again (later writers wait for its
    /// last readers automatically).
    pub fn free(&mut self, tile: &Tile) -> Result<(), KernelError> {
        let at = self
            .live
            .iter()
            .position(|&(m, off, _)| m == tile.memory && off == tile.offset_bytes)
            .ok_or_else(|| KernelError::BadFree(tile.to_string()))?;
        let (memory, offset, bytes) = self.live.swap_remove(at);
        let arena = if memory == Memory::Sbuf { &mut self.sbuf } else { &mut self.psum };
        arena
            .release(offset, bytes)
            .then_some(())
            .ok_or_else(|| KernelError::BadFree(tile.to_string()))
    }

    /// SBUF bytes per partition still free.
    pub fn sbuf_free_bytes(&self) -> u64 {
        self.sbuf.free_bytes()
    }

    /// Orders every later instruction after every earlier one (a loop iteration that may not
    /// overlap the next, as NKI's `sequential_range`): each engine's next instruction waits for
    /// all compute and DMA issued so far.
    pub fn fence(&mut self) {
        let mut waits: Vec<SemWait> = Engine::ALL
            .iter()
            .filter(|e| self.engine_counts[e.index()] > 0)
            .map(|e| SemWait { semaphore: e.index() as u32, value: self.engine_counts[e.index()] })
            .collect();
        waits.extend(
            self.dma_issued
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(k, &n)| SemWait { semaphore: k as u32 + ENGINE_SEMAPHORES, value: n }),
        );
        self.fence_waits = waits;
        self.fence_pending = [true; 5];
    }

    /// Appends `op` on `engine`, with the semaphore waits its data dependencies need and a
    /// signal for those who will depend on it.
    pub fn push(&mut self, engine: Engine, op: Op) {
        let is_dma = op.is_dma();
        let indirect = matches!(op, Op::DmaIndirect { .. });
        let mut accesses: Vec<(Region, bool)> = Vec::with_capacity(6);
        op.for_each_tile(|t, a| accesses.push((Region::of_tile(t), a != Access::Read)));
        if let Some((dst, src)) = op.dma_operands() {
            // An indexed HBM side may touch any row: the whole tensor.
            let region = |h: &HbmAccess| {
                if indirect {
                    let len = self.tensors.get(h.tensor).map_or(0, |t| t.len());
                    Region { space: Space::Hbm(h.tensor), p0: 0, p1: 1, b0: 0, b1: i128::from(len) }
                } else {
                    Region::of_hbm(h)
                }
            };
            if let DmaOperand::Hbm(h) = src {
                accesses.push((region(h), false));
            }
            if let DmaOperand::Hbm(h) = dst {
                accesses.push((region(h), true));
            }
        }
        let mut waits: BTreeMap<u32, u32> = BTreeMap::new();
        for (a, write) in &accesses {
            let Some(Some(sr)) = self.records.get(a.space.slot()) else { continue };
            let reads = write.then(|| sr.reads.overlapping(a)).into_iter().flatten();
            for r in sr.writes.overlapping(a).chain(reads) {
                let (sem, value) = match r.token {
                    // In-order engines: earlier compute instructions of this engine are done first.
                    Token::Engine(e, _) if e == engine && !is_dma => continue,
                    Token::Engine(e, n) => (e.index() as u32, n),
                    Token::Dma(s, n) => (s, n),
                };
                let w = waits.entry(sem).or_insert(0);
                *w = (*w).max(value);
            }
        }
        if std::mem::take(&mut self.fence_pending[engine.index()]) {
            for w in &self.fence_waits {
                // An engine's own earlier compute is ordered by the engine itself.
                if w.semaphore == engine.index() as u32 && !is_dma {
                    continue;
                }
                let v = waits.entry(w.semaphore).or_insert(0);
                *v = (*v).max(w.value);
            }
        }
        let token = if is_dma {
            let k = self.next_dma;
            self.next_dma = (self.next_dma + 1) % self.dma_issued.len();
            // A semaphore's transfers complete in order: each waits for the previous one on
            // its semaphore (issued a whole pool of DMAs earlier, so rarely a real wait).
            // Without it a later, quicker transfer could bring the count to a value a reader
            // of an earlier one waits for (transfers on different queues land out of order).
            if self.dma_issued[k] > 0 {
                let v = waits.entry(k as u32 + ENGINE_SEMAPHORES).or_insert(0);
                *v = (*v).max(self.dma_issued[k]);
            }
            self.dma_issued[k] += 1;
            Token::Dma(k as u32 + ENGINE_SEMAPHORES, self.dma_issued[k])
        } else {
            self.engine_counts[engine.index()] += 1;
            Token::Engine(engine, self.engine_counts[engine.index()])
        };
        let signal = match token {
            Token::Engine(e, _) => e.index() as u32,
            Token::Dma(s, _) => s,
        };
        for (region, write) in accesses {
            let at = region.space.slot();
            if self.records.len() <= at {
                self.records.resize_with(at + 1, || None);
            }
            let sr = self.records[at].get_or_insert_with(|| SpaceRecords {
                writes: RecordSet::default(),
                reads: RecordSet::default(),
                read_ids: HashMap::default(),
            });
            if write {
                // A write that covers an older access orders everything after it behind that
                // access (it waited for it, or follows it on the same in-order engine).
                sr.writes.remove_covered(&region);
                for r in sr.reads.remove_covered(&region) {
                    sr.read_ids.remove(&(r.region, r.token.reader()));
                }
                sr.writes.insert(Record { region, token });
            } else {
                let key = (region, token.reader());
                match sr.read_ids.get(&key).and_then(|&id| sr.reads.get_mut(id)) {
                    Some(r) => r.token = token,
                    None => {
                        let id = sr.reads.insert(Record { region, token });
                        sr.read_ids.insert(key, id);
                    }
                }
            }
        }
        self.instructions.push(Instruction {
            engine,
            op,
            waits: waits
                .into_iter()
                .map(|(semaphore, value)| SemWait { semaphore, value })
                .collect(),
            signals: vec![signal],
        });
    }

    /// `dma_copy dst, src`, triggered from the Sync engine.
    pub fn dma(&mut self, dst: DmaOperand, src: DmaOperand) {
        let queue = self.rotate_queue();
        self.push(Engine::Sync, Op::DmaCopy { dst, src, queue });
    }

    /// `dma_copy dst, src`, triggered from `engine`'s queue: a transfer that must wait for
    /// results (a store) then does not hold up the loads queued behind it on the Sync engine.
    pub fn dma_from(&mut self, engine: Engine, dst: DmaOperand, src: DmaOperand) {
        let queue = self.rotate_queue();
        self.push(engine, Op::DmaCopy { dst, src, queue });
    }

    /// `dma_transpose dst, src` (SBUF to SBUF, NeuronCore-v3+), triggered from `engine`'s queue.
    pub fn dma_transpose_from(&mut self, engine: Engine, dst: &Tile, src: &Tile) {
        let queue = self.rotate_queue();
        self.push(engine, Op::DmaTranspose { dst: dst.clone(), src: src.clone(), queue });
    }

    /// The next of [`KERNEL_DMA_QUEUES`] queues, round robin: a queue moves elements at a
    /// quarter of a DMA engine's byte rate (docs/timing.md), so 2-byte transfers reach the
    /// engines' rate only spread over queues, as production kernels spread them.
    fn rotate_queue(&mut self) -> u8 {
        let q = self.next_queue;
        self.next_queue = (q + 1) % KERNEL_DMA_QUEUES;
        q
    }

    /// `nc_matmul dst, stationary, moving` on the Tensor engine.
    pub fn matmul(&mut self, dst: &Tile, stationary: &Tile, moving: &Tile, accumulate: bool) {
        self.push(
            Engine::Tensor,
            Op::Matmul {
                dst: dst.clone(),
                stationary: stationary.clone(),
                moving: moving.clone(),
                accumulate,
                double_row: false,
            },
        );
    }

    /// `nc_matmul dst, stationary, moving double_row=true`: fp8 operands `[K, 2·M]` and
    /// `[K, 2·N]` contracting over `2·K` (v3+).
    pub fn matmul_double_row(
        &mut self,
        dst: &Tile,
        stationary: &Tile,
        moving: &Tile,
        accumulate: bool,
    ) {
        self.push(
            Engine::Tensor,
            Op::Matmul {
                dst: dst.clone(),
                stationary: stationary.clone(),
                moving: moving.clone(),
                accumulate,
                double_row: true,
            },
        );
    }

    /// `nc_matmul_mx dst, stationary, moving, stationary_scale, moving_scale` (NeuronCore-v4):
    /// packed MX operands `[K, M]` and `[K, N]` contracting over `4·K` values.
    pub fn matmul_mx(
        &mut self,
        dst: &Tile,
        stationary: (&Tile, &Tile),
        moving: (&Tile, &Tile),
        accumulate: bool,
    ) {
        self.push(
            Engine::Tensor,
            Op::MatmulMx {
                dst: dst.clone(),
                stationary: stationary.0.clone(),
                moving: moving.0.clone(),
                stationary_scale: stationary.1.clone(),
                moving_scale: moving.1.clone(),
                accumulate,
            },
        );
    }

    /// `tensor_tensor dst, a, b op=op` on `engine`.
    pub fn tensor_tensor(&mut self, engine: Engine, dst: &Tile, a: &Tile, b: &Tile, op: AluOp) {
        self.push(
            engine,
            Op::TensorTensor { dst: dst.clone(), in0: a.clone(), in1: b.clone(), op },
        );
    }

    /// `tensor_scalar dst, src` on `engine` with one or two `(op, operand)` stages applied in
    /// order (none reversed).
    pub fn tensor_scalar(
        &mut self,
        engine: Engine,
        dst: &Tile,
        src: &Tile,
        stages: &[(AluOp, ScalarOperand)],
    ) {
        let stages = stages
            .iter()
            .map(|(op, operand)| ScalarStage { op: *op, operand: operand.clone(), reverse: false })
            .collect();
        self.push(engine, Op::TensorScalar { dst: dst.clone(), src: src.clone(), stages });
    }

    /// `activation dst, src func=func scale=scale [bias=..] [reduce=..]` on the Scalar engine.
    pub fn activation(
        &mut self,
        dst: &Tile,
        src: &Tile,
        func: ActFunc,
        scale: ScalarOperand,
        bias: Option<&Tile>,
        reduce: Option<&Tile>,
    ) {
        let op = Op::Activation {
            dst: dst.clone(),
            src: src.clone(),
            func,
            scale,
            bias: bias.cloned(),
            reduce: reduce.cloned(),
        };
        self.push(Engine::Scalar, op);
    }

    /// `tensor_copy dst, src` on `engine`.
    pub fn copy(&mut self, engine: Engine, dst: &Tile, src: &Tile) {
        self.push(engine, Op::TensorCopy { dst: dst.clone(), src: src.clone() });
    }

    /// Number of instructions so far.
    pub fn len(&self) -> usize {
        self.instructions.len()
    }

    /// Whether no instruction has been pushed.
    pub fn is_empty(&self) -> bool {
        self.instructions.is_empty()
    }

    /// The finished program with the source line of each instruction (for its messages and
    /// traces), verified against the chip's rules.
    pub fn into_program(self, lines: Vec<u32>) -> Result<Program, KernelError> {
        if self.instructions.len() > MAX_INSTRUCTIONS {
            return Err(KernelError::TooLarge { limit: MAX_INSTRUCTIONS });
        }
        let program = Program { tensors: self.tensors, instructions: self.instructions, lines };
        // Race-free by construction (the simulators check races before running).
        verify_rules(&program, &self.chip.core)?;
        Ok(program)
    }

    /// The finished program, verified against the chip's rules.
    pub fn finish(self) -> Result<Program, KernelError> {
        if self.instructions.len() > MAX_INSTRUCTIONS {
            return Err(KernelError::TooLarge { limit: MAX_INSTRUCTIONS });
        }
        let program =
            Program { tensors: self.tensors, instructions: self.instructions, lines: Vec::new() };
        verify_rules(&program, &self.chip.core)?;
        Ok(program)
    }
}
