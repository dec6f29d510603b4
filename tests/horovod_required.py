"""Whether Horovod is usable here. `make test` sets REQUIRE_HOROVOD=1 (it installs Horovod
first): then a missing Horovod fails the tests that need it instead of skipping them."""
import os

import pytest


def horovod_or_skip(skip=True):
    """True if keras_opt_legacy.distributed imports; else skip the caller (or return False if
    not `skip`), or fail under REQUIRE_HOROVOD."""
    try:
        import keras_opt_legacy.distributed  # noqa: F401
        return True
    except ImportError as error:
        if os.environ.get('REQUIRE_HOROVOD'):
            pytest.fail('REQUIRE_HOROVOD is set but Horovod is not usable: %s' % error)
        if skip:
            pytest.skip('Horovod is not installed (make horovod): %s' % error,
                        allow_module_level=True)
        return False
