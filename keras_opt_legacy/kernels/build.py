"""Build keras_opt_legacy's kernel library against the installed TensorFlow.

    python -m keras_opt_legacy.kernels.build [--force] [--print-path] [--quiet]

Compiles the C++ sources of this directory with TensorFlow's own flags
(`tf.sysconfig.get_compile_flags()` / `get_link_flags()`) into a shared library, once per
TensorFlow version, Python version and version of the sources, into a cache outside the work
tree:

    $KERAS_OPT_LEGACY_KERNELS_CACHE (default ~/.cache/keras_opt_legacy/kernels)
        /tf<version>-cp<XY>-<hash of the sources and flags>/kol_kernels.so

Environments with the same TensorFlow and Python share one build (the key holds no path). The
library appears complete or not at all (compiled in a temporary directory, loaded and run once
in a separate process, then renamed into place), and concurrent builds of one key wait for each
other (a lock file), so parallel test runs can all call this. Prints what it did; exits 1 if the
build fails or the built library does not load. `--print-path` prints the library's path
(building it if needed) and nothing else.

A TensorFlow built with GCC 4 (TF 1.14's and older Python 3.6 wheels: `tf.version.
COMPILER_VERSION` 4.8.5, the pre-C++11 library ABI) crashes with any op library a GCC 5+
compiler builds (TensorFlow's own custom-op example included), so nothing is built there: the
reason is recorded next to where the library would be (`unusable.txt`), the rules take their
path without it, and this exits 0. A library that fails its check in the separate process is recorded the
same way (and this exits 1); `--force` tries again.

Compiler: $CXX, else g++. Flags: C++14, -O2, -mavx where the CPU has AVX (TensorFlow's pip
wheels are built with AVX and without FMA: the same Eigen packet code as TF's own kernels, so
the same float results), -ffp-contract=off (no fused multiply-adds: each operation rounds as in
the graph); $KERAS_OPT_LEGACY_KERNELS_CXXFLAGS is appended (and part of the key).
"""
import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = 'kol_kernels.so'
CACHE_ENV = 'KERAS_OPT_LEGACY_KERNELS_CACHE'
FLAGS_ENV = 'KERAS_OPT_LEGACY_KERNELS_CXXFLAGS'
DEFAULT_CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'keras_opt_legacy', 'kernels')


class BuildError(RuntimeError):
    pass


class Incompatible(BuildError):
    """This TensorFlow cannot use a library built here (a known limitation, recorded)."""


UNUSABLE = 'unusable.txt'
VERIFY = """
import sys
import numpy as np
import tensorflow as tf
lib = tf.load_op_library(sys.argv[1])
with tf.Graph().as_default(), tf.Session() as session:
    p = tf.Variable(np.ones(3, 'float32'))
    decayed = lib.kol_apply_decay(p, 0.5)
    session.run(p.initializer)
    assert (session.run(decayed) == 0.5).all()
print('ok')
"""


def sources():
    """The C++ files of the library (sources and headers), sorted."""
    return sorted(name for name in os.listdir(HERE) if name.endswith(('.cc', '.h')))


def compiler():
    """The C++ compiler's path, or None."""
    return shutil.which(os.environ.get('CXX') or 'g++')


def _cpu_has(flag):
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return flag in line.split(':', 1)[1].split()
    except OSError:
        pass
    return False


def _major(version):
    try:
        return int(str(version).strip().split('.')[0])
    except ValueError:
        return None


def incompatibility(cxx):
    """Why this TensorFlow cannot use a library `cxx` builds, or None."""
    import tensorflow as tf
    built_with = getattr(getattr(tf, 'version', None), 'COMPILER_VERSION', None) or \
        getattr(tf, 'COMPILER_VERSION', '')
    if _major(built_with) is None or _major(built_with) >= 5:
        return None
    try:
        ours = subprocess.run([cxx, '-dumpversion'], stdout=subprocess.PIPE,
                              universal_newlines=True).stdout.strip()
    except OSError:
        return None
    if _major(ours) is not None and _major(ours) >= 5:
        return ('incompatible with this TensorFlow: TensorFlow %s was built with GCC %s (the '
                'C++ library ABI of GCC 4), and op libraries built with %s %s crash in it '
                '(TensorFlow\'s own custom-op example too)'
                % (tf.__version__, built_with, os.path.basename(cxx), ours))
    return None


def cxxflags():
    """The compiler flags of ours (TensorFlow's come on top)."""
    flags = ['-std=c++14', '-O2', '-fPIC', '-DNDEBUG', '-ffp-contract=off', '-w']
    if _cpu_has('avx'):
        flags.append('-mavx')
    return flags + shlex.split(os.environ.get(FLAGS_ENV, ''))


def cache_dir():
    return os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def key():
    """tf<version>-cp<XY>-<hash>: one build per TensorFlow, Python and sources + flags."""
    import tensorflow as tf
    digest = hashlib.sha256()
    for name in sources():
        with open(os.path.join(HERE, name), 'rb') as f:
            digest.update(name.encode() + b'\0' + f.read() + b'\0')
    digest.update(' '.join(cxxflags()).encode())
    return 'tf%s-cp%d%d-%s' % (tf.__version__, sys.version_info[0], sys.version_info[1],
                               digest.hexdigest()[:16])


def library_path():
    return os.path.join(cache_dir(), key(), LIBRARY)


@contextlib.contextmanager
def _locked(path):
    import fcntl
    with open(path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(command):
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    if result.returncode != 0:
        tail = '\n'.join(result.stdout.strip().splitlines()[-30:])
        raise BuildError('%s failed (exit %d):\n%s' % (' '.join(command[:2]) + ' ...',
                                                       result.returncode, tail))


def build(force=False, log=None):
    """Build the library for this TensorFlow/Python unless it is in the cache (or `force`);
    returns `(path, built)`. Raises BuildError when it cannot."""
    import tensorflow as tf
    log = log or (lambda message: None)
    path = library_path()
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    unusable = os.path.join(directory, UNUSABLE)
    with _locked(os.path.join(directory, '.lock')):
        if os.path.exists(path) and not force:
            return path, False
        if os.path.exists(unusable) and not force:
            with open(unusable) as f:
                raise Incompatible(f.read().strip())
        cxx = compiler()
        if cxx is None:
            raise BuildError('no C++ compiler (%s; set CXX to use another)'
                             % (os.environ.get('CXX') or 'g++'))
        reason = incompatibility(cxx)
        if reason:
            _record(unusable, reason)
            raise Incompatible(reason)
        started = time.time()
        log('building %s with %s (once per TensorFlow/Python version; about a minute)'
            % (path, cxx))
        scratch = tempfile.mkdtemp(prefix='.build-', dir=directory)
        try:
            flags = cxxflags() + tf.sysconfig.get_compile_flags()
            units = [name for name in sources() if name.endswith('.cc')]
            objects = [os.path.join(scratch, name[:-3] + '.o') for name in units]
            with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
                for future in [pool.submit(_run, [cxx] + flags + ['-c', os.path.join(HERE, unit),
                                                                  '-o', obj])
                               for unit, obj in zip(units, objects)]:
                    future.result()
            built = os.path.join(scratch, LIBRARY)
            _run([cxx, '-shared'] + objects + ['-o', built] + tf.sysconfig.get_link_flags())
            with open(os.path.join(scratch, 'build.json'), 'w') as f:
                json.dump({'tensorflow': tf.__version__, 'python': sys.version.split()[0],
                           'compiler': cxx, 'flags': flags, 'sources': sources(),
                           'seconds': round(time.time() - started, 1),
                           'built': time.strftime('%Y-%m-%d %H:%M:%S')}, f, indent=1)
            check = subprocess.run([sys.executable, '-c', VERIFY, built],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   universal_newlines=True,
                                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
            if check.returncode != 0 or 'ok' not in check.stdout:
                failure = ('killed by signal %d' % -check.returncode if check.returncode < 0
                           else (check.stderr.strip().splitlines() or ['no output'])[-1])
                reason = ('the library built with %s loads or runs wrongly in this TensorFlow '
                          '%s (%s)' % (os.path.basename(cxx), tf.__version__, failure))
                _record(unusable, reason)
                raise BuildError(reason)
            os.replace(os.path.join(scratch, 'build.json'), os.path.join(directory, 'build.json'))
            if os.path.exists(unusable):
                os.remove(unusable)
            os.replace(built, path)  # appears complete, checked, or not at all
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log('built %s in %.0f s' % (path, time.time() - started))
        return path, True


def _record(path, reason):
    with open(path + '.tmp', 'w') as f:
        f.write(reason + '\n')
    os.replace(path + '.tmp', path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
    parser.add_argument('--force', action='store_true', help='rebuild even if cached')
    parser.add_argument('--print-path', action='store_true',
                        help="print the library's path only (building it if needed)")
    parser.add_argument('--quiet', action='store_true', help='no progress lines')
    args = parser.parse_args(argv)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    say = (lambda message: None) if args.quiet or args.print_path else \
        (lambda message: print('kernels: ' + message, flush=True))
    try:
        path, built = build(force=args.force, log=say)
    except Incompatible as error:
        print('kernels: not built: %s; the rules take their path without the library' % error,
              file=sys.stderr)
        return 0
    except BuildError as error:
        print('kernels: build failed: %s' % error, file=sys.stderr)
        return 1
    import tensorflow as tf
    try:
        tf.load_op_library(path)
    except Exception as error:  # noqa: BLE001 -- any load failure: say so, drop the library
        print('kernels: %s does not load (%s); removed' % (path, error), file=sys.stderr)
        os.remove(path)
        return 1
    if args.print_path:
        print(path)
    elif not built:
        say('%s (cached, loads)' % path)
    else:
        say('loads')
    return 0


if __name__ == '__main__':
    sys.exit(main())
