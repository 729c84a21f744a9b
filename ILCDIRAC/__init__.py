"""Checkout-only shim that lets this repository's CalibrationSystem supersede iLCDirac's.

Running from a checkout, ``import ILCDIRAC`` finds this file first. It extends the package
path with the installed iLCDirac (so ``ILCDIRAC.Interfaces`` and friends still resolve), runs the
installed ``ILCDIRAC/__init__.py`` so that ``extension_metadata`` and the version stay iLCDirac's,
and keeps the checkout's folder first, so ``ILCDIRAC.CalibrationSystem`` is this project's.
The wheel built by setup.py does not contain this file: there the project's files replace the
older CalibrationSystem folder inside the installed iLCDirac.
"""
import os
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
_checkout = os.path.dirname(os.path.abspath(__file__))


def _installedInit():
    for folder in __path__:
        init = os.path.join(folder, "__init__.py")
        if os.path.abspath(folder) != _checkout and os.path.isfile(init):
            return init
    raise ImportError("iLCDirac is not installed: no other ILCDIRAC package on sys.path")


_init = _installedInit()
with open(_init) as _source:
    exec(compile(_source.read(), _init, "exec"))
__path__ = [_checkout] + [p for p in extend_path(__path__, __name__) if os.path.abspath(p) != _checkout]
