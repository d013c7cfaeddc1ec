"""fastaug: data augmentation callbacks for fastai on every modality"""
from ._version import __version__
