# The two commands a newcomer needs: `make test` and `make demo`.
# Both build .venv themselves; nothing needs installing by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint pytest demo proto bench clean interop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[cpu,train,dev]"
	touch $(STAMP)

test: $(STAMP) lint pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/typecheck.py

pytest: $(STAMP) interop
	$(BIN)/python -m pytest

# The Node client of the interoperability test (tests/interop); skipped, with its
# reason, on a machine without npm.
INTEROP := tests/interop/node_modules/.package-lock.json
interop: $(INTEROP)
$(INTEROP): tests/interop/package.json tests/interop/package-lock.json
	@if command -v npm >/dev/null; then \
		cd tests/interop && npm ci --no-audit --no-fund --loglevel=error; \
	else \
		echo "npm not found: the Node interoperability test will skip" >&2; \
	fi

bench: $(STAMP)
	$(BIN)/python bench/score_kernels.py

# The main job end to end on embedded defaults (docs/design.md); VIDEO=path scores
# your own video with the model the first run trained.
WORKDIR ?= demo-work
demo: $(STAMP)
	$(BIN)/alscout demo --workdir "$(WORKDIR)" $(if $(VIDEO),--video "$(VIDEO)")

clean:
	rm -rf $(VENV) build *.egg-info
