"""Video input: frame/video sources, DALI decoding (PyAV for CPU H.264/HEVC/MPEG-4), preprocessing."""
from .decode import DaliVideoDecoder, DecodeError, JpegDecoder, ParallelDecoder
from .preprocess import (MEAN, PREPROCESS_MODES, STD, CropPlan, gather_normalize, pil_nearest_tables,
                         plan_aspect, plan_for, plan_reference, snippet_starts, to_snippets)
from .pyav_decode import DALI_CPU_CODECS, VideoError, decode_frames, probe
from .sources import (NUM_FRAMES, FrameFolder, SourceError, VideoFile, discover_frame_keys,
                      folder_frame_indices, frame_folder, read_keys_file, read_video_list,
                      video_file, video_frame_indices)

__all__ = [
    "DaliVideoDecoder", "DecodeError", "JpegDecoder", "ParallelDecoder", "MEAN", "STD",
    "PREPROCESS_MODES", "CropPlan", "gather_normalize", "pil_nearest_tables", "plan_aspect",
    "plan_for", "plan_reference", "snippet_starts", "to_snippets", "DALI_CPU_CODECS",
    "VideoError", "decode_frames", "probe", "NUM_FRAMES", "FrameFolder", "SourceError",
    "VideoFile", "discover_frame_keys", "folder_frame_indices", "frame_folder", "read_keys_file",
    "read_video_list", "video_file", "video_frame_indices",
]
