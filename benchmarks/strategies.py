"""The whole strategy zoo on one dataset and model: ``python benchmarks/strategies.py [train options]``.

Same options as ``python -m torch_layerlr train`` (``--optimizer`` defaults to ``all``); the output goes to
``benchmarks/results/<dataset>-<model>/`` unless ``--out`` says otherwise. The committed results were made with

    python benchmarks/strategies.py --dataset fashion-mnist --model mlp --epochs 15 --seeds 3
    python benchmarks/strategies.py --dataset fashion-mnist --model convnet --epochs 6 --seeds 2 \\
        --optimizer <the six strongest of the MLP table>
"""

from __future__ import annotations

import argparse
import os

from torch_layerlr.cli import add_train_arguments, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    parser.set_defaults(out=None)
    args = parser.parse_args()
    if args.out is None:
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{args.dataset}-{args.model}")
    train(args)


if __name__ == "__main__":
    main()
