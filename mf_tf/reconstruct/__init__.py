"""Real recordings as a library: decode, detect, associate, fuse, triangulate, track, filter, write."""
