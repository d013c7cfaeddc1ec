"auto_augment end to end on tiny data: its hold-out, its guard, its resume, and the callbacks it returns"
import json
import numpy as np, pytest, torch
from fastai.callback.core import Callback
import fastai.callback.schedule  # fit_one_cycle
from fastaug.auto import *
from fastaug.auto import _Subset
from fastaug.datasets import get_learner
from fastaug.pba import PBA
from fastaug.trivial import TrivialAugment
from conftest import small_dls

class _Fits(Callback):
    "Counts the fits of the Learners it is added to"
    n = 0
    def before_fit(self):
        if not hasattr(self.learn, 'lr_finder'): type(self).n += 1

def maker(modality):
    return lambda dls, cbs: get_learner(modality, dls=dls, cbs=list(cbs) + [_Fits()])

@pytest.mark.parametrize('modality', ['series', 'tabular', 'image', 'text'])
def test_holdout_is_part_of_the_training_set_only(modality):
    dls = small_dls(modality)
    hold = holdout_loaders(dls, 0.25, seed=3)
    n = len(dls.train_ds)
    assert len(hold.train_ds) + len(hold.valid_ds) == n and len(np.intersect1d(hold.keep, hold.held)) == 0
    assert abs(len(hold.valid_ds) - n/4) <= 1
    ds = hold.valid_ds
    src = ds.ds if isinstance(ds, _Subset) else None
    if src is not None: assert src is dls.train_ds  # never the validation set
    else: assert set(ds.items.index) <= set(dls.train_ds.items.index) and not set(ds.items.index) & set(dls.valid_ds.items.index)
    again = holdout_loaders(dls, 0.25, seed=3)
    assert np.array_equal(again.held, hold.held)          # fixed by its seed
    for dl in hold.loaders:
        if hasattr(dl, 'res'): assert len(dl.res) == len(dl.dataset)  # text: sorted by its own items' lengths
        assert len(list(dl)) == len(dl)

@pytest.mark.parametrize('modality', ['series', 'tabular'])
def test_folds_are_disjoint_stratified_and_fold_0_is_the_split(modality):
    from fastaug.datasets import holdout_split
    dls = small_dls(modality)
    folds = [holdout_loaders(dls, 0.25, seed=3, fold=f) for f in range(n_folds(0.25))]
    held = [h.held for h in folds]
    assert n_folds(0.25) == 4 and n_folds(0.2) == 5 and n_folds(1/3) == 3
    assert len(np.unique(np.concatenate(held))) == sum(map(len, held)) == len(dls.train_ds)  # a partition
    y = class_labels(dls.train_ds)
    assert np.array_equal(held[0], holdout_split(y, 0.25, 3)[1])    # fold 0 is the one-hold-out split, unchanged
    for h in folds:
        assert np.array_equal(np.sort(np.concatenate([h.keep, h.held])), np.arange(len(dls.train_ds)))
        for c in np.unique(y): assert abs((y[h.held] == c).sum() - (y == c).sum()/4) <= 2   # stratified
    with pytest.raises(ValueError, match='`fold` must be below 4'): holdout_loaders(dls, 0.25, fold=4)
    with pytest.raises(ValueError, match='`fold` must be an integer'): holdout_loaders(dls, 0.25, fold=-1)

@pytest.mark.parametrize('modality,kinds', [('series', ['series', 'latent', 'mixing', 'isda']),
                                            ('tabular', ['latent', 'mixing', 'isda']),
                                            ('text', ['latent', 'mixing', 'isda'])])
def test_the_joint_space_follows_the_data(modality, kinds):
    ops,make = joint_space(small_dls(modality))
    assert [c.kind for c in make()] == kinds
    assert ('CutMix' in ops) == (modality != 'text')

SEARCHED = ('searched', 'trivial', 'none')   # the guard of the search: the schedule found, the rule, no augmentation

def test_the_default_race_end_to_end(tmp_path):
    dls = small_dls('series')
    _Fits.n = 0
    res = auto_augment(maker('series'), dls, epochs=1, path=tmp_path, progress=False)
    want = [*FIXED, 'trivial', 'none']                 # every fixed technique applies to series
    assert res.candidates == want and _Fits.n == len(want) and res.schedule is None and 'search' not in res.seconds
    assert not (tmp_path/'search').exists()           # no search unless asked
    rec = json.loads((tmp_path/'result.json').read_text())
    assert rec['candidates'] == want and rec['choice'] == res.choice == guard_choice(res.scores, False)
    best = min(res.scores, key=res.scores.get)
    assert res.choice == (best if res.scores[best] < res.scores['none'] else 'none')
    guards = json.loads((tmp_path/'guards.json').read_text())
    for k in want: assert res.scores[k] == guards[f'{k}@fold1']['values']['valid_loss']
    for k in FIXED:                                   # each candidate's callbacks are the technique's own
        assert [type(c) for c in res.callbacks(candidate=k)] == [type(c) for c in FIXED[k]()]
    s = res.summary()
    assert 'raced mixup, cutmix, manifold, modals, isda, modals+isda and trivial against no augmentation' in s
    assert f'chosen: {res.choice}' in s and 'searched' not in s
    with pytest.raises(ValueError, match='did not search'): res.callbacks(candidate='searched')
    with pytest.raises(ValueError, match='did not search'): res.plot_schedule()
    fig = res.plot(); assert len(fig.axes[0].patches) == len(want) - 1
    _Fits.n = 0                                       # a candidate added later: only it trains
    more = auto_augment(maker('series'), dls, epochs=1, path=tmp_path, progress=False, candidates=['mixup', 'searched'],
                        population=2, interval=1)
    assert _Fits.n == 2 + 1 and more.scores['mixup'] == res.scores['mixup'] and more.schedule is not None

def test_end_to_end_resume_and_the_callbacks_it_returns(tmp_path):
    dls = small_dls('series')
    _Fits.n = 0
    res = auto_augment(maker('series'), dls, epochs=2, candidates=SEARCHED, population=2, interval=1, path=tmp_path,
                       lr=1e-2, progress=False)
    assert _Fits.n == 2*2 + 3                              # two trials of two stretches, three guard runs
    rec = json.loads((tmp_path/'result.json').read_text())
    assert rec["choice"] == res.choice == guard_choice(res.scores, False) and set(rec["scores"]) == set(SEARCHED)
    cbs = res.callbacks()
    kinds = {type(c).__name__ for c in cbs}
    want = {'searched': {'PBA'}, 'trivial': {'TrivialAugment'}, 'none': set()}[res.choice]
    assert want <= kinds
    learn = get_learner('series', dls=dls, cbs=cbs)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2)
    _Fits.n = 0
    again = auto_augment(maker('series'), dls, epochs=2, candidates=SEARCHED, population=2, interval=1, path=tmp_path,
                         lr=1e-2, progress=False)
    assert _Fits.n == 0 and again.scores == res.scores and again.choice == res.choice   # resumed: nothing trained
    assert 'chosen:' in res.summary() and 'searched: 2 epochs' in res.summary() and res.cost > 1
    assert res.seconds['search'] > 0 and res.plot_schedule() is not None
    guards = json.loads((tmp_path/'guards.json').read_text())
    assert res.folds == (1,) and res.metric == 'valid_loss' and not res.higher_is_better   # the defaults
    for k in SEARCHED:                    # the guard's score: on a fold of its own, never the one the search ranked on
        assert k not in guards and {'valid_loss', 'accuracy'} <= set(guards[f'{k}@fold1']['values'])
        assert res.scores[k] == guards[f'{k}@fold1']['values']['valid_loss']

@pytest.mark.parametrize('modality', ['tabular', 'image'])
def test_other_modalities_end_to_end(modality, tmp_path):
    dls = small_dls(modality)
    res = auto_augment(maker(modality), dls, epochs=1, path=tmp_path, progress=False)
    assert res.candidates == default_candidates(dls) + ['none'] and res.choice in res.candidates
    assert ('cutmix' in res.candidates) == (modality == 'image')   # CutMix cuts images and series only
    fig = res.plot(); assert fig is not None

def test_trials_longer_than_the_final_run(tmp_path):
    "search_epochs: the trials are that long, and the schedule found is replayed stretched over the call's epochs"
    _Fits.n = 0
    res = auto_augment(maker('series'), small_dls('series'), epochs=1, candidates=['searched'], population=2,
                       interval=1, search_epochs=2, path=tmp_path, progress=False)
    assert _Fits.n == 2*2 + 2 and len(res.schedule) == 2 and res.candidates == ['searched', 'none']
    replay = lambda **kw: [c for c in res.callbacks(candidate='searched', **kw) if isinstance(c, PBA)][0]
    assert replay().n_epochs == 1 and replay(n_epochs=3).n_epochs == 3
    assert 'searched: 2 epochs' in res.summary() and 'replayed over 1' in res.summary()
    with pytest.raises(ValueError, match='`search_epochs` must be an integer'):
        auto_augment(maker('series'), small_dls('series'), epochs=1, search_epochs=0, path=tmp_path)

class _ValidBatches(Callback):
    "Counts the validation batches of the Learners it is added to"
    n = 0
    def after_pred(self):
        if not self.training: type(self).n += 1

def test_guard_runs_validate_in_their_last_epoch_only_with_the_same_scores(tmp_path):
    from fastai.callback.tracker import EarlyStoppingCallback
    dls,cands = small_dls('series'),['modals', 'trivial']  # both draw from torch's generator in every epoch
    def make(tracker):
        extra = [EarlyStoppingCallback(patience=100)] if tracker else []  # never stops: the same training
        return lambda d, cbs: get_learner('series', dls=d, cbs=list(cbs) + extra + [_ValidBatches()])
    runs = {}
    for tracker in (False, True):
        _ValidBatches.n = 0
        runs[tracker] = auto_augment(make(tracker), dls, epochs=3, candidates=cands, lr=1e-2,
                                     path=tmp_path/str(tracker), progress=False),_ValidBatches.n
    hold = holdout_loaders(dls, 0.2, 0, 1)
    per_pass = len(hold.valid)
    assert runs[False][1] == 3*per_pass and runs[True][1] == 3*3*per_pass  # a tracker reads every epoch's values
    assert runs[False][0].scores == runs[True][0].scores                     # bit for bit

def test_the_guard_on_the_search_fold_by_loss(tmp_path):
    "guard_folds=(0,) and guard_metric='valid_loss': the guard of the first release, three runs on the search's hold-out"
    _Fits.n = 0
    res = auto_augment(maker('series'), small_dls('series'), epochs=1, candidates=SEARCHED, population=2, interval=1,
                       path=tmp_path, guard_folds=(0,), guard_metric='valid_loss', progress=False)
    guards = json.loads((tmp_path/'guards.json').read_text())
    assert _Fits.n == 2 + 3 and res.metric == 'valid_loss' and not res.higher_is_better and res.folds == (0,)
    assert res.scores == {k: guards[k]['values']['valid_loss'] for k in SEARCHED}
    assert 'on the hold-out' in res.summary()

def test_the_guard_averages_its_folds(tmp_path):
    _Fits.n = 0
    res = auto_augment(maker('series'), small_dls('series'), epochs=1, candidates=SEARCHED, population=2, interval=1,
                       path=tmp_path, guard_folds=(1, 3), guard_metric='accuracy', progress=False)
    guards = json.loads((tmp_path/'guards.json').read_text())
    assert _Fits.n == 2 + 3*2 and res.metric == 'accuracy' and res.higher_is_better and res.folds == (1, 3)
    for k in SEARCHED:
        runs = [guards[f'{k}@fold{f}'] for f in (1, 3)]
        assert res.scores[k] == pytest.approx(np.mean([r['values']['accuracy'] for r in runs]))
        assert res.seconds[k] == pytest.approx(sum(r['seconds'] for r in runs))
    assert 'hold-out folds 1, 3' in res.summary() and 'averaged' in res.summary()

def test_a_directory_of_another_split_is_refused(tmp_path):
    dls = small_dls('series')
    auto_augment(maker('series'), dls, epochs=1, candidates=['trivial'], path=tmp_path, progress=False)
    for kw in (dict(holdout=0.25), dict(seed=1)):
        with pytest.raises(ValueError, match='holds a search with other settings.*another split'):
            auto_augment(maker('series'), dls, epochs=1, candidates=['trivial'], path=tmp_path, progress=False, **kw)
    smaller = holdout_loaders(dls, 0.5)    # other data: a training set of another size
    with pytest.raises(ValueError, match='n_train'):
        auto_augment(maker('series'), smaller, epochs=1, candidates=['trivial'], path=tmp_path, progress=False)

def test_guard_runs_of_other_settings_are_refused(tmp_path):
    "A rerun resumes the guard runs only if they trained as it would: same epochs, lr, fit method and joint space"
    dls = small_dls('series')
    call = lambda **kw: auto_augment(maker('series'), dls, **{**dict(epochs=1, candidates=['trivial'], path=tmp_path,
                                                                     lr=1e-2, progress=False), **kw})
    res = call()
    for kw,what in [(dict(epochs=2), 'epochs: 1 there, 2 now'), (dict(lr=3e-3), 'lr: 0.01 there, 0.003 now'),
                    (dict(fit_method='fit'), "fit_method: 'fit_one_cycle' there, 'fit' now"),
                    (dict(kinds=['latent']), 'ops: ')]:
        with pytest.raises(ValueError, match=f'holds guard runs with other settings \\({what}.*give the same `epochs`'):
            call(**kw)
    (tmp_path/'guard_settings.json').unlink()        # a directory of a release that did not record them: resumed as is
    _Fits.n = 0
    again = call()
    assert _Fits.n == 0 and again.scores == res.scores and (tmp_path/'guard_settings.json').exists()

def test_the_guard_never_hands_back_a_loss_on_the_holdout():
    for s,t,n in [(0.5, 0.6, 0.7), (0.8, 0.6, 0.7), (0.8, 0.9, 0.7), (0.7, 0.7, 0.7)]:
        scores = dict(searched=s, trivial=t, none=n)
        c = guard_choice(scores, higher_is_better=False)
        assert scores[c] <= n and (c == 'none' or scores[c] < n)
    rng = np.random.default_rng(0)
    for _ in range(200):                             # a race of any size: the best, if it beats none
        ks = [*FIXED, 'trivial', 'none']
        scores = dict(zip(ks, [*rng.choice([0.5, 0.6, 0.7, np.nan], len(ks)-1), rng.choice([0.5, 0.6, 0.7])]))
        c = guard_choice(scores, higher_is_better=False)
        ok = [v for k,v in scores.items() if k != 'none' and not np.isnan(v)]   # a NaN loss never wins
        if ok and min(ok) < scores['none']: assert c == next(k for k in ks if scores[k] == min(ok))   # ties: the first
        else: assert c == 'none'

def test_bad_arguments():
    dls = small_dls('series')
    with pytest.raises(TypeError, match='`learner` must be a function'): auto_augment(get_learner('series', dls=dls), dls, 2)
    with pytest.raises(TypeError, match='`dls` must be fastai DataLoaders'): auto_augment(maker('series'), [1], 2)
    with pytest.raises(ValueError, match='`holdout` must be in'): auto_augment(maker('series'), dls, 2, holdout=1.5)
    with pytest.raises(ValueError, match='`epochs` must be an integer'): auto_augment(maker('series'), dls, 0)
    for c,msg in [(['mixup', 'mixup'], 'must be distinct'), (['none'], 'at least one augmentation'), ([], 'at least one'),
                  (['cutmix'], r"\['cutmix'\] do not apply"), (['mixup', 'randaugment'], '`candidates` must be one of')]:
        with pytest.raises(ValueError, match=msg):
            auto_augment(maker('tabular'), small_dls('tabular'), 1, candidates=c, path='/nonexistent/never')
    for folds in [(), (1, 1), (5,), (-1,), (1.0,)]:
        with pytest.raises(ValueError, match='`guard_folds` must be distinct fold numbers from 0 to 4'):
            auto_augment(maker('series'), dls, 2, guard_folds=folds)
