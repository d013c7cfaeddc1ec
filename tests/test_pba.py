"PBA: replaying a schedule, explore and exploit, checkpoints, and the search with both engines"
import json, math, os, re, signal, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np
import pytest, torch
from fastai.learner import Learner, load_learner
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.progress import ProgressCallback
import fastai.callback.schedule  # fit_one_cycle, fine_tune, lr_find
from fastai.metrics import accuracy, error_rate
from fastai.torch_core import no_random
from fastaug.policy import *
from fastaug.pba import *
from fastaug.checkpoint import *
from fastaug.search import *
from fastaug.datasets import image_dls, image_cnn, fixed_split
import fastaug.checkpoint as checkpoint_module
from conftest import same

# ---------------------------------------------------------------- toy operations, callbacks and data
@register_op('_tNoise', 'image')
def _t_noise(x, magnitude, **kwargs): return x + magnitude*torch.randn_like(x)
@register_op('_tScale', 'image')
def _t_scale(x, magnitude, **kwargs): return x*(1 - magnitude)
@register_op('_tFlip', 'image', magnitude=False)
def _t_flip(x, magnitude, **kwargs): return x.flip(-1)
@register_op('_tJitter', 'latent')
def _t_jitter(z, magnitude, **kwargs): return z + magnitude

OPS3 = ['_tNoise', '_tScale', '_tFlip']

class ImagePolicy(PolicyCallback):
    "The smallest image policy callback: applies its policy to training batches, records the policy of each epoch"
    kind,run_valid = 'image',False
    def __init__(self, policy=None):
        super().__init__(policy)
        self.seen = []
    def before_train(self): self.seen.append(self.policy)
    def before_batch(self):
        if self.policy is not None and len(self.policy): self.learn.xb = (self.policy.apply(self.xb[0]), *self.xb[1:])

class OtherImagePolicy(ImagePolicy): pass

class LatentPolicy(PolicyCallback):
    kind = 'latent'

VOCAB = [str(i) for i in range(10)]
_data = {}
def digits():
    "A fixed small split of scikit-learn's 8x8 digits: 384 train, 192 valid"
    if 'xy' not in _data:
        from sklearn.datasets import load_digits
        d = load_digits()
        x,y = (d.images*16).clip(0, 255).astype(np.uint8),d.target
        tr,va = fixed_split(len(y), 0.3)
        _data['xy'] = x[tr][:384],y[tr][:384],x[va][:192],y[va][:192]
    return _data['xy']

def digits_dls():
    if 'dls' not in _data: _data['dls'] = image_dls(*digits(), VOCAB, bs=64)
    return _data['dls']

def make_learner(metrics=accuracy, cbs=None):
    "A new Learner on the digits with a tiny convnet and an image policy callback"
    learn = Learner(digits_dls(), image_cnn(10, widths=(8, 16)), metrics=metrics, cbs=[ImagePolicy()] if cbs is None else cbs)
    learn.remove_cb(ProgressCallback)
    return learn

SEARCH = dict(population=4, epochs=4, interval=2, lr=1e-2, progress=False)

pytestmark = pytest.mark.usefixtures('one_thread')


def fit_quiet(learn, n, lr=1e-2, **kwargs):
    with learn.no_logging(): learn.fit(n, lr, **kwargs)

def schedule(n=4):
    "A schedule whose epochs all differ"
    return PolicySchedule([Policy([('_tNoise', i, i), ('_tScale', 10-i, 9-i)]) for i in range(n)])

def seen(learn, sched): return [sched.policies.index(p) for p in learn.image_policy.seen]

# ---------------------------------------------------------------- replay
def test_replay_each_epoch_then_restore():
    s = schedule(4)
    learn = make_learner(cbs=[ImagePolicy(Policy([('_tFlip', 5, 0)]))])
    mine = learn.image_policy.policy
    learn.add_cb(PBA(s))
    fit_quiet(learn, 4)
    assert seen(learn, s) == [0, 1, 2, 3]
    assert learn.image_policy.policy is mine

@pytest.mark.parametrize('length,n_epochs', [(4, 8), (6, 3), (3, 7), (5, 5)])
def test_replay_stretches(length, n_epochs):
    s = schedule(length)
    learn = make_learner()
    learn.add_cb(PBA(s, n_epochs=n_epochs))
    fit_quiet(learn, n_epochs)
    assert seen(learn, s) == [e*length//n_epochs for e in range(n_epochs)]
    assert seen(learn, s) == [s.source_epoch(e, n_epochs) for e in range(n_epochs)]

def test_replay_stretch_documented_example():
    "A 3-epoch schedule over 9 epochs holds each policy for three"
    s = schedule(3)
    learn = make_learner()
    learn.add_cb(PBA(s, n_epochs=9))
    fit_quiet(learn, 9)
    assert seen(learn, s) == [0, 0, 0, 1, 1, 1, 2, 2, 2]

def test_replay_counts_epochs_across_fits_and_fine_tune():
    s = schedule(4)
    learn = make_learner()
    learn.add_cb(PBA(s))
    fit_quiet(learn, 2); fit_quiet(learn, 2)
    assert seen(learn, s) == [0, 1, 2, 3]
    learn.pba.reset(); learn.image_policy.seen = []
    with learn.no_logging(): learn.fine_tune(3, 1e-2, freeze_epochs=1)
    assert seen(learn, s) == [0, 1, 2, 3]
    assert learn.pba.epochs_done == 4

def test_replay_fine_tune_stretched():
    s = schedule(2)
    learn = make_learner()
    learn.add_cb(PBA(s, n_epochs=4))
    with learn.no_logging(): learn.fine_tune(3, 1e-2, freeze_epochs=1)
    assert seen(learn, s) == [0, 0, 1, 1]

def test_lr_find_does_not_advance_the_schedule():
    s = schedule(3)
    learn = make_learner()
    learn.add_cb(PBA(s))
    with learn.no_logging(): learn.lr_find(num_it=12, show_plot=False)
    assert learn.pba.epochs_done == 0
    learn.image_policy.seen = []
    fit_quiet(learn, 3)
    assert seen(learn, s) == [0, 1, 2]

def test_start_epoch_counts_skipped_epochs():
    "fastai's `fit(start_epoch=k)` skips k epochs; they count, so the schedule stays aligned with the fit's epochs"
    s = schedule(4)
    learn = make_learner()
    learn.add_cb(PBA(s))
    fit_quiet(learn, 4, start_epoch=2)
    assert seen(learn, s) == [2, 3]

def test_cancelled_fit_restores_policies():
    class Cancel(Callback):
        order = 30
        def after_batch(self):
            if self.training and self.epoch == 1: raise CancelFitException()
    s = schedule(4)
    learn = make_learner()
    learn.add_cbs([PBA(s), Cancel()])
    fit_quiet(learn, 4)
    assert seen(learn, s) == [0, 1]
    assert learn.image_policy.policy is None
    assert learn.pba.epochs_done == 1  # the cancelled epoch was not completed

def test_replay_sets_every_callback_of_its_kind_only():
    s = schedule(2)
    latent = LatentPolicy(Policy([('_tJitter', 3, 3)]))
    learn = make_learner(cbs=[ImagePolicy(), OtherImagePolicy(), latent])
    learn.add_cb(PBA(s))
    fit_quiet(learn, 2)
    a,b = [cb for cb in learn.cbs if isinstance(cb, ImagePolicy)]
    assert a.seen == b.seen == s.policies
    assert latent.policy == Policy([('_tJitter', 3, 3)])

def test_replay_errors():
    learn = make_learner()
    latent = PolicySchedule([Policy([('_tJitter', 5, 5)])])
    with pytest.raises(ValueError, match="callbacks applying latent operations, but its policy callbacks apply image"):
        fit_quiet(learn, 1, cbs=PBA(latent))
    learn = make_learner(cbs=[])
    with pytest.raises(ValueError, match='it has no PolicyCallback'): fit_quiet(learn, 1, cbs=PBA(schedule(2)))
    with pytest.raises(ValueError, match='`n_epochs` must be an integer >= 1'): PBA(schedule(2), n_epochs=0)
    with pytest.raises(ScheduleError, match='no such schedule file'): PBA('/nonexistent/schedule.json')

def test_replay_warns_past_the_end():
    s = schedule(2)
    learn = make_learner()
    learn.add_cb(PBA(s))
    with pytest.warns(UserWarning, match='past the 2 epochs'): fit_quiet(learn, 3)
    assert seen(learn, s) == [0, 1, 1]

def test_schedule_json_round_trip_and_replay(tmp_path):
    s = schedule(3)
    f = s.save(tmp_path/'schedule.json')
    assert PolicySchedule.load(f) == s
    learn = make_learner()
    learn.add_cb(PBA(f))
    fit_quiet(learn, 3)
    assert seen(learn, s) == [0, 1, 2]
    f.write_text(f.read_text()[:-30])
    with pytest.raises(ScheduleError, match='corrupted or truncated'): PBA(f)

def test_export_with_pba(tmp_path):
    s = schedule(2)
    learn = make_learner()
    learn.path = tmp_path
    learn.add_cb(PBA(s))
    fit_quiet(learn, 2)
    learn.export('learn.pkl')
    new = load_learner(tmp_path/'learn.pkl')
    assert new.pba.schedule == s and new.pba._targets is None

# ---------------------------------------------------------------- explore and exploit
def test_explore_keeps_levels_in_range():
    rng = np.random.default_rng(0)
    pol = Policy([('_tNoise', 0, 0), ('_tNoise', 10, 9), ('_tScale', 5, 4), ('_tFlip', 10, 0)], n_ops_weights=(0.2, 0.7, 0.1))
    for _ in range(3000):
        pol = explore(pol, rng)
        assert all(0 <= s.prob <= 10 and 0 <= s.mag <= 9 for s in pol.settings)
    assert [s.op for s in pol.settings] == ['_tNoise', '_tNoise', '_tScale', '_tFlip']
    assert pol.n_ops_weights == (0.2, 0.7, 0.1)

def test_explore_resample_rate_and_shifts():
    zero = Policy.zero(['_tNoise']*20_000, copies=1)
    new = explore(zero, rng=0)
    probs,mags = np.array([s.prob for s in new.settings]),np.array([s.mag for s in new.settings])
    # from level 0 a shift reaches at most 3: only a resample reaches 4 or more (7 of 11 probability levels, 6 of 10 magnitude levels)
    assert abs((probs >= 4).mean()/(7/11) - 0.2) < 0.015
    assert abs((mags >= 4).mean()/(6/10) - 0.2) < 0.015
    mid = Policy([('_tNoise', 5, 5)]*20_000)
    d = np.array([s.prob - 5 for s in explore(mid, rng=1, resample_p=0.).settings])
    assert set(np.unique(d)) == set(range(-3, 4))
    assert abs((d == 0).mean() - 0.25) < 0.015 and abs((d == 3).mean() - 0.125) < 0.012
    u = np.array([s.prob for s in explore(mid, rng=2, resample_p=1.).settings])
    assert np.abs(np.bincount(u, minlength=11)/len(u) - 1/11).max() < 0.01
    assert explore(zero, rng=5) == explore(zero, rng=5)
    with pytest.raises(ValueError, match='`resample_p` must be a probability'): explore(zero, resample_p=1.5)

def test_exploit_pairs():
    scores = [0.5, 0.9, float('nan'), 0.7, 0.1, 0.8, 0.95, 0.6]
    seen_donors = set()
    for seed in range(50):
        pairs = exploit_pairs(scores, 0.25, rng=seed)
        assert sorted(pairs) == [2, 4]
        seen_donors |= set(pairs.values())
    assert seen_donors == {1, 6}
    assert exploit_pairs({'a': 1., 'b': 2., 'c': 3., 'd': 0.}, 0.25, rng=0) == {'d': 'c'}
    assert len(exploit_pairs([1., 2., 3.], 0.5)) == 1  # capped at half the population
    assert exploit_pairs([1.], 0.5) == {}
    with pytest.raises(ValueError, match=r'`quantile` must be in \(0, 0.5\]'): exploit_pairs([1., 2.], 0.6)

def _trained_state(policy, trial=0, epochs=1):
    learn = make_learner(cbs=[ImagePolicy(policy)])
    fit_quiet(learn, epochs)
    state = {**new_trial(trial, policy), **learner_state(learn), 'epoch': epochs,
             'history': [policy.to_list()]*epochs, 'scores': [0.5]*epochs}
    return learn,state

def _reseed(learn, seed):
    for dl in learn.dls.loaders: dl.rng.seed(seed)

def test_exploit_copies_weights_optimiser_state_and_history_exactly(tmp_path):
    pol = Policy([('_tNoise', 5, 5), ('_tScale', 2, 3)])
    a,state = _trained_state(pol)
    f = save_checkpoint(state, tmp_path/'a.pt')
    raw = torch.load(f, weights_only=True)  # plain tensors, lists and numbers only
    assert json.loads(raw['history']) == [pol.to_list()]  # one string: fast to load and to hash
    old = save_state(state, tmp_path/'old.pt', 'the trial state')  # as checkpoints were written before: a list
    assert isinstance(torch.load(old, weights_only=True)['history'], list)
    assert same(load_checkpoint(old), load_checkpoint(f)) and load_checkpoint(f)['history'] == [pol.to_list()]
    copied = exploit(load_checkpoint(f), 1)
    assert copied['trial'] == 1 and copied['lineage'] == [[0, 0], [1, 1]]
    for k in ('model', 'opt', 'history', 'scores', 'policy', 'epoch', 'n_ops_weights'): assert same(copied[k], state[k]), k
    b = make_learner()
    load_learner_state(b, copied)
    assert same(b.model.state_dict(), a.model.state_dict())
    assert same(b.opt.state_dict()['state'], a.opt.state_dict()['state'])
    # the copy shares no memory with the donor: training it changes neither the donor's state nor the copy's
    before = {k: v.clone() for k,v in copied['model'].items()}
    # trained on from the same seed, the donor and the copy stay identical: Adam's moments and step came along
    for learn in (a, b):
        learn.image_policy.policy = pol
        _reseed(learn, 1)
        with no_random(1): fit_quiet(learn, 1)
    assert same(b.model.state_dict(), a.model.state_dict())
    assert same(copied['model'], before)
    # ...which weights alone would not give
    c = make_learner()
    load_learner_state(c, {**copied, 'opt': None})
    a2 = make_learner(); load_learner_state(a2, copied)
    for learn in (a2, c):
        learn.image_policy.policy = pol
        _reseed(learn, 1)
        with no_random(1): fit_quiet(learn, 1)
    assert not same(c.model.state_dict(), a2.model.state_dict())

def test_load_learner_state_rejects_another_model():
    _,state = _trained_state(Policy([('_tFlip', 5, 0)]))
    other = Learner(digits_dls(), image_cnn(10, widths=(8, 32)), cbs=ImagePolicy())
    with pytest.raises(ValueError, match='must build the same model and optimiser every time'): load_learner_state(other, state)

def test_corrupted_checkpoints_are_reported_with_their_path(tmp_path):
    learn,state = _trained_state(Policy([('_tFlip', 5, 0)]))
    f = save_checkpoint(state, tmp_path/'trial.pt')
    raw = f.read_bytes()
    weight = learn.model[0][0].weight.detach().numpy().tobytes()
    at = raw.find(weight[:32])
    assert at > 0
    flipped = bytearray(raw); flipped[at + 8] ^= 0x01
    for name,bad in [('truncated', raw[:len(raw)//2]), ('flipped bit in a weight', bytes(flipped)), ('empty', b''),
                     ('not a checkpoint', b'{"policy": []}')]:
        f.write_bytes(bad)
        with pytest.raises(CheckpointError, match=re.escape(str(f))): load_checkpoint(f)
    f.write_bytes(raw)
    assert same(load_checkpoint(f)['model'], state['model'])
    torch.save({'model': 1}, f)
    with pytest.raises(CheckpointError, match='not a fastaug PBA trial checkpoint'): load_checkpoint(f)
    with pytest.raises(CheckpointError, match='no such checkpoint'): load_checkpoint(tmp_path/'nope.pt')

# ---------------------------------------------------------------- the local search
def test_score_metric():
    assert score_metric(make_learner()) == ('accuracy', True)
    assert score_metric(make_learner(metrics=error_rate)) == ('error_rate', False)
    assert score_metric(make_learner(metrics=None)) == ('valid_loss', False)
    assert score_metric(make_learner(), 'valid_loss') == ('valid_loss', False)
    assert score_metric(make_learner(), 'accuracy', False) == ('accuracy', False)
    with pytest.raises(ValueError, match="the Learner reports \\['valid_loss', 'accuracy'\\] on the validation set, not 'f1'"):
        score_metric(make_learner(), 'f1')

@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    "A small search, run once for the module"
    return pba_search(make_learner, OPS3, path=tmp_path_factory.mktemp('search')/'s', **SEARCH)

def records(res): return [json.loads(f.read_text()) for f in sorted((res.path/'generations').glob('generation_*.json'))]

def test_local_search_finishes(finished):
    res = finished
    assert res.trials == [0, 1, 2, 3] and res.engine == 'local' and res.metric == 'accuracy'
    zero = Policy.zero(OPS3)
    for t in res.trials:
        assert len(res.schedules[t]) == 4 and len(res.scores[t]) == 4
        assert res.lineage[t][-1][1] == t and res.lineage[t][0][0] == 0
        assert res.schedules[t].policies[:2] == [zero, zero]  # every trial starts from the zero policy
        assert load_checkpoint(res.checkpoint(t))['epoch'] == 4
    assert res.schedule == res.schedules[res.best]
    assert res.best_score == max(s[-1] for s in res.scores.values())
    assert len(res.exploits) == 1  # one perturbation step, a quarter of four trials
    assert PolicySchedule.load(res.path/'schedule.json') == res.schedule
    assert not list(res.path.rglob('*.tmp'))
    import matplotlib; matplotlib.use('Agg')
    res.plot(); res.schedule.plot()

def test_schedules_are_the_recorded_lineages(finished):
    "Every trial's schedule is, epoch by epoch, the policy its ancestor at that epoch held in that generation"
    res,recs = finished,records(finished)
    for t in res.trials:
        lineage = res.lineage[t]
        for (start,owner),(end,_) in zip(lineage, lineage[1:] + [[4, None]]):
            for e in range(start, end):
                rec = recs[e//2]
                assert res.schedules[t].policies[e] == Policy(rec['policies'][owner])
                if e == rec['stop'] - 1: assert res.scores[t][e] == rec['scores'][owner]
    for e in recs[0]['exploits']:  # a copier trains the next generation with the policy explore made of the donor's
        assert recs[1]['policies'][e['trial']] == e['policy']
        assert res.lineage[e['trial']][-2:] == [[0, e['donor']], [2, e['trial']]]

def test_search_resumes_a_finished_directory(finished):
    again = pba_search(make_learner, OPS3, path=finished.path, **SEARCH)
    assert again.scores == finished.scores and again.schedules == finished.schedules
    with pytest.raises(ValueError, match='holds a search with other settings \\(epochs: 4 there, 6 now\\)'):
        pba_search(make_learner, OPS3, path=finished.path, **{**SEARCH, 'epochs': 6})

class Killed(BaseException): "The process died here"

def kill_at_write(monkeypatch, n:int):
    "Make the search die at its `n`-th write (a checkpoint or a record), leaving a half-written temporary file"
    real,count = checkpoint_module.atomic_write,[0]
    def write(path, fn):
        count[0] += 1
        if count[0] == n:
            Path(str(path) + '.tmp').write_bytes(b'half a file')
            raise Killed(f'died writing {path}')
        return real(path, fn)
    monkeypatch.setattr(checkpoint_module, 'atomic_write', write)

def same_result(a, b):
    return a.scores == b.scores and a.schedules == b.schedules and a.lineage == b.lineage and a.exploits == b.exploits

# the search writes: search.json; generation 0: 4 checkpoints, the record, 1 copy, the record marked applied;
# generation 1: 4 checkpoints, the record, the record marked applied — 14 writes
@pytest.mark.parametrize('n', [1, 4, 6, 7, 8, 12])
def test_search_killed_at_any_write_resumes_exactly(finished, tmp_path, monkeypatch, n):
    path = tmp_path/'s'
    kill_at_write(monkeypatch, n)
    with pytest.raises(Killed): pba_search(make_learner, OPS3, path=path, **SEARCH)
    monkeypatch.undo()
    res = pba_search(make_learner, OPS3, path=path, **SEARCH)
    assert same_result(res, finished)

@pytest.mark.slow
@pytest.mark.parametrize('n', [2, 3, 5, 9, 10, 11, 13, 14])
def test_search_killed_at_every_other_write_resumes_exactly(finished, tmp_path, monkeypatch, n):
    test_search_killed_at_any_write_resumes_exactly(finished, tmp_path, monkeypatch, n)

def test_corrupted_checkpoint_stops_the_search(tmp_path, monkeypatch):
    path = tmp_path/'s'
    kill_at_write(monkeypatch, 9)  # after generation 0 is done
    with pytest.raises(Killed): pba_search(make_learner, OPS3, path=path, **SEARCH)
    monkeypatch.undo()
    f = path/'trials'/'trial_002.pt'
    damaged = f.read_bytes()[:-100]
    f.write_bytes(damaged)
    with pytest.raises(CheckpointError, match=re.escape(f'{f}: corrupted or truncated checkpoint')):
        pba_search(make_learner, OPS3, path=path, **SEARCH)
    assert f.read_bytes() == damaged  # reported, never retrained from scratch
    f.unlink()
    with pytest.raises(CheckpointError, match=re.escape(f'{f}: the checkpoint of trial 2 is missing')):
        pba_search(make_learner, OPS3, path=path, **SEARCH)
    rec = path/'generations'/'generation_000.json'
    rec.write_text(rec.read_text()[:20])
    with pytest.raises(CheckpointError, match=re.escape(f'{rec}: corrupted or truncated generation record')):
        pba_search(make_learner, OPS3, path=path, **SEARCH)

def test_search_needs_a_validation_set(tmp_path):
    x,y,_,_ = digits()
    dls = image_dls(x, y, x[:0], y[:0], VOCAB, bs=64)
    with pytest.raises(ValueError, match="the Learner's validation set is empty"):
        pba_search(lambda: Learner(dls, image_cnn(10, widths=(8, 16)), metrics=accuracy, cbs=ImagePolicy()),
                   OPS3, path=tmp_path/'s', **SEARCH)

def test_search_argument_errors(tmp_path):
    p = tmp_path/'s'
    def fails(match, ops=OPS3, mk=make_learner, **kwargs):
        with pytest.raises(ValueError, match=match): pba_search(mk, ops, path=p, **{**SEARCH, **kwargs})
    fails('`population` must be an integer >= 2', population=1)
    fails(r'`quantile` must be in \(0, 0.5\]', quantile=0.75)
    fails('`resample_p` must be a probability', resample_p=-0.1)
    fails("`engine` must be one of \\['local', 'ray'\\]", engine='dask')
    fails('`fit_method` must be one of', fit_method='fine_tune')
    fails("callbacks applying latent operations, but its policy callbacks apply image operations",
          ops=['_tNoise', '_tJitter'])  # a joint search needs a callback for each kind
    fails("unknown operation '_tRotate'", ops=['_tRotate'])
    fails('names an operation twice', ops=['_tNoise', '_tNoise'])
    fails('non-empty list of operation names', ops=[])
    fails("not 'f1'", metric='f1')
    fails("it has no PolicyCallback", mk=lambda: make_learner(cbs=[]))
    fails("callbacks applying image operations, but its policy callbacks apply latent operations",
          mk=lambda: make_learner(cbs=[LatentPolicy()]))
    fails('carries a PBA callback', mk=lambda: make_learner(cbs=[ImagePolicy(), PBA(schedule(2))]))
    learn = make_learner()
    fails('must build a new Learner and model on each call', mk=lambda: learn)

def test_result_ranks_lower_is_better():
    trials = {t: {**new_trial(t, Policy.zero(OPS3)), 'history': [Policy.zero(OPS3).to_list()], 'scores': [s]}
              for t,s in enumerate([0.3, 0.1, float('nan'), 0.2])}
    assert PBAResult(trials, {}, [], 'valid_loss', False).best == 1
    assert PBAResult(trials, {}, [], 'accuracy', True).best == 0

# ---------------------------------------------------------------- a killed process resumes
SCRIPT = '''
import sys, warnings
warnings.filterwarnings('ignore')
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from test_pba import make_learner, OPS3, SEARCH
from fastaug.search import pba_search
print('ready', flush=True)
pba_search(make_learner, OPS3, path={path!r}, **{{**SEARCH, 'epochs': 6}})
'''

def start_search(tmp_path, path):
    script = tmp_path/'run_search.py'
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), path=str(path)))
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, 'OMP_NUM_THREADS': '1'},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b'ready', proc.stderr.read().decode()[-2000:]  # imports done
    return proc

def applied(rec:Path)->bool:
    try: return rec.exists() and json.loads(rec.read_text()).get('applied', False)
    except json.JSONDecodeError: return False

@pytest.mark.slow
def test_search_killed_after_its_first_generation_resumes(tmp_path):
    path = tmp_path/'s'
    proc = start_search(tmp_path, path)
    rec,deadline = path/'generations'/'generation_000.json',time.time() + 600
    while not applied(rec):
        assert proc.poll() is None, f'the search ended before its first generation: {proc.stderr.read().decode()[-2000:]}'
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (path/'schedule.json').exists()
    first = rec.read_text()
    res = pba_search(make_learner, OPS3, path=path, **{**SEARCH, 'epochs': 6})
    assert rec.read_text() == first  # generation 0 was not redone
    for t in res.trials: assert len(res.schedules[t]) == 6 and len(res.scores[t]) == 6
    assert same_result(res, pba_search(make_learner, OPS3, path=tmp_path/'whole', **{**SEARCH, 'epochs': 6}))

@pytest.mark.slow
def test_search_killed_at_random_moments_resumes(tmp_path):
    path,rng,kills = tmp_path/'s',np.random.default_rng(0),0
    for _ in range(4):
        proc = start_search(tmp_path, path)
        time.sleep(rng.uniform(0, 2))
        if proc.poll() is None: os.kill(proc.pid, signal.SIGKILL); kills += 1
        proc.wait()
    assert kills >= 2
    res = pba_search(make_learner, OPS3, path=path, **{**SEARCH, 'epochs': 6})
    assert same_result(res, pba_search(make_learner, OPS3, path=tmp_path/'whole', **{**SEARCH, 'epochs': 6}))

# ---------------------------------------------------------------- the Ray engine
@pytest.mark.slow
def test_ray_search_finishes_and_replays(tmp_path):
    ray = pytest.importorskip('ray')
    tests = str(Path(__file__).parent)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={'env_vars': {'PYTHONPATH': os.pathsep.join(p for p in (tests, os.environ.get('PYTHONPATH')) if p),
                                       'OMP_NUM_THREADS': '1'}})
    try: res = pba_search(make_learner, OPS3, engine='ray', path=tmp_path/'ray', **SEARCH)
    finally: ray.shutdown()
    assert res.engine == 'ray' and res.trials == [0, 1, 2, 3]
    zero = Policy.zero(OPS3)
    for t in res.trials:
        assert len(res.schedules[t]) == 4 and len(res.scores[t]) == 4
        assert res.lineage[t][-1][1] == t and res.schedules[t].policies[0] == zero
        state = load_checkpoint(res.checkpoint(t))
        assert state['epoch'] == 4 and state['trial'] == t
    for e,t,d in res.exploits: assert t != d and e % 2 == 0
    assert PolicySchedule.load(res.path/'schedule.json') == res.schedule
    learn = make_learner()
    learn.add_cb(PBA(res.schedule))
    fit_quiet(learn, 4)
    assert learn.image_policy.seen == res.schedule.policies
