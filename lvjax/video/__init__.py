"""Video front end: decode (PyAV), sample (dynamic_fps1), preprocess (UMTImageProcessor).

`load_frames(video, fps=…, max_num_frames=…, min_num_frames=…)` → `VideoFrames` (uint8
(T, H, W, 3) frames, indices, fps, duration, time message); `preprocess(frames, 448)` →
float32 (T, 448, 448, 3). Errors a user can cause raise `VideoError` naming the file.
"""

from lvjax.video.decode import (
                                IMAGE_EXTENSIONS,
                                VideoError,
                                VideoFrames,
                                decode_all_frames,
                                from_array,
                                load_frames,
                                probe_video,
                                read_image_folder,
                                read_video,
)
from lvjax.video.preprocess import (
                                IMAGENET_MEAN,
                                IMAGENET_STD,
                                normalize,
                                preprocess,
                                resize_frames,
)
from lvjax.video.sampling import (
                                FramePlan,
                                clip_window,
                                duplicate_indices,
                                num_sampled_frames,
                                plan_frames,
                                sample_frame_indices,
                                time_message,
)

__all__ = [
    "FramePlan", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "VideoError", "VideoFrames", "clip_window",
    "decode_all_frames", "duplicate_indices", "from_array", "load_frames", "normalize", "num_sampled_frames",
    "plan_frames", "preprocess", "probe_video", "read_image_folder", "read_video", "resize_frames",
    "sample_frame_indices", "time_message",
]
