"TrivialAugment: the rule's draws, the policies it hands each callback, and fastai's workflows"
import pytest, torch
from fastai.learner import load_learner
from fastai.callback.core import Callback
import fastai.callback.schedule  # fit_one_cycle, lr_find, fine_tune
from fastaug.policy import Policy, PROB_LEVELS, get_op
from fastaug.image_ops import ImagePolicy, IMAGE_OPS
from fastaug.series_ops import SeriesPolicy, SERIES_OPS
from fastaug.modals import MODALS, MODALS_OPS
from fastaug.techniques import MixPolicy, ISDAPolicy, MIXING_OPS, ISDA_OPS
from fastaug.trivial import *
from conftest import small_learner, hooks_left

class _Parts(Callback):
    "Per training batch: the draw, and each policy callback's policy"
    order = 50
    def __init__(self, ta, cbs): self.ta,self.cbs,self.rows = ta,cbs,[]
    def before_batch(self):
        if self.training: self.rows.append((self.ta.drawn, [cb.policy for cb in self.cbs]))

def test_each_batch_gives_its_operation_to_the_callback_of_its_kind():
    cbs = [SeriesPolicy(), MODALS(Policy([])), MixPolicy(), ISDAPolicy()]
    ta = TrivialAugment()
    spy = _Parts(ta, cbs)
    learn = small_learner('series', cbs=cbs + [ta, spy])
    with learn.no_logging(): learn.fit(2)
    assert set(ta.space) == set(SERIES_OPS) | set(MODALS_OPS) | set(MIXING_OPS) | set(ISDA_OPS)
    for (op,m),pols in spy.rows:
        for cb,p in zip(cbs, pols):
            want = [(op, PROB_LEVELS-1, m)] if get_op(op).kind == cb.kind else []
            assert [tuple(s) for s in p.settings] == want and p.n_ops_weights == (0, 1, 0)
    assert len({op for (op,_),_ in spy.rows}) > 5
    assert [cb.policy for cb in cbs] == [None, Policy([]), None, None]  # given back after the fit
    assert not hooks_left(learn.model)

def test_the_loader_applies_each_batch_its_own_draw():
    "For 8-bit images the policy runs in the loader, before the batch begins: the draw is made after the last batch"
    seen = []
    ip = ImagePolicy()
    ta = TrivialAugment(['Invert', 'Rotate'])
    class _Check(Callback):
        order = 50
        def before_batch(self):
            if self.training: seen.append((ta.drawn, ip.policy.settings[0].op))
    learn = small_learner('image', cbs=[ip, ta, _Check()])
    with learn.no_logging(): learn.fit(1)
    assert seen and all(d[0] == o for d,o in seen) and {o for _,o in seen} == {'Invert', 'Rotate'}

def test_per_sample_on_images_with_workflows(tmp_path):
    ip = ImagePolicy()
    learn = small_learner('image', cbs=[ip, TrivialAugment(mode='sample')])
    with learn.no_logging():
        learn.lr_find(num_it=4, show_plot=False)
        learn.fine_tune(1, freeze_epochs=1)
    assert ip.policy is None
    learn.export(tmp_path/'l.pkl')
    assert any(isinstance(c, TrivialAugment) for c in load_learner(tmp_path/'l.pkl').cbs)
    assert one_of_each(['Rotate']).ops == ['Rotate'] and len(one_of_each(IMAGE_OPS)) == 150

def test_bad_spaces_are_named():
    with pytest.raises(ValueError, match="unknown operation 'Rotat'"): TrivialAugment(['Rotat'])
    with pytest.raises(ValueError, match='non-empty list of operation names'): TrivialAugment([])
    with pytest.raises(ValueError, match='`mode` must be one of'): TrivialAugment(mode='epoch')
    learn = small_learner('series', cbs=[TrivialAugment(['Rotate'])])
    with pytest.raises(ValueError, match='TrivialAugment sets the policy of the Learner.s callbacks applying image'):
        with learn.no_logging(): learn.fit(1)
