"""Where a model goes: Ollama's single-device rule, then a split over several devices.

The single device with the most free memory wins if the estimate fits within 80% of its free
memory (Ollama's rule). Failing that, a model may be split over devices (accelerate's device_map
with per-device `max_memory`), again within 80% of each device's free memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.devices import Device, DeviceInventory

FIT_FRACTION = 0.8


@dataclass(frozen=True)
class Placement:
    """Bytes of one model instance per device; more than one entry means a split model."""

    allocation: dict[str, int]
    torch_devices: dict[str, str] = field(default_factory=dict)

    @property
    def device_ids(self) -> list[str]:
        return list(self.allocation)

    @property
    def primary(self) -> str:
        """The torch device of the first (largest) share: where inputs go."""
        return self.torch_devices[self.device_ids[0]]

    @property
    def is_split(self) -> bool:
        return len(self.allocation) > 1

    def max_memory(self) -> dict[str, int]:
        """accelerate's `max_memory` keyed by torch device index or "cpu"."""
        out: dict[str, int] = {}
        for dev_id, size in self.allocation.items():
            torch_device = self.torch_devices[dev_id]
            key = torch_device.split(":")[1] if torch_device.startswith("cuda") else "cpu"
            out[key] = out.get(key, 0) + size
        return out


def _placement(devices: list[Device], sizes: list[int]) -> Placement:
    return Placement(
        allocation={d.id: s for d, s in zip(devices, sizes)},
        torch_devices={d.id: d.torch_device for d in devices},
    )


def place_single(
    inventory: DeviceInventory, estimate: int, exclude: set[str] = frozenset()
) -> Placement | None:
    candidates = [d for d in inventory.devices if d.id not in exclude]
    candidates.sort(key=lambda d: (not d.is_gpu, -inventory.free(d)))
    for device in candidates:
        if estimate <= FIT_FRACTION * inventory.free(device):
            return _placement([device], [estimate])
    return None


def place_split(
    inventory: DeviceInventory, estimate: int, exclude: set[str] = frozenset()
) -> Placement | None:
    """Fill devices, most free first, each up to 80% of its free memory."""
    candidates = sorted(
        (d for d in inventory.devices if d.id not in exclude),
        key=lambda d: -inventory.free(d),
    )
    chosen, sizes, remaining = [], [], estimate
    for device in candidates:
        share = min(remaining, int(FIT_FRACTION * inventory.free(device)))
        if share <= 0:
            continue
        chosen.append(device)
        sizes.append(share)
        remaining -= share
        if remaining <= 0:
            return _placement(chosen, sizes)
    return None
