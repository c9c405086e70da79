"""The compute devices a model can be placed on, with their memory budgets.

Either every visible CUDA device (free memory from `torch.cuda.mem_get_info`) or the CPU (free
memory from /proc/meminfo), or an explicit declaration, `CORRAL_DEVICES=cpu:3GiB,cpu:3GiB`,
which is also how tests run a multi-device machine on one CPU: placement is the same code.
Free memory is the smaller of what the device reports and its total less what Corral's own
loaded models are accounted to hold, since a just-loaded model may not show in the report yet.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Callable

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "KIB": 1024, "M": 1e6, "MB": 1e6, "MIB": 1024**2,
          "G": 1e9, "GB": 1e9, "GIB": 1024**3, "T": 1e12, "TB": 1e12, "TIB": 1024**4}


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"invalid memory size {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


@dataclass(frozen=True)
class Device:
    id: str  # unique: "cpu", "cpu#1", "cuda:0"
    torch_device: str  # what tensors go to: "cpu", "cuda:0"
    total: int  # bytes

    @property
    def is_gpu(self) -> bool:
        return self.torch_device.startswith("cuda")


def _meminfo(field: str, default: int) -> int:
    """A /proc/meminfo field in bytes (the CPU's total or available memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return default


class DeviceInventory:
    """Devices plus Corral's own accounting of what each loaded model holds on them."""

    def __init__(self, devices: list[Device], reported_free: Callable[[Device], int] | None = None):
        if not devices:
            raise ValueError("no devices")
        self.devices = devices
        self._reported_free = reported_free
        self._reserved: dict[str, int] = {d.id: 0 for d in devices}
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: str) -> "DeviceInventory":
        """`kind[:index]:size` entries, comma separated; e.g. `cpu:3GiB,cpu:3GiB,cuda:1:20GiB`."""
        devices: list[Device] = []
        for entry in (e.strip() for e in spec.split(",") if e.strip()):
            parts = entry.split(":")
            kind, size = parts[0].lower(), parts[-1]
            index = parts[1] if len(parts) == 3 else None
            if kind not in ("cpu", "cuda") or len(parts) not in (2, 3):
                raise ValueError(f"invalid device {entry!r}: want cpu:<size> or cuda[:<i>]:<size>")
            torch_device = "cpu" if kind == "cpu" else f"cuda:{index or 0}"
            same = sum(1 for d in devices if d.torch_device == torch_device)
            dev_id = torch_device if same == 0 else f"{torch_device}#{same}"
            devices.append(Device(dev_id, torch_device, parse_size(size)))
        return cls(devices)

    @classmethod
    def detect(cls) -> "DeviceInventory":
        import torch

        if torch.cuda.is_available():
            devices = [
                Device(f"cuda:{i}", f"cuda:{i}", torch.cuda.get_device_properties(i).total_memory)
                for i in range(torch.cuda.device_count())
            ]

            def cuda_free(d: Device) -> int:
                return torch.cuda.mem_get_info(int(d.torch_device.split(":")[1]))[0]

            return cls(devices, cuda_free)
        return cls([Device("cpu", "cpu", _meminfo("MemTotal", 8 * 1024**3))],
                   lambda d: _meminfo("MemAvailable", 0))

    def reserved(self, device_id: str) -> int:
        return self._reserved[device_id]

    def free(self, device: Device) -> int:
        accounted = device.total - self._reserved[device.id]
        if self._reported_free is None:
            return max(0, accounted)
        return max(0, min(accounted, self._reported_free(device)))

    def reserve(self, allocation: dict[str, int]) -> None:
        with self._lock:
            for dev_id, size in allocation.items():
                self._reserved[dev_id] += size

    def release(self, allocation: dict[str, int]) -> None:
        with self._lock:
            for dev_id, size in allocation.items():
                self._reserved[dev_id] = max(0, self._reserved[dev_id] - size)

    def snapshot(self) -> list[dict]:
        return [
            {"id": d.id, "device": d.torch_device, "total": d.total,
             "used": self._reserved[d.id], "free": self.free(d)}
            for d in self.devices
        ]
