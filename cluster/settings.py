"""The one settings schema of a run, loaded from YAML with command-line overrides.

    settings = load_settings("configs/tiny.yaml", ["training.lr=1e-3", "run.rounds=1"])

Every section has defaults; a config file names only what differs. Unknown keys and bad values
stop the run before anything starts, with the key's dotted path in the message, e.g.
    configs/tiny.yaml: training.lr: Input should be greater than 0 (got -1)

Also refused before anything starts: a key written twice in the YAML (the second would silently
replace the first), `.inf` / `.nan` for any number, and a storage location that is neither a
local path nor `s3://<bucket>/...` (see `location`). Messages never carry a secret: values of
keys named like secret/key/token/password are shown as `***` (see `mask`).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from evaluation.registry import NAMES as BENCHMARK_NAMES
from longform.constraints import MIN_CONSTRAINED_WORDS
from longform.params import Decoding, MethodParams

# -- secrets in messages -----------------------------------------------------------------------

SECRET_WORDS = {"secret", "key", "keys", "token", "password", "passwd", "pwd", "apikey", "credential",
                "credentials", "auth", "authorization"}
MASK = "***"


def is_secret_name(name: object) -> bool:
    """Whether a key's name says its value is a secret: one of its words (split at _ - . and
    camelCase) is secret/key/token/password/..., e.g. secret_access_key, HF_TOKEN, apiKey.
    `max_tokens` or `tokenizer` are not (their word is not "token"), and a name ending in
    `_env` (api_key_env) holds the *name* of a variable, not the key."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower())
    if words and words[-1] == "env":
        return False
    return any(w in SECRET_WORDS for w in words) or any(s in str(name).lower() for s in ("secret", "passw", "passphr"))


def mask_text(text: str) -> str:
    """A URI's user:password@ part hidden (s3://AKIA:xyz@host/b -> s3://***@host/b), also
    after a mistyped scheme (s3:/AKIA:xyz@b, S3:AKIA:xyz@b) that is refused in a message."""
    return re.sub(r"(:/*)[^/@\s'\"]+@", rf"\1{MASK}@", text)


def mask(value: Any) -> Any:
    """`value` with every secret-named key's value (at any depth) and URI credentials replaced
    by ***, for anything that goes into a message, a log line or a stored object."""
    if isinstance(value, dict):
        return {k: MASK if is_secret_name(k) and v is not None else mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask(v) for v in value)
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    return value


# -- storage locations -------------------------------------------------------------------------

S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def location(value: str, s3: bool = True) -> str:
    """A storage location, checked: a local path, or `s3://<bucket>[/<key>]` with a valid bucket
    name (3-63 lowercase letters, digits, dots, hyphens). Anything else that starts like a URI
    (`S3://b`, `s3:/b`, `gs://b`, `http://...`) is refused instead of being taken for a local
    folder named `S3:` (on Kubernetes, output written there is lost with the pod).
    `file:///x` is accepted and returned as the local path `/x` (`file://host/x` is refused).
    With `s3=False` (folders read with plain file access) only local paths are accepted."""
    if not value.strip():
        raise ValueError("must not be empty")
    scheme = SCHEME.match(value)
    if not scheme:
        return value
    name, rest = scheme.group(1), value[scheme.end():]
    if name == "file":
        if not rest.startswith("///"):
            raise ValueError("a file:// URI must be file:///absolute/path (no host)")
        return rest[2:]
    if name.lower() != "s3":
        raise ValueError(f"{name}:// is not supported: use a local path or s3://<bucket>/<key>")
    if name != "s3" or not rest.startswith("//"):
        raise ValueError(f"neither a local path nor an S3 URI: did you mean {mask_text('s3://' + rest.lstrip('/'))!r}?")
    if not s3:
        raise ValueError("must be a local folder (it is read with plain file access, not from S3)")
    bucket = rest[2:].split("/", 1)[0]
    if not bucket:
        raise ValueError("names no bucket: expected s3://<bucket>/<key>")
    if not S3_BUCKET.match(bucket):
        raise ValueError(f"{mask_text('://' + bucket)[3:]!r} is not a valid S3 bucket name "
                         "(3-63 characters: lowercase letters, digits, dots, hyphens)")
    return value


def local_location(value: str) -> str:
    return location(value, s3=False)


def no_inf_nan(tree: dict[str, Any]) -> dict[str, Any]:
    """Free-form settings (engine_kwargs) hold no inf/nan either, at any depth."""
    def walk(node: Any, path: str) -> None:
        if isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"{path}: Input should be a finite number")
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            walk(child, f"{path}.{key}" if path else str(key))

    walk(tree, "")
    return tree


def safetensors_only(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Engines load weights from safetensors only (actors/serving.py forces it): a pickled
    checkpoint in a bucket must not run code in the engine."""
    if kwargs.get("load_format", "safetensors") != "safetensors":
        raise ValueError(f"load_format: the engines load safetensors only, not {kwargs['load_format']!r}")
    return kwargs


# a local path or s3:// URI (what Storage and filesystem_for read); a local folder only
Location = Annotated[str, AfterValidator(location)]
LocalPath = Annotated[str, AfterValidator(local_location)]
EngineKwargs = Annotated[dict[str, Any], AfterValidator(no_inf_nan), AfterValidator(safetensors_only)]


def no_secrets(env: dict[str, str]) -> dict[str, str]:
    """The engines' environment travels in their deployment's `runtime_env`, which Ray's
    dashboard shows to anyone who can reach it: no secret goes there."""
    named = sorted(name for name in env if is_secret_name(name))
    if named:
        raise ValueError(f"{', '.join(named)}: a secret is not passed this way (Ray's dashboard shows the "
                         "engines' environment); set it in the nodes' environment instead (on Kubernetes "
                         "from a Secret; on an embedded Ray in the environment of the job)")
    return env


def no_credentials(url: str | None) -> str | None:
    if url and mask_text(url) != url:
        raise ValueError("holds user:password@: give the credentials as storage.access_key_id / "
                         "storage.secret_access_key or in the AWS_* environment variables")
    return url


class Section(BaseModel):
    """Unknown keys are errors; so are inf and nan for any number (`.inf` is valid YAML, and an
    infinite lr or timeout would fail late or never)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def __repr_args__(self):
        """repr() (a log line, a traceback) masks secret-named keys, e.g. engine_env's HF_TOKEN."""
        for name, value in super().__repr_args__():
            yield name, MASK if is_secret_name(name) and value is not None else mask(value)


# an OpenAI-compatible endpoint: http(s)://host[:port][/path]
HTTP_URL = r"^https?://[^\s/]+(/\S*)?$"

# a host name (a bind address that is not an IP address)
HOST_NAME = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"


def bind_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not re.fullmatch(HOST_NAME, value):
            raise ValueError("an IP address or a host name, without a scheme or a port (the port is "
                             "serving.port)") from None
    return value


# a run's name, and any folder name a user gives inside a run: one path component, never `..`
FOLDER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class RunSection(Section):
    name: str = Field("demo", pattern=FOLDER_NAME)
    rounds: int = Field(2, ge=1)
    seed: int = 0


class StorageSection(Section):
    """Where a run's data and checkpoints live: a local folder or an s3:// URI.
    S3 endpoint and credentials come from here or from the standard AWS variables
    (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)."""

    root: Location = "./runs"
    endpoint_url: Annotated[str | None, AfterValidator(no_credentials)] = Field(
        None, pattern=r"^https?://[^\s/]+", description="http(s)://host[:port]")
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    retry_timeout_s: float = Field(300, ge=0, description="how long a read or write keeps retrying "
                                   "while the storage cannot be reached, before the run stops")
    retry_backoff_s: float = Field(1.0, gt=0, description="first wait between retries; doubles, at most 30 s")

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")


class RaySection(Section):
    """None means: RAY_ADDRESS if set, else an embedded local Ray with `num_cpus` logical CPUs."""

    address: str | None = None
    num_cpus: int = Field(4, ge=4, description="Serve LLM does not schedule below 4 logical CPUs")


class ModelSection(Section):
    base: Location = Field(..., description="local folder or s3:// URI of the base model (HF format)")


class RoleServing(Section):
    """One served role. On a GPU cluster set resources to e.g. {GPU: 1, CPU: 8}."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: int = Field(16, ge=1)
    max_ongoing_requests: int = Field(64, ge=1)
    upscale_delay_s: float = Field(30.0, ge=0, description="load must last this long before scaling up")
    downscale_delay_s: float = Field(600.0, ge=0)
    resources: dict[str, float] = Field(default_factory=lambda: {"CPU": 1})
    engine_kwargs: EngineKwargs = Field(default_factory=dict)

    @model_validator(mode="after")
    def replicas_in_order(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class JudgeSection(Section):
    """The judge: a served role ("generator" reuses the Generator's deployment) or any
    OpenAI-compatible endpoint. The key is read from the environment variable named here."""

    source: Literal["generator", "endpoint"] = "generator"
    base_url: str | None = Field(None, pattern=HTTP_URL, description="the endpoint's http(s)://... (source 'endpoint')")
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"

    @model_validator(mode="after")
    def endpoint_complete(self):
        if self.source == "endpoint" and not (self.base_url and self.model):
            raise ValueError("source 'endpoint' needs base_url and model")
        return self


class ServingSection(Section):
    mode: Literal["full", "lora"] = "full"
    host: Annotated[str, AfterValidator(bind_address)] = Field(
        "127.0.0.1", description="HTTP bind address (an IP address or a host name; the port is serving.port); "
        "0.0.0.0 only inside a cluster")
    port: int = Field(8000, ge=1, le=65535)
    engine_kwargs: EngineKwargs = Field(default_factory=dict, description="shared by all roles")
    engine_env: Annotated[dict[str, str], AfterValidator(no_secrets)] = Field(
        default_factory=dict, description="environment of the engine processes, e.g. VLLM_CPU_* (no secrets: "
        "the dashboard shows it)"
    )
    release_during_training: bool = Field(
        True, description="take the models down while training runs (frees their GPUs); the next "
        "serve is then a deploy, not an in-place hand-off"
    )
    sleep_during_training: bool = Field(
        False, description="instead of release_during_training: the engines stay deployed but free their "
        "GPU memory while training runs (vLLM sleep mode; give the engines and the trainers fractions of the "
        "same GPUs); vLLM-CPU ignores it"
    )
    handoff: Literal["in_place", "redeploy"] = Field(
        "in_place", description="full mode: new weights of the same architecture are loaded into the "
        "running engines (seconds); redeploy: the app is deployed again from them (minutes at 7B)"
    )
    api_key_env: str | None = Field(
        None, description="name of an environment variable holding a key: the HTTP API of the roles this run "
        "serves then answers only requests with `Authorization: Bearer <key>` (401 otherwise); None: no key")
    data_path: Literal["handle", "http"] = Field(
        "handle", description="how the pipeline's own workers call the served roles: through Serve deployment "
        "handles (no proxy, no HTTP) or over the OpenAI HTTP API users get; external endpoints are always HTTP")
    generator: RoleServing = Field(default_factory=RoleServing)
    extender: RoleServing = Field(default_factory=RoleServing)
    judge: JudgeSection = Field(default_factory=JudgeSection)
    request_timeout_s: float = Field(600, gt=0)
    max_retries: int = Field(3, ge=0)
    max_concurrency: int = Field(64, ge=1, description="in-flight requests per pipeline worker")
    deploy_timeout_s: float = Field(900, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="Serve replicas and vLLM engines; INFO adds a line per request"
    )

    @model_validator(mode="after")
    def one_way_to_idle(self):
        if self.release_during_training and self.sleep_during_training:
            raise ValueError("release_during_training and sleep_during_training: choose one (release takes the "
                             "engines down, sleep keeps them deployed without their GPU memory)")
        return self


class SelfInstructDecoding(Decoding):
    max_tokens: int | None = Field(256, ge=1, description="one instruction line")


class JudgeLongDecoding(Decoding):
    """A verdict, read greedily. No repetition penalty: it lowers whichever answer's tokens the
    prompt happens to hold ("Reply with yes or no"), and which those are is the tokenizer's
    accident (the tiny model's "yes" is 'y' 'es', its 'y' in the prompt, its "no" not): on a
    build of the tiny model whose margin between the two was small, a penalty of 1.1 turned
    every "yes" into "no"."""

    temperature: float = Field(0.0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0)
    max_tokens: int | None = Field(8, ge=1, description="yes or no")


class SelfInstructSection(Section):
    """New instructions the Generator writes from two sampled ones, kept if the judge says they
    need a long answer (longform/self_instruct.py). The pool grows across rounds."""

    new_per_round: int = Field(0, ge=0, description="0: off, every round drafts from the seeds only")
    batch_size: int = Field(16, ge=1, description="candidates per batch; accepted ones join the pool at once")
    max_candidates: int | None = Field(None, ge=1, description="per round; default 4 x new_per_round")
    decoding: SelfInstructDecoding = Field(default_factory=SelfInstructDecoding)
    judge_decoding: JudgeLongDecoding = Field(default_factory=JudgeLongDecoding)


class SynthesisSection(Section):
    seeds: Location = "configs/seeds/tiny_seeds.jsonl"
    instructions_per_round: int | None = Field(None, ge=1, description="None: every seed")
    shard_size: int = Field(64, ge=1)
    workers: int = Field(2, ge=1, description="Ray Data actors running shards")
    shards_per_worker: int = Field(2, ge=1, description="shards one actor runs concurrently")
    prompt_dir: LocalPath | None = Field(None, description="prompt templates (a local folder)")
    method: MethodParams = Field(default_factory=MethodParams)
    decoding: Decoding = Field(default_factory=Decoding)
    self_instruct: SelfInstructSection = Field(default_factory=SelfInstructSection)


class ProbeSection(Section):
    """A fixed instruction set answered by the Generator before and after every round."""

    file: Location = "configs/seeds/tiny_probes.jsonl"
    decoding: Decoding = Field(default_factory=lambda: Decoding(temperature=0.0, max_tokens=2048))


class LoraSection(Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class TrainingSection(Section):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = Field(default_factory=lambda: {"CPU": 1})
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="STRICT_SPREAD: one worker per node")
    method: Literal["full", "lora"] = Field("full", description="the reference trains LoRA (see configs/)")
    lora: LoraSection = Field(default_factory=LoraSection)
    continue_from_previous: bool = Field(True, description="round k starts from round k-1's weights")
    zero_stage: Literal[0, 1, 2, 3] = 3
    offload_optimizer: bool = False
    offload_params: bool = False
    lr: float = Field(1e-4, gt=0)
    epochs: float = Field(4, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    micro_batch_size: int = Field(1, ge=1, description="rows per worker per step")
    grad_accum: int = Field(1, ge=1)
    cutoff_len: int = Field(16384, ge=16)
    over_length: Literal["skip", "truncate"] = "skip"
    packing: bool = True
    bf16: Literal["auto", True, False] = "auto"
    gradient_checkpointing: bool = True
    checkpoint_every_steps: int = Field(0, ge=0, description="0: none (a fine-tune cut short starts over)")
    checkpoint_upload: Literal["sync", "async"] = Field(
        "sync", description="async: a checkpoint is uploaded to the run's storage while training goes on "
        "(Ray Train's checkpoint_upload_mode); at 7B a ZeRO-3 checkpoint with optimizer state is ~100 GB")
    max_failures: int = Field(2, ge=0, description="worker failures Ray Train recovers from")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"], description="experiment tracking through the Trainer; TensorBoard "
        "event files go to <run>/<round or final>/train-<name>/tensorboard/ ([]: none)")


class EndpointSection(Section):
    """An OpenAI-compatible endpoint outside the run (vLLM, a hosted API, ...). The key is
    read from the environment variable named here; it is never logged or stored."""

    base_url: str | None = Field(None, pattern=HTTP_URL,
                                 description="e.g. https://api.example.com/v1; None: serve our own model")
    model: str | None = Field(None, description="the model name the endpoint expects")
    api_key_env: str = "OPENAI_API_KEY"

    @model_validator(mode="after")
    def model_with_url(self):
        if self.base_url and not self.model:
            raise ValueError("an endpoint needs a model name (model)")
        return self


# Decoding with other defaults is a subclass, not a default_factory: a config that sets one
# field of it (e.g. max_tokens) then keeps the other defaults of the section.
class PlanDecoding(Decoding):
    max_tokens: int | None = Field(2048, ge=1)


class SectionDecoding(Decoding):
    max_tokens: int | None = Field(4096, ge=1, description="per section (200-1000 words)")


class BenchmarkDecoding(Decoding):
    """LongWriter's pred.py: temperature 0.5, plain sampling, up to 32k new tokens. Knobs at
    their neutral value (top_p 1, top_k -1, repetition_penalty 1) are left out of requests, so
    hosted APIs that lack them accept the request."""

    temperature: float = Field(0.5, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(-1, ge=-1)
    repetition_penalty: float = Field(1.0, gt=0)
    max_tokens: int | None = Field(32768, ge=1)


class JudgeDecoding(BenchmarkDecoding):
    """LongBench-Write's judge calls: temperature 0.5, up to 1,024 new tokens."""

    max_tokens: int | None = Field(1024, ge=1)


class RewriteDecoding(Decoding):
    temperature: float = Field(0.0, ge=0)
    max_tokens: int | None = Field(256, ge=1, description="one query")


class CollectSection(Section):
    """The final data (`python -m jobs.collect`): every round's kept extended responses in a
    word window, each query rewritten with a length constraint it satisfies."""

    min_words: int = Field(2000, ge=1)
    max_words: int = Field(8000, ge=1)
    rewrite: bool = Field(True, description="the Generator rewrites each query to state its constraint")
    endpoint: EndpointSection = Field(default_factory=EndpointSection,
                                      description="rewrite with this endpoint instead of the last round's Generator")
    decoding: RewriteDecoding = Field(default_factory=RewriteDecoding)
    concurrency: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _window(self):
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        return self


class FinalSection(Section):
    """After the last round (Self-Lengthen's final stage), as stages of the same job:
    generate   the last Generator answers `generate_count` more instructions (self-instructed
               and seeds), drafts only, no extension
    collect    every round's extended texts and these answers in the `collect` window, each
               query given a length constraint it satisfies
    closed-cuts  with `closed_cuts`: each collected answer cut after each paragraph and closed by
               one paragraph the last Generator writes, under a constraint the text satisfies
               (longform/closed_cuts.py), added to the final SFT data
    train      the *base* model fine-tuned on that data (as `training` says), mixed with
               `mix_with` (a chat file in any format `jobs.train` reads) at `mix_fraction`
    score      the base and the final model on a length-constrained probe set: LonGen's length
               score, the share of answers inside their window. Weights under <run>/final/model/."""

    enabled: bool = True
    generate_count: int = Field(64, ge=0, description="instructions the last Generator answers for the final data")
    mix_with: Location | None = Field(None, description="general chat data (path or s3:// URI) mixed into the final SFT")
    mix_fraction: float = Field(0.0, ge=0, lt=1, description="share of the final SFT data taken from mix_with")
    probe_words: tuple[int, int] = Field((2000, 8000), description="lengths the constrained probe set asks for, [lo, hi]")
    epochs: float | None = Field(None, gt=0, description="epochs of the final SFT (None: training.epochs)")
    closed_cuts: bool = Field(False, description="also train the final model on collected answers cut after a "
                              "paragraph and closed by one the last Generator writes, each under a constraint its "
                              "length satisfies: stops placed where the number asked says (longform/closed_cuts.py)")
    preference: Literal["none", "dpo"] = Field(
        "none", description="dpo: after the final SFT, DPO on pairs built from the run's own answers (`dpo`)")

    @model_validator(mode="after")
    def _mix(self):
        if self.mix_fraction and not self.mix_with:
            raise ValueError("mix_fraction is set but mix_with names no file")
        lo, hi = self.probe_words
        if not 0 < lo <= hi:
            raise ValueError(f"probe_words must be [lo, hi] with 0 < lo <= hi, got {list(self.probe_words)}")
        if lo < MIN_CONSTRAINED_WORDS:
            raise ValueError(f"probe_words: {lo} words is too few to ask for (every constraint type has round "
                             f"numbers from {MIN_CONSTRAINED_WORDS} words)")
        return self


class DPOSection(Section):
    """Direct preference optimisation (TRL's DPOTrainer) on chosen/rejected pairs, in the loop
    (`final.preference: dpo`, pairs from the run's own answers: longform/preference.py) or alone
    (`python -m jobs.train --method dpo`). Workers, ZeRO stage, full or LoRA, checkpoints and
    export: as `training` says. The reference model is the one DPO starts from (LoRA: the
    adapter switched off)."""

    beta: float = Field(0.1, gt=0, description="how far the policy may move from the reference")
    loss_type: Literal["sigmoid", "sigmoid_norm", "ipo", "hinge", "robust"] = Field(
        "sigmoid", description="sigmoid: the DPO paper's; sigmoid_norm: log-probabilities averaged over tokens")
    ld_alpha: float | None = Field(None, ge=0, le=1, description="LD-DPO: weight of the tokens past the "
                                   "shorter answer's length (None: plain sums)")
    lr: float | None = Field(None, gt=0, description="None: training.lr")
    epochs: float | None = Field(None, gt=0, description="None: training.epochs")
    pairs_per_query: int = Field(1, ge=1, description="pairs built per constrained query at most")
    balance: bool = Field(False, description="as many pairs rejecting a too-short answer as a too-long one "
                          "(a seeded draw of the larger side), so that length alone does not tell chosen from "
                          "rejected (longform.preference.balanced)")
    extra_windows: int = Field(0, ge=0, description="per instruction, up to this many more constrained queries, "
                               "each around another answer that passed the rules (collect's word bounds), so that a "
                               "text chosen under its own window is rejected under another's: the length asked, not "
                               "the answer, tells them apart (longform.preference.extra_windows)")
    judge: bool = Field(False, description="where a query has two or more in-window answers, serving.judge rates "
                        "them on LongBench-Write's quality rubric and the best-rated one is chosen (evaluation."
                        "judge_prompt, judge_decoding, judge_attempts and concurrency apply)")


class AgentWriteSection(Section):
    """AgentWrite (LongWriter): plan, then write section by section (`python -m jobs.agentwrite`).
    The writer is `endpoint` when its base_url is set, else `model` (default: model.base)
    served as the Generator on this cluster."""

    prompts: Location | None = Field(None, description="instruction JSONL (path or s3:// URI); or --prompts")
    model: Location | None = Field(None, description="weights to serve as the writer; None: model.base")
    endpoint: EndpointSection = Field(default_factory=EndpointSection)
    plan_attempts: int = Field(3, ge=1, description="plan calls per sample until one parses")
    max_steps: int = Field(50, ge=1, description="a plan with more steps fails (the reference skips them)")
    shard_size: int = Field(16, ge=1, description="samples per shard: the unit of progress and output files")
    workers: int = Field(2, ge=1, description="Ray Data actors running shards")
    shards_per_worker: int = Field(2, ge=1, description="shards one actor runs concurrently")
    samples_in_flight: int = Field(16, ge=1, description="samples of one shard written at once")
    prompt_dir: LocalPath | None = Field(None, description="prompt templates (a local folder)")
    plan_decoding: PlanDecoding = Field(default_factory=PlanDecoding)
    write_decoding: SectionDecoding = Field(default_factory=SectionDecoding)


class BenchmarkSpec(Section):
    name: Literal[BENCHMARK_NAMES]  # evaluation/registry.py: one entry per benchmark
    data: Location = Field(..., description="the benchmark's JSONL (path or s3:// URI); the project ships none")
    limit: int | None = Field(None, ge=1, description="an evenly spaced subset of this many prompts")


class EvaluationSection(Section):
    """Long-output benchmarks (`python -m jobs.evaluate`, and after each round of the loop when
    `after_each_round` is set). Quality scores (LongBench-Write S_q, LonGen quality) need a
    judge: with `judge` on they are asked of serving.judge (the served Generator, or an
    endpoint such as GPT-4o); with it off they are null."""

    after_each_round: bool = Field(False, description="the loop evaluates the base model and every round")
    benchmarks: list[BenchmarkSpec] = Field(default_factory=list, description="what the loop evaluates")
    endpoint: EndpointSection = Field(default_factory=EndpointSection, description="jobs.evaluate --endpoint")
    decoding: BenchmarkDecoding = Field(default_factory=BenchmarkDecoding)
    judge: bool = False
    judge_attempts: int = Field(3, ge=1, description="judge calls per response until a verdict parses")
    judge_prompt: Location | None = Field(None, description="a judge prompt file (path or s3:// URI) replacing the "
                                     "built-in wording, e.g. a benchmark's official one; $INST$ / $RESPONSE$ slots")
    judge_decoding: JudgeDecoding = Field(default_factory=JudgeDecoding)
    concurrency: int = Field(16, ge=1, description="requests in flight to the evaluated model and the judge")

    @model_validator(mode="after")
    def benchmarks_when_after_rounds(self):
        if self.after_each_round and not self.benchmarks:
            raise ValueError("after_each_round needs at least one entry in benchmarks")
        return self


class Settings(Section):
    run: RunSection = Field(default_factory=RunSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    ray: RaySection = Field(default_factory=RaySection)
    model: ModelSection
    serving: ServingSection = Field(default_factory=ServingSection)
    synthesis: SynthesisSection = Field(default_factory=SynthesisSection)
    probe: ProbeSection = Field(default_factory=ProbeSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    agentwrite: AgentWriteSection = Field(default_factory=AgentWriteSection)
    collect: CollectSection = Field(default_factory=CollectSection)
    final: FinalSection = Field(default_factory=FinalSection)
    dpo: DPOSection = Field(default_factory=DPOSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)

    @model_validator(mode="after")
    def absolute_local_paths(self):
        """Relative paths mean: relative to where the job starts. Ray workers run elsewhere,
        so they get absolute paths (URIs are left as they are)."""
        for section, key in LOCAL_PATHS:
            owner = getattr(self, section)
            value = getattr(owner, key)
            if value and "://" not in value:
                object.__setattr__(owner, key, os.path.abspath(os.path.expanduser(value)))
        return self

    @model_validator(mode="after")
    def serving_matches_training(self):
        if self.serving.mode == "full" and self.training.method == "lora":
            raise ValueError("training.method 'lora' exports adapters, which serving.mode 'full' cannot "
                             "serve as models: set serving.mode to 'lora' (or train with method 'full')")
        if self.serving.mode == "lora":
            if self.training.method != "lora":
                raise ValueError("serving.mode 'lora' serves LoRA adapters: set training.method to 'lora'")
            if not self.storage.is_s3:
                raise ValueError("serving.mode 'lora' needs storage.root on s3:// "
                                 "(Ray Serve LLM loads adapters only from object storage)")
        return self

    def public_dict(self) -> dict:
        """Everything but secrets: SecretStr fields, and any value under a secret-named key
        (e.g. serving.engine_env.HF_TOKEN), show as ***."""
        return mask(self.model_dump(mode="json"))


LOCAL_PATHS = [("storage", "root"), ("model", "base"), ("synthesis", "seeds"), ("synthesis", "prompt_dir"),
               ("probe", "file"), ("final", "mix_with"), ("evaluation", "judge_prompt"),
               ("agentwrite", "prompts"), ("agentwrite", "model"), ("agentwrite", "prompt_dir")]


class SettingsError(ValueError):
    """A config that cannot run; the message names the file and the key."""


# -- reading YAML ------------------------------------------------------------------------------

MERGE_TAG = "tag:yaml.org,2002:merge"


def at(source: str, mark: yaml.Mark | None) -> str:
    """`file:line` for a config file; a --set value (one line, the key already named) just its name."""
    return f"{source}:{mark.line + 1}" if mark and not source.startswith("--set") else source


def check_unique_keys(node: yaml.Node, source: str, path: str = "", seen_nodes: dict | None = None) -> None:
    """PyYAML keeps the last of two equal keys; a section written twice would silently lose
    the first one's settings. Refuse it, naming the line of both. An anchor's node is checked
    once; an alias inside its own anchor (a recursive value) is refused."""
    seen_nodes = {} if seen_nodes is None else seen_nodes
    if seen_nodes.get(id(node)) == "open":
        raise SettingsError(f"{at(source, node.start_mark)}: {path or 'the document'} refers to itself "
                            "(a recursive alias)")
    if id(node) in seen_nodes:
        return
    seen_nodes[id(node)] = "open"
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                check_unique_keys(value_node, source, path, seen_nodes)
                continue
            key = key_node.value
            dotted = f"{path}.{key}" if path else key
            if key in keys:
                first = "" if source.startswith("--set") else f" (first on line {keys[key]})"
                raise SettingsError(f"{at(source, key_node.start_mark)}: {dotted} is written twice{first}; "
                                    "the second would replace the first: merge them")
            keys[key] = key_node.start_mark.line + 1
            check_unique_keys(value_node, source, dotted, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            check_unique_keys(item, source, f"{path}.{i}" if path else str(i), seen_nodes)
    seen_nodes[id(node)] = "done"


def read_yaml(text: str, source: str) -> Any:
    """YAML as plain data, with duplicate keys refused and syntax errors reported as
    `source:line: ...` without the offending line's text or the token quoted from it (they
    may hold a secret)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_unique_keys(node, source)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        # PyYAML quotes what it met ("found undefined alias 'x'"), which may be part of a secret
        what = re.sub(r"'[^'\n]{3,}'", "'...'", "; ".join(p for p in (err.context, err.problem) if p))
        column = f" (column {mark.column + 1})" if mark else ""
        raise SettingsError(f"{at(source, mark)}: not valid YAML: {what}{column}") from None
    except yaml.YAMLError as err:
        raise SettingsError(f"{source}: not valid YAML: {type(err).__name__}") from None
    finally:
        loader.dispose()


# -- overrides ---------------------------------------------------------------------------------

def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise SettingsError(f"override {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'training.lr=1e-3' -> ('training.lr', 0.001); values are read as YAML."""
    if "=" not in text:
        shown = MASK if is_secret_name(text) else repr(mask_text(text))
        raise SettingsError(f"override {shown}: expected KEY=VALUE, e.g. training.lr=1e-3")
    key, raw = text.split("=", 1)
    key = key.strip()
    return key, read_yaml(raw, f"--set {key}") if raw.strip() else None


def shown_override(text: str) -> str:
    """An override as it may appear in a message: `key=***` for a secret-named key, any secret
    inside a mapping value masked too."""
    key, _, raw = text.partition("=")
    if any(is_secret_name(part) for part in key.split(".")):
        return f"{key.strip()}={MASK}"
    try:
        value = read_yaml(raw, "--set") if raw.strip() else None
    except SettingsError:
        value = None
    shown = json.dumps(mask(value)) if isinstance(value, (dict, list)) else mask_text(raw.strip())
    return f"{key.strip()}={shown}"


def describe(err: ValidationError, source: str) -> str:
    """One line per error, naming the dotted key. The offending value is shown unless it is
    a whole section (a cross-field check: the message names the keys) or a secret."""
    lines = [f"{source}: invalid settings"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        message = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        if e["type"] in ("missing", "extra_forbidden") or isinstance(value, dict):
            got = ""
        elif any(is_secret_name(p) for p in loc):
            got = f" (got {MASK})"
        else:
            got = f" (got {mask(value)!r})"
        lines.append(f"  {'.'.join(loc) + ': ' if loc else ''}{message}{got}")
    return "\n".join(lines)


def load_settings(path: str | os.PathLike | None, overrides: list[str] = ()) -> Settings:
    tree: dict = {}
    source = str(path) if path else "(defaults)"
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise SettingsError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise SettingsError(f"{path} is a folder, not a config file") from None
        except UnicodeDecodeError as err:
            line = Path(path).read_bytes()[:err.start].count(b"\n") + 1
            raise SettingsError(f"{path}, line {line}: not UTF-8 text (byte 0x{err.object[err.start]:02x})") from None
        except OSError as err:
            raise SettingsError(f"cannot read the config file {path}: {err.strerror or err}") from None
        tree = read_yaml(text, str(path)) or {}
        if not isinstance(tree, dict):
            raise SettingsError(f"{path}: the top level must be a mapping of sections")
    for override in overrides:
        set_dotted(tree, *parse_override(override))
    if overrides:
        source += " + overrides " + " ".join(shown_override(o) for o in overrides)
    try:
        return Settings.model_validate(tree)
    except ValidationError as err:
        raise SettingsError(describe(err, source)) from None
