#!/usr/bin/env python3
"""The seed network (Linear -> LSTM -> Linear, sin -> cos) trained with
``DistributedDataParallel`` over the gloo backend (CPU), on
``sincos_rs.torch.LSTM``. Each process trains on its share of every batch;
DDP averages the gradients, so N processes compute what one process does on
the whole batch.

On one machine, two processes::

    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py

On several machines (run on each, with its own --node_rank; the address is
node 0's, reachable from the others)::

    torchrun --nnodes=2 --nproc_per_node=1 --node_rank=0 \\
        --master_addr=10.0.0.1 --master_port=29500 examples/ddp_train.py

The same training in one process, without DDP (for comparison)::

    python examples/ddp_train.py --single

Options: ``--steps``, ``--batch-size`` (the whole batch, split between the
processes), ``--hidden-size``, ``--lr``, ``--dtype``, ``--save PATH`` (the
final parameters, with torch.save; rank r > 0 writes PATH.rank<r>).
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
from torch import nn

import sincos_rs as sr
from sincos_rs.torch import LSTM


class SeedNet(nn.Module):
    """Linear(1 -> H) -> LSTM(H) -> Linear(H -> 1), batch-first."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.input = nn.Linear(1, hidden_size)
        self.lstm = LSTM(hidden_size, hidden_size, batch_first=True)
        self.output = nn.Linear(hidden_size, 1)

    def forward(self, x, state=None):
        y, state = self.lstm(self.input(x), state)
        return self.output(y), state


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=50, help="the whole batch, over all processes")
    p.add_argument("--time-steps", type=int, default=20)
    p.add_argument("--hidden-size", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.006)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", help="write the final parameters here (torch.save, rank 0)")
    p.add_argument("--single", action="store_true", help="one process, no DDP")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    distributed = not args.single
    if distributed:
        dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, ...
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must split evenly over {world} processes")
    local = args.batch_size // world
    rows = slice(rank * local, (rank + 1) * local)
    dtype = getattr(torch, args.dtype)

    torch.manual_seed(args.seed)  # the same initial weights everywhere (DDP also broadcasts)
    model = SeedNet(args.hidden_size).to(dtype)
    trained = nn.parallel.DistributedDataParallel(model) if distributed else model
    opt = torch.optim.Adam(trained.parameters(), lr=args.lr)
    batches = sr.SinCosBatches(batch_size=args.batch_size, time_steps=args.time_steps)

    state = None
    for step in range(1, args.steps + 1):
        seq, res, _ = next(batches)  # the whole batch; this process takes its rows
        x = torch.from_numpy(seq[rows]).to(dtype)
        y = torch.from_numpy(res[rows]).to(dtype)
        opt.zero_grad(set_to_none=True)
        pred, (h, c) = trained(x, state)
        # Summed over this process's rows and divided by their count: DDP's
        # average over processes then gives the whole batch's sum / batch size,
        # the seed's cost, exactly as one process computes it.
        loss = ((pred - y) ** 2).sum() / local
        loss.backward()
        opt.step()
        state = (h.detach(), c.detach())  # stateful truncated BPTT, as the seed
        if distributed:
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            loss /= world
        if rank == 0 and (step % 20 == 0 or step == args.steps):
            print(f"step {step}: cost {loss.item():.6f}", flush=True)

    if args.save:
        torch.save(model.state_dict(), args.save if rank == 0 else f"{args.save}.rank{rank}")
    if distributed:
        # Every rank is done before any closes its connections: a rank that
        # tears down while a peer is still in its last collective can abort
        # the peer at exit (seen once in CI: "terminate called without an
        # active exception" in rank 1 after the last step).
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
