"The series operations' geometry and magnitude ranges, and SeriesPolicy through fastai's workflows and PBA"
import math
import pytest, torch
import torch.nn.functional as F
from fastai.learner import load_learner
import fastai.callback.schedule, fastai.callback.fp16  # fit_one_cycle, lr_find, fine_tune, to_fp16
from fastai.callback.core import Callback
from fastaug.core import plain
from fastaug.policy import Policy, PolicySchedule, get_op, register_op
from fastaug.series_ops import *
from fastaug.pba import PBA
from fastaug.search import pba_search
from fastaug.mixup import CutMixUp, PLAIN
from conftest import small_dls, small_learner

L = 64

def ramp_batch(n=16, c=2, length=L):
    "Series whose value is their time step: what an operation reads where shows directly"
    return torch.arange(length, dtype=torch.float32).expand(n, c, length).clone()

def positive_batch(n=16, c=3, length=L):
    return torch.rand(n, c, length) + 1

# ---------------------------------------------------------------- magnitude 0 and dtypes
@pytest.mark.parametrize('name', SERIES_OPS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16])
def test_magnitude_zero_is_the_identity(name, dtype):
    x = torch.randn(8, 2, L).to(dtype)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for m in (0., torch.zeros(8, dtype=torch.float64)):
        out = get_op(name).fn(x, m, y=y, source=x, idx=torch.arange(8))
        assert out.dtype == dtype and torch.equal(out, x)

@pytest.mark.parametrize('name', SERIES_OPS)
def test_operations_do_not_touch_their_input(name):
    x = torch.randn(8, 2, L)
    x0 = x.clone()
    get_op(name).fn(x, 0.9, y=torch.zeros(8, dtype=torch.long), source=x, idx=torch.arange(8))
    assert torch.equal(x, x0)

@pytest.mark.parametrize('name', SERIES_OPS)
def test_registered_as_series_operations_with_magnitudes_per_sample(name):
    op = get_op(name)
    assert op.kind == 'series' and op.per_sample and op.magnitude

# ---------------------------------------------------------------- geometry, per operation
@pytest.mark.parametrize('m', [0.3, 0.9])
def test_magnitude_scale(m):
    x = positive_batch()
    r = magnitude_scale(x, m)/x
    assert torch.allclose(r, r[:, :1, :1].expand_as(r), rtol=1e-5)           # one factor per series
    assert (r.log2().abs() <= m + 1e-5).all() and r.log2().abs().max() > m/2
    rc = magnitude_scale_channel(x, m)/x
    assert torch.allclose(rc, rc[..., :1].expand_as(rc), rtol=1e-5)         # one factor per channel
    assert (rc.log2().abs() <= m + 1e-5).all() and not torch.allclose(rc[:, 0], rc[:, 1])

def test_magnitude_warp_is_a_smooth_curve_scaled_by_magnitude():
    x = positive_batch()
    torch.manual_seed(1); r1 = (magnitude_warp(x, 0.4)/x).log2()
    torch.manual_seed(1); r2 = (magnitude_warp(x, 0.8)/x).log2()
    assert torch.allclose(r2, 2*r1, atol=1e-4)                               # the exponent is linear in m
    assert torch.allclose(r1, r1[:, :1].expand_as(r1), atol=1e-5)            # the same curve for every channel
    assert r1.diff(dim=-1).abs().max() < 0.1 < r1.abs().max()                # smooth, not constant

@pytest.mark.parametrize('fn', [time_warp, window_warp])
def test_warps_keep_time_in_order_and_the_ends_in_place(fn):
    t = ramp_batch()
    for m in (0.2, 0.5, 1.):
        pos = fn(t, m)
        assert (pos.diff(dim=-1) >= -1e-4).all()                              # monotone
        assert torch.allclose(pos[..., 0], torch.zeros(())) and torch.allclose(pos[..., -1], torch.tensor(L - 1.))
        assert (pos - t).abs().max() > 0.5
    torch.manual_seed(2); a = fn(t, 0.3) - t
    torch.manual_seed(2); b = fn(t, 0.9) - t
    assert torch.allclose(b, 3*a, atol=1e-3)                                 # the displacement is linear in m

def test_window_warp_plays_one_window_at_twice_or_half_the_speed():
    t = ramp_batch(64, 1)
    speed = window_warp(t, 1.).diff(dim=-1)[:, 0]
    faster = 0
    for s in speed:
        assert torch.allclose(s.max()/s.min(), torch.tensor(2.), rtol=1e-4)
        fast = (s - s.max()).abs() < 1e-4
        window = fast if fast.sum() < L/2 else ~fast
        idx = window.nonzero()[:, 0]
        assert len(idx) in (L//4 - 1, L//4) and (idx.diff() == 1).all()     # one window of a quarter of the series
        faster += bool(fast.sum() < L/2)
    assert 16 < faster < 48                                                  # faster or slower, at random

@pytest.mark.parametrize('m', [0.2, 0.6, 1.])
def test_window_slice_reads_a_stretched_window(m):
    t = ramp_batch()
    out = window_slice(t, m)
    slope = out.diff(dim=-1)
    assert torch.allclose(slope, torch.full_like(slope, 1 - m/2), atol=1e-4)
    assert (out[..., 0] >= 0).all() and (out[..., -1] <= L - 1 + 1e-4).all()
    assert len(set(out[:, 0, 0].tolist())) > 1                               # a window per series

def test_jitter_noise_is_scaled_to_each_channel():
    x = torch.randn(64, 2, 4000)*torch.tensor([1., 10.]).view(1, 2, 1)
    d = jitter(x, 0.8) - x
    std = d.std(-1)/x.std(-1)
    assert torch.allclose(std, torch.full_like(std, 0.2), rtol=0.06)

def test_time_mask_sets_a_share_of_steps_to_the_channel_mean():
    x = torch.randn(64, 3, 2000)
    out = time_mask(x, 0.6)
    changed = out != x
    assert (changed == changed[:, :1]).all()                                 # the same steps in every channel
    assert abs(changed[:, 0].float().mean() - 0.3) < 0.01
    mean = x.mean(-1, keepdim=True).expand_as(x)
    assert torch.equal(out[changed], mean[changed])

@pytest.mark.parametrize('m', [0.4, 1.])
def test_time_shift_rolls_by_at_most_a_quarter(m):
    t = ramp_batch(256)
    out = time_shift(t, m)
    shift = (t - out) % L                                                    # out[i] = x[i - s]
    assert (shift == shift[..., :1]).all()
    s = torch.where(shift[:, 0, 0] > L/2, shift[:, 0, 0] - L, shift[:, 0, 0])
    assert s.abs().max() <= round(m*L/4) and s.abs().max() >= round(m*L/4) - 2

def test_add_trend_is_a_line_scaled_to_the_channel():
    x = torch.randn(64, 2, L)*torch.tensor([1., 5.]).view(1, 2, 1)
    d = add_trend(x, 0.7) - x
    assert torch.allclose(d.diff(dim=-1).diff(dim=-1), torch.zeros(()), atol=1e-4)     # a straight line
    assert torch.allclose(d.mean(-1), torch.zeros(()), atol=1e-4)                       # through 0 at the middle
    rise = (d[..., -1] - d[..., 0])/2/x.std(-1, unbiased=False)
    assert (rise.abs() <= 0.7 + 1e-4).all() and rise.abs().max() > 0.5

def test_smooth_at_magnitude_one_is_the_moving_average():
    x = torch.randn(4, 2, 20)
    ref = torch.stack([x[..., [min(max(j, 0), 19) for j in range(i-2, i+3)]].mean(-1) for i in range(20)], -1)
    assert torch.allclose(smooth_series(x, 1.), ref, atol=1e-6)
    assert torch.allclose(smooth_series(x, 0.5), (x + ref)/2, atol=1e-6)

@pytest.mark.parametrize('m', [0.3, 0.9])
def test_segment_mix_pastes_a_segment_of_another_series_of_its_class(m):
    n = 40
    y = torch.arange(n) % 5
    y[-1] = 7                                                                  # the only series of its class
    x = (torch.arange(n)[:, None, None]*1000 + torch.arange(L)).float().expand(n, 2, L).clone()
    out = segment_mix(x, m, y)
    length = round(m*L/2)
    for i in range(n):
        changed = (out[i, 0] != x[i, 0]).nonzero()[:, 0]
        if y[i] == 7: assert len(changed) == 0; continue
        assert len(changed) == length and (changed.diff() == 1).all()         # one segment of m/2 of the length
        src = (out[i, :, changed]//1000).long()
        assert (src == src[0, 0]).all() and src[0, 0] != i and y[src[0, 0]] == y[i]
        assert torch.equal(out[i, :, changed] % 1000, x[i, :, changed] % 1000)  # at the same time steps

def test_segment_mix_needs_class_labels():
    x = torch.randn(4, 1, L)
    with pytest.raises(ValueError, match='needs an integer class label'): segment_mix(x, 0.5, torch.randn(4))
    with pytest.raises(ValueError, match='needs an integer class label'): segment_mix(x, 0.5, None)

def test_magnitudes_per_sample_act_per_sample():
    x = torch.randn(6, 1, L)
    m = torch.tensor([0., .9, 0., .5, 0., .2], dtype=torch.float64)
    out = time_warp(x, m)
    assert torch.equal(out[::2], x[::2]) and not torch.equal(out[1::2], x[1::2])
    with pytest.raises(ValueError, match='one number or one per sample'): time_warp(x, torch.zeros(4))

@pytest.mark.parametrize('bad', [torch.zeros(4, 40), torch.zeros(4, 1, 40, dtype=torch.long), torch.zeros(4, 1, 1)])
def test_bad_inputs_are_named(bad):
    with pytest.raises(ValueError, match='batch of series'): jitter(bad, 0.5)

# ---------------------------------------------------------------- the callback
class _Seen(Callback):
    order = 50
    def __init__(self): self.train,self.valid = [],[]
    def before_batch(self): (self.train if self.training else self.valid).append(self.xb[0].clone())

@register_op('_SeriesAdd', 'series', per_sample=True)
def _series_add(x, magnitude, **kwargs): return x + 100

def test_series_policy_augments_training_batches_only():
    seen = _Seen()
    learn = small_learner('series', cbs=[SeriesPolicy(Policy([('_SeriesAdd', 10, 0)], n_ops_weights=(0, 1, 0))), seen])
    with learn.no_logging(): learn.fit(1)
    assert all(x.mean() > 50 for x in seen.train) and all(x.mean() < 50 for x in seen.valid)
    preds,_ = learn.get_preds()
    assert torch.isfinite(preds).all()

def test_series_policy_with_every_operation_trains_and_exports(tmp_path):
    learn = small_learner('series', cbs=SeriesPolicy(Policy([(o, 8, 9) for o in SERIES_OPS])))
    with learn.no_logging(): learn.lr_find(num_it=5, show_plot=False); learn.fine_tune(1, freeze_epochs=1)
    assert all(math.isfinite(float(v)) for v in learn.recorder.losses)
    learn.to_fp16()
    with learn.no_logging(): learn.fit(1)
    learn.to_fp32()
    learn.export(tmp_path/'l.pkl')
    assert isinstance(load_learner(tmp_path/'l.pkl').cbs.filter(lambda c: isinstance(c, SeriesPolicy))[0], SeriesPolicy)

def test_series_policy_refuses_what_it_cannot_augment():
    with pytest.raises(ValueError, match='SeriesPolicy needs a floating-point batch of series'):
        learn = small_learner('image', cbs=SeriesPolicy(Policy([('Jitter', 10, 5)])))
        with learn.no_logging(): learn.fit(1)

def test_segment_mix_in_a_policy_without_class_labels_says_so():
    dls = small_dls('series')
    learn = small_learner('series', cbs=SeriesPolicy(Policy([('SegmentMix', 10, 5)], n_ops_weights=(0, 1, 0))))
    class _Soft(Callback):
        order = 5
        def before_batch(self): self.learn.yb = (torch.randn(len(self.y), 10),)
    learn.add_cb(_Soft())
    with pytest.raises(ValueError, match='needs an integer class label'):
        with learn.no_logging(): learn.fit(1)

def test_pba_searches_and_replays_series_operations(tmp_path):
    ops = ['TimeWarp', 'Jitter', 'SegmentMix']
    make = lambda: small_learner('series', cbs=SeriesPolicy(Policy.zero(ops)))
    res = pba_search(make, ops, population=2, epochs=2, interval=1, path=tmp_path/'s', progress=False)
    assert res.schedule.kind == 'series' and len(res.schedule) == 2
    seen = []
    sp = SeriesPolicy(Policy.zero(ops))
    class _Pol(Callback):
        order = 1
        def before_epoch(self): seen.append(sp.policy)
    learn = small_learner('series', cbs=[sp, PBA(PolicySchedule.load(tmp_path/'s'/'schedule.json')), _Pol()])
    with learn.no_logging(): learn.fit(2)
    assert seen[0] == res.schedule.policies[0] and seen[-1] == res.schedule.policies[1]

def test_cutmixup_leaves_the_plain_share_to_the_series_policy():
    "With `augment_mixed=False`, the policy augments exactly the samples CutMixUp leaves plain"
    cb = CutMixUp(mode='sample', p=0.5, augment_mixed=False)
    rows = []
    class _Mid(Callback):
        order = 15  # after the policy (10), before the mixing (20)
        def before_batch(self):
            if self.training: rows.append((self.xb[0].mean((1, 2)) > 50, cb.choose(len(self.xb[0]), self.xb[0].device)))
    learn = small_learner('series', cbs=[SeriesPolicy(Policy([('_SeriesAdd', 10, 0)], n_ops_weights=(0, 1, 0))), cb,
                                         _Mid()])
    with learn.no_logging(): learn.fit(1)
    aug = torch.cat([a for a,_ in rows]); plain_ = torch.cat([c == PLAIN for _,c in rows])
    assert torch.equal(aug, plain_) and 0.4 < plain_.float().mean() < 0.6
