"""Streamed text equals the whole sequence decoded at once, multi-byte characters split over
tokens included, and each step decodes a few tokens, not the whole sequence."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers

from coeflow.engine.text import TextStream
from coeflow.model import Tokenizer as CoeflowTokenizer
from checkpoints import write_tokenizer

TEXT = "naïve café — 日本語 🙂 über: select * from t; 12 + 30 = 42 «ok»"


def _byte_level(tmp_path) -> Tokenizer:
    """The tests' byte-level BPE (GPT-2 style): characters outside its corpus are bytes."""
    write_tokenizer(tmp_path)
    return CoeflowTokenizer.from_dir(tmp_path).tok


def _sentencepiece_like() -> Tokenizer:
    """Llama 2's layout: words start with "▁", unknown characters fall back to <0xNN> byte
    tokens, and the decoder strips the first word's leading space."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece in ["▁", *"abcdefghijklmnopqrstuvwxyz0123456789*+=;:.«»—-", "▁s", "▁se", "▁sel"]:
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.BPE(vocab, [("▁", "s"), ("▁s", "e"), ("▁se", "l")], unk_token="<unk>",
                               byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return tok


@pytest.fixture(params=["byte-level", "sentencepiece-like"])
def tokenizer(request, tmp_path) -> Tokenizer:
    return _byte_level(tmp_path) if request.param == "byte-level" else _sentencepiece_like()


def test_streamed_text_is_the_whole_decode_and_never_shows_a_broken_character(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False).ids
    whole = tokenizer.decode(ids)
    assert whole.strip() == TEXT  # the tokenizer round-trips this text
    assert any(len(tokenizer.decode([i])) == 0 or "\ufffd" in tokenizer.decode([i]) for i in ids), \
        "no character is split over tokens: the test would not test that"
    stream = TextStream(tokenizer.decode, ())
    shown = ""
    for i in ids:
        shown += stream.push(i)
        assert "\ufffd" not in shown and whole.startswith(shown)
    shown += stream.flush()
    assert shown == whole == stream.text


def test_each_step_decodes_a_few_tokens_not_the_sequence(tmp_path):
    tok = _byte_level(tmp_path)
    ids = tok.encode(TEXT * 8, add_special_tokens=False).ids
    windows = []

    def decode(part: list[int]) -> str:
        windows.append(len(part))
        return tok.decode(part)
    stream = TextStream(decode, ())
    for i in ids:
        stream.push(i)
    stream.flush()
    assert len(ids) > 300 and stream.text == tok.decode(ids)
    assert max(windows) <= 6, max(windows)  # a UTF-8 character is at most 4 bytes, plus context


def test_a_stop_string_split_over_tokens_and_characters_ends_the_text(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False).ids
    whole = tokenizer.decode(ids)
    stream = TextStream(tokenizer.decode, ("🙂 üb", "never"))
    shown = ""
    for i in ids:
        shown += stream.push(i)
        assert "🙂" not in shown, "text from the stop string on was shown"
        if stream.stopped:
            break
    assert stream.stopped and shown + stream.flush() == stream.text == whole[:whole.index("🙂 üb")]


def test_the_end_shows_an_unfinished_character_as_the_whole_decode_does(tmp_path):
    tok = _byte_level(tmp_path)
    ids = tok.encode("ok 日", add_special_tokens=False).ids[:-1]  # the last byte of 日 never comes
    stream = TextStream(tok.decode, ())
    shown = "".join(stream.push(i) for i in ids)
    assert shown == "ok "
    assert shown + stream.flush() == tok.decode(ids) and tok.decode(ids).endswith("\ufffd")
