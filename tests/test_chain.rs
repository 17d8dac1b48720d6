//! `lstm::chain`: a chain of one-step forward and backward calls, with the
//! weight gradients of the chain made at once, against the whole-sequence
//! functional forward and backward over the same steps.

use sincos_rs::lstm::{chain, functional, ChainRows};
use sincos_rs::model::SplitMix64;
use sincos_rs::{threads, LstmGrads, LstmParams, LstmShape, Real};

fn random<T: Real>(rng: &mut SplitMix64, n: usize, scale: f64) -> Vec<T> {
    (0..n)
        .map(|_| T::from_f64(scale * (2.0 * rng.next_f64() - 1.0)))
        .collect()
}

struct Case<T> {
    batch: usize,
    steps: usize,
    input: usize,
    hidden: usize,
    weight_ih: Vec<T>,
    weight_hh: Vec<T>,
    bias: Vec<T>,
    /// (T, B, I): step t's input.
    x: Vec<Vec<T>>,
    h0: Vec<T>,
    c0: Vec<T>,
    /// (T, B, H): the gradient by each step's h; and by the last c.
    d_h: Vec<Vec<T>>,
    dc_n: Vec<T>,
}

fn case<T: Real>(batch: usize, steps: usize, input: usize, hidden: usize, seed: u64) -> Case<T> {
    let mut rng = SplitMix64(seed);
    let scale = 1.0 / (hidden as f64).sqrt();
    Case {
        batch,
        steps,
        input,
        hidden,
        weight_ih: random(&mut rng, 4 * hidden * input, scale),
        weight_hh: random(&mut rng, 4 * hidden * hidden, scale),
        bias: random(&mut rng, 4 * hidden, scale),
        x: (0..steps).map(|_| random(&mut rng, batch * input, 1.0)).collect(),
        h0: random(&mut rng, batch * hidden, 0.5),
        c0: random(&mut rng, batch * hidden, 0.5),
        d_h: (0..steps).map(|_| random(&mut rng, batch * hidden, 1.0)).collect(),
        dc_n: random(&mut rng, batch * hidden, 1.0),
    }
}

/// What a chain or a whole-sequence call computes: every h and c, dx of
/// every step, dh0, dc0, and the weight gradients.
#[derive(PartialEq, Debug)]
struct Results<T> {
    hs: Vec<T>,
    c_n: Vec<T>,
    dx: Vec<T>,
    dh0: Vec<T>,
    dc0: Vec<T>,
    grads: [Vec<T>; 3],
}

fn params<T>(c: &Case<T>) -> LstmParams<'_, T> {
    LstmParams {
        weight_ih: &c.weight_ih,
        weight_hh: &c.weight_hh,
        bias: &c.bias,
    }
}

/// Step by step: forward each step saving, then backward in reverse, each
/// step's gate gradients kept, the weight gradients at the end.
fn by_chain<T: sincos_rs::lstm::functional::Pooled>(c: &Case<T>) -> Results<T> {
    let (b, i, h) = (c.batch, c.input, c.hidden);
    let sizes = (b, i, h);
    let mut states = vec![(c.h0.clone(), c.c0.clone())];
    let mut saved = Vec::new();
    for t in 0..c.steps {
        let (mut h_t, mut c_t) = (vec![T::ZERO; b * h], vec![T::ZERO; b * h]);
        let mut s = vec![T::ZERO; chain::saved_len(b, i, h)];
        let (hp, cp) = &states[t];
        chain::forward(
            params(c),
            sizes,
            &c.x[t],
            Some((hp, cp)),
            &mut h_t,
            &mut c_t,
            Some(&mut s),
        )
        .unwrap();
        saved.push(s);
        states.push((h_t, c_t));
    }
    let mut dh = vec![T::ZERO; b * h];
    let mut dc = c.dc_n.clone();
    let mut dz_all = vec![vec![]; c.steps];
    let mut dx = vec![T::ZERO; c.steps * b * i];
    for t in (0..c.steps).rev() {
        let mut dz = vec![T::ZERO; b * 4 * h];
        let (mut dh0, mut dc0) = (vec![T::ZERO; b * h], vec![T::ZERO; b * h]);
        let dx_t = &mut dx[t * b * i..][..b * i];
        chain::backward(
            (&c.weight_ih, &c.weight_hh),
            sizes,
            &saved[t],
            Some(&states[t].1),
            Some(&c.d_h[t]),
            Some(&dh),
            Some(&dc),
            &mut dz,
            Some(dx_t),
            &mut dh0,
            &mut dc0,
        )
        .unwrap();
        dz_all[t] = dz;
        (dh, dc) = (dh0, dc0);
    }
    // One part per step, in step order, as the torch cell hands them over.
    let parts: Vec<ChainRows<'_, T>> = (0..c.steps)
        .map(|t| ChainRows {
            dz: &dz_all[t],
            x: &c.x[t],
            h0: Some(&states[t].0),
        })
        .collect();
    let mut grads = [vec![T::ZERO; 4 * h * i], vec![T::ZERO; 4 * h * h], vec![T::ZERO; 4 * h]];
    let [g_ih, g_hh, g_b] = &mut grads;
    let g = LstmGrads {
        weight_ih: g_ih,
        weight_hh: g_hh,
        bias: g_b,
    };
    chain::weight_grads((i, h), &parts, g).unwrap();
    Results {
        hs: states[1..].iter().flat_map(|(h, _)| h.clone()).collect(),
        c_n: states[c.steps].1.clone(),
        dx,
        dh0: dh,
        dc0: dc,
        grads,
    }
}

/// The whole sequence in one functional forward and backward (x and the
/// outputs batch-major), laid out as [`by_chain`]'s results.
fn by_sequence<T: sincos_rs::lstm::functional::Pooled>(c: &Case<T>) -> Results<T> {
    let (b, t_n, i, h) = (c.batch, c.steps, c.input, c.hidden);
    let s = LstmShape {
        batch: b,
        steps: t_n,
        input: i,
        hidden: h,
    };
    let seq = sincos_rs::lstm::Sequences::WHOLE;
    // (T, B, F) <-> (B, T, F).
    let swap = |v: &[T], f: usize, outer: usize, inner: usize| {
        let mut out = vec![T::ZERO; v.len()];
        for a in 0..outer {
            for z in 0..inner {
                out[(z * outer + a) * f..][..f].copy_from_slice(&v[(a * inner + z) * f..][..f]);
            }
        }
        out
    };
    let x = swap(&c.x.concat(), i, t_n, b);
    let mut out = vec![T::ZERO; b * t_n * h];
    let (mut h_n, mut c_n) = (vec![T::ZERO; b * h], vec![T::ZERO; b * h]);
    let mut saved = vec![T::ZERO; functional::saved_len::<T>(s)];
    let initial = Some((&c.h0[..], &c.c0[..]));
    functional::forward(
        params(c),
        s,
        seq,
        &x,
        initial,
        &mut out,
        &mut h_n,
        &mut c_n,
        Some(&mut saved),
    )
    .unwrap();
    let d_out = swap(&c.d_h.concat(), h, t_n, b);
    let zeros = vec![T::ZERO; b * h];
    let mut dx = vec![T::ZERO; b * t_n * i];
    let (mut dh0, mut dc0) = (vec![T::ZERO; b * h], vec![T::ZERO; b * h]);
    let mut grads = [vec![T::ZERO; 4 * h * i], vec![T::ZERO; 4 * h * h], vec![T::ZERO; 4 * h]];
    let [g_ih, g_hh, g_b] = &mut grads;
    let g = LstmGrads {
        weight_ih: g_ih,
        weight_hh: g_hh,
        bias: g_b,
    };
    let d_final = Some((&zeros[..], &c.dc_n[..]));
    functional::backward(
        params(c),
        s,
        seq,
        &x,
        initial,
        &saved,
        &d_out,
        d_final,
        Some(&mut dx),
        g,
        &mut dh0,
        &mut dc0,
    )
    .unwrap();
    Results {
        hs: swap(&out, h, b, t_n),
        c_n,
        dx: swap(&dx, i, b, t_n),
        dh0,
        dc0,
        grads,
    }
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn a_chain_of_steps_gives_the_whole_sequences_gradients() {
    // Hidden and input sizes past a vector and not a multiple of one (the
    // scalar columns), batches of one row and of more than a task's rows.
    for &(b, t, i, h) in &[
        (1, 5, 3, 7),
        (3, 4, 20, 33),
        (50, 3, 70, 40),
        (2, 3, 130, 129),
        (1, 2, 64, 256),
        (130, 2, 20, 40),
    ] {
        let c = case::<f64>(b, t, i, h, (b * 1000 + h) as u64);
        let (got, want) = (by_chain(&c), by_sequence(&c));
        let pairs = [
            ("h", &got.hs, &want.hs),
            ("c_n", &got.c_n, &want.c_n),
            ("dx", &got.dx, &want.dx),
            ("dh0", &got.dh0, &want.dh0),
            ("dc0", &got.dc0, &want.dc0),
            ("grad weight_ih", &got.grads[0], &want.grads[0]),
            ("grad weight_hh", &got.grads[1], &want.grads[1]),
            ("grad bias", &got.grads[2], &want.grads[2]),
        ];
        for (name, a, w) in pairs {
            let err = max_rel(a, w);
            assert!(err < 1e-12, "B{b} T{t} I{i} H{h}: {name} differs by {err:e}");
        }
    }
}

#[test]
fn a_chain_gives_the_same_bits_on_any_thread_count() {
    for &(b, t, i, h) in &[(1, 4, 100, 300), (40, 3, 64, 129), (7, 2, 17, 512), (130, 2, 20, 40)] {
        let c = case::<f32>(b, t, i, h, 7 + h as u64);
        threads::set_num_threads(1);
        let one = by_chain(&c);
        for n in [2, 3, 16] {
            threads::set_num_threads(n);
            assert!(by_chain(&c) == one, "B{b} H{h}: {n} threads differ from one");
        }
    }
    threads::set_num_threads(0);
}

/// The weight gradients of a chain's rows do not depend on how the rows
/// are split into parts (one per call, several calls stacked, or all in
/// one), nor on whether a zero state comes as None or as zeros: the same
/// bits, with several threads and with one.
#[test]
fn chain_weight_grads_give_the_same_bits_however_the_rows_are_split() {
    fn grads_of<T: sincos_rs::lstm::functional::Pooled>(
        (i, h): (usize, usize),
        parts: &[ChainRows<'_, T>],
    ) -> [Vec<T>; 3] {
        let mut grads = [vec![T::ZERO; 4 * h * i], vec![T::ZERO; 4 * h * h], vec![T::ZERO; 4 * h]];
        let [weight_ih, weight_hh, bias] = &mut grads;
        chain::weight_grads(
            (i, h),
            parts,
            LstmGrads {
                weight_ih,
                weight_hh,
                bias,
            },
        )
        .unwrap();
        grads
    }
    fn check<T: sincos_rs::lstm::functional::Pooled>(i: usize, h: usize, seed: u64) {
        let mut rng = SplitMix64(seed);
        // Row counts of the parts: 1 to 9 rows each, 57 rows in all.
        let sizes = [3, 1, 9, 5, 7, 2, 8, 4, 6, 1, 9, 2];
        let rows: usize = sizes.iter().sum();
        let dz: Vec<T> = random(&mut rng, rows * 4 * h, 1.0);
        let x: Vec<T> = random(&mut rng, rows * i, 1.0);
        let mut hs: Vec<T> = random(&mut rng, rows * h, 1.0);
        // The first part's state is zero: None in the parts, zeros stacked.
        hs[..sizes[0] * h].fill(T::ZERO);
        let stacked = [ChainRows {
            dz: &dz,
            x: &x,
            h0: Some(&hs),
        }];
        let mut parts = Vec::new();
        let mut at = 0;
        for (k, &n) in sizes.iter().enumerate() {
            parts.push(ChainRows {
                dz: &dz[at * 4 * h..(at + n) * 4 * h],
                x: &x[at * i..(at + n) * i],
                h0: (k > 0).then(|| &hs[at * h..(at + n) * h]),
            });
            at += n;
        }
        for n in [1, 3] {
            threads::set_num_threads(n);
            let one = grads_of((i, h), &stacked);
            assert!(
                grads_of((i, h), &parts) == one,
                "I{i} H{h}, {n} threads: one part per call"
            );
            let pairs: Vec<ChainRows<'_, T>> = parts
                .chunks(2)
                .map(|pair| {
                    let n: usize = pair.iter().map(|p| p.x.len() / i).sum();
                    let first = pair[0].x.as_ptr() as usize - x.as_ptr() as usize;
                    let r0 = first / std::mem::size_of::<T>() / i;
                    ChainRows {
                        dz: &dz[r0 * 4 * h..(r0 + n) * 4 * h],
                        x: &x[r0 * i..(r0 + n) * i],
                        h0: Some(&hs[r0 * h..(r0 + n) * h]),
                    }
                })
                .collect();
            assert!(
                grads_of((i, h), &pairs) == one,
                "I{i} H{h}, {n} threads: parts of two calls"
            );
        }
        threads::set_num_threads(0);
    }
    check::<f32>(17, 40, 3);
    check::<f64>(64, 129, 4);
    check::<f32>(300, 96, 5);
}

#[test]
fn chain_calls_name_the_wrong_argument() {
    let c = case::<f64>(2, 1, 3, 4, 1);
    let (mut h, mut cs) = (vec![0.0; 8], vec![0.0; 8]);
    let mut saved = vec![0.0; chain::saved_len(2, 3, 4)];
    let err = chain::forward(
        params(&c),
        (2, 3, 4),
        &c.x[0][..5],
        None,
        &mut h,
        &mut cs,
        Some(&mut saved),
    );
    assert!(err.unwrap_err().to_string().contains("x"));
    let mut x = c.x[0].clone();
    x[1] = f64::NAN;
    let err = chain::forward(params(&c), (2, 3, 4), &x, None, &mut h, &mut cs, None);
    assert!(err.unwrap_err().to_string().contains("x"));
    chain::forward(params(&c), (2, 3, 4), &c.x[0], None, &mut h, &mut cs, Some(&mut saved)).unwrap();
    let (mut dz, mut dh0, mut dc0) = (vec![0.0; 32], vec![0.0; 8], vec![0.0; 8]);
    let bad = vec![f64::INFINITY; 8];
    let err = chain::backward(
        (&c.weight_ih, &c.weight_hh),
        (2, 3, 4),
        &saved,
        None,
        Some(&bad),
        None,
        None,
        &mut dz,
        None,
        &mut dh0,
        &mut dc0,
    );
    assert!(err.unwrap_err().to_string().contains("d_out"));
    let err = chain::backward(
        (&c.weight_ih, &c.weight_hh),
        (2, 3, 4),
        &saved,
        None,
        None,
        None,
        None,
        &mut dz[..31],
        None,
        &mut dh0,
        &mut dc0,
    );
    assert!(err.unwrap_err().to_string().contains("dz"));
}
