"""What the demo's models learn from besides text: a chat example is laid out token for token as
the server lays out the same conversation, and only the answer is counted; copying never uses a
value of the tasks; training rows are packed to their length."""

from __future__ import annotations

import pytest
import torch

from coeflow.demo import tasks as task_set
from coeflow.demo.curriculum import ChatFormat, Examples, Repeats, Text, copy_pairs, copy_words, task_pairs
from coeflow.demo.tokenizer import save_tokenizer, train_tokenizer
from coeflow.model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    texts = [f"{p}\n{a}" for d in task_set.DOMAINS for p, a in task_pairs(d, 50, 0)] * 4
    return train_tokenizer(texts, 600)


def test_an_example_is_the_prompt_as_the_server_sends_it_then_the_answer_and_only_the_answer_counts(tok, tmp_path):
    save_tokenizer(tok, tmp_path, 256)
    served = Tokenizer.from_dir(tmp_path)  # the server's tokenizer, chat template included
    prompt, answer = "How many users living in Kenya?", "SELECT COUNT(*) FROM users WHERE country = 'Kenya';"
    ids, mask = ChatFormat.of(tok).example(tok, prompt, answer)
    asked = served.encode_chat([{"role": "user", "content": prompt}])
    assert ids[:len(asked)] == asked and not any(mask[:len(asked)])
    assert all(mask[len(asked):])
    assert tok.decode(ids[len(asked):], skip_special_tokens=False) == answer + "</s>"


def test_copying_asks_for_words_back_and_none_is_a_value_of_the_tasks():
    docs = ["Finland and Kenya are countries; ls /tmp lists notes.txt", "the harbor lantern glows"]
    words = copy_words(docs)
    assert "countries" in words and "lists" in words and "glows" in words
    assert not {"Finland", "Kenya", "/tmp", "notes.txt", "harbor", "lantern"} & set(words)
    for ask, answer in copy_pairs(words, 200, seed=1):
        bare = answer.strip("'();").removeprefix("x = ").removeprefix("the ")
        assert bare in ask and all(w in words for w in bare.split())


def test_rows_are_packed_examples_of_the_asked_length_and_text_rows_count_every_token(tok):
    pairs = [("Say a b", "a b"), ("Write c", "c")]
    examples = Examples(tok, pairs)
    gen = torch.Generator().manual_seed(0)
    ids, mask = examples.row(64, gen)
    assert ids.shape == mask.shape == (64,)
    bos = tok.token_to_id("<s>")
    starts = (ids == bos).nonzero().flatten().tolist()
    assert starts[0] == 0 and len(starts) >= 3  # whole examples, one after another
    fmt = ChatFormat.of(tok)
    masks = {tuple(e): [bool(x) for x in m] for e, m in (fmt.example(tok, p, a) for p, a in pairs)}
    for a, b in zip(starts, starts[1:]):
        assert mask[a:b].tolist() == masks[tuple(ids[a:b].tolist())]  # an example and its mask, unchanged
    stream = torch.arange(1000)
    window, counted = Text(stream).row(50, gen)
    assert counted.all() and window.tolist() == list(range(window[0].item(), window[0].item() + 50))


def test_repeat_rows_write_each_random_sequence_twice_and_count_the_second_copy():
    gen = torch.Generator().manual_seed(0)
    ids, mask = Repeats(vocab_size=50, bos=1, low=6, lengths=(3, 8)).row(400, gen)
    assert ids.shape == mask.shape == (400,)
    starts = (ids == 1).nonzero().flatten().tolist()
    assert starts[0] == 0 and len(starts) > 20
    for a, b in zip(starts, starts[1:]):  # whole sequences only (the row's last one may be cut)
        body, counted = ids[a + 1:b].tolist(), mask[a:b].tolist()
        n = len(body) // 2
        assert 3 <= n <= 8 and len(body) == 2 * n and body[:n] == body[n:]
        assert all(6 <= t < 50 for t in body)
        assert counted == [False] * (n + 1) + [True] * n
