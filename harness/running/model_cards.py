"""Model cards' measured figures: parameter count and FLOPs per image (2D) or per volume (3D), counted by
segbench on each adapter's own code path, never typed in from a paper.

How (``segbench cards``):

* the adapter is built as a run builds it, with seeded random weights (``LoadOptions(random_weights=True)``)
  on the CPU: the architecture, hence the counts, are those of the real model (a checkpoint only changes
  the values of the weights);
* **parameters**: ``sum(p.numel())`` over every distinct parameter of every ``torch.nn.Module`` the
  loaded adapter holds (its model, and any other module it keeps);
* **FLOPs**: :class:`torch.utils.flop_counter.FlopCounterMode` around the adapter's own ``encode`` and one
  ``predict`` on a sample of the adapter's real input size (:func:`sample_for`): a square image of
  ``meta.input_size`` (the size its preprocessing resizes to, so the count is the model's per-image cost
  whatever the image size), or, for a 3D-native adapter (``volume=True`` with ``input="raw"``), a cube
  of ``meta.input_size`` voxels a side through ``encode_volume``/``predict_volume``. One target is
  decoded: a box for promptable adapters (a 3D box on the middle slices for volumes), a support set of
  :data:`SUPPORT_SIZE` examples for in-context ones. The counter counts torch's matrix products,
  convolutions and attention as 2 FLOPs a multiply-add; element-wise work and anything outside torch
  (numpy preprocessing, the classical baselines) count 0, which is why the baselines show no FLOPs.
* an adapter whose cost per target is a data-dependent number of passes of one network (nnInteractive's
  official session: AutoZoom and refinement patches) says so through :meth:`Adapter.network_pass
  <segbench.interface.Adapter.network_pass>`: its figure is one pass of that network on the input it gives
  (``"per 192x192x192 patch, one network pass"``), the unit the session's cost is a multiple of, and the
  network counts among its modules.

The FLOP counter runs the model for real: on a 2-core CPU, SAM ViT-H at 1024 takes minutes, so the
figures are measured once by ``segbench cards`` and committed (:data:`CARDS_FILE`, with the torch version
and each adapter's sample); the tests re-measure the cheap adapters and fail when the file is stale.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segbench import plugins
from segbench.interface import Adapter, LoadOptions, NetworkPass, Prompt, RawImage, Support, VolumePrompt
from segbench.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

FORMAT = "segbench-model-cards/1"
# the committed figures, beside the other reference results of the repository
CARDS_FILE = Path(__file__).resolve().parents[2] / "results" / "reference" / "model_cards.json"
SUPPORT_SIZE = 8  # examples in the support set an in-context adapter's FLOPs are counted with
DEFAULT_SIZE = 256  # the sample's side for adapters that declare no input size (the baselines)
COUNTER = (
    "torch.utils.flop_counter.FlopCounterMode: matrix products, convolutions and attention, "
    "2 FLOPs per multiply-add; element-wise work and non-torch code count 0"
)


@dataclass(frozen=True)
class Sample:
    """What an adapter's FLOPs are counted on: one image or volume and one target."""

    kind: str  # "image" | "volume" | "patch" (one network pass of a session-driven model)
    shape: tuple[int, ...]  # (H, W, 3) uint8 image, (H, W) raw image, or (D, H, W) volume
    target: str  # "box" | "click" | "support" (what the one target is told by)
    support_size: int | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "shape": list(self.shape), "target": self.target}
        if self.support_size is not None:
            out["support_size"] = self.support_size
        return out

    @property
    def text(self) -> str:
        """As a page says it: "per 1024x1024 image, one box"."""
        told = f"a support set of {self.support_size}" if self.target == "support" else f"one {self.target}"
        side = "x".join(str(n) for n in (self.shape[:2] if self.kind == "image" else self.shape))
        return f"per {side} {self.kind}, {told}"


@dataclass(frozen=True)
class Figures:
    """One adapter's measured figures."""

    adapter: str
    params: int
    encode_flops: int | None  # None: no torch model (nothing to count)
    predict_flops: int | None
    sample: Sample
    device: str = "cpu"  # where the counter ran: "cpu" (computed) or "meta" (shapes only)

    @property
    def flops(self) -> int | None:
        if self.encode_flops is None or self.predict_flops is None:
            return None
        return self.encode_flops + self.predict_flops

    def record(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "flops": self.flops,
            "encode_flops": self.encode_flops,
            "predict_flops": self.predict_flops,
            "sample": self.sample.describe(),
            "per": self.sample.text,
            "counted_on": self.device,
        }


def sample_for(adapter: type[Adapter]) -> Sample:
    """The adapter's real input: its declared input size, as an image (or a volume for 3D-native models)."""
    meta = adapter.meta
    side = meta.input_size or DEFAULT_SIZE
    caps = meta.capabilities
    target = "support" if caps.support_set and not caps.box else "box" if caps.box or not caps.point else "click"
    support = SUPPORT_SIZE if target == "support" else None
    if caps.volume and meta.input == "raw":
        return Sample("volume", (side, side, side), target, support)
    return Sample("image", (side, side) if meta.input == "raw" else (side, side, 3), target, support)


def modules_of(adapter: Adapter) -> list[torch.nn.Module]:
    """The torch modules a loaded adapter holds: its attributes that are modules, and the network it says its
    cost is counted in (:meth:`~segbench.interface.Adapter.network_pass`), which may live inside an official
    session object."""
    found = [value for value in vars(adapter).values() if isinstance(value, torch.nn.Module)]
    unit = adapter.network_pass()
    if unit is not None and not any(unit.network is module for module in found):
        found.append(unit.network)
    return found


def parameter_count(modules: Iterable[torch.nn.Module]) -> int:
    """``sum(p.numel())`` over the distinct parameters of ``modules`` (a parameter shared by two counts once)."""
    seen: dict[int, int] = {}
    for module in modules:
        for parameter in module.parameters():
            seen[id(parameter)] = parameter.numel()
    return sum(seen.values())


def _inputs(sample: Sample, rng: np.random.Generator, raw: bool) -> tuple[Any, Any]:
    """The sample's image or volume (seeded noise) and the one target of it."""
    shape = sample.shape
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    data: Any = RawImage(pixels.astype(np.float32), (1.0,) * len(shape[:3] if sample.kind == "volume" else shape[:2]))
    if not raw:
        data = pixels
    height, width = (shape[1], shape[2]) if sample.kind == "volume" else shape[:2]
    box = np.array([width // 4, height // 4, 3 * width // 4 - 1, 3 * height // 4 - 1], dtype=np.float64)
    # a point-only model (SAM-Med3D) is told by one foreground click at the centre instead of the box
    told = (
        Prompt(points=np.array([[width / 2, height / 2]]), point_labels=np.array([1]))
        if sample.target == "click"
        else Prompt(box=box)
    )
    if sample.kind == "volume":
        depth = shape[0]
        return data, VolumePrompt({depth // 2: told}, depth // 2, (depth // 4, 3 * depth // 4))
    if sample.target == "support":
        images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(sample.support_size or 1)]
        masks = [np.zeros((height, width), bool) for _ in images]
        for mask in masks:
            mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
        return data, Support(images, masks)
    return data, told


def _counted(call: Any, *args: Any, leaves_torch: bool = False) -> tuple[Any, int]:
    """``call(*args)`` under the FLOP counter: its result and the FLOPs counted. ``leaves_torch``: on the meta
    device, the call's last step (masks to numpy) cannot run; the error it raises there ends the call, and the
    FLOPs of everything before it, the whole network, are kept."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        try:
            out = call(*args)
        except (NotImplementedError, RuntimeError) as error:
            if not leaves_torch or "meta" not in str(error):
                raise
            out = None
    return out, int(counter.get_total_flops())


def measure(adapter_class: str | type[Adapter], seed: int = 0, device: str = "cpu") -> Figures:
    """Build the adapter (a registered name, or a class) with random weights on the CPU and count its
    parameters and FLOPs. ``device="meta"`` moves the built model to torch's meta device before counting:
    the same operators are dispatched with their shapes alone, so nothing is computed (minutes for SAM
    ViT-H on a CPU become seconds); the test suite checks that both devices count the same."""
    if device not in ("cpu", "meta"):
        raise ValueError(f"device must be 'cpu' or 'meta', got {device!r}")
    cls = plugins.adapter_class(adapter_class) if isinstance(adapter_class, str) else adapter_class
    name = cls.meta.name
    sample = sample_for(cls)
    adapter = cls()
    adapter.load(LoadOptions(device="cpu", random_weights=True, seed=seed))
    modules = modules_of(adapter)
    params = parameter_count(modules)
    if not modules:  # a classical method: nothing torch counts
        return Figures(name, 0, None, None, sample, "cpu")
    meta = device == "meta"
    if meta:
        for module in modules:
            module.to("meta")
        adapter.options = dataclasses.replace(adapter.options, device="meta")  # type: ignore[attr-defined]
    unit = adapter.network_pass()
    if unit is not None:
        return _one_network_pass(name, unit, params, device)
    data, target = _inputs(sample, np.random.default_rng(seed), cls.meta.input == "raw")
    with torch.inference_mode():
        if sample.kind == "volume":
            state, encode = _counted(adapter.encode_volume, data)
            _, predict = _counted(adapter.predict_volume, state, [target], leaves_torch=meta)
        else:
            state, encode = _counted(adapter.encode, data)
            if isinstance(target, Support):
                _, predict = _counted(adapter.predict, state, None, [target], leaves_torch=meta)
            else:
                _, predict = _counted(adapter.predict, state, [target], leaves_torch=meta)
    return Figures(name, params, encode, predict, sample, device)


def _one_network_pass(name: str, unit: NetworkPass, params: int, device: str) -> Figures:
    """The figures of one pass of the network an adapter drives (see the module's docstring)."""
    network: torch.nn.Module = unit.network
    where = next(network.parameters()).device
    with torch.inference_mode():
        _, flops = _counted(network, torch.zeros(unit.input_shape, device=where))
    return Figures(name, params, 0, flops, Sample("patch", unit.patch, "network pass"), device)


def document(figures: Sequence[Figures], failed: dict[str, str]) -> dict[str, Any]:
    """The committed file: every adapter's figures, how they were counted, and the adapters that could not be."""
    return {
        "format": FORMAT,
        "counter": COUNTER,
        "weights": "seeded random (LoadOptions(random_weights=True, seed=0)); the architecture is the real one",
        "adapters": {
            f.adapter: {**f.record(), "torch": torch.__version__} for f in sorted(figures, key=lambda f: f.adapter)
        },
        "not_measured": dict(sorted(failed.items())),
    }


def measure_all(names: Sequence[str], device: str = "cpu") -> dict[str, Any]:
    """:func:`document` of ``names``; an adapter that cannot be built here (a missing package) is listed with why."""
    figures, failed = [], {}
    for name in names:
        try:
            figures.append(measure(name, device=device))
        except (ImportError, RuntimeError, OSError) as error:
            failed[name] = f"{type(error).__name__}: {error}".splitlines()[0]
    return document(figures, failed)


def read_cards(path: Path = CARDS_FILE) -> dict[str, dict[str, Any]]:
    """The committed figures by adapter name ({} when the file is absent, as in an installed wheel)."""
    if not path.is_file():
        return {}
    adapters: dict[str, dict[str, Any]] = json.loads(path.read_text("utf-8")).get("adapters", {})
    return adapters


def write_cards(path: Path, names: Sequence[str], merge: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Measure ``names`` and write the file; with ``merge``, the other adapters' entries already there stay
    (so one adapter can be re-measured without the hour the big ones take)."""
    fresh = measure_all(names, device)
    if merge and path.is_file():
        old = json.loads(path.read_text("utf-8"))
        if old.get("format") == FORMAT:
            kept = {k: v for k, v in old.get("adapters", {}).items() if k not in names}
            fresh["adapters"] = dict(sorted({**kept, **fresh["adapters"]}.items()))
            gone = {
                k: v for k, v in old.get("not_measured", {}).items() if k not in names and k not in fresh["adapters"]
            }
            fresh["not_measured"] = dict(sorted({**gone, **fresh["not_measured"]}.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fresh, indent=2) + "\n", "utf-8")
    return fresh
