"""Retrieval for answering from documents: chunking, BM25, dense embeddings, a score-blending hybrid, and metrics.

Introduced in week 4 (`week04/03_retrieval_and_tools.ipynb`), where the documents are library source files
(`llmcourse.docqa`). The notebook writes reciprocal-rank fusion itself (an exercise) and compares it with `blend`.

- `chunk(text, source, size)`: consecutive whole lines of about `size` characters, with their line numbers, so that
  a hit can be checked against the lines that hold an answer.
- `Bm25`: sparse keyword scoring with the `bm25s` library; identifiers such as `per_device_train_batch_size` stay
  one token, so a question naming an argument finds the line that defines it.
- `Dense`: MiniLM sentence embeddings (mean of the last layer over real tokens, unit length) and exact search by
  one matrix product. A few thousand chunks take milliseconds that way, so an approximate index (faiss) would add a
  dependency and lose exactness for nothing at this size.
- `blend`: min-max normalised scores of two retrievers, averaged with a weight.
- `recall_at_k`, `reciprocal_rank`: the two numbers every retrieval table reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

__all__ = ["Bm25", "Chunk", "Dense", "blend", "chunk", "covers", "recall_at_k", "reciprocal_rank"]


@dataclass(frozen=True)
class Chunk:
    """Lines `start` to `end` (1-based, inclusive) of document `source`."""

    source: str
    start: int
    end: int
    text: str


def chunk(text: str, source: str, size: int, overlap_lines: int = 0) -> list[Chunk]:
    """Split `text` into chunks of whole lines of about `size` characters (a line longer than `size` is one chunk);
    consecutive chunks share `overlap_lines` lines."""
    if size < 1 or overlap_lines < 0:
        raise ConfigError(f"chunk size must be at least 1 character and overlap at least 0 lines (got {size}, "
                          f"{overlap_lines})")
    lines = text.splitlines()
    chunks, i = [], 0
    while i < len(lines):
        j, length = i, 0
        while j < len(lines) and (j == i or length + len(lines[j]) + 1 <= size):
            length += len(lines[j]) + 1
            j += 1
        chunks.append(Chunk(source, i + 1, j, "\n".join(lines[i:j])))
        if j >= len(lines):
            break
        i = max(j - overlap_lines, i + 1)
    return chunks


def covers(c: Chunk, source: str, first: int, last: int) -> bool:
    """Whether chunk `c` holds all of lines `first`..`last` of `source`."""
    return c.source == source and c.start <= first and last <= c.end


class Bm25:
    """BM25 over chunks (`bm25s`, its default k1=1.5, b=0.75), English stop words removed."""

    def __init__(self, chunks: Sequence[Chunk]):
        import bm25s

        self.chunks = list(chunks)
        self._bm25s = bm25s
        self.index = bm25s.BM25()
        self.index.index(bm25s.tokenize([c.text for c in self.chunks], stopwords="en", show_progress=False),
                         show_progress=False)

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """The `k` best chunks for `query`: (chunk number, score), best first."""
        tokens = self._bm25s.tokenize([query], stopwords="en", show_progress=False)
        k = min(k, len(self.chunks))
        ids, scores = self.index.retrieve(tokens, k=k, show_progress=False)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0])]


class Dense:
    """Unit-length sentence embeddings of chunks and exact cosine search (one matrix product per query)."""

    def __init__(self, chunks: Sequence[Chunk], model=None, tokenizer=None, batch_size: int = 64,
                 max_length: int = 256, progress: bool = True):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from .assets import resolve

        if model is None:
            path = resolve("sentence-transformers/all-MiniLM-L6-v2")
            model, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
        self.chunks, self.model, self.tokenizer, self.max_length = list(chunks), model, tokenizer, max_length
        self._torch = torch
        self.vectors = self.embed([c.text for c in self.chunks], batch_size, progress)

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Mean-pooled, unit-length embeddings, one row per text."""
        torch = self._torch
        rows = []
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="embedding chunks", total=len(starts))
        with torch.inference_mode():
            for i in starts:
                enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                rows.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.model.config.hidden_size), np.float32)

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """The `k` chunks most similar to `query`: (chunk number, cosine similarity), best first."""
        scores = self.vectors @ self.embed([query])[0]
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(i), float(scores[i])) for i in top]


def blend(a: Sequence[tuple[int, float]], b: Sequence[tuple[int, float]], weight: float = 0.5,
          k: int = 10) -> list[tuple[int, float]]:
    """Combine two result lists by their scores: each list's scores scaled to 0..1 (min-max), then
    `weight * a + (1 - weight) * b`, a chunk missing from one list counting 0 there. Best first, `k` of them."""
    if not 0 <= weight <= 1:
        raise ConfigError(f"weight must be between 0 and 1, got {weight}")

    def scaled(results):
        if not results:
            return {}
        values = [s for _, s in results]
        low, high = min(values), max(values)
        return {i: (s - low) / (high - low) if high > low else 1.0 for i, s in results}

    sa, sb = scaled(a), scaled(b)
    combined = {i: weight * sa.get(i, 0.0) + (1 - weight) * sb.get(i, 0.0) for i in set(sa) | set(sb)}
    return sorted(combined.items(), key=lambda item: (-item[1], item[0]))[:k]


def recall_at_k(hits: Sequence[bool], k: int) -> float:
    """1.0 if one of the first `k` results is relevant (`hits[i]`: result i is), else 0.0; averaged over queries
    this is the share of questions whose answer is within reach of the reader."""
    return float(any(hits[:k]))


def reciprocal_rank(hits: Sequence[bool]) -> float:
    """1 / the rank of the first relevant result (1-based), 0.0 when none is; averaged over queries: MRR."""
    for rank, hit in enumerate(hits, start=1):
        if hit:
            return 1.0 / rank
    return 0.0
