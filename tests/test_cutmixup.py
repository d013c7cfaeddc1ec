"CutMixUp: the switch's shares, per-sample mixing against a loop reference, every modality and fastai workflow"
import math
import numpy as np, pytest, torch
from fastai.learner import load_learner
from fastai.callback.core import Callback
import fastai.callback.schedule, fastai.callback.fp16  # fit_one_cycle, lr_find, fine_tune, to_fp16
from fastaug.core import *
from fastaug.mixup import *
from fastaug.policy import Policy
from fastaug.image_ops import ImagePolicy
from conftest import small_dls, small_learner, hooks_left

def fit_quiet(learn, n=1, **kwargs):
    with learn.no_logging(): learn.fit(n, 1e-3, **kwargs)

class _Batch:
    "Just what `CutMixUp.mix_batch` reads of a Learner: the batch, in training"
    def __init__(self, xb, yb): self.xb,self.yb,self.training = xb,yb,True

def _bind(cb, xb, yb=()):
    cb.learn = _Batch(xb, yb)
    cb._choices,cb.lam,cb.scale = None,None,1.
    return cb

# ---------------------------------------------------------------- the switch's shares
@pytest.mark.parametrize('mode', ['batch', 'sample'])
@pytest.mark.parametrize('p,switch', [(1., 0.5), (0.6, 0.25), (0.8, 1.), (1., 0.)])
def test_shares_of_plain_mixed_and_cut(mode, p, switch):
    cb = CutMixUp(switch_prob=switch, p=p, mode=mode)
    n,bs = (4000, 4) if mode == 'batch' else (20, 800)
    cs = []
    for _ in range(n):
        cb._choices = None
        c = cb.choose(bs)
        if mode == 'batch': assert (c == c[0]).all()
        cs.append(c)
    c = torch.cat(cs).float()
    draws = n if mode == 'batch' else n*bs
    for code,want in ((PLAIN, 1 - p), (MIXED, p*(1 - switch)), (CUT, p*switch)):
        got,sd = (c == code).float().mean().item(),math.sqrt(max(want*(1 - want), 1e-12)/draws)
        assert abs(got - want) <= 4*sd + 1e-9, (code, got, want)

def test_choices_are_drawn_once_per_batch():
    cb = CutMixUp(mode='sample', p=0.5)
    a = cb.choose(64)
    assert cb.choose(64) is a and cb.choose(32) is not a                   # a batch of another size draws again
    seen = []
    class _Seen(Callback):
        order = 30
        def before_batch(self):
            if self.training: seen.append(cb._choices)
    fit_quiet(small_learner('series', cbs=[cb, _Seen()]), 1)
    assert cb._choices is None and len({id(c) for c in seen}) == len(seen) > 1  # cleared after every batch

# ---------------------------------------------------------------- per sample, against a loop
@pytest.mark.parametrize('shape', [(32, 3, 12, 10), (32, 2, 40)])
@pytest.mark.parametrize('correct_lam', [True, False])
def test_per_sample_mixing_matches_a_loop(shape, correct_lam):
    x = torch.randn(*shape)
    cb = _bind(CutMixUp(0.4, 1., switch_prob=0.5, p=0.7, mode='sample', correct_lam=correct_lam), (x,))
    torch.manual_seed(3); np.random.seed(3)
    cb.mix_batch()
    out,lam,perm = cb.learn.xb[0],cb.lam,cb.perm
    # the same draws, in the callback's order, then one sample at a time
    torch.manual_seed(3); np.random.seed(3)
    bs = shape[0]
    mixed = torch.rand(bs) < 0.7
    cut = torch.rand(bs) < 0.5
    perm2 = torch.randperm(bs)
    lam_mix = sample_lam(0.4, bs, fold=True)
    lam_cut = sample_lam(1., bs)
    masks = rand_box_masks(*shape[-2:], lam_cut) if len(shape) == 4 else rand_segment_masks(shape[-1], lam_cut)
    assert torch.equal(perm, perm2)
    for i in range(bs):
        j = int(perm[i])
        if not mixed[i]: want,wl = x[i],1.
        elif not cut[i]: want,wl = lam_mix[i]*x[i] + (1 - lam_mix[i])*x[j],float(lam_mix[i])
        else:
            m = masks[i]
            want = torch.where(m, x[j], x[i])
            wl = 1 - m.float().mean().item() if correct_lam else float(lam_cut[i])
        assert torch.allclose(out[i], want, atol=1e-6), i
        assert math.isclose(float(lam[i]), wl, abs_tol=1e-6), i

def test_batch_mode_is_one_choice_for_the_batch():
    x = torch.randn(16, 3, 8, 8)
    kinds = set()
    for s in range(40):
        torch.manual_seed(s); np.random.seed(s)
        cb = _bind(CutMixUp(mode='batch', p=0.8), (x,))
        cb.mix_batch()
        c = int(cb._choices[0])
        out = cb.learn.xb[0]
        if c == PLAIN: assert cb.lam is None and out is x
        elif c == MIXED: assert (cb.lam == cb.lam[0]).all() and torch.allclose(out, mix_rows(x, cb.perm, cb.lam))
        else:
            same = (out == x).all(1)
            assert (cb.lam == cb.lam[0]).all() and not same.all()
        kinds.add(c)
    assert kinds == {PLAIN, MIXED, CUT}

def test_segmentation_masks_are_pasted_with_their_images_per_sample():
    x,y = torch.randn(16, 3, 8, 8),torch.randint(0, 4, (16, 8, 8))
    torch.manual_seed(0)
    cb = _bind(CutMixUp(mode='sample', switch_prob=1.), (x,), (y,))
    cb.mix_batch()
    out,yo = cb.learn.xb[0],cb.learn.yb[0]
    pasted = (out != x).any(1)
    assert torch.equal(yo[pasted], y[cb.perm][pasted]) and (cb.lam == 1).all()

# ---------------------------------------------------------------- through fastai
@pytest.mark.parametrize('modality', ['image', 'series', 'tabular', 'text'])
@pytest.mark.parametrize('mode', ['batch', 'sample'])
def test_trains_on_every_modality(modality, mode):
    if modality == 'text': cb = CutMixUp(switch_prob=0., mode=mode)   # CutMix cuts no token ids: MixUp only
    else: cb = CutMixUp(mode=mode, p=0.8)
    learn = small_learner(modality, cbs=cb)
    lf = learn.loss_func
    fit_quiet(learn, 1)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    assert all(math.isfinite(float(v)) for v in learn.recorder.losses)

def test_lr_find_fine_tune_fp16_and_export(tmp_path):
    learn = small_learner('image', cbs=CutMixUp(mode='sample', p=0.8))
    lf = learn.loss_func
    with learn.no_logging():
        learn.lr_find(num_it=5, show_plot=False)
        learn.fine_tune(1, freeze_epochs=1)
        learn.to_fp16(); learn.fit(1); learn.to_fp32()
    assert learn.loss_func is lf
    learn.export(tmp_path/'l.pkl')
    l2 = load_learner(tmp_path/'l.pkl')
    cb = next(c for c in l2.cbs if isinstance(c, CutMixUp))
    assert cb._choices is None and cb.mode == 'sample'

def test_the_plain_share_gets_the_image_policy():
    "With `augment_mixed=False`, an ImagePolicy (in the loader, on 8-bit images) augments exactly the plain images"
    cb = CutMixUp(mode='sample', p=0.5, augment_mixed=False)
    pol = ImagePolicy(Policy([('Invert', 10, 0)], n_ops_weights=(0, 1, 0)))  # every image it may touch, it inverts
    plans,choices = [],[]
    def input_plan(bs, device=None):
        plans.append(ImagePolicy.input_plan(pol, bs, device))
        return plans[-1]
    pol.input_plan = input_plan
    class _Choices(Callback):
        order = 30
        def before_batch(self):
            if self.training: choices.append(cb._choices.clone())
    learn = small_learner('image', cbs=[pol, cb, _Choices()])
    fit_quiet(learn, 1)
    assert len(plans) == len(choices) > 0
    for plan,c in zip(plans, choices): assert torch.equal(plan[0] >= 0, c == PLAIN)
    share = torch.cat(choices).eq(PLAIN).float().mean()
    assert 0.35 < share < 0.65
    cb.augment_mixed = True
    plans.clear()
    fit_quiet(learn, 1)
    assert all((p[0] >= 0).all() for p in plans)

def test_bad_arguments():
    with pytest.raises(ValueError, match='`switch_prob` must be a probability'): CutMixUp(switch_prob=1.5)
    with pytest.raises(ValueError, match='`mixup_alpha` must be a number > 0'): CutMixUp(mixup_alpha=0)
    with pytest.raises(ValueError, match='`alpha` must be a number > 0'): CutMixUp(cutmix_alpha=-1)
    with pytest.raises(ValueError, match='`mode` must be one of'): CutMixUp(mode='elem')
    with pytest.raises(ValueError, match='`p` must be a probability'): CutMixUp(p=2)
