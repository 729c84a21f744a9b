# iLCDirac Calibration: `make demo` and `make test` set everything up themselves.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DIRAC_VERSION := 8.0.86
ILCDIRAC_VERSION := 35.0.12
# Build dependencies of M2Crypto (swig, libssl-dev) and mysqlclient (libmariadb-dev, pkg-config);
# the mysql client loads DIRAC's WMS schemas in the test bed (mariadb-client-core).
DEB_PACKAGES := libmariadb-dev pkg-config swig libssl-dev gcc mariadb-client-core
PYTEST_ARGS ?=
# DIRAC's web portal for `make test-portal`, each in its own folder beside the virtualenv (never in
# it): WebAppDIRAC of the DIRAC 8.0 line with the tornado it needs, and Playwright driving
# Debian's chromium (no browser download).
PORTAL := .portal
PORTAL_WEBAPP := WebAppDIRAC==5.0.15 DIRACWebAppResources==1.0.1 tornado==5.1.1 tornado-m2crypto==0.1.6
PORTAL_BROWSER := playwright==1.65.2

.PHONY: all install lint test test-portal portal demo debs mariadb clean

all: install

debs:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# DIRAC and iLCDirac go in with --no-deps: DIRAC requires gfal2-python, which does not build
# against Debian 12's gfal2; every other requirement is pinned in requirements.txt.
# The older CalibrationSystem inside the iLCDirac wheel is removed: this project supersedes it.
$(VENV)/.deps: requirements.txt | debs
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps DIRAC==$(DIRAC_VERSION) ILCDIRAC==$(ILCDIRAC_VERSION)
	rm -rf "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ILCDIRAC/CalibrationSystem"
	touch $@

install: $(VENV)/.deps
	$(PIP) install --no-deps --no-build-isolation .
	rm -rf build

mariadb:
	@$(PY) -m ILCDIRAC.CalibrationSystem.localdirac.mariadb || \
	  { start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd && \
	    $(PY) -m ILCDIRAC.CalibrationSystem.localdirac.mariadb --wait 60; }

# ruff over the whole repository (ruff.toml), mypy over the pure modules and the emulator (mypy.ini).
# After `install`, whose dependencies step would otherwise leave the project uninstalled.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: install lint mariadb
	$(VENV)/bin/pytest $(PYTEST_ARGS)

$(PORTAL)/.webapp: Makefile | $(VENV)/.deps
	rm -rf $(PORTAL)/webapp
	$(PIP) install --no-deps --target $(PORTAL)/webapp $(PORTAL_WEBAPP)
	touch $@

$(PORTAL)/.browser: Makefile | $(VENV)/.deps
	rm -rf $(PORTAL)/browser
	$(PIP) install --target $(PORTAL)/browser $(PORTAL_BROWSER)
	touch $@

portal: install $(PORTAL)/.webapp $(PORTAL)/.browser
	@$(MAKE) --no-print-directory debs DEB_PACKAGES=chromium

test-portal: portal mariadb
	$(VENV)/bin/pytest -m portal ILCDIRAC/CalibrationSystem/test/Portal $(PYTEST_ARGS)

demo: install
	-@$(MAKE) --no-print-directory mariadb
	$(PY) -m ILCDIRAC.CalibrationSystem.demo

clean:
	rm -rf $(VENV) $(PORTAL) build *.egg-info demo-run portal-screenshots
