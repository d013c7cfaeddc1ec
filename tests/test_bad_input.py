"""Bad input, everywhere: every public constructor and function says what is wrong with its arguments.

`BAD` is one table, argument → expected message fragment, for everything that can be checked when it is called;
`BAD_AT_FIT` is the table of what can only show once a Learner trains (labels, targets, the model, other callbacks),
and after each of those errors the Learner must still be as the user built it.
"""
import json, math, re
import pytest, torch
from torch import nn
import torch.nn.functional as F
from fastai.learner import Learner
from fastai.data.core import DataLoaders
from fastai.callback.progress import ProgressCallback
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastaug.core import *
from fastaug.policy import *
from fastaug.mixup import *
from fastaug.manifold import *
from fastaug.image_ops import *
from fastaug.modals import *
from fastaug.isda import *
from fastaug.techniques import *
from fastaug.pba import *
from fastaug.checkpoint import *
from fastaug.search import *

pytestmark = pytest.mark.usefixtures('one_thread')

# ---------------------------------------------------------------- small things to pass
def net(n_in=4, n_out=3): return nn.Sequential(nn.Linear(n_in, 8), nn.ReLU(), nn.Linear(8, n_out))
class NoLinear(nn.Module):
    def __init__(self): super().__init__(); self.conv = nn.Conv1d(1, 3, 4)
    def forward(self, x): return self.conv(x[:, None])[:, :, 0]
class TwoPaths(nn.Module):
    def __init__(self): super().__init__(); self.a,self.b = nn.Linear(3, 4),nn.Linear(3, 4)
    def forward(self, x): return self.a(x) + self.b(x)

IMAGES = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
LATENT_POLICY = modals_policy(5, 5)
IMAGE_POLICY = Policy([('Rotate', 5, 5), ('Invert', 3, 0)])
SCHEDULE = PolicySchedule([IMAGE_POLICY, IMAGE_POLICY])
def schedule_dict(**changes): return {**SCHEDULE.to_dict(), **changes}
def memory(): return ClassMemory(3, 4, bank_size=4)
def estimator(kind='full'): return CovarianceEstimator(3, 3, kind)
Y3 = torch.tensor([0, 1, 2, 1])

def synth_dls(x=None, y=None, n=32, bs=8, valid=True, valid_y=None):
    "Random points with labels in [0, 3) (or `y`); the same points validate, with `valid_y` if given"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g) if x is None else x
    y = torch.randint(0, 3, (n,), generator=g) if y is None else y
    ds = list(zip(x, y))
    vds = ds if valid_y is None else list(zip(x, valid_y))
    return DataLoaders.from_dsets(ds, vds if valid else ds[:0], bs=bs, num_workers=0)

def synth(cbs=None, model=None, loss_func=None, metrics=accuracy, **kwargs):
    learn = Learner(synth_dls(**kwargs), model if model is not None else net(), loss_func=loss_func or CrossEntropyLossFlat(),
                    cbs=cbs, metrics=metrics)
    learn.remove_cb(ProgressCallback)
    return learn

def search(**kwargs):
    "pba_search on a learner carrying a latent policy callback; fails on its arguments before training anything"
    args = dict(make_learner=lambda: synth(cbs=MODALS()), ops=list(MODALS_OPS), population=4, epochs=2, interval=1,
                progress=False, path='/nonexistent/never-created')
    return pba_search(**{**args, **kwargs})

# ---------------------------------------------------------------- the table: call → (exception, message fragment)
BAD = {
    # core
    'check_positive: 0':                   (lambda: check_positive('alpha', 0), ValueError, '`alpha` must be a number > 0, got 0'),
    'check_prob: 1.5':                     (lambda: check_prob('p', 1.5), ValueError, '`p` must be a probability in [0, 1], got 1.5'),
    'check_choice: unknown':               (lambda: check_choice('mode', 'x', ('a', 'b')), ValueError, "`mode` must be one of ['a', 'b'], got 'x'"),
    'check_int: a float':                  (lambda: check_int('n', 2.5), ValueError, '`n` must be an integer >= 1, got 2.5'),
    'sample_lam: alpha 0':                 (lambda: sample_lam(0, 4), ValueError, '`alpha` must be a number > 0'),
    'sample_lam: negative batch size':     (lambda: sample_lam(0.4, -1), ValueError, '`bs` must be an integer >= 0'),
    'batch_size: disagreeing inputs':      (lambda: batch_size((torch.zeros(3, 2), torch.zeros(4, 2))), ValueError, 'leading dimensions [3, 4]'),
    'find_head: no linear layer':          (lambda: find_head(NoLinear()), ValueError, 'NoLinear has no nn.Linear layer to use as the classifier head'),
    'find_head: unknown name':             (lambda: find_head(net(), 'fc'), ValueError, "`head`: the model has no module named 'fc'"),
    'find_head: not in the model':         (lambda: find_head(net(), nn.Linear(8, 3)), ValueError, '`head` is not a module of the model'),
    'find_head: not a linear layer':       (lambda: (m := net(), find_head(m, m[1]))[1], ValueError, '`head` must be an nn.Linear, got ReLU'),
    'check_labels: out of range':          (lambda: check_labels(torch.tensor([0, 5, -1]), 3), ValueError, 'labels must be in [0, 3) for a head with 3 outputs, got [5, -1]'),
    'check_labels: regression targets':    (lambda: check_labels(torch.randn(4), 3, 'ISDA'), ValueError, 'ISDA needs integer class labels, one per sample; got float targets'),
    'check_labels: one-hot targets':       (lambda: check_labels(torch.eye(3).long(), 3), ValueError, 'needs integer class labels, one per sample'),
    # mixup
    'MixUp: alpha 0':                      (lambda: MixUp(0), ValueError, '`alpha` must be a number > 0, got 0'),
    'MixUp: alpha < 0':                    (lambda: MixUp(-1.), ValueError, '`alpha` must be a number > 0'),
    'MixUp: alpha nan':                    (lambda: MixUp(float('nan')), ValueError, '`alpha` must be a number > 0'),
    'MixUp: alpha a bool':                 (lambda: MixUp(True), ValueError, '`alpha` must be a number > 0, got True'),
    'MixUp: unknown mode':                 (lambda: MixUp(0.4, mode='pair'), ValueError, "`mode` must be one of ['sample', 'batch'], got 'pair'"),
    'CutMix: alpha 0':                     (lambda: CutMix(0.), ValueError, '`alpha` must be a number > 0'),
    'CutMix: p > 1':                       (lambda: CutMix(1., p=1.5), ValueError, '`p` must be a probability in [0, 1], got 1.5'),
    'CutMix: p < 0':                       (lambda: CutMix(1., p=-0.1), ValueError, '`p` must be a probability in [0, 1]'),
    'CutMix: unknown kind':                (lambda: CutMix(kind='circle'), ValueError, "`kind` must be one of ['auto', 'box', 'segment', 'features']"),
    'rand_box: λ > 1':                     (lambda: rand_box(8, 8, 1.5), ValueError, '`lam` must be a probability in [0, 1], got 1.5'),
    'rand_segment: λ < 0':                 (lambda: rand_segment(8, -0.1), ValueError, '`lam` must be a probability in [0, 1]'),
    'rand_features: λ > 1':                (lambda: rand_features([2, 3], 2.), ValueError, '`lam` must be a probability in [0, 1]'),
    'cut_kind: 5-d inputs':                (lambda: cut_kind((torch.zeros(2, 3, 4, 5, 6),)), ValueError, 'CutMix cannot cut a batch of inputs with shapes [(2, 3, 4, 5, 6)]'),
    'cut_kind: box of a sequence':         (lambda: cut_kind((torch.zeros(2, 3),), 'box'), ValueError, "cannot cut inputs with shapes [(2, 3)] with kind='box'"),
    'cut_kind: unknown kind':              (lambda: cut_kind((torch.zeros(2, 3),), 'star'), ValueError, '`kind` must be one of'),
    # manifold
    'ManifoldMixup: alpha 0':              (lambda: ManifoldMixup(0), ValueError, '`alpha` must be a number > 0'),
    'ManifoldMixup: depth 0':              (lambda: ManifoldMixup(0.4, depth=0), ValueError, '`depth` must be a number in (0, 1], got 0'),
    'ManifoldMixup: depth > 1':            (lambda: ManifoldMixup(0.4, depth=2), ValueError, '`depth` must be a number in (0, 1]'),
    'ManifoldMixup: unknown mode':         (lambda: ManifoldMixup(0.4, mode='elem'), ValueError, "`mode` must be one of ['sample', 'batch']"),
    'ManifoldMixup: module_list of numbers': (lambda: ManifoldMixup(0.4, module_list=[1.5]), TypeError, '`module_list[0]` must be a module of the model or its dotted name, got float'),
    'ManifoldMixup: nothing to mix':       (lambda: ManifoldMixup(0.4, module_list=[], use_input_mixup=False), ValueError, 'nothing to mix'),
    'manifold_modules: depth 0':           (lambda: manifold_modules(net(), depth=0), ValueError, '`depth` must be a number in (0, 1]'),
    'manifold_modules: unknown model':     (lambda: manifold_modules(TwoPaths()), ValueError, 'could not find the blocks of a TwoPaths to mix at'),
    'module_names: not in the model':      (lambda: module_names(net(), [nn.Linear(1, 1)]), ValueError, "not modules of the model: ['Linear']"),
    'OutputMixup: alpha < 0':              (lambda: OutputMixup(-0.2), ValueError, '`alpha` must be a number > 0'),
    'OutputMixup: unknown mode':           (lambda: OutputMixup(0.4, mode='pair'), ValueError, "`mode` must be one of ['sample', 'batch']"),
    # policy
    'register_op: unknown kind':           (lambda: register_op('_x', 'audio'), ValueError, "`kind` must be one of ['image', 'series', 'latent', 'mixing', 'isda'], got 'audio'"),
    'register_op: name taken':             (lambda: register_op('Rotate', 'image')(lambda x, magnitude, **kw: x), ValueError, "an operation named 'Rotate' is already registered"),
    'get_op: unknown operation':           (lambda: get_op('Rotat'), ValueError, "unknown operation 'Rotat'; registered operations: ["),
    'ops_of: unknown kind':                (lambda: ops_of('text'), ValueError, "`kind` must be one of ['image', 'series', 'latent', 'mixing', 'isda']"),
    'op_setting: not a triple':            (lambda: op_setting(('Rotate', 5)), ValueError, "a policy entry must be (operation, probability level, magnitude level), got ('Rotate', 5)"),
    'op_setting: probability level 11':    (lambda: op_setting(('Rotate', 11, 0)), ValueError, 'Rotate: probability level must be an integer in [0, 10], got 11'),
    'op_setting: magnitude level 10':      (lambda: op_setting(('Rotate', 5, 10)), ValueError, 'Rotate: magnitude level must be an integer in [0, 9], got 10'),
    'op_setting: fractional level':        (lambda: op_setting(('Rotate', 5.5, 1)), ValueError, 'probability level must be an integer in [0, 10], got 5.5'),
    'Policy: unknown operation':           (lambda: Policy([('Rotat', 5, 5)]), ValueError, "unknown operation 'Rotat'"),
    'Policy: a joint policy applied whole': (lambda: Policy([('Rotate', 5, 5), ('GaussianNoise', 5, 5)]).plan(4), ValueError, "a joint policy of ['image', 'latent'] operations is applied part by part"),
    'Policy: weights for an unknown kind':  (lambda: Policy([], n_ops_weights={'audio': (1, 1, 1)}), ValueError, "`n_ops_weights kind` must be one of"),
    'ImagePolicy: a joint policy without images': (lambda: ImagePolicy(Policy([('GaussianNoise', 5, 5), ('MixUp', 5, 5)])), ValueError, "ImagePolicy applies image operations, got a policy of latent and mixing operations"),
    'Policy: two weights':                 (lambda: Policy([], n_ops_weights=(1, 1)), ValueError, '`n_ops_weights` must be three weights >= 0 for 0, 1 and 2 operations'),
    'Policy: zero weights':                (lambda: Policy([], n_ops_weights=(0, 0, 0)), ValueError, '`n_ops_weights` must be three weights >= 0'),
    'Policy: negative weight':             (lambda: Policy([], n_ops_weights=(1, -1, 1)), ValueError, '`n_ops_weights` must be three weights >= 0'),
    'PolicySchedule: no epoch':            (lambda: PolicySchedule([]), ScheduleError, 'a schedule needs at least one epoch'),
    'PolicySchedule: a single policy':     (lambda: PolicySchedule(IMAGE_POLICY), TypeError, 'a list of policies, one per epoch: use `PolicySchedule.constant(policy, n_epochs)`'),
    'PolicySchedule.constant: 0 epochs':   (lambda: PolicySchedule.constant(IMAGE_POLICY, 0), ScheduleError, 'a schedule needs at least one epoch'),
    'source_epoch: negative epoch':        (lambda: SCHEDULE.source_epoch(-1), ScheduleError, 'epoch must be >= 0, got -1'),
    'policy_at: a run of 0 epochs':        (lambda: SCHEDULE.policy_at(0, n_epochs=0), ScheduleError, '`n_epochs` must be >= 1, got 0'),
    'from_dict: not a schedule':           (lambda: PolicySchedule.from_dict({'format': 'x'}), ScheduleError, "schedule: not a policy schedule (expected 'format': 'fastaug.PolicySchedule')"),
    'from_dict: unknown version':          (lambda: PolicySchedule.from_dict(schedule_dict(version=3)), ScheduleError, 'unsupported version 3'),
    'from_dict: version 2 without kinds':  (lambda: PolicySchedule.from_dict(schedule_dict(version=2)), ScheduleError, "'kinds' says None but the operations are ['image']"),
    'from_dict: no epochs':                (lambda: PolicySchedule.from_dict(schedule_dict(epochs=[])), ScheduleError, "'epochs' must be a non-empty list"),
    'from_dict: epochs that do not fit':   (lambda: PolicySchedule.from_dict(schedule_dict(epochs=[SCHEDULE.to_dict()['epochs'][0], {**SCHEDULE.to_dict()['epochs'][1], 'epoch': 2}])),
                                            ScheduleError, 'epochs must be listed as 0, 1, 2, … without gaps; entry 1 is 2'),
    'from_dict: an epoch listed twice':    (lambda: PolicySchedule.from_dict(schedule_dict(epochs=[SCHEDULE.to_dict()['epochs'][0]]*2)), ScheduleError, 'without gaps; entry 1 is 0'),
    'from_dict: unknown operation':        (lambda: PolicySchedule.from_dict(schedule_dict(epochs=[{'epoch': 0, 'policy': [['Rotat', 1, 1]]}])), ScheduleError, "epoch 0: unknown operation 'Rotat'"),
    'from_dict: bad level':                (lambda: PolicySchedule.from_dict(schedule_dict(epochs=[{'epoch': 0, 'policy': [['Rotate', 12, 1]]}])), ScheduleError, 'epoch 0: Rotate: probability level must be an integer in [0, 10]'),
    'from_dict: wrong kind':               (lambda: PolicySchedule.from_dict(schedule_dict(kind='latent')), ScheduleError, "'kind' says 'latent' but the operations are 'image'"),
    'PolicyCallback: policy of the other kind': (lambda: ImagePolicy(LATENT_POLICY), ValueError, 'ImagePolicy applies image operations, got a policy of latent operations'),
    # image_ops
    'ImagePolicy: unknown operation':      (lambda: ImagePolicy([('Rotat', 5, 5)]), ValueError, "unknown operation 'Rotat'"),
    'ImagePolicy: fill outside [0, 1]':    (lambda: ImagePolicy(fill=-1), ValueError, '`fill` must be one value in [0, 1]'),
    'ImagePolicy: one channel fill > 1':  (lambda: ImagePolicy(fill=(0.5, 1.5)), ValueError, '`fill` must be one value in [0, 1] or one per channel'),
    'rotate: not a batch':                 (lambda: rotate(IMAGES[0], 10), ValueError, 'needs a batch of images (n, channels, height, width), got a tensor of shape (3, 8, 8)'),
    'invert: integer images':              (lambda: invert(IMAGES.long()), ValueError, 'needs uint8 (0-255) or floating point (0-1) images, got torch.int64'),
    'color: two channels':                 (lambda: color(IMAGES[:, :2], 0.5), ValueError, 'grey (1-channel) or RGB (3-channel)'),
    'posterize: 0 bits':                   (lambda: posterize(IMAGES, 0), ValueError, '`bits` must be integers in [1, 8], got 0'),
    'solarize: threshold > 256':           (lambda: solarize(IMAGES, 300), ValueError, '`threshold` must be in [0, 256], got 300'),
    'rotate: one angle per sample, wrong count': (lambda: rotate(IMAGES, [1., 2.]), ValueError, 'must be one number or one per sample (4), got 2 values'),
    'random_signs: not ±1':                (lambda: random_signs(IMAGES, [2]*4), ValueError, '`signs` must be +1 or -1'),
    'image_op_parameter: magnitude > 1':   (lambda: image_op_parameter('Rotate', 1.5), ValueError, 'magnitude must be in [0, 1], got 1.5'),
    'image_op_parameter: unknown op':      (lambda: image_op_parameter('Blur', 0.5), ValueError, "unknown image operation 'Blur'"),
    'an image op: magnitude > 1':          (lambda: get_op('Rotate').fn(IMAGES, 1.5), ValueError, 'magnitude must be in [0, 1]'),
    'apply_policy: a latent policy':       (lambda: apply_policy(LATENT_POLICY, IMAGES.float()/255), ValueError, 'apply_policy applies image operations, got a policy of latent operations'),
    'apply_policy: not images':            (lambda: apply_policy(IMAGE_POLICY, torch.rand(4, 8)), ValueError, 'apply_policy needs a batch of images'),
    # modals
    'ClassMemory: 0 classes':              (lambda: ClassMemory(0, 4), ValueError, '`n_classes` must be an integer >= 1, got 0'),
    'ClassMemory: bank of 1':              (lambda: ClassMemory(3, 4, bank_size=1), ValueError, '`bank_size` must be an integer >= 2, got 1'),
    'ClassMemory: horizon 1':              (lambda: ClassMemory(3, 4, horizon=1), ValueError, '`horizon` must be an integer >= 2'),
    'ClassMemory.update: wrong width':      (lambda: memory().update(torch.randn(4, 5), Y3), ValueError, 'ClassMemory of 4-d latents got latents of shape (4, 5)'),
    'ClassMemory.update: labels out of range': (lambda: memory().update(torch.randn(4, 4), torch.tensor([0, 1, 3, 1])), ValueError, 'ClassMemory: labels must be in [0, 3) for a head with 3 outputs, got [3]'),
    'ClassMemory.update: float labels':    (lambda: memory().update(torch.randn(4, 4), torch.rand(4)), ValueError, 'ClassMemory needs integer class labels'),
    'ClassMemory.hard_examples: temperature 0': (lambda: memory().hard_examples(Y3, temperature=0), ValueError, '`temperature` must be a number > 0, got 0'),
    'a MODALS op without labels':          (lambda: hard_interpolation(torch.randn(4, 4), 0.5), ValueError, "MODALS operations need the batch's labels `y` and a `ClassMemory` `memory`"),
    'select_triplets: unknown mining':     (lambda: select_triplets(torch.zeros(4, 4), Y3, 1., 'hard'), ValueError, "`mining` must be one of ['random', 'hardest', 'semihard']"),
    'triplet_loss: margin 0':              (lambda: triplet_loss(torch.randn(4, 2), Y3, margin=0), ValueError, '`margin` must be a number > 0, got 0'),
    'modals_policy: probability level 11': (lambda: modals_policy(prob=11), ValueError, 'probability level must be an integer in [0, 10], got 11'),
    'modals_policy: no copies':            (lambda: modals_policy(copies=0), ValueError, '`copies` must be an integer >= 1, got 0'),
    'modals_policy: an image operation':   (lambda: MODALS(modals_policy(ops=('Rotate',))), ValueError, 'MODALS applies latent operations, got a policy of image operations'),
    'MODALS: negative triplet weight':     (lambda: MODALS(triplet_weight=-0.1), ValueError, '`triplet_weight` must be a finite number >= 0'),
    'MODALS: adversarial weight nan':      (lambda: MODALS(adv_weight=float('nan')), ValueError, '`adv_weight` must be a finite number >= 0'),
    'MODALS: margin 0':                    (lambda: MODALS(margin=0), ValueError, '`margin` must be a number > 0'),
    'MODALS: negative temperature':        (lambda: MODALS(temperature=-1), ValueError, '`temperature` must be a number > 0'),
    'MODALS: unknown mining':              (lambda: MODALS(mining='hard'), ValueError, "`mining` must be one of ['random', 'hardest', 'semihard']"),
    'MODALS: unknown score':               (lambda: MODALS(score='loss2'), ValueError, "`score` must be one of ['loss', 'distance']"),
    'MODALS: bank of 1':                   (lambda: MODALS(bank_size=1), ValueError, '`bank_size` must be an integer >= 2'),
    'MODALS: horizon 0':                   (lambda: MODALS(horizon=0), ValueError, '`horizon` must be an integer >= 2'),
    'MODALS: unknown horizon':             (lambda: MODALS(horizon='batch'), ValueError, '`horizon` must be an integer >= 2'),
    'MODALS: unknown refresh':             (lambda: MODALS(refresh='batch'), ValueError, "`refresh` must be one of [None, 'epoch']"),
    'MODALS: discriminator lr 0':          (lambda: MODALS(disc_lr=0), ValueError, '`disc_lr` must be a number > 0'),
    'MODALS: unknown operation':           (lambda: MODALS([('Rotat', 1, 1)]), ValueError, "unknown operation 'Rotat'"),
    # isda
    'ISDA: negative λ₀':                   (lambda: ISDA(-0.1), ValueError, '`lambda0` must be a finite number >= 0, got -0.1'),
    'ISDA: λ₀ infinite':                   (lambda: ISDA(float('inf')), ValueError, '`lambda0` must be a finite number >= 0'),
    'ISDA: unknown covariance':            (lambda: ISDA(cov='lowrank'), ValueError, "`cov` must be one of ['full', 'diag'], got 'lowrank'"),
    'ISDA: 0 epochs':                      (lambda: ISDA(n_epochs=0), ValueError, '`n_epochs` must be an integer >= 1 or None, got 0'),
    'CovarianceEstimator: 0 classes':      (lambda: CovarianceEstimator(0, 3), ValueError, '`n_classes` must be an integer >= 1'),
    'CovarianceEstimator: 0 features':     (lambda: CovarianceEstimator(3, 0), ValueError, '`dim` must be an integer >= 1'),
    'CovarianceEstimator: unknown kind':   (lambda: CovarianceEstimator(3, 3, 'lowrank'), ValueError, "`kind` must be one of ['full', 'diag']"),
    'CovarianceEstimator.update: wrong width': (lambda: estimator().update(torch.randn(4, 2), Y3), ValueError, 'features must be a (batch, 3) tensor, got (4, 2)'),
    'CovarianceEstimator.update: labels out of range': (lambda: estimator().update(torch.randn(4, 3), torch.tensor([0, 1, 2, 3])), ValueError, 'CovarianceEstimator: labels must be in [0, 3)'),
    'CovarianceEstimator.update: too few labels': (lambda: estimator().update(torch.randn(4, 3), Y3[:3]), ValueError, '4 feature rows for 3 labels'),
    'CovarianceEstimator.merge: another kind': (lambda: estimator().merge(estimator('diag')), ValueError, 'cannot merge an estimator of 3 classes × 3 features'),
    'CovarianceEstimator.merge: not an estimator': (lambda: estimator().merge(torch.zeros(3)), TypeError, 'can only merge a CovarianceEstimator, got Tensor'),
    'logit_variance: covariances of another shape': (lambda: logit_variance(torch.randn(4, 3), torch.zeros(4, 2, 2), torch.tensor([0])), ValueError, 'do not match a head of 4 classes × 3 features'),
    'isda_logits: labels out of range':    (lambda: isda_logits(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), torch.randn(3, 5), torch.zeros(3, 5, 5), 0.5), ValueError, 'isda_logits: labels must be in [0, 3)'),
    # pba
    'PBA: 0 epochs':                       (lambda: PBA(SCHEDULE, n_epochs=0), ValueError, '`n_epochs` must be an integer >= 1 or None, got 0'),
    'PBA: missing schedule file':          (lambda: PBA('/nonexistent/schedule.json'), ScheduleError, '/nonexistent/schedule.json: no such schedule file'),
    'PBA: not a schedule':                 (lambda: PBA([IMAGE_POLICY]), TypeError, '`schedule` must be a PolicySchedule or the path of a schedule file, got list'),
    'explore: resample_p > 1':             (lambda: explore(IMAGE_POLICY, resample_p=1.5), ValueError, '`resample_p` must be a probability in [0, 1]'),
    'explore: negative shift':             (lambda: explore(IMAGE_POLICY, max_shift=-1), ValueError, '`max_shift` must be an integer >= 0, got -1'),
    'explore: not a policy':               (lambda: explore([('Rotate', 1, 1)]), TypeError, 'explore perturbs a Policy, got list'),
    'exploit_pairs: quantile > 0.5':       (lambda: exploit_pairs([1., 2.], 0.6), ValueError, '`quantile` must be in (0, 0.5], got 0.6'),
    'trial_schedule: untrained trial':     (lambda: trial_schedule(new_trial(0, IMAGE_POLICY)), ValueError, 'trial 0 has not trained any epoch yet: it has no schedule'),
    'save_checkpoint: an object':          (lambda: save_checkpoint({**new_trial(0, IMAGE_POLICY), 'extra': object()}, '/nonexistent/t.pt'), TypeError,
                                            "cannot checkpoint the trial state['extra'], a object"),
    'load_checkpoint: missing':            (lambda: load_checkpoint('/nonexistent/trial.pt'), CheckpointError, '/nonexistent/trial.pt: no such checkpoint'),
    'score_metric: unknown metric':        (lambda: score_metric(synth(), 'f1'), ValueError, "the Learner reports ['valid_loss', 'accuracy'] on the validation set, not 'f1'"),
    'check_validation: empty valid set':   (lambda: check_validation(synth(valid=False)), ValueError, "the Learner's validation set is empty"),
    'check_search_learner: no policy callback': (lambda: check_search_learner(synth(), 'latent'), ValueError, 'it has no PolicyCallback'),
    'pba_search: make_learner not callable': (lambda: search(make_learner=synth()), TypeError, '`make_learner` must be a function that builds a new Learner, got Learner'),
    'pba_search: population 1':            (lambda: search(population=1), ValueError, '`population` must be an integer >= 2, got 1'),
    'pba_search: 0 epochs':                (lambda: search(epochs=0), ValueError, '`epochs` must be an integer >= 1, got 0'),
    'pba_search: interval 0':              (lambda: search(interval=0), ValueError, '`interval` must be an integer >= 1, got 0'),
    'pba_search: negative lr':             (lambda: search(lr=-1e-3), ValueError, '`lr` must be a number > 0, got -0.001'),
    'pba_search: negative seed':           (lambda: search(seed=-1), ValueError, '`seed` must be an integer >= 0, got -1'),
    'pba_search: fractional seed':         (lambda: search(seed=0.5), ValueError, '`seed` must be an integer >= 0, got 0.5'),
    'pba_search: ops as one string':       (lambda: search(ops='GaussianNoise'), ValueError, "`ops` must be a non-empty list of operation names, got 'GaussianNoise'"),
    'pba_search: weights of two':          (lambda: search(n_ops_weights=(0.5, 0.5)), ValueError, '`n_ops_weights` must be three weights >= 0'),
    'pba_search: ops of the wrong kind':   (lambda: search(ops=['Rotate']), ValueError, 'sets the policy of the Learner\'s callbacks applying image operations, but its policy callbacks apply latent operations'),
    'pba_search: higher_is_better not a bool': (lambda: search(higher_is_better='yes'), TypeError, '`higher_is_better` must be True, False or None, got \'yes\''),
}

@pytest.mark.parametrize('name', list(BAD))
def test_bad_argument(name):
    call,err,msg = BAD[name]
    with pytest.raises(err, match=re.escape(msg)): call()

# ---------------------------------------------------------------- bad input that shows once the Learner trains
def fit(learn):
    with learn.no_logging(): learn.fit(1, 1e-3)

class PerToken(nn.Module):
    def __init__(self): super().__init__(); self.emb,self.lin = nn.Linear(4, 8),nn.Linear(8, 3)
    def forward(self, x): return self.lin(self.emb(x)[:, None].expand(-1, 2, -1)).mean(1)
class IntNet(nn.Module):
    def __init__(self): super().__init__(); self.lin = nn.Linear(4, 3)
    def forward(self, x): return self.lin(x.float())

Y_OUT = torch.randint(0, 3, (32,)); Y_OUT[5] = 3
X_INT = torch.randint(0, 5, (32, 4))
REGRESSION = dict(y=torch.randn(32), model=nn.Sequential(nn.Linear(4, 1), nn.Flatten(0)), loss_func=nn.MSELoss(), metrics=None)
LATENT_SCHED = PolicySchedule([LATENT_POLICY])

BAD_AT_FIT = {
    'ISDA: labels out of range':       (lambda: synth(ISDA(0.5), y=Y_OUT, valid_y=Y_OUT.clamp(max=2)), 'ISDA: labels must be in [0, 3) for a head with 3 outputs, got [3]'),
    'MODALS: labels out of range':     (lambda: synth(MODALS(), y=Y_OUT, valid_y=Y_OUT.clamp(max=2)), 'MODALS: labels must be in [0, 3) for a head with 3 outputs, got [3]'),
    'ISDA: regression targets':        (lambda: synth(ISDA(0.5), **REGRESSION), 'ISDA needs integer class labels, one per sample; got float targets'),
    'MODALS: regression targets':      (lambda: synth(MODALS(), **REGRESSION), 'MODALS needs integer class labels, one per sample; got float targets'),
    'ISDA: no linear head':            (lambda: synth(ISDA(0.5), model=NoLinear()), 'NoLinear has no nn.Linear layer to use as the classifier head'),
    'MODALS: no linear head':          (lambda: synth(MODALS(), model=NoLinear()), 'NoLinear has no nn.Linear layer to use as the classifier head'),
    'ISDA: head by an unknown name':   (lambda: synth(ISDA(0.5, head='fc')), "`head`: the model has no module named 'fc'"),
    'ISDA: output after the head':     (lambda: synth(ISDA(0.5), model=nn.Sequential(net(), nn.LogSoftmax(1)), loss_func=F.nll_loss),
                                        "the model's output is not that layer's output"),
    'MODALS: head on a sequence':      (lambda: synth(MODALS(), model=PerToken()), 'MODALS augments a latent of shape (batch, features)'),
    'ManifoldMixup: module not in the model': (lambda: synth(ManifoldMixup(0.4, module_list=[nn.Linear(2, 2)])), '`module_list[0]` (Linear) is not a module of the model'),
    'ManifoldMixup: unknown module name': (lambda: synth(ManifoldMixup(0.4, module_list=['layer9'])), "`module_list`: the model has no module named 'layer9'"),
    'ManifoldMixup: unknown model':    (lambda: synth(ManifoldMixup(0.4), model=TwoPaths(), x=torch.randn(32, 3)),
                                        'pass `module_list=` the modules to mix at'),
    'CutMix: inputs it cannot cut':    (lambda: synth(CutMix(), x=torch.randn(32, 2, 1, 1, 2), model=nn.Sequential(nn.Flatten(), net())),
                                        'CutMix cannot cut a batch of inputs with shapes [(8, 2, 1, 1, 2)]'),
    'MixUp: integer inputs, no embedding': (lambda: synth(MixUp(), x=X_INT, model=IntNet()), 'integer inputs but the model has no embedding module'),
    'ImagePolicy: not images':         (lambda: synth(ImagePolicy(IMAGE_POLICY)), 'ImagePolicy needs a batch of images (n, channels, height, width)'),
    'PBA: schedule of another kind':   (lambda: synth([ImagePolicy(), PBA(LATENT_SCHED)]), 'PBA sets the policy of the Learner\'s callbacks applying latent operations, but its policy callbacks apply image operations'),
    'PBA: no policy callback':         (lambda: synth(PBA(SCHEDULE)), 'it has no PolicyCallback'),
    'two mixing callbacks':            (lambda: synth([MixUp(0.4), CutMix(1.)]), 'MixUp and CutMix both mix pairs of samples'),
    'three mixing callbacks':          (lambda: synth([ManifoldMixup(0.4), OutputMixup(0.4), MixUp()]), 'ManifoldMixup and OutputMixup both mix pairs of samples'),
}

def hooked(model): return [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]

@pytest.mark.parametrize('name', list(BAD_AT_FIT))
def test_bad_input_at_fit(name):
    make,msg = BAD_AT_FIT[name]
    learn = make()
    lf = learn.loss_func
    with pytest.raises(ValueError, match=re.escape(msg)): fit(learn)
    try: learn.get_preds()  # errors other than fastai's cancels skip after_fit: the next validation puts everything back
    except ValueError as e: assert msg in str(e)  # ...unless the callback refuses the model at `before_fit`, which inference runs too
    assert learn.loss_func is lf and not hooked(learn.model), 'the error left the Learner changed'
