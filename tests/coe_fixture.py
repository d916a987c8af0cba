"""A tiny CoE on disk: three experts written by transformers and a trained router."""

from __future__ import annotations

from pathlib import Path

import yaml

from checkpoints import make_checkpoint

EXPERTS = {
    "sql": ["select name from users where id = 1", "write a sql query joining orders and users",
            "sql: count rows in the table", "group by country in sql", "insert into table values",
            "delete from users where age > 30 sql"],
    "shell": ["ls -la in my home directory", "grep recursively for a word in bash",
              "how do I chmod a file in the shell", "bash loop over files", "tar and gzip a folder",
              "kill a process by name in linux shell"],
    "general": ["tell me a story about a fox", "what is the weather like in spring",
                "write a short poem about the sea", "explain friendship to a child",
                "describe a quiet morning", "give me advice for a job interview"],
}


def write_coe(root: Path, broken: str | None = None, pinned: str | None = None) -> Path:
    """Experts of one shape (one compiled step serves all). `broken` gets a truncated file;
    `pinned` is pinned (`pin: true`)."""
    experts = []
    for i, (name, examples) in enumerate(EXPERTS.items()):
        make_checkpoint(root / "experts" / name, "llama-gqa", seed=10 + i)
        experts.append({"name": name, "path": f"experts/{name}", "description": f"{name} expert",
                        "examples": examples, **({"pin": True} if name == pinned else {})})
    (root / "coe.yaml").write_text(yaml.safe_dump({"name": "test", "fallback": "general", "experts": experts}))
    from coeflow.coefile import load_coe
    from coeflow.router import examples_from_coe, train_router
    coe = load_coe(root / "coe.yaml")
    train_router(examples_from_coe(coe), coe.expert_names, coe.fallback, folds=3).save(coe.router_dir)
    if broken:
        f = root / "experts" / broken / "model.safetensors"
        f.write_bytes(f.read_bytes()[:-4096])
    return root / "coe.yaml"


def start(coe: Path, **opts):
    from coeflow.server import ServerOptions, build_server, serving
    opts.setdefault("fused", False)  # the compiled path is covered by the engine's tests
    opts.setdefault("warm_up", False)
    srv = build_server(coe, ServerOptions(**opts))
    return srv, serving(srv)


class OnRay:
    """A CoE served on Ray Serve (`coeflow serve --ray`'s application) in the tests' cluster:
    what the tests ask of a server object (`runtimes`: the experts' tokenizers), and the
    replicas' user_config changed on every replica at once (through the mailbox)."""

    def __init__(self, coe: Path, port: int, replicas: int = 2, replica_cpus: float = 1.0, app: str | None = None,
                 **opts):
        from coeflow.cluster.deploy import APP
        from coeflow.coefile import load_coe
        from coeflow.server import ServerOptions
        from coeflow.server.build import Runtimes
        opts.setdefault("fused", False)
        opts.setdefault("warm_up", False)
        self.coe, self.replicas, self.replica_cpus, self.opts = coe, replicas, replica_cpus, ServerOptions(**opts)
        self.app = app or APP  # another name: served under /NAME beside the first
        self.prefix = "/" if app is None else f"/{app}"
        self.runtimes = Runtimes(load_coe(coe), {}, {}).runtimes
        self.url = f"http://127.0.0.1:{port}{self.prefix.rstrip('/')}/v1"

    def reconfigure(self, **config) -> None:
        import ray

        from coeflow.cluster.mailbox import mailbox
        answers = ray.get(mailbox(self.app).ask_all.remote("reconfigure", (config,)))
        assert [kind for kind, _ in answers.values()] == ["ok"] * self.replicas, answers

    def __enter__(self) -> str:
        from ray import serve

        from coeflow.cluster.deploy import application
        serve.run(application(self.coe, self.opts, self.replicas, self.replica_cpus), name=self.app,
                  route_prefix=self.prefix)
        return self.url

    def __exit__(self, *exc) -> None:
        from coeflow.cluster.deploy import shutdown
        shutdown(self.app)
