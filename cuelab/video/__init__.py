"""Video: decoding/encoding and the one frame-sampling function, the cue library, and rendering."""
