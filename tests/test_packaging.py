"""Packaging a GPU machine can install: `pip install -e .` into an environment whose torch (and transformers) came first
at other versions keeps them. Offline and fast: stub distributions stand in for the big wheels."""
import os, subprocess, sys, zipfile
from pathlib import Path
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from conftest import ROOT

GPU_MACHINE = {'torch': '2.11.0', 'transformers': '5.17.0'}   # what a typical GPU machine runs (Python 3.12)
PY = '3.12'


def _stub_wheel(folder: Path, name: str, version: str) -> Path:
    "A tiny pure-Python wheel that installs a distribution `name` at `version` (an importable package saying its version)."
    w = folder / f'{name}-{version}-py3-none-any.whl'
    di = f'{name}-{version}.dist-info'
    files = {f'{name}/__init__.py': f'__version__ = {version!r}\n',
             f'{di}/METADATA': f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: a stand-in for a test\n',
             f'{di}/WHEEL': 'Wheel-Version: 1.0\nGenerator: navab-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n'}
    files[f'{di}/RECORD'] = ''.join(f'{f},,\n' for f in [*files, f'{di}/RECORD'])
    with zipfile.ZipFile(w, 'w') as z:
        for f, text in files.items(): z.writestr(f, text)
    return w


def _tools(folder: Path) -> Path:
    "A folder exposing only pip and setuptools from this interpreter (links), for a venv made without them."
    from importlib.util import find_spec   # located, not imported (importing setuptools here would patch distutils)
    folder.mkdir()
    for mod in ('pip', 'setuptools'):
        src = Path(find_spec(mod).origin).parent
        (folder / src.name).symlink_to(src)
        for d in src.parent.glob(f'{src.name}-*.dist-info'): (folder / d.name).symlink_to(d)
    hack = Path(find_spec('setuptools').origin).parent.parent / '_distutils_hack'
    if hack.exists(): (folder / hack.name).symlink_to(hack)
    return folder


def _admits(req: Requirement, versions: dict) -> bool:
    "Whether a requirement (that applies on Python `PY`) accepts the GPU machine's version of its distribution."
    return req.name not in versions or req.specifier.contains(versions[req.name], prereleases=True)


def test_editable_install_keeps_an_existing_torch(tmp_path):
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    py = venv / 'bin' / 'python'
    site = Path(subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True, check=True).stdout.strip())
    (site / 'zz_tools.pth').write_text(str(_tools(tmp_path / 'tools')) + '\n')
    pip = [py, '-m', 'pip', '--disable-pip-version-check', '--no-input', '-q']
    stubs = [_stub_wheel(tmp_path, n, v) for n, v in GPU_MACHINE.items()]
    subprocess.run([*pip, 'install', '--no-index', '--no-deps', *map(str, stubs)], check=True)         # the machine's own torch first
    env = dict(os.environ, SETUPTOOLS_USE_DISTUTILS='stdlib') if sys.version_info < (3, 12) else None   # the venv's distutils is the stdlib's
    r = subprocess.run([*pip, 'install', '--no-index', '--no-deps', '--no-build-isolation', '-e', str(ROOT)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    probe = ("import importlib.metadata as m, json, torch, transformers; d = m.distribution('navab');"
             "print(json.dumps(dict(torch=torch.__version__, transformers=transformers.__version__, requires=d.requires or [],"
             "python=d.metadata['Requires-Python'], navab=str(m.version('navab')))))")
    import json
    got = json.loads(subprocess.run([py, '-c', probe], capture_output=True, text=True, check=True, cwd=tmp_path).stdout)
    assert (got['torch'], got['transformers']) == (GPU_MACHINE['torch'], GPU_MACHINE['transformers'])   # kept
    assert SpecifierSet(got['python']).contains(PY), f"requires-python {got['python']} refuses Python {PY}"
    env = {'python_version': PY, 'python_full_version': PY + '.3', 'extra': ''}
    reqs = [Requirement(x) for x in got['requires']]
    for name in GPU_MACHINE: assert any(q.name == name for q in reqs), f"navab no longer requires {name}?"
    refused = [str(q) for q in reqs if (q.marker is None or q.marker.evaluate(env)) and not _admits(q, GPU_MACHINE)]
    assert not refused, f"navab's requirements refuse the GPU machine's versions {GPU_MACHINE}: {refused}"
    # and they still admit what `make` installs here first
    assert all(_admits(q, {'torch': '2.13.0'}) for q in reqs)


def test_the_check_can_fail():
    "The old pin is what the check exists to catch."
    assert not _admits(Requirement('torch==2.13.0'), GPU_MACHINE)
    assert not _admits(Requirement('transformers>=5.23,<6'), GPU_MACHINE)
    assert not SpecifierSet('>=3.11,<3.12').contains(PY)
