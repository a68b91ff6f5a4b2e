"""longform/closed_cuts.py: collected answers cut after each paragraph, each cut closed by one
paragraph the Generator writes (a scripted model, and the tiny model served on the shared Ray),
kept as final SFT data under a constraint its length satisfies, or set aside with the reason."""

from __future__ import annotations

import asyncio

from longform import closed_cuts
from longform.constraints import constraint_for, query_record
from longform.params import Decoding
from longform.words import count_words
from tests.scripted import ScriptedModel

PARAGRAPHS = ["Rain fell on the old town for three days without a pause.",
              "The river rose over its stone banks and into the lower streets.",
              "People carried chairs and books up to the second floors of their houses.",
              "When the sun came back, the whole town swept mud out of its doors together."]
ANSWER = "\n\n".join(PARAGRAPHS)


def collected(source_id: str, text: str, query: str = "Write about the rain. About 60 words.") -> dict:
    words = count_words(text)
    return query_record(source_id, 2, "en", "Write about the rain.", query, text, constraint_for("about", words), words)


def test_every_cut_short_of_the_whole_once_under_the_query_it_was_collected_with():
    queries = [collected("r2/a", ANSWER), collected("r2/a-again", ANSWER, "Another query."),
               collected("r2/one", PARAGRAPHS[0])]
    found = closed_cuts.beginnings(queries)
    assert [b.id for b in found] == ["r2/a/cut-1", "r2/a/cut-2", "r2/a/cut-3"]  # one paragraph: nothing to cut
    assert [b.text for b in found] == ["\n\n".join(PARAGRAPHS[:j]) for j in (1, 2, 3)]
    assert {b.query for b in found} == {"Write about the rain. About 60 words."}


def test_the_generator_writes_one_paragraph_after_the_beginning_and_is_stopped_there():
    todo = closed_cuts.beginnings([collected("r2/a", ANSWER)])
    model = ScriptedModel(cont=lambda prompt, prefix, sampling: "In the end the streets dried." if "three" in prefix
                          else "unused", fail_on=None)
    decoding = Decoding(seed=7, stop=["</s>"])
    closings = asyncio.run(closed_cuts.close(model, todo, decoding, concurrency=2))
    assert closings[0] == "In the end the streets dried."
    first = model.calls[0]
    assert first["prefix"] == PARAGRAPHS[0] + "\n\n"  # the closing starts a paragraph of its own
    assert first["messages"] == [{"role": "user", "content": "Write about the rain. About 60 words."}]
    assert first["sampling"]["stop"] == ["</s>", "\n\n"]  # the settings' stops, and the paragraph's end
    seeds = {c["sampling"]["seed"] for c in model.calls}
    assert len(seeds) == len(todo) and seeds == {decoding.request_fields(b.id)["seed"] for b in todo}


def test_a_closed_cut_in_the_window_is_an_example_under_a_constraint_it_satisfies_and_the_rest_say_why():
    todo = closed_cuts.beginnings([collected("r2/a", ANSWER)])
    good = "In the end the streets dried and the market opened again on Monday."
    closings = [good, Exception("HTTP 500"), "   "]
    kept, aside = closed_cuts.examples(todo, closings, min_words=10, max_words=600, seed=0)
    (example,) = kept
    text = f"{PARAGRAPHS[0]}\n\n{good}"
    assert example["messages"][-1]["content"] == text
    meta = example["meta"]
    words = count_words(text)
    assert meta["words"] == words and meta["origin"] == "closed cut" and meta["source_id"] == "r2/a/cut-1"
    lo, hi = meta["constraint"]["window"]
    assert lo <= words <= hi
    assert all(str(n) in example["messages"][0]["content"] for n in meta["constraint"]["numbers"])
    assert example["messages"][0]["content"].startswith("Write about the rain.")
    assert [(r["id"], r["reason"]) for r in aside] == [("r2/a/cut-2", "call_failed: HTTP 500"),
                                                       ("r2/a/cut-3", "empty closing paragraph")]
    # the same seed draws the same constraint: a resumed stage writes the same data
    again, _ = closed_cuts.examples(todo, closings, min_words=10, max_words=600, seed=0)
    assert again == kept


def test_out_of_the_window_rule_breaking_or_repeated_texts_are_set_aside():
    first, second = closed_cuts.beginnings([collected("r2/a", ANSWER)])[:2]  # 12 and 24 words
    looping = " ".join(["the rain fell again"] * 30)
    kept, aside = closed_cuts.examples([first, second], ["It ended.", looping], min_words=15, max_words=40, seed=0)
    assert not kept
    assert [r["reason"] for r in aside] == ["outside the window 15-40 words (14)", "outside the window 15-40 words (144)"]
    assert {r["rule"] for r in aside} == {"outside_window"}
    kept, aside = closed_cuts.examples([first], [looping], min_words=1, max_words=10_000, seed=0)
    assert not kept and aside[0]["reason"].startswith("quality: ")
    kept, aside = closed_cuts.examples([first, first], ["It ended well."] * 2, min_words=1, max_words=600, seed=0)
    assert len(kept) == 1 and aside == [{"id": first.id, "rule": "duplicate", "reason": "the same text as another closed cut"}]


def test_the_served_generator_closes_each_cut_with_one_paragraph(served_tiny):
    """The stage's calls as the loop makes them (through the deployment handles), on the tiny
    model served: each closing is one paragraph, stopped before the next blank line."""
    from actors.client import LLMClient

    todo = closed_cuts.beginnings([collected("r2/a", ANSWER)])
    model = LLMClient(served_tiny.serving.endpoint, max_retries=2).role(served_tiny.model)
    closings = asyncio.run(closed_cuts.close(model, todo, Decoding(temperature=0.0, max_tokens=256), concurrency=4))
    assert all(isinstance(c, str) for c in closings), closings  # no call failed
    assert any(c.strip() for c in closings), closings
    assert not any("\n\n" in c.strip() for c in closings), closings  # stopped at the paragraph's end
    kept, aside = closed_cuts.examples(todo, closings, min_words=1, max_words=600, seed=0)
    assert len(kept) + len(aside) == len(todo)
    for example in kept:
        assert example["messages"][-1]["content"].count("\n\n") == int(example["meta"]["source_id"].rsplit("-", 1)[1])
