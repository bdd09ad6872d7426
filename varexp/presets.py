"""Which commands each `experiment` preset (conf/experiment/*.yaml) is written for: the
`# @commands probe` (or `# @commands sweep,train`) line of its header, beside
`# @package _global_`. That is Hydra's own header syntax (`# @KEY VALUE` lines at the top of a
config file): Hydra reads the header and uses only `package`, so composition never sees it.
The line is read here, without Hydra or torch, for the refusal of a preset given to another
command (varexp.compose), the presets `varexp COMMAND --help` lists and shell completion. The
first command named is the one the preset is for, when a user gives it to another."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

CONFIG_MODULE = "varexp.conf"
KEY = "commands"
_HEADER_LINE = re.compile(r"#\s*@(\w+)\s+(\S+)")


def header(text: str) -> dict[str, str]:
    """The `# @KEY VALUE` lines at the top of a config file, as Hydra reads them: up to the
    first line that is not one (blank lines skipped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            break
        out[match[1]] = match[2]
    return out


@cache
def preset_commands() -> dict[str, tuple[str, ...] | None]:
    """Every preset of the package and the commands it is written for (None: any command)."""
    folder = resources.files(CONFIG_MODULE) / "experiment"
    out = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.endswith(".yaml"):
            named = header(path.read_text(encoding="utf-8")).get(KEY)
            out[path.name[: -len(".yaml")]] = tuple(named.split(",")) if named else None
    return out


def commands_for(preset: str) -> tuple[str, ...] | None:
    """The commands an experiment preset is written for; None: unknown, or written for any."""
    return preset_commands().get(preset)


def accepts(command: str, preset: str) -> bool:
    """Whether `varexp COMMAND experiment=PRESET` is allowed (a preset no command claims is)."""
    commands = commands_for(preset)
    return commands is None or command in commands
