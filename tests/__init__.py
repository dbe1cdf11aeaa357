"""Installed as deepemhancer.tests (see package_dir in setup.py).

Re-exports every TestCase so that `scipion3 tests deepemhancer.tests` (unittest's loadTestsFromName on
the package) runs them all. Test modules use absolute imports (pytest names them from their path).
"""
from deepemhancer.tests.test_headless_script import TestHeadlessScript  # noqa: F401
from deepemhancer.tests.test_packaging import TestPluginDistribution  # noqa: F401
from deepemhancer.tests.test_plugin import TestDeepEMhancerPlugin  # noqa: F401
from deepemhancer.tests.test_protocol import (  # noqa: F401
    TestDeepEMhancerProtocol,
    TestDeepEMhancerValidate,
)
from deepemhancer.tests.test_queue import TestDeepEMhancerQueue  # noqa: F401
from deepemhancer.tests.test_shipped_weights import TestDeepEMhancerShippedWeights  # noqa: F401
from deepemhancer.tests.test_template import TestDeepEMhancerTemplate  # noqa: F401
from deepemhancer.tests.test_viewers import TestDeepEMhancerViewers  # noqa: F401
