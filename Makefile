# capmine: `make demo` and `make test` install everything they need into .venv first.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.capmine-installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# torch and torchvision are pinned as a pair; pip takes them from local disk where it can.
TORCH   ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install system-deps test-deps demo docs test lint format clean

install: system-deps $(STAMP)

# ffmpeg decodes, cuts and finds the hard cuts.
system-deps:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || \
		{ echo "installing ffmpeg (Debian package)"; $(SUDO) apt-get update -q && \
		  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q ffmpeg; }

# The voice-activity test speaks its own test sentence with espeak-ng; the report's tests
# open report.html in headless Chromium.
test-deps:
	@command -v espeak-ng >/dev/null || \
		{ echo "installing espeak-ng (Debian package, for the speech test)"; $(SUDO) apt-get update -q && \
		  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q espeak-ng; }
	@command -v chromium >/dev/null || \
		{ echo "installing chromium (Debian package, for the report's browser test)"; $(SUDO) apt-get update -q && \
		  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; }

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(VENV)/bin/capmine demo --root demo

# The README's picture of the report: the demo run's report.html in headless Chromium.
docs: install test-deps
	test -f demo/out/report.json || $(MAKE) demo
	$(VENV)/bin/capmine report demo/out
	$(PY) -m runs.browser demo/out/report.html docs/report.png

test: install test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .

clean:
	rm -rf demo .pytest_cache
