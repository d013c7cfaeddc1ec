"""TrivialAugment and the race with MODALS' loss weights as settings of the joint space, on the development sets.

    OMP_NUM_THREADS=1 python benchmarks/loss_settings_study.py [--out benchmarks/loss_settings_study]
    python benchmarks/loss_settings_study.py --report

With MODALS' loss weights as settings of the joint space (`TripletLoss`, `AdversarialLoss`; `joint_space(dls,
loss_terms=True)`), its MODALS adds its terms only where a setting turns them on, and TrivialAugment draws them like
any other operation; in the default space the terms are always on at MODALS' default weights. This trains
TrivialAugment over the space with the settings on the guard's three
folds and on each development set's whole training set (5 paired seeds), as `guard_study.py` did for the space
without them, and compares: TrivialAugment's paired test gain, and what the race (every fixed method and
TrivialAugment against no augmentation, on fold 1 by hold-out loss: `auto_augment`'s default) picks and gains. The
fixed methods' and no augmentation's runs are those `guard_study.py` recorded (`benchmarks/guard_study/runs`).

`benchmark_runs.jsonl` holds the benchmark's `trivial`, `auto` and `auto-search` rows rerun (2026-12-07, on the
machine of `benchmarks/results`, `python -m fastaug.bench run --methods trivial auto auto-search` at commit d242e1a)
with the loss weights as settings of the joint space, its default then; `--report` also tables them against the
recorded rows, whose space has MODALS' terms always on (`benchmark.md`).
"""
import json, warnings
warnings.filterwarnings('ignore')
from pathlib import Path
import numpy as np
from fastaug.datasets import get_learner
from fastaug.auto import holdout_loaders, candidate_callbacks, _guard_run, joint_space
from fastaug.search import trial_seed
from fastaug.bench import train_eval, read_runs, summarise, compact_table, markdown_table
from guard_study import (SETS, EPOCHS, LR, SEEDS, GUARD_FOLDS, records, gains, pick, fixed_methods,
                         dev_study_main)

def study(name:str, out:Path):
    "TrivialAugment over the joint space with the loss settings: its guard runs on the three folds and its final runs, recorded"
    modality,make = SETS[name]
    dls,log = make(),out/'runs'/f'{name}.jsonl'
    log.parent.mkdir(parents=True, exist_ok=True)
    done = {(r['kind'], r.get('fold'), r.get('seed')) for r in records(log)}
    write = lambda r: open(log, 'a').write(json.dumps(dict(candidate='trivial', **r)) + '\n')
    learner = lambda d, cbs: get_learner(modality, dls=d, cbs=cbs)
    ops,make_cbs = joint_space(dls, loss_terms=True)
    for fold in GUARD_FOLDS:
        if ('guard', fold, None) in done: continue
        hold = holdout_loaders(dls, 0.2, 0, fold)
        values,secs = _guard_run(learner, hold, candidate_callbacks('trivial', None, ops, make_cbs), EPOCHS, LR,
                                 'fit_one_cycle', trial_seed(0, 'guard', 0))
        write(dict(kind='guard', fold=fold, values=values, seconds=secs))
    for seed in range(SEEDS):
        if ('final', None, seed) in done: continue
        r = train_eval(modality, 'trivial', seed=seed, epochs=EPOCHS, lr=LR, dls=dls,
                       cbs=candidate_callbacks('trivial', None, ops, make_cbs))
        write(dict(kind='final', seed=seed, accuracy=r['accuracy'], seconds=r['seconds']))

def report(out:Path, before:Path=Path('benchmarks/guard_study'))->str:
    "Per set: TrivialAugment's gain without and with the loss settings, and the race's pick and gain with each"
    rows,v = [],[]
    for name in SETS:
        new = records(out/'runs'/f'{name}.jsonl')
        if len([r for r in new if r['kind'] == 'final']) < SEEDS: continue
        old = [r for r in records(before/'runs'/f'{name}.jsonl') if r['candidate'] != 'searched']
        mixed = [r for r in old if r['candidate'] != 'trivial'] + new
        fixed = fixed_methods(SETS[name][0])
        g0,g1 = gains([r for r in old if r['kind'] == 'final']),gains([r for r in mixed if r['kind'] == 'final'])
        c0 = pick([r for r in old if r['kind'] == 'guard'], fixed + ['trivial'], (1,), 'valid_loss')
        c1 = pick([r for r in mixed if r['kind'] == 'guard'], fixed + ['trivial'], (1,), 'valid_loss')
        f = lambda g, m: f"{g[m][0]:+.2f} ± {g[m][1]:.2f}"
        rows.append(f"| {name} | {SETS[name][0]} | {f(g0, 'trivial')} | {f(g1, 'trivial')} | {c0} {f(g0, c0)} | "
                    f"{c1} {f(g1, c1)} |")
        v.append((g0['trivial'][0], g1['trivial'][0], g0[c0][0], g1[c1][0]))
    a = np.array(v)
    head = ('| set | modality | trivial, terms always on | trivial, terms as settings | race, before | race, now |\n'
            '|---|---|---|---|---|---|')
    mean = (f"| mean of {len(a)} | | {a[:, 0].mean():+.2f} | {a[:, 1].mean():+.2f} | {a[:, 2].mean():+.2f} | "
            f"{a[:, 3].mean():+.2f} |") if len(a) else ''
    return '\n'.join([head, *rows, mean])

def benchmark_report(out:Path, record:Path=Path('benchmarks/results/runs.jsonl'))->str:
    "The benchmark's joint rows with the loss weights as settings (`+loss`) beside the recorded ones, paired with none"
    new = [dict(r, method=r['method'] + '+loss') for r in read_runs(out/'benchmark_runs.jsonl')]
    runs = [r for r in read_runs(record) if r['method'] in ('none', 'trivial', 'auto', 'auto-search')] + new
    tbl = summarise(runs)
    return '\n\n'.join(f"**{reg}**\n\n" + markdown_table(compact_table(tbl, reg)) for reg in ('full', 'reduced'))

if __name__ == '__main__':
    out = dev_study_main(__doc__, 'benchmarks/loss_settings_study', study, report,
                         "MODALS' loss weights as settings of the joint space")
    if (out/'benchmark_runs.jsonl').exists():
        bench = benchmark_report(out)
        (out/'benchmark.md').write_text("# The benchmark's joint rows with MODALS' loss weights as settings (+loss)\n\n"
                                        f"{bench}\n")
        print(bench)
