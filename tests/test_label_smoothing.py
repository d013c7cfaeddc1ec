"""Label smoothing with every mixing callback equals its definition on a real training batch.

The definition: each sample's target is its smoothed one-hot label, (1-ε)·onehot(y) + ε/C, mixed with its partner's
as the inputs were, λ·t(y) + (1-λ)·t(y'); the loss is the cross-entropy of the (for `OutputMixup`, mixed)
predictions against that distribution. fastai's `LabelSmoothingCrossEntropyFlat` and torch's
`CrossEntropyLoss(label_smoothing=ε)` are both that loss before mixing.
"""
import pytest, torch
import torch.nn.functional as F
from torch import nn
from fastai.learner import Learner
from fastai.data.core import DataLoaders
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.losses import LabelSmoothingCrossEntropyFlat
from fastaug.core import MixCallback
from fastaug.mixup import MixUp, CutMix
from fastaug.manifold import ManifoldMixup, OutputMixup

N,C,EPS = 32,4,0.1
MIXERS = {'MixUp': lambda: MixUp(0.4), 'CutMix': lambda: CutMix(1.), 'ManifoldMixup': lambda: ManifoldMixup(0.4),
          'OutputMixup': lambda: OutputMixup(0.4)}
LOSSES = {'LabelSmoothingCrossEntropyFlat': lambda: LabelSmoothingCrossEntropyFlat(eps=EPS),
          'nn.CrossEntropyLoss(label_smoothing)': lambda: nn.CrossEntropyLoss(label_smoothing=EPS)}

class Record(Callback):
    "After each training loss: the predictions, the labels, the mixing callback's λ and partners, and the loss"
    order,run_valid = 99,False
    def __init__(self): self.rows = []
    def after_loss(self):
        mix = next(cb for cb in self.learn.cbs if isinstance(cb, MixCallback))
        if mix.lam is None: return
        self.rows.append((self.pred.detach(), self.yb[0].clone(), mix.lam.detach().clone(), mix.perm.clone(),
                          type(mix), self.loss.detach()))

def smoothed(y): return F.one_hot(y, C).float()*(1 - EPS) + EPS/C

def definition(pred, y, lam, perm, mixer):
    "Cross-entropy against the mixed smoothed targets; `OutputMixup` scores the mixed predictions"
    lam = lam.view(-1, 1).float()
    if mixer is OutputMixup: pred = lam*pred + (1 - lam)*pred[perm]
    target = lam*smoothed(y) + (1 - lam)*smoothed(y[perm])
    return -(target*F.log_softmax(pred.float(), 1)).sum(1).mean()

@pytest.mark.parametrize('loss', list(LOSSES))
@pytest.mark.parametrize('name', list(MIXERS))
def test_label_smoothing_mixed_equals_its_definition(name, loss):
    torch.manual_seed(0)
    x,y = torch.randn(N, 3, 8, 8),torch.randint(0, C, (N,))
    ds = list(zip(x, y))
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, C))
    rec = Record()
    learn = Learner(DataLoaders.from_dsets(ds, ds, bs=8, num_workers=0), model, loss_func=LOSSES[loss](),
                    cbs=[MIXERS[name](), rec])
    learn.remove_cb(ProgressCallback)
    with learn.no_logging(): learn.fit(1, 1e-3)
    assert len(rec.rows) >= 3, 'fewer mixed batches than expected'
    for pred,yb,lam,perm,mixer,got in rec.rows:
        torch.testing.assert_close(got, definition(pred, yb, lam, perm, mixer), rtol=1e-5, atol=1e-6)
