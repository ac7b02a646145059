#!/usr/bin/env bash
# pip install -e of a checkout without setuptools' notice that an editable install of a
# package-dir mapping uses a meta path finder ("Editable installation ... Please be careful
# with folders in your working directory..."): informational, and a newcomer's first
# screen should be clean. Usage: pip-install-editable.sh PYTHON DIR[EXTRAS] [pip options]
# (PIP_TARGET_PYTHON: install into that interpreter's environment with PYTHON's pip)
set -euo pipefail
python=$1 target=$2
shift 2
general=()
[ -n "${PIP_TARGET_PYTHON:-}" ] && general=(--python "$PIP_TARGET_PYTHON")
# the filter reaches the build backend's process through the environment
PYTHONWARNINGS="ignore:Editable installation${PYTHONWARNINGS:+,$PYTHONWARNINGS}" \
  "$python" -m pip "${general[@]}" install -q "$@" -e "$target"
