"""cuelab: do visual cues help a video vision-language model look at the right thing?"""

__version__ = "0.1.0"
