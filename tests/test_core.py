"The shared core: loss wrapping, head finding, embeddings and one-batch hooks"
import pickle
import pytest, torch
from torch import nn
import torch.nn.functional as F
from fastai.losses import CrossEntropyLossFlat
from fastai.layers import NoneReduce
from fastaug.core import *
from fastaug.core import _mix_embedding
from conftest import small_learner

def test_mixed_loss_inactive_outside_training():
    "A wrapper left behind is inert once its callback is detached or validating"
    class Owner: learn,training = object(),True
    o = Owner()
    pred,y = torch.randn(4, 3),torch.tensor([0, 1, 2, 0])
    ml = MixedLoss(CrossEntropyLossFlat(), owner=o)
    ml.set(torch.zeros(4), torch.tensor([1, 2, 3, 0]))
    assert torch.allclose(ml(pred, y), F.cross_entropy(pred, y[[1, 2, 3, 0]]))
    o.training = False
    assert torch.allclose(ml(pred, y), F.cross_entropy(pred, y))
    o.training,o.learn = True,None
    assert torch.allclose(ml(pred, y), F.cross_entropy(pred, y))

def test_loss_not_reduced_passes_through():
    lf = CrossEntropyLossFlat()
    ml = MixedLoss(lf); ml.set(torch.full((4,), .5), torch.tensor([1, 0, 3, 2]))
    pred,y = torch.randn(4, 3),torch.tensor([0, 1, 2, 0])
    with NoneReduce(ml) as f: out = f(pred, y)
    assert out.shape == (4,) and lf.reduction == 'mean'

def test_loss_without_reduction_argument():
    def lf(pred, y): return F.cross_entropy(pred, y)
    pred,y,perm = torch.randn(4, 3),torch.tensor([0, 1, 2, 0]),torch.tensor([1, 0, 3, 2])
    ml = MixedLoss(lf); ml.set(torch.full((4,), .3), perm)
    assert torch.allclose(ml(pred, y), .3*lf(pred, y) + .7*lf(pred, y[perm]))
    ml.set(torch.tensor([.3, .4, .5, .6]), perm)
    with pytest.raises(ValueError, match="has no `reduction`"): ml(pred, y)

def test_mixed_loss_rejects_reduced_losses():
    class AlwaysMean(nn.Module):
        reduction = 'mean'
        def forward(self, p, y): return F.cross_entropy(p, y)
    ml = MixedLoss(AlwaysMean()); ml.set(torch.rand(4), torch.tensor([1, 0, 3, 2]))
    with pytest.raises(ValueError, match='mixing needs one loss'): ml(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))

def test_wrapper_pickles_as_the_users_loss():
    lf = CrossEntropyLossFlat(label_smoothing=0.1) if 'label_smoothing' in CrossEntropyLossFlat.__init__.__code__.co_varnames else CrossEntropyLossFlat()
    out = pickle.loads(pickle.dumps(MixedLoss(MixedLoss(lf))))
    assert type(out) is type(lf)

def test_truncated_embedding_batch_uses_padding():
    "fastai's SentenceEncoder drops all-padding rows from a chunk: their partners are padding vectors"
    emb = nn.Embedding(10, 3, padding_idx=1)
    out = emb(torch.tensor([[2, 3], [4, 5]]))  # 2 rows of a batch of 4
    perm,lam = torch.tensor([3, 0, 1, 2]),torch.full((4,), .25)
    mixed = _mix_embedding(emb, out, lam=lam, perm=perm)
    assert mixed.shape == out.shape
    pad = emb.weight[1].detach()
    assert torch.allclose(mixed[0], .25*out[0] + .75*pad.expand(2, 3))
    assert torch.allclose(mixed[1], .25*out[1] + .75*out[0])
    with pytest.raises(ValueError, match='cannot tell which sample'): _mix_embedding(emb, emb(torch.zeros(5, 2).long()), lam=lam, perm=perm)

@pytest.mark.parametrize('modality', ['image', 'tabular', 'series', 'text'])
def test_find_head_on_offline_models(modality):
    learn = small_learner(modality)
    head = find_head(learn.model)
    assert isinstance(head, nn.Linear) and head.out_features == learn.dls.c

def test_find_head_timm_and_torchvision():
    timm = pytest.importorskip('timm')
    m = timm.create_model('efficientnet_b0', pretrained=False, num_classes=5)
    assert find_head(m) is m.classifier
    from torchvision.models import resnet18
    m = resnet18(num_classes=3)
    assert find_head(m) is m.fc
    from fastai.vision.learner import create_vision_model
    m = create_vision_model(resnet18, 4, pretrained=False)
    assert find_head(m) is m[1][-1]

def test_latent_hook_replaces_and_removes():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    with LatentHook(find_head(model), lambda z: torch.zeros_like(z)) as h:
        out = model(x)
        assert torch.allclose(out, model[2].bias.expand(5, 2))
    assert not model[2]._forward_pre_hooks and h.z.shape == (5, 3)

def test_batch_hook_tuple_output():
    class Pair(nn.Module):
        def forward(self, x): return x, x.sum()
    m = Pair()
    with BatchHook(m, lambda o: o*2):
        a,s = m(torch.ones(3))
    assert torch.equal(a, torch.full((3,), 2.)) and s == 3
    with pytest.raises(TypeError, match='cannot hook an output'):
        ident = nn.Identity()
        with BatchHook(ident, lambda o: o): ident({'a': 1})

# ---------------------------------------------------------------- the one-call cross-entropy of a mixed batch
@pytest.mark.parametrize('make', [lambda **kw: CrossEntropyLossFlat(**kw), lambda **kw: nn.CrossEntropyLoss(**kw)])
@pytest.mark.parametrize('smoothing', [0., 0.1])
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_mixed_cross_entropy_equals_mixing_two_losses(make, smoothing, reduction):
    "Cross-entropy on the mixed one-hot targets is λ·CE(y) + (1-λ)·CE(y[perm]): value and gradient"
    torch.manual_seed(0)
    logits,y = torch.randn(16, 5),torch.randint(0, 5, (16,))
    lam,perm = torch.rand(16),torch.randperm(16)
    ml = MixedLoss(make(label_smoothing=smoothing, reduction=reduction))
    assert ml._ce is not None
    ml.set(lam, perm)
    p1,p2 = logits.clone().requires_grad_(),logits.clone().requires_grad_()
    out = ml(p1, y)
    per = lambda t: F.cross_entropy(p2, t, reduction='none', label_smoothing=smoothing)
    ref = lam*per(y) + (1-lam)*per(y[perm])
    ref = ref.mean() if reduction == 'mean' else ref.sum() if reduction == 'sum' else ref
    torch.testing.assert_close(out, ref)
    out.sum().backward(); ref.sum().backward()
    torch.testing.assert_close(p1.grad, p2.grad)

def test_weighted_or_ignoring_cross_entropy_mixes_two_losses():
    "Class weights and ignore_index change what a mean means: those losses are computed per target and mixed"
    assert MixedLoss(nn.CrossEntropyLoss(weight=torch.ones(3)))._ce is None
    assert MixedLoss(nn.CrossEntropyLoss(ignore_index=0))._ce is None
    assert MixedLoss(CrossEntropyLossFlat(axis=1))._ce is None
