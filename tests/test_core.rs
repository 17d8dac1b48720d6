//! The plain-Rust core, without Python: backward passes against central
//! finite differences in f64, Adam against a hand computation, and errors
//! that come back as `Err` naming the argument at fault.

use sincos_rs::adam::{adam_update, AdamCoefficients};
use sincos_rs::model::{demo_params, SplitMix64};
use sincos_rs::{
    Adam, AdamConfig, EpsilonStyle, Error, Kernel, Lstm, LstmGrads, LstmParams, SeedConfig, SeedNetwork, PARAM_NAMES,
};

/// Relative error `‖a − b‖ / max(‖a‖ + ‖b‖, 1e-12)`.
fn rel_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = norm(a.iter().zip(b).map(|(x, y)| x - y));
    let scale = norm(a.iter().copied()) + norm(b.iter().copied());
    diff / scale.max(1e-12)
}

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Asserts that the analytic gradient matches the numeric one.
fn assert_grad_close(name: &str, analytic: &[f64], numeric: &[f64]) {
    let err = rel_error(analytic, numeric);
    println!("[fd] {name}: relative error {err:.3e}");
    assert!(
        err < 1e-6,
        "{name}: relative error {err:.3e}, max |analytic - numeric| {:.3e}",
        max_abs_diff(analytic, numeric)
    );
}

/// Central differences of `loss` by every element of `values`.
fn numeric_grad(values: &[f64], mut loss: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    const EPS: f64 = 1e-6;
    let mut v = values.to_vec();
    (0..values.len())
        .map(|k| {
            let original = v[k];
            v[k] = original + EPS;
            let plus = loss(&v);
            v[k] = original - EPS;
            let minus = loss(&v);
            v[k] = original;
            (plus - minus) / (2.0 * EPS)
        })
        .collect()
}

fn random(rng: &mut SplitMix64, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| scale * (2.0 * rng.next_f64() - 1.0)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---------------------------------------------------------------- the LSTM layer

const B: usize = 2;
const T: usize = 3;
const I: usize = 4;
const H: usize = 5;

/// Everything the LSTM's loss depends on, and the loss's weights R, R2, R3.
#[derive(Clone)]
struct Case {
    w_ih: Vec<f64>,
    w_hh: Vec<f64>,
    bias: Vec<f64>,
    x: Vec<f64>,
    h0: Vec<f64>,
    c0: Vec<f64>,
    r_out: Vec<f64>,
    r_h: Vec<f64>,
    r_c: Vec<f64>,
    kernel: Kernel,
}

impl Case {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64(seed);
        Case {
            w_ih: random(&mut rng, 4 * H * I, 0.8),
            w_hh: random(&mut rng, 4 * H * H, 0.8),
            bias: random(&mut rng, 4 * H, 0.5),
            x: random(&mut rng, B * T * I, 1.0),
            h0: random(&mut rng, B * H, 0.8),
            c0: random(&mut rng, B * H, 1.0),
            r_out: random(&mut rng, B * T * H, 1.0),
            r_h: random(&mut rng, B * H, 1.0),
            r_c: random(&mut rng, B * H, 1.0),
            kernel: Kernel::Auto,
        }
    }

    fn layer(&self) -> Lstm<f64> {
        let mut lstm = Lstm::new(I, H).unwrap();
        lstm.set_kernel(self.kernel);
        lstm
    }

    fn params(&self) -> LstmParams<'_, f64> {
        LstmParams {
            weight_ih: &self.w_ih,
            weight_hh: &self.w_hh,
            bias: &self.bias,
        }
    }

    /// `sum(out·R) + sum(h_n·R2) + sum(c_n·R3)`.
    fn loss(&self) -> f64 {
        let mut lstm = self.layer();
        lstm.forward(self.params(), &self.x, B, T, Some((&self.h0, &self.c0)))
            .unwrap();
        let (h_n, c_n) = lstm.final_state();
        dot(lstm.output(), &self.r_out) + dot(h_n, &self.r_h) + dot(c_n, &self.r_c)
    }
}

/// The analytic gradients of [`Case::loss`]: (weight_ih, weight_hh, bias, dx, dh0, dc0).
type LstmGradients = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

fn analytic(case: &Case, lstm: &mut Lstm<f64>) -> LstmGradients {
    lstm.forward(case.params(), &case.x, B, T, Some((&case.h0, &case.c0)))
        .unwrap();
    let (mut g_ih, mut g_hh, mut g_b) = (
        vec![f64::NAN; 4 * H * I],
        vec![f64::NAN; 4 * H * H],
        vec![f64::NAN; 4 * H],
    );
    let mut dx = vec![f64::NAN; B * T * I];
    lstm.backward(
        case.params(),
        &case.r_out,
        Some((&case.r_h, &case.r_c)),
        Some(&mut dx),
        LstmGrads {
            weight_ih: &mut g_ih,
            weight_hh: &mut g_hh,
            bias: &mut g_b,
        },
    )
    .unwrap();
    let (dh0, dc0) = lstm.initial_state_grad();
    (g_ih, g_hh, g_b, dx, dh0.to_vec(), dc0.to_vec())
}

/// The numeric gradient by one field of the case.
fn numeric(case: &Case, field: fn(&mut Case) -> &mut Vec<f64>) -> Vec<f64> {
    let mut base = case.clone();
    let values = field(&mut base).clone();
    numeric_grad(&values, |v| {
        let mut c = case.clone();
        field(&mut c).copy_from_slice(v);
        c.loss()
    })
}

#[test]
fn lstm_backward_matches_finite_differences() {
    for kernel in [Kernel::Lanes, Kernel::Gemm, Kernel::Rows, Kernel::Units] {
        lstm_backward_matches_finite_differences_with(kernel);
    }
}

#[test]
fn the_four_kernels_agree() {
    let mut case = Case::new(5);
    case.kernel = Kernel::Lanes;
    let lanes = analytic(&case, &mut case.layer());
    for kernel in [Kernel::Gemm, Kernel::Rows, Kernel::Units] {
        case.kernel = kernel;
        let other = analytic(&case, &mut case.layer());
        let names = ["weight_ih", "weight_hh", "bias", "dx", "dh0", "dc0"];
        let pairs = [
            (&lanes.0, &other.0),
            (&lanes.1, &other.1),
            (&lanes.2, &other.2),
            (&lanes.3, &other.3),
            (&lanes.4, &other.4),
            (&lanes.5, &other.5),
        ];
        for (name, (a, b)) in names.iter().zip(pairs) {
            let err = rel_error(a, b);
            assert!(err < 1e-13, "lanes vs {kernel:?} {name}: relative difference {err:e}");
        }
    }
}

/// The rows kernel has one-vector paths (H ≤ 16 forward, I + H ≤ 16
/// backward) and general ones: each against the lanes kernel, at the edges.
#[test]
fn rows_kernel_paths_agree_with_the_lanes_kernel() {
    let run = |kernel: Kernel, (b, t, i, h): (usize, usize, usize, usize)| {
        let mut rng = SplitMix64((b * 1000 + i * 100 + h) as u64);
        let (w_ih, w_hh, bias) = (
            random(&mut rng, 4 * h * i, 0.5),
            random(&mut rng, 4 * h * h, 0.5),
            random(&mut rng, 4 * h, 0.5),
        );
        let (x, d_out) = (random(&mut rng, b * t * i, 1.0), random(&mut rng, b * t * h, 1.0));
        let (h0, c0) = (random(&mut rng, b * h, 0.5), random(&mut rng, b * h, 0.5));
        let (dh_n, dc_n) = (random(&mut rng, b * h, 0.5), random(&mut rng, b * h, 0.5));
        let mut lstm = Lstm::new(i, h).unwrap();
        lstm.set_kernel(kernel);
        let p = LstmParams {
            weight_ih: &w_ih,
            weight_hh: &w_hh,
            bias: &bias,
        };
        lstm.forward(p, &x, b, t, Some((&h0, &c0))).unwrap();
        let (mut g_ih, mut g_hh, mut g_b) = (vec![0.0; 4 * h * i], vec![0.0; 4 * h * h], vec![0.0; 4 * h]);
        let mut dx = vec![0.0; b * t * i];
        lstm.backward(
            p,
            &d_out,
            Some((&dh_n, &dc_n)),
            Some(&mut dx),
            grads(&mut g_ih, &mut g_hh, &mut g_b),
        )
        .unwrap();
        let (dh0, dc0) = lstm.initial_state_grad();
        let (out, (h_n, c_n)) = (lstm.output().to_vec(), lstm.final_state());
        [
            out,
            h_n.to_vec(),
            c_n.to_vec(),
            g_ih,
            g_hh,
            g_b,
            dx,
            dh0.to_vec(),
            dc0.to_vec(),
        ]
    };
    let names = [
        "out",
        "h_n",
        "c_n",
        "weight_ih",
        "weight_hh",
        "bias",
        "dx",
        "dh0",
        "dc0",
    ];
    // (B, T, I, H): one long series; I + H = 16 and 17; H = 16 and 17; H = 64.
    for shape in [
        (1, 9, 1, 10),
        (2, 4, 6, 10),
        (3, 4, 7, 10),
        (1, 5, 1, 16),
        (2, 3, 2, 17),
        (1, 3, 5, 64),
    ] {
        let (lanes, rows) = (run(Kernel::Lanes, shape), run(Kernel::Rows, shape));
        for (name, (a, b)) in names.iter().zip(lanes.iter().zip(&rows)) {
            let err = rel_error(a, b);
            assert!(
                err < 1e-13,
                "{shape:?} {name}: rows vs lanes relative difference {err:e}"
            );
        }
    }
}

fn lstm_backward_matches_finite_differences_with(kernel: Kernel) {
    let mut case = Case::new(1);
    case.kernel = kernel;
    let mut lstm = case.layer();
    let (g_ih, g_hh, g_b, dx, dh0, dc0) = analytic(&case, &mut lstm);
    assert_grad_close("lstm grad weight_ih", &g_ih, &numeric(&case, |c| &mut c.w_ih));
    assert_grad_close("lstm grad weight_hh", &g_hh, &numeric(&case, |c| &mut c.w_hh));
    assert_grad_close("lstm grad bias", &g_b, &numeric(&case, |c| &mut c.bias));
    assert_grad_close("lstm dx", &dx, &numeric(&case, |c| &mut c.x));
    assert_grad_close("lstm dh0", &dh0, &numeric(&case, |c| &mut c.h0));
    assert_grad_close("lstm dc0", &dc0, &numeric(&case, |c| &mut c.c0));

    // Reusing the layer's workspaces gives the same numbers.
    let again = analytic(&case, &mut lstm);
    assert_eq!(
        again,
        (g_ih, g_hh, g_b, dx, dh0, dc0),
        "a second forward/backward differs"
    );
}

#[test]
fn lstm_zero_state_by_default_and_shapes_can_change() {
    let case = Case::new(2);
    let mut lstm = Lstm::new(I, H).unwrap();
    let zeros = vec![0.0; B * H];
    lstm.forward(case.params(), &case.x, B, T, None).unwrap();
    let out_default = lstm.output().to_vec();
    lstm.forward(case.params(), &case.x, B, T, Some((&zeros, &zeros)))
        .unwrap();
    assert_eq!(lstm.output(), &out_default[..]);
    // A smaller batch and more steps on the same layer: row b of the
    // output only depends on row b of x.
    let x1 = &case.x[..T * I];
    lstm.forward(case.params(), x1, 1, T, None).unwrap();
    assert_eq!(lstm.output(), &out_default[..T * H]);
    let long: Vec<f64> = case.x.iter().chain(&case.x).copied().collect();
    lstm.forward(case.params(), &long, 1, 2 * B * T, None).unwrap();
    assert_eq!(lstm.output().len(), 2 * B * T * H);
    assert_eq!(&lstm.output()[..T * H], &out_default[..T * H]);
}

#[test]
fn forward_into_writes_the_callers_buffer_and_backward_follows_it() {
    let case = Case::new(3);
    for kernel in [Kernel::Lanes, Kernel::Gemm, Kernel::Rows, Kernel::Units] {
        let run = |into: bool| {
            let mut lstm = Lstm::new(I, H).unwrap();
            lstm.set_kernel(kernel);
            let mut out = vec![f64::NAN; B * T * H];
            if into {
                lstm.forward_into(case.params(), &case.x, B, T, Some((&case.h0, &case.c0)), &mut out)
                    .unwrap();
                assert!(lstm.output().is_empty(), "{kernel:?}: output() kept after forward_into");
            } else {
                lstm.forward(case.params(), &case.x, B, T, Some((&case.h0, &case.c0)))
                    .unwrap();
                out.copy_from_slice(lstm.output());
            }
            let (mut g_ih, mut g_hh, mut g_b) = (vec![0.0; 4 * H * I], vec![0.0; 4 * H * H], vec![0.0; 4 * H]);
            let mut dx = vec![0.0; B * T * I];
            lstm.backward(
                case.params(),
                &case.r_out,
                None,
                Some(&mut dx),
                grads(&mut g_ih, &mut g_hh, &mut g_b),
            )
            .unwrap();
            (out, g_ih, g_hh, g_b, dx)
        };
        let (own, into) = (run(false), run(true));
        assert!(
            into.0.iter().all(|v| v.is_finite()),
            "{kernel:?}: out not fully written"
        );
        assert_eq!(own, into, "{kernel:?}: forward_into differs from forward");
    }
    let mut lstm = Lstm::new(I, H).unwrap();
    let mut short = vec![0.0; B * T * H - 1];
    expect_err(
        lstm.forward_into(case.params(), &case.x, B, T, None, &mut short),
        &["out", &format!("({B}, {T}, {H})")],
    );
}

#[test]
fn packed_weights_follow_every_change() {
    // The rows and units kernels keep their packed weights while the
    // weights stay the same (inference, `step` after `step`); a change of
    // one bit of one value anywhere must repack (bit 40: a change the
    // output shows; the last bit can round away). Every call is checked
    // against a fresh layer's bits, and the repeated calls let the kept
    // copy settle (a sample, then the full copy) before each change.
    let case = Case::new(9);
    for kernel in [Kernel::Rows, Kernel::Units] {
        let fresh = |w: &Case| {
            let mut lstm = Lstm::new(I, H).unwrap();
            lstm.set_kernel(kernel);
            lstm.forward(w.params(), &w.x, B, T, None).unwrap();
            lstm.output().to_vec()
        };
        let mut lstm = Lstm::new(I, H).unwrap();
        lstm.set_kernel(kernel);
        let mut w = case.clone();
        // (part, index): the ends of each part, and index 1 of W_hh, which
        // lies between the values of its sample.
        for (part, at) in [(0, 0), (0, 4 * H * I - 1), (1, 1), (1, 4 * H * H - 1), (2, 3)] {
            for call in 0..4 {
                lstm.forward(w.params(), &w.x, B, T, None).unwrap();
                assert_eq!(
                    lstm.output(),
                    &fresh(&w)[..],
                    "{kernel:?}: call {call} before changing {part}[{at}]"
                );
            }
            let v = match part {
                0 => &mut w.w_ih[at],
                1 => &mut w.w_hh[at],
                _ => &mut w.bias[at],
            };
            *v = f64::from_bits(v.to_bits() ^ (1 << 40));
            lstm.forward(w.params(), &w.x, B, T, None).unwrap();
            assert_eq!(
                lstm.output(),
                &fresh(&w)[..],
                "{kernel:?}: stale panels after changing {part}[{at}]"
            );
        }
    }
    // Weights of many chunks of the compare: a change in the last one.
    let (i_n, h) = (40, 48);
    let mut rng = SplitMix64(10);
    let (w_ih, mut w_hh, bias) = (
        random(&mut rng, 4 * h * i_n, 0.3),
        random(&mut rng, 4 * h * h, 0.3),
        random(&mut rng, 4 * h, 0.3),
    );
    let x = random(&mut rng, B * T * i_n, 1.0);
    let run = |lstm: &mut Lstm<f64>, w_hh: &[f64]| {
        let p = LstmParams {
            weight_ih: &w_ih,
            weight_hh: w_hh,
            bias: &bias,
        };
        lstm.forward(p, &x, B, T, None).unwrap();
        lstm.output().to_vec()
    };
    let mut lstm = Lstm::new(i_n, h).unwrap();
    lstm.set_kernel(Kernel::Units);
    for _ in 0..3 {
        run(&mut lstm, &w_hh);
    }
    let last = w_hh.len() - 1;
    w_hh[last] = f64::from_bits(w_hh[last].to_bits() ^ (1 << 40));
    let mut fresh = Lstm::new(i_n, h).unwrap();
    fresh.set_kernel(Kernel::Units);
    assert_eq!(
        run(&mut lstm, &w_hh),
        run(&mut fresh, &w_hh),
        "stale panels after changing the last value of W_hh"
    );
}

// ---------------------------------------------------------------- the seed network

fn seed_case(config: SeedConfig, batch: usize, steps: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut rng = SplitMix64(seed);
    let params = demo_params::<f64>(&config, 1.0, seed);
    let seq = random(&mut rng, batch * steps * config.input_size, 1.0);
    let res = random(&mut rng, batch * steps * config.output_size, 1.0);
    (params, seq, res)
}

fn check_seed_gradients(config: SeedConfig, with_state: bool, kernel: Kernel) {
    let (batch, steps) = (3, 4);
    let (params, seq, res) = seed_case(config, batch, steps, 7);
    let mut net = SeedNetwork::new(config, AdamConfig::default(), params.clone()).unwrap();
    net.set_kernel(kernel);
    if with_state {
        let mut rng = SplitMix64(99);
        let h = random(&mut rng, batch * config.hidden_size, 0.8);
        let c = random(&mut rng, batch * config.hidden_size, 1.0);
        net.set_state(Some((&h, &c))).unwrap();
    }
    net.loss_and_grads(&seq, &res, batch, steps).unwrap();
    let grads = net.grads().to_vec();
    let numeric = numeric_grad(&params, |p| {
        net.set_params(p).unwrap();
        net.loss_and_grads(&seq, &res, batch, steps).unwrap()
    });
    for (name, (offset, len)) in PARAM_NAMES.iter().zip(config.param_ranges()) {
        let range = offset..offset + len;
        assert_grad_close(
            &format!("seed {config:?} state={with_state} {kernel:?} grad {name}"),
            &grads[range.clone()],
            &numeric[range],
        );
    }
}

#[test]
fn seed_network_gradients_match_finite_differences() {
    for config in [
        SeedConfig::default(),
        SeedConfig {
            input_size: 2,
            hidden_size: 5,
            output_size: 3,
        },
    ] {
        for kernel in [Kernel::Lanes, Kernel::Gemm, Kernel::Rows, Kernel::Units] {
            check_seed_gradients(config, false, kernel);
            check_seed_gradients(config, true, kernel);
        }
    }
}

#[test]
fn seed_network_cost_and_train_step() {
    let config = SeedConfig {
        input_size: 2,
        hidden_size: 5,
        output_size: 3,
    };
    let (batch, steps) = (3, 4);
    let (params, seq, res) = seed_case(config, batch, steps, 3);
    let mut net = SeedNetwork::new(config, AdamConfig::default(), params.clone()).unwrap();
    // The cost is Σ (pred − y)² / B over the prediction.
    let pred = net.predict(&seq, batch, steps).unwrap().to_vec();
    let want: f64 = pred.iter().zip(&res).map(|(p, y)| (p - y) * (p - y)).sum::<f64>() / batch as f64;
    let cost = net.loss_and_grads(&seq, &res, batch, steps).unwrap();
    assert!((cost - want).abs() <= 1e-12 * want, "cost {cost} vs {want}");
    assert_eq!(net.params(), &params[..], "loss_and_grads changed the params");
    assert!(net.state().is_none(), "loss_and_grads set a state");

    // train_step returns the same cost, updates, and carries the state.
    let step_cost = net.train_step(&seq, &res, batch, steps).unwrap();
    assert_eq!(step_cost, cost);
    assert_eq!(net.adam().step, 1);
    assert_ne!(net.params(), &params[..]);
    let (pred_last, b, t) = net.last_prediction().unwrap();
    assert_eq!((b, t), (batch, steps));
    assert_eq!(pred_last, &pred[..]);
    let (h, c) = net.state().unwrap();
    assert_eq!(h.len(), batch * config.hidden_size);
    assert_eq!(c.len(), batch * config.hidden_size);
    net.reset_state();
    assert!(net.state().is_none());
}

// ---------------------------------------------------------------- Adam

/// Adam by hand, from the formulas in the module docs.
fn adam_by_hand(style: EpsilonStyle, lr: f64, grads: &[Vec<f64>], start: &[f64]) -> Vec<f64> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut p = start.to_vec();
    let mut m = vec![0.0; p.len()];
    let mut v = vec![0.0; p.len()];
    for (t, g) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        for k in 0..p.len() {
            m[k] = b1 * m[k] + (1.0 - b1) * g[k];
            v[k] = b2 * v[k] + (1.0 - b2) * g[k] * g[k];
            p[k] -= match style {
                EpsilonStyle::TensorFlow => {
                    let lr_t = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
                    lr_t * m[k] / (v[k].sqrt() + eps)
                }
                EpsilonStyle::PyTorch => {
                    let m_hat = m[k] / (1.0 - b1.powi(t));
                    let v_hat = v[k] / (1.0 - b2.powi(t));
                    lr * m_hat / (v_hat.sqrt() + eps)
                }
            };
        }
    }
    p
}

#[test]
fn adam_matches_a_hand_computation() {
    let start = vec![1.0, -2.0, 0.5, 3.0];
    let grads = vec![
        vec![0.5, -1.0, 0.0, 1e-9],
        vec![0.25, 2.0, -3.0, 1e-9],
        vec![-0.5, 0.0, 1.0, -1e-9],
    ];
    for style in [EpsilonStyle::TensorFlow, EpsilonStyle::PyTorch] {
        let config = AdamConfig {
            lr: 0.1,
            style,
            ..AdamConfig::default()
        };
        let want = adam_by_hand(style, 0.1, &grads, &start);

        let mut adam = Adam::<f64>::new(config, start.len()).unwrap();
        let mut p = start.clone();
        for (t, g) in grads.iter().enumerate() {
            adam.update(&mut p, g).unwrap();
            assert_eq!(adam.step, t as u64 + 1);
            if t == 0 {
                // The first step moves each parameter by about lr·sign(g).
                assert!(
                    (start[0] - p[0] - 0.1).abs() < 1e-6,
                    "{style:?}: first step {}",
                    start[0] - p[0]
                );
                assert!(
                    (p[1] - start[1] - 0.1).abs() < 1e-6,
                    "{style:?}: first step {}",
                    p[1] - start[1]
                );
                assert_eq!(p[2], start[2], "{style:?}: a zero gradient moved the parameter");
            }
        }
        let err = max_abs_diff(&p, &want);
        println!("[adam] {style:?} f64: max |diff| {err:.3e}");
        assert!(err <= 1e-14, "{style:?} f64: max |adam - hand| {err:.3e}");

        // f32: the same within its rounding.
        let mut adam32 = Adam::<f32>::new(config, start.len()).unwrap();
        let mut p32: Vec<f32> = start.iter().map(|&x| x as f32).collect();
        for g in &grads {
            let g32: Vec<f32> = g.iter().map(|&x| x as f32).collect();
            adam32.update(&mut p32, &g32).unwrap();
        }
        let p32: Vec<f64> = p32.iter().map(|&x| x as f64).collect();
        let err = max_abs_diff(&p32, &want);
        println!("[adam] {style:?} f32: max |diff| {err:.3e}");
        assert!(err <= 1e-6, "{style:?} f32: max |adam - hand| {err:.3e}");

        // The free function with the step's coefficients does the same.
        let mut p = start.clone();
        let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
        for (t, g) in grads.iter().enumerate() {
            let k = AdamCoefficients::<f64>::new(&config, t as u64 + 1);
            adam_update(&mut p, g, &mut m, &mut v, &k).unwrap();
        }
        assert!(max_abs_diff(&p, &want) <= 1e-14);
    }
}

#[test]
fn adam_styles_differ_where_eps_matters() {
    let start = vec![0.0];
    let grads = vec![vec![1e-9]; 3];
    let tf = adam_by_hand(EpsilonStyle::TensorFlow, 0.1, &grads, &start);
    let pt = adam_by_hand(EpsilonStyle::PyTorch, 0.1, &grads, &start);
    assert!((tf[0] - pt[0]).abs() > 1e-3 * tf[0].abs(), "{tf:?} vs {pt:?}");
}

// ---------------------------------------------------------------- errors

fn grads<'a>(weight_ih: &'a mut [f64], weight_hh: &'a mut [f64], bias: &'a mut [f64]) -> LstmGrads<'a, f64> {
    LstmGrads {
        weight_ih,
        weight_hh,
        bias,
    }
}

fn expect_err<T>(result: sincos_rs::Result<T>, names: &[&str]) -> Error {
    let err = match result {
        Ok(_) => panic!("expected an error naming {names:?}, got Ok"),
        Err(e) => e,
    };
    let text = err.to_string();
    for name in names {
        assert!(text.contains(name), "error {text:?} does not mention {name:?}");
    }
    err
}

#[test]
fn lstm_errors_name_the_argument() {
    let case = Case::new(3);
    expect_err(Lstm::<f64>::new(I, 0), &["hidden_size"]);
    expect_err(Lstm::<f64>::new(0, H), &["input_size"]);

    let mut lstm = Lstm::<f64>::new(I, H).unwrap();
    let (mut g_ih, mut g_hh, mut g_b) = (vec![0.0; 4 * H * I], vec![0.0; 4 * H * H], vec![0.0; 4 * H]);
    let err = expect_err(
        lstm.backward(
            case.params(),
            &case.r_out,
            None,
            None,
            grads(&mut g_ih, &mut g_hh, &mut g_b),
        ),
        &["backward", "forward"],
    );
    assert!(matches!(err, Error::Order(_)), "{err:?}");

    expect_err(lstm.forward(case.params(), &case.x[1..], B, T, None), &["x"]);
    let mut nan_x = case.x.clone();
    nan_x[7] = f64::NAN;
    let err = expect_err(lstm.forward(case.params(), &nan_x, B, T, None), &["x", "finite", "7"]);
    assert_eq!(err, Error::NonFinite { arg: "x", index: 7 });
    nan_x[7] = f64::NEG_INFINITY;
    expect_err(lstm.forward(case.params(), &nan_x, B, T, None), &["x", "finite"]);
    expect_err(lstm.forward(case.params(), &case.x, 0, T, None), &["batch"]);
    let short = &case.w_ih[..4 * H * I - 1];
    let p = LstmParams {
        weight_ih: short,
        ..case.params()
    };
    expect_err(lstm.forward(p, &case.x, B, T, None), &["weight_ih"]);
    let p = LstmParams {
        bias: &case.bias[..3],
        ..case.params()
    };
    expect_err(lstm.forward(p, &case.x, B, T, None), &["bias"]);
    expect_err(
        lstm.forward(case.params(), &case.x, B, T, Some((&case.h0[1..], &case.c0))),
        &["h0"],
    );
    let nan_c = vec![f64::NAN; B * H];
    expect_err(
        lstm.forward(case.params(), &case.x, B, T, Some((&case.h0, &nan_c))),
        &["c0"],
    );
    // Still no successful forward: backward is still refused.
    expect_err(
        lstm.backward(
            case.params(),
            &case.r_out,
            None,
            None,
            grads(&mut g_ih, &mut g_hh, &mut g_b),
        ),
        &["before forward"],
    );

    lstm.forward(case.params(), &case.x, B, T, None).unwrap();
    expect_err(
        lstm.backward(
            case.params(),
            &case.r_out[1..],
            None,
            None,
            grads(&mut g_ih, &mut g_hh, &mut g_b),
        ),
        &["d_out"],
    );
    let mut nan_d = case.r_out.clone();
    nan_d[0] = f64::NAN;
    expect_err(
        lstm.backward(case.params(), &nan_d, None, None, grads(&mut g_ih, &mut g_hh, &mut g_b)),
        &["d_out", "finite"],
    );
    expect_err(
        lstm.backward(
            case.params(),
            &case.r_out,
            Some((&case.r_h, &case.r_c[1..])),
            None,
            grads(&mut g_ih, &mut g_hh, &mut g_b),
        ),
        &["dc_n"],
    );
    let mut short_dx = vec![0.0; B * T * I - 1];
    expect_err(
        lstm.backward(
            case.params(),
            &case.r_out,
            None,
            Some(&mut short_dx),
            grads(&mut g_ih, &mut g_hh, &mut g_b),
        ),
        &["dx"],
    );
    let mut short_g = vec![0.0; 4 * H * H + 1];
    expect_err(
        lstm.backward(
            case.params(),
            &case.r_out,
            None,
            None,
            LstmGrads {
                weight_ih: &mut g_ih,
                weight_hh: &mut short_g,
                bias: &mut g_b,
            },
        ),
        &["grad weight_hh"],
    );
    // Nothing was written by the failed calls.
    assert!(g_ih.iter().chain(&g_hh).chain(&g_b).all(|&g| g == 0.0));
}

#[test]
fn seed_network_errors_name_the_argument() {
    let config = SeedConfig::default();
    let (batch, steps) = (2, 3);
    let (params, seq, res) = seed_case(config, batch, steps, 5);
    let adam = AdamConfig::default();

    for (bad, name) in [
        (
            SeedConfig {
                hidden_size: 0,
                ..config
            },
            "hidden_size",
        ),
        (
            SeedConfig {
                input_size: 0,
                ..config
            },
            "input_size",
        ),
        (
            SeedConfig {
                output_size: 0,
                ..config
            },
            "output_size",
        ),
    ] {
        expect_err(SeedNetwork::new(bad, adam, params.clone()), &[name]);
    }
    expect_err(SeedNetwork::new(config, adam, params[1..].to_vec()), &["params"]);
    let mut nan_params = params.clone();
    nan_params[3] = f64::NAN;
    expect_err(
        SeedNetwork::new(config, adam, nan_params.clone()),
        &["params", "finite"],
    );
    for (bad, name) in [
        (AdamConfig { lr: 0.0, ..adam }, "lr"),
        (AdamConfig { lr: -1.0, ..adam }, "lr"),
        (AdamConfig { beta1: 1.0, ..adam }, "beta1"),
        (AdamConfig { beta2: -0.1, ..adam }, "beta2"),
        (AdamConfig { eps: f64::NAN, ..adam }, "eps"),
    ] {
        expect_err(SeedNetwork::<f64>::new(config, bad, params.clone()), &[name]);
        expect_err(Adam::<f64>::new(bad, 3), &[name]);
    }

    let snapshot = |net: &SeedNetwork<f64>| {
        (
            net.params().to_vec(),
            net.adam().clone(),
            net.state().map(|(h, c)| (h.to_vec(), c.to_vec())),
        )
    };
    let mut net = SeedNetwork::new(config, adam, params.clone()).unwrap();
    net.train_step(&seq, &res, batch, steps).unwrap();
    let before = snapshot(&net);

    expect_err(net.train_step(&seq[1..], &res, batch, steps), &["seq"]);
    expect_err(net.train_step(&seq, &res[1..], batch, steps), &["res"]);
    let mut nan_seq = seq.clone();
    nan_seq[2] = f64::NAN;
    expect_err(net.train_step(&nan_seq, &res, batch, steps), &["seq", "finite"]);
    let mut inf_res = res.clone();
    inf_res[4] = f64::INFINITY;
    expect_err(net.train_step(&seq, &inf_res, batch, steps), &["res", "finite"]);
    expect_err(net.loss_and_grads(&nan_seq, &res, batch, steps), &["seq"]);
    expect_err(net.predict(&nan_seq, batch, steps), &["seq"]);
    expect_err(net.train_step(&seq, &res, batch, 0), &["time steps"]);
    // The carried state has batch 2: a batch of 1 must ask for a reset.
    let one = (&seq[..steps], &res[..steps]);
    expect_err(net.train_step(one.0, one.1, 1, steps), &["state", "reset_state"]);
    expect_err(net.set_params(&nan_params), &["params"]);
    expect_err(net.set_params(&params[2..]), &["params"]);
    let h = vec![0.0; batch * config.hidden_size + 1];
    expect_err(net.set_state(Some((&h, &h))), &["state h"]);
    let h = vec![0.0; batch * config.hidden_size];
    expect_err(net.set_state(Some((&h, &h[1..]))), &["state c"]);
    let n = config.num_params();
    expect_err(net.set_adam_state(&vec![0.0; n], &vec![-1.0; n], 3), &["adam v"]);
    expect_err(net.set_adam_state(&vec![0.0; n - 1], &vec![0.0; n], 3), &["adam m"]);

    // None of the failed calls changed anything.
    let after = snapshot(&net);
    assert_eq!(after.0, before.0, "params changed");
    assert_eq!(after.1.m, before.1.m, "adam m changed");
    assert_eq!(after.1.v, before.1.v, "adam v changed");
    assert_eq!(after.1.step, before.1.step, "adam step changed");
    assert_eq!(after.2, before.2, "state changed");
    net.reset_state();
    net.train_step(one.0, one.1, 1, steps).unwrap();
}

#[test]
fn adam_errors_leave_everything_unchanged() {
    let mut adam = Adam::<f64>::new(AdamConfig::default(), 3).unwrap();
    let mut p = vec![1.0, 2.0, 3.0];
    adam.update(&mut p, &[0.1, 0.2, 0.3]).unwrap();
    let (p0, m0, v0) = (p.clone(), adam.m.clone(), adam.v.clone());
    expect_err(adam.update(&mut p, &[0.1, 0.2]), &["grad"]);
    expect_err(adam.update(&mut p[..2], &[0.1, 0.2]), &["params"]);
    assert_eq!((p, adam.m, adam.v, adam.step), (p0, m0, v0, 1));
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Large enough that both kernels split work across threads.
    let (b, t, i, h) = (64, 6, 48, 160);
    let mut rng = SplitMix64(11);
    let (w_ih, w_hh, bias) = (
        random(&mut rng, 4 * h * i, 0.2),
        random(&mut rng, 4 * h * h, 0.2),
        random(&mut rng, 4 * h, 0.2),
    );
    let (x, d_out) = (random(&mut rng, b * t * i, 1.0), random(&mut rng, b * t * h, 1.0));
    let run = |kernel: Kernel, threads: usize| {
        sincos_rs::threads::set_num_threads(threads);
        let mut lstm = Lstm::new(i, h).unwrap();
        lstm.set_kernel(kernel);
        let p = LstmParams {
            weight_ih: &w_ih,
            weight_hh: &w_hh,
            bias: &bias,
        };
        lstm.forward(p, &x, b, t, None).unwrap();
        let (mut g_ih, mut g_hh, mut g_b) = (vec![0.0; 4 * h * i], vec![0.0; 4 * h * h], vec![0.0; 4 * h]);
        let mut dx = vec![0.0; b * t * i];
        lstm.backward(p, &d_out, None, Some(&mut dx), grads(&mut g_ih, &mut g_hh, &mut g_b))
            .unwrap();
        (lstm.output().to_vec(), g_ih, g_hh, g_b, dx)
    };
    for kernel in [Kernel::Lanes, Kernel::Gemm, Kernel::Rows, Kernel::Units] {
        let one = run(kernel, 1);
        let two = run(kernel, 2);
        let three = run(kernel, 3);
        sincos_rs::threads::set_num_threads(0);
        assert!(
            one == two && two == three,
            "{kernel:?}: results differ between 1, 2 and 3 threads"
        );
    }
}

// ---------------------------------------------------------------- the non-finite contract

#[test]
fn adam_refuses_eps_zero_and_settings_the_dtype_cannot_hold() {
    for (config, name) in [
        (
            AdamConfig {
                eps: 0.0,
                ..AdamConfig::default()
            },
            "eps",
        ),
        (
            AdamConfig {
                lr: 1e39, // finite in f64, inf in f32
                ..AdamConfig::default()
            },
            "lr",
        ),
        (
            AdamConfig {
                eps: 1e-50, // 0 in f32
                ..AdamConfig::default()
            },
            "eps",
        ),
    ] {
        expect_err(Adam::<f32>::new(config, 3), &[name]);
    }
    assert!(Adam::<f64>::new(
        AdamConfig {
            lr: 1e39,
            eps: 1e-50,
            ..AdamConfig::default()
        },
        3
    )
    .is_ok());
}

#[test]
fn adam_update_that_would_not_be_finite_changes_nothing() {
    let config = AdamConfig {
        lr: 1e38,
        ..AdamConfig::default()
    };
    let mut adam = Adam::<f32>::new(config, 3).unwrap();
    let mut p = vec![3e38_f32, 1.0, 2.0];
    let err = expect_err(adam.update(&mut p, &[-1.0, 1.0, 1.0]), &["parameter 0"]);
    assert!(matches!(err, Error::Diverged(_)));
    assert_eq!(
        (p, adam.m, adam.v, adam.step),
        (vec![3e38, 1.0, 2.0], vec![0.0; 3], vec![0.0; 3], 0)
    );
    // A gradient whose square overflows makes v inf: refused as well.
    let mut adam = Adam::<f32>::new(AdamConfig::default(), 1).unwrap();
    let mut p = vec![0.0_f32];
    assert_eq!(adam.update_if_finite(&mut p, &[1e30]).unwrap(), Some(0));
    assert_eq!((p[0], adam.v[0], adam.step), (0.0, 0.0, 0));
}

#[test]
fn seed_train_step_that_would_not_be_finite_changes_nothing() {
    let config = SeedConfig::default();
    let (batch, steps) = (4, 5);
    let (params, seq, res) = seed_case(config, batch, steps, 9);
    let mut net = SeedNetwork::new(config, AdamConfig::default(), params).unwrap();
    net.train_step(&seq, &res, batch, steps).unwrap();
    let before = |net: &SeedNetwork<f64>| {
        let state = net.state().map(|(h, c)| (h.to_vec(), c.to_vec()));
        let adam = net.adam();
        (net.params().to_vec(), adam.m.clone(), adam.v.clone(), adam.step, state)
    };
    let snapshot = before(&net);
    // A target whose square difference overflows f64: the cost is inf.
    let huge: Vec<f64> = res.iter().map(|&y| y * 1e300).collect();
    let err = expect_err(net.train_step(&seq, &huge, batch, steps), &["cost", "not finite"]);
    assert!(matches!(err, Error::Diverged(_)));
    assert!(before(&net) == snapshot, "a failed step changed the network");
    expect_err(net.loss_and_grads(&seq, &huge, batch, steps), &["cost"]);
    // First moments near the top of f64 with v = 0: the update overflows
    // although the cost and gradients are finite.
    let n = net.params().len();
    let (m, v) = (vec![1.7e308; n], vec![0.0; n]);
    net.set_adam_state(&m, &v, 0).unwrap();
    let snapshot = before(&net);
    let err = expect_err(
        net.train_step(&seq, &res, batch, steps),
        &["Adam update", "would not be finite"],
    );
    assert!(matches!(err, Error::Diverged(_)));
    assert!(before(&net) == snapshot, "a failed update changed the network");
}

#[test]
fn sizes_whose_buffers_overflow_are_refused() {
    expect_err(Lstm::<f32>::new(1, usize::MAX / 2), &["hidden_size"]);
    expect_err(
        SeedNetwork::<f32>::new(
            SeedConfig {
                input_size: 1,
                hidden_size: 1 << 40,
                output_size: 1,
            },
            AdamConfig::default(),
            vec![],
        ),
        &["sizes"],
    );
}
