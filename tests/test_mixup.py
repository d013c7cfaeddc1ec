"MixUp and CutMix on every modality, every fastai workflow, every classification loss and target type"
import math, re
import pytest, torch
import numpy as np
from torch import nn
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck
from fastai.learner import Learner, load_learner
from fastai.data.core import DataLoaders
from fastai.callback.core import Callback, CancelFitException, CancelTrainException, CancelEpochException
from fastai.callback.progress import ProgressCallback
import fastai.callback.schedule, fastai.callback.fp16  # fit_one_cycle, lr_find, fine_tune, to_fp16
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat, BCEWithLogitsLossFlat
from fastai.layers import NoneReduce
from fastai.metrics import accuracy
from fastai.vision.learner import vision_learner
from fastai.vision.models import resnet18
from fastaug.core import *
from fastaug.mixup import *
from conftest import small_dls, small_learner, hooks_left

CALLBACKS = {'mixup': lambda: MixUp(0.4), 'cutmix': lambda: CutMix(1.)}

def fit_quiet(learn, n=1, lr=1e-3, **kwargs):
    with learn.no_logging(): learn.fit(n, lr, **kwargs)

# ---------------------------------------------------------------- every modality
@pytest.mark.parametrize('modality', ['image', 'tabular', 'series', 'text'])
@pytest.mark.parametrize('name', list(CALLBACKS))
def test_trains_on_every_modality(modality, name):
    learn = small_learner(modality, cbs=CALLBACKS[name]())
    lf = learn.loss_func
    fit_quiet(learn, 1)
    losses = torch.stack([torch.as_tensor(l) for l in learn.recorder.losses])
    assert len(losses) and torch.isfinite(losses).all()
    assert learn.loss_func is lf
    assert not hooks_left(learn.model)

def test_text_with_chunked_encoder():
    "With bptt shorter than the snippets, fastai's SentenceEncoder drops all-padding rows from some chunks"
    from fastaug.datasets import rotten_tomatoes
    from fastai.text.all import text_classifier_learner, AWD_LSTM, awd_lstm_clas_config
    dls = small_dls('text', seq_len=8)
    cfg = {**awd_lstm_clas_config, 'emb_sz': 32, 'n_hid': 64, 'n_layers': 1}
    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=8, pretrained=False, config=cfg, cbs=MixUp(0.4))
    learn.remove_cb(ProgressCallback)
    calls = []
    emb = learn.model[0].module.encoder_dp
    h = emb.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    fit_quiet(learn, 1)
    h.remove()
    assert any(n < dls.bs for n in calls)  # the truncated path was exercised
    assert all(math.isfinite(l) for l in learn.recorder.losses)

# ---------------------------------------------------------------- fastai workflows
@pytest.mark.parametrize('name', list(CALLBACKS))
def test_lr_find_then_fit(name):
    learn = small_learner('image', cbs=CALLBACKS[name]())
    lf = learn.loss_func
    with learn.no_logging(): learn.lr_find(num_it=12, show_plot=False)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    fit_quiet(learn, 1)
    assert learn.loss_func is lf

@pytest.mark.parametrize('name', list(CALLBACKS))
@pytest.mark.parametrize('exc', [CancelFitException, CancelTrainException, CancelEpochException])
def test_cancelled_fit_restores_loss(name, exc):
    class Cancel(Callback):
        order = 30
        def after_batch(self):
            if self.training and self.iter == 2: raise exc()
    learn = small_learner('tabular', cbs=[CALLBACKS[name](), Cancel()])
    lf = learn.loss_func
    fit_quiet(learn, 2)
    assert learn.loss_func is lf and not hooks_left(learn.model)

def test_exception_mid_batch_leaves_nothing_active():
    "An exception that is not a fastai cancel skips after_train; the next validation puts everything back"
    class Boom(Callback):
        def after_pred(self):
            if self.training: raise RuntimeError('boom')
    learn = small_learner('tabular', cbs=MixUp(0.4))
    lf = learn.loss_func
    with pytest.raises(RuntimeError): fit_quiet(learn, 1, cbs=Boom())
    learn.get_preds()
    assert learn.loss_func is lf and not hooks_left(learn.model)

@pytest.mark.parametrize('name', list(CALLBACKS))
def test_fine_tune_vision_learner(name):
    dls = small_dls('image')
    learn = vision_learner(dls, resnet18, pretrained=False, n_in=1, cbs=CALLBACKS[name](), metrics=accuracy)
    learn.remove_cb(ProgressCallback)
    lf = learn.loss_func
    with learn.no_logging(): learn.fine_tune(1, 1e-3, freeze_epochs=1)
    assert learn.loss_func is lf and not hooks_left(learn.model)

def test_timm_model():
    timm = pytest.importorskip('timm')
    dls = small_dls('image')
    learn = vision_learner(dls, 'resnet18', pretrained=False, n_in=1, cbs=CutMix(1.))
    learn.remove_cb(ProgressCallback)
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)

@pytest.mark.parametrize('modality', ['image', 'tabular', 'series', 'text'])
def test_get_preds_are_probabilities(modality):
    learn = small_learner(modality, cbs=MixUp(0.4))
    fit_quiet(learn, 1)
    preds,targs = learn.get_preds()
    assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)

@pytest.mark.parametrize('modality', ['image', 'tabular', 'series'])
@pytest.mark.parametrize('name', list(CALLBACKS))
def test_export_then_load(modality, name, tmp_path):
    learn = small_learner(modality, cbs=CALLBACKS[name](), path=tmp_path)
    fit_quiet(learn, 1)
    learn.export('learn.pkl')
    assert learn.loss_func is not None
    new = load_learner(tmp_path/'learn.pkl')
    assert not hooks_left(new.model)
    item = learn.dls.valid_ds.items[0] if modality != 'tabular' else learn.dls.valid_ds.decode_row(learn.dls.valid_ds.items.iloc[0])
    dec,idx,probs = new.predict(item)
    assert math.isclose(float(probs.sum()), 1, rel_tol=1e-5)

@pytest.mark.parametrize('name', list(CALLBACKS))
def test_to_fp16_trains_on_cpu(name):
    learn = small_learner('image', cbs=CALLBACKS[name]()).to_fp16()
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)

class BF16Autocast(Callback):
    "CPU bf16 autocast around the forward pass and the loss"
    order = 10
    def before_batch(self): self.ctx = torch.autocast('cpu', dtype=torch.bfloat16); self.ctx.__enter__()
    def after_loss(self): self.ctx.__exit__(None, None, None)

@pytest.mark.parametrize('modality', ['image', 'tabular'])
@pytest.mark.parametrize('name', list(CALLBACKS))
def test_bf16_autocast(modality, name):
    learn = small_learner(modality, cbs=[CALLBACKS[name](), BF16Autocast()])
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)

# ---------------------------------------------------------------- losses and targets
def synth_dls(x, y, bs=8, **kwargs):
    "fastai `DataLoaders` of tensors `x`, `y` (train and valid the same)"
    ds = list(zip(x, y))
    return DataLoaders.from_dsets(ds, ds, bs=bs, num_workers=0, **kwargs)

class Linear2d(nn.Module):
    "Per-pixel classifier: (bs, c, h, w) -> (bs, n_out, h, w)"
    def __init__(self, c=3, n_out=4): super().__init__(); self.conv = nn.Conv2d(c, n_out, 1)
    def forward(self, x): return self.conv(x)

def _batch_losses(cb_name, loss, x, y, model):
    "Train one epoch and return the recorded losses"
    learn = Learner(synth_dls(x, y), model, loss_func=loss, cbs=CALLBACKS[cb_name]())
    learn.remove_cb(ProgressCallback)
    fit_quiet(learn, 1)
    assert learn.loss_func is loss
    return learn.recorder.losses

n,c = 32,4
X = torch.randn(n, 3, 6, 5)
LOSSES = {
    'CrossEntropyLossFlat': (CrossEntropyLossFlat(), torch.randint(0, c, (n,))),
    'LabelSmoothingCrossEntropyFlat': (LabelSmoothingCrossEntropyFlat(), torch.randint(0, c, (n,))),
    'nn.CrossEntropyLoss': (nn.CrossEntropyLoss(), torch.randint(0, c, (n,))),
    'nn.CrossEntropyLoss soft': (nn.CrossEntropyLoss(), F.softmax(torch.randn(n, c), 1)),
    'BCEWithLogitsLossFlat float': (BCEWithLogitsLossFlat(), torch.randint(0, 2, (n, c)).float()),
    'BCEWithLogitsLossFlat int': (BCEWithLogitsLossFlat(), torch.randint(0, 2, (n, c))),
}

@pytest.mark.parametrize('loss', list(LOSSES))
@pytest.mark.parametrize('name', list(CALLBACKS))
def test_losses_and_targets(loss, name):
    lf,y = LOSSES[loss]
    model = nn.Sequential(nn.Flatten(), nn.Linear(3*6*5, c))
    losses = _batch_losses(name, lf, X, y, model)
    assert all(math.isfinite(l) for l in losses)

def test_mixup_loss_values():
    "The mixed loss equals λ·L(y) + (1-λ)·L(y') per sample for labels, and L on mixed targets otherwise"
    pred,perm,lam = torch.randn(6, c),torch.randperm(6),torch.rand(6)
    y = torch.randint(0, c, (6,))
    ls = LabelSmoothingCrossEntropyFlat()
    ml = MixedLoss(ls); ml.set(lam, perm)
    with NoneReduce(ls) as f: ref = (lam*f(pred, y) + (1-lam)*f(pred, y[perm])).mean()
    assert torch.allclose(ml(pred, y), ref)
    soft = F.softmax(torch.randn(6, c), 1)
    seen = []
    def rec(p, t): seen.append(t); return F.cross_entropy(p, t)
    ml = MixedLoss(rec); ml.set(lam, perm)
    ml(pred, soft)
    assert torch.allclose(seen[0].sum(1), torch.ones(6))
    assert torch.allclose(seen[0], lam[:, None]*soft + (1-lam[:, None])*soft[perm])

def test_per_pixel_loss_broadcasts_lambda():
    pred,y = torch.randn(4, c, 6, 5),torch.randint(0, c, (4, 6, 5))
    perm,lam = torch.tensor([1, 2, 3, 0]),torch.rand(4)
    lf = CrossEntropyLossFlat(axis=1)
    ml = MixedLoss(lf); ml.set(lam, perm)
    l0 = F.cross_entropy(pred, y, reduction='none'); l1 = F.cross_entropy(pred, y[perm], reduction='none')
    assert torch.allclose(ml(pred, y), (lam[:, None, None]*l0 + (1-lam[:, None, None])*l1).mean(), atol=1e-6)

def test_per_token_loss_broadcasts_lambda():
    pred,y = torch.randn(4, 7, c),torch.randint(0, c, (4, 7))
    perm,lam = torch.tensor([1, 2, 3, 0]),torch.rand(4)
    ml = MixedLoss(CrossEntropyLossFlat()); ml.set(lam, perm)
    l0 = F.cross_entropy(pred.transpose(1, 2), y, reduction='none'); l1 = F.cross_entropy(pred.transpose(1, 2), y[perm], reduction='none')
    assert torch.allclose(ml(pred, y), (lam[:, None]*l0 + (1-lam[:, None])*l1).mean(), atol=1e-6)

@pytest.mark.parametrize('name', list(CALLBACKS))
def test_segmentation_trains(name):
    y = torch.randint(0, c, (n, 6, 5))
    losses = _batch_losses(name, CrossEntropyLossFlat(axis=1), X, y, Linear2d())
    assert all(math.isfinite(l) for l in losses)

def test_cutmix_pastes_segmentation_masks():
    x,y = torch.randn(8, 3, 6, 5),torch.randint(0, c, (8, 6, 5))
    cb = CutMix(1.)
    xm,ym,lam,perm = run_before_batch(cb, (x,), (y,))
    assert lam is None  # masks carry the exact labels: no loss mixing
    from_partner = (xm != x).any(1)
    assert torch.equal(ym[from_partner], y[perm][from_partner])
    assert torch.equal(ym[~from_partner], y[~from_partner])

@pytest.mark.parametrize('name', list(CALLBACKS))
def test_batch_size_one(name):
    x,y = torch.randn(9, 3, 6, 5),torch.randint(0, c, (9,))
    learn = Learner(synth_dls(x, y, bs=4, drop_last=False), nn.Sequential(nn.Flatten(), nn.Linear(90, c)),
                    loss_func=CrossEntropyLossFlat(), cbs=CALLBACKS[name]())
    learn.remove_cb(ProgressCallback)
    sizes = []
    class Sizes(Callback):
        def before_batch(self):
            if self.training: sizes.append(len(self.yb[0]))
    learn.add_cb(Sizes())
    fit_quiet(learn, 1)
    assert 1 in sizes and all(math.isfinite(l) for l in learn.recorder.losses)

# ---------------------------------------------------------------- properties
class _Learn:
    "Just enough of a Learner for a callback's batch events"
    def __init__(self, xb, yb, model=None):
        self.xb,self.yb,self.training,self.model,self.loss_func = xb,yb,True,model or nn.Linear(1, 1),CrossEntropyLossFlat()

def run_before_batch(cb, xb, yb, model=None):
    "Run `cb`'s training `before_batch` on (xb, yb): (mixed x, mixed y, λ, partners)"
    learn = _Learn(xb, yb, model)
    cb.learn = learn
    cb('before_train'); cb('before_batch')
    res = learn.xb[0],learn.yb[0],cb.lam,cb.perm
    cb('after_batch'); cb('after_train')
    return res

shapes = st.tuples(st.integers(1, 9), st.integers(1, 3), st.integers(1, 12), st.integers(1, 12))

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, alpha=st.floats(0.05, 5), mode=st.sampled_from(['sample', 'batch']), seed=st.integers(0, 2**16))
def test_mixup_is_a_convex_combination(shape, alpha, mode, seed):
    torch.manual_seed(seed)
    x,y = torch.randn(shape),torch.randint(0, 5, (shape[0],))
    x0 = x.clone()
    xm,_,lam,perm = run_before_batch(MixUp(alpha, mode=mode), (x,), (y,))
    assert torch.equal(x, x0)
    assert ((lam >= 0) & (lam <= 1)).all()
    if mode == 'sample': assert (lam >= 0.5).all()
    else: assert (lam == lam[0]).all()
    l = lam.view(-1, 1, 1, 1)
    assert torch.allclose(xm, l*x + (1-l)*x[perm], atol=1e-5)
    onehot = F.one_hot(y, 5).float()
    assert torch.allclose(mix_rows(onehot, perm, lam).sum(1), torch.ones(len(y)))

@settings(max_examples=60, deadline=None)
@given(shape=shapes, alpha=st.floats(0.05, 5), seed=st.integers(0, 2**16))
def test_cutmix_lambda_is_the_fraction_kept(shape, alpha, seed):
    torch.manual_seed(seed)
    x = torch.randn(shape)
    x0 = x.clone()
    xm,_,lam,perm = run_before_batch(CutMix(alpha), (x,), (torch.zeros(shape[0], dtype=torch.long),))
    assert torch.equal(x, x0)
    own = (xm == x).float().mean((1, 2, 3))
    moved = perm != torch.arange(shape[0])
    assert torch.allclose(own[moved], lam[moved])

@settings(max_examples=40, deadline=None)
@given(bs=st.integers(1, 9), c=st.integers(1, 3), length=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_cutmix_segment_lambda(bs, c, length, seed):
    torch.manual_seed(seed)
    x = torch.randn(bs, c, length)
    xm,_,lam,perm = run_before_batch(CutMix(1.), (x,), (torch.zeros(bs, dtype=torch.long),))
    moved = perm != torch.arange(bs)
    assert torch.allclose((xm == x).float().mean((1, 2))[moved], lam[moved])

@settings(max_examples=40, deadline=None)
@given(bs=st.integers(2, 9), n_cat=st.integers(0, 4), n_cont=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_cutmix_features_swaps_whole_columns(bs, n_cat, n_cont, seed):
    torch.manual_seed(seed)
    rows = torch.arange(bs)[:, None]
    x_cat,x_cont = rows*100 + torch.arange(n_cat),rows*1000. + torch.arange(n_cont) + 0.5  # every value unique
    x0 = (x_cat.clone(), x_cont.clone())
    learn = _Learn((x_cat, x_cont), (torch.zeros(bs, dtype=torch.long),))
    cb = CutMix(1.); cb.learn = learn
    cb('before_train'); cb('before_batch')
    (mc,mn),lam,perm = learn.xb,cb.lam,cb.perm
    cb('after_batch'); cb('after_train')
    assert torch.equal(x_cat, x0[0]) and torch.equal(x_cont, x0[1])
    assert mc.dtype == torch.long
    both,mixed = torch.cat([x_cat.float(), x_cont], 1),torch.cat([mc.float(), mn], 1)
    moved = perm != torch.arange(bs)
    if not moved.any(): return
    taken = (mixed != both).any(0)  # the columns that came from the partner
    assert torch.equal(mixed[moved][:, taken], both[perm][moved][:, taken])
    assert torch.equal(mixed[:, ~taken], both[:, ~taken])
    assert torch.allclose(lam, torch.full((bs,), 1 - int(taken.sum())/both.shape[1]))

@settings(max_examples=30, deadline=None)
@given(bs=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_mixup_integer_inputs_are_never_interpolated(bs, seed):
    torch.manual_seed(seed)
    from fastai.tabular.model import TabularModel
    tm = TabularModel([(10, 3)], n_cont=2, out_sz=3, layers=[4])
    x_cat,x_cont = torch.randint(0, 10, (bs, 1)),torch.randn(bs, 2)
    learn = _Learn((x_cat, x_cont), (torch.zeros(bs, dtype=torch.long),), model=tm)
    cb = MixUp(0.4); cb.learn = learn
    cb('before_train'); cb('before_batch')
    assert learn.xb[0] is x_cat
    e = tm.embeds[0].weight[x_cat[:, 0]]
    out = tm.embeds[0](x_cat[:, 0])
    assert torch.allclose(out, mix_rows(e, cb.perm, cb.lam), atol=1e-6)
    cb('after_pred'); cb('after_batch'); cb('after_train')
    assert not hooks_left(tm)

# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize('make,msg', [
    (lambda: MixUp(0), '`alpha` must be a number > 0'),
    (lambda: MixUp(-1.), '`alpha` must be a number > 0'),
    (lambda: MixUp(float('nan')), '`alpha` must be a number > 0'),
    (lambda: MixUp(0.4, mode='pair'), "`mode` must be one of ['sample', 'batch']"),
    (lambda: CutMix(0.), '`alpha` must be a number > 0'),
    (lambda: CutMix(1., p=1.5), '`p` must be a probability in [0, 1]'),
    (lambda: CutMix(1., p=-0.1), '`p` must be a probability in [0, 1]'),
    (lambda: CutMix(1., kind='circle'), '`kind` must be one of'),
])
def test_bad_arguments(make, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): make()

def test_cutmix_on_a_batch_it_cannot_cut():
    x,y = torch.randn(8, 2, 3, 4, 5),torch.randint(0, c, (8,))
    learn = Learner(synth_dls(x, y), nn.Sequential(nn.Flatten(), nn.Linear(120, c)), loss_func=CrossEntropyLossFlat(), cbs=CutMix())
    learn.remove_cb(ProgressCallback)
    lf = learn.loss_func
    with pytest.raises(ValueError, match='CutMix cannot cut a batch of inputs with shapes'): fit_quiet(learn, 1)
    learn.get_preds()
    assert learn.loss_func is lf

def test_integer_inputs_without_embedding():
    x,y = torch.randint(0, 5, (8, 4)),torch.randint(0, c, (8,))
    class Net(nn.Module):
        def __init__(self): super().__init__(); self.lin = nn.Linear(4, c)
        def forward(self, x): return self.lin(x.float())
    learn = Learner(synth_dls(x, y), Net(), loss_func=CrossEntropyLossFlat(), cbs=MixUp())
    learn.remove_cb(ProgressCallback)
    with pytest.raises(ValueError, match='integer inputs but the model has no embedding module'): fit_quiet(learn, 1)

# ---------------------------------------------------------------- CutMix with a region per sample
class _Record(Callback):
    "Keep each training batch's inputs as the model sees them, and the CutMix weights"
    order = 50
    def __init__(self, cb): self.cb,self.seen = cb,[]
    def before_batch(self):
        if self.training: self.seen.append((self.xb, self.cb.lam, self.cb.perm))

@pytest.mark.parametrize('modality', ['image', 'series', 'tabular', 'text'])
def test_cutmix_per_sample_trains_on_every_modality(modality):
    cb = CutMix(1., mode='sample')
    learn = small_learner(modality, cbs=cb)
    lf = learn.loss_func
    fit_quiet(learn, 1)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    assert math.isfinite(float(learn.recorder.losses[-1]))

def test_cutmix_per_sample_pastes_each_region_from_its_partner():
    "Every image of a real training batch is its own outside one box and its partner's inside it, with λ its own share"
    cb = CutMix(1., mode='sample')
    rec = _Record(cb)
    learn = small_learner('image', cbs=[cb, rec])
    orig = []
    class Orig(Callback):
        order = -10
        def before_batch(self):
            if self.training: orig.append(self.xb[0].clone())
    learn.add_cb(Orig())
    fit_quiet(learn, 1)
    shares = []
    for x0,((x,),lam,perm) in zip(orig, rec.seen):
        for i in range(len(x0)):
            if perm[i] == i: continue
            own,theirs = x[i] == x0[i],x[i] == x0[perm[i]]
            cut = ~own[0]
            rows,cols = cut.any(1),cut.any(0)
            assert (cut <= (rows[:, None] & cols[None])).all()          # the pasted pixels lie in one box
            assert theirs[:, rows][:, :, cols].all()                    # ... all of which is the partner's
            shares.append(float(lam[i]))
            assert abs(float(lam[i]) - float(own.float().mean())) <= float((x0[i] == x0[perm[i]]).float().mean()) + 1e-6
    assert len(set(round(s, 4) for s in shares)) > 10                   # a share per sample
