#!/bin/sh
# Usage: scripts/build-horovod.sh PYTHON VERSION SHA256 CACHE_DIR
# Installs Horovod VERSION (TensorFlow + Gloo, no MPI/PyTorch/MXNet) into PYTHON's environment.
# The wheel is built from the sdist (sha256-checked) once per Horovod/TF/Python version, into
# CACHE_DIR outside the work tree, and reused. Its runtime deps come from requirements.lock.
set -eu
[ $# -eq 4 ] || { echo "usage: $0 PYTHON VERSION SHA256 CACHE_DIR" >&2; exit 2; }
py=$1 version=$2 sha256=$3 cache=$4

tf=$("$py" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)
pyver=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
key="horovod-$version-tf$tf-$pyver"
if ! ls "$cache/$key"/horovod-*.whl >/dev/null 2>&1; then
    build=$(mktemp -d "${TMPDIR:-/tmp}/horovod-build.XXXXXX")
    trap 'rm -rf "$build"' EXIT
    echo "building $key (a few minutes, once; cached in $cache)"
    echo "horovod==$version --hash=sha256:$sha256" > "$build/requirements.txt"
    "$py" -m pip download -q --no-deps --no-binary :all: --require-hashes \
        -r "$build/requirements.txt" -d "$build"
    # GCC 12 with Debian's kernel headers: C++ rejects the flexible array members in
    # linux/ethtool.h (included by Gloo), so a copy writing them as [0] shadows it; and Gloo
    # uses std::array without including <array>.
    mkdir -p "$build/include/linux"
    sed 's/\[\];/[0];/' /usr/include/linux/ethtool.h > "$build/include/linux/ethtool.h"
    # No build isolation: built against this environment's TensorFlow.
    CFLAGS="-isystem $build/include" CXXFLAGS="-isystem $build/include -include array" \
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS=-j2 \
        "$py" -m pip wheel -q --no-deps --no-build-isolation \
        "$build/horovod-$version.tar.gz" -w "$build/wheel"
    mkdir -p "$cache"
    rm -rf "$cache/$key.tmp.$$"
    mv "$build/wheel" "$cache/$key.tmp.$$"
    mv -T "$cache/$key.tmp.$$" "$cache/$key"   # appears complete or not at all
fi
"$py" -m pip install -q --no-deps --force-reinstall "$cache/$key"/horovod-*.whl
# Fails unless the TensorFlow op library loads and Gloo is built in.
"$py" -c 'import horovod.tensorflow as hvd, sys; sys.exit(0 if hvd.gloo_built() else 1)' || {
    echo "horovod $version installed but not usable with TensorFlow + Gloo" >&2; exit 1; }
