"""fastaug on a GPU: every public callback with real mixed precision, its statistics on the model's device and in fp32,
image operations equal to the CPU's, a PBA search and the benchmark's small run.

Skipped, saying why, where CUDA is absent; `tools/gpu_check.sh` runs it on a GPU machine. `FASTAUG_TEST_DEVICE=cpu`
runs the same tests on the CPU: a check of the tests themselves, where mixed precision is a no-op.
"""
import contextlib, inspect, json, math, os, warnings
import pytest, torch
from fastai.learner import load_learner
from fastai.callback.core import Callback
import fastai.callback.schedule, fastai.callback.fp16  # fit_one_cycle, lr_find, to_fp16, to_bf16
import fastaug.all
from fastaug.core import LatentCallback, MixCallback
from fastaug.policy import Policy, PolicyCallback
from fastaug.image_ops import IMAGE_OPS, ImagePolicy, get_op
from fastaug.isda import CovarianceEstimator
from fastaug.search import pba_search
from fastaug.bench import main as bench_main
from conftest import same
from test_integration import (CALLBACKS, Run, Spy, tiny_learner, check_clean, pipelines, tensors, hooks_on, loss_chain,
                              an_item, wf_lr_find_then_fit)

DEVICE = torch.device(os.environ.get('FASTAUG_TEST_DEVICE', 'cuda'))
ON_GPU = DEVICE.type == 'cuda'
pytestmark = pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason=(
    'CUDA is not available on this machine: tools/gpu_check.sh runs these tests on a GPU '
    '(FASTAUG_TEST_DEVICE=cpu runs them on the CPU, as a check of the tests)'))

PUBLIC = ('MixUp', 'CutMix', 'CutMixUp', 'ManifoldMixup', 'OutputMixup', 'MODALS', 'ISDA', 'ImagePolicy', 'SeriesPolicy',
          'MixPolicy', 'ISDAPolicy', 'PBA', 'TrivialAugment')
HALF = {'fp16': torch.float16, 'bf16': torch.bfloat16}

def test_every_public_callback_runs_here():
    "A public callback added to fastaug without a line in `PUBLIC` fails here"
    public = {n for n,o in vars(fastaug.all).items() if inspect.isclass(o) and issubclass(o, Callback)
              and o.__module__.startswith('fastaug.') and o not in (LatentCallback, MixCallback, PolicyCallback)}
    assert public == set(PUBLIC), f'not covered on the GPU: {sorted(public - set(PUBLIC))}'

# ---------------------------------------------------------------- what a training batch ran on
class PrecisionSpy(Callback):
    "Records the dtype and device of the model's output and whether the loss was finite, for every training batch"
    order,run_valid = 99,False
    def __init__(self): self.preds,self.finite = set(),[]
    def after_pred(self):
        p = self.pred[0] if isinstance(self.pred, (tuple, list)) else self.pred
        self.preds.add((p.dtype, p.device.type))
    def after_loss(self): self.finite.append(bool(torch.isfinite(self.loss_grad.detach()).all()))

def device_run(name, modality, tmp_path)->Run:
    "A tiny Learner of `modality` on `DEVICE` with the callbacks of `name` and a spy, as the integration matrix builds it"
    case = CALLBACKS[name]
    if modality not in case.modalities: pytest.skip(case.unsupported[modality])
    spy = Spy()
    learn = tiny_learner(modality, case.make() + [spy], tmp_path, device=DEVICE)
    run = Run(learn, modality, case, tmp_path, spy)
    run.user_loss,run.user_pipes = learn.loss_func,pipelines(learn.dls)
    return run

def on_device(t)->bool: return t.device.type == DEVICE.type

@contextlib.contextmanager
def cpu_amp_quiet():
    "Silence fastai's warnings that mixed precision is off, for the check of these tests on the CPU"
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*CUDA is not available.*')
        warnings.filterwarnings('ignore', message='.*device_type of .cuda.*')
        yield

def check_statistics(run):
    "Statistics (ISDA's estimator, MODALS' memory and discriminator, ...) live on the model's device, in fp32 or integers"
    stats = run.case.stats(run.learn) if run.case.stats else {}
    ts = list(tensors(stats))
    assert all(on_device(t) for t in ts), f'statistics off {DEVICE}: {sorted({str(t.device) for t in ts})}'
    assert not [t.dtype for t in ts if t.dtype in (torch.float16, torch.bfloat16)], 'half-precision statistics'

def amp_fit(run, mode:str, epochs:int=2):
    "`fit_one_cycle` under fastai's mixed precision `mode`; on a GPU the model really runs in half precision"
    learn,prec = run.learn,PrecisionSpy()
    learn.to_fp16() if mode == 'fp16' else learn.to_bf16()
    before = [p.detach().clone() for p in learn.model.parameters()]
    with cpu_amp_quiet(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-3, cbs=prec)
    assert prec.finite and all(prec.finite), 'a training loss was not finite'
    if ON_GPU: assert prec.preds == {(HALF[mode], 'cuda')}, f'the model ran in {prec.preds}, not {mode} on the GPU'
    assert any(not torch.equal(a, b) for a,b in zip(before, learn.model.parameters())), 'no step changed the weights'
    assert all(on_device(p) for p in learn.model.parameters())
    check_statistics(run)

# ---------------------------------------------------------------- the workflows, on the device
def wf_fp16(run): amp_fit(run, 'fp16')
def wf_bf16(run):
    if ON_GPU and not torch.cuda.is_bf16_supported(): pytest.skip('this GPU has no bf16')
    amp_fit(run, 'bf16')

def wf_get_preds(run):
    "After an fp16 fit, `get_preds` and `validate` see the untouched model: the same as with the callbacks removed"
    amp_fit(run, 'fp16', 1)
    learn = run.learn
    stats = run.case.stats(learn) if run.case.stats else None
    preds,_ = learn.get_preds()
    assert all(math.isfinite(float(v)) for v in learn.validate())
    ours = [cb for cb in learn.cbs if type(cb).__module__.startswith('fastaug.')]
    learn.remove_cbs(ours)
    try: plain,_ = learn.get_preds()
    finally: learn.add_cbs(ours)
    assert torch.allclose(preds, plain, atol=1e-6), 'get_preds differs with the callbacks attached'
    if stats is not None: assert same(run.case.stats(learn), stats), 'inference changed statistics'

def wf_lr_find(run):
    "`lr_find` under fp16 leaves the statistics alone and the Learner clean; the next fit updates them"
    run.learn.to_fp16()
    with cpu_amp_quiet(): wf_lr_find_then_fit(run)

def wf_export(run):
    "Export after an fp16 fit; the loaded Learner predicts as the trained one, on the GPU and on the CPU"
    amp_fit(run, 'fp16', 1)
    learn = run.learn
    learn.remove_cb(run.spy)
    learn.export('learn.pkl')
    item = an_item(learn, run.modality)
    _,_,ref = learn.predict(item)
    for cpu in (False, True):
        new = load_learner(run.path/'learn.pkl', cpu=cpu)
        assert not hooks_on(new.model) and not loss_chain(new.loss_func), 'a hook or loss wrapper was pickled'
        _,_,probs = new.predict(item)
        assert math.isclose(float(probs.sum()), 1, rel_tol=1e-4)
        assert torch.allclose(probs.float().cpu(), ref.float().cpu(), atol=2e-3), 'the loaded Learner predicts otherwise'
        for cb in new.cbs:
            for attr in ('estimator', 'memory', 'disc', 'disc_opt'):
                assert getattr(cb, attr, None) is None, f'{type(cb).__name__}.{attr} was pickled'
    learn.add_cb(run.spy)

WORKFLOWS = {'fp16 fit_one_cycle': wf_fp16, 'bf16 fit_one_cycle': wf_bf16, 'get_preds/validate': wf_get_preds,
             'lr_find then fit': wf_lr_find, 'export/load_learner': wf_export}
FP16_EVERYWHERE = ('fp16 fit_one_cycle',)  # on every modality; the rest on images and series

def cells():
    for name in PUBLIC:
        for modality in CALLBACKS[name].modalities:
            for wf in WORKFLOWS:
                if wf in FP16_EVERYWHERE or modality in ('image', 'series'):
                    yield pytest.param(name, modality, wf, id=f'{name}-{modality}-{wf}')

@pytest.mark.parametrize('name,modality,workflow', list(cells()))
def test_callback_on_device(name, modality, workflow, tmp_path):
    run = device_run(name, modality, tmp_path)
    WORKFLOWS[workflow](run)
    check_clean(run)
    assert run.spy.rows and run.case.acted(run.spy), f'{name} did not act during training'

# ---------------------------------------------------------------- image operations: the device's pixels are the CPU's
def image_batch(dtype, n=4, c=3, h=24, w=20):
    x = torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.float()/255

@pytest.mark.parametrize('dtype', [torch.uint8, torch.float32], ids=['uint8', 'float32'])
@pytest.mark.parametrize('name', IMAGE_OPS)
def test_image_op_on_device_equals_the_cpu(name, dtype):
    x = image_batch(dtype)
    signs,centers = torch.tensor([1, -1, 1, -1]),torch.tensor([[10, 12], [0, 0], [23, 19], [5, 15]])
    for m in (0.3, 0.9):
        ref = get_op(name).fn(x, m, signs=signs, centers=centers, fill=0.5)
        out = get_op(name).fn(x.to(DEVICE), m, signs=signs.to(DEVICE), centers=centers.to(DEVICE), fill=0.5)
        assert on_device(out) and out.dtype == ref.dtype
        if dtype == torch.uint8: assert torch.equal(out.cpu(), ref), f'{name} at {m}: uint8 pixels differ'
        else: torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=1e-5)

@pytest.mark.parametrize('dtype', [torch.uint8, torch.float32], ids=['uint8', 'float32'])
def test_policy_on_device_equals_the_cpu(dtype):
    "A whole policy, its samples grouped and written back as on the CPU (operations that draw nothing, so both agree)"
    pol = Policy([('Equalize', 7, 0), ('AutoContrast', 6, 0), ('Posterize', 5, 6), ('Solarize', 6, 4), ('Invert', 4, 0)])
    x = image_batch(dtype, n=64)
    plan = pol.plan(len(x))
    assert (plan >= 0).sum() > 32
    ref = pol.apply(x, plan)
    out = pol.apply(x.to(DEVICE), plan.to(DEVICE))
    assert on_device(out)
    if dtype == torch.uint8: assert torch.equal(out.cpu(), ref)
    else: torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=1e-5)

# ---------------------------------------------------------------- ISDA and MODALS keep their state where the model is
class HeadInputs(Callback):
    "Records the features entering the head of `cb` and the labels, for every training batch"
    order,run_valid = 50,False
    def __init__(self, cb_name): self.cb_name,self.batches,self._h = cb_name,[],None
    def before_batch(self): self._h = getattr(self.learn, self.cb_name).head.register_forward_pre_hook(self.record)
    def record(self, m, args):
        "The model's own call of the head only: a callback's later call (ISDA checks the output once) is not a batch"
        self.batches.append((args[0].detach().clone(), self.yb[0]))
        self.remove()
    def remove(self):
        if self._h is not None: self._h.remove(); self._h = None
    def after_batch(self): self.remove()
    def after_cancel_batch(self): self.remove()

def test_isda_statistics_fp32_under_fp16_and_equal_to_the_cpu(tmp_path):
    run = device_run('ISDA', 'image', tmp_path)
    rec = HeadInputs('isda')
    run.learn.add_cb(rec)
    amp_fit(run, 'fp16', 1)
    est = run.learn.isda.estimator
    assert on_device(est.cov) and est.mean.dtype == est.cov.dtype == torch.float32
    if ON_GPU: assert {x.dtype for x,_ in rec.batches} == {torch.float16}, 'the features were not half precision'
    ref = CovarianceEstimator(est.n_classes, est.dim, est.kind)
    for x,y in rec.batches: ref.update(x.float().cpu(), y.cpu())
    assert torch.equal(est.count.cpu(), ref.count)
    torch.testing.assert_close(est.mean.cpu(), ref.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(est.cov.cpu(), ref.cov, rtol=1e-4, atol=1e-5)

def test_modals_state_on_the_model_device(tmp_path):
    run = device_run('MODALS', 'image', tmp_path)
    amp_fit(run, 'fp16', 1)
    cb = run.learn.modals
    assert all(on_device(getattr(cb.memory, k)) for k in cb.memory._tensors)
    assert all(on_device(p) and p.dtype == torch.float32 for p in cb.disc.parameters())
    assert all(on_device(t) for s in cb.disc_opt.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.ndim)

# ---------------------------------------------------------------- the search and the benchmark
def test_pba_search_on_device(tmp_path):
    def make_learner(): return tiny_learner('image', [ImagePolicy()], tmp_path, device=DEVICE)
    kw = dict(population=2, epochs=2, interval=1, path=tmp_path/'search', progress=False)
    res = pba_search(make_learner, ['Rotate', 'Cutout', 'Equalize'], **kw)
    assert res.trials == [0, 1] and all(len(res.schedules[t]) == 2 for t in res.trials)
    assert all(math.isfinite(s) for t in res.trials for s in res.scores[t])
    again = pba_search(make_learner, ['Rotate', 'Cutout', 'Equalize'], **kw)  # resumed from its directory
    assert again.scores == res.scores and again.schedules == res.schedules

def test_bench_small_on_device(tmp_path):
    "`python -m fastaug.bench run --small`: fastai trains where the data is, the GPU when there is one"
    if not ON_GPU: pytest.skip('the benchmark trains on the default device: this check is for a GPU machine')
    bench_main(['run', '--small', '--out', str(tmp_path), '--seeds', '1'])
    runs = [json.loads(l) for l in (tmp_path/'runs.jsonl').read_text().splitlines()]
    assert runs and all(math.isfinite(r['accuracy']) for r in runs)
    assert all(torch.cuda.get_device_name() in r['machine'] for r in runs), 'the runs do not name the GPU they ran on'
