"""Versioned prompt files: `prompts/<name>.md` -> Prompt(text, version = "<name>@<sha256[:8]>") -> chat messages.

Text before the first `## system` heading is a note for humans; the `## system` and `## user` sections become the two
messages, `$name` placeholders filled by `Prompt.messages(**values)`. The version goes into every generated row and
into the response-cache key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

PROMPT_DIR = Path(__file__).resolve().parent
_SECTION = re.compile(r"^## (system|user)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    version: str

    def sections(self) -> dict[str, str]:
        """-> {"system": ..., "user": ...} (the template text of each section)."""
        parts = _SECTION.split(self.text)
        found = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
        if set(found) != {"system", "user"}:
            raise ValueError(f"prompt {self.name}: needs exactly one '## system' and one '## user' section")
        return found

    def messages(self, **values: object) -> list[dict[str, str]]:
        """Fill the placeholders -> [{"role": "system", ...}, {"role": "user", ...}]; a missing value is an error."""
        sec = self.sections()
        return [{"role": role, "content": Template(sec[role]).substitute(values)} for role in ("system", "user")]


def load_prompt(name: str, prompt_dir: str | Path | None = None) -> Prompt:
    """'query_generation_v1' (or a path to a .md file) -> Prompt with its version id."""
    path = Path(name) if name.endswith(".md") else Path(prompt_dir or PROMPT_DIR) / f"{name}.md"
    text = path.read_text(encoding="utf-8")
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return Prompt(name=path.stem, text=text, version=f"{path.stem}@{sha}")
