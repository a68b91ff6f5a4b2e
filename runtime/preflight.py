"""Every input a job reads, checked before it connects to Ray (a RayJob has provisioned the
cluster by then; a missing seeds file should not cost that):

    settings = settings_from_args(args)
    check_loop_inputs(settings)          # then connect_checked(...)

* Files are read through the storage layer's retries (`cluster.storage.with_retries`): an S3
  endpoint that is down is waited out for `storage.retry_timeout_s`, then `StorageUnavailable`
  names the file (exit 1, like every other read that meets an outage).
* A file that is missing, a folder or a bare bucket, an instruction file with no line or no
  usable line, a model folder without config.json, prompt templates that do not load: exit 2
  (`jobs.bad_input`), the message naming the file or the setting.
* Instruction files are parsed with a `TokenLimit` from the model's own tokenizer: an
  instruction must leave room, in the engine's context window (`max_model_len` from the served
  roles' engine_kwargs, else the model config's `max_position_embeddings`), for the prompt
  template around it and for the answer (`decoding.max_tokens` of each call it goes into; with
  max_tokens null, half the window). One that does not is set aside with its tokens and the
  limit; decodings that leave no room for any instruction are a settings error (exit 2).
  Only the calls whose prompt holds the instruction and nothing the method wrote are counted:
  the extension prompt also carries the draft, which the method sizes itself.

`instruction_file` is also what the jobs read their instruction files with, so the checks here
and the records a job runs on are the same.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

from cluster.errors import bad_input
from cluster.layout import FINAL, RunLayout
from cluster.settings import Settings, mask_text
from cluster.storage import Storage, checked_uri, filesystem_for, with_retries
from longform.instructions import InstructionFile, TokenLimit, parse_instructions
from longform.params import Decoding
from longform.prompts import TEMPLATES, PromptBook, load_prompts
from longform import languages

# a model folder's files that are not needed to count tokens (never downloaded here)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt")
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


@dataclass(frozen=True)
class Use:
    """One kind of call an instruction goes into: the template around it (None: the
    instruction is the whole user message) and the decoding that sizes the answer."""

    template: str | None
    decoding: Decoding
    key: str  # the decoding's settings key, for messages


# -- files --------------------------------------------------------------------------------------
def checked_location(uri: str, what: str) -> str:
    """A location given on the command line (--out, --init-model, ...), checked as the settings'
    locations are (`cluster.storage.checked_uri`); exit 2 naming the flag."""
    try:
        return checked_uri(uri)
    except ValueError as err:
        bad_input(f"{what}: {err}")


def read_input(uri: str, settings: Settings, what: str) -> bytes:
    """The bytes of an input file, through the storage retries; exit 2 if it is not a file."""
    try:
        fs, path = filesystem_for(uri, settings.storage)
    except ValueError as err:
        bad_input(f"{what}: {err}")
    if uri.startswith("s3://") and "/" not in path:
        bad_input(f"{what}: {uri} names a bucket, not a file (expected s3://<bucket>/<key>)")
    try:
        return with_retries("read", uri, settings.storage, lambda: fs.cat_file(path))
    except FileNotFoundError:
        bad_input(f"{what}: file not found: {uri}")
    except IsADirectoryError:
        bad_input(f"{what}: {uri} is a folder, not a file")
    except PermissionError as err:
        bad_input(f"{what}: cannot read {uri}: {err}")


def stem_of(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1].split(".")[0]


def read_instructions(uri: str, settings: Settings, what: str, token_limit: TokenLimit | None) -> InstructionFile:
    """An instruction file parsed (bad lines set aside); exit 2 if it holds no usable line."""
    parsed = parse_instructions(read_input(uri, settings, what), uri, stem_of(uri), token_limit)
    if parsed.lines == 0:
        bad_input(f"{what}: {uri} is empty (one JSON object per line expected)")
    if not parsed.records:
        first = parsed.rejected[0]
        bad_input(f"{what}: no usable instruction in {uri}: all {parsed.lines} lines set aside "
                  f"(line {first['line']}: {first['reason']})")
    return parsed


# -- the model: its config, its tokenizer, its context ---------------------------------------------
_MODEL_DIRS: dict[str, str] = {}
_TOKENIZERS: dict[str, object] = {}


def model_dir(uri: str, settings: Settings, key: str) -> str:
    """A local folder holding the model's config and tokenizer files (for s3:// a temporary
    copy of those small files, never the weights); exit 2 if there is no model at `uri`."""
    if uri in _MODEL_DIRS:
        return _MODEL_DIRS[uri]
    try:
        store = Storage.open(uri, settings.storage)
    except ValueError as err:
        bad_input(f"{key}: {err}")
    names = store.list("")
    if "config.json" not in names:
        bad_input(f"{key}: no model at {uri} (config.json not found)")
    if store.protocol == "file":
        local = store.root
    else:
        local = tempfile.mkdtemp(prefix="preflight-model-")
        for name in names:
            if name.endswith(WEIGHT_SUFFIXES):
                continue
            try:
                data = store.read_bytes(name)
            except (FileNotFoundError, IsADirectoryError):  # a subfolder
                continue
            with open(os.path.join(local, name), "wb") as f:
                f.write(data)
    try:
        with open(os.path.join(local, "config.json"), encoding="utf-8-sig") as f:
            json.load(f)
    except (OSError, ValueError) as err:
        bad_input(f"{key}: {uri}/config.json does not parse: {err}")
    _MODEL_DIRS[uri] = local
    return local


def tokenizer_of(local: str, uri: str, key: str):
    if local not in _TOKENIZERS:
        from transformers import AutoTokenizer  # a few seconds: only when a job checks its inputs

        try:
            _TOKENIZERS[local] = AutoTokenizer.from_pretrained(local)
        except (OSError, ValueError) as err:
            bad_input(f"{key}: no tokenizer loads from {uri}: {err}")
    return _TOKENIZERS[local]


def context_window(settings: Settings, local: str) -> tuple[int, str] | None:
    """(tokens, where that number comes from): the served roles' max_model_len (the smallest),
    else the model config's; None when neither says."""
    s = settings.serving
    lengths = [(kw["max_model_len"], f"serving.{role}.engine_kwargs.max_model_len"
                if "max_model_len" in getattr(s, role).engine_kwargs else "serving.engine_kwargs.max_model_len")
               for role in ("generator", "extender")
               if (kw := {**s.engine_kwargs, **getattr(s, role).engine_kwargs}).get("max_model_len")]
    if lengths:
        return min(lengths)
    with open(os.path.join(local, "config.json"), encoding="utf-8-sig") as f:
        config = json.load(f)
    for key in CONTEXT_KEYS:
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key], f"{key} in the model's config.json"
    return None


def prompt_tokens(tokenizer, prompts: PromptBook, use: Use, lang: str) -> int:
    """Tokens of the call's prompt with an empty instruction (the chat template included)."""
    text = "" if use.template is None else prompts.render(use.template, lang, **{
        name: "" for name in TEMPLATES[use.template]})
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=False)
    return len(tokenizer.encode(text, add_special_tokens=False))


def token_limit(settings: Settings, model_uri: str, model_key: str, prompts: PromptBook,
                uses: list[Use]) -> TokenLimit | None:
    """The instruction tokens every use leaves room for, per language; None when the model's
    context window is not known. Exit 2 when a use leaves no room at all."""
    local = model_dir(model_uri, settings, model_key)
    window = context_window(settings, local)
    if window is None:
        return None
    context, source = window
    tokenizer = tokenizer_of(local, model_uri, model_key)
    limits: dict[str, int] = {}
    why: dict[str, str] = {}
    for lang in languages.codes():
        for use in uses:
            answer = use.decoding.max_tokens if use.decoding.max_tokens is not None else context // 2
            answer_why = f"{use.key}={answer}" if use.decoding.max_tokens is not None else \
                f"half the window for the answer, {use.key} being null"
            around = prompt_tokens(tokenizer, prompts, use, lang)
            limit = context - answer - around
            where = f"the {use.template} prompt" if use.template else "the chat template"
            if limit <= 0:
                bad_input(f"{use.key}: {answer} tokens for the answer plus {around} for {where} leave no room "
                          f"for an instruction in a window of {context} tokens ({source})")
            if lang not in limits or limit < limits[lang]:
                limits[lang] = limit
                why[lang] = f"a window of {context} tokens ({source}) - {answer} ({answer_why}) - {around} for {where}"
    return TokenLimit(count=lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
                      limits=limits, why=why)


# -- what each job reads -------------------------------------------------------------------------
def loop_prompts(settings: Settings) -> PromptBook:
    try:
        return load_prompts(settings.synthesis.prompt_dir)
    except (OSError, ValueError) as err:
        bad_input(f"synthesis.prompt_dir: {err}")


def loop_uses(settings: Settings, uri: str) -> list[Use]:
    """The calls the loop puts an instruction from `uri` into (seeds, probes, or both)."""
    uses = []
    syn = settings.synthesis
    if uri == syn.seeds:
        uses += [Use(None, syn.decoding, "synthesis.decoding.max_tokens")]
        if syn.self_instruct.new_per_round:
            uses += [Use("judge_long", syn.self_instruct.judge_decoding,
                         "synthesis.self_instruct.judge_decoding.max_tokens")]
    if uri == settings.probe.file:
        uses += [Use(None, settings.probe.decoding, "probe.decoding.max_tokens")]
    return uses


def instruction_file(uri: str, settings: Settings) -> InstructionFile:
    """A loop's instruction file (synthesis.seeds or probe.file), read and checked."""
    what = "synthesis.seeds" if uri == settings.synthesis.seeds else "probe.file"
    limit = token_limit(settings, settings.model.base, "model.base", loop_prompts(settings), loop_uses(settings, uri))
    return read_instructions(uri, settings, what, limit)


def check_storage_root(settings: Settings) -> None:
    """`storage.root` on S3: its bucket is there (a run whose every write would fail stops
    before the cluster starts; a local root is made when the run first writes)."""
    root = settings.storage.root
    if not root.startswith("s3://"):
        return
    fs, path = filesystem_for(root, settings.storage)
    bucket = path.split("/", 1)[0]
    try:
        there = with_retries("find", f"s3://{bucket}", settings.storage, lambda: fs.exists(bucket))
    except PermissionError:  # credentials that may write into the bucket but not look at it
        return
    if not there:
        bad_input(f"storage.root: the bucket {bucket!r} of {mask_text(root)} does not exist")


def check_api_key(settings: Settings) -> None:
    """A job that serves models behind `serving.api_key_env`: the variable is set here (the
    processes of a local Ray inherit it; in a cluster every pod gets it from a Secret)."""
    name = settings.serving.api_key_env
    if name and not os.environ.get(name, "").strip():
        bad_input(f"serving.api_key_env: the environment variable {name} is not set (it holds the key "
                  "the served models' HTTP API asks for)")


def check_loop_inputs(settings: Settings) -> dict[str, InstructionFile]:
    """jobs.self_lengthen: the base model, the prompt templates, the seeds, the probes, the
    benchmark files the loop evaluates on, the judge's prompt when a stage asks a judge, and
    the chat data the final SFT mixes in: every file the loop reads, however late it reads it."""
    check_api_key(settings)
    files = {what: instruction_file(uri, settings)
             for what, uri in (("seeds", settings.synthesis.seeds), ("probes", settings.probe.file))}
    for spec in settings.evaluation.benchmarks:
        check_benchmark_file(settings, spec.name, spec.data, False, f"evaluation.benchmarks[{spec.name}].data")
    final = settings.final
    preference_judge = final.enabled and final.preference == "dpo" and settings.dpo.judge
    if (settings.evaluation.judge and settings.evaluation.benchmarks) or preference_judge:
        from stages.benchmarks import judge_wording

        judge_wording(settings)
    if final.enabled and final.mix_with and final.mix_fraction:
        check_chat_file(settings, final.mix_with, "final.mix_with")
    check_rounds_before_final(settings)
    return files


def check_rounds_before_final(settings: Settings) -> None:
    """More rounds for a run whose final stage has begun: that stage would be skipped (its
    stages are recorded) and keep the data and model it made from the earlier rounds."""
    if not settings.final.enabled:  # no final stage in this job: the earlier one is left as it is
        return
    check_storage_root(settings)  # a bucket that is not there: said as such, not looked into
    layout = RunLayout.create(Storage.open(settings.storage.root, settings.storage), settings.run.name)
    try:
        if not layout.store.list(f"{FINAL}/stages", ".json"):
            return
    except PermissionError:  # credentials that may write into the bucket but not list it
        return
    missing = [k for k in range(1, settings.run.rounds + 1) if layout.round_finished(k) is None]
    if missing:
        bad_input(f"run.rounds={settings.run.rounds}: run {settings.run.name!r} has begun its final stage after "
                  f"round {missing[0] - 1}, which would not be made again from more rounds; remove "
                  f"{layout.store.uri(FINAL)} and {layout.store.uri('collect')} first, or start a new run")


def check_chat_file(settings: Settings, uri: str, what: str) -> None:
    """A chat dataset in any format jobs.train reads: there, and at least one usable record."""
    from training.sources import DataSpec, load_mixture

    try:
        records, rejected, _ = load_mixture([DataSpec(uri)], settings.storage, settings.run.seed)
    except (FileNotFoundError, ValueError) as err:
        bad_input(f"{what}: {err}")
    if not records:
        first = f" ({rejected[0]['where']}: {rejected[0]['reason']})" if rejected else ""
        bad_input(f"{what}: no usable record in {uri}{first}")


def check_agentwrite_inputs(settings: Settings, prompts_uri: str) -> InstructionFile:
    """jobs.agentwrite: the storage root, the prompts file (and the writer model when this
    job serves it)."""
    check_storage_root(settings)
    aw = settings.agentwrite
    try:
        prompts = load_prompts(aw.prompt_dir)
    except (OSError, ValueError) as err:
        bad_input(f"agentwrite.prompt_dir: {err}")
    limit = None
    if not aw.endpoint.base_url:
        check_api_key(settings)
        weights, key = (aw.model, "agentwrite.model") if aw.model else (settings.model.base, "model.base")
        limit = token_limit(settings, weights, key, prompts,
                            [Use("agentwrite_plan", aw.plan_decoding, "agentwrite.plan_decoding.max_tokens")])
    return read_instructions(prompts_uri, settings, "--prompts", limit)


def generator_to_serve(settings: Settings, round: int | str | None) -> tuple[int | str, str]:
    """(round, weights) of the Generator jobs.serve and jobs.evaluate --round serve: `round`'s
    export, the final model (`final`), the last round on storage that exported one (None,
    whatever run.rounds says), or the base
    model (0, or None before any export); exit 2 when there is none, or when the base model it
    needs (round 0, or LoRA's base under an adapter) is not there. Called before Ray starts."""
    layout = RunLayout.create(Storage.open(settings.storage.root, settings.storage), settings.run.name)
    if round == FINAL:
        if not layout.exported(FINAL, "model"):
            bad_input(f"no final model under {layout.store.uri(FINAL)} (the loop's final stage writes it)")
        k, weights = FINAL, layout.store.uri(layout.model_dir(FINAL, "model"))
    else:
        k = layout.last_export("generator") if round is None else round
        if k and not layout.exported(k, "generator"):
            bad_input(f"no exported Generator for round {round} under {layout.store.uri()}")
        weights = layout.store.uri(layout.model_dir(k, "generator")) if k else settings.model.base
    if k == 0 or settings.serving.mode == "lora":
        model_dir(settings.model.base, settings, "model.base")
    return k, weights


def check_benchmark_file(settings: Settings, benchmark: str, uri: str, with_response: bool, what: str):
    """A benchmark or responses file: there, with usable rows, and no more of its lines set
    aside than evaluation accepts (`evaluation.rows.unusable`: the rule it applies when it reads
    the file, rounds later)."""
    from evaluation.rows import parse_benchmark, unusable

    parsed = parse_benchmark(read_input(uri, settings, what), benchmark, uri, stem_of(uri), with_response)
    if not parsed.rows:
        detail = f" (line {parsed.rejected[0]['line']}: {parsed.rejected[0]['reason']})" if parsed.rejected else ""
        bad_input(f"{what}: no usable row in {uri}{detail}")
    why = unusable(parsed, uri, f"{benchmark} {'responses' if with_response else 'rows'}")
    if why:
        bad_input(f"{what}: {why}")
    return parsed
