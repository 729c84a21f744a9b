# iLCDirac Calibration: `make demo` and `make test` set everything up themselves.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DIRAC_VERSION := 8.0.86
ILCDIRAC_VERSION := 35.0.12
# Build dependencies of M2Crypto (swig, libssl-dev) and mysqlclient (libmariadb-dev, pkg-config).
DEB_PACKAGES := libmariadb-dev pkg-config swig libssl-dev gcc
PYTEST_ARGS ?=

.PHONY: all install test demo debs mariadb clean

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
	@$(PY) -m ILCDIRAC.CalibrationSystem.test.mariadb || \
	  { start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd && \
	    $(PY) -m ILCDIRAC.CalibrationSystem.test.mariadb --wait 60; }

test: install mariadb
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: install
	-@$(MAKE) --no-print-directory mariadb
	$(PY) -m ILCDIRAC.CalibrationSystem.demo

clean:
	rm -rf $(VENV) build *.egg-info demo-run
