"""``graphprune verify ORIGINAL PRUNED``: check a pruned file against its original by what its metadata records."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from graphprune import api, progress
from graphprune.cli.common import add_common
from graphprune.frontends.onnx.load import parse_input_shapes


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check a pruned model against its original (uses the stored plan)")
    p.add_argument("original")
    p.add_argument("pruned")
    p.add_argument("--json", action="store_true")
    p.add_argument("--rtol", type=float, default=1e-4, metavar="R", help="relative tolerance (default 1e-4)")
    p.add_argument("--atol", type=float, default=1e-5, metavar="A",
                   help="absolute tolerance, scaled by the largest output (default 1e-5)")
    add_common(p)


def command(args) -> int:
    with progress.task("verifying"):
        v = api.verify_files(Path(args.original), Path(args.pruned), parse_input_shapes(args.input_shape),
                             rtol=args.rtol, atol=args.atol)
    if args.json:
        print(json.dumps(asdict(v), indent=2))
    elif not args.quiet:
        for name, status in v.checks.items():
            print(f"{name:16} {status}")
        if v.drift is not None:
            print(f"{'drift':16} max abs {v.drift.max_abs:.3g}, cosine {v.drift.cosine:.4f}")
        print("verified" if v.ok else "NOT verified")
    return 0 if v.ok else 1
