//! Runs one benchmark shape's work N times, for profilers: instruction
//! counts do not depend on what else the machine runs, wall-clock times do.
//!
//! ```text
//! cargo build --release --example profile_step
//! valgrind --tool=callgrind target/release/examples/profile_step seed f32 step 20
//! SINCOS_RS_SIMD=baseline perf record target/release/examples/profile_step h128 f64 forward 5
//! ```
//!
//! Shapes as in `benches/lstm.rs`: `seed` (the seed network's train step,
//! B50 T20 1→10→1), `long` (B1 T1000 I1 H10), `h128` (B64 T100 I32 H128),
//! `h512` (B64 T100 I128 H512), `small` (B50 T20 I10 H10, `sr.LSTM(10,
//! 10)`), and `long64` (B1 T1000 I8 H64: the rows kernel past one vector
//! per gate), or any `B,T,I,H`. Parts: `forward`, `backward` (after one untimed forward; with dx),
//! `step` (forward + backward + Adam; the only part of `seed`). Prints the
//! instance (`simd_level`), the mean time per run, and a hash of the
//! results' bits, so two builds can be checked to compute the same bits.
//!
//! `PROFILE_PAUSE_US=300` busy-waits that long between runs (not timed),
//! as the rest of a PyTorch model keeps the calling thread busy between
//! the LSTM's passes: the kernels' helper threads have parked by then.

use std::hint::black_box;
use std::time::Instant;

use sincos_rs::model::{demo_params, SplitMix64};
use sincos_rs::{Adam, AdamConfig, Kernel, Lstm, LstmGrads, LstmParams, Real, SeedConfig, SeedNetwork};

fn random<T: Real>(n: usize, scale: f64, seed: u64) -> Vec<T> {
    let mut rng = SplitMix64(seed);
    (0..n)
        .map(|_| T::from_f64(scale * (2.0 * rng.next_f64() - 1.0)))
        .collect()
}

/// FNV-1a over the bits of `values`, chained from `h`.
fn hash<T: Real>(mut h: u64, values: &[T]) -> u64 {
    for v in values {
        h = (h ^ v.to_f64().to_bits()).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Mean seconds per call of `work`, over `reps` calls, each after a busy
/// pause of `PROFILE_PAUSE_US` microseconds (untimed) if that is set.
fn timed(reps: usize, mut work: impl FnMut()) -> f64 {
    let pause = std::env::var("PROFILE_PAUSE_US")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(std::time::Duration::from_micros);
    let mut total = std::time::Duration::ZERO;
    for _ in 0..reps {
        if let Some(pause) = pause {
            let start = Instant::now();
            while start.elapsed() < pause {
                std::hint::spin_loop();
            }
        }
        let start = Instant::now();
        work();
        total += start.elapsed();
    }
    total.as_secs_f64() / reps as f64
}

/// Runs `part` of `shape` `reps` times; returns seconds per run and a hash
/// of the results.
fn run<T: Real>(shape: &str, part: &str, reps: usize) -> (f64, u64) {
    if shape == "seed" {
        let cfg = SeedConfig::default();
        let (batch, steps) = (50, 20);
        let xs: Vec<f64> = (0..batch * steps)
            .map(|k| k as f64 / (10.0 * std::f64::consts::PI))
            .collect();
        let seq: Vec<T> = xs.iter().map(|&x| T::from_f64(x.sin())).collect();
        let res: Vec<T> = xs.iter().map(|&x| T::from_f64(x.cos())).collect();
        let mut net =
            SeedNetwork::new(cfg, AdamConfig::default(), demo_params::<T>(&cfg, 1.0, 0)).expect("seed network");
        let seconds = timed(reps, || {
            black_box(net.train_step(&seq, &res, batch, steps).expect("train_step"));
        });
        return (seconds, hash(0xcbf2_9ce4_8422_2325, net.params()));
    }
    let (batch, steps, input, hidden) = match shape {
        "long" => (1, 1000, 1, 10),
        "h128" => (64, 100, 32, 128),
        "h512" => (64, 100, 128, 512),
        "small" => (50, 20, 10, 10),
        "long64" => (1, 1000, 8, 64),
        // Any other shape as B,T,I,H (e.g. 1,50,512,512).
        _ => match shape
            .split(',')
            .map(str::parse::<usize>)
            .collect::<Result<Vec<_>, _>>()
            .as_deref()
        {
            Ok(&[b, t, i, h]) => (b, t, i, h),
            _ => panic!("unknown shape {shape}: seed, long, long64, h128, h512, small or B,T,I,H"),
        },
    };
    let (n_ih, n_hh, n_b) = (4 * hidden * input, 4 * hidden * hidden, 4 * hidden);
    let mut params: Vec<T> = random(n_ih + n_hh + n_b, 1.0 / (hidden as f64).sqrt(), 1);
    let mut grads = vec![T::ZERO; params.len()];
    let x: Vec<T> = random(batch * steps * input, 1.0, 2);
    let d_out: Vec<T> = random(batch * steps * hidden, 1.0, 3);
    let mut dx = vec![T::ZERO; x.len()];
    let mut lstm = Lstm::new(input, hidden).expect("sizes");
    // SINCOS_RS_KERNEL=lanes|rows|gemm|units forces a kernel (default: the layer's choice).
    match std::env::var("SINCOS_RS_KERNEL").as_deref() {
        Ok("lanes") => lstm.set_kernel(Kernel::Lanes),
        Ok("rows") => lstm.set_kernel(Kernel::Rows),
        Ok("gemm") => lstm.set_kernel(Kernel::Gemm),
        Ok("units") => lstm.set_kernel(Kernel::Units),
        _ => {}
    }
    let mut adam = Adam::new(
        AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
        params.len(),
    )
    .expect("adam");
    let mut once = |params: &[T], grads: &mut [T], forward: bool, backward: bool| {
        let (w_ih, rest) = params.split_at(n_ih);
        let (w_hh, bias) = rest.split_at(n_hh);
        let p = LstmParams {
            weight_ih: w_ih,
            weight_hh: w_hh,
            bias,
        };
        if forward {
            lstm.forward(p, &x, batch, steps, None).expect("forward");
        }
        if backward {
            let (g_ih, rest) = grads.split_at_mut(n_ih);
            let (g_hh, g_b) = rest.split_at_mut(n_hh);
            let g = LstmGrads {
                weight_ih: g_ih,
                weight_hh: g_hh,
                bias: g_b,
            };
            lstm.backward(p, &d_out, None, Some(&mut dx), g).expect("backward");
        }
    };
    if part == "backward" {
        once(&params, &mut grads, true, false);
    }
    let seconds = timed(reps, || {
        match part {
            "forward" => once(&params, &mut grads, true, false),
            "backward" => once(&params, &mut grads, false, true),
            "step" => {
                once(&params, &mut grads, true, true);
                adam.update(&mut params, &grads).expect("adam");
            }
            _ => panic!("unknown part {part}: forward, backward or step"),
        }
        black_box(&grads);
    });
    let h = hash(0xcbf2_9ce4_8422_2325, lstm.output());
    (seconds, hash(hash(h, &grads), &dx))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let (shape, dtype, part) = (arg(0, "seed"), arg(1, "f32"), arg(2, "step"));
    let reps: usize = arg(3, "10").parse().expect("a repetition count");
    let (seconds, bits) = match dtype.as_str() {
        "f32" | "float32" => run::<f32>(&shape, &part, reps),
        "f64" | "float64" => run::<f64>(&shape, &part, reps),
        _ => panic!("unknown dtype {dtype}: f32 or f64"),
    };
    println!(
        "{shape} {dtype} {part} x{reps} [{}]: {:.1} us per run, results {bits:016x}",
        sincos_rs::simd_level(),
        seconds * 1e6
    );
}
