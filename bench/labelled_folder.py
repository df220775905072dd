"""Write a synthetic labelled folder (FEMALE/, MALE/) and a small random-weight CLIP to try training.

    .venv/bin/python bench/labelled_folder.py OUT [--per-class 300] [--model tiny|vit-b32]

OUT/labelled holds the images (the classes differ by stripe direction and colour, under noise),
OUT/clip the checkpoint and OUT/config.toml a config that uses it. Then:

    .venv/bin/cctv-gender train --data OUT/labelled --config OUT/config.toml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import MODELS, build_model, write_config

from model.synthetic import make_labelled_folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build_model(args.out / "clip", args.model)
    make_labelled_folder(args.out / "labelled", per_class=args.per_class, seed=args.seed)
    write_config(args.out / "config.toml", {"model": {"clip": "clip"}})
    print(f"wrote {2 * args.per_class} images to {args.out / 'labelled'}; try:")
    print(f"  .venv/bin/cctv-gender train --data {args.out / 'labelled'} --config {args.out / 'config.toml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
