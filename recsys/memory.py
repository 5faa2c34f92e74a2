"""Peak resident memory per stage of a run.

Linux keeps a process's high-water mark of resident memory (`VmHWM` in /proc/self/status, also
what `getrusage` reports as `ru_maxrss`) and lets the process reset it to the current resident
size (writing 5 to /proc/self/clear_refs). Resetting it when a stage starts and reading it when
the stage ends gives that stage's own peak. The tracker keeps the run's overall peak itself,
since the reset also resets `ru_maxrss`. Where the reset is not allowed (another system, a
locked-down /proc), a stage's figure is the process's peak so far.
"""

from __future__ import annotations

import resource
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK = "5"


def _status_mb(field: str) -> float | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # the value is in kB
    except OSError:
        return None
    return None


def peak_mb() -> float:
    """The process's peak resident memory since it started or since the last reset, in MB."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    try:
        CLEAR_REFS.write_text(RESET_PEAK)
    except OSError:
        return False
    return True


class PeakTracker:
    """Peak memory per stage, and over the whole run (`overall_mb`)."""

    def __init__(self) -> None:
        self.overall_mb = peak_mb()

    def start(self) -> None:
        """Begin a stage: note the peak so far in the overall one, then reset the mark."""
        self.overall_mb = max(self.overall_mb, peak_mb())
        _reset_peak()

    def stage_peak(self) -> float:
        """The peak since the last `start` (MB), also counted in the overall peak."""
        peak = peak_mb()
        self.overall_mb = max(self.overall_mb, peak)
        return peak
