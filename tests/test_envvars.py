"""Environment variable names live in one place: ``trainguard.envvars``."""

import ast
import re
from pathlib import Path

from trainguard import envvars

ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"""["'](TRAINGUARD_[A-Z0-9_]+)["']""")


def _sources() -> list[Path]:
    roots = [ROOT / d for d in ("agents", "pipeline", "schemas", "trainguard", "bench")]
    return sorted(p for root in roots for p in root.rglob("*.py"))


def test_no_module_but_envvars_spells_a_trainguard_variable_name():
    own = ROOT / "trainguard" / "envvars.py"
    spelt = {f"{p.relative_to(ROOT)}: {m}" for p in _sources() if p != own
             for m in _NAME.findall(p.read_text())}
    assert spelt == set()


def test_every_name_in_all_is_an_upper_case_variable_name():
    for name in envvars.__all__:
        value = getattr(envvars, name)
        # Open MPI spells one of the launchers' variables in lower case.
        lower_ok = value == envvars.OMPI_MCA_ESS_BASE_JOBID
        assert isinstance(value, str) and (value.isupper() or lower_ok), name


def test_every_trainguard_variable_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    names = {getattr(envvars, n) for n in envvars.__all__}
    missing = {n for n in names if n.startswith("TRAINGUARD_") and f"`{n}`" not in readme}
    assert missing == set()


#: Names an environment mapping goes by in the code (``os.environ``, a passed ``environ``).
_ENV_NAMES = {"environ", "env"}
#: What a variable name looks like (upper case; Open MPI's one exception included).
_VAR = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Za-z0-9]+)*$")


def _is_env(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _ENV_NAMES
    return isinstance(node, ast.Attribute) and node.attr in _ENV_NAMES | {"getenv"}


def _literal_names(node: ast.AST) -> set[str]:
    """Variable names spelt as literals where ``node`` reads an environment mapping."""
    found: list[ast.AST] = []
    if isinstance(node, ast.Call):
        reads = _is_env(node.func) or (isinstance(node.func, ast.Attribute)
                                       and _is_env(node.func.value))
        if reads or any(_is_env(a) for a in node.args):
            found = list(node.args)
    elif isinstance(node, ast.Subscript) and _is_env(node.value):
        found = [node.slice]
    elif isinstance(node, ast.Compare) and any(_is_env(c) for c in node.comparators):
        found = [node.left]
    return {n.value for n in found if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and _VAR.match(n.value)}


def env_reads(source: str) -> set[str]:
    """Every literal variable name ``source`` reads from an environment mapping."""
    return {name for node in ast.walk(ast.parse(source)) for name in _literal_names(node)}


def test_env_reads_finds_get_subscript_membership_and_helper_calls():
    source = """
import os
a = os.environ.get("ONE")
b = os.getenv("TWO", "x")
c = environ["THREE"]
d = "FOUR" in env
e = _ranks(environ, "mpi", "FIVE_RANK", "OMPI_MCA_ess_base_jobid")
f = env.get(envvars.NODE) or environ.get(name)
"""
    assert env_reads(source) == {"ONE", "TWO", "THREE", "FOUR", "FIVE_RANK",
                                 "OMPI_MCA_ess_base_jobid"}


def test_every_variable_the_code_reads_by_name_is_defined_in_envvars():
    defined = {getattr(envvars, n) for n in dir(envvars) if n.isupper()}
    roots = [ROOT / d for d in ("agents", "pipeline", "schemas", "trainguard")]
    read = {f"{p.relative_to(ROOT)}: {name}" for root in roots for p in sorted(root.rglob("*.py"))
            if not p.is_symlink() and "envvars" not in p.name
            for name in env_reads(p.read_text()) if name not in defined}
    assert read == set()


def test_every_launcher_variable_is_a_public_name_of_envvars():
    public = {getattr(envvars, n) for n in envvars.__all__}
    assert set(envvars.LAUNCHER_VARIABLES) <= public
    assert len(set(envvars.LAUNCHER_VARIABLES)) == len(envvars.LAUNCHER_VARIABLES)

