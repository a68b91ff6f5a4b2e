# Two commands do everything on a fresh machine:
#   make demo   install, build the tiny model, run the Self-Lengthen loop on the embedded default
#   make test   install, build the tiny model, run the tests
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TINY    := models/tiny
CONFIG  ?= configs/tiny.yaml
ARGS    ?=

.PHONY: demo test install tiny-model clean

demo: $(STAMP) $(TINY)/config.json
	$(PYTHON) -m jobs.self_lengthen --config $(CONFIG) $(ARGS)

# The fast tests on two processes, then the ones that start Ray, vLLM or DeepSpeed (marked
# `cluster`) in one: they share one Ray and one served pair, and their faults are timed.
# pytest's exit status 5 ("no tests collected": ARGS named none of that kind) is no failure.
test: $(STAMP) $(TINY)/config.json
	$(PYTHON) -m pytest -q -n 2 -m "not cluster" $(ARGS) || [ $$? -eq 5 ]
	$(PYTHON) -m pytest -q -m cluster $(ARGS) || [ $$? -eq 5 ]

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

tiny-model: $(TINY)/config.json

# Rebuilt when the toy world, its builder or the prompt templates (which it learns) change;
# not for the experiment that uses it (toyworld/method_vs_control.py).
TINY_SOURCES := $(filter-out toyworld/method_vs_control.py,$(wildcard toyworld/*.py))
# --no-probes: the build's own greedy probe answers (informational, ~30 s on two cores) are
# skipped; the loop probes the served model itself (`python -m toyworld build` prints them).
$(TINY)/config.json: $(STAMP) $(TINY_SOURCES) $(wildcard longform/prompts/*/*.txt)
	$(PYTHON) -m toyworld build $(TINY) --no-probes

clean:
	rm -rf runs models
