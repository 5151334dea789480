"""The cost and usage report: its tables, charts and findings, and the headless run of the
report notebook (``usage_report.ipynb``, shipped in this package) that turns them into one
self-contained HTML file.

* :mod:`.tables`: :func:`build` reads a store only through its public API and returns a
  :class:`Report` of plain DataFrames; :func:`write_csv` writes them (``--format csv``).
* :mod:`.charts`: one plotly figure per name in :data:`CHARTS`.
* :mod:`.display`: what the notebook's cells show (HTML outputs carrying their tables).
* :mod:`.notebook`: inject the parameters, execute the notebook, export the HTML.

The notebook displays the tables :func:`build` returns and ``python -m persistence report
--format csv`` writes the very same ones, so the HTML and the CSVs cannot disagree. Numbers
read the same as everywhere else (:mod:`persistence.formatting`).
"""

from __future__ import annotations

from .charts import CHARTS, chart_html, figure, plotlyjs_html
from .display import (
    GLUE_KEY,
    read_tables,
    setup_notebook,
    show_chart,
    show_findings,
    show_header,
    show_kpis,
    show_table,
    table_html,
)
from .notebook import (
    NOTEBOOK,
    code_cells,
    execute_notebook,
    export_html,
    inject_parameters,
    load_notebook,
    run_notebook,
    write_html,
)
from .tables import TABLES, Report, ReportError, build, write_csv

__all__ = [
    "CHARTS",
    "GLUE_KEY",
    "NOTEBOOK",
    "TABLES",
    "Report",
    "ReportError",
    "build",
    "chart_html",
    "code_cells",
    "execute_notebook",
    "export_html",
    "figure",
    "inject_parameters",
    "load_notebook",
    "plotlyjs_html",
    "read_tables",
    "run_notebook",
    "setup_notebook",
    "show_chart",
    "show_findings",
    "show_header",
    "show_kpis",
    "show_table",
    "table_html",
    "write_csv",
    "write_html",
]
