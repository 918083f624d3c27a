"""The smallest images medveil reads, where the networks that train on them fix it.

Apart from the readers so that the command line can name them in its option bounds
without importing numpy or an image library.
"""

from __future__ import annotations

#: The smallest image side medveil reads (``medveil.data.readers``, ``--size``): the
#: classifier (SmallCNN) halves an image four times (four 2x max-pools), so 16 px is the
#: least that leaves it one pixel.
MIN_IMAGE_SIZE = 16
#: The smallest side of a segmentation set's images: the U-Net downsamples four times
#: (stride 2 between its five levels) and instance-normalises its bottom level, which
#: needs more than one pixel, so 32 px.
MIN_SEGMENTATION_SIZE = 32
