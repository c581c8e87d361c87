"""AVSyncD networks: the 3D UNet and the frozen audio encoder."""

from asva_model.models.audio_encoder import AudioEncoder, ImageBindAudioEncoder, segment_mask
from asva_model.models.trainable import apply_trainable, parameter_group, trainable_parameter_names
from asva_model.models.unet import AudioUNet3D

__all__ = [
    "AudioEncoder",
    "AudioUNet3D",
    "ImageBindAudioEncoder",
    "apply_trainable",
    "parameter_group",
    "segment_mask",
    "trainable_parameter_names",
]
