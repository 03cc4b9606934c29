"""How many examples a property test tries: all of them in `make test`, fewer in `make test-fast`.

`make test-fast` loads the `quick` hypothesis profile (registered in conftest.py); a test asks
for `examples(n)` instead of a fixed `max_examples=n`, which would override every profile.
"""

from __future__ import annotations

from hypothesis import settings

DEFAULT_MAX_EXAMPLES = 100  # hypothesis' own default, which `make test` keeps
QUICK_MAX_EXAMPLES = 25  # the `quick` profile: a quarter of the examples


def examples(thorough: int) -> int:
    """`thorough` under the default profile, scaled down under the loaded `quick` profile."""
    return max(10, thorough * settings.default.max_examples // DEFAULT_MAX_EXAMPLES)
