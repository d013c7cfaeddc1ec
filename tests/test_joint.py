"Joint policies: several kinds in one policy and schedule, the techniques as settings, replay and search over them"
import json, random
import numpy as np, pytest, torch
from fastai.learner import load_learner
from fastai.callback.core import Callback
from fastai.torch_core import set_seed
import fastai.callback.schedule  # fit_one_cycle, lr_find
from fastaug.core import plain
from fastaug.policy import *
from fastaug.mixup import MixUp, CutMix, CutMixUp
from fastaug.manifold import ManifoldMixup
from fastaug.isda import ISDA
from fastaug.modals import MODALS, MODALS_OPS, MODALS_N_OPS_WEIGHTS, MODALS_LOSS_OPS, modals_policy, modals_loss_weight
from fastaug.image_ops import ImagePolicy
from fastaug.series_ops import SeriesPolicy, SERIES_OPS
from fastaug.techniques import *
from fastaug.pba import PBA, explore
from fastaug.search import pba_search
from fastaug.datasets import get_learner
from conftest import small_dls, small_learner, hooks_left

JOINT = Policy([('TimeWarp', 5, 4), ('Jitter', 3, 3), ('GaussianNoise', 4, 2), ('MixUp', 4, 2), ('CutMix', 2, 6),
                ('ISDA', 8, 5)], n_ops_weights={'latent': MODALS_N_OPS_WEIGHTS})

def quiet_fit(learn, n=1):
    with learn.no_logging(): learn.fit(n, 1e-2)

def weights_after(modality, cbs, seed=0):
    "The model's weights after one epoch from `seed`: equal tensors mean equal training, bit for bit"
    dls = small_dls(modality)
    set_seed(seed, reproducible=True)
    for dl in dls.loaders: dl.rng = random.Random(seed)
    learn = small_learner(modality, cbs=cbs)
    quiet_fit(learn)
    return torch.cat([p.detach().flatten() for p in learn.model.parameters()])

# ---------------------------------------------------------------- policies and schedules of several kinds
def test_parts_and_kinds():
    assert JOINT.kind == 'joint' and JOINT.kinds == ('series', 'latent', 'mixing', 'isda')
    assert JOINT.part('series') == Policy([('TimeWarp', 5, 4), ('Jitter', 3, 3)])
    assert JOINT.part('latent').n_ops_weights == MODALS_N_OPS_WEIGHTS        # each kind its own 0/1/2 weights
    assert JOINT.part('image') == Policy([]) and len(JOINT.part('image')) == 0
    single = Policy([('Jitter', 3, 3)])
    assert single.part('series') is single and single.kind == 'series' and Policy([]).kind is None
    with pytest.raises(ValueError, match='applied part by part'): JOINT.apply(torch.zeros(4, 1, 40))

def test_joint_schedule_round_trips_and_old_files_load(tmp_path):
    sched = PolicySchedule([JOINT, explore(JOINT, 0)])
    d = sched.to_dict()
    assert d['version'] == 2 and d['kind'] == 'joint' and d['kinds'] == list(JOINT.kinds)
    assert d['epochs'][0]['n_ops_weights'] == {'latent': list(MODALS_N_OPS_WEIGHTS)}
    assert PolicySchedule.load(sched.save(tmp_path/'s.json')) == sched
    bad = {**d, 'kinds': ['series']}
    with pytest.raises(ScheduleError, match="'kinds' says"): PolicySchedule.from_dict(bad)
    # one kind keeps the version 1 file, byte for byte what earlier fastaug wrote
    one = PolicySchedule([Policy([('Jitter', 3, 3), ('TimeWarp', 2, 2)])])
    assert one.to_dict() == {'format': SCHEDULE_FORMAT, 'version': 1, 'kind': 'series', 'epochs': [
        {'epoch': 0, 'n_ops_weights': [0.2, 0.3, 0.5], 'policy': [['Jitter', 3, 3], ['TimeWarp', 2, 2]]}]}
    from pathlib import Path
    stored = Path(__file__).parents[1]/'benchmarks'/'results'/'searches'/'modals-pba'/'series-reduced'/'schedule.json'
    old = PolicySchedule.load(stored)
    assert old.kind == 'latent' and old.kinds == ('latent',) and len(old) == 32

def test_old_pickled_policies_get_their_kinds():
    p = Policy([('Jitter', 3, 3)])
    state = {k: v for k,v in p.__getstate__().items() if k != 'kinds'}
    state['kind'] = 'series'  # what a policy pickled by earlier fastaug holds
    q = Policy.__new__(Policy); q.__setstate__(state)
    assert q.kinds == ('series',) and q.kind == 'series' and q == p

def test_explore_perturbs_every_kind():
    rng = np.random.default_rng(0)
    new = [explore(Policy.zero(JOINT.ops, n_ops_weights=JOINT.n_ops_weights), rng) for _ in range(20)]
    for n in new: assert n.kinds == JOINT.kinds and n.n_ops_weights == JOINT.n_ops_weights
    moved = {s.op for n in new for s in n.settings if s.prob or s.mag}
    assert moved == set(JOINT.ops)

# ---------------------------------------------------------------- the techniques as settings
def test_techniques_at_probability_zero_are_as_if_absent():
    zero = Policy.zero(list(MIXING_OPS) + list(ISDA_OPS))
    for modality in ('image', 'tabular'):
        assert torch.equal(weights_after(modality, [MixPolicy(zero), ISDAPolicy(zero)]), weights_after(modality, []))

@pytest.mark.parametrize('name,cb', [('MixUp', lambda: MixUp(0.4)), ('CutMix', lambda: CutMix(0.4)),
                                     ('ManifoldMixup', lambda: ManifoldMixup(0.4))])
def test_a_certain_setting_is_the_technique_itself(name, cb):
    "At probability 1 a single setting draws nothing more than the technique: the same training, bit for bit"
    alpha = mixing_alpha(0.1)
    assert alpha == pytest.approx(0.4)
    technique = cb(); technique.alpha = alpha
    assert torch.equal(weights_after('image', [MixPolicy([(name, 10, 1)])]), weights_after('image', [technique]))

def test_isda_setting_is_isda_with_its_lambda():
    assert torch.equal(weights_after('series', [ISDAPolicy([('ISDA', 10, 5)])]), weights_after('series', [ISDA(0.5)]))

# ---------------------------------------------------------------- MODALS' loss weights as settings
def test_certain_loss_settings_are_modals_own_weights():
    "At probability 1 and magnitude level 1 the two terms weigh 0.01, MODALS()'s own weights: the same training"
    assert modals_loss_weight(0.1) == 0.01
    pol = modals_policy().settings + [('TripletLoss', 10, 1), ('AdversarialLoss', 10, 1)]
    assert torch.equal(weights_after('series', [MODALS(pol, triplet_weight=0.05, adv_weight=0.05)]),
                       weights_after('series', [MODALS()]))

def test_loss_settings_at_probability_zero_add_no_term():
    "At probability 0 the terms are off and nothing is drawn: as MODALS without them, and as no MODALS at all"
    zero = Policy.zero(list(MODALS_LOSS_OPS))
    off = weights_after('tabular', [MODALS(modals_policy(), triplet_weight=0, adv_weight=0)])
    assert torch.equal(weights_after('tabular', [MODALS(modals_policy().settings + zero.settings)]), off)
    assert torch.equal(weights_after('tabular', [MODALS(zero, triplet_weight=0, adv_weight=0)]),
                       weights_after('tabular', []))

def test_loss_settings_weigh_each_batch_and_make_a_discriminator_late():
    "Each term is weighed by its own settings, batch by batch; an adversarial term turned on late gets a discriminator"
    seen = []
    class _Seen(Callback):
        order = 99
        def after_batch(self):
            if self.training: seen.append(dict(self.learn.modals._w))
    cb = MODALS([('TripletLoss', 5, 3), ('AdversarialLoss', 10, 9)], triplet_weight=0.05, adv_weight=0)
    learn = small_learner('series', cbs=[cb, _Seen()])
    quiet_fit(learn)
    assert {w['adv'] for w in seen} == {modals_loss_weight(0.9)} and cb.disc is not None
    assert {w['triplet'] for w in seen} == {0., modals_loss_weight(0.3)}                # half the batches, roughly
    assert 0.2 < np.mean([w['triplet'] > 0 for w in seen]) < 0.8
    cb.policy = [('TripletLoss', 10, 2)]          # no adversarial settings: the callback's own weight (0) holds
    seen.clear(); quiet_fit(learn)
    assert all(w == dict(triplet=modals_loss_weight(0.2), adv=0) for w in seen)
    # the late discriminator comes from its own seed, the same every time, and leaves the run's random numbers alone
    state = torch.get_rng_state()
    cb._late_discriminator(); first = [p.detach().clone() for p in cb.disc.parameters()]
    cb._late_discriminator()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a,b in zip(first, cb.disc.parameters()))

def test_the_joint_space_has_the_loss_settings_only_if_asked():
    "By default MODALS' terms are on at their weights and not in the space; `loss_terms=True` makes them settings"
    from fastaug.auto import joint_space
    from fastaug.trivial import space_ops
    dls = small_dls('series')
    assert not set(MODALS_LOSS_OPS) & set(space_ops(['latent']))
    assert not set(MODALS_LOSS_OPS) & set(joint_space(dls)[0])
    m = next(c for c in joint_space(dls)[1]() if isinstance(c, MODALS))
    assert (m.triplet_weight, m.adv_weight) == (MODALS().triplet_weight, MODALS().adv_weight)
    ops,make = joint_space(dls, loss_terms=True)
    assert set(MODALS_LOSS_OPS) <= set(ops) and set(joint_space(dls)[0]) == set(ops) - set(MODALS_LOSS_OPS)
    m = next(c for c in make() if isinstance(c, MODALS))
    assert (m.triplet_weight, m.adv_weight) == (0, 0)

def test_trivial_and_pba_reach_the_loss_settings(tmp_path):
    "TrivialAugment draws the loss settings like any latent operation; a joint schedule replays them into MODALS"
    from fastaug.trivial import TrivialAugment, space_ops
    assert set(MODALS_LOSS_OPS) <= set(space_ops(['latent'], loss_terms=True))
    w = {'latent': MODALS_N_OPS_WEIGHTS}
    sched = PolicySchedule([Policy([('Jitter', 3, 3), ('TripletLoss', 10, 4)], n_ops_weights=w),
                            Policy([('Jitter', 0, 0), ('AdversarialLoss', 10, 2)], n_ops_weights=w)])
    assert PolicySchedule.load(sched.save(tmp_path/'s.json')) == sched
    seen = []
    class _Seen(Callback):
        order = 99
        def after_batch(self):
            if self.training: seen.append((self.epoch, dict(self.learn.modals._w)))
    cb = MODALS(Policy([], n_ops_weights=MODALS_N_OPS_WEIGHTS), triplet_weight=0, adv_weight=0)
    learn = small_learner('series', cbs=[SeriesPolicy(), cb, PBA(sched), _Seen()])
    quiet_fit(learn, 2)
    expected = {(0, modals_loss_weight(0.4), 0), (1, 0, modals_loss_weight(0.2))}
    assert {(e, w['triplet'], w['adv']) for e,w in seen} == expected
    assert cb.disc is not None

def test_mixing_shares_and_alpha_follow_the_settings():
    cb = MixPolicy([('MixUp', 5, 2), ('CutMix', 3, 7), ('ManifoldMixup', 2, 9)])
    seen = []
    class _Seen(Callback):
        order = 99
        def before_batch(self):
            if self.training: seen.append(None if cb._active is None else (type(cb._active).__name__, cb._active.alpha))
    learn = small_learner('image', cbs=[cb, _Seen()])
    torch.manual_seed(0)
    quiet_fit(learn, 6)
    names = [s and s[0] for s in seen]
    n = len(names)
    p = dict(MixUp=0.5, CutMix=0.3, ManifoldMixup=0.2)
    none = (1-0.5)*(1-0.3)*(1-0.2)
    assert abs(names.count(None)/n - none) < 0.1
    assert names.count('MixUp') > names.count('CutMix') > names.count('ManifoldMixup') > 0
    assert {(n, round(a, 6)) for n,a in filter(None, seen)} == {('MixUp', 0.6), ('CutMix', 1.6), ('ManifoldMixup', 2.0)}
    assert not hooks_left(learn.model)

def test_isda_policy_augments_a_share_of_batches():
    cb = ISDAPolicy([('ISDA', 5, 8)], ramp=None)
    lams = []
    class _Lam(Callback):
        order = 99
        def before_batch(self):
            if self.training: lams.append(cb.lam)
    learn = small_learner('series', cbs=[cb, _Lam()])
    torch.manual_seed(0)
    quiet_fit(learn, 4)
    share = np.mean([l > 0 for l in lams[len(lams)//4:]])  # after the first epoch, whose λ ramps from 0
    assert 0.3 < share < 0.7 and cb.lambda0 == pytest.approx(0.8)

@pytest.mark.parametrize('modality', ['image', 'tabular', 'series', 'text'])
def test_mix_policy_trains_and_exports_on_every_modality(modality, tmp_path):
    ops = [('MixUp', 6, 2), ('ManifoldMixup', 4, 2)] + ([('CutMix', 6, 5)] if modality != 'text' else [])
    learn = small_learner(modality, cbs=[MixPolicy(ops), ISDAPolicy([('ISDA', 6, 5)])])
    lf = learn.loss_func
    with learn.no_logging(): learn.lr_find(num_it=4, show_plot=False)
    quiet_fit(learn)
    assert learn.loss_func is lf and not hooks_left(learn.model)
    learn.export(tmp_path/'l.pkl')
    l2 = load_learner(tmp_path/'l.pkl')
    assert next(c for c in l2.cbs if isinstance(c, MixPolicy)).policy == Policy(ops)

def test_a_technique_is_not_a_tensor_operation():
    with pytest.raises(TypeError, match='CutMix is a technique, applied by the MixPolicy callback'):
        get_op('CutMix').fn(torch.zeros(2), 0.5)

# ---------------------------------------------------------------- replay and search of joint schedules
def joint_callbacks():
    return [SeriesPolicy(), MODALS(Policy([], n_ops_weights=MODALS_N_OPS_WEIGHTS)), MixPolicy(), ISDAPolicy()]

def test_pba_replays_each_callback_its_part_each_epoch():
    sched = PolicySchedule([JOINT, explore(JOINT, 1), explore(JOINT, 2)])
    cbs = joint_callbacks()
    seen = []
    class _Parts(Callback):
        order = 1
        def before_train(self): seen.append([cb.policy for cb in cbs])
    learn = small_learner('series', cbs=cbs + [PBA(sched), _Parts()])
    quiet_fit(learn, 3)
    for e,parts in enumerate(seen):
        for cb,p in zip(cbs, parts): assert p == sched.policies[e].part(cb.kind), (e, cb.kind)
    assert [cb.policy for cb in cbs] == [None, Policy([], n_ops_weights=MODALS_N_OPS_WEIGHTS), None, None]  # put back

def test_pba_says_which_kind_has_no_callback():
    learn = small_learner('series', cbs=[SeriesPolicy(), PBA(PolicySchedule([JOINT]))])
    with pytest.raises(ValueError, match='PBA sets the policy of the Learner.s callbacks applying latent operations'):
        quiet_fit(learn)

def test_joint_search_and_replay(tmp_path):
    ops = ['TimeWarp', 'Jitter', 'GaussianNoise', 'MixUp', 'CutMix', 'ISDA']
    make = lambda: small_learner('series', cbs=joint_callbacks())
    res = pba_search(make, ops, population=2, epochs=2, interval=1, path=tmp_path/'s', progress=False,
                     n_ops_weights={'latent': MODALS_N_OPS_WEIGHTS})
    sched = PolicySchedule.load(tmp_path/'s'/'schedule.json')
    assert sched == res.schedule and sched.kind == 'joint' and set(sched.kinds) == {'series', 'latent', 'mixing', 'isda'}
    assert json.loads((tmp_path/'s'/'search.json').read_text())['kind'] == 'joint'
    learn = small_learner('series', cbs=joint_callbacks() + [PBA(sched)])
    quiet_fit(learn, 2)
    # resumed from its directory, the finished search is read back, not redone
    again = pba_search(make, ops, population=2, epochs=2, interval=1, path=tmp_path/'s', progress=False,
                       n_ops_weights={'latent': MODALS_N_OPS_WEIGHTS})
    assert again.schedule == res.schedule
