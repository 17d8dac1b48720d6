//! Criterion benchmarks of the core: the LSTM layer (forward, backward through
//! time, and a full training step), the seed network's train step, and Adam.
//!
//! Run all of them with `cargo bench --bench lstm` (a few minutes on two
//! cores), one group with e.g. `cargo bench --bench lstm -- lstm_B64_T100_I32_H128`,
//! or a quick smoke run with `cargo bench --bench lstm -- --quick`.
//! Results land in `target/criterion/<group>/<bench>/<dtype>/new/estimates.json`
//! (times in ns); `benches/compare.py` reads the seed step from there to
//! report the Python call overhead.
//!
//! Shapes (the four of the performance issue; B batch, T steps, I input, H hidden):
//!
//! | group                      | what                                               |
//! |----------------------------|----------------------------------------------------|
//! | `seed_B50_T20_I1_H10_O1`   | `SeedNetwork::train_step`: Linear 1→10, LSTM 10, Linear 10→1, cost, BPTT, Adam |
//! | `lstm_B64_T100_I32_H128`   | LSTM layer: `forward`, `backward`, `step`          |
//! | `lstm_B64_T100_I128_H512`  | LSTM layer: `forward`, `backward`, `step`          |
//! | `lstm_B1_T1000_I1_H10`     | LSTM layer (one long series): `forward`, `backward`, `step` |
//! | `adam_1M`                  | `Adam::update` of 2^20 parameters                  |
//! | `sequences_B64_T100_I32_H128` | functional API, f32: padded vs lengths uniform in 1..T (fwd+bwd), reversed, `store=False` vs training forward |
//!
//! each in `float32` and `float64` (the bench id's last part).
//!
//! Throughput is reported as "elements" per second, where an element is one
//! floating-point operation (FLOP), a multiply-add counting as 2; read
//! `Gelem/s` as GFLOP/s. Only the matrix products are counted (the gate
//! non-linearities and Adam are O(B·T·H) or O(params), not counted):
//!
//! - LSTM forward: `2·B·T·4H·(I + H)` (input projection + recurrent product).
//! - LSTM backward: `2 × forward` (dz·W_hh for dh, dx = dz·W_ih, and the
//!   weight gradients dW_ih, dW_hh), i.e. `4·B·T·4H·(I + H)`.
//! - LSTM step = forward + backward + Adam: `3 × forward`.
//! - Seed train step: the LSTM step (I = H = 10) plus the two dense layers,
//!   forward `2·B·T·(I·H + H·O)` and twice that backward.
//! - Adam: elements are parameters updated (not FLOP).
//!
//! Per iteration: seed step 4.92 MFLOP; B64 T100 I32 H128 forward 1.05 GFLOP,
//! step 3.15 GFLOP; B64 T100 I128 H512 forward 16.8 GFLOP, step 50.3 GFLOP;
//! B1 T1000 I1 H10 forward 0.88 MFLOP, step 2.64 MFLOP (`benches/compare.py`
//! counts the same way).
//!
//! The layer benches start every forward from a zero state; backward gets a
//! fixed pseudo-random `d_out` and computes dx too (as the Python
//! `sr.LSTM.backward` does, and as PyTorch does when x requires grad).

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use sincos_rs::lstm::{functional, Sequences};
use sincos_rs::model::{demo_params, SplitMix64};
use sincos_rs::{Adam, AdamConfig, Lstm, LstmGrads, LstmParams, LstmShape, Real, SeedConfig, SeedNetwork};

/// One benchmark shape of the LSTM layer.
#[derive(Clone, Copy)]
struct LayerShape {
    batch: usize,
    steps: usize,
    input: usize,
    hidden: usize,
    /// How long one iteration takes, roughly: sets the sampling.
    size: Size,
}

impl LayerShape {
    fn name(&self) -> String {
        format!("lstm_B{}_T{}_I{}_H{}", self.batch, self.steps, self.input, self.hidden)
    }

    /// FLOP of one forward pass: `2·B·T·4H·(I + H)`.
    fn forward_flop(&self) -> u64 {
        2 * (self.batch * self.steps * 4 * self.hidden * (self.input + self.hidden)) as u64
    }
}

const LAYER_SHAPES: [LayerShape; 3] = [
    LayerShape {
        batch: 64,
        steps: 100,
        input: 32,
        hidden: 128,
        size: Size::Medium,
    },
    LayerShape {
        batch: 64,
        steps: 100,
        input: 128,
        hidden: 512,
        size: Size::Big,
    },
    LayerShape {
        batch: 1,
        steps: 1000,
        input: 1,
        hidden: 10,
        size: Size::Small,
    },
];

/// The seed program's shape: B 50, T 20, Linear 1 → 10, LSTM 10, Linear 10 → 1.
const SEED_BATCH: usize = 50;
const SEED_STEPS: usize = 20;

/// `n` pseudo-random values, uniform in [-scale, scale).
fn random<T: Real>(n: usize, scale: f64, seed: u64) -> Vec<T> {
    let mut rng = SplitMix64(seed);
    (0..n)
        .map(|_| T::from_f64(scale * (2.0 * rng.next_f64() - 1.0)))
        .collect()
}

/// How long one iteration of a bench takes, roughly.
#[derive(Clone, Copy)]
enum Size {
    /// Up to a few ms: criterion's default (linear) sampling.
    Small,
    /// Tens of ms: flat sampling (linear would need 1 + 2 + … + n iterations).
    Medium,
    /// ~0.1 s to ~1 s: few flat samples.
    Big,
}

/// Modest sampling so that the whole suite takes a few minutes.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, size: Size) {
    match size {
        Size::Small => group
            .sample_size(30)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2)),
        Size::Medium => group
            .sample_size(15)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3)),
        Size::Big => group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4)),
    };
}

/// An LSTM layer with its weights, gradients and optimiser, all flat:
/// `[weight_ih (4H, I) | weight_hh (4H, H) | bias (4H,)]`.
struct LayerBench<T> {
    shape: LayerShape,
    lstm: Lstm<T>,
    params: Vec<T>,
    grads: Vec<T>,
    adam: Adam<T>,
    x: Vec<T>,
    d_out: Vec<T>,
    dx: Vec<T>,
}

/// Splits a flat `[weight_ih | weight_hh | bias]` vector of a layer.
fn split_at<T>(flat: &[T], input: usize, hidden: usize) -> (&[T], &[T], &[T]) {
    let (w_ih, rest) = flat.split_at(4 * hidden * input);
    let (w_hh, bias) = rest.split_at(4 * hidden * hidden);
    (w_ih, w_hh, bias)
}

fn split_at_mut<T>(flat: &mut [T], input: usize, hidden: usize) -> (&mut [T], &mut [T], &mut [T]) {
    let (w_ih, rest) = flat.split_at_mut(4 * hidden * input);
    let (w_hh, bias) = rest.split_at_mut(4 * hidden * hidden);
    (w_ih, w_hh, bias)
}

impl<T: Real> LayerBench<T> {
    fn new(shape: LayerShape) -> Self {
        let LayerShape {
            batch,
            steps,
            input,
            hidden,
            ..
        } = shape;
        let n_params = 4 * hidden * (input + hidden + 1);
        let config = AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        };
        LayerBench {
            shape,
            lstm: Lstm::new(input, hidden).expect("valid sizes"),
            // PyTorch's nn.LSTM initialisation range: ±1/√H.
            params: random(n_params, 1.0 / (hidden as f64).sqrt(), 1),
            grads: vec![T::ZERO; n_params],
            adam: Adam::new(config, n_params).expect("valid Adam config"),
            x: random(batch * steps * input, 1.0, 2),
            d_out: random(batch * steps * hidden, 1.0, 3),
            dx: vec![T::ZERO; batch * steps * input],
        }
    }

    fn forward(&mut self) {
        let s = self.shape;
        let (weight_ih, weight_hh, bias) = split_at(&self.params, s.input, s.hidden);
        let p = LstmParams {
            weight_ih,
            weight_hh,
            bias,
        };
        self.lstm
            .forward(p, black_box(&self.x), s.batch, s.steps, None)
            .expect("forward");
        black_box(self.lstm.output());
    }

    fn backward(&mut self) {
        let s = self.shape;
        let (weight_ih, weight_hh, bias) = split_at(&self.params, s.input, s.hidden);
        let p = LstmParams {
            weight_ih,
            weight_hh,
            bias,
        };
        let (g_ih, g_hh, g_b) = split_at_mut(&mut self.grads, s.input, s.hidden);
        let grads = LstmGrads {
            weight_ih: g_ih,
            weight_hh: g_hh,
            bias: g_b,
        };
        self.lstm
            .backward(p, black_box(&self.d_out), None, Some(&mut self.dx), grads)
            .expect("backward");
        black_box(&self.grads);
    }

    /// One training iteration: forward, backward, Adam over all weights.
    fn step(&mut self) {
        self.forward();
        self.backward();
        self.adam.update(&mut self.params, &self.grads).expect("adam");
        black_box(&self.params);
    }
}

fn bench_layer<T: Real>(c: &mut Criterion, shape: LayerShape) {
    let mut group = c.benchmark_group(shape.name());
    configure(&mut group, shape.size);
    let fwd = shape.forward_flop();
    let mut bench = LayerBench::<T>::new(shape);

    group.throughput(Throughput::Elements(fwd));
    group.bench_function(BenchmarkId::new("forward", T::NAME), |b| b.iter(|| bench.forward()));

    // Backward needs a forward pass before it; backward does not change what
    // forward saved, so one forward serves every iteration.
    bench.forward();
    group.throughput(Throughput::Elements(2 * fwd));
    group.bench_function(BenchmarkId::new("backward", T::NAME), |b| b.iter(|| bench.backward()));

    group.throughput(Throughput::Elements(3 * fwd));
    group.bench_function(BenchmarkId::new("step", T::NAME), |b| b.iter(|| bench.step()));
    group.finish();
}

/// FLOP of one seed train step (see the module docs).
fn seed_flop(cfg: &SeedConfig, batch: usize, steps: usize) -> u64 {
    let lstm = LayerShape {
        batch,
        steps,
        input: cfg.hidden_size,
        hidden: cfg.hidden_size,
        size: Size::Small,
    };
    let dense = 2 * batch * steps * (cfg.input_size * cfg.hidden_size + cfg.hidden_size * cfg.output_size);
    3 * (lstm.forward_flop() + dense as u64)
}

fn bench_seed<T: Real>(c: &mut Criterion) {
    let cfg = SeedConfig::default();
    let (batch, steps) = (SEED_BATCH, SEED_STEPS);
    let mut group = c.benchmark_group(format!(
        "seed_B{batch}_T{steps}_I{}_H{}_O{}",
        cfg.input_size, cfg.hidden_size, cfg.output_size
    ));
    configure(&mut group, Size::Small);
    group.throughput(Throughput::Elements(seed_flop(&cfg, batch, steps)));

    // The seed's first batch: xs = arange(B·T).reshape(B, T) / (10π), sin → cos.
    let xs: Vec<f64> = (0..batch * steps)
        .map(|k| k as f64 / (10.0 * std::f64::consts::PI))
        .collect();
    let seq: Vec<T> = xs.iter().map(|&x| T::from_f64(x.sin())).collect();
    let res: Vec<T> = xs.iter().map(|&x| T::from_f64(x.cos())).collect();
    let mut net = SeedNetwork::new(cfg, AdamConfig::default(), demo_params::<T>(&cfg, 1.0, 0)).expect("seed network");

    // The state carries over from one iteration to the next, as in training.
    group.bench_function(BenchmarkId::new("train_step", T::NAME), |b| {
        b.iter(|| {
            net.train_step(black_box(&seq), black_box(&res), batch, steps)
                .expect("train_step")
        })
    });
    group.finish();
}

fn bench_adam<T: Real>(c: &mut Criterion) {
    const N: usize = 1 << 20;
    let mut group = c.benchmark_group("adam_1M");
    configure(&mut group, Size::Small);
    group.throughput(Throughput::Elements(N as u64));
    let mut params: Vec<T> = random(N, 1.0, 4);
    let grads: Vec<T> = random(N, 1e-2, 5);
    let mut adam = Adam::new(AdamConfig::default(), N).expect("valid Adam config");
    group.bench_function(BenchmarkId::new("update", T::NAME), |b| {
        b.iter(|| adam.update(black_box(&mut params), black_box(&grads)).expect("adam"))
    });
    group.finish();
}

fn seed(c: &mut Criterion) {
    bench_seed::<f32>(c);
    bench_seed::<f64>(c);
}

fn layers(c: &mut Criterion) {
    for shape in LAYER_SHAPES {
        bench_layer::<f32>(c, shape);
        bench_layer::<f64>(c, shape);
    }
}

fn adam(c: &mut Criterion) {
    bench_adam::<f32>(c);
    bench_adam::<f64>(c);
}

/// Real sequences on the functional API, B64 T100 I32 H128 float32: the
/// padded batch against lengths uniform in 1..T (fwd+bwd each), reversed
/// rows, and the forward that saves nothing against the training forward.
fn sequences(c: &mut Criterion) {
    let s = LstmShape {
        batch: 64,
        steps: 100,
        input: 32,
        hidden: 128,
    };
    let mut group = c.benchmark_group("sequences_B64_T100_I32_H128");
    configure(&mut group, Size::Medium);
    let params: Vec<f32> = random(
        4 * s.hidden * (s.input + s.hidden + 1),
        1.0 / (s.hidden as f64).sqrt(),
        1,
    );
    let (weight_ih, weight_hh, bias) = split_at(&params, s.input, s.hidden);
    let p = LstmParams {
        weight_ih,
        weight_hh,
        bias,
    };
    let x: Vec<f32> = random(s.batch * s.steps * s.input, 1.0, 2);
    let d_out: Vec<f32> = random(s.batch * s.steps * s.hidden, 1.0, 3);
    let mut rng = SplitMix64(4);
    let lengths: Vec<usize> = (0..s.batch)
        .map(|_| 1 + (rng.next_u64() % s.steps as u64) as usize)
        .collect();
    let mut out = vec![0.0f32; s.batch * s.steps * s.hidden];
    let (mut h_n, mut c_n) = (vec![0.0f32; s.batch * s.hidden], vec![0.0f32; s.batch * s.hidden]);
    let mut saved = vec![0.0f32; functional::saved_len::<f32>(s)];
    let mut grads = vec![0.0f32; params.len()];
    let mut dx = vec![0.0f32; x.len()];
    let (mut dh0, mut dc0) = (h_n.clone(), c_n.clone());
    let mut run = |seq: Sequences<'_>, backward: bool, store: bool| {
        let saved_arg = store.then_some(&mut saved[..]);
        functional::forward(p, s, seq, &x, None, &mut out, &mut h_n, &mut c_n, saved_arg).expect("forward");
        if backward {
            let (g_ih, g_hh, g_b) = split_at_mut(&mut grads, s.input, s.hidden);
            let g = LstmGrads {
                weight_ih: g_ih,
                weight_hh: g_hh,
                bias: g_b,
            };
            functional::backward(
                p,
                s,
                seq,
                &x,
                None,
                &saved,
                &d_out,
                None,
                Some(&mut dx),
                g,
                &mut dh0,
                &mut dc0,
            )
            .expect("backward");
        }
        black_box(&out);
    };
    let with_lengths = Sequences {
        lengths: Some(&lengths),
        reverse: false,
    };
    let reversed = Sequences {
        lengths: Some(&lengths),
        reverse: true,
    };
    group.bench_function("padded_fwd_bwd", |b| b.iter(|| run(Sequences::WHOLE, true, true)));
    group.bench_function("lengths_fwd_bwd", |b| b.iter(|| run(with_lengths, true, true)));
    group.bench_function("lengths_reverse_fwd_bwd", |b| b.iter(|| run(reversed, true, true)));
    group.bench_function("training_forward", |b| b.iter(|| run(Sequences::WHOLE, false, true)));
    group.bench_function("store_false_forward", |b| {
        b.iter(|| run(Sequences::WHOLE, false, false))
    });
    group.finish();
}

criterion_group!(benches, seed, layers, adam, sequences);
criterion_main!(benches);
