"""Reading untrusted image files: decode, validate, re-encode, pixel limits, error types.

One place for what the image-folder builder, predict and serve each need to know about a file
someone handed them: whether it is an image at all, whether it is complete, whether it is too
large to decode, and bytes that TensorFlow's decoders read as PIL sees them. PIL only; no
TensorFlow, no JAX.
"""

import io
import os
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # default limit for untrusted uploads (decompression bombs)
# Default limit of the pixels one untrusted upload may hold decoded (serve): 16 MP RGB is 48 MB
# (64 MB as RGBA). JPEG photos decode shrunk (encode_image), so this binds PNG, WebP, TIFF, ...
MAX_DECODED_PIXELS = 16_000_000
EXIF_ORIENTATION = 0x0112
PNG_COMPRESS_LEVEL = 1  # re-encoded images: fast, lossless
STATS_SIDE = 128  # pixel statistics are taken on images reduced to about this shorter side
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # RGB -> gray (ITU-R 601, as JPEG's luma)
# To recognise image files by name (folders walked by predict, images misplaced in a dataset
# folder); a file named otherwise may still be an image, and is read when named explicitly.
IMAGE_EXTENSIONS = frozenset(
    ".bmp .gif .jpeg .jpg .jpe .jfif .png .ppm .pgm .pbm .pnm .tif .tiff .webp .ico .tga".split()
)
# PIL's warnings about odd files (corrupt EXIF, palette transparency, large images): the file
# is still read or fails with an error. Set once: catch_warnings() is not thread-safe, and
# images are decoded in threads (preparation, predict, serve).
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")


class NotAnImage(ValueError):
    """Data in no image format PIL reads (serve: 415)."""


class BrokenImage(ValueError):
    """An image file that is truncated or corrupt (serve: 400)."""


class ImageTooLarge(ValueError):
    """An image whose decoded size is over the allowed number of pixels (a decompression bomb)."""


def has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def printable_path(path: str) -> str:
    """The path as valid UTF-8 text: bytes of a file name that are not UTF-8 as backslash escapes.

    (os.scandir gives such names as surrogate escapes, which TFDS and JSON cannot store.)
    """
    raw = path.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def _to_8bit(image):
    """16/32-bit integer and float images (modes I;16*, I, F) as 8-bit 'L'.

    16-bit data is scaled from [0, 65535]; I and F data already in [0, 255] is kept, F data in
    [0, 1] is scaled from it.
    """
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max(initial=0.0))
    if image.mode.startswith("I;16") or peak > 255.0:
        values = values * (255.0 / 65535.0)
    elif image.mode == "F" and peak <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))


def _png_checksums_ok(data):
    """Whether every chunk of a PNG has the right CRC (PIL's verify(): no pixels decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        return True
    except Exception:  # noqa: BLE001  (SyntaxError, OSError, ...: PIL's ways to say "broken")
        return False


class PixelFacts(NamedTuple):
    """What the image-folder builder records of each image for config.dataset's 'auto' values.

    Means are in [0, 1] units over the image's pixels (of the image reduced to about
    STATS_SIDE pixels on its shorter side, by an integer factor): per RGB channel and of its
    grayscale conversion (GRAY_WEIGHTS); `mean_square_*` are the means of the squared values.
    """

    grayscale: bool  # one colour band (PIL modes 1, L, LA, I, F), or a palette of grays
    mean_rgb: tuple
    mean_square_rgb: tuple
    mean_gray: float
    mean_square_gray: float


def is_grayscale(image) -> bool:
    """Whether a PIL image has a single colour band (alpha aside), or a palette of grays only."""
    if image.mode in ("1", "L", "LA", "I", "F") or image.mode.startswith("I;"):
        return True
    if image.mode in ("P", "PA"):
        rgb = np.asarray(image.convert("RGB"))
        return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    return False


def pixel_facts(image) -> PixelFacts:
    """PixelFacts of a loaded PIL image."""
    grayscale = is_grayscale(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        image = _to_8bit(image)
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    factor = min(image.size) // STATS_SIDE
    if factor > 1:
        image = image.reduce(factor)
    rgb = np.asarray(image.convert("RGB"), np.float64).reshape(-1, 3) / 255.0
    gray = rgb @ np.asarray(GRAY_WEIGHTS)
    return PixelFacts(
        grayscale,
        tuple(float(v) for v in rgb.mean(0)),
        tuple(float(v) for v in (rgb * rgb).mean(0)),
        float(gray.mean()),
        float((gray * gray).mean()),
    )


def load_image(path):
    """(stored bytes, height, width, re-encoded, PixelFacts) of an image file for a dataset.

    As encode_image with the image's own colour mode kept (grayscale stays grayscale, any other
    image is RGB), so one stored copy serves every channel count; raises if it is unreadable.
    """
    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        image.load()
        facts = pixel_facts(image)
        return (*_stored(image, data, None, width, height), facts)


def reduction_factor(width, height, min_size) -> int:
    """The integer factor an image may be shrunk by and keep at least min_size (height, width)."""
    if not min_size:
        return 1
    return max(1, min(width // max(1, min_size[1]), height // max(1, min_size[0])))


def encode_image(data, channels, max_pixels=None, min_size=None, max_decoded_pixels=None):
    """(bytes TF decodes, height, width, re-encoded) of encoded image data; raises if unreadable.

    The image is fully decoded by PIL (so truncated files fail here, not during training).
    JPEG (RGB or grayscale, not EXIF-rotated) and PNG data is kept as it is; any other image
    is converted to RGB or grayscale (channels) and re-encoded as PNG, as is a PNG with a bad
    chunk checksum (PIL reads its pixels, TensorFlow's decoder refuses it). height and width are
    the stored image's. Other failures are PIL's own exceptions; read_image turns them into
    NotAnImage and BrokenImage.

    Limits, checked before the pixels are decoded (ImageTooLarge): max_pixels, the stored
    image's pixels (decompression bombs); max_decoded_pixels, the pixels decoding would hold in
    memory. min_size (height, width): an image at least twice as large is shrunk by an integer
    factor while decoding (JPEG: in the DCT, at 1/2, 1/4 or 1/8 of the size, so a 50-megapixel
    photo never exists in memory) and right after (an area average), keeping at least
    min_size, and re-encoded.
    """
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLarge(
                f"the image is {width}x{height} = {width * height:,} pixels, over the "
                f"limit of {max_pixels:,} pixels; refused as a possible decompression bomb"
            )
        fmt = image.format
        factor = reduction_factor(width, height, min_size)
        if factor > 1 and fmt in ("JPEG", "MPO"):
            image.draft(image.mode, (-(-width // factor), -(-height // factor)))
        decoded = image.size[0] * image.size[1]
        if max_decoded_pixels is not None and decoded > max_decoded_pixels:
            raise ImageTooLarge(
                f"decoding this {fmt or ''} image of {width}x{height} would hold {decoded:,} "
                f"pixels in memory, over this server's limit of {max_decoded_pixels:,}"
            )
        image.load()
        return _stored(image, data, channels, width, height, min_size)


def _stored(image, data, channels, width, height, min_size=None):
    """encode_image's result for a loaded PIL image of `data` (width x height as stored there);
    channels None keeps the image's own colour mode (grayscale or RGB)."""
    fmt = image.format
    orientation = 1
    if fmt in ("JPEG", "MPO") and "exif" in image.info:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    shrink = reduction_factor(*image.size, min_size)
    as_is = image.size == (width, height) and shrink == 1
    if as_is and (
        (fmt == "PNG" and _png_checksums_ok(data))
        or (fmt in ("JPEG", "MPO") and image.mode in ("L", "RGB") and orientation == 1)
    ):
        return data, height, width, False
    gray = is_grayscale(image) if channels is None else channels == 1
    if shrink > 1:  # an area average over exactly the whole image (reduce() would not)
        size = (round(image.size[0] / shrink), round(image.size[1] / shrink))
        image = image.resize(size, Image.Resampling.BOX)
    if orientation in range(2, 9):
        image = ImageOps.exif_transpose(image)
        if orientation in (5, 6, 7, 8):  # a quarter turn: the shown image is transposed
            width, height = height, width
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        image = _to_8bit(image)
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    image = image.convert("L" if gray else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue(), height, width, True


def read_image(data, channels, max_pixels=MAX_PIXELS, min_size=None, max_decoded_pixels=None):
    """encode_image of untrusted bytes, its failures as NotAnImage, BrokenImage or ImageTooLarge
    (max_pixels=None: no limit)."""
    try:
        return encode_image(data, channels, max_pixels, min_size, max_decoded_pixels)
    except UnidentifiedImageError:
        raise NotAnImage(
            "not an image: the data is in no format PIL reads (JPEG, PNG, GIF, BMP, WebP, "
            "TIFF, ...)"
        ) from None
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"refused as a decompression bomb: {e}") from None
    except ImageTooLarge:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BrokenImage(f"a truncated or corrupt image ({e})") from None


def check_center_crop_size(height, width, image_size, crop_fraction, max_pixels=MAX_PIXELS):
    """ImageTooLarge when the center crop's resize of a height x width image would exceed
    max_pixels: it resizes the whole image first, so a 1 x 20,000 image would become
    256 x 5,120,000 before its 224 x 224 crop. No check for max_pixels None or image_size 0."""
    if max_pixels is None or image_size <= 0:
        return
    scale = image_size / float(crop_fraction) / max(1, min(height, width))
    resized = max(round(height * scale), image_size) * max(round(width * scale), image_size)
    if resized > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height}: resizing its shorter side for the center crop "
            f"would make {resized:,} pixels, over the limit of {max_pixels:,}; crop it "
            "closer to a square first"
        )
