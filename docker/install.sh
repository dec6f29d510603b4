#!/bin/sh
# Usage: [LOCK=locks/NAME.txt] docker/install.sh PYTHON [--editable | --deps-only]
# Installs the pinned, hashed lock (default requirements.lock) and then this package into PYTHON's environment
# (--deps-only: just the lock; the Dockerfile uses it for a layer that survives code edits).
# Shared by the Makefile and the Dockerfile. Offline installs work through pip's own
# env vars (PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse), which pip picks up itself.
set -eu

usage() { echo "usage: $0 PYTHON [--editable | --deps-only]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
py=$1
editable=
deps_only=
case "${2-}" in
    '') ;;
    --editable) editable=-e ;;
    --deps-only) deps_only=1 ;;
    *) usage ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)

# Everything comes from the lock: exact versions, sha256-checked, no resolver surprises.
# gast 0.2.2 is an sdist only: pip >= 23.1 builds it in an isolated env (setuptools+wheel
# from the index, or from the wheelhouse offline), older pip with the venv's setuptools.
# A wheelhouse must hold the gast *sdist* (the lock hashes the sdist, not a built wheel):
#   pip download --no-deps --require-hashes -r requirements.lock -d wheelhouse
"$py" -m pip install --require-hashes --no-deps -r "${LOCK:-$root/requirements.lock}"
[ -z "$deps_only" ] || exit 0

# The package itself: deps are already in place from the lock. No build isolation,
# so the locked setuptools/wheel are used and nothing is fetched (works offline too).
"$py" -m pip install --no-deps --no-build-isolation $editable "$root"
