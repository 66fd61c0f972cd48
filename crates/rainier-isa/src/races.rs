//! Race detection: two instructions on different engines (or a DMA and anything) that touch
//! overlapping bytes, at least one writing, with no semaphore ordering them, would give results
//! that depend on timing. The verifier reports every such pair with both instructions' lines.
//!
//! Ordering ("happens before") comes from three facts of the machine model:
//! - an engine's compute instructions complete in program order (in-order pipelines), so a later
//!   compute instruction on the same engine sees an earlier one's results;
//! - an instruction starts only after its waits hold, and an engine runs its queue in order, so
//!   it knows everything its earlier waits told it;
//! - `S[s] >= v` tells that the first `v` signals of `s` have completed, when `s` is a *chain*:
//!   every signal of it (after the first) comes from an instruction that starts only after the
//!   previous signal's instruction is known complete. Then completions of `s` form a prefix of
//!   its signals at any time. A semaphore that is not a chain tells only its own count.
//!
//! DMAs complete asynchronously: one is known complete only through a chain semaphore it
//! signals. The analysis follows one valid schedule of the program (engines run as their waits
//! allow), carrying each engine's knowledge as a vector (semaphore values reached, compute
//! instructions completed per engine); chains are found as a least fixed point (each pass may
//! only add chains, as more knowledge is derived from the chains already found).

use std::collections::HashMap;

use crate::{pattern_extent, Access, DmaOperand, Memory, Op, Program, Tile, Violation};

/// Most races reported (the rest are counted).
const MAX_REPORTED: usize = 64;
/// Bytes per page of the region index (per partition on chip; of the tensor in HBM).
const PAGE: i128 = 512;
const HBM_PAGE: i128 = 1 << 20;
/// An HBM record spanning more pages than this goes on its tensor's list of wide records
/// instead (scanned by every access there), so sparse accesses over huge tensors cost no more
/// memory than others.
const MAX_PAGES: i128 = 64;

/// Where an access lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Space {
    Sbuf,
    Psum,
    Hbm(usize),
}

/// Bytes `b0..b1` of partitions `p0..p1` (on chip), or of an HBM tensor (`p0..p1` = 0..1),
/// narrowed to a rectangle of rows when an HBM pattern is one.
#[derive(Debug, Clone, Copy)]
struct Region {
    space: Space,
    p0: u32,
    p1: u32,
    b0: i128,
    b1: i128,
    /// HBM rows `r0..r1` of `stride` bytes, bytes `c0..c1` of each.
    rect: Option<Rect>,
    /// Every byte of the bounds (or of the rectangle) is accessed.
    exact: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    stride: i128,
    r0: i128,
    r1: i128,
    c0: i128,
    c1: i128,
}

impl Region {
    fn of_tile(t: &Tile) -> Self {
        let (b0, b1) = t.byte_range();
        let space = if t.memory == Memory::Psum { Space::Psum } else { Space::Sbuf };
        let exact = i128::from(t.free_len()) * t.dtype.size_bytes() as i128 == b1 - b0;
        let (p0, p1) = (t.start_partition, t.start_partition + t.partitions);
        Region { space, p0, p1, b0, b1, rect: None, exact }
    }

    fn of_hbm(tensor: usize, h: &crate::HbmAccess, esz: i128) -> Self {
        let (lo, hi) = pattern_extent(&h.dims);
        let base = i128::from(h.offset);
        let (b0, b1) = ((base + i128::from(lo)) * esz, (base + i128::from(hi) + 1) * esz);
        let len = i128::from(crate::pattern_len(&h.dims));
        let mut region = Region {
            space: Space::Hbm(tensor),
            p0: 0,
            p1: 1,
            b0,
            b1,
            rect: None,
            exact: len * esz == b1 - b0,
        };
        // [rows of stride s, inner pattern within a row]: a rectangle.
        if let [outer, inner @ ..] = h.dims.as_slice() {
            let (ilo, ihi) = pattern_extent(inner);
            let s = i128::from(outer.stride);
            let (r0, c0) = (base.div_euclid(s.max(1)), base.rem_euclid(s.max(1)));
            if s > 0 && !inner.is_empty() && ilo >= 0 && c0 + i128::from(ihi) < s {
                let inner_len = i128::from(crate::pattern_len(inner));
                region.rect = Some(Rect {
                    stride: s * esz,
                    r0,
                    r1: r0 + i128::from(outer.size),
                    c0: (c0 + i128::from(ilo)) * esz,
                    c1: (c0 + i128::from(ihi) + 1) * esz,
                });
                region.exact = inner_len == i128::from(ihi - ilo + 1);
            }
        }
        region
    }

    fn overlaps(&self, o: &Region) -> bool {
        let bounds = self.space == o.space
            && self.p0 < o.p1
            && o.p0 < self.p1
            && self.b0 < o.b1
            && o.b0 < self.b1;
        match (self.rect, o.rect) {
            (Some(a), Some(b)) if bounds && a.stride == b.stride => {
                a.r0 < b.r1 && b.r0 < a.r1 && a.c0 < b.c1 && b.c0 < a.c1
            }
            _ => bounds,
        }
    }

    /// Whether every byte `o` may touch is one this region accesses.
    fn covers(&self, o: &Region) -> bool {
        if self.space != o.space || !self.exact {
            return false;
        }
        match (self.rect, o.rect) {
            (Some(a), Some(b)) => {
                a.stride == b.stride && a.r0 <= b.r0 && b.r1 <= a.r1 && a.c0 <= b.c0 && b.c1 <= a.c1
            }
            (Some(_), None) => false,
            _ => self.p0 <= o.p0 && o.p1 <= self.p1 && self.b0 <= o.b0 && o.b1 <= self.b1,
        }
    }

    fn describe(&self) -> String {
        match self.space {
            Space::Hbm(t) => format!("HBM tensor #{t} bytes {}..{}", self.b0, self.b1),
            s => format!(
                "{} partitions {}..{} bytes {}..{}",
                if s == Space::Psum { "PSUM" } else { "SBUF" },
                self.p0,
                self.p1,
                self.b0,
                self.b1
            ),
        }
    }
}

/// How an instruction is known to have completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// The `pos`-th compute instruction of engine `engine`.
    Compute { engine: usize, pos: u32 },
    /// A DMA, through the `nth` signal of semaphore `sem` (None: it signals nothing).
    Dma(Option<(u32, u32)>),
}

#[derive(Debug, Clone, Copy)]
struct Record {
    region: Region,
    write: bool,
    done: Done,
    instruction: usize,
}

/// Accesses still relevant, indexed by page. Page lists hold (slot, generation): a slot
/// freed and reused has a new generation, so stale entries drop out as lists are scanned.
#[derive(Default)]
struct Records {
    slab: Vec<Option<Record>>,
    generation: Vec<u32>,
    free: Vec<usize>,
    /// On-chip pages by index (SBUF, PSUM), HBM pages by (tensor, page).
    sbuf: Vec<PageList>,
    psum: Vec<PageList>,
    hbm: HashMap<(usize, i128), PageList>,
    /// Records wider than [`MAX_PAGES`] pages, per space.
    wide: HashMap<Space, PageList>,
}

type PageList = Vec<(usize, u32)>;

impl Records {
    fn page_keys(r: &Region) -> std::ops::RangeInclusive<i128> {
        let page = if matches!(r.space, Space::Hbm(_)) { HBM_PAGE } else { PAGE };
        r.b0.div_euclid(page)..=(r.b1 - 1).max(r.b0).div_euclid(page)
    }

    /// The list of page `p` of `space` (created when `create`).
    fn page(&mut self, space: Space, p: i128, create: bool) -> Option<&mut PageList> {
        let on_chip = |v: &mut Vec<PageList>| -> Option<usize> {
            let i = usize::try_from(p).ok()?;
            if i >= v.len() {
                if !create {
                    return None;
                }
                v.resize_with(i + 1, Vec::new);
            }
            Some(i)
        };
        match space {
            Space::Sbuf => on_chip(&mut self.sbuf).map(|i| &mut self.sbuf[i]),
            Space::Psum => on_chip(&mut self.psum).map(|i| &mut self.psum[i]),
            Space::Hbm(t) if create => Some(self.hbm.entry((t, p)).or_default()),
            Space::Hbm(t) => self.hbm.get_mut(&(t, p)),
        }
    }

    fn remove(&mut self, id: usize) {
        if self.slab[id].take().is_some() {
            self.generation[id] += 1;
            self.free.push(id);
        }
    }

    /// Ids of live records overlapping `r` (each once).
    fn overlapping(&mut self, r: &Region, ids: &mut Vec<usize>) {
        ids.clear();
        if let Some(list) = self.wide.get_mut(&r.space) {
            list.retain(|&(id, g)| self.generation[id] == g);
            ids.extend(
                list.iter()
                    .map(|&(id, _)| id)
                    .filter(|&id| self.slab[id].as_ref().is_some_and(|rec| rec.region.overlaps(r))),
            );
        }
        let pages = Self::page_keys(r);
        // A wide HBM access scans the live records instead of every page it spans.
        if Self::is_wide(r) {
            self.scan_all(r, ids);
            ids.sort_unstable();
            ids.dedup();
            return;
        }
        for p in pages {
            let Some(v) = self.page(r.space, p, false) else { continue };
            let mut list = std::mem::take(v);
            list.retain(|&(id, g)| self.generation[id] == g);
            ids.extend(
                list.iter()
                    .map(|&(id, _)| id)
                    .filter(|&id| self.slab[id].as_ref().is_some_and(|rec| rec.region.overlaps(r))),
            );
            if let Some(v) = self.page(r.space, p, false) {
                *v = list;
            }
        }
        ids.sort_unstable();
        ids.dedup();
    }

    /// An HBM region over more than [`MAX_PAGES`] pages (on-chip memories have few pages).
    fn is_wide(r: &Region) -> bool {
        let pages = Self::page_keys(r);
        matches!(r.space, Space::Hbm(_)) && pages.end() - pages.start() >= MAX_PAGES
    }

    /// Every live record overlapping `r`, from the slab.
    fn scan_all(&self, r: &Region, ids: &mut Vec<usize>) {
        ids.extend(
            self.slab.iter().enumerate().filter_map(|(id, rec)| {
                rec.as_ref().filter(|rec| rec.region.overlaps(r)).map(|_| id)
            }),
        );
    }

    fn insert(&mut self, rec: Record) {
        let id = self.free.pop().unwrap_or_else(|| {
            self.slab.push(None);
            self.generation.push(0);
            self.slab.len() - 1
        });
        let g = self.generation[id];
        let pages = Self::page_keys(&rec.region);
        if Self::is_wide(&rec.region) {
            self.wide.entry(rec.region.space).or_default().push((id, g));
            self.slab[id] = Some(rec);
            return;
        }
        for p in pages {
            if let Some(v) = self.page(rec.region.space, p, true) {
                v.push((id, g));
            }
        }
        self.slab[id] = Some(rec);
    }
}

/// Per-engine knowledge: semaphore values known reached, then compute instructions known
/// complete per engine.
type Knowledge = Vec<u32>;

/// The knowledge at the signal that brought a semaphore to a value some instruction waits
/// for, kept until the last such wait.
struct Snapshots<'a> {
    /// Per semaphore: the values waited for, ascending, with how many waits.
    wanted: &'a [Vec<(u32, u32)>],
    /// Per semaphore: the next entry of `wanted` a signal may reach.
    cursor: Vec<usize>,
    /// Per semaphore: (value, waits left, knowledge).
    kept: Vec<Vec<(u32, u32, Knowledge)>>,
}

impl<'a> Snapshots<'a> {
    fn new(wanted: &'a [Vec<(u32, u32)>]) -> Self {
        Snapshots { wanted, cursor: vec![0; wanted.len()], kept: vec![Vec::new(); wanted.len()] }
    }

    /// How many waits want the knowledge at signal number `n` of `s` (signals come in order).
    fn wanted(&mut self, s: usize, n: u32) -> u32 {
        let w = &self.wanted[s];
        let c = &mut self.cursor[s];
        while w.get(*c).is_some_and(|&(v, _)| v < n) {
            *c += 1;
        }
        w.get(*c).filter(|&&(v, _)| v == n).map_or(0, |&(_, waits)| waits)
    }

    /// A wait for `s >= v` passed: joins the snapshot into `k` when `join`.
    fn wait(&mut self, s: usize, v: u32, join: bool, k: &mut Knowledge) {
        let kept = &mut self.kept[s];
        let Some(at) = kept.iter().rposition(|e| e.0 == v) else { return };
        if join {
            k.iter_mut().zip(&kept[at].2).for_each(|(a, b)| *a = (*a).max(*b));
        }
        kept[at].1 -= 1;
        if kept[at].1 == 0 {
            kept.swap_remove(at);
        }
    }
}

struct Pass<'a> {
    program: &'a Program,
    nsem: usize,
    /// Semaphores known to be chains (from the previous pass).
    chain: &'a [bool],
    /// Compute position of each instruction on its engine.
    pos: &'a [u32],
    /// HBM tensors some instruction writes (reads of the others cannot conflict).
    hbm_written: &'a [bool],
    /// Per semaphore: the values waited for, ascending, with how many waits.
    wanted: &'a [Vec<(u32, u32)>],
    /// Per semaphore: how many instructions signal it.
    signals: &'a [u32],
    check: bool,
}

struct PassResult {
    chain: Vec<bool>,
    races: Vec<Violation>,
    unreported: usize,
}

fn regions(program: &Program, op: &Op) -> Vec<(Region, bool)> {
    let mut v: Vec<(Region, bool)> = Vec::with_capacity(4);
    op.for_each_tile(|t, a| v.push((Region::of_tile(t), a != Access::Read)));
    if let Some((dst, src)) = op.dma_operands() {
        let indexed = matches!(op, Op::DmaIndirect { .. });
        for (o, write) in [(src, false), (dst, true)] {
            let DmaOperand::Hbm(h) = o else { continue };
            let Some(decl) = program.tensors.get(h.tensor) else { continue };
            let esz = decl.dtype.size_bytes() as i128;
            let region = if indexed {
                // The rows are data: the whole tensor, touched sparsely.
                let b1 = i128::from(decl.len().max(1)) * esz;
                let space = Space::Hbm(h.tensor);
                Region { space, p0: 0, p1: 1, b0: 0, b1, rect: None, exact: false }
            } else {
                Region::of_hbm(h.tensor, h, esz)
            };
            v.push((region, write));
        }
    }
    v
}

impl Pass<'_> {
    fn known(&self, k: &Knowledge, done: Done, engine: usize, is_dma: bool, pos: u32) -> bool {
        match done {
            Done::Compute { engine: e, pos: p } => {
                (e == engine && !is_dma && p < pos) || k[self.nsem + e] > p
            }
            // All of a semaphore's signals are done once it reaches their number.
            Done::Dma(Some((s, n))) => {
                let s = s as usize;
                k[s] >= n && (self.chain[s] || k[s] >= self.signals[s])
            }
            Done::Dma(None) => false,
        }
    }

    fn run(&self) -> PassResult {
        let program = self.program;
        let nsem = self.nsem;
        let streams = program.streams();
        let mut snapshots = Snapshots::new(self.wanted);
        // Without chains no snapshot is ever joined: none are kept.
        let keep = self.chain.iter().any(|&c| c);
        let mut know: Vec<Knowledge> = vec![vec![0; nsem + 5]; 5];
        let mut count = vec![0u32; nsem];
        let mut last: Vec<Option<Done>> = vec![None; nsem];
        let mut chain = vec![true; nsem];
        let mut heads = [0usize; 5];
        let mut records = Records::default();
        let mut races = Vec::new();
        let mut unreported = 0usize;
        // Engines ready to run, in order; a blocked engine waits on one (semaphore, value) and
        // is woken when a signal reaches it.
        let mut ready: std::collections::VecDeque<usize> = (0..5).collect();
        let mut blocked: Vec<Option<(usize, u32)>> = vec![None; 5];
        while let Some(e) = ready.pop_front() {
            {
                while let Some(&i) = streams[e].get(heads[e]) {
                    let ins = &program.instructions[i];
                    if let Some(w) =
                        ins.waits.iter().find(|w| count[w.semaphore as usize] < w.value)
                    {
                        blocked[e] = Some((w.semaphore as usize, w.value));
                        break;
                    }
                    let k = &mut know[e];
                    for w in &ins.waits {
                        let s = w.semaphore as usize;
                        k[s] = k[s].max(w.value);
                        snapshots.wait(s, w.value, self.chain[s], k);
                    }
                    let is_dma = ins.op.is_dma();
                    let pos = self.pos[i];
                    if self.check {
                        let k = &know[e];
                        let mut reported: Vec<usize> = Vec::new();
                        let mut ids = Vec::new();
                        for (region, write) in regions(program, &ins.op) {
                            if let Space::Hbm(t) = region.space {
                                if !write && !self.hbm_written.get(t).copied().unwrap_or(true) {
                                    continue;
                                }
                            }
                            records.overlapping(&region, &mut ids);
                            for &id in &ids {
                                let Some(rec) = records.slab[id] else { continue };
                                let conflict = (write || rec.write) && rec.instruction != i;
                                if conflict
                                    && !self.known(k, rec.done, e, is_dma, pos)
                                    && !reported.contains(&rec.instruction)
                                {
                                    reported.push(rec.instruction);
                                    if races.len() < MAX_REPORTED {
                                        races.push(race(program, i, &rec, &region, write));
                                    } else {
                                        unreported += 1;
                                    }
                                }
                                // A write hides what it covers: a later access ordered after
                                // it is ordered after them. A compute engine's read hides its
                                // own older reads of the same bytes.
                                let own_read = !rec.write
                                    && !is_dma
                                    && matches!(rec.done, Done::Compute { engine, .. } if engine == e);
                                if region.covers(&rec.region) && (write || own_read) {
                                    records.remove(id);
                                }
                            }
                            let done = if is_dma {
                                Done::Dma(ins.signals.first().map(|&s| (s, count[s as usize] + 1)))
                            } else {
                                Done::Compute { engine: e, pos }
                            };
                            records.insert(Record { region, write, done, instruction: i });
                        }
                    }
                    let done_self =
                        if is_dma { None } else { Some(Done::Compute { engine: e, pos }) };
                    let mut keep_at: Vec<(usize, u32, u32)> = Vec::new();
                    for &s in &ins.signals {
                        let su = s as usize;
                        count[su] += 1;
                        let n = count[su];
                        if let Some(prev) = last[su] {
                            let ordered = match (prev, done_self) {
                                (Done::Compute { engine: pe, pos: pp }, Some(_)) if pe == e => {
                                    pp < pos
                                }
                                (Done::Compute { engine: pe, pos: pp }, _) => {
                                    know[e][nsem + pe] > pp
                                }
                                (Done::Dma(_), _) => know[e][su] >= n - 1,
                            };
                            chain[su] &= ordered;
                        }
                        last[su] = Some(done_self.unwrap_or(Done::Dma(Some((s, n)))));
                        for (o, b) in blocked.iter_mut().enumerate() {
                            if b.is_some_and(|(bs, bv)| bs == su && bv <= n) {
                                *b = None;
                                ready.push_back(o);
                            }
                        }
                        let waits = if keep { snapshots.wanted(su, n) } else { 0 };
                        if waits > 0 {
                            keep_at.push((su, n, waits));
                        }
                    }
                    if !keep_at.is_empty() {
                        // What is known once it completes: the engine's knowledge, its own
                        // completion (compute: the engine's later compute instructions know it
                        // by program order, its DMAs do not) and its signals.
                        let mut done_k = know[e].clone();
                        if !is_dma {
                            done_k[nsem + e] = pos + 1;
                        }
                        // Its signals: a chain's count is this instruction's number; another
                        // semaphore's count may include signals not ordered before it.
                        for &s in ins.signals.iter().filter(|&&s| self.chain[s as usize]) {
                            done_k[s as usize] = done_k[s as usize].max(count[s as usize]);
                        }
                        for (su, n, waits) in keep_at {
                            snapshots.kept[su].push((n, waits, done_k.clone()));
                        }
                    }
                    heads[e] += 1;
                }
            }
        }
        PassResult { chain, races, unreported }
    }
}

fn race(program: &Program, at: usize, earlier: &Record, region: &Region, write: bool) -> Violation {
    let other = &program.instructions[earlier.instruction];
    let (it, this) = match (earlier.write, write) {
        (true, true) => ("writes", "this writes too"),
        (true, false) => ("writes", "which this reads"),
        _ => ("reads", "which this writes"),
    };
    let overlap = Region {
        p0: region.p0.max(earlier.region.p0),
        p1: region.p1.min(earlier.region.p1),
        b0: region.b0.max(earlier.region.b0),
        b1: region.b1.min(earlier.region.b1),
        ..*region
    };
    Violation {
        index: at,
        line: program.line_of(at),
        opcode: program.instructions[at].op.name(),
        message: format!(
            "data race with line {} (instruction #{} {} on {}): it {it} {}, {this}, and no semaphore orders the two",
            program.line_of(earlier.instruction),
            earlier.instruction,
            other.op.name(),
            other.engine,
            overlap.describe()
        ),
    }
}

/// Every pair of conflicting accesses no semaphore orders, reported at the later instruction
/// of one valid schedule (at most [`MAX_REPORTED`], then a count). Programs that deadlock are
/// analysed up to where they stop (the simulators report the deadlock).
pub(crate) fn races(program: &Program) -> Vec<Violation> {
    let nsem = program
        .instructions
        .iter()
        .flat_map(|i| i.waits.iter().map(|w| w.semaphore).chain(i.signals.iter().copied()))
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut next = [0u32; 5];
    let pos: Vec<u32> = program
        .instructions
        .iter()
        .map(|ins| {
            let e = ins.engine.index();
            let p = next[e];
            if !ins.op.is_dma() {
                next[e] += 1;
            }
            p
        })
        .collect();
    let mut hbm_written = vec![false; program.tensors.len()];
    for ins in &program.instructions {
        if let Some((DmaOperand::Hbm(h), _)) = ins.op.dma_operands() {
            if let Some(w) = hbm_written.get_mut(h.tensor) {
                *w = true;
            }
        }
    }
    let hbm_written = &hbm_written;
    let mut wanted: Vec<Vec<(u32, u32)>> = vec![Vec::new(); nsem];
    for w in program.instructions.iter().flat_map(|i| &i.waits) {
        wanted[w.semaphore as usize].push((w.value, 1));
    }
    for v in &mut wanted {
        v.sort_unstable();
        v.dedup_by(|a, b| {
            let same = a.0 == b.0;
            if same {
                b.1 += a.1;
            }
            same
        });
    }
    let wanted = &wanted;
    let mut signals = vec![0u32; nsem];
    for &s in program.instructions.iter().flat_map(|i| &i.signals) {
        signals[s as usize] += 1;
    }
    let signals = &signals;
    // Least fixed point: pass 1 knows only direct waits; each later pass uses the chains found
    // so far, and may find more. The pass whose chains equal its input's is the answer.
    let mut chain = vec![false; nsem];
    let mut check = false;
    let result = loop {
        let pass =
            Pass { program, nsem, chain: &chain, pos: &pos, hbm_written, wanted, signals, check };
        let result = pass.run();
        // Monotone: a chain stays one as knowledge grows.
        let found: Vec<bool> = result.chain.iter().zip(&chain).map(|(a, b)| *a || *b).collect();
        if found == chain && check {
            break result;
        }
        // Check from the second pass on: it is final unless it finds more chains.
        check = true;
        chain = found;
    };
    let mut v = result.races;
    if result.unreported > 0 {
        if let Some(last) = v.last().cloned() {
            v.push(Violation {
                message: format!("and {} more data races", result.unreported),
                ..last
            });
        }
    }
    v
}
