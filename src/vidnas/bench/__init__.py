"""Measurement primitives: parameter and FLOP counts, latency (single and interleaved), result tables."""

from vidnas.bench.counting import count_flops, count_params
from vidnas.bench.device import (
    amp_note,
    auto_threads,
    cpu_bf16_flags,
    cpu_flags_line,
    cpu_int8_flags,
    device_signature,
)
from vidnas.bench.report import (
    DEFAULT_COLUMNS,
    BenchRow,
    device_line,
    format_table,
    protocol_note,
    read_rows_json,
    write_rows_json,
)
from vidnas.bench.timing import TimingStats, interleaved_timing, time_fn

__all__ = [
    "count_params",
    "count_flops",
    "TimingStats",
    "time_fn",
    "interleaved_timing",
    "BenchRow",
    "DEFAULT_COLUMNS",
    "format_table",
    "write_rows_json",
    "read_rows_json",
    "device_signature",
    "auto_threads",
    "cpu_bf16_flags",
    "cpu_int8_flags",
    "cpu_flags_line",
    "amp_note",
    "device_line",
    "protocol_note",
]
