"""What the README names exists: its command lines (commands, subcommands, options), config keys,
tables, views and columns, `make` targets and repository files. A README that names a key or an
option the code no longer has sends an operator to a one-line error with nothing to go on."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import inspect

from watcher.commands.main import build_parser
from watcher.config.root import Config
from watcher.store.engine import make_engine
from watcher.store.migrate import upgrade_to_head

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# A command line's tokens end at a shell operator or the end of a command substitution.
_SHELL_STOPS = re.compile(r"^(?:\||\|\||&&|;|>|>>|<|2>&1|#.*)$")
# `cctv-gender` run as a program: at the start of a span or line, after a path or `$(`.
_INVOKED = re.compile(r"(?:^|\$\(|&&\s|;\s)\s*(?:[\w./-]*/)?cctv-gender(?=\s|$)(?P<rest>.*)$")
_OPTION = re.compile(r"^\[?(--[a-z][a-z0-9-]*)")
_KEY = re.compile(r"^([a-z_]+)\.([a-z_]+(?:\.[a-z_]+)*)$")
# `metrics.json` is a file a benchmark writes, not the key `json` of `[metrics]`.
_FILE_ENDINGS = {"json", "jsonl", "py", "txt", "md", "csv", "png", "toml", "conf", "bmp", "sqlite3"}


def _fenced_blocks() -> Iterator[tuple[str, list[str]]]:
    """Each fenced block's language and lines."""
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL):
        yield match.group(1), match.group(2).splitlines()


def _prose() -> str:
    return re.sub(r"^```\w*\n.*?^```", "", README, flags=re.MULTILINE | re.DOTALL)


def _inline_spans() -> list[str]:
    return re.findall(r"`([^`\n]+)`", _prose())


def _command_lines() -> list[str]:
    """Every cctv-gender command line the README shows: in its shell blocks and inline spans."""
    candidates = list(_inline_spans())
    for language, lines in _fenced_blocks():
        if language in ("bash", ""):
            candidates.extend(line.split(" # ")[0] for line in lines)
    found = []
    for candidate in candidates:
        match = _INVOKED.search(candidate.strip())
        if match:
            found.append(match.group("rest").replace('"', " ").replace(")", " "))
    return found


def _tokens(rest: str) -> list[str]:
    tokens = []
    for token in rest.split():
        if _SHELL_STOPS.match(token):
            break
        tokens.append(token)
    return tokens


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """A parser's option strings, with those of its subcommands'."""
    found = {text for action in parser._actions for text in action.option_strings}
    for sub in _subcommands(parser).values():
        found |= _options(sub)
    return found


def _alternatives(token: str) -> list[str]:
    return [word for word in re.split(r"\\?\|", token.strip("[]")) if word]


def _is_placeholder(word: str) -> bool:
    return not word.islower() or not word.replace("-", "").isalpha()


def test_the_readme_shows_command_lines() -> None:
    assert len(_command_lines()) > 30  # the checks below look at something


@pytest.mark.parametrize("line", sorted(set(_command_lines())))
def test_every_command_line_names_commands_and_options_that_exist(line: str) -> None:
    top, _ = build_parser()
    tokens = _tokens(line)
    commands = _subcommands(top)
    top_options = _options(argparse.ArgumentParser(add_help=True)) | {
        text for action in top._actions for text in action.option_strings
    }
    while tokens and tokens[0].startswith("-"):
        assert tokens.pop(0) in top_options, f"`cctv-gender{line}`: not an option of cctv-gender"
    if not tokens or _is_placeholder(tokens[0]):
        return
    name = tokens.pop(0)
    assert name in commands, f"`cctv-gender{line}`: no command {name!r}; there are {sorted(commands)}"
    parser = commands[name]
    subcommands = _subcommands(parser)
    if subcommands and tokens and not tokens[0].startswith(("-", "[")):
        for word in _alternatives(tokens[0]):
            if not _is_placeholder(word):
                assert word in subcommands, f"`cctv-gender{line}`: `{name}` has no {word!r}"
    known = _options(parser) | top_options
    for token in tokens:
        option = _OPTION.match(token)
        if option:
            assert option.group(1) in known, f"`cctv-gender{line}`: `{name}` has no option {option.group(1)}"


def _config_keys() -> set[str]:
    """Every key the README names as `section.key` where section is one of the config's."""
    sections = set(Config.model_fields)
    keys = set()
    for span in _inline_spans():
        match = _KEY.match(span.split(" = ")[0].strip())
        if not match or match.group(1) not in sections or span.rsplit(".", 1)[-1] in _FILE_ENDINGS:
            continue
        if (ROOT / match.group(1) / f"{match.group(2)}.py").exists():
            continue  # `model.packed`: a module of the model package, not a key of [model]
        keys.add(match.group(0))
    return keys


def test_the_readme_names_config_keys() -> None:
    assert len(_config_keys()) > 40


@pytest.mark.parametrize("key", sorted(_config_keys()))
def test_every_config_key_the_readme_names_exists(key: str) -> None:
    model: type[BaseModel] = Config
    for part in key.split("."):
        assert part in model.model_fields, f"README names `{key}`: {model.__name__} has no {part!r}"
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Tables and views of a database migrated to head, with their columns."""
    file = tmp_path_factory.mktemp("readme") / "results.sqlite3"
    engine = make_engine(f"sqlite:///{file}", busy_timeout_ms=1000)
    try:
        upgrade_to_head(engine)
        inspector = inspect(engine)
        names = [*inspector.get_table_names(), *inspector.get_view_names()]
        return {name: {column["name"] for column in inspector.get_columns(name)} for name in names}
    finally:
        engine.dispose()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_the_results_tables_columns_are_the_databases(schema: dict[str, set[str]]) -> None:
    section = _section("Results database")
    table_rows = re.findall(r"^\| `([a-z0-9_]+)`(?:, `([a-z0-9_]+)`)? \|", section, flags=re.MULTILINE)
    named = {column for row in table_rows for column in row if column}
    assert named, "the Results database section has no column table"
    assert named <= schema["results"], f"not columns of results: {sorted(named - schema['results'])}"
    assert named >= schema["results"], f"columns the README leaves out: {sorted(schema['results'] - named)}"


@pytest.mark.parametrize("table", ["results", "instances", "reviews", "v_results"])
def test_each_table_the_readme_describes_exists_with_the_columns_it_lists(
    table: str, schema: dict[str, set[str]]
) -> None:
    assert table in schema, f"README describes `{table}`; the migrated database has {sorted(schema)}"
    section = _section("Results database")
    if table in ("instances", "reviews", "v_results"):
        start = section.index(f"`{table}`")
        paragraph = section[start : section.find("\n\n", start)]
        # The columns are listed in the paragraph's first sentence; what follows is about them.
        end = re.search(r"[`)]\.(?:\s|$)", paragraph)
        paragraph = paragraph[: end.end()] if end else paragraph
        named = set(re.findall(r"`([a-z_]+)`", paragraph)) - {table, "results"}
        # Values quoted in the paragraph (states, labels) are not columns.
        named -= {"running", "stopped", "female", "male", "unsure", "local", "web", "token_name"}
        named -= set(_subcommands(build_parser()[0]))  # `summary` and the web pages, say
        named -= {word for word in named if word.endswith("_local") and table != "v_results"}
        assert named <= schema[table], f"`{table}` has no {sorted(named - schema[table])}"


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-zA-Z][\w-]*):", makefile, flags=re.MULTILINE))


def test_every_make_target_the_readme_names_exists() -> None:
    shown = [*_inline_spans(), *(line for _, lines in _fenced_blocks() for line in lines)]
    named = {match.group(1) for text in shown if (match := re.match(r"\s*make ([a-z][\w-]*)", text))}
    assert named, "the README names no make target"
    assert named <= _make_targets(), f"no such make target: {sorted(named - _make_targets())}"


def test_every_repository_file_the_readme_names_exists() -> None:
    pattern = r"(?<![\w/.-])((?:bench|tests|watcher|model|migrations|systemd|\.ci)/[\w./-]*\w)"
    named = set(re.findall(pattern, README))
    assert len(named) > 10
    written = ("bench/out",)  # what the benchmarks write (ignored by git)
    missing = sorted(path for path in named if not (ROOT / path).exists() and not path.startswith(written))
    assert not missing, f"the README names files that are not in the repository: {missing}"


def _benchmark_lines() -> list[tuple[str, list[str]]]:
    """Each `bench/NAME.py ...` command the README shows, with the options it passes."""
    shown = [*_inline_spans(), *(line.split(" # ")[0] for _, lines in _fenced_blocks() for line in lines)]
    found = []
    for text in shown:
        for match in re.finditer(r"(bench/\w+\.py)((?:\s+[^\s`|;&>]+)*)", text):
            options = [
                option.group(1) for token in match.group(2).split() if (option := _OPTION.match(token))
            ]
            found.append((match.group(1), options))
    return found


def test_every_benchmark_option_the_readme_passes_exists() -> None:
    lines = _benchmark_lines()
    assert sum(len(options) for _, options in lines) > 20
    unknown = set()
    for script, options in lines:
        source = _with_its_bench_imports(ROOT / script)
        unknown |= {f"{script} {option}" for option in options if f'"{option}"' not in source}
    assert not unknown, f"the README passes options these benchmarks do not take: {sorted(unknown)}"


def _with_its_bench_imports(script: Path) -> str:
    """A benchmark's text and that of the bench modules it imports (where shared options live)."""
    text = script.read_text(encoding="utf-8")
    imported = re.findall(r"^(?:from|import) (\w+)", text, flags=re.MULTILINE)
    helpers = [script.parent / f"{name}.py" for name in imported]
    return "\n".join([text, *(helper.read_text(encoding="utf-8") for helper in helpers if helper.exists())])
