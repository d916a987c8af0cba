"""What the demo's models learn from besides their domains' text: repeated random sequences, and
chat examples, a prompt and the answer a model should give, written as the chat template writes
a conversation, with only the answer's tokens counted in the loss.

- **Repeats** (the base): random token sequences of 3-8 tokens, each written twice, the second
  counted. Predicting the second copy needs attention to find the token just written in the
  first and write the one after it (an induction head); with short sequences and full
  multi-head attention, a model of the demo's size forms it within a few hundred steps (runs
  M-T in docs/benchmarks-log.md), and the chat copying below builds on it.
- **Copying** (the base): "Repeat: X" answered with X, bare or wrapped ('X', (X), X;...). The
  tasks' answers carry a value from the prompt (a country into a query, a directory into a
  command line), and a value held out of the tasks' training split must be carried without
  ever having been seen in a task; a model of the demo's size learns that only when taught to
  copy words in general first. The words come from the training corpora, minus every value the
  tasks use (both splits), so the base never copies a task's value either.
- **Tasks** (the experts and the monolith): the train split of `demo.tasks`, each prompt with
  its reference answer; the build fills their values from the corpora's words
  (`tasks(..., words=)`), so that they too must be copied from the prompt.

Each source gives training rows of a fixed length: examples drawn at random and packed one after
another (each starts with BOS, as a chat does), as text windows are rows of the token stream."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from coeflow.demo import tasks as task_set

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

COPY_ASKS = ["Repeat: {x}", "Say {x}", "Copy this: {x}", "Write {x}", "Echo {x}", "Give back {x}", "Repeat {x}"]
COPY_WRAPS = ["{x}", "'{x}'", "({x})", "{x};", "x = {x}", "the {x}"]
_WORD = re.compile(r"[A-Za-z_./*0-9-]{2,14}")


class Source(Protocol):
    """Where a training row comes from (Examples, Repeats, Text): token ids and which of them
    the loss counts."""

    def row(self, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class ChatFormat:
    """The chat template's layout in token ids (tokenizer.CHAT_TEMPLATE, no tools): BOS, then
    each turn as <|role|>, a newline, its text, EOS, a newline."""
    bos: int
    eos: int
    user: int
    assistant: int
    newline: list[int]

    @classmethod
    def of(cls, tok: Tokenizer) -> ChatFormat:
        from coeflow.demo.tokenizer import BOS, EOS
        return cls(tok.token_to_id(BOS), tok.token_to_id(EOS), tok.token_to_id("<|user|>"),
                   tok.token_to_id("<|assistant|>"), tok.encode("\n", add_special_tokens=False).ids)

    def example(self, tok: Tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        """(token ids, loss mask): the prompt's turn and the assistant's answer; the mask marks
        the answer and its EOS, what the model must learn to write."""
        asked = ([self.bos, self.user, *self.newline, *tok.encode(prompt, add_special_tokens=False).ids, self.eos,
                  *self.newline, self.assistant, *self.newline])
        said = [*tok.encode(answer, add_special_tokens=False).ids, self.eos]
        return asked + said, [0] * len(asked) + [1] * len(said)


def copy_words(docs: list[str]) -> list[str]:
    """Words of the training corpora to copy, none of them a value any task uses."""
    return sorted({w for d in docs for w in _WORD.findall(d)} - task_set.task_values())


def copy_pairs(words: list[str], n: int, seed: int) -> list[tuple[str, str]]:
    """n (prompt, answer) pairs asking for one to four words back, bare or wrapped."""
    rng = random.Random(f"copy/{seed}")
    out = []
    for _ in range(n):
        x = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        wrap = rng.choice(COPY_WRAPS)
        ask = rng.choice(COPY_ASKS).format(x=x) + ("" if wrap == "{x}" else " as " + wrap.replace("{x}", "X"))
        out.append((ask, wrap.format(x=x)))
    return out


def task_pairs(domain: str, n: int, seed: int, words: list[str] | None = None) -> list[tuple[str, str]]:
    """n (prompt, reference answer) pairs of the tasks' train split (`words`: their values drawn
    from these, as `tasks` does)."""
    return [(t.prompt, t.answer) for t in task_set.tasks(domain, "train", n, seed, words)]


class Examples:
    """Chat examples, tokenized once into one flat tensor (a worker process receives it as one
    block, not one per example); `row` packs randomly drawn ones into a training row."""

    def __init__(self, tok: Tokenizer, pairs: list[tuple[str, str]]):
        import torch
        fmt = ChatFormat.of(tok)
        ids: list[int] = []
        mask: list[int] = []
        starts = [0]
        for prompt, answer in pairs:
            i, m = fmt.example(tok, prompt, answer)
            ids += i
            mask += m
            starts.append(len(ids))
        self.ids = torch.tensor(ids, dtype=torch.long)
        self.mask = torch.tensor(mask, dtype=torch.bool)
        self.starts = torch.tensor(starts, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def row(self, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        ids, masks, have = [], [], 0
        while have < length:
            i = int(torch.randint(0, len(self), (1,), generator=gen))
            a, b = int(self.starts[i]), int(self.starts[i + 1])
            ids.append(self.ids[a:b])
            masks.append(self.mask[a:b])
            have += b - a
        return torch.cat(ids)[:length], torch.cat(masks)[:length]


class Repeats:
    """Random token sequences (ids from `low` up, lengths `lengths`), each after BOS and
    written twice, only the second counted."""

    def __init__(self, vocab_size: int, bos: int, low: int, lengths: tuple[int, int] = (3, 8)):
        self.vocab_size, self.bos, self.low, self.lengths = vocab_size, bos, low, lengths

    def row(self, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        ids: list[int] = []
        mask: list[bool] = []
        while len(ids) < length:
            n = int(torch.randint(self.lengths[0], self.lengths[1] + 1, (1,), generator=gen))
            x = torch.randint(self.low, self.vocab_size, (n,), generator=gen).tolist()
            ids += [self.bos, *x, *x]
            mask += [False] * (n + 1) + [True] * n
        return torch.tensor(ids[:length]), torch.tensor(mask[:length])


class Text:
    """A token stream; a row is a window of it, every token counted in the loss."""

    def __init__(self, stream: torch.Tensor):
        self.stream = stream

    def row(self, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        start = int(torch.randint(0, len(self.stream) - length, (1,), generator=gen))
        window = self.stream[start : start + length]
        return window, torch.ones(length, dtype=torch.bool)
