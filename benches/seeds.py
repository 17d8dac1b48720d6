"""Does the default run learn, whatever the seed? The issue's learning bar.

Runs ``python -m sincos_rs.train``'s default training (400 iterations, the
seed program's settings) in-process for seeds 0-9 and prints, per seed, the
mean cost over the last 20 iterations; then their median and maximum, and
whether the bar holds: median < 0.1 and every seed < 0.5.

For comparison, TensorFlow over 50 seeds gives for the same figure: median
0.043, 90th percentile 0.18, worst 0.43.

    python benches/seeds.py                 # seeds 0-9, the defaults
    python benches/seeds.py --seeds 50 --dtype float64 --backend numpy

Exit status 0 when the bar holds, 1 when it does not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from sincos_rs.train import TrainConfig, train

MEDIAN_BAR = 0.1
WORST_BAR = 0.5
LAST = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default: 10)")
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--backend", choices=("rust", "numpy"), default="rust")
    args = parser.parse_args(argv)

    print(f"mean cost over the last {LAST} of {args.iterations} iterations")
    print(f"{'seed':>4}  {'mean last 20':>12}  {'first cost':>10}  {'ratio':>6}  {'time':>6}")
    figures = []
    for seed in range(args.seeds):
        config = TrainConfig(
            iterations=args.iterations, seed=seed, dtype=args.dtype, backend=args.backend
        )
        start = time.perf_counter()
        result = train(config)
        elapsed = time.perf_counter() - start
        mean_last = result.mean_last(LAST)
        figures.append(mean_last)
        ratio = result.costs[0] / mean_last
        print(
            f"{seed:>4}  {mean_last:>12.4f}  {result.costs[0]:>10.4f}  {ratio:>6.0f}  "
            f"{elapsed:>5.2f}s",
            flush=True,
        )

    median, worst = statistics.median(figures), max(figures)
    holds = median < MEDIAN_BAR and worst < WORST_BAR
    print(f"median {median:.4f} (bar < {MEDIAN_BAR}), max {worst:.4f} (bar < {WORST_BAR})")
    print(f"bar {'holds' if holds else 'FAILS'} ({args.backend}, {args.dtype})")
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
