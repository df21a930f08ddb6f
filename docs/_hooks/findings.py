"""MkDocs hook: publish bench/FINDINGS.md (the lab notebook) as the site's page findings.md.

The notebook stays in bench/ beside the benchmarks. Pages link to it as ../bench/FINDINGS.md and
it links to them as ../docs/PAGE.md, so the links work on GitHub; on the site both become
neighbours, and strict mode still checks every link and anchor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

FINDINGS = Path(__file__).resolve().parents[2] / "bench" / "FINDINGS.md"
SITE_NAME = "findings.md"


def on_files(files: Files, config: Any) -> Files:
    """Add the notebook to the site's files."""
    files.append(File.generated(config, SITE_NAME, abs_src_path=str(FINDINGS)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Point the GitHub-relative links at the site's pages."""
    if page.file.src_uri == SITE_NAME:
        return markdown.replace("](../docs/", "](")
    return markdown.replace("](../bench/FINDINGS.md", "](" + SITE_NAME)
