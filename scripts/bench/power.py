"""Board power of the first NVIDIA GPU, sampled while something runs (the cost suite's and the deployment check's).

    source, why = power_source()                         # None (and why) where no reading is possible
    reading = sample_power(source, busy, settle_s=SETTLE_S)  # busy(start) runs the work; the mean W after settle

Sources, tried in this order:
- NVML through `pynvml` (if it imports and initialises): `nvmlDeviceGetPowerUsage` polled
  every 50 ms by a thread, and the driver's cumulative energy counter
  (`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer) read right before and after the
  work, a cross-check that no averaging window delays;
- `nvidia-smi --query-gpu=timestamp,power.draw --format=csv,noheader,nounits -lms 50` in a
  background process (each reading carries its own timestamp, so buffered output is placed
  right in time).
Elsewhere (a CPU, no NVIDIA driver) `power_source` returns None with the reason.

Both report the board's power averaged by the driver over about the last second on Ampere
and newer GPUs (NVML's documentation of nvmlDeviceGetPowerUsage; H100 and H200 included), and
on A100/H100 the sensor sees only part of each averaging window. So a mean over a loop is
right only for a loop that repeats the same work long enough: the readings of its first
`settle_s` seconds (SETTLE_S = 1 s, one averaging window) are dropped, since they still mix
in the power from before the loop, and the loop must then run long enough to leave enough
readings (the callers' duration rule). GPU index 0 is read (the machines here have one GPU
per process; nvidia-smi ignores CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import datetime
import shutil
import statistics
import subprocess
import threading
import time

SETTLE_S = 1.0
"""Readings in the first second of a loop are dropped: the driver averages power over the last second."""
PERIOD_S = 0.05


def parse_smi_line(line: str) -> tuple[float, float] | None:
    """(POSIX time [s], W) of one `timestamp,power.draw` line of nvidia-smi, or None ("[N/A]", a header)."""
    try:
        stamp, watts = (part.strip() for part in line.split(","))
        when = datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()  # the host's local time
        return when, float(watts)
    except ValueError:
        return None


class SmiSource:
    """nvidia-smi in a background process, one timestamped reading every PERIOD_S."""

    method = f"nvidia-smi power.draw sampled every {PERIOD_S * 1e3:.0f} ms"

    def __init__(self, index: int = 0):
        self.index, self.process = index, None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=timestamp,power.draw", "--format=csv,noheader,nounits",
             "-lms", str(int(PERIOD_S * 1e3)), "-i", str(self.index)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> list[tuple[float, float]]:
        """The readings since start, as (time.perf_counter() time, W)."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        offset = time.time() - time.perf_counter()
        return [(when - offset, watts) for when, watts in filter(None, map(parse_smi_line, out.splitlines()))]


class NvmlSource:
    """pynvml: a thread polls the board power every PERIOD_S; the energy counter is read at start and stop."""

    method = f"NVML power usage polled every {PERIOD_S * 1e3:.0f} ms"

    def __init__(self, pynvml, handle):
        self.nvml, self.handle = pynvml, handle
        self.readings, self.thread, self.halt = [], None, threading.Event()

    def energy_mj(self) -> float | None:
        """The driver's energy counter [mJ], or None where the GPU or driver keeps none."""
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:  # not every GPU or driver keeps the counter
            return None

    def _poll(self) -> None:
        while not self.halt.is_set():
            try:
                self.readings.append((time.perf_counter(), self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3))
            except Exception:  # one failed read is one missing sample
                pass
            self.halt.wait(PERIOD_S)

    def start(self) -> None:
        self.readings, self.halt = [], threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def stop(self) -> list[tuple[float, float]]:
        self.halt.set()
        self.thread.join(timeout=5)
        return list(self.readings)


def power_source(index: int = 0):
    """(a power source, "") on a machine with an NVIDIA driver, else (None, why not)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetPowerUsage(handle)
        return NvmlSource(pynvml, handle), ""
    except Exception as err:  # not installed, no driver, or no power reading on this board
        nvml_why = f"pynvml: {type(err).__name__}: {str(err)[:80]}"
    if shutil.which("nvidia-smi") is None:
        return None, f"{nvml_why}; no nvidia-smi on PATH"
    probe = subprocess.run(["nvidia-smi", "--query-gpu=power.draw", "--format=csv,noheader,nounits", "-i", str(index)],
                           capture_output=True, text=True, timeout=30)
    try:
        float(probe.stdout.strip().splitlines()[0])
    except (ValueError, IndexError):
        return None, f"{nvml_why}; nvidia-smi gives no power.draw ({(probe.stdout + probe.stderr).strip()[:80]!r})"
    return SmiSource(index), ""


def sample_power(source, busy, settle_s: float = SETTLE_S) -> dict:
    """Run `busy(start)` (start: its time.perf_counter() start) while `source` samples; the board's mean power.

    Returns {"mean_w": mean of the readings from start + settle_s to the end (None if there
    are none), "samples": their count, "wall_s": busy's wall time, "window_s": the time they
    span, "result": what busy returned}; where the source keeps an energy counter (NVML), also
    "counter_j", its rise over busy's whole wall time. The sampler is stopped even if busy raises.
    """
    counter = getattr(source, "energy_mj", lambda: None)
    source.start()
    try:
        time.sleep(2 * PERIOD_S)  # the sampler's first reading
        before = counter()
        start = time.perf_counter()
        result = busy(start)
        end = time.perf_counter()
        after = counter()
    finally:
        readings = source.stop()
    kept = [w for t, w in readings if start + settle_s <= t <= end + PERIOD_S]
    out = {"mean_w": statistics.mean(kept) if kept else None, "samples": len(kept), "wall_s": end - start,
           "window_s": max(0.0, end - start - settle_s), "result": result}
    if before is not None and after is not None:
        out["counter_j"] = (after - before) / 1e3
    return out


def mean_power_w(during, source, settle_s: float = 0.0) -> tuple[float | None, float]:
    """Run `during()` while `source` samples the board power; (mean W or None, wall s).

    `source` None (no reading here: a CPU, no NVIDIA driver) runs `during` and gives None;
    readings of the first `settle_s` seconds are dropped (module docstring).
    """
    if source is None:
        t = time.perf_counter()
        during()
        return None, time.perf_counter() - t
    reading = sample_power(source, lambda start: during(), settle_s)
    return reading["mean_w"], reading["wall_s"]
