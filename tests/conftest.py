"Shared fixtures: small offline data per modality, built once per session, and the `slow` marker"
import warnings
import pytest, torch
from fastai.torch_core import set_seed
from fastai.callback.progress import ProgressCallback
from fastaug.datasets import get_dls, get_learner, MODALITIES

warnings.filterwarnings('ignore', message='.*torch.jit.script.*')

def pytest_addoption(parser):
    parser.addoption('--run-slow', action='store_true', help='also run the tests marked slow')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than a few seconds; run with --run-slow (CI does)')

def pytest_collection_modifyitems(config, items):
    if config.getoption('--run-slow'): return
    skip = pytest.mark.skip(reason='slow: run with --run-slow')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)

_dls = {}
def small_dls(modality, **kwargs):
    "The small offline `DataLoaders` of `modality`, built once per session"
    key = (modality, tuple(sorted(kwargs.items())))
    if key not in _dls: _dls[key] = get_dls(modality, small=True, **kwargs)
    return _dls[key]

def small_learner(modality, cbs=None, **kwargs):
    "A `Learner` on the small data of `modality`, quiet"
    learn = get_learner(modality, dls=small_dls(modality), cbs=cbs, **kwargs)
    learn.remove_cb(ProgressCallback)
    return learn

def hooks_left(model):
    "Modules of `model` that still carry a forward or forward-pre hook"
    return [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]

@pytest.fixture(scope='module')
def one_thread():
    "One torch thread for a module: fastest for tiny models, far faster than two on a busy machine, and bitwise reproducible"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def same(a, b)->bool:
    "Whether `a` and `b` hold equal values, tensors compared exactly"
    if isinstance(a, torch.Tensor): return isinstance(b, torch.Tensor) and a.shape == b.shape and bool((a == b).all())
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x,y in zip(a, b))
    return a == b

@pytest.fixture(autouse=True)
def _seed():
    set_seed(0)
    yield

# Property tests draw the same examples on every run, so CI never fails on a case no one has seen locally
from hypothesis import settings as _hsettings
_hsettings.register_profile('fastaug', derandomize=True, deadline=None)
_hsettings.load_profile('fastaug')
