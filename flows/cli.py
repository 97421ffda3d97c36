"""capmine: mine captioned audio+video clips from videos, filter them, and train on them.

Options of ``mine`` come from the flow's parameter model, so the CLI, the flow
and the deployments share one set of names, defaults and descriptions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from flows.params import DEFAULT_EMBEDDER, MineParams

# Quiet, offline-friendly defaults for a command-line run; the user's settings win.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def _field_type(annotation: Any) -> type:
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def add_model_options(
    parser: argparse.ArgumentParser, model: type[BaseModel], skip: set[str] = frozenset()
) -> None:
    """One ``--option`` a field, with the field's description, default and type."""
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        typ = _field_type(field.annotation)
        if typ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{field.description} (default: {field.default})")  # fmt: skip
            continue
        required = field.is_required()
        default = None if required else field.default
        helptext = field.description + ("" if required else f" (default: {default})")
        parser.add_argument(flag, type=typ, required=required, default=None, help=helptext,
                            metavar=name.upper())  # fmt: skip


def _params(model: type[BaseModel], args: argparse.Namespace, **extra) -> Any:
    values = {k: v for k, v in vars(args).items() if k in model.model_fields and v is not None}
    if model is MineParams and getattr(args, "workers", None) is not None:
        values["workers"] = args.workers  # deprecated; MineParams maps it to the two it meant
    values.update(extra)
    try:
        return model(**values)
    except ValidationError as e:
        raise SystemExit(f"capmine: invalid options:\n{e}") from None


def cmd_mine(args: argparse.Namespace) -> int:
    from flows.mine import run_mine

    params = _params(
        MineParams,
        args,
        progress=args.progress if args.progress is not None else sys.stderr.isatty(),
    )
    report = run_mine(params)
    print_summary(report, params.out)
    return 0


def print_summary(report: dict, out: str) -> None:
    from runs.report import summary_lines

    print("\n".join(summary_lines(report, out)))


def cmd_train(args: argparse.Namespace) -> int:
    from flows.train import TrainParams, train, train_from_params
    from trainer import distributed

    params = _params(TrainParams, args)
    if distributed.env_world_size() > 1:
        # Under torchrun every rank runs this: no Prefect flow per rank, the task's function.
        summary = train_from_params(params)
    else:
        summary = train(params)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from flows.train import EvalParams, evaluate

    metrics = evaluate(_params(EvalParams, args))
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def cmd_mine_and_train(args: argparse.Namespace) -> int:
    from flows.mine_and_train import MineAndTrainParams, mine_and_train

    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    mine_params = _params(MineParams, args, progress=progress)
    params = _params(MineAndTrainParams, args, mine=mine_params)
    result = mine_and_train(params)
    print_summary(result["mine"], mine_params.out)
    print(json.dumps({"train": result["train"], "eval": result["eval"]}, indent=2, default=str))
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    from runs.refilter import refilter
    from runs.stages import FilterSetup

    setup = FilterSetup(args.filters, embedder=args.embedder, device=args.device)
    report = refilter(args.run, args.out, setup)
    reasons = ", ".join(f"{k} {n}" for k, n in sorted(report["dropped"].items())) or "none"
    print(f"capmine filter: {report['clips']['ok']} of {report['clips']['total']} clips kept "
          f"in {report['shards']} shard(s) under {Path(args.out) / 'shards'}; dropped: {reasons}")  # fmt: skip
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from miners.calibrate import calibrate

    result = calibrate(args.seeds, args.videos, embedder=args.embedder, device=args.device,
                       false_match_rate=args.false_match_rate, fps=args.fps,
                       max_seeds=args.max_seeds, max_videos=args.max_videos)  # fmt: skip
    for name, q in result["nulls"].items():
        print(
            f"{name}: n={q['n']} median={q['q0.5']:.4f} q0.99={q['q0.99']:.4f} "
            f"q0.999={q['q0.999']:.4f} max={q['max']:.4f} at rate -> {q['at_rate']:.4f}"
        )
    print(
        f"frames: {result['n_frames']} from {result['n_videos']} videos; "
        f"{result['frames_above'] * 100:.1f}% of frames would match some seed"
    )
    print(
        f"threshold: {result['threshold']:.4f}  (embedder {args.embedder}, false-match rate {args.false_match_rate})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    return run_demo(args.root, scan_workers=args.scan_workers)


def _add_mine(sub) -> None:
    p = sub.add_parser("mine", help="mine captioned audio+video clip shards",
                       description="Match seed images against video frames and write clip shards.")  # fmt: skip
    add_model_options(p, MineParams, skip={"progress"})
    _add_mine_extras(p)
    p.set_defaults(func=cmd_mine)


def _add_mine_extras(p: argparse.ArgumentParser) -> None:
    """The options of a mining run that are not plain parameter fields."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: on when stderr is a terminal)")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, metavar="WORKERS",
                   help="deprecated: sets both --scan-workers and --cut-workers")  # fmt: skip


def _add_filter(sub) -> None:
    p = sub.add_parser("filter", help="re-filter a finished run with new bounds, without re-cutting",
                       description="Apply a filter chain to the shards of run OUT and write run --out: "
                       "stored scores are reused, media copied, nothing re-encoded.")  # fmt: skip
    p.add_argument("run", metavar="OUT", help="a finished mining run")
    p.add_argument("--filters", required=True, help="default, none, or a YAML file")
    p.add_argument("--out", required=True, help="the new run folder")
    p.add_argument("--embedder", help="for filters that need one (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.set_defaults(func=cmd_filter)


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="estimate the match threshold for an embedder",
                       description="Print a threshold estimated from similarities that cannot be true matches.")  # fmt: skip
    p.add_argument("--seeds", required=True, help="seed images (any seed format)")
    p.add_argument("--videos", required=True, help="videos (any video list format)")
    p.add_argument("--embedder", default=DEFAULT_EMBEDDER,
                   help=f"embedder spec (default: {DEFAULT_EMBEDDER})")  # fmt: skip
    p.add_argument("--false-match-rate", type=float, default=0.001,
                   help="share of non-matching pairs allowed above it (default: 0.001)")  # fmt: skip
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second (default: 1)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--max-seeds", type=int, default=2000, help="seeds used at most (default: 2000)")
    p.add_argument("--max-videos", type=int, default=50,
                   help="videos sampled at most (default: 50)")  # fmt: skip
    p.add_argument("--json", help="also write the full result to this JSON file")
    p.set_defaults(func=cmd_calibrate)


def _add_training(sub) -> None:
    from flows.mine_and_train import MineAndTrainParams
    from flows.train import EvalParams, TrainParams

    p = sub.add_parser("train", help="train audio and video encoders on mined shards",
                       description="Train audio and video encoders against the frozen CLIP space "
                       "(ImageBind's recipe). Under torchrun it runs DDP.")  # fmt: skip
    add_model_options(p, TrainParams)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="retrieval recall and zero-shot accuracy of a checkpoint")
    add_model_options(p, EvalParams)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "mine-and-train", help="mine, train on what was mined, evaluate on held-out shards"
    )
    add_model_options(p, MineParams, skip={"progress"})
    add_model_options(p, MineAndTrainParams, skip={"mine"})
    _add_mine_extras(p)
    p.set_defaults(func=cmd_mine_and_train)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="generate a small planted set, mine it, show what came out")
    p.add_argument("--root", default="demo",
                   help="folder for the generated set and its output (default: demo)")  # fmt: skip
    p.add_argument("--scan-workers", "--workers", type=int, default=2,
                   help="videos scanned at once (default: 2; --workers is its old name)")  # fmt: skip
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capmine", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_mine, _add_filter, _add_calibrate, _add_training, _add_demo):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for noisy in ("httpx", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"capmine: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
