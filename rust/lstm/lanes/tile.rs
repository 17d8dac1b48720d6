//! The register tiles of the projections: blocks of rows ([`tile_blocks`]),
//! a tile's width as a constant (`with_width!`), and lane dot products.

use crate::simd::vector::{load_lane, tile_lanes, Reg, Vector};
use crate::simd::{array, IsaMarker, Lane, Real};

/// The blocks `first..end` of rows (gate rows in the projection, columns
/// in the back-projection) a register tile takes at once, as (start,
/// width): equal widths of at most [`tile_lanes`] (so a tile keeps enough
/// multiply-add chains in flight: a lone last column doubled the seed's
/// backward step).
#[inline(always)]
pub(super) fn tile_blocks<T: Real, S: IsaMarker>(first: usize, end: usize) -> impl Iterator<Item = (usize, usize)> {
    let blocks = (end - first).div_ceil(tile_lanes::<T, S>());
    (0..blocks).scan(first, move |k0, b| {
        let width = (end - *k0) / (blocks - b);
        let block = (*k0, width);
        *k0 += width;
        Some(block)
    })
}

/// Calls `$body` with `$n` (1 to 16, at most `tile_lanes`) as the const
/// generic `$N`: a tile's width is a constant inside it, so its
/// accumulators are registers. Widths above the instance's `$max` are
/// never asked for, and the compiler drops their arms.
macro_rules! with_width {
    ($n:expr, $max:expr, |$N:ident| $body:expr) => {
        match $n {
            16 if $max >= 16 => {
                const $N: usize = 16;
                $body
            }
            15 if $max >= 15 => {
                const $N: usize = 15;
                $body
            }
            14 if $max >= 14 => {
                const $N: usize = 14;
                $body
            }
            13 if $max >= 13 => {
                const $N: usize = 13;
                $body
            }
            12 if $max >= 12 => {
                const $N: usize = 12;
                $body
            }
            11 if $max >= 11 => {
                const $N: usize = 11;
                $body
            }
            10 if $max >= 10 => {
                const $N: usize = 10;
                $body
            }
            9 if $max >= 9 => {
                const $N: usize = 9;
                $body
            }
            8 if $max >= 8 => {
                const $N: usize = 8;
                $body
            }
            7 if $max >= 7 => {
                const $N: usize = 7;
                $body
            }
            6 if $max >= 6 => {
                const $N: usize = 6;
                $body
            }
            5 if $max >= 5 => {
                const $N: usize = 5;
                $body
            }
            4 if $max >= 4 => {
                const $N: usize = 4;
                $body
            }
            3 if $max >= 3 => {
                const $N: usize = 3;
                $body
            }
            2 if $max >= 2 => {
                const $N: usize = 2;
                $body
            }
            1 => {
                const $N: usize = 1;
                $body
            }
            n => unreachable!("a tile of {n} lanes"),
        }
    };
}
pub(super) use with_width;

/// N lane vectors of sums `init[j] + Σ_i panel[i·N + j] · v_i` (lane-wise),
/// over the lane vectors v_i of `runs` in order, as registers: each v_i is
/// loaded once and each weight broadcast once, for its N rows.
///
/// `N · regs_per_lane` accumulators ([`tile_lanes`]) and one lane of
/// operands fit the registers, so nothing spills.
#[inline(always)]
pub(super) fn dot_tile<'a, T: Real + 'a, S: IsaMarker, const N: usize>(
    init: Option<&[T]>,
    panel: &[T],
    runs: impl Iterator<Item = &'a [Lane<T>]>,
) -> [<Reg<T, S> as Vector<T>>::Regs; N] {
    let mut acc = array(|j| Reg::<T, S>::splat_regs(init.map_or(T::ZERO, |b| b[j])));
    let (mut weights, _) = panel.as_chunks::<N>();
    for run in runs {
        // Each run's weights as a slice of its own length: a zip of two
        // slices has one trip count, where one with the shared iterator
        // had a second exit mid-loop, and LLVM then shuffled and spilled
        // the accumulators every iteration (44 instructions for 12 FMAs).
        let (w_run, rest) = weights.split_at(run.len().min(weights.len()));
        weights = rest;
        let run = &run[..w_run.len()];
        // Two lane vectors per trip, in order (the same sums): LLVM left
        // the loop over h rolled, 19 instructions for 8 f64 FMAs.
        let (pairs, tail) = run.as_chunks::<2>();
        let (w_pairs, w_tail) = w_run.as_chunks::<2>();
        for (v, w) in pairs.iter().zip(w_pairs) {
            mul_add_lane::<T, S, N>(&mut acc, &v[0], &w[0]);
            mul_add_lane::<T, S, N>(&mut acc, &v[1], &w[1]);
        }
        for (v, w) in tail.iter().zip(w_tail) {
            mul_add_lane::<T, S, N>(&mut acc, v, w);
        }
    }
    acc
}

/// [`dot_tile`] without `init`, over lane vectors in blocks of four (dz_t,
/// read by 4-row blocks): a block's four steps unrolled. As runs of four,
/// each block's bookkeeping (slicing, trip counts, an exit after each
/// vector) took a third of the back-projection's instructions.
#[inline(always)]
pub(super) fn dot_tile_blocks<'a, T: Real + 'a, S: IsaMarker, const N: usize>(
    panel: &[T],
    blocks: impl Iterator<Item = &'a [Lane<T>; 4]>,
) -> [<Reg<T, S> as Vector<T>>::Regs; N] {
    let mut acc = array(|_| Reg::<T, S>::splat_regs(T::ZERO));
    let (weights, _) = panel.as_chunks::<N>();
    let (weights, _) = weights.as_chunks::<4>();
    for (v, w) in blocks.zip(weights) {
        for (v, w) in v.iter().zip(w) {
            mul_add_lane::<T, S, N>(&mut acc, v, w);
        }
    }
    acc
}

/// `acc[j] += v · w[j]` for the N rows of a tile: v loaded once, each
/// weight broadcast once.
#[inline(always)]
fn mul_add_lane<T: Real, S: IsaMarker, const N: usize>(
    acc: &mut [<Reg<T, S> as Vector<T>>::Regs; N],
    v: &Lane<T>,
    w: &[T; N],
) {
    let v = load_lane::<T, Reg<T, S>>(v);
    for (a, &wj) in acc.iter_mut().zip(w) {
        let wj = Reg::<T, S>::splat(wj);
        for (a, v) in a.as_mut().iter_mut().zip(v.as_ref()) {
            *a = v.mul_add(wj, *a);
        }
    }
}
