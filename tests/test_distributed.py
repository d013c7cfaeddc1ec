"""Distributed training: two CPU processes with the gloo backend, through fastai's own `Learner.distrib_ctx` (accelerate).

After training, ISDA's covariance estimator and MODALS' class memory are identical on both ranks and equal to those of
a single process fed the same data (the union of both ranks' batches, step by step); MixUp, CutMix and ManifoldMixup
train under DistributedDataParallel. fastaug never imports `fastai.distributed` (it fails without `accelerate`): this
file imports it only inside the worker processes.
"""
import os, socket, subprocess, sys
import pytest, torch
from torch import nn
from fastai.learner import Learner
from fastai.data.core import DataLoaders
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.losses import CrossEntropyLossFlat
from fastai.optimizer import SGD
from fastai.torch_core import set_seed
from fastaug.core import LossWrapper
from fastaug.mixup import MixUp, CutMix
from fastaug.manifold import ManifoldMixup
from fastaug.modals import MODALS
from fastaug.isda import ISDA
from conftest import same

WORLD,N,D,C,BS,EPOCHS = 2,128,8,4,16,2  # per-rank batches of 16: global batches of 32, 4 steps an epoch

def data():
    "Points labelled by the coordinate they lean to most, and a validation set"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N + 32, D, generator=g)
    y = x[:, :C].argmax(1)
    return x[:N],y[:N],x[N:],y[N:]

def union_order():
    """The rows of each global step in the order the ranks gather them: fastai's `DistributedDL` gives rank r the r-th
    contiguous share of the (unshuffled) indices, in batches of BS, so step i holds rank 0's batch i, then rank 1's"""
    half = N//WORLD
    return torch.cat([torch.arange(r*half + i, r*half + i + BS) for i in range(0, half, BS) for r in range(WORLD)])

def model():
    set_seed(0)  # the same initial weights everywhere
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, C))

def learner(cbs, bs, order=None):
    x,y,vx,vy = data()
    if order is not None: x,y = x[order],y[order]
    dls = DataLoaders.from_dsets(list(zip(x, y)), list(zip(vx, vy)), bs=bs, shuffle=False, num_workers=0)
    learn = Learner(dls, model(), loss_func=CrossEntropyLossFlat(), cbs=cbs, opt_func=SGD, lr=0.1)  # SGD: no Adam sign flips of ~0 gradients
    learn.remove_cb(ProgressCallback)
    return learn

class Lams(Callback):
    "The mixing weights of every training batch"
    order,run_valid = 99,False
    def __init__(self): self.lams = []
    def after_pred(self):
        cb = next((c for c in self.learn.cbs if hasattr(c, 'lam') and isinstance(getattr(c, 'lam'), torch.Tensor)), None)
        if cb is not None: self.lams.append(cb.lam.clone())

SCENARIOS = {
    'isda': lambda: [ISDA(0.5)],
    'modals': lambda: [MODALS()],                              # random operations, triplets and discriminator: per rank
    'modals_plain': lambda: [MODALS([], triplet_weight=0, adv_weight=0)],  # nothing random: a single process can replay it
    'mixup': lambda: [MixUp(0.4)],
    'cutmix': lambda: [CutMix(1.)],
    'manifold': lambda: [ManifoldMixup(0.4, depth=1.)],
}

def chain(lf):
    res = []
    while isinstance(lf, LossWrapper): res.append(type(lf).__name__); lf = lf.loss_func
    return res

def outcome(learn, lf):
    "What a test compares: weights, statistics, and what the Learner was left with"
    res = dict(model={k: v.clone() for k,v in learn.model.state_dict().items()}, loss_is_users=learn.loss_func is lf,
               chain=chain(learn.loss_func), hooks=[type(m).__name__ for m in learn.model.modules() if m._forward_hooks or m._forward_pre_hooks],
               losses=[float(l) for l in learn.recorder.losses], model_type=type(learn.model).__name__)
    for cb in learn.cbs:
        if isinstance(cb, ISDA): res['isda'] = dict(count=cb.estimator.count, mean=cb.estimator.mean, cov=cb.estimator.cov,
                                                   epochs=cb.epochs_done)
        if isinstance(cb, MODALS):
            res['memory'] = {k: getattr(cb.memory, k).clone() for k in cb.memory._tensors}
            if cb.disc is not None: res['disc'] = [p.detach().clone() for p in cb.disc.parameters()]
        if isinstance(cb, Lams): res['lams'] = cb.lams
    return res

def _cpu_broadcast(self, t, rank):
    "fastai's `DistributedDL._broadcast` sends its indices through a CUDA tensor (nccl only): gloo takes a CPU one"
    t = torch.LongTensor(t)
    torch.distributed.broadcast(t, rank)
    return t.tolist()

def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD), OMP_NUM_THREADS='1')
    torch.set_num_threads(1)
    import fastai.distributed  # needs accelerate: only ever imported here
    fastai.distributed.DistributedDL._broadcast = _cpu_broadcast
    torch.distributed.init_process_group('gloo', rank=rank, world_size=WORLD)
    try:
        res = {}
        for name,make in SCENARIOS.items():
            learn = learner(make() + [Lams()], BS)
            lf = learn.loss_func
            set_seed(1 + rank)  # random draws differ per rank, as they do in real runs
            with learn.distrib_ctx(cpu=True), learn.no_logging(): learn.fit(EPOCHS)
            res[name] = outcome(learn, lf)
        torch.save(res, f'{out}/rank{rank}.pt')
    finally: torch.distributed.destroy_process_group()

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    "Every scenario trained once under DDP on two processes: the outcome of each rank"
    pytest.importorskip('accelerate')
    import torch.multiprocessing as mp
    out = tmp_path_factory.mktemp('ddp')
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out/f'rank{r}.pt', weights_only=False) for r in range(WORLD)]

def single(name):
    "The same scenario in one process, on the union of the ranks' batches"
    learn = learner(SCENARIOS[name](), WORLD*BS, union_order())
    lf = learn.loss_func
    with learn.no_logging(): learn.fit(EPOCHS)
    return outcome(learn, lf)


def close(a, b, **kw):
    for k in a: torch.testing.assert_close(a[k], b[k], **kw, msg=lambda m: f'{k}: {m}')

@pytest.mark.slow
@pytest.mark.parametrize('name', list(SCENARIOS))
def test_trains_under_ddp_and_leaves_the_learner_clean(ranks, name):
    for r in ranks:
        o = r[name]
        assert o['model_type'] == 'Sequential', 'the model was left wrapped in DistributedDataParallel'
        assert o['loss_is_users'] and o['chain'] == [] and o['hooks'] == []
        assert o['losses'] and all(torch.isfinite(torch.tensor(o['losses'])))
    assert same(ranks[0][name]['model'], ranks[1][name]['model']), 'the ranks hold different weights'

@pytest.mark.slow
@pytest.mark.parametrize('name', ['mixup', 'cutmix', 'manifold'])
def test_random_draws_stay_per_rank(ranks, name):
    a,b = ranks[0][name]['lams'],ranks[1][name]['lams']
    assert len(a) == len(b) == EPOCHS*N//(WORLD*BS)
    assert not same(a, b), 'both ranks drew the same mixing weights'

@pytest.mark.slow
def test_isda_statistics_identical_on_both_ranks_and_equal_to_one_process(ranks):
    a,b = ranks[0]['isda']['isda'],ranks[1]['isda']['isda']
    assert same(a, b), 'the ranks hold different covariance estimates'
    assert int(a['count'].sum()) == EPOCHS*N  # every rank counted the rows of both
    ref = single('isda')
    assert torch.equal(a['count'], ref['isda']['count']) and a['epochs'] == ref['isda']['epochs'] == EPOCHS
    close({k: a[k] for k in ('mean', 'cov')}, ref['isda'], rtol=1e-4, atol=1e-5)
    close(ranks[0]['isda']['model'], ref['model'], rtol=1e-4, atol=1e-5)  # DDP's mean gradient is the union's

@pytest.mark.slow
def test_modals_memory_identical_on_both_ranks(ranks):
    "With random operations, triplets and a discriminator on each rank, the class memory and discriminator still agree"
    a,b = ranks[0]['modals'],ranks[1]['modals']
    assert same(a['memory'], b['memory']), 'the ranks hold different class memories'
    assert same(a['disc'], b['disc']), 'the ranks hold different discriminators'
    assert int(a['memory']['count'].sum()) > 0

@pytest.mark.slow
def test_modals_memory_equals_one_process_fed_the_union(ranks):
    a,b = ranks[0]['modals_plain']['memory'],ranks[1]['modals_plain']['memory']
    assert same(a, b)
    ref = single('modals_plain')['memory']
    for k in ('count', 'n_bank', 'next_slot'): assert torch.equal(a[k], ref[k]), k
    close({k: a[k] for k in ('mean', 'm2', 'bank', 'score')}, ref, rtol=1e-4, atol=1e-4)

def test_fastaug_imports_and_trains_without_accelerate():
    "With `accelerate` missing, every fastaug module imports, none imports fastai.distributed, and the callbacks train"
    code = '''
import sys, importlib, pkgutil
sys.modules['accelerate'] = None  # any `import accelerate` now fails, as where it is not installed
import fastaug, fastaug.all
for m in pkgutil.iter_modules(fastaug.__path__): importlib.import_module(f'fastaug.{m.name}')
from fastaug.all import *
x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
ds = list(zip(x, y))
learn = Learner(DataLoaders.from_dsets(ds, ds, bs=16), nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
                loss_func=CrossEntropyLossFlat(), cbs=[MixUp(0.4), ISDA(0.5), MODALS(horizon=None)])
with learn.no_bar(), learn.no_logging(): learn.fit(1)
assert 'fastai.distributed' not in sys.modules, 'fastai.distributed was imported'
print(int(learn.isda.estimator.count.sum()), int(learn.modals.memory.count.sum()))
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ['64', '64']
