//! The weight-gradient sweep: sums over every chunk, step and lane in a fixed
//! order, blocked like a matrix product (register tiles, L2-sized groups).

use super::plan::PARALLEL_MIN_LANE_MACS;
use crate::lstm::poison;
use crate::simd::vector::{load_lane, sum_regs, Reg, Vector};
use crate::simd::{array, dispatch, prefetch_part, IsaMarker, Lane, Real, LANES};
use crate::threads::{self, pool};

/// The steps the chunks run, each chunk's laid out T apart: "chunk-steps"
/// counted chunk after chunk, `total` in all, for the weight-gradient sweep.
#[derive(Clone, Copy)]
pub(crate) struct ChunkSteps<'a> {
    t_n: usize,
    steps: &'a [usize],
    pub(super) total: usize,
    /// Every chunk runs all T steps (then a chunk-step is q·T + t).
    full: bool,
}

impl<'a> ChunkSteps<'a> {
    pub(super) fn new(t_n: usize, steps: &'a [usize]) -> Self {
        ChunkSteps {
            t_n,
            steps,
            total: steps.iter().sum(),
            full: steps.iter().all(|&n| n == t_n),
        }
    }

    /// The chunk and step of chunk-step `i`.
    #[inline]
    fn locate(&self, mut i: usize) -> (usize, usize) {
        if self.full {
            return (i / self.t_n, i % self.t_n);
        }
        for (q, &n) in self.steps.iter().enumerate() {
            if i < n {
                return (q, i);
            }
            i -= n;
        }
        unreachable!("chunk-step past the last chunk's steps")
    }
}

/// out (G, K) = Σ over chunks q, steps t and lanes of dz[q][t][g] · v[q][t][k],
/// and `bias` (G) = Σ dz[q][t][g] when given. `dz` is (Q, G/4, T, 4); `v`
/// has chunk stride `v_qs` and step stride `v_ts`.
#[allow(clippy::too_many_arguments)]
pub(super) fn weight_grads<T: Real>(
    packs: &mut [Vec<Lane<T>>; 2],
    dz: &[Lane<T>],
    v: &[Lane<T>],
    v_qs: usize,
    v_ts: usize,
    out: &mut [T],
    bias: Option<&mut [T]>,
    cs: ChunkSteps<'_>,
    g_n: usize,
    k_n: usize,
) {
    debug_assert_eq!(out.len(), g_n * k_n);
    for pack in packs.iter_mut() {
        poison::fit(pack, STEP_BLOCK * k_n);
    }
    let [pack0, pack1] = packs;
    let parallel = threads::num_threads() > 1 && cs.total * g_n * k_n >= PARALLEL_MIN_LANE_MACS;
    if parallel {
        // Two halves of whole 4-row blocks; each output is summed the same way.
        let mid = (g_n / 8) * 4;
        let (top, bottom) = out.split_at_mut(mid * k_n);
        let (bias_top, bias_bottom) = match bias {
            Some(b) => {
                let (t, b) = b.split_at_mut(mid);
                (Some(t), Some(b))
            }
            None => (None, None),
        };
        pool::join(
            || weight_grads_rows(pack0, dz, v, v_qs, v_ts, top, bias_top, 0, cs, g_n, k_n),
            || weight_grads_rows(pack1, dz, v, v_qs, v_ts, bottom, bias_bottom, mid, cs, g_n, k_n),
        );
    } else {
        weight_grads_rows(pack0, dz, v, v_qs, v_ts, out, bias, 0, cs, g_n, k_n);
    }
}

dispatch!(fn weight_grads_rows<T: Real, S: IsaMarker>(
    pack_v: &mut [Lane<T>],
    dz: &[Lane<T>],
    v: &[Lane<T>],
    v_qs: usize,
    v_ts: usize,
    rows: &mut [T],
    bias: Option<&mut [T]>,
    g0: usize,
    cs: ChunkSteps<'_>,
    g_n: usize,
    k_n: usize,
) => weight_grads_rows_impl);

/// Gate rows g0.. of the weight gradient (`rows` holds a multiple of 4 rows),
/// and of the bias gradient when given (with each block's first tile).
///
/// Steps go in blocks; for each block the inputs `v` are copied column by
/// column into `pack_v`, so the tiles read contiguous memory (read in
/// place, rows a power-of-two stride apart all fall in the same L1 sets and
/// evict each other). `dz` is already laid out by 4-row blocks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weight_grads_rows_impl<T: Real, S: IsaMarker>(
    pack_v: &mut [Lane<T>],
    dz: &[Lane<T>],
    v: &[Lane<T>],
    v_qs: usize,
    v_ts: usize,
    rows: &mut [T],
    mut bias: Option<&mut [T]>,
    g0: usize,
    cs: ChunkSteps<'_>,
    g_n: usize,
    k_n: usize,
) {
    let s_n = cs.total;
    for s0 in (0..s_n).step_by(STEP_BLOCK) {
        let sb = STEP_BLOCK.min(s_n - s0);
        // pack_v[k·sb + s] = v at step s0 + s, feature k.
        for s in 0..sb {
            let (q, t) = cs.locate(s0 + s);
            let row = &v[q * v_qs + t * v_ts..][..k_n];
            for (k, &lane) in row.iter().enumerate() {
                pack_v[k * sb + s] = lane;
            }
        }
        // Blocked like a matrix product, so both operands come from L2:
        // row blocks in groups whose dz (read from memory once per step
        // block) stays in L2 while every column group passes over it, and
        // columns in groups whose packed inputs stay in L2 while the row
        // blocks of a group pass over them. (Unblocked, the 2 MB pack of
        // H = 512 came from L3 once per row block; with column groups
        // alone, dz, 52 MB, came from memory once per column group.)
        let lane_bytes = std::mem::size_of::<Lane<T>>();
        let group = (PACK_L2_BYTES / (sb * lane_bytes)).max(4) / 4 * 4;
        let row_group = (DZ_L2_BYTES / (4 * sb * lane_bytes)).max(1);
        for (rg, row_blocks) in rows.chunks_mut(row_group * 4 * k_n).enumerate() {
            for k_first in (0..k_n).step_by(group) {
                let k_end = (k_first + group).min(k_n);
                for (blk, block) in row_blocks.chunks_exact_mut(4 * k_n).enumerate() {
                    let tile = Tile {
                        dz,
                        block: g0 / 4 + rg * row_group + blk,
                        g_n,
                        cs,
                        s0,
                        sb,
                        v: &pack_v[..k_n * sb],
                        first: s0 == 0,
                    };
                    if let (Some(bias), 0) = (bias.as_deref_mut(), k_first) {
                        let row0 = (rg * row_group + blk) * 4;
                        bias_block::<T, S>(&tile, &mut bias[row0..row0 + 4]);
                    }
                    let mut k0 = k_first;
                    // Larger than L2, the next row block's dz comes from
                    // memory on the first column group: fetch it while this
                    // block's tiles run, a part per tile (H128 f64 backward
                    // 24.6 -> 23.8 ms; at the seed's size it only cost).
                    let next = Tile {
                        block: tile.block + 1,
                        ..tile
                    };
                    let prefetch = k_first == 0 && next.block < g_n / 4 && std::mem::size_of_val(dz) > L2_BYTES;
                    let tiles = (k_end - k_first).div_ceil(4);
                    while k0 < k_end {
                        if prefetch {
                            for (_, dz) in next.runs() {
                                prefetch_part(dz, (k0 - k_first) / 4, tiles);
                            }
                        }
                        // 4 x 4 tiles, accumulators one register wide: 16
                        // of them. With 16 registers and FMA (AVX2), 4 x 3:
                        // 12 accumulators, 3 columns and one dz register,
                        // 19 instructions and 7 loads for 12 FMAs where 4 x 2
                        // took 14 and 6 for 8 (the sweep's instructions at
                        // H128 f64: 12% fewer); without FMA a product needs a
                        // register of its own, so 4 x 2. A remainder of 2 to
                        // 4 columns as 4 x 2 (the seed's 10 = 3 + 3 + 2 + 2):
                        // half the dz loads of two 4 x 1.
                        let n = match k_end - k0 {
                            4.. if S::REGISTERS >= 32 => 4,
                            5.. if S::FMA => 3,
                            3 if S::FMA => 3,
                            2.. => 2,
                            _ => 1,
                        };
                        match n {
                            4 => outer_block::<T, S, 4>(&tile, block, k0, k_n),
                            3 => outer_block::<T, S, 3>(&tile, block, k0, k_n),
                            2 => outer_block::<T, S, 2>(&tile, block, k0, k_n),
                            _ => outer_block::<T, S, 1>(&tile, block, k0, k_n),
                        }
                        k0 += n;
                    }
                }
            }
        }
    }
}

/// Bytes of packed inputs one column group of the weight-gradient sweep
/// may span, and of dz one row group may span: together most of a 1 MB L2.
const PACK_L2_BYTES: usize = 384 * 1024;
const DZ_L2_BYTES: usize = 256 * 1024;
/// The L2 size these are cut from; a larger dz comes from memory.
const L2_BYTES: usize = 1024 * 1024;

/// One step block (chunk-steps s0..s0+sb) of the weight-gradient sweep for
/// the 4-row block `block`: `dz` (Q, G/4, T, 4) is read in place, one run
/// of contiguous steps per chunk; `v` (K, sb) lanes is the packed input.
struct Tile<'a, T> {
    dz: &'a [Lane<T>],
    block: usize,
    g_n: usize,
    cs: ChunkSteps<'a>,
    s0: usize,
    sb: usize,
    v: &'a [Lane<T>],
    /// The first block overwrites the output; later ones add to it.
    first: bool,
}

impl<'a, T> Tile<'a, T> {
    /// The tile's chunk-steps as runs of contiguous steps within one chunk:
    /// (the run's first step, counted from s0; its dz, 4 lanes a step).
    fn runs(&self) -> impl Iterator<Item = (usize, &'a [Lane<T>])> + '_ {
        let (mut s, end) = (self.s0, self.s0 + self.sb);
        std::iter::from_fn(move || {
            if s >= end {
                return None;
            }
            let (q, t) = self.cs.locate(s);
            let t_n = self.cs.t_n;
            let run = (self.cs.steps[q] - t).min(end - s);
            let dz = &self.dz[q * self.g_n * t_n + (self.block * t_n + t) * 4..][..4 * run];
            let first = s - self.s0;
            s += run;
            Some((first, dz))
        })
    }
}

/// Chunk-steps (each LANES batch rows at one step) per block of the weight
/// gradient sweep.
const STEP_BLOCK: usize = 64;

/// The 4 rows' sums of dz over the tile's steps (the bias gradient), into
/// `bias`: overwritten by the first step block, added to by later ones. The
/// block's dz was just read by its first tile, so it comes from L1.
#[inline(always)]
fn bias_block<T: Real, S: IsaMarker>(tile: &Tile<'_, T>, bias: &mut [T]) {
    let mut sums = [Reg::<T, S>::splat_regs(T::ZERO); 4];
    for (_, dz) in tile.runs() {
        for a in dz.chunks_exact(4) {
            for (sum, a) in sums.iter_mut().zip(a) {
                let a = load_lane::<T, Reg<T, S>>(a);
                for (s, a) in sum.as_mut().iter_mut().zip(a.as_ref()) {
                    *s = s.add(*a);
                }
            }
        }
    }
    for (out, sum) in bias.iter_mut().zip(sums) {
        let sum = sum_regs::<T, Reg<T, S>>(sum);
        *out = if tile.first { sum } else { *out + sum };
    }
}

/// A 4 x N block of the weight gradient, accumulated in registers, then
/// summed across the register once.
///
/// Each accumulator is one register, and takes every register of a lane
/// vector in turn (a lane of f32 is two AVX2 registers, of f64 four): 4 x 4
/// tiles (16 accumulators, 5 operands) fit 32 registers, 4 x 3 (12 and 4)
/// fit 16.
#[inline(always)]
fn outer_block<T: Real, S: IsaMarker, const N: usize>(tile: &Tile<'_, T>, rows: &mut [T], k0: usize, k_n: usize) {
    type V<T, S> = Reg<T, S>;
    let sb = tile.sb;
    let width = V::<T, S>::WIDTH;
    let columns: [&[Lane<T>]; N] = array(|m| &tile.v[(k0 + m) * sb..][..sb]);
    let mut acc = [[V::<T, S>::splat(T::ZERO); N]; 4];
    // One run of steps per chunk the block spans.
    for (first, dz) in tile.runs() {
        let cols: [&[Lane<T>]; N] = array(|m| &columns[m][first..][..dz.len() / 4]);
        for (i, a) in dz.chunks_exact(4).enumerate() {
            for from in (0..LANES).step_by(width) {
                // The N column registers, then one dz register at a time:
                // N + 1 operands (4 + 1 held all four dz registers, and
                // 4 x 3 spilled its accumulators).
                let b: [V<T, S>; N] = array(|m| V::<T, S>::load(&cols[m][i].0[from..]));
                for (acc, a) in acc.iter_mut().zip(a) {
                    let a = V::<T, S>::load(&a.0[from..]);
                    for (acc, b) in acc.iter_mut().zip(&b) {
                        *acc = a.mul_add(*b, *acc);
                    }
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        for (m, a) in acc.iter().enumerate() {
            let sum = a.sum();
            let out = &mut rows[j * k_n + k0 + m];
            *out = if tile.first { sum } else { *out + sum };
        }
    }
}
