"""Build the example MLP, Linear(128, 256) - ReLU - Linear(256, 10), in one of three forms.

Run at install time (``make install``); the files are never committed. The seed is fixed,
so every build, in every form, holds the same weights and the README's numbers repeat.
The form follows the file name:

* ``model.pt``: TorchScript (``torch.jit.script``), the PyTorch engine;
* ``model.pt2``: a ``torch.export`` program with a dynamic batch dimension, the PyTorch
  engine too (``option.modelName=model.pt2`` picks it beside model.pt);
* ``model.onnx``: the same program exported to ONNX, inputs ``input`` [batch, 128],
  outputs ``output`` [batch, 10], the OnnxRuntime engine (``engine=OnnxRuntime``).

    python examples/mlp/build.py [--out examples/mlp/model.pt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

SEED = 0


def module() -> torch.nn.Module:
    """The eager model, in eval mode."""
    torch.manual_seed(SEED)
    return torch.nn.Sequential(
        torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    ).eval()


def build() -> torch.jit.ScriptModule:
    """The TorchScript model (what model.pt holds)."""
    return torch.jit.script(module())


def save(out: Path) -> None:
    """Write the model in the form ``out``'s suffix names."""
    model = module()
    example = (torch.zeros(2, 128),)
    dynamic = ({0: torch.export.Dim("batch")},)
    if out.suffix == ".pt":
        torch.jit.script(model).save(str(out))
    elif out.suffix == ".pt2":
        torch.export.save(torch.export.export(model, example, dynamic_shapes=dynamic), str(out))
    elif out.suffix == ".onnx":
        torch.onnx.export(model, example, str(out), input_names=["input"],
                          output_names=["output"], dynamic_shapes=dynamic,
                          external_data=False)  # one small file, weights inside
    else:
        raise SystemExit(f"{out}: the name must end in .pt, .pt2 or .onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "model.pt")
    args = parser.parse_args()
    save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
