"""Shared fixtures. Checkpoints are written by `transformers` itself (random weights) with a
real tokenizer.json, so every test reads files exactly as a user's would be; the CoE fixtures
serve them on loopback to the official `openai` client."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkpoints import FAMILIES, make_checkpoint, write_tokenizer  # noqa: F401  (re-exported for tests)
from coe_fixture import start, write_coe


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One checkpoint per family, written once per test session."""
    root = tmp_path_factory.mktemp("ckpt")
    return {name: make_checkpoint(root / name, name) for name in FAMILIES}


@pytest.fixture(scope="session")
def coe_file(tmp_path_factory) -> Path:
    return write_coe(tmp_path_factory.mktemp("coe"))


@pytest.fixture(scope="module")
def live(coe_file):
    """(server object, base_url) of a server shared by a test module."""
    from coeflow.server import Limits
    srv, ctx = start(coe_file, limits=Limits(max_tokens=256, max_prompt_tokens=200))
    with ctx as url:
        yield srv, url


@pytest.fixture
def client(live):
    from openai import OpenAI
    return OpenAI(base_url=live[1], api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray cluster on this machine (coeflow.cluster.deploy.LocalCluster), a head (no CPU: no
    replica there) and three worker nodes of one CPU each: the two expert replicas take a worker
    each, the third is where a replica goes when its node is lost. Started once, for the tests
    that serve on Ray."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    from coeflow.cluster.deploy import local_cluster
    with local_cluster(workers=3) as local:
        yield local


@pytest.fixture(scope="session")
def on_ray(coe_file, ray_cluster):
    """(OnRay, base_url): the test CoE deployed on the Ray cluster once for the session, two
    expert replicas that decode one sequence at a time (so that others queue on a replica)."""
    from coe_fixture import OnRay
    from coeflow.server import Limits
    srv = OnRay(coe_file, ray_cluster.port, max_batch=1, limits=Limits(max_tokens=256, max_prompt_tokens=200))
    with srv as url:
        yield srv, url
