# netc: `make demo` runs the lab demonstration, `make test` runs every test.
# Both start with `make setup`, which installs everything a fresh Debian 12 machine needs.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
NETC  := $(VENV)/bin/netc
DEBS  := clang-16 llvm-16 libbpf1 libbpf-dev bpftool iproute2 linux-libc-dev nftables iptables \
         iputils-ping procps chromium bpfcc-tools python3-bpfcc linux-headers-amd64
STAMP := $(VENV)/.installed

.PHONY: setup test demo lint typecheck fuzz clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

test: setup
	$(VENV)/bin/ruff check -q netc tests
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -p no:cacheprovider

demo: setup
	@bash examples/demo.sh

clean:
	rm -rf $(VENV) build *.egg-info
