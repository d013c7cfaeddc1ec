"MODALS: the four latent operations, the class memory, the triplet and adversarial terms, and every fastai workflow"
import math, pickle, re
import pytest, torch
import numpy as np
from torch import nn
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck
from fastai.learner import Learner, load_learner
from fastai.data.core import DataLoaders
from fastai.callback.core import Callback, CancelFitException, CancelTrainException, CancelEpochException
from fastai.callback.progress import ProgressCallback
from fastai.callback.training import GradientAccumulation
import fastai.callback.schedule, fastai.callback.fp16  # fit_one_cycle, lr_find, fine_tune, to_fp16
from fastai.losses import CrossEntropyLossFlat
from fastai.layers import NoneReduce
from fastai.metrics import accuracy
from fastai.vision.learner import vision_learner
from fastai.vision.models import resnet18
from fastaug.core import *
from fastaug.policy import *
from fastaug.mixup import MixUp
from fastaug.modals import *
from conftest import small_dls, small_learner, hooks_left

def fit_quiet(learn, n=1, lr=1e-3, **kwargs):
    with learn.no_logging(): learn.fit(n, lr, **kwargs)

def separated_memory(n_classes=3, n_dims=4, per_class=20, bank_size=8, seed=0):
    "A memory whose classes live far apart (class c around 100·c), with all latents and labels it saw"
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(per_class)[torch.randperm(n_classes*per_class, generator=g)]
    z = torch.randn(len(y), n_dims, generator=g) + 100.*y[:, None]
    mem = ClassMemory(n_classes, n_dims, bank_size=bank_size)
    for i in range(0, len(y), 7): mem.update(z[i:i+7], y[i:i+7], score=torch.rand(len(y[i:i+7]), generator=g))
    return mem,z,y

def is_row_of(v, rows, atol=1e-4): return bool(((rows - v).abs().max(1).values < atol).any())

# ---------------------------------------------------------------- the operations' geometry
@pytest.mark.parametrize('m', [0., 0.3, 0.9, 1.])
def test_interpolation_lands_on_segment_to_same_class_member(m):
    mem,_,_ = separated_memory()
    z,y = torch.randn(30, 4) + 100.*torch.arange(3).repeat(10)[:, None],torch.arange(3).repeat(10)
    out = hard_interpolation(z, m, y=y, memory=mem)
    if m == 0: torch.testing.assert_close(out, z)
    else:
        zh = (out - (1-m)*z)/m                           # the hard example each latent moved towards
        for i in range(30): assert is_row_of(zh[i], mem.bank[y[i]], atol=1e-3), f"sample {i} moved towards a latent not of its class"

@pytest.mark.parametrize('m', [0., 0.25, 0.9])
def test_extrapolation_moves_away_from_class_centre(m):
    mem,_,_ = separated_memory()
    z,y = torch.randn(12, 4) + 100.,torch.ones(12, dtype=torch.long)
    out = hard_extrapolation(z, m, y=y, memory=mem)
    torch.testing.assert_close(out - z, m*(z - mem.mean[1]))

def test_noise_has_the_class_std():
    mem,_,_ = separated_memory(n_dims=5, per_class=200, bank_size=16)
    n,m = 40_000,0.6
    z,y = torch.zeros(n, 5),torch.full((n,), 2)
    out = gaussian_noise(z, m, y=y, memory=mem)
    torch.testing.assert_close(out.std(0), m*mem.std[2], rtol=0.03, atol=1e-4)
    torch.testing.assert_close(out.mean(0), torch.zeros(5), atol=0.03, rtol=0)

@pytest.mark.parametrize('m', [0.4, 1.])
def test_difference_adds_difference_of_two_distinct_members(m):
    mem,_,_ = separated_memory()
    z,y = torch.randn(60, 4),torch.arange(3).repeat(20)
    d = (difference_transform(z, m, y=y, memory=mem) - z)/m
    for i in range(60):
        bank = mem.bank[y[i]]
        diffs = (bank[:, None] - bank[None])                   # (K, K, d): member j minus member k
        off_diag = ~torch.eye(len(bank), dtype=torch.bool)
        assert is_row_of(d[i], diffs[off_diag], atol=1e-3), f"sample {i}: not the difference of two distinct members of its class"

@pytest.mark.parametrize('name', list(MODALS_OPS))
def test_classes_not_ready_are_left_alone(name):
    mem = ClassMemory(3, 4, bank_size=4)
    mem.update(torch.randn(3, 4), torch.tensor([0, 0, 1]))      # class 0 ready, class 1 has one member, class 2 none
    z,y = torch.randn(9, 4),torch.tensor([0, 1, 2]*3)
    out = get_op(name).fn(z, 0.9, y=y, memory=mem)
    assert torch.isfinite(out).all()
    assert torch.equal(out[y != 0], z[y != 0])
    assert not torch.equal(out[y == 0], z[y == 0])

@pytest.mark.parametrize('name', list(MODALS_OPS))
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float32])
def test_ops_keep_dtype_and_subbatch_indices(name, dtype):
    mem,_,_ = separated_memory()
    y = torch.arange(3).repeat(4)
    idx = torch.tensor([1, 4, 5, 11])                           # the rows of the batch that drew the operation
    z = (torch.randn(4, 4) + 100.*y[idx][:, None]).to(dtype)
    out = get_op(name).fn(z, 0.5, idx=idx, y=y, memory=mem)
    assert out.dtype == dtype and out.shape == z.shape
    assert ((out.float() - 100.*y[idx][:, None]).abs() < 60).all()   # stayed with its own class

def test_ops_through_a_policy_never_mix_classes():
    mem,_,_ = separated_memory(bank_size=16)
    pol = modals_policy(10, 9)
    y = torch.randint(0, 3, (500,))
    z = torch.randn(500, 4) + 100.*y[:, None]
    z0 = z.clone()
    out = pol.apply(z, y=y, memory=mem)
    assert torch.equal(z, z0) and torch.isfinite(out).all()
    assert (out - 100.*y[:, None]).abs().max() < 60             # nearest class centre is still its own
    assert (out != z).any(1).float().mean() > 0.6               # 0.8 of samples draw 1 or 2 operations at p = 1

def test_ops_need_labels_and_memory():
    with pytest.raises(ValueError, match='need the batch'): hard_extrapolation(torch.randn(2, 3), .5)

# ---------------------------------------------------------------- the class memory
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=8), n_classes=st.integers(1, 5),
       scale=st.floats(0.01, 1000), seed=st.integers(0, 2**16))
def test_memory_statistics_are_exact(sizes, n_classes, scale, seed):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    y = torch.randint(0, n_classes, (n,), generator=g)
    z = (torch.randn(n, 3, generator=g)*scale + 5*scale)
    mem = ClassMemory(n_classes, 3, bank_size=4)
    start = 0
    for s in sizes: mem.update(z[start:start+s], y[start:start+s]); start += s
    for c in range(n_classes):
        zc = z[y == c].double()
        assert int(mem.count[c]) == len(zc)
        if len(zc) == 0: continue
        torch.testing.assert_close(mem.mean[c].double(), zc.mean(0), rtol=1e-4, atol=1e-5*scale)
        if len(zc) >= 2: torch.testing.assert_close(mem.std[c].double(), zc.std(0), rtol=2e-3, atol=1e-4*scale)
        else: assert (mem.std[c] == 0).all()
        k = min(len(zc), 4)
        assert int(mem.n_bank[c]) == k
        assert {tuple(r) for r in mem.bank[c, :k].tolist()} == {tuple(r) for r in z[y == c][-k:].tolist()}  # the last k

def test_memory_bank_keeps_last_members_of_a_big_batch():
    mem = ClassMemory(2, 1, bank_size=3)
    mem.update(torch.arange(10.)[:, None], torch.zeros(10, dtype=torch.long))
    assert sorted(mem.bank[0, :, 0].tolist()) == [7., 8., 9.]
    mem.update(torch.tensor([[20.]]), torch.tensor([0]))
    assert sorted(mem.bank[0, :, 0].tolist()) == [8., 9., 20.]
    assert int(mem.n_bank[0]) == 3 and int(mem.n_bank[1]) == 0 and mem.ready.tolist() == [True, False]

def test_memory_horizon_forgets_old_latents():
    mem = ClassMemory(1, 2, horizon=50)
    for _ in range(20): mem.update(torch.randn(25, 2), torch.zeros(25, dtype=torch.long))
    for _ in range(20): mem.update(torch.randn(25, 2)*3 + 10, torch.zeros(25, dtype=torch.long))
    torch.testing.assert_close(mem.mean[0], torch.full((2,), 10.), atol=0.5, rtol=0)
    torch.testing.assert_close(mem.std[0], torch.full((2,), 3.), atol=0.6, rtol=0)
    assert float(mem.count[0]) == 75                          # capped at 50, plus the last batch

def test_hard_examples_follow_softmax_of_scores():
    mem = ClassMemory(1, 1, bank_size=5)
    scores = torch.tensor([0., 1., 2., 0.5, -1.])
    mem.update(torch.arange(5.)[:, None], torch.zeros(5, dtype=torch.long), score=scores)
    for T in (0.5, 1., 4.):
        draws = mem.hard_examples(torch.zeros(50_000, dtype=torch.long), T)[:, 0].long()
        torch.testing.assert_close(torch.bincount(draws, minlength=5)/50_000., F.softmax(scores/T, 0), atol=0.01, rtol=0)

def test_pairs_are_distinct_members():
    mem = ClassMemory(2, 1, bank_size=6)
    mem.update(torch.arange(4.)[:, None], torch.zeros(4, dtype=torch.long))
    a,b = mem.pairs(torch.zeros(20_000, dtype=torch.long))
    assert (a != b).all() and set(a[:, 0].long().tolist()) == set(b[:, 0].long().tolist()) == {0, 1, 2, 3}

def test_memory_rejects_wrong_shapes():
    mem = ClassMemory(2, 3)
    with pytest.raises(ValueError, match='3-d latents got latents of shape'): mem.update(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match='`bank_size` must be an integer >= 2'): ClassMemory(2, 3, bank_size=1)

# ---------------------------------------------------------------- a magnitude per sample
def _filled_memory(C=3, d=5, seed=0):
    torch.manual_seed(seed)
    mem = ClassMemory(C, d, bank_size=8)
    mem.update(torch.randn(40, d), torch.randint(0, C - 1, (40,)), score=torch.rand(40))  # the last class stays unready
    return mem

def _fixed_memory_draws(monkeypatch):
    "Hard examples, pairs and noise that do not depend on how a batch is split into calls"
    monkeypatch.setattr(ClassMemory, 'hard_examples', lambda self, y, temperature=1.: self.bank[y, 0]*temperature)
    monkeypatch.setattr(ClassMemory, 'pairs', lambda self, y: (self.bank[y, 1], self.bank[y, 0]))
    monkeypatch.setattr(torch, 'randn_like', lambda t: torch.ones_like(t))

@pytest.mark.parametrize('name', MODALS_OPS)
def test_latent_ops_take_a_magnitude_per_sample(monkeypatch, name):
    _fixed_memory_draws(monkeypatch)
    mem,z,y = _filled_memory(),torch.randn(12, 5),torch.arange(12) % 3
    mags = torch.arange(12, dtype=torch.float64)/12
    fn = get_op(name).fn
    out = fn(z, mags, y=y, memory=mem)
    ref = torch.cat([fn(z[i:i+1], float(mags[i]), idx=torch.tensor([i]), y=y, memory=mem) for i in range(12)])
    assert torch.equal(out, ref)
    assert torch.equal(out[y == 2], z[y == 2])                 # an unready class is left alone
    with pytest.raises(ValueError, match='12 latents but 3 magnitudes'): fn(z, mags[:3], y=y, memory=mem)

@pytest.mark.parametrize('seed', range(3))
def test_modals_policy_one_call_per_operation_equals_one_per_setting(monkeypatch, seed):
    _fixed_memory_draws(monkeypatch)
    mem = _filled_memory(seed=seed)
    z,y = torch.randn(64, 5),torch.randint(0, 3, (64,))
    pol = Policy([(o, 7, m) for o in MODALS_OPS for m in (2, 6)], n_ops_weights=(0, 0.5, 0.5))
    plan = pol.plan(64)
    out = pol.apply(z, plan, y=y, memory=mem)
    ref = z.clone()
    for row in plan:
        for k,s in enumerate(pol.settings):
            idx = (row == k).nonzero()[:, 0]
            if len(idx): ref[idx] = get_op(s.op).fn(ref[idx], s.m, idx=idx, y=y, memory=mem)
    assert torch.equal(out, ref)
    assert all(len(pol.calls(row)) <= len(MODALS_OPS) for row in plan)

def test_plan_draws_by_the_weights_and_probabilities():
    "The plan's 0/1/2 operations follow `n_ops_weights`, and each setting fires in proportion to its probability"
    pol = Policy([('HardInterpolation', 10, 1), ('GaussianNoise', 5, 1), ('DifferenceTransform', 0, 1)],
                 n_ops_weights=(0.2, 0.3, 0.5))
    torch.manual_seed(0)
    plan = pol.plan(40_000)
    n = (plan >= 0).sum(0)
    # settings fire with p = 1, 0.5, 0: two operations need both firing (p 0.5), so some samples get fewer
    assert abs(float((n == 0).float().mean()) - 0.2) < 0.01
    assert abs(float((n == 2).float().mean()) - 0.5*0.5) < 0.01
    assert not (plan == 2).any() and (plan[0] != plan[1])[n == 2].all()
    first = plan[0][n >= 1]
    assert abs(float((first == 0).float().mean()) - 0.75) < 0.02  # a random order: setting 0 first unless 1 fired first

# ---------------------------------------------------------------- the triplet loss
def brute_force_valid(D, y, margin, a, p, mining):
    "Negatives that qualify for the pair (a, p), and the loss of each"
    out = {}
    for n in range(len(y)):
        if y[n] == y[a]: continue
        l = float(D[a, p] - D[a, n] + margin)
        if mining == 'semihard' and 0 < l < margin: out[n] = l
        if mining in ('random', 'hardest') and l > 0: out[n] = l
    if mining == 'hardest' and out: best = max(out.values()); out = {n: l for n,l in out.items() if l == best}
    return out

@pytest.mark.parametrize('mining', list(TRIPLET_MINING))
@pytest.mark.parametrize('seed', range(6))
def test_triplets_match_brute_force(mining, seed):
    torch.manual_seed(seed)
    bs = int(torch.randint(4, 14, ()))
    z,y = torch.randn(bs, 3),torch.randint(0, 3, (bs,))
    margin = [0.5, 2., 6.][seed % 3]
    D = sq_distances(z)
    torch.manual_seed(100 + seed)
    a,p,n = select_triplets(D, y, margin, mining)
    assert len(set(a.tolist())) == len(a)                     # one triplet per anchor
    eligible = {i: {j for j in range(bs) if j != i and y[j] == y[i] and brute_force_valid(D, y, margin, i, j, 'random')}
                for i in range(bs)}
    losses = []
    for i,j,k in zip(a.tolist(), p.tolist(), n.tolist()):
        assert j in eligible[i], f"anchor {i} got positive {j}, not one of {sorted(eligible[i])}"
        valid = brute_force_valid(D, y, margin, i, j, mining)
        assert k in valid, f"({i}, {j}) got negative {k}, not one of {sorted(valid)}"
        losses.append(valid[k])
    has = {i for i,e in eligible.items() if e}
    if mining == 'semihard': assert set(a.tolist()) <= has  # an anchor whose drawn positive has no semi-hard negative drops
    else: assert set(a.tolist()) == has                     # every anchor with a triplet gets one
    torch.manual_seed(100 + seed)                              # the same draws: the loss of the triplets above
    loss = triplet_loss(z, y, margin, mining)
    ref = sum(losses)/len(losses) if losses else 0.
    assert math.isclose(float(loss), ref, rel_tol=1e-4, abs_tol=1e-5)

def test_positives_are_uniform_over_the_eligible_ones():
    z = torch.tensor([[0.], [0.1], [0.3], [0.35], [3.], [1.2]])
    y = torch.tensor([0, 0, 0, 0, 0, 1])
    D = sq_distances(z)
    eligible = {j for j in range(1, 5) if brute_force_valid(D, y, 1.4, 0, j, 'random')}
    assert 2 <= len(eligible) < 4                              # some positives of anchor 0 have no negative inside
    picks,trials = [],1200
    for s in range(trials):
        torch.manual_seed(s)
        a,p,n = select_triplets(D, y, 1.4, 'random')
        picks.append(int(p[a == 0][0]))
    counts = np.bincount(picks, minlength=len(y))
    assert set(np.nonzero(counts)[0]) == eligible
    assert counts[list(eligible)].min() > trials/len(eligible)*0.7

@pytest.mark.parametrize('mining', ['random', 'semihard'])
def test_random_negatives_are_uniform_over_the_valid_ones(mining):
    z = torch.tensor([[0.], [0.1], [0.5], [0.6], [0.7], [0.9], [5.]])
    y = torch.tensor([0, 0, 1, 1, 1, 1, 1])
    D = sq_distances(z)
    valid = set(brute_force_valid(D, y, 1., 0, 1, mining))
    assert len(valid) >= 3
    picks,trials = [],1200
    for s in range(trials):
        torch.manual_seed(s)
        a,p,n = select_triplets(D, y, 1., mining)
        picks.append(int(n[a == 0][0]))                        # anchor 0's only positive is 1
    counts = np.bincount(picks, minlength=len(y))
    assert set(np.nonzero(counts)[0]) == valid
    assert counts[list(valid)].min() > trials/len(valid)*0.7

def test_triplet_loss_zero_without_triplets_and_differentiable():
    z = torch.randn(6, 3, requires_grad=True)
    assert float(triplet_loss(z, torch.zeros(6, dtype=torch.long))) == 0
    assert float(triplet_loss(z, torch.arange(6))) == 0         # no positives
    far = torch.tensor([[0.], [0.01], [100.], [100.01]])
    assert float(triplet_loss(far, torch.tensor([0, 0, 1, 1]), 1.)) == 0   # every negative beyond the margin
    loss = triplet_loss(z, torch.tensor([0, 0, 0, 1, 1, 1]), 50.)
    loss.backward()
    assert loss > 0 and z.grad.abs().sum() > 0

# ---------------------------------------------------------------- discriminator and adversarial term
def synth_dls(n=64, d_in=4, n_classes=3, bs=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    ds = list(zip(x, y))
    return DataLoaders.from_dsets(ds, ds, bs=bs, num_workers=0)

def synth_learner(cbs=None, **kwargs):
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    learn = Learner(synth_dls(**kwargs), model, loss_func=CrossEntropyLossFlat(), cbs=cbs)
    learn.remove_cb(ProgressCallback)
    return learn

def snapshot(module): return [p.detach().clone() for p in module.parameters()]
def same(a, b): return all(torch.equal(x, y) for x,y in zip(a, b))

def test_discriminator_step_changes_only_the_discriminator():
    cb = MODALS(adv_weight=0.1)
    learn = synth_learner(cbs=cb)
    fit_quiet(learn, 1)
    model0,disc0 = snapshot(learn.model),snapshot(cb.disc)
    cb._zp = torch.randn(16, 8, requires_grad=True)
    cb.step_discriminator()
    assert same(snapshot(learn.model), model0) and not same(snapshot(cb.disc), disc0)
    assert cb._zp.grad is None                                  # the fake latents enter detached

class Probe(Callback):
    "Checks, during training, where the adversarial term's gradient goes"
    order,run_valid = 16,False
    def __init__(self): self.model_grads,self.disc_untouched = [],[]
    def after_loss(self):
        adv = self.learn.modals.terms['adv']
        params = [p for p in self.learn.model.parameters()]
        g = torch.autograd.grad(adv, params, retain_graph=True, allow_unused=True)
        self.model_grads.append(sum(float(x.abs().sum()) for x in g if x is not None))
    def before_backward(self): self.disc_before = [None if p.grad is None else p.grad.clone() for p in self.learn.modals.disc.parameters()]
    def after_backward(self):
        after = [p.grad for p in self.learn.modals.disc.parameters()]
        self.disc_untouched.append(all((a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
                                       for a,b in zip(self.disc_before, after)))

def test_adversarial_term_trains_the_model_not_the_discriminator():
    probe = Probe()
    learn = synth_learner(cbs=[MODALS([], triplet_weight=0, adv_weight=1.), probe])
    fit_quiet(learn, 1)
    assert len(probe.model_grads) == 4 and all(g > 0 for g in probe.model_grads)
    assert all(probe.disc_untouched)
    assert 'disc' in learn.modals.terms

def test_adversarial_term_and_discriminator_see_the_same_augmented_latents(monkeypatch):
    "The encoder's term and the discriminator's fake batch are both the z' the head scores, not z"
    import fastaug.modals as fm
    heads,advs,fakes = [],[],[]
    class Spy(Callback):
        order,run_valid = 16,False
        def after_pred(self):
            cb = self.learn.modals
            advs.append((float(cb.terms['adv']), float(adversarial_loss(cb.disc, cb._zp)), float(adversarial_loss(cb.disc, cb._z))))
    orig = fm.discriminator_loss
    monkeypatch.setattr(fm, 'discriminator_loss', lambda disc, fake, real=None: (fakes.append(fake.detach().clone()), orig(disc, fake, real))[1])
    cb = MODALS(modals_policy(10, 9), triplet_weight=0, adv_weight=1.)
    learn = synth_learner(cbs=[cb, Spy()])
    class HeadInput(Callback):
        order,run_valid = 16,False
        def before_batch(self): self.h = self.learn.model[-1].register_forward_pre_hook(lambda m, a: heads.append(a[0].detach().clone()))
        def after_pred(self): self.h.remove()
    learn.add_cb(HeadInput())
    fit_quiet(learn, 2)
    assert len(fakes) == len(heads) == 8
    assert all(torch.equal(f, h) for f,h in zip(fakes, heads))  # the discriminator's fakes are what the head scored
    assert all(math.isclose(a, b, rel_tol=1e-6) for a,b,_ in advs)
    assert any(not math.isclose(b, c, rel_tol=1e-3) for _,b,c in advs[4:])   # and z' is not z

def test_discriminator_and_memory_are_not_in_the_model():
    cb = MODALS()
    learn = synth_learner(cbs=cb)
    fit_quiet(learn, 1)
    model_params = {id(p) for p in learn.model.parameters()}
    opt_params = {id(p) for pg in learn.opt.param_lists for p in pg}
    assert not any(id(p) in model_params | opt_params for p in cb.disc.parameters())
    assert not any(isinstance(m, Discriminator) for m in learn.model.modules())

# ---------------------------------------------------------------- the loss, composed
def test_extra_terms_enter_the_loss_once_under_mixup():
    "With MixUp outside, the loss is the mixed loss of head(z') plus the extra terms, once"
    rec = {}
    class Rec(Callback):
        order,run_valid = 25,False
        def after_loss(self):
            if 'loss' in rec: return
            cb,mix = self.learn.modals,self.learn.mix_up
            lam,perm = mix.lam,mix.perm
            y = self.learn.yb[0]
            ce = lambda t: F.cross_entropy(self.learn.pred, t, reduction='none')
            extra = cb.triplet_weight*cb.terms['triplet'] + cb.adv_weight*cb.terms['adv']
            rec['loss'],rec['ref'] = float(self.learn.loss_grad),float((lam*ce(y) + (1-lam)*ce(y[perm])).mean() + extra)
    learn = synth_learner(cbs=[MODALS(triplet_weight=0.5, adv_weight=0.5, margin=10.), MixUp(0.4), Rec()])
    lf = learn.loss_func
    fit_quiet(learn, 1)
    assert math.isclose(rec['loss'], rec['ref'], rel_tol=1e-5)
    assert learn.loss_func is lf

def test_gradient_accumulation_divides_the_extra_terms_too():
    rec = []
    class Rec(Callback):
        order,run_valid = 7,False   # after GradientAccumulation's after_loss (order 6), before MixedPrecision
        def after_loss(self):
            cb = self.learn.modals
            extra = cb.triplet_weight*cb.terms['triplet'] + cb.adv_weight*cb.terms['adv']
            ce = F.cross_entropy(self.learn.pred, self.learn.yb[0])
            rec.append((float(self.learn.loss_grad), float((ce + extra)/(32/16))))
    cb = MODALS(triplet_weight=0.5, adv_weight=0.5, margin=10.)
    learn = synth_learner(cbs=[cb, GradientAccumulation(32), Rec()])
    steps = []
    orig = cb.step_discriminator
    cb.step_discriminator = lambda: (steps.append(1), orig())
    fit_quiet(learn, 1)
    assert all(math.isclose(a, b, rel_tol=1e-5) for a,b in rec)
    assert len(steps) == 4                                      # the discriminator steps every batch

# ---------------------------------------------------------------- every modality and workflow
@pytest.mark.parametrize('modality', ['image', 'tabular', 'series', 'text'])
def test_trains_on_every_modality(modality):
    learn = small_learner(modality, cbs=MODALS())
    lf = learn.loss_func
    fit_quiet(learn, 1)
    losses = torch.stack([torch.as_tensor(l) for l in learn.recorder.losses])
    assert len(losses) and torch.isfinite(losses).all()
    assert learn.loss_func is lf and not hooks_left(learn.model)
    mem = learn.modals.memory
    assert mem.ready.all() and torch.isfinite(mem.mean).all() and torch.isfinite(mem.std).all()
    assert mem.n_dims == find_head(learn.model).in_features
    assert {'triplet', 'adv', 'disc'} <= set(learn.modals.terms)

@pytest.mark.parametrize('modality', ['image', 'tabular'])
def test_get_preds_sees_the_untouched_model(modality):
    learn = small_learner(modality, cbs=MODALS())
    fit_quiet(learn, 1)
    preds,targs = learn.get_preds()
    cb = learn.modals
    learn.remove_cb(cb)
    preds0,_ = learn.get_preds()
    assert torch.equal(preds, preds0)
    assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)
    assert not hooks_left(learn.model)

def test_lr_find_leaves_memory_and_discriminator_alone():
    learn = small_learner('image', cbs=MODALS())
    lf = learn.loss_func
    with learn.no_logging(): learn.lr_find(num_it=8, show_plot=False)
    cb = learn.modals
    assert int(cb.memory.count.sum()) == 0 and int(cb.memory.n_bank.sum()) == 0
    disc0 = snapshot(cb.disc)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    with learn.no_logging(): learn.lr_find(num_it=8, show_plot=False)
    assert same(snapshot(cb.disc), disc0)
    fit_quiet(learn, 1)
    assert int(cb.memory.count.sum()) == len(learn.dls.train)*learn.dls.bs
    assert not same(snapshot(cb.disc), disc0) and learn.loss_func is lf

def check_fine_tune(learn):
    lf = learn.loss_func
    mems = []
    class Mem(Callback):
        order = 16
        def before_train(self):  # the memory is made when training starts
            if self.epoch == 0: mems.append((id(self.learn.modals.memory), float(self.learn.modals.memory.count.sum()), self.learn.modals.disc))
    learn.add_cb(Mem())
    with learn.no_logging(): learn.fine_tune(1, 1e-3, freeze_epochs=1)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    (m0,c0,d0),(m1,c1,d1) = mems
    assert c0 == 0 and c1 > 0 and m0 == m1 and d0 is d1         # the unfrozen fit goes on with the frozen fit's memory

def test_fine_tune_keeps_the_memory_across_fits():
    check_fine_tune(small_learner('image', cbs=MODALS()))

@pytest.mark.slow
def test_fine_tune_vision_learner():
    learn = vision_learner(small_dls('image'), resnet18, pretrained=False, n_in=1, cbs=MODALS(), metrics=accuracy)
    learn.remove_cb(ProgressCallback)
    check_fine_tune(learn)

@pytest.mark.parametrize('modality', ['image', 'tabular'])
def test_export_then_load(modality, tmp_path):
    learn = small_learner(modality, cbs=MODALS(), path=tmp_path)
    fit_quiet(learn, 1)
    learn.export('learn.pkl')
    size_with = (tmp_path/'learn.pkl').stat().st_size
    cb = learn.modals
    assert cb.memory is not None and cb.disc is not None       # exporting does not strip the live callback
    new = load_learner(tmp_path/'learn.pkl')
    state = new.modals
    assert state.memory is None and state.disc is None and state.disc_opt is None and state.policy == cb.policy
    assert not hooks_left(new.model) and not any(isinstance(m, Discriminator) for m in new.model.modules())
    item = learn.dls.valid_ds.items[0] if modality != 'tabular' else learn.dls.valid_ds.decode_row(learn.dls.valid_ds.items.iloc[0])
    dec,idx,probs = new.predict(item)
    assert math.isclose(float(probs.sum()), 1, rel_tol=1e-5)
    learn.remove_cb(cb)
    learn.export('plain.pkl')
    assert size_with < (tmp_path/'plain.pkl').stat().st_size + 20_000   # no memory, no discriminator in the file

@pytest.mark.parametrize('exc', [CancelFitException, CancelTrainException, CancelEpochException])
def test_cancelled_fit_restores_everything(exc):
    class Cancel(Callback):
        order = 30
        def after_batch(self):
            if self.training and self.iter == 2: raise exc()
    learn = small_learner('tabular', cbs=[MODALS(), Cancel()])
    lf = learn.loss_func
    fit_quiet(learn, 2)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    assert learn.modals._z is None and learn.modals._zp is None

def test_exception_mid_batch_is_cleaned_up_by_next_validation():
    class Boom(Callback):
        def after_loss(self):
            if self.training: raise RuntimeError('boom')
    learn = small_learner('series', cbs=MODALS())
    lf = learn.loss_func
    with pytest.raises(RuntimeError): fit_quiet(learn, 1, cbs=Boom())
    learn.get_preds()
    assert learn.loss_func is lf and not hooks_left(learn.model)

def test_to_fp16_trains_on_cpu():
    learn = small_learner('image', cbs=MODALS()).to_fp16()
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)
    assert learn.modals.memory.mean.dtype == torch.float32

class BF16Autocast(Callback):
    order = 10
    def before_batch(self): self.ctx = torch.autocast('cpu', dtype=torch.bfloat16); self.ctx.__enter__()
    def after_loss(self): self.ctx.__exit__(None, None, None)

def test_bf16_autocast():
    learn = small_learner('tabular', cbs=[MODALS(), BF16Autocast()])
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)
    mem = learn.modals.memory
    assert mem.mean.dtype == torch.float32 and torch.isfinite(mem.std).all()

def test_refresh_epoch_rebuilds_exact_statistics():
    learn = synth_learner(cbs=MODALS(refresh='epoch', bank_size=64))
    seen = []
    class Check(Callback):
        order,run_valid = 16,False
        def before_batch(self):
            if self.iter == 0: seen.append(self.learn.modals.memory.count.clone())
    learn.add_cb(Check())
    fit_quiet(learn, 2)
    cb = learn.modals
    learn.model.train()
    mem = cb.rebuild_memory(learn.dls.train.new(shuffle=False, drop_last=False))
    assert learn.model.training                                 # the pass runs in eval mode and puts the mode back
    learn.model.eval()
    with torch.no_grad(), LatentHook(cb.head) as h: learn.model(torch.stack([x for x,_ in learn.dls.train_ds]))
    z,y = h.z,torch.stack([t for _,t in learn.dls.train_ds])
    for c in range(3):
        torch.testing.assert_close(mem.mean[c], z[y == c].mean(0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mem.std[c], z[y == c].std(0), atol=1e-5, rtol=1e-3)
    assert len(seen) == 2 and all(int(s.sum()) == len(learn.dls.train)*learn.dls.bs for s in seen)

def test_memory_is_fixed_during_a_refreshed_epoch():
    counts = []
    class Check(Callback):
        order,run_valid = 16,False
        def after_batch(self): counts.append(float(self.learn.modals.memory.count.sum()))
    learn = synth_learner(cbs=[MODALS(refresh='epoch'), Check()])
    fit_quiet(learn, 1)
    assert len(set(counts)) == 1

def test_policy_can_be_swapped_like_pba_does():
    cb = MODALS()
    cb.policy = Policy([('GaussianNoise', 3, 3)], n_ops_weights=MODALS_N_OPS_WEIGHTS)
    assert cb.policy.ops == ['GaussianNoise']
    cb.policy = [('DifferenceTransform', 4, 4)]
    assert cb.policy.n_ops_weights == MODALS_N_OPS_WEIGHTS
    @register_op('_TestImageOp', 'image')
    def _img(x, magnitude, **kwargs): return x
    with pytest.raises(ValueError, match='MODALS applies latent operations, got a policy of image operations'):
        cb.policy = Policy([('_TestImageOp', 1, 1)])
    assert isinstance(cb, PolicyCallback) and cb.kind == 'latent'
    assert set(MODALS_OPS) <= set(ops_of('latent'))

def test_policy_changed_mid_training_takes_effect():
    cb = MODALS([], triplet_weight=0, adv_weight=0)
    diffs = []
    class Spy(Callback):
        order,run_valid = 16,False
        def before_epoch(self):
            if self.epoch == 1: self.learn.modals.policy = modals_policy(10, 9)
        def after_pred(self): diffs.append(bool((self.learn.modals._zp != self.learn.modals._z).any()))
    learn = synth_learner(cbs=[cb, Spy()])
    fit_quiet(learn, 2)
    assert len(diffs) == 8 and not any(diffs[:4]) and all(diffs[4:])

# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize('make,msg', [
    (lambda: MODALS(triplet_weight=-0.1), '`triplet_weight` must be a finite number >= 0'),
    (lambda: MODALS(adv_weight=float('nan')), '`adv_weight` must be a finite number >= 0'),
    (lambda: MODALS(margin=0), '`margin` must be a number > 0'),
    (lambda: MODALS(temperature=-1), '`temperature` must be a number > 0'),
    (lambda: MODALS(mining='hard'), "`mining` must be one of ['random', 'hardest', 'semihard']"),
    (lambda: MODALS(score='loss2'), "`score` must be one of ['loss', 'distance']"),
    (lambda: MODALS(bank_size=1), '`bank_size` must be an integer >= 2'),
    (lambda: MODALS(horizon=0), '`horizon` must be an integer >= 2'),
    (lambda: MODALS(refresh='batch'), "`refresh` must be one of [None, 'epoch']"),
    (lambda: MODALS([('Rotat', 1, 1)]), "unknown operation 'Rotat'"),
    (lambda: MODALS([('GaussianNoise', 11, 1)]), 'probability level must be an integer in [0, 10]'),
])
def test_bad_arguments(make, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): make()

def test_model_without_linear_head():
    class NoLinear(nn.Module):
        def __init__(self): super().__init__(); self.conv = nn.Conv1d(1, 3, 4)
        def forward(self, x): return self.conv(x[:, None])[:, :, 0]
    learn = Learner(synth_dls(), NoLinear(), loss_func=CrossEntropyLossFlat(), cbs=MODALS())
    learn.remove_cb(ProgressCallback)
    with pytest.raises(ValueError, match='has no nn.Linear layer to use as the classifier head'): fit_quiet(learn)

def test_regression_target():
    x = torch.randn(32, 4)
    ds = list(zip(x, x[:, 0]))
    learn = Learner(DataLoaders.from_dsets(ds, ds, bs=8), nn.Sequential(nn.Linear(4, 1)), loss_func=F.mse_loss, cbs=MODALS())
    learn.remove_cb(ProgressCallback)
    with pytest.raises(ValueError, match='MODALS needs integer class labels'): fit_quiet(learn)
    assert learn.loss_func is F.mse_loss and not hooks_left(learn.model)

def test_labels_out_of_range():
    learn = synth_learner(cbs=MODALS(head=None))
    learn.model[-1] = nn.Linear(8, 2)                           # labels go up to 2
    with pytest.raises(ValueError, match=re.escape('labels must be in [0, 2)')): fit_quiet(learn)

def test_head_applied_to_a_sequence():
    class PerToken(nn.Module):
        def __init__(self): super().__init__(); self.emb,self.lin = nn.Linear(4, 8),nn.Linear(8, 3)
        def forward(self, x): return self.lin(self.emb(x)[:, None].expand(-1, 2, -1)).mean(1)
    learn = Learner(synth_dls(), PerToken(), loss_func=CrossEntropyLossFlat(), cbs=MODALS())
    learn.remove_cb(ProgressCallback)
    with pytest.raises(ValueError, match=r'latent of shape \(batch, features\)'): fit_quiet(learn)
    assert not hooks_left(learn.model)

# ---------------------------------------------------------------- distributed
def _dist_worker(rank, world, port, out):
    import os
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        z,y = torch.randn(world*40, 3, generator=g)*2 + 1,torch.randint(0, 3, (world*40,), generator=g)
        mem = ClassMemory(3, 3, bank_size=4)
        for i in range(4):                                      # each rank sees its own shard of every batch
            b = slice(i*world*10 + rank*10, i*world*10 + (rank+1)*10)
            mem.update(z[b], y[b])
        torch.save(dict(mean=mem.mean, std=mem.std, count=mem.count, n_bank=mem.n_bank, z=z, y=y), f'{out}/{rank}.pt')
    finally: torch.distributed.destroy_process_group()

@pytest.mark.slow
def test_memory_statistics_are_reduced_across_processes(tmp_path):
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    mp.spawn(_dist_worker, args=(2, port, str(tmp_path)), nprocs=2)
    r0,r1 = torch.load(tmp_path/'0.pt'),torch.load(tmp_path/'1.pt')
    z,y = r0['z'],r0['y']
    for k in ('mean', 'std', 'count'): assert torch.equal(r0[k], r1[k])   # every rank holds the same statistics
    for c in range(3):
        torch.testing.assert_close(r0['mean'][c], z[y == c].mean(0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r0['std'][c], z[y == c].std(0), atol=1e-5, rtol=1e-4)
    assert int(r0['count'].sum()) == len(y)
