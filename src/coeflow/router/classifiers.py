"""Two classifiers over encoder features, both plain numpy and both saved as arrays:

- `LinearClassifier`: multinomial logistic regression (softmax) with L2, full-batch Adam,
  class-balanced. Fast: a routed prompt costs one gather of ~10^2 weight rows.
- `KNNClassifier`: cosine k-nearest-neighbours over the labelled prompts (Samba-CoE's
  choice), with an inverted index over hashed features so a query touches only the
  training prompts that share a feature with it. Its neighbours explain a decision.

Both return unnormalised log-scores ("logits"); calibration turns them into probabilities."""

from __future__ import annotations

import numpy as np

from coeflow.router.features import Features, SparseRows


class LinearClassifier:
    kind = "linear"

    def __init__(self, n_classes: int, l2: float = 1e-6, steps: int = 100, lr: float = 0.1):
        self.n_classes = n_classes
        self.l2, self.steps, self.lr = l2, steps, lr
        self.w: np.ndarray | None = None  # [n_features, C]; rows of unseen features are 0
        self.b = np.zeros(n_classes)
        self.center: np.ndarray | None = None  # dense inputs only: standardisation
        self.scale: np.ndarray | None = None

    def fit(self, x: Features, y: np.ndarray) -> "LinearClassifier":
        c = self.n_classes
        if isinstance(x, SparseRows):
            # Train on the columns that occur (a few 10^4 of 2^18) and scatter back after.
            cols, compact = np.unique(x.indices, return_inverse=True)
            xc: Features = SparseRows(x.indptr, compact.astype(np.int64), x.data, len(cols))
            n_feat = len(cols)
        else:
            # Embeddings share large common directions; standardising each dimension lets
            # a few hundred steps of a linear model find the directions that differ.
            self.center, self.scale = _standardiser(x)
            cols, xc, n_feat = None, (x - self.center) / self.scale, x.shape[1]
        counts = np.bincount(y, minlength=c).astype(np.float64)
        sample_w = (1.0 / np.maximum(counts, 1.0))[y]
        sample_w /= sample_w.sum()
        onehot = np.eye(c)[y]
        w, b = np.zeros((n_feat, c)), np.zeros(c)
        params = [w, b]
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for t in range(1, self.steps + 1):
            z = _dot(xc, w) + b
            p = _softmax(z)
            r = (p - onehot) * sample_w[:, None]
            grads = [_t_dot(xc, r) + self.l2 * w, r.sum(axis=0)]
            for i, g in enumerate(grads):
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                mhat = m[i] / (1 - beta1**t)
                vhat = v[i] / (1 - beta2**t)
                params[i] -= self.lr * mhat / (np.sqrt(vhat) + eps)
        if cols is not None:
            full = np.zeros((x.n_cols, c), dtype=np.float32)
            full[cols] = w
            self.w = full
        else:
            self.w = w.astype(np.float32)
        self.b = b
        return self

    def logits(self, x: Features) -> np.ndarray:
        if self.center is not None and not isinstance(x, SparseRows):
            x = (np.asarray(x, dtype=np.float64) - self.center) / self.scale
        return _dot(x, self.w) + self.b

    def logits_one(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """The fast path for one hashed prompt."""
        return val.astype(np.float64) @ self.w[idx] + self.b

    def arrays(self) -> dict[str, np.ndarray]:
        nz = np.flatnonzero(np.any(self.w != 0, axis=1))
        a = {"w_rows": nz.astype(np.int64), "w": self.w[nz], "b": self.b, "n_features": np.array(self.w.shape[0])}
        if self.center is not None:
            a.update(center=self.center, scale=self.scale)
        return a

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], n_classes: int) -> "LinearClassifier":
        clf = cls(n_classes)
        w = np.zeros((int(a["n_features"]), n_classes), dtype=np.float32)
        w[a["w_rows"]] = a["w"]
        clf.w, clf.b = w, a["b"].astype(np.float64)
        if "center" in a:
            clf.center, clf.scale = a["center"], a["scale"]
        return clf


class KNNClassifier:
    kind = "knn"

    def __init__(self, n_classes: int, k: int = 10, vote_temperature: float = 0.1, smoothing: float = 0.02):
        self.n_classes = n_classes
        self.k, self.vote_temperature, self.smoothing = k, vote_temperature, smoothing
        self.labels = np.zeros(0, np.int64)
        self.dense: np.ndarray | None = None
        self.center: np.ndarray | None = None  # dense inputs: mean removed before cosine
        # Inverted index (sparse features): feature keys[i] occurs in post_rows[ptr[i]:ptr[i+1]].
        self.keys = self.ptr = self.post_rows = self.post_vals = None

    def fit(self, x: Features, y: np.ndarray) -> "KNNClassifier":
        self.labels = np.asarray(y, dtype=np.int64)
        if isinstance(x, SparseRows):
            order = np.argsort(x.indices, kind="stable")
            sorted_cols = x.indices[order]
            self.keys, starts = np.unique(sorted_cols, return_index=True)
            self.ptr = np.append(starts, len(sorted_cols)).astype(np.int64)
            self.post_rows = x.row_ids()[order].astype(np.int32)
            self.post_vals = x.data[order].astype(np.float32)
        else:
            self.center, _ = _standardiser(x)
            self.dense = _unit_rows(x - self.center)
        return self

    def similarities(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Cosine similarity of one sparse query to every training prompt."""
        n = len(self.labels)
        if len(idx) == 0:
            return np.zeros(n)
        pos = np.searchsorted(self.keys, idx)
        pos = np.minimum(pos, len(self.keys) - 1)
        hit = self.keys[pos] == idx
        pos, w = pos[hit], val[hit]
        starts, lengths = self.ptr[pos], self.ptr[pos + 1] - self.ptr[pos]
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(n)
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
        weights = self.post_vals[offsets] * np.repeat(w, lengths)
        return np.bincount(self.post_rows[offsets], weights=weights, minlength=n)

    def _sims(self, x: Features) -> np.ndarray:
        if self.dense is not None:
            return _unit_rows(np.asarray(x, dtype=np.float64) - self.center) @ self.dense.T
        return np.stack([self.similarities(*x.row(i)) for i in range(x.n_rows)])

    def logits_from_sims(self, sims: np.ndarray) -> np.ndarray:
        """Similarity-weighted vote of the k nearest prompts, smoothed, as log-scores."""
        k = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sims, top, axis=1)
        w = np.exp((s - s.max(axis=1, keepdims=True)) / self.vote_temperature)
        votes = np.zeros((sims.shape[0], self.n_classes))
        np.add.at(votes, (np.repeat(np.arange(sims.shape[0]), k), self.labels[top].ravel()), w.ravel())
        votes /= votes.sum(axis=1, keepdims=True)
        return np.log(votes + self.smoothing)

    def logits(self, x: Features) -> np.ndarray:
        return self.logits_from_sims(self._sims(x))

    def logits_one(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        return self.logits_from_sims(self.similarities(idx, val)[None, :])[0]

    def nearest(self, x: Features, n: int = 3) -> list[tuple[int, float]]:
        """(training row, similarity) of the n most similar training prompts to row 0 of x."""
        sims = self._sims(x)[0]
        order = np.argsort(-sims, kind="stable")[:n]
        return [(int(i), float(sims[i])) for i in order]

    def arrays(self) -> dict[str, np.ndarray]:
        a = {"labels": self.labels, "params": np.array([self.k, self.vote_temperature, self.smoothing])}
        if self.dense is not None:
            a["dense"], a["center"] = self.dense, self.center
        else:
            a.update(keys=self.keys, ptr=self.ptr, post_rows=self.post_rows, post_vals=self.post_vals)
        return a

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], n_classes: int) -> "KNNClassifier":
        k, vt, sm = a["params"]
        clf = cls(n_classes, int(k), float(vt), float(sm))
        clf.labels = a["labels"]
        if "dense" in a:
            clf.dense, clf.center = a["dense"], a["center"]
        else:
            clf.keys, clf.ptr, clf.post_rows, clf.post_vals = a["keys"], a["ptr"], a["post_rows"], a["post_vals"]
        return clf


CLASSIFIERS = {"linear": LinearClassifier, "knn": KNNClassifier}


def _dot(x: Features, w: np.ndarray) -> np.ndarray:
    return x.dot(w) if isinstance(x, SparseRows) else np.asarray(x, dtype=np.float64) @ w


def _t_dot(x: Features, r: np.ndarray) -> np.ndarray:
    return x.t_dot(r) if isinstance(x, SparseRows) else np.asarray(x, dtype=np.float64).T @ r


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
