"""Fixtures: one cluster per test session; the connection mode is a fixture parameter."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import pytest

from cluster import POOL, Cluster

#: Connection modes the tests run in (comma-separated in $CAPSULE_CLIENT_TEST_MODES). "gateway"
#: starts capsule-gateway from $CAPSULE_BIN_DIR and passes its URL to the SDK, the CLI and the kernel;
#: both run by default.
MODES = os.environ.get("CAPSULE_CLIENT_TEST_MODES", "direct,gateway").split(",")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    state = Path(tempfile.mkdtemp(prefix="capsule-client-tests-"))
    c = Cluster(state)
    saved = {k: os.environ.get(k) for k in c.env}
    os.environ.update(c.env)  # the SDK, the CLI and the kernel read KUBECONFIG
    os.environ.pop("CAPSULE_GATEWAY_URL", None)
    try:
        yield c
    finally:
        c.stop()
        if os.environ.get("CAPSULE_KEEP_STATE") != "1":  # =1 keeps the logs for a look after a failure
            shutil.rmtree(state, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session", params=MODES)
def connection(request: pytest.FixtureRequest, cluster: Cluster) -> Optional[str]:
    """The gateway URL to pass as `gateway_url`, or None for direct calls to the worker."""
    return cluster.start_gateway() if request.param == "gateway" else None


@pytest.fixture
def pool(cluster: Cluster) -> str:
    return POOL
