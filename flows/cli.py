"""capmine: mine captioned audio+video clips from videos, filter them, and train on them.

Options of ``mine`` come from the flow's parameter model, so the CLI, the flow
and the deployments share one set of names, defaults and descriptions.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, get_args

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from flows.params import MineParams
    from flows.runners import ServerStart

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


class InvalidOptions(ValueError):
    """Options the parameter model refused, said in one line."""

    @classmethod
    def of(cls, error: ValidationError) -> InvalidOptions:
        said = []
        for e in error.errors():
            names = [str(x) for x in e["loc"] if isinstance(x, str)]
            flag = "--" + names[-1].replace("_", "-") if names else "options"
            given = f" {e['input']!r}" if not isinstance(e.get("input"), dict) else ""
            said.append(f"{flag}{given}: {e['msg']}")
        return cls("invalid option " + "; ".join(said))


def _params(model: type[BaseModel], args: argparse.Namespace, **extra) -> Any:
    values = {k: v for k, v in vars(args).items() if k in model.model_fields and v is not None}
    if model.__name__ == "MineParams" and getattr(args, "workers", None) is not None:
        values["workers"] = args.workers  # deprecated; MineParams maps it to the two it meant
    values.update(extra)
    try:
        return model(**values)
    except ValidationError as e:
        raise InvalidOptions.of(e) from None


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars: as asked, else when stderr is a terminal and the run is not --quiet."""
    if getattr(args, "progress", None) is not None:
        return args.progress
    return sys.stderr.isatty() and not getattr(args, "quiet", False)


def _check_inputs(params: MineParams) -> None:
    """Check the seeds and read the videos list before anything starts, so a missing or
    unreadable one ends the command at once with its own error, not midway through a flow
    (:func:`miners.seeds.check_seeds`: seed files up to 64 MB are read; larger ones and
    folders are read once, by the run)."""
    from miners.seeds import check_seeds
    from miners.videos import read_videos

    read_videos(params.videos)
    seeds_log = logging.getLogger("miners.seeds")
    level = seeds_log.level
    seeds_log.setLevel(logging.WARNING)  # the flow's own read says how many seeds there are
    try:
        check_seeds(params.seeds)
    finally:
        seeds_log.setLevel(level)


def cmd_mine(args: argparse.Namespace) -> int:
    from flows.params import MineParams

    params = _params(MineParams, args, progress=_progress(args))
    with _in_out(params.out, "mine"):
        _check_inputs(params)
        server = _server_start()
        from flows.mine import run_mine  # heavy: imported while the server boots

        _preload_embedder(params)
        server.wait()
        report = run_mine(params)
    print_summary(report, params.out)
    return 0


def _server_start() -> ServerStart:
    """Prefect's temporary server for this run, booting in the background from now on
    (nothing starts when ``PREFECT_API_URL`` names a server): :class:`flows.runners.ServerStart`."""
    from flows.runners import ServerStart

    return ServerStart()


def _preload_embedder(params: MineParams) -> None:
    """Load the run's embedder while the server boots. Tasks on the thread pool share this
    process and its embedder cache (:func:`miners.embedders.get_embedder`); Dask workers
    load their own, so nothing is loaded here for them."""
    if params.dask is None:
        from miners.embedders import get_embedder

        get_embedder(params.embedder, params.device, params.batch_size)


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
        _server_start().wait()
        summary = train(params)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from flows.train import EvalParams, evaluate

    params = _params(EvalParams, args)
    _server_start().wait()
    metrics = evaluate(params)
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def cmd_mine_and_train(args: argparse.Namespace) -> int:
    from flows.mine_and_train import MineAndTrainParams, mine_and_train
    from flows.params import MineParams

    mine_params = _params(MineParams, args, progress=_progress(args))
    params = _params(MineAndTrainParams, args, mine=mine_params)
    with _in_out(mine_params.out, "mine"):
        _check_inputs(mine_params)
        server = _server_start()
        _preload_embedder(mine_params)
        server.wait()
        result = mine_and_train(params)
    print_summary(result["mine"], mine_params.out)
    print(json.dumps({"train": result["train"], "eval": result["eval"]}, indent=2, default=str))
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    from runs.refilter import refilter
    from runs.stages import FilterSetup

    setup = FilterSetup(args.filters, embedder=args.embedder, device=args.device)
    with _in_out(args.out, "filter"):
        report = refilter(args.run, args.out, setup, keep_dropped=args.keep_dropped)
    reasons = ", ".join(f"{k} {n}" for k, n in sorted(report["dropped"].items())) or "none"
    print(f"capmine filter: {report['clips']['ok']} of {report['clips']['total']} clips kept "
          f"in {report['shards']} shard(s) under {Path(args.out) / 'shards'}; dropped: {reasons}")  # fmt: skip
    if report.get("report_html"):
        print(f"  report: {report['report_html']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from runs.reportdata import check_run

    check_run(args.out)  # before claiming OUT: a folder that holds no run is not marked
    with _in_out(args.out, "report"):
        from runs.htmlreport import write_html_report

        path = write_html_report(args.out)
    print(f"capmine report: {path}")
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


def _mine_options(p: argparse.ArgumentParser) -> None:
    from flows.params import MineParams

    p.description = "Match seed images against video frames and write clip shards."
    add_model_options(p, MineParams, skip={"progress"})
    _add_mine_extras(p)
    p.set_defaults(func=cmd_mine)


def _add_mine_extras(p: argparse.ArgumentParser) -> None:
    """The options of a mining run that are not plain parameter fields."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: on when stderr is a terminal)")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, metavar="WORKERS",
                   help="deprecated: sets both --scan-workers and --cut-workers")  # fmt: skip


def _filter_options(p: argparse.ArgumentParser) -> None:
    p.description = ("Apply a filter chain to the shards of run OUT and write run --out: "
                     "stored scores are reused, media copied, nothing re-encoded.")  # fmt: skip
    p.add_argument("run", metavar="OUT", help="a finished mining run")
    p.add_argument("--filters", required=True, help="default, none, or a YAML file")
    p.add_argument("--out", required=True, help="the new run folder")
    p.add_argument("--embedder", help="for filters that need one (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--keep-dropped", action="store_true",
                   help="keep the media of the clips this chain drops in --out/dropped/, "
                        "so a later, looser re-filter can bring them back")  # fmt: skip
    p.set_defaults(func=cmd_filter)


def _report_options(p: argparse.ArgumentParser) -> None:
    p.description = ("Write OUT/report.html again from what the run left in OUT: totals, kept "
                     "clips, drops by reason, the similarity histogram, timings, failed inputs.")  # fmt: skip
    p.add_argument("out", metavar="OUT", help="a run folder (of capmine mine or capmine filter)")
    p.set_defaults(func=cmd_report)


def _calibrate_options(p: argparse.ArgumentParser) -> None:
    from flows.params import DEFAULT_EMBEDDER

    p.description = "Print a threshold estimated from similarities that cannot be true matches."
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


def _train_options(p: argparse.ArgumentParser) -> None:
    from flows.train import TrainParams

    p.description = ("Train audio and video encoders against the frozen CLIP space "
                     "(ImageBind's recipe). Under torchrun it runs DDP.")  # fmt: skip
    add_model_options(p, TrainParams)
    p.set_defaults(func=cmd_train)


def _eval_options(p: argparse.ArgumentParser) -> None:
    from flows.train import EvalParams

    add_model_options(p, EvalParams)
    p.set_defaults(func=cmd_eval)


def _mine_and_train_options(p: argparse.ArgumentParser) -> None:
    from flows.mine_and_train import MineAndTrainParams
    from flows.params import MineParams

    add_model_options(p, MineParams, skip={"progress"})
    add_model_options(p, MineAndTrainParams, skip={"mine"})
    _add_mine_extras(p)
    p.set_defaults(func=cmd_mine_and_train)


def _demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default="demo",
                   help="folder for the generated set and its output (default: demo)")  # fmt: skip
    p.add_argument("--scan-workers", "--workers", type=int, default=2,
                   help="videos scanned at once (default: 2; --workers is its old name)")  # fmt: skip
    p.set_defaults(func=cmd_demo, progress=True)  # the demo always draws its bars


# A command's one-line help, and what adds its options. Options come from parameter models
# whose modules import Prefect (train, eval) or numpy and PIL (mine), so only the chosen
# command's are added: ``capmine --help`` and ``capmine mine --help`` stay quick.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "mine": ("mine captioned audio+video clip shards", _mine_options),
    "filter": ("re-filter a finished run with new bounds, without re-cutting", _filter_options),
    "report": ("write a run's report.html again (a page to judge what was mined)", _report_options),
    "calibrate": ("estimate the match threshold for an embedder", _calibrate_options),
    "train": ("train audio and video encoders on mined shards", _train_options),
    "eval": ("retrieval recall and zero-shot accuracy of a checkpoint", _eval_options),
    "mine-and-train": (
        "mine, train on what was mined, evaluate on held-out shards",
        _mine_and_train_options,
    ),  # fmt: skip
    "demo": ("generate a small planted set, mine it, show what came out", _demo_options),
}


# ---------------------------------------------------------------- the terminal

_log_file: Path | None = None  # OUT/capmine.log of the command, once OUT is claimed


@contextlib.contextmanager
def _in_out(out: str, command: str) -> Iterator[None]:
    """Hold OUT for the command (:func:`runs.lock.claim_out`) and log everything, tracebacks
    included, to ``OUT/capmine.log`` meanwhile."""
    global _log_file
    from runs.lock import LOG, claim_out

    with claim_out(out, command) as root:
        path = root / LOG
        handler = logging.FileHandler(path)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root_logger = logging.getLogger()
        root_logger.handlers.insert(0, handler)  # before the terminal's, which drop tracebacks
        _log_file = path
        try:
            yield
        except BaseException as e:
            with contextlib.suppress(OSError), open(path, "a") as f:
                f.write(f"capmine {command} stopped:\n" + "".join(traceback.format_exception(e)))
            raise
        finally:
            with contextlib.suppress(ValueError):
                root_logger.handlers.remove(handler)
            handler.close()


class _Terminal(logging.Filter):
    """Without --verbose the terminal gets one line per event: Prefect's failure reports
    (the command ends with its own ``capmine: error:`` line) and its start-up chatter go,
    tracebacks go to ``OUT/capmine.log``. With --quiet only warnings and errors stay; with
    progress bars Prefect's line for each finished task goes (the bars count them)."""

    CHATTER = ("Beginning flow run", "Beginning subflow run", "Starting temporary server",
               "See https://", "Stopping temporary server")  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.verbose = False
        self.quiet = False
        self.progress = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.quiet and record.levelno < logging.WARNING:
            return False
        if self.verbose:
            return True
        if record.name.startswith("prefect"):
            message = str(record.msg)
            if record.levelno >= logging.ERROR:
                return False
            if message.startswith(self.CHATTER):
                return False
            if message.startswith("Finished in state") and "Completed" not in message:
                return False
            if (
                self.progress
                and record.name == "prefect.task_runs"
                and message.startswith("Finished in state Completed")
            ):
                return False
        if record.exc_info or record.exc_text:
            record.exc_info, record.exc_text = None, None  # the log file, first, kept it
        return True


def _terminal_handlers() -> list[logging.Handler]:
    """Every handler that writes to the terminal, Prefect's too."""
    import prefect.logging.configuration  # noqa: F401 - Prefect's handlers, set up on import

    handlers = []
    loggers = [logging.getLogger()] + [
        logger for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and name.split(".")[0] in ("prefect", "uvicorn")
    ]  # fmt: skip
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                handlers.append(handler)
    return handlers


def _filter_terminal(args: argparse.Namespace) -> list[logging.Handler]:
    """Put :class:`_Terminal` on the terminal's handlers, set for ``args``, and have them
    write above any progress bar instead of through it. Returns the handlers."""
    _TERMINAL.verbose, _TERMINAL.quiet = args.verbose, args.quiet
    _TERMINAL.progress = _progress(args) if hasattr(args, "progress") else False
    handlers = _terminal_handlers()
    for handler in handlers:
        handler.addFilter(_TERMINAL)
        _write_above_bars(handler)
    return handlers


def _write_above_bars(handler: logging.Handler) -> None:
    """Clear the progress bars for each line ``handler`` writes, then draw them again."""
    from tqdm import tqdm

    emit = handler.emit

    def emit_above(record: logging.LogRecord) -> None:
        with tqdm.external_write_mode(file=sys.stderr):
            emit(record)

    handler.emit = emit_above


def _unfilter_terminal(handlers: list[logging.Handler]) -> None:
    for handler in handlers:
        handler.removeFilter(_TERMINAL)
        handler.__dict__.pop("emit", None)  # the class's own again


_TERMINAL = _Terminal()


class _Stop:
    """SIGINT and SIGTERM stop the command: the main thread gets KeyboardInterrupt, so the
    run stops where it is (OUT stays resumable: every step is written atomically); work stuck
    in a thread or a child cannot hold the process past :attr:`GRACE` seconds."""

    GRACE = 8.0

    def __init__(self) -> None:
        self.signal: str | None = None
        self.reported = False
        self._armed = False

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def code(self) -> int:
        return 128 + signal.Signals[self.signal or "SIGINT"].value

    def _handle(self, signum: int, frame) -> None:
        if self.signal is not None:  # a second signal: stop now
            self.report()
            os._exit(self.code())
        self.signal = signal.Signals(signum).name
        self.arm()
        raise KeyboardInterrupt(self.signal)

    def arm(self) -> None:
        """Start the clock: the process ends :attr:`GRACE` seconds from now at the latest."""
        if not self._armed:
            self._armed = True
            threading.Thread(target=self._deadline, daemon=True, name="capmine-stop").start()

    def report(self) -> None:
        if not self.reported:
            self.reported = True
            where = f"; details in {_log_file}" if _log_file else ""
            print(f"capmine: stopped by {self.signal}; the run can be resumed by running the "
                  f"same command again{where}", file=sys.stderr, flush=True)  # fmt: skip

    def _deadline(self) -> None:
        time.sleep(self.GRACE)
        self.report()
        _stop_prefect_server()
        os._exit(self.code())


def _stop_prefect_server() -> None:
    """End the temporary Prefect server this process started, which a forced exit would leave."""
    server = sys.modules.get("prefect.server.api.server")
    for instance in list(getattr(getattr(server, "SubprocessASGIServer", None), "_instances", {})
                         .values()):  # fmt: skip
        with contextlib.suppress(Exception):
            if instance.server_process is not None:
                instance.server_process.terminate()


def _error(e: BaseException, verbose: bool) -> int:
    """One line for a fatal error; its traceback in the log file, or on the terminal at
    --verbose. Input errors exit 2, anything else 1."""
    if verbose:
        print("".join(traceback.format_exception(e)), file=sys.stderr, end="")
    expected = isinstance(e, (ValueError, FileNotFoundError, OSError))
    message = str(e) if expected else f"internal error: {type(e).__name__}: {e}"
    message = " ".join(message.split()) or type(e).__name__
    hint = (
        ""
        if verbose
        else f" (traceback in {_log_file})"
        if _log_file
        else " (--verbose shows more)"
    )
    print(f"capmine: error: {message}{'' if expected else hint}", file=sys.stderr)
    return 2 if expected else 1


class _Parser(argparse.ArgumentParser):
    """argparse that says a wrong command line in one line, as every other fatal error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"capmine: error: {message} (see: {self.prog} --help)\n")


QUIET_HELP = (
    "only warnings, errors and the final summary on the terminal (OUT/capmine.log keeps all)"
)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the options of the command ``argv`` names only (a command named by
    none needs none: ``capmine --help`` prints each command's one-line help)."""
    chosen = _chosen_command(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="capmine", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (helptext, add_options) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        # also after the command; unset there, it leaves the top-level value alone
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help=QUIET_HELP)  # fmt: skip
        if name == chosen:
            add_options(p)
    return parser


def _chosen_command(argv: list[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (the top-level
    options take no value)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    """The command line; ``argv`` given (a call from Python) leaves signals to the caller."""
    args = build_parser(argv).parse_args(argv)
    if args.quiet and not _progress(args):
        os.environ.setdefault("TQDM_DISABLE", "1")  # any bar a library draws (read as tqdm loads)
    # Prefect's log handlers are set up (on the root logger) before ours, so the terminal
    # reads the same whichever command runs; imported here, after parsing, as --help needs none.
    import prefect.main  # noqa: F401

    for noisy in ("httpx", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    terminal = _filter_terminal(args)
    stop = _Stop()
    standalone = argv is None and threading.current_thread() is threading.main_thread()
    if standalone:
        stop.install()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if not standalone:
            raise
        if stop.signal is None:
            stop.signal = "SIGINT"
        stop.report()
        stop.arm()
        return stop.code()
    except Exception as e:
        return _error(e, args.verbose)
    finally:
        if standalone:
            # The process ends next: spare it the interpreter's last garbage collection over
            # every module (seconds once torch and Prefect are loaded). Objects stay alive to
            # the end; atexit handlers (log flushing, the temporary server's stop) still run,
            # and the terminal stays filtered for them (no "Stopping temporary server" line).
            gc.freeze()
        else:
            _unfilter_terminal(terminal)


if __name__ == "__main__":
    sys.exit(main())
