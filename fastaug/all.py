"`from fastaug.all import *`: fastai's basics and callbacks and every public name of fastaug, like `fastai.vision.all`"
# Written by hand, like fastai's own `all` modules: it holds only imports, so no notebook exports it.
from fastai.basics import *
from fastai.callback.all import *
from .core import *
from .datasets import *
from .policy import *
from .mixup import *
from .manifold import *
from .image_ops import *
from .series_ops import *
from .modals import *
from .isda import *
from .techniques import *
from .trivial import *
from .auto import *
from .pba import *
from .checkpoint import *
from .search import *
