"""Build examples/mlp/model.pt: a TorchScript MLP, Linear(128, 256) - ReLU - Linear(256, 10).

Run at install time (``make install``); the .pt file is never committed. The seed is
fixed, so every build holds the same weights and the README's numbers repeat.

    python examples/mlp/build.py [--out examples/mlp/model.pt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

SEED = 0


def build() -> torch.jit.ScriptModule:
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(
        torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    ).eval()
    return torch.jit.script(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "model.pt")
    args = parser.parse_args()
    build().save(str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
