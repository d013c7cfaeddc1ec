"""Do MODALS' loss weights matter? Issue 17 makes them settings of the joint space only if measurement says so.

    pip install --no-deps aeon   # the UCR series files of the development sets (see guard_study.py)
    OMP_NUM_THREADS=1 python benchmarks/modals_weights.py [--out benchmarks/modals_weights] [--sets GunPoint,Arrests]
    python benchmarks/modals_weights.py --report

On the nine development sets of `guard_study.py` (none of them in the benchmark), MODALS with its default policy is
trained with the triplet and adversarial weights set together to each of `WEIGHTS` (0.01 is `MODALS()`'s default),
against no augmentation, on the whole training set with 5 paired seeds, and tested on the set's test split: the
paired test gain of each weight. The weights matter if the best weight differs between sets and beats the default by
more than a standard deviation somewhere. Every run is recorded as it ends; a rerun does only what is missing.
"""
import json, warnings
warnings.filterwarnings('ignore')
from pathlib import Path
from fastaug.modals import MODALS
from fastaug.bench import train_eval
from guard_study import SETS, EPOCHS, LR, SEEDS, records, gains, dev_study_main

WEIGHTS = (0., 0.01, 0.03, 0.1)
def name_of(w:float)->str: return f"w{w:g}"
METHODS = {'none': lambda: None,
           **{name_of(w): (lambda w=w: [MODALS(triplet_weight=w, adv_weight=w)]) for w in WEIGHTS}}

def study(name:str, out:Path):
    "Every run of set `name`, recorded one by one"
    modality,make = SETS[name]
    dls,log = make(),out/'runs'/f'{name}.jsonl'
    log.parent.mkdir(parents=True, exist_ok=True)
    done = {(r['candidate'], r['seed']) for r in records(log)}
    for seed in range(SEEDS):
        for m,cbs in METHODS.items():
            if (m, seed) in done: continue
            r = train_eval(modality, m, seed=seed, epochs=EPOCHS, lr=LR, dls=dls, cbs=cbs() or [])
            with open(log, 'a') as f:
                f.write(json.dumps(dict(kind='final', candidate=m, seed=seed, accuracy=r['accuracy'],
                                        seconds=r['seconds'])) + '\n')

def report(out:Path)->str:
    "A table of each weight's paired gain per set, the best weight, and whether it beats the default by > 1 SD"
    ws = [name_of(w) for w in WEIGHTS]
    rows,best_of = [],[]
    for name in SETS:
        g = gains(records(out/'runs'/f'{name}.jsonl'))
        if not all(w in g for w in ws): continue
        best = max(ws, key=lambda w: g[w][0])
        d = name_of(0.01)
        clear = g[best][0] - g[d][0] > max(g[best][1], g[d][1])
        best_of.append((best, clear))
        rows.append(f"| {name} | {SETS[name][0]} | " + ' | '.join(f"{g[w][0]:+.2f} ± {g[w][1]:.2f}" for w in ws) +
                    f" | {best} | {'yes' if clear else 'no'} |")
    head = ('| set | modality | ' + ' | '.join(f"weights {w[1:]}" for w in ws) +
            ' | best | best − default > 1 SD |\n' + '|---' * (len(ws) + 4) + '|')
    n_clear = sum(c for _,c in best_of)
    summ = (f"Best weight per set: {', '.join(b for b,_ in best_of)}; it beats the default (0.01) by more than one SD "
            f"on {n_clear} of {len(best_of)} sets.")
    return head + '\n' + '\n'.join(rows) + '\n\n' + summ

if __name__ == '__main__':
    dev_study_main(__doc__, 'benchmarks/modals_weights', study, report, "MODALS' loss weights on the development sets")
