"""The router: prompt -> expert, with a calibrated confidence and a fallback when unsure.

    router = Router.load(coe.router_dir)
    decision = router.route("how do I list files by size?")
    decision.expert, decision.confidence, decision.fell_back, decision.candidates
"""

from coeflow.router.data import LabelledPrompt, examples_from_coe, read_jsonl
from coeflow.router.encoders import HashingEncoder, LlamaHiddenStateEncoder, SentenceTransformerEncoder, make_encoder
from coeflow.router.evaluation import evaluate_router
from coeflow.router.router import RouteDecision, Router
from coeflow.router.training import train_router

__all__ = [
    "HashingEncoder",
    "LabelledPrompt",
    "LlamaHiddenStateEncoder",
    "RouteDecision",
    "Router",
    "SentenceTransformerEncoder",
    "evaluate_router",
    "examples_from_coe",
    "load_router_for_coe",
    "make_encoder",
    "read_jsonl",
    "train_router",
]


def load_router_for_coe(coe) -> Router:
    """The trained router of a loaded CoEFile, checked against the file's experts, with the
    file's fallback (so editing `fallback:` in the CoE file takes effect without retraining)."""
    from coeflow.errors import ConfigError

    router = Router.load(coe.router_dir)
    unknown = [e for e in router.experts if e not in coe.expert_names]
    if unknown:
        raise ConfigError(
            f"{coe.router_dir}: the router was trained for expert(s) {', '.join(unknown)} that {coe.source} "
            "no longer lists; retrain it with `coeflow router train`"
        )
    router.fallback = coe.fallback
    return router
