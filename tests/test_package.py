"The package: one version, a build that works with current setuptools, the files the design card names"
import configparser, importlib.metadata, shutil, subprocess, sys, zipfile, tomllib
from pathlib import Path
import pytest
import fastaug

root = Path(__file__).resolve().parent.parent

def settings():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(root/'settings.ini', encoding='utf-8')
    return cfg['DEFAULT']

def test_one_version():
    v = settings()['version']
    assert fastaug.__version__ == v
    assert importlib.metadata.version('fastaug') == v, 'the installed metadata is stale: reinstall with `pip install -e .`'

def test_pyproject_holds_only_what_nbdev_needs():
    cfg = tomllib.loads((root/'pyproject.toml').read_text())
    assert set(cfg) == {'build-system', 'tool'} and set(cfg['tool']) == {'nbdev'}
    assert cfg['tool']['nbdev']['update_pyproject'] is False

def test_layout():
    for p in ('fastaug', 'nbs', 'tests', 'settings.ini', 'setup.py', 'pyproject.toml', 'Makefile', '.ci/run', 'LICENSE', 'README.md'):
        assert (root/p).exists(), p
    assert 'Apache License' in (root/'LICENSE').read_text()
    assert 'make test' in (root/'.ci'/'run').read_text()

def test_readme_says_how_to_set_up_first():
    readme = (root/'README.md').read_text()
    setup = readme.index('## Set up')
    assert setup < readme.index('## Install') and 'make demo' in readme and 'make test' in readme

def check_disk(venv, gib):
    return subprocess.run([sys.executable, str(root/'tools'/'check_disk.py'), str(venv), str(gib)], capture_output=True,
                          text=True)

def test_make_says_when_the_disk_cannot_hold_the_environment(tmp_path):
    r = check_disk(tmp_path/'a'/'.venv', 10**6)  # a folder not yet made: its disk is that of the nearest parent
    assert r.returncode == 1 and 'needs about 1000000.0 GiB more of free disk' in r.stderr and str(tmp_path) in r.stderr
    assert check_disk(tmp_path/'.venv', 0.001).returncode == 0
    (tmp_path/'.venv').mkdir(); (tmp_path/'.venv'/'torch.whl').write_bytes(b'0'*2**23)  # 8 MiB already there
    need = (shutil.disk_usage(tmp_path).free + 2**20)/2**30  # 1 MiB more than the disk has
    assert check_disk(tmp_path/'.venv', need).returncode == 0, 'what a half-made environment holds counts'
    assert check_disk(tmp_path/'b', need).returncode == 1
    assert '$(PYTHON) tools/check_disk.py $(VENV) $(VENV_GIB)' in (root/'Makefile').read_text()

def test_wheel_builds_with_current_setuptools(tmp_path):
    "setup.py reads settings.ini without pkg_resources and the wheel carries the package and its metadata"
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path), str(root)],
                   check=True, cwd=tmp_path)
    whl, = tmp_path.glob('fastaug-*.whl')
    names = zipfile.ZipFile(whl).namelist()
    assert 'fastaug/core.py' in names and 'fastaug/mixup.py' in names
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith('METADATA'))).decode()
    assert f"Version: {settings()['version']}" in meta and 'Requires-Dist: fastai' in meta

def test_all_exports_public_api():
    ns = {}
    exec('from fastaug.all import *', ns)
    for name in ('MixUp', 'CutMix', 'ManifoldMixup', 'OutputMixup', 'MODALS', 'ISDA', 'ImagePolicy', 'PBA', 'pba_search',
                 'Policy', 'PolicySchedule', 'MixedLoss', 'find_head', 'LatentHook', 'get_dls', 'get_learner', 'Learner'):
        assert name in ns, name

def test_no_distributed_import_at_top_level():
    "`import fastai.distributed` fails without accelerate: fastaug must never import it eagerly"
    out = subprocess.run([sys.executable, '-c', 'import sys, fastaug.all; print("fastai.distributed" in sys.modules)'],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'

def _tables(md:str)->list:
    "The Markdown tables of `md`, each as its block of lines"
    blocks,cur = [],[]
    for line in md.splitlines() + ['']:
        if line.startswith('|'): cur.append(line)
        elif cur: blocks.append('\n'.join(cur)); cur = []
    return blocks

def test_readme_shows_the_recorded_benchmark():
    "The README's results tables are the ones `fastaug.bench report` wrote from `benchmarks/results/runs.jsonl`"
    results = (root/'benchmarks'/'results'/'results.md').read_text()
    compact = _tables(results.split('### All rows')[0])
    assert len(compact) == 2, 'results.md should hold one compact table per regime'
    readme = (root/'README.md').read_text()
    for t in compact: assert t in readme, f"README.md does not show this table of benchmarks/results/results.md:\n{t}"
    assert 'benchmarks/results/gains.png' in readme

def test_recorded_benchmark_tables_come_from_its_runs():
    "results.md's tables are what the recorded runs summarise to: no number in them was edited by hand"
    from fastaug.bench import read_runs, summarise, compact_table, markdown_table
    out = root/'benchmarks'/'results'
    tbl = summarise(read_runs(out/'runs.jsonl'))
    results = (out/'results.md').read_text()
    for r in ('full', 'reduced'): assert markdown_table(compact_table(tbl, r)) in results, r
