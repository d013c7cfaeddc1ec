"Augmentation off for the last epochs or share of training, and ramps of α / magnitude, for every fastaug callback"
import pytest, torch
from fastai.callback.core import Callback
import fastai.callback.schedule  # fit_one_cycle, fine_tune, lr_find
from fastaug.core import check_span, Scheduled
from fastaug.policy import Policy, register_op
from fastaug.mixup import MixUp, CutMix, CutMixUp
from fastaug.manifold import ManifoldMixup, OutputMixup
from fastaug.modals import MODALS, modals_policy
from fastaug.isda import ISDA
from fastaug.image_ops import ImagePolicy
from fastaug.series_ops import SeriesPolicy, magnitudes
from conftest import small_learner

CALLS = []
@register_op('_SchedImage', 'image', per_sample=True)
def _sched_image(x, magnitude, **kwargs):
    CALLS.append(torch.as_tensor(magnitude, dtype=torch.float64).flatten().clone())
    return x
@register_op('_SchedSeries', 'series', per_sample=True)
def _sched_series(x, magnitude, **kwargs):
    CALLS.append(torch.as_tensor(magnitude, dtype=torch.float64).flatten().clone())
    return x

ALWAYS = dict(n_ops_weights=(0, 1, 0))  # every sample draws the one operation, which fires with probability 1

def _policy_acted(cb):
    n = len(CALLS)
    CALLS.clear()
    return n > 0

# name: (make the callback with schedule keywords, modality, did it augment this batch? (seen at before_batch))
CASES = {
    'MixUp':         (lambda **kw: MixUp(0.4, **kw), 'series', lambda cb: cb.lam is not None),
    'CutMix':        (lambda **kw: CutMix(1., **kw), 'series', lambda cb: cb.lam is not None),
    'CutMixUp':      (lambda **kw: CutMixUp(mode='sample', **kw), 'series', lambda cb: cb.lam is not None),
    'ManifoldMixup': (lambda **kw: ManifoldMixup(0.4, **kw), 'series', lambda cb: cb.lam is not None),
    'OutputMixup':   (lambda **kw: OutputMixup(0.4, **kw), 'series', lambda cb: cb.lam is not None),
    'MODALS':        (lambda **kw: MODALS(**kw), 'series', lambda cb: cb._hook is not None),
    'ISDA':          (lambda **kw: ISDA(0.5, **kw), 'series', lambda cb: cb.lam > 0),
    'ImagePolicy':   (lambda **kw: ImagePolicy(Policy([('_SchedImage', 10, 5)], **ALWAYS), **kw), 'image', _policy_acted),
    'SeriesPolicy':  (lambda **kw: SeriesPolicy(Policy([('_SchedSeries', 10, 5)], **ALWAYS), **kw), 'series',
                      _policy_acted),
}

class _Acted(Callback):
    "Per training batch: (global epoch, whether the callback augmented it, its strength)"
    order = 99
    def __init__(self, cb, acted): self.cb,self.acted,self.rows,self.fits = cb,acted,[],0
    def before_fit(self): self.fits += 1
    def before_batch(self):
        if self.training: self.rows.append((self.cb.epochs_done, self.acted(self.cb), self.cb.strength))
    def by_epoch(self)->dict:
        res = {}
        for e,a,_ in self.rows: res.setdefault(e, []).append(a)
        return {e: (all(v), any(v)) for e,v in res.items()}

def _run(name, train, **kw):
    make,modality,acted = CASES[name]
    cb = make(**kw)
    spy = _Acted(cb, acted)
    learn = small_learner(modality, cbs=[cb, spy])
    CALLS.clear()
    with learn.no_logging(): train(learn)
    return cb,spy.by_epoch()

@pytest.mark.parametrize('name', list(CASES))
def test_off_for_the_last_epoch_of_fine_tune(name):
    "fine_tune is two fits; with `n_epochs` their three epochs are one run, and only its last is plain"
    cb,seen = _run(name, lambda l: l.fine_tune(2, freeze_epochs=1), off_last=1, n_epochs=3)
    assert sorted(seen) == [0, 1, 2] and cb.epochs_done == 3
    first = (False, False) if name == 'ISDA' else (True, True)  # ISDA's λ ramps from 0 at the first epoch
    assert seen[0] == first and seen[1] == (True, True) and seen[2] == (False, False)

@pytest.mark.parametrize('name', ['MixUp', 'MODALS', 'SeriesPolicy'])
def test_off_for_a_share_of_one_fit(name):
    _,seen = _run(name, lambda l: l.fit_one_cycle(4), off_last=0.25)
    assert [seen[e][0] for e in range(4)] == [True, True, True, False] and not seen[3][1]
    _,seen = _run(name, lambda l: l.fit_one_cycle(4), off_last=0)
    assert all(seen[e][0] for e in range(4))

def test_without_n_epochs_each_fit_counts_to_its_own_end():
    "Without `n_epochs` the training ends with the current fit: the frozen epoch of fine_tune is plain too"
    _,seen = _run('MixUp', lambda l: l.fine_tune(2, freeze_epochs=1), off_last=1)
    assert seen[0] == (False, False) and seen[1] == (True, True) and seen[2] == (False, False)

@pytest.mark.parametrize('ramp', [2, 0.5])
def test_mixing_alpha_ramps_linearly(ramp):
    cb = MixUp(0.4, ramp=ramp, n_epochs=4)
    seen = []
    class _Scale(Callback):
        order = 99
        def before_batch(self):
            if self.training: seen.append((self.epoch, self.iter, self.n_iter, cb.scale))
    learn = small_learner('series', cbs=[cb, _Scale()])
    with learn.no_logging(): learn.fit(4)
    for e,i,n,s in seen: assert s == pytest.approx(min((e + i/n)/2, 1.))
    assert seen[0][3] == 0 and seen[-1][3] == 1

def test_policy_magnitudes_ramp_and_lr_find_sees_full_strength():
    cb = SeriesPolicy(Policy([('_SchedSeries', 10, 6)], **ALWAYS), ramp=1, n_epochs=2)
    learn = small_learner('series', cbs=cb)
    CALLS.clear()
    with learn.no_logging(): learn.lr_find(num_it=4, show_plot=False)
    assert cb.epochs_done == 0 and all(torch.allclose(m, torch.tensor(0.6, dtype=torch.float64)) for m in CALLS)
    CALLS.clear()
    with learn.no_logging(): learn.fit(2)
    n = len(learn.dls.train)
    want = [0.6*min(i/n, 1.) for i in range(1, n)] + [0.6]*n  # the first batch, at strength 0, is skipped
    got = [float(m[0]) for m in CALLS]
    assert got == pytest.approx(want) and all((m == m[0]).all() for m in CALLS)

def test_an_image_policy_in_the_loader_ramps_from_its_first_batch():
    "For 8-bit images the policy runs in the loader, before the Learner numbers the batch: the ramp counts it anyway"
    cb = ImagePolicy(Policy([('_SchedImage', 10, 8)], **ALWAYS), ramp=2, n_epochs=2)
    learn = small_learner('image', cbs=cb)
    CALLS.clear()
    with learn.no_logging(): learn.fit(2)
    n = len(learn.dls.train)
    want = [0.8*min(i/(2*n), 1.) for i in range(1, 2*n)]
    assert [float(m[0]) for m in CALLS] == pytest.approx(want)

def test_isda_ramp_replaces_its_own():
    cb = ISDA(0.5, ramp=1, n_epochs=2)
    lams = []
    class _Lam(Callback):
        order = 99
        def before_batch(self):
            if self.training: lams.append((self.epoch, self.iter, self.n_iter, cb.lam))
    learn = small_learner('series', cbs=[cb, _Lam()])
    with learn.no_logging(): learn.fit(2)
    for e,i,n,lam in lams: assert lam == pytest.approx(0.5*min(e + i/n, 1.))

def test_modals_off_adds_no_loss_terms_and_leaves_its_statistics():
    cb = MODALS(modals_policy(5, 5), off_last=1, n_epochs=2)
    extras = []
    class _Extra(Callback):
        order = 99
        def after_loss(self):
            if self.training: extras.append((self.epoch, cb._loss.extra is not None))
    learn = small_learner('series', cbs=[cb, _Extra()])
    with learn.no_logging(): learn.fit(1)
    mem = {k: getattr(cb.memory, k).clone() for k in cb.memory._tensors}
    disc = [p.detach().clone() for p in cb.disc.parameters()]
    with learn.no_logging(): learn.fit(1)  # the second, last epoch of the run: MODALS is off
    assert all(x for e,x in extras[:len(extras)//2]) and not any(x for e,x in extras[len(extras)//2:])
    assert all(torch.equal(getattr(cb.memory, k), v) for k,v in mem.items())
    assert all(torch.equal(p, q) for p,q in zip(cb.disc.parameters(), disc))

@pytest.mark.parametrize('bad', [-1, 1.0, 1.5, 0., True, '2', [1]])
def test_bad_spans_are_named(bad):
    with pytest.raises(ValueError, match='`off_last` must be None, a number of epochs'): MixUp(off_last=bad)
    with pytest.raises(ValueError, match='`ramp` must be None, a number of epochs'): SeriesPolicy(ramp=bad)

def test_every_augmenting_callback_takes_a_schedule():
    for name,(make,_,_) in CASES.items():
        cb = make(off_last=2, ramp=0.1, n_epochs=10)
        assert isinstance(cb, Scheduled) and (cb.off_last, cb.ramp, cb.n_epochs) == (2, 0.1, 10), name
    assert check_span('x', None) is None and check_span('x', 3) == 3 and check_span('x', 0.5) == 0.5
