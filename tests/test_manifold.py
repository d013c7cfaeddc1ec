"ManifoldMixup and OutputMixup: the blocks chosen per model family, the mixing itself, every modality and workflow, clean-up"
import math, pickle, re
import numpy as np
import pytest, torch
from torch import nn
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from fastai.learner import Learner, load_learner
from fastai.data.core import DataLoaders
from fastai.callback.core import Callback, CancelFitException, CancelTrainException, CancelEpochException, CancelBatchException
from fastai.callback.progress import ProgressCallback
from fastai.callback.training import ShortEpochCallback
import fastai.callback.schedule, fastai.callback.fp16  # fit_one_cycle, lr_find, fine_tune, to_fp16
from fastai.losses import CrossEntropyLossFlat, BCEWithLogitsLossFlat
from fastai.metrics import accuracy
from fastai.vision.learner import vision_learner
from fastai.vision.models.xresnet import xresnet18
from fastai.tabular.model import TabularModel
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models.resnet import BasicBlock
from fastaug.core import *
from fastaug.datasets import image_cnn, series_cnn
from fastaug.manifold import *
from conftest import small_dls, small_learner, hooks_left

timm = pytest.importorskip('timm')

def fit_quiet(learn, n=1, lr=1e-3, **kwargs):
    with learn.no_logging(): learn.fit(n, lr, **kwargs)

def names(model, **kwargs): return module_names(model, manifold_modules(model, **kwargs))

def text_classifier(vocab_sz=500, n_out=2):
    from fastai.text.models.core import get_text_classifier
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config
    return get_text_classifier(AWD_LSTM, vocab_sz, n_out, config={**awd_lstm_clas_config, 'emb_sz': 32, 'n_hid': 64, 'n_layers': 2})

# ---------------------------------------------------------------- which blocks
FAMILIES = {
    'torchvision resnet18': (lambda: tv_resnet18(num_classes=10), ['layer1', 'layer2', 'layer3', 'layer4']),
    'fastai xresnet18': (lambda: xresnet18(n_out=10), ['4', '5', '6', '7']),
    'timm resnet18': (lambda: timm.create_model('resnet18', pretrained=False, num_classes=10),
                      ['layer1', 'layer2', 'layer3', 'layer4']),
    'timm efficientnet_b0': (lambda: timm.create_model('efficientnet_b0', pretrained=False, num_classes=10),
                             ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.4', 'blocks.6']),
    'TabularModel': (lambda: TabularModel([(8, 5), (9, 5)], n_cont=7, out_sz=5, layers=[200, 100]), ['layers.0', 'layers.1']),
    'AWD-LSTM classifier': (text_classifier, ['0']),
    'series_cnn': (series_cnn, ['0', '1', '2']),
    'image_cnn': (image_cnn, ['0', '1', '2']),
}

@pytest.mark.parametrize('family', list(FAMILIES))
def test_blocks_of_each_family(family):
    make,expected = FAMILIES[family]
    model = make()
    assert names(model, depth=1.) == expected
    half = expected[:math.ceil(len(expected)/2)]
    assert names(model) == expected and names(model, depth=0.5) == half
    head = find_head(model)
    for m in manifold_modules(model):
        assert not any(s is head for s in m.modules())
        assert not isinstance(m, (nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.ModuleList, nn.LSTM))

def test_blocks_are_whole_blocks():
    "Nothing chosen lies inside a residual block (torchvision, fastai) or an EfficientNet block (timm)"
    from fastai.layers import ResBlock
    from timm.models._efficientnet_blocks import InvertedResidual, DepthwiseSeparableConv
    for model,types in ((tv_resnet18(), (BasicBlock,)), (xresnet18(), (ResBlock,)),
                        (timm.create_model('efficientnet_b0', pretrained=False), (InvertedResidual, DepthwiseSeparableConv))):
        inner = {id(s) for b in model.modules() if isinstance(b, types) for s in b.modules() if s is not b}
        assert all(id(m) not in inner for m in manifold_modules(model, depth=1.))

def test_blocks_through_fastai_wrappers():
    from fastai.vision.learner import create_vision_model, create_timm_model
    assert names(create_vision_model(tv_resnet18, 10, pretrained=False), depth=1.) == ['0.4', '0.5', '0.6', '0.7']
    assert names(create_vision_model(xresnet18, 10, pretrained=False), depth=1.) == ['0.4', '0.5', '0.6', '0.7']
    m = create_timm_model('resnet18', 10, pretrained=False)[0]
    assert names(m, depth=1.) == ['0.model.layer1', '0.model.layer2', '0.model.layer3', '0.model.layer4']
    class Wrap(nn.Module):  # as DistributedDataParallel wraps a model
        def __init__(self, module): super().__init__(); self.module = module
        def forward(self, *x): return self.module(*x)
    assert names(Wrap(TabularModel([(8, 5)], n_cont=2, out_sz=3, layers=[20, 10]))) == ['module.layers.0', 'module.layers.1']

def test_flat_sequential_and_unknown_models():
    flat = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(), nn.Conv2d(4, 8, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    assert names(flat, depth=1.) == ['0', '4']
    class TwoPaths(nn.Module):
        def __init__(self): super().__init__(); self.a,self.b = nn.Linear(3, 4),nn.Linear(3, 4)
        def forward(self, x): return self.a(x) + self.b(x)
    with pytest.raises(ValueError, match='pass `module_list=` the modules to mix at'): manifold_modules(TwoPaths())
    with pytest.raises(ValueError, match=re.escape('`depth` must be a number in (0, 1]')): manifold_modules(flat, depth=1.5)
    with pytest.raises(ValueError, match='not modules of the model'): module_names(flat, [nn.Linear(1, 1)])

def test_modules_exposed_on_the_learner():
    learn = small_learner('tabular', cbs=ManifoldMixup(0.4))
    cb = learn.manifold_mixup
    assert cb.modules == [learn.model.layers[0]] and cb.names == ['layers.0']
    assert ManifoldMixup().modules is None  # not attached to a Learner yet
    learn = small_learner('image', cbs=ManifoldMixup(module_list='2'))
    assert learn.manifold_mixup.modules == [learn.model[2]]

# ---------------------------------------------------------------- every modality
CALLBACKS = {'manifold': lambda: ManifoldMixup(0.4), 'manifold all blocks': lambda: ManifoldMixup(1., depth=1.),
             'output': lambda: OutputMixup(0.4)}

@pytest.mark.parametrize('modality', ['image', 'tabular', 'series'])
@pytest.mark.parametrize('name', list(CALLBACKS))
def test_trains_on_every_modality(modality, name):
    learn = small_learner(modality, cbs=CALLBACKS[name]())
    lf = learn.loss_func
    fit_quiet(learn, 1)
    losses = torch.stack([torch.as_tensor(l) for l in learn.recorder.losses])
    assert len(losses) and torch.isfinite(losses).all()
    assert learn.loss_func is lf and not hooks_left(learn.model)
    preds,_ = learn.get_preds()
    assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)

class ForceLayers(Callback):
    "Record which layer the ManifoldMixup callback drew in each training batch"
    order = 25
    def __init__(self): self.drawn = []
    def before_batch(self):
        if self.training: self.drawn.append(self.learn.manifold_mixup.mixed_layer)

@pytest.mark.parametrize('name', ['manifold', 'output'])
def test_trains_on_text(name):
    cb = CALLBACKS[name]()
    learn = small_learner('text', cbs=[cb, ShortEpochCallback(0.3, short_valid=False)] + ([ForceLayers()] if name == 'manifold' else []))
    lf = learn.loss_func
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    if name == 'manifold':
        assert learn.manifold_mixup.modules == [learn.model[0]]
        assert {id(l) for l in learn.force_layers.drawn} == {id(None), id(learn.model[0])}  # input and encoder both drawn
    preds,_ = learn.get_preds()
    assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)

# ---------------------------------------------------------------- the mixing itself
class Record(Callback):
    "Record the raw and the mixed output of `module` in the first training batch, with hooks around the callback's own"
    order = 25  # after ManifoldMixup's before_batch, so the second hook runs after its hook
    def __init__(self, module): self.module,self.raw,self.mixed,self.hs = module,[],[],[]
    def before_batch(self):
        if not self.training: return
        first = lambda o: o[0] if isinstance(o, (tuple, list)) else o
        self.hs = [self.module.register_forward_hook(lambda m, i, o: self.raw.append(first(o).detach().clone()), prepend=True),
                   self.module.register_forward_hook(lambda m, i, o: self.mixed.append(o))]
    def after_pred(self):
        for h in self.hs: h.remove()
        self.hs = []
    def after_batch(self):
        if self.training: raise CancelFitException()

def check_mixed_at(learn, module):
    "Run one training batch mixing at `module` only; check its output is λ·h + (1-λ)·h[perm]"
    rec = Record(module)
    fit_quiet(learn, 1, cbs=rec)
    cb = learn.manifold_mixup
    assert cb.mixed_layer is module and rec.raw and rec.mixed
    h,out = rec.raw[0],rec.mixed[0]
    mixed = out[0] if isinstance(out, tuple) else out
    lam = cb.lam.view(-1, *[1]*(h.ndim-1))
    assert torch.allclose(mixed.detach(), lam*h + (1-lam)*h[cb.perm], atol=1e-5)
    assert not torch.equal(cb.perm, torch.arange(len(cb.perm))) and (cb.lam < 1).any()
    return out

@pytest.mark.parametrize('modality,name', [('image', '1'), ('tabular', 'layers.0'), ('series', '0')])
def test_hidden_state_is_mixed(modality, name):
    learn = small_learner(modality, cbs=ManifoldMixup(0.4, module_list=[name], use_input_mixup=False))
    check_mixed_at(learn, learn.model.get_submodule(name))
    assert not hooks_left(learn.model)

def test_tuple_output_is_mixed_on_its_first_tensor():
    "fastai's SentenceEncoder returns (hidden states, padding mask): the states are mixed, the mask is untouched"
    from fastai.text.all import text_classifier_learner, AWD_LSTM, awd_lstm_clas_config
    cfg = {**awd_lstm_clas_config, 'emb_sz': 32, 'n_hid': 64, 'n_layers': 1}
    learn = text_classifier_learner(small_dls('text'), AWD_LSTM, pretrained=False, config=cfg,
                                    cbs=ManifoldMixup(0.4, use_input_mixup=False))
    learn.remove_cb(ProgressCallback)
    masks = []
    h = learn.model[0].register_forward_hook(lambda m, i, o: masks.append(i[0] == m.pad_idx), prepend=True)
    out = check_mixed_at(learn, learn.model[0])
    h.remove()
    assert isinstance(out, tuple) and torch.equal(out[1], masks[0])
    assert not hooks_left(learn.model)

class Shared(nn.Module):
    "A block applied twice in one forward pass"
    def __init__(self, c=3):
        super().__init__()
        self.block,self.head = nn.Sequential(nn.Linear(4, 4), nn.Tanh()),nn.Linear(4, c)
    def forward(self, x): return self.head(self.block(self.block(x)))

class TupleBlock(nn.Module):
    "A block returning (features, auxiliary output)"
    def __init__(self): super().__init__(); self.lin = nn.Linear(4, 4)
    def forward(self, x): h = self.lin(x); return h, h.sum(1)

class TupleNet(nn.Module):
    def __init__(self, c=3): super().__init__(); self.block,self.head = TupleBlock(),nn.Linear(4, c)
    def forward(self, x):
        h,aux = self.block(x)
        return self.head(h) + 0*aux[:, None]

class _Learn:
    "Just enough of a Learner for a callback's batch events"
    def __init__(self, xb, yb, model):
        self.xb,self.yb,self.training,self.model,self.loss_func = xb,yb,True,model,CrossEntropyLossFlat()

def run_batch(cb, model, x, y):
    "One training batch through `cb`'s events and `model`: (model output, λ, partners)"
    learn = _Learn((x,), (y,), model)
    cb.learn = learn
    cb('before_fit'); cb('before_train'); cb('before_batch')
    out = model(*learn.xb)
    cb('after_pred'); cb('after_batch'); cb('after_train'); cb('after_fit')
    return out,cb.lam,cb.perm

def test_module_called_twice_is_mixed_once():
    torch.manual_seed(0)
    model,x,y = Shared(),torch.randn(8, 4),torch.randint(0, 3, (8,))
    calls = []
    h = model.block.register_forward_hook(lambda m, i, o: calls.append((i[0], o)))
    out,lam,perm = run_batch(ManifoldMixup(1., module_list=[model.block], use_input_mixup=False), model, x, y)
    h.remove()
    assert not hooks_left(model)
    (x1,o1),(x2,o2) = calls
    l = lam[:, None]
    # the hook registered before the callback's sees the raw outputs; the second call's input is the mixed first output
    assert torch.allclose(x2, l*o1 + (1-l)*o1[perm], atol=1e-6)
    assert torch.allclose(out, model.head(model.block(x2)), atol=1e-6)

def test_synthetic_tuple_output():
    torch.manual_seed(0)
    model,x,y = TupleNet(),torch.randn(8, 4),torch.randint(0, 3, (8,))
    seen = []
    h = model.head.register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    out,lam,perm = run_batch(ManifoldMixup(1., module_list=['block'], use_input_mixup=False), model, x, y)
    h.remove()
    assert not hooks_left(model)
    raw = model.block.lin(x)
    l = lam[:, None]
    assert torch.allclose(seen[0], l*raw + (1-l)*raw[perm], atol=1e-6)

@settings(max_examples=30, deadline=None)
@given(bs=st.integers(1, 9), alpha=st.floats(0.05, 5), mode=st.sampled_from(['sample', 'batch']), seed=st.integers(0, 2**16))
def test_hidden_mix_is_a_convex_combination(bs, alpha, mode, seed):
    torch.manual_seed(seed); np.random.seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    x,y = torch.randn(bs, 5),torch.randint(0, 3, (bs,))
    seen = []
    h = model[2].register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    cb = ManifoldMixup(alpha, module_list=[model[1]], use_input_mixup=False, mode=mode)
    out,lam,perm = run_batch(cb, model, x, y)
    h.remove()
    assert not hooks_left(model)
    raw = model[1](model[0](x))
    assert ((lam >= 0) & (lam <= 1)).all()
    if mode == 'sample': assert (lam >= 0.5).all()
    else: assert (lam == lam[0]).all()
    l = lam[:, None]
    assert torch.allclose(seen[0], l*raw + (1-l)*raw[perm], atol=1e-5)
    assert sorted(perm.tolist()) == list(range(bs))

def test_layers_are_drawn_uniformly():
    np.random.seed(0); torch.manual_seed(0)
    model = image_cnn()
    cb = ManifoldMixup(0.4, depth=1.)
    x,y = torch.randn(4, 1, 28, 28),torch.randint(0, 10, (4,))
    counts = {}
    for _ in range(400):
        run_batch(cb, model, x, y)
        k = 'input' if cb.mixed_layer is None else module_names(model, [cb.mixed_layer])[0]
        counts[k] = counts.get(k, 0) + 1
    assert set(counts) == {'input', '0', '1', '2'}
    assert all(60 < v < 140 for v in counts.values()), counts

def test_input_layer_mixes_like_mixup():
    np.random.seed(0); torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    cb = ManifoldMixup(0.4, module_list=[])
    x,y = torch.randn(8, 5),torch.randint(0, 3, (8,))
    learn = _Learn((x,), (y,), model)
    cb.learn = learn
    cb('before_fit'); cb('before_train'); cb('before_batch')
    assert cb.mixed_layer is None
    assert torch.allclose(learn.xb[0], mix_rows(x, cb.perm, cb.lam))
    cb('after_batch'); cb('after_train')

def test_integer_inputs_mix_their_embeddings():
    np.random.seed(0); torch.manual_seed(0)
    tm = TabularModel([(10, 3)], n_cont=2, out_sz=3, layers=[4])
    x_cat,x_cont,y = torch.randint(0, 10, (6, 1)),torch.randn(6, 2),torch.randint(0, 3, (6,))
    learn = _Learn((x_cat, x_cont), (y,), tm)
    cb = ManifoldMixup(0.4, module_list=[]); cb.learn = learn
    cb('before_fit'); cb('before_train'); cb('before_batch')
    assert learn.xb[0] is x_cat
    assert torch.allclose(tm.embeds[0](x_cat[:, 0]), mix_rows(tm.embeds[0].weight[x_cat[:, 0]], cb.perm, cb.lam), atol=1e-6)
    tm(*learn.xb)  # the forward pass ends: every hook of the batch is gone
    assert not hooks_left(tm)
    cb('after_pred'); cb('after_batch'); cb('after_train')

# ---------------------------------------------------------------- output mixup
def test_output_mixup_mixes_the_logits():
    np.random.seed(0); torch.manual_seed(0)
    model,x,y = nn.Sequential(nn.Linear(5, 3)),torch.randn(8, 5),torch.randint(0, 3, (8,))
    cb = OutputMixup(0.4)
    learn = _Learn((x,), (y,), model)
    cb.learn = learn
    cb('before_fit'); cb('before_train'); cb('before_batch')
    pred = model(x)
    loss = learn.loss_func(pred, y)
    lam,perm = cb.lam,cb.perm
    mixed = lam[:, None]*pred + (1-lam[:, None])*pred[perm]
    ref = (lam*F.cross_entropy(mixed, y, reduction='none') + (1-lam)*F.cross_entropy(mixed, y[perm], reduction='none')).mean()
    assert torch.allclose(loss, ref, atol=1e-6)
    cb('after_batch'); cb('after_train')
    assert isinstance(learn.loss_func, CrossEntropyLossFlat)

def test_output_mixup_with_soft_targets():
    np.random.seed(0); torch.manual_seed(0)
    pred,soft = torch.randn(6, 4),F.softmax(torch.randn(6, 4), 1)
    lam,perm = torch.rand(6),torch.randperm(6)
    seen = []
    def rec(p, t): seen.append((p, t)); return F.cross_entropy(p, t)
    ol = OutputMixedLoss(rec); ol.set(lam, perm)
    ol(pred, soft)
    p,t = seen[0]
    assert torch.allclose(p, mix_rows(pred, perm, lam)) and torch.allclose(t, mix_rows(soft, perm, lam))

# ---------------------------------------------------------------- losses and targets
@pytest.mark.parametrize('cb', [lambda m: ManifoldMixup(0.4, depth=1.), lambda m: OutputMixup(0.4)])
def test_multi_label_targets(cb):
    x,y = torch.randn(32, 6),torch.randint(0, 2, (32, 4)).float()
    ds = list(zip(x, y))
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    learn = Learner(DataLoaders.from_dsets(ds, ds, bs=8, num_workers=0), model, loss_func=BCEWithLogitsLossFlat(), cbs=cb(model))
    learn.remove_cb(ProgressCallback)
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses) and not hooks_left(model)

# ---------------------------------------------------------------- fastai workflows and clean-up
@pytest.mark.parametrize('name', ['manifold', 'output'])
def test_lr_find_then_fit(name):
    learn = small_learner('image', cbs=CALLBACKS[name]())
    lf = learn.loss_func
    with learn.no_logging(): learn.lr_find(num_it=12, show_plot=False)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    fit_quiet(learn, 1)
    assert learn.loss_func is lf and not hooks_left(learn.model)

@pytest.mark.parametrize('exc', [CancelFitException, CancelTrainException, CancelEpochException, CancelBatchException])
def test_cancelled_fit_leaves_nothing(exc):
    class Cancel(Callback):
        order = 30
        def after_pred(self):
            if self.training and self.iter == 2: raise exc()
    learn = small_learner('tabular', cbs=[ManifoldMixup(0.4, module_list=['layers.0'], use_input_mixup=False), Cancel()])
    lf = learn.loss_func
    fit_quiet(learn, 2)
    assert learn.loss_func is lf and not hooks_left(learn.model)

def test_batch_cancelled_before_the_forward_pass():
    "A batch cancelled after ManifoldMixup drew a layer never runs its forward pass; the next batches are unaffected"
    class CancelLayerBatches(Callback):
        order = 30
        def __init__(self): self.cancelled = self.input_batches = 0
        def before_batch(self):
            if not self.training: return
            if self.learn.manifold_mixup.mixed_layer is None: self.input_batches += 1; return
            self.cancelled += 1
            raise CancelBatchException()
    cancel = CancelLayerBatches()
    learn = small_learner('tabular', cbs=[ManifoldMixup(0.4), cancel])
    fit_quiet(learn, 1)
    assert cancel.cancelled and cancel.input_batches and not hooks_left(learn.model)

def test_exception_after_the_forward_pass_leaves_no_hook():
    "An exception that is not a fastai cancel skips the clean-up events; the hooks went when the forward pass ended"
    class Boom(Callback):
        def after_pred(self):  # order 0: before ManifoldMixup's own after_pred
            if self.training: raise RuntimeError('boom')
    learn = small_learner('tabular', cbs=ManifoldMixup(0.4))
    lf = learn.loss_func
    with pytest.raises(RuntimeError, match='boom'): fit_quiet(learn, 1, cbs=Boom())
    assert not hooks_left(learn.model)
    learn.get_preds()
    assert learn.loss_func is lf and not hooks_left(learn.model)

def test_exception_inside_the_forward_pass():
    "The mixing hooks go as the exception leaves the model; only the clean-up hook on the model itself waits for the next event"
    class Bad(nn.Module):
        def __init__(self): super().__init__(); self.on = False
        def forward(self, x):
            if self.on: raise RuntimeError('bad forward')
            return x
    learn = small_learner('image', cbs=ManifoldMixup(0.4, module_list=['0'], use_input_mixup=False))
    bad = Bad()
    learn.model.insert(2, bad)
    lf = learn.loss_func
    bad.on = True
    with pytest.raises(RuntimeError, match='bad forward'): fit_quiet(learn, 1)
    assert [m for m in hooks_left(learn.model) if m is not learn.model] == []
    bad.on = False
    learn.get_preds()
    assert learn.loss_func is lf and not hooks_left(learn.model)

def test_fine_tune_vision_learner():
    dls = small_dls('image')
    learn = vision_learner(dls, tv_resnet18, pretrained=False, n_in=1, cbs=ManifoldMixup(0.4), metrics=accuracy)
    learn.remove_cb(ProgressCallback)
    assert learn.manifold_mixup.names == ['0.4', '0.5']
    lf = learn.loss_func
    with learn.no_logging(): learn.fine_tune(1, 1e-3, freeze_epochs=1)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    assert len(learn.recorder.values) == 1 and all(math.isfinite(l) for l in learn.recorder.losses)

@pytest.mark.slow
def test_timm_vision_learner():
    learn = vision_learner(small_dls('image'), 'efficientnet_b0', pretrained=False, n_in=1, cbs=ManifoldMixup(0.4, depth=1.))
    learn.remove_cb(ProgressCallback)
    assert learn.manifold_mixup.names == ['0.model.blocks.0', '0.model.blocks.1', '0.model.blocks.2', '0.model.blocks.4',
                                          '0.model.blocks.6']
    fit_quiet(learn, 1, cbs=ShortEpochCallback(0.3, short_valid=False))
    assert all(math.isfinite(l) for l in learn.recorder.losses) and not hooks_left(learn.model)

@pytest.mark.parametrize('modality', ['image', 'tabular', 'series'])
@pytest.mark.parametrize('name', ['manifold', 'output'])
def test_export_then_load(modality, name, tmp_path):
    learn = small_learner(modality, cbs=CALLBACKS[name](), path=tmp_path)
    fit_quiet(learn, 1)
    learn.export('learn.pkl')
    new = load_learner(tmp_path/'learn.pkl')
    assert not hooks_left(new.model)
    cb = getattr(new, 'manifold_mixup', None) or new.output_mixup
    assert cb.lam is None and cb._hooks == []
    if name == 'manifold': assert cb._mix_modules is None and cb.modules == cb.resolve(new.model)
    item = learn.dls.valid_ds.items[0] if modality != 'tabular' else learn.dls.valid_ds.decode_row(learn.dls.valid_ds.items.iloc[0])
    _,_,probs = new.predict(item)
    assert math.isclose(float(probs.sum()), 1, rel_tol=1e-5)

def test_export_keeps_a_module_list_of_modules(tmp_path):
    "Modules given in `module_list` are pickled as the model's own modules, so they still resolve after loading"
    learn = small_learner('image', path=tmp_path)
    learn.add_cb(ManifoldMixup(0.4, module_list=[learn.model[1]]))
    fit_quiet(learn, 1)
    learn.export('learn.pkl')
    new = load_learner(tmp_path/'learn.pkl')
    assert new.manifold_mixup.resolve(new.model) == [new.model[1]]

def test_pickled_callback_holds_no_state():
    learn = small_learner('series', cbs=ManifoldMixup(0.4))
    fit_quiet(learn, 1)
    cb = pickle.loads(pickle.dumps(learn.manifold_mixup))
    assert cb._mix_modules is None and cb.mixed_layer is None and cb._guard is None and cb._hooks == []

def test_to_fp16_trains_on_cpu():
    learn = small_learner('image', cbs=ManifoldMixup(0.4, depth=1.)).to_fp16()
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)

class BF16Autocast(Callback):
    "CPU bf16 autocast around the forward pass and the loss"
    order = 10
    def before_batch(self): self.ctx = torch.autocast('cpu', dtype=torch.bfloat16); self.ctx.__enter__()
    def after_loss(self): self.ctx.__exit__(None, None, None)

@pytest.mark.parametrize('modality,name', [('image', '0'), ('tabular', 'layers.0'), ('series', '1')])
def test_bf16_autocast_keeps_the_activation_dtype(modality, name):
    learn = small_learner(modality, cbs=[ManifoldMixup(0.4, module_list=[name], use_input_mixup=False), BF16Autocast()])
    module = learn.model.get_submodule(name)
    dtypes = []
    h = module.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype), prepend=True)
    rec = Record(module)
    fit_quiet(learn, 1, cbs=rec)
    h.remove()
    assert dtypes[0] == torch.bfloat16 and rec.mixed[0].dtype == torch.bfloat16
    learn = small_learner(modality, cbs=[ManifoldMixup(0.4), BF16Autocast()])
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)

def test_output_mixup_bf16():
    learn = small_learner('tabular', cbs=[OutputMixup(0.4), BF16Autocast()])
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)

# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize('make,err,msg', [
    (lambda: ManifoldMixup(0), ValueError, '`alpha` must be a number > 0'),
    (lambda: ManifoldMixup(-0.2), ValueError, '`alpha` must be a number > 0'),
    (lambda: ManifoldMixup(float('nan')), ValueError, '`alpha` must be a number > 0'),
    (lambda: OutputMixup(0.), ValueError, '`alpha` must be a number > 0'),
    (lambda: OutputMixup(0.4, mode='pair'), ValueError, "`mode` must be one of ['sample', 'batch']"),
    (lambda: ManifoldMixup(0.4, mode='pair'), ValueError, "`mode` must be one of ['sample', 'batch']"),
    (lambda: ManifoldMixup(0.4, depth=0), ValueError, '`depth` must be a number in (0, 1]'),
    (lambda: ManifoldMixup(0.4, depth=2), ValueError, '`depth` must be a number in (0, 1]'),
    (lambda: ManifoldMixup(0.4, module_list=[1.5]), TypeError, '`module_list[0]` must be a module of the model or its dotted name'),
    (lambda: ManifoldMixup(0.4, module_list=[], use_input_mixup=False), ValueError, 'nothing to mix'),
])
def test_bad_arguments(make, err, msg):
    with pytest.raises(err, match=re.escape(msg)): make()

@pytest.mark.parametrize('entry,msg', [(nn.Linear(2, 2), '`module_list[0]` (Linear) is not a module of the model'),
                                       ('layer9', "`module_list`: the model has no module named 'layer9'")])
def test_module_list_entry_not_in_the_model(entry, msg):
    learn = small_learner('image', cbs=ManifoldMixup(0.4, module_list=[entry]))
    lf = learn.loss_func
    with pytest.raises(ValueError, match=re.escape(msg)): fit_quiet(learn, 1)
    assert learn.loss_func is lf and not hooks_left(learn.model)

def test_module_never_called():
    class Net(nn.Module):
        def __init__(self): super().__init__(); self.lin,self.unused = nn.Linear(5, 3),nn.Linear(5, 5)
        def forward(self, x): return self.lin(x)
    model = Net()
    cb = ManifoldMixup(0.4, module_list=['unused'], use_input_mixup=False)
    with pytest.raises(ValueError, match=re.escape("drew `unused` (Linear) to mix at, but the model's forward pass never called it")):
        run_batch(cb, model, torch.randn(4, 5), torch.randint(0, 3, (4,)))
    assert not hooks_left(model)

def test_module_output_without_batch_dimension():
    class Pool(nn.Module):
        def forward(self, x): return x.mean(0)
    model = nn.Sequential(nn.Linear(5, 6), Pool(), nn.Linear(6, 3))
    cb = ManifoldMixup(0.4, module_list=['1'], use_input_mixup=False)
    cb.learn = _Learn((torch.randn(4, 5),), (torch.randint(0, 3, (4,)),), model)
    cb('before_fit'); cb('before_train'); cb('before_batch')
    with pytest.raises(ValueError, match=re.escape('cannot mix the output of `1` (Pool)')): model(*cb.learn.xb)
    assert [m for m in hooks_left(model) if m is not model] == []  # the mixing hook went with the exception
    cb('after_train')
    assert not hooks_left(model)

def test_unknown_model_asks_for_module_list():
    class TwoPaths(nn.Module):
        def __init__(self): super().__init__(); self.a,self.b = nn.Linear(3, 4),nn.Linear(3, 4)
        def forward(self, x): return self.a(x) + self.b(x)
    x,y = torch.randn(16, 3),torch.randint(0, 4, (16,))
    ds = list(zip(x, y))
    learn = Learner(DataLoaders.from_dsets(ds, ds, bs=8, num_workers=0), TwoPaths(), loss_func=CrossEntropyLossFlat(),
                    cbs=ManifoldMixup(0.4))
    learn.remove_cb(ProgressCallback)
    with pytest.raises(ValueError, match='pass `module_list=` the modules to mix at'): fit_quiet(learn, 1)
    learn.manifold_mixup.module_list = ['a']
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)
