"ISDA: the online estimator, the augmented logits, and the callback on every modality and fastai workflow"
import math, os, pickle, re
import pytest, torch
from torch import nn
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck
from fastai.learner import Learner, load_learner
from fastai.torch_core import set_seed
from fastai.data.core import DataLoaders
from fastai.callback.core import Callback, CancelFitException, CancelTrainException, CancelEpochException
from fastai.callback.progress import ProgressCallback
import fastai.callback.schedule, fastai.callback.fp16  # fit_one_cycle, lr_find, fine_tune, to_fp16
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.vision.learner import vision_learner
from fastai.vision.models import resnet18
from fastai.metrics import accuracy
import fastaug.isda as isda_mod
from fastaug.core import *
from fastaug.mixup import MixUp
from fastaug.isda import *
from fastaug.testing import direct_isda_logits
from conftest import small_dls, small_learner, hooks_left

def fit_quiet(learn, n=1, lr=1e-3, **kwargs):
    with learn.no_logging(), learn.no_bar(): learn.fit(n, lr, **kwargs)

def exact_stats(x, y, n_classes):
    "Per-class count, mean and biased covariance of `x` (float64), computed directly"
    x = x.double()
    count = torch.bincount(y, minlength=n_classes)
    A = x.shape[1]
    mean,cov = torch.zeros(n_classes, A, dtype=x.dtype),torch.zeros(n_classes, A, A, dtype=x.dtype)
    for c in range(n_classes):
        if count[c]:
            xc = x[y == c]
            mean[c] = xc.mean(0)
            cov[c] = (xc - mean[c]).T @ (xc - mean[c])/count[c]
    return count,mean,cov

def expected_cov(cov, kind): return cov if kind == 'full' else cov.diagonal(dim1=1, dim2=2)

def assert_stats(est, count, mean, cov, scale=1.):
    assert est.count.dtype == torch.long and torch.equal(est.count, count)
    assert est.mean.dtype == est.cov.dtype == torch.float32
    assert torch.isfinite(est.cov).all() and torch.isfinite(est.mean).all()
    assert torch.allclose(est.mean.double(), mean, rtol=1e-4, atol=1e-5*scale)
    assert torch.allclose(est.cov.double(), expected_cov(cov, est.kind), rtol=1e-3, atol=1e-4*scale**2)

# ---------------------------------------------------------------- the estimator
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 60), n_classes=st.integers(1, 6), dim=st.integers(1, 5), kind=st.sampled_from(COV_KINDS),
       cuts=st.lists(st.integers(0, 60), max_size=6), offset=st.sampled_from([0., 10.]), seed=st.integers(0, 2**16))
def test_estimator_equals_exact_stats_whatever_the_split(n, n_classes, dim, kind, cuts, offset, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)*torch.rand(dim, generator=g, dtype=torch.float64)*3 + offset
    y = torch.randint(0, n_classes, (n,), generator=g)
    est = CovarianceEstimator(n_classes, dim, kind)
    for part in torch.tensor_split(torch.arange(n), sorted(c for c in cuts if c <= n)):
        est.update(x[part].float(), y[part])  # empty parts included
    count,mean,cov = exact_stats(x.float(), y, n_classes)
    assert_stats(est, count, mean, cov, scale=1 + offset)
    unseen = count == 0
    assert (est.cov[unseen] == 0).all() and (est.mean[unseen] == 0).all()

@pytest.mark.parametrize('kind', COV_KINDS)
def test_estimator_chunks_give_the_same_result(kind, monkeypatch):
    x,y = torch.randn(200, 12)*2 + 1,torch.randint(0, 9, (200,))
    whole = CovarianceEstimator(9, 12, kind).update(x, y)
    monkeypatch.setattr(isda_mod, 'CHUNK_FLOATS', 1)  # one class per chunk
    chunked = CovarianceEstimator(9, 12, kind).update(x, y)
    assert torch.allclose(whole.cov, chunked.cov, atol=1e-6) and torch.allclose(whole.mean, chunked.mean)

@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 80), kind=st.sampled_from(COV_KINDS), seed=st.integers(0, 2**16))
def test_merge_of_two_halves_equals_one_fed_everything(n, kind, seed):
    g = torch.Generator().manual_seed(seed)
    x,y = torch.randn(80, 4, generator=g)*2 - 3,torch.randint(0, 5, (80,), generator=g)
    a,b,ab = (CovarianceEstimator(5, 4, kind) for _ in range(3))
    a.update(x[:n], y[:n]); b.update(x[n:], y[n:]); ab.update(x, y)
    a.merge(b)
    assert torch.equal(a.count, ab.count)
    assert torch.allclose(a.mean, ab.mean, atol=1e-5) and torch.allclose(a.cov, ab.cov, atol=1e-4)

def test_merge_refuses_an_incompatible_estimator():
    a = CovarianceEstimator(5, 4)
    with pytest.raises(ValueError, match=re.escape('cannot merge an estimator of 5 classes × 4 features')):
        a.merge(CovarianceEstimator(5, 4, 'diag'))
    with pytest.raises(TypeError, match='can only merge a CovarianceEstimator'): a.merge(torch.zeros(3))

def _dist_worker(rank, world, init_file, out_file):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        x,y = torch.randn(90, 4, generator=g)*2 + 1,torch.randint(0, 6, (90,), generator=g)
        y[y == 5] = 4  # class 5 is never seen by anyone
        part = slice(0, 30) if rank == 0 else slice(30, 90)  # unequal halves
        res = {}
        for kind in COV_KINDS:
            est = CovarianceEstimator(6, 4, kind).update(x[part], y[part])
            if rank == 0: est.update(x[:0], y[:0])
            res[kind] = est.all_reduce()
            # the callback's path: every rank updates with the rows of all ranks
            rows,labels = all_gather_rows(x[part]),all_gather_rows(y[part])
            res[kind + ' gathered'] = CovarianceEstimator(6, 4, kind).update(rows, labels)
        torch.save({k: (e.count, e.mean, e.cov) for k,e in res.items()}, f'{out_file}.{rank}')
    finally: dist.destroy_process_group()

@pytest.mark.slow
def test_all_reduce_across_two_processes(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_dist_worker, args=(2, str(tmp_path/'init'), str(tmp_path/'out')), nprocs=2, join=True)
    g = torch.Generator().manual_seed(0)
    x,y = torch.randn(90, 4, generator=g)*2 + 1,torch.randint(0, 6, (90,), generator=g)
    y[y == 5] = 4
    for rank in (0, 1):
        res = torch.load(tmp_path/f'out.{rank}')
        for kind in COV_KINDS:
            ref = CovarianceEstimator(6, 4, kind).update(x, y)
            for key in (kind, kind + ' gathered'):
                count,mean,cov = res[key]
                assert torch.equal(count, ref.count)
                assert torch.allclose(mean, ref.mean, atol=1e-5) and torch.allclose(cov, ref.cov, atol=1e-4)
                assert (cov[5] == 0).all()

def test_all_reduce_and_gather_without_distributed_are_no_ops():
    est = CovarianceEstimator(3, 2).update(torch.randn(5, 2), torch.tensor([0, 1, 1, 2, 0]))
    c = est.cov.clone()
    assert est.all_reduce() is est and torch.equal(est.cov, c)
    x = torch.randn(4, 2)
    assert all_gather_rows(x) is x

@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('kind', COV_KINDS)
def test_estimator_stays_fp32_under_autocast(dtype, kind):
    x,y = (torch.randn(64, 16)*3).to(dtype),torch.randint(0, 4, (64,))
    ref = CovarianceEstimator(4, 16, kind).update(x.float(), y)
    est = CovarianceEstimator(4, 16, kind)
    with torch.autocast('cpu', dtype=torch.bfloat16): est.update(x, y)
    assert est.cov.dtype == est.mean.dtype == torch.float32
    assert torch.allclose(est.cov, ref.cov, rtol=1e-5, atol=1e-5)  # not bf16 arithmetic

def test_estimator_skips_non_finite_rows():
    x,y = torch.randn(10, 3),torch.tensor([0, 1]*5)
    bad = x.clone(); bad[3, 1] = float('inf'); bad[4, 0] = float('nan')
    est = CovarianceEstimator(2, 3).update(bad, y)
    keep = torch.tensor([i not in (3, 4) for i in range(10)])
    ref = CovarianceEstimator(2, 3).update(x[keep], y[keep])
    assert torch.equal(est.count, ref.count) and torch.allclose(est.cov, ref.cov)
    assert torch.isfinite(est.cov).all()

@pytest.mark.parametrize('x,y,msg', [
    (torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), 'labels must be in [0, 3)'),
    (torch.randn(4, 3), torch.tensor([0, -1, 2, 1]), 'labels must be in [0, 3)'),
    (torch.randn(4, 3), torch.rand(4), 'needs integer class labels'),
    (torch.randn(4, 2), torch.tensor([0, 1, 2, 1]), 'features must be a (batch, 3) tensor'),
    (torch.randn(4, 3), torch.tensor([0, 1, 2]), '4 feature rows for 3 labels'),
])
def test_estimator_bad_input(x, y, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): CovarianceEstimator(3, 3).update(x, y)

@pytest.mark.parametrize('args,msg', [((0, 3), '`n_classes` must be an integer >= 1'), ((3, 2.5), '`dim` must be an integer >= 1'),
                                      ((3, 3, 'lowrank'), "`kind` must be one of ['full', 'diag']")])
def test_estimator_bad_arguments(args, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): CovarianceEstimator(*args)

# ---------------------------------------------------------------- the augmented logits
def random_problem(C, A, n, kind, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(C, A, generator=g, dtype=dtype).requires_grad_()
    a = torch.randn(n, A, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(C, generator=g, dtype=dtype)
    y = torch.randint(0, C, (n,), generator=g)
    L = torch.randn(C, A, A, generator=g, dtype=dtype)/A**0.5
    cov = L @ L.transpose(1, 2)
    cov[C-1] = 0  # a class never seen
    return W,a,b,y,expected_cov(cov, kind)

@pytest.mark.parametrize('kind', COV_KINDS)
def test_lambda_zero_is_cross_entropy(kind):
    W,a,b,y,cov = random_problem(6, 5, 20, kind)
    logits = a @ W.T + b
    assert torch.equal(F.cross_entropy(isda_logits(logits, y, W, cov, 0.), y), F.cross_entropy(logits, y))
    assert (isda_logits(logits, y, W, cov, 0.5) >= logits - 1e-6).all()

def test_lambda_zero_trains_exactly_as_plain_cross_entropy():
    def losses(cbs):
        set_seed(0)
        learn = synth_learner(cbs)
        fit_quiet(learn, 2, 1e-2)
        return torch.tensor([float(l) for l in learn.recorder.losses])
    assert torch.equal(losses([ISDA(0.)]), losses([]))

@pytest.mark.parametrize('kind', COV_KINDS)
@pytest.mark.parametrize('seed', range(4))
def test_isda_loss_bounds_the_monte_carlo_expected_loss(kind, seed):
    "CE on the augmented logits ≥ E[CE] over features drawn from N(a, λΣ_y), estimated with many samples"
    W,a,b,y,cov = random_problem(5, 6, 4, kind, seed=seed, dtype=torch.float64)
    W,a = W.detach()/2,a.detach()
    lam,m = 0.8,40_000
    g = torch.Generator().manual_seed(100 + seed)
    full = cov if kind == 'full' else torch.diag_embed(cov)
    for i in range(len(y)):
        c = int(y[i])
        L = torch.linalg.cholesky(full[c] + 1e-9*torch.eye(6, dtype=torch.float64))
        feats = a[i] + (lam**0.5)*torch.randn(m, 6, generator=g, dtype=torch.float64) @ L.T
        ce = F.cross_entropy(feats @ W.T + b, y[i:i+1].expand(m), reduction='none')
        mc,se = ce.mean(),ce.std()/m**0.5
        bound = F.cross_entropy(isda_logits((a[i:i+1] @ W.T + b), y[i:i+1], W, cov, lam), y[i:i+1])
        assert bound >= mc - 4*se, (float(bound), float(mc), float(se))
        assert bound >= F.cross_entropy(a[i:i+1] @ W.T + b, y[i:i+1]) - 1e-12  # and above the plain loss

@pytest.mark.parametrize('kind', COV_KINDS)
@pytest.mark.parametrize('chunk', [None, 1])
def test_efficient_equals_direct_reference(kind, chunk, monkeypatch):
    "Per-class computation == the (batch × A × A) / (batch × C × C) reference, values and gradients, fp32"
    if chunk: monkeypatch.setattr(isda_mod, 'CHUNK_FLOATS', chunk)
    W,a,b,y,cov = random_problem(23, 17, 64, kind, seed=3)
    outs = []
    for fn in (isda_logits, direct_isda_logits):
        z = fn(a @ W.T + b, y, W, cov, 0.7)
        loss = F.cross_entropy(z, y)
        outs.append((z.detach(), *torch.autograd.grad(loss, (W, a))))
    for u,v in zip(*outs): assert torch.allclose(u, v, rtol=1e-4, atol=1e-5*float(v.abs().max())), float((u - v).abs().max())

def test_full_backward_passes_gradcheck():
    W,a,b,y,cov = random_problem(6, 4, 10, 'full', dtype=torch.float64)
    classes = torch.tensor([0, 2, 5])
    assert torch.autograd.gradcheck(lambda w: logit_variance(w, cov, classes), (W,))
    assert torch.autograd.gradcheck(lambda w: logit_variance(w, cov.diagonal(dim1=1, dim2=2), classes), (W,))

@pytest.mark.parametrize('kind', COV_KINDS)
def test_gradients_flow_to_features_and_head_but_not_the_estimator(kind):
    head = nn.Linear(8, 5)
    feats = torch.randn(32, 8, requires_grad=True)
    y = torch.randint(0, 5, (32,))
    est = CovarianceEstimator(5, 8, kind).update(feats, y)
    before = est.cov.clone()
    z = isda_logits(head(feats), y, head.weight, est.cov, 0.5)
    F.cross_entropy(z, y).backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert not est.cov.requires_grad and est.cov.grad is None and not est.mean.requires_grad
    assert torch.equal(est.cov, before)
    # the ISDA term itself sends a gradient to the head weights
    head.weight.grad = None
    isda_logits(torch.zeros(32, 5), y, head.weight, est.cov, 0.5).sum().backward()
    assert head.weight.grad.abs().sum() > 0

def test_augmented_logits_keep_the_dtype_under_autocast():
    W,a,b,y,cov = random_problem(6, 5, 20, 'full')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = F.linear(a, W, b)
        assert logits.dtype == torch.bfloat16
        z = isda_logits(logits, y, W, cov, 0.5)
        q = logit_variance(W, cov, torch.tensor([0, 1]))
    assert z.dtype == torch.bfloat16 and q.dtype == torch.float32

def test_logit_variance_checks_shapes():
    with pytest.raises(ValueError, match=re.escape('do not match a head of 4 classes × 3 features')):
        logit_variance(torch.randn(4, 3), torch.zeros(4, 2, 2), torch.tensor([0]))

# ---------------------------------------------------------------- the callback
def synth_learner(cbs=None, n=256, n_in=8, n_classes=4, loss_func=None, model=None, y=None):
    "A `Learner` on random points labelled by the direction they lean to most"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, n_in, generator=g)
    y = x[:, :n_classes].argmax(1) if y is None else y
    ds = list(zip(x, y))
    dls = DataLoaders.from_dsets(ds, ds[:64], bs=32, num_workers=0)
    model = model or nn.Sequential(nn.Linear(n_in, 16), nn.ReLU(), nn.Linear(16, n_classes))
    learn = Learner(dls, model, loss_func=loss_func or CrossEntropyLossFlat(), cbs=cbs)
    learn.remove_cb(ProgressCallback)
    return learn

class Record(Callback):
    "During training: λ per epoch, the loss chain per batch"
    order = 50
    def before_fit(self):
        if not hasattr(self, 'lams'): self.lams,self.chains = [],[]
    def before_train(self): self.lams.append(getattr(self.learn, 'isda').lam)
    def after_loss(self):
        if not self.training: return
        chain,o = [],self.learn.loss_func
        while isinstance(o, LossWrapper): chain.append(type(o).__name__); o = o.loss_func
        self.chains.append(tuple(chain))

MODALITIES = ['image', 'tabular', 'series', pytest.param('text', marks=pytest.mark.slow)]

@pytest.fixture(scope='module')
def trained():
    "One 2-epoch ISDA training per modality, shared by the tests that only read its result: (learner, user's loss)"
    cache = {}
    def get(modality):
        if modality not in cache:
            set_seed(0)
            learn = small_learner(modality, cbs=[ISDA(0.5), Record()])
            lf = learn.loss_func
            fit_quiet(learn, 2)
            cache[modality] = learn,lf
        return cache[modality]
    return get

@pytest.mark.parametrize('modality', MODALITIES)
def test_trains_on_every_modality(modality, trained):
    learn,lf = trained(modality)
    losses = torch.tensor([float(l) for l in learn.recorder.losses])
    assert len(losses) and torch.isfinite(losses).all()
    assert learn.loss_func is lf and not hooks_left(learn.model)
    assert learn.record.lams == [0., 0.25] and set(learn.record.chains) == {('ISDALoss',)}
    cb = learn.isda
    est = cb.estimator
    assert est.cov.shape == (learn.dls.c, cb.head.in_features, cb.head.in_features)
    if modality != 'text': assert int(est.count.sum()) == 2*len(learn.dls.train)*learn.dls.train.bs
    assert int(est.count.sum()) > 0 and torch.isfinite(est.cov).all()

@pytest.mark.parametrize('modality', MODALITIES)
def test_get_preds_are_plain_probabilities(modality, trained):
    learn,_ = trained(modality)
    preds,targs = learn.get_preds()
    assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)
    if modality in ('image', 'series'):  # and they are the model's own softmax: no ISDA term
        xb,yb = learn.dls.valid.one_batch()
        learn.model.eval()
        with torch.no_grad(): ref = F.softmax(learn.model(xb), 1)
        assert torch.allclose(preds[:len(ref)], ref, atol=1e-5)

@pytest.mark.parametrize('modality', ['image', 'tabular', 'series'])
def test_export_leaves_the_statistics_out(modality, trained, tmp_path):
    learn,_ = trained(modality)
    learn.export(tmp_path/'isda.pkl')
    small_learner(modality).export(tmp_path/'plain.pkl')
    size,plain_size = (tmp_path/'isda.pkl').stat().st_size,(tmp_path/'plain.pkl').stat().st_size
    assert size < plain_size + 20_000  # the covariances alone take C·A²·4 bytes
    assert learn.isda.estimator is not None  # the live callback keeps them
    new = load_learner(tmp_path/'isda.pkl')
    assert not hooks_left(new.model) and new.isda.estimator is None
    item = learn.dls.valid_ds.items[0] if modality != 'tabular' else learn.dls.valid_ds.decode_row(learn.dls.valid_ds.items.iloc[0])
    dec,idx,probs = new.predict(item)
    assert math.isclose(float(probs.sum()), 1, rel_tol=1e-5)

def test_lr_find_then_fit_statistics_untouched():
    cb = ISDA(0.5)
    learn = small_learner('tabular', cbs=cb)
    lf = learn.loss_func
    with learn.no_logging(): learn.lr_find(num_it=8, show_plot=False)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    assert int(cb.estimator.count.sum()) == 0 and cb.epochs_done == 0
    fit_quiet(learn, 1)
    assert int(cb.estimator.count.sum()) > 0 and cb.epochs_done == 1 and learn.loss_func is lf

@pytest.mark.slow
def test_fine_tune_vision_learner():
    dls = small_dls('image')
    learn = vision_learner(dls, resnet18, pretrained=False, n_in=1, cbs=[ISDA(0.5), Record()], metrics=accuracy)
    learn.remove_cb(ProgressCallback)
    lf = learn.loss_func
    with learn.no_logging(): learn.fine_tune(1, 1e-3, freeze_epochs=1)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    assert learn.record.lams == [0., 0.25]
    assert learn.isda.estimator.dim == 512

@pytest.mark.parametrize('fits,n_epochs,expected', [
    ([('fit', 2), ('fit', 2)], None, [0, 1/2, 2/4, 3/4]),
    ([('fit', 2), ('fit', 2)], 4, [0, 1/4, 2/4, 3/4]),
    ([('fine_tune', 2, 1)], None, [0, 1/3, 2/3]),
    ([('fine_tune', 2, 2)], None, [0, 1/2, 2/4, 3/4]),
    ([('fine_tune', 2, 2)], 4, [0, 1/4, 2/4, 3/4]),
    ([('fit', 3)], 2, [0, 1/2, 1]),
])
def test_lambda_schedule_across_fits(fits, n_epochs, expected):
    learn = synth_learner([ISDA(0.8, n_epochs=n_epochs), Record()])
    with learn.no_logging():
        if n_epochs is None: learn.lr_find(num_it=3, show_plot=False)  # counts no epoch
        for f in fits:
            if f[0] == 'fit': learn.fit(f[1], 1e-3)
            else: learn.fine_tune(f[1], 1e-3, freeze_epochs=f[2])
    lams = learn.record.lams
    if n_epochs is None: assert lams.pop(0) == 0  # lr_find: plain logits
    assert torch.allclose(torch.tensor(lams), 0.8*torch.tensor(expected, dtype=torch.float))

def test_a_new_model_restarts_statistics_and_schedule():
    cb = ISDA(0.5)
    learn = synth_learner(cb)
    fit_quiet(learn, 2)
    assert cb.epochs_done == 2
    learn2 = synth_learner(cb, n_classes=3, model=nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)))
    fit_quiet(learn2, 1)
    assert cb.epochs_done == 1 and cb.estimator.cov.shape == (3, 6, 6)

class BF16Autocast(Callback):
    "CPU bf16 autocast around the forward pass and the loss"
    order = 10
    def before_batch(self): self.ctx = torch.autocast('cpu', dtype=torch.bfloat16); self.ctx.__enter__()
    def after_loss(self): self.ctx.__exit__(None, None, None)

@pytest.mark.parametrize('where', ['synthetic', pytest.param('image', marks=pytest.mark.slow)])
def test_bf16_autocast_keeps_statistics_fp32(where):
    cb = ISDA(0.5)
    learn = synth_learner([cb, BF16Autocast()]) if where == 'synthetic' else small_learner('image', cbs=[cb, BF16Autocast()])
    seen = []
    cb.latent = lambda z, f=cb.latent: seen.append(z.dtype) or f(z)
    fit_quiet(learn, 2)
    assert torch.bfloat16 in seen  # the latent really was bf16
    assert all(math.isfinite(l) for l in learn.recorder.losses)
    assert cb.estimator.cov.dtype == cb.estimator.mean.dtype == torch.float32 and torch.isfinite(cb.estimator.cov).all()

def test_to_fp16_trains():
    cb = ISDA(0.5, cov='diag')
    learn = synth_learner(cb).to_fp16()
    fit_quiet(learn, 2)
    assert all(math.isfinite(l) for l in learn.recorder.losses) and cb.estimator.cov.dtype == torch.float32

def test_labels_out_of_range_give_a_clear_error():
    y = torch.randint(0, 5, (256,)); y[7] = 5
    learn = synth_learner(ISDA(0.5), n_classes=5, y=y, model=nn.Sequential(nn.Linear(8, 4)))
    lf = learn.loss_func
    with pytest.raises(ValueError, match=re.escape('labels must be in [0, 4) for a head with 4 outputs')): fit_quiet(learn, 1)
    learn.get_preds(dl=[(torch.randn(8, 8), torch.randint(0, 4, (8,)))])  # a validation puts everything back
    assert learn.loss_func is lf and not hooks_left(learn.model)

def test_regression_targets_give_a_clear_error():
    learn = synth_learner(ISDA(0.5), y=torch.randn(256), model=nn.Sequential(nn.Linear(8, 1), nn.Flatten(0)), loss_func=nn.MSELoss())
    with pytest.raises(ValueError, match='ISDA needs integer class labels'): fit_quiet(learn, 1)

def test_a_model_whose_output_is_not_the_head_output():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.LogSoftmax(1))
    learn = synth_learner(ISDA(0.5), model=model, loss_func=F.nll_loss)
    with pytest.raises(ValueError, match="the model's output is not that layer's output"): fit_quiet(learn, 1)

def test_head_by_name():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    cb = ISDA(0.5, head='2')
    fit_quiet(synth_learner(cb, model=model), 1)
    assert cb.head is model[2]

@pytest.mark.parametrize('make,msg', [
    (lambda: ISDA(-0.1), '`lambda0` must be a finite number >= 0'),
    (lambda: ISDA(float('nan')), '`lambda0` must be a finite number >= 0'),
    (lambda: ISDA(cov='lowrank'), "`cov` must be one of ['full', 'diag']"),
    (lambda: ISDA(n_epochs=0), '`n_epochs` must be an integer >= 1'),
    (lambda: ISDA(n_epochs=2.5), '`n_epochs` must be an integer >= 1'),
])
def test_bad_arguments(make, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): make()

@pytest.mark.parametrize('exc', [CancelFitException, CancelTrainException, CancelEpochException])
def test_cancelled_fit_restores_loss(exc):
    class Cancel(Callback):
        order = 30
        def after_batch(self):
            if self.training and self.iter == 2: raise exc()
    learn = synth_learner([ISDA(0.5), MixUp(0.4), Cancel()])
    lf = learn.loss_func
    fit_quiet(learn, 2)
    assert learn.loss_func is lf and not hooks_left(learn.model)

# ---------------------------------------------------------------- with MixUp
@pytest.mark.parametrize('modality', ['tabular', pytest.param('image', marks=pytest.mark.slow)])
def test_mixup_and_isda_train_together(modality):
    learn = small_learner(modality, cbs=[ISDA(0.5), MixUp(0.4), Record()])
    lf = learn.loss_func
    fit_quiet(learn, 2)
    assert all(math.isfinite(l) for l in learn.recorder.losses)
    assert set(learn.record.chains) == {('MixedLoss', 'ISDALoss')}  # MixedLoss outermost
    assert learn.loss_func is lf and not hooks_left(learn.model)

def test_mixed_loss_scores_each_row_with_the_term_of_its_target():
    "MixedLoss calls the ISDA loss once on cat([pred, pred]) with cat([y, y[perm]]): each row gets its own label's term"
    learn = synth_learner([ISDA(0.5), MixUp(0.4)])
    fit_quiet(learn, 2)
    cb = learn.isda
    learn.training = True
    cb.lam = 0.5
    pred,y = torch.randn(8, 4),torch.randint(0, 4, (8,))
    perm,lam = torch.randperm(8),torch.rand(8)
    ml = MixedLoss(isda_mod.ISDALoss(CrossEntropyLossFlat(), cb)); ml.set(lam, perm)
    W,cov = cb.head.weight,cb.estimator.cov
    l0 = F.cross_entropy(isda_logits(pred, y, W, cov, 0.5), y, reduction='none')
    l1 = F.cross_entropy(isda_logits(pred, y[perm], W, cov, 0.5), y[perm], reduction='none')
    assert torch.allclose(ml(pred, y), (lam*l0 + (1 - lam)*l1).mean(), atol=1e-6)
    learn.training = False
    ml.clear()
    assert torch.allclose(ml(pred, y), F.cross_entropy(pred, y))  # outside training: the user's loss
