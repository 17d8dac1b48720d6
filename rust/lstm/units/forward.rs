//! The units kernel's forward pass: the input projection of every packed
//! row at once, then the recurrence, step after step, each step's unit
//! blocks (and, for larger batches, groups of rows) shared by the team.
//!
//! Per element, `z = bias + Σ_i x_i·W_ih[·, i] + Σ_k h_k·W_hh[·, k]` is one
//! multiply-add chain: the projection starts it from the bias over the
//! inputs, the recurrence continues it over h (`tile.rs`). A pass that
//! saves nothing (`store=False`, and `step`) runs the same two products on
//! chunks of steps, so it gives the same bits.

use super::dot::{dot_product, DotInit};
use super::pack::torch_row;
use super::plan::{Cut, Plan, UNITS};
use super::tile::{forward_rows, product, Init, RowsAt};
use crate::lstm::params::LstmParams;
use crate::simd::activation::sigmoid_tanh;
use crate::simd::vector::{Reg, Vector};
use crate::simd::{dispatch, IsaMarker, Real};
use crate::threads::team::{self, Shared};

/// Where a step's rows live: in the saved buffers (every step kept), or in
/// one step's state (a pass that saves nothing).
#[derive(Clone, Copy)]
pub(crate) enum Rows<T> {
    Saved {
        /// (R, Hp): h before each packed row's step.
        h_prev: Shared<T>,
        /// (R, Hp): c after each packed row's step, and tanh of it.
        c: Shared<T>,
        tanh_c: Shared<T>,
        /// (B, Hp): the initial cell state by slot.
        c0: Shared<T>,
    },
    Streamed {
        /// (2, B, Hp): h before the step, by the step's parity.
        h: Shared<T>,
        /// (B, Hp): c, updated in place (each task owns its units).
        c: Shared<T>,
    },
}

/// One forward pass's buffers and sizes, shared by its tasks.
pub(crate) struct Job<'a, T> {
    pub(crate) plan: &'a Plan,
    pub(crate) cut: Cut,
    pub(crate) i_n: usize,
    pub(crate) h: usize,
    /// The weights as given ((4H, I), (4H, H), (4H,)), read by the dot
    /// form (`dot.rs`) where `dot_input` / `dot_hidden` say so.
    pub(crate) weights: LstmParams<'a, T>,
    pub(crate) dot_input: bool,
    pub(crate) dot_hidden: bool,
    /// Otherwise the packed weights (`pack.rs`), the bias by panel.
    pub(crate) w_ih_t: Shared<T>,
    pub(crate) w_hh_t: Shared<T>,
    pub(crate) bias: &'a [T],
    /// (B, T, I): the input; `x_rows[r]` the offset of packed row r's.
    pub(crate) x: Shared<T>,
    pub(crate) x_rows: &'a [usize],
    /// (rows, 4Hp): z, then the activated gates, from packed row `z_first`.
    pub(crate) z: Shared<T>,
    pub(crate) z_first: usize,
    pub(crate) rows: Rows<T>,
    /// (B, T, H) and (B, H): the outputs.
    pub(crate) out: Shared<T>,
    pub(crate) h_n: Shared<T>,
    pub(crate) c_n: Shared<T>,
}

impl<T: Real> Job<'_, T> {
    fn hp(&self) -> usize {
        self.h.div_ceil(UNITS) * UNITS
    }

    fn nb(&self) -> usize {
        self.h.div_ceil(UNITS)
    }
}

/// Row chunks of the projection: about four tasks per worker with the
/// unit blocks, each a whole number of tiles.
pub(crate) fn projection_chunk(rows: usize, nb: usize, workers: usize) -> usize {
    let chunks = (4 * workers).div_ceil(nb).max(1);
    rows.div_ceil(chunks).div_ceil(6).max(1) * 6
}

/// The input projection of packed rows `first..last` into z, on the team.
pub(crate) fn project<T: Real>(job: &Job<'_, T>, first: usize, last: usize, workers: usize) {
    let nb = job.nb();
    let chunk = projection_chunk(last - first, nb, workers);
    let chunks = (last - first).div_ceil(chunk);
    team::run(workers, 1, chunks * nb, |_, task| {
        let (c, j) = (task / nb, task % nb);
        let lo = first + c * chunk;
        project_task(job, lo, (lo + chunk).min(last), j);
    });
}

dispatch!(fn project_task<T: Real, S: IsaMarker>(job: &Job<'_, T>, lo: usize, hi: usize, j: usize) => project_task_impl);

/// z rows `lo..hi` of unit block j: bias + x·W_ihᵀ.
#[inline(always)]
fn project_task_impl<T: Real, S: IsaMarker>(job: &Job<'_, T>, lo: usize, hi: usize, j: usize) {
    let (g4, i_n) = (4 * UNITS, job.i_n);
    let zw = 4 * job.hp();
    let w = Reg::<T, S>::WIDTH;
    if job.dot_input {
        let (h, units) = (job.h, UNITS.min(job.h - j * UNITS));
        let c_rows = RowsAt::Strided {
            first: (lo - job.z_first) * zw,
            stride: zw,
        };
        for g in 0..4 {
            let first = g * h + j * UNITS;
            dot_product::<T, S>(
                hi - lo,
                units,
                i_n,
                job.x,
                RowsAt::Listed(&job.x_rows[lo..hi]),
                job.weights.weight_ih,
                RowsAt::Strided {
                    first: first * i_n,
                    stride: i_n,
                },
                job.z,
                c_rows,
                RowsAt::Strided {
                    first: j * g4 + g * UNITS,
                    stride: 1,
                },
                DotInit::Values(job.weights.bias, RowsAt::Strided { first, stride: 1 }),
            );
            // Padding units: zero, as their zero weights and bias give.
            for r in lo..hi {
                // SAFETY: this task owns these z values of block j.
                unsafe {
                    job.z
                        .slice_mut((r - job.z_first) * zw + j * g4 + g * UNITS + units, UNITS - units)
                }
                .fill(T::ZERO);
            }
        }
        return;
    }
    let panel = job.w_ih_t.sub(j * i_n * g4, i_n * g4);
    product::<T, S>(
        hi - lo,
        i_n,
        g4 / w,
        job.x,
        RowsAt::Listed(&job.x_rows[lo..hi]),
        1,
        panel,
        g4,
        job.z,
        RowsAt::Strided {
            first: (lo - job.z_first) * zw + j * g4,
            stride: zw,
        },
        Init::Row(&job.bias[j * g4..][..g4]),
    );
}

/// The recurrence over run steps `first..last` (z projected), on the team.
pub(crate) fn recur<T: Real>(job: &Job<'_, T>, first: usize, last: usize, workers: usize) {
    team::run(workers, last - first, job.cut.tasks(), |p, task| {
        step_task(job, first + p, task);
    });
}

dispatch!(fn step_task<T: Real, S: IsaMarker>(job: &Job<'_, T>, s: usize, task: usize) => step_task_impl);

/// Step s of one task: its slots' z for its unit blocks (`+ h·W_hhᵀ`),
/// then the cell update of those rows and units.
#[inline(always)]
fn step_task_impl<T: Real, S: IsaMarker>(job: &Job<'_, T>, s: usize, task: usize) {
    let plan = job.plan;
    let (g, jr) = (task / job.cut.blocks, task % job.cut.blocks);
    let (lo, hi) = job.cut.slots(g, plan.active[s]);
    if lo == hi {
        return;
    }
    let (hp, g4, h) = (job.hp(), 4 * UNITS, job.h);
    let zw = 4 * hp;
    let w = Reg::<T, S>::WIDTH;
    let (b0, b1) = job.cut.unit_blocks(jr, job.nb());
    let z_row = plan.offset[s] - job.z_first;
    let (h_src, h_first) = match job.rows {
        Rows::Saved { h_prev, .. } => (h_prev, plan.offset[s] * hp),
        Rows::Streamed { h, .. } => (h, (s % 2) * plan.batch * hp),
    };
    for j in b0..b1 {
        let a_rows = RowsAt::Strided {
            first: h_first + lo * hp,
            stride: hp,
        };
        if job.dot_hidden {
            let units = UNITS.min(h - j * UNITS);
            for g in 0..4 {
                dot_product::<T, S>(
                    hi - lo,
                    units,
                    h,
                    h_src,
                    a_rows,
                    job.weights.weight_hh,
                    RowsAt::Strided {
                        first: (g * h + j * UNITS) * h,
                        stride: h,
                    },
                    job.z,
                    RowsAt::Strided {
                        first: (z_row + lo) * zw,
                        stride: zw,
                    },
                    RowsAt::Strided {
                        first: j * g4 + g * UNITS,
                        stride: 1,
                    },
                    DotInit::Load,
                );
            }
        } else {
            product::<T, S>(
                hi - lo,
                h,
                g4 / w,
                h_src,
                a_rows,
                1,
                job.w_hh_t.sub(j * h * g4, h * g4),
                g4,
                job.z,
                RowsAt::Strided {
                    first: (z_row + lo) * zw + j * g4,
                    stride: zw,
                },
                Init::Load,
            );
        }
        for q in lo..hi {
            cell_update::<T, S>(job, s, q, j, z_row);
        }
    }
}

/// The cell update of slot q at step s for unit block j: z → the gates
/// (in place), c, tanh c, h; h to the next step's rows (or the final
/// state), to `out`, and at the row's last step to (h_n, c_n).
#[inline(always)]
fn cell_update<T: Real, S: IsaMarker>(job: &Job<'_, T>, s: usize, q: usize, j: usize, z_row: usize) {
    let plan = job.plan;
    let (hp, h, b_n) = (job.hp(), job.h, plan.batch);
    let g4 = 4 * UNITS;
    let w = Reg::<T, S>::WIDTH;
    let units = j * UNITS;
    // SAFETY (every slice below): this task owns slot q's values of unit
    // block j in z and in the state buffers of this step (`Cut`); the rows
    // it reads were written by an earlier phase, or are its own.
    let z = unsafe { job.z.slice_mut((z_row + q) * 4 * hp + j * g4, g4) };
    let (c_prev_at, c_at, tanh_at, h_next_at) = match job.rows {
        Rows::Saved { c, c0, tanh_c, h_prev } => {
            let prev = if s == 0 {
                (c0, q * hp)
            } else {
                (c, (plan.offset[s - 1] + q) * hp)
            };
            let next = (s + 1 < plan.run() && q < plan.active[s + 1]).then(|| (h_prev, (plan.offset[s + 1] + q) * hp));
            let row = (plan.offset[s] + q) * hp;
            (prev, (c, row), Some((tanh_c, row)), next)
        }
        Rows::Streamed { h: hs, c } => {
            let next = (hs, (((s + 1) % 2) * b_n + q) * hp);
            ((c, q * hp), (c, q * hp), None, Some(next))
        }
    };
    let mut c_new = [T::ZERO; UNITS];
    let mut h_new = [T::ZERO; UNITS];
    {
        let c_prev = unsafe { c_prev_at.0.slice(c_prev_at.1 + units, UNITS) };
        for v in 0..UNITS / w {
            let at = [0, UNITS, 2 * UNITS, 3 * UNITS].map(|gate| gate + v * w);
            let zi = Reg::<T, S>::load(&z[at[0]..]);
            let zf = Reg::<T, S>::load(&z[at[1]..]);
            let zg = Reg::<T, S>::load(&z[at[2]..]);
            let zo = Reg::<T, S>::load(&z[at[3]..]);
            let ([i, f, o], [g]) = sigmoid_tanh::<T, Reg<T, S>, 3, 1>([zi, zf, zo], [zg]);
            let c = f.mul_add(Reg::<T, S>::load(&c_prev[v * w..]), i.mul(g));
            let ([], [tc]) = sigmoid_tanh::<T, Reg<T, S>, 0, 1>([], [c]);
            i.store(&mut z[at[0]..]);
            f.store(&mut z[at[1]..]);
            g.store(&mut z[at[2]..]);
            o.store(&mut z[at[3]..]);
            c.store(&mut c_new[v * w..]);
            o.mul(tc).store(&mut h_new[v * w..]);
            if let Some((buf, row)) = tanh_at {
                tc.store(unsafe { buf.slice_mut(row + units + v * w, w) });
            }
        }
    }
    unsafe { c_at.0.slice_mut(c_at.1 + units, UNITS) }.copy_from_slice(&c_new);
    if let Some((buf, row)) = h_next_at {
        unsafe { buf.slice_mut(row + units, UNITS) }.copy_from_slice(&h_new);
    }
    let real = UNITS.min(h - units);
    let b = plan.row[q];
    let t = plan.time(q, s);
    let t_n = plan.steps;
    unsafe { job.out.slice_mut((b * t_n + t) * h + units, real) }.copy_from_slice(&h_new[..real]);
    if s + 1 == plan.len[q] {
        unsafe { job.h_n.slice_mut(b * h + units, real) }.copy_from_slice(&h_new[..real]);
        unsafe { job.c_n.slice_mut(b * h + units, real) }.copy_from_slice(&c_new[..real]);
    }
    debug_assert!(torch_row(j * g4, h).is_some(), "a block holds a real unit");
}

/// Rows per tile of the instance in use, for cutting a batch into groups
/// (the cut changes no result, only how the work is shared).
pub(crate) fn tile_rows() -> usize {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::isa() == crate::simd::Isa::Avx512 {
        return forward_rows::<crate::simd::Avx512Isa>();
    }
    forward_rows::<crate::simd::BaselineIsa>()
}
