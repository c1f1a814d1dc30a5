"""The project's contract documents live in docs/ and every reference to them resolves.

docs/sources.md (what the pipeline reads), docs/marts.md (what it publishes) and
docs/architecture.md (how it is built) are the project's own copies of the contracts. Code
comments, yml descriptions, tests and docs must point at them by these paths, never at the old
upper-case names (SOURCES.md, ...) or at a folder outside the repository; README.md must link
all three; every docs/...md path named anywhere must exist; and "docs/x.md section N" must name
a section that docs/x.md has.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()
CONTRACT_DOCS = ("sources", "marts", "architecture")

# The old names, in any case, unless written as the docs/ path (lower case).
_OLD_NAME = re.compile(r"(?<![\w-])(?P<ref>(?P<prefix>[\w./-]*/)?(?P<name>sources|marts|architecture)\.md)\b",
                       re.IGNORECASE)
_OUTSIDE = re.compile(r"\.\./shared\b|/work/shared\b")
# docs/<path>.md, optionally reached from a sub-folder with ../ (docs/ is at the repository root).
_DOCS_PATH = re.compile(r"(?<![\w.-])(?:\.\./)*(docs/[\w./-]*?\.md)\b")
_SECTION_REF = re.compile(
    r"(?<![\w.-])(?:\.\./)*(docs/[\w./-]*?\.md),?\s+sections?\s+"
    r"(\d+(?:\.\d+)*(?:\s*(?:,|and|&)\s*\d+(?:\.\d+)*)*)")
_HEADING = re.compile(r"^#+\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
_MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _repo_files() -> list[Path]:
    """Files in git (tracked, or new and not ignored) that exist in the work tree."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=ROOT, check=True, capture_output=True).stdout.decode()
    paths = sorted({p for p in out.split("\0") if p})
    return [ROOT / p for p in paths if (ROOT / p).is_file()]


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary or unreadable: not documentation


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    files = {}
    for path in _repo_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == THIS:
            continue
        text = _text(path)
        if text is not None:
            files[rel] = text
    assert files, "git ls-files found nothing: is this a git work tree?"
    return files


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def test_contract_docs_exist():
    for name in CONTRACT_DOCS:
        assert (ROOT / "docs" / f"{name}.md").is_file(), f"docs/{name}.md is missing"


def test_references_use_the_docs_paths(texts):
    bad = []
    for rel, text in texts.items():
        if rel.startswith("docs/"):
            continue  # docs link each other relatively (sources.md, marts.md)
        for m in _OLD_NAME.finditer(text):
            ref = m.group("ref")
            if not re.fullmatch(r"(?:\.\./)*docs/(sources|marts|architecture)\.md", ref):
                bad.append(f"{rel}:{_line(text, m.start())}: {ref!r}")
        for m in _OUTSIDE.finditer(text):
            bad.append(f"{rel}:{_line(text, m.start())}: {m.group(0)!r} (outside the repository)")
    assert not bad, ("references must be docs/sources.md, docs/marts.md or docs/architecture.md:\n"
                     + "\n".join(bad))


def test_readme_links_the_contract_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = set(_MD_LINK.findall(readme))
    missing = [f"docs/{n}.md" for n in CONTRACT_DOCS if f"docs/{n}.md" not in links]
    assert not missing, f"README.md does not link {', '.join(missing)}"


def test_every_docs_path_mentioned_exists(texts):
    missing = []
    for rel, text in texts.items():
        for m in _DOCS_PATH.finditer(text):
            if not (ROOT / m.group(1)).is_file():
                missing.append(f"{rel}:{_line(text, m.start())}: {m.group(1)}")
    assert not missing, "paths under docs/ that do not exist:\n" + "\n".join(missing)


def test_links_between_docs_resolve(texts):
    broken = []
    for rel, text in texts.items():
        if not (rel.startswith("docs/") and rel.endswith(".md")) and rel != "README.md":
            continue
        for target in _MD_LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            path = target.split("#", 1)[0]
            if path and not ((ROOT / rel).parent / path).exists():
                broken.append(f"{rel}: ({target})")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_section_references_name_existing_sections(texts):
    sections: dict[str, set[str]] = {}
    bad = []
    for rel, text in texts.items():
        for m in _SECTION_REF.finditer(text):
            doc = m.group(1)
            if doc not in sections:
                path = ROOT / doc
                sections[doc] = (set(_HEADING.findall(path.read_text(encoding="utf-8")))
                                 if path.is_file() else set())
            for number in re.findall(r"\d+(?:\.\d+)*", m.group(2)):
                if number not in sections[doc]:
                    bad.append(f"{rel}:{_line(text, m.start())}: {doc} has no section {number}")
    assert not bad, "section references that do not resolve:\n" + "\n".join(bad)
