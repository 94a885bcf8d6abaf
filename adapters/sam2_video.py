"""SAM2's official video predictor, fed from a volume: frames made on demand, image features from a
per-volume cache. Kept apart from :mod:`segbench.adapters.sam2family` so that importing the adapters
(e.g. to list them) does not import ``sam2``; the model config's ``_target_`` names this class."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

if TYPE_CHECKING:
    from segbench.adapters.sam2family import LazyFrames
    from segbench.protocols.slice_cache import SliceEncodings


class VolumePredictor(SAM2VideoPredictor):
    """``SAM2VideoPredictor`` whose frames come from a volume and whose image features come from a
    per-volume cache; everything else (memory, propagation, prompts) is the official code."""

    def init_volume_state(self, frames: LazyFrames, features: SliceEncodings, offload_state: bool) -> dict[str, Any]:
        """The inference state of ``SAM2VideoPredictor.init_state`` (sam2 1.1) for frames made on demand."""
        device = self.device
        return {
            "images": frames,
            "num_frames": len(frames),
            "offload_video_to_cpu": True,
            "offload_state_to_cpu": offload_state,
            "video_height": frames.height,
            "video_width": frames.width,
            "device": device,
            "storage_device": torch.device("cpu") if offload_state else device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
            "segbench_features": features,
        }

    def backbone_features(self, frame: torch.Tensor) -> dict[str, Any]:
        """``forward_image`` of one frame, without the positional encodings (the same for every frame;
        :meth:`_get_image_feature` recomputes them from the encoder's cache), for the feature cache."""
        out = self.forward_image(frame)
        return {"backbone_fpn": out["backbone_fpn"]}

    def _get_image_feature(self, inference_state: dict[str, Any], frame_idx: int, batch_size: int) -> Any:
        features = inference_state.get("segbench_features")
        if features is not None and frame_idx not in inference_state["cached_features"]:
            fpn = features.get(frame_idx)["backbone_fpn"]
            encode = self.image_encoder.neck.position_encoding
            backbone = {
                "backbone_fpn": fpn,
                "vision_features": fpn[-1],
                "vision_pos_enc": [encode(level).to(level.dtype) for level in fpn],
            }
            frame = inference_state["images"][frame_idx].to(self.device).float().unsqueeze(0)
            inference_state["cached_features"] = {frame_idx: (frame, backbone)}
        return super()._get_image_feature(inference_state, frame_idx, batch_size)
