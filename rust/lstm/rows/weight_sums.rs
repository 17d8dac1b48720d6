//! The weight gradients of one batch row, after its backward steps: the
//! sums over steps of input · dz along the gate lanes, added to the
//! (I+H+1, 4Hp) accumulator row after row, in row order, step order.

use super::backward::BackRow;
use super::{load, padded, store};
use crate::simd::{array, mul_add, IsaMarker, Lane, Real, LANES};

/// The weight gradients of one row, after its steps: acc[f] += Σ_t
/// input_t[f] · dz_t along the gate lanes (f = I+H is the bias, input 1),
/// summed over steps in registers, several features per pass over dz.
#[inline(always)]
pub(super) fn weight_sums<T: Real, S: IsaMarker>(row: &mut BackRow<'_, T>, t_n: usize, i_n: usize, h: usize) {
    let (hp, k_n) = (padded(h), i_n + h);
    let gp = 4 * hp;
    let (x, hs, one) = (row.x, row.h, [T::ONE]);
    // Feature f at step t is source[first + t · stride] (in wrapping
    // arithmetic: a reversed row's x runs backwards): x_t[f], h_{t-1}[f − I], or 1.
    let x_steps = row.x_steps;
    let input = |f: usize| -> Feature<'_, T> {
        if f < i_n {
            (x, x_steps.at(0) + f, x_steps.at(1).wrapping_sub(x_steps.at(0)))
        } else if f < k_n {
            (hs, f - i_n, hp)
        } else {
            (&one[..], 0, 0)
        }
    };
    // As many features per pass as keep 24 running sums in the 32 vector
    // registers (a Lane of f64 takes two). One feature at a time, each
    // step's multiply-adds waited on the last (four chains per pass).
    let registers = std::mem::size_of::<Lane<T>>().div_ceil(64) * gp / LANES;
    let most = (24 / registers).max(1);
    let mut f0 = 0;
    while f0 <= k_n {
        let acc = &mut row.acc[f0 * gp..];
        let group = |m: usize| input(f0 + m);
        let n = match (gp / LANES, (k_n + 1 - f0).min(most)) {
            (4, 6) => outer::<T, S, 4, 6>(acc, row.dz, gp, array(group), t_n),
            (4, 5) => outer::<T, S, 4, 5>(acc, row.dz, gp, array(group), t_n),
            (4, 4) => outer::<T, S, 4, 4>(acc, row.dz, gp, array(group), t_n),
            (4, 3) => outer::<T, S, 4, 3>(acc, row.dz, gp, array(group), t_n),
            (4, 2) => outer::<T, S, 4, 2>(acc, row.dz, gp, array(group), t_n),
            (4, _) => outer::<T, S, 4, 1>(acc, row.dz, gp, [group(0)], t_n),
            (8, 3) => outer::<T, S, 8, 3>(acc, row.dz, gp, array(group), t_n),
            (8, 2) => outer::<T, S, 8, 2>(acc, row.dz, gp, array(group), t_n),
            (8, _) => outer::<T, S, 8, 1>(acc, row.dz, gp, [group(0)], t_n),
            _ => {
                for v in (0..gp).step_by(LANES) {
                    outer::<T, S, 1, 1>(&mut acc[v..], &row.dz[v..], gp, [group(0)], t_n);
                }
                1
            }
        };
        f0 += n;
    }
}

/// One input feature of the weight-gradient sums: (values, first, stride),
/// its value at step t being `values[first + t·stride]` (wrapping).
type Feature<'a, T> = (&'a [T], usize, usize);

/// acc[m·gp..][..N·LANES] += Σ_t input_m(t) · dz[t·gp..][..N·LANES] for the
/// F features m, input_m(t) = source[t · stride] (`inputs[m]`): F × N gate
/// vectors summed over the steps in registers, dz read once for all F.
/// Returns F.
#[inline(always)]
fn outer<T: Real, S: IsaMarker, const N: usize, const F: usize>(
    acc: &mut [T],
    dz: &[T],
    gp: usize,
    inputs: [Feature<'_, T>; F],
    t_n: usize,
) -> usize {
    let mut sums: [[Lane<T>; N]; F] = array(|m| array(|j| load(acc, m * gp + j * LANES)));
    for t in 0..t_n {
        let d: [Lane<T>; N] = array(|j| load(dz, t * gp + j * LANES));
        for (sum, &(source, first, stride)) in sums.iter_mut().zip(&inputs) {
            let x = source[first.wrapping_add(t.wrapping_mul(stride))];
            for l in 0..LANES {
                for j in 0..N {
                    sum[j][l] = mul_add::<T, S>(d[j][l], x, sum[j][l]);
                }
            }
        }
    }
    for (m, sum) in sums.iter().enumerate() {
        for (j, s) in sum.iter().enumerate() {
            store(acc, m * gp + j * LANES, *s);
        }
    }
    F
}
