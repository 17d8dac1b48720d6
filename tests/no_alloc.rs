//! A steady-state training step allocates nothing: every buffer is sized on
//! the first call and reused. Counted with a global allocator that tallies
//! allocations; `harness = false` (see Cargo.toml), so no test-harness
//! thread allocates beside the checks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sincos_rs::adam::{Adam, AdamConfig};
use sincos_rs::model::{demo_params, SeedConfig, SeedNetwork};
use sincos_rs::{Lstm, LstmGrads, LstmParams};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(mut f: impl FnMut()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

fn wave(n: usize, phase: f64) -> Vec<f32> {
    (0..n).map(|i| ((i as f64) / 31.4 + phase).sin() as f32).collect()
}

fn main() {
    seed_train_step_does_not_allocate_in_steady_state();
    lstm_layer_step_does_not_allocate_in_steady_state();
    println!("no_alloc: 2 passed, 0 failed");
}

fn seed_train_step_does_not_allocate_in_steady_state() {
    for threads in [1, 2] {
        sincos_rs::threads::set_num_threads(threads);
        let config = SeedConfig::default();
        let mut net = SeedNetwork::<f32>::new(config, AdamConfig::default(), demo_params(&config, 1.0, 7)).unwrap();
        let (b, t) = (50, 20);
        let (seq, res) = (wave(b * t, 0.0), wave(b * t, 1.0));
        for _ in 0..3 {
            net.train_step(&seq, &res, b, t).unwrap();
        }
        let n = allocations_during(|| {
            for _ in 0..20 {
                net.train_step(&seq, &res, b, t).unwrap();
            }
        });
        assert_eq!(
            n, 0,
            "{n} allocations in 20 steady-state seed steps with {threads} thread(s)"
        );
    }
    sincos_rs::threads::set_num_threads(0);
}

fn lstm_layer_step_does_not_allocate_in_steady_state() {
    // The lanes kernel small, large enough to run on two threads, and large
    // enough to split its layout copies too (B·T·H >= 2^18); the rows kernel
    // (one long series). Enough steps that an allocation every few dozen
    // parallel passes (rayon's job queue made one) cannot slip through:
    // a lanes step forks four to eight times.
    const STEPS: usize = 30;
    let shapes = [
        (50usize, 20usize, 1usize, 10usize),
        (64, 10, 32, 128),
        (64, 32, 1, 128),
        (1, 200, 1, 10),
        // The units kernel: one row split by unit blocks across threads,
        // and a few rows.
        (1, 50, 16, 256),
        (8, 20, 64, 128),
    ];
    for &(b, t, i, h) in &shapes {
        let mut layer = Lstm::<f32>::new(i, h).unwrap();
        let (w_ih, w_hh, bias) = (wave(4 * h * i, 0.1), wave(4 * h * h, 0.2), wave(4 * h, 0.3));
        let mut params = [w_ih, w_hh, bias].concat();
        let mut grads = vec![0.0f32; params.len()];
        let mut adam = Adam::<f32>::new(AdamConfig::default(), params.len()).unwrap();
        let (x, d_out) = (wave(b * t * i, 0.4), wave(b * t * h, 0.5));
        let mut dx = vec![0.0f32; b * t * i];
        let mut step = |params: &mut Vec<f32>, grads: &mut Vec<f32>| {
            let (a, rest) = params.split_at(4 * h * i);
            let (w, bias) = rest.split_at(4 * h * h);
            let p = LstmParams {
                weight_ih: a,
                weight_hh: w,
                bias,
            };
            layer.forward(p, &x, b, t, None).unwrap();
            let (ga, rest) = grads.split_at_mut(4 * h * i);
            let (gw, gb) = rest.split_at_mut(4 * h * h);
            let g = LstmGrads {
                weight_ih: ga,
                weight_hh: gw,
                bias: gb,
            };
            layer.backward(p, &d_out, None, Some(&mut dx), g).unwrap();
            adam.update(params, grads).unwrap();
        };
        for _ in 0..3 {
            step(&mut params, &mut grads);
        }
        let n = allocations_during(|| {
            for _ in 0..STEPS {
                step(&mut params, &mut grads);
            }
        });
        assert_eq!(
            n, 0,
            "{n} allocations in {STEPS} steady-state steps of LSTM B{b} T{t} I{i} H{h}"
        );
    }
}
