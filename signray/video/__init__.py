"""From a video to a clip file, one clip at a time and without Ray: decode and sample frames
(PyAV), keypoints (MediaPipe Holistic), gap interpolation and the occlusion flag, InceptionV3
features, and the clip's ``.npz``. `signray.tuning.extraction` runs these steps as Ray Data
stages; `signray.extract` is the command."""
