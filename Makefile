# gauged: build, test and lint. `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-from-pyproject
PYTEST_ARGS ?=
# Test files run on two workers (one file's tests stay on one worker, in order: files share
# nothing but the machine; each starts its own services on free ports in its own folders).
# Most tests wait on simulated devices and cycles, so two workers halve the wall time even
# on two cores. PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
DEMO_ARGS ?=

# Debian package:file pairs the tests need: services they start (on their own loopback ports,
# never 1883); chromium, its driver and a Japanese font to load the status page as a phone
# would (tests/integration/test_status_page.py).
SERVICES := mosquitto:/usr/sbin/mosquitto victoria-metrics:/usr/bin/victoria-metrics socat:/usr/bin/socat \
  chromium:/usr/bin/chromium chromium-driver:/usr/bin/chromedriver \
  fonts-ipafont-gothic:/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf \
  alsa-utils:/usr/bin/aplay \
  prometheus-alertmanager:/usr/bin/prometheus-alertmanager haproxy:/usr/sbin/haproxy
# The fleet's central stack (tests/fleet, make fleet-demo) also runs vmagent, vmauth and vmalert,
# which ship in the victoria-metrics package.
# What `make deb` needs (and the SYS-7 test, which builds the package): Debian's own Python 3.11
# with venv (the package's interpreter) and systemd-sysusers/-tmpfiles (the maintainer scripts).
DEB_BUILD := python3.11-venv:/usr/lib/python3.11/ensurepip/__init__.py systemd:/usr/bin/systemd-sysusers
SERVICES += $(DEB_BUILD)
# the private CA of tests/integration/test_influx_writer.py and test_mqtt_tls.py
SERVICES += openssl:/usr/bin/openssl

.PHONY: help venv deps test demo fleet-demo lint clean apt-install install deb

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'
	@echo "  (make test PYTEST_ARGS='-k mb_1' passes arguments to pytest)"

venv: $(STAMP) ## create .venv and install the project with its dev extras

# Rebuilt only when pyproject.toml changes. Debian's python3 needs python3-venv for ensurepip.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || $(MAKE) --no-print-directory apt-install PKGS=python3-venv
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

deps: ## install the missing Debian packages: mosquitto, victoria-metrics, socat, chromium, python3-venv, python3.11-venv, systemd
	@missing=$$(for s in $(SERVICES); do [ -e "$${s#*:}" ] || printf '%s ' "$${s%%:*}"; done; \
	  $(PYTHON) -c 'import ensurepip' 2>/dev/null || printf 'python3-venv'); \
	[ -z "$$missing" ] || $(MAKE) --no-print-directory apt-install PKGS="$$missing"

# As root: apt-get update once, then install. Otherwise: say what to run, and fail.
apt-install:
	@if [ "$$(id -u)" -ne 0 ]; then \
	  echo "Missing Debian packages. Run: sudo apt-get install -y --no-install-recommends $(strip $(PKGS))" >&2; \
	  exit 1; \
	fi
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(PKGS)

test: deps venv ## run the test suite (real mosquitto and VictoriaMetrics)
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: venv ## run simulators and daemon on the reference system
	$(VENV)/bin/gauged demo $(DEMO_ARGS)

FLEET_ARGS ?=
fleet-demo: deps venv ## six gateways and the central stack; the city on http://127.0.0.1:8090/
	$(VENV)/bin/gauged fleet-demo $(FLEET_ARGS)

# lint-imports checks the dependency rule of DESIGN.md §3 (contracts in pyproject.toml).
lint: venv ## ruff, mypy and lint-imports (all run; fails if any fails)
	status=0; $(VENV)/bin/ruff check . || status=1; $(VENV)/bin/mypy || status=1; \
	  $(VENV)/bin/lint-imports || status=1; exit $$status

install: ## install as a systemd service (DESTDIR=/some/root stages it there)
	PYTHON=$(PYTHON) bash scripts/install.sh "$(DESTDIR)"

deb: ## build dist/gauged_<version>-1_<arch>.deb: virtualenv bundled, installs with no network
	@missing=$$(for s in $(DEB_BUILD); do [ -e "$${s#*:}" ] || printf '%s ' "$${s%%:*}"; done); \
	[ -z "$$missing" ] || $(MAKE) --no-print-directory apt-install PKGS="$$missing"
	bash packaging/build-deb.sh dist

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache *.egg-info build dist
	find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +
