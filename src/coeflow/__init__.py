"""coeflow: a Composition of Experts served for real on PyTorch and modelled on the SN40L and GPU servers."""

__version__ = "0.1.0"
