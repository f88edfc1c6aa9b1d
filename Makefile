# Quick start: `make demo` and `make test`. Both create or reuse .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test system-deps bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m compileall -q analyzer
	$(PY) -m analyzer.report.kernels
	touch $(STAMP)

# Debian packages the tests and the demo use (libpcap: `-f` filters and the kernel warm-up of them);
# installed only when root and missing, before the Python install that warms the kernels.
system-deps:
	@missing=""; \
	command -v tshark  >/dev/null 2>&1 || missing="$$missing tshark"; \
	command -v tcpdump >/dev/null 2>&1 || missing="$$missing tcpdump"; \
	command -v nft     >/dev/null 2>&1 || missing="$$missing nftables"; \
	{ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep -q 'libpcap\.so' || missing="$$missing libpcap0.8"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not root: missing$$missing (tests that need them will skip and say so)"; fi; \
	fi

demo: system-deps $(STAMP)
	$(VENV)/bin/tcp-analyzer demo

test: system-deps $(STAMP)
	$(PY) -m pytest -q -rs

bench: system-deps $(STAMP)
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
