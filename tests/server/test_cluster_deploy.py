"""Building the Ray Serve application (no cluster needed): how many experts a replica is
taken to hold, from its host budget in bytes, and the builder a Serve config file names."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")


def test_experts_a_replica_holds_come_from_its_host_budget_in_bytes(coe_file):
    from coeflow.cluster.deploy import experts_per_replica
    from coeflow.coefile import load_coe
    coe = load_coe(coe_file)
    size = sum(f.stat().st_size for f in (coe_file.parent / "experts" / "sql").glob("*.safetensors"))
    assert experts_per_replica(coe, None) == 3  # no budget: every expert
    assert experts_per_replica(coe, int(2.5 * size)) == 2
    assert experts_per_replica(coe, 2 * size) == 2  # exactly two fit
    assert experts_per_replica(coe, size // 2) == 1  # never less than one (a larger expert is refused by the store)


def test_the_serve_config_builder_takes_bytes_in_words_and_refuses_unknown_options(coe_file):
    from ray.serve import Application

    from coeflow.cluster.deploy import build
    app = build({"coe": str(coe_file), "replicas": 3, "host_mem": "1MB", "limits": {"max_tokens": 64}})
    assert isinstance(app, Application)
    with pytest.raises(TypeError, match="no_such_option"):
        build({"coe": str(coe_file), "no_such_option": 1})
