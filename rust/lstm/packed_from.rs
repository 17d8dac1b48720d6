//! What a kernel's packed weight panels were made from, so calls with the
//! same weights (inference, a stream of one-step calls) pack them once.
//!
//! Reuse needs proof: a full copy of the weights, compared bit for bit (the
//! same bits give the same panels). Keeping that copy costs a copy of the
//! weights per call, which training (new weights every call) would pay for
//! nothing; so after packing, only a sample of the weights is kept, and the
//! full copy is made once a call finds its weights equal to the sample of
//! the call before (the weights look settled). Training pays a compare of
//! the sample; inference packs twice, then never.

use crate::simd::Real;

/// Values of the sample (spread over each part).
const SAMPLE: usize = 64;
/// Values compared between exits (see [`PackedFrom::same_as`]).
const CHUNK: usize = 256;

/// The weights (in parts, e.g. W_ih, W_hh, the bias) and the layout key
/// (shape, which panels were made) the panels were packed from: all of
/// them (`full`) or a sample.
pub(crate) struct PackedFrom<T> {
    key: Vec<usize>,
    lens: Vec<usize>,
    full: bool,
    weights: Vec<T>,
}

impl<T: Real> PackedFrom<T> {
    pub(crate) fn new() -> Self {
        PackedFrom {
            key: Vec::new(),
            lens: Vec::new(),
            full: false,
            weights: Vec::new(),
        }
    }

    /// Whether the panels were packed with this `key` from these `parts`,
    /// bit for bit (proven only by a full copy).
    pub(crate) fn same_as(&self, key: &[usize], parts: &[&[T]]) -> bool {
        if !self.full || !self.same_layout(key, parts) {
            return false;
        }
        // Differences ORed together over chunks, with an exit between
        // chunks: a chunk vectorises (a B1 H10 `step` compares its 880
        // weights every call).
        let mut rest = &self.weights[..];
        for part in parts {
            let (mine, tail) = rest.split_at(part.len());
            for (a, b) in mine.chunks(CHUNK).zip(part.chunks(CHUNK)) {
                if a.iter().zip(b).fold(0, |d, (x, y)| d | (x.bits() ^ y.bits())) != 0 {
                    return false;
                }
            }
            rest = tail;
        }
        true
    }

    /// Records what the panels were just packed from: a full copy if the
    /// sample kept by the call before matches these weights, else a sample.
    pub(crate) fn remember(&mut self, key: &[usize], parts: &[&[T]]) {
        let settled = !self.full && self.same_layout(key, parts) && {
            let mut kept = self.weights.iter();
            parts
                .iter()
                .all(|part| sample(part).all(|v| kept.next().is_some_and(|k| k.bits() == v.bits())))
        };
        self.key.clear();
        self.key.extend_from_slice(key);
        self.lens.clear();
        self.lens.extend(parts.iter().map(|p| p.len()));
        self.weights.clear();
        self.full = settled;
        for part in parts {
            if settled {
                self.weights.extend_from_slice(part);
            } else {
                self.weights.extend(sample(part));
            }
        }
    }

    fn same_layout(&self, key: &[usize], parts: &[&[T]]) -> bool {
        self.key == key && self.lens.len() == parts.len() && self.lens.iter().zip(parts).all(|(&n, p)| n == p.len())
    }
}

/// At most [`SAMPLE`] values of `part`, evenly spaced.
fn sample<T: Real>(part: &[T]) -> impl Iterator<Item = T> + '_ {
    let step = part.len().div_ceil(SAMPLE).max(1);
    part.iter().step_by(step).copied()
}
