"""ldifs-hf: fine-tune CLIP-like models without forgetting (LDIFS, L2SP and the paper's methods), and measure concept forgetting.

    ldifs-hf demo --output_dir runs/demo
    ldifs-hf finetune --method lp-init-ldifs --dataset eurosat --output_dir runs/eurosat-lp-ldifs
    ldifs-hf evaluate --checkpoint runs/eurosat-lp-ldifs --datasets all
    ldifs-hf study --output_dir runs/study --methods all --finetune_tasks all --seeds 0,1,2 [--plan]
    ldifs-hf lambda-search --method lp-init-ldifs --dataset eurosat --output_dir runs/eurosat-lambda [--final_run]
    ldifs-hf list

A user's mistake (a bad flag, value, path or name) prints one line, `error: ...`, and exits with
code 2; `--debug` (or LDIFS_HF_DEBUG=1) shows the traceback instead. A single `.json` argument is
read as a config file. `--help` opens with this project's options.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Callable, Sequence

from transformers import HfArgumentParser, TrainingArguments

DEBUG_ENV = "LDIFS_HF_DEBUG"
USAGE_ERROR = 2


class UsageError(ValueError):
    """A mistake in how the command was called."""


class ArgumentParser(HfArgumentParser):
    """HfArgumentParser whose errors are one line and whose help lists this project's options first."""

    def error(self, message):
        raise UsageError(message)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # HfArgumentParser gives a boolean field's `--no_X` the help of `--X`, which then reads backwards.
        for action in self._actions:
            negative = next((o for o in action.option_strings if o.startswith("--no_")), None)
            if negative is not None:
                # "%(default).0s" prints nothing; its presence keeps the formatter from appending the
                # positive flag's default here, where it would read backwards too.
                action.help = f"Turn off --{negative[len('--no_'):]}.%(default).0s"

    def own_options_first(self, title: str) -> None:
        """Move the options this project defines (not the Trainer's) into a first group."""
        own = _own_fields(self.dataclass_types)
        group = self.add_argument_group(title)
        for other in self._action_groups:
            if other is group:
                continue
            for action in list(other._group_actions):
                if action.dest in own:
                    other._group_actions.remove(action)
                    group._group_actions.append(action)
        self._action_groups.remove(group)
        self._action_groups.insert(1, group)  # before argparse's general "options" group


def _own_fields(dataclass_types) -> set[str]:
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = set()
    for cls in dataclass_types:
        for f in dataclasses.fields(cls):
            # Ours: a field TrainingArguments lacks, or one whose default we changed (the paper's).
            if f.name not in inherited or f.default != TrainingArguments.__dataclass_fields__[f.name].default:
                own.add(f.name)
    return own


def parse(parser: ArgumentParser, argv: Sequence[str]):
    if len(argv) == 1 and argv[0].endswith(".json"):
        if not os.path.isfile(argv[0]):
            raise UsageError(f"config file {argv[0]!r} does not exist")
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    namespace_and_rest = parser.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
    *parsed, rest = namespace_and_rest
    if rest:
        raise UsageError(f"unrecognized arguments: {' '.join(rest)} (see {parser.prog} --help)")
    return tuple(parsed)


def _catalogue() -> str:
    from .benchmarks import list_benchmarks
    from .training import list_methods
    from .world import world_task_names

    return (
        f"methods: {', '.join(list_methods())} (or METHOD+REGULARIZER, e.g. flyp+ldifs)\n"
        f"benchmarks: {', '.join(list_benchmarks())}, {', '.join(world_task_names())}, or custom with --dataset_path"
    )


# -- commands -------------------------------------------------------------------------------------


def parse_finetune_args(argv: Sequence[str]):
    """(ModelArguments, DataArguments, LDIFSTrainingArguments) from a command line or one .json file.

    Epochs given by the user (`--num_train_epochs N`, `--num_train_epochs=N` or the JSON key) are kept;
    otherwise the run uses the benchmark's epoch count (the paper's).
    """
    return _parse_finetune_command(argv)[:3]


def _parse_finetune_command(argv: Sequence[str]):
    """`parse_finetune_args` plus the `SequenceArguments` of `--dataset a,b` (a sequence of tasks)."""
    from .study.sequence import SequenceArguments

    return _parse_run_command(
        argv, SequenceArguments, prog="ldifs-hf finetune",
        usage="ldifs-hf finetune --method METHOD --dataset NAME[,NAME...] --output_dir DIR [options]",
        description="Fine-tune a CLIP model on one benchmark, or on several one after another (--dataset a,b), "
        "with one of the paper's methods.",
    )


def _parse_run_command(argv: Sequence[str], extra, *, prog: str, usage: str, description: str):
    """A command that takes a fine-tuning run's arguments (model, data, training) plus `extra`'s."""
    from .training.arguments import DataArguments, LDIFSTrainingArguments, ModelArguments

    parser = ArgumentParser(
        (ModelArguments, DataArguments, LDIFSTrainingArguments, extra), prog=prog, usage=usage,
        description=description + "\n" + _catalogue(), formatter_class=_Formatter,
    )
    parser.own_options_first("ldifs_hf options (paper defaults)")
    model_args, data_args, training_args, extra_args = parse(parser, argv)
    if not any(a in ("--output_dir", "--output-dir") or a.startswith(("--output_dir=", "--output-dir=")) for a in argv) and not _json_has(argv, "output_dir"):
        raise UsageError(f"--output_dir is required: the folder {prog.split()[-1]} writes its checkpoints, model and record to")
    if any(a == "--num_train_epochs" or a.startswith("--num_train_epochs=") for a in argv) or _json_has(argv, "num_train_epochs"):
        data_args.epochs_from_benchmark = False
    return model_args, data_args, training_args, extra_args


def finetune_command(argv: Sequence[str]) -> int:
    from .study.sequence import run_sequence
    from .training.run import run_finetune

    model_args, data_args, training_args, sequence_args = _parse_finetune_command(argv)
    _setup_logging(training_args.get_process_log_level())
    if "," in data_args.dataset:
        result = run_sequence(model_args, data_args, training_args, reference=sequence_args.reference)
        for record in result.records:
            print(f"{record.method} on {record.dataset}: {_results_line(record.results)} -> {record.output_dir}")
        return 0
    record = run_finetune(model_args, data_args, training_args)
    print(f"{record.method} on {record.dataset}: {_results_line(record.results)} -> {record.output_dir}")
    return 0


def evaluate_command(argv: Sequence[str]) -> int:
    from .evaluation.run import EvaluationArguments, run_evaluation

    parser = ArgumentParser(
        EvaluationArguments, prog="ldifs-hf evaluate", usage="ldifs-hf evaluate --checkpoint [METHOD=]PATH ... --datasets NAMES [options]",
        description="Score checkpoints for concept forgetting on many benchmarks (the paper's Table 3).\n" + _catalogue(),
        formatter_class=_Formatter,
    )
    (args,) = parse(parser, argv)
    _setup_logging(logging.INFO, transformers_level=logging.WARNING)
    result = run_evaluation(args)
    failed = len(result.failures)
    scored = "checkpoint(s)" if args.wise_alphas is None else "(checkpoint, α) pair(s)"  # one record per checkpoint and α
    print(f"scored {len(result.records) - failed} {scored} on {len(result.benchmarks)} benchmark(s) -> {result.paths.get('markdown')}")
    if failed:  # the report is written, but a number the user asked for is missing
        return _fail(f"{failed} {scored} could not be scored or are not finite; see 'Not scored' in {result.paths.get('markdown')}", 1)
    return 0


def demo_command(argv: Sequence[str]) -> int:
    from .world.demo import DemoArguments, run_demo

    parser = ArgumentParser(
        DemoArguments, prog="ldifs-hf demo", usage="ldifs-hf demo [--output_dir DIR] [--quick] [options]",
        description="The embedded concept world: pre-train a tiny CLIP, fine-tune it with the eight methods, measure forgetting.",
        formatter_class=_Formatter,
    )
    (args,) = parse(parser, argv)
    _setup_logging(logging.INFO, transformers_level=logging.WARNING)
    run_demo(args)
    return 0


def study_command(argv: Sequence[str]) -> int:
    from .study.runner import StudyArguments, run_study

    parser = ArgumentParser(
        StudyArguments, prog="ldifs-hf study",
        usage="ldifs-hf study --output_dir DIR --methods M1,M2 --finetune_tasks T1,T2>T3 --eval_tasks all --seeds 0,1,2 [--plan] [options]",
        description="The paper's study: methods x fine-tune tasks (or sequences a>b) x seeds, each scored on the eval tasks; "
        "resumable, locally or through submitit; Table 3, Table 2 and figures.\n" + _catalogue(),
        formatter_class=_Formatter,
    )
    (args,) = parse(parser, argv)
    _setup_logging(logging.INFO, transformers_level=logging.WARNING)
    result = run_study(args)
    if not args.plan:
        written = result.tables.paths
        print(f"{len(result.plan.cells)} cells done -> " + ", ".join(written[k] for k in ("markdown", "sequence_markdown", "tradeoff_plot") if k in written))
    return 0


def lambda_search_command(argv: Sequence[str]) -> int:
    from .study.lambda_search import LambdaSearchArguments, run_lambda_search

    model_args, data_args, training_args, search_args = _parse_run_command(
        argv, LambdaSearchArguments, prog="ldifs-hf lambda-search",
        usage="ldifs-hf lambda-search --method METHOD --dataset NAME --output_dir DIR [--lambda_grid 0.01,0.1,1] [--final_run] [options]",
        description="Choose λ of an L2SP or LDIFS method on the validation split (paper appendix C): one run per λ "
        "through Trainer.hyperparameter_search (optuna), then, with --final_run, the method with the chosen λ.",
    )
    grid = search_args.grid()  # a bad grid fails here, before anything is loaded
    _setup_logging(training_args.get_process_log_level())
    result = run_lambda_search(model_args, data_args, training_args, grid, final_run=search_args.final_run)
    scores = ", ".join(f"{v:g}: {100 * s:.2f}" for v, s in result.scores.items())
    print(f"{result.parameter} = {result.best_lambda:g} (validation accuracy % by λ: {scores}) -> {result.paths['markdown']}")
    if result.final is not None:
        print(f"final run: {_results_line(result.final.results)} -> {result.final.output_dir}")
    return 0


def interpolate_command(argv: Sequence[str]) -> int:
    from .interpolate import InterpolateArguments, interpolate

    parser = ArgumentParser(
        InterpolateArguments, prog="ldifs-hf interpolate", usage="ldifs-hf interpolate --run DIR --alpha A --output_dir OUT",
        description="Move a finished run's weights back towards its starting point (WiSE-FT): (1 - A) x start + A x run, "
        "written as a run-like folder with a stock clip/ export.",
        formatter_class=_Formatter,
    )
    (args,) = parse(parser, argv)
    _setup_logging(logging.INFO, transformers_level=logging.WARNING)
    record = interpolate(args.run, args.alpha, args.output_dir)
    print(f"{record.method} on {record.dataset} at alpha {record.alpha:g} -> {record.output_dir}")
    return 0


def list_command(argv: Sequence[str]) -> int:
    if argv:
        raise UsageError(f"'list' takes no arguments, got {' '.join(argv)}")
    print(_catalogue())
    return 0


SUMMARIES = {
    "demo": "the embedded concept world end to end: pre-train a tiny CLIP, fine-tune it with the eight methods, measure forgetting",
    "finetune": "fine-tune a CLIP on one benchmark (or a sequence, --dataset a,b) with one of the paper's methods",
    "evaluate": "score checkpoints for concept forgetting on many benchmarks (Table 3, plots)",
    "study": "the paper's study: methods x tasks x seeds, resumable, locally or through submitit",
    "lambda-search": "choose λ of an L2SP or LDIFS method on the validation split",
    "interpolate": "weight-space interpolation of a finished run with its starting point (WiSE-FT)",
    "list": "the methods and benchmarks",
}

COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "demo": demo_command,
    "finetune": finetune_command,
    "evaluate": evaluate_command,
    "study": study_command,
    "lambda-search": lambda_search_command,
    "interpolate": interpolate_command,
    "list": list_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if argv and argv[0] == "--version":
        from . import __version__

        print(f"ldifs-hf {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: ldifs-hf {{{','.join(COMMANDS)}}} [options] [--debug]\n\n{__doc__.strip().splitlines()[0]}\n")
        width = max(map(len, COMMANDS))
        print("\n".join(f"  {name:<{width}}  {SUMMARIES[name]}" for name in COMMANDS))
        print("\nldifs-hf COMMAND --help lists a command's options; ldifs-hf --version prints the version.")
        return 0 if argv else _fail(f"a command is required: one of {', '.join(COMMANDS)}", USAGE_ERROR)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _fail(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}", USAGE_ERROR)
    from .interrupts import run_interruptible

    return run_guarded(lambda: run_interruptible(lambda: COMMANDS[command](rest)), debug)


def run_guarded(call: Callable[[], int], debug: bool = False) -> int:
    """Run a command; user errors become one line and exit code 2 (the traceback with `debug`)."""
    if debug:
        return call()
    try:
        return call()
    except BrokenPipeError as err:
        if not _stdout_closed():  # another pipe (a worker, a socket) broke: a fault, not the reader leaving
            return _fail(f"{type(err).__name__}: {_one_line(err)} (rerun with --debug for the traceback)", 1)
        # e.g. `ldifs-hf list | head`: the reader has what it wanted; nothing more to write to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, KeyError) as err:  # bad values, names, paths, models, data
        return _fail(_one_line(err), USAGE_ERROR)
    except ImportError as err:
        return _fail(f"{_one_line(err)} (install the extra that provides it)", USAGE_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as err:  # a fault, not a mistake: say where to look
        return _fail(f"{type(err).__name__}: {_one_line(err)} (rerun with --debug for the traceback)", 1)


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll reports an error on its write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll on this platform, or stdout is not a file
        return False


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text.strip("'\"") if isinstance(err, KeyError) else text


def _fail(message: str, code: int) -> int:
    # A progress bar left mid-line would swallow the start of the error line: end it first.
    from tqdm import tqdm

    bars = list(getattr(tqdm, "_instances", ()))
    for bar in bars:
        bar.close()
    print(("\n" if bars else "") + f"error: {message}", file=sys.stderr)
    return code


def _json_has(argv: Sequence[str], key: str) -> bool:
    if len(argv) == 1 and argv[0].endswith(".json") and os.path.isfile(argv[0]):
        import json

        with open(argv[0]) as f:
            return key in json.load(f)
    return False


def _results_line(results: dict) -> str:
    return ", ".join(f"{k} {100 * v:.2f}%" for k, v in results.items()) or "no results"


def _setup_logging(level: int, transformers_level: int | None = None) -> None:
    """Our logger at `level`; transformers' at `transformers_level` (default: the same). The commands
    that log their own progress at INFO keep transformers at WARNING: its INFO dumps every config it loads."""
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logging.getLogger("ldifs_hf").setLevel(level)
    transformers.utils.logging.set_verbosity(level if transformers_level is None else transformers_level)


class _Formatter(__import__("argparse").RawDescriptionHelpFormatter, __import__("argparse").ArgumentDefaultsHelpFormatter):
    """Descriptions as written, and every option's default after its help."""


if __name__ == "__main__":
    sys.exit(main())
