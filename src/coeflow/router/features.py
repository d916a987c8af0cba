"""Feature matrices the classifiers accept: a small CSR sparse matrix (hashed n-grams have
~10^5 possible columns and ~10^2 non-zeros per prompt) or a dense numpy array (embeddings).
Written with numpy only so the router has no scipy dependency."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SparseRows:
    """Compressed sparse rows: row i holds columns indices[indptr[i]:indptr[i+1]]."""

    indptr: np.ndarray  # int64 [n_rows + 1]
    indices: np.ndarray  # int64 [nnz]
    data: np.ndarray  # float32 [nnz]
    n_cols: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def from_rows(cls, rows: list[tuple[np.ndarray, np.ndarray]], n_cols: int) -> "SparseRows":
        lengths = np.array([len(i) for i, _ in rows], dtype=np.int64)
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        if rows:
            indices = np.concatenate([i for i, _ in rows]).astype(np.int64, copy=False)
            data = np.concatenate([d for _, d in rows]).astype(np.float32, copy=False)
        else:
            indices, data = np.zeros(0, np.int64), np.zeros(0, np.float32)
        return cls(indptr, indices, data, n_cols)

    def take(self, rows: np.ndarray) -> "SparseRows":
        """A new matrix of the given rows, in the given order."""
        return SparseRows.from_rows([self.row(int(r)) for r in rows], self.n_cols)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.indices[a:b], self.data[a:b]

    def row_ids(self) -> np.ndarray:
        """The row of each stored value (the COO view)."""
        return np.repeat(np.arange(self.n_rows), np.diff(self.indptr))

    def dot(self, w: np.ndarray) -> np.ndarray:
        """self @ w for a dense w of shape [n_cols, k]."""
        out = np.zeros((self.n_rows, w.shape[1]), dtype=np.float64)
        if len(self.indices) == 0:
            return out
        contrib = self.data[:, None].astype(np.float64) * w[self.indices]
        nonempty = np.flatnonzero(np.diff(self.indptr) > 0)
        out[nonempty] = np.add.reduceat(contrib, self.indptr[nonempty], axis=0)
        return out

    def t_dot(self, r: np.ndarray) -> np.ndarray:
        """self.T @ r for a dense r of shape [n_rows, k]; returns [n_cols, k]."""
        rows = self.row_ids()
        out = np.zeros((self.n_cols, r.shape[1]), dtype=np.float64)
        for k in range(r.shape[1]):
            out[:, k] = np.bincount(self.indices, weights=self.data * r[rows, k], minlength=self.n_cols)
        return out


Features = SparseRows | np.ndarray


def n_rows(x: Features) -> int:
    return x.n_rows if isinstance(x, SparseRows) else x.shape[0]


def take_rows(x: Features, rows: np.ndarray) -> Features:
    return x.take(rows) if isinstance(x, SparseRows) else x[rows]


def l2_normalise_dense(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
