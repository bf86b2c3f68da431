"""Image statistics an image-folder preparation records once, for config.dataset's 'auto' values.

Per split: how many images are grayscale, and the per-channel mean and standard deviation of
its pixels (each image weighing the same, as after resizing to one size); over all images:
min / median / max of heights, widths and shorter sides. TF-free (numpy only).
"""

from array import array

import numpy as np


def size_stats(values):
    """{'min', 'median', 'max'} of a sequence of sizes (a zero for an empty one)."""
    values = np.asarray(values if len(values) else [0], np.float64)
    return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}


class SplitPixels:
    """Accumulates imgcls.data.images.PixelFacts of one split's images."""

    def __init__(self):
        self.images = 0
        self.grayscale = 0
        self._rgb = np.zeros((2, 3))  # sums of the images' means and mean squares
        self._gray = np.zeros(2)

    def add(self, facts):
        self.images += 1
        self.grayscale += bool(facts.grayscale)
        self._rgb += (facts.mean_rgb, facts.mean_square_rgb)
        self._gray += (facts.mean_gray, facts.mean_square_gray)

    def summary(self) -> dict:
        """{'images', 'grayscale', 'mean_rgb', 'std_rgb', 'mean_gray', 'std_gray'}."""
        n = max(self.images, 1)
        mean_rgb, square_rgb = self._rgb / n
        mean_gray, square_gray = self._gray / n
        return {
            "images": self.images,
            "grayscale": self.grayscale,
            "mean_rgb": [round(float(v), 6) for v in mean_rgb],
            "std_rgb": [round(float(v), 6) for v in _std(mean_rgb, square_rgb)],
            "mean_gray": round(float(mean_gray), 6),
            "std_gray": round(float(_std(mean_gray, square_gray)), 6),
        }


def _std(mean, mean_square):
    return np.sqrt(np.maximum(np.asarray(mean_square) - np.asarray(mean) ** 2, 0.0))


class SizeRecorder:
    """Heights and widths of many images, kept compactly (uint32 arrays)."""

    def __init__(self):
        self.heights, self.widths = array("I"), array("I")

    def add(self, height, width):
        self.heights.append(height)
        self.widths.append(width)

    def extend(self, other):
        self.heights.extend(other.heights)
        self.widths.extend(other.widths)

    def __len__(self):
        return len(self.heights)

    def summary(self) -> dict:
        """{'height', 'width', 'shorter_side'}: each {'min', 'median', 'max'}."""
        heights = np.frombuffer(self.heights, np.uint32) if len(self) else np.zeros(0)
        widths = np.frombuffer(self.widths, np.uint32) if len(self) else np.zeros(0)
        return {
            "height": size_stats(heights),
            "width": size_stats(widths),
            "shorter_side": size_stats(np.minimum(heights, widths)),
        }
