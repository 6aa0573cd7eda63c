"""Reports: JSON for machines, Markdown for people, PNG where a picture says it better.

Renderers only: each takes a result of the library (an audit, a gate, a benchmark, a
study, a bundle) and writes or prints it; nothing here computes a figure.
"""

from __future__ import annotations

from pathlib import Path

from . import audit as _attributes
from . import bench as _bench
from . import groups as _groups
from . import study as _study
from .bundle import bundle_summary
from .gate import gate_lines


def write_audit(report, out_dir) -> list[Path]:
    """report.json, report.md, report.html and the PNG plots of an auditing.AuditReport."""
    write = _groups.write_group_report if report.mode == "groups" else _attributes.write_audit_report
    return write(report.to_dict(), Path(out_dir))


def audit_summary(report) -> list[str]:
    """The lines `sparsebias audit` prints about an auditing.AuditReport."""
    return (_groups if report.mode == "groups" else _attributes).summary_lines(report.to_dict())


def write_bench(report, out_dir) -> list[Path]:
    """bench.json, bench.md and bench.png of an engines.BenchReport."""
    return _bench.write_bench_report(report.to_dict(), Path(out_dir))


def bench_table(report) -> str:
    """The Markdown table `sparsebias bench` prints."""
    return _bench.results_table(report.to_dict())


def write_study(study, out_dir) -> list[Path]:
    """study.json, study.md and the figures of a study.Study."""
    return _study.write_study_report(study.to_dict(), Path(out_dir))


__all__ = ["audit_summary", "bench_table", "bundle_summary", "gate_lines", "write_audit", "write_bench",
           "write_study"]
