"""README.md stays true: every Python block in it runs, in a fresh process and directory."""
import os
import re
import subprocess
import sys

import pytest

from horovod_required import horovod_or_skip

README = os.path.join(os.path.dirname(__file__), '..', 'README.md')
BLOCKS = re.findall(r'```python\n(.*?)```', open(README).read(), re.S)


def test_the_readme_has_a_tour():
    assert len(BLOCKS) >= 4
    text = open(README).read()
    assert 'make reproduce' in text and 'make test' in text


@pytest.mark.parametrize('code', BLOCKS, ids=['block%d' % i for i in range(len(BLOCKS))])
def test_readme_block_runs(code, tmp_path):
    if 'keras_opt_legacy import distributed' in code:
        horovod_or_skip()
    # A temporary directory of its own: what a block writes (checkpoints) starts afresh.
    done = subprocess.run([sys.executable, '-c', code], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, cwd=str(tmp_path),
                          env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert done.returncode == 0, done.stdout
