"""topofr: TopoFR face recognition toolkit (training, evaluation, topology analysis)."""

__version__ = "0.1.0"
