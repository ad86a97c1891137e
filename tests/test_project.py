"""The project's own promises: one dependency list in two files, settings that steer what runs, README commands."""
import os, re, subprocess, sys, tomllib
from pathlib import Path
import yaml
from conftest import ROOT

NAVAB = [str(Path(sys.executable).parent / 'navab')]


def _name(req: str) -> str:
    return re.split(r'[<>=!~ \[;]', req.strip(), maxsplit=1)[0].lower().replace('_', '-')


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    want = py['project']['dependencies'] + sum(py['project']['optional-dependencies'].values(), []) + py['tool']['navab']['no-deps']
    env = yaml.safe_load((ROOT / 'environment.yml').read_text())
    pip = next(d['pip'] for d in env['dependencies'] if isinstance(d, dict) and 'pip' in d)
    assert 'python=3.11' in env['dependencies']
    assert sorted(map(str.strip, pip)) == sorted(map(str.strip, want)), \
        f"environment.yml and pyproject.toml disagree: only in yml {set(pip) - set(want)}, only in toml {set(want) - set(pip)}"
    assert any(r.startswith('torch>=') for r in want)     # a range: an existing (CUDA) torch is kept (tests/test_packaging.py)


def test_settings_change_what_runs(tmp_path):
    out = subprocess.run([*NAVAB, 'plan'], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert '30 runs' in out and 'gemma3-270m' in out and ' CN (zh) ' in out
    ini = tmp_path / 'study.ini'
    ini.write_text((ROOT / 'settings.ini').read_text().replace('models = smollm2-135m, gemma3-270m', 'models = smollm2-135m')
                   .replace('nations = CN, US, UK, FR, DE\ntasks = mc, pref, aj', 'nations = FR\ntasks = mc, aj'))
    env = dict(os.environ, NAVAB_SETTINGS=str(ini))
    out2 = subprocess.run([*NAVAB, 'plan'], capture_output=True, text=True, check=True, env=env, cwd=tmp_path).stdout
    assert '2 runs' in out2 and 'gemma3-270m' not in out2 and ' FR (fr) mc' in out2 and ' FR (fr) aj' in out2


def test_readme_shows_the_two_commands_first():
    text = (ROOT / 'README.md').read_text()
    blocks = re.findall(r'```(?:bash|sh)?\n(.*?)```', text, re.S)
    assert blocks and 'make demo' in blocks[0] and 'make test' in ''.join(blocks[:2])


def test_cli_help_on_every_subcommand():
    for args in ([], ['models'], ['data'], ['data', 'check'], ['plan'], ['demo'], ['evaluate'], ['compare'], ['serve']):
        r = subprocess.run([*NAVAB, *args, '--help'], capture_output=True, text=True)
        assert r.returncode == 0 and 'usage: navab' in r.stdout, (args, r.stderr)
