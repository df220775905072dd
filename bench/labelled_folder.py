"""Write a synthetic labelled folder (FEMALE/, MALE/) and a small random-weight CLIP to try training.

    .venv/bin/python bench/labelled_folder.py OUT [--per-class 300] [--model tiny|vit-b32]

OUT/labelled holds the images (the classes differ by stripe direction and colour, under noise),
OUT/clip the checkpoint and OUT/config.toml a config that uses it. Then:

    .venv/bin/cctv-gender train --data OUT/labelled --config OUT/config.toml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import make_labelled_folder, write_config  # noqa: E402
from tests.tiny_clip import build_clip_checkpoint  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--model", choices=("tiny", "vit-b32"), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    real_size = args.model == "vit-b32"
    build_clip_checkpoint(
        args.out / "clip",
        vision={} if real_size else None,
        text={} if real_size else None,
        projection_dim=512 if real_size else 16,
    )
    make_labelled_folder(args.out / "labelled", per_class=args.per_class, seed=args.seed)
    write_config(args.out / "config.toml", {"model": {"clip": "clip"}})
    print(f"wrote {2 * args.per_class} images to {args.out / 'labelled'}; try:")
    print(f"  .venv/bin/cctv-gender train --data {args.out / 'labelled'} --config {args.out / 'config.toml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
