# Two commands do everything on a fresh machine:
#   make demo   install, build the tiny model, run the Self-Lengthen loop on the embedded default
#   make test   install, build the tiny model, run the tests
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
BASE    := $(VENV)/.base-installed
STAMP   := $(VENV)/.installed
TINY    := models/tiny
CONFIG  ?= configs/tiny.yaml
ARGS    ?=

.PHONY: demo test setup install tiny-model lock clean

demo: setup
	$(PYTHON) -m jobs.self_lengthen --config $(CONFIG) $(ARGS)

# The fast tests on two processes, then the ones that start Ray, vLLM or DeepSpeed (marked
# `cluster`) in one: they share one Ray and one served pair, and their faults are timed.
# pytest's exit status 5 ("no tests collected": ARGS named none of that kind) is no failure.
test: setup
	$(PYTHON) -m pytest -q -n 2 -m "not cluster" $(ARGS) || [ $$? -eq 5 ]
	$(PYTHON) -m pytest -q -m cluster $(ARGS) || [ $$? -eq 5 ]

# The environment and the tiny model, side by side: once torch and the build's own packages are
# in (BASE), the model trains while pip installs the rest (see scripts/install.sh).
setup:
	@$(MAKE) --no-print-directory -j2 $(STAMP) $(TINY)/config.json

install: $(STAMP)

$(BASE): pyproject.toml scripts/install.sh scripts/cpu.lock
	bash scripts/install.sh --part base $(VENV)
	touch $@

$(STAMP): $(BASE)
	nice -n 19 bash scripts/install.sh --part rest $(VENV)
	touch $@

# scripts/cpu.lock anew from pyproject.toml's pins (after changing one)
lock:
	bash scripts/lock.sh

tiny-model: $(TINY)/config.json

# Rebuilt when the toy world, its builder or the prompt templates (which it learns) change;
# not for the experiment that uses it (toyworld/method_vs_control.py).
TINY_SOURCES := $(filter-out toyworld/method_vs_control.py,$(wildcard toyworld/*.py))
# --no-probes: the build's own greedy probe answers (informational, ~30 s on two cores) are
# skipped; the loop probes the served model itself (`python -m toyworld build` prints them).
$(TINY)/config.json: $(BASE) $(TINY_SOURCES) $(wildcard longform/prompts/*/*.txt)
	$(PYTHON) -m toyworld build $(TINY) --no-probes

clean:
	rm -rf runs models
