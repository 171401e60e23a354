"""The `cuelab` command: one sub-command per stage, plus `run CONFIG` and `demo`.

Each command is a thin wrapper: it parses options, then calls the stage's own module, imported lazily so
that `cuelab --help` stays fast and a stage's heavy dependencies load only when that stage runs.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from cuelab.errors import DataError
from cuelab.outputs import check_output_dir

console = Console(stderr=True)


def _fail(e: Exception | str) -> None:
    """Bad input ends here: one line on stderr (never wrapped: scripts grep it), exit code 2."""
    text = " ".join(str(e).splitlines())
    console.print(f"[red]error:[/red] {escape(text)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def _user_errors(command):
    """Every command runs inside this: its --out folder is checked before any work, and bad input (a DataError,
    a file or folder that is missing, unreadable or not writable) ends as one line naming it, with exit code 2.
    Anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def run_command(*args, **kwargs):
        try:
            if isinstance(kwargs.get("out"), Path):
                check_output_dir(kwargs["out"], "--out")
            return command(*args, **kwargs)
        except DataError as e:
            _fail(e)
        except FileNotFoundError as e:  # the pipeline's "missing inputs" names no single file
            _fail(f"{e.filename}: {e.strerror}" if e.filename else e)
        except OSError as e:
            if e.filename is None:  # not about a path the user gave: the machine's problem or a bug
                raise
            _fail(f"{e.filename}: {e.strerror}")

    return run_command


class _App(typer.Typer):
    """A Typer whose every command is wrapped in _user_errors (so no command can forget it)."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(f):
            register(_user_errors(f))
            return f

        return decorator


app = _App(add_completion=False, no_args_is_help=True,
           help="Do visual cues help a video VLM look at the right thing? Data -> cues -> train -> eval.")


def _section(cls, **values):
    """A config section built from command-line options; a bad value is a DataError naming the option."""
    from pydantic import ValidationError

    from cuelab.config import config_error

    try:
        return cls(**values)
    except ValidationError as e:
        raise config_error(e) from e


def _csv(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise typer.BadParameter("--shard must look like i/n, e.g. 0/4") from e
    if not (n >= 1 and 0 <= i < n):
        raise typer.BadParameter("--shard i/n needs 0 <= i < n")
    return i, n


# --- data ----------------------------------------------------------------------------------------------------

@app.command()
def synth(out: Path = typer.Option(..., help="output folder"),
          videos: int = typer.Option(200, help="number of videos"),
          seed: int = typer.Option(0),
          width: int = typer.Option(160), height: int = typer.Option(120),
          fps: float = typer.Option(12.0),
          gaps: float = typer.Option(0.0, help="fraction of annotated frames left out, as in the real data"),
          min_objects: int = typer.Option(2), max_objects: int = typer.Option(4),
          single_object_fraction: float = typer.Option(0.0, help="share of one-object scenes"),
          workers: int = typer.Option(1, help="processes writing videos")):
    """Write the embedded synthetic dataset in the real formats (labels.json, annotations.json, videos/)."""
    from cuelab.config import SyntheticConfig
    from cuelab.data.synthetic import generate

    cfg = _section(SyntheticConfig, videos=videos, seed=seed, width=width, height=height, fps=fps, gaps=gaps,
                   min_objects=min_objects, max_objects=max_objects, single_object_fraction=single_object_fraction)
    if workers < 1:
        raise DataError(f"must be at least 1, got {workers}", field="--workers")
    summary = generate(cfg, out, workers=workers)
    console.print(f"wrote {summary['videos']} videos, {summary['templates']} templates, "
                  f"{summary['object_names']} object names to {out}")


@app.command()
def inspect(labels: Optional[Path] = typer.Option(None), annotations: Optional[Path] = typer.Option(None),
            videos: Optional[Path] = typer.Option(None, help="videos folder (to compare frame counts)")):
    """Load labels / annotations / videos through the readers and report what they hold."""
    from cuelab.data.inspect import inspect_dataset

    report = inspect_dataset(labels, annotations, videos)
    import json

    typer.echo(json.dumps(report, indent=1))


# --- questions -----------------------------------------------------------------------------------------------

@app.command()
def questions(out: Path = typer.Option(..., help="output folder: train.jsonl, test.jsonl, manifest.json"),
              labels: Optional[list[Path]] = typer.Option(None, help="SSv2 labels JSON (repeat the option to pool "
                                                          "several files in order, e.g. train.json then validation.json)"),
              annotations: Optional[Path] = typer.Option(None, help="Something-Else annotations JSON"),
              video_dir: Optional[Path] = typer.Option(None, help="with --annotations: the videos folder, to clip "
                                                       "the boxes to each video's frame"),
              videos: Optional[int] = typer.Option(None, help="videos to draw (default: all usable)"),
              test_videos: Optional[int] = typer.Option(None, help="of those, videos for the test split"),
              seed: Optional[int] = typer.Option(None),
              kinds: Optional[str] = typer.Option(None, help="comma list of object,verb,referential"),
              max_placeholder_chars: Optional[int] = typer.Option(None),
              require_boxes: Optional[bool] = typer.Option(None, "--require-boxes/--no-require-boxes",
                                                           help="with --annotations: only videos with boxes"),
              single_verb_templates: Optional[bool] = typer.Option(None, "--single-verb-templates"),
              verb_shape: Optional[str] = typer.Option(None, help="loosest verb-distractor shape: exact|frame|lead"),
              protocol: Optional[str] = typer.Option(None, help="cuelab | first-study: the defaults of the "
                                                     "question switches (the builder, the pool, the test split)"),
              builder: Optional[str] = typer.Option(None, help="cuelab | first_study (default: the protocol's)"),
              pool_first_ids: Optional[int] = typer.Option(None, help="first_study: only the first N "
                                                           "Something-Else ids in string order"),
              from_first_study: Optional[Path] = typer.Option(None, help="convert the first study's "
                                                              "qwen_format_test.json instead")):
    """Multiple-choice questions (object, verb, cue-referential), split by video; or convert the first study's."""
    from cuelab.config import load_config
    from cuelab.data.question_set import make_questions
    from cuelab.data.questions import write_questions
    from cuelab.data.skipped import skipped_summary

    if from_first_study is not None:
        from cuelab.data.first_study import convert_first_study

        rows, manifest = convert_first_study(from_first_study)
        manifest = write_questions(out, [], rows, manifest)
        console.print(f"converted {len(rows)} questions to {out}/test.jsonl; flags {manifest['flags']}; "
                      f"skipped {manifest['dropped']['records']} records")
        return
    if not labels:
        raise typer.BadParameter("--labels is needed (or --from-first-study)")
    given = {"videos": videos, "test_videos": test_videos, "seed": seed, "kinds": _csv(kinds),
             "max_placeholder_chars": max_placeholder_chars, "require_boxes": require_boxes,
             "single_verb_templates": single_verb_templates, "verb_shape": verb_shape, "builder": builder,
             "pool_first_ids": pool_first_ids}
    # as config overrides: the protocol's defaults apply and a bad value names its field
    overrides = [f"questions.{k}={json.dumps(v)}" for k, v in given.items() if v is not None]
    cfg = load_config(None, overrides + ([f"protocol={protocol}"] if protocol else [])).questions
    train, test, manifest = make_questions(cfg, labels if len(labels) > 1 else labels[0], annotations, video_dir)
    manifest = write_questions(out, train, test, manifest)
    for line in skipped_summary(manifest):
        console.print(f"[yellow]{escape(line)}[/yellow]", soft_wrap=True, highlight=False)
    if cfg.builder == "first_study":
        console.print(f"wrote {len(train)} train / {len(test)} test questions to {out} (the first study's protocol; "
                      f"{manifest['videos']['kept']} of {manifest['videos']['pool']} videos kept; flags "
                      f"{manifest['flags']})")
        return
    s = manifest["sanity"]
    console.print(f"wrote {len(train)} train / {len(test)} test questions to {out} "
                  f"({manifest['videos']['train']} / {manifest['videos']['test']} videos); "
                  f"per kind {manifest['per_kind']}; answer slots {manifest['answer_positions']['share']}; "
                  f"sanity problems {sum(s.values())}")


# --- cues and rendering --------------------------------------------------------------------------------------

def _load_tracks(annotations: Path):
    """Annotations with strict=False: a bad video's entry is reported, the others still render."""
    from cuelab.data.something_else import load_annotations

    return load_annotations(annotations, strict=False)


@app.command()
def render(videos: Path = typer.Option(..., help="folder of <id>.webm / <id>.mp4 / <id>/NNNN.jpg"),
           annotations: Path = typer.Option(..., help="Something-Else annotations JSON"),
           cues: str = typer.Option("plain,box,trajectory", help="comma-separated cue names"),
           out: Path = typer.Option(..., help="output folder: <out>/<cue>/<id>.mp4"),
           workers: int = typer.Option(2, help="processes"),
           shard: Optional[str] = typer.Option(None, help="i/n: render every n-th video from the i-th"),
           crf: int = typer.Option(18, help="libx264 quality (lower is better)"),
           include_hand: bool = typer.Option(False, "--include-hand", help="cue the hand too"),
           preset: str = typer.Option("veryfast", help="libx264 preset"),
           fps: Optional[float] = typer.Option(None, help="output frame rate (default: the source's)"),
           even: str = typer.Option("pad", help="odd frame sizes: pad (cuelab) or crop (the first study)"),
           seed: int = typer.Option(0, help="seed of the cues that sample colours (first_study)"),
           force: bool = typer.Option(False, "--force", help="re-render every output, up to date or not")):
    """Render every video under each cue (resumable: an output is re-rendered when its source video, boxes, cue
    or codec settings changed; failures go to <out>/errors.jsonl). One run per output folder (and shard)."""
    from cuelab.fsutil import append_jsonl
    from cuelab.locks import folder_lock
    from cuelab.config import RenderConfig
    from cuelab.video.render import render_videos
    from cuelab.video.settings import RenderSettings

    settings = RenderSettings.from_config(_section(RenderConfig, crf=crf, include_hand=include_hand, preset=preset,
                                                   fps=fps, even=even), seed=seed)
    try:
        # taken before reading the annotations and writing errors.jsonl: a second run is refused at once, and
        # writes nothing; render_videos takes the same lock again (re-entrant)
        with folder_lock(out, "render", _shard(shard)):
            ann = _load_tracks(annotations)
            if ann.errors:
                console.print(f"[yellow]{len(ann.errors)} video(s) with bad annotations skipped[/yellow] "
                              f"(see {out / 'errors.jsonl'})")
                append_jsonl(out / "errors.jsonl", [{**e.as_record(), "cue": None} for e in ann.errors])
            summary = render_videos(videos, ann.videos, _csv(cues) or [], out, workers=workers,
                                    shard=_shard(shard), settings=settings, force=force)
    except DataError as e:
        _fail(e)
    again = [f"{summary[k]} {k}" for k in ("stale", "forced") if summary[k]]
    unverified = f", kept {summary['unverified']} (source video missing)" if summary["unverified"] else ""
    console.print(f"rendered {summary['rendered']}" + (f" ({', '.join(again)}: re-rendered)" if again else "")
                  + f", skipped {summary['skipped']} (up to date){unverified}, failed {summary['failed']} "
                  f"in {summary['seconds']:.1f} s -> {out}")
    if summary["failed"]:
        console.print(f"[yellow]failures logged in {out / 'errors.jsonl'}[/yellow]")


@app.command()
def preview(videos: Path = typer.Option(..., help="folder of <id>.webm / <id>.mp4 / <id>/NNNN.jpg"),
            annotations: Path = typer.Option(..., help="Something-Else annotations JSON"),
            video_id: str = typer.Option(..., help="the video to show"),
            cues: Optional[str] = typer.Option(None, help="comma-separated cue names (default: every cue)"),
            out: Path = typer.Option(..., help="output folder"),
            frames: int = typer.Option(4, help="rows of the contact sheet"),
            include_hand: bool = typer.Option(False, "--include-hand")):
    """A GIF and a PNG contact sheet of one video under every cue, side by side."""
    from cuelab.video.preview import make_preview
    from cuelab.video.settings import RenderSettings

    ann = _load_tracks(annotations)
    gif, png = make_preview(videos, ann.videos, video_id, _csv(cues), out, n_times=frames,
                            settings=RenderSettings(include_hand=include_hand))
    console.print(f"wrote {gif} and {png}")


# --- model and training --------------------------------------------------------------------------------------

@app.command("tiny-model")
def tiny_model(out: Path = typer.Option(..., help="output folder (model + processor)"),
               preset: str = typer.Option("tiny", help="tiny | qwen3-vl-2b | qwen3-vl-4b (random weights)"),
               seed: int = typer.Option(0),
               tokenizer: Optional[Path] = typer.Option(None, help="for the 2B/4B presets: a folder with Qwen's "
                                                        "vocab.json + merges.txt"),
               questions: Optional[Path] = typer.Option(None, help="tiny: also train its tokenizer on these "
                                                        "questions (JSONL)")):
    """A random Qwen3-VL with the real processor classes, saved so it reloads through the Auto classes."""
    from cuelab.config import TinyModelConfig

    try:
        if preset == "tiny":
            from cuelab.model.data import load_questions
            from cuelab.model.tiny import build_tiny_model

            extra = []
            if questions is not None:
                extra = [q["question"] + "\n" + "\n".join(q["choices"]) for q in load_questions(questions)]
            build_tiny_model(out, TinyModelConfig(seed=seed), extra_texts=extra)
        else:
            from cuelab.model.tiny import build_processor, qwen_tokenizer_from_files, random_model

            if tokenizer is None:
                raise typer.BadParameter("--tokenizer (a folder with vocab.json + merges.txt) is needed for "
                                         f"preset {preset}")
            model = random_model(preset, seed=seed)
            processor = build_processor(qwen_tokenizer_from_files(tokenizer))
            model.save_pretrained(str(out))
            processor.save_pretrained(str(out))
    except (DataError, ValueError, FileNotFoundError) as e:
        _fail(e)
    console.print(f"wrote a random {preset} Qwen3-VL to {out}")


@app.command()
def train(config: Path = typer.Argument(..., help="experiment YAML"),
          set_: list[str] = typer.Option([], "--set", help="override a config field, e.g. --set train.lr=2e-4"),
          resume: bool = typer.Option(False, help="continue from the last checkpoint in --out"),
          questions: Optional[Path] = typer.Option(None, help="train questions (default "
                                                   "<output_dir>/questions/train.jsonl)"),
          videos: Optional[Path] = typer.Option(None, help="rendered videos root, one folder per condition "
                                                "(default <output_dir>/videos)"),
          out: Optional[Path] = typer.Option(None, help="output folder (default <output_dir>/models/finetuned, "
                                             "or models/pretrained with --section pretrain)"),
          base_model: Optional[Path] = typer.Option(None, help="start from this model folder instead of "
                                                    "model.name_or_path / model.tiny"),
          section: str = typer.Option("train", help="config section to train with: train | pretrain")):
    """Fine-tune (LoRA by default, or full) on the questions x conditions; resumable; multi-GPU via
    `accelerate launch -m cuelab.cli train ...` or `torchrun`."""
    from cuelab.config import load_config
    from cuelab.model.train import train as run_train

    cfg = load_config(config, set_)
    tc = getattr(cfg, section, None) if section in ("train", "pretrain") else None
    if tc is None:
        raise DataError(f"config section {section!r} is not set", file=str(config), field=section)
    root = Path(cfg.output_dir)
    name = "pretrained" if section == "pretrain" else "finetuned"
    out = check_output_dir(out or root / "models" / name, "--out")
    summary = run_train(cfg, questions or root / "questions" / "train.jsonl", videos or root / "videos",
                        out, base_model=base_model, resume=resume, train_cfg=tc)
    console.print(f"trained {summary['steps']} steps ({summary['samples']} samples, {summary['seconds']:.0f} s), "
                  f"final loss {summary['final_loss']:.4f}: {summary['final']}")


@app.command()
def merge(model: str = typer.Option(..., help="base model: hub id or folder"),
          adapter: Path = typer.Option(..., help="PEFT LoRA adapter folder"),
          out: Path = typer.Option(..., help="output folder for the merged model"),
          dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16")):
    """Fold a LoRA adapter into its base model and save a plain model folder."""
    from cuelab.model.merge import merge_adapter

    merge_adapter(model, adapter, out, dtype=dtype)
    console.print(f"wrote the merged model to {out}")

# --- evaluation ----------------------------------------------------------------------------------------------

@app.command("eval")
def eval_(model: str = typer.Option(..., help="hub id or folder of the (base) model"),
          adapter: Optional[Path] = typer.Option(None, help="PEFT LoRA folder applied on top of --model"),
          model_name: Optional[str] = typer.Option(None, help="row label: pretrained | finetuned "
                                                              "(default: finetuned with --adapter)"),
          base_name: Optional[str] = typer.Option(None, help="with --adapter: also score the base model (adapter "
                                                             "off) under this name, sharing vision features"),
          questions: Path = typer.Option(..., help="questions JSONL (test split)"),
          videos: Optional[Path] = typer.Option(None, help="rendered videos: DIR/<condition>/<video>.mp4"),
          conditions: Optional[str] = typer.Option(None, help="comma-separated, e.g. plain,box,trajectory"),
          backend: Optional[str] = typer.Option(None, help="hf | vllm (default: eval.backend)"),
          out: Path = typer.Option(..., help="output folder: predictions/, results.json, results.csv"),
          blind: Optional[bool] = typer.Option(None, "--blind/--no-blind", help="also the question without video"),
          hint: Optional[bool] = typer.Option(None, "--hint/--no-hint", help="also the prompt that says in words "
                                                                             "what the cue marks (+hint)"),
          rule: Optional[str] = typer.Option(None, help="sum | mean | greedy | sampled: which score picks the "
                                             "answer (sampled: the first study's decoding, eval.sampling)"),
          vllm_server: Optional[str] = typer.Option(None, help="URL of a running vLLM server (OpenAI API)"),
          config: Optional[Path] = typer.Option(None, help="experiment YAML (frames, prompt, eval)"),
          set_: list[str] = typer.Option([], "--set", help="override a config field"),
          shard: Optional[str] = typer.Option(None, help="i/n: score every n-th video from i"),
          limit: Optional[int] = typer.Option(None, help="only the first N questions"),
          device: Optional[str] = typer.Option(None, help="cuda / cpu (default: cuda when present)")):
    """Score every question under each condition; resumable predictions; results.json / results.csv."""
    from cuelab.config import load_config
    from cuelab.evaluate.metrics import format_table
    from cuelab.evaluate.run import evaluate

    overrides = list(set_) + ([f"eval.rule={rule}"] if rule else [])
    if videos is None and [c for c in (_csv(conditions) or ["plain"]) if c != "blind"]:
        raise typer.BadParameter("--videos is needed unless --conditions blind")
    cfg = load_config(config, overrides)
    summary = evaluate(cfg, model, adapter, model_name, questions, videos, out, _csv(conditions), blind, hint,
                       base_name=base_name, backend=backend, shard=_shard(shard), vllm_server=vllm_server,
                       device=device, limit=limit)
    console.print(f"scored {summary['scored']} (failed {summary['failed']}, already there {summary['already']}) "
                  f"in {summary['seconds']} s")
    typer.echo(format_table(summary["results"]))
    console.print(f"wrote {out}/predictions/, {out}/results.json, {out}/results.csv")


@app.command()
def results(predictions: Path = typer.Option(..., help="folder of <model>__<condition>.jsonl files"),
            out: Path = typer.Option(..., help="output folder for results.json and results.csv")):
    """Accuracy with 95% CIs per (model, condition, kind); each cue vs plain: clustered CI, exact McNemar p."""
    from cuelab.evaluate.metrics import format_table, write_results

    if not predictions.is_dir():
        raise DataError("predictions folder not found", file=str(predictions))
    payload = write_results(predictions, out)
    typer.echo(format_table(payload))
    console.print(f"wrote {out}/results.json and {out}/results.csv")


# --- attention -----------------------------------------------------------------------------------------------

@app.command()
def attention(model: str = typer.Option(..., help="hub id or folder of the model"),
              adapter: Optional[Path] = typer.Option(None, help="PEFT LoRA folder applied on top of --model"),
              model_name: Optional[str] = typer.Option(None, help="row label: pretrained | finetuned "
                                                                  "(default: finetuned with --adapter)"),
              questions: Path = typer.Option(..., help="questions JSONL (test split)"),
              videos: Path = typer.Option(..., help="rendered videos: DIR/<condition>/<video>.mp4"),
              annotations: Path = typer.Option(..., help="Something-Else annotations (the object boxes)"),
              conditions: Optional[str] = typer.Option(None, help="comma-separated, e.g. plain,box,trajectory"),
              n: Optional[int] = typer.Option(None, help="questions analysed (seeded choice)"),
              out: Path = typer.Option(..., help="output folder"),
              per_head: bool = typer.Option(False, help="also keep lift per attention head"),
              config: Optional[Path] = typer.Option(None, help="experiment YAML (frames, prompt, attention)"),
              set_: list[str] = typer.Option([], "--set", help="override a config field"),
              device: Optional[str] = typer.Option(None, help="cuda / cpu (default: cuda when present)")):
    """Where the answer position looks: attention to each video token, per layer, inside the object box vs cue."""
    from cuelab.attention.run import ModelSpec, run_attention
    from cuelab.config import load_config

    overrides = list(set_)
    if conditions:
        overrides.append(f"attention.conditions=[{conditions}]")
    if n is not None:
        overrides.append(f"attention.n={n}")
    if per_head:
        overrides.append("attention.per_head=true")
    cfg = load_config(config, overrides)
    name = model_name or ("finetuned" if adapter else "pretrained")
    spec = ModelSpec(name, model, str(adapter) if adapter else None)
    results = run_attention(cfg, [spec], questions, videos, annotations, out, device=device)
    mean = [r for r in results["rows"] if r["layer"] == "mean" and r["model"] == name]
    for r in mean:
        console.print(f"{name}/{r['condition']}: lift {r['lift']} (sinks out {r['lift_ns']}), n={r['lift_n']}")
    console.print(f"wrote {out}/attention_results.json, .csv, attention_lift.png, overlays/")


# --- pipeline and report -------------------------------------------------------------------------------------

@app.command()
def run(config: Path = typer.Argument(..., help="experiment YAML"),
        stages: Optional[str] = typer.Option(None, help="comma-separated stages to run (default: all)"),
        set_: list[str] = typer.Option([], "--set", help="override a config field, e.g. --set train.lr=2e-4"),
        check_only: bool = typer.Option(False, "--check", help="validate the config, name missing inputs, exit"),
        force: bool = typer.Option(False, help="redo stages even when their outputs exist")):
    """Run the pipeline from a config: each stage is skipped when its outputs exist for the same config. With
    `models:` in the config, the shared stages run once and each model in OUTPUT/models/<name>/, then the
    cross-model report OUTPUT/report/models.md; exit code 1 when a model failed (the others still ran)."""
    from cuelab.config import load_config
    from cuelab.pipeline import check

    cfg = load_config(config, set_)
    if check_only:
        missing = check(cfg)
        for m in missing:
            console.print(f"[red]missing[/red] {escape(str(m))}", soft_wrap=True, highlight=False)
        try:
            check_output_dir(cfg.output_dir, "output_dir")
        except DataError as e:
            missing.append(e)
            console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True, highlight=False)
        if missing:
            raise typer.Exit(code=1)
        console.print(f"{config}: valid, every input present")
        return
    done = _run_pipeline(cfg, _csv(stages), force=force)
    failed = [o.name for o in done.get("models", []) if o.error] if cfg.models else []
    if failed:
        console.print(f"[red]{len(failed)} of {len(cfg.models)} models failed[/red]: {', '.join(failed)} "
                      "(the others ran; see above and report/models.md)", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1)


def _run_pipeline(cfg, stages: list[str] | None = None, force: bool = False) -> dict:
    """`run` and `demo` alike: the output folder checked first; a stage's ValueError is reported as bad input
    (unknown synthetic templates, a vocabulary smaller than the tokenizer)."""
    from cuelab.pipeline import run_pipeline

    check_output_dir(cfg.output_dir, "output_dir")
    try:
        return run_pipeline(cfg, stages, force=force)
    except ValueError as e:
        _fail(e)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run folder (holding config.yaml)"),
           set_: list[str] = typer.Option([], "--set", help="override a config field"),
           compare: Optional[Path] = typer.Option(None, "--compare", help="a run folder of the other protocol on "
                                                  "the same model: its results beside this run's"),
           models: list[Path] = typer.Option([], "--models", help="another run folder (any model family or "
                                             "checkpoint; repeat for more): one table and one cue-effect figure "
                                             "across its models and this run's, in report/models.md")):
    """Merge every prediction file of a run (shards included) into results.json/csv and write the report. A
    multi-model run folder (`models:`): every model folder's, then the cross-model report/models.md."""
    from cuelab.config import load_config
    from cuelab.evaluate.metrics import format_table, write_results
    from cuelab.run_layout import RunPaths
    from cuelab.report.build import build_report
    from cuelab.report.models import load_other_runs, write_models_report
    from cuelab.report.protocols import load_other_run

    cfg = load_config(run_dir / "config.yaml", set_ + [f"output_dir={run_dir}"])
    check_output_dir(run_dir, "run_dir")
    if cfg.models:
        if compare is not None or models:
            raise DataError("a multi-model run folder already tables its models: give --compare / --models with "
                            "one of its model folders (models/<name>) instead", file=str(run_dir))
        from cuelab.pipeline import report_models

        md, html = report_models(cfg)
        console.print(f"wrote {md}" + (f" and {html}" if html else ""))
        return
    other = load_other_run(compare, cfg) if compare is not None else None  # refused before anything is written
    runs = load_other_runs(run_dir, models) if models else None  # so are folders that are not runs
    paths = RunPaths(run_dir)
    if paths.predictions.exists():
        typer.echo(format_table(write_results(paths.predictions, paths.root)))
    md, html = build_report(cfg, paths, compare=other)
    console.print(f"wrote {md}" + (f" and {html}" if html else ""))
    if runs is not None:
        md, html = write_models_report(cfg, paths, runs)
        console.print(f"wrote {md}" + (f" and {html}" if html else ""))


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a run folder (holding config.yaml and questions/test.jsonl)"),
           format_: str = typer.Option(..., "--format", help="lmms-eval | hf | vlmevalkit"),
           out: Path = typer.Option(..., help="the folder to write (replaced when an earlier export wrote it)"),
           conditions: Optional[str] = typer.Option(None, help="comma-separated conditions (default: the run's "
                                                    "evaluated ones, and blind when it asked without video)"),
           name: Optional[str] = typer.Option(None, help="the benchmark's name in task and config names "
                                              "(default: the run's name)")):
    """The run's test questions under each condition, with their cued videos, for another harness: an lmms-eval
    task folder (run with --include_path DIR, --model cuelab for cuelab's scoring), a Hugging Face datasets folder
    (one config per condition), or VLMEvalKit TSVs and a dataset class. docs/export.md says how to run each."""
    from cuelab.export import export as export_run

    wanted = [c.strip() for c in conditions.split(",") if c.strip()] if conditions else None
    summary = export_run(run_dir, format_, out, wanted, name)
    rows = ", ".join(f"{c} {n}" for c, n in summary["rows"].items())
    console.print(f"wrote {summary['out']} ({format_}): {summary['questions']} questions x "
                  f"{len(summary['conditions'])} conditions ({rows}), {summary['videos']} videos")


@app.command()
def demo(quick: bool = typer.Option(False, help="the 1-2 minute variant the test suite runs"),
         from_scratch: bool = typer.Option(False, "--from-scratch", help="pretrain the tiny model here instead of "
                                           "taking the shipped checkpoints/demo-pretrained (about 5 more minutes; "
                                           "the same weights bit for bit)"),
         out: Optional[Path] = typer.Option(None, help="run folder (default: the config's output_dir)"),
         protocol: Optional[str] = typer.Option(None, help="cuelab | first-study: run the demo under that "
                                                "protocol (first-study: runs/demo-first-study, the study's "
                                                "questions, prompt, cue, frames and decoding on the demo's data)"),
         set_: list[str] = typer.Option([], "--set", help="override a config field")):
    """The embedded default: synthetic data and a tiny Qwen3-VL, end to end on a CPU (configs/demo.yaml)."""
    from cuelab.config import load_config

    cfg_path = Path(__file__).resolve().parents[1] / "configs" / ("demo-quick.yaml" if quick else "demo.yaml")
    # under another protocol the pretrained model is another one too (its own prompt and questions)
    shipped = [f"pretrain.from_checkpoint=checkpoints/demo-{protocol}-pretrained"] if protocol not in (
        None, "cuelab") and not quick else []
    overrides = shipped + list(set_) + ([f"output_dir={out}"] if out else []) + (
        ["pretrain.from_checkpoint=null"] if from_scratch else [])
    cfg = load_config(cfg_path, overrides, protocol=protocol)
    _run_pipeline(cfg)
    console.print(f"[green]demo finished[/green]: {cfg.output_dir}")


if __name__ == "__main__":
    app()
