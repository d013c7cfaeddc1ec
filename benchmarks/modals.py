"""MODALS: the cost of a training step against plain training, and accuracy against no augmentation and MixUp.

    python benchmarks/modals.py cost [--steps 10] [--rounds 20]
    python benchmarks/modals.py accuracy [--seeds 3] [--epochs 8] [--modalities image tabular series text]
    python benchmarks/modals.py sweep [--seeds 3] [--epochs 8] [--modalities series image]
    python benchmarks/modals.py all        # cost, then accuracy

`cost` follows benchmarks/step_cost.py: a step is timed from `before_batch` to `after_batch` (data loading excluded,
the callbacks' work and the discriminator's step included); configurations take turns, `steps` batches each, for
`rounds` rounds, and each one's median step time is divided by plain training's. The problem is the issue's: batch
size 128, a latent of 256 (the head is `nn.Linear(256, 10)`), 10 classes — the small image convnet on Fashion-MNIST
and the 1-D convnet on MNIST-1D, with their last stage widened to 256 — plus the tabular MLP (latent 256, 5 classes),
whose model is so small that the authors' discriminator (256 → 512 → 128 → 1) cost more than the model itself;
MODALS now sizes it to the latent (`disc_hidden`: 256 → 128 → 32 → 1 here).
`refresh='epoch'` adds a forward pass over the training set once per epoch, which a per-step timing does not show.

`accuracy` trains each modality's small model (`fastaug.datasets.get_learner`) with no augmentation, fastaug's
MixUp(0.4) and MODALS() (its default policy and loss weights), one-cycle, over paired seeds (same initial weights and
data order for every method of a seed: `fastaug.bench.train_eval` seeds the weights and the loaders' own shuffling
generator), and prints mean ± std and the paired gain.

`sweep` is how MODALS' defaults were chosen: a grid of fixed policies and loss weights on the same footing.
"""
import argparse, warnings
warnings.filterwarnings('ignore')
import torch
from fastai.basics import *
from fastai.callback.all import *
from fastaug.all import *
from fastaug.modals import *
from _common import time_steps, paired_runs, ratio_cells

# ---------------------------------------------------------------- step cost
def cost_learner(problem, dls, cb, seed=0):
    "The problem's model with a latent of 256, and `cb`"
    set_seed(seed)
    cbs = [cb] if cb else None
    if problem == 'image': return Learner(dls, image_cnn(dls.c, widths=(32, 64, 256)), metrics=accuracy, cbs=cbs)
    if problem == 'series': return Learner(dls, series_cnn(dls.c, widths=(32, 64, 256)), metrics=accuracy, cbs=cbs)
    from fastai.tabular.learner import tabular_learner
    return tabular_learner(dls, layers=[200, 256], metrics=accuracy, cbs=cbs)

COST_CONFIGS = {
    'plain': lambda: None,
    'MixUp': lambda: MixUp(0.4),
    'MODALS policy only': lambda: MODALS(triplet_weight=0, adv_weight=0),
    'MODALS + triplet': lambda: MODALS(adv_weight=0),
    'MODALS + triplet + adv (default)': lambda: MODALS(),
}

def step_cost(problem, dls, steps, rounds):
    "Median (step, iteration) time of every configuration (the warm-up fills MODALS' memory), and the errors"
    return time_steps({n: (lambda mk=mk: cost_learner(problem, dls, mk())) for n,mk in COST_CONFIGS.items()}, steps, rounds)

def run_cost(steps, rounds, problems=('image', 'series', 'tabular')):
    data = {'image': lambda: get_dls('image', n_train=10_000, bs=128), 'series': lambda: get_dls('series', bs=128),
            'tabular': lambda: get_dls('tabular', bs=128)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {steps*rounds} steps per configuration, "
          "bs 128, latent 256\n", flush=True)
    label = {'image': 'image convnet, 10 classes', 'series': '1-D convnet, 10 classes', 'tabular': 'tabular MLP, 5 classes'}
    names = list(COST_CONFIGS) + ['plain step (ms)']
    lines = ['| model | ' + ' | '.join(names) + ' |', '|---|' + '---|'*len(names)]
    for problem in problems:
        med,err = step_cost(problem, data[problem](), steps, rounds)
        row = ratio_cells(med, err, COST_CONFIGS)
        row['plain step (ms)'] = f"{med['plain'][0]*1000:.1f}"
        lines.append(f"| {label[problem]} | " + ' | '.join(row[n] for n in names) + ' |')
        print(lines[-1], flush=True)
    print('\n' + '\n'.join(lines))

# ---------------------------------------------------------------- accuracy
def run_accuracy(methods:dict, seeds, epochs, modalities, n_train=None, small=False):
    "Train every method on every modality over paired seeds; print the runs and the table"
    data = lambda mod: dict(small=True) if small else ({'n_train': n_train} if n_train else {})
    return paired_runs(methods, modalities, seeds, epochs, data, width=28)

ACCURACY_METHODS = {'none': lambda: [], 'mixup': lambda: [MixUp(0.4)], 'modals': lambda: [MODALS()]}

SWEEP_METHODS = {
    'none': lambda: [],
    'p5m3 tw0 aw0': lambda: [MODALS(modals_policy(5, 3), triplet_weight=0, adv_weight=0)],
    'p5m5 tw0 aw0': lambda: [MODALS(modals_policy(5, 5), triplet_weight=0, adv_weight=0)],
    'p8m5 tw0 aw0': lambda: [MODALS(modals_policy(8, 5), triplet_weight=0, adv_weight=0)],
    'p3m2 tw0 aw0': lambda: [MODALS(modals_policy(3, 2), triplet_weight=0, adv_weight=0)],
    'noise+diff p5m5 tw0 aw0': lambda: [MODALS(modals_policy(5, 5, ops=('GaussianNoise', 'DifferenceTransform')), triplet_weight=0, adv_weight=0)],
    'interp+extra p5m5 tw0 aw0': lambda: [MODALS(modals_policy(5, 5, ops=('HardInterpolation', 'HardExtrapolation')), triplet_weight=0, adv_weight=0)],
    'p5m5 tw.01 aw0': lambda: [MODALS(modals_policy(5, 5), triplet_weight=0.01, adv_weight=0)],
    'p5m5 tw0 aw.01': lambda: [MODALS(modals_policy(5, 5), triplet_weight=0, adv_weight=0.01)],
    'p5m5 tw.01 aw.01': lambda: [MODALS(modals_policy(5, 5), triplet_weight=0.01, adv_weight=0.01)],
    'triplet+adv only': lambda: [MODALS([], triplet_weight=0.01, adv_weight=0.01)],
    'triplet+adv .03 only': lambda: [MODALS([], triplet_weight=0.03, adv_weight=0.03)],
    'p3m2 tw.01 aw.01': lambda: [MODALS(modals_policy(3, 2), triplet_weight=0.01, adv_weight=0.01)],
    'p5m2 tw.01 aw.01': lambda: [MODALS(modals_policy(5, 2), triplet_weight=0.01, adv_weight=0.01)],
    'noise+diff p5m3 tw.01 aw.01': lambda: [MODALS(modals_policy(5, 3, ops=('GaussianNoise', 'DifferenceTransform')), triplet_weight=0.01, adv_weight=0.01)],
    'noise+diff p5m5 tw.01 aw.01': lambda: [MODALS(modals_policy(5, 5, ops=('GaussianNoise', 'DifferenceTransform')), triplet_weight=0.01, adv_weight=0.01)],
    'p5m5 tw.03 aw.03': lambda: [MODALS(modals_policy(5, 5), triplet_weight=0.03, adv_weight=0.03)],
    'p5m2 tw.03 aw.03': lambda: [MODALS(modals_policy(5, 2), triplet_weight=0.03, adv_weight=0.03)],
}

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('what', nargs='?', default='all', choices=['all', 'cost', 'accuracy', 'sweep'])
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--modalities', nargs='+', default=None, choices=list(MODALITIES))
    p.add_argument('--n-train', type=int, default=None, help='a fixed stratified subset of the training set')
    p.add_argument('--small', action='store_true', help="the tests' small data: a quick check that everything runs")
    p.add_argument('--methods', nargs='+', default=None, help='sweep: only these configurations')
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--rounds', type=int, default=20)
    a = p.parse_args()
    if a.what in ('all', 'cost'): run_cost(a.steps, a.rounds)
    if a.what in ('all', 'accuracy'):
        run_accuracy(ACCURACY_METHODS, a.seeds, a.epochs, a.modalities or list(MODALITIES), a.n_train, a.small)
    if a.what == 'sweep':
        methods = {k: v for k,v in SWEEP_METHODS.items() if a.methods is None or k in a.methods or k == 'none'}
        run_accuracy(methods, a.seeds, a.epochs, a.modalities or ['series', 'image'], a.n_train, a.small)
