"""Per-token overhead of JSON-constrained decoding on this CPU, for the maintained libraries the server could use:
xgrammar, llguidance, outlines-core, lm-format-enforcer.

    python benchmarks/json_decoding.py [--repeats 3] [--threads 1]

With SmolLM2's tokenizer (49,152 tokens), each library compiles a JSON schema, then walks a valid document token by
token as a decoding loop would: at every token it computes the set of allowed next tokens (the mask the sampler
needs), checks that the document's token is in it, and advances. Reported: the compile time, and the median time per
token of mask + advance (what each generated token costs a JSON row on top of its share of the forward pass).
Medians over repeats; one library at a time, in the same process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
    "city": {"type": "string", "enum": ["Paris", "Lima", "Oslo"]}}, "required": ["name", "age", "tags", "city"]}
DOCUMENT = {"name": "Ada Lovelace", "age": 36, "tags": ["mathematics", "engines", "poetry"], "city": "Oslo"}


def xgrammar_walk(tokenizer, vocab: int, ids: list[int]):
    import xgrammar as xgr

    started = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
    compiled = xgr.GrammarCompiler(info, max_threads=1).compile_json_schema(json.dumps(SCHEMA))
    compile_s = time.perf_counter() - started
    matcher = xgr.GrammarMatcher(compiled)
    mask = xgr.allocate_token_bitmask(1, vocab)
    times = []
    for token in ids:
        started = time.perf_counter()
        matcher.fill_next_token_bitmask(mask)
        allowed = bool((mask[0, token // 32] >> (token % 32)) & 1)
        assert allowed and matcher.accept_token(token), token
        times.append(time.perf_counter() - started)
    return compile_s, times


def llguidance_walk(tokenizer, vocab: int, ids: list[int]):
    import llguidance
    import llguidance.hf
    from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask

    started = time.perf_counter()
    lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
    matcher = llguidance.LLMatcher(lltok, llguidance.LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA)))
    compile_s = time.perf_counter() - started
    mask = allocate_token_bitmask(1, vocab)
    times = []
    for token in ids:
        started = time.perf_counter()
        fill_next_token_bitmask(matcher, mask, 0)
        allowed = bool((mask[0, token // 32] >> (token % 32)) & 1)
        assert allowed and matcher.consume_token(token), (token, matcher.get_error())
        times.append(time.perf_counter() - started)
    return compile_s, times


def _byte_vocabulary(tokenizer) -> dict[bytes, list[int]]:
    """Each token's bytes (byte-level BPE spells bytes as printable characters: GPT-2's table undoes it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    decoder = {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(shifted)}  # GPT-2's table
    vocabulary: dict[bytes, list[int]] = {}
    for token, token_id in tokenizer.get_vocab().items():
        if token_id in tokenizer.all_special_ids:
            continue
        raw = bytes(decoder[c] for c in token) if all(c in decoder for c in token) else token.encode()
        vocabulary.setdefault(raw, []).append(token_id)
    return vocabulary


def outlines_walk(tokenizer, vocab: int, ids: list[int]):
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    started = time.perf_counter()
    vocabulary = Vocabulary(tokenizer.eos_token_id, _byte_vocabulary(tokenizer))
    index = Index(build_regex_from_schema(json.dumps(SCHEMA)), vocabulary)
    compile_s = time.perf_counter() - started
    guide = Guide(index)
    times = []
    for token in ids:
        started = time.perf_counter()
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[guide.get_tokens()] = True  # what the sampler needs: a mask over the vocabulary
        assert mask[token], token
        guide.advance(token)
        times.append(time.perf_counter() - started)
    return compile_s, times


def lmfe_walk(tokenizer, vocab: int, ids: list[int]):
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer, TokenEnforcerTokenizerData

    started = time.perf_counter()
    # Its transformers integration imports modules transformers 5 moved; this is that integration's own recipe.
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    regular = []
    for token in range(vocab):
        if token not in special:
            after_zero, alone = tokenizer.decode([zero, token])[1:], tokenizer.decode([token])
            regular.append((token, after_zero, len(after_zero) > len(alone)))
    data = TokenEnforcerTokenizerData(regular, lambda t: tokenizer.decode(t).rstrip("\ufffd"), tokenizer.eos_token_id,
                                      False, vocab)
    enforcer = TokenEnforcer(data, JsonSchemaParser(SCHEMA))
    compile_s = time.perf_counter() - started
    times = []
    for k, token in enumerate(ids):
        started = time.perf_counter()
        allowed = enforcer.get_allowed_tokens(ids[:k])
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[list(getattr(allowed, "allowed_tokens", allowed))] = True
        assert mask[token], token
        times.append(time.perf_counter() - started)
    return compile_s, times


LIBRARIES = {"xgrammar 0.2.8": xgrammar_walk, "llguidance 1.9.1": llguidance_walk,
             "outlines-core 0.2.14": outlines_walk, "lm-format-enforcer 0.11.3": lmfe_walk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoTokenizer

    from lmtune.config.schema import ModelConfig
    from lmtune.models.loading import resolve_model_path

    folder = resolve_model_path(ModelConfig(name="smollm2"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab = AutoConfig.from_pretrained(folder).vocab_size
    ids = tokenizer(json.dumps(DOCUMENT), add_special_tokens=False)["input_ids"]
    print(f"SmolLM2 tokenizer, vocabulary {vocab}; document of {len(ids)} tokens; {args.threads} torch thread(s)\n")
    print("| library | compile (s) | per token: mask + advance, median (ms) | mean (ms) |\n|---|---|---|---|")
    for name, walk in LIBRARIES.items():
        try:
            runs = [walk(tokenizer, vocab, ids) for _ in range(args.repeats)]
        except Exception as err:  # noqa: BLE001 - a library that cannot do it is a result too
            print(f"| {name} | failed: {type(err).__name__}: {str(err)[:120]} | | |", flush=True)
            continue
        compile_s = statistics.median(r[0] for r in runs)
        per_token = [statistics.median(t) * 1e3 for _, t in runs]
        mean = [statistics.fmean(t) * 1e3 for _, t in runs]
        print(f"| {name} | {compile_s:.2f} | {statistics.median(per_token):.3f} | {statistics.median(mean):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
