"""Thread scaling of the kernels, 1 → N threads, per region of the shape grid
(issue 23: "the measured 1 → 2 thread scaling per grid region").

Through the NumPy API (``sincos_rs.LSTM``: training = forward + backward,
inference = ``forward(store=False)``), one layer, I = H, T = 50, float32.
The thread counts are timed interleaved in one process (``timing.interleave``),
so both see the same machine; the speedup is the ratio of medians.

    python benches/scaling.py --out benches/results      # writes scaling-<date>.md/json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
import sincos_rs as sr  # noqa: E402, I001
import timing  # noqa: E402

#: Regions of the grid and a cell for each: small/large batch × small/large H.
CELLS = {
    "B1, small H": (1, 64),
    "B1, large H": (1, 512),
    "B8, medium H": (8, 256),
    "B16, large H": (16, 1024),
    "B64, small H": (64, 64),
    "B64, large H": (64, 512),
    "B256, medium H": (256, 256),
}


def measure(threads: list[int], budget: timing.Budget, steps: int) -> list[dict[str, object]]:
    rows = []
    for region, (batch, hidden) in CELLS.items():
        weights = peers.Weights.random(hidden, hidden, "float32")
        x = peers.random_input(batch, steps, hidden, "float32")
        for mode, train in (("training", True), ("inference", False)):
            runner = peers.numpy_api_runner(weights, x, train)
            contenders = []
            for n in threads:
                contenders.append(
                    timing.Contender(
                        name=f"{n} threads",
                        run=runner.step,
                        prepare=lambda n=n: sr.set_num_threads(n),
                    )
                )
            for c in contenders:  # warm-up at each count
                c.prepare()
                c.run()
            samples = timing.interleave(contenders, budget)
            medians = {n: samples[f"{n} threads"].median for n in threads}
            rows.append(
                {
                    "region": region,
                    "batch": batch,
                    "hidden": hidden,
                    "mode": mode,
                    "median": medians,
                }
            )
            speedups = ", ".join(
                f"{medians[threads[0]] / medians[n]:.2f}x at {n}" for n in threads[1:]
            )
            print(f"{region:16s} B{batch} H{hidden} {mode:9s} "
                  + " ".join(f"{n}t {medians[n] * 1e3:.2f} ms" for n in threads)
                  + f"  ({speedups})", flush=True)  # fmt: skip
    sr.set_num_threads(0)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", default=None, help="counts to compare (default 1 and all cores)"
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cores = timing.usable_cores()
    threads = [int(n) for n in args.threads.split(",")] if args.threads else [1, cores]
    budget = timing.Budget(seconds=args.budget, rounds=args.rounds)
    facts = timing.machine_facts()
    rows = measure(threads, budget, args.steps)
    if args.out:
        stem = args.out / f"scaling-{dt.date.today().isoformat()}"
        command = "python benches/scaling.py " + " ".join(sys.argv[1:])
        stem.with_suffix(".json").write_text(
            json.dumps({"command": command, "facts": facts, "rows": rows}, indent=1)
        )
        machine = f"{facts.get('cpu_model')}, {sr.simd_level()}"
        lines = [
            f"# Thread scaling ({machine}, T = {args.steps}, float32)",
            "",
            f"`{command}`",
            "",
            "| region | cell | mode | "
            + " | ".join(f"{n} threads" for n in threads)
            + " | speedup |",
            "|---|---|---|" + "---|" * len(threads) + "---|",
        ]
        for r in rows:
            med = r["median"]
            lines.append(
                f"| {r['region']} | B{r['batch']} H{r['hidden']} | {r['mode']} | "
                + " | ".join(f"{med[n] * 1e3:.3g} ms" for n in threads)
                + f" | {med[threads[0]] / med[threads[-1]]:.2f}× |"
            )
        stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
        print(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
