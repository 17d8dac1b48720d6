"""The grid's report (``grid.py`` measures, this file reads its JSON): per
instruction set and mode, a markdown table of every cell (times, the ratio
to the faster peer, the share of the machine's limits, the cells below
target) and a heat map of the ratios; then the instruction sets compared.

Derived from the raw medians, per cell and per contender of ours:

- ratio = the faster peer's median / ours (above 1: we are faster);
- FMA share = the cell's FLOP / our time / the FMA peak of the cores used
  (``limits.py``, the cell's dtype);
- streaming floor = passes x T x bytes(W_hh) / read bandwidth at a working
  set of bytes(W_hh) (interpolated), the time to read the recurrent
  weights once per step and pass; its share = floor / our time (100 %: at
  the floor), shown for B <= 8, where it is the limit;
- the torch module's overhead bound (issue 23 item 4): module time <=
  1.1 x NumPy API time + 100 us.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from limits import interpolate_bandwidth

OURS = ("module", "numpy_api")
LABELS = {
    "module": "sincos_rs.torch.LSTM",
    "numpy_api": "NumPy API",
    "torch": "torch.nn.LSTM",
    "jax": "JAX",
    "onnxruntime": "ONNX Runtime",
}

TARGETS_TEXT = [
    "every cell >= 1.0x the faster peer (torch or JAX in training, torch or ONNX Runtime "
    "in inference)",
    "every cell with H <= 64 >= 2x",
    "B >= 64 and H >= 256: >= 60 % of the FMA peak of the cores used",
    "B <= 8 and H >= 256: within 2x of the weight-streaming floor (share >= 50 %)",
    "training: the torch module <= 1.1 x the NumPy API + 100 us (issue 23 item 4)",
    "the default instance never more than 5 % slower than a lower one at any cell",
]
OVERHEAD_FACTOR, OVERHEAD_SECONDS = 1.1, 100e-6
ISA_SLOWER_LIMIT = 0.05


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def fmt_share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def fma_peak(limits: dict[str, Any], dtype: str) -> float:
    """The FMA peak (GFLOP/s) a cell of ``dtype`` is set against (``limits.py``)."""
    return limits["fma_gflops"][dtype]["peak"]


def derive(record: dict[str, Any], limits: dict[str, Any], who: str) -> dict[str, Any] | None:
    """Ratio, shares and targets of contender ``who`` in one cell (None if
    the cell was aborted or ``who`` has no time)."""
    samples = record.get("samples") or {}
    if record.get("error") or who not in samples:
        return None
    cell = record["cell"]
    med = {k: s["median"] for k, s in samples.items()}
    ours = med[who]
    peer_times = {p: med[p] for p in record["peers"] if p in med}
    faster = min(peer_times, key=peer_times.__getitem__) if peer_times else None
    ratio = peer_times[faster] / ours if faster else None
    peak = fma_peak(limits, cell["dtype"]) * 1e9
    fma_share = record["flop"] / ours / peak
    bandwidth = {int(k): v for k, v in limits["bandwidth_gbs"].items()}
    weight_bytes = record["weight_bytes"]
    floor = (
        record["passes"]
        * cell["steps"]
        * weight_bytes
        / (interpolate_bandwidth(bandwidth, weight_bytes) * 1e9)
    )
    floor_share = floor / ours
    b, h = cell["batch"], cell["hidden"]
    targets: list[tuple[str, bool]] = []  # (short name, met) of the targets that apply
    if ratio is not None:
        targets.append(("≥1× peer", ratio >= 1.0))
        if h <= 64:
            targets.append(("≥2× peer", ratio >= 2.0))
    if b >= 64 and h >= 256:
        targets.append(("≥60 % FMA", fma_share >= 0.6))
    if b <= 8 and h >= 256:
        targets.append(("≤2× floor", floor_share >= 0.5))
    overhead = None
    if who == "module" and "numpy_api" in med:
        bound = OVERHEAD_FACTOR * med["numpy_api"] + OVERHEAD_SECONDS
        overhead = {"bound": bound, "excess": ours - bound}
        if cell["mode"] == "training":
            targets.append(("≤1.1×API+100µs", ours <= bound))
    torch_best = min((med[k] for k in ("torch_1t", "torch_all", "torch") if k in med), default=None)
    return {
        "time": ours,
        "faster_peer": faster,
        "peer_time": peer_times.get(faster) if faster else None,
        "ratio": ratio,
        "torch_best": torch_best,
        "fma_share": fma_share,
        "floor": floor,
        "floor_share": floor_share,
        "overhead": overhead,
        "targets": targets,
        "below": [name for name, met in targets if not met],
    }


def _cell_sort_key(record: dict[str, Any]) -> tuple[Any, ...]:
    c = record["cell"]
    return (c["dtype"], c["steps"], c["batch"], c["hidden"])


def _table(rows: list[list[str]], headers: list[str]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def mode_section(
    isa: str, mode: str, run: dict[str, Any], chart: str | None
) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """The markdown of one instruction set and mode, and (label, derived) of
    the module per cell (for the summaries)."""
    records = sorted((r for r in run["cells"] if r["cell"]["mode"] == mode), key=_cell_sort_key)
    if not records:
        return [], []
    limits = run["limits"]
    peer_name = "JAX" if mode == "training" else "ONNX Runtime"
    peer_key = "jax" if mode == "training" else "onnxruntime"
    threads = run["torch_threads"]
    headers = [
        "B",
        "T",
        "H",
        "dtype",
        "module",
        "NumPy API",
        f"torch ({threads['default']} thr)",
        f"torch best (1/{threads['all']} thr)",
        peer_name,
        "faster peer",
        "module ratio",
        "API ratio",
        "module % FMA peak",
        "module % W_hh floor",
        "module − (1.1×API+100µs)",
        "below target (module)",
    ]
    rows, summary = [], []
    for record in records:
        c = record["cell"]
        head = [str(c["batch"]), str(c["steps"]), str(c["hidden"]), c["dtype"]]
        if record.get("error"):
            rows.append(head + [f"**aborted: {record['error']}**"] + [""] * (len(headers) - 5))
            continue
        med = {k: s["median"] for k, s in record["samples"].items()}
        mod, api = derive(record, limits, "module"), derive(record, limits, "numpy_api")
        main = mod or api
        peer_cell = fmt_time(med.get(peer_key))
        if peer_key in record.get("unsupported", {}):
            peer_cell = "n/a"
        elif peer_key in record.get("failed", {}):
            peer_cell = "failed"
        over = "–"
        if mod and mod["overhead"]:
            excess = mod["overhead"]["excess"]
            over = "✓" if excess <= 0 else f"+{fmt_time(excess)}"
            if c["mode"] != "training":
                over += " (info)"
        below = ", ".join(mod["below"]) if mod else "–"
        rows.append(
            head
            + [
                fmt_time(med.get("module")),
                fmt_time(med.get("numpy_api")),
                fmt_time(med.get("torch")),
                fmt_time(main["torch_best"] if main else None),
                peer_cell,
                LABELS.get(main["faster_peer"], "–") if main else "–",
                fmt_ratio(mod["ratio"] if mod else None) + (" ✗" if mod and mod["below"] else ""),
                fmt_ratio(api["ratio"] if api else None),
                fmt_share(mod["fma_share"] if mod else None),
                fmt_share(mod["floor_share"] if mod and c["batch"] <= 8 else None),
                over,
                f"**{below}**" if below and below != "–" else "",
            ]
        )
        if mod:
            label = f"B{c['batch']} T{c['steps']} H{c['hidden']} {c['dtype']}"
            summary.append((label, mod))
    lines = [f"### {isa}, {mode}", ""]
    if chart:
        lines += [f"![{isa} {mode}: faster peer / ours]({chart})", ""]
    lines += _table(rows, headers)
    below_target = [(label, d) for label, d in summary if d["below"]]
    ratios = [(label, d) for label, d in summary if d["ratio"] is not None]
    lines += [""]
    if ratios:
        label, worst = min(ratios, key=lambda item: item[1]["ratio"])
        lines += [
            f"Worst cell: {label}, {fmt_ratio(worst['ratio'])} "
            f"({fmt_time(worst['time'])} against {LABELS[worst['faster_peer']]} "
            f"{fmt_time(worst['peer_time'])})."
        ]
    lines += [f"Cells below target: {len(below_target)} of {len(summary)}.", ""]
    return lines, summary


def isa_comparison(data: dict[str, Any]) -> list[str]:
    """The default instance (the CPU's best measured set) against each lower one."""
    isas = list(data["isas"])
    if len(isas) < 2:
        return []
    times: dict[str, dict[tuple[Any, ...], float]] = {}
    for isa, run in data["isas"].items():
        times[isa] = {
            tuple(r["cell"].values()): r["samples"]["module"]["median"]
            for r in run["cells"]
            if not r.get("error") and "module" in r.get("samples", {})
        }
    top = isas[0]
    lines = [
        "## The default instance against the lower ones",
        "",
        f"`sincos_rs.torch.LSTM`'s median with {top} (the default on this CPU) over its median "
        f"with each lower set, per cell; flagged when more than "
        f"{100 * ISA_SLOWER_LIMIT:.0f} % slower.",
        "",
    ]
    for lower in isas[1:]:
        common = sorted(set(times[top]) & set(times[lower]))
        slower = [(k, times[top][k] / times[lower][k] - 1) for k in common]
        flagged = [(k, s) for k, s in slower if s > ISA_SLOWER_LIMIT]
        lines.append(f"- {top} vs {lower}: {len(flagged)} of {len(common)} cells flagged.")
        if flagged:
            rows = [
                [k[0], k[1], f"B{k[2]} T{k[3]} H{k[4]}", f"{100 * s:+.0f} %"]
                for k, s in sorted(flagged, key=lambda item: -item[1])
            ]
            lines += [""] + _table(rows, ["mode", "dtype", "cell", f"{top} slower by"]) + [""]
    return lines + [""]


def _facts_lines(data: dict[str, Any]) -> list[str]:
    runs = list(data["isas"].values())
    if not runs:
        return ["No instruction set was measured."]
    facts = runs[0]["facts"]
    cpu = facts.get("lscpu", {})
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v)
    caches = ", ".join(f"{k.split()[0]} {cpu[k]}" for k in cpu if "cache" in k)
    lines = [
        f"- CPU: {facts['cpu_model']} ({', '.join(facts['cpu_simd_flags'])}); "
        f"{cpu.get('Socket(s)', '?')} socket(s) x {cpu.get('Core(s) per socket', '?')} cores x "
        f"{cpu.get('Thread(s) per core', '?')} threads, {facts['usable_cores']} usable; "
        f"{caches}; {cpu.get('Hypervisor vendor', 'no')} hypervisor; {facts['platform']}",
        f"- Versions: Python {facts['python']}, {versions}; git {facts['git']}, "
        f"extension built {facts['extension_built']}",
        f"- Threads: sincos_rs {facts['sincos_rs']['threads']}, torch default "
        f"{runs[0]['torch_threads']['default']} (interop "
        f"{facts.get('torch', {}).get('interop_threads', '?')}), "
        f"ONNX Runtime {facts.get('onnxruntime', {}).get('threads', 'not installed')}, "
        f"JAX {facts.get('jax', {}).get('threads', 'not installed')}; thread environment: "
        + (", ".join(f"{k}={v}" for k, v in facts["thread_env"].items()) or "none set"),
    ]
    for isa, run in data["isas"].items():
        f = run["facts"]
        lines.append(
            f"- {isa}: {run['caps']}; sincos_rs `simd_level()` = {f['sincos_rs']['simd_level']}, "
            f"torch CPU capability {f.get('torch', {}).get('cpu_capability', '?')}"
            + ("" if run.get("complete") else " — **incomplete run**")
        )
    return lines


def _limits_lines(isa: str, limits: dict[str, Any]) -> list[str]:
    fma, gemm = limits["fma_gflops"], limits["gemm_gflops"]
    bw = limits["bandwidth_gbs"]

    def one(dtype: str) -> str:
        f = fma[dtype]
        loop = f" (the loop: {f['all']:.0f} on all, {f['one_thread']:.0f} on one thread)"
        return (
            f"{dtype} {fma_peak(limits, dtype):.0f} GFLOP/s"
            + (loop if "all" in f else "")
            + f", torch.mm best {max(gemm[dtype].values()):.0f}"
        )

    return [
        f"Limits ({isa}, {limits['threads']} threads; FMA peak: {limits['fma_method']}; "
        f"bandwidth: {limits['bandwidth_method']}"
        + (
            "; the best of a measurement before the cells and one after"
            if limits.get("measurements") == 2
            else "; measured before the cells only"
        )
        + ("; **--quick-limits**" if limits.get("quick") else "")
        + "):",
        "",
        f"- FMA peak: {one('float32')}; {one('float64')}",
        "- Read bandwidth (GB/s) by working set: "
        + ", ".join(f"{int(k) // 1024} KB {v:.0f}" for k, v in bw.items()),
        *(f"- **Warning**: {w}" for w in limits.get("warnings", [])),
        "",
    ]


def markdown(data: dict[str, Any], charts: dict[str, str]) -> str:
    lines = [
        "# The shape grid: sincos_rs against torch.nn.LSTM, ONNX Runtime and JAX",
        "",
        f"- Date: {data['date']}",
        f"- Command: `{data['command']}`"
        + (f" ({data['wall_seconds'] / 60:.0f} min)" if "wall_seconds" in data else ""),
        *_facts_lines(data),
        f"- Not capped: {data['uncapped']}",
        "- Method (benches/README.md): one layer, I = H, batch_first, zero initial state, "
        "the same weights and input in every framework, each checked against torch.nn.LSTM "
        "once per cell (a wrong result aborts the cell); contenders timed interleaved, "
        "round-robin over rounds, medians. Training = forward + backward of `out.sum()` "
        "(weights, bias and x gradients); inference = forward without autograd state. "
        "Ratio = the faster peer's median / ours; ✗ marks a cell below a target.",
        "- Targets: " + "; ".join(data["targets"]) + ".",
        "",
    ]
    for isa, run in data["isas"].items():
        lines += [f"## {isa}", ""] + _limits_lines(isa, run["limits"])
        for mode in ("training", "inference"):
            section, _ = mode_section(isa, mode, run, charts.get(f"{isa}-{mode}"))
            lines += section
    lines += isa_comparison(data)
    return "\n".join(lines) + "\n"


def heat_rows(records: list[dict[str, Any]]) -> tuple[list[tuple[str, Any]], int]:
    """The heat map's rows, (label, predicate on a cell), and the grid's T:
    one per B of the float32 grid, then the long rows (B1 at another T),
    then the float64 rows."""
    cells = [r["cell"] for r in records]
    steps = min(c["steps"] for c in cells)
    rows: list[tuple[str, Any]] = []
    for b in sorted({c["batch"] for c in cells if c["dtype"] == "float32" and c["steps"] == steps}):
        rows.append(
            (
                f"B{b}",
                lambda c, b=b: c["dtype"] == "float32" and c["steps"] == steps and c["batch"] == b,
            )
        )
    for t in sorted({c["steps"] for c in cells if c["dtype"] == "float32" and c["steps"] != steps}):
        rows.append((f"B1 T{t}", lambda c, t=t: c["dtype"] == "float32" and c["steps"] == t))
    for b in sorted({c["batch"] for c in cells if c["dtype"] == "float64"}):
        rows.append((f"B{b} f64", lambda c, b=b: c["dtype"] == "float64" and c["batch"] == b))
    return rows, steps


def heat_maps(data: dict[str, Any], out: Path, stem: str) -> dict[str, str]:
    """One PNG per instruction set and mode: the ratio (faster peer / ours)
    of the module and of the NumPy API over B x H; {"isa-mode": file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    charts = {}
    for isa, run in data["isas"].items():
        for mode in ("training", "inference"):
            records = [r for r in run["cells"] if r["cell"]["mode"] == mode]
            if not records:
                continue
            hiddens = sorted({r["cell"]["hidden"] for r in records})
            rows, grid_steps = heat_rows(records)
            fig, axes = plt.subplots(
                1,
                2,
                figsize=(2.4 + 1.1 * len(hiddens) * 2, 1.6 + 0.45 * len(rows)),
                squeeze=False,
                layout="constrained",
            )
            for ax, who in zip(axes[0], OURS, strict=True):
                values = np.full((len(rows), len(hiddens)), np.nan)
                marks = np.zeros_like(values, dtype=bool)
                for r in records:
                    d = derive(r, run["limits"], who)
                    if d is None or d["ratio"] is None:
                        continue
                    for i, (_, match) in enumerate(rows):
                        if match(r["cell"]):
                            j = hiddens.index(r["cell"]["hidden"])
                            values[i, j] = d["ratio"]
                            marks[i, j] = bool(d["below"])
                image = ax.imshow(np.log2(values), cmap="RdYlGn", vmin=-2, vmax=2, aspect="auto")
                for i in range(len(rows)):
                    for j in range(len(hiddens)):
                        if math.isnan(values[i, j]):
                            ax.text(j, i, "–", ha="center", va="center", fontsize=8)
                            continue
                        text = f"{values[i, j]:.2f}" + ("✗" if marks[i, j] else "")
                        weight = "bold" if marks[i, j] else "normal"
                        ax.text(j, i, text, ha="center", va="center", fontsize=8, fontweight=weight)
                ax.set_xticks(range(len(hiddens)), [f"H{h}" for h in hiddens])
                ax.set_yticks(range(len(rows)), [label for label, _ in rows])
                ax.set_title(f"{LABELS[who]}", fontsize=10)
            cbar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
            cbar.set_ticks([-2, -1, 0, 1, 2], labels=["¼×", "½×", "1×", "2×", "4×"])
            peer = "torch or JAX" if mode == "training" else "torch or ONNX Runtime"
            fig.suptitle(
                f"{mode}, {isa} — {run['facts']['cpu_model']}\n"
                f"faster peer ({peer}) / ours; I = H, T {grid_steps}; ✗ below a target",
                fontsize=10,
            )
            name = f"{stem}-{isa}-{mode}.png"
            fig.savefig(out / name, dpi=110, bbox_inches="tight")
            plt.close(fig)
            charts[f"{isa}-{mode}"] = name
    return charts
