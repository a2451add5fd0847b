"""`--detect` for commands that read a dataset: the help texts (the work is `commands.common.open_data`)."""

from __future__ import annotations

DETECT_HELP = (
    "--data is a folder of raw photos (one sub-folder per identity): detect, align (112 px) and "
    "use one face per photo; photos without a face are left out (needs pip install 'topofr\\[detect]')."
)
DETECTOR_HELP = (
    "With --detect: dlib-hog, dlib-hog-small (smaller faces, 3x slower), dlib-cnn, or "
    "package.module:factory for your own detector."
)
