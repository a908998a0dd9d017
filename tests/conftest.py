"""Suite-wide test isolation between modules.

moto keeps its state in process-global backends, so two moto servers started by two test
modules in one pytest process see the same tables and buckets; and the local platform points
this process's SDK at its embedded AWS through the environment (``AWS_ENDPOINT_URL``), as a
Lambda's environment would. Restoring both after every module gives each module the empty
AWS and the environment it expects, whatever ran before it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# jsii prints an end-of-life banner for Node 20 on every synth unless told not to.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@pytest.fixture(autouse=True, scope="module")
def isolated_module() -> Iterator[None]:
    environment = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(environment)
    from moto.moto_api import _internal

    _internal.moto_api_backend.reset()
