//! The units kernel's backward pass: through the steps in reverse, each
//! step's tasks first take their unit block of the gradient by h from the
//! step after (the back-projection `dz·W_hh`, its columns of that block),
//! then the gate gradients dz of their rows and units. After the loop, the
//! weight gradients and dx are products over all packed rows at once:
//! `dW_hh = dzᵀ·h_prev`, `[dW_ih | db] = dzᵀ·[x | 1]`, `dx = dz·W_ih`.

use super::pack::torch_row;
use super::plan::{Cut, Plan, UNITS};
use super::tile::{back_product, product, Init, RowsAt};
use crate::simd::vector::{Reg, Vector};
use crate::simd::{dispatch, IsaMarker, Real};
use crate::threads::team::{self, Shared};

/// One backward pass's buffers and sizes, shared by its tasks.
pub(crate) struct Job<'a, T> {
    pub(crate) plan: &'a Plan,
    pub(crate) cut: Cut,
    pub(crate) h: usize,
    /// The saved activations (see `forward.rs`): gates (R, 4Hp), c, tanh c
    /// (R, Hp), c0 (B, Hp).
    pub(crate) gates: Shared<T>,
    pub(crate) c: Shared<T>,
    pub(crate) tanh_c: Shared<T>,
    pub(crate) c0: Shared<T>,
    /// (B, T, H): the gradient by the output.
    pub(crate) d_out: Shared<T>,
    /// (NB, 4Hp, U): W_hh's columns by unit block (`pack.rs`).
    pub(crate) w_hh_b: Shared<T>,
    /// (R, 4Hp): the gate gradients.
    pub(crate) dz: Shared<T>,
    /// (B, Hp): the running gradients by h and by c, by slot.
    pub(crate) dh: Shared<T>,
    pub(crate) dc: Shared<T>,
    /// (B, H): where the gradients by h0 and c0 go.
    pub(crate) dh0: Shared<T>,
    pub(crate) dc0: Shared<T>,
}

impl<T: Real> Job<'_, T> {
    fn hp(&self) -> usize {
        self.h.div_ceil(UNITS) * UNITS
    }

    fn nb(&self) -> usize {
        self.h.div_ceil(UNITS)
    }
}

/// Backward through the steps, on the team: phase p runs step `run − 1 −
/// p`; a last phase takes the gradient by the initial state.
pub(crate) fn recur<T: Real>(job: &Job<'_, T>, workers: usize) {
    let run = job.plan.run();
    team::run(workers, run + 1, job.cut.tasks(), |p, task| step_task(job, p, task));
}

dispatch!(fn step_task<T: Real, S: IsaMarker>(job: &Job<'_, T>, p: usize, task: usize) => step_task_impl);

/// Phase p of one task (see [`recur`]).
#[inline(always)]
fn step_task_impl<T: Real, S: IsaMarker>(job: &Job<'_, T>, p: usize, task: usize) {
    let plan = job.plan;
    let run = plan.run();
    let (g, jr) = (task / job.cut.blocks, task % job.cut.blocks);
    let (b0, b1) = job.cut.unit_blocks(jr, job.nb());
    let hp = job.hp();
    let zw = 4 * hp;
    // The gradient by h from step s + 1 = run − p: dz of its rows · W_hh.
    if p > 0 {
        let s1 = run - p;
        let (lo, hi) = job.cut.slots(g, plan.active[s1]);
        for j in b0..b1 {
            back_product::<T, S>(
                hi - lo,
                job.nb(),
                job.dz,
                RowsAt::Strided {
                    first: (plan.offset[s1] + lo) * zw,
                    stride: zw,
                },
                job.w_hh_b.sub(j * zw * UNITS, zw * UNITS),
                job.dh,
                RowsAt::Strided {
                    first: lo * hp + j * UNITS,
                    stride: hp,
                },
            );
        }
    }
    if p == run {
        // Step 0 done: (dh, dc) are the gradients by (h0, c0).
        let (lo, hi) = job.cut.slots(g, plan.batch);
        for j in b0..b1 {
            let units = j * UNITS;
            let real = UNITS.min(job.h - units);
            for q in lo..hi {
                let b = plan.row[q];
                // SAFETY: this task owns slot q's units of block j.
                unsafe {
                    let dh = job.dh.slice(q * hp + units, real);
                    job.dh0.slice_mut(b * job.h + units, real).copy_from_slice(dh);
                    let dc = job.dc.slice(q * hp + units, real);
                    job.dc0.slice_mut(b * job.h + units, real).copy_from_slice(dc);
                }
            }
        }
        return;
    }
    let s = run - 1 - p;
    let (lo, hi) = job.cut.slots(g, plan.active[s]);
    for j in b0..b1 {
        for q in lo..hi {
            cell_backward::<T, S>(job, s, q, j);
        }
    }
}

/// The gate gradients of slot q at step s, unit block j: from the
/// gradient by h (the output's at this step plus the recurrent one) and
/// by c, into dz; the running dc becomes the gradient by c_{s−1}.
#[inline(always)]
fn cell_backward<T: Real, S: IsaMarker>(job: &Job<'_, T>, s: usize, q: usize, j: usize) {
    let plan = job.plan;
    let (hp, h) = (job.hp(), job.h);
    let g4 = 4 * UNITS;
    let w = Reg::<T, S>::WIDTH;
    let units = j * UNITS;
    let row = plan.offset[s] + q;
    // The output's gradient at this step, zero on padding units.
    let mut d_out = [T::ZERO; UNITS];
    let real = UNITS.min(h - units);
    let b = plan.row[q];
    let t = plan.time(q, s);
    // SAFETY (below): this task owns slot q's values of block j in dz, dh
    // and dc; the saved rows and d_out are only read during the pass.
    d_out[..real].copy_from_slice(unsafe { job.d_out.slice((b * plan.steps + t) * h + units, real) });
    let gates = unsafe { job.gates.slice(row * 4 * hp + j * g4, g4) };
    let tanh_c = unsafe { job.tanh_c.slice(row * hp + units, UNITS) };
    let c_prev = if s == 0 {
        unsafe { job.c0.slice(q * hp + units, UNITS) }
    } else {
        unsafe { job.c.slice((plan.offset[s - 1] + q) * hp + units, UNITS) }
    };
    let dz = unsafe { job.dz.slice_mut(row * 4 * hp + j * g4, g4) };
    let dh = unsafe { job.dh.slice(q * hp + units, UNITS) };
    let dc = unsafe { job.dc.slice_mut(q * hp + units, UNITS) };
    let one = Reg::<T, S>::splat(T::ONE);
    for v in 0..UNITS / w {
        let at = [0, UNITS, 2 * UNITS, 3 * UNITS].map(|gate| gate + v * w);
        let i = Reg::<T, S>::load(&gates[at[0]..]);
        let f = Reg::<T, S>::load(&gates[at[1]..]);
        let g = Reg::<T, S>::load(&gates[at[2]..]);
        let o = Reg::<T, S>::load(&gates[at[3]..]);
        let tc = Reg::<T, S>::load(&tanh_c[v * w..]);
        let cp = Reg::<T, S>::load(&c_prev[v * w..]);
        let dh_v = Reg::<T, S>::load(&d_out[v * w..]).add(Reg::<T, S>::load(&dh[v * w..]));
        // As `cell::cell_backward`, operation for operation.
        let dc_v = dh_v
            .mul(o)
            .mul_add(one.sub(tc.mul(tc)), Reg::<T, S>::load(&dc[v * w..]));
        dc_v.mul(g).mul(i).mul(one.sub(i)).store(&mut dz[at[0]..]);
        dc_v.mul(cp).mul(f).mul(one.sub(f)).store(&mut dz[at[1]..]);
        dc_v.mul(i).mul(one.sub(g.mul(g))).store(&mut dz[at[2]..]);
        dh_v.mul(tc).mul(o).mul(one.sub(o)).store(&mut dz[at[3]..]);
        dc_v.mul(f).store(&mut dc[v * w..]);
    }
}

/// The products after the loop (see the module docs), on the team.
pub(crate) struct Grads<T> {
    /// (R, 4Hp): the gate gradients, and (4Hp, R) the same transposed (made
    /// here: each weight gradient's row is then one contiguous sum).
    pub(crate) dz: Shared<T>,
    pub(crate) dz_t: Shared<T>,
    /// (R, Hp): h before each packed row's step.
    pub(crate) h_prev: Shared<T>,
    /// (R, Ip): x by packed row, a 1 in column I, zero after.
    pub(crate) xg: Shared<T>,
    /// (4Hp, Hp) and (4Hp, Ip): the weight gradients in panel order.
    pub(crate) dw_hh: Shared<T>,
    pub(crate) dw_ih: Shared<T>,
    /// For dx: (4Hp, Ip) W_ih in panel order, and dx by packed row (R, Ip).
    pub(crate) w_ih_b: Shared<T>,
    pub(crate) dx: Option<Shared<T>>,
    pub(crate) rows: usize,
    pub(crate) hp: usize,
    pub(crate) ip: usize,
}

/// Gate rows and columns per task of the weight gradients.
const GRAD_ROWS: usize = 48;
const GRAD_COLS: usize = 64;
/// Gate rows per task of the transposition of dz.
const TRANSPOSE_ROWS: usize = 64;

/// The weight gradients (and dx), on the team: dz transposed, then the
/// products.
pub(crate) fn weight_grads<T: Real>(job: &Grads<T>, workers: usize) {
    let g4 = 4 * job.hp;
    team::run(workers, 1, g4.div_ceil(TRANSPOSE_ROWS), |_, task| {
        transpose_task(job, task * TRANSPOSE_ROWS, ((task + 1) * TRANSPOSE_ROWS).min(g4))
    });
    let m_tasks = g4.div_ceil(GRAD_ROWS);
    let hh_tasks = m_tasks * job.hp.div_ceil(GRAD_COLS);
    let ih_tasks = m_tasks * job.ip.div_ceil(GRAD_COLS);
    let dx_tasks = if job.dx.is_some() {
        job.rows.div_ceil(GRAD_ROWS) * job.ip.div_ceil(GRAD_COLS)
    } else {
        0
    };
    team::run(workers, 1, hh_tasks + ih_tasks + dx_tasks, |_, task| {
        grads_task(job, task, m_tasks, hh_tasks, ih_tasks)
    });
}

dispatch!(fn transpose_task<T: Real, S: IsaMarker>(job: &Grads<T>, r0: usize, r1: usize) => transpose_task_impl);

#[inline(always)]
fn transpose_task_impl<T: Real, S: IsaMarker>(job: &Grads<T>, r0: usize, r1: usize) {
    transpose_rows(job.dz, job.dz_t, job.rows, 4 * job.hp, r0, r1);
}

/// `dst[r][k] = src[k][r]` for columns `r0..r1` of `src` (rows × width)
/// into rows `r0..r1` of `dst` (width × rows), through a tile of 16 × 16
/// on the stack (a column read directly would touch a cache line per
/// value). The caller's task owns those rows of `dst`; `src` is only read.
#[inline(always)]
pub(super) fn transpose_rows<T: Real>(src: Shared<T>, dst: Shared<T>, rows: usize, width: usize, r0: usize, r1: usize) {
    // SAFETY: src is only read in this pass.
    let src = unsafe { src.slice(0, rows * width) };
    transpose_rows_into(src, rows, width, dst, rows, 0, r0, r1);
}

/// [`transpose_rows`] of `src` (rows × width) into columns `col0..col0 +
/// rows` of `dst` (width × `dst_rows`): one part of a stack of row blocks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn transpose_rows_into<T: Real>(
    src: &[T],
    rows: usize,
    width: usize,
    dst: Shared<T>,
    dst_rows: usize,
    col0: usize,
    r0: usize,
    r1: usize,
) {
    const TILE: usize = 16;
    let mut tile = [[T::ZERO; TILE]; TILE];
    for k0 in (0..rows).step_by(TILE) {
        let kt = TILE.min(rows - k0);
        for rb in (r0..r1).step_by(TILE) {
            let rt = TILE.min(r1 - rb);
            for (dk, line) in tile.iter_mut().enumerate().take(kt) {
                let at = (k0 + dk) * width + rb;
                line[..rt].copy_from_slice(&src[at..at + rt]);
            }
            for dr in 0..rt {
                // SAFETY: this task owns rows r0..r1 of dst.
                let out = unsafe { dst.slice_mut((rb + dr) * dst_rows + col0 + k0, kt) };
                for (d, line) in out.iter_mut().zip(&tile) {
                    *d = line[dr];
                }
            }
        }
    }
}

dispatch!(fn grads_task<T: Real, S: IsaMarker>(job: &Grads<T>, task: usize, m_tasks: usize, hh_tasks: usize, ih_tasks: usize) => grads_task_impl);

#[inline(always)]
fn grads_task_impl<T: Real, S: IsaMarker>(
    job: &Grads<T>,
    task: usize,
    m_tasks: usize,
    hh_tasks: usize,
    ih_tasks: usize,
) {
    let w = Reg::<T, S>::WIDTH;
    let g4 = 4 * job.hp;
    if task < hh_tasks + ih_tasks {
        // C (4Hp, n) = dzᵀ·P over the packed rows, P = h_prev or [x | 1].
        let (task, p, p_cols, c) = if task < hh_tasks {
            (task, job.h_prev, job.hp, job.dw_hh)
        } else {
            (task - hh_tasks, job.xg, job.ip, job.dw_ih)
        };
        let (mt, nt) = (task % m_tasks, task / m_tasks);
        let (m0, m1) = (mt * GRAD_ROWS, ((mt + 1) * GRAD_ROWS).min(g4));
        let (n0, n1) = (nt * GRAD_COLS, ((nt + 1) * GRAD_COLS).min(p_cols));
        product::<T, S>(
            m1 - m0,
            job.rows,
            (n1 - n0) / w,
            job.dz_t,
            RowsAt::Strided {
                first: m0 * job.rows,
                stride: job.rows,
            },
            1,
            p.sub(n0, job.rows * p_cols - n0),
            p_cols,
            c,
            RowsAt::Strided {
                first: m0 * p_cols + n0,
                stride: p_cols,
            },
            Init::Zero,
        );
        return;
    }
    // dx (R, Ip) = dz·W_ih, rows and columns of this task.
    let Some(dx) = job.dx else { return };
    let task = task - hh_tasks - ih_tasks;
    let col_tasks = job.ip.div_ceil(GRAD_COLS);
    let (rt, nt) = (task / col_tasks, task % col_tasks);
    let (r0, r1) = (rt * GRAD_ROWS, ((rt + 1) * GRAD_ROWS).min(job.rows));
    let (n0, n1) = (nt * GRAD_COLS, ((nt + 1) * GRAD_COLS).min(job.ip));
    product::<T, S>(
        r1 - r0,
        g4,
        (n1 - n0) / w,
        job.dz,
        RowsAt::Strided {
            first: r0 * g4,
            stride: g4,
        },
        1,
        job.w_ih_b.sub(n0, g4 * job.ip - n0),
        job.ip,
        dx,
        RowsAt::Strided {
            first: r0 * job.ip + n0,
            stride: job.ip,
        },
        Init::Zero,
    );
}

/// Copies the panel-order gradients into PyTorch's layouts: (4H, H), (4H,
/// I) and the bias (column I of `dw_ih`).
pub(crate) fn unpack_grads<T: Real>(
    dw_hh: &[T],
    dw_ih: &[T],
    (h, hp, i_n, ip): (usize, usize, usize, usize),
    weight_hh: &mut [T],
    weight_ih: &mut [T],
    bias: &mut [T],
) {
    for r in 0..4 * hp {
        if let Some(row) = torch_row(r, h) {
            weight_hh[row * h..][..h].copy_from_slice(&dw_hh[r * hp..][..h]);
            weight_ih[row * i_n..][..i_n].copy_from_slice(&dw_ih[r * ip..][..i_n]);
            bias[row] = dw_ih[r * ip + i_n];
        }
    }
}
