"""Search faults: a `pba_search` process killed with SIGKILL at random points resumes with no trial lost and the history
of an uninterrupted search, and damaged files are reported with their path, never retrained from scratch.

The search runs in a subprocess on the small digits data of `test_pba`. The subprocess stops at *points*: after each
training batch, after a file's contents are written to its temporary file (before the rename makes it the real file),
and after that rename. A seeded generator picks at which point of which kind each run sends itself SIGKILL, so every
kill lands where it was meant to, on every machine.
"""
import hashlib, json, os, pickle, re, shutil, signal, subprocess, sys
from pathlib import Path
import numpy as np
import pytest, torch
from fastaug.checkpoint import CheckpointError
from fastaug.search import load_checkpoint
from conftest import same

TESTS = Path(__file__).parent
SEARCH = dict(population=4, epochs=4, interval=2, lr=1e-2, seed=3, progress=False)

SCRIPT = '''
import os, signal, sys, warnings
warnings.filterwarnings('ignore')
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from fastai.callback.core import Callback
import fastaug.checkpoint as checkpoint, fastaug.search as search
from test_pba import make_learner, OPS3
kind,at = {kind!r},{at}
seen = dict(batch=0, written=0, renamed=0)
def point(k, what=''):
    "Die here, as by a `kill -9` from outside, if this is the point chosen"
    seen[k] += 1
    if k == kind and seen[k] == at:
        print(f'killed at {{k}} {{at}} {{what}}', flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
class Point(Callback):
    order = 99
    def after_batch(self):
        if self.training: point('batch')
def learner():
    learn = make_learner()
    learn.add_cb(Point())
    return learn
real = checkpoint.atomic_write
def write(path, fn):
    real(path, lambda f: (fn(f), point('written', path)))  # contents in the temporary file, not yet renamed
    point('renamed', path)
checkpoint.atomic_write = write
res = search.pba_search(learner, OPS3, path={path!r}, **{search!r})
print('finished', res.best, flush=True)
'''

def run_search(tmp_path, path, kind='none', at=0):
    "Run the search in a new process that SIGKILLs itself at the `at`-th point of `kind`; its exit code and output"
    script = tmp_path/f'search_{kind}_{at}.py'
    script.write_text(SCRIPT.format(tests=str(TESTS), path=str(path), search=SEARCH, kind=kind, at=at))
    out = subprocess.run([sys.executable, str(script)], env={**os.environ, 'OMP_NUM_THREADS': '1'},
                         capture_output=True, text=True, timeout=600)
    return out.returncode,out.stdout + out.stderr

def files(path:Path)->dict:
    "The search directory: every file but temporaries, by relative path"
    return {p.relative_to(path).as_posix(): p for p in sorted(path.rglob('*')) if p.is_file() and not p.name.endswith('.tmp')}

def digest(path:Path)->dict: return {k: hashlib.sha1(p.read_bytes()).hexdigest() for k,p in files(path).items()}


def assert_same_search(a:Path, b:Path):
    "Both directories hold the same trials (weights, optimiser state, policy, history, scores, lineage) and records"
    fa,fb = files(a),files(b)
    assert fa.keys() == fb.keys(), f'{sorted(fa.keys() ^ fb.keys())}'
    for k in fa:
        if k.endswith('.pt'):
            sa,sb = load_checkpoint(fa[k]),load_checkpoint(fb[k])
            for key in sa: assert same(sa[key], sb[key]), f'{k}: {key} differs from the uninterrupted search'
        else: assert json.loads(fa[k].read_text()) == json.loads(fb[k].read_text()), f'{k} differs from the uninterrupted search'

@pytest.fixture(scope='module')
def whole(tmp_path_factory):
    "The uninterrupted search, in a process like the killed ones"
    tmp = tmp_path_factory.mktemp('whole')
    rc,out = run_search(tmp, tmp/'s')
    assert rc == 0 and 'finished' in out, out[-3000:]
    return tmp/'s'

@pytest.fixture(scope='module')
def killed(tmp_path_factory):
    "A search killed at three seeded random points (after a batch, mid-write, right after a rename), then resumed"
    tmp = tmp_path_factory.mktemp('killed')
    path,rng,log = tmp/'s',np.random.default_rng(6),[]
    for kind in rng.permutation(['batch', 'written', 'renamed']).tolist():  # a search writes 14 files and trains 96 batches
        at = int(rng.integers(1, 40) if kind == 'batch' else rng.integers(2, 8))
        rc,out = run_search(tmp, path, kind, at)
        assert rc == -signal.SIGKILL, f'the run meant to die at {kind} {at} ended with {rc}: {out[-3000:]}'
        assert f'killed at {kind} {at}' in out
        log.append((kind, at, sorted(p.name for p in path.rglob('*.tmp'))))
    rc,out = run_search(tmp, path)
    assert rc == 0 and 'finished' in out, out[-3000:]
    return path,log

@pytest.mark.slow
def test_killed_search_resumes_with_every_trial_and_the_same_history(killed, whole):
    path,log = killed
    assert {k for k,*_ in log} == {'batch', 'written', 'renamed'}
    assert all(tmps for k,_,tmps in log if k == 'written'), 'a kill mid-write left no temporary file behind'
    for t in range(SEARCH['population']):
        s = load_checkpoint(path/'trials'/f'trial_{t:03d}.pt')
        assert s['trial'] == t and s['epoch'] == SEARCH['epochs']
        assert len(s['history']) == len(s['scores']) == SEARCH['epochs']
    n_gen = SEARCH['epochs']//SEARCH['interval']
    assert sorted(files(path/'generations')) == [f'generation_{g:03d}.json' for g in range(n_gen)]
    assert_same_search(path, whole)

DAMAGE = {
    'truncated checkpoint': ('trials/trial_000.pt', lambda b: b[:len(b)//2], 'corrupted or truncated checkpoint'),
    'empty checkpoint': ('trials/trial_002.pt', lambda b: b'', 'corrupted or truncated checkpoint'),
    'flipped byte in a checkpoint': ('trials/trial_001.pt', lambda b: b[:len(b)//2] + bytes([b[len(b)//2] ^ 0xFF]) + b[len(b)//2+1:],
                                     'corrupted'),
    'garbage search settings': ('search.json', lambda b: b'{"format": ', 'corrupted or truncated search settings'),
    'truncated generation record': ('generations/generation_000.json', lambda b: b[:10], 'corrupted or truncated generation record'),
}

@pytest.mark.slow
@pytest.mark.parametrize('name', list(DAMAGE))
def test_damaged_file_is_reported_with_its_path_never_retrained(killed, tmp_path, name):
    "A damaged file in a killed-and-resumed search's directory stops the next resume with its path; nothing changes"
    from test_pba import make_learner, OPS3
    from fastaug.search import pba_search
    src,_ = killed
    path = tmp_path/'s'
    shutil.copytree(src, path)
    rel,damage,msg = DAMAGE[name]
    f = path/rel
    f.write_bytes(damage(f.read_bytes()))
    before = digest(path)
    with pytest.raises(CheckpointError, match=re.escape(str(f)) + '.*' + re.escape(msg)):
        pba_search(make_learner, OPS3, path=path, **SEARCH)
    assert digest(path) == before, 'the resume changed the directory instead of stopping'

class _Touch:
    "Unpickling this runs `Path.touch`: what a checkpoint from a stranger could do if loaded with weights_only=False"
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (Path(self.marker),))

def test_checkpoints_load_with_weights_only(tmp_path):
    "A checkpoint holding an arbitrary pickled object is refused, and the object's code never runs"
    marker,f = tmp_path/'pwned',tmp_path/'trial_000.pt'
    torch.save({'format': 'fastaug.pba.trial', 'model': _Touch(marker)}, f)
    with pytest.raises(CheckpointError, match=re.escape(f'{f}: corrupted or truncated checkpoint')): load_checkpoint(f)
    assert not marker.exists()
    with open(f, 'wb') as fh: pickle.dump({'format': 'fastaug.pba.trial'}, fh)  # a plain pickle, not a torch zip file
    with pytest.raises(CheckpointError, match=re.escape(str(f))): load_checkpoint(f)
