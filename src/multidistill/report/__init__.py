"""`multidistill report`: a run folder's quality and speed results as report.md plus PNG figures.

Plotting (matplotlib) is imported only when a report is built, so importing this package stays cheap.
"""

from multidistill.report.build import build_report

__all__ = ["build_report"]
