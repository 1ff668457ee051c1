"""Tagged sentences (token classification): CoNLL files or jsonl/json rows → a table of `tokens` and `tags` lists,
checked before any model loads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets

from lmtune.config.schema import DataConfig
from lmtune.data.sources import read_file, read_split
from lmtune.errors import LmtuneError

TOKENS, TAGS = "tokens", "tags"
"""The columns every tagged table has once read, whatever the file called them."""
JSON_FORMATS = ("jsonl", "json")
DOCSTART = "-DOCSTART-"


def read_conll(path_text: str | Path) -> datasets.Dataset:
    """One `token<TAB or spaces>...tag` per line (token: first column, tag: last), a blank line between sentences."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise LmtuneError(f"data file {path} does not exist; check data.train/validation/test (paths are relative to where you run lmtune)")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM would otherwise glue onto the first token
    except UnicodeDecodeError as err:
        raise LmtuneError(f"{path} is not utf-8 text ({err}); re-save it as utf-8") from None
    if not text.strip():
        raise LmtuneError(f"data file {path} is empty; it needs one `token<TAB>tag` per line, a blank line between sentences")
    tokens, tags = parse_conll(text.splitlines(), path)
    if not tokens:
        raise LmtuneError(f"{path} holds no sentences (only blank or {DOCSTART} lines)")
    return datasets.Dataset.from_dict({TOKENS: tokens, TAGS: tags})


def parse_conll(lines: list[str], path: Path) -> tuple[list[list[str]], list[list[str]]]:
    sentences: list[list[str]] = []
    sentence_tags: list[list[str]] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith(DOCSTART):  # some files separate with a lone TAB: blank all the same
            if words:
                sentences.append(words)
                sentence_tags.append(tags)
            words, tags = [], []
            continue
        word, tag = _token_and_tag(line, path, number)
        words.append(word)
        tags.append(tag)
    if words:  # the last sentence needs no blank line after it
        sentences.append(words)
        sentence_tags.append(tags)
    return sentences, sentence_tags


def _token_and_tag(line: str, path: Path, number: int) -> tuple[str, str]:
    # A TAB, where present, is the separator: tokens of user text may hold characters other tools call spaces.
    fields = [f.strip() for f in (line.split("\t") if "\t" in line else line.split())]
    if len(fields) < 2 or not fields[0] or not fields[-1]:
        raise LmtuneError(
            f"{path}, line {number}: expected a token and a tag separated by a TAB or spaces, got {line!r}. "
            "Put a blank line between sentences and a tag after every token."
        )
    return fields[0], fields[-1]


def read_tagged_split(cfg: DataConfig, which: str, tokens_column: str, tags_column: str) -> datasets.Dataset | None:
    """The `which` split (train/validation/test) as a tagged table; None when not configured."""
    source = getattr(cfg, which)
    if source is None:
        return None
    if cfg.hub:
        table = read_split(cfg, which)
    elif _is_json(Path(source), cfg.format):
        table = read_file(source, cfg.format)
    elif cfg.format in ("auto", "tsv"):
        return _checked_rows(read_conll(source), source)
    else:
        raise LmtuneError(f"token classification reads CoNLL files or jsonl/json rows, not {cfg.format}; set data.format=auto")
    return _checked_rows(_named_columns(table, tokens_column, tags_column, source), source)


def _is_json(path: Path, declared: str) -> bool:
    return declared in JSON_FORMATS or (declared == "auto" and path.suffix.lower().lstrip(".") in JSON_FORMATS)


def _named_columns(table: datasets.Dataset, tokens_column: str, tags_column: str, source: str) -> datasets.Dataset:
    for column, key in ((tokens_column, "tokens_column"), (tags_column, "tags_column")):
        if column not in table.column_names:
            raise LmtuneError(f"{source} has no column {column!r} (task.{key}); its columns are {table.column_names}")
    names = _tag_names(table, tags_column)
    tokens = [[str(t) for t in row] for row in _lists(table[tokens_column], tokens_column, source)]
    tags = [[names[t] if names else str(t) for t in row] for row in _lists(table[tags_column], tags_column, source)]
    return datasets.Dataset.from_dict({TOKENS: tokens, TAGS: tags})


def _lists(values: list, column: str, source: str) -> list[list]:
    for row, value in enumerate(values, start=1):
        if not isinstance(value, list):
            raise LmtuneError(f"{source}, row {row}: column {column!r} must hold a list (one item per word), got {value!r}")
    return values


def _tag_names(table: datasets.Dataset, column: str) -> list[str] | None:
    """Hub datasets store tags as class ids (a sequence of ClassLabel); their names are the tags."""
    feature = getattr(table.features[column], "feature", None)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _checked_rows(table: datasets.Dataset, source: str) -> datasets.Dataset:
    for row, (tokens, tags) in enumerate(zip(table[TOKENS], table[TAGS]), start=1):
        if not tokens:
            raise LmtuneError(f"{source}, sentence {row}: no tokens; drop empty sentences")
        if len(tokens) != len(tags):
            raise LmtuneError(
                f"{source}, sentence {row}: {len(tokens)} tokens but {len(tags)} tags; every token needs exactly one tag"
            )
    return table


def resolve_tag_set(train_tags: list[list[str]], configured: list[str] | None) -> list[str]:
    """The configured tags in their order, else the training tags sorted with `O` (outside) first."""
    if configured:
        if len(set(configured)) != len(configured):
            raise LmtuneError(f"data.labels lists a tag twice: {configured}")
        return list(configured)
    seen = {tag for tags in train_tags for tag in tags}
    if len(seen) < 2:
        raise LmtuneError(f"the training data has only the tag(s) {sorted(seen)}; tagging needs at least two")
    return sorted(seen, key=lambda tag: (tag != "O", tag))


def check_tags(table: datasets.Dataset, tag_set: list[str], split: str) -> None:
    known = set(tag_set)
    unknown = Counter(tag for tags in table[TAGS] for tag in tags if tag not in known)
    if unknown:
        shown = ", ".join(f"{tag!r} ({n} tokens)" for tag, n in unknown.most_common(5))
        raise LmtuneError(
            f"{split} data has tags outside the tag set {tag_set}: {shown}. "
            "Fix the data, or list every tag in data.labels."
        )
