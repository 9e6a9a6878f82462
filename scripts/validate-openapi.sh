#!/usr/bin/env bash
# Validate the HTTP API's OpenAPI 3.1 document with openapi-spec-validator (PyPI).
#
#   scripts/validate-openapi.sh [FILE]     (default: src/http/openapi.json)
#
# Installs the validator with pip when missing (into target/openapi-venv when the
# system Python refuses global installs). Exit codes: 0 valid, 1 invalid, 2 the
# validator could not be set up.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
file=${1:-$root/src/http/openapi.json}
venv="$root/target/openapi-venv"

setup_fail() {
  echo "validate-openapi: SETUP FAILED: $*" >&2
  exit 2
}

command -v python3 >/dev/null 2>&1 || setup_fail "python3 is not installed"
python=python3
if ! "$python" -c 'import openapi_spec_validator' >/dev/null 2>&1; then
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import openapi_spec_validator' >/dev/null 2>&1; then
    python="$venv/bin/python"
  else
    echo "validate-openapi: installing openapi-spec-validator with pip"
    if ! python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator >/dev/null 2>&1; then
      { python3 -m venv "$venv" \
        && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check openapi-spec-validator; } \
        || setup_fail "could not install openapi-spec-validator from PyPI"
      python="$venv/bin/python"
    fi
  fi
fi

"$python" -m openapi_spec_validator "$file" || exit 1
