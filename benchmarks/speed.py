"""The cost of every technique's training step as a ratio to plain training, on the benchmark's models, side by side.

    python benchmarks/speed.py [--steps 10] [--rounds 20] [--models image series tabular tabular-256]
    python benchmarks/speed.py --against /path/to/old/checkout   # the same table for an older fastaug, in one run

This is the table of the speed targets (issue 15): each technique with its default constructor on the models the
benchmark trains (`fastaug.datasets.get_learner`): the image convnet on Fashion-MNIST (10,000 images), the 1-D
convnet on MNIST-1D and the tabular MLP (`tabular_learner([200, 100])`) on diamonds, at batch size 128, and the
MLP at batch size 256. A step is timed from `before_batch` to `after_batch` (`_common.time_steps`); configurations
take turns and each median is divided by plain training's median, measured in the same process.

`--against DIR` imports the `fastaug` package found in `DIR` as a second copy and times its callbacks in the same
rounds (columns marked `old`): how each change was measured against the code before it.
"""
import argparse, importlib.util, sys, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import torch
from fastai.basics import *
from fastaug.all import *
from _common import time_steps, ratio_cells

def techniques(m)->dict:
    "The techniques of the fastaug module namespace `m`, each with its default constructor"
    return {'MixUp': lambda: m.MixUp(), 'CutMix': lambda: m.CutMix(), 'ManifoldMixup': lambda: m.ManifoldMixup(),
            'MODALS': lambda: m.MODALS(), 'ISDA': lambda: m.ISDA()}

def import_copy(root:str, name:str='fastaug_old'):
    "The fastaug package under `root`, imported as `name` beside the installed one"
    path = Path(root)/'fastaug'/'__init__.py'
    if not path.exists(): raise SystemExit(f"--against: no fastaug package at {path.parent}")
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=[str(path.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module(f'{name}.all')

MODELS = {  # name -> (modality, loader arguments, label)
    'image': ('image', dict(n_train=10_000, bs=128), 'image convnet, bs 128'),
    'series': ('series', dict(bs=128), '1-D convnet, bs 128'),
    'tabular': ('tabular', dict(bs=128), 'tabular_learner([200, 100]), bs 128'),
    'tabular-256': ('tabular', dict(bs=256), 'tabular_learner([200, 100]), bs 256'),
}

def run(models, steps, rounds, against=None):
    configs = {'plain': lambda: None, **techniques(sys.modules[__name__])}
    if against: configs.update({f'{n} old': mk for n,mk in techniques(import_copy(against)).items()})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {steps*rounds} steps per "
          "configuration; ratios to plain training\n", flush=True)
    names = list(configs)[1:] + ['plain step (ms)']
    lines = ['| model | ' + ' | '.join(names) + ' |', '|---|' + '---|'*len(names)]
    for key in models:
        modality,kw,label = MODELS[key]
        dls = get_dls(modality, **kw)
        def maker(mk):
            def make():
                set_seed(0)
                cb = mk()
                return get_learner(modality, dls=dls, cbs=[cb] if cb else None)
            return make
        med,err = time_steps({n: maker(mk) for n,mk in configs.items()}, steps, rounds)
        row = ratio_cells(med, err, configs)
        row['plain step (ms)'] = f"{med['plain'][0]*1000:.1f}"
        lines.append(f"| {label} | " + ' | '.join(row[n] for n in names) + ' |')
        print(lines[-1], flush=True)
    print('\n' + '\n'.join(lines))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--rounds', type=int, default=20)
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    p.add_argument('--against', default=None, help='a checkout whose fastaug to time beside this one')
    a = p.parse_args()
    run(a.models, a.steps, a.rounds, a.against)
