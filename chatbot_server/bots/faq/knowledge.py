"""Load and validate the YAML knowledge base; every error names the file and the line."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ...errors import ConfigError

# Intents the bot itself relies on; a knowledge base without them cannot answer correctly.
REQUIRED_INTENTS = ("out_of_scope", "human_agent")
_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TOP_KEYS = frozenset({"version", "synonyms", "entries"})
# libyaml's loader composes a 1,000-entry file ~10x faster and keeps the line marks.
_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ENTRY_KEYS = frozenset({"id", "title", "questions", "answer", "keywords", "synonyms", "suggestions"})


@dataclass(frozen=True, slots=True)
class Entry:
    """One intent: example questions, the answer and optional matching hints."""

    id: str
    title: str
    questions: tuple[str, ...]
    answer: str
    keywords: tuple[str, ...] = ()
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    suggestions: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    """A validated knowledge base: entries by id plus the global synonym table."""

    path: Path
    entries: tuple[Entry, ...]
    synonyms: Mapping[str, tuple[str, ...]]
    signature: tuple[int, int] = (0, 0)

    def entry(self, intent: str) -> Entry:
        """Return the entry with id `intent`; KeyError if there is none."""
        for entry in self.entries:
            if entry.id == intent:
                return entry
        raise KeyError(intent)


class KnowledgeBaseError(ConfigError):
    """The knowledge-base file is unreadable, not YAML, or breaks the format."""

    def __init__(self, path: Path, line: int | None, message: str, *, key: str) -> None:
        self.path = path
        self.line = line
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(message, key=key, source=where)


def file_signature(path: Path) -> tuple[int, int]:
    """Return (mtime_ns, size) of `path`, the change marker the watcher compares."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def load_knowledge_base(path: Path, *, key: str = "bot.options.knowledge_base") -> KnowledgeBase:
    """Read and validate the knowledge base at `path`; raise KnowledgeBaseError with a line number."""
    try:
        signature = file_signature(path)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeBaseError(path, None, f"cannot read knowledge base: {exc}", key=key) from exc
    return parse_knowledge_base(text, path, signature=signature, key=key)


def parse_knowledge_base(
    text: str, path: Path, *, signature: tuple[int, int] = (0, 0), key: str = "bot.options.knowledge_base"
) -> KnowledgeBase:
    """Validate YAML `text` (read from `path`) into a KnowledgeBase."""
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise KnowledgeBaseError(path, line, f"invalid YAML: {problem}", key=key) from exc
    return _Validator(path, key).knowledge_base(root, signature)


class _Validator:
    """Walks the composed YAML nodes so each problem can cite the line it sits on."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key

    def fail(self, node: yaml.Node | None, message: str) -> KnowledgeBaseError:
        line = node.start_mark.line + 1 if node is not None else None
        return KnowledgeBaseError(self.path, line, message, key=self.key)

    def mapping(self, node: yaml.Node, what: str, allowed: frozenset[str]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            name = self.string(key_node, f"a key in {what}")
            if allowed and name not in allowed:
                raise self.fail(key_node, f"unknown key {name!r} in {what} (allowed: {', '.join(sorted(allowed))})")
            if name in out:
                raise self.fail(key_node, f"duplicate key {name!r} in {what}")
            out[name] = value_node
        return out

    def string(self, node: yaml.Node, what: str) -> str:
        # Plain scalars such as `ok` or `123` are fine as text; only collections are rejected.
        if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
            raise self.fail(node, f"{what} must be a non-empty string")
        value = str(node.value).strip()
        if not value:
            raise self.fail(node, f"{what} must be a non-empty string")
        return value

    def strings(self, node: yaml.Node, what: str, *, allow_empty: bool = True) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list of strings")
        values = tuple(self.string(item, f"each item of {what}") for item in node.value)
        if not values and not allow_empty:
            raise self.fail(node, f"{what} must not be empty")
        return values

    def synonyms(self, node: yaml.Node, what: str) -> dict[str, tuple[str, ...]]:
        table: dict[str, tuple[str, ...]] = {}
        for canonical, variants in self.mapping(node, what, frozenset()).items():
            table[canonical] = self.strings(variants, f"{what}.{canonical}")
        return table

    def knowledge_base(self, root: yaml.Node | None, signature: tuple[int, int]) -> KnowledgeBase:
        if root is None:
            raise self.fail(None, "knowledge base is empty")
        top = self.mapping(root, "the knowledge base", _TOP_KEYS)
        if "version" in top and self.string(top["version"], "version") != "1":
            raise self.fail(top["version"], "unsupported version (only 1 is known)")
        synonyms = self.synonyms(top["synonyms"], "synonyms") if "synonyms" in top else {}
        if "entries" not in top:
            raise self.fail(root, "missing key 'entries'")
        entries_node = top["entries"]
        if not isinstance(entries_node, yaml.SequenceNode) or not entries_node.value:
            raise self.fail(entries_node, "entries must be a non-empty list")
        entries: list[Entry] = []
        seen: dict[str, int] = {}
        for node in entries_node.value:
            entry = self.entry(node)
            if entry.id in seen:
                raise self.fail(node, f"duplicate id {entry.id!r} (first at line {seen[entry.id]})")
            seen[entry.id] = entry.line
            entries.append(entry)
        for required in REQUIRED_INTENTS:
            if required not in seen:
                raise self.fail(entries_node, f"an entry with id {required!r} is required")
        for node, entry in zip(entries_node.value, entries, strict=True):
            for target in entry.suggestions:
                if target not in seen:
                    raise self.fail(node, f"entry {entry.id!r}: suggestion {target!r} is not an entry id")
        return KnowledgeBase(self.path, tuple(entries), synonyms, signature)

    def entry(self, node: yaml.Node) -> Entry:
        fields = self.mapping(node, "an entry", _ENTRY_KEYS)
        if "id" not in fields:
            raise self.fail(node, "entry has no 'id'")
        entry_id = self.string(fields["id"], "id")
        if not _ID_PATTERN.match(entry_id):
            raise self.fail(fields["id"], f"id {entry_id!r} must be lower_snake_case ascii")
        label = f"entry {entry_id!r}"
        for required in ("questions", "answer"):
            if required not in fields:
                raise self.fail(node, f"{label} has no {required!r}")
        questions = self.strings(fields["questions"], f"{label}: questions", allow_empty=False)
        answer = self.string(fields["answer"], f"{label}: answer")
        title = self.string(fields["title"], f"{label}: title") if "title" in fields else questions[0]
        keywords = self.strings(fields["keywords"], f"{label}: keywords") if "keywords" in fields else ()
        synonyms = self.synonyms(fields["synonyms"], f"{label}: synonyms") if "synonyms" in fields else {}
        suggestions = self.strings(fields["suggestions"], f"{label}: suggestions") if "suggestions" in fields else ()
        return Entry(
            id=entry_id,
            title=title,
            questions=questions,
            answer=answer,
            keywords=keywords,
            synonyms=synonyms,
            suggestions=suggestions,
            line=node.start_mark.line + 1,
        )
