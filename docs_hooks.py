"""MkDocs hooks (``hooks:`` in mkdocs.yml): pages and assets made at build time, so that they never drift.

- ``cli.md``: the command-line reference, each command's ``--help`` as its argparse parser (or, for ``train``, the
  recipe's yaml) prints it when the site is built.
- ``javascripts/mathjax/tex-svg.js``: MathJax 3 from the ``django-static-mathjax`` wheel, served with the site so
  that the maths renders offline (no CDN). The SVG output needs no font files.
"""

from __future__ import annotations

import contextlib
import io
import os
from importlib.resources import files as package_files

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

MATHJAX_SCRIPT = "javascripts/mathjax/tex-svg.js"
CLI_PAGE = "cli.md"
HELP_COLUMNS = "100"


def command_help(command: str) -> str:
    """What ``fvae-asr COMMAND --help`` prints (``fvae-asr --help`` for an empty command)."""
    from fvae_asr.cli.main import main

    out = io.StringIO()
    os.environ["COLUMNS"] = HELP_COLUMNS  # argparse wraps to the terminal; the page wants one width
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([command, "--help"] if command else ["--help"])
    return out.getvalue().rstrip()


def cli_reference() -> str:
    """The command-line reference page, in Markdown."""
    from fvae_asr.cli.main import COMMANDS

    sections = [
        "# Command-line reference",
        "",
        "Generated from the command line's own parsers when this site was built: what `--help` prints.",
        "`fvae-asr <command>` and `python -m fvae_asr <command>` are the same.",
        "",
        "```text",
        command_help(""),
        "```",
    ]
    for name, (_, _, what) in COMMANDS.items():
        sections += ["", f"## fvae-asr {name}", "", what[0].upper() + what[1:] + ".", "", "```text"]
        sections += [command_help(name), "```"]
    return "\n".join(sections) + "\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    mathjax = package_files("mathjax") / "static" / "mathjax" / "es5" / "tex-svg.js"
    files.append(File.generated(config, MATHJAX_SCRIPT, abs_src_path=str(mathjax)))
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    return files
