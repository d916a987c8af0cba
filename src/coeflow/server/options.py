"""How a server is built and what a request may ask for: the one place for each of the server's
defaults (`coeflow serve` reads its flags' defaults from here; the scheduling ones come from
coeflow.scheduler). Imports nothing heavy, so that `coeflow serve --help` stays quick."""

from __future__ import annotations

from dataclasses import dataclass, field

from coeflow.errors import ConfigError
from coeflow.scheduler import MAX_BATCH, MAX_QUEUE, MAX_WAIT_S, PREFILL_CHUNK, SCHEDULES, SLICE_S
from coeflow.store.policies import DEFAULT_POLICY

DEFAULT_HOST = "127.0.0.1"  # this machine only, unless the user says otherwise
DEFAULT_PORT = 8000
DEFAULT_MAX_TOKENS = 256  # a request that names no max_tokens gets this many, or the limit if lower


@dataclass
class Limits:
    """What a request may ask for. `default_max_tokens` is capped by `max_tokens`, so a
    lower limit never refuses the requests that leave max_tokens unset."""
    max_tokens: int = 2048  # the largest max_tokens a request may ask
    max_prompt_tokens: int = 8192
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    max_body_bytes: int = 4 << 20  # a request body larger than this is a 413, unread

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_prompt_tokens", "default_max_tokens", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"limit {name} must be a positive integer, got {value!r}")
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens)


@dataclass
class ServerOptions:
    """How a server is built. The one place for each default: `coeflow serve` reads its
    flags' defaults from here (the scheduling ones come from coeflow.scheduler)."""
    device_mem: int | None = None  # bytes; None = unlimited
    host_mem: int | None = None
    kv_mem: int | None = None  # bytes of each model shape's KV cache; None: the engine's default
    prefix_cache: bool = True  # reuse the KV blocks of a prompt's prefix an earlier prompt computed
    console: bool = True  # the web console at /
    dtype: str = "auto"  # each checkpoint's own (fp16 on a CPU: bf16); the CoE file may name one per expert
    device: str = "auto"  # cuda if present, else cpu
    fused: bool = True  # the compiled decode step; False: eager PyTorch
    policy: str = DEFAULT_POLICY  # eviction policy of the tiers
    max_batch: int = MAX_BATCH
    max_queue: int = MAX_QUEUE
    max_wait_s: float = MAX_WAIT_S
    schedule: str = "continuous"  # or "static": a batch runs to completion (the benchmark's baseline)
    slice_s: float = SLICE_S
    prefill_chunk: int = PREFILL_CHUNK
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    admin_key: str | None = None  # the admin actions (POST /v1/experts/...) need this one, when set
    public_metrics: bool = False  # /metrics open even with an API key
    cors_origins: tuple[str, ...] = ()  # browsers' origins allowed to call; none: CORS off
    request_timeout_s: float | None = None  # a request not answered by then is cancelled (408); None: none
    warm_up: bool = True  # compile the decode step before serving

    def __post_init__(self) -> None:
        for key, what in ((self.api_key, "API key"), (self.admin_key, "admin key")):
            if key is not None and not key.strip():
                raise ConfigError(f"an empty {what} would let anyone in: give a key, or none to serve without one")
        if self.request_timeout_s is not None and not 0 < self.request_timeout_s < float("inf"):
            raise ConfigError(f"the request timeout must be a positive number of seconds, got {self.request_timeout_s!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name, least in (("max_batch", 1), ("max_queue", 1), ("max_wait_s", 0), ("slice_s", 0),
                            ("prefill_chunk", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < least:
                raise ConfigError(f"{name} must be a number of at least {least}, got {value!r}")
