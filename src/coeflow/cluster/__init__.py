"""A CoE spread over a Ray cluster (`coeflow serve --ray`), on Ray Serve.

Two deployments: the **ingress** (`front.py`'s scheduler and status faces under the same
FastAPI app as one process: routes, router, tokenizers, checks) and the **expert replicas**
(`replica.py`: each a whole coeflow core, store, scheduler and engines, with its own tier
budgets). The ingress routes by content, then hands the request to the expert deployment with
the expert as Ray Serve's multiplexed model id, so it reaches a replica that already holds that
expert. `mailbox.py` lets the ingress ask every replica at once (status, admin actions);
`deploy.py` builds the application and runs it. Ray is an optional extra: `pip install -e
'.[ray]'`."""
