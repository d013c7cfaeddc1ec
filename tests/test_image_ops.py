"PBA's image operations against PIL on sample images, and the ImagePolicy callback through fastai's workflows"
import math
import numpy as np, pytest, torch
from PIL import Image
from fastai.learner import Learner, load_learner
from fastai.data.core import Datasets, DataLoaders
from fastai.data.transforms import IntToFloatTensor, Normalize, ItemGetter, Categorize
from fastai.callback.core import Callback, CancelFitException, CancelTrainException, CancelEpochException
from fastai.callback.progress import ProgressCallback
import fastai.callback.schedule, fastai.callback.fp16  # fit_one_cycle, lr_find, fine_tune, to_fp16
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.vision.core import TensorImage, imagenet_stats
from fastai.vision.learner import vision_learner
from fastai.vision.models import resnet18
from fastaug.core import plain
from fastaug.policy import Policy, PolicySchedule, get_op, register_op
from fastaug.image_ops import *
from fastaug.testing import pil_image_op, images_to_tensor
from fastaug.datasets import sample_image_crops
from fastaug.mixup import MixUp
from fastaug.datasets import image_cnn
from conftest import small_dls, small_learner, hooks_left

MAG_OPS = [n for n in IMAGE_OPS if get_op(n).magnitude]
ENHANCERS = ['Brightness', 'Color', 'Contrast', 'Sharpness']

# ---------------------------------------------------------------- sample images
def _grey_images():
    "Four Fashion-MNIST training images, a flat image and a low-contrast one: 28×28 grey PIL images"
    ds = small_dls('image').train_ds
    ims = [Image.fromarray(ds[i][0][0].numpy()) for i in range(4)]
    low = Image.fromarray((np.asarray(ims[0]).astype(int)//4 + 60).astype(np.uint8))
    return ims + [Image.new('L', (28, 28), 90), low]

def _rgb_images():
    "32×32 crops of scikit-learn's photographs, a non-square 37×52 image, and uniform noise"
    x,_ = sample_image_crops(4, size=32, seed=1)
    crops = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in x]
    from sklearn.datasets import load_sample_image
    odd = Image.fromarray(load_sample_image('flower.jpg')).resize((52, 37))
    noise = Image.fromarray(np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8))
    return crops, [odd], [noise]

GREY = _grey_images()
CROPS,ODD,NOISE = _rgb_images()
IMAGE_SETS = {'grey': GREY, 'rgb32': CROPS + NOISE, 'rgb37x52': ODD}

def _random_batch(dtype, c=3, h=28, w=36, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else torch.rand(n, c, h, w, generator=g).to(dtype)

# ---------------------------------------------------------------- identity, shape, dtype, range
@pytest.mark.parametrize('name', MAG_OPS)
@pytest.mark.parametrize('dtype', [torch.uint8, torch.float32, torch.bfloat16])
@pytest.mark.parametrize('c', [1, 3])
def test_magnitude_zero_is_identity(name, dtype, c):
    x = _random_batch(dtype, c=c)
    torch.testing.assert_close(get_op(name).fn(x, 0.), x, rtol=0, atol=0)

@pytest.mark.parametrize('name', IMAGE_OPS)
@pytest.mark.parametrize('dtype', [torch.uint8, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('c,h,w', [(1, 28, 28), (3, 37, 52)])
def test_keeps_shape_dtype_and_range(name, dtype, c, h, w):
    x = _random_batch(dtype, c=c, h=h, w=w, n=8)
    before = x.clone()
    for m in (0.1, 0.5, 0.9):
        out = get_op(name).fn(x, m, fill=(0.3,)*c)
        assert out.shape == x.shape and out.dtype == x.dtype
        top = 255 if dtype == torch.uint8 else 1
        assert out.float().min() >= 0 and out.float().max() <= top
        assert torch.isfinite(out.float()).all()
    assert torch.equal(x, before), "an operation wrote into its input"

# ---------------------------------------------------------------- against PIL, per image
def _check_pil(name, imgs, m, sign, fill, exact):
    x = images_to_tensor(imgs)
    h,w = x.shape[-2:]
    centers = torch.stack([torch.arange(len(imgs))*7 % h, torch.arange(len(imgs))*11 % w], 1)
    out = get_op(name).fn(x, m, signs=torch.full((len(imgs),), float(sign)), centers=centers, fill=fill)
    ref = images_to_tensor([pil_image_op(im, name, m, sign, fill=fill, center=tuple(c.tolist())) for im,c in zip(imgs, centers)])
    diff = (out.int() - ref.int()).abs()
    if exact: assert diff.max() == 0, f"{name} m={m} sign={sign}: {int((diff > 0).sum())} values differ from PIL"
    else:
        # The enhancements blend in single precision, like PIL's C code; a compiler that fuses the multiply-add may
        # round a value across an integer boundary: allow one level on a few values (here they all match exactly).
        assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.005, f"{name} m={m} sign={sign}: max diff {int(diff.max())}"

@pytest.mark.parametrize('name', IMAGE_OPS)
@pytest.mark.parametrize('images', list(IMAGE_SETS))
def test_matches_pil(name, images):
    imgs = IMAGE_SETS[images]
    fills = [0., 0.5] if images == 'grey' else [0., (0.2, 0.5, 0.9)]
    for m in (0.1, 0.3, 0.6, 0.9):
        for sign in (1, -1):
            for fill in fills: _check_pil(name, imgs, m, sign, fill, exact=name not in ENHANCERS)

@pytest.mark.parametrize('name', IMAGE_OPS)
def test_float_path_agrees_with_uint8_path(name):
    """Float images give the 8-bit result up to PIL's truncation to whole levels (1). The enhancements' 8-bit path also
    rounds its degenerate image to whole levels (PIL's integer luma, rounded smoothing and mean), which the blend can
    carry by up to one more level (2)"""
    x8 = images_to_tensor(CROPS)
    xf = x8.float()/255
    signs,centers = torch.tensor([1., -1, 1, -1]),torch.tensor([[5, 5], [10, 20], [31, 0], [16, 16]])
    for m in (0.3, 0.9):
        o8 = get_op(name).fn(x8, m, signs=signs, centers=centers, fill=0.5).float()
        of = get_op(name).fn(xf, m, signs=signs, centers=centers, fill=0.5)*255
        assert (of - o8).abs().max() <= (2 if name in ENHANCERS else 1) + 1e-3, name

# ---------------------------------------------------------------- randomness
@pytest.mark.parametrize('name', ['Rotate', 'ShearX', 'TranslateY', 'Contrast'])
def test_sign_is_drawn_per_sample(name):
    x = images_to_tensor(CROPS[:1]*64)
    out = get_op(name).fn(x, 0.6)
    pos = get_op(name).fn(x[:1], 0.6, signs=[1])
    neg = get_op(name).fn(x[:1], 0.6, signs=[-1])
    is_pos,is_neg = (out == pos).flatten(1).all(1),(out == neg).flatten(1).all(1)
    assert (is_pos | is_neg).all()
    assert 10 < int(is_pos.sum()) < 54

def test_cutout_centres_are_uniform_and_boxes_clipped():
    x = torch.full((2000, 1, 32, 32), 200, dtype=torch.uint8)
    out = get_op('Cutout').fn(x, 0.5)  # 10×10 squares, [c-5, c+5)
    cut = out[:, 0] == 0
    area = cut.flatten(1).sum(1)
    assert area.max() == 100 and area.min() >= 25  # a corner centre keeps a 5×5 quarter
    assert cut.float().mean(0).min() > 0  # every pixel is covered by some square

# ---------------------------------------------------------------- a magnitude per sample
@pytest.mark.parametrize('name', IMAGE_OPS)
@pytest.mark.parametrize('dtype', [torch.uint8, torch.float32])
def test_per_sample_magnitudes_equal_one_call_per_sample(name, dtype):
    "One call with a magnitude per sample gives what a call per sample with its own magnitude gives, for the same draws"
    x = images_to_tensor(CROPS + NOISE + CROPS)
    if dtype != torch.uint8: x = x.float()/255
    n = len(x)
    mags = torch.tensor([0., .1, .2, .3, .5, .7, .9, 1., .4][:n], dtype=torch.float64)
    signs = torch.tensor([1., -1]*5)[:n]
    centers = torch.randint(0, 32, (n, 2), generator=torch.Generator().manual_seed(0))
    fn = get_op(name).fn
    out = fn(x, mags, signs=signs, centers=centers, fill=0.3)
    ref = torch.cat([fn(x[i:i+1], float(mags[i]), signs=signs[i:i+1], centers=centers[i:i+1], fill=0.3)
                     for i in range(n)])
    assert out.dtype == x.dtype and torch.equal(out, ref), name

@pytest.mark.parametrize('dtype', [torch.uint8, torch.float32])
def test_translation_by_slices_equals_the_affine_map(dtype):
    "Translations are copies of slices: the same pixels as PIL's affine map through `warp_affine`, at any shift"
    x = _random_batch(dtype, n=9)
    h,w = x.shape[-2:]
    shifts = torch.tensor([0., 1, -1, 5, -13, w - 1, -w, w + 3, 2])
    same = lambda a, b: torch.testing.assert_close(a, b, rtol=0, atol=0)
    along_x,along_y = lambda v: (1, 0, v, 0, 1, 0),lambda v: (1, 0, 0, 0, 1, v)
    for fill in (0., 0.5, (0.1, 0.2, 0.9)):
        same(translate_x(x, shifts, fill), warp_affine(x, shifts, along_x, fill))
        same(translate_y(x, shifts, fill), warp_affine(x, shifts, along_y, fill))
        same(translate_x(x, 4, fill), warp_affine(x, torch.full((9,), 4.), along_x, fill))

def test_parameters_follow_pba_formulas_for_numbers_and_tensors():
    "PBA's parameters at a few magnitudes and sizes, as numbers (ints where PBA's are) and as tensors"
    cases = [('Rotate', .7, 32, 32, 21.), ('ShearX', .5, 32, 32, .15), ('TranslateX', .5, 32, 32, 5),
             ('TranslateX', .5, 224, 224, 35), ('TranslateY', .3, 28, 36, 3), ('Brightness', .4, 32, 32, .4),
             ('Posterize', .9, 32, 32, 1), ('Posterize', .3, 32, 32, 6), ('Solarize', .7, 32, 32, 77),
             ('Solarize', 0., 32, 32, 256), ('Cutout', .5, 32, 32, (10, 10)), ('Cutout', .5, 28, 36, (9, 11)),
             ('Invert', .5, 32, 32, None)]
    for name,m,h,w,want in cases:
        got = image_op_parameter(name, m, h, w)
        assert got == pytest.approx(want) if isinstance(want, float) else got == want, (name, m, got)
        if isinstance(want, (int, tuple)): assert all(type(v) is int for v in (got if isinstance(got, tuple) else (got,)))
        vec = image_op_parameter(name, torch.tensor([m, m], dtype=torch.float64), h, w)
        if want is None: assert vec is None; continue
        vals = [tuple(float(t[i]) for t in vec) if isinstance(vec, tuple) else float(vec[i]) for i in range(2)]
        assert vals[0] == vals[1] == (tuple(float(v) for v in got) if isinstance(got, tuple) else float(got))
    with pytest.raises(ValueError, match=r'magnitudes must be in \[0, 1\]'): image_op_parameter('Rotate', torch.tensor([1.5]))

def _fixed_draws(monkeypatch):
    "Signs and cutout centres that do not depend on how a batch is split into calls"
    import fastaug.image_ops as io
    monkeypatch.setattr(io, 'random_signs', lambda x, signs=None: torch.ones(len(x), dtype=torch.float64))
    def randint(*a, **kw):
        size = kw.pop('size', a[-1])
        return torch.full(size, 7, dtype=torch.long, device=kw.get('device'))
    monkeypatch.setattr(torch, 'randint', randint)

@pytest.mark.parametrize('seed', range(3))
def test_policy_one_call_per_operation_equals_one_per_setting(monkeypatch, seed):
    "The policy's calls, one per operation with a magnitude per sample, equal one call per setting with its number"
    x = images_to_tensor((CROPS + NOISE)*8)
    _fixed_draws(monkeypatch)
    torch.manual_seed(seed)
    ops = [IMAGE_OPS[i] for i in torch.randperm(len(IMAGE_OPS))[:6].tolist()]
    pol = Policy([(o, 8, int(m)) for o in ops for m in torch.multinomial(torch.ones(10), 2)])
    plan = pol.plan(len(x))
    out = pol.apply(x, plan, fill=0.5)
    ref = x.clone()
    for row in plan:
        for k,s in enumerate(pol.settings):
            idx = (row == k).nonzero()[:, 0]
            if len(idx): ref[idx] = get_op(s.op).fn(ref[idx], s.m, idx=idx, fill=0.5)
    assert torch.equal(out, ref)
    calls = [pol.calls(row) for row in plan]
    assert all(len(c) == len({op.name for op,*_ in c}) for c in calls)  # one call per operation and round

def test_policy_applies_in_plan_order_and_leaves_others():
    x = images_to_tensor(CROPS)
    pol = Policy([('Invert', 10, 0), ('Posterize', 10, 9)], n_ops_weights=(0, 0, 1))
    plan = torch.tensor([[0, 1, -1, 0], [1, 0, -1, -1]])
    out = apply_policy(pol, x, plan)
    assert torch.equal(out[0], posterize(invert(x[:1]), 1)[0])
    assert torch.equal(out[1], invert(posterize(x[1:2], 1))[0])
    assert torch.equal(out[2], x[2]) and torch.equal(out[3], invert(x[3:4])[0])

def test_full_policy_on_every_kind_of_batch():
    pol = Policy([(n, 5, 5) for n in IMAGE_OPS for _ in range(2)])
    for x in (_random_batch(torch.uint8, c=1), _random_batch(torch.float32, c=3), _random_batch(torch.bfloat16, c=3)):
        before = x.clone()
        out = apply_policy(pol, x, fill=0.5)
        assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(x, before)

def test_bad_inputs_give_clear_errors():
    x = _random_batch(torch.uint8)
    with pytest.raises(ValueError, match=r'needs a batch of images \(n, channels, height, width\)'): rotate(x[0], 10)
    with pytest.raises(ValueError, match='needs uint8'): invert(x.long())
    with pytest.raises(ValueError, match='grey \\(1-channel\\) or RGB \\(3-channel\\)'): color(_random_batch(torch.uint8, c=2), 0.5)
    with pytest.raises(ValueError, match='`fill` must be one value in \\[0, 1\\]'): rotate(x, 10, fill=2.)
    with pytest.raises(ValueError, match='`bits` must be integers in \\[1, 8\\]'): posterize(x, 0)
    with pytest.raises(ValueError, match='one number or one per sample'): rotate(x, [1., 2.])
    with pytest.raises(ValueError, match='magnitude must be in \\[0, 1\\]'): get_op('Rotate').fn(x, 1.5)

def test_magnitude_follows_pba():
    "Rotate to 27°, translate to 9 px at 32×32 (scaled with the size), enhance 0.1-1.9, solarize at 256-int(256m)"
    assert [image_op_parameter('Rotate', l/10) for l in (0, 5, 9)] == pytest.approx([0, 15, 27])
    assert [image_op_parameter('TranslateX', l/10) for l in range(10)] == list(range(10))
    assert image_op_parameter('TranslateY', .9, 224, 224) == 63
    assert image_op_parameter('ShearX', .9) == pytest.approx(0.27)
    x = torch.full((2, 1, 4, 4), 100, dtype=torch.uint8)
    assert get_op('Brightness').fn(x, .9, signs=[1, -1])[:, 0, 0, 0].tolist() == [190, 10]
    assert [image_op_parameter('Solarize', l/10) for l in (0, 1, 9)] == [256, 231, 26]
    bits = [image_op_parameter('Posterize', l/10) for l in range(10)]
    assert bits[0] == 8 and bits[-1] == 1 and all(a >= b for a,b in zip(bits, bits[1:]))
    assert image_op_parameter('Cutout', .9, 64, 32) == (36, 18)

# ---------------------------------------------------------------- the callback
def fit_quiet(learn, n=1, lr=1e-3, **kwargs):
    with learn.no_logging(): learn.fit(n, lr, **kwargs)

INVERT = lambda: Policy([('Invert', 10, 0)], n_ops_weights=(0, 1, 0))
POLICY = lambda: Policy([('Rotate', 5, 6), ('Cutout', 6, 5), ('Equalize', 3, 0), ('TranslateY', 5, 3),
                         ('Color', 4, 7), ('Solarize', 2, 5), ('ShearX', 4, 4), ('Sharpness', 3, 8)])

class Spy(Callback):
    "Record the inputs every batch reaches the model with"
    order = 50
    def before_fit(self): self.seen = []
    def before_batch(self): self.seen.append((self.training, plain(self.xb[0]).detach().clone()))

_rgb = {}
def _rgb_dls(float_images=False, n=192, bs=32):
    "Two-class 32×32 RGB crops normalised with ImageNet statistics: 8-bit items, or float ones (no IntToFloatTensor)"
    x,y = sample_image_crops(n)
    if (float_images, n, bs) not in _rgb:
        items = [(TensorImage(a.float()/255 if float_images else a), int(b)) for a,b in zip(x, y)]
        dsets = Datasets(items, tfms=[[ItemGetter(0)], [ItemGetter(1), Categorize(vocab=[0, 1])]],
                         splits=[list(range(n*3//4)), list(range(n*3//4, n))])
        tfms = ([] if float_images else [IntToFloatTensor()]) + [Normalize.from_stats(*imagenet_stats)]
        _rgb[(float_images, n, bs)] = dsets.dataloaders(bs=bs, num_workers=0, after_batch=tfms)
    return _rgb[(float_images, n, bs)],x

def tiny_learner(cbs=None, float_images=False, dls=None, **kwargs):
    "A small convnet on the RGB crops: a few batches an epoch"
    if dls is None: dls,_ = _rgb_dls(float_images)
    learn = Learner(dls, image_cnn(2, n_in=3, widths=(16, 32, 64)), loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                    cbs=cbs, **kwargs)
    learn.remove_cb(ProgressCallback)
    return learn

def _pipeline(dls): return [list(dl.after_batch.fs) for dl in (dls.train, dls.valid)]

def test_trains_and_leaves_no_residue():
    cb = ImagePolicy(POLICY())
    learn = small_learner('image', cbs=cb)
    lf,pipe = learn.loss_func,_pipeline(learn.dls)
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)
    assert _pipeline(learn.dls) == pipe and learn.loss_func is lf and not hooks_left(learn.model)
    assert cb._pipe is None

@pytest.mark.parametrize('float_images', [False, True])
def test_training_batches_only_are_augmented(float_images):
    "An always-Invert policy: each training batch reaches the model inverted, every validation batch untouched"
    dls,x = _rgb_dls(float_images)
    dls = DataLoaders(dls.train.new(shuffle=False, drop_last=False), dls.valid)
    spy = Spy()
    learn = tiny_learner([ImagePolicy(INVERT()), spy], dls=dls)
    fit_quiet(learn, 1)
    mean,std = [torch.tensor(s).view(1, 3, 1, 1) for s in imagenet_stats]
    tr = torch.cat([b for t,b in spy.seen if t])*std + mean
    va = torch.cat([b for t,b in spy.seen if not t])*std + mean
    n_tr = len(tr)
    torch.testing.assert_close(tr, 1 - x[:n_tr].float()/255, atol=1e-5, rtol=0)
    torch.testing.assert_close(va, x[n_tr:].float()/255, atol=1e-5, rtol=0)
    assert torch.equal(dls.train.dataset[0][0], x[0].float()/255 if float_images else x[0]), "the loader's data changed"

def test_default_fill_is_the_normalisation_mean():
    dls,_ = _rgb_dls()
    cb = ImagePolicy(Policy([('TranslateX', 10, 9)], n_ops_weights=(0, 1, 0)))
    spy = Spy()
    learn = tiny_learner([cb, spy], dls=dls)
    fit_quiet(learn, 1)
    b = spy.seen[0][1]  # 9 of 32 columns uncovered on one side: normalised mean = 0, up to 8-bit rounding
    edge = torch.cat([b[..., :9], b[..., -9:]], -1)
    assert (edge.abs() < 0.01).flatten(1).float().mean(1).min() >= 0.5  # one of the two 9-column edges is fill

def test_policy_set_between_epochs_is_used():
    "As the PBA callback does: a new policy set in before_epoch holds from that epoch on"
    dls,x = _rgb_dls()
    dls = DataLoaders(dls.train.new(shuffle=False, drop_last=False), dls.valid)
    cb = ImagePolicy()
    class Schedule(Callback):
        order = 5
        def before_epoch(self): cb.policy = INVERT() if self.epoch == 1 else None
    spy = Spy()
    learn = tiny_learner([cb, Schedule(), spy], dls=dls)
    fit_quiet(learn, 2)
    mean,std = [torch.tensor(s).view(1, 3, 1, 1) for s in imagenet_stats]
    tr = [b*std + mean for t,b in spy.seen if t]
    n = len(dls.train)
    orig = x[:len(dls.train_ds)].float()/255
    torch.testing.assert_close(torch.cat(tr[:n]), orig, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat(tr[n:]), 1 - orig, atol=1e-5, rtol=0)

def test_lr_find_then_fit():
    learn = tiny_learner(ImagePolicy(POLICY()))
    pipe = _pipeline(learn.dls)
    with learn.no_logging(): learn.lr_find(num_it=8, show_plot=False)
    assert _pipeline(learn.dls) == pipe
    fit_quiet(learn, 1)
    assert _pipeline(learn.dls) == pipe

@pytest.mark.slow
def test_fine_tune_vision_learner():
    dls = small_dls('image')
    learn = vision_learner(dls, resnet18, pretrained=False, n_in=1, cbs=ImagePolicy(POLICY(), fill=0.), metrics=accuracy)
    learn.remove_cb(ProgressCallback)
    pipe = _pipeline(dls)
    with learn.no_logging(): learn.fine_tune(1, 1e-3, freeze_epochs=1)
    assert _pipeline(dls) == pipe and not hooks_left(learn.model)

@pytest.mark.parametrize('exc', [CancelFitException, CancelTrainException, CancelEpochException])
def test_cancelled_fit_restores_pipeline(exc):
    class Cancel(Callback):
        order = 30
        def after_batch(self):
            if self.training and self.iter == 2: raise exc()
    learn = tiny_learner([ImagePolicy(POLICY()), Cancel()])
    pipe = _pipeline(learn.dls)
    fit_quiet(learn, 2)
    assert _pipeline(learn.dls) == pipe

def test_exception_mid_batch_is_cleaned_up_by_validation():
    "An error that is not a fastai cancel skips after_train; the transform left behind is inert and goes at validation"
    class Boom(Callback):
        def after_pred(self):
            if self.training: raise RuntimeError('boom')
    learn = tiny_learner([ImagePolicy(INVERT()), Boom()])
    pipe = _pipeline(learn.dls)
    with pytest.raises(RuntimeError, match='boom'): fit_quiet(learn, 1)
    learn.remove_cb(Boom)
    learn.validate()
    assert _pipeline(learn.dls) == pipe

def test_get_preds_are_probabilities():
    learn = tiny_learner(ImagePolicy(POLICY()))
    fit_quiet(learn, 1)
    preds,_ = learn.get_preds()
    assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)

def test_export_then_load(tmp_path):
    pol = POLICY()
    learn = tiny_learner(ImagePolicy(pol, fill=0.), path=tmp_path)
    fit_quiet(learn, 1)
    learn.export('learn.pkl')
    assert (tmp_path/'learn.pkl').stat().st_size < 2_000_000
    new = load_learner(tmp_path/'learn.pkl')
    cb = next(c for c in new.cbs if isinstance(c, ImagePolicy))
    assert cb.policy == pol and cb._pipe is None
    assert not any(type(f).__name__ == '_BeforeIntToFloat' for f in new.dls.train.after_batch.fs)
    dec,idx,probs = new.predict(learn.dls.valid_ds.items[0])
    assert math.isclose(float(probs.sum()), 1, rel_tol=1e-5)

def test_to_fp16_trains_on_cpu():
    learn = tiny_learner(ImagePolicy(POLICY())).to_fp16()
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)

class BF16Autocast(Callback):
    "CPU bf16 autocast around the forward pass and the loss"
    order = 5
    def before_batch(self): self.ctx = torch.autocast('cpu', dtype=torch.bfloat16); self.ctx.__enter__()
    def after_loss(self): self.ctx.__exit__(None, None, None)

@pytest.mark.parametrize('float_images', [False, True])
def test_bf16_autocast(float_images):
    learn = tiny_learner([ImagePolicy(POLICY()), BF16Autocast()], float_images)
    fit_quiet(learn, 1)
    assert all(math.isfinite(l) for l in learn.recorder.losses)

def test_composes_with_mixup():
    learn = tiny_learner([ImagePolicy(POLICY()), MixUp(0.4)])
    lf = learn.loss_func
    fit_quiet(learn, 1)
    assert learn.loss_func is lf and all(math.isfinite(l) for l in learn.recorder.losses)

@register_op('_TestLatentShift', 'latent')
def _latent_shift(z, magnitude, **kwargs): return z + magnitude

def test_refuses_latent_policies_and_unknown_ops():
    with pytest.raises(ValueError, match='ImagePolicy applies image operations, got a policy of latent operations'):
        ImagePolicy(Policy([('_TestLatentShift', 5, 5)]))
    cb = ImagePolicy()
    with pytest.raises(ValueError, match='ImagePolicy applies image operations'): cb.policy = [('_TestLatentShift', 5, 5)]
    with pytest.raises(ValueError, match="unknown operation 'Rotat'"): ImagePolicy([('Rotat', 5, 5)])
    with pytest.raises(ValueError, match='`fill` must be one value in \\[0, 1\\]'): ImagePolicy(fill=-1)

def test_non_image_batches_are_refused():
    learn = small_learner('tabular', cbs=ImagePolicy(POLICY()))
    with pytest.raises(ValueError, match='ImagePolicy needs a batch of images'): fit_quiet(learn, 1)

def test_float_batch_out_of_range_without_normalize():
    x = torch.rand(64, 3, 8, 8)*4 - 2
    y = torch.randint(0, 2, (64,))
    dls = DataLoaders.from_dsets(list(zip(x, y)), list(zip(x, y)), bs=16)
    learn = Learner(dls, image_cnn(2, n_in=3, widths=(4, 8, 8)), loss_func=CrossEntropyLossFlat(), cbs=ImagePolicy(POLICY()))
    learn.remove_cb(ProgressCallback)
    with pytest.raises(ValueError, match=r'needs pixel values in \[0, 1\] or a `Normalize` transform to undo'): fit_quiet(learn, 1)
