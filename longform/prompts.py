"""Prompt templates, one editable text file per template and language.

The files live in `longform/prompts/<lang>/<name>.txt` and use `{field}` placeholders (write
`{{` and `}}` for literal braces). A run may point `method.prompt_dir` at a copy of that folder
to change the wording; the loader checks that every template exists for every language of
longform/languages.py's table and names the file that is missing or has a wrong placeholder.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

from longform import languages
from longform.languages import LangCode

DEFAULT_DIR = Path(__file__).parent / "prompts"

# template name -> the placeholders it must use
TEMPLATES: dict[str, frozenset[str]] = {
    "extend": frozenset({"instruction", "text"}),
    "self_instruct": frozenset(),
    "self_instruct_prefix": frozenset({"first", "second"}),
    "judge_long": frozenset({"instruction"}),
    "agentwrite_plan": frozenset({"instruction"}),
    "constrain_query": frozenset({"instruction", "requirement"}),
    "agentwrite_write": frozenset({"instruction", "plan", "text", "step"}),
    "judge_longbench_write": frozenset({"instruction", "response"}),
    "judge_longen": frozenset({"instruction", "response"}),
}

# how the judge says yes in each language (compared after stripping punctuation and case); kept
# for the tiny model's corpus, which imports it: the table's `yes` is where it is defined
YES = {lang.code: lang.yes for lang in languages.supported()}


@dataclass(frozen=True)
class PromptBook:
    """All templates of all languages, loaded once; small and picklable for Ray workers."""

    texts: dict[str, dict[str, str]] = field(default_factory=dict)

    def render(self, name: str, lang: LangCode, **fields: str) -> str:
        return self.texts[lang][name].format(**fields)


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def load_prompts(directory: str | Path | None = None) -> PromptBook:
    root = Path(directory) if directory else DEFAULT_DIR
    texts: dict[str, dict[str, str]] = {}
    for lang in languages.codes():
        texts[lang] = {}
        for name, expected in TEMPLATES.items():
            path = root / lang / f"{name}.txt"
            if not path.is_file():
                raise FileNotFoundError(f"prompt template missing: {path}")
            text = path.read_text(encoding="utf-8")
            text = text[:-1] if text.endswith("\n") else text
            try:
                found = placeholders(text)
            except ValueError as err:
                raise ValueError(f"{path}: {err} (write {{{{ and }}}} for literal braces)") from None
            if found != expected:
                raise ValueError(
                    f"{path}: placeholders {sorted(found)} but the method fills {sorted(expected)}"
                )
            texts[lang][name] = text
    return PromptBook(texts)
