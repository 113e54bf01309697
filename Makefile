# Two commands do everything on a fresh machine:
#   make site   install everything, then build build/site/
#   make test   install everything (Chromium included), then run every test
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
MATH_FONT := /usr/share/texmf/fonts/opentype/public/lm-math/latinmodern-math.otf

.PHONY: site test check bench install system-packages clean

site: install
	$(PY) build.py

test: install
	@command -v chromium >/dev/null || $(MAKE) --no-print-directory system-packages PACKAGES="chromium"
	$(PY) -m pytest

check: install
	$(PY) build.py --check

bench: install
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_page.py

install: $(VENV)/.installed
	@test -f $(MATH_FONT) || $(MAKE) --no-print-directory system-packages PACKAGES="fonts-lmodern"

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

system-packages:
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(PACKAGES)

clean:
	rm -rf build
