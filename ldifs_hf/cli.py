"""ldifs-hf: fine-tune CLIP-like models without forgetting (LDIFS, L2SP and the paper's methods), and measure concept forgetting.

    ldifs-hf demo --output_dir runs/demo
    ldifs-hf finetune --method lp-init-ldifs --dataset eurosat --output_dir runs/eurosat-lp-ldifs
    ldifs-hf evaluate --checkpoint runs/eurosat-lp-ldifs --datasets all
    ldifs-hf evaluate-lm --checkpoint runs/sft --tasks hellaswag,arc_easy --retain held_out.txt
    ldifs-hf study --output_dir runs/study --methods all --finetune_tasks all --seeds 0,1,2 [--plan]
    ldifs-hf lambda-search --method lp-init-ldifs --dataset eurosat --output_dir runs/eurosat-lambda [--final_run]
    ldifs-hf list

A user's mistake (a bad flag, value, path or name) prints one line, `error: ...`, and exits with
code 2; `--debug` (or LDIFS_HF_DEBUG=1) shows the traceback instead. A single `.json` argument is
read as a config file. `--help` opens with this project's options. A command's `--help` and argument
mistakes are answered from a description of its parser (`cli_snapshot`: stored in the user's cache,
else read by `cli_light`), without importing transformers or torch.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .cli_snapshot import UsageError  # noqa: F401  (raised by the parsers; importable from here, as before)

DEBUG_ENV = "LDIFS_HF_DEBUG"
USAGE_ERROR = 2


def _catalogue() -> str:
    from .benchmarks import list_benchmarks
    from .training import list_methods
    from .world import world_task_names

    return (
        f"methods: {', '.join(list_methods())} (or METHOD+REGULARIZER, e.g. flyp+ldifs)\n"
        f"benchmarks: {', '.join(list_benchmarks())}, {', '.join(world_task_names())}, or custom with --dataset_path"
    )


def _parse(command: str, argv: Sequence[str], settle: Callable[[Sequence[str]], dict] | None = None) -> tuple:
    """The command's argument dataclasses. `--help` and mistakes are answered first from its parser's
    description, without importing transformers or torch (`cli_snapshot`); then its real parser runs.
    `settle(argv)`: values the command settles from what the user gave (`cli_parsing.parse`)."""
    from .cli_snapshot import ParserSnapshot

    snapshot = ParserSnapshot(command, argv)
    snapshot.check()
    parser, facts = PARSERS[command]()
    snapshot.remember(parser, facts)
    from .cli_parsing import parse

    return parse(parser, argv, facts, settle(argv) if settle else None)


# -- commands -------------------------------------------------------------------------------------
# Each command imports what it runs inside its function, after its arguments are parsed and checked:
# `ldifs-hf --help` and a mistyped command answer at once, and no command pays for another's imports.
# Each command's parser is built by its function in PARSERS (also read lightly by `cli_light`), which
# returns it with the command's facts: the names `--method` accepts and the options it requires.


def _run_parser(extra, command: str, *, usage: str, description: str):
    """A command that takes a fine-tuning run's arguments (model, data, training) plus `extra`'s."""
    from .cli_parsing import ArgumentParser, Formatter
    from .training.arguments import DataArguments, LDIFSTrainingArguments, ModelArguments
    from .training.methods import list_methods
    from .training.terms import list_regularizers

    parser = ArgumentParser(
        (ModelArguments, DataArguments, LDIFSTrainingArguments, extra), prog=f"ldifs-hf {command}", usage=usage,
        description=description + "\n" + _catalogue(), formatter_class=Formatter,
    )
    parser.own_options_first("ldifs_hf options (paper defaults)")
    methods = list_methods()
    required = {"method": f"one of {', '.join(methods)}, or METHOD+REGULARIZER (e.g. flyp+ldifs)",
                "output_dir": f"the folder {command} writes its checkpoints, model and record to"}
    return parser, {"methods": methods, "regularizers": list_regularizers(), "required": required}


def _parser(dataclass, command: str, *, usage: str, description: str):
    from .cli_parsing import ArgumentParser, Formatter

    return ArgumentParser(dataclass, prog=f"ldifs-hf {command}", usage=usage, description=description, formatter_class=Formatter), {}


def _finetune_parser():
    from .training.sequences import SequenceArguments

    return _run_parser(
        SequenceArguments, "finetune", usage="ldifs-hf finetune --method METHOD --dataset NAME[,NAME...] --output_dir DIR [options]",
        description="Fine-tune a CLIP model on one benchmark, or on several one after another (--dataset a,b), "
        "with one of the paper's methods.",
    )


def _lambda_search_parser():
    from .study.lambda_search import LambdaSearchArguments

    return _run_parser(
        LambdaSearchArguments, "lambda-search",
        usage="ldifs-hf lambda-search --method METHOD --dataset NAME --output_dir DIR [--lambda_grid 0.01,0.1,1] [--final_run] [options]",
        description="Choose λ of a regularized method (L2SP, LDIFS, KL, ...) on the validation split (paper appendix C): one run per λ "
        "through Trainer.hyperparameter_search (optuna), then, with --final_run, the method with the chosen λ.",
    )


def _evaluate_parser():
    from .evaluation.run import EvaluationArguments

    return _parser(
        EvaluationArguments, "evaluate", usage="ldifs-hf evaluate --checkpoint [METHOD=]PATH ... --datasets NAMES [options]",
        description="Score checkpoints for concept forgetting on many benchmarks (the paper's Table 3).\n" + _catalogue(),
    )


def _evaluate_lm_parser():
    from .language.run import LanguageEvaluationArguments

    return _parser(
        LanguageEvaluationArguments, "evaluate-lm",
        usage="ldifs-hf evaluate-lm --checkpoint [METHOD=]PATH ... --tasks NAMES [--task_dir DIR] [--retain FILES] [options]",
        description="Score causal-LM checkpoints (full models or PEFT adapters) for forgetting: each lm-evaluation-harness task's "
        "score against the base model's (Δ), the fine-tuning task's (A_FT) and the held-out loss on a retain set. "
        'Needs the lm_eval extra: pip install "ldifs_hf[lm_eval]".',
    )


def _demo_parser():
    from .study.demo import DemoArguments

    return _parser(
        DemoArguments, "demo", usage="ldifs-hf demo [--world concepts|skills] [--output_dir DIR] [--quick] [options]",
        description="The embedded concept world: pre-train a tiny CLIP, fine-tune it with the eight methods and KL, measure forgetting.",
    )


def _study_parser():
    from .study.arguments import StudyArguments

    return _parser(
        StudyArguments, "study",
        usage="ldifs-hf study --output_dir DIR --methods M1,M2 --finetune_tasks T1,T2>T3 --eval_tasks all --seeds 0,1,2 [--plan] [options]",
        description="The paper's study: methods x fine-tune tasks (or sequences a>b) x seeds, each scored on the eval tasks; "
        "resumable, locally or through submitit; Table 3, Table 2 and figures.\n" + _catalogue(),
    )


def _interpolate_parser():
    return _parser(
        InterpolateArguments, "interpolate", usage="ldifs-hf interpolate --run DIR --alpha A --output_dir OUT",
        description="Move a finished run's weights back towards its starting point (WiSE-FT): (1 - A) x start + A x run, "
        "written as a run-like folder with a stock clip/ export.",
    )


def _epochs_settled(argv: Sequence[str]) -> dict:
    """Epochs the user gives are kept: the run then does not take the benchmark's (settled before the
    arguments are built, so that no argument is changed after parsing)."""
    from .cli_parsing import json_has

    given = any(a == "--num_train_epochs" or a.startswith("--num_train_epochs=") for a in argv) or json_has(argv, "num_train_epochs")
    return {"epochs_from_benchmark": False} if given else {}


def parse_finetune_args(argv: Sequence[str]):
    """(ModelArguments, DataArguments, LDIFSTrainingArguments) from a command line or one .json file.

    Epochs given by the user (`--num_train_epochs N`, `--num_train_epochs=N` or the JSON key) are kept;
    otherwise the run uses the benchmark's epoch count (the paper's).
    """
    return _parse("finetune", argv, _epochs_settled)[:3]


def finetune_command(argv: Sequence[str]) -> int:
    model_args, data_args, training_args, sequence_args = _parse("finetune", argv, _epochs_settled)
    _setup_logging(training_args.get_process_log_level())
    from .training.sequences import run_sequence
    from .training.run import run_finetune

    if "," in data_args.dataset:
        result = run_sequence(model_args, data_args, training_args, reference=sequence_args.reference)
        for record in result.records:
            print(f"{record.method} on {record.dataset}: {_results_line(record.results)} -> {record.output_dir}")
        return 0
    record = run_finetune(model_args, data_args, training_args)
    print(f"{record.method} on {record.dataset}: {_results_line(record.results)} -> {record.output_dir}")
    return 0


def evaluate_command(argv: Sequence[str]) -> int:
    (args,) = _parse("evaluate", argv)
    _setup_logging(logging.INFO, transformers_level=logging.WARNING)
    from .evaluation.run import run_evaluation

    result = run_evaluation(args)
    failed = len(result.failures)
    scored = "checkpoint(s)" if args.wise_alphas is None else "(checkpoint, α) pair(s)"  # one record per checkpoint and α
    print(f"scored {len(result.records) - failed} {scored} on {len(result.benchmarks)} benchmark(s) -> {result.paths.get('markdown')}")
    if failed:  # the report is written, but a number the user asked for is missing
        return _fail(f"{failed} {scored} could not be scored or are not finite; see 'Not scored' in {result.paths.get('markdown')}", 1)
    return 0


def evaluate_lm_command(argv: Sequence[str]) -> int:
    (args,) = _parse("evaluate-lm", argv)
    _setup_logging(logging.INFO, transformers_level=logging.WARNING)
    from .language.run import run_language_evaluation, summary_line

    result = run_language_evaluation(args)
    print(summary_line(result))
    if result.failures:  # the report is written, but a number the user asked for is missing
        return _fail(f"{len(result.failures)} checkpoint(s) could not be scored or are not finite; see 'Not scored' in {result.paths.get('markdown')}", 1)
    return 0


def demo_command(argv: Sequence[str]) -> int:
    (args,) = _parse("demo", argv)
    _setup_logging(logging.INFO, transformers_level=logging.WARNING)
    if args.world == "skills":
        from .study.skills_demo import run_skills_demo

        run_skills_demo(args)
        return 0
    from .study.demo import run_demo

    run_demo(args)
    return 0


def study_command(argv: Sequence[str]) -> int:
    (args,) = _parse("study", argv)
    _setup_logging(logging.INFO, transformers_level=logging.WARNING)
    from .study.runner import run_study

    result = run_study(args)
    if not args.plan:
        written = result.tables.paths
        print(f"{len(result.plan.cells)} cells done -> " + ", ".join(written[k] for k in ("markdown", "sequence_markdown", "tradeoff_plot") if k in written))
    return 0


def lambda_search_command(argv: Sequence[str]) -> int:
    model_args, data_args, training_args, search_args = _parse("lambda-search", argv, _epochs_settled)
    grid = search_args.grid()  # a bad grid fails here, before anything is loaded
    _setup_logging(training_args.get_process_log_level())
    from .study.lambda_search import run_lambda_search

    result = run_lambda_search(model_args, data_args, training_args, grid, final_run=search_args.final_run)
    scores = ", ".join(f"{v:g}: {100 * s:.2f}" for v, s in result.scores.items())
    print(f"{result.parameter} = {result.best_lambda:g} (validation accuracy % by λ: {scores}) -> {result.paths['markdown']}")
    if result.final is not None:
        print(f"final run: {_results_line(result.final.results)} -> {result.final.output_dir}")
    return 0


@dataclass
class InterpolateArguments:
    """`ldifs-hf interpolate`: one run's weights moved a fraction α of the way from its start."""

    run: str = field(metadata={"help": "The finished fine-tuning run's output directory (it holds ldifs_run.json)."})
    alpha: float = field(metadata={"help": "Interpolation weight in [0, 1]: 0 gives the run's starting point, 1 the fine-tuned run."})
    output_dir: str = field(metadata={"help": "Where to write the interpolated model: a new or empty folder, not the run's."})


def interpolate_command(argv: Sequence[str]) -> int:
    (args,) = _parse("interpolate", argv)
    _setup_logging(logging.INFO, transformers_level=logging.WARNING)
    from .interpolation import interpolate

    record = interpolate(args.run, args.alpha, args.output_dir)
    print(f"{record.method} on {record.dataset} at alpha {record.alpha:g} -> {record.output_dir}")
    return 0


def list_command(argv: Sequence[str]) -> int:
    if argv:
        raise UsageError(f"'list' takes no arguments, got {' '.join(argv)}")
    print(_catalogue())
    return 0


SUMMARIES = {
    "demo": "an embedded world end to end: a tiny CLIP with the eight methods and KL, or (--world skills) a tiny LM's SFT under each regularizer",
    "finetune": "fine-tune a CLIP on one benchmark (or a sequence, --dataset a,b) with one of the paper's methods",
    "evaluate": "score checkpoints for concept forgetting on many benchmarks (Table 3, plots)",
    "evaluate-lm": "score causal-LM checkpoints for forgetting on lm-eval tasks (Δ per task, A_FT, held-out loss)",
    "study": "the paper's study: methods x tasks x seeds, resumable, locally or through submitit",
    "lambda-search": "choose λ of a regularized method (L2SP, LDIFS, KL, ...) on the validation split",
    "interpolate": "weight-space interpolation of a finished run with its starting point (WiSE-FT)",
    "list": "the methods and benchmarks",
}

PARSERS = {
    "demo": _demo_parser,
    "finetune": _finetune_parser,
    "evaluate": _evaluate_parser,
    "evaluate-lm": _evaluate_lm_parser,
    "study": _study_parser,
    "lambda-search": _lambda_search_parser,
    "interpolate": _interpolate_parser,
}

COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "demo": demo_command,
    "finetune": finetune_command,
    "evaluate": evaluate_command,
    "evaluate-lm": evaluate_lm_command,
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
        return run_guarded(_print_version, debug)
    if not argv or argv[0] in ("-h", "--help"):
        # Through run_guarded like the commands: `ldifs-hf --help | head -3` ends quietly.
        shown = run_guarded(_print_overview, debug)
        return shown if argv else _fail(f"a command is required: one of {', '.join(COMMANDS)}", USAGE_ERROR)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _fail(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}", USAGE_ERROR)
    from .interrupts import run_interruptible

    return run_guarded(lambda: run_interruptible(lambda: COMMANDS[command](rest)), debug)


def _print_version() -> int:
    from . import __version__

    print(f"ldifs-hf {__version__}")
    return 0


def _print_overview() -> int:
    print(f"usage: ldifs-hf {{{','.join(COMMANDS)}}} [options] [--debug]\n\n{__doc__.strip().splitlines()[0]}\n")
    width = max(map(len, COMMANDS))
    print("\n".join(f"  {name:<{width}}  {SUMMARIES[name]}" for name in COMMANDS))
    print("\nldifs-hf COMMAND --help lists a command's options; ldifs-hf --version prints the version.")
    sys.stdout.flush()  # a closed pipe shows here, inside run_guarded
    return 0


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
    # A progress bar left mid-line would swallow the start of the error line: end it first (there is
    # none when tqdm was never imported, as before the heavy imports: no import for an early error).
    tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)
    bars = list(getattr(tqdm, "_instances", ()))
    for bar in bars:
        bar.close()
    print(("\n" if bars else "") + f"error: {message}", file=sys.stderr)
    return code


def _results_line(results: dict) -> str:
    return ", ".join(f"{k} {100 * v:.2f}%" for k, v in results.items()) or "no results"


def _setup_logging(level: int, transformers_level: int | None = None) -> None:
    """Our logger at `level`; transformers' at `transformers_level` (default: the same). The commands
    that log their own progress at INFO keep transformers at WARNING: its INFO dumps every config it loads."""
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logging.getLogger("ldifs_hf").setLevel(level)
    transformers.utils.logging.set_verbosity(level if transformers_level is None else transformers_level)


if __name__ == "__main__":
    sys.exit(main())
