"""The integration matrix: every fastaug callback through every fastai workflow, on every modality it supports.

`CALLBACKS` (one line per callback, or pair of callbacks) × `WORKFLOWS` × the four modalities. After each workflow the
Learner must be as the user built it: the user's loss object, no hook on any module, the loaders' pipelines untouched,
`get_preds` rows that are probabilities; and statistics (ISDA's estimator, MODALS' class memory and discriminator, PBA's
epoch count) that only training may change. A spy checks that each callback really acted during the workflow, and
`test_the_checks_catch_a_leaky_callback` checks that the checks themselves can fail.
"""
import inspect, math, warnings
from dataclasses import dataclass, field
from typing import Callable
import numpy as np
import pytest, torch
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from torch import nn
from fastai.learner import Learner, load_learner
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.progress import ProgressCallback
from fastai.callback.training import GradientAccumulation
from fastai.tabular.core import TabDataLoader
import fastai.callback.schedule, fastai.callback.fp16  # fit_one_cycle, fine_tune, lr_find, to_fp16
import fastaug.all
from fastaug.core import LossWrapper, LatentCallback, MixCallback
from fastaug.policy import Policy, PolicySchedule, PolicyCallback
from fastaug.mixup import MixUp, CutMix, CutMixUp
from fastaug.manifold import ManifoldMixup, OutputMixup
from fastaug.image_ops import ImagePolicy
from fastaug.series_ops import SeriesPolicy, magnitudes
from fastaug.techniques import MixPolicy, ISDAPolicy
from fastaug.trivial import TrivialAugment
from fastaug.policy import register_op
from fastaug.modals import MODALS, modals_policy
from fastaug.isda import ISDA
from fastaug.pba import PBA
from fastai.metrics import accuracy
from fastai.tabular.learner import tabular_learner
from fastai.text.all import text_classifier_learner, AWD_LSTM, awd_lstm_clas_config
from fastaug.datasets import image_cnn, series_cnn, load_rotten_tomatoes, stratified_subset
from conftest import small_dls, same

MODALITIES = ('image', 'tabular', 'series', 'text')

pytestmark = pytest.mark.usefixtures('one_thread')

# ---------------------------------------------------------------- tiny data: two training batches an epoch
_text = {}
def tiny_text_dls(device=None):
    "96 Rotten Tomatoes snippets (64 train, 32 valid), 16 a batch, on `device` (default: fastai's)"
    if str(device) not in _text:
        from fastai.text.data import TextDataLoaders
        df = load_rotten_tomatoes()
        df = df.iloc[stratified_subset(df.label.values, 96)].reset_index(drop=True)
        df['is_valid'] = np.arange(len(df)) >= 64
        _text[str(device)] = TextDataLoaders.from_df(df, text_col='text', label_col='label', valid_col='is_valid', bs=16,
                                                     seq_len=72, device=device)
    return _text[str(device)]

def tiny_dls(modality, device=None):
    "The small offline data of `modality`, cut to 64 training items in batches of 32 (text: 64 in batches of 16)"
    if modality == 'text': return tiny_text_dls(device)
    # fastai's default tabular loader, `TabWeightedDL`, keeps weights for the whole set and so cannot take `n`
    extra = dict(dl_type=TabDataLoader) if modality == 'tabular' else {}
    if device is not None: extra['device'] = device
    return small_dls(modality, n=64, bs=32, val_bs=256, **extra)

def tiny_learner(modality, cbs, path, device=None):
    "A Learner with a small model of the kind `get_learner` builds for `modality`: the callbacks act the same, faster"
    dls,kw = tiny_dls(modality, device),dict(cbs=cbs, path=path, metrics=accuracy)
    if modality == 'image': learn = Learner(dls, image_cnn(dls.c, widths=(8, 16, 16)), **kw)
    elif modality == 'series': learn = Learner(dls, series_cnn(dls.c, widths=(8, 16, 16)), **kw)
    elif modality == 'tabular': learn = tabular_learner(dls, layers=[32, 16], **kw)
    else: learn = text_classifier_learner(dls, AWD_LSTM, pretrained=False, **kw,
                                          config={**awd_lstm_clas_config, 'emb_sz': 32, 'n_hid': 64, 'n_layers': 2})
    learn.remove_cb(ProgressCallback)
    return learn

def an_item(learn, modality):
    "One raw item `learn.predict` takes"
    if modality == 'text': return 'a funny, moving and beautifully shot film'
    ds = learn.dls.valid_ds
    return ds.decode_row(ds.items.iloc[0]) if modality == 'tabular' else ds.items[0]

# ---------------------------------------------------------------- the statistics lr_find and inference must leave alone
def _clone(t): return t.detach().clone()

def isda_stats(learn):
    cb = next(c for c in learn.cbs if isinstance(c, ISDA))  # ISDA, or ISDAPolicy
    e = cb.estimator
    return dict(epochs=cb.epochs_done, **({} if e is None else dict(count=_clone(e.count), mean=_clone(e.mean), cov=_clone(e.cov))))

def modals_stats(learn):
    cb = learn.modals
    m = cb.memory
    res = {} if m is None else {k: _clone(getattr(m, k)) for k in m._tensors}
    if cb.disc is not None: res['disc'] = [_clone(p) for p in cb.disc.parameters()]
    return res

def pba_stats(learn): return dict(epochs=learn.pba.epochs_done)


def tensors(o):
    if isinstance(o, torch.Tensor): yield o
    elif isinstance(o, dict): yield from (t for v in o.values() for t in tensors(v))
    elif isinstance(o, (list, tuple)): yield from (t for v in o for t in tensors(v))

# ---------------------------------------------------------------- what each callback does while it trains, seen by a spy
def loss_chain(lf)->tuple:
    "Names of the loss wrappers around the user's loss, outermost first"
    res = []
    while isinstance(lf, LossWrapper): res.append(type(lf).__name__); lf = lf.loss_func
    return tuple(res)

def hooks_on(model)->list:
    "Modules of `model` holding a forward, forward-pre, backward or backward-pre hook, and the global forward hooks"
    attrs = ('_forward_hooks', '_forward_pre_hooks', '_backward_hooks', '_backward_pre_hooks')
    mods = [m for m in model.modules() if any(getattr(m, a, None) for a in attrs)]
    g = nn.modules.module
    return mods + [k for k in ('_global_forward_hooks', '_global_forward_pre_hooks') if getattr(g, k)]

def pipelines(dls)->list: return [list(getattr(getattr(dl, 'after_batch', None), 'fs', [])) for dl in dls.loaders]

class Spy(Callback):
    "Records, for every training batch, the loss wrappers, the hooked modules, the pipeline and the policies in force"
    order,run_valid = 99,False
    def __init__(self): self.rows = []
    def before_batch(self):
        self.rows.append(dict(loss=loss_chain(self.learn.loss_func), hooked=len(hooks_on(self.learn.model)),
                              tfms={type(f).__name__ for f in getattr(getattr(self.dl, 'after_batch', None), 'fs', [])},
                              policies=[cb.policy for cb in self.learn.cbs if isinstance(cb, PolicyCallback)]))
    def seen(self, key)->set: return {v for r in self.rows for v in (r[key] if isinstance(r[key], (tuple, set)) else [r[key]])}

# ---------------------------------------------------------------- the registry: one line per callback or pair
@dataclass
class Case:
    make: Callable                       # () -> the callbacks to add to the Learner
    modalities: tuple = MODALITIES       # where it runs in the matrix
    unsupported: dict = field(default_factory=dict)  # modality -> why it cannot run there (the matrix skips it, saying why)
    stats: Callable|None = None          # learn -> the statistics only training may change
    acted: Callable = lambda spy: True   # spy -> whether the callback really acted during training
    after: Callable|None = None          # learn -> extra checks after every workflow

IMAGE_ONLY = {m: 'ImagePolicy applies image operations: it needs a batch of images' for m in ('tabular', 'series', 'text')}
NO_TEXT_CUT = {'text': "CutMix cuts boxes, segments or columns: in padded token ids a segment's share of the ids is not "
                       "the share of the text swapped, so its λ would be wrong; MixUp mixes text at the embeddings instead"}
IMAGE_POLICY = lambda: Policy([('Rotate', 5, 6), ('Cutout', 6, 5), ('Equalize', 3, 0), ('Solarize', 2, 5), ('ShearX', 4, 4)])
IMAGE_SCHEDULE = PolicySchedule([Policy([('Rotate', 4, 3), ('Invert', 2, 0)]), Policy([('Cutout', 8, 6), ('Solarize', 5, 5)])])
LATENT_SCHEDULE = PolicySchedule([modals_policy(3, 1), modals_policy(6, 4)])

SERIES_ONLY = {m: 'SeriesPolicy applies series operations: it needs a batch of (batch, channels, length) series'
               for m in ('image', 'tabular', 'text')}
SERIES_CALLS = []
@register_op('_MatrixSeries', 'series', per_sample=True)
def _matrix_series(x, magnitude, **kwargs):
    "A series operation that records its calls, so the matrix can tell the policy acted"
    SERIES_CALLS.append(len(x))
    return x + magnitudes(magnitude, x)
SERIES_POLICY = lambda: Policy([('TimeWarp', 5, 5), ('SegmentMix', 5, 5), ('Jitter', 4, 3), ('_MatrixSeries', 8, 5)])
JOINT_SCHEDULE = PolicySchedule([Policy([('_MatrixSeries', 6, 3), ('MixUp', 8, 2), ('ISDA', 9, 5)]),
                                 Policy([('_MatrixSeries', 4, 5), ('CutMix', 8, 4), ('ISDA', 9, 8)])])
SERIES_SCHEDULE = PolicySchedule([Policy([('_MatrixSeries', 6, 3)]), Policy([('WindowSlice', 8, 6), ('_MatrixSeries', 5, 5)])])

def series_policy_acted(spy):
    n = len(SERIES_CALLS)
    SERIES_CALLS.clear()
    return n > 0

def mixes(spy, name='MixedLoss'): return name in spy.seen('loss')
def hooks_head(spy): return any(r['hooked'] for r in spy.rows)  # the latent hook is on while the batch runs
def image_policy_acted(spy): return '_BeforeIntToFloat' in spy.seen('tfms')
def replayed_parts(schedule):
    "Each callback of a joint schedule's kinds held its part of the first epoch's policy"
    first = schedule.policies[0]
    return lambda spy: all(any(p == first.part(k) for r in spy.rows for p in r['policies']) for k in first.kinds)
def replayed(schedule): return lambda spy: {id(p) for r in spy.rows for p in r['policies']} >= {id(p) for p in schedule.policies[:1]}

def merged(*fs): return lambda learn: {f.__name__: f(learn) for f in fs}
def both(*fs): return lambda spy: all(f(spy) for f in fs)

def policy_restored(name, expected):
    "After a fit, the policy callback holds the policy the user gave it: PBA puts it back"
    def check(learn): assert getattr(learn, name).policy == expected(), f'{name} kept the replayed policy'
    return check

CALLBACKS = {
    'MixUp':         Case(lambda: [MixUp(0.4)], acted=mixes),
    'CutMix':        Case(lambda: [CutMix(1.)], ('image', 'tabular', 'series'), NO_TEXT_CUT, acted=mixes),
    'ManifoldMixup': Case(lambda: [ManifoldMixup(0.4, depth=1.)], acted=mixes),
    'OutputMixup':   Case(lambda: [OutputMixup(0.4)], acted=lambda spy: mixes(spy, 'OutputMixedLoss')),
    'MODALS':        Case(lambda: [MODALS()], stats=modals_stats, acted=both(lambda spy: mixes(spy, 'ExtraLoss'), hooks_head)),
    'ISDA':          Case(lambda: [ISDA(0.5)], stats=isda_stats, acted=lambda spy: mixes(spy, 'ISDALoss')),
    'CutMixUp':      Case(lambda: [CutMixUp(mode='sample', p=0.8)], ('image', 'tabular', 'series'), NO_TEXT_CUT, acted=mixes),
    'ImagePolicy':   Case(lambda: [ImagePolicy(IMAGE_POLICY())], ('image',), IMAGE_ONLY, acted=image_policy_acted),
    'SeriesPolicy':  Case(lambda: [SeriesPolicy(SERIES_POLICY())], ('series',), SERIES_ONLY, acted=series_policy_acted),
    'PBA':           Case(lambda: [ImagePolicy(), PBA(IMAGE_SCHEDULE, n_epochs=4)], ('image',), IMAGE_ONLY, stats=pba_stats,
                          acted=both(image_policy_acted, replayed(IMAGE_SCHEDULE)),
                          after=policy_restored('image_policy', lambda: None)),
    # callbacks together: each pair on one modality (each callback alone covers its modalities above)
    'MixUp+ISDA':    Case(lambda: [MixUp(0.4), ISDA(0.5)], ('tabular',), stats=isda_stats,
                          acted=both(mixes, lambda spy: mixes(spy, 'ISDALoss'))),
    'MODALS+PBA':    Case(lambda: [MODALS(modals_policy(1, 1)), PBA(LATENT_SCHEDULE, n_epochs=4)], ('series',),
                          stats=merged(modals_stats, pba_stats), acted=both(lambda spy: mixes(spy, 'ExtraLoss'), replayed(LATENT_SCHEDULE)),
                          after=policy_restored('modals', lambda: modals_policy(1, 1))),
    'CutMix+MODALS': Case(lambda: [CutMix(1.), MODALS()], ('image',), stats=modals_stats,
                          acted=both(mixes, lambda spy: mixes(spy, 'ExtraLoss'))),
    'OutputMixup+ISDA': Case(lambda: [OutputMixup(0.4), ISDA(0.5)], ('series',), stats=isda_stats,
                             acted=both(lambda spy: mixes(spy, 'OutputMixedLoss'), lambda spy: mixes(spy, 'ISDALoss'))),
    'ManifoldMixup+MODALS': Case(lambda: [ManifoldMixup(0.4), MODALS()], ('tabular',), stats=modals_stats,
                                 acted=both(mixes, lambda spy: mixes(spy, 'ExtraLoss'))),
    'ImagePolicy+MixUp+ISDA': Case(lambda: [ImagePolicy(IMAGE_POLICY()), MixUp(0.4), ISDA(0.5)], ('image',),
                                   stats=isda_stats, acted=both(image_policy_acted, mixes)),
    'PBA+CutMix':    Case(lambda: [ImagePolicy(), PBA(IMAGE_SCHEDULE, n_epochs=4), CutMix(1.)], ('image',),
                          stats=pba_stats, acted=both(image_policy_acted, mixes)),
    'MixPolicy':     Case(lambda: [MixPolicy([('MixUp', 5, 2), ('CutMix', 3, 4), ('ManifoldMixup', 3, 2)])],
                          ('image', 'tabular', 'series'), NO_TEXT_CUT, acted=mixes),
    'ISDAPolicy':    Case(lambda: [ISDAPolicy([('ISDA', 8, 5)])], stats=isda_stats, acted=lambda spy: mixes(spy, 'ISDALoss')),
    'joint PBA':     Case(lambda: [SeriesPolicy(), MixPolicy(), ISDAPolicy(), PBA(JOINT_SCHEDULE, n_epochs=4)], ('series',),
                          stats=merged(isda_stats, pba_stats), acted=both(mixes, replayed_parts(JOINT_SCHEDULE)),
                          after=policy_restored('mix_policy', lambda: None)),
    'TrivialAugment': Case(lambda: [ImagePolicy(), MixPolicy(), TrivialAugment(['Rotate', 'Cutout', 'Equalize', 'MixUp', 'CutMix'])],
                           ('image',), acted=both(image_policy_acted, mixes), after=policy_restored('image_policy', lambda: None)),
    'SeriesPolicy+PBA': Case(lambda: [SeriesPolicy(), PBA(SERIES_SCHEDULE, n_epochs=4)], ('series',), stats=pba_stats,
                             acted=both(series_policy_acted, replayed(SERIES_SCHEDULE)),
                             after=policy_restored('series_policy', lambda: None)),
    'ImagePolicy+CutMixUp': Case(lambda: [ImagePolicy(IMAGE_POLICY()), CutMixUp(mode='sample', augment_mixed=False)],
                                 ('image',), acted=both(image_policy_acted, mixes)),
    'MixUp+MODALS+PBA': Case(lambda: [MixUp(0.4), MODALS(modals_policy(1, 1)), PBA(LATENT_SCHEDULE, n_epochs=4)], ('text',),
                            stats=merged(modals_stats, pba_stats), acted=both(mixes, replayed(LATENT_SCHEDULE))),
}

def test_every_public_callback_is_in_the_matrix():
    "A callback added to fastaug without a line in `CALLBACKS` fails here"
    public = {n for n,o in vars(fastaug.all).items() if inspect.isclass(o) and issubclass(o, Callback)
              and o.__module__.startswith('fastaug.') and o not in (LatentCallback, MixCallback, PolicyCallback)}
    covered = {type(cb).__name__ for case in CALLBACKS.values() for cb in case.make()}
    assert public and public <= covered, f'not in the integration matrix: {sorted(public - covered)}'

# ---------------------------------------------------------------- the workflows
def fit(learn, n=1, **kwargs):
    with learn.no_logging(): learn.fit(n, 1e-3, **kwargs)

class CancelMidway(Callback):
    "Cancel the fit after the first training batch of its second epoch"
    order = 30
    def after_batch(self):
        if self.training and self.epoch == 1 and self.iter == 0: raise CancelFitException()

class BF16Autocast(Callback):
    "CPU bf16 autocast around the forward pass and the loss, as fastai's MixedPrecision does on a GPU"
    order = 10
    def before_batch(self): self.ctx = torch.autocast('cpu', dtype=torch.bfloat16); self.ctx.__enter__()
    def after_loss(self): self.close()
    def after_cancel_batch(self): self.close()
    def close(self):
        "Leave autocast if a batch is inside it (an error mid-batch would leave it on for every later test)"
        if getattr(self, 'ctx', None) is not None: self.ctx.__exit__(None, None, None); self.ctx = None

def no_half_statistics(run, case):
    "The statistics stay fp32 (or integer) under reduced precision"
    s = case.stats(run.learn) if case.stats else {}
    assert not [t.dtype for t in tensors(s) if t.dtype in (torch.float16, torch.bfloat16)]

@dataclass
class Run:
    learn: Learner
    modality: str
    case: Case
    path: object
    spy: Spy

def wf_fit(run): fit(run.learn, 1)
def wf_fit_one_cycle(run):
    with run.learn.no_logging(): run.learn.fit_one_cycle(1, 1e-3)
def wf_fine_tune(run):
    with run.learn.no_logging(): run.learn.fine_tune(1, 1e-3, freeze_epochs=1)

def wf_lr_find_then_fit(run):
    learn,stats = run.learn,run.case.stats
    fit(learn, 1)
    before = stats(learn) if stats else None
    with learn.no_logging(): learn.lr_find(num_it=8, show_plot=False)
    if stats: assert same(stats(learn), before), 'lr_find changed statistics that only training may change'
    check_clean(run)
    fit(learn, 1)
    if stats: assert not same(stats(learn), before), 'a fit after lr_find did not update the statistics'

def wf_cancelled_fit(run):
    fit(run.learn, 2, cbs=CancelMidway())
    assert run.learn.epoch == 1 and run.learn.iter == 0
    check_clean(run)
    fit(run.learn, 1)  # and the Learner trains again

def wf_inference(run):
    "get_preds, validate and predict after a fit: the untouched model, and no statistic moves"
    learn,stats = run.learn,run.case.stats
    fit(learn, 1)
    before = stats(learn) if stats else None
    preds,targs = learn.get_preds()
    vals = learn.validate()
    assert all(math.isfinite(float(v)) for v in vals)
    _,_,probs = learn.predict(an_item(learn, run.modality))
    assert math.isclose(float(probs.sum()), 1, rel_tol=1e-5)
    ours = [cb for cb in learn.cbs if type(cb).__module__.startswith('fastaug.')]
    learn.remove_cbs(ours)
    try: plain_preds,_ = learn.get_preds()
    finally: learn.add_cbs(ours)
    assert torch.equal(preds, plain_preds), 'get_preds differs with the callbacks attached'
    if stats: assert same(stats(learn), before), 'inference changed statistics that only training may change'

_upstream = {}
def fastai_fails_alone(modality, path)->str|None:
    "The error fastai's own `show_results` raises on a Learner of `modality` without fastaug callbacks, if it does"
    if modality not in _upstream:
        try: tiny_learner(modality, [], path).show_results(max_n=2); _upstream[modality] = None
        except Exception as e: _upstream[modality] = f'{type(e).__name__}: {e}'.splitlines()[0]
        plt.close('all')
    return _upstream[modality]

def wf_show_results(run):
    fit(run.learn, 1)
    err = fastai_fails_alone(run.modality, run.path)
    if err: pytest.skip(f"fastai's own show_results fails on {run.modality} without any fastaug callback ({err})")
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        run.learn.show_results(max_n=2)
    plt.close('all')

def wf_export_load_predict(run):
    learn = run.learn
    fit(learn, 1)
    learn.remove_cb(run.spy)  # not the user's
    lf = learn.loss_func
    learn.export('learn.pkl')
    assert learn.loss_func is lf
    new = load_learner(run.path/'learn.pkl')
    assert type(new.loss_func) is type(lf) and not loss_chain(new.loss_func), 'a loss wrapper was pickled'
    assert not hooks_on(new.model)
    assert {type(cb) for cb in learn.cbs} == {type(cb) for cb in new.cbs}
    item = an_item(learn, run.modality)
    _,_,probs = new.predict(item)
    _,_,ref = learn.predict(item)
    assert torch.allclose(probs, ref, atol=1e-5) and math.isclose(float(probs.sum()), 1, rel_tol=1e-5)
    assert not hooks_on(new.model) and not loss_chain(new.loss_func)
    for cb in new.cbs:  # the loaded callbacks came without their training state, and inference made none
        for attr in ('estimator', 'memory', 'disc', 'disc_opt'):
            assert getattr(cb, attr, None) is None, f'{type(cb).__name__}.{attr} exists in the loaded Learner after predict'
    learn.add_cb(run.spy)

def wf_to_fp16(run):
    run.learn.to_fp16()
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*CUDA is not available.*')  # on the CPU fastai's autocast is off
        warnings.filterwarnings('ignore', message='.*device_type of .cuda.*')
        fit(run.learn, 1)
    no_half_statistics(run, run.case)

def wf_bf16_autocast(run):
    cb = BF16Autocast()
    try: fit(run.learn, 1, cbs=cb)
    except RuntimeError as e:  # torch's limit on some CPUs (seen on one without AVX-512), not fastaug's
        if 'LSTM forward propagation primitive' not in str(e): raise
        pytest.skip(f"this CPU's oneDNN cannot run an LSTM in bf16: {str(e).splitlines()[0]}")
    finally: cb.close()
    no_half_statistics(run, run.case)

def wf_gradient_accumulation(run):
    fit(run.learn, 1, cbs=GradientAccumulation(2*run.learn.dls.bs))

WORKFLOWS = {
    'fit': wf_fit, 'fit_one_cycle': wf_fit_one_cycle, 'fine_tune': wf_fine_tune, 'lr_find then fit': wf_lr_find_then_fit,
    'cancelled fit': wf_cancelled_fit, 'get_preds/validate/predict': wf_inference, 'show_results': wf_show_results,
    'export/load_learner/predict': wf_export_load_predict, 'to_fp16': wf_to_fp16, 'bf16 autocast': wf_bf16_autocast,
    'gradient accumulation': wf_gradient_accumulation,
}

# ---------------------------------------------------------------- the checks after every workflow
def check_clean(run):
    "The Learner as the user built it, and predictions that are probabilities"
    learn = run.learn
    assert learn.loss_func is run.user_loss, f"the loss is {learn.loss_func!r}, not the user's {run.user_loss!r}"
    assert not hooks_on(learn.model), f'hooks left on {hooks_on(learn.model)}'
    assert pipelines(learn.dls) == run.user_pipes, "the loaders' pipelines changed"
    preds,_ = learn.get_preds()
    assert preds.ndim == 2 and preds.shape[1] == learn.dls.c
    assert (preds >= 0).all() and torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5), 'get_preds rows are not probabilities'
    assert not hooks_on(learn.model) and learn.loss_func is run.user_loss

def run_cell(name, modality, workflow, tmp_path, case=None):
    case = case or CALLBACKS[name]
    if modality not in case.modalities: pytest.skip(case.unsupported[modality])
    spy = Spy()
    learn = tiny_learner(modality, case.make() + [spy], tmp_path)
    run = Run(learn, modality, case, tmp_path, spy)
    run.user_loss,run.user_pipes = learn.loss_func,pipelines(learn.dls)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*past the .* epochs the schedule is replayed over.*')
        WORKFLOWS[workflow](run)
    check_clean(run)
    assert spy.rows, 'no training batch ran'
    assert case.acted(spy), f'{name} did not act during training'
    if case.after: case.after(learn)
    return run

def cells():
    "Every callback on every modality it supports — and, skipped with the reason, on those it cannot — through every workflow"
    for name,case in CALLBACKS.items():
        for modality in MODALITIES:
            if modality in case.unsupported: yield pytest.param(name, modality, 'every workflow', id=f'{name}-{modality}')
            if modality not in case.modalities: continue
            marks = [pytest.mark.slow] if modality == 'text' else []
            for wf in WORKFLOWS: yield pytest.param(name, modality, wf, id=f'{name}-{modality}-{wf}', marks=marks)

@pytest.mark.parametrize('name,modality,workflow', list(cells()))
def test_matrix(name, modality, workflow, tmp_path):
    run_cell(name, modality, workflow, tmp_path)

# ---------------------------------------------------------------- the checks can fail
class LeakyLoss(LossWrapper): pass

class Leaky(Callback):
    "A broken callback: it leaves behind what `kind` names"
    def __init__(self, kind): self.kind = kind
    def before_fit(self):
        if self.kind == 'activation':  # get_preds returns raw logits
            self.mutated = self.learn.loss_func
            self.mutated.activation = lambda x: x
    def before_train(self):
        if self.kind == 'loss': self.learn.loss_func = LeakyLoss(self.learn.loss_func)
        if self.kind == 'hook': self.learn.model[-1].register_forward_pre_hook(lambda m, a: None)
        if self.kind == 'pipeline': self.dls.train.after_batch.fs.append(type(self.dls.train.after_batch.fs[0])())
    def after_batch(self):
        isda = getattr(self.learn, 'isda', None)
        if isda is None: return
        if self.kind == 'stats' and not self.training: isda.epochs_done += 1
        if self.kind == 'lr_find stats' and getattr(self.learn, 'lr_finder', None): isda.epochs_done += 1

@pytest.mark.parametrize('kind,workflow,msg', [
    ('loss', 'fit', "not the user's"), ('hook', 'fit', 'hooks left'), ('pipeline', 'fit', 'pipelines changed'),
    ('activation', 'fit', 'not probabilities'), ('stats', 'get_preds/validate/predict', 'inference changed statistics'),
    ('lr_find stats', 'lr_find then fit', 'lr_find changed statistics'),
])
def test_the_checks_catch_a_leaky_callback(kind, workflow, msg, tmp_path):
    base,leaky = CALLBACKS['ISDA'],Leaky(kind)
    case = Case(lambda: base.make() + [leaky], base.modalities, stats=base.stats, acted=base.acted)
    pipe = tiny_dls('image').train.after_batch
    fs = list(pipe.fs)
    try:
        with pytest.raises(AssertionError, match=msg): run_cell('leaky', 'image', workflow, tmp_path, case)
    finally:  # the data, and the loss object fastai takes from it, are shared with the other tests
        pipe.fs = type(pipe.fs)(fs)
        if hasattr(leaky, 'mutated'): vars(leaky.mutated).pop('activation', None)

def test_the_spy_sees_a_callback_that_does_nothing(tmp_path):
    "A callback that never acts is caught: the matrix cannot pass on callbacks that were idle"
    case = Case(lambda: [MixUp(0.4)], acted=mixes)
    run_cell('MixUp', 'image', 'fit', tmp_path, case)
    idle = Case(lambda: [], acted=mixes)
    with pytest.raises(AssertionError, match='did not act'): run_cell('nothing', 'image', 'fit', tmp_path, idle)
