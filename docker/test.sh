#!/usr/bin/env bash
# Usage: docker/test.sh IMAGE [ARGS...]        (default ARGS: --quick)
# Runs IMAGE the way a user does (a host directory mounted at /results) and checks the
# report: report.md and results.json written, a verdict for every experiment, PNGs non-empty.
set -euo pipefail
image=$1; shift
[ $# -gt 0 ] || set -- --quick
fail() { echo "docker-test FAILED: $*" >&2; exit 1; }

out=$(mktemp -d /tmp/docker-test.XXXXXX)
log=$(mktemp /tmp/docker-test-log.XXXXXX)
trap 'rm -rf "$out" "$log"' EXIT

image_uid=$(docker run --rm --entrypoint id "$image" -u)
[ "$image_uid" != 0 ] || fail "the image's default user is root"
# A normal user runs the container under their own uid (as make docker-run does); as root
# (CI) we run it as the image's own non-root user, on a directory that user owns.
if [ "$(id -u)" = 0 ]; then
    chown "$image_uid" "$out"
    user=()
else
    user=(--user "$(id -u):$(id -g)")
fi
echo "docker run $image $* (uid ${user[1]:-$image_uid}), output in $out"
docker run --rm "${user[@]}" -v "$out:/results" "$image" "$@" 2>&1 | tee "$log" \
    || fail "the container exited with status ${PIPESTATUS[0]}"
grep -q 'reproduced' "$log" || fail "no verdict in the printed table"

# The image carries the kernel library, and it loads there (as the image's user).
docker run --rm --entrypoint python "$image" -c '
import sys
from keras_opt_legacy import kernels
sys.exit(0 if kernels.library() is not None else "kernels: %s" % kernels.why_not())' \
    || fail "the kernel library does not load in the image"
echo "kernel library: loads in the image"

# Checked with the image's own Python: no Python needed on the host.
docker run --rm -i -v "$out:/results:ro" --entrypoint python "$image" - <<'PY' || fail "report check"
import json, os
path = lambda name: os.path.join('/results', name)
assert os.path.getsize(path('report.md')) > 0, 'report.md is empty'
experiments = json.load(open(path('results.json')))['experiments']
assert experiments, 'results.json lists no experiment'
report = open(path('report.md')).read()
for e in experiments:
    assert e['verdict'] in ('reproduced', 'NOT reproduced'), (e['name'], e['verdict'])
    assert '## %s: %s' % (e['name'], e['verdict']) in report, ('not in report.md', e['name'])
pngs = sorted(f for f in os.listdir('/results') if f.endswith('.png'))
assert pngs, 'no PNG plot'
empty = [f for f in pngs if os.path.getsize(path(f)) == 0]
assert not empty, ('empty PNG', empty)
missing = [p for e in experiments for p in e['plots'] if not os.path.isfile(path(p))]
assert not missing, ('plots named in results.json but missing', missing)
print('report OK: %d experiments (%s), %d PNGs' % (
    len(experiments), ', '.join('%s=%s' % (e['name'], e['verdict']) for e in experiments), len(pngs)))
PY
