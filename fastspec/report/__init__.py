"""The report: every figure (``figures``), tables written as CSV and Markdown (``tables``), and
the one page that gathers a results directory into Markdown and HTML (``page``).

Above the analyses: it draws and writes what they and the trace compute, and computes
nothing of its own.
"""

from .figures import (plot_ablation, plot_conditions, plot_memorization, plot_pass_at_k, plot_spectrum,
                      plot_suffix_lengths, plot_trace)
from .page import write_report
from .tables import write_conditions, write_correlations, write_table

__all__ = ["plot_ablation", "plot_conditions", "plot_memorization", "plot_pass_at_k", "plot_spectrum",
           "plot_suffix_lengths", "plot_trace", "write_conditions",
           "write_correlations", "write_report", "write_table"]
