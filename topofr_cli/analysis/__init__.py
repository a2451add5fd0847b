"""Topology analysis of a dataset sample and of models' latent spaces (`topofr analyze-topology`)."""

from topofr_cli.analysis.pipeline import AnalysisResult, analyze
from topofr_cli.analysis.sampling import draw_sample

__all__ = ["AnalysisResult", "analyze", "draw_sample"]
